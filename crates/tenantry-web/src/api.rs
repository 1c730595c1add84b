//! The HTTP handlers. Each adapts HTTP to one service call: extract, authenticate through the gateway,
//! call, shape the response. No business rules live here.

use axum::extract::{FromRequest, Multipart, Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use serde::{Deserialize, Serialize};
use tenantry_domain::lifecycle::EndpointClass;
use tenantry_domain::{ErrorCode, RequestId, TenantContext};
use tenantry_service::documents::{DocumentView, Upload, Uploaded};
use tenantry_service::gateway::Scope;
use tenantry_service::query::QueryResult;
use tenantry_service::tenants::{ConfigUpdate, SignupRequest, SignupResult, TenantView};
use tenantry_service::usage::UsageReport;
use tenantry_service::Services;
use utoipa::{IntoParams, ToSchema};

use crate::extract::{bearer, Json};
use crate::problem::{ApiError, Problem};

type ApiResult<T> = Result<T, ApiError>;

async fn tenant(
    services: &Services,
    headers: &HeaderMap,
    request_id: RequestId,
    class: EndpointClass,
    scope: Scope,
) -> ApiResult<TenantContext> {
    Ok(services
        .authenticate(bearer(headers), request_id, class, scope)
        .await?)
}

// ---- public -------------------------------------------------------------------------------------------

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignupBody {
    pub email: String,
    pub organization: String,
    /// A plan name from the operator's catalogue, e.g. `trial`, `starter`, `pro`.
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
    let result = s
        .signup(SignupRequest {
            email: body.email,
            organization: body.organization,
            plan: body.plan,
        })
        .await?;
    Ok((StatusCode::CREATED, axum::Json(result)))
}

// ---- tenant -------------------------------------------------------------------------------------------

/// The calling tenant: state, plan and configuration.
#[utoipa::path(get, path = "/v1/tenant", tag = "tenant", security(("bearer" = [])),
    responses((status = 200, body = TenantView), (status = 401, body = Problem, content_type = "application/problem+json")))]
pub async fn get_tenant(
    State(s): State<Services>,
    Extension(rid): Extension<RequestId>,
    headers: HeaderMap,
) -> ApiResult<axum::Json<TenantView>> {
    let ctx = tenant(&s, &headers, rid, EndpointClass::TenantInfo, Scope::Read).await?;
    Ok(axum::Json(s.tenant_view(&ctx).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfigBody {
    pub model: Option<String>,
    pub retrieval_mode: Option<String>,
    pub system_prompt: Option<String>,
}

/// Change the tenant's model, retrieval mode or system prompt (within what the plan allows).
#[utoipa::path(patch, path = "/v1/tenant/config", tag = "tenant", security(("bearer" = [])), request_body = ConfigBody,
    responses((status = 200, body = TenantView), (status = 422, description = "Not allowed by the plan", body = Problem, content_type = "application/problem+json")))]
pub async fn patch_config(
    State(s): State<Services>,
    Extension(rid): Extension<RequestId>,
    headers: HeaderMap,
    Json(body): Json<ConfigBody>,
) -> ApiResult<axum::Json<TenantView>> {
    let ctx = tenant(&s, &headers, rid, EndpointClass::Service, Scope::Admin).await?;
    let update = ConfigUpdate {
        model: body.model,
        retrieval_mode: body.retrieval_mode,
        system_prompt: body.system_prompt,
    };
    Ok(axum::Json(s.update_config(&ctx, update).await?))
}

// ---- documents ----------------------------------------------------------------------------------------

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DocumentBody {
    pub title: Option<String>,
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
/// An upload identical to an existing document returns that document with 200.
#[utoipa::path(post, path = "/v1/documents", tag = "documents", security(("bearer" = [])),
    request_body(content(
        (DocumentBody = "application/json"),
        (DocumentForm = "multipart/form-data"),
    )),
    responses(
        (status = 201, body = DocumentView),
        (status = 200, description = "Identical content already uploaded", body = DocumentView),
        (status = 413, body = Problem, content_type = "application/problem+json"),
        (status = 415, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn upload_document(
    State(s): State<Services>,
    Extension(rid): Extension<RequestId>,
    req: Request,
) -> ApiResult<Response> {
    let ctx = tenant(
        &s,
        req.headers(),
        rid,
        EndpointClass::Service,
        Scope::Ingest,
    )
    .await?;
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let upload = if content_type.starts_with("application/json") {
        let Json(body) = Json::<DocumentBody>::from_request(req, &()).await?;
        if body.text.trim().is_empty() {
            return Err(ApiError::new(
                ErrorCode::ValidationFailed,
                "text must not be empty",
            ));
        }
        Upload {
            title: body.title,
            file_name: None,
            content_type: Some(body.content_type.unwrap_or_else(|| "text/plain".into())),
            bytes: body.text.into_bytes(),
        }
    } else if content_type.starts_with("multipart/form-data") {
        multipart_upload(
            Multipart::from_request(req, &())
                .await
                .map_err(|e| ApiError::new(ErrorCode::BadRequest, e.body_text()))?,
        )
        .await?
    } else {
        return Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "send application/json {title, text} or multipart/form-data with a file part",
        ));
    };
    Ok(match s.upload_document(&ctx, upload).await? {
        Uploaded::Created(d) => (StatusCode::CREATED, axum::Json(d)).into_response(),
        Uploaded::Duplicate(d) => (StatusCode::OK, axum::Json(d)).into_response(),
    })
}

async fn multipart_upload(mut form: Multipart) -> ApiResult<Upload> {
    let mut title = None;
    let mut file = None;
    while let Some(field) = form.next_field().await? {
        match field.name() {
            Some("file") => {
                let file_name = field.file_name().map(str::to_owned);
                let content_type = field.content_type().map(str::to_owned);
                let bytes = field.bytes().await?.to_vec();
                file = Some(Upload {
                    title: None,
                    file_name,
                    content_type,
                    bytes,
                });
            }
            Some("title") => title = Some(field.text().await?),
            _ => {}
        }
    }
    let mut upload = file
        .ok_or_else(|| ApiError::new(ErrorCode::ValidationFailed, "the form has no file part"))?;
    upload.title = title;
    Ok(upload)
}

/// The tenant's documents.
#[utoipa::path(get, path = "/v1/documents", tag = "documents", security(("bearer" = [])),
    responses((status = 200, body = DocumentList)))]
pub async fn list_documents(
    State(s): State<Services>,
    Extension(rid): Extension<RequestId>,
    headers: HeaderMap,
) -> ApiResult<axum::Json<DocumentList>> {
    let ctx = tenant(&s, &headers, rid, EndpointClass::Service, Scope::Read).await?;
    Ok(axum::Json(DocumentList {
        documents: s.list_documents(&ctx).await?,
    }))
}

/// One of the tenant's documents. Another tenant's id answers 404.
#[utoipa::path(get, path = "/v1/documents/{id}", tag = "documents", security(("bearer" = [])),
    params(("id" = String, Path, description = "document id")),
    responses((status = 200, body = DocumentView), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn get_document(
    State(s): State<Services>,
    Extension(rid): Extension<RequestId>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<DocumentView>> {
    let ctx = tenant(&s, &headers, rid, EndpointClass::Service, Scope::Read).await?;
    Ok(axum::Json(s.get_document(&ctx, &id).await?))
}

/// Delete a document from the database, the index and blob storage.
#[utoipa::path(delete, path = "/v1/documents/{id}", tag = "documents", security(("bearer" = [])),
    params(("id" = String, Path, description = "document id")),
    responses((status = 204), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn delete_document(
    State(s): State<Services>,
    Extension(rid): Extension<RequestId>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let ctx = tenant(&s, &headers, rid, EndpointClass::Service, Scope::Ingest).await?;
    s.delete_document(&ctx, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- query --------------------------------------------------------------------------------------------

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QueryBody {
    pub question: String,
    /// Passages to retrieve (1–50, default 5).
    pub top_k: Option<usize>,
    /// Server-sent events instead of one JSON body.
    pub stream: Option<bool>,
}

/// Ask a question over the tenant's documents, with the tenant's model, prompt and retrieval mode.
#[utoipa::path(post, path = "/v1/query", tag = "query", security(("bearer" = [])), request_body = QueryBody,
    responses(
        (status = 200, body = QueryResult),
        (status = 422, body = Problem, content_type = "application/problem+json"),
        (status = 502, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn query(
    State(s): State<Services>,
    Extension(rid): Extension<RequestId>,
    headers: HeaderMap,
    Json(body): Json<QueryBody>,
) -> ApiResult<axum::Json<QueryResult>> {
    let ctx = tenant(&s, &headers, rid, EndpointClass::Service, Scope::Query).await?;
    if body.stream == Some(true) {
        return Err(ApiError::new(
            ErrorCode::ValidationFailed,
            "streaming is not available yet; omit stream",
        ));
    }
    Ok(axum::Json(s.query(&ctx, &body.question, body.top_k).await?))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct UsageParams {
    /// RFC 3339; default: start of the current billing period.
    pub from: Option<String>,
    /// RFC 3339; default: end of the current billing period.
    pub to: Option<String>,
}

/// Usage from the ledger: totals and a breakdown by the model that ran.
#[utoipa::path(get, path = "/v1/usage", tag = "usage", security(("bearer" = [])), params(UsageParams),
    responses((status = 200, body = UsageReport), (status = 422, body = Problem, content_type = "application/problem+json")))]
pub async fn usage(
    State(s): State<Services>,
    Extension(rid): Extension<RequestId>,
    headers: HeaderMap,
    params: Result<Query<UsageParams>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<axum::Json<UsageReport>> {
    let ctx = tenant(&s, &headers, rid, EndpointClass::Service, Scope::Read).await?;
    let Query(p) = params?;
    Ok(axum::Json(
        s.usage(&ctx, p.from.as_deref(), p.to.as_deref()).await?,
    ))
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
        Err(ApiError::new(
            ErrorCode::Unavailable,
            "the database is not reachable",
        ))
    }
}

pub async fn not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no such endpoint")
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        "this endpoint does not accept that method",
    )
}
