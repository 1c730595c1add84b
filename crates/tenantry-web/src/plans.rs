//! The plan catalogue (`GET /v1/plans`, public) and what a plan change would cost now
//! (`GET /v1/plan/preview`), so a customer sees the proration before confirming `POST /v1/plan`.

use axum::extract::{Query, State};
use serde::Deserialize;
use tenantry_service::plan::{PlanCatalogue, PlanPreview};
use tenantry_service::Services;
use utoipa::IntoParams;

use crate::extract::{ReadsService, Tenant};
use crate::problem::{ApiError, Problem};

/// Every plan on offer: price, trial, models, retrieval modes, quotas, included usage and overage prices.
#[utoipa::path(get, path = "/v1/plans", tag = "public", responses((status = 200, body = PlanCatalogue)))]
pub async fn list_plans(State(s): State<Services>) -> axum::Json<PlanCatalogue> {
    axum::Json(s.plan_catalogue())
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PreviewParams {
    /// The plan to preview a change to.
    pub plan: String,
}

/// What `POST /v1/plan` with this plan would do now: the proration lines it adds to the next invoice and the
/// model and retrieval mode after it. Changes nothing.
#[utoipa::path(get, path = "/v1/plan/preview", tag = "tenant", security(("bearer" = [])), params(PreviewParams),
    responses(
        (status = 200, body = PlanPreview),
        (status = 422, description = "Unknown plan", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn preview_plan(
    State(s): State<Services>,
    Tenant { ctx, .. }: Tenant<ReadsService>,
    params: Result<Query<PreviewParams>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::Json<PlanPreview>, ApiError> {
    let Query(p) = params?;
    Ok(axum::Json(s.preview_plan_change(&ctx, &p.plan).await?))
}
