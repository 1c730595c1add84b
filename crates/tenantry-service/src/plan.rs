//! Plan changes (`POST /v1/plan`): the tenant moves to another plan of the catalogue at once, and the base
//! price is prorated for the rest of the current period — a credit for the old plan's unused time, a charge
//! for the new plan's — as pending invoice items that the invoice closing the period bills.
//!
//! Rules (API.md leaves them open):
//! - Only a tenant being served (`trialing`, `active`, `past_due`) changes plan. The gateway answers the other
//!   states first, as API.md's state table says for every tenant endpoint (402 `pending_payment` and
//!   `suspended`, 403 `cancelled`, 503 `provisioning`); a state that changes under the request is 409
//!   `invalid_transition` here.
//! - The current plan again is a 200 no-op with a zero proration, so a retried request is harmless.
//! - While trialing nothing is prorated: the trial goes on under the new plan, whose price is billed in
//!   advance from the next closing invoice like any plan's.
//! - If the period was already closed early (`POST /admin/billing/close-period`), the next period's base was
//!   invoiced in advance at the old price: the change also credits that and charges the new price for it.
//! - A model or retrieval mode the new plan does not offer is reset to the new plan's default; quotas and
//!   rate limits are the new plan's from the next request (the gateway reads the plan per request).
//! - Everything is written in one transaction guarded by the config and state versions read before, so of
//!   two concurrent changes the later one is 409 `transition_in_progress` rather than applied to a stale read.

use serde::Serialize;
use serde_json::json;
use tenantry_billing::{prorate, InvoiceLine, LineKind, Proration};
use tenantry_domain::quota::BillingPeriod;
use tenantry_domain::{Cents, ErrorCode, InvoiceItemId, Plan, TenantContext, TenantState, Timestamp};
use tenantry_store::{NewPendingItem, PlanChange, StoreError, TenantRow};
use utoipa::ToSchema;

use crate::audit::Actor;
use crate::jobs::Job;
use crate::tenants::TenantConfig;
use crate::{ServiceError, ServiceResult, Services};

/// `POST /v1/plan`'s answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct PlanChanged {
    pub plan: String,
    /// The plan before the change (the same as `plan` when nothing changed).
    pub previous_plan: String,
    pub state: TenantState,
    pub proration: ProrationView,
    /// The configuration after the change: a model or retrieval mode the new plan does not offer is reset to
    /// its default.
    pub config: TenantConfig,
    pub config_version: i64,
    /// Set when the change waits for background work (a plan with vector retrieval needs the tenant's vector
    /// index built first): the tenant stays on `plan` until the switch, answered `202`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending_plan: Option<String>,
}

/// What the change adds to the tenant's next invoice.
#[derive(Debug, Serialize, ToSchema, PartialEq, Eq)]
pub struct ProrationView {
    /// For the old plan's unused time (shown on the invoice as a negative line).
    pub credit_cents: i64,
    /// For the new plan's remaining time.
    pub charge_cents: i64,
    pub currency: String,
}

impl ProrationView {
    fn zero(currency: &str) -> Self {
        Self { credit_cents: 0, charge_cents: 0, currency: currency.to_ascii_lowercase() }
    }
}

/// One plan of the catalogue, as a customer choosing it sees it (`GET /v1/plans`).
#[derive(Debug, Serialize, ToSchema)]
pub struct PlanOffer {
    pub name: String,
    /// The base price per billing period, billed in advance.
    pub price_cents: i64,
    pub currency: String,
    /// `month` or `year`.
    pub period: String,
    pub trial_days: u32,
    pub models: Vec<String>,
    pub default_model: String,
    pub retrieval_modes: Vec<tenantry_domain::RetrievalMode>,
    pub default_retrieval_mode: tenantry_domain::RetrievalMode,
    /// Hard limits per period (documents and storage are levels).
    #[schema(value_type = Object)]
    pub quotas: tenantry_domain::config::Quotas,
    /// Included in the price; usage above it is billed as overage.
    #[schema(value_type = Object)]
    pub included: tenantry_domain::config::Included,
    /// Overage per query and per 1,000 tokens, in micro-dollars (tiers and per-model prices included).
    #[schema(value_type = Object)]
    pub overage: tenantry_domain::config::Overage,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PlanCatalogue {
    pub plans: Vec<PlanOffer>,
}

/// What `POST /v1/plan` would do now (`GET /v1/plan/preview`), changing nothing.
#[derive(Debug, Serialize, ToSchema)]
pub struct PlanPreview {
    pub plan: String,
    pub current_plan: String,
    pub proration: ProrationView,
    /// The lines the change adds to the next invoice (`{description, amount_cents, …}`).
    #[schema(value_type = Vec<Object>)]
    pub lines: Vec<InvoiceLine>,
    /// The model and retrieval mode after the change (reset to the plan's defaults where it does not offer them).
    pub model: String,
    pub retrieval_mode: tenantry_domain::RetrievalMode,
}

impl Services {
    /// Every plan of the catalogue, in configuration order.
    pub fn plan_catalogue(&self) -> PlanCatalogue {
        let billing = &self.config().billing;
        let plans = self
            .catalog()
            .plans()
            .map(|p| PlanOffer {
                name: p.name.clone(),
                price_cents: p.price.0,
                currency: billing.currency.to_ascii_lowercase(),
                period: billing.period.clone(),
                trial_days: p.trial_days,
                models: p.models.clone(),
                default_model: p.default_model.clone(),
                retrieval_modes: p.retrieval_modes.clone(),
                default_retrieval_mode: p.default_retrieval_mode,
                quotas: p.quotas,
                included: p.included,
                overage: p.overage.clone(),
            })
            .collect();
        PlanCatalogue { plans }
    }

    /// The proration and configuration a change to `plan_name` would bring now, without making it.
    pub async fn preview_plan_change(&self, ctx: &TenantContext, plan_name: &str) -> ServiceResult<PlanPreview> {
        let new = self.known_plan(plan_name)?;
        let tenant = self.tenant_row(&ctx.tenant_id).await?;
        let old = self.plan_of(&tenant)?.clone();
        let currency = self.config().billing.currency.clone();
        let (lines, proration) = if old.name == new.name {
            (Vec::new(), ProrationView::zero(&currency))
        } else {
            self.plan_change_lines(&tenant, &old, &new, self.clock().now(), &currency).await?
        };
        Ok(PlanPreview {
            plan: new.name.clone(),
            current_plan: old.name.clone(),
            proration,
            lines,
            model: new.model_or_default(&tenant.model),
            retrieval_mode: new.mode_or_default(tenant.retrieval_mode),
        })
    }

    /// The catalogue's plan `name`, or a validation error listing the plans.
    fn known_plan(&self, name: &str) -> ServiceResult<std::sync::Arc<Plan>> {
        self.catalog().plan(name).cloned().ok_or_else(|| {
            let known = self.catalog().plans().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", ");
            ServiceError::validation(format!("unknown plan {name:?} (plans: {known})"))
        })
    }

    /// Moves the calling tenant to `plan_name` (see the module's rules).
    pub async fn change_plan(&self, ctx: &TenantContext, plan_name: &str) -> ServiceResult<PlanChanged> {
        let new = self.known_plan(plan_name)?;
        let tenant = self.tenant_row(&ctx.tenant_id).await?;
        match tenant.state {
            TenantState::Trialing | TenantState::Active | TenantState::PastDue => {}
            TenantState::Provisioning => {
                return Err(ServiceError::new(ErrorCode::Unavailable, "the tenant is being provisioned; retry shortly")
                    .retry_after(1))
            }
            other => {
                return Err(ServiceError::new(
                    ErrorCode::InvalidTransition,
                    format!("the plan cannot be changed while the tenant is {}", other.as_str()),
                ))
            }
        }
        let old = self.plan_of(&tenant)?.clone();
        let currency = self.config().billing.currency.clone();
        if tenant.pending_plan.is_some() {
            return Err(ServiceError::new(
                ErrorCode::TransitionInProgress,
                "a plan change is in progress (its vector index is being built); retry when it is done",
            )
            .retry_after(1));
        }
        if old.name == new.name {
            return Ok(changed(&tenant, &old.name, ProrationView::zero(&currency)));
        }
        if new.needs_vectors() && !old.needs_vectors() && !self.store().documents(&tenant.id).await?.is_empty() {
            return self.start_background_plan_change(ctx, &tenant, &new.name).await;
        }
        let request_id = ctx.request_id.to_string();
        self.apply_plan_change(&tenant, &old, &new, Actor::Tenant(ctx), &request_id).await
    }

    /// A change to a plan that searches vectors, for a tenant whose plan did not (so its documents have no
    /// vectors): marked pending and handed to a job, in one transaction. The tenant keeps being served on its
    /// current plan; documents it uploads meanwhile are embedded at once.
    async fn start_background_plan_change(
        &self,
        ctx: &TenantContext,
        tenant: &TenantRow,
        plan: &str,
    ) -> ServiceResult<PlanChanged> {
        let now = self.clock().now();
        let job = Job::SwitchPlan { tenant_id: tenant.id.clone(), plan: plan.to_owned() }.at(now);
        let detail = json!({"from": tenant.plan, "to": plan, "waits_for": "vector index"});
        let request_id = ctx.request_id.to_string();
        let audit = self.audit_entry(
            Actor::Tenant(ctx),
            Some(&tenant.id),
            "plan.change_started",
            tenant.id.as_str(),
            detail,
            &request_id,
        );
        self.store()
            .begin_plan_change(&tenant.id, plan, tenant.config_version, &job, Some(&audit), now)
            .await
            .map_err(|e| match e {
                StoreError::Concurrent => ServiceError::new(
                    ErrorCode::TransitionInProgress,
                    "another change to the tenant is in progress; read it again and retry",
                )
                .retry_after(1),
                other => other.into(),
            })?;
        self.wake_jobs();
        tracing::info!(tenant_id = %tenant.id, from = %tenant.plan, to = plan, "plan change waits for the vector index");
        let row = self.tenant_row(&tenant.id).await?;
        Ok(changed(&row, &tenant.plan, ProrationView::zero(&self.config().billing.currency)))
    }

    /// The `SwitchPlan` job: embeds every document of the tenant into its vector index (replacing any partial
    /// work of an earlier attempt), then applies the change as of now, proration included. Moot if the change
    /// is no longer pending; abandoned if the tenant stopped being served.
    pub(crate) async fn switch_plan(&self, tenant_id: &tenantry_domain::TenantId, plan: &str) -> ServiceResult<()> {
        let Some(tenant) = self.store().tenant(tenant_id).await? else { return Ok(()) };
        if tenant.pending_plan.as_deref() != Some(plan) {
            return Ok(());
        }
        if !crate::lifecycle::billable(tenant.state) {
            self.store().abandon_plan_change(tenant_id, self.clock().now()).await?;
            return Ok(());
        }
        let (Some(old), Some(new)) = (self.catalog().plan(&tenant.plan).cloned(), self.catalog().plan(plan).cloned())
        else {
            self.store().abandon_plan_change(tenant_id, self.clock().now()).await?;
            return Ok(());
        };
        self.embed_all_documents(tenant_id).await?;
        self.apply_plan_change(&tenant, &old, &new, Actor::System, "").await.map(drop)
    }

    /// Applies a change from `old` to `new` now: plan, model and mode the new plan allows, proration items,
    /// one transaction (see the module's rules).
    async fn apply_plan_change(
        &self,
        tenant: &TenantRow,
        old: &Plan,
        new: &Plan,
        actor: Actor<'_>,
        request_id: &str,
    ) -> ServiceResult<PlanChanged> {
        let currency = self.config().billing.currency.clone();
        let tenant = tenant.clone();
        let now = self.clock().now();
        let (lines, proration) = self.plan_change_lines(&tenant, old, new, now, &currency).await?;
        let model = new.model_or_default(&tenant.model);
        let retrieval_mode = new.mode_or_default(tenant.retrieval_mode);
        let items: Vec<NewPendingItem> = lines
            .iter()
            .map(|l| NewPendingItem {
                id: InvoiceItemId::generate().as_str().to_owned(),
                description: l.description.clone(),
                amount_cents: l.amount_cents.0,
                kind: l.kind().as_str(),
            })
            .collect();
        let detail = json!({
            "from": old.name,
            "to": new.name,
            "proration": {
                "credit_cents": proration.credit_cents,
                "charge_cents": proration.charge_cents,
                "currency": proration.currency,
            },
            "items": items.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(),
            "model": model,
            "retrieval_mode": retrieval_mode.as_str(),
            "config_version": tenant.config_version + 1,
        });
        let audit = self.audit_entry(actor, Some(&tenant.id), "plan.changed", tenant.id.as_str(), detail, request_id);
        let change = PlanChange {
            plan: new.name.clone(),
            model,
            retrieval_mode,
            items,
            expected_config_version: tenant.config_version,
            expected_state_version: tenant.state_version,
            period_close_kind: Job::ClosePeriod { tenant_id: tenant.id.clone(), period_start_ms: 0 }.kind().to_owned(),
            audit: Some(audit),
        };
        let row = self.store().change_plan(&tenant.id, &change, now).await.map_err(|e| match e {
            StoreError::Concurrent => ServiceError::new(
                ErrorCode::TransitionInProgress,
                "another change to the tenant (a plan change, a lifecycle transition or the close of its billing \
                 period) is in progress; read it again and retry",
            )
            .retry_after(1),
            other => other.into(),
        })?;
        tracing::info!(
            tenant_id = %tenant.id,
            from = %old.name,
            to = %new.name,
            credit_cents = proration.credit_cents,
            charge_cents = proration.charge_cents,
            "plan changed"
        );
        Ok(changed(&row, &old.name, proration))
    }

    /// The invoice lines a change from `old` to `new` at `now` leaves for the next invoice, and their sums.
    async fn plan_change_lines(
        &self,
        tenant: &TenantRow,
        old: &Plan,
        new: &Plan,
        now: Timestamp,
        currency: &str,
    ) -> ServiceResult<(Vec<InvoiceLine>, ProrationView)> {
        let period = BillingPeriod::containing(tenant.billing_anchor, now, self.period_kind());
        let mut lines = Vec::new();
        if tenant.state != TenantState::Trialing {
            let p = prorate(old.price, new.price, period, now, currency).map_err(ServiceError::internal)?;
            lines.extend(p.lines(&old.name, &new.name));
        }
        let closed_early = self
            .store()
            .invoices(&tenant.id)
            .await?
            .iter()
            .any(|i| i.kind == tenantry_domain::InvoiceKind::Closing && i.period_start == period.start);
        if closed_early {
            let next = BillingPeriod::containing(tenant.billing_anchor, period.end, self.period_kind());
            let whole = prorate(old.price, new.price, next, next.start, currency).map_err(ServiceError::internal)?;
            lines.extend(next_period_lines(&whole, &old.name, &new.name, next));
        }
        let credit = lines.iter().filter(|l| l.amount_cents.0 < 0).map(|l| -l.amount_cents.0).sum();
        let charge = lines.iter().filter(|l| l.amount_cents.0 > 0).map(|l| l.amount_cents.0).sum();
        Ok((
            lines,
            ProrationView { credit_cents: credit, charge_cents: charge, currency: currency.to_ascii_lowercase() },
        ))
    }

    /// The tenant's pending invoice items as invoice lines, with their ids (for the invoice that bills them).
    pub(crate) async fn pending_invoice_lines(
        &self,
        tenant: &tenantry_domain::TenantId,
    ) -> ServiceResult<(Vec<InvoiceLine>, Vec<String>)> {
        let items = self.store().pending_items(tenant).await?;
        let lines = items
            .iter()
            .map(|i| {
                // An item from before kinds were recorded: a plan change's proration.
                let kind = i.kind.as_deref().and_then(LineKind::parse).unwrap_or(LineKind::Proration);
                InvoiceLine::fixed(kind, i.description.clone(), Cents(i.amount_cents))
            })
            .collect();
        Ok((lines, items.into_iter().map(|i| i.id).collect()))
    }
}

/// The correction for a next period already invoiced at the old plan's price (after an early close).
fn next_period_lines(whole: &Proration, old: &str, new: &str, next: BillingPeriod) -> Vec<InvoiceLine> {
    let dates = format!("{} to {}", day(next.start), day(next.end));
    let mut lines = Vec::new();
    if whole.credit_cents.0 != 0 {
        // Both are the next period's base price: the old one taken back, the new one billed.
        lines.push(InvoiceLine::fixed(
            LineKind::Base,
            format!("{old} plan, {dates}, invoiced in advance: credited"),
            Cents(-whole.credit_cents.0),
        ));
    }
    if whole.charge_cents.0 != 0 {
        lines.push(InvoiceLine::fixed(LineKind::Base, format!("{new} plan, {dates}"), whole.charge_cents));
    }
    lines
}

fn day(t: Timestamp) -> String {
    t.to_rfc3339().chars().take(10).collect()
}

fn changed(row: &TenantRow, previous: &str, proration: ProrationView) -> PlanChanged {
    PlanChanged {
        plan: row.plan.clone(),
        previous_plan: previous.to_owned(),
        state: row.state,
        proration,
        config: TenantConfig {
            model: row.model.clone(),
            retrieval_mode: row.retrieval_mode,
            system_prompt: row.system_prompt.clone(),
            overage_limit_cents: row.overage_limit_cents,
        },
        config_version: row.config_version,
        pending_plan: row.pending_plan.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_already_invoiced_next_period_is_credited_and_charged_whole() {
        let next = BillingPeriod { start: Timestamp(86_400_000), end: Timestamp(2 * 86_400_000) };
        let whole = prorate(Cents(3_000), Cents(6_000), next, next.start, "USD").expect("inside");
        let lines = next_period_lines(&whole, "small", "big", next);
        let amounts: Vec<i64> = lines.iter().map(|l| l.amount_cents.0).collect();
        assert_eq!(amounts, [-3_000, 6_000]);
        assert_eq!(lines[1].description, "big plan, 1970-01-02 to 1970-01-03");
    }
}
