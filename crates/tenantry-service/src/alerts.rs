//! Usage alerts (API.md "Integrations"): thresholds per quota meter, as a percentage of the plan's limit
//! (80 and 100 for each meter unless the tenant chose others). After each request the settled usage is
//! compared with them; a threshold crossed fires once per billing period, as a `usage.threshold_reached`
//! webhook event and an email. Exactly once holds across requests and nodes because firing is an insert
//! under a unique key, written with its event in one transaction; each node remembers what fired so the
//! comparison after a request costs no database read.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tenantry_domain::{TenantContext, TenantId, Timestamp};
use tenantry_store::{Amounts, NewEvent, QuotaMeter};
use utoipa::ToSchema;

use crate::notify::Template;
use crate::{ServiceError, ServiceResult, Services};

/// Percentages every meter has unless the tenant sets its own.
const DEFAULT_PERCENTS: [u32; 2] = [80, 100];
/// How long a node trusts its copy of a tenant's thresholds (another node may have changed them).
const REFRESH: Duration = Duration::from_secs(30);
const MAX_THRESHOLDS: usize = 32;
const MAX_PERCENT: u32 = 1_000;

/// One threshold: `percent` of the plan's limit of `meter`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
pub struct Threshold {
    /// A quota key: `queries`, `tokens`, `documents` or `storage_bytes`.
    pub meter: String,
    /// 1 to 1000 (above 100 for plans billed for overage).
    #[schema(minimum = 1, maximum = 1000)]
    pub percent: u32,
}

/// A threshold crossed this period.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct FiredAlert {
    pub meter: String,
    pub percent: u32,
}

/// The tenant's thresholds and those that fired in the current period.
#[derive(Debug, Serialize, ToSchema)]
pub struct AlertsView {
    pub thresholds: Vec<Threshold>,
    pub fired: Vec<FiredAlert>,
}

fn defaults() -> Vec<Threshold> {
    QuotaMeter::ALL
        .iter()
        .flat_map(|m| DEFAULT_PERCENTS.iter().map(|p| Threshold { meter: m.as_str().to_owned(), percent: *p }))
        .collect()
}

fn meter(name: &str) -> Option<QuotaMeter> {
    QuotaMeter::ALL.into_iter().find(|m| m.as_str() == name)
}

/// The thresholds asked for, checked, without repeats, in a stable order.
fn checked(asked: Vec<Threshold>) -> ServiceResult<Vec<Threshold>> {
    if asked.len() > MAX_THRESHOLDS {
        return Err(ServiceError::validation(format!("thresholds: at most {MAX_THRESHOLDS}")));
    }
    let mut out: Vec<Threshold> = Vec::new();
    for t in asked {
        if meter(&t.meter).is_none() {
            return Err(ServiceError::validation(format!(
                "thresholds: {:?} is not a quota meter (queries, tokens, documents, storage_bytes)",
                t.meter
            )));
        }
        if !(1..=MAX_PERCENT).contains(&t.percent) {
            return Err(ServiceError::validation(format!("thresholds: percent must be 1 to {MAX_PERCENT}")));
        }
        if !out.contains(&t) {
            out.push(t);
        }
    }
    out.sort_by(|a, b| (&a.meter, a.percent).cmp(&(&b.meter, b.percent)));
    Ok(out)
}

/// What one node knows of one tenant's alerts.
struct TenantAlerts {
    thresholds: Arc<Vec<(QuotaMeter, u32)>>,
    loaded: Instant,
    period_start: Timestamp,
    fired: HashSet<(QuotaMeter, u32)>,
}

#[derive(Default)]
pub(crate) struct AlertCache {
    tenants: parking_lot::Mutex<HashMap<TenantId, TenantAlerts>>,
}

impl AlertCache {
    /// The thresholds not yet known to have fired this period, or `None` when the copy must be reloaded.
    fn open(&self, tenant: &TenantId, period_start: Timestamp) -> Option<Vec<(QuotaMeter, u32)>> {
        let tenants = self.tenants.lock();
        let t = tenants.get(tenant)?;
        if t.period_start != period_start || t.loaded.elapsed() > REFRESH {
            return None;
        }
        Some(t.thresholds.iter().copied().filter(|k| !t.fired.contains(k)).collect())
    }

    fn mark_fired(&self, tenant: &TenantId, key: (QuotaMeter, u32)) {
        if let Some(t) = self.tenants.lock().get_mut(tenant) {
            t.fired.insert(key);
        }
    }

    fn forget(&self, tenant: &TenantId) {
        self.tenants.lock().remove(tenant);
    }
}

impl Services {
    async fn stored_thresholds(&self, tenant: &TenantId) -> ServiceResult<Vec<Threshold>> {
        match self.store().alert_thresholds(tenant).await? {
            None => Ok(defaults()),
            Some(json) => serde_json::from_str(&json).map_err(ServiceError::internal),
        }
    }

    /// `GET /v1/alerts`.
    pub async fn alerts(&self, ctx: &TenantContext) -> ServiceResult<AlertsView> {
        let thresholds = self.stored_thresholds(&ctx.tenant_id).await?;
        let fired = self
            .store()
            .fired_alerts(&ctx.tenant_id, ctx.period.start)
            .await?
            .into_iter()
            .map(|(meter, percent)| FiredAlert { meter, percent: u32::try_from(percent).unwrap_or(0) })
            .collect();
        Ok(AlertsView { thresholds, fired })
    }

    /// `PUT /v1/alerts`: replaces the tenant's thresholds (an empty list turns alerts off).
    pub async fn set_alerts(&self, ctx: &TenantContext, asked: Vec<Threshold>) -> ServiceResult<AlertsView> {
        let thresholds = checked(asked)?;
        let json = serde_json::to_string(&thresholds).map_err(ServiceError::internal)?;
        self.store().set_alert_thresholds(&ctx.tenant_id, &json, self.clock().now()).await?;
        self.inner.alerts.forget(&ctx.tenant_id);
        let detail = serde_json::json!({"thresholds": thresholds});
        self.audit(crate::audit::Actor::Tenant(ctx), Some(&ctx.tenant_id), "alerts.changed", "", detail, "").await;
        self.alerts(ctx).await
    }

    /// Loads the tenant's thresholds and what fired this period into this node's copy.
    async fn load_alerts(&self, ctx: &TenantContext) -> ServiceResult<Vec<(QuotaMeter, u32)>> {
        let thresholds: Vec<(QuotaMeter, u32)> = self
            .stored_thresholds(&ctx.tenant_id)
            .await?
            .iter()
            .filter_map(|t| Some((meter(&t.meter)?, t.percent)))
            .collect();
        let fired: HashSet<(QuotaMeter, u32)> = self
            .store()
            .fired_alerts(&ctx.tenant_id, ctx.period.start)
            .await?
            .into_iter()
            .filter_map(|(m, p)| Some((meter(&m)?, u32::try_from(p).ok()?)))
            .collect();
        let open = thresholds.iter().copied().filter(|k| !fired.contains(k)).collect();
        let entry = TenantAlerts {
            thresholds: Arc::new(thresholds),
            loaded: Instant::now(),
            period_start: ctx.period.start,
            fired,
        };
        self.inner.alerts.tenants.lock().insert(ctx.tenant_id.clone(), entry);
        Ok(open)
    }

    /// Compares the tenant's settled usage with its thresholds and fires those crossed for the first time
    /// this period. Costs no database read unless one is crossed (or the node's copy is stale).
    pub(crate) async fn watch_thresholds(&self, ctx: &TenantContext, used: &Amounts) -> ServiceResult<()> {
        let open = match self.inner.alerts.open(&ctx.tenant_id, ctx.period.start) {
            Some(open) => open,
            None => self.load_alerts(ctx).await?,
        };
        for (m, percent) in open {
            let limit = m.limit(&ctx.plan.quotas);
            let used = m.of(used);
            if limit <= 0 || i128::from(used) * 100 < i128::from(limit) * i128::from(percent) {
                continue;
            }
            self.fire(ctx, m, percent, used, limit).await?;
            self.inner.alerts.mark_fired(&ctx.tenant_id, (m, percent));
        }
        Ok(())
    }

    async fn fire(&self, ctx: &TenantContext, m: QuotaMeter, percent: u32, used: i64, limit: i64) -> ServiceResult<()> {
        let period_start = ctx.period.start;
        let event = NewEvent {
            tenant_id: &ctx.tenant_id,
            kind: "usage.threshold_reached",
            data: serde_json::json!({
                "meter": m.as_str(),
                "percent": percent,
                "used": used,
                "limit": limit,
                "period_start": period_start.to_rfc3339(),
            }),
            dedupe_key: Some(format!(
                "usage.threshold_reached:{}:{}:{percent}:{}",
                ctx.tenant_id,
                m.as_str(),
                period_start.0
            )),
        };
        let now = self.clock().now();
        if !self.store().fire_alert(m.as_str(), i64::from(percent), period_start, &event, now).await? {
            return Ok(());
        }
        tracing::info!(tenant_id = %ctx.tenant_id, meter = m.as_str(), percent, used, limit, "usage alert fired");
        self.wake_webhooks();
        if let Some(tenant) = self.store().tenant(&ctx.tenant_id).await? {
            let template = Template::UsageThreshold { meter: m.as_str().to_owned(), percent, used, limit };
            self.notify(&tenant, template, &format!("alert:{}:{percent}:{}", m.as_str(), period_start.0)).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_80_and_100_percent_of_every_quota() {
        let d = defaults();
        assert_eq!(d.len(), 8);
        assert!(d.contains(&Threshold { meter: "tokens".into(), percent: 80 }));
        assert!(d.contains(&Threshold { meter: "storage_bytes".into(), percent: 100 }));
    }

    #[test]
    fn thresholds_are_checked_and_deduplicated() {
        let t = |m: &str, p| Threshold { meter: m.into(), percent: p };
        let got = checked(vec![t("queries", 90), t("queries", 50), t("queries", 90)]).expect("valid");
        assert_eq!(got, vec![t("queries", 50), t("queries", 90)]);
        assert!(checked(vec![t("minutes", 50)]).is_err());
        assert!(checked(vec![t("queries", 0)]).is_err());
        assert!(checked(vec![t("queries", 1_001)]).is_err());
    }
}
