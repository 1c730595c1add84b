//! Every lifecycle change goes through `Services::transition`: the table in `tenantry_domain::lifecycle`
//! decides, the store applies it with the optimistic version check and records it as an event in the same
//! transaction as the jobs it sets in motion and its audit entry. Also activation (milestones
//! and nudges) and the end of a tenant's life: cancellation, win-back offers, erasure after retention.

use serde_json::json;
use tenantry_domain::lifecycle::LifecycleEvent;
use tenantry_domain::{ErrorCode, TenantContext, TenantId, TenantState, Timestamp};
use tenantry_store::{NewEvent, NewJob, StoreError, TenantEvent, TenantRow, TransitionEffects};

use crate::audit::Actor;
use crate::jobs::Job;
use crate::notify::Template;
use crate::{ServiceError, ServiceResult, Services};

impl Services {
    /// Applies `event` to the tenant as read in `row` (its version is what is checked). An event the table
    /// does not allow from the current state is 409 `invalid_transition`; a concurrent change between the
    /// read and the write is 409 `transition_in_progress`.
    pub(crate) async fn transition_from(
        &self,
        row: &TenantRow,
        event: LifecycleEvent,
        actor: Actor<'_>,
        jobs: &[NewJob],
    ) -> ServiceResult<TenantRow> {
        self.transition_reported(row, event, actor, jobs, &[]).await
    }

    /// `transition_from`, with webhook events the change causes recorded in its transaction.
    pub(crate) async fn transition_reported(
        &self,
        row: &TenantRow,
        event: LifecycleEvent,
        actor: Actor<'_>,
        jobs: &[NewJob],
        events: &[NewEvent<'_>],
    ) -> ServiceResult<TenantRow> {
        let to = allowed(row, event)?;
        let now = self.clock().now();
        let detail = json!({"event": event.as_str(), "from": row.state.as_str(), "to": to.as_str()});
        let audit = self.audit_entry(actor, Some(&row.id), "tenant.transition", row.id.as_str(), detail, "");
        let effects = TransitionEffects { jobs, audit: Some(&audit), events };
        self.store()
            .transition(&row.id, row.state_version, row.state, event, now, &effects)
            .await
            .map_err(lost_race)?;
        if !jobs.is_empty() {
            self.wake_jobs();
        }
        tracing::info!(tenant_id = %row.id, event = event.as_str(), from = row.state.as_str(), to = to.as_str(), "lifecycle transition");
        let mut next = row.clone();
        next.state = to;
        next.state_version += 1;
        next.updated_at = now;
        Ok(next)
    }

    /// Applies `event` only if the table allows it from the current state; `None` (and nothing changed)
    /// otherwise. For reactions that are right in some states and moot in others (a payment that succeeds
    /// for a tenant that is already active).
    pub(crate) async fn transition_if_allowed(
        &self,
        tenant_id: &TenantId,
        event: LifecycleEvent,
        actor: Actor<'_>,
        jobs: &[NewJob],
    ) -> ServiceResult<Option<TenantRow>> {
        let Some(row) = self.store().tenant(tenant_id).await? else { return Ok(None) };
        if row.state.on(event).is_none() {
            return Ok(None);
        }
        self.transition_from(&row, event, actor, jobs).await.map(Some)
    }

    /// Records an activation milestone the first time it happens; `true` if this was the first time. The
    /// tenant's milestones are loaded once per process and then checked in memory, so the hot path (every
    /// query) costs no database round trip.
    pub(crate) async fn milestone(&self, tenant_id: &TenantId, name: &'static str) -> bool {
        if !self.inner.milestones.lock().contains_key(tenant_id) {
            let known = match self.store().tenant_events(tenant_id).await {
                Ok(events) => events.into_iter().filter(|e| e.from_state.is_none()).map(|e| e.event).collect(),
                Err(e) => {
                    tracing::warn!(tenant_id = %tenant_id, error = %e, "milestones not loaded");
                    return false;
                }
            };
            self.inner.milestones.lock().entry(tenant_id.clone()).or_insert(known);
        }
        if self.inner.milestones.lock().get(tenant_id).is_some_and(|m| m.contains(name)) {
            return false;
        }
        let recorded = match self.store().record_milestone(tenant_id, name, self.clock().now()).await {
            Ok(recorded) => recorded,
            Err(e) => {
                tracing::warn!(tenant_id = %tenant_id, error = %e, "milestone not recorded");
                return false;
            }
        };
        self.inner.milestones.lock().entry(tenant_id.clone()).or_default().insert(name.to_owned());
        if recorded {
            tracing::info!(tenant_id = %tenant_id, milestone = name, "activation milestone");
        }
        recorded
    }

    fn has_milestone(&self, tenant_id: &TenantId, name: &str) -> bool {
        self.inner.milestones.lock().get(tenant_id).is_some_and(|m| m.contains(name))
    }

    /// After a document is stored: `first_document`, and the nudge to ask a question is scheduled.
    pub(crate) async fn document_added(&self, tenant_id: &TenantId) {
        if self.milestone(tenant_id, "first_document").await {
            let hours = i64::from(self.config().lifecycle.nudge_no_query_hours);
            let nudge = Job::Nudge { tenant_id: tenant_id.clone(), nudge: Nudge::NoQuery };
            if let Err(e) = self
                .store()
                .enqueue(&nudge.at(self.clock().now().plus_seconds(hours * 3_600)), self.clock().now())
                .await
            {
                tracing::warn!(error = %e, "nudge not scheduled");
            }
        }
    }

    /// After a question is answered: `first_query`, and `activated` once the tenant has both.
    pub(crate) async fn query_answered(&self, tenant_id: &TenantId) {
        self.milestone(tenant_id, "first_query").await;
        if self.has_milestone(tenant_id, "first_document") {
            self.milestone(tenant_id, "activated").await;
        }
    }

    /// The `Nudge` job: a reminder if the step it is about still has not happened.
    pub(crate) async fn nudge(&self, tenant_id: &TenantId, nudge: Nudge) -> ServiceResult<()> {
        let Some(tenant) = self.store().tenant(tenant_id).await? else { return Ok(()) };
        if !billable(tenant.state) {
            return Ok(());
        }
        let events = self.store().tenant_events(tenant_id).await?;
        let has = |name: &str| events.iter().any(|e| e.from_state.is_none() && e.event == name);
        let (template, done) = match nudge {
            Nudge::NoDocument => (Template::NoDocumentYet, has("first_document")),
            Nudge::NoQuery => (Template::NoQueryYet, has("first_query")),
        };
        if !done {
            self.notify(&tenant, template, nudge.as_str()).await?;
        }
        Ok(())
    }

    /// The weekly `UsageReview` job: a tenant whose questions fell to less than half of the week before (from
    /// at least `USAGE_DROP_MIN_QUERIES`) gets a notification; the next review is scheduled a week later until
    /// the tenant is erased (a suspended or cancelled tenant is skipped, not dropped: it may come back).
    pub(crate) async fn review_usage(&self, tenant_id: &TenantId, at: Timestamp) -> ServiceResult<()> {
        let Some(tenant) = self.store().tenant(tenant_id).await? else { return Ok(()) };
        if tenant.state == TenantState::Erased {
            return Ok(());
        }
        let week = 7 * 86_400;
        let next = Job::UsageReview { tenant_id: tenant_id.clone(), at_ms: at.plus_seconds(week).0 };
        // A suspended or cancelled tenant is not reviewed, but stays scheduled: it may be reactivated.
        if !billable(tenant.state) {
            self.store().enqueue(&next.at(at.plus_seconds(week)), self.clock().now()).await?;
            return Ok(());
        }
        let queries = |from: Timestamp, to: Timestamp| async move {
            let lines = self.store().usage_lines(tenant_id, from, to).await?;
            let n: i64 =
                lines.iter().filter(|l| l.meter == tenantry_domain::quota::Meter::Queries).map(|l| l.quantity).sum();
            ServiceResult::Ok(n.max(0) as u64)
        };
        let this_week = queries(at.plus_seconds(-week), at).await?;
        let last_week = queries(at.plus_seconds(-2 * week), at.plus_seconds(-week)).await?;
        if last_week >= USAGE_DROP_MIN_QUERIES && this_week * 2 < last_week {
            let template = Template::UsageDropped { last_week, this_week };
            self.notify(&tenant, template, &format!("usage_dropped:{}", at.0)).await?;
        }
        self.store().enqueue(&next.at(at.plus_seconds(week)), self.clock().now()).await?;
        Ok(())
    }

    /// Cancellation (by the tenant, the operator or Stripe): the tenant stops being served and billed, its
    /// data is kept for `lifecycle.cancelled_retention_days`, win-back offers are scheduled, then erasure.
    pub async fn cancel(&self, tenant_id: &TenantId, actor: Actor<'_>) -> ServiceResult<TenantRow> {
        let row = self.tenant_row(tenant_id).await?;
        let lifecycle = &self.config().lifecycle;
        let now = self.clock().now();
        let mut jobs: Vec<NewJob> = lifecycle
            .win_back_offer_days
            .iter()
            .enumerate()
            .map(|(i, days)| {
                let sequence = u32::try_from(i + 1).unwrap_or(u32::MAX);
                Job::WinBackOffer { tenant_id: tenant_id.clone(), cancelled_at_ms: now.0, sequence }
                    .at(now.plus_seconds(i64::from(*days) * 86_400))
            })
            .collect();
        jobs.push(
            Job::RetentionErasure { tenant_id: tenant_id.clone(), cancelled_at_ms: now.0 }
                .at(now.plus_seconds(i64::from(lifecycle.cancelled_retention_days) * 86_400)),
        );
        let row = self.transition_from(&row, LifecycleEvent::Cancelled, actor, &jobs).await?;
        let retention_days = lifecycle.cancelled_retention_days;
        self.notify(&row, Template::Cancelled { retention_days }, &format!("cancelled:{}", now.0)).await?;
        Ok(row)
    }

    /// When the tenant was last cancelled, if it still is (jobs of an earlier cancellation are moot).
    async fn cancelled_at(&self, tenant: &TenantRow) -> ServiceResult<Option<Timestamp>> {
        if tenant.state != TenantState::Cancelled {
            return Ok(None);
        }
        let events = self.store().tenant_events(&tenant.id).await?;
        Ok(events.iter().rev().find(|e| e.event == LifecycleEvent::Cancelled.as_str()).map(|e| e.at))
    }

    /// The `WinBackOffer` job: offer `sequence` of the cancellation at `cancelled_at`, if it still stands.
    pub(crate) async fn win_back_offer(
        &self,
        tenant_id: &TenantId,
        cancelled_at: Timestamp,
        sequence: u32,
    ) -> ServiceResult<()> {
        let Some(tenant) = self.store().tenant(tenant_id).await? else { return Ok(()) };
        if self.cancelled_at(&tenant).await? != Some(cancelled_at) {
            return Ok(());
        }
        let percent = self.config().lifecycle.win_back_discount_percent;
        let now = self.clock().now();
        if self
            .store()
            .record_win_back_offer(tenant_id, cancelled_at, i64::from(sequence), i64::from(percent), now)
            .await?
        {
            let dedupe = format!("win_back:{}:{sequence}", cancelled_at.0);
            self.notify(&tenant, Template::WinBackOffer { discount_percent: percent }, &dedupe).await?;
            let detail = json!({"sequence": sequence, "discount_percent": percent});
            self.audit(Actor::System, Some(tenant_id), "win_back.offered", tenant_id.as_str(), detail, "").await;
        }
        Ok(())
    }

    /// The `RetentionErasure` job: a tenant still cancelled from the same cancellation is erased.
    pub(crate) async fn retention_erasure(&self, tenant_id: &TenantId, cancelled_at: Timestamp) -> ServiceResult<()> {
        let Some(tenant) = self.store().tenant(tenant_id).await? else { return Ok(()) };
        if self.cancelled_at(&tenant).await? != Some(cancelled_at) {
            return Ok(());
        }
        self.erase(tenant_id, "retention:cancelled", Actor::System, "").await.map(drop)
    }

    /// A cancelled tenant comes back (`POST /v1/tenant/reactivate`): active again (or in its trial again, if
    /// it cancelled during a trial that has not ended: `coming_back`), billed again from the current period,
    /// with the discount of the newest win-back offer it received, if any, on its next invoice; all in one
    /// transaction.
    pub async fn win_back(&self, ctx: &TenantContext) -> ServiceResult<TenantRow> {
        let row = self.tenant_row(&ctx.tenant_id).await?;
        allowed(&row, LifecycleEvent::WinBackAccepted)?;
        let event = self.coming_back(&row, LifecycleEvent::WinBackAccepted).await?;
        let price = self.catalog().plan(&row.plan).map_or(0, |p| p.price.0);
        let close = self.period_close_job(&row);
        let now = self.clock().now();
        let done = self.store().win_back(&row, event, price, now, &[close]).await.map_err(lost_race)?;
        self.wake_jobs();
        let detail = json!({
            "event": event.as_str(), "from": row.state.as_str(), "to": done.state.as_str(),
            "discount_percent": done.discount_percent, "credit_cents": done.credit_cents,
        });
        let request_id = ctx.request_id.to_string();
        self.audit(Actor::Tenant(ctx), Some(&row.id), "win_back.accepted", row.id.as_str(), detail, &request_id).await;
        Ok(TenantRow { state: done.state, state_version: row.state_version + 1, updated_at: now, ..row })
    }

    /// The event that brings a suspended or cancelled tenant back: `back` (the operator's reactivation, a
    /// win-back), or `TrialResumed` if the tenant left during its trial and the trial has not ended yet. So the
    /// trial's end still converts it and bills the rest of its period (`end_trial`); coming back `active`
    /// would skip that bill.
    pub(crate) async fn coming_back(&self, row: &TenantRow, back: LifecycleEvent) -> ServiceResult<LifecycleEvent> {
        let trial_running = self.trial_end(row).is_some_and(|end| end > self.clock().now());
        if !trial_running {
            return Ok(back);
        }
        let events = self.store().tenant_events(&row.id).await?;
        let left = events.iter().rev().find(|e| e.to_state.as_deref() == Some(row.state.as_str()));
        let from_trial = left.is_some_and(|e| e.from_state.as_deref() == Some(TenantState::Trialing.as_str()));
        Ok(if from_trial { LifecycleEvent::TrialResumed } else { back })
    }

    /// Win-back numbers for the operator.
    pub async fn win_back_stats(&self) -> ServiceResult<tenantry_store::WinBackStats> {
        Ok(self.store().win_back_stats().await?)
    }

    pub async fn tenant_events(&self, tenant_id: &TenantId) -> ServiceResult<Vec<TenantEvent>> {
        Ok(self.store().tenant_events(tenant_id).await?)
    }
}

/// The state `event` leads to from the tenant's, or 409 `invalid_transition`.
fn allowed(row: &TenantRow, event: LifecycleEvent) -> ServiceResult<TenantState> {
    row.state.on(event).ok_or_else(|| {
        ServiceError::new(
            ErrorCode::InvalidTransition,
            format!("{} is not allowed from {}", event.as_str(), row.state.as_str()),
        )
    })
}

/// A transition that lost the optimistic version check to a concurrent change is 409 `transition_in_progress`.
fn lost_race(e: StoreError) -> ServiceError {
    match e {
        StoreError::Concurrent => ServiceError::new(
            ErrorCode::TransitionInProgress,
            "the tenant's state changed concurrently; read it again and retry",
        ),
        other => other.into(),
    }
}

/// A week with fewer questions than this before it is not compared (too little to call a drop).
pub const USAGE_DROP_MIN_QUERIES: u64 = 10;

/// A reminder about a step of activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Nudge {
    NoDocument,
    NoQuery,
}

impl Nudge {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoDocument => "no_document",
            Self::NoQuery => "no_query",
        }
    }
}

/// Whether a tenant in this state is billed for its periods.
pub(crate) fn billable(state: TenantState) -> bool {
    matches!(state, TenantState::Trialing | TenantState::Active | TenantState::PastDue)
}
