//! The gateway's decisions for every tenant request: authenticate the key, build the immutable
//! `TenantContext`, apply the lifecycle gate and the key's scope. HTTP adapts to this; nothing here knows
//! about HTTP.

use std::sync::Arc;

use tenantry_domain::context::Scopes;
use tenantry_domain::lifecycle::EndpointClass;
use tenantry_domain::{ApiKeyId, Caller, ErrorCode, RequestId, TenantContext, TenantId, TenantState};
use tenantry_store::TenantRow;

use crate::{keys, ServiceError, ServiceResult, Services};

/// What an endpoint needs from a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Reading the tenant's own account: any valid key.
    Read,
    Query,
    Ingest,
    Admin,
}

impl Scope {
    fn granted_by(self, s: Scopes) -> bool {
        match self {
            Scope::Read => true,
            Scope::Query => s.query,
            Scope::Ingest => s.ingest,
            Scope::Admin => s.admin,
        }
    }
}

/// Don't rewrite `last_used_at` more often than this per key.
const TOUCH_INTERVAL_MS: i64 = 60_000;

impl Services {
    /// Authenticates `presented` (the bearer token) and decides whether a request of `class` needing `scope`
    /// may proceed: `identify`, then `admit`.
    pub async fn authenticate(
        &self,
        presented: Option<&str>,
        request_id: RequestId,
        class: EndpointClass,
        scope: Scope,
    ) -> ServiceResult<TenantContext> {
        let ctx = self.identify(presented, request_id).await?;
        self.admit(&ctx, class, scope).await?;
        Ok(ctx)
    }

    /// Who is calling: the key checked and the tenant's context built, nothing yet about what it may do. An
    /// unknown, forged or revoked key, or an erased tenant's, is the same 401 so nothing about other keys
    /// leaks.
    pub async fn identify(&self, presented: Option<&str>, request_id: RequestId) -> ServiceResult<TenantContext> {
        let unauthenticated = || ServiceError::new(ErrorCode::Unauthenticated, "missing or invalid API key");
        let presented = presented.ok_or_else(unauthenticated)?;
        let (key_id, secret) = keys::parse(presented).ok_or_else(unauthenticated)?;
        let (key, tenant) = self.store().key_with_tenant(&key_id).await?.ok_or_else(unauthenticated)?;
        let bad_secret = !self.keys().verify(secret, &key.secret_hash);
        if bad_secret || key.revoked_at.is_some() {
            let reason = if bad_secret { "wrong secret" } else { "revoked key" };
            self.audit_failed_auth(&tenant.id, &key.id, reason).await;
            return Err(unauthenticated());
        }
        if tenant.state == TenantState::Erased {
            return Err(unauthenticated());
        }
        tracing::Span::current().record("tenant_id", tenant.id.as_str());

        let now = self.clock().now();
        if key.last_used_at.is_none_or(|t| now.0 - t.0 >= TOUCH_INTERVAL_MS) {
            if let Err(e) = self.store().touch_key(&key.id, now).await {
                tracing::warn!(error = %e, "could not record key use");
            }
        }
        let scopes = Scopes::parse_list(key.scopes.split_whitespace()).unwrap_or_default();
        self.context_for(&tenant, Caller::Key(key.id), scopes, request_id)
    }

    /// Whether an identified caller may make a request of `class` needing `scope` now: the lifecycle gate
    /// (API.md's state table), the key's scopes, the plan's requests per minute. Each failure is the answer
    /// API.md prescribes.
    pub async fn admit(&self, ctx: &TenantContext, class: EndpointClass, scope: Scope) -> ServiceResult<()> {
        if let Err(code) = ctx.state.gate(class) {
            return Err(gate_error(code, ctx.state));
        }
        if !scope.granted_by(ctx.scopes) {
            return Err(ServiceError::new(
                ErrorCode::Forbidden,
                "this API key does not have the scope for this endpoint",
            ));
        }
        let per_minute = ctx.plan.quotas.requests_per_minute;
        if let Err(limited) = self.check_rate(&ctx.tenant_id, per_minute).await {
            return Err(ServiceError::new(
                ErrorCode::RateLimited,
                format!("more than {per_minute} requests per minute"),
            )
            .retry_after(limited.retry_after_secs));
        }
        Ok(())
    }

    /// Puts a failed authentication with an existing key id on the audit trail (never the presented secret),
    /// at most once a minute per key, so a guessing attack cannot flood the trail.
    async fn audit_failed_auth(&self, tenant: &TenantId, key: &ApiKeyId, reason: &str) {
        let minute = self.clock().now().0 / 60_000;
        let first_this_minute = {
            let mut seen = self.inner.failed_auth.lock();
            let fresh = seen.get(key) != Some(&minute);
            seen.insert(key.clone(), minute);
            fresh
        };
        tracing::warn!(tenant_id = %tenant, key_id = %key, reason, "authentication failed");
        if first_this_minute {
            let detail = serde_json::json!({"key_id": key.as_str(), "reason": reason});
            self.audit(crate::audit::Actor::System, Some(tenant), "auth.failed", key.as_str(), detail, "").await;
        }
    }

    /// The request's context rebuilt from the tenant row as it is now, for a request that changed it (a plan
    /// change: its response's quota headers are the new plan's). Same key, scopes and ids.
    pub async fn refresh_context(&self, ctx: &TenantContext) -> ServiceResult<TenantContext> {
        let row = self.tenant_row(&ctx.tenant_id).await?;
        let mut fresh = self.context_for(&row, ctx.caller.clone(), ctx.scopes, ctx.request_id.clone())?;
        fresh.operation_id = ctx.operation_id.clone();
        Ok(fresh)
    }

    /// The context snapshot of a tenant row. Plan and model come from the validated catalogue.
    pub(crate) fn context_for(
        &self,
        tenant: &TenantRow,
        caller: Caller,
        scopes: Scopes,
        request_id: RequestId,
    ) -> ServiceResult<TenantContext> {
        let plan = self
            .catalog()
            .plan(&tenant.plan)
            .ok_or_else(|| {
                ServiceError::internal(format!("tenant {} is on unknown plan {:?}", tenant.id, tenant.plan))
            })?
            .clone();
        let model = match self.catalog().model(&tenant.model) {
            Some(m) if plan.allows_model(&m.name) => m.clone(),
            _ => {
                // The configuration no longer offers the tenant's model: serve (and bill) the plan's default,
                // and say so in the log.
                tracing::warn!(model = %tenant.model, plan = %plan.name, "tenant model not offered; using plan default");
                self.catalog()
                    .model(&plan.default_model)
                    .ok_or_else(|| ServiceError::internal("plan default model missing"))?
                    .clone()
            }
        };
        let retrieval_mode = plan.mode_or_default(tenant.retrieval_mode);
        let pending_needs_vectors =
            tenant.pending_plan.as_deref().and_then(|p| self.catalog().plan(p)).is_some_and(|p| p.needs_vectors());
        Ok(TenantContext {
            index_vectors: plan.needs_vectors() || pending_needs_vectors,
            tenant_id: tenant.id.clone(),
            organization: tenant.organization.clone(),
            state: tenant.state,
            plan,
            model,
            retrieval_mode,
            system_prompt: Arc::from(tenant.system_prompt.as_str()),
            config_version: tenant.config_version,
            period: self.current_period(tenant),
            overage_limit_cents: tenant.overage_limit_cents,
            caller,
            scopes,
            request_id,
            operation_id: RequestId::generate(),
        })
    }
}

fn gate_error(code: ErrorCode, state: TenantState) -> ServiceError {
    let detail = match state {
        TenantState::Suspended => "the tenant is suspended; pay the open invoice or ask the operator",
        TenantState::Cancelled => "the tenant is cancelled",
        TenantState::PendingPayment => "the tenant's first payment has not been received",
        TenantState::Provisioning => "the tenant is being provisioned; retry shortly",
        TenantState::Erased => "missing or invalid API key",
        _ => "not allowed in the tenant's current state",
    };
    let err = ServiceError::new(code, detail);
    if state == TenantState::Provisioning {
        err.retry_after(1)
    } else {
        err
    }
}
