//! Usage reports, read from the ledger; usage over time, read from ClickHouse when there is one.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tenantry_domain::quota::Meter;
use tenantry_domain::{TenantContext, TenantId, Timestamp};
use tenantry_store::UsageBucket;
use utoipa::ToSchema;

use crate::analytics::ClickHouse;
use crate::{ServiceError, ServiceResult, Services};

#[derive(Debug, Default, Serialize, PartialEq, Eq, ToSchema)]
pub struct UsageTotals {
    pub queries: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    /// Documents stored at the end of the range.
    pub documents: i64,
    /// Bytes stored at the end of the range.
    pub storage_bytes: i64,
    pub cost_micros: i64,
}

#[derive(Debug, Default, Serialize, PartialEq, Eq, ToSchema)]
pub struct ModelUsage {
    pub queries: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cost_micros: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UsageReport {
    #[schema(value_type = String)]
    pub tenant_id: TenantId,
    #[schema(value_type = String, format = DateTime)]
    pub from: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub to: Timestamp,
    pub totals: UsageTotals,
    pub by_model: BTreeMap<String, ModelUsage>,
}

/// The length of one bucket of a usage time series.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Granularity {
    Hour,
    Day,
}

impl Granularity {
    pub fn millis(self) -> i64 {
        match self {
            Self::Hour => 3_600_000,
            Self::Day => 86_400_000,
        }
    }

    /// The most buckets one request may span: a leap year of hours, ten years of days.
    fn max_buckets(self) -> i64 {
        match self {
            Self::Hour => 366 * 24,
            Self::Day => 3_660,
        }
    }
}

/// Where a usage time series was read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum UsageSource {
    /// The usage ledger (no analytics store is configured, it failed, or too much still waits for it).
    Ledger,
    /// ClickHouse, with the events not yet shipped there read from the ledger.
    Clickhouse,
}

/// One meter of one model over one bucket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct UsagePoint {
    /// The bucket's first instant (UTC, whole hour or day).
    #[schema(value_type = String, format = DateTime)]
    pub start: Timestamp,
    /// `queries`, `prompt_tokens`, `completion_tokens`, or a gauge's net change: `documents`, `storage_bytes`.
    #[schema(value_type = String)]
    pub meter: Meter,
    /// The model that ran; empty for meters without one.
    pub model: String,
    pub quantity: i64,
    pub cost_micros: i64,
}

/// A tenant's usage per bucket, meter and model; buckets without usage are left out.
#[derive(Debug, Serialize, ToSchema)]
pub struct UsageTimeseries {
    #[schema(value_type = String)]
    pub tenant_id: TenantId,
    pub granularity: Granularity,
    /// The first bucket's start (the requested `from`, rounded down to a bucket).
    #[schema(value_type = String, format = DateTime)]
    pub from: Timestamp,
    /// The end of the last bucket (the requested `to`, rounded up to a bucket).
    #[schema(value_type = String, format = DateTime)]
    pub to: Timestamp,
    pub source: UsageSource,
    pub points: Vec<UsagePoint>,
}

/// Past this many of a tenant's events waiting for ClickHouse, a time series reads the ledger alone.
const UNSHIPPED_LIMIT: i64 = 2_000;

impl Services {
    /// Usage in `[from, to)`; each bound defaults to the current billing period's.
    pub async fn usage(&self, ctx: &TenantContext, from: Option<&str>, to: Option<&str>) -> ServiceResult<UsageReport> {
        let from = bound(from, "from", ctx.period.start)?;
        let to = bound(to, "to", ctx.period.end)?;
        if from > to {
            return Err(ServiceError::validation("from must not be after to"));
        }
        self.usage_between(&ctx.tenant_id, from, to).await
    }

    /// Usage per bucket in `[from, to)`, widened to whole buckets; `from` defaults to the start of the current
    /// billing period and `to` to now. From ClickHouse when configured, else from the ledger: the same
    /// numbers either way.
    pub async fn usage_timeseries(
        &self,
        ctx: &TenantContext,
        granularity: Granularity,
        from: Option<&str>,
        to: Option<&str>,
    ) -> ServiceResult<UsageTimeseries> {
        self.timeseries_of(&ctx.tenant_id, ctx.period.start, granularity, from, to).await
    }

    /// `usage_timeseries` of any tenant, for the operator's console.
    pub async fn admin_usage_timeseries(
        &self,
        raw_id: &str,
        granularity: Granularity,
        from: Option<&str>,
        to: Option<&str>,
    ) -> ServiceResult<UsageTimeseries> {
        let row = self.named_tenant(raw_id).await?;
        let period = self.current_period(&row);
        self.timeseries_of(&row.id, period.start, granularity, from, to).await
    }

    async fn timeseries_of(
        &self,
        tenant: &TenantId,
        period_start: Timestamp,
        granularity: Granularity,
        from: Option<&str>,
        to: Option<&str>,
    ) -> ServiceResult<UsageTimeseries> {
        let step = granularity.millis();
        let from = bound(from, "from", period_start)?;
        let to = bound(to, "to", self.clock().now())?;
        if from > to {
            return Err(ServiceError::validation("from must not be after to"));
        }
        let from = Timestamp(from.0.div_euclid(step) * step);
        let to = Timestamp(to.0.div_euclid(step).saturating_add(i64::from(to.0.rem_euclid(step) != 0)) * step);
        if (to.0 - from.0) / step > granularity.max_buckets() {
            return Err(ServiceError::validation(format!(
                "a {} series spans at most {} buckets; narrow from and to",
                match granularity {
                    Granularity::Hour => "hourly",
                    Granularity::Day => "daily",
                },
                granularity.max_buckets()
            )));
        }
        let from_clickhouse = match self.analytics() {
            None => None,
            Some(ch) => self.clickhouse_buckets(ch, tenant, (from, to), step).await?,
        };
        let (source, buckets) = match from_clickhouse {
            Some(buckets) => (UsageSource::Clickhouse, buckets),
            None => (UsageSource::Ledger, merged(self.store().usage_buckets(tenant, from, to, step).await?)),
        };
        let points = buckets
            .into_iter()
            .map(|b| UsagePoint {
                start: b.start,
                meter: b.meter,
                model: b.model,
                quantity: b.quantity,
                cost_micros: b.cost_micros,
            })
            .collect();
        Ok(UsageTimeseries { tenant_id: tenant.clone(), granularity, from, to, source, points })
    }

    /// The buckets ClickHouse holds plus the events still waiting to be shipped there; `None` when too many
    /// wait or ClickHouse cannot answer (the ledger then serves, logged).
    async fn clickhouse_buckets(
        &self,
        ch: &ClickHouse,
        tenant: &TenantId,
        (from, to): (Timestamp, Timestamp),
        step: i64,
    ) -> ServiceResult<Option<Vec<UsageBucket>>> {
        let unshipped = self.store().unshipped_usage(tenant, from, to, UNSHIPPED_LIMIT + 1).await?;
        if unshipped.len() > UNSHIPPED_LIMIT as usize {
            return Ok(None);
        }
        let ids: Vec<String> = unshipped.iter().map(|e| e.event_id.clone()).collect();
        let window = (from.0.div_euclid(1000), to.0.div_euclid(1000));
        let mut buckets = match ch.tenant_buckets(tenant, window, step / 1000, &ids).await {
            Ok(buckets) => buckets,
            Err(e) => {
                tracing::warn!(tenant = %tenant, error = %e, "usage series read from the ledger: ClickHouse failed");
                return Ok(None);
            }
        };
        buckets.extend(unshipped.into_iter().map(|e| UsageBucket {
            start: Timestamp(e.at.0.div_euclid(step) * step),
            meter: e.meter,
            model: e.model,
            quantity: e.quantity,
            cost_micros: e.cost_micros,
        }));
        Ok(Some(merged(buckets)))
    }

    /// The tenant's usage in `[from, to)`, from the ledger.
    pub(crate) async fn usage_between(
        &self,
        tenant: &TenantId,
        from: Timestamp,
        to: Timestamp,
    ) -> ServiceResult<UsageReport> {
        let mut totals = UsageTotals::default();
        let mut by_model: BTreeMap<String, ModelUsage> = BTreeMap::new();
        for line in self.store().usage_lines(tenant, from, to).await? {
            totals.cost_micros += line.cost_micros;
            let slot = (!line.model.is_empty()).then(|| by_model.entry(line.model.clone()).or_default());
            match line.meter {
                Meter::Queries => {
                    totals.queries += line.quantity;
                    if let Some(m) = slot {
                        m.queries += line.quantity;
                    }
                }
                Meter::PromptTokens => {
                    totals.prompt_tokens += line.quantity;
                    if let Some(m) = slot {
                        m.prompt_tokens += line.quantity;
                        m.cost_micros += line.cost_micros;
                    }
                }
                Meter::CompletionTokens => {
                    totals.completion_tokens += line.quantity;
                    if let Some(m) = slot {
                        m.completion_tokens += line.quantity;
                        m.cost_micros += line.cost_micros;
                    }
                }
                Meter::Documents | Meter::StorageBytes => {}
            }
        }
        totals.documents = self.store().usage_level(tenant, Meter::Documents, to).await?;
        totals.storage_bytes = self.store().usage_level(tenant, Meter::StorageBytes, to).await?;
        Ok(UsageReport { tenant_id: tenant.clone(), from, to, totals, by_model })
    }
}

/// A range bound given as RFC 3339, or `default` when absent.
fn bound(raw: Option<&str>, name: &str, default: Timestamp) -> ServiceResult<Timestamp> {
    match raw {
        None => Ok(default),
        Some(s) => Timestamp::parse_rfc3339(s)
            .ok_or_else(|| ServiceError::validation(format!("{name} must be an RFC 3339 timestamp"))),
    }
}

/// Buckets summed per (start, meter, model) and sorted so, by bytes (not by a database's collation), so
/// that the ledger and ClickHouse give the same list.
fn merged(buckets: Vec<UsageBucket>) -> Vec<UsageBucket> {
    let mut sums: BTreeMap<(Timestamp, &'static str, String), (Meter, i64, i64)> = BTreeMap::new();
    for b in buckets {
        let slot = sums.entry((b.start, b.meter.as_str(), b.model)).or_insert((b.meter, 0, 0));
        slot.1 += b.quantity;
        slot.2 += b.cost_micros;
    }
    sums.into_iter()
        .map(|((start, _, model), (meter, quantity, cost_micros))| UsageBucket {
            start,
            meter,
            model,
            quantity,
            cost_micros,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(start: i64, meter: Meter, model: &str, quantity: i64) -> UsageBucket {
        UsageBucket { start: Timestamp(start), meter, model: model.into(), quantity, cost_micros: quantity * 10 }
    }

    #[test]
    fn merging_sums_equal_buckets_and_orders_them_like_the_ledger() {
        let merged = merged(vec![
            bucket(3_600_000, Meter::Queries, "m", 2),
            bucket(0, Meter::PromptTokens, "m", 5),
            bucket(3_600_000, Meter::Queries, "m", 1),
            bucket(0, Meter::CompletionTokens, "m", 7),
        ]);
        assert_eq!(
            merged,
            vec![
                bucket(0, Meter::CompletionTokens, "m", 7),
                bucket(0, Meter::PromptTokens, "m", 5),
                bucket(3_600_000, Meter::Queries, "m", 3),
            ]
        );
    }
}
