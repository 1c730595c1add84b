//! Billing from the ledger, with the manual payment provider: closing a period rates its usage (the ledger's
//! sums for exactly that period) with `tenantry-billing` into an `open` invoice carrying the overage in
//! arrears and the next period's base price in advance; the operator reports payment outcomes, which move the
//! invoice and the tenant's lifecycle (a failure makes an active tenant `past_due`; a success makes a
//! `past_due`, `suspended` or trialing tenant `active`).

use serde::Serialize;
use serde_json::{json, Value};
use tenantry_billing::rating::{closing_lines, MeteredUsage, Pricing};
use tenantry_billing::{InvoiceLine, InvoiceNumber, InvoiceStatus};
use tenantry_domain::lifecycle::LifecycleEvent;
use tenantry_domain::quota::{BillingPeriod, Meter};
use tenantry_domain::{DocumentId, ErrorCode, TenantContext, TenantId, TenantState};
use tenantry_store::{InvoiceRow, NewInvoice, StoreError, TenantRow};
use utoipa::ToSchema;

use crate::audit::Actor;
use crate::{ServiceError, ServiceResult, Services};

#[derive(Debug, Serialize, ToSchema)]
pub struct InvoiceView {
    pub invoice_id: String,
    /// `INV-000123`: gapless across the installation.
    pub number: String,
    pub tenant_id: String,
    pub period_start: String,
    pub period_end: String,
    /// `draft`, `open`, `paid`, `uncollectible` or `void`.
    pub status: String,
    pub currency: String,
    pub subtotal_cents: i64,
    pub total_cents: i64,
    /// `{description, meter, quantity, unit_amount_cents, unit_amount_decimal, amount_cents}`.
    #[schema(value_type = Vec<Object>)]
    pub lines: Vec<Value>,
}

fn view(row: InvoiceRow) -> InvoiceView {
    InvoiceView {
        number: InvoiceNumber::new(row.number.max(0) as u64).to_string(),
        invoice_id: row.id,
        tenant_id: row.tenant_id,
        period_start: row.period_start.to_rfc3339(),
        period_end: row.period_end.to_rfc3339(),
        status: row.status,
        currency: row.currency,
        subtotal_cents: row.subtotal_cents,
        total_cents: row.total_cents,
        lines: serde_json::from_str(&row.lines).unwrap_or_default(),
    }
}

impl Services {
    pub async fn invoices(&self, ctx: &TenantContext) -> ServiceResult<Vec<InvoiceView>> {
        Ok(self.store().invoices(&ctx.tenant_id).await?.into_iter().map(view).collect())
    }

    /// Closes the current period of every billable tenant now; returns the invoices made. A tenant whose
    /// period is already closed, or whose period owes nothing, gets no new invoice.
    pub async fn close_periods(&self) -> ServiceResult<Vec<InvoiceView>> {
        let mut made = Vec::new();
        for state in [TenantState::Trialing, TenantState::Active, TenantState::PastDue] {
            for tenant in self.store().tenants(Some(state)).await? {
                if let Some(invoice) = self.close_period(&tenant).await? {
                    made.push(invoice);
                }
            }
        }
        Ok(made)
    }

    async fn close_period(&self, tenant: &TenantRow) -> ServiceResult<Option<InvoiceView>> {
        let plan = self
            .catalog()
            .plan(&tenant.plan)
            .ok_or_else(|| ServiceError::internal(format!("tenant plan {:?} is not in the catalogue", tenant.plan)))?;
        let kind = self.period_kind();
        let period = BillingPeriod::containing(tenant.billing_anchor, self.clock().now(), kind);
        let next = BillingPeriod::containing(tenant.billing_anchor, period.end, kind);
        let mut usage = MeteredUsage::new(0);
        for line in self.store().usage_lines(&tenant.id, period.start, period.end).await? {
            let quantity = line.quantity.max(0) as u64;
            match line.meter {
                Meter::Queries => usage.queries += quantity,
                Meter::PromptTokens | Meter::CompletionTokens => usage = usage.with_tokens(line.model, quantity),
                Meter::Documents | Meter::StorageBytes => {}
            }
        }
        let pricing = Pricing::from_plan(plan).map_err(ServiceError::internal)?;
        let lines: Vec<InvoiceLine> =
            closing_lines(&pricing, &usage, Some((&pricing, next))).map_err(ServiceError::internal)?;
        if lines.is_empty() {
            return Ok(None);
        }
        let subtotal = lines.iter().try_fold(0i64, |sum, l| sum.checked_add(l.amount_cents.0));
        let subtotal = subtotal.ok_or_else(|| ServiceError::internal("invoice total overflows"))?;
        let new = NewInvoice {
            id: format!("inv_{}", DocumentId::generate().as_str().trim_start_matches("doc_")),
            tenant_id: tenant.id.clone(),
            kind: "closing".into(),
            period_start: period.start,
            period_end: period.end,
            status: InvoiceStatus::Open.as_str().into(),
            currency: self.config().billing.currency.clone(),
            subtotal_cents: subtotal,
            total_cents: subtotal,
            lines: serde_json::to_string(&lines).map_err(ServiceError::internal)?,
            now: self.clock().now(),
        };
        let row = match self.store().create_invoice(&new).await {
            Ok(row) => row,
            Err(StoreError::Conflict(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let detail = json!({"invoice_id": row.id, "number": row.number, "total_cents": row.total_cents});
        self.audit(Actor::System, Some(&tenant.id), "invoice.opened", &row.id, detail, "").await;
        Ok(Some(view(row)))
    }

    /// The manual provider's payment report: `succeeded` pays the invoice and reactivates the tenant where the
    /// lifecycle allows; `failed` leaves it open and makes an active or trialing tenant `past_due`.
    pub async fn report_payment(&self, invoice_id: &str, outcome: &str) -> ServiceResult<InvoiceView> {
        let row = self.store().invoice(invoice_id).await?.ok_or_else(|| ServiceError::not_found("invoice"))?;
        let status = InvoiceStatus::parse(&row.status)
            .ok_or_else(|| ServiceError::internal(format!("stored invoice status {:?}", row.status)))?;
        let (to, event) = match outcome {
            "succeeded" => (InvoiceStatus::Paid, LifecycleEvent::PaymentSucceeded),
            "failed" => (status, LifecycleEvent::PaymentFailed),
            other => {
                return Err(ServiceError::validation(format!("outcome must be succeeded or failed, not {other:?}")))
            }
        };
        if status != InvoiceStatus::Open && !(status == InvoiceStatus::Uncollectible && to == InvoiceStatus::Paid) {
            return Err(ServiceError::new(
                ErrorCode::InvalidTransition,
                format!("invoice is {}; only an open invoice takes a payment outcome", status.as_str()),
            ));
        }
        let now = self.clock().now();
        if to != status {
            self.store().set_invoice_status(&row.id, status.as_str(), to.as_str(), now).await.map_err(|e| match e {
                StoreError::Concurrent => {
                    ServiceError::new(ErrorCode::TransitionInProgress, "the invoice changed; retry")
                }
                other => other.into(),
            })?;
        }
        let tenant_id = TenantId::from_trusted(row.tenant_id.clone());
        if let Some(tenant) = self.store().tenant(&tenant_id).await? {
            if tenant.state.on(event).is_some() {
                self.store().transition(&tenant_id, tenant.state_version, tenant.state, event, now).await?;
            }
        }
        let detail = json!({"invoice_id": row.id, "outcome": outcome});
        self.audit(Actor::Operator, Some(&tenant_id), "invoice.payment_reported", &row.id, detail, "").await;
        let row = self.store().invoice(invoice_id).await?.ok_or_else(|| ServiceError::not_found("invoice"))?;
        Ok(view(row))
    }
}
