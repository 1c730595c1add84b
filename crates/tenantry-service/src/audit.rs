//! Recording what changed in the audit trail, and reading and verifying it. The entries recording a signup,
//! a key's creation or revocation, a plan change, an erasure and a lifecycle transition are written in the
//! transaction of the change they describe (`Services::audit_entry` builds them), so the two exist together
//! or not at all. Other entries (invoices, jobs, Stripe events, failed authentications) are appended after
//! the change they describe has committed: a crash in between loses that entry (never invents one). The
//! chain itself can never be edited unnoticed.

use serde_json::Value;
use tenantry_domain::{TenantContext, TenantId};
use tenantry_store::NewAuditEntry;
pub use tenantry_store::{AuditBreak, AuditEntry};

use crate::{ServiceError, ServiceResult, Services};

pub const MAX_AUDIT_PAGE: i64 = 1_000;

/// Who acted.
#[derive(Clone, Copy)]
pub enum Actor<'a> {
    /// A tenant, through one of its keys.
    Tenant(&'a TenantContext),
    Operator,
    /// The service itself (signup, jobs).
    System,
}

impl Services {
    /// Appends an entry; a failure is logged (the change it describes has already happened).
    pub(crate) async fn audit(
        &self,
        actor: Actor<'_>,
        tenant: Option<&TenantId>,
        action: &str,
        target: &str,
        detail: Value,
        request_id: &str,
    ) {
        let entry = self.audit_entry(actor, tenant, action, target, detail, request_id);
        if let Err(e) = self.store().append_audit(&entry).await {
            tracing::error!(error = %e, action, "audit entry could not be written");
        }
    }

    /// The entry recording an action now, for a write that appends it in its own transaction.
    pub(crate) fn audit_entry(
        &self,
        actor: Actor<'_>,
        tenant: Option<&TenantId>,
        action: &str,
        target: &str,
        detail: Value,
        request_id: &str,
    ) -> NewAuditEntry {
        let actor = match actor {
            Actor::Tenant(ctx) => format!("tenant:{}", ctx.caller),
            Actor::Operator => "operator".to_owned(),
            Actor::System => "system".to_owned(),
        };
        NewAuditEntry {
            at: self.clock().now(),
            tenant_id: tenant.cloned(),
            actor,
            action: action.to_owned(),
            target: target.to_owned(),
            detail: detail.to_string(),
            request_id: request_id.to_owned(),
        }
    }

    /// The operator's view: entries oldest first, optionally one tenant's, after `after_seq`.
    pub async fn audit_log(&self, tenant: Option<&str>, after_seq: i64, limit: i64) -> ServiceResult<Vec<AuditEntry>> {
        let tenant = match tenant {
            Some(raw) => {
                Some(TenantId::parse(raw).ok_or_else(|| ServiceError::validation("tenant_id is not a tenant id"))?)
            }
            None => None,
        };
        Ok(self.store().audit_entries(tenant.as_ref(), after_seq.max(0), limit.clamp(1, MAX_AUDIT_PAGE)).await?)
    }

    pub async fn verify_audit(&self) -> ServiceResult<Result<i64, AuditBreak>> {
        Ok(self.store().verify_audit().await?)
    }
}
