//! GDPR erasure (`DELETE /v1/tenant`): the tenant's rows go in one transaction that also moves it to `erased`
//! (its keys answer 401 from that commit on) and enqueues a `finish_erasure` job. The job removes its
//! namespace directory (indexes, vectors, uploaded files, spool) and its analytics rows (ClickHouse), purges
//! the database files of the deleted pages, and completes the erasure with a deletion certificate (what was
//! removed from which store, counts, times, a SHA-256 digest). A failing step (ClickHouse down) is retried
//! with the queue's backoff, and parks visibly if it keeps failing.

use serde::Serialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tenantry_domain::lifecycle::LifecycleEvent;
use tenantry_domain::{ErasureId, ErasureStatus, ErrorCode, TenantContext, TenantId, Timestamp};
use tenantry_store::{ErasedRows, NewErasure, StoreError};
use utoipa::ToSchema;

use crate::audit::Actor;
use crate::jobs::Job;
use crate::{ServiceError, ServiceResult, Services};

#[derive(Debug, Serialize, ToSchema)]
pub struct ErasureStarted {
    pub erasure_id: String,
}

/// A deletion certificate as the operator reads it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErasureView {
    pub erasure_id: String,
    pub tenant_id: String,
    /// `running` until every store is done, then `completed`.
    pub status: ErasureStatus,
    pub requested_by: String,
    pub requested_at: String,
    pub completed_at: Option<String>,
    #[schema(value_type = Object)]
    pub certificate: Value,
    /// SHA-256 (hex) of the certificate as stored.
    pub digest: String,
}

const KEPT_REASON: &str = "usage ledger rows are kept as the billing record; they hold no personal data \
(tenant id, request ids, meters, quantities, costs)";

impl Services {
    pub async fn erase_tenant(&self, ctx: &TenantContext) -> ServiceResult<ErasureStarted> {
        let requested_by = format!("tenant:{}", ctx.caller);
        let request_id = ctx.request_id.to_string();
        self.erase(&ctx.tenant_id, &requested_by, Actor::Tenant(ctx), &request_id).await
    }

    /// Erases a tenant: its rows (with the lifecycle version check) and, in the same transaction, the job
    /// that removes its files and analytics rows and writes the certificate.
    pub(crate) async fn erase(
        &self,
        tenant_id: &TenantId,
        requested_by: &str,
        actor: Actor<'_>,
        request_id: &str,
    ) -> ServiceResult<ErasureStarted> {
        let row = self.tenant_row(tenant_id).await?;
        if row.state.on(LifecycleEvent::Erased).is_none() {
            return Err(ServiceError::new(ErrorCode::InvalidTransition, "this tenant is already erased"));
        }
        let id = ErasureId::generate();
        let now = self.clock().now();
        let finish = Job::FinishErasure { tenant_id: tenant_id.clone(), erasure_id: id.to_string() };
        let jobs = [finish.at(now)];
        let audit = |rows: &ErasedRows| {
            let detail = json!({"erasure_id": id.as_str(), "rows": rows, "requested_by": requested_by});
            self.audit_entry(actor, Some(tenant_id), "tenant.erased", id.as_str(), detail, request_id)
        };
        let erasure = NewErasure { id: id.as_str(), requested_by, at: now, jobs: &jobs, audit: Some(&audit) };
        self.store().erase_tenant_rows(tenant_id, row.state_version, row.state, &erasure).await.map_err(
            |e| match e {
                StoreError::Concurrent => {
                    ServiceError::new(ErrorCode::TransitionInProgress, "the tenant changed meanwhile; retry")
                }
                other => other.into(),
            },
        )?;
        tracing::info!(erasure_id = %id, "tenant rows erased");
        self.wake_jobs();
        Ok(ErasureStarted { erasure_id: id.to_string() })
    }

    /// The `finish_erasure` job: removes the tenant's files and analytics rows, purges the database files,
    /// and completes the certificate. Idempotent: a completed erasure is left alone.
    pub(crate) async fn finish_erasure(&self, tenant: &TenantId, id: &str) -> ServiceResult<()> {
        let erasure = self.store().erasure(id).await?.ok_or_else(|| ServiceError::not_found("erasure"))?;
        if erasure.status == ErasureStatus::Completed {
            return Ok(());
        }
        // Until completion the certificate column holds the row counts of the erasing transaction.
        let mut rows: ErasedRows = serde_json::from_str(&erasure.certificate)
            .map_err(|e| ServiceError::internal(format!("erasure {id}: its row counts cannot be read: {e}")))?;
        let (counters, reservations) = self.store().sweep_erased_tenant(tenant).await?;
        rows.quota_counters += counters;
        rows.reservations += reservations;
        let bytes = self.drop_local_copies(tenant).await?;
        let analytics = match self.erase_analytics(tenant).await? {
            Some(events) => {
                json!({"store": "clickhouse", "usage_events": events, "outbox_events": rows.analytics_outbox})
            }
            None => json!({"store": "none configured", "outbox_events": rows.analytics_outbox}),
        };
        self.store().purge_deleted().await?;
        let remaining = self.store().tenant_content_rows(tenant).await?;
        let all_zero = remaining.iter().all(|(_, n)| *n == 0);
        if !all_zero {
            tracing::error!(erasure_id = id, ?remaining, "rows of the erased tenant remain; the certificate says so");
        }
        let verified: serde_json::Map<String, Value> =
            remaining.into_iter().map(|(table, n)| (table.to_owned(), json!(n))).collect();
        let completed_at = self.clock().now();
        let certificate = json!({
            "erasure_id": id,
            "tenant_id": tenant.as_str(),
            "requested_at": erasure.requested_at.to_rfc3339(),
            "completed_at": completed_at.to_rfc3339(),
            "removed": {
                "database": {
                    "documents": rows.documents,
                    "chunks": rows.chunks,
                    "api_keys": rows.api_keys,
                    "quota_counters": rows.quota_counters,
                    "reservations": rows.reservations,
                    "exports": rows.exports,
                    "jobs": rows.jobs,
                    "stripe_links": rows.stripe_links,
                    "notifications": rows.notifications,
                    "file_parts": rows.file_parts,
                    "document_changes": rows.document_changes,
                    "sign_ins": rows.sign_ins,
                    "tenant_profile": "email, organization and system prompt overwritten; state erased",
                },
                "files": {
                    "node": self.config().server.data_dir.display().to_string(),
                    "directory": format!("tenants/{}", tenant.as_str()),
                    "contents": "lexical index, vector index, notification spool (and originals kept on disk by \
                                 earlier versions)",
                    "bytes": bytes,
                    "other_nodes": "each node's index follower removes the same directory within about a second \
                                    of seeing the tenant erased; a node that was down does so before it serves",
                },
                "analytics": analytics,
                "purge": match self.store().backend() {
                    tenantry_store::Backend::Sqlite => "SQLite secure_delete zeroed freed pages; WAL checkpointed and truncated",
                    tenantry_store::Backend::Postgres => "PostgreSQL tables vacuumed",
                },
            },
            "verified": {
                "database": verified,
                "all_zero": all_zero,
                "how": "rows of the tenant counted in each content table after the erasure committed and purged",
            },
            "kept": {"usage_events": rows.usage_events_kept, "reason": KEPT_REASON},
        });
        let text = certificate.to_string();
        let digest = hex::encode(Sha256::digest(text.as_bytes()));
        self.store().complete_erasure(id, &text, &digest, completed_at).await?;
        tracing::info!(erasure_id = id, bytes, "erasure completed");
        Ok(())
    }

    /// Queues the finishing job of every erasure still running (erasures started before erasure was a job
    /// have none; for the others this is a no-op).
    pub(crate) async fn resume_erasures(&self) -> ServiceResult<()> {
        let now = self.clock().now();
        for e in self.store().running_erasures().await? {
            let job = Job::FinishErasure { tenant_id: TenantId::from_trusted(e.tenant_id.clone()), erasure_id: e.id };
            self.store().enqueue(&job.at(now), now).await?;
        }
        Ok(())
    }

    pub async fn erasure_view(&self, raw_id: &str) -> ServiceResult<ErasureView> {
        let e = self.store().erasure(raw_id).await?.ok_or_else(|| ServiceError::not_found("erasure"))?;
        let certificate = if e.status == ErasureStatus::Completed {
            serde_json::from_str(&e.certificate).unwrap_or(Value::Null)
        } else {
            json!({"status": "the tenant's rows are erased; files and purge pending"})
        };
        Ok(ErasureView {
            erasure_id: e.id,
            tenant_id: e.tenant_id,
            status: e.status,
            requested_by: e.requested_by,
            requested_at: e.requested_at.to_rfc3339(),
            completed_at: e.completed_at.map(Timestamp::to_rfc3339),
            certificate,
            digest: e.digest,
        })
    }
}
