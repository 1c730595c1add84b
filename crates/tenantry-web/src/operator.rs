//! Operator endpoints for the console's overview, the job queue and the test clock, and Stripe's webhook.

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};
use tenantry_service::admin::Overview;
use tenantry_service::jobs::{ClockView, JobView};
use tenantry_service::revenue::RevenueHistory;
use tenantry_service::stripe::WebhookReceipt;
use tenantry_service::Services;
use utoipa::{IntoParams, ToSchema};

use crate::extract::{Json, Operator};
use crate::problem::{ApiError, Problem};

type ApiResult<T> = Result<T, ApiError>;

/// The operator's overview: tenants by state, the activation funnel, revenue (paid and open invoices), tenants
/// in dunning and the health of the job queue, the notification outbox and Stripe's webhooks.
#[utoipa::path(get, path = "/admin/overview", tag = "operator", security(("operator" = [])),
    responses((status = 200, body = Overview), (status = 401, body = Problem, content_type = "application/problem+json")))]
pub async fn overview(
    State(s): State<Services>,
    _: Operator,
    metrics: axum::Extension<std::sync::Arc<crate::metrics::Metrics>>,
) -> ApiResult<axum::Json<Overview>> {
    let mut overview = s.admin_overview().await?;
    overview.integrations.upstream_model_errors = metrics.upstream_model_errors();
    Ok(axum::Json(overview))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RevenueParams {
    /// How many calendar months, this one included (1 to 36; default 12).
    #[param(minimum = 1, maximum = 36)]
    pub months: Option<u32>,
}

/// Revenue by calendar month (UTC): MRR and its movement (new, expansion, contraction, churn), overage,
/// everything invoiced, and failed payments, from the invoices and the audit trail.
#[utoipa::path(get, path = "/admin/revenue", tag = "operator", security(("operator" = [])), params(RevenueParams),
    responses(
        (status = 200, body = RevenueHistory),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn revenue(
    State(s): State<Services>,
    _: Operator,
    params: Result<Query<RevenueParams>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<axum::Json<RevenueHistory>> {
    let Query(p) = params?;
    Ok(axum::Json(s.revenue_history(p.months.unwrap_or(12)).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdvanceBody {
    /// How far to move the clock, in seconds (1 to 366 days).
    #[schema(minimum = 1, maximum = 31_622_400)]
    #[serde(deserialize_with = "crate::whole::integer")]
    pub seconds: i64,
}

/// Move the test clock forward (only with `server.clock = "test"`) and run every job and dunning step that
/// became due, like Stripe's test clocks. Returns when they have all run.
#[utoipa::path(post, path = "/admin/clock/advance", tag = "operator", security(("operator" = [])),
    request_body = AdvanceBody,
    responses(
        (status = 200, body = ClockView),
        (status = 403, body = Problem, content_type = "application/problem+json", description = "the clock is the system clock"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn advance_clock(
    State(s): State<Services>,
    _: Operator,
    Json(body): Json<AdvanceBody>,
) -> ApiResult<axum::Json<ClockView>> {
    Ok(axum::Json(s.advance_clock(body.seconds).await?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct JobFilter {
    /// `queued`, `running`, `done` or `parked`.
    #[param(pattern = "^(queued|running|done|parked)$")]
    pub state: Option<String>,
    /// Only this tenant's jobs.
    #[param(pattern = r"^ten_[0-9a-f]{32}$")]
    pub tenant_id: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct JobList {
    pub jobs: Vec<JobView>,
}

/// The durable job queue: what is scheduled, running, done, and parked after its last attempt.
#[utoipa::path(get, path = "/admin/jobs", tag = "operator", security(("operator" = [])), params(JobFilter),
    responses((status = 200, body = JobList), (status = 422, body = Problem, content_type = "application/problem+json")))]
pub async fn list_jobs(
    State(s): State<Services>,
    _: Operator,
    filter: Result<Query<JobFilter>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<axum::Json<JobList>> {
    let Query(f) = filter?;
    Ok(axum::Json(JobList { jobs: s.admin_jobs(f.state.as_deref(), f.tenant_id.as_deref()).await? }))
}

/// Put a parked job back in the queue with fresh attempts.
#[utoipa::path(post, path = "/admin/jobs/{id}/requeue", tag = "operator", security(("operator" = [])),
    params(("id" = String, Path, description = "job id")),
    responses((status = 200, body = JobView), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn requeue_job(
    State(s): State<Services>,
    _: Operator,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<JobView>> {
    Ok(axum::Json(s.requeue_job(&id).await?))
}

/// Stripe's webhook: events verified against `billing.stripe.webhook_secret` (`Stripe-Signature`, 300 s
/// tolerance), each handled once; duplicates, stale or unknown events are acknowledged and ignored.
#[utoipa::path(post, path = "/webhooks/stripe", tag = "operations",
    request_body(content = Object, content_type = "application/json", description = "a Stripe event"),
    responses(
        (status = 200, body = WebhookReceipt),
        (status = 400, body = Problem, content_type = "application/problem+json", description = "bad signature or payload"),
        (status = 404, body = Problem, content_type = "application/problem+json", description = "Stripe is not configured"),
    ))]
pub async fn stripe_webhook(
    State(s): State<Services>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<axum::Json<WebhookReceipt>> {
    let signature = headers.get("stripe-signature").and_then(|v| v.to_str().ok());
    Ok(axum::Json(s.stripe_webhook(&body, signature).await?))
}
