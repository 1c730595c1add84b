//! Quota at the gateway: reserve before work, settle with the actual usage after, release on failure.
//! A `Reservation` that is dropped unsettled (an error, a cancelled request) gives its quota back; one whose
//! process died is reclaimed by the expiry sweep.

use serde::Serialize;
use tenantry_billing::rating::{overage_lines, MeteredUsage, Pricing};
use tenantry_domain::quota::Meter;
use tenantry_domain::{ErrorCode, TenantContext, Timestamp};
use tenantry_store::{Amounts, Exceeded, NewReservation, QuotaMeter, Settlement, SpendCap, Store, UsageEvent};
use tracing::Instrument;
use utoipa::ToSchema;

use crate::{ServiceError, ServiceResult, Services};

/// Quota held by one in-flight request.
pub struct Reservation {
    id: String,
    store: Store,
    settled: bool,
}

impl Reservation {
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Marks the reservation as closed by a settlement the caller committed.
    fn done(mut self) {
        self.settled = true;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let (store, id) = (self.store.clone(), std::mem::take(&mut self.id));
        // Runs on whatever runtime is current; outside one (shutdown), expiry reclaims it instead.
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                if let Err(e) = store.release(&id).await {
                    tracing::warn!(error = %e, reservation = %id, "could not release reservation; expiry will");
                }
            });
        }
    }
}

fn exceeded(ctx: &TenantContext, why: Exceeded, now: Timestamp) -> ServiceError {
    let retry = (ctx.period.end.0 - now.0).max(0) / 1000;
    let meter = match why {
        Exceeded::Quota(meter) => meter,
        Exceeded::SpendCap { cap_cents } => {
            let detail = format!(
                "this request would bring the period's overage above the spend cap of {}.{:02} \
                 (overage_limit_cents = {cap_cents}); raise or remove it with PATCH /v1/tenant/config",
                cap_cents / 100,
                cap_cents % 100
            );
            return ServiceError::new(ErrorCode::QuotaExceeded, detail).retry_after(retry.max(1) as u64);
        }
    };
    let limit = meter.limit(&ctx.plan.quotas);
    let detail = match meter {
        QuotaMeter::Queries => format!("the plan's {limit} queries for this billing period are used up"),
        QuotaMeter::Tokens => format!("the plan's {limit} tokens for this billing period would be exceeded"),
        QuotaMeter::Documents => format!("the plan allows {limit} documents"),
        QuotaMeter::StorageBytes => format!("the plan allows {limit} bytes of storage"),
    };
    let err = ServiceError::new(ErrorCode::QuotaExceeded, detail);
    match meter {
        // Per-period quotas come back with the next period.
        QuotaMeter::Queries | QuotaMeter::Tokens => err.retry_after(retry.max(1) as u64),
        QuotaMeter::Documents | QuotaMeter::StorageBytes => err,
    }
}

/// Remaining quota, for the `X-Quota-*` headers.
#[derive(Clone, Copy, Debug, Default)]
pub struct Remaining {
    pub queries: i64,
    pub tokens: i64,
}

#[derive(Debug, Serialize, ToSchema, Default)]
pub struct QuotaAmounts {
    pub queries: i64,
    pub tokens: i64,
    pub documents: i64,
    pub storage_bytes: i64,
}

impl From<Amounts> for QuotaAmounts {
    fn from(a: Amounts) -> Self {
        Self { queries: a.queries, tokens: a.tokens, documents: a.documents, storage_bytes: a.storage_bytes }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct QuotaReport {
    #[schema(value_type = String, format = DateTime)]
    pub period_start: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub period_end: Timestamp,
    /// Hard limits of the plan.
    pub limits: QuotaAmounts,
    /// Settled usage, from the usage ledger (documents and storage are current levels).
    pub used: QuotaAmounts,
    /// Held by requests in flight.
    pub reserved: QuotaAmounts,
    pub remaining: QuotaAmounts,
    /// Included in the plan's price; usage above it is billed as overage.
    pub included: QuotaAmounts,
    /// Usage above the included amounts so far this period.
    pub overage: QuotaAmounts,
    pub requests_per_minute: u64,
}

/// The tenant's spend cap with its plan's prices: the overage of a period's totals, rated as its closing
/// invoice rates them (the tenant's model's token price when the plan prices models apart).
fn spend_cap(ctx: &TenantContext) -> Option<SpendCap> {
    let cap_cents = ctx.overage_limit_cents?;
    let pricing = match Pricing::from_plan(&ctx.plan) {
        Ok(pricing) => pricing,
        Err(e) => {
            tracing::error!(error = %e, plan = %ctx.plan.name, "the plan cannot be priced; its spend cap refuses overage");
            return Some(SpendCap { cap_cents, overage_cents: std::sync::Arc::new(|_, _| i64::MAX) });
        }
    };
    let model = ctx.model.name.clone();
    let overage_cents = move |queries: i64, tokens: i64| {
        let usage = MeteredUsage::new(u64::try_from(queries).unwrap_or(0))
            .with_tokens(model.clone(), u64::try_from(tokens).unwrap_or(0));
        match overage_lines(&pricing, &usage) {
            Ok(lines) => lines.iter().map(|l| l.amount_cents.0).fold(0i64, i64::saturating_add),
            Err(_) => i64::MAX,
        }
    };
    Some(SpendCap { cap_cents, overage_cents: std::sync::Arc::new(overage_cents) })
}

fn limits(ctx: &TenantContext) -> Amounts {
    let q = &ctx.plan.quotas;
    Amounts {
        queries: QuotaMeter::Queries.limit(q),
        tokens: QuotaMeter::Tokens.limit(q),
        documents: QuotaMeter::Documents.limit(q),
        storage_bytes: QuotaMeter::StorageBytes.limit(q),
    }
}

impl Services {
    /// Reserves `amounts` for this request, or answers 429 `quota_exceeded` having changed nothing.
    #[tracing::instrument(name = "quota.reserve", skip_all, fields(tenant_id = %ctx.tenant_id, request_id = %ctx.request_id))]
    pub async fn reserve(&self, ctx: &TenantContext, amounts: Amounts) -> ServiceResult<Reservation> {
        let now = self.clock().now();
        let ttl = i64::try_from(self.config().gateway.reservation_ttl_secs).unwrap_or(i64::MAX);
        let r = NewReservation {
            id: ctx.operation_id.to_string(),
            tenant_id: ctx.tenant_id.clone(),
            period_start: ctx.period.start,
            amounts,
            expires_at: now.plus_seconds(ttl),
            now,
            spend: spend_cap(ctx),
        };
        match self.store().reserve(&r, &ctx.plan.quotas).await? {
            Ok(()) => Ok(Reservation { id: r.id, store: self.store().clone(), settled: false }),
            Err(e) => Err(exceeded(ctx, e, now)),
        }
    }

    /// Refuses early, without reserving, when `amounts` plainly cannot fit. Advisory only: `reserve` is the
    /// atomic check.
    pub async fn precheck(&self, ctx: &TenantContext, amounts: Amounts) -> ServiceResult<()> {
        let c = self.store().quota_counters(&ctx.tenant_id, ctx.period.start).await?;
        for m in QuotaMeter::ALL {
            let n = m.of(&amounts);
            if n > 0 && m.of(&c.used) + m.of(&c.reserved) + n > m.limit(&ctx.plan.quotas) {
                return Err(exceeded(ctx, Exceeded::Quota(m), self.clock().now()));
            }
        }
        Ok(())
    }

    /// Closes the reservation with the actual usage and the ledger events, in one transaction.
    #[tracing::instrument(name = "quota.settle", skip_all, fields(tenant_id = %ctx.tenant_id, request_id = %ctx.request_id))]
    pub async fn settle(
        &self,
        ctx: &TenantContext,
        reservation: Option<Reservation>,
        actual: Amounts,
        events: &[UsageEvent],
    ) -> ServiceResult<()> {
        let settlement = self.settlement_for(ctx, reservation.as_ref(), actual);
        let ledger = tracing::info_span!(
            "ledger.write",
            tenant_id = %ctx.tenant_id,
            request_id = %ctx.request_id,
            events = events.len()
        );
        self.store().settle(&settlement, events).instrument(ledger).await?;
        if let Some(r) = reservation {
            r.done();
        }
        Ok(())
    }

    pub(crate) fn settlement_for(
        &self,
        ctx: &TenantContext,
        reservation: Option<&Reservation>,
        actual: Amounts,
    ) -> Settlement {
        Settlement {
            reservation_id: reservation.map(|r| r.id.clone()),
            tenant_id: ctx.tenant_id.clone(),
            period_start: ctx.period.start,
            actual,
        }
    }

    pub(crate) fn mark_settled(reservation: Reservation) {
        reservation.done();
    }

    /// Queries and tokens left this period (limit − used − reserved), from the counters; written on every
    /// response to the tenant, so this is also where its usage alerts are checked (`alerts`).
    pub async fn remaining(&self, ctx: &TenantContext) -> ServiceResult<Remaining> {
        let c = self.store().quota_counters(&ctx.tenant_id, ctx.period.start).await?;
        if let Err(e) = self.watch_thresholds(ctx, &c.used).await {
            tracing::warn!(error = %e.detail, "usage alerts not checked after this request");
        }
        let l = limits(ctx);
        Ok(Remaining {
            queries: (l.queries - c.used.queries - c.reserved.queries).max(0),
            tokens: (l.tokens - c.used.tokens - c.reserved.tokens).max(0),
        })
    }

    /// `GET /v1/quotas`: limits, settled usage from the ledger, what is reserved and what remains.
    pub async fn quotas(&self, ctx: &TenantContext) -> ServiceResult<QuotaReport> {
        let (start, end) = (ctx.period.start, ctx.period.end);
        let mut used = Amounts::default();
        for line in self.store().usage_lines(&ctx.tenant_id, start, end).await? {
            match line.meter {
                Meter::Queries => used.queries += line.quantity,
                Meter::PromptTokens | Meter::CompletionTokens => used.tokens += line.quantity,
                Meter::Documents | Meter::StorageBytes => {}
            }
        }
        let now = self.clock().now().plus_seconds(1);
        used.documents = self.store().usage_level(&ctx.tenant_id, Meter::Documents, now).await?;
        used.storage_bytes = self.store().usage_level(&ctx.tenant_id, Meter::StorageBytes, now).await?;
        let reserved = self.store().quota_counters(&ctx.tenant_id, start).await?.reserved;
        let l = limits(ctx);
        let left = |m: QuotaMeter| (m.of(&l) - m.of(&used) - m.of(&reserved)).max(0);
        let inc = &ctx.plan.included;
        let included = Amounts {
            queries: i64::try_from(inc.queries).unwrap_or(i64::MAX),
            tokens: i64::try_from(inc.tokens).unwrap_or(i64::MAX),
            ..Amounts::default()
        };
        Ok(QuotaReport {
            period_start: start,
            period_end: end,
            limits: l.into(),
            remaining: Amounts {
                queries: left(QuotaMeter::Queries),
                tokens: left(QuotaMeter::Tokens),
                documents: left(QuotaMeter::Documents),
                storage_bytes: left(QuotaMeter::StorageBytes),
            }
            .into(),
            overage: QuotaAmounts {
                queries: (used.queries - included.queries).max(0),
                tokens: (used.tokens - included.tokens).max(0),
                ..QuotaAmounts::default()
            },
            included: included.into(),
            used: used.into(),
            reserved: reserved.into(),
            requests_per_minute: ctx.plan.quotas.requests_per_minute,
        })
    }
}
