//! Request plumbing shared by every handler: the request id and its span, who is calling (`Tenant<A>`,
//! `Operator`, from `caller`: a bearer credential, else a session cookie of the web pages) and the quota
//! headers that follow from it, JSON bodies that fail as problem+json, and the bearer token.

use std::marker::PhantomData;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use tenantry_domain::lifecycle::EndpointClass;
use tenantry_domain::{RequestId, TenantContext};
use tenantry_service::gateway::Scope;
use tenantry_service::Services;
use tracing::Instrument;

use crate::caller::caller;
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

/// What a tenant endpoint admits: the lifecycle class of the endpoint (which tenant states may call it) and
/// the key scope it needs. One zero-sized type per combination, named in the handler's signature.
pub trait Access: Send + Sync + 'static {
    const CLASS: EndpointClass;
    const SCOPE: Scope;
}

macro_rules! access {
    ($($(#[$doc:meta])* $name:ident = $class:ident, $scope:ident;)*) => {$(
        $(#[$doc])*
        pub struct $name;
        impl Access for $name {
            const CLASS: EndpointClass = EndpointClass::$class;
            const SCOPE: Scope = Scope::$scope;
        }
    )*};
}

access! {
    /// Asking questions: `/v1/query`, chat completions, responses, embeddings, models.
    Asks = Service, Query;
    /// Uploading documents.
    Ingests = Service, Ingest;
    /// Reading the tenant's documents and usage.
    ReadsService = Service, Read;
    /// Managing the tenant's documents, keys and configuration while it is served.
    AdministersService = Service, Admin;
    /// Reading the account (invoices) in any state that can pay.
    ReadsAccount = Account, Read;
    /// Managing the account (export, erasure, plan, cancellation, integrations) in any state that can pay.
    AdministersAccount = Account, Admin;
    /// Reading who the tenant is, in any state.
    ReadsTenant = TenantInfo, Read;
}

/// The tenant a request authenticated as, admitted for `A`'s class and scope (else the request's 401, 402,
/// 403 or 429, before its body is read). The response layer `tenant_response` writes the quota headers of
/// this tenant on whatever the handler answers.
pub struct Tenant<A: Access> {
    pub ctx: TenantContext,
    access: PhantomData<A>,
}

impl<A: Access> FromRequestParts<Services> for Tenant<A> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &Services) -> Result<Self, ApiError> {
        let request_id = parts.extensions.get::<RequestId>().cloned().unwrap_or_else(RequestId::generate);
        // The request's span (`request_context`) carries the tenant too, for every log line that follows.
        let request_span = tracing::Span::current();
        let span = tracing::info_span!(
            "authenticate",
            request_id = %request_id,
            tenant_id = tracing::field::Empty,
            scope = ?A::SCOPE,
        );
        async {
            let ctx = caller(s, parts).await.tenant()?;
            tracing::Span::current().record("tenant_id", tracing::field::display(&ctx.tenant_id));
            request_span.record("tenant_id", tracing::field::display(&ctx.tenant_id));
            // Refusals by state, scope or rate limit go to an identified tenant: they carry the quota headers.
            if let Some(slot) = parts.extensions.get::<TenantSlot>() {
                let _ = slot.0.set(ctx.clone());
            }
            s.admit(&ctx, A::CLASS, A::SCOPE).await?;
            Ok(Self { ctx, access: PhantomData })
        }
        .instrument(span)
        .await
    }
}

/// The operator, authenticated by `server.operator_token` or a console session (else 401 before the body is
/// read).
pub struct Operator;

impl FromRequestParts<Services> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &Services) -> Result<Self, ApiError> {
        caller(s, parts).await.operator()?;
        Ok(Self)
    }
}

/// Where the `Tenant` extractor leaves the identified tenant for `tenant_response`: set once per request, in
/// the request's extensions, so it reaches the layer from whichever task runs the handler.
#[derive(Clone, Default)]
struct TenantSlot(Arc<OnceLock<TenantContext>>);

/// What every response to an identified tenant carries, whichever handler or error made it: the `X-Quota-*`
/// headers of API.md, and the tenant for the metrics layer's exemplars (`metrics`).
pub async fn tenant_response(State(s): State<Services>, mut req: Request, next: Next) -> Response {
    let slot = TenantSlot::default();
    req.extensions_mut().insert(slot.clone());
    let response = next.run(req).await;
    with_tenant_headers(&s, &slot, response).await
}

/// A response answered to the request that carries `req`'s slot, finished as `tenant_response` finishes it:
/// for the idempotency layer, which keeps the response for replays before the outer layer sees it.
pub(crate) async fn respond_as_tenant(s: &Services, req: Request, next: Next) -> Response {
    let slot = req.extensions().get::<TenantSlot>().cloned().unwrap_or_default();
    let response = next.run(req).await;
    with_tenant_headers(s, &slot, response).await
}

/// On a response whose handler changed the tenant's plan: the tenant as it is now, whose quota the headers
/// report, instead of the tenant the request authenticated as.
#[derive(Clone)]
pub struct AsTenant(pub TenantContext);

async fn with_tenant_headers(s: &Services, slot: &TenantSlot, mut response: Response) -> Response {
    let ctx = match response.extensions_mut().remove::<AsTenant>() {
        Some(AsTenant(changed)) => changed,
        None => match slot.0.get() {
            Some(ctx) => ctx.clone(),
            None => return response,
        },
    };
    response.extensions_mut().insert(AuthenticatedTenant(ctx.tenant_id.as_str().to_owned()));
    if !response.headers().contains_key(QUOTA_QUERIES_REMAINING) {
        if let Err(e) = quota_headers(s, &ctx, response.headers_mut()).await {
            tracing::warn!(error = %e, "quota headers left off a response");
        }
    }
    response
}

/// Writes API.md's `X-Quota-*` headers: what the tenant has left this period.
async fn quota_headers(
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
