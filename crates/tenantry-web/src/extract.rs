//! Request plumbing shared by every handler: the request id and its span, JSON bodies that fail as
//! problem+json, and the bearer token.

use std::time::Instant;

use axum::extract::{FromRequest, Request, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use tenantry_domain::{RequestId, TenantContext};
use tenantry_service::Services;
use tracing::Instrument;

use crate::metrics::AuthenticatedTenant;
use crate::problem::ApiError;

pub const REQUEST_ID: &str = "x-request-id";

/// Gives every request an id (the caller's `X-Request-Id` when sane, else a fresh one), runs it inside a span
/// that carries the id and, once authenticated, the tenant id, and echoes the id on the response.
pub async fn request_context(mut req: Request, next: Next) -> Response {
    let request_id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .and_then(RequestId::from_header)
        .unwrap_or_else(RequestId::generate);
    req.extensions_mut().insert(request_id.clone());
    let span = tracing::info_span!(
        "request",
        method = %req.method(),
        path = %req.uri().path(),
        request_id = %request_id,
        tenant_id = tracing::field::Empty,
    );
    let started = Instant::now();
    let mut response = next.run(req).instrument(span.clone()).await;
    span.in_scope(|| {
        tracing::info!(
            status = response.status().as_u16(),
            elapsed_us = started.elapsed().as_micros() as u64,
            "request finished"
        )
    });
    if let Ok(v) = HeaderValue::from_str(request_id.as_str()) {
        response.headers_mut().insert(REQUEST_ID, v);
    }
    response
}

/// A JSON body on an authenticated endpoint: read with the request, judged after the caller is. A request
/// without a valid key or token gets its 401 (or its state's 402/403) whatever its body holds, and a bad
/// body's error, which names the fields expected, goes only to a caller allowed to see it.
pub struct AuthedJson<T>(Result<T, ApiError>);

impl<T> AuthedJson<T> {
    /// The body, or its problem+json error; call once the caller is authenticated.
    pub fn value(self) -> Result<T, ApiError> {
        self.0
    }
}

impl<T, S> FromRequest<S> for AuthedJson<T>
where
    axum::Json<T>: FromRequest<S, Rejection = axum::extract::rejection::JsonRejection>,
    S: Send + Sync,
{
    type Rejection = std::convert::Infallible;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(Json::<T>::from_request(req, state).await.map(|Json(value)| value)))
    }
}

tokio::task_local! {
    /// The tenant the request authenticated as, set by `api::tenant` inside `tenant_response`'s scope.
    static AUTHENTICATED: std::cell::RefCell<Option<TenantContext>>;
}

/// Remembers `ctx` as the request's tenant for `tenant_response` (a no-op outside its scope).
pub(crate) fn authenticated(ctx: &TenantContext) {
    let _ = AUTHENTICATED.try_with(|slot| *slot.borrow_mut() = Some(ctx.clone()));
}

/// What every response to an authenticated tenant request carries, whichever handler or error made it: the
/// `X-Quota-*` headers of API.md (if the handler did not set them already: errors, deletions, downloads),
/// and the tenant for the metrics layer's exemplars (`metrics`).
pub async fn tenant_response(State(s): State<Services>, req: Request, next: Next) -> Response {
    respond_as_tenant(&s, next.run(req)).await
}

/// `response` (a handler's run) finished as `tenant_response` finishes it; for a handler run in a task of its
/// own (`idempotency`), where the outer layer's task-local cannot reach.
pub(crate) async fn respond_as_tenant(s: &Services, response: impl std::future::Future<Output = Response>) -> Response {
    let (mut response, ctx) = AUTHENTICATED
        .scope(std::cell::RefCell::new(None), async move {
            let response = response.await;
            (response, AUTHENTICATED.with(|slot| slot.borrow_mut().take()))
        })
        .await;
    let Some(ctx) = ctx else { return response };
    response.extensions_mut().insert(AuthenticatedTenant(ctx.tenant_id.as_str().to_owned()));
    if !response.headers().contains_key(QUOTA_QUERIES_REMAINING) {
        if let Err(e) = quota_headers(s, &ctx, response.headers_mut()).await {
            tracing::warn!(error = %e, "quota headers left off a response");
        }
    }
    response
}

/// Writes API.md's `X-Quota-*` headers: what the tenant has left this period.
pub(crate) async fn quota_headers(
    s: &Services,
    ctx: &TenantContext,
    headers: &mut HeaderMap,
) -> Result<(), tenantry_service::ServiceError> {
    let remaining = s.remaining(ctx).await?;
    headers.insert(QUOTA_QUERIES_REMAINING, HeaderValue::from(remaining.queries));
    headers.insert(QUOTA_TOKENS_REMAINING, HeaderValue::from(remaining.tokens));
    Ok(())
}

const QUOTA_QUERIES_REMAINING: &str = "x-quota-queries-remaining";
const QUOTA_TOKENS_REMAINING: &str = "x-quota-tokens-remaining";

/// `axum::Json` whose rejections are problem+json.
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    axum::Json<T>: FromRequest<S, Rejection = axum::extract::rejection::JsonRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let axum::Json(value) = axum::Json::<T>::from_request(req, state).await?;
        Ok(Json(value))
    }
}

/// The token of an `Authorization: Bearer …` header.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}
