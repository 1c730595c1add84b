//! Every lifecycle change goes through `Services::transition`: the table in `tenantry_domain::lifecycle`
//! decides, the store applies it with the optimistic version check and records it as an event in the same
//! transaction as the jobs it sets in motion, and the audit trail gets an entry.

use serde_json::json;
use tenantry_domain::lifecycle::LifecycleEvent;
use tenantry_domain::{ErrorCode, TenantId, TenantState};
use tenantry_store::{NewJob, StoreError, TenantEvent, TenantRow};

use crate::audit::Actor;
use crate::{ServiceError, ServiceResult, Services};

impl Services {
    /// Applies `event` to the tenant as read in `row` (its version is what is checked). An event the table
    /// does not allow from the current state is 409 `invalid_transition`; a concurrent change between the
    /// read and the write is 409 `transition_in_progress`.
    pub(crate) async fn transition_from(
        &self,
        row: &TenantRow,
        event: LifecycleEvent,
        actor: Actor<'_>,
        jobs: &[NewJob],
    ) -> ServiceResult<TenantRow> {
        if row.state.on(event).is_none() {
            return Err(ServiceError::new(
                ErrorCode::InvalidTransition,
                format!("{} is not allowed from {}", event.as_str(), row.state.as_str()),
            ));
        }
        let now = self.clock().now();
        let to = self.store().transition(&row.id, row.state_version, row.state, event, now, jobs).await.map_err(
            |e| match e {
                StoreError::Concurrent => ServiceError::new(
                    ErrorCode::TransitionInProgress,
                    "the tenant's state changed concurrently; read it again and retry",
                ),
                other => other.into(),
            },
        )?;
        if !jobs.is_empty() {
            self.wake_jobs();
        }
        tracing::info!(tenant_id = %row.id, event = event.as_str(), from = row.state.as_str(), to = to.as_str(), "lifecycle transition");
        let detail = json!({"event": event.as_str(), "from": row.state.as_str(), "to": to.as_str()});
        self.audit(actor, Some(&row.id), "tenant.transition", row.id.as_str(), detail, "").await;
        let mut next = row.clone();
        next.state = to;
        next.state_version += 1;
        next.updated_at = now;
        Ok(next)
    }

    /// Applies `event` only if the table allows it from the current state; `None` (and nothing changed)
    /// otherwise. For reactions that are right in some states and moot in others (a payment that succeeds
    /// for a tenant that is already active).
    pub(crate) async fn transition_if_allowed(
        &self,
        tenant_id: &TenantId,
        event: LifecycleEvent,
        actor: Actor<'_>,
        jobs: &[NewJob],
    ) -> ServiceResult<Option<TenantRow>> {
        let Some(row) = self.store().tenant(tenant_id).await? else { return Ok(None) };
        if row.state.on(event).is_none() {
            return Ok(None);
        }
        self.transition_from(&row, event, actor, jobs).await.map(Some)
    }

    /// Records an activation milestone the first time it happens.
    pub(crate) async fn milestone(&self, tenant_id: &TenantId, name: &str) {
        match self.store().record_milestone(tenant_id, name, self.clock().now()).await {
            Ok(true) => tracing::info!(tenant_id = %tenant_id, milestone = name, "activation milestone"),
            Ok(false) => {}
            Err(e) => tracing::warn!(tenant_id = %tenant_id, error = %e, "milestone not recorded"),
        }
    }

    pub async fn tenant_events(&self, tenant_id: &TenantId) -> ServiceResult<Vec<TenantEvent>> {
        Ok(self.store().tenant_events(tenant_id).await?)
    }
}

/// Whether a tenant in this state is billed for its periods.
pub(crate) fn billable(state: TenantState) -> bool {
    matches!(state, TenantState::Trialing | TenantState::Active | TenantState::PastDue)
}
