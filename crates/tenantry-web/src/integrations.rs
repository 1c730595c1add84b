//! What customers integrate with (API.md "Integrations"): webhook endpoints and their deliveries, usage
//! alerts and prepaid credit. Idempotency keys are a layer of their own (`idempotency`); the spend cap is
//! part of the tenant's config (`PATCH /v1/tenant/config`).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use tenantry_service::alerts::{AlertsView, Threshold};
use tenantry_service::prepaid::{CreditBalance, CreditGrant};
use tenantry_service::webhooks::{CreatedWebhook, DeliveryView, WebhookView};
use tenantry_service::Services;
use utoipa::ToSchema;

use crate::extract::{AdministersAccount, Json, Operator, Tenant};
use crate::problem::{ApiError, Problem};

type ApiResult<T> = Result<T, ApiError>;

/// A webhook event type (schema only: the service checks the names).
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub enum WebhookEventType {
    #[serde(rename = "usage.threshold_reached")]
    UsageThresholdReached,
    #[serde(rename = "invoice.created")]
    InvoiceCreated,
    #[serde(rename = "invoice.paid")]
    InvoicePaid,
    #[serde(rename = "invoice.payment_failed")]
    InvoicePaymentFailed,
    #[serde(rename = "tenant.state_changed")]
    TenantStateChanged,
    #[serde(rename = "document.indexed")]
    DocumentIndexed,
    #[serde(rename = "export.ready")]
    ExportReady,
}

/// A quota meter an alert watches (schema only: the service checks the names).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum AlertMeter {
    Queries,
    Tokens,
    Documents,
    StorageBytes,
}

/// One alert threshold, as `PUT /v1/alerts` takes it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ThresholdBody {
    #[schema(value_type = AlertMeter)]
    pub meter: String,
    #[schema(minimum = 1, maximum = 1000)]
    #[serde(deserialize_with = "crate::whole::integer")]
    pub percent: i64,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewWebhookBody {
    /// Where events are posted: an `https` (or `http`) URL that is not a loopback, private or link-local
    /// address (loopback and private allowed by `webhooks.allow_private_addresses`).
    #[schema(min_length = 1, max_length = 2048, format = "uri")]
    pub url: String,
    #[schema(min_items = 1, value_type = Vec<WebhookEventType>)]
    pub events: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookList {
    pub webhooks: Vec<WebhookView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryList {
    pub deliveries: Vec<DeliveryView>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AlertsBody {
    /// The thresholds to keep (replacing the current ones; empty turns alerts off), at most 32.
    #[schema(max_items = 32)]
    pub thresholds: Vec<ThresholdBody>,
}

/// Register a webhook endpoint; the response is the only time its signing secret is shown. Each delivery
/// is `POST <url>` with `{id, type, created_at, tenant_id, data}` and `Tenantry-Signature: t=…,v1=…`
/// (HMAC-SHA256 of `"<t>.<body>"` with the secret).
#[utoipa::path(post, path = "/v1/webhooks", tag = "integrations", security(("bearer" = [])),
    request_body = NewWebhookBody,
    responses(
        (status = 201, body = CreatedWebhook),
        (status = 409, body = Problem, content_type = "application/problem+json", description = "too many endpoints"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn create_webhook(
    State(s): State<Services>,
    Tenant { ctx, .. }: Tenant<AdministersAccount>,
    Json(body): Json<NewWebhookBody>,
) -> ApiResult<(StatusCode, axum::Json<CreatedWebhook>)> {
    Ok((StatusCode::CREATED, axum::Json(s.create_webhook(&ctx, &body.url, &body.events).await?)))
}

/// The tenant's webhook endpoints (secrets are never shown again).
#[utoipa::path(get, path = "/v1/webhooks", tag = "integrations", security(("bearer" = [])),
    responses((status = 200, body = WebhookList)))]
pub async fn list_webhooks(
    State(s): State<Services>,
    Tenant { ctx, .. }: Tenant<AdministersAccount>,
) -> ApiResult<axum::Json<WebhookList>> {
    Ok(axum::Json(WebhookList { webhooks: s.webhooks(&ctx.tenant_id).await? }))
}

/// Remove a webhook endpoint with its deliveries; nothing more is sent to it.
#[utoipa::path(delete, path = "/v1/webhooks/{id}", tag = "integrations", security(("bearer" = [])),
    params(("id" = String, Path, description = "webhook id")),
    responses((status = 204), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn delete_webhook(
    State(s): State<Services>,
    Tenant { ctx, .. }: Tenant<AdministersAccount>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    s.delete_webhook(&ctx, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The endpoint's latest 100 deliveries, newest first, each with every attempt's outcome.
#[utoipa::path(get, path = "/v1/webhooks/{id}/deliveries", tag = "integrations", security(("bearer" = [])),
    params(("id" = String, Path, description = "webhook id")),
    responses((status = 200, body = DeliveryList), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn list_deliveries(
    State(s): State<Services>,
    Tenant { ctx, .. }: Tenant<AdministersAccount>,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<DeliveryList>> {
    Ok(axum::Json(DeliveryList { deliveries: s.webhook_deliveries(&ctx.tenant_id, &id).await? }))
}

/// Send a delivery again now, whatever became of it (a failed one included).
#[utoipa::path(post, path = "/v1/webhooks/{id}/deliveries/{delivery_id}/resend", tag = "integrations",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "webhook id"), ("delivery_id" = String, Path, description = "delivery id")),
    responses((status = 202), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn resend_delivery(
    State(s): State<Services>,
    Tenant { ctx, .. }: Tenant<AdministersAccount>,
    Path((id, delivery_id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    s.resend_delivery(&ctx, &id, &delivery_id).await?;
    Ok(StatusCode::ACCEPTED)
}

/// The tenant's usage alert thresholds (80 % and 100 % of every quota unless changed) and those that fired
/// this billing period.
#[utoipa::path(get, path = "/v1/alerts", tag = "integrations", security(("bearer" = [])),
    responses((status = 200, body = AlertsView)))]
pub async fn get_alerts(
    State(s): State<Services>,
    Tenant { ctx, .. }: Tenant<AdministersAccount>,
) -> ApiResult<axum::Json<AlertsView>> {
    Ok(axum::Json(s.alerts(&ctx).await?))
}

/// Replace the usage alert thresholds. Each fires once per billing period per meter and percent, as a
/// `usage.threshold_reached` webhook event and an email.
#[utoipa::path(put, path = "/v1/alerts", tag = "integrations", security(("bearer" = [])),
    request_body = AlertsBody,
    responses((status = 200, body = AlertsView), (status = 422, body = Problem, content_type = "application/problem+json")))]
pub async fn put_alerts(
    State(s): State<Services>,
    Tenant { ctx, .. }: Tenant<AdministersAccount>,
    Json(body): Json<AlertsBody>,
) -> ApiResult<axum::Json<AlertsView>> {
    // A percent past `u32` is out of range: 0 makes the service refuse it with the range it accepts.
    let percent = |p: i64| u32::try_from(p).unwrap_or(0);
    let thresholds =
        body.thresholds.into_iter().map(|t| Threshold { meter: t.meter, percent: percent(t.percent) }).collect();
    Ok(axum::Json(s.set_alerts(&ctx, thresholds).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreditGrantBody {
    /// 1 to 1,000,000,000 cents, in the billing currency.
    #[schema(minimum = 1, maximum = 1_000_000_000)]
    #[serde(deserialize_with = "crate::whole::integer")]
    pub amount_cents: i64,
    /// Why (shown to the tenant): 1 to 200 characters, not blank, no control characters.
    #[schema(min_length = 1, max_length = 200, pattern = r"^[^\x00-\x1F\x7F]*[^\s\x00-\x1F\x7F][^\x00-\x1F\x7F]*$")]
    pub reason: String,
    /// When the credit's remainder stops being drawn (RFC 3339, in the future); absent: never.
    #[schema(format = DateTime)]
    pub expires_at: Option<String>,
}

/// The tenant's prepaid credit: the unexpired balance, and each grant with the invoices that drew on it.
#[utoipa::path(get, path = "/v1/credits", tag = "integrations", security(("bearer" = [])),
    responses((status = 200, body = CreditBalance)))]
pub async fn get_credits(
    State(s): State<Services>,
    Tenant { ctx, .. }: Tenant<AdministersAccount>,
) -> ApiResult<axum::Json<CreditBalance>> {
    Ok(axum::Json(s.credit_balance(&ctx.tenant_id).await?))
}

/// Grant a tenant prepaid credit. Every invoice made afterwards draws on it (soonest expiry first) and shows
/// what it drew as a line with a negative amount.
#[utoipa::path(post, path = "/admin/tenants/{id}/credits", tag = "operator", security(("operator" = [])),
    params(("id" = String, Path, description = "tenant id")), request_body = CreditGrantBody,
    responses(
        (status = 201, body = CreditGrant),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn grant_credit(
    State(s): State<Services>,
    _: Operator,
    Path(id): Path<String>,
    Json(body): Json<CreditGrantBody>,
) -> ApiResult<(StatusCode, axum::Json<CreditGrant>)> {
    let grant = s.grant_credit(&id, body.amount_cents, &body.reason, body.expires_at.as_deref()).await?;
    Ok((StatusCode::CREATED, axum::Json(grant)))
}
