//! Prepaid credit (API.md "Integrations"): the operator grants a tenant credit, optionally expiring; every
//! invoice made afterwards draws on the unexpired balance, soonest expiry first, and shows what it drew as
//! a line with a negative amount (the store draws it inside the invoice's transaction: `prepaid`).

use serde::Serialize;
use tenantry_billing::{InvoiceLine, LineKind};
use tenantry_domain::{Cents, CreditId, TenantId, Timestamp};
use tenantry_store::{CreditGrantRow, CreditLine};
use utoipa::ToSchema;

use crate::audit::Actor;
use crate::{ServiceError, ServiceResult, Services};

/// The largest single grant: ten million in the billing currency.
pub const MAX_GRANT_CENTS: i64 = 1_000_000_000;
const MAX_REASON_CHARS: usize = 200;

/// One use of a grant by an invoice.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreditUse {
    pub invoice_id: String,
    pub amount_cents: i64,
    pub applied_at: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreditGrant {
    pub credit_id: String,
    pub amount_cents: i64,
    /// What is left to draw (0 once used up; an expired grant keeps its remainder here but is not drawn).
    pub remaining_cents: i64,
    pub reason: String,
    pub expires_at: Option<String>,
    pub created_at: String,
    /// The invoices that drew on it.
    pub applied: Vec<CreditUse>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreditBalance {
    /// Unexpired credit left to draw.
    pub balance_cents: i64,
    pub currency: String,
    /// Newest first.
    pub grants: Vec<CreditGrant>,
}

fn view(row: CreditGrantRow) -> CreditGrant {
    CreditGrant {
        credit_id: row.id,
        amount_cents: row.amount_cents,
        remaining_cents: row.remaining_cents,
        reason: row.reason,
        expires_at: row.expires_at.map(|t| t.to_rfc3339()),
        created_at: row.created_at.to_rfc3339(),
        applied: row
            .applied
            .into_iter()
            .map(|(invoice_id, amount_cents, at)| CreditUse { invoice_id, amount_cents, applied_at: at.to_rfc3339() })
            .collect(),
    }
}

/// What an invoice's line of drawn credit looks like.
pub(crate) fn credit_line() -> CreditLine {
    CreditLine(std::sync::Arc::new(|cents| {
        serde_json::to_value(InvoiceLine::fixed(LineKind::Credit, "Prepaid credit", Cents(-cents))).unwrap_or_default()
    }))
}

impl Services {
    /// `POST /admin/tenants/{id}/credits`: grants the tenant `amount_cents` of credit.
    pub async fn grant_credit(
        &self,
        tenant: &str,
        amount_cents: i64,
        reason: &str,
        expires_at: Option<&str>,
    ) -> ServiceResult<CreditGrant> {
        let row = self.named_tenant(tenant).await?;
        let tenant_id = row.id.clone();
        if row.state == tenantry_domain::TenantState::Erased {
            return Err(ServiceError::not_found("tenant"));
        }
        if !(1..=MAX_GRANT_CENTS).contains(&amount_cents) {
            return Err(ServiceError::validation(format!("amount_cents must be between 1 and {MAX_GRANT_CENTS}")));
        }
        let reason = reason.trim();
        if reason.is_empty() || reason.chars().count() > MAX_REASON_CHARS {
            return Err(ServiceError::validation(format!("reason must be 1 to {MAX_REASON_CHARS} characters")));
        }
        ServiceError::unless_plain_text("reason", reason)?;
        let now = self.clock().now();
        let expires_at = match expires_at {
            None => None,
            Some(raw) => {
                let at = Timestamp::parse_rfc3339(raw).ok_or_else(|| {
                    ServiceError::validation("expires_at must be an RFC 3339 time, e.g. 2027-01-31T00:00:00Z")
                })?;
                if at.0 <= now.0 {
                    return Err(ServiceError::validation("expires_at must be in the future"));
                }
                Some(at)
            }
        };
        let grant = CreditGrantRow {
            id: CreditId::generate().as_str().to_owned(),
            tenant_id: tenant_id.clone(),
            amount_cents,
            remaining_cents: amount_cents,
            reason: reason.to_owned(),
            expires_at,
            created_at: now,
            applied: Vec::new(),
        };
        self.store().grant_credit(&grant).await?;
        let detail = serde_json::json!({"amount_cents": amount_cents, "reason": reason, "expires_at": expires_at.map(|t| t.to_rfc3339())});
        self.audit(Actor::Operator, Some(&tenant_id), "credit.granted", &grant.id, detail, "").await;
        Ok(view(grant))
    }

    /// `GET /v1/credits` (and the operator's view of a tenant): the balance and each grant's use.
    pub async fn credit_balance(&self, tenant: &TenantId) -> ServiceResult<CreditBalance> {
        let now = self.clock().now();
        let grants = self.store().credit_grants(tenant).await?;
        let balance_cents =
            grants.iter().filter(|g| g.expires_at.is_none_or(|at| at.0 > now.0)).map(|g| g.remaining_cents).sum();
        Ok(CreditBalance {
            balance_cents,
            currency: self.config().billing.currency.clone(),
            grants: grants.into_iter().map(view).collect(),
        })
    }
}
