//! Operator view of the analytics store: the ledger and ClickHouse side by side.

use axum::extract::{Query, State};
use serde::Deserialize;
use tenantry_service::analytics::Reconciliation;
use tenantry_service::Services;
use utoipa::IntoParams;

use crate::extract::Operator;
use crate::problem::{ApiError, Problem};

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReconcileQuery {
    /// The tenant (`ten_…`).
    pub tenant_id: String,
}

/// A tenant's usage per meter in the ledger (the billing record) and in ClickHouse (analytics), and how many
/// events still wait in the outbox. 404 when no analytics store is configured.
#[utoipa::path(get, path = "/admin/analytics/reconcile", tag = "operator", security(("operator" = [])),
    params(ReconcileQuery),
    responses(
        (status = 200, body = Reconciliation),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json", description = "ClickHouse unreachable"),
    ))]
pub async fn reconcile(
    State(s): State<Services>,
    _: Operator,
    query: Result<Query<ReconcileQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::Json<Reconciliation>, ApiError> {
    let Query(q) = query?;
    Ok(axum::Json(s.reconcile_analytics(&q.tenant_id).await?))
}
