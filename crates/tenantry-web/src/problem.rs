//! RFC 9457 problem+json responses. Every error the API returns goes through here, so every one has the
//! same shape and a `code` from the one table in `tenantry_domain::ErrorCode`.

use axum::extract::multipart::MultipartError;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tenantry_domain::ErrorCode;
use tenantry_service::ServiceError;
use utoipa::ToSchema;

/// The problem+json body.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// A URI naming the problem type.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Machine-readable code, e.g. `quota_exceeded`.
    pub code: String,
}

impl Problem {
    pub fn of(code: ErrorCode, detail: impl Into<String>) -> Self {
        Self {
            kind: format!("https://tenantry.dev/problems/{}", code.as_str()),
            title: code.title().to_owned(),
            status: code.status(),
            detail: detail.into(),
            code: code.as_str().to_owned(),
        }
    }
}

#[derive(Debug)]
pub struct ApiError(pub ServiceError);

impl ApiError {
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        Self(ServiceError::new(code, detail))
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        Self(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        problem_response(&self.0, serde_json::Map::new())
    }
}

/// The problem+json response of `error`, with `extra` fields beside the problem's (the OpenAI-compatible
/// routes add OpenAI's `error` object): its status, `Retry-After` when the error has one, and the problem code
/// for the metrics layer.
pub(crate) fn problem_response(error: &ServiceError, extra: serde_json::Map<String, serde_json::Value>) -> Response {
    let status = StatusCode::from_u16(error.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut body = match serde_json::to_value(Problem::of(error.code, error.detail.clone())) {
        Ok(serde_json::Value::Object(fields)) => fields,
        _ => serde_json::Map::new(),
    };
    body.extend(extra);
    let mut response = (status, axum::Json(body)).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
    if let Some(secs) = error.retry_after_secs {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    if status == StatusCode::UNAUTHORIZED {
        // RFC 6750: a 401 names the scheme it expects.
        headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"tenantry\""));
    }
    response.extensions_mut().insert(crate::metrics::ProblemCode(error.code.as_str()));
    response
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        match r {
            JsonRejection::JsonDataError(e) => Self::new(ErrorCode::ValidationFailed, e.body_text()),
            JsonRejection::JsonSyntaxError(e) => Self::new(ErrorCode::BadRequest, e.body_text()),
            JsonRejection::MissingJsonContentType(_) => {
                Self::new(ErrorCode::UnsupportedMediaType, "expected a request with Content-Type: application/json")
            }
            other if other.status() == StatusCode::PAYLOAD_TOO_LARGE || cut_at_its_limit(&other) => too_large(),
            other => Self::new(ErrorCode::BadRequest, other.body_text()),
        }
    }
}

/// Whether reading the body failed because it passed a length limit set on the body itself (the body
/// guard's, for a chunked body), which axum reports as a generic buffering failure.
fn cut_at_its_limit(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        cause = e.source();
    }
    false
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        Self::new(ErrorCode::ValidationFailed, r.body_text())
    }
}

impl From<MultipartError> for ApiError {
    fn from(e: MultipartError) -> Self {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE || cut_at_its_limit(&e) {
            too_large()
        } else {
            Self::new(ErrorCode::BadRequest, format!("malformed multipart body: {}", e.body_text()))
        }
    }
}

pub fn too_large() -> ApiError {
    ApiError::new(ErrorCode::PayloadTooLarge, "the request body is larger than this server accepts")
}
