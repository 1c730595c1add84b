//! Usage analytics in ClickHouse (`analytics.clickhouse_url`).
//!
//! Every ledger event is queued in the store's outbox inside its settlement transaction, and the background
//! worker ships the outbox to ClickHouse in batches, deleting what ClickHouse accepted. The table is a
//! `ReplacingMergeTree` keyed by event id and read with `FINAL`, so a batch shipped twice (a crash between
//! the insert there and the delete here) counts once. ClickHouse is never consulted for billing: the ledger
//! is the source of truth, and `reconcile` compares the two. Usage over time (`usage_timeseries`) reads
//! ClickHouse for what it has and the ledger for what still waits in the outbox.
//!
//! Erasure removes a tenant's rows with a mutation and waits until ClickHouse has applied it. Shipping and
//! erasure take one lock, so a batch read before an erasure cannot land after it in this process.

use std::time::Duration;

use serde::Serialize;
use serde_json::json;
use tenantry_domain::quota::Meter;
use tenantry_domain::{TenantId, Timestamp};
use tenantry_store::{UsageBucket, UsageEvent};
use utoipa::ToSchema;

use crate::{ServiceError, ServiceResult, Services};

const BATCH: i64 = 1_000;
/// How long an erasure waits for ClickHouse to apply its delete mutation.
const MUTATION_TIMEOUT: Duration = Duration::from_secs(60);

/// A ClickHouse server reached over its HTTP interface.
pub struct ClickHouse {
    http: reqwest::Client,
    url: String,
    database: String,
    /// Held while a batch is shipped or a tenant's rows are erased; holds whether the schema is known to
    /// exist (it is created on first use, so an analytics outage at start does not stop the API).
    lock: tokio::sync::Mutex<bool>,
}

#[derive(Debug, thiserror::Error)]
#[error("clickhouse: {0}")]
pub struct AnalyticsError(String);

impl From<AnalyticsError> for ServiceError {
    fn from(e: AnalyticsError) -> Self {
        ServiceError::new(tenantry_domain::ErrorCode::Unavailable, e.0)
    }
}

/// The ledger and ClickHouse side by side, for the operator.
#[derive(Debug, Serialize, ToSchema)]
pub struct Reconciliation {
    pub tenant_id: String,
    /// Per meter: quantity in the ledger, quantity in ClickHouse.
    pub meters: Vec<MeterTotals>,
    /// Events still in the outbox (shipped within a second or two while ClickHouse is up).
    pub pending: i64,
    /// Every meter agrees and nothing is pending.
    pub consistent: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MeterTotals {
    pub meter: String,
    pub ledger: i64,
    pub analytics: i64,
}

/// A string literal for ClickHouse SQL (this old server has no query parameters).
fn literal(raw: &str) -> String {
    format!("'{}'", raw.replace('\\', "\\\\").replace('\'', "\\'"))
}

impl ClickHouse {
    pub fn new(url: &str, database: &str) -> Result<Self, String> {
        if database.is_empty() || !database.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(format!("analytics.clickhouse_database {database:?}: use letters, digits and '_'"));
        }
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!("analytics.clickhouse_url {url:?}: use ClickHouse's HTTP interface, http://host:8123"));
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| format!("analytics http client: {e}"))?;
        Ok(Self {
            http,
            url: url.trim_end_matches('/').to_owned(),
            database: database.to_owned(),
            lock: tokio::sync::Mutex::new(false),
        })
    }

    fn table(&self) -> String {
        format!("{}.usage_events", self.database)
    }

    async fn run(&self, sql: String) -> Result<String, AnalyticsError> {
        let r = self
            .http
            .post(format!("{}/", self.url))
            .body(sql)
            .send()
            .await
            .map_err(|e| AnalyticsError(format!("unreachable: {e}")))?;
        let status = r.status();
        let text = r.text().await.map_err(|e| AnalyticsError(format!("reading the answer: {e}")))?;
        if !status.is_success() {
            return Err(AnalyticsError(format!("{status}: {}", text.trim())));
        }
        Ok(text)
    }

    async fn count(&self, sql: String) -> Result<i64, AnalyticsError> {
        let text = self.run(sql).await?;
        text.trim().parse().map_err(|_| AnalyticsError(format!("expected a number, got {:?}", text.trim())))
    }

    /// Takes the lock, creating the database and table first if this process has not yet.
    async fn ready(&self) -> Result<tokio::sync::MutexGuard<'_, bool>, AnalyticsError> {
        let mut schema = self.lock.lock().await;
        if !*schema {
            self.ensure_schema().await?;
            *schema = true;
        }
        Ok(schema)
    }

    /// Creates the database and table when missing.
    async fn ensure_schema(&self) -> Result<(), AnalyticsError> {
        self.run(format!("CREATE DATABASE IF NOT EXISTS {}", self.database)).await?;
        self.run(format!(
            "CREATE TABLE IF NOT EXISTS {} (\
             event_id String, tenant_id String, request_id String, meter String, model String, \
             quantity Int64, cost_micros Int64, at DateTime) \
             ENGINE = ReplacingMergeTree() PARTITION BY toYYYYMM(at) ORDER BY (tenant_id, event_id)",
            self.table()
        ))
        .await?;
        Ok(())
    }

    pub async fn insert(&self, events: &[UsageEvent]) -> Result<(), AnalyticsError> {
        let mut sql = format!("INSERT INTO {} FORMAT JSONEachRow\n", self.table());
        for e in events {
            let row = json!({
                "event_id": e.event_id,
                "tenant_id": e.tenant_id.as_str(),
                "request_id": e.request_id,
                "meter": e.meter.as_str(),
                "model": e.model,
                "quantity": e.quantity,
                "cost_micros": e.cost_micros,
                "at": e.at.millis().div_euclid(1000),
            });
            sql.push_str(&row.to_string());
            sql.push('\n');
        }
        self.run(sql).await.map(drop)
    }

    /// Per meter sums of a tenant's events, deduplicated.
    pub async fn tenant_totals(&self, tenant: &TenantId) -> Result<Vec<(String, i64)>, AnalyticsError> {
        let text = self
            .run(format!(
                "SELECT meter, sum(quantity) FROM {} FINAL WHERE tenant_id = {} GROUP BY meter ORDER BY meter \
                 FORMAT TabSeparated",
                self.table(),
                literal(tenant.as_str())
            ))
            .await?;
        text.lines()
            .map(|line| {
                let (meter, quantity) =
                    line.split_once('\t').ok_or_else(|| AnalyticsError(format!("unexpected row {line:?}")))?;
                let quantity = quantity.parse().map_err(|_| AnalyticsError(format!("unexpected sum {quantity:?}")))?;
                Ok((meter.to_owned(), quantity))
            })
            .collect()
    }

    /// Per bucket, meter and model sums of `tenant`'s events with `from_s <= at < to_s` (seconds), buckets
    /// `bucket_s` long counted from the epoch, deduplicated, leaving out the events named in `excluded`.
    pub async fn tenant_buckets(
        &self,
        tenant: &TenantId,
        (from_s, to_s): (i64, i64),
        bucket_s: i64,
        excluded: &[String],
    ) -> Result<Vec<UsageBucket>, AnalyticsError> {
        let excluded = if excluded.is_empty() {
            String::new()
        } else {
            let ids: Vec<String> = excluded.iter().map(|id| literal(id)).collect();
            format!(" AND event_id NOT IN ({})", ids.join(", "))
        };
        let text = self
            .run(format!(
                "SELECT intDiv(toUnixTimestamp(at), {bucket_s}) * {bucket_s} AS bucket, meter, model, \
                 sum(quantity), sum(cost_micros) FROM {} FINAL \
                 WHERE tenant_id = {} AND toUnixTimestamp(at) >= {from_s} AND toUnixTimestamp(at) < {to_s}{excluded} \
                 GROUP BY bucket, meter, model ORDER BY bucket, meter, model FORMAT TabSeparated",
                self.table(),
                literal(tenant.as_str()),
            ))
            .await?;
        text.lines().map(bucket_row).collect()
    }

    /// How many rows (duplicates included) ClickHouse holds for `tenant`.
    pub async fn tenant_rows(&self, tenant: &TenantId) -> Result<i64, AnalyticsError> {
        self.count(format!("SELECT count() FROM {} WHERE tenant_id = {}", self.table(), literal(tenant.as_str()))).await
    }

    /// Deletes every row of `tenant` and waits until ClickHouse has applied the delete; returns the rows
    /// removed (distinct events).
    async fn erase_tenant(&self, tenant: &TenantId) -> Result<i64, AnalyticsError> {
        let tenant = literal(tenant.as_str());
        let table = self.table();
        let rows = self.count(format!("SELECT count() FROM {table} FINAL WHERE tenant_id = {tenant}")).await?;
        if rows == 0 && self.count(format!("SELECT count() FROM {table} WHERE tenant_id = {tenant}")).await? == 0 {
            return Ok(0);
        }
        self.run(format!("ALTER TABLE {table} DELETE WHERE tenant_id = {tenant}")).await?;
        let deadline = tokio::time::Instant::now() + MUTATION_TIMEOUT;
        let unfinished = format!(
            "SELECT count() FROM system.mutations WHERE database = {} AND table = 'usage_events' AND is_done = 0",
            literal(&self.database)
        );
        while self.count(unfinished.clone()).await? > 0 {
            if tokio::time::Instant::now() > deadline {
                return Err(AnalyticsError("the delete mutation has not finished; it will be checked again".into()));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let left = self.count(format!("SELECT count() FROM {table} WHERE tenant_id = {tenant}")).await?;
        if left > 0 {
            return Err(AnalyticsError(format!("{left} rows remain after the delete")));
        }
        Ok(rows)
    }
}

/// One `bucket meter model quantity cost` row of [`ClickHouse::tenant_buckets`].
fn bucket_row(line: &str) -> Result<UsageBucket, AnalyticsError> {
    let unexpected = || AnalyticsError(format!("unexpected row {line:?}"));
    let fields: Vec<&str> = line.split('\t').collect();
    let [bucket, meter, model, quantity, cost] = fields[..] else { return Err(unexpected()) };
    let number = |raw: &str| raw.parse::<i64>().map_err(|_| unexpected());
    Ok(UsageBucket {
        start: Timestamp(number(bucket)?.saturating_mul(1000)),
        meter: Meter::parse(meter).ok_or_else(unexpected)?,
        model: unescape(model),
        quantity: number(quantity)?,
        cost_micros: number(cost)?,
    })
}

/// A TabSeparated field as the string it stands for.
fn unescape(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut chars = field.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('0') => out.push('\0'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

impl Services {
    pub fn analytics(&self) -> Option<&ClickHouse> {
        self.inner.analytics.as_ref()
    }

    /// Ships every queued ledger event to ClickHouse; returns how many went. Without analytics, nothing.
    pub async fn ship_analytics(&self) -> ServiceResult<usize> {
        let Some(ch) = self.analytics() else { return Ok(0) };
        let _held = ch.ready().await?;
        let mut shipped = 0;
        loop {
            let batch = self.store().analytics_batch(BATCH).await?;
            if batch.is_empty() {
                return Ok(shipped);
            }
            ch.insert(&batch).await?;
            let ids: Vec<String> = batch.iter().map(|e| e.event_id.clone()).collect();
            self.store().analytics_shipped(&ids).await?;
            shipped += batch.len();
            tracing::debug!(events = batch.len(), "usage events shipped to analytics");
        }
    }

    /// Removes `tenant` from the analytics store; `None` when there is none.
    pub(crate) async fn erase_analytics(&self, tenant: &TenantId) -> ServiceResult<Option<i64>> {
        let Some(ch) = self.analytics() else { return Ok(None) };
        let _held = ch.ready().await?;
        Ok(Some(ch.erase_tenant(tenant).await?))
    }

    /// The tenant's ledger totals beside ClickHouse's (`GET /admin/analytics/reconcile`).
    pub async fn reconcile_analytics(&self, raw_tenant: &str) -> ServiceResult<Reconciliation> {
        let Some(ch) = self.analytics() else {
            return Err(ServiceError::not_found("analytics store (analytics.clickhouse_url is not set)"));
        };
        let tenant = TenantId::parse(raw_tenant).ok_or_else(|| ServiceError::not_found("tenant"))?;
        let ledger = self.store().usage_lines(&tenant, Timestamp(i64::MIN), Timestamp(i64::MAX)).await?;
        let analytics = ch.tenant_totals(&tenant).await?;
        let mut meters: Vec<MeterTotals> = Vec::new();
        for line in &ledger {
            match meters.iter_mut().find(|m| m.meter == line.meter.as_str()) {
                Some(m) => m.ledger += line.quantity,
                None => meters.push(MeterTotals {
                    meter: line.meter.as_str().to_owned(),
                    ledger: line.quantity,
                    analytics: 0,
                }),
            }
        }
        for (meter, quantity) in analytics {
            match meters.iter_mut().find(|m| m.meter == meter) {
                Some(m) => m.analytics = quantity,
                None => meters.push(MeterTotals { meter, ledger: 0, analytics: quantity }),
            }
        }
        meters.sort_by(|a, b| a.meter.cmp(&b.meter));
        let pending = self.store().analytics_pending().await?;
        let consistent = pending == 0 && meters.iter().all(|m| m.ledger == m.analytics);
        Ok(Reconciliation { tenant_id: tenant.to_string(), meters, pending, consistent })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_are_escaped() {
        assert_eq!(literal("ten_1"), "'ten_1'");
        assert_eq!(literal("a'b\\c"), "'a\\'b\\\\c'");
    }

    #[test]
    fn bucket_rows_are_read_with_their_escapes() {
        let row = bucket_row("3600\tprompt_tokens\tacme\\tmodel\t12\t34").expect("row");
        assert_eq!(row.start, Timestamp(3_600_000));
        assert_eq!(row.meter, Meter::PromptTokens);
        assert_eq!(row.model, "acme\tmodel");
        assert_eq!((row.quantity, row.cost_micros), (12, 34));
        assert!(bucket_row("3600\tnot_a_meter\t\t1\t2").is_err());
        assert!(bucket_row("3600\tqueries\t1").is_err());
    }

    #[test]
    fn bad_settings_are_refused() {
        assert!(ClickHouse::new("http://127.0.0.1:8123", "tenantry").is_ok());
        assert!(ClickHouse::new("http://127.0.0.1:8123", "a;DROP").is_err());
        assert!(ClickHouse::new("127.0.0.1:9000", "tenantry").is_err());
    }
}
