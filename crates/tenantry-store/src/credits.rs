//! Coming back after cancelling: the lifecycle transition, the acceptance of the newest win-back offer and
//! its discount as an item on the next invoice, in one transaction.

use sqlx::Row;
use tenantry_domain::lifecycle::LifecycleEvent;
use tenantry_domain::{TenantState, Timestamp};

use crate::invoices::{insert_pending_item_in, NewPendingItem};
use crate::jobs::{enqueue_in, NewJob};
use crate::tenants::{transition_in, TenantRow};
use crate::{Result, Store};

/// What a win-back did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WinBack {
    pub state: TenantState,
    /// The accepted offer's discount in percent, if an offer had been sent.
    pub discount_percent: Option<i64>,
    /// The credit put on the next invoice (negative cents), if any.
    pub credit_cents: Option<i64>,
}

impl Store {
    /// Applies `event` to the tenant as read in `row` (`WinBackAccepted`, or `TrialResumed` for a trial cut
    /// short by the cancellation; with the optimistic version check), records it, enqueues `jobs`, accepts the
    /// newest unaccepted offer and credits `percent × base_price_cents` on the next invoice.
    pub async fn win_back(
        &self,
        row: &TenantRow,
        event: LifecycleEvent,
        base_price_cents: i64,
        now: Timestamp,
        jobs: &[NewJob],
    ) -> Result<WinBack> {
        let tenant = &row.id;
        let mut tx = self.begin_write().await?;
        let to = transition_in(&mut tx, tenant, row.state_version, row.state, event, now).await?;
        for job in jobs {
            enqueue_in(&mut tx, job, now).await?;
        }
        let offer = sqlx::query(
            "SELECT id, discount_percent FROM win_back_offers WHERE tenant_id = $1 AND accepted_at IS NULL \
             ORDER BY sent_at DESC, sequence DESC LIMIT 1",
        )
        .bind(tenant.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        let mut done = WinBack { state: to, discount_percent: None, credit_cents: None };
        if let Some(offer) = offer {
            let id: String = offer.try_get("id")?;
            let percent: i64 = offer.try_get("discount_percent")?;
            sqlx::query("UPDATE win_back_offers SET accepted_at = $1 WHERE id = $2")
                .bind(now.0)
                .bind(&id)
                .execute(&mut *tx)
                .await?;
            // Prices are non-negative: half-up rounding to the cent.
            let credit = (base_price_cents.max(0).saturating_mul(percent.clamp(0, 100)) + 50) / 100;
            if credit > 0 {
                let item = NewPendingItem {
                    id: format!("winback:{id}"),
                    description: format!("Win-back discount: {percent}% of the base price"),
                    amount_cents: -credit,
                    kind: "discount",
                };
                insert_pending_item_in(&mut tx, tenant, &item, now).await?;
                done.credit_cents = Some(-credit);
            }
            done.discount_percent = Some(percent);
        }
        tx.commit().await?;
        self.tenants_changed();
        Ok(done)
    }
}
