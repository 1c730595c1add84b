//! Counts for the operator's overview: tenants by state, activation milestones reached, invoices by status,
//! jobs by state, the notification outbox, Stripe's webhook events, outbound webhook deliveries and the
//! analytics outbox. Aggregates only; no tenant data.

use sqlx::Row;
use tenantry_domain::Timestamp;

use crate::{Result, Store};

/// Each list holds `(key, count)` or `(status, count, cents)` rows, in key order; keys with no rows are absent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OverviewCounts {
    pub tenants_by_state: Vec<(String, i64)>,
    /// Tenants that reached each activation milestone (`signed_up`, `provisioned`, …).
    pub milestones: Vec<(String, i64)>,
    /// Invoices per status: how many and their total in cents.
    pub invoices_by_status: Vec<(String, i64, i64)>,
    pub jobs_by_state: Vec<(String, i64)>,
    pub notifications_delivered: i64,
    pub notifications_undelivered: i64,
    pub stripe_events_received: i64,
    /// Stored but not processed (a handler failed, or the process died while handling it).
    pub stripe_events_unprocessed: i64,
    /// Webhook deliveries by state (`pending`, `delivered`, `failed`).
    pub webhook_deliveries_by_state: Vec<(String, i64)>,
    /// Ledger events waiting to be shipped to the analytics store, and when the oldest was settled.
    pub analytics_outbox_events: i64,
    pub analytics_outbox_oldest: Option<Timestamp>,
}

impl Store {
    pub async fn overview_counts(&self) -> Result<OverviewCounts> {
        let pairs = |sql: &'static str| async move {
            let rows = sqlx::query(sql).fetch_all(&self.read).await?;
            rows.iter()
                .map(|r| Ok((r.try_get::<String, _>("k")?, r.try_get::<i64, _>("n")?)))
                .collect::<Result<Vec<_>>>()
        };
        let tenants_by_state =
            pairs("SELECT state AS k, COUNT(*) AS n FROM tenants GROUP BY state ORDER BY state").await?;
        let milestones = pairs(
            "SELECT event AS k, COUNT(DISTINCT tenant_id) AS n FROM tenant_events WHERE from_state IS NULL \
             GROUP BY event ORDER BY event",
        )
        .await?;
        let jobs_by_state = pairs("SELECT state AS k, COUNT(*) AS n FROM jobs GROUP BY state ORDER BY state").await?;
        let invoices_by_status = sqlx::query(
            "SELECT status, COUNT(*) AS n, CAST(COALESCE(SUM(total_cents), 0) AS BIGINT) AS cents FROM invoices \
             GROUP BY status ORDER BY status",
        )
        .fetch_all(&self.read)
        .await?
        .iter()
        .map(|r| Ok((r.try_get("status")?, r.try_get("n")?, r.try_get("cents")?)))
        .collect::<Result<Vec<_>>>()?;
        let outbox = sqlx::query(
            "SELECT COUNT(delivered_at) AS delivered, COUNT(*) - COUNT(delivered_at) AS undelivered FROM notifications",
        )
        .fetch_one(&self.read)
        .await?;
        let stripe = sqlx::query(
            "SELECT COUNT(*) AS received, COUNT(*) - COUNT(processed_at) AS unprocessed FROM stripe_events",
        )
        .fetch_one(&self.read)
        .await?;
        let webhook_deliveries_by_state =
            pairs("SELECT state AS k, COUNT(*) AS n FROM webhook_deliveries GROUP BY state ORDER BY state").await?;
        let analytics = sqlx::query("SELECT COUNT(*) AS n, MIN(created_at) AS oldest FROM analytics_outbox")
            .fetch_one(&self.read)
            .await?;
        Ok(OverviewCounts {
            tenants_by_state,
            milestones,
            invoices_by_status,
            jobs_by_state,
            notifications_delivered: outbox.try_get("delivered")?,
            notifications_undelivered: outbox.try_get("undelivered")?,
            stripe_events_received: stripe.try_get("received")?,
            stripe_events_unprocessed: stripe.try_get("unprocessed")?,
            webhook_deliveries_by_state,
            analytics_outbox_events: analytics.try_get("n")?,
            analytics_outbox_oldest: analytics.try_get::<Option<i64>, _>("oldest")?.map(Timestamp),
        })
    }
}
