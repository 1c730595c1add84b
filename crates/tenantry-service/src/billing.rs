//! Billing from the ledger. Each billable tenant has one scheduled job per period: when the period ends it is
//! rated (the ledger's sums for exactly that period) with `tenantry-billing` into an `open` invoice carrying
//! the overage in arrears and the next period's base price in advance, and the next period's close is
//! scheduled in the same transaction. A paid signup gets its first period's invoice at once. Payment outcomes
//! (reported by the operator for the manual provider) move the invoice and the tenant's lifecycle, and a
//! failure starts dunning: retries on `billing.retry_days`, suspension after `billing.grace_days` unpaid, and
//! reactivation as soon as a payment succeeds. The operator can also write an invoice off (`uncollectible`,
//! still owed) or void it (nothing owed: dunning for it ends).

use std::sync::Arc;

use serde::Serialize;
use serde_json::{json, Value};
use tenantry_billing::rating::{closing_lines, remainder_line, signup_lines, true_up_lines, MeteredUsage, Pricing};
use tenantry_billing::{InvoiceLine, InvoiceNumber, InvoiceStatus, LineKind};
use tenantry_domain::lifecycle::LifecycleEvent;
use tenantry_domain::quota::{BillingPeriod, Meter};
use tenantry_domain::{
    Cents, ErrorCode, InvoiceId, InvoiceKind, Plan, TenantContext, TenantId, TenantState, Timestamp,
};
use tenantry_store::{InvoiceEffects, InvoiceRow, NewInvoice, NewJob, NewPendingItem, StoreError, TenantRow};
use utoipa::ToSchema;

use crate::audit::Actor;
use crate::jobs::Job;
use crate::lifecycle::billable;
use crate::notify::Template;
use crate::{ServiceError, ServiceResult, Services};

pub(crate) const DAY_SECS: i64 = 86_400;

#[derive(Debug, Serialize, ToSchema)]
pub struct InvoiceView {
    pub invoice_id: String,
    /// `INV-000123`: gapless across the installation.
    pub number: String,
    pub tenant_id: String,
    /// `signup` (the first period's base price), `closing` (a period's overage and the next base price) or
    /// `true_up` (usage after an early close).
    pub kind: InvoiceKind,
    pub period_start: String,
    pub period_end: String,
    pub status: InvoiceStatus,
    pub currency: String,
    pub subtotal_cents: i64,
    pub total_cents: i64,
    /// `{description, meter, quantity, unit_amount_cents, unit_amount_decimal, amount_cents}`.
    #[schema(value_type = Vec<Object>)]
    pub lines: Vec<Value>,
    /// Where an open invoice can be paid online (Stripe's hosted invoice page); absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pay_url: Option<String>,
}

/// What the current period's invoice holds so far (`GET /v1/invoices/upcoming`).
#[derive(Debug, Serialize, ToSchema)]
pub struct UpcomingInvoice {
    pub period_start: String,
    pub period_end: String,
    /// When it will be made: the period's end, or the trial's end when that comes first.
    pub bills_at: String,
    pub currency: String,
    /// Before prepaid credit, which is applied when the invoice is made.
    pub subtotal_cents: i64,
    /// The lines as the invoice would carry them.
    #[schema(value_type = Vec<Object>)]
    pub lines: Vec<Value>,
}

/// The lines of a period's close before pending items, with what they were rated from.
struct Closing {
    lines: Vec<InvoiceLine>,
    pricing: Pricing,
    usage: MeteredUsage,
}

pub(crate) fn view(row: InvoiceRow) -> InvoiceView {
    InvoiceView {
        number: InvoiceNumber::new(row.number.max(0) as u64).to_string(),
        invoice_id: row.id,
        tenant_id: row.tenant_id,
        kind: row.kind,
        period_start: row.period_start.to_rfc3339(),
        period_end: row.period_end.to_rfc3339(),
        status: row.status,
        currency: row.currency,
        subtotal_cents: row.subtotal_cents,
        total_cents: row.total_cents,
        lines: serde_json::from_str(&row.lines).unwrap_or_default(),
        pay_url: None,
    }
}

/// A payment result, from the operator (manual provider) or Stripe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PaymentOutcome {
    Succeeded,
    Failed,
}

impl PaymentOutcome {
    pub fn parse(raw: &str) -> ServiceResult<Self> {
        match raw {
            "succeeded" => Ok(Self::Succeeded),
            "failed" => Ok(Self::Failed),
            other => Err(ServiceError::validation(format!("outcome must be succeeded or failed, not {other:?}"))),
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
        }
    }
}

impl Services {
    pub async fn invoices(&self, ctx: &TenantContext) -> ServiceResult<Vec<InvoiceView>> {
        let rows = self.store().invoices(&ctx.tenant_id).await?;
        self.payable(&ctx.tenant_id, rows).await
    }

    /// The views of `rows`, each open one with where to pay it online when the payment provider has a page.
    pub(crate) async fn payable(&self, tenant: &TenantId, rows: Vec<InvoiceRow>) -> ServiceResult<Vec<InvoiceView>> {
        let urls: std::collections::HashMap<String, String> =
            self.store().stripe_pay_urls(tenant).await?.into_iter().collect();
        Ok(rows
            .into_iter()
            .map(|row| {
                let pay_url = (row.status == InvoiceStatus::Open).then(|| urls.get(&row.id).cloned()).flatten();
                InvoiceView { pay_url, ..view(row) }
            })
            .collect())
    }

    /// The catalogue's plan of `tenant`; an internal error if the configuration dropped it.
    pub(crate) fn plan_of(&self, tenant: &TenantRow) -> ServiceResult<&Arc<Plan>> {
        self.catalog()
            .plan(&tenant.plan)
            .ok_or_else(|| ServiceError::internal(format!("tenant plan {:?} is not in the catalogue", tenant.plan)))
    }

    /// The tenant's billing period that holds the service clock's now.
    pub(crate) fn current_period(&self, tenant: &TenantRow) -> BillingPeriod {
        BillingPeriod::containing(tenant.billing_anchor, self.clock().now(), self.period_kind())
    }

    /// The job that closes the tenant's current period when it ends.
    pub(crate) fn period_close_job(&self, tenant: &TenantRow) -> NewJob {
        let period = self.current_period(tenant);
        Job::ClosePeriod { tenant_id: tenant.id.clone(), period_start_ms: period.start.0 }.at(period.end)
    }

    /// When the tenant's trial ends (or ended), as fixed at signup; none without one. A tenant from before
    /// that was stored: `trial_days` of its plan after its signup.
    pub(crate) fn trial_end(&self, tenant: &TenantRow) -> Option<Timestamp> {
        tenant.trial_ends_at.or_else(|| {
            let days = self.catalog().plan(&tenant.plan).map_or(0, |p| p.trial_days);
            (days > 0).then(|| tenant.created_at.plus_seconds(i64::from(days) * DAY_SECS))
        })
    }

    /// The job that ends the tenant's trial when it ends.
    pub(crate) fn trial_end_job(&self, tenant: &TenantRow) -> NewJob {
        Job::TrialEnd { tenant_id: tenant.id.clone() }.at(self.trial_end(tenant).unwrap_or(tenant.created_at))
    }

    /// The `TrialEnd` job. A tenant still trialing on a priced plan is billed now as if its period closed: the
    /// usage so far and the next period's base price in advance, on a `closing` invoice charged through the
    /// payment provider, so the trial converts when it ends (paid: `active`; failed: `past_due` and dunning),
    /// not at the period's end. The scheduled close at the period's end then bills only what came after
    /// (`true_up`), as after an operator's early close. The rest of the period after the trial's end is
    /// billed on the same invoice, prorated, unless an earlier close billed it in advance (a trial longer
    /// than a period). A free plan has nothing to charge: its tenant becomes `active` (`TrialEnded`).
    pub(crate) async fn end_trial(&self, tenant_id: &TenantId) -> ServiceResult<()> {
        let Some(tenant) = self.store().tenant(tenant_id).await? else { return Ok(()) };
        if tenant.state != TenantState::Trialing {
            return Ok(());
        }
        let plan = self.plan_of(&tenant)?;
        if plan.price.0 == 0 {
            // Nothing to charge: the trial is simply over. A change racing this one fails the job, and its
            // retry reads the tenant again (no longer trialing: nothing to do).
            self.transition_from(&tenant, LifecycleEvent::TrialEnded, Actor::System, &[]).await?;
            tracing::info!(tenant_id = %tenant.id, "trial over on a free plan; now active");
            return Ok(());
        }
        let period = self.current_period(&tenant);
        let ended = self.trial_end(&tenant).unwrap_or(period.start).min(self.clock().now());
        let invoice = self.close_period(&tenant, period, true, Some(ended)).await?;
        tracing::info!(tenant_id = %tenant.id, invoiced = invoice.is_some(), "trial over");
        Ok(())
    }

    /// At start: every billable tenant has its current period's close scheduled (idempotent), and every paid
    /// signup still waiting for payment has its first invoice (a crash between the two writes of a signup
    /// would otherwise leave it without one).
    pub(crate) async fn schedule_period_closes(&self) -> ServiceResult<()> {
        for tenant in self.store().tenants(None).await? {
            if billable(tenant.state) {
                self.store().enqueue(&self.period_close_job(&tenant), self.clock().now()).await?;
                if tenant.state == TenantState::Trialing {
                    // Trials begun before trial ends were scheduled (at most a provisioning's time early).
                    self.store().enqueue(&self.trial_end_job(&tenant), self.clock().now()).await?;
                }
            } else if tenant.state == TenantState::PendingPayment {
                self.signup_invoice(&tenant, None).await?;
            }
        }
        Ok(())
    }

    /// The lines of a paid signup's first invoice: the first period's base price, in advance.
    pub(crate) fn signup_lines(
        &self,
        plan: &Plan,
        anchor: Timestamp,
    ) -> ServiceResult<(BillingPeriod, Vec<InvoiceLine>)> {
        let pricing = Pricing::from_plan(plan).map_err(ServiceError::internal)?;
        let period = BillingPeriod::containing(anchor, anchor, self.period_kind());
        Ok((period, signup_lines(&pricing, period)))
    }

    /// The first period's invoice of a paid signup (under `id` when the checkout already names it), made once.
    pub(crate) async fn signup_invoice(
        &self,
        tenant: &TenantRow,
        id: Option<InvoiceId>,
    ) -> ServiceResult<Option<InvoiceView>> {
        let plan = self.plan_of(tenant)?;
        let (period, lines) = self.signup_lines(plan, tenant.billing_anchor)?;
        let id = id.unwrap_or_else(InvoiceId::generate);
        self.open_invoice(&id, tenant, InvoiceKind::Signup, period, lines, InvoiceEffects::default()).await
    }

    /// Stores an `open` invoice of `lines` for `period` with its effects; `None` if the tenant's period of
    /// this kind is already invoiced (nothing is changed then). As Stripe does, an invoice that owes nothing
    /// is `paid` as it is made and never collected; a credit it cannot use up (lines summing below zero) is
    /// carried to the tenant's next invoice, with a line on each saying so, so every invoice's total is what
    /// it asks to be paid and the totals add up to what the tenant owes.
    async fn open_invoice(
        &self,
        id: &InvoiceId,
        tenant: &TenantRow,
        kind: InvoiceKind,
        period: BillingPeriod,
        mut lines: Vec<InvoiceLine>,
        mut effects: InvoiceEffects,
    ) -> ServiceResult<Option<InvoiceView>> {
        let sum = lines_total(&lines)?;
        if sum < 0 {
            lines.push(InvoiceLine::fixed(LineKind::Credit, "Credit carried to the next invoice", Cents(-sum)));
            effects.carry_items.push(NewPendingItem {
                id: format!("credit:{id}"),
                description: format!("Credit from invoice {id}"),
                amount_cents: sum,
                kind: LineKind::Credit.as_str(),
            });
        }
        let total = sum.max(0);
        let status = if total == 0 { InvoiceStatus::Paid } else { InvoiceStatus::Open };
        // Prepaid credit pays what it can; the store draws it with the invoice, which it may leave paid.
        effects.prepaid_credit = Some(crate::prepaid::credit_line());
        let new = NewInvoice {
            id: id.as_str().to_owned(),
            tenant_id: tenant.id.clone(),
            kind,
            period_start: period.start,
            period_end: period.end,
            status,
            currency: self.config().billing.currency.clone(),
            subtotal_cents: total,
            total_cents: total,
            lines: serde_json::to_string(&lines).map_err(ServiceError::internal)?,
            now: self.clock().now(),
        };
        let row = match self.store().create_invoice(&new, &effects).await {
            Ok(row) => row,
            Err(StoreError::Conflict(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        if !effects.jobs.is_empty() || effects.collect.is_some() {
            self.wake_jobs();
        }
        let status = row.status;
        tracing::info!(tenant_id = %tenant.id, invoice_id = %row.id, kind = kind.as_str(), total_cents = row.total_cents, status = status.as_str(), "invoice opened");
        let detail = json!({"invoice_id": row.id, "number": row.number, "kind": kind, "total_cents": row.total_cents, "status": status.as_str()});
        self.audit(Actor::System, Some(&tenant.id), "invoice.opened", &row.id, detail, "").await;
        if status == InvoiceStatus::Paid {
            // Paid as made: what a payment would change for the tenant (a trial converts, dunning ends).
            self.after_payment(&tenant.id).await?;
        }
        Ok(Some(view(row)))
    }

    /// The operator's close: closes the current period of every billable tenant now, with the usage so far
    /// and the next period's base price. Usage after that, up to the period's end, is billed by the scheduled
    /// close on a `true_up` invoice, so nothing is lost and nothing billed twice; closing again before then
    /// makes nothing new. A tenant still in a trial that ends inside the period also owes the period's rest
    /// after it, billed now: the trial's own end finds the period invoiced and bills nothing more.
    pub async fn close_periods(&self) -> ServiceResult<Vec<InvoiceView>> {
        let mut made = Vec::new();
        for tenant in self.store().tenants(None).await? {
            if !billable(tenant.state) {
                continue;
            }
            let trial_over = self.trial_end(&tenant).filter(|_| tenant.state == TenantState::Trialing);
            if let Some(invoice) = self.close_period(&tenant, self.current_period(&tenant), true, trial_over).await? {
                made.push(invoice);
            }
        }
        Ok(made)
    }

    /// The `ClosePeriod` job: closes the tenant's period that starts at `period_start`, if the tenant is still
    /// billed (a suspended or cancelled tenant is not; reactivation schedules its close again).
    pub(crate) async fn close_scheduled_period(
        &self,
        tenant_id: &TenantId,
        period_start: Timestamp,
    ) -> ServiceResult<()> {
        let Some(tenant) = self.store().tenant(tenant_id).await? else { return Ok(()) };
        if !billable(tenant.state) {
            return Ok(());
        }
        let period = BillingPeriod::containing(tenant.billing_anchor, period_start, self.period_kind());
        self.close_period(&tenant, period, false, None).await.map(drop)
    }

    /// Rates `period` from the ledger into a `closing` invoice (overage in arrears, the next period's base in
    /// advance) and schedules the next close in the same transaction. If the period was already closed early
    /// and this is its end, the usage since then goes on a `true_up` invoice. A period that owes nothing gets
    /// no invoice, but the next close is still scheduled. A trial over at `trial_over` (inside the period)
    /// leaves the period's rest after it owed, billed first (`trial_remainder`). While a trial lasts into the
    /// next period, that period's base price is billed only for its part after the trial.
    async fn close_period(
        &self,
        tenant: &TenantRow,
        period: BillingPeriod,
        early: bool,
        trial_over: Option<Timestamp>,
    ) -> ServiceResult<Option<InvoiceView>> {
        let next = BillingPeriod::containing(tenant.billing_anchor, period.end, self.period_kind());
        let next_close = Job::ClosePeriod { tenant_id: tenant.id.clone(), period_start_ms: next.start.0 }.at(next.end);
        let Closing { mut lines, pricing, usage } = self.closing(tenant, period, trial_over).await?;
        // Plan changes' proration waits for this invoice (or the true-up, after an early close).
        let (pending, consume_items) = self.pending_invoice_lines(&tenant.id).await?;
        lines.extend(pending.iter().cloned());
        let effects = InvoiceEffects { jobs: vec![next_close.clone()], consume_items, ..InvoiceEffects::default() };
        // An invoice that owes nothing is paid as it is made (`open_invoice`): nothing to collect.
        let charged = |mut effects: InvoiceEffects, invoice_id: &InvoiceId, lines: &[InvoiceLine]| {
            if self.payments().collects() && lines_total(lines).is_ok_and(|sum| sum > 0) {
                let charge = Job::Charge { tenant_id: tenant.id.clone(), invoice_id: invoice_id.as_str().to_owned() };
                effects.collect = Some(charge.at(self.clock().now()));
            }
            effects
        };
        if !lines.is_empty() {
            let id = InvoiceId::generate();
            let effects = charged(effects.clone(), &id, &lines);
            if let Some(made) = self.open_invoice(&id, tenant, InvoiceKind::Closing, period, lines, effects).await? {
                return Ok(Some(made));
            }
        }
        if early {
            return Ok(None);
        }
        let closed = self
            .store()
            .invoices(&tenant.id)
            .await?
            .into_iter()
            .find(|i| i.kind == InvoiceKind::Closing && i.period_start == period.start);
        if let Some(closed) = closed {
            let billed: Vec<InvoiceLine> = serde_json::from_str(&closed.lines).map_err(ServiceError::internal)?;
            let full = closing_lines(&pricing, &usage, None).map_err(ServiceError::internal)?;
            let mut more = true_up_lines(&billed, &full);
            more.extend(pending);
            if !more.is_empty() {
                let id = InvoiceId::generate();
                let effects = charged(effects, &id, &more);
                return self.open_invoice(&id, tenant, InvoiceKind::TrueUp, period, more, effects).await;
            }
        }
        self.store().enqueue(&next_close, self.clock().now()).await?;
        Ok(None)
    }

    /// What closing `period` now would bill before the plan changes' pending items: a trial's remainder, the
    /// usage so far in arrears and the next period's base in advance (only its part after a trial that lasts
    /// into it). `close_period` writes it; `upcoming_invoice` shows it.
    async fn closing(
        &self,
        tenant: &TenantRow,
        period: BillingPeriod,
        trial_over: Option<Timestamp>,
    ) -> ServiceResult<Closing> {
        let plan = self.plan_of(tenant)?;
        let next = BillingPeriod::containing(tenant.billing_anchor, period.end, self.period_kind());
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
        let trial_into_next =
            self.trial_end(tenant).filter(|end| tenant.state == TenantState::Trialing && *end > next.start);
        let mut lines = Vec::new();
        if let Some(over) = trial_over {
            lines.extend(trial_remainder(tenant, &pricing, period, over)?);
        }
        match trial_into_next {
            Some(end) => {
                lines.extend(closing_lines(&pricing, &usage, None).map_err(ServiceError::internal)?);
                let after = end.min(next.end);
                lines.extend(remainder_line(&pricing, next, after).map_err(ServiceError::internal)?);
            }
            None => {
                lines.extend(closing_lines(&pricing, &usage, Some((&pricing, next))).map_err(ServiceError::internal)?)
            }
        }
        Ok(Closing { lines, pricing, usage })
    }

    /// The invoice the current period's close would make if it closed now: the usage so far, the next base
    /// price and the pending prorations (after an early close, only what the true-up would add). Nothing is
    /// written; prepaid credit is applied when the invoice is made, not here.
    pub async fn upcoming_invoice(&self, ctx: &TenantContext) -> ServiceResult<UpcomingInvoice> {
        let tenant = self.tenant_row(&ctx.tenant_id).await?;
        let period = self.current_period(&tenant);
        let trial_over =
            self.trial_end(&tenant).filter(|end| tenant.state == TenantState::Trialing && *end <= period.end);
        let Closing { lines, pricing, usage } = self.closing(&tenant, period, trial_over).await?;
        let closed_early = self
            .store()
            .invoices(&tenant.id)
            .await?
            .into_iter()
            .find(|i| i.kind == InvoiceKind::Closing && i.period_start == period.start);
        let mut lines = match closed_early {
            Some(closed) => {
                let billed: Vec<InvoiceLine> = serde_json::from_str(&closed.lines).map_err(ServiceError::internal)?;
                true_up_lines(&billed, &closing_lines(&pricing, &usage, None).map_err(ServiceError::internal)?)
            }
            None => lines,
        };
        lines.extend(self.pending_invoice_lines(&tenant.id).await?.0);
        let total = lines_total(&lines)?;
        Ok(UpcomingInvoice {
            period_start: period.start.to_rfc3339(),
            period_end: period.end.to_rfc3339(),
            bills_at: trial_over.unwrap_or(period.end).to_rfc3339(),
            currency: self.config().billing.currency.clone(),
            subtotal_cents: total,
            lines: lines.iter().map(|l| serde_json::to_value(l).unwrap_or_default()).collect(),
        })
    }

    /// The manual provider's payment report (by the operator).
    pub async fn report_payment(&self, invoice_id: &str, outcome: &str) -> ServiceResult<InvoiceView> {
        let outcome = PaymentOutcome::parse(outcome)?;
        self.record_payment(invoice_id, outcome, Actor::Operator).await
    }

    /// A payment result for an invoice. `Succeeded` pays it: a pending signup is confirmed and provisioned,
    /// and a `past_due`, `suspended` or trialing tenant with nothing else unpaid becomes `active`. `Failed`
    /// leaves it open, makes a trialing or active tenant `past_due`, and schedules the dunning steps.
    pub(crate) async fn record_payment(
        &self,
        invoice_id: &str,
        outcome: PaymentOutcome,
        actor: Actor<'_>,
    ) -> ServiceResult<InvoiceView> {
        let row = self.store().invoice(invoice_id).await?.ok_or_else(|| ServiceError::not_found("invoice"))?;
        let status = row.status;
        let payable = status == InvoiceStatus::Open
            || (status == InvoiceStatus::Uncollectible && outcome == PaymentOutcome::Succeeded);
        if !payable {
            return Err(ServiceError::new(
                ErrorCode::InvalidTransition,
                format!("invoice is {}; only an open invoice takes a payment outcome", status.as_str()),
            ));
        }
        let tenant_id = TenantId::from_trusted(row.tenant_id.clone());
        let actor_name = match actor {
            Actor::Operator => "operator",
            Actor::Tenant(_) => "tenant",
            Actor::System => "system",
        };
        match outcome {
            PaymentOutcome::Succeeded => {
                let now = self.clock().now();
                self.store().set_invoice_status(&row.id, status, InvoiceStatus::Paid, now).await.map_err(
                    |e| match e {
                        StoreError::Concurrent => {
                            ServiceError::new(ErrorCode::TransitionInProgress, "the invoice changed; retry")
                        }
                        other => other.into(),
                    },
                )?;
                self.after_payment(&tenant_id).await?;
            }
            PaymentOutcome::Failed => self.start_dunning(&tenant_id, &row).await?,
        }
        let detail = json!({"invoice_id": row.id, "outcome": outcome.as_str(), "reported_by": actor_name});
        self.audit(actor, Some(&tenant_id), "invoice.payment_reported", &row.id, detail, "").await;
        let row = self.store().invoice(invoice_id).await?.ok_or_else(|| ServiceError::not_found("invoice"))?;
        Ok(view(row))
    }

    /// What a paid invoice changes for its tenant.
    async fn after_payment(&self, tenant_id: &TenantId) -> ServiceResult<()> {
        let Some(tenant) = self.store().tenant(tenant_id).await? else { return Ok(()) };
        if tenant.state == TenantState::PendingPayment {
            let provision = Job::Provision { tenant_id: tenant_id.clone() }.at(self.clock().now());
            self.transition_from(&tenant, LifecycleEvent::PaymentConfirmed, Actor::System, &[provision]).await?;
            return Ok(());
        }
        self.reactivate_if_nothing_owed(&tenant, LifecycleEvent::PaymentSucceeded).await
    }

    /// A debt was settled (`PaymentSucceeded`) or forgiven (`UnpaidVoided`): a tenant in dunning is served again
    /// once nothing is owed — no other invoice open or written off — and its period closes are rescheduled. A
    /// suspension the operator made is not about money and stays until the operator lifts it.
    async fn reactivate_if_nothing_owed(&self, tenant: &TenantRow, event: LifecycleEvent) -> ServiceResult<()> {
        if tenant.state.on(event).is_none() {
            return Ok(());
        }
        if tenant.state == TenantState::Suspended && self.suspended_by_operator(&tenant.id).await? {
            tracing::info!(tenant_id = %tenant.id, "debt settled; the operator's suspension stays");
            return Ok(());
        }
        if !self.store().unpaid_invoices(&tenant.id).await?.is_empty() {
            tracing::info!(tenant_id = %tenant.id, "debt settled; other invoices are still unpaid");
            return Ok(());
        }
        let close = self.period_close_job(tenant);
        match self.transition_from(tenant, event, Actor::System, &[close]).await {
            Ok(_) => Ok(()),
            // Another change won the race (an operator action); the invoice's own change is recorded.
            Err(e) if e.code == ErrorCode::TransitionInProgress => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Whether the tenant's latest move into `suspended` was the operator's (not dunning's).
    async fn suspended_by_operator(&self, tenant_id: &TenantId) -> ServiceResult<bool> {
        let events = self.store().tenant_events(tenant_id).await?;
        let last = events.iter().rev().find(|e| e.to_state.as_deref() == Some(TenantState::Suspended.as_str()));
        Ok(last.is_some_and(|e| e.event == LifecycleEvent::OperatorSuspended.as_str()))
    }

    /// The operator ends an unpaid invoice without a payment: `void` (nothing is owed; a tenant in dunning
    /// for it alone is served again) or `uncollectible` (written off as bad debt: still owed, dunning goes
    /// on, a late payment is taken). The payment provider follows first (Stripe voids or writes off its copy
    /// and stops collecting), so a refusal there changes nothing here.
    pub async fn close_unpaid_invoice(&self, invoice_id: &str, to: InvoiceStatus) -> ServiceResult<InvoiceView> {
        let row = self.store().invoice(invoice_id).await?.ok_or_else(|| ServiceError::not_found("invoice"))?;
        let from = row.status;
        closable(from, to)?;
        self.payments().close_unpaid(self, &row, to).await?;
        self.record_unpaid_close(&row, from, to, Actor::Operator).await?;
        let row = self.store().invoice(invoice_id).await?.ok_or_else(|| ServiceError::not_found("invoice"))?;
        Ok(view(row))
    }

    /// Records that an unpaid invoice became `void` or `uncollectible` (the operator's action, or Stripe's
    /// report of one made in its dashboard) and what that changes for the tenant.
    pub(crate) async fn record_unpaid_close(
        &self,
        row: &InvoiceRow,
        from: InvoiceStatus,
        to: InvoiceStatus,
        actor: Actor<'_>,
    ) -> ServiceResult<()> {
        closable(from, to)?;
        self.store().set_invoice_status(&row.id, from, to, self.clock().now()).await.map_err(|e| match e {
            StoreError::Concurrent => ServiceError::new(ErrorCode::TransitionInProgress, "the invoice changed; retry"),
            other => other.into(),
        })?;
        let tenant_id = TenantId::from_trusted(row.tenant_id.clone());
        let action = if to == InvoiceStatus::Void { "invoice.voided" } else { "invoice.marked_uncollectible" };
        let detail =
            json!({"invoice_id": row.id, "from": from.as_str(), "to": to.as_str(), "total_cents": row.total_cents});
        self.audit(actor, Some(&tenant_id), action, &row.id, detail, "").await;
        if to == InvoiceStatus::Void {
            if let Some(tenant) = self.store().tenant(&tenant_id).await? {
                self.reactivate_if_nothing_owed(&tenant, LifecycleEvent::UnpaidVoided).await?;
            }
        }
        Ok(())
    }

    /// A failed payment: the tenant goes `past_due` (if it was being served normally), and the invoice's
    /// retries and grace expiry are scheduled from now. Reporting the same failure again changes nothing.
    async fn start_dunning(&self, tenant_id: &TenantId, invoice: &InvoiceRow) -> ServiceResult<()> {
        let Some(tenant) = self.store().tenant(tenant_id).await? else { return Ok(()) };
        if tenant.state == TenantState::PendingPayment {
            // A signup whose first payment failed simply stays pending; nothing to dun.
            return Ok(());
        }
        let now = self.clock().now();
        let billing = &self.config().billing;
        let mut jobs: Vec<NewJob> = billing
            .retry_days
            .iter()
            .enumerate()
            .map(|(i, days)| {
                let attempt = u32::try_from(i + 1).unwrap_or(u32::MAX);
                Job::PaymentRetry { tenant_id: tenant_id.clone(), invoice_id: invoice.id.clone(), attempt }
                    .at(now.plus_seconds(i64::from(*days) * DAY_SECS))
            })
            .collect();
        jobs.push(
            Job::GraceExpiry { tenant_id: tenant_id.clone(), invoice_id: invoice.id.clone() }
                .at(now.plus_seconds(i64::from(billing.grace_days) * DAY_SECS)),
        );
        let template = Template::PaymentFailed {
            invoice_number: InvoiceNumber::new(invoice.number.max(0) as u64).to_string(),
            total_cents: invoice.total_cents,
            currency: invoice.currency.clone(),
        };
        self.notify(&tenant, template, &format!("payment_failed:{}", invoice.id)).await?;
        // The event is recorded with the dunning it starts, so it is never lost nor sent without it.
        let failed = [crate::webhooks::payment_failed_event(tenant_id, invoice)];
        if tenant.state.on(LifecycleEvent::PaymentFailed).is_some() {
            self.transition_reported(&tenant, LifecycleEvent::PaymentFailed, Actor::System, &jobs, &failed).await?;
        } else {
            self.store().enqueue_reported(&jobs, &failed, now).await?;
            self.wake_jobs();
        }
        self.wake_webhooks();
        Ok(())
    }

    /// Dunning retry `attempt` for an invoice: Stripe charges it again; the manual provider cannot charge by
    /// itself, so the retry is put on record for the operator, who reports the outcome. A paid or voided
    /// invoice needs no retry.
    pub(crate) async fn retry_payment(
        &self,
        tenant_id: &TenantId,
        invoice_id: &str,
        attempt: u32,
    ) -> ServiceResult<()> {
        let Some(invoice) = self.store().invoice(invoice_id).await? else { return Ok(()) };
        if invoice.status != InvoiceStatus::Open {
            return Ok(());
        }
        tracing::info!(tenant_id = %tenant_id, invoice_id, attempt, "payment retry due");
        if let Some(outcome) = self.payments().collect(self, &invoice, attempt).await? {
            let detail = json!({"invoice_id": invoice_id, "attempt": attempt, "provider": self.payments().name()});
            self.audit(Actor::System, Some(tenant_id), "invoice.payment_retry", invoice_id, detail, "").await;
            return self.settle_if_open(invoice_id, outcome).await;
        }
        let detail = json!({"invoice_id": invoice_id, "attempt": attempt, "provider": self.payments().name()});
        self.audit(Actor::System, Some(tenant_id), "invoice.payment_retry", invoice_id, detail, "").await;
        Ok(())
    }

    /// Dunning's last step: `billing.grace_days` after a failed payment, a tenant whose invoice is still
    /// unpaid (open or written off) is suspended (402 from its next request).
    pub(crate) async fn expire_grace(&self, tenant_id: &TenantId, invoice_id: &str) -> ServiceResult<()> {
        let Some(invoice) = self.store().invoice(invoice_id).await? else { return Ok(()) };
        // Written off is still owed; paid or voided is not.
        if !matches!(invoice.status, InvoiceStatus::Open | InvoiceStatus::Uncollectible) {
            return Ok(());
        }
        let suspended = self.transition_if_allowed(tenant_id, LifecycleEvent::GraceExpired, Actor::System, &[]).await?;
        if let Some(tenant) = suspended {
            self.notify(&tenant, Template::SuspendedForNonPayment, &format!("suspended:{invoice_id}")).await?;
            let detail = json!({"invoice_id": invoice_id, "grace_days": self.config().billing.grace_days});
            self.audit(
                Actor::System,
                Some(tenant_id),
                "tenant.suspended_for_non_payment",
                tenant_id.as_str(),
                detail,
                "",
            )
            .await;
        }
        Ok(())
    }
}

/// Whether an invoice in `from` may end unpaid as `to` (void or uncollectible), by Stripe's status table.
fn closable(from: InvoiceStatus, to: InvoiceStatus) -> ServiceResult<()> {
    let unpaid_end = matches!(to, InvoiceStatus::Void | InvoiceStatus::Uncollectible);
    if unpaid_end && from.can_become(to) {
        return Ok(());
    }
    Err(ServiceError::new(
        ErrorCode::InvalidTransition,
        format!("invoice is {}; it cannot become {}", from.as_str(), to.as_str()),
    ))
}

/// The sum of an invoice's lines, in cents.
fn lines_total(lines: &[InvoiceLine]) -> ServiceResult<i64> {
    let sum = lines.iter().try_fold(0i64, |sum, l| sum.checked_add(l.amount_cents.0));
    sum.ok_or_else(|| ServiceError::internal("invoice total overflows"))
}

/// The base price for the rest of `period` after a trial that ends at `trial_over`, prorated (none if
/// nothing is left of the period, or the plan is free). A trial begun in an earlier period owes nothing
/// here: that period's close billed this one's post-trial part in advance.
fn trial_remainder(
    tenant: &TenantRow,
    pricing: &Pricing,
    period: BillingPeriod,
    trial_over: Timestamp,
) -> ServiceResult<Option<InvoiceLine>> {
    if tenant.created_at < period.start {
        return Ok(None);
    }
    let from = trial_over.clamp(period.start, period.end);
    remainder_line(pricing, period, from).map_err(ServiceError::internal)
}
