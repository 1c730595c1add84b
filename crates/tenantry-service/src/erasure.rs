//! GDPR erasure (`DELETE /v1/tenant`): the tenant's rows go in one transaction that also moves it to `erased`
//! (its keys answer 401 from that commit on); then its namespace directory (indexes, vectors, uploaded
//! files) is removed and the database files are purged of the deleted pages; then the erasure is completed
//! with a deletion certificate (what was removed from which store, counts, times, a SHA-256 digest) and an
//! audit entry. An erasure interrupted after its rows went is finished at the next start.

use serde::Serialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tenantry_domain::lifecycle::LifecycleEvent;
use tenantry_domain::{ErasureId, ErrorCode, TenantContext, TenantId, Timestamp};
use tenantry_store::{ErasedRows, StoreError};
use utoipa::ToSchema;

use crate::audit::Actor;
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
    pub status: String,
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
        let requested_by = format!("tenant:{}", ctx.key_id);
        let request_id = ctx.request_id.to_string();
        self.erase(&ctx.tenant_id, &requested_by, Actor::Tenant(ctx), &request_id).await
    }

    /// Erases a tenant: its rows (with the lifecycle version check), then its files, then the certificate.
    pub(crate) async fn erase(
        &self,
        tenant_id: &TenantId,
        requested_by: &str,
        actor: Actor<'_>,
        request_id: &str,
    ) -> ServiceResult<ErasureStarted> {
        let row = self.store().tenant(tenant_id).await?.ok_or_else(|| ServiceError::not_found("tenant"))?;
        if row.state.on(LifecycleEvent::Erased).is_none() {
            return Err(ServiceError::new(ErrorCode::InvalidTransition, "this tenant is already erased"));
        }
        let id = ErasureId::generate();
        let now = self.clock().now();
        let rows = self
            .store()
            .erase_tenant_rows(tenant_id, row.state_version, row.state, id.as_str(), requested_by, now)
            .await
            .map_err(|e| match e {
                StoreError::Concurrent => {
                    ServiceError::new(ErrorCode::TransitionInProgress, "the tenant changed meanwhile; retry")
                }
                other => other.into(),
            })?;
        tracing::info!(erasure_id = %id, "tenant rows erased");
        let detail = json!({"erasure_id": id.as_str(), "rows": rows, "requested_by": requested_by});
        self.audit(actor, Some(tenant_id), "tenant.erased", id.as_str(), detail, request_id).await;
        self.finish_erasure(id.as_str(), tenant_id, &rows, now).await?;
        Ok(ErasureStarted { erasure_id: id.to_string() })
    }

    /// Removes the tenant's files, purges the database files, and completes the certificate. Idempotent.
    async fn finish_erasure(
        &self,
        id: &str,
        tenant: &TenantId,
        rows: &ErasedRows,
        requested_at: Timestamp,
    ) -> ServiceResult<()> {
        let search = self.search().clone();
        let owned = tenant.clone();
        let bytes = tokio::task::spawn_blocking(move || search.drop_namespace(&owned)).await??;
        self.store().purge_deleted().await?;
        let completed_at = self.clock().now();
        let certificate = json!({
            "erasure_id": id,
            "tenant_id": tenant.as_str(),
            "requested_at": requested_at.to_rfc3339(),
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
                    "tenant_profile": "email, organization and system prompt overwritten; state erased",
                },
                "files": {
                    "directory": format!("tenants/{}", tenant.as_str()),
                    "contents": "lexical index, vector index, uploaded originals, export archives, notification spool",
                    "bytes": bytes,
                },
                "purge": match self.store().backend() {
                    tenantry_store::Backend::Sqlite => "SQLite secure_delete zeroed freed pages; WAL checkpointed and truncated",
                    tenantry_store::Backend::Postgres => "PostgreSQL tables vacuumed",
                },
            },
            "kept": {"usage_events": rows.usage_events_kept, "reason": KEPT_REASON},
        });
        let text = certificate.to_string();
        let digest = hex::encode(Sha256::digest(text.as_bytes()));
        self.store().complete_erasure(id, &text, &digest, completed_at).await?;
        tracing::info!(erasure_id = id, bytes, "erasure completed");
        Ok(())
    }

    /// Finishes erasures a crash interrupted after their rows were gone.
    pub(crate) async fn resume_erasures(&self) -> ServiceResult<()> {
        for e in self.store().running_erasures().await? {
            let rows: ErasedRows = serde_json::from_str(&e.certificate).unwrap_or_default();
            let tenant = TenantId::from_trusted(e.tenant_id.clone());
            tracing::warn!(erasure_id = %e.id, "finishing an interrupted erasure");
            self.finish_erasure(&e.id, &tenant, &rows, e.requested_at).await?;
        }
        Ok(())
    }

    pub async fn erasure_view(&self, raw_id: &str) -> ServiceResult<ErasureView> {
        let e = self.store().erasure(raw_id).await?.ok_or_else(|| ServiceError::not_found("erasure"))?;
        let certificate = if e.status == "completed" {
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
