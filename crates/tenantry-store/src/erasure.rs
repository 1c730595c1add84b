//! Erasure of a tenant's rows: in one transaction, with the lifecycle version check, the tenant's documents,
//! chunks, keys, quota counters and reservations are deleted, its row keeps only what identifies the
//! (now `erased`) account to the ledger, and the erasure is recorded as `running` with the job that finishes
//! it and its audit entry. The usage ledger is kept: it holds no personal data and is the billing record. The
//! job removes the files and the analytics rows, then completes the erasure with its certificate.

use sqlx::Row;
use tenantry_domain::lifecycle::LifecycleEvent;
use tenantry_domain::{ErasureStatus, TenantId, TenantState, Timestamp};

use crate::audit::{append_audit_in, NewAuditEntry};
use crate::jobs::enqueue_in;
use crate::tenants::record_transition_in;
use crate::NewJob;
use crate::{parsed, Backend, Result, Store, StoreError};

/// The tables that hold a tenant's content (text, files, keys, personal data) by `tenant_id`.
const CONTENT_TABLES: [&str; 18] = [
    "documents",
    "chunks",
    "file_parts",
    "document_changes",
    "api_keys",
    "exports",
    "notifications",
    "stripe_objects",
    "idempotency_keys",
    "webhook_endpoints",
    "webhook_events",
    "webhook_deliveries",
    "webhook_attempts",
    "alert_thresholds",
    "alert_firings",
    "tenant_passwords",
    "sessions",
    "sign_in_links",
];

/// Rows removed from each table.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ErasedRows {
    pub documents: u64,
    pub chunks: u64,
    pub api_keys: u64,
    pub quota_counters: u64,
    pub reservations: u64,
    #[serde(default)]
    pub exports: u64,
    /// Queued and parked jobs for the tenant, cancelled.
    #[serde(default)]
    pub jobs: u64,
    /// Links between the tenant and its Stripe objects (customer, invoices, sessions).
    #[serde(default)]
    pub stripe_links: u64,
    /// Notifications (they carry the email address and the organisation's name).
    #[serde(default)]
    pub notifications: u64,
    /// Ledger events not yet shipped to the analytics store.
    #[serde(default)]
    pub analytics_outbox: u64,
    /// Parts of stored files: uploaded originals and export archives.
    #[serde(default)]
    pub file_parts: u64,
    /// The record of the tenant's document changes (document ids only).
    #[serde(default)]
    pub document_changes: u64,
    /// Responses kept for replay under an idempotency key.
    #[serde(default)]
    pub idempotency_keys: u64,
    /// Webhook endpoints (their URLs), events, deliveries and attempts.
    #[serde(default)]
    pub webhooks: u64,
    /// Usage alert thresholds and the record of those that fired.
    #[serde(default)]
    pub alerts: u64,
    /// The admin's password hash, sessions of the portal and one-time sign-in links.
    #[serde(default)]
    pub sign_ins: u64,
    /// Ledger rows kept (no personal data; the record billing needs).
    pub usage_events_kept: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ErasureRow {
    pub id: String,
    pub tenant_id: String,
    pub status: ErasureStatus,
    pub requested_by: String,
    pub requested_at: Timestamp,
    pub completed_at: Option<Timestamp>,
    pub certificate: String,
    pub digest: String,
}

/// An erasure to record with the tenant's rows.
#[derive(Clone, Copy)]
pub struct NewErasure<'a> {
    pub id: &'a str,
    pub requested_by: &'a str,
    pub at: Timestamp,
    /// Enqueued in the same transaction: the work that finishes the erasure.
    pub jobs: &'a [NewJob],
    /// The audit entry recording the erasure, made from the rows it removed and appended in its transaction.
    pub audit: Option<&'a (dyn Fn(&ErasedRows) -> NewAuditEntry + Sync)>,
}

impl Store {
    /// Erases the tenant's rows if it is still in `from` at `expected_version`; `Concurrent` otherwise.
    pub async fn erase_tenant_rows(
        &self,
        tenant: &TenantId,
        expected_version: i64,
        from: TenantState,
        erasure: &NewErasure<'_>,
    ) -> Result<ErasedRows> {
        let NewErasure { id: erasure_id, requested_by, at: now, jobs, audit } = *erasure;
        let to = from.on(LifecycleEvent::Erased).ok_or(StoreError::Conflict("transition"))?;
        let mut tx = self.begin_write().await?;
        let moved = sqlx::query(
            "UPDATE tenants SET state = $1, state_version = state_version + 1, updated_at = $2, \
             email = $3, organization = '', system_prompt = '' \
             WHERE id = $4 AND state = $5 AND state_version = $6",
        )
        .bind(to.as_str())
        .bind(now.0)
        .bind(format!("erased+{}@erased.invalid", tenant.as_str()))
        .bind(tenant.as_str())
        .bind(from.as_str())
        .bind(expected_version)
        .execute(&mut *tx)
        .await?;
        if moved.rows_affected() != 1 {
            return Err(StoreError::Concurrent);
        }
        let mut rows = ErasedRows::default();
        for (table, count) in [
            ("chunks", &mut rows.chunks),
            ("documents", &mut rows.documents),
            ("api_keys", &mut rows.api_keys),
            ("quota_counters", &mut rows.quota_counters),
            ("reservations", &mut rows.reservations),
            ("exports", &mut rows.exports),
            ("stripe_objects", &mut rows.stripe_links),
            ("notifications", &mut rows.notifications),
            ("analytics_outbox", &mut rows.analytics_outbox),
            ("file_parts", &mut rows.file_parts),
            ("document_changes", &mut rows.document_changes),
            ("idempotency_keys", &mut rows.idempotency_keys),
        ] {
            *count = delete_tenant_rows_in(&mut tx, table, tenant).await?;
        }
        for table in ["webhook_attempts", "webhook_deliveries", "webhook_events", "webhook_endpoints"] {
            rows.webhooks += delete_tenant_rows_in(&mut tx, table, tenant).await?;
        }
        for table in ["alert_firings", "alert_thresholds"] {
            rows.alerts += delete_tenant_rows_in(&mut tx, table, tenant).await?;
        }
        for table in ["tenant_passwords", "sessions", "sign_in_links"] {
            rows.sign_ins += delete_tenant_rows_in(&mut tx, table, tenant).await?;
        }
        rows.jobs = sqlx::query("DELETE FROM jobs WHERE tenant_id = $1 AND state <> 'running'")
            .bind(tenant.as_str())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        record_transition_in(&mut tx, tenant, LifecycleEvent::Erased, from, to, now).await?;
        let kept = sqlx::query("SELECT COUNT(*) AS n FROM usage_events WHERE tenant_id = $1")
            .bind(tenant.as_str())
            .fetch_one(&mut *tx)
            .await?;
        rows.usage_events_kept = kept.try_get::<i64, _>("n")? as u64;
        // Until completion the certificate column holds the row counts, so a restart can finish the erasure
        // and still certify what was removed.
        let counts = serde_json::to_string(&rows).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        sqlx::query(
            "INSERT INTO erasures (id, tenant_id, status, requested_by, requested_at, completed_at, certificate, digest) \
             VALUES ($1, $2, 'running', $3, $4, NULL, $5, '')",
        )
        .bind(erasure_id)
        .bind(tenant.as_str())
        .bind(requested_by)
        .bind(now.0)
        .bind(counts)
        .execute(&mut *tx)
        .await?;
        for job in jobs {
            enqueue_in(&mut tx, job, now).await?;
        }
        if let Some(entry) = audit {
            append_audit_in(&mut tx, &entry(&rows)).await?;
        }
        tx.commit().await?;
        self.tenants_changed();
        // An in-memory gate forgets the tenant's counters with the rows.
        self.gate().forget(tenant);
        Ok(rows)
    }

    /// Removes what requests of an erased tenant that were in flight at its erasure wrote after it: quota
    /// counters and reservations their settlements recreated (their ledger events are kept like the rest).
    /// Returns the rows removed from each; nothing if the tenant is not erased.
    pub async fn sweep_erased_tenant(&self, tenant: &TenantId) -> Result<(u64, u64)> {
        let mut tx = self.begin_write().await?;
        let erased = sqlx::query("SELECT 1 FROM tenants WHERE id = $1 AND state = $2")
            .bind(tenant.as_str())
            .bind(TenantState::Erased.as_str())
            .fetch_optional(&mut *tx)
            .await?;
        if erased.is_none() {
            return Ok((0, 0));
        }
        let counters = delete_tenant_rows_in(&mut tx, "quota_counters", tenant).await?;
        let reservations = delete_tenant_rows_in(&mut tx, "reservations", tenant).await?;
        tx.commit().await?;
        Ok((counters, reservations))
    }

    /// Rows of the tenant's content left in each table that holds any (all zero after an erasure), for the
    /// certificate.
    pub async fn tenant_content_rows(&self, tenant: &TenantId) -> Result<Vec<(&'static str, i64)>> {
        let mut counts = Vec::new();
        for table in CONTENT_TABLES {
            let sql = format!("SELECT COUNT(*) AS n FROM {table} WHERE tenant_id = $1");
            let row = sqlx::query(&sql).bind(tenant.as_str()).fetch_one(&self.write).await?;
            counts.push((table, row.try_get::<i64, _>("n")?));
        }
        Ok(counts)
    }

    pub async fn complete_erasure(&self, id: &str, certificate: &str, digest: &str, now: Timestamp) -> Result<()> {
        sqlx::query(
            "UPDATE erasures SET status = 'completed', completed_at = $1, certificate = $2, digest = $3 WHERE id = $4",
        )
        .bind(now.0)
        .bind(certificate)
        .bind(digest)
        .bind(id)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    pub async fn erasure(&self, id: &str) -> Result<Option<ErasureRow>> {
        let row = sqlx::query(
            "SELECT id, tenant_id, status, requested_by, requested_at, completed_at, certificate, digest \
             FROM erasures WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.read)
        .await?;
        row.map(|r| erasure_from_row(&r)).transpose()
    }

    /// Erasures whose files were not yet removed (a crash after the rows went).
    pub async fn running_erasures(&self) -> Result<Vec<ErasureRow>> {
        let rows = sqlx::query(
            "SELECT id, tenant_id, status, requested_by, requested_at, completed_at, certificate, digest \
             FROM erasures WHERE status = 'running' ORDER BY requested_at",
        )
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(erasure_from_row).collect()
    }

    /// Makes deleted content unrecoverable from the database files. SQLite zeroes freed pages
    /// (`secure_delete`), but the write-ahead log still holds earlier page images: a truncating checkpoint
    /// writes them back and empties the log. PostgreSQL keeps dead tuples until vacuumed.
    pub async fn purge_deleted(&self) -> Result<()> {
        match self.backend {
            Backend::Sqlite => {
                for _ in 0..50 {
                    let row = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").fetch_one(&self.write).await?;
                    let busy: i64 = row.try_get(0)?;
                    if busy == 0 {
                        return Ok(());
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                Err(StoreError::Corrupt("the write-ahead log could not be checkpointed (readers busy)".into()))
            }
            Backend::Postgres => {
                for table in
                    ["chunks", "documents", "file_parts", "api_keys", "tenants", "quota_counters", "reservations"]
                {
                    sqlx::query(&format!("VACUUM {table}")).execute(&self.write).await?;
                }
                Ok(())
            }
        }
    }
}

/// Deletes the tenant's rows from `table` (one of this module's fixed names) inside `tx`; how many went.
async fn delete_tenant_rows_in(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    table: &str,
    tenant: &TenantId,
) -> Result<u64> {
    let sql = format!("DELETE FROM {table} WHERE tenant_id = $1");
    Ok(sqlx::query(&sql).bind(tenant.as_str()).execute(&mut **tx).await?.rows_affected())
}

fn erasure_from_row(r: &sqlx::any::AnyRow) -> Result<ErasureRow> {
    Ok(ErasureRow {
        id: r.try_get("id")?,
        tenant_id: r.try_get("tenant_id")?,
        status: parsed(r, "status", ErasureStatus::parse)?,
        requested_by: r.try_get("requested_by")?,
        requested_at: Timestamp(r.try_get("requested_at")?),
        completed_at: r.try_get::<Option<i64>, _>("completed_at")?.map(Timestamp),
        certificate: r.try_get("certificate")?,
        digest: r.try_get("digest")?,
    })
}
