//! `Idempotency-Key` (API.md "Integrations"): a POST, PATCH or DELETE of `/v1/*` or `/admin/*` that carries
//! one runs at most once per caller and key; its response is kept 24 hours and replayed, with
//! `Idempotent-Replayed: true`, to a retry with the same method, target and body.
//!
//! The request runs in a task of its own, and its response body is read to the end there, whether or not the
//! client is still listening: a client that gave up waiting and retries must find the first attempt's
//! outcome, not run the request a second time. A response that says nothing was done and a retry may succeed
//! (401, 402, 403, 408, 409, 429, 5xx) is not kept; its key is released, so the retry runs afresh.
//!
//! The layer is a route layer: a request for no route, or with a method its route does not serve, gets its
//! 404 or 405 whatever key it carries. The handler's task finishes its response as `tenant_response` does.
//!
//! Requests without a valid credential (signup, payment webhooks, a bad key) are served as if they carried
//! no key: nothing is kept that an anonymous caller could replay. A session cookie of the web pages (with its
//! CSRF token) is a credential like a key: its tenant, or the operator, owns the key.

use std::collections::HashSet;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tenantry_domain::{ErrorCode, TenantId};
use tenantry_service::idempotency::{Claim, KeyOwner, KeyedRequest, StoredResponse};
use tenantry_service::{ServiceError, Services};
use tracing::Instrument;

use crate::caller::{caller, Caller};
use crate::chat::OpenAiError;
use crate::problem::ApiError;

pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
pub const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";

/// The longest key accepted.
const MAX_KEY_LEN: usize = 255;
/// A response body larger than this is passed on but not kept (its key is released).
const MAX_KEPT_BODY: usize = 16 << 20;

/// Headers that describe one transmission, not the response: never kept, never replayed.
const NOT_KEPT: [HeaderName; 5] = [
    header::DATE,
    header::CONTENT_LENGTH,
    header::TRANSFER_ENCODING,
    header::CONNECTION,
    HeaderName::from_static("x-request-id"),
];

/// The operations a key applies to: each route template (as `MatchedPath` names it) and method of API.md's
/// POST, PATCH and DELETE operations under `/v1/` and `/admin/`.
#[derive(Clone, Default)]
pub struct KeyedOperations(Arc<HashSet<(String, Method)>>);

impl KeyedOperations {
    pub fn of(spec: &utoipa::openapi::OpenApi) -> Self {
        let mut operations = HashSet::new();
        for (path, item) in &spec.paths.paths {
            for (method, operation) in
                [(Method::POST, &item.post), (Method::PATCH, &item.patch), (Method::DELETE, &item.delete)]
            {
                if operation.is_some() && applies_to(&method, path) {
                    operations.insert((path.clone(), method));
                }
            }
        }
        Self(Arc::new(operations))
    }

    fn contains(&self, req: &Request) -> bool {
        let Some(template) = req.extensions().get::<MatchedPath>() else { return false };
        self.0.contains(&(template.as_str().to_owned(), req.method().clone()))
    }
}

pub async fn idempotent(
    State((services, keyed)): State<(Services, KeyedOperations)>,
    req: Request,
    next: Next,
) -> Response {
    let Some(raw_key) = req.headers().get(IDEMPOTENCY_KEY) else { return next.run(req).await };
    // A method the route does not serve gets its 405 whatever key it carries.
    if !keyed.contains(&req) {
        return next.run(req).await;
    }
    let openai = openai_route(req.uri().path());
    let refuse = move |e: ApiError| if openai { OpenAiError::from(e).into_response() } else { e.into_response() };
    let key = match valid_key(raw_key) {
        Ok(key) => key,
        Err(e) => return refuse(e),
    };
    let (mut parts, body) = req.into_parts();
    let owner = match caller(&services, &mut parts).await {
        Caller::Operator => KeyOwner::Operator,
        Caller::Tenant(ctx) => KeyOwner::Tenant(ctx.tenant_id),
        Caller::Anonymous | Caller::Refused(_) => return next.run(Request::from_parts(parts, body)).await,
    };
    let limit = services.config().server.max_body_bytes;
    let body = match axum::body::to_bytes(body, limit).await {
        Ok(bytes) => bytes,
        Err(e) => return refuse(body_error(&e)),
    };
    let about = match &owner {
        KeyOwner::Tenant(id) => Some(id.clone()),
        KeyOwner::Operator => tenant_named_by(parts.uri.path()),
    };
    let keyed = KeyedRequest { owner, key, fingerprint: fingerprint(&parts.method, &parts.uri, &body), about };
    match services.claim_idempotency_key(&keyed).await {
        Ok(Claim::Run) => {}
        Ok(Claim::Replay(stored)) => return replay(stored),
        Ok(Claim::Running) => {
            return refuse(ApiError(
                ServiceError::new(
                    ErrorCode::Conflict,
                    "a request with this Idempotency-Key is still running; retry once it has finished",
                )
                .retry_after(1),
            ))
        }
        Ok(Claim::Reused) => {
            return refuse(ApiError::new(
                ErrorCode::IdempotencyKeyReused,
                "this Idempotency-Key was used with another method, path or body; use a new key for a new request",
            ))
        }
        Err(e) => return refuse(ApiError(e)),
    }
    let req = Request::from_parts(parts, Body::from(body));
    run_to_completion(services, keyed, next, req).await
}

/// Runs the request in its own task, which also reads the response body to its end and keeps or releases
/// the key; the client gets the response as it is produced (streamed answers stay streamed).
async fn run_to_completion(services: Services, keyed: KeyedRequest, next: Next, req: Request) -> Response {
    let (head_tx, head_rx) = tokio::sync::oneshot::channel();
    let (body_tx, body_rx) = tokio::sync::mpsc::channel::<Result<Bytes, axum::Error>>(16);
    let task = async move {
        let response = crate::extract::respond_as_tenant(&services, req, next).await;
        let (parts, body) = response.into_parts();
        let keep = worth_keeping(parts.status);
        let kept_headers = keep.then(|| kept_headers(&parts.headers));
        let status = parts.status;
        let _ = head_tx.send(parts);
        let mut kept = keep.then(Vec::new);
        let mut stream = body.into_data_stream();
        while let Some(chunk) = stream.next().await {
            match &chunk {
                Ok(bytes) => {
                    if kept.as_ref().is_some_and(|k| k.len() + bytes.len() > MAX_KEPT_BODY) {
                        kept = None;
                    }
                    if let Some(k) = kept.as_mut() {
                        k.extend_from_slice(bytes);
                    }
                }
                Err(_) => kept = None,
            }
            let failed = chunk.is_err();
            // The client may have gone: the body is still read to its end, and the outcome kept.
            let _ = body_tx.send(chunk).await;
            if failed {
                break;
            }
        }
        let outcome = match (kept, kept_headers) {
            (Some(body), Some(headers)) => {
                let stored = StoredResponse { status: status.as_u16(), headers, body };
                services.record_idempotent_response(&keyed, &stored).await
            }
            _ => services.release_idempotency_key(&keyed).await,
        };
        if let Err(e) = outcome {
            tracing::warn!(error = %e.detail, "could not record an idempotent request's outcome");
        }
    };
    tokio::spawn(task.in_current_span());
    let Ok(parts) = head_rx.await else {
        return ApiError::new(ErrorCode::Internal, "the request failed before it answered").into_response();
    };
    let body = futures::stream::unfold(body_rx, |mut rx| async move { rx.recv().await.map(|chunk| (chunk, rx)) });
    Response::from_parts(parts, Body::from_stream(body))
}

/// The OpenAI-compatible routes, whose errors also carry OpenAI's `error` object.
fn openai_route(path: &str) -> bool {
    matches!(path, "/v1/chat/completions" | "/v1/embeddings" | "/v1/responses" | "/v1/completions")
}

/// Whether a request may carry a key: API.md's methods on its API paths.
fn applies_to(method: &Method, path: &str) -> bool {
    matches!(*method, Method::POST | Method::PATCH | Method::DELETE)
        && (path.starts_with("/v1/") || path.starts_with("/admin/"))
}

fn valid_key(raw: &HeaderValue) -> Result<String, ApiError> {
    let bytes = raw.as_bytes();
    if bytes.is_empty() || bytes.len() > MAX_KEY_LEN || !bytes.iter().all(|b| (0x20..0x7f).contains(b)) {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            format!("Idempotency-Key must be 1 to {MAX_KEY_LEN} printable ASCII characters"),
        ));
    }
    Ok(String::from_utf8_lossy(bytes).into_owned())
}

/// The tenant an operator request is about (`/admin/tenants/{id}/…`), so its kept response goes with the
/// tenant's erasure.
fn tenant_named_by(path: &str) -> Option<TenantId> {
    let rest = path.strip_prefix("/admin/tenants/")?;
    TenantId::parse(rest.split('/').next()?)
}

fn fingerprint(method: &Method, uri: &axum::http::Uri, body: &[u8]) -> String {
    let target = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    let mut digest = Sha256::new();
    for part in [method.as_str().as_bytes(), b"\0", target.as_bytes(), b"\0", body] {
        digest.update(part);
    }
    hex::encode(digest.finalize())
}

/// Whether a response records what the request did. A refusal that a retry could get past (authentication,
/// payment, scope, a conflict, a limit) or a failure of the service is not kept.
fn worth_keeping(status: StatusCode) -> bool {
    !(status.is_server_error() || matches!(status.as_u16(), 401 | 402 | 403 | 408 | 409 | 425 | 429))
}

fn kept_headers(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .filter(|(name, _)| !NOT_KEPT.contains(name))
        .filter_map(|(name, value)| Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned())))
        .collect()
}

fn replay(stored: StoredResponse) -> Response {
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
    let mut response = (status, Body::from(stored.body)).into_response();
    let headers = response.headers_mut();
    for (name, value) in stored.headers {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            headers.append(name, value);
        }
    }
    headers.insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    response
}

fn body_error(e: &axum::Error) -> ApiError {
    let too_large = std::error::Error::source(e)
        .is_some_and(|s| s.is::<http_body_util::LengthLimitError>() || s.to_string().contains("length limit"));
    if too_large {
        ApiError::new(ErrorCode::PayloadTooLarge, "the request body is larger than accepted")
    } else {
        ApiError::new(ErrorCode::BadRequest, format!("the request body could not be read: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_printable_ascii_of_bounded_length() {
        assert!(valid_key(&HeaderValue::from_static("retry-7f3a 2026-12-06")).is_ok());
        assert!(valid_key(&HeaderValue::from_static("")).is_err());
        assert!(valid_key(&HeaderValue::from_str(&"k".repeat(256)).expect("header")).is_err());
        assert!(valid_key(&HeaderValue::from_bytes(b"caf\xc3\xa9").expect("header")).is_err());
        assert!(valid_key(&HeaderValue::from_bytes(b"tab\there").expect("header")).is_err());
    }

    #[test]
    fn the_fingerprint_tells_method_target_and_body_apart() {
        let uri = |s: &str| s.parse::<axum::http::Uri>().expect("uri");
        let base = fingerprint(&Method::POST, &uri("/v1/query"), b"{\"question\":\"a\"}");
        assert_eq!(base, fingerprint(&Method::POST, &uri("/v1/query"), b"{\"question\":\"a\"}"));
        assert_ne!(base, fingerprint(&Method::POST, &uri("/v1/query"), b"{\"question\":\"b\"}"));
        assert_ne!(base, fingerprint(&Method::PATCH, &uri("/v1/query"), b"{\"question\":\"a\"}"));
        assert_ne!(base, fingerprint(&Method::POST, &uri("/v1/query?x=1"), b"{\"question\":\"a\"}"));
    }

    #[test]
    fn only_what_a_retry_cannot_change_is_kept() {
        for kept in [200, 201, 202, 204, 400, 404, 413, 422] {
            assert!(worth_keeping(StatusCode::from_u16(kept).expect("status")), "{kept}");
        }
        for released in [401, 402, 403, 409, 429, 500, 502, 503, 504] {
            assert!(!worth_keeping(StatusCode::from_u16(released).expect("status")), "{released}");
        }
    }

    #[test]
    fn operator_requests_name_their_tenant_for_erasure() {
        let id = "ten_0123456789abcdef0123456789abcdef";
        assert_eq!(
            tenant_named_by(&format!("/admin/tenants/{id}/suspend")).map(|t| t.as_str().to_owned()),
            Some(id.to_owned())
        );
        assert_eq!(tenant_named_by("/admin/clock/advance"), None);
    }
}
