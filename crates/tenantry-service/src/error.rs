//! The service layer's error: a public code from the one table in `tenantry_domain::ErrorCode`, a
//! human-readable detail, and (for 429/503) when to retry. Internal causes are logged, not shown.

use tenantry_domain::ErrorCode;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code:?}: {detail}")]
pub struct ServiceError {
    pub code: ErrorCode,
    pub detail: String,
    pub retry_after_secs: Option<u64>,
}

impl ServiceError {
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        Self { code, detail: detail.into(), retry_after_secs: None }
    }

    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(ErrorCode::NotFound, format!("no such {what}"))
    }

    pub fn validation(detail: impl Into<String>) -> Self {
        Self::new(ErrorCode::ValidationFailed, detail)
    }

    /// Refuses text that holds a control character other than white space (NUL among them): no field a
    /// person types needs one, and PostgreSQL cannot store NUL in text at all.
    pub fn unless_plain_text(field: &str, value: &str) -> Result<(), Self> {
        match value.chars().any(tenantry_ingest::is_stray_control) {
            true => Err(Self::validation(format!("{field} must not contain control characters"))),
            false => Ok(()),
        }
    }

    /// An internal failure: the cause goes to the log with the request's span, the client gets a plain 500.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(ErrorCode::Internal, "an internal error occurred; it has been logged")
    }
}

impl From<tenantry_store::StoreError> for ServiceError {
    fn from(e: tenantry_store::StoreError) -> Self {
        use tenantry_store::StoreError as S;
        match e {
            S::NotFound => Self::new(ErrorCode::NotFound, "not found"),
            S::Conflict(what) => Self::new(ErrorCode::Conflict, format!("{what} already exists")),
            S::Concurrent => Self::new(ErrorCode::TransitionInProgress, "another change is in progress; retry"),
            S::TenantErased => Self::new(ErrorCode::Unauthenticated, "this account was erased"),
            other => Self::internal(other),
        }
    }
}

impl From<tenantry_search::SearchError> for ServiceError {
    fn from(e: tenantry_search::SearchError) -> Self {
        match e {
            // The embedding model is a model provider: its failure is the upstream's, as for generation.
            tenantry_search::SearchError::Embed(e) => {
                tracing::warn!(error = %e, "embedding model failed");
                Self::new(ErrorCode::UpstreamFailed, "the embedding model failed")
            }
            other => Self::internal(other),
        }
    }
}

impl From<tenantry_rag::RagError> for ServiceError {
    fn from(e: tenantry_rag::RagError) -> Self {
        use tenantry_llm::LlmError;
        use tenantry_rag::RagError;
        match e {
            RagError::Llm(LlmError::Timeout) => Self::new(ErrorCode::UpstreamTimeout, "the model provider timed out"),
            RagError::Llm(LlmError::Upstream(m)) => {
                tracing::warn!(error = %m, "model provider failed");
                Self::new(ErrorCode::UpstreamFailed, "the model provider failed")
            }
            RagError::Llm(LlmError::NoProvider(m)) => {
                Self::new(ErrorCode::UpstreamFailed, format!("model {m:?} has no configured provider"))
            }
            RagError::ModeUnavailable(m) => {
                Self::new(ErrorCode::Unavailable, format!("retrieval mode {} is not available", m.as_str()))
            }
            RagError::Retrieval(m) => Self::internal(m),
            RagError::ContextLength(e) => Self::new(ErrorCode::ContextLengthExceeded, e.to_string()),
        }
    }
}

impl From<tenantry_llm::LlmError> for ServiceError {
    fn from(e: tenantry_llm::LlmError) -> Self {
        tenantry_rag::RagError::Llm(e).into()
    }
}

impl From<tokio::task::JoinError> for ServiceError {
    fn from(e: tokio::task::JoinError) -> Self {
        Self::internal(format!("background task failed: {e}"))
    }
}

pub type ServiceResult<T> = Result<T, ServiceError>;
