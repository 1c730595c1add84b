//! The public error codes: one table, each with its HTTP status and title. Every problem+json response
//! carries one of these `code`s (API.md "Conventions").

use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    /// A parameter the tenant's model cannot honour (the offline model and `tools`, say).
    UnsupportedParameter,
    /// The messages and the answer's allowance do not fit in the model's context window.
    ContextLengthExceeded,
    Unauthenticated,
    Forbidden,
    PaymentRequired,
    NotFound,
    MethodNotAllowed,
    Conflict,
    TransitionInProgress,
    InvalidTransition,
    PayloadTooLarge,
    UriTooLong,
    UnsupportedMediaType,
    ValidationFailed,
    /// An `Idempotency-Key` sent again with another method, path or body.
    IdempotencyKeyReused,
    QuotaExceeded,
    RateLimited,
    HeaderFieldsTooLarge,
    Internal,
    UpstreamFailed,
    Unavailable,
    UpstreamTimeout,
}

impl ErrorCode {
    /// `(status, code, title)` for every code, in one place.
    pub const fn describe(self) -> (u16, &'static str, &'static str) {
        match self {
            Self::BadRequest => (400, "bad_request", "Bad request"),
            Self::UnsupportedParameter => (400, "unsupported_parameter", "Unsupported parameter"),
            Self::ContextLengthExceeded => (400, "context_length_exceeded", "Context length exceeded"),
            Self::Unauthenticated => (401, "unauthenticated", "Unauthenticated"),
            Self::PaymentRequired => (402, "payment_required", "Payment required"),
            Self::Forbidden => (403, "forbidden", "Forbidden"),
            Self::NotFound => (404, "not_found", "Not found"),
            Self::MethodNotAllowed => (405, "method_not_allowed", "Method not allowed"),
            Self::Conflict => (409, "conflict", "Conflict"),
            Self::TransitionInProgress => (409, "transition_in_progress", "Transition in progress"),
            Self::InvalidTransition => (409, "invalid_transition", "Invalid transition"),
            Self::PayloadTooLarge => (413, "payload_too_large", "Payload too large"),
            Self::UriTooLong => (414, "uri_too_long", "URI too long"),
            Self::UnsupportedMediaType => (415, "unsupported_media_type", "Unsupported media type"),
            Self::ValidationFailed => (422, "validation_failed", "Validation failed"),
            Self::IdempotencyKeyReused => (422, "idempotency_key_reused", "Idempotency key reused"),
            Self::QuotaExceeded => (429, "quota_exceeded", "Quota exceeded"),
            Self::RateLimited => (429, "rate_limited", "Rate limited"),
            Self::HeaderFieldsTooLarge => (431, "header_fields_too_large", "Request header fields too large"),
            Self::Internal => (500, "internal", "Internal error"),
            Self::UpstreamFailed => (502, "upstream_failed", "Upstream failed"),
            Self::Unavailable => (503, "unavailable", "Unavailable"),
            Self::UpstreamTimeout => (504, "upstream_timeout", "Upstream timed out"),
        }
    }

    pub const fn status(self) -> u16 {
        self.describe().0
    }

    pub const fn as_str(self) -> &'static str {
        self.describe().1
    }

    pub const fn title(self) -> &'static str {
        self.describe().2
    }
}
