//! Usage over time (`GET /v1/usage/timeseries`, and any tenant's for the operator), as JSON for charts or CSV
//! for spreadsheets.

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tenantry_domain::ErrorCode;
use tenantry_service::usage::{Granularity, UsageTimeseries};
use tenantry_service::Services;
use utoipa::{IntoParams, ToSchema};

use crate::extract::{Operator, ReadsAccount, Tenant};
use crate::problem::{ApiError, Problem};

#[derive(Clone, Copy, Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SeriesFormat {
    #[default]
    Json,
    /// `start,meter,model,quantity,cost_micros`, one row per point, with a header row.
    Csv,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TimeseriesParams {
    /// `hour` or `day` (UTC buckets).
    #[param(inline)]
    pub granularity: Granularity,
    /// RFC 3339, rounded down to a bucket; default: start of the current billing period.
    #[param(format = DateTime)]
    pub from: Option<String>,
    /// RFC 3339, rounded up to a bucket; default: now.
    #[param(format = DateTime)]
    pub to: Option<String>,
    /// `json` (default) or `csv`.
    #[param(inline)]
    pub format: Option<SeriesFormat>,
}

/// The tenant's usage per hour or day, per meter and per model. Read from ClickHouse when the deployment has
/// one (with events not yet shipped there taken from the ledger) and from the usage ledger otherwise or when
/// ClickHouse fails: the numbers are the same either way (`source` says which answered). At most 8,784 hourly
/// or 3,660 daily buckets per request.
#[utoipa::path(get, path = "/v1/usage/timeseries", tag = "usage", security(("bearer" = [])),
    params(TimeseriesParams),
    responses(
        (status = 200, description = "The series: JSON, or CSV with `format=csv`", content(
            (UsageTimeseries = "application/json"),
            (String = "text/csv"),
        )),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn timeseries(
    State(s): State<Services>,
    Tenant { ctx, .. }: Tenant<ReadsAccount>,
    params: Result<Query<TimeseriesParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(p) = params?;
    let series = s.usage_timeseries(&ctx, p.granularity, p.from.as_deref(), p.to.as_deref()).await?;
    respond(&series, p.format.unwrap_or_default())
}

/// A tenant's usage per hour or day, as `GET /v1/usage/timeseries` shows it to the tenant.
#[utoipa::path(get, path = "/admin/tenants/{id}/usage/timeseries", tag = "operator", security(("operator" = [])),
    params(("id" = String, Path, description = "tenant id"), TimeseriesParams),
    responses(
        (status = 200, description = "The series: JSON, or CSV with `format=csv`", content(
            (UsageTimeseries = "application/json"),
            (String = "text/csv"),
        )),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn admin_timeseries(
    State(s): State<Services>,
    _: Operator,
    Path(id): Path<String>,
    params: Result<Query<TimeseriesParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(p) = params?;
    let series = s.admin_usage_timeseries(&id, p.granularity, p.from.as_deref(), p.to.as_deref()).await?;
    respond(&series, p.format.unwrap_or_default())
}

fn respond(series: &UsageTimeseries, format: SeriesFormat) -> Result<Response, ApiError> {
    match format {
        SeriesFormat::Json => Ok(axum::Json(series).into_response()),
        SeriesFormat::Csv => {
            let body = to_csv(series).map_err(|e| ApiError::new(ErrorCode::Internal, format!("writing CSV: {e}")))?;
            let mut response = body.into_response();
            let h = response.headers_mut();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/csv; charset=utf-8"));
            h.insert(header::CONTENT_DISPOSITION, HeaderValue::from_static("attachment; filename=\"usage.csv\""));
            Ok(response)
        }
    }
}

fn to_csv(series: &UsageTimeseries) -> Result<Vec<u8>, csv::Error> {
    let mut out = csv::Writer::from_writer(Vec::new());
    out.write_record(["start", "meter", "model", "quantity", "cost_micros"])?;
    for p in &series.points {
        out.write_record([
            p.start.to_rfc3339(),
            p.meter.as_str().to_owned(),
            p.model.clone(),
            p.quantity.to_string(),
            p.cost_micros.to_string(),
        ])?;
    }
    out.into_inner().map_err(|e| e.into_error().into())
}
