//! The operator's actions. Authenticated by the operator token (constant-time compare), never by a tenant key.

use subtle::ConstantTimeEq;
use tenantry_domain::lifecycle::LifecycleEvent;
use tenantry_domain::{ErrorCode, TenantId, TenantState};

use crate::audit::Actor;
use crate::tenants::TenantView;
use crate::{ServiceError, ServiceResult, Services};

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

    pub async fn admin_tenant(&self, raw_id: &str) -> ServiceResult<TenantView> {
        let id = TenantId::parse(raw_id).ok_or_else(|| ServiceError::not_found("tenant"))?;
        let row = self.store().tenant(&id).await?.ok_or_else(|| ServiceError::not_found("tenant"))?;
        Ok(crate::tenants::view(row))
    }

    /// Applies a lifecycle event through the transition table, with the optimistic version check.
    pub async fn apply_lifecycle(&self, raw_id: &str, event: LifecycleEvent) -> ServiceResult<TenantView> {
        let id = TenantId::parse(raw_id).ok_or_else(|| ServiceError::not_found("tenant"))?;
        let row = self.store().tenant(&id).await?.ok_or_else(|| ServiceError::not_found("tenant"))?;
        if row.state.on(event).is_none() {
            return Err(ServiceError::new(
                ErrorCode::InvalidTransition,
                format!("{event:?} is not allowed from {}", row.state.as_str()),
            ));
        }
        let to = self.store().transition(&id, row.state_version, row.state, event, self.clock().now()).await?;
        tracing::info!(tenant_id = %id, ?event, "lifecycle transition");
        let detail = serde_json::json!({"event": format!("{event:?}"), "from": row.state.as_str(), "to": to.as_str()});
        self.audit(Actor::Operator, Some(&id), "tenant.transition", id.as_str(), detail, "").await;
        self.admin_tenant(raw_id).await
    }
}
