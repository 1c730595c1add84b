//! The HTTP handlers. Each adapts HTTP to one service call: extract, authenticate through the gateway,
//! call, shape the response. No business rules live here.

use axum::extract::{FromRequest, Multipart, Path, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tenantry_billing::InvoiceStatus;
use tenantry_domain::lifecycle::LifecycleEvent;
use tenantry_domain::{ErrorCode, TenantContext};
use tenantry_service::admin::{TenantDetail, TenantPage, TenantQuery};
use tenantry_service::api_keys::{CreatedKey, KeyView};
use tenantry_service::billing::{InvoiceView, UpcomingInvoice};
use tenantry_service::documents::{ArrivingUpload, DocumentView, Upload, Uploaded};
use tenantry_service::erasure::{ErasureStarted, ErasureView};
use tenantry_service::export::{ExportDownload, ExportStarted};
use tenantry_service::plan::PlanChanged;
use tenantry_service::query::{QueryEvent, QueryRequest, QueryResult};
use tenantry_service::quota::QuotaReport;
use tenantry_service::tenants::{ConfigChanged, ConfigUpdate, SignupRequest, SignupResult, TenantView};
use tenantry_service::usage::UsageReport;
use tenantry_service::Services;
use utoipa::{IntoParams, ToSchema};

use crate::extract::{
    AdministersAccount, AdministersService, AsTenant, Asks, Ingests, Json, Operator, ReadsAccount, ReadsService,
    ReadsTenant, Tenant,
};
use crate::problem::{ApiError, Problem};

type ApiResult<T> = Result<T, ApiError>;

// ---- public -------------------------------------------------------------------------------------------

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignupBody {
    /// An email address (`local@domain`), compared without case.
    #[schema(min_length = 3, max_length = 254)]
    pub email: String,
    /// 1 to 200 characters once surrounding white space is trimmed.
    #[schema(min_length = 1, max_length = 200)]
    pub organization: String,
    /// A plan name from the operator's catalogue, e.g. `trial`, `starter`, `pro`.
    #[schema(min_length = 1)]
    pub plan: String,
}

/// Sign up an organisation: creates the tenant and its first API key (shown once).
#[utoipa::path(post, path = "/v1/signup", tag = "public", request_body = SignupBody,
    responses(
        (status = 201, description = "Tenant created", body = SignupResult),
        (status = 409, description = "Email already registered", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid input", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn signup(
    State(s): State<Services>,
    Json(body): Json<SignupBody>,
) -> ApiResult<(StatusCode, axum::Json<SignupResult>)> {
    let result =
        s.signup(SignupRequest { email: body.email, organization: body.organization, plan: body.plan }).await?;
    Ok((StatusCode::CREATED, axum::Json(result)))
}

// ---- tenant -------------------------------------------------------------------------------------------

#[derive(Debug, Serialize, ToSchema)]
pub struct InvoiceList {
    pub invoices: Vec<InvoiceView>,
}

/// The tenant's invoices, newest first, rated from the usage ledger.
#[utoipa::path(get, path = "/v1/invoices", tag = "usage", security(("bearer" = [])),
    responses((status = 200, body = InvoiceList), (status = 401, body = Problem, content_type = "application/problem+json")))]
pub async fn invoices(
    State(s): State<Services>,
    Tenant { ctx, .. }: Tenant<ReadsAccount>,
) -> ApiResult<axum::Json<InvoiceList>> {
    Ok(axum::Json(InvoiceList { invoices: s.invoices(&ctx).await? }))
}

/// What the current period's invoice holds so far: the usage to date, the next base price and pending
/// prorations, as the period's close would bill them now (before prepaid credit). Changes nothing.
#[utoipa::path(get, path = "/v1/invoices/upcoming", tag = "usage", security(("bearer" = [])),
    responses((status = 200, body = UpcomingInvoice), (status = 401, body = Problem, content_type = "application/problem+json")))]
pub async fn upcoming_invoice(
    State(s): State<Services>,
    Tenant { ctx, .. }: Tenant<ReadsAccount>,
) -> ApiResult<axum::Json<UpcomingInvoice>> {
    Ok(axum::Json(s.upcoming_invoice(&ctx).await?))
}

/// Export everything Tenantry holds about the tenant as a `tar.gz` archive with a manifest (format
/// `tenantry-export/1`); download it from `GET /v1/export/{id}` until it expires.
#[utoipa::path(post, path = "/v1/export", tag = "tenant", security(("bearer" = [])),
    responses((status = 202, body = ExportStarted), (status = 401, body = Problem, content_type = "application/problem+json")))]
pub async fn start_export(
    State(s): State<Services>,
    Tenant { ctx, .. }: Tenant<AdministersAccount>,
) -> ApiResult<(StatusCode, axum::Json<ExportStarted>)> {
    Ok((StatusCode::ACCEPTED, axum::Json(s.start_export(&ctx).await?)))
}

/// An export: `202` with its status while the archive is built, then the archive (`application/gzip`; its
/// SHA-256 is in `X-Export-Sha256`) until it expires.
#[utoipa::path(get, path = "/v1/export/{id}", tag = "tenant", security(("bearer" = [])),
    params(("id" = String, Path, description = "export id")),
    responses(
        (status = 200, description = "The archive", content_type = "application/gzip", body = Vec<u8>),
        (status = 202, description = "Still being built (Retry-After)", body = ExportStarted),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_export(
    State(s): State<Services>,
    Tenant { ctx, .. }: Tenant<AdministersAccount>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let (row, bytes) = match s.export_archive(&ctx, &id).await? {
        ExportDownload::Ready(row, bytes) => (row, bytes),
        ExportDownload::Pending(status) => {
            let mut response = (StatusCode::ACCEPTED, axum::Json(status)).into_response();
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return Ok(response);
        }
    };
    let disposition = format!("attachment; filename=\"tenantry-{}.tar.gz\"", row.id);
    let mut response = (StatusCode::OK, bytes).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/gzip"));
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&row.sha256) {
        h.insert("x-export-sha256", v);
    }
    Ok(response)
}

/// GDPR erasure of the calling tenant: its documents, indexes, uploads, keys and profile are removed (keys
/// answer 401 from now on); `GET /admin/erasures/{id}` shows the deletion certificate.
#[utoipa::path(delete, path = "/v1/tenant", tag = "tenant", security(("bearer" = [])),
    responses(
        (status = 202, body = ErasureStarted),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn delete_tenant(
    State(s): State<Services>,
    Tenant { ctx, .. }: Tenant<AdministersAccount>,
) -> ApiResult<(StatusCode, axum::Json<ErasureStarted>)> {
    Ok((StatusCode::ACCEPTED, axum::Json(s.erase_tenant(&ctx).await?)))
}

/// The calling tenant: state, plan and configuration.
#[utoipa::path(get, path = "/v1/tenant", tag = "tenant", security(("bearer" = [])),
    responses((status = 200, body = TenantView), (status = 401, body = Problem, content_type = "application/problem+json")))]
pub async fn get_tenant(State(s): State<Services>, Tenant { ctx, .. }: Tenant<ReadsTenant>) -> ApiResult<Response> {
    let view = s.tenant_view(&ctx).await?;
    Ok((StatusCode::OK, axum::Json(view)).into_response())
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfigBody {
    /// A model the tenant's plan offers.
    #[schema(min_length = 1)]
    pub model: Option<String>,
    /// A retrieval mode the tenant's plan offers.
    #[schema(min_length = 1)]
    pub retrieval_mode: Option<String>,
    /// At most 8,000 characters.
    #[schema(max_length = 8000)]
    pub system_prompt: Option<String>,
    /// The spend cap: the most the period's overage may cost, in cents (0 to 1,000,000,000); `null` removes
    /// it. A request that would bring the overage above it is refused with 429 `quota_exceeded`.
    #[serde(default, deserialize_with = "crate::whole::nullable_integer")]
    #[schema(value_type = Option<i64>, minimum = 0, maximum = 1_000_000_000)]
    pub overage_limit_cents: Option<Option<i64>>,
}

/// Change the tenant's model, retrieval mode or system prompt (within what the plan allows).
#[utoipa::path(patch, path = "/v1/tenant/config", tag = "tenant", security(("bearer" = [])), request_body = ConfigBody,
    responses((status = 200, body = ConfigChanged, description = "The new config, beside the tenant (config included) as `GET /v1/tenant` shows it"), (status = 422, description = "Not allowed by the plan", body = Problem, content_type = "application/problem+json")))]
pub async fn patch_config(
    State(s): State<Services>,
    Tenant { ctx, .. }: Tenant<AdministersService>,
    Json(body): Json<ConfigBody>,
) -> ApiResult<Response> {
    let update = ConfigUpdate {
        model: body.model,
        retrieval_mode: body.retrieval_mode,
        system_prompt: body.system_prompt,
        overage_limit_cents: body.overage_limit_cents,
    };
    let tenant = s.update_config(&ctx, update).await?;
    Ok(axum::Json(ConfigChanged { config: tenant.config.clone(), tenant }).into_response())
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanBody {
    /// A plan name from the operator's catalogue.
    #[schema(min_length = 1)]
    pub plan: String,
}

/// Change the tenant's plan, effective at once: the base price is prorated for the rest of the current period
/// (a credit for the old plan's unused time, a charge for the new plan's; nothing while trialing), and both go
/// on the invoice that closes the period. The new plan's quotas apply from the next request; a model or
/// retrieval mode it does not offer is reset to its default. The current plan again is a no-op with a zero
/// proration. Allowed while `trialing`, `active` or `past_due`; other states answer as every tenant endpoint
/// does (API.md's state table: `pending_payment` and `suspended` 402, `cancelled` 403, `provisioning` 503).
/// A concurrent change answers 409 `transition_in_progress`.
#[utoipa::path(post, path = "/v1/plan", tag = "tenant", security(("bearer" = [])), request_body = PlanBody,
    responses(
        (status = 200, body = PlanChanged),
        (status = 202, description = "The new plan needs the tenant's vector index built first: served on the old \
            plan until a job switches it (`pending_plan`)", body = PlanChanged),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 402, description = "Suspended for non-payment, or the first payment is pending", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Cancelled, or the key lacks the `admin` scope", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`transition_in_progress` (another change won; retry), or `invalid_transition` \
            if the state changed under the request", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Unknown plan", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn change_plan(
    State(s): State<Services>,
    Tenant { ctx, .. }: Tenant<AdministersService>,
    Json(body): Json<PlanBody>,
) -> ApiResult<Response> {
    let changed = s.change_plan(&ctx, &body.plan).await?;
    let status = if changed.pending_plan.is_some() { StatusCode::ACCEPTED } else { StatusCode::OK };
    let mut response = (status, axum::Json(changed)).into_response();
    // The quota headers are the new plan's.
    response.extensions_mut().insert(AsTenant(s.refresh_context(&ctx).await?));
    Ok(response)
}

// ---- documents ----------------------------------------------------------------------------------------

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DocumentBody {
    /// At most 500 characters, no control characters.
    #[schema(max_length = 500)]
    pub title: Option<String>,
    /// The document's text: not blank.
    #[schema(min_length = 1)]
    pub text: String,
    /// `text/plain` (default) or `text/markdown`.
    pub content_type: Option<String>,
}

/// The multipart form for a file upload.
#[derive(Debug, ToSchema)]
#[allow(dead_code)] // describes the form for OpenAPI; parsed field by field
pub struct DocumentForm {
    /// The document: PDF, Markdown, HTML or text, typed by its content type or file extension.
    #[schema(value_type = String, format = Binary)]
    pub file: Vec<u8>,
    pub title: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DocumentList {
    pub documents: Vec<DocumentView>,
}

/// Upload a document: JSON `{title, text}` or `multipart/form-data` with a `file` part (and optional `title`).
/// An upload identical to an existing document is an idempotent replay: the same 201 and the existing
/// document, marked by the `Tenantry-Duplicate-Of` header (its id); nothing is stored or counted again.
#[utoipa::path(post, path = "/v1/documents", tag = "documents", security(("bearer" = [])),
    request_body(content(
        (DocumentBody = "application/json"),
        (DocumentForm = "multipart/form-data"),
    )),
    responses(
        (status = 201, body = DocumentView, headers(("Tenantry-Duplicate-Of" = String,
            description = "Set when identical content was already uploaded: the existing document's id, which the body is"))),
        (status = 413, body = Problem, content_type = "application/problem+json"),
        (status = 415, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn upload_document(
    State(s): State<Services>,
    Tenant { ctx, .. }: Tenant<Ingests>,
    req: Request,
) -> ApiResult<Response> {
    let content_type =
        req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_ascii_lowercase();
    let upload = if content_type.starts_with("application/json") {
        let Json(body) = Json::<DocumentBody>::from_request(req, &()).await?;
        if body.text.trim().is_empty() {
            return Err(ApiError::new(ErrorCode::ValidationFailed, "text must not be empty"));
        }
        Upload {
            title: body.title,
            file_name: None,
            content_type: Some(body.content_type.unwrap_or_else(|| "text/plain".into())),
            bytes: body.text.into_bytes(),
        }
    } else if content_type.starts_with("multipart/form-data") {
        let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse().ok());
        let form =
            Multipart::from_request(req, &()).await.map_err(|e| ApiError::new(ErrorCode::BadRequest, e.body_text()))?;
        multipart_upload(&ctx, form, declared.unwrap_or(0)).await?
    } else {
        return Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "send application/json {title, text} or multipart/form-data with a file part",
        ));
    };
    match s.upload_document(&ctx, upload).await? {
        Uploaded::Created(d) => Ok((StatusCode::CREATED, axum::Json(d)).into_response()),
        Uploaded::Duplicate(d) => {
            let id = HeaderValue::from_str(d.document_id.as_str()).ok();
            let mut response = (StatusCode::CREATED, axum::Json(d)).into_response();
            if let Some(id) = id {
                response.headers_mut().insert("tenantry-duplicate-of", id);
            }
            Ok(response)
        }
    }
}

/// The form's file and title. The file is read into one buffer the size of the whole body (`declared`, the
/// body's `Content-Length`, which the body guard has held to the limit), so a large upload is never copied
/// or regrown on its way in; a file sure to pass the plan's text limit is refused before the rest is read.
async fn multipart_upload(ctx: &TenantContext, mut form: Multipart, declared: usize) -> ApiResult<Upload> {
    let mut title = None;
    let mut file = None;
    while let Some(mut field) = form.next_field().await? {
        match field.name() {
            Some("file") if file.is_some() => {
                return Err(ApiError::new(
                    ErrorCode::ValidationFailed,
                    "the form has more than one file part; upload one document per request",
                ));
            }
            Some("title") if title.is_some() => {
                return Err(ApiError::new(ErrorCode::ValidationFailed, "the form has more than one title part"));
            }
            Some("file") => {
                let file_name = field.file_name().map(str::to_owned);
                let content_type = field.content_type().map(str::to_owned);
                let mut arriving = ArrivingUpload::new(ctx, content_type.as_deref(), file_name.as_deref());
                let mut bytes = Vec::with_capacity(declared);
                while let Some(chunk) = field.chunk().await? {
                    arriving.arrived(&chunk)?;
                    bytes.extend_from_slice(&chunk);
                }
                file = Some(Upload { title: None, file_name, content_type, bytes });
            }
            Some("title") => title = Some(field.text().await?),
            _ => {}
        }
    }
    let mut upload = file.ok_or_else(|| ApiError::new(ErrorCode::ValidationFailed, "the form has no file part"))?;
    upload.title = title;
    Ok(upload)
}

/// The tenant's documents.
#[utoipa::path(get, path = "/v1/documents", tag = "documents", security(("bearer" = [])),
    responses((status = 200, body = DocumentList)))]
pub async fn list_documents(
    State(s): State<Services>,
    Tenant { ctx, .. }: Tenant<ReadsService>,
) -> ApiResult<Response> {
    let list = DocumentList { documents: s.list_documents(&ctx).await? };
    Ok((StatusCode::OK, axum::Json(list)).into_response())
}

/// One of the tenant's documents. Another tenant's id answers 404.
#[utoipa::path(get, path = "/v1/documents/{id}", tag = "documents", security(("bearer" = [])),
    params(("id" = String, Path, description = "document id")),
    responses((status = 200, body = DocumentView), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn get_document(
    State(s): State<Services>,
    Tenant { ctx, .. }: Tenant<ReadsService>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let doc = s.get_document(&ctx, &id).await?;
    Ok((StatusCode::OK, axum::Json(doc)).into_response())
}

/// Delete a document from the database, the index and blob storage.
#[utoipa::path(delete, path = "/v1/documents/{id}", tag = "documents", security(("bearer" = [])),
    params(("id" = String, Path, description = "document id")),
    responses((status = 204), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn delete_document(
    State(s): State<Services>,
    Tenant { ctx, .. }: Tenant<Ingests>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    s.delete_document(&ctx, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- query --------------------------------------------------------------------------------------------

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QueryBody {
    /// The question: not blank, at most 8,000 characters.
    #[schema(min_length = 1, max_length = 8000)]
    pub question: String,
    /// Passages to retrieve (1–50, default 5).
    #[schema(minimum = 1, maximum = 50)]
    #[serde(default, deserialize_with = "crate::whole::optional_integer")]
    pub top_k: Option<i64>,
    /// Server-sent events instead of one JSON body.
    pub stream: Option<bool>,
}

/// One server-sent event of a streamed answer, as an SSE parser reads it: its `event` name (absent for
/// the OpenAI-compatible streams) and its `data`, a JSON text (or `[DONE]`).
#[derive(Debug, Serialize, ToSchema)]
pub struct ServerSentEvent {
    pub event: Option<String>,
    pub data: String,
    pub id: Option<String>,
}

/// Ask a question over the tenant's documents, with the tenant's model, prompt and retrieval mode.
#[utoipa::path(post, path = "/v1/query", tag = "query", security(("bearer" = [])), request_body = QueryBody,
    responses(
        (status = 200, description = "The answer; with `stream: true`, server-sent events `token`, `citations`, \
            `usage`, `done` (the whole result) or `error` (a problem)",
            content((QueryResult = "application/json"), (ServerSentEvent = "text/event-stream"))),
        (status = 400, description = "`context_length_exceeded`: the question and the answer's allowance do not fit \
            in the model's context window", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
        (status = 429, body = Problem, content_type = "application/problem+json"),
        (status = 502, body = Problem, content_type = "application/problem+json"),
        (status = 504, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn query(
    State(s): State<Services>,
    Tenant { ctx, .. }: Tenant<Asks>,
    Json(body): Json<QueryBody>,
) -> ApiResult<Response> {
    let request =
        QueryRequest { top_k: body.top_k.map(|k| usize::try_from(k).unwrap_or(0)), ..QueryRequest::new(body.question) };
    if body.stream != Some(true) {
        let result = s.query(&ctx, &request).await?;
        return Ok((StatusCode::OK, axum::Json(result)).into_response());
    }
    let events = s.query_stream(&ctx, &request).await?.flat_map(|event| futures::stream::iter(query_sse(event)));
    let sse = Sse::new(events.map(Ok::<_, std::convert::Infallible>)).keep_alive(KeepAlive::default());
    Ok(sse.into_response())
}

/// The server-sent events of a streamed `/v1/query`: `token` events (`{text}`), then `citations`, `usage`
/// and `done` (the whole result, as the non-streamed response), or one `error` (a problem+json body).
fn query_sse(event: QueryEvent) -> Vec<Event> {
    let json = |name: &str, value: serde_json::Value| Event::default().event(name).data(value.to_string());
    match event {
        QueryEvent::Token(text) => vec![json("token", serde_json::json!({ "text": text }))],
        // `/v1/query` offers the model no tools.
        QueryEvent::ToolCalls(_) => Vec::new(),
        QueryEvent::Finished(result) => vec![
            json("citations", serde_json::json!({ "citations": result.citations })),
            json("usage", serde_json::json!(result.usage)),
            json("done", serde_json::json!(result)),
        ],
        QueryEvent::Failed(e) => {
            vec![json("error", serde_json::json!(Problem::of(e.code, e.detail)))]
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UsageParams {
    /// RFC 3339; default: start of the current billing period.
    #[param(format = DateTime)]
    pub from: Option<String>,
    /// RFC 3339; default: end of the current billing period.
    #[param(format = DateTime)]
    pub to: Option<String>,
}

/// Usage from the ledger: totals and a breakdown by the model that ran.
#[utoipa::path(get, path = "/v1/usage", tag = "usage", security(("bearer" = [])), params(UsageParams),
    responses((status = 200, body = UsageReport), (status = 422, body = Problem, content_type = "application/problem+json")))]
pub async fn usage(
    State(s): State<Services>,
    Tenant { ctx, .. }: Tenant<ReadsService>,
    params: Result<Query<UsageParams>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    let Query(p) = params?;
    let report = s.usage(&ctx, p.from.as_deref(), p.to.as_deref()).await?;
    Ok((StatusCode::OK, axum::Json(report)).into_response())
}

/// Quota limits, settled usage (from the ledger), reservations in flight and what remains this period.
#[utoipa::path(get, path = "/v1/quotas", tag = "usage", security(("bearer" = [])),
    responses((status = 200, body = QuotaReport)))]
pub async fn quotas(State(s): State<Services>, Tenant { ctx, .. }: Tenant<ReadsService>) -> ApiResult<Response> {
    let report = s.quotas(&ctx).await?;
    Ok((StatusCode::OK, axum::Json(report)).into_response())
}

// ---- keys ---------------------------------------------------------------------------------------------

#[derive(Debug, Serialize, ToSchema)]
pub struct KeyList {
    pub keys: Vec<KeyView>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewKeyBody {
    /// 1 to 100 characters once surrounding white space is trimmed.
    #[schema(min_length = 1, max_length = 100)]
    pub name: String,
    /// Any of `query`, `ingest`, `admin`; default all.
    #[schema(value_type = Option<Vec<KeyScopeName>>, min_items = 1)]
    pub scopes: Option<Vec<String>>,
}

/// A key scope, as `POST /v1/keys` names it (schema only: the service parses the names).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum KeyScopeName {
    Query,
    Ingest,
    Admin,
}

/// The tenant's API keys (metadata only; secrets are never shown again).
#[utoipa::path(get, path = "/v1/keys", tag = "keys", security(("bearer" = [])), responses((status = 200, body = KeyList)))]
pub async fn list_keys(
    State(s): State<Services>,
    Tenant { ctx, .. }: Tenant<AdministersService>,
) -> ApiResult<Response> {
    let keys = KeyList { keys: s.list_keys(&ctx).await? };
    Ok((StatusCode::OK, axum::Json(keys)).into_response())
}

/// Create an API key; the response is the only time it is shown.
#[utoipa::path(post, path = "/v1/keys", tag = "keys", security(("bearer" = [])), request_body = NewKeyBody,
    responses((status = 201, body = CreatedKey), (status = 422, body = Problem, content_type = "application/problem+json")))]
pub async fn create_key(
    State(s): State<Services>,
    Tenant { ctx, .. }: Tenant<AdministersService>,
    Json(body): Json<NewKeyBody>,
) -> ApiResult<Response> {
    let created = s.create_key(&ctx, &body.name, body.scopes).await?;
    Ok((StatusCode::CREATED, axum::Json(created)).into_response())
}

/// Revoke an API key; it stops working on the next request.
#[utoipa::path(delete, path = "/v1/keys/{id}", tag = "keys", security(("bearer" = [])),
    params(("id" = String, Path, description = "key id")),
    responses((status = 204), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn revoke_key(
    State(s): State<Services>,
    Tenant { ctx, .. }: Tenant<AdministersService>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    s.revoke_key(&ctx, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Names the key to revoke on `DELETE /v1/keys`, in the query or a JSON body.
#[derive(Debug, Default, Deserialize, IntoParams, ToSchema)]
#[into_params(parameter_in = Query)]
pub struct KeySelector {
    /// The key's `key_id`, as `GET /v1/keys` lists it (`id` is accepted too).
    #[serde(alias = "id")]
    pub key_id: Option<String>,
}

/// Revoke an API key named by `?key_id=` or a JSON body `{"key_id": …}`: the same as `DELETE /v1/keys/{id}`,
/// for clients that address the collection, as API.md's `GET|POST|DELETE /v1/keys` reads.
#[utoipa::path(delete, path = "/v1/keys", tag = "keys", security(("bearer" = [])), params(KeySelector),
    request_body(content = Option<KeySelector>, description = "Instead of the query parameter"),
    responses((status = 204), (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "No key named, or the body is not `{\"key_id\": …}`", body = Problem, content_type = "application/problem+json")))]
pub async fn revoke_named_key(
    State(s): State<Services>,
    Tenant { ctx, .. }: Tenant<AdministersService>,
    selector: Result<Query<KeySelector>, axum::extract::rejection::QueryRejection>,
    body: axum::body::Bytes,
) -> ApiResult<StatusCode> {
    let Query(selector) = selector?;
    let in_body = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        let named: KeySelector = serde_json::from_slice(&body).map_err(|e| {
            ApiError::new(ErrorCode::ValidationFailed, format!("the body must be {{\"key_id\": \"…\"}}: {e}"))
        })?;
        named.key_id
    };
    let id = selector.key_id.or(in_body).ok_or_else(|| {
        ApiError::new(
            ErrorCode::ValidationFailed,
            "name the key to revoke: DELETE /v1/keys/{id}, DELETE /v1/keys?key_id=…, or a body {\"key_id\": …}",
        )
    })?;
    s.revoke_key(&ctx, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- operator -----------------------------------------------------------------------------------------

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TenantFilter {
    /// Only tenants in this state.
    #[param(pattern = "^(pending_payment|provisioning|trialing|active|past_due|suspended|cancelled|erased)$")]
    pub state: Option<String>,
    /// Part of the organisation or email (any case), or a whole tenant id.
    pub q: Option<String>,
    /// Only tenants on this plan.
    pub plan: Option<String>,
    /// `created_at` (default, oldest first), `-created_at`, `organization`, `state` or `plan`.
    #[param(pattern = "^(-?created_at|organization|state|plan)$")]
    pub sort: Option<String>,
    /// A page of at most this many (1 to 500); without it, every match.
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
    /// How many matches to skip (with `limit`).
    #[param(minimum = 0)]
    pub offset: Option<i64>,
}

/// The tenants: all of them, or those matching a search, a state and a plan, sorted and paged; `total` counts
/// every match.
#[utoipa::path(get, path = "/admin/tenants", tag = "operator", security(("operator" = [])), params(TenantFilter),
    responses(
        (status = 200, body = TenantPage),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn admin_tenants(
    State(s): State<Services>,
    _: Operator,
    filter: Result<Query<TenantFilter>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<axum::Json<TenantPage>> {
    let Query(f) = filter?;
    let query = TenantQuery { q: f.q, state: f.state, plan: f.plan, sort: f.sort, limit: f.limit, offset: f.offset };
    Ok(axum::Json(s.admin_tenants(&query).await?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditFilter {
    /// Only this tenant's entries.
    #[param(pattern = r"^ten_[0-9a-f]{32}$")]
    pub tenant_id: Option<String>,
    /// Entries after this sequence number (for paging; default 0).
    pub after: Option<i64>,
    /// At most this many entries (1–1000, default 100).
    pub limit: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditList {
    /// Oldest first; each entry carries `prev_hash` (the hash of the entry before it) and its own `hash`.
    #[schema(value_type = Vec<Object>)]
    pub entries: Vec<tenantry_service::audit::AuditEntry>,
}

/// The hash-chained audit trail: key changes, config changes, lifecycle transitions, signups, operator actions.
#[utoipa::path(get, path = "/admin/audit", tag = "operator", security(("operator" = [])), params(AuditFilter),
    responses((status = 200, body = AuditList), (status = 401, body = Problem, content_type = "application/problem+json")))]
pub async fn admin_audit(
    State(s): State<Services>,
    _: Operator,
    filter: Result<Query<AuditFilter>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<axum::Json<AuditList>> {
    let Query(f) = filter?;
    let entries = s.audit_log(f.tenant_id.as_deref(), f.after.unwrap_or(0), f.limit.unwrap_or(100)).await?;
    Ok(axum::Json(AuditList { entries }))
}

/// Close the current billing period of every billable tenant now: rate its usage from the ledger and open an
/// invoice (overage in arrears, the next period's base price in advance). Closing twice makes nothing new.
#[utoipa::path(post, path = "/admin/billing/close-period", tag = "operator", security(("operator" = [])),
    responses((status = 200, body = InvoiceList), (status = 401, body = Problem, content_type = "application/problem+json")))]
pub async fn admin_close_period(State(s): State<Services>, _: Operator) -> ApiResult<axum::Json<InvoiceList>> {
    Ok(axum::Json(InvoiceList { invoices: s.close_periods().await? }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PaymentBody {
    /// `succeeded` or `failed`.
    #[schema(pattern = "^(succeeded|failed)$")]
    pub outcome: String,
}

/// The manual provider's payment report for an open invoice.
#[utoipa::path(post, path = "/admin/invoices/{id}/payment", tag = "operator", security(("operator" = [])),
    params(("id" = String, Path, description = "invoice id")), request_body = PaymentBody,
    responses(
        (status = 200, body = InvoiceView),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn admin_payment(
    State(s): State<Services>,
    _: Operator,
    Path(id): Path<String>,
    Json(body): Json<PaymentBody>,
) -> ApiResult<axum::Json<InvoiceView>> {
    Ok(axum::Json(s.report_payment(&id, &body.outcome).await?))
}

/// Voids an unpaid (open or uncollectible) invoice: nothing is owed any more. A tenant in dunning for it
/// alone is served again. With Stripe, Stripe's copy is voided first.
#[utoipa::path(post, path = "/admin/invoices/{id}/void", tag = "operator", security(("operator" = [])),
    params(("id" = String, Path, description = "invoice id")),
    responses(
        (status = 200, body = InvoiceView),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json"),
        (status = 502, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn admin_void_invoice(
    State(s): State<Services>,
    _: Operator,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<InvoiceView>> {
    Ok(axum::Json(s.close_unpaid_invoice(&id, InvoiceStatus::Void).await?))
}

/// Writes an open invoice off as uncollectible: still owed (dunning goes on, a late payment is taken), no
/// longer expected. With Stripe, Stripe's copy is marked uncollectible first.
#[utoipa::path(post, path = "/admin/invoices/{id}/mark-uncollectible", tag = "operator", security(("operator" = [])),
    params(("id" = String, Path, description = "invoice id")),
    responses(
        (status = 200, body = InvoiceView),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json"),
        (status = 502, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn admin_mark_uncollectible(
    State(s): State<Services>,
    _: Operator,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<InvoiceView>> {
    Ok(axum::Json(s.close_unpaid_invoice(&id, InvoiceStatus::Uncollectible).await?))
}

/// A deletion certificate: what an erasure removed from which store, with counts, times and a digest.
#[utoipa::path(get, path = "/admin/erasures/{id}", tag = "operator", security(("operator" = [])),
    params(("id" = String, Path, description = "erasure id")),
    responses((status = 200, body = ErasureView), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn admin_erasure(
    State(s): State<Services>,
    _: Operator,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<ErasureView>> {
    Ok(axum::Json(s.erasure_view(&id).await?))
}

/// One tenant.
#[utoipa::path(get, path = "/admin/tenants/{id}", tag = "operator", security(("operator" = [])),
    params(("id" = String, Path, description = "tenant id")),
    responses((status = 200, body = TenantDetail), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn admin_tenant(
    State(s): State<Services>,
    _: Operator,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<TenantDetail>> {
    Ok(axum::Json(s.admin_tenant(&id).await?))
}

/// Suspend a tenant: its next request answers 402.
#[utoipa::path(post, path = "/admin/tenants/{id}/suspend", tag = "operator", security(("operator" = [])),
    params(("id" = String, Path, description = "tenant id")),
    responses((status = 200, body = TenantDetail), (status = 409, body = Problem, content_type = "application/problem+json")))]
pub async fn admin_suspend(
    State(s): State<Services>,
    _: Operator,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<TenantDetail>> {
    Ok(axum::Json(s.apply_lifecycle(&id, LifecycleEvent::OperatorSuspended).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TrialBody {
    /// Days added to the trial, from when it ends now (1 to 90).
    #[schema(minimum = 1, maximum = 90)]
    #[serde(deserialize_with = "crate::whole::integer")]
    pub days: i64,
}

/// Extend a trialing tenant's trial: it ends `days` later, and is billed then.
#[utoipa::path(post, path = "/admin/tenants/{id}/trial", tag = "operator", security(("operator" = [])),
    params(("id" = String, Path, description = "tenant id")), request_body = TrialBody,
    responses(
        (status = 200, body = TenantDetail),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not in a trial", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn admin_extend_trial(
    State(s): State<Services>,
    _: Operator,
    Path(id): Path<String>,
    Json(body): Json<TrialBody>,
) -> ApiResult<axum::Json<TenantDetail>> {
    Ok(axum::Json(s.extend_trial(&id, body.days).await?))
}

/// Reactivate a suspended tenant.
#[utoipa::path(post, path = "/admin/tenants/{id}/reactivate", tag = "operator", security(("operator" = [])),
    params(("id" = String, Path, description = "tenant id")),
    responses((status = 200, body = TenantDetail), (status = 409, body = Problem, content_type = "application/problem+json")))]
pub async fn admin_reactivate(
    State(s): State<Services>,
    _: Operator,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<TenantDetail>> {
    Ok(axum::Json(s.apply_lifecycle(&id, LifecycleEvent::OperatorReactivated).await?))
}

// ---- operations ---------------------------------------------------------------------------------------

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    pub status: &'static str,
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, body = Health)))]
pub async fn healthz() -> axum::Json<Health> {
    axum::Json(Health { status: "ok" })
}

/// Readiness: the database answers.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, body = Health), (status = 503, body = Problem, content_type = "application/problem+json")))]
pub async fn readyz(State(s): State<Services>) -> ApiResult<axum::Json<Health>> {
    if s.ready().await {
        Ok(axum::Json(Health { status: "ready" }))
    } else {
        Err(ApiError::new(ErrorCode::Unavailable, "the database is not reachable"))
    }
}

pub async fn not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no such endpoint")
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::new(ErrorCode::MethodNotAllowed, "this endpoint does not accept that method")
}
