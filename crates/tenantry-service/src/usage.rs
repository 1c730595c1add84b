//! Usage reports, read from the ledger.

use std::collections::BTreeMap;

use serde::Serialize;
use tenantry_domain::quota::Meter;
use tenantry_domain::{TenantContext, TenantId, Timestamp};
use utoipa::ToSchema;

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

impl Services {
    /// Usage in `[from, to)`; each bound defaults to the current billing period's.
    pub async fn usage(&self, ctx: &TenantContext, from: Option<&str>, to: Option<&str>) -> ServiceResult<UsageReport> {
        let parse = |raw: Option<&str>, name: &str, default: Timestamp| match raw {
            None => Ok(default),
            Some(s) => Timestamp::parse_rfc3339(s)
                .ok_or_else(|| ServiceError::validation(format!("{name} must be an RFC 3339 timestamp"))),
        };
        let from = parse(from, "from", ctx.period.start)?;
        let to = parse(to, "to", ctx.period.end)?;
        if from > to {
            return Err(ServiceError::validation("from must not be after to"));
        }
        self.usage_between(&ctx.tenant_id, from, to).await
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
