//! The operator's actions. Authenticated by the operator token (constant-time compare) or a console session,
//! never by a tenant key.

use std::collections::BTreeMap;

use subtle::ConstantTimeEq;
use tenantry_domain::lifecycle::LifecycleEvent;
use tenantry_domain::{ErrorCode, TenantId, TenantState};

use serde::Serialize;
use serde_json::json;
use tenantry_store::{JobState, StoreError, TenantEvent, TenantOrder, TenantSearch};
use utoipa::ToSchema;

use crate::audit::Actor;
use crate::billing::InvoiceView;
use crate::jobs::JobView;
use crate::tenants::TenantView;
use crate::{ServiceError, ServiceResult, Services};

/// `GET /admin/tenants/{id}`: the tenant plus its history.
#[derive(Debug, Serialize, ToSchema)]
pub struct TenantDetail {
    #[serde(flatten)]
    pub tenant: TenantView,
    /// The current billing period's usage, as the tenant's `GET /v1/usage` shows it.
    pub usage: crate::usage::UsageReport,
    /// Lifecycle transitions (`from`/`to` set) and activation milestones, oldest first.
    pub events: Vec<EventView>,
    /// Newest first.
    pub invoices: Vec<InvoiceView>,
    pub jobs: Vec<JobView>,
    /// Messages sent to the tenant (nudges, dunning, win-back), oldest first.
    pub notifications: Vec<NotificationView>,
    /// Prepaid credit: balance and grants.
    pub credits: crate::prepaid::CreditBalance,
    /// The tenant's webhook endpoints.
    pub webhooks: Vec<crate::webhooks::WebhookView>,
    /// How many documents it has, and API keys not revoked.
    pub documents: i64,
    pub active_keys: i64,
    /// When its trial ends (or ended); none without one.
    pub trial_ends_at: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NotificationView {
    pub notification_id: String,
    pub template: String,
    pub subject: String,
    pub created_at: String,
    pub delivered_at: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventView {
    pub event: String,
    pub from: Option<String>,
    pub to: Option<String>,
    pub at: String,
}

impl From<TenantEvent> for EventView {
    fn from(e: TenantEvent) -> Self {
        Self { event: e.event, from: e.from_state, to: e.to_state, at: e.at.to_rfc3339() }
    }
}

/// The activation milestones, in the order a tenant reaches them.
pub const FUNNEL: [&str; 5] = ["signed_up", "provisioned", "first_document", "first_query", "activated"];

/// `GET /admin/overview`: the console's first screen, computed from the control plane when asked.
#[derive(Debug, Serialize, ToSchema)]
pub struct Overview {
    /// The service clock's now.
    pub generated_at: String,
    pub tenants_total: i64,
    /// Every state, with zero for states no tenant is in.
    pub tenants_by_state: BTreeMap<String, i64>,
    /// Tenants that ever reached each activation milestone, in funnel order.
    pub funnel: Vec<FunnelStep>,
    pub revenue: Revenue,
    /// Tenants `past_due` or `suspended` with open invoices, oldest open invoice first.
    pub dunning: Vec<DunningTenant>,
    pub integrations: IntegrationHealth,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FunnelStep {
    pub milestone: String,
    pub tenants: i64,
}

/// Invoice totals across all tenants.
#[derive(Debug, Serialize, ToSchema)]
pub struct Revenue {
    pub currency: String,
    pub paid_cents: i64,
    pub paid_invoices: i64,
    /// Issued and not paid yet.
    pub open_cents: i64,
    pub open_invoices: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DunningTenant {
    #[schema(value_type = String)]
    pub tenant_id: TenantId,
    pub organization: String,
    pub state: TenantState,
    pub plan: String,
    pub open_invoices: i64,
    pub open_cents: i64,
    /// When the oldest open invoice was issued.
    pub open_since: String,
    /// When the payment is next retried (none when no retry is left).
    pub next_retry_at: Option<String>,
    /// When the service is suspended if still unpaid (`past_due` only).
    pub suspends_at: Option<String>,
}

/// The background machinery the product depends on: the job queue, the notification outbox, Stripe.
#[derive(Debug, Serialize, ToSchema)]
pub struct IntegrationHealth {
    /// `queued`, `running`, `done`, `parked`: every state, zero included.
    pub jobs_by_state: BTreeMap<String, i64>,
    /// Queued or running.
    pub jobs_pending: i64,
    /// Out of attempts; listed at `GET /admin/jobs?state=parked`.
    pub jobs_parked: i64,
    pub payment_provider: String,
    pub notifications_delivered: i64,
    /// Waiting in the outbox (delivery pending or retrying).
    pub notifications_undelivered: i64,
    pub stripe_events_received: i64,
    pub stripe_events_unprocessed: i64,
    /// `clickhouse` or `none` (`analytics.clickhouse_url`).
    pub analytics_store: String,
    /// Ledger events waiting in the analytics outbox (shipped every second while ClickHouse is up).
    pub analytics_pending: i64,
    /// Tenants' webhook deliveries waiting for an attempt (first or retry).
    pub webhook_deliveries_pending: i64,
    /// Webhook deliveries whose retries ran out (three days); the tenant can resend them.
    pub webhook_deliveries_failed: i64,
    /// Answers that a model provider failed or timed out, on the node that answered this overview since it
    /// started (the HTTP layer counts them; its `/metrics` has them per route).
    pub upstream_model_errors: u64,
}

/// The most tenants one page of `GET /admin/tenants` holds.
pub const MAX_TENANT_PAGE: i64 = 500;

/// `GET /admin/tenants`'s filter: every field optional; without `limit`, every match.
#[derive(Clone, Debug, Default)]
pub struct TenantQuery {
    /// Part of the organisation or email (any case), or the whole tenant id.
    pub q: Option<String>,
    pub state: Option<String>,
    pub plan: Option<String>,
    /// `created_at` (default), `-created_at`, `organization`, `state` or `plan`.
    pub sort: Option<String>,
    pub limit: Option<i64>,
    pub offset: Option<i64>,
}

/// One page of tenants and how many match in all.
#[derive(Debug, Serialize, ToSchema)]
pub struct TenantPage {
    pub tenants: Vec<TenantView>,
    /// Every tenant the filter matches, on this page or not.
    pub total: i64,
}

impl Services {
    pub fn authenticate_operator(&self, presented: Option<&str>) -> ServiceResult<()> {
        let expected = self.config().server.operator_token.as_bytes();
        let ok = presented.is_some_and(|p| !expected.is_empty() && bool::from(p.as_bytes().ct_eq(expected)));
        if ok {
            Ok(())
        } else {
            Err(ServiceError::new(ErrorCode::Unauthenticated, "missing or invalid operator token"))
        }
    }

    /// The tenants matching `query`, one page of them, and how many match in all.
    pub async fn admin_tenants(&self, query: &TenantQuery) -> ServiceResult<TenantPage> {
        let state = match query.state.as_deref() {
            None => None,
            Some(s) => {
                Some(TenantState::parse(s).ok_or_else(|| ServiceError::validation(format!("unknown state {s:?}")))?)
            }
        };
        let order = match query.sort.as_deref() {
            None | Some("created_at") => TenantOrder::Oldest,
            Some("-created_at") => TenantOrder::Newest,
            Some("organization") => TenantOrder::Organization,
            Some("state") => TenantOrder::State,
            Some("plan") => TenantOrder::Plan,
            Some(other) => {
                return Err(ServiceError::validation(format!(
                    "sort {other:?}: use created_at, -created_at, organization, state or plan"
                )))
            }
        };
        let limit = match query.limit {
            None => i64::MAX,
            Some(n @ 1..=MAX_TENANT_PAGE) => n,
            Some(_) => return Err(ServiceError::validation(format!("limit must be 1 to {MAX_TENANT_PAGE}"))),
        };
        if query.q.as_deref().is_some_and(|q| q.chars().any(char::is_control)) {
            return Err(ServiceError::validation("q must not contain control characters"));
        }
        let offset = query.offset.unwrap_or(0);
        if offset < 0 {
            return Err(ServiceError::validation("offset must not be negative"));
        }
        let search = TenantSearch {
            text: query.q.as_deref(),
            state,
            plan: query.plan.as_deref().filter(|p| !p.is_empty()),
            order,
            limit,
            offset,
        };
        let (rows, total) = self.store().search_tenants(&search).await?;
        Ok(TenantPage { tenants: rows.into_iter().map(crate::tenants::view).collect(), total })
    }

    /// One tenant as the operator sees it: its profile, lifecycle and activation events, invoices and jobs.
    pub async fn admin_tenant(&self, raw_id: &str) -> ServiceResult<TenantDetail> {
        let row = self.named_tenant(raw_id).await?;
        let id = row.id.clone();
        let events = self.store().tenant_events(&id).await?.into_iter().map(EventView::from).collect();
        let invoices = self.store().invoices(&id).await?.into_iter().map(crate::billing::view).collect();
        let jobs = self.admin_jobs(None, Some(id.as_str())).await?;
        let notifications = self
            .store()
            .notifications(&id)
            .await?
            .into_iter()
            .map(|n| NotificationView {
                notification_id: n.id,
                template: n.template,
                subject: n.subject,
                created_at: n.created_at.to_rfc3339(),
                delivered_at: n.delivered_at.map(|t| t.to_rfc3339()),
            })
            .collect();
        let period = self.current_period(&row);
        let usage = self.usage_between(&id, period.start, period.end).await?;
        let credits = self.credit_balance(&id).await?;
        let webhooks = self.webhooks(&id).await?;
        let (documents, active_keys) = self.store().tenant_counts(&id).await?;
        let trial_ends_at = self.trial_end(&row).map(|t| t.to_rfc3339());
        Ok(TenantDetail {
            documents,
            active_keys,
            trial_ends_at,
            tenant: crate::tenants::view(row),
            usage,
            events,
            invoices,
            jobs,
            notifications,
            credits,
            webhooks,
        })
    }

    /// Extends a trialing tenant's trial by `days` (1 to 90) from when it ends now: the trial-end job moves
    /// with it. Audited with the operator as actor; refused for a tenant not in a trial.
    pub async fn extend_trial(&self, raw_id: &str, days: i64) -> ServiceResult<TenantDetail> {
        if !(1..=90).contains(&days) {
            return Err(ServiceError::validation("days must be 1 to 90"));
        }
        let row = self.named_tenant(raw_id).await?;
        let id = row.id.clone();
        let not_trialing = || {
            ServiceError::new(
                ErrorCode::InvalidTransition,
                format!("the tenant is {}; only a trial that has not ended can be extended", row.state.as_str()),
            )
        };
        let Some(ends) = self.trial_end(&row).filter(|_| row.state == TenantState::Trialing) else {
            return Err(not_trialing());
        };
        let extended = ends.max(self.clock().now()).plus_seconds(days * crate::billing::DAY_SECS);
        let job = self.trial_end_job(&row);
        let key = job.idempotency_key.clone().unwrap_or_default();
        let detail = json!({"from": ends.to_rfc3339(), "to": extended.to_rfc3339(), "days": days});
        let audit = self.audit_entry(Actor::Operator, Some(&id), "trial.extended", id.as_str(), detail, "");
        let now = self.clock().now();
        match self.store().extend_trial(&id, row.state_version, extended, &key, now, Some(&audit)).await {
            Ok(()) => {}
            Err(StoreError::Concurrent) => return Err(not_trialing()),
            Err(e) => return Err(e.into()),
        }
        tracing::info!(tenant_id = %id, ends_at = %extended.to_rfc3339(), "trial extended");
        self.admin_tenant(raw_id).await
    }

    /// Applies an operator's lifecycle event through the transition table. A reactivated tenant is billed
    /// again from its current period.
    pub async fn apply_lifecycle(&self, raw_id: &str, event: LifecycleEvent) -> ServiceResult<TenantDetail> {
        let row = self.named_tenant(raw_id).await?;
        let id = row.id.clone();
        if event == LifecycleEvent::Cancelled {
            self.cancel(&id, Actor::Operator).await?;
            return self.admin_tenant(raw_id).await;
        }
        let event = match event {
            LifecycleEvent::OperatorReactivated if row.state.on(event).is_some() => {
                self.coming_back(&row, event).await?
            }
            other => other,
        };
        let jobs = match row.state.on(event) {
            Some(to) if crate::lifecycle::billable(to) => vec![self.period_close_job(&row)],
            _ => Vec::new(),
        };
        self.transition_from(&row, event, Actor::Operator, &jobs).await?;
        self.admin_tenant(raw_id).await
    }

    /// Tenants by state, the activation funnel, revenue, dunning and integration health, for the console.
    pub async fn admin_overview(&self) -> ServiceResult<Overview> {
        let counts = self.store().overview_counts().await?;
        let of = |list: &[(String, i64)], key: &str| list.iter().find(|(k, _)| k == key).map_or(0, |(_, n)| *n);

        let tenants_by_state: BTreeMap<String, i64> = TenantState::ALL
            .iter()
            .map(|s| (s.as_str().to_owned(), of(&counts.tenants_by_state, s.as_str())))
            .collect();
        let funnel = FUNNEL
            .iter()
            .map(|m| FunnelStep { milestone: (*m).to_owned(), tenants: of(&counts.milestones, m) })
            .collect();
        let invoices = |status: &str| {
            counts.invoices_by_status.iter().find(|(s, _, _)| s == status).map_or((0, 0), |(_, n, c)| (*n, *c))
        };
        let (paid_invoices, paid_cents) = invoices("paid");
        let (open_invoices, open_cents) = invoices("open");
        let revenue = Revenue {
            currency: self.config().billing.currency.clone(),
            paid_cents,
            paid_invoices,
            open_cents,
            open_invoices,
        };

        let mut dunning = Vec::new();
        for state in [TenantState::PastDue, TenantState::Suspended] {
            for tenant in self.store().tenants(Some(state)).await? {
                let open = self.store().open_invoices(&tenant.id).await?;
                let Some(oldest) = open.iter().map(|i| i.created_at).min() else { continue };
                let queued = self.store().jobs(Some(JobState::Queued), Some(&tenant.id), 1_000).await?;
                let next = |kind: &str| {
                    queued.iter().filter(|j| j.kind == kind).map(|j| j.run_at).min().map(|t| t.to_rfc3339())
                };
                dunning.push((
                    oldest,
                    DunningTenant {
                        tenant_id: tenant.id,
                        organization: tenant.organization,
                        state: tenant.state,
                        plan: tenant.plan,
                        open_invoices: open.len() as i64,
                        open_cents: open.iter().map(|i| i.total_cents).sum(),
                        open_since: oldest.to_rfc3339(),
                        next_retry_at: next("payment_retry"),
                        suspends_at: next("grace_expiry"),
                    },
                ));
            }
        }
        dunning.sort_by_key(|(oldest, _)| *oldest);

        let jobs_by_state: BTreeMap<String, i64> =
            [JobState::Queued, JobState::Running, JobState::Done, JobState::Parked]
                .iter()
                .map(|s| (s.as_str().to_owned(), of(&counts.jobs_by_state, s.as_str())))
                .collect();
        let integrations = IntegrationHealth {
            jobs_pending: jobs_by_state["queued"] + jobs_by_state["running"],
            jobs_parked: jobs_by_state["parked"],
            jobs_by_state,
            payment_provider: self.config().billing.provider.clone(),
            notifications_delivered: counts.notifications_delivered,
            notifications_undelivered: counts.notifications_undelivered,
            stripe_events_received: counts.stripe_events_received,
            stripe_events_unprocessed: counts.stripe_events_unprocessed,
            analytics_store: if self.analytics().is_some() { "clickhouse" } else { "none" }.to_owned(),
            analytics_pending: self.store().analytics_pending().await?,
            webhook_deliveries_pending: of(&counts.webhook_deliveries_by_state, "pending"),
            webhook_deliveries_failed: of(&counts.webhook_deliveries_by_state, "failed"),
            upstream_model_errors: 0,
        };

        Ok(Overview {
            generated_at: self.clock().now().to_rfc3339(),
            tenants_total: counts.tenants_by_state.iter().map(|(_, n)| n).sum(),
            tenants_by_state,
            funnel,
            revenue,
            dunning: dunning.into_iter().map(|(_, d)| d).collect(),
            integrations,
        })
    }
}
