//! What a request body may take before any handler reads it (docs/SECURITY.md):
//!
//! - a body is refused (413) as soon as its declared `Content-Length` is larger than its caller may send,
//!   before a byte of it is read;
//! - a caller without a valid API key, operator token or session cookie may send `limits.anonymous_body_bytes` (signup and
//!   payment webhooks, 1 MiB by default); an authenticated one `server.max_body_bytes`. The credential is checked
//!   here only when a body could be larger than the anonymous limit;
//! - the bodies being read at once share one budget (`limits.inflight_body_bytes`): a request whose body
//!   would pass it waits up to `limits.inflight_wait_secs`, then gets 503 with `Retry-After`. A body of
//!   unknown length (chunked) is counted at its caller's whole limit, and cut there. An eighth of the
//!   budget is kept for small bodies (up to 64 KiB: questions, chat, settings), so that uploads held open
//!   by one tenant cannot make every other tenant's questions wait;
//! - bodies larger than that are read at most `limits.bulk_body_bytes_per_second` together (256 MiB/s by
//!   default): a flood of uploads takes a bounded share of the CPU, and questions keep the rest.
//!
//! Before any of that, a request's head is held to [`head_limits`]: a target (path and query) of at most
//! 8 KiB (414) and at most 100 header fields of 32 KiB in all (431), answered as problem+json. hyper is
//! told to read heads up to twice that many fields, so that it is this check that answers, not hyper's
//! bare refusal; only a head past hyper's own buffer (about 400 KiB) is refused by hyper itself.
//!
//! Bodies that stall are abandoned by `server.body_timeout_secs` (`router`). A compressed body
//! (`Content-Encoding` other than `identity`) is refused with 415: no handler decodes one, and reading it as
//! plain bytes would store or parse the compressed data.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use tenantry_domain::ErrorCode;
use tenantry_service::{ServiceError, Services};
use tokio::sync::Semaphore;

use crate::caller::{caller, Caller};
use crate::problem::ApiError;

/// The longest request target (path and query) served.
pub const MAX_TARGET_BYTES: usize = 8 * 1024;
/// The most header fields a request may carry, and their bytes in all (names and values).
pub const MAX_HEADER_FIELDS: usize = 100;
pub const MAX_HEADER_BYTES: usize = 32 * 1024;

/// Refuses a request whose target or headers pass the limits above, before anything reads it.
pub async fn head_limits(req: Request, next: Next) -> Response {
    let target = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if target > MAX_TARGET_BYTES {
        let detail = format!("the request target is {target} bytes; at most {MAX_TARGET_BYTES} are accepted");
        return ApiError::new(ErrorCode::UriTooLong, detail).into_response();
    }
    let fields = req.headers().len();
    let bytes: usize = req.headers().iter().map(|(name, value)| name.as_str().len() + value.len()).sum();
    if fields > MAX_HEADER_FIELDS || bytes > MAX_HEADER_BYTES {
        let detail = format!(
            "the request has {fields} header fields of {bytes} bytes; at most {MAX_HEADER_FIELDS} fields of \
             {MAX_HEADER_BYTES} bytes are accepted"
        );
        return ApiError::new(ErrorCode::HeaderFieldsTooLarge, detail).into_response();
    }
    next.run(req).await
}

/// The budget is counted in KiB, so that a `u32` of permits covers any sensible size.
const UNIT: usize = 1024;

/// The largest body that draws from the share kept for small bodies.
const SMALL_BODY_BYTES: u64 = 64 << 10;

/// The bytes of request bodies being read at once, over all connections: one share for small bodies, the
/// rest for the others.
#[derive(Clone)]
pub struct BodyBudget {
    small: Pool,
    bulk: Pool,
    wait: Duration,
    bulk_rate: Arc<Throttle>,
}

/// A rate over all the bodies that share it: each chunk takes its bytes from a bucket refilled at `rate`
/// bytes a second (holding at most a second's worth), and when the bucket is short, its reader waits until
/// the debt is paid. Waiting in turn is fair: a chunk's wait is the debt the ones before it left.
struct Throttle {
    rate: f64,
    bucket: parking_lot::Mutex<(f64, tokio::time::Instant)>,
}

impl Throttle {
    fn new(bytes_per_second: u64) -> Self {
        let rate = bytes_per_second.max(1) as f64;
        Self { rate, bucket: parking_lot::Mutex::new((rate, tokio::time::Instant::now())) }
    }

    async fn take(&self, bytes: usize) {
        let wait = {
            let mut bucket = self.bucket.lock();
            let now = tokio::time::Instant::now();
            let (tokens, since) = *bucket;
            let refilled = (tokens + now.duration_since(since).as_secs_f64() * self.rate).min(self.rate);
            let left = refilled - bytes as f64;
            *bucket = (left, now);
            (left < 0.0).then(|| Duration::from_secs_f64(-left / self.rate))
        };
        if let Some(wait) = wait {
            tokio::time::sleep(wait).await;
        }
    }

    /// `body`, each chunk read only once the throttle allows its bytes.
    fn read(self: Arc<Self>, body: Body) -> Body {
        let chunks = body.into_data_stream().then(move |chunk| {
            let throttle = Arc::clone(&self);
            async move {
                if let Ok(bytes) = &chunk {
                    throttle.take(bytes.len()).await;
                }
                chunk
            }
        });
        Body::from_stream(chunks)
    }
}

#[derive(Clone)]
struct Pool {
    permits: Arc<Semaphore>,
    units: u32,
}

impl Pool {
    fn new(units: u32) -> Self {
        let units = units.max(1);
        Self { permits: Arc::new(Semaphore::new(units as usize)), units }
    }
}

impl BodyBudget {
    pub fn new(bytes: usize, wait: Duration, bulk_bytes_per_second: u64) -> Self {
        let total_units = u32::try_from(bytes.div_ceil(UNIT)).unwrap_or(u32::MAX).max(2);
        let small_units = (total_units / 8).max(1);
        Self {
            small: Pool::new(small_units),
            bulk: Pool::new(total_units - small_units),
            wait,
            bulk_rate: Arc::new(Throttle::new(bulk_bytes_per_second)),
        }
    }

    /// The pool a body of `bytes` (at most) draws from.
    fn pool_for(&self, bytes: u64) -> &Pool {
        let small_bytes = u64::from(self.small.units) * UNIT as u64;
        if bytes <= SMALL_BODY_BYTES && bytes <= small_bytes {
            &self.small
        } else {
            &self.bulk
        }
    }
}

pub async fn guard(State((services, budget)): State<(Services, BodyBudget)>, req: Request, next: Next) -> Response {
    if let Some(encoding) = req.headers().get(header::CONTENT_ENCODING) {
        if !encoding.as_bytes().eq_ignore_ascii_case(b"identity") {
            return ApiError::new(
                ErrorCode::UnsupportedMediaType,
                "compressed request bodies (Content-Encoding) are not accepted; send the body uncompressed",
            )
            .into_response();
        }
    }
    let declared = declared_length(&req);
    if declared == Some(0) || (declared.is_none() && !may_have_body(&req)) {
        return next.run(req).await;
    }
    let limits = &services.config().limits;
    let anonymous = limits.anonymous_body_bytes as u64;
    let (mut parts, body) = req.into_parts();
    let limit = if declared.is_some_and(|n| n <= anonymous)
        || !matches!(caller(&services, &mut parts).await, Caller::Operator | Caller::Tenant(_))
    {
        anonymous
    } else {
        services.config().server.max_body_bytes as u64
    };
    let req = Request::from_parts(parts, body);
    if let Some(n) = declared.filter(|&n| n > limit) {
        let whose = if limit == anonymous { " without a valid API key" } else { "" };
        return ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("the request body is {n} bytes; at most {limit} are accepted{whose}"),
        )
        .into_response();
    }
    let bytes = declared.unwrap_or(limit);
    let pool = budget.pool_for(bytes);
    let units = u32::try_from(bytes.div_ceil(UNIT as u64)).unwrap_or(u32::MAX).max(1).min(pool.units);
    let _permit = match tokio::time::timeout(budget.wait, pool.permits.clone().acquire_many_owned(units)).await {
        Ok(Ok(permit)) => permit,
        Ok(Err(_)) | Err(_) => {
            tracing::warn!(units, "request bodies in flight at their budget: refused");
            let retry = budget.wait.as_secs().max(1);
            return ApiError(
                ServiceError::new(
                    ErrorCode::Unavailable,
                    "the server is reading too many request bodies; retry shortly",
                )
                .retry_after(retry),
            )
            .into_response();
        }
    };
    let req = if declared.is_none() {
        req.map(|body| Body::new(http_body_util::Limited::new(body, limit as usize)))
    } else {
        req
    };
    let req = if std::ptr::eq(pool, &budget.bulk) { req.map(|body| budget.bulk_rate.clone().read(body)) } else { req };
    next.run(req).await
}

fn declared_length(req: &Request) -> Option<u64> {
    req.headers().get(header::CONTENT_LENGTH)?.to_str().ok()?.trim().parse().ok()
}

/// A request without `Content-Length` has a body only if it is chunked (HTTP/1.1) or, on HTTP/2, if it is
/// not a method without one.
fn may_have_body(req: &Request) -> bool {
    req.headers().contains_key(header::TRANSFER_ENCODING)
        || (req.version() == axum::http::Version::HTTP_2
            && !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn chunks_past_the_rate_wait_until_their_bytes_are_paid_for() {
        let throttle = Throttle::new(1_000);
        let started = tokio::time::Instant::now();
        throttle.take(1_000).await;
        assert_eq!(started.elapsed(), Duration::ZERO, "a second's worth is there at once");
        throttle.take(500).await;
        assert_eq!(started.elapsed(), Duration::from_millis(500));
        throttle.take(1_500).await;
        assert_eq!(started.elapsed(), Duration::from_secs(2), "3,000 bytes at 1,000 a second, the first 1,000 free");
        tokio::time::sleep(Duration::from_secs(60)).await;
        let rested = tokio::time::Instant::now();
        throttle.take(2_000).await;
        assert_eq!(rested.elapsed(), Duration::from_secs(1), "a long rest banks one second, no more");
    }

    #[tokio::test(start_paused = true)]
    async fn a_throttled_body_arrives_whole_at_the_rate() {
        let throttle = Arc::new(Throttle::new(1_000));
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> = (0..4u8).map(|i| Ok(vec![i; 1_000])).collect();
        let body = Body::from_stream(futures::stream::iter(chunks));
        let started = tokio::time::Instant::now();
        let read = axum::body::to_bytes(throttle.read(body), usize::MAX).await.expect("whole");
        assert_eq!(read.len(), 4_000);
        assert!(read.chunks(1_000).enumerate().all(|(i, c)| c.iter().all(|&b| usize::from(b) == i)), "in order");
        assert_eq!(started.elapsed(), Duration::from_secs(3));
    }
}
