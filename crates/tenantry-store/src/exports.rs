//! Export records: which archive belongs to which tenant, until when.

use sqlx::Row;
use tenantry_domain::{TenantId, Timestamp};

use crate::jobs::{enqueue_in, NewJob};
use crate::{Result, Store};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportRow {
    pub id: String,
    pub tenant_id: String,
    pub status: String,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub bytes: i64,
    pub sha256: String,
}

impl Store {
    /// Records the export and enqueues `jobs` (the one that builds it) in one transaction.
    pub async fn record_export(&self, e: &ExportRow, jobs: &[NewJob]) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO exports (id, tenant_id, status, created_at, expires_at, bytes, sha256) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&e.id)
        .bind(&e.tenant_id)
        .bind(&e.status)
        .bind(e.created_at.0)
        .bind(e.expires_at.0)
        .bind(e.bytes)
        .bind(&e.sha256)
        .execute(&mut *tx)
        .await?;
        for job in jobs {
            enqueue_in(&mut tx, job, e.created_at).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Sets the export's status (and, when built, its size and digest).
    pub async fn set_export_status(&self, id: &str, status: &str, bytes: i64, sha256: &str) -> Result<()> {
        sqlx::query("UPDATE exports SET status = $1, bytes = $2, sha256 = $3 WHERE id = $4")
            .bind(status)
            .bind(bytes)
            .bind(sha256)
            .bind(id)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    /// An export by id alone (for the jobs that build and expire it).
    pub async fn export_by_id(&self, id: &str) -> Result<Option<ExportRow>> {
        let row = sqlx::query(
            "SELECT id, tenant_id, status, created_at, expires_at, bytes, sha256 FROM exports WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.write)
        .await?;
        row.as_ref().map(export_from_row).transpose()
    }

    /// The tenant's export `id`; another tenant's is simply not found.
    pub async fn export(&self, tenant: &TenantId, id: &str) -> Result<Option<ExportRow>> {
        let row = sqlx::query(
            "SELECT id, tenant_id, status, created_at, expires_at, bytes, sha256 FROM exports \
             WHERE id = $1 AND tenant_id = $2",
        )
        .bind(id)
        .bind(tenant.as_str())
        .fetch_optional(&self.read)
        .await?;
        row.as_ref().map(export_from_row).transpose()
    }
}

fn export_from_row(r: &sqlx::any::AnyRow) -> Result<ExportRow> {
    Ok(ExportRow {
        id: r.try_get("id")?,
        tenant_id: r.try_get("tenant_id")?,
        status: r.try_get("status")?,
        created_at: Timestamp(r.try_get("created_at")?),
        expires_at: Timestamp(r.try_get("expires_at")?),
        bytes: r.try_get("bytes")?,
        sha256: r.try_get("sha256")?,
    })
}
