//! Retention (`[retention]`): a daily `retention_sweep` job removes usage ledger rows older than
//! `usage_days` that an invoice already covers (gauge levels are carried forward) and audit entries older
//! than `audit_days` (the chain stays verifiable from its anchor) and sessions and sign-in links that ended
//! over a day ago, then schedules the next day's sweep.
//! Cancelled tenants have their own retention: `lifecycle.cancelled_retention_days`, then erasure.

use serde_json::json;
use tenantry_domain::Timestamp;

use crate::audit::Actor;
use crate::jobs::Job;
use crate::{ServiceResult, Services};

const DAY_MS: i64 = 86_400_000;

/// The start of the UTC day after `now`.
fn next_day(now: Timestamp) -> Timestamp {
    Timestamp((now.0.div_euclid(DAY_MS) + 1) * DAY_MS)
}

fn days_before(now: Timestamp, days: u32) -> Timestamp {
    now.plus_seconds(-i64::from(days) * 86_400)
}

impl Services {
    /// Makes sure the next sweep is scheduled (idempotent: one job per day).
    pub(crate) async fn schedule_retention(&self) -> ServiceResult<()> {
        let now = self.clock().now();
        let day = next_day(now);
        self.store().enqueue(&Job::RetentionSweep { day_ms: day.0 }.at(day), now).await?;
        Ok(())
    }

    pub(crate) async fn sweep_retention(&self, day: Timestamp) -> ServiceResult<()> {
        let retention = self.config().retention;
        let now = self.clock().now();
        if retention.usage_days > 0 {
            let cutoff = days_before(now, retention.usage_days);
            let pruned = self.store().prune_usage(cutoff).await?;
            if pruned.removed > 0 {
                tracing::info!(removed = pruned.removed, carried = pruned.carried, "usage retention applied");
                let detail =
                    json!({"cutoff": cutoff.to_rfc3339(), "removed": pruned.removed, "carried": pruned.carried});
                self.audit(Actor::System, None, "retention.usage", "usage_events", detail, "").await;
            }
        }
        if retention.audit_days > 0 {
            // The store records the pruning in the chain itself, in the same transaction.
            if let Some(p) = self.store().prune_audit(days_before(now, retention.audit_days), now).await? {
                tracing::info!(entries = p.entries, through_seq = p.through_seq, "audit retention applied");
            }
        }
        let sign_ins = self.prune_sign_ins().await?;
        if sign_ins > 0 {
            tracing::info!(removed = sign_ins, "ended sessions and sign-in links removed");
        }
        tracing::debug!(day = %day, "retention sweep done");
        self.schedule_retention().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_sweep_is_the_next_midnight() {
        assert_eq!(next_day(Timestamp(0)), Timestamp(DAY_MS));
        assert_eq!(next_day(Timestamp(DAY_MS - 1)), Timestamp(DAY_MS));
        assert_eq!(next_day(Timestamp(DAY_MS)), Timestamp(2 * DAY_MS));
        assert_eq!(days_before(Timestamp(3 * DAY_MS), 2), Timestamp(DAY_MS));
    }
}
