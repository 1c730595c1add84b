//! The operator's actions. Authenticated by the operator token (constant-time compare), never by a tenant key.

use subtle::ConstantTimeEq;
use tenantry_domain::lifecycle::LifecycleEvent;
use tenantry_domain::{ErrorCode, TenantId, TenantState};

use serde::Serialize;
use tenantry_store::TenantEvent;
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
    /// Lifecycle transitions (`from`/`to` set) and activation milestones, oldest first.
    pub events: Vec<EventView>,
    /// Newest first.
    pub invoices: Vec<InvoiceView>,
    pub jobs: Vec<JobView>,
    /// Messages sent to the tenant (nudges, dunning, win-back), oldest first.
    pub notifications: Vec<NotificationView>,
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

    pub async fn admin_tenants(&self, state: Option<&str>) -> ServiceResult<Vec<TenantView>> {
        let state = match state {
            None | Some("") => None,
            Some(s) => {
                Some(TenantState::parse(s).ok_or_else(|| ServiceError::validation(format!("unknown state {s:?}")))?)
            }
        };
        Ok(self.store().tenants(state).await?.into_iter().map(crate::tenants::view).collect())
    }

    /// One tenant as the operator sees it: its profile, lifecycle and activation events, invoices and jobs.
    pub async fn admin_tenant(&self, raw_id: &str) -> ServiceResult<TenantDetail> {
        let id = TenantId::parse(raw_id).ok_or_else(|| ServiceError::not_found("tenant"))?;
        let row = self.store().tenant(&id).await?.ok_or_else(|| ServiceError::not_found("tenant"))?;
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
        Ok(TenantDetail { tenant: crate::tenants::view(row), events, invoices, jobs, notifications })
    }

    /// Applies an operator's lifecycle event through the transition table. A reactivated tenant is billed
    /// again from its current period.
    pub async fn apply_lifecycle(&self, raw_id: &str, event: LifecycleEvent) -> ServiceResult<TenantDetail> {
        let id = TenantId::parse(raw_id).ok_or_else(|| ServiceError::not_found("tenant"))?;
        let row = self.store().tenant(&id).await?.ok_or_else(|| ServiceError::not_found("tenant"))?;
        if event == LifecycleEvent::Cancelled {
            self.cancel(&id, Actor::Operator).await?;
            return self.admin_tenant(raw_id).await;
        }
        let jobs = match row.state.on(event) {
            Some(to) if crate::lifecycle::billable(to) => vec![self.period_close_job(&row)],
            _ => Vec::new(),
        };
        self.transition_from(&row, event, Actor::Operator, &jobs).await?;
        self.admin_tenant(raw_id).await
    }
}
