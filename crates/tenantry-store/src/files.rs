//! Files kept in the database — uploaded originals (named by their document's id) and export archives (by
//! their export's id) — in parts of at most `PART_BYTES`, so that no value holds a whole large file. Every
//! node reads them from here; a node's disk holds none.

use sqlx::{Any, Row, Transaction};
use tenantry_domain::TenantId;

use crate::{Result, Store};

/// The largest part of a stored file.
pub const PART_BYTES: usize = 1 << 20;

/// Writes `bytes` as file `id` of `tenant` inside `tx`, replacing a file of that id.
pub(crate) async fn write_file_in(
    tx: &mut Transaction<'static, Any>,
    id: &str,
    tenant: &TenantId,
    bytes: &[u8],
) -> Result<()> {
    sqlx::query("DELETE FROM file_parts WHERE file_id = $1").bind(id).execute(&mut **tx).await?;
    for (part, slice) in bytes.chunks(PART_BYTES).enumerate() {
        sqlx::query("INSERT INTO file_parts (file_id, part, tenant_id, bytes) VALUES ($1, $2, $3, $4)")
            .bind(id)
            .bind(part as i64)
            .bind(tenant.as_str())
            .bind(slice.to_vec())
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

pub(crate) async fn delete_file_in(tx: &mut Transaction<'static, Any>, id: &str) -> Result<()> {
    sqlx::query("DELETE FROM file_parts WHERE file_id = $1").bind(id).execute(&mut **tx).await?;
    Ok(())
}

impl Store {
    /// The tenant's file `id`, whole; `None` if it has none of that id (another tenant's file included).
    /// An empty file has no parts and reads as `None`: nothing stores one.
    pub async fn file(&self, tenant: &TenantId, id: &str) -> Result<Option<Vec<u8>>> {
        let rows = sqlx::query("SELECT bytes FROM file_parts WHERE file_id = $1 AND tenant_id = $2 ORDER BY part")
            .bind(id)
            .bind(tenant.as_str())
            .fetch_all(&self.read)
            .await?;
        if rows.is_empty() {
            return Ok(None);
        }
        let mut bytes = Vec::new();
        for row in rows {
            bytes.extend_from_slice(&row.try_get::<Vec<u8>, _>("bytes")?);
        }
        Ok(Some(bytes))
    }

    /// Stores the tenant's file `id` whole (replacing one of that id) in one transaction.
    pub async fn put_file(&self, tenant: &TenantId, id: &str, bytes: &[u8]) -> Result<()> {
        let mut tx = self.begin_write().await?;
        write_file_in(&mut tx, id, tenant, bytes).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn delete_file(&self, id: &str) -> Result<()> {
        let mut tx = self.begin_write().await?;
        delete_file_in(&mut tx, id).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Documents whose original is not stored in the database (uploaded before it kept them), tenant first.
    pub async fn documents_without_original(&self) -> Result<Vec<(TenantId, tenantry_domain::DocumentId)>> {
        let rows = sqlx::query(
            "SELECT d.tenant_id, d.id FROM documents d \
             WHERE NOT EXISTS (SELECT 1 FROM file_parts f WHERE f.file_id = d.id) ORDER BY d.tenant_id, d.id",
        )
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    TenantId::from_trusted(r.try_get("tenant_id")?),
                    tenantry_domain::DocumentId::from_trusted(r.try_get("id")?),
                ))
            })
            .collect()
    }
}

impl Store {
    /// Rows and bytes on disk (table, indexes and TOAST) of `table`, on PostgreSQL (benchmarks); `None` on
    /// the embedded store. `table` must be one of the schema's names.
    pub async fn table_size(&self, table: &str) -> Result<Option<(i64, i64)>> {
        if self.backend != crate::Backend::Postgres || !table.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
            return Ok(None);
        }
        let row = sqlx::query(&format!(
            "SELECT (SELECT COUNT(*) FROM {table}) AS n, CAST(pg_total_relation_size('{table}') AS BIGINT) AS bytes"
        ))
        .fetch_one(&self.read)
        .await?;
        Ok(Some((row.try_get("n")?, row.try_get("bytes")?)))
    }
}
