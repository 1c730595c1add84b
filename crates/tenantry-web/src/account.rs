//! The end of a tenant's subscription and its way back: cancellation (by the tenant or the operator) and
//! the win-back reactivation.

use axum::extract::{Path, State};
use serde::Serialize;
use tenantry_domain::TenantId;
use tenantry_service::admin::TenantDetail;
use tenantry_service::audit::Actor;
use tenantry_service::tenants::TenantView;
use tenantry_service::{ServiceError, Services};
use utoipa::ToSchema;

use crate::extract::{AdministersAccount, Operator, Tenant};
use crate::problem::{ApiError, Problem};

type ApiResult<T> = Result<T, ApiError>;

/// Cancel the calling tenant's subscription: it is no longer served (403) or billed; its data is kept for
/// `lifecycle.cancelled_retention_days` (win-back offers meanwhile), then erased.
#[utoipa::path(post, path = "/v1/tenant/cancel", tag = "tenant", security(("bearer" = [])),
    responses(
        (status = 200, body = TenantView),
        (status = 409, body = Problem, content_type = "application/problem+json", description = "invalid_transition"),
    ))]
pub async fn cancel(
    State(s): State<Services>,
    Tenant { ctx, .. }: Tenant<AdministersAccount>,
) -> ApiResult<axum::Json<TenantView>> {
    s.cancel(&ctx.tenant_id, Actor::Tenant(&ctx)).await?;
    Ok(axum::Json(s.tenant_view(&ctx).await?))
}

/// Come back after cancelling (before erasure): active again at once, with the discount of the win-back
/// offer received, if any, on the next invoice.
#[utoipa::path(post, path = "/v1/tenant/reactivate", tag = "tenant", security(("bearer" = [])),
    responses(
        (status = 200, body = TenantView),
        (status = 409, body = Problem, content_type = "application/problem+json", description = "invalid_transition"),
    ))]
pub async fn reactivate(
    State(s): State<Services>,
    Tenant { ctx, .. }: Tenant<AdministersAccount>,
) -> ApiResult<axum::Json<TenantView>> {
    s.win_back(&ctx).await?;
    Ok(axum::Json(s.tenant_view(&ctx).await?))
}

/// Cancel a tenant's subscription (the operator's way).
#[utoipa::path(post, path = "/admin/tenants/{id}/cancel", tag = "operator", security(("operator" = [])),
    params(("id" = String, Path, description = "tenant id")),
    responses((status = 200, body = TenantDetail), (status = 409, body = Problem, content_type = "application/problem+json")))]
pub async fn admin_cancel(
    State(s): State<Services>,
    _: Operator,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<TenantDetail>> {
    let tenant_id = TenantId::parse(&id).ok_or_else(|| ServiceError::not_found("tenant"))?;
    s.cancel(&tenant_id, Actor::Operator).await?;
    Ok(axum::Json(s.admin_tenant(&id).await?))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WinBackReport {
    pub offers_sent: i64,
    pub offers_accepted: i64,
}

/// Win-back results: offers sent to cancelled tenants and offers accepted.
#[utoipa::path(get, path = "/admin/win-back", tag = "operator", security(("operator" = [])),
    responses((status = 200, body = WinBackReport)))]
pub async fn win_back_report(State(s): State<Services>, _: Operator) -> ApiResult<axum::Json<WinBackReport>> {
    let stats = s.win_back_stats().await?;
    Ok(axum::Json(WinBackReport { offers_sent: stats.offers_sent, offers_accepted: stats.offers_accepted }))
}
