//! Export records: which archive belongs to which tenant, until when.

use sqlx::Row;
use tenantry_domain::{ExportStatus, TenantId, Timestamp};

use crate::files::{delete_file_in, write_file_in};
use crate::jobs::{enqueue_in, NewJob};
use crate::tenants::lock_tenant_in;
use crate::webhooks::{emit_in, NewEvent};
use crate::{parsed, Result, Store};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportRow {
    pub id: String,
    pub tenant_id: String,
    pub status: ExportStatus,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub bytes: i64,
    pub sha256: String,
}

/// What `Store::start_export` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExportStart {
    /// The export was recorded with its jobs.
    Started,
    /// The tenant has an export still pending: that one stands, nothing was written.
    Pending(ExportRow),
    /// The tenant made `per_day` exports in the day before now; the oldest of them was made at this time.
    DailyLimit { oldest: Timestamp },
}

const EXPORT_COLUMNS: &str = "id, tenant_id, status, created_at, expires_at, bytes, sha256";

impl Store {
    /// Records the export and enqueues `jobs` (the one that builds it) in one transaction, unless the tenant
    /// already has one pending or made `per_day` exports in the day before `e.created_at`. The tenant's
    /// exports are serialised (its row locked on PostgreSQL, SQLite's one writer), so two requests racing
    /// each other start one export.
    pub async fn start_export(&self, e: &ExportRow, jobs: &[NewJob], per_day: u32) -> Result<ExportStart> {
        let mut tx = self.begin_write().await?;
        lock_tenant_in(&mut tx, self.backend, &TenantId::from_trusted(e.tenant_id.clone())).await?;
        let pending = sqlx::query(&format!(
            "SELECT {EXPORT_COLUMNS} FROM exports WHERE tenant_id = $1 AND status = 'pending' \
             ORDER BY created_at LIMIT 1"
        ))
        .bind(&e.tenant_id)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(row) = pending {
            tx.rollback().await?;
            return Ok(ExportStart::Pending(export_from_row(&row)?));
        }
        let day = sqlx::query(
            "SELECT COUNT(*) AS n, MIN(created_at) AS oldest FROM exports WHERE tenant_id = $1 AND created_at > $2",
        )
        .bind(&e.tenant_id)
        .bind(e.created_at.plus_seconds(-86_400).0)
        .fetch_one(&mut *tx)
        .await?;
        let made: i64 = day.try_get("n")?;
        if made >= i64::from(per_day) {
            let oldest: Option<i64> = day.try_get("oldest")?;
            tx.rollback().await?;
            return Ok(ExportStart::DailyLimit { oldest: Timestamp(oldest.unwrap_or(e.created_at.0)) });
        }
        insert_export_in(&mut tx, e, jobs).await?;
        tx.commit().await?;
        Ok(ExportStart::Started)
    }

    /// Sets the export's status (and, when built, its size and digest).
    pub async fn set_export_status(&self, id: &str, status: ExportStatus, bytes: i64, sha256: &str) -> Result<()> {
        sqlx::query("UPDATE exports SET status = $1, bytes = $2, sha256 = $3 WHERE id = $4")
            .bind(status.as_str())
            .bind(bytes)
            .bind(sha256)
            .bind(id)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    /// Stores the built archive and marks the export `ready`, in one transaction.
    pub async fn set_export_ready(
        &self,
        tenant: &TenantId,
        id: &str,
        archive: &[u8],
        sha256: &str,
        now: Timestamp,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        write_file_in(&mut tx, id, tenant, archive).await?;
        sqlx::query("UPDATE exports SET status = 'ready', bytes = $1, sha256 = $2 WHERE id = $3")
            .bind(archive.len() as i64)
            .bind(sha256)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let ready = NewEvent {
            tenant_id: tenant,
            kind: "export.ready",
            data: serde_json::json!({"export_id": id, "bytes": archive.len(), "sha256": sha256}),
            dedupe_key: Some(format!("export.ready:{id}")),
        };
        emit_in(&mut tx, &ready, now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Deletes the archive and marks the export `expired`, in one transaction.
    pub async fn set_export_expired(&self, id: &str) -> Result<()> {
        let mut tx = self.begin_write().await?;
        delete_file_in(&mut tx, id).await?;
        sqlx::query("UPDATE exports SET status = 'expired' WHERE id = $1").bind(id).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// An export by id alone (for the jobs that build and expire it).
    pub async fn export_by_id(&self, id: &str) -> Result<Option<ExportRow>> {
        let row = sqlx::query(&format!("SELECT {EXPORT_COLUMNS} FROM exports WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.write)
            .await?;
        row.as_ref().map(export_from_row).transpose()
    }

    /// The tenant's export `id`; another tenant's is simply not found.
    pub async fn export(&self, tenant: &TenantId, id: &str) -> Result<Option<ExportRow>> {
        let row = sqlx::query(&format!("SELECT {EXPORT_COLUMNS} FROM exports WHERE id = $1 AND tenant_id = $2"))
            .bind(id)
            .bind(tenant.as_str())
            .fetch_optional(&self.read)
            .await?;
        row.as_ref().map(export_from_row).transpose()
    }
}

async fn insert_export_in(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    e: &ExportRow,
    jobs: &[NewJob],
) -> Result<()> {
    sqlx::query(&format!("INSERT INTO exports ({EXPORT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"))
        .bind(&e.id)
        .bind(&e.tenant_id)
        .bind(e.status.as_str())
        .bind(e.created_at.0)
        .bind(e.expires_at.0)
        .bind(e.bytes)
        .bind(&e.sha256)
        .execute(&mut **tx)
        .await?;
    for job in jobs {
        enqueue_in(tx, job, e.created_at).await?;
    }
    Ok(())
}

fn export_from_row(r: &sqlx::any::AnyRow) -> Result<ExportRow> {
    Ok(ExportRow {
        id: r.try_get("id")?,
        tenant_id: r.try_get("tenant_id")?,
        status: parsed(r, "status", ExportStatus::parse)?,
        created_at: Timestamp(r.try_get("created_at")?),
        expires_at: Timestamp(r.try_get("expires_at")?),
        bytes: r.try_get("bytes")?,
        sha256: r.try_get("sha256")?,
    })
}
