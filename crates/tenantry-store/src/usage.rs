//! The usage ledger: append-only, one row per billable event, idempotent by event id.

use sqlx::{Any, Row, Transaction};
use tenantry_domain::quota::Meter;
use tenantry_domain::{TenantId, Timestamp};

use crate::{parsed, Result, Store};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageEvent {
    /// Unique per (request, meter); a second insert of the same id is a no-op.
    pub event_id: String,
    pub tenant_id: TenantId,
    /// The id the caller saw (`X-Request-Id`).
    pub request_id: String,
    pub meter: Meter,
    /// The model that actually ran; empty for meters without one.
    pub model: String,
    /// Signed: a deleted document is a negative `documents`/`storage_bytes` event.
    pub quantity: i64,
    pub cost_micros: i64,
    pub at: Timestamp,
}

/// Sum of one meter for one model over a range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageLine {
    pub meter: Meter,
    pub model: String,
    pub quantity: i64,
    pub cost_micros: i64,
}

/// One meter of one model summed over one time bucket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageBucket {
    /// The bucket's first instant (a multiple of the bucket's length since the epoch).
    pub start: Timestamp,
    pub meter: Meter,
    pub model: String,
    pub quantity: i64,
    pub cost_micros: i64,
}

/// Appends `events` in one multi-row statement; returns how many were new (a replay inserts none).
pub(crate) async fn insert_events(tx: &mut Transaction<'_, Any>, events: &[UsageEvent]) -> Result<u64> {
    let refs: Vec<&UsageEvent> = events.iter().collect();
    Ok(insert_events_returning(tx, &refs).await?.len() as u64)
}

/// Inserts ledger rows, skipping ids already recorded; returns the ids it added. Multi-row statements of at
/// most a few shapes (`runs`), so each is prepared once and then found in the connection's statement cache.
pub(crate) async fn insert_events_returning(
    tx: &mut Transaction<'_, Any>,
    events: &[&UsageEvent],
) -> Result<Vec<String>> {
    let mut added = Vec::with_capacity(events.len());
    for run in runs(events) {
        let sql = insert_events_sql(&placeholders(tx.backend_name(), run.len(), 8));
        let mut q = sqlx::query(&sql);
        for e in run {
            q = q
                .bind(&e.event_id)
                .bind(e.tenant_id.as_str())
                .bind(&e.request_id)
                .bind(e.meter.as_str())
                .bind(&e.model)
                .bind(e.quantity)
                .bind(e.cost_micros)
                .bind(e.at.0);
        }
        for r in q.fetch_all(&mut **tx).await? {
            added.push(r.try_get::<String, _>("event_id")?);
        }
    }
    Ok(added)
}

/// Queues `events` for the analytics store, in the ledger's transaction.
pub(crate) async fn queue_for_analytics(tx: &mut Transaction<'_, Any>, events: &[&UsageEvent]) -> Result<()> {
    for run in runs(events) {
        let sql = outbox_sql(&placeholders(tx.backend_name(), run.len(), 3));
        let mut q = sqlx::query(&sql);
        for e in run {
            q = q.bind(&e.event_id).bind(e.tenant_id.as_str()).bind(e.at.0);
        }
        q.execute(&mut **tx).await?;
    }
    Ok(())
}

/// Ledger rows (`event_id, tenant_id, request_id, meter, model, quantity, cost_micros, created_at` per row),
/// skipping ids already recorded and returning the ids added.
pub(crate) fn insert_events_sql(values: &str) -> String {
    format!(
        "INSERT INTO usage_events (event_id, tenant_id, request_id, meter, model, quantity, cost_micros, \
         created_at) VALUES {values} ON CONFLICT (event_id) DO NOTHING RETURNING event_id"
    )
}

/// Analytics outbox rows (`event_id, tenant_id, created_at` per row).
pub(crate) fn outbox_sql(values: &str) -> String {
    format!("INSERT INTO analytics_outbox (event_id, tenant_id, created_at) VALUES {values} ON CONFLICT (event_id) DO NOTHING")
}

/// Rows per multi-row statement at most.
const MAX_ROWS: usize = 64;

/// The parameters `$first, $first+1, …` of `n` values, for an `IN (…)` list.
pub(crate) fn parameter_list(first: usize, n: usize) -> String {
    (first..first + n).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}

/// `items` cut into runs whose lengths are powers of two up to `MAX_ROWS`, longest first: a multi-row
/// statement then has one of seven shapes, whatever the batch size, instead of a new text (parsed and
/// prepared again, and evicting others from the statement cache) for every count.
pub(crate) fn runs<T>(items: &[T]) -> impl Iterator<Item = &[T]> {
    let mut rest = items;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let len = MAX_ROWS.min(1 << rest.len().ilog2());
        let (run, after) = rest.split_at(len);
        rest = after;
        Some(run)
    })
}

/// `rows` tuples of `width` parameters for a multi-row `VALUES`. PostgreSQL numbers them (`($1, $2), ($3,
/// $4)`); SQLite gets anonymous `?`, because it looks a named or numbered parameter up by a linear scan both
/// when preparing and when binding, so a statement of n numbered parameters costs O(n²): at 6,000
/// parameters (a batch of 256 settlements) that was most of the writer's time and the gateway fell behind.
pub(crate) fn placeholders(backend: &str, rows: usize, width: usize) -> String {
    let numbered = !backend.eq_ignore_ascii_case("sqlite");
    let mut out = String::with_capacity(rows * width * 5);
    for r in 0..rows {
        if r > 0 {
            out.push_str(", ");
        }
        out.push('(');
        for c in 0..width {
            if c > 0 {
                out.push_str(", ");
            }
            if numbered {
                out.push('$');
                out.push_str(&(r * width + c + 1).to_string());
            } else {
                out.push('?');
            }
        }
        out.push(')');
    }
    out
}

fn event_from_row(r: &sqlx::any::AnyRow, tenant_id: TenantId) -> Result<UsageEvent> {
    Ok(UsageEvent {
        event_id: r.try_get("event_id")?,
        tenant_id,
        request_id: r.try_get("request_id")?,
        meter: parsed(r, "meter", Meter::parse)?,
        model: r.try_get("model")?,
        quantity: r.try_get("quantity")?,
        cost_micros: r.try_get("cost_micros")?,
        at: Timestamp(r.try_get("created_at")?),
    })
}

/// What one usage retention sweep did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct PrunedUsage {
    /// Ledger rows removed (earlier carry-forward rows included: they are folded into the new ones).
    pub removed: u64,
    /// Carry-forward rows written for gauge meters (one per tenant, meter and model).
    pub carried: u64,
}

/// Rows of a tenant older than the cutoff and inside a period already invoiced.
const PRUNABLE: &str = "created_at < $1 AND created_at < \
     (SELECT COALESCE(MAX(i.period_end), 0) FROM invoices i WHERE i.tenant_id = usage_events.tenant_id)";

impl Store {
    /// Usage retention: removes ledger rows older than `cutoff` that an invoice already covers. Counters
    /// (queries, tokens) just go; gauges (documents, storage bytes) are signed deltas whose sum is a level,
    /// so their removed rows are replaced by one carry-forward row per tenant, meter and model holding the
    /// sum, dated at the newest removed row: every level at or after the cutoff is unchanged.
    pub async fn prune_usage(&self, cutoff: Timestamp) -> Result<PrunedUsage> {
        let gauges = [Meter::Documents.as_str(), Meter::StorageBytes.as_str()];
        let mut tx = self.begin_write().await?;
        let sums = sqlx::query(&format!(
            "SELECT tenant_id, meter, model, CAST(SUM(quantity) AS BIGINT) AS quantity, \
             CAST(SUM(cost_micros) AS BIGINT) AS cost_micros, MAX(created_at) AS last_at, COUNT(*) AS n \
             FROM usage_events WHERE {PRUNABLE} AND meter IN ($2, $3) GROUP BY tenant_id, meter, model"
        ))
        .bind(cutoff.0)
        .bind(gauges[0])
        .bind(gauges[1])
        .fetch_all(&mut *tx)
        .await?;
        let removed = sqlx::query(&format!("DELETE FROM usage_events WHERE {PRUNABLE}"))
            .bind(cutoff.0)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let mut done = PrunedUsage { removed, carried: 0 };
        for row in &sums {
            let (tenant, meter): (String, String) = (row.try_get("tenant_id")?, row.try_get("meter")?);
            let model: String = row.try_get("model")?;
            let last_at: i64 = row.try_get("last_at")?;
            sqlx::query(
                "INSERT INTO usage_events (event_id, tenant_id, request_id, meter, model, quantity, cost_micros, created_at) \
                 VALUES ($1, $2, 'retention-carry-forward', $3, $4, $5, $6, $7)",
            )
            .bind(format!("carry:{tenant}:{meter}:{model}:{}", cutoff.0))
            .bind(&tenant)
            .bind(&meter)
            .bind(&model)
            .bind(row.try_get::<i64, _>("quantity")?)
            .bind(row.try_get::<i64, _>("cost_micros")?)
            .bind(last_at)
            .execute(&mut *tx)
            .await?;
            done.carried += 1;
        }
        // Queued analytics events whose ledger row went (only after a months-long analytics outage).
        sqlx::query("DELETE FROM analytics_outbox WHERE created_at < $1").bind(cutoff.0).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(done)
    }

    /// Up to `limit` queued analytics events, oldest first, with their ledger rows.
    pub async fn analytics_batch(&self, limit: i64) -> Result<Vec<UsageEvent>> {
        let rows = sqlx::query(
            "SELECT u.event_id, u.tenant_id, u.request_id, u.meter, u.model, u.quantity, u.cost_micros, u.created_at \
             FROM analytics_outbox o JOIN usage_events u ON u.event_id = o.event_id \
             ORDER BY o.created_at, o.event_id LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(|r| event_from_row(r, TenantId::from_trusted(r.try_get::<String, _>("tenant_id")?))).collect()
    }

    /// Drops shipped events from the outbox.
    pub async fn analytics_shipped(&self, event_ids: &[String]) -> Result<()> {
        let mut tx = self.begin_write().await?;
        for id in event_ids {
            sqlx::query("DELETE FROM analytics_outbox WHERE event_id = $1").bind(id).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// How many events wait for the analytics store.
    pub async fn analytics_pending(&self) -> Result<i64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM analytics_outbox").fetch_one(&self.read).await?;
        Ok(row.try_get("n")?)
    }

    /// Per meter and model sums of events in `[from, to)`.
    pub async fn usage_lines(&self, tenant: &TenantId, from: Timestamp, to: Timestamp) -> Result<Vec<UsageLine>> {
        let rows = sqlx::query(
            "SELECT meter, model, CAST(SUM(quantity) AS BIGINT) AS quantity, \
             CAST(SUM(cost_micros) AS BIGINT) AS cost_micros FROM usage_events \
             WHERE tenant_id = $1 AND created_at >= $2 AND created_at < $3 \
             GROUP BY meter, model ORDER BY meter, model",
        )
        .bind(tenant.as_str())
        .bind(from.0)
        .bind(to.0)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(UsageLine {
                    meter: parsed(r, "meter", Meter::parse)?,
                    model: r.try_get("model")?,
                    quantity: r.try_get("quantity")?,
                    cost_micros: r.try_get("cost_micros")?,
                })
            })
            .collect()
    }

    /// Per bucket, meter and model sums of events in `[from, to)`, buckets `bucket_ms` long counted from the
    /// epoch, in time order.
    pub async fn usage_buckets(
        &self,
        tenant: &TenantId,
        from: Timestamp,
        to: Timestamp,
        bucket_ms: i64,
    ) -> Result<Vec<UsageBucket>> {
        let rows = sqlx::query(
            "SELECT (created_at / $4) * $5 AS bucket, meter, model, CAST(SUM(quantity) AS BIGINT) AS quantity, \
             CAST(SUM(cost_micros) AS BIGINT) AS cost_micros FROM usage_events \
             WHERE tenant_id = $1 AND created_at >= $2 AND created_at < $3 \
             GROUP BY bucket, meter, model ORDER BY bucket, meter, model",
        )
        .bind(tenant.as_str())
        .bind(from.0)
        .bind(to.0)
        .bind(bucket_ms)
        .bind(bucket_ms)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(UsageBucket {
                    start: Timestamp(r.try_get("bucket")?),
                    meter: parsed(r, "meter", Meter::parse)?,
                    model: r.try_get("model")?,
                    quantity: r.try_get("quantity")?,
                    cost_micros: r.try_get("cost_micros")?,
                })
            })
            .collect()
    }

    /// Up to `limit` of `tenant`'s events in `[from, to)` still queued for the analytics store.
    pub async fn unshipped_usage(
        &self,
        tenant: &TenantId,
        from: Timestamp,
        to: Timestamp,
        limit: i64,
    ) -> Result<Vec<UsageEvent>> {
        let rows = sqlx::query(
            "SELECT u.event_id, u.request_id, u.meter, u.model, u.quantity, u.cost_micros, u.created_at \
             FROM analytics_outbox o JOIN usage_events u ON u.event_id = o.event_id \
             WHERE u.tenant_id = $1 AND u.created_at >= $2 AND u.created_at < $3 ORDER BY u.event_id LIMIT $4",
        )
        .bind(tenant.as_str())
        .bind(from.0)
        .bind(to.0)
        .bind(limit)
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(|r| event_from_row(r, tenant.clone())).collect()
    }

    /// The level of a gauge meter (documents, storage bytes) as of `at`: the sum of all its events before.
    pub async fn usage_level(&self, tenant: &TenantId, meter: Meter, at: Timestamp) -> Result<i64> {
        let row = sqlx::query(
            "SELECT CAST(COALESCE(SUM(quantity), 0) AS BIGINT) AS level FROM usage_events \
             WHERE tenant_id = $1 AND meter = $2 AND created_at < $3",
        )
        .bind(tenant.as_str())
        .bind(meter.as_str())
        .bind(at.0)
        .fetch_one(&self.read)
        .await?;
        Ok(row.try_get("level")?)
    }

    /// The request ids of `tenant`'s ledger rows for `meter`, one per row (tests and reconciliation).
    pub async fn usage_request_ids(&self, tenant: &TenantId, meter: Meter) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT request_id FROM usage_events WHERE tenant_id = $1 AND meter = $2")
            .bind(tenant.as_str())
            .bind(meter.as_str())
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(|r| Ok(r.try_get("request_id")?)).collect()
    }

    /// How many ledger rows `tenant` has (tests and reconciliation).
    pub async fn usage_event_count(&self, tenant: &TenantId, meter: Meter) -> Result<i64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM usage_events WHERE tenant_id = $1 AND meter = $2")
            .bind(tenant.as_str())
            .bind(meter.as_str())
            .fetch_one(&self.read)
            .await?;
        Ok(row.try_get("n")?)
    }

    /// Every ledger row of `tenant`, oldest first (export).
    pub async fn usage_events(&self, tenant: &TenantId) -> Result<Vec<UsageEvent>> {
        let rows = sqlx::query(
            "SELECT event_id, request_id, meter, model, quantity, cost_micros, created_at FROM usage_events \
             WHERE tenant_id = $1 ORDER BY created_at, event_id",
        )
        .bind(tenant.as_str())
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(|r| event_from_row(r, tenant.clone())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::{parameter_list, placeholders, runs};

    #[test]
    fn parameter_lists_number_from_the_first_free_parameter() {
        assert_eq!(parameter_list(2, 3), "$2, $3, $4");
        assert_eq!(parameter_list(1, 1), "$1");
    }

    #[test]
    fn placeholders_number_every_parameter_once_on_postgres_and_are_anonymous_on_sqlite() {
        assert_eq!(placeholders("PostgreSQL", 2, 3), "($1, $2, $3), ($4, $5, $6)");
        assert_eq!(placeholders("PostgreSQL", 1, 1), "($1)");
        assert_eq!(placeholders("SQLite", 2, 2), "(?, ?), (?, ?)");
    }

    #[test]
    fn runs_cover_every_item_once_in_order_with_few_shapes() {
        for n in [0_usize, 1, 2, 3, 7, 64, 65, 150, 768, 1000] {
            let items: Vec<usize> = (0..n).collect();
            let cut: Vec<&[usize]> = runs(&items).collect();
            assert_eq!(cut.concat(), items, "{n} items");
            assert!(cut.iter().all(|r| r.len().is_power_of_two() && r.len() <= 64), "{n}: {cut:?}");
            assert!(cut.windows(2).all(|w| w[0].len() >= w[1].len()), "longest first");
        }
    }
}
