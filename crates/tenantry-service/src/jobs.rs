//! The typed jobs the service runs from the durable queue, and the worker that runs them: in the
//! background whenever a job is enqueued (or at least every second), and on demand when the test clock
//! moves (`POST /admin/clock/advance`), which waits until every job that became due has run.
//!
//! Every job is safe to run twice (a worker can die after the work and before marking it done): each
//! re-reads the state it acts on and does nothing when its work is already done or moot.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;
use tenantry_domain::{DocumentId, ErrorCode, JobId, TenantId, Timestamp};
pub use tenantry_store::JobState;
use tenantry_store::{JobRow, NewJob};
use tracing::Instrument;

use crate::audit::Actor;
use crate::lifecycle::Nudge;
use crate::{ServiceError, ServiceResult, Services};

/// A claimed job is leased for this long; a worker that dies loses it after that.
const LEASE_SECS: i64 = 300;
const CLAIM_BATCH: i64 = 16;
pub const DEFAULT_MAX_ATTEMPTS: i64 = 6;
/// The most the test clock moves in one call (366 days): enough for any billing cycle, small enough that one
/// call cannot queue years of period closes at once.
pub const MAX_CLOCK_ADVANCE_SECS: i64 = 366 * 86_400;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Job {
    /// Prepare a tenant's storage and move it out of `provisioning`.
    Provision { tenant_id: TenantId },
    /// Close the tenant's billing period that starts at `period_start_ms` (when it ends).
    ClosePeriod { tenant_id: TenantId, period_start_ms: i64 },
    /// The tenant's trial is over: a paid plan's first invoice is made and charged now.
    TrialEnd { tenant_id: TenantId },
    /// Dunning: try to collect an unpaid invoice again (the `attempt`-th retry of `billing.retry_days`).
    PaymentRetry { tenant_id: TenantId, invoice_id: String, attempt: u32 },
    /// Dunning: the grace period of an unpaid invoice is over; suspend if it is still unpaid.
    GraceExpiry { tenant_id: TenantId, invoice_id: String },
    /// Collect an open invoice through the payment provider (Stripe).
    Charge { tenant_id: TenantId, invoice_id: String },
    /// Write a queued notification to its destination.
    Deliver { tenant_id: TenantId, notification_id: String },
    /// Remind a tenant of an activation step it has not taken.
    Nudge { tenant_id: TenantId, nudge: Nudge },
    /// Offer a cancelled tenant a discount to come back.
    WinBackOffer { tenant_id: TenantId, cancelled_at_ms: i64, sequence: u32 },
    /// Erase a tenant still cancelled when its retention ends.
    RetentionErasure { tenant_id: TenantId, cancelled_at_ms: i64 },
    /// Build a data export's archive.
    Export { tenant_id: TenantId, export_id: String },
    /// Delete an export's archive when it expires.
    ExpireExport { tenant_id: TenantId, export_id: String },
    /// Build the vector index a pending plan needs, then switch the tenant to it.
    SwitchPlan { tenant_id: TenantId, plan: String },
    /// Embed every document of the tenant again: its vectors are another embedder's.
    Reembed { tenant_id: TenantId },
    /// Embed a long document whose upload was answered before its vectors were made.
    EmbedDocument { tenant_id: TenantId, document_id: DocumentId },
    /// Enforce `retention` (usage ledger, audit trail) as of the day starting at `day_ms`; schedules the next.
    RetentionSweep { day_ms: i64 },
    /// Finish an erasure whose rows are gone: files, analytics, purge, certificate.
    FinishErasure { tenant_id: TenantId, erasure_id: String },
    /// Compare the tenant's questions this week with the week before (a drop is an intervention trigger).
    UsageReview { tenant_id: TenantId, at_ms: i64 },
}

impl Job {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Provision { .. } => "provision",
            Self::ClosePeriod { .. } => "close_period",
            Self::TrialEnd { .. } => "trial_end",
            Self::PaymentRetry { .. } => "payment_retry",
            Self::GraceExpiry { .. } => "grace_expiry",
            Self::Charge { .. } => "charge",
            Self::Deliver { .. } => "deliver",
            Self::Nudge { .. } => "nudge",
            Self::WinBackOffer { .. } => "win_back_offer",
            Self::RetentionErasure { .. } => "retention_erasure",
            Self::Export { .. } => "export",
            Self::ExpireExport { .. } => "expire_export",
            Self::SwitchPlan { .. } => "switch_plan",
            Self::Reembed { .. } => "reembed",
            Self::EmbedDocument { .. } => "embed_document",
            Self::UsageReview { .. } => "usage_review",
            Self::FinishErasure { .. } => "finish_erasure",
            Self::RetentionSweep { .. } => "retention_sweep",
        }
    }

    fn tenant(&self) -> Option<&TenantId> {
        Some(match self {
            Self::RetentionSweep { .. } => return None,
            Self::Provision { tenant_id }
            | Self::ClosePeriod { tenant_id, .. }
            | Self::TrialEnd { tenant_id }
            | Self::PaymentRetry { tenant_id, .. }
            | Self::GraceExpiry { tenant_id, .. }
            | Self::Charge { tenant_id, .. }
            | Self::Deliver { tenant_id, .. }
            | Self::Nudge { tenant_id, .. }
            | Self::WinBackOffer { tenant_id, .. }
            | Self::RetentionErasure { tenant_id, .. }
            | Self::Export { tenant_id, .. }
            | Self::ExpireExport { tenant_id, .. }
            | Self::SwitchPlan { tenant_id, .. }
            | Self::Reembed { tenant_id }
            | Self::EmbedDocument { tenant_id, .. }
            | Self::UsageReview { tenant_id, .. }
            | Self::FinishErasure { tenant_id, .. } => tenant_id,
        })
    }

    /// The idempotency key: one job per thing to do, however often it is asked for.
    fn key(&self) -> String {
        match self {
            Self::Provision { tenant_id } => format!("provision:{tenant_id}"),
            Self::ClosePeriod { tenant_id, period_start_ms } => format!("close_period:{tenant_id}:{period_start_ms}"),
            Self::TrialEnd { tenant_id } => format!("trial_end:{tenant_id}"),
            Self::PaymentRetry { invoice_id, attempt, .. } => format!("payment_retry:{invoice_id}:{attempt}"),
            Self::GraceExpiry { invoice_id, .. } => format!("grace_expiry:{invoice_id}"),
            Self::Charge { invoice_id, .. } => format!("charge:{invoice_id}"),
            Self::Deliver { notification_id, .. } => format!("deliver:{notification_id}"),
            Self::Nudge { tenant_id, nudge } => format!("nudge:{tenant_id}:{}", nudge.as_str()),
            Self::WinBackOffer { tenant_id, cancelled_at_ms, sequence } => {
                format!("win_back_offer:{tenant_id}:{cancelled_at_ms}:{sequence}")
            }
            Self::RetentionErasure { tenant_id, cancelled_at_ms } => {
                format!("retention_erasure:{tenant_id}:{cancelled_at_ms}")
            }
            Self::Export { export_id, .. } => format!("export:{export_id}"),
            Self::ExpireExport { export_id, .. } => format!("expire_export:{export_id}"),
            // One per change: a later change to the same plan is a new job.
            Self::SwitchPlan { tenant_id, plan } => format!("switch_plan:{tenant_id}:{plan}:{}", JobId::generate()),
            // One per embedder change found at start (the start skips a tenant whose job is still pending).
            Self::Reembed { tenant_id } => format!("reembed:{tenant_id}:{}", JobId::generate()),
            Self::EmbedDocument { document_id, .. } => format!("embed_document:{document_id}"),
            Self::UsageReview { tenant_id, at_ms } => format!("usage_review:{tenant_id}:{at_ms}"),
            Self::FinishErasure { erasure_id, .. } => format!("finish_erasure:{erasure_id}"),
            Self::RetentionSweep { day_ms } => format!("retention_sweep:{day_ms}"),
        }
    }

    /// The row to enqueue: this job, due at `run_at`.
    pub(crate) fn at(&self, run_at: Timestamp) -> NewJob {
        NewJob {
            kind: self.kind().to_owned(),
            tenant_id: self.tenant().cloned(),
            payload: serde_json::to_string(self).unwrap_or_default(),
            idempotency_key: Some(self.key()),
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            run_at,
        }
    }
}

/// Seconds to wait before attempt `attempts + 1`: 5 s doubling, at most an hour.
pub fn backoff_secs(attempts: i64) -> i64 {
    let exponent = u32::try_from(attempts.saturating_sub(1).clamp(0, 20)).unwrap_or(20);
    5i64.saturating_mul(1i64 << exponent).min(3_600)
}

/// A job as the operator sees it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct JobView {
    pub job_id: String,
    pub kind: String,
    pub tenant_id: Option<String>,
    /// `queued`, `running`, `done` or `parked`.
    pub state: String,
    pub attempts: i64,
    pub max_attempts: i64,
    pub run_at: String,
    pub last_error: Option<String>,
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
}

fn view(row: JobRow) -> JobView {
    JobView {
        job_id: row.id.to_string(),
        kind: row.kind,
        tenant_id: row.tenant_id.map(|t| t.to_string()),
        state: row.state.as_str().to_owned(),
        attempts: row.attempts,
        max_attempts: row.max_attempts,
        run_at: row.run_at.to_rfc3339(),
        last_error: row.last_error,
        payload: serde_json::from_str(&row.payload).unwrap_or_default(),
    }
}

/// Where the clock stands after `POST /admin/clock/advance`, and what ran.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ClockView {
    pub now: String,
    pub jobs_run: usize,
}

impl Services {
    pub(crate) fn wake_jobs(&self) {
        self.inner.wake_jobs.notify_one();
    }

    pub(crate) async fn jobs_woken(&self) {
        self.inner.wake_jobs.notified().await;
    }

    /// Claims and runs the jobs due now, one batch; returns how many ran.
    pub async fn run_due_jobs(&self) -> ServiceResult<usize> {
        let claimed = self.store().claim_jobs(self.clock().now(), LEASE_SECS, CLAIM_BATCH).await?;
        for row in &claimed {
            self.run_claimed(row).await;
        }
        Ok(claimed.len())
    }

    /// Runs due jobs until none is left due or running (jobs a job enqueues for now included).
    pub async fn drain_jobs(&self) -> ServiceResult<usize> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        let mut ran = 0;
        loop {
            let n = self.run_due_jobs().await?;
            ran += n;
            if n > 0 {
                continue;
            }
            if !self.store().jobs_pending(self.clock().now()).await? {
                return Ok(ran);
            }
            if tokio::time::Instant::now() > deadline {
                tracing::warn!("jobs still running after two minutes; not waiting for them");
                return Ok(ran);
            }
            // Another worker holds a due job; wait for it to finish.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The test clock: moves time forward and runs every job that became due.
    pub async fn advance_clock(&self, seconds: i64) -> ServiceResult<ClockView> {
        if !(1..=MAX_CLOCK_ADVANCE_SECS).contains(&seconds) {
            return Err(ServiceError::validation("seconds must be between 1 and 31622400 (366 days)"));
        }
        if !self.clock().advance(seconds) {
            return Err(ServiceError::new(
                ErrorCode::Forbidden,
                "the clock can only be moved when server.clock = \"test\"",
            ));
        }
        tracing::info!(seconds, now = %self.clock().now(), "test clock advanced");
        let jobs_run = self.drain_jobs().await?;
        // Webhook retries that became due go out now too.
        self.wake_webhooks();
        Ok(ClockView { now: self.clock().now().to_rfc3339(), jobs_run })
    }

    /// Runs a claimed job inside its own span. The span is attached to the job's future, never entered
    /// across an await: an entered span stays current on the worker thread while the job is suspended, and
    /// would lend its `tenant_id` to whatever request that thread polls meanwhile.
    async fn run_claimed(&self, row: &JobRow) {
        let tenant = row.tenant_id.as_ref().map(|t| t.to_string()).unwrap_or_default();
        let span =
            tracing::info_span!("job", job_id = %row.id, kind = %row.kind, tenant_id = %tenant, attempt = row.attempts);
        self.run_claimed_in_span(row).instrument(span).await;
    }

    async fn run_claimed_in_span(&self, row: &JobRow) {
        let outcome = match serde_json::from_str::<Job>(&row.payload) {
            Ok(job) => self.execute(&job).await.map_err(|e| format!("{}: {}", e.code.as_str(), e.detail)),
            Err(e) => Err(format!("the job's payload cannot be read: {e}")),
        };
        let now = self.clock().now();
        let recorded = match &outcome {
            Ok(()) => self.store().complete_job(row, now).await.map(|()| JobState::Done),
            Err(error) => {
                tracing::warn!(error = %error, "job failed");
                self.store().fail_job(row, error, now.plus_seconds(backoff_secs(row.attempts)), now).await
            }
        };
        match recorded {
            Ok(JobState::Parked) => {
                tracing::error!(error = ?outcome.err(), "job parked after its last attempt");
                let detail = json!({"kind": row.kind, "attempts": row.attempts});
                self.audit(Actor::System, row.tenant_id.as_ref(), "job.parked", row.id.as_str(), detail, "").await;
                if let Ok(job) = serde_json::from_str::<Job>(&row.payload) {
                    self.after_parked(&job).await;
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "job outcome not recorded (its lease was lost)"),
        }
    }

    /// What a parked job must not leave behind. A plan switch that cannot finish would otherwise hold the
    /// tenant's `pending_plan` (and refuse every later change) until the operator requeued it: the change is
    /// abandoned instead, the tenant keeps serving on its current plan and can ask again.
    async fn after_parked(&self, job: &Job) {
        if let Job::SwitchPlan { tenant_id, plan } = job {
            match self.store().abandon_plan_change(tenant_id, self.clock().now()).await {
                Ok(()) => {
                    let detail = json!({"plan": plan, "reason": "the switch job was parked"});
                    self.audit(Actor::System, Some(tenant_id), "plan.change_abandoned", plan, detail, "").await;
                }
                Err(e) => tracing::error!(error = %e, "a parked plan switch could not be abandoned"),
            }
        }
    }

    async fn execute(&self, job: &Job) -> ServiceResult<()> {
        match job {
            Job::Provision { tenant_id } => self.provision(tenant_id).await.map(drop),
            Job::ClosePeriod { tenant_id, period_start_ms } => {
                self.close_scheduled_period(tenant_id, Timestamp(*period_start_ms)).await
            }
            Job::TrialEnd { tenant_id } => self.end_trial(tenant_id).await,
            Job::PaymentRetry { tenant_id, invoice_id, attempt } => {
                self.retry_payment(tenant_id, invoice_id, *attempt).await
            }
            Job::GraceExpiry { tenant_id, invoice_id } => self.expire_grace(tenant_id, invoice_id).await,
            Job::Charge { invoice_id, .. } => self.charge_invoice(invoice_id).await,
            Job::Deliver { notification_id, .. } => self.deliver_notification(notification_id).await,
            Job::Nudge { tenant_id, nudge } => self.nudge(tenant_id, *nudge).await,
            Job::WinBackOffer { tenant_id, cancelled_at_ms, sequence } => {
                self.win_back_offer(tenant_id, Timestamp(*cancelled_at_ms), *sequence).await
            }
            Job::RetentionErasure { tenant_id, cancelled_at_ms } => {
                self.retention_erasure(tenant_id, Timestamp(*cancelled_at_ms)).await
            }
            Job::Export { tenant_id, export_id } => self.build_export(tenant_id, export_id).await,
            Job::ExpireExport { export_id, .. } => self.expire_export(export_id).await,
            Job::SwitchPlan { tenant_id, plan } => self.switch_plan(tenant_id, plan).await,
            Job::Reembed { tenant_id } => self.reembed(tenant_id).await,
            Job::EmbedDocument { tenant_id, document_id } => self.embed_uploaded(tenant_id, document_id).await,
            Job::UsageReview { tenant_id, at_ms } => self.review_usage(tenant_id, Timestamp(*at_ms)).await,
            Job::FinishErasure { tenant_id, erasure_id } => self.finish_erasure(tenant_id, erasure_id).await,
            Job::RetentionSweep { day_ms } => self.sweep_retention(Timestamp(*day_ms)).await,
        }
    }

    /// The queue for the operator: jobs in `state` (all when absent), optionally one tenant's.
    pub async fn admin_jobs(&self, state: Option<&str>, tenant: Option<&str>) -> ServiceResult<Vec<JobView>> {
        let state = match state {
            None => None,
            Some(s) => {
                Some(JobState::parse(s).ok_or_else(|| ServiceError::validation(format!("unknown state {s:?}")))?)
            }
        };
        let tenant = match tenant {
            None => None,
            Some(t) => {
                Some(TenantId::parse(t).ok_or_else(|| ServiceError::validation("tenant_id is not a tenant id"))?)
            }
        };
        Ok(self.store().jobs(state, tenant.as_ref(), 1_000).await?.into_iter().map(view).collect())
    }

    /// The operator's retry of a parked job.
    pub async fn requeue_job(&self, raw_id: &str) -> ServiceResult<JobView> {
        let id = JobId::parse(raw_id).ok_or_else(|| ServiceError::not_found("job"))?;
        let row = self.store().requeue_job(&id, self.clock().now()).await.map_err(|e| match e {
            tenantry_store::StoreError::NotFound => ServiceError::not_found("parked job"),
            other => other.into(),
        })?;
        self.audit(Actor::Operator, row.tenant_id.as_ref(), "job.requeued", row.id.as_str(), json!({}), "").await;
        self.wake_jobs();
        Ok(view(row))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_an_hour() {
        assert_eq!(backoff_secs(1), 5);
        assert_eq!(backoff_secs(2), 10);
        assert_eq!(backoff_secs(3), 20);
        assert_eq!(backoff_secs(40), 3_600);
        assert_eq!(backoff_secs(0), 5);
    }

    #[test]
    fn payload_round_trips_and_names_its_kind() {
        let job = Job::ClosePeriod { tenant_id: TenantId::generate(), period_start_ms: 1_700_000_000_000 };
        let row = job.at(Timestamp(5));
        assert_eq!(row.kind, "close_period");
        assert_eq!(serde_json::from_str::<Job>(&row.payload).expect("decodes"), job);
        assert!(row.idempotency_key.expect("keyed").ends_with(":1700000000000"));
    }
}
