//! Language models: the prompt assembled within a token budget, the provider interface, and the built-in
//! offline provider (an extractive answerer). Token usage is counted with the real tokenizer when a provider
//! does not report it.

mod embed;
mod local;
mod openai;
pub mod prompt;

use std::sync::Arc;

use async_trait::async_trait;
use futures::stream::{self, BoxStream, StreamExt};
use tenantry_domain::{ModelSpec, ProviderKind};

pub use embed::{Embedder, Embeddings, OpenAiEmbedder};
pub use local::LocalExtractive;
pub use openai::OpenAiCompatible;
pub use prompt::{ContextLengthExceeded, Conversation, Options, Passage, Prompt, ResponseFormat, Rewrite, Role, Turn};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct TokenUsage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

impl TokenUsage {
    pub fn total(self) -> u64 {
        self.prompt_tokens + self.completion_tokens
    }
}

impl std::ops::Add for TokenUsage {
    type Output = Self;

    fn add(self, other: Self) -> Self {
        Self {
            prompt_tokens: self.prompt_tokens + other.prompt_tokens,
            completion_tokens: self.completion_tokens + other.completion_tokens,
        }
    }
}

/// What a provider returns: the text, the tokens it reports (or we counted), the model that ran, why it
/// stopped, and the tool calls it made (OpenAI's `tool_calls` array, as the upstream sent it).
#[derive(Clone, Debug, PartialEq)]
pub struct Generation {
    pub text: String,
    pub usage: TokenUsage,
    pub model: String,
    pub finish_reason: FinishReason,
    pub tool_calls: Option<serde_json::Value>,
}

/// Why a generation ended, as OpenAI names it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum FinishReason {
    #[default]
    Stop,
    /// Cut by the token limit.
    Length,
    ToolCalls,
    ContentFilter,
    /// Any other reason an upstream gave, passed on as it came.
    Other(String),
}

impl FinishReason {
    pub fn parse(reason: &str) -> Self {
        match reason {
            "stop" => Self::Stop,
            "length" => Self::Length,
            "tool_calls" | "function_call" => Self::ToolCalls,
            "content_filter" => Self::ContentFilter,
            other => Self::Other(other.to_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::Stop => "stop",
            Self::Length => "length",
            Self::ToolCalls => "tool_calls",
            Self::ContentFilter => "content_filter",
            Self::Other(reason) => reason,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    #[error("the model provider failed: {0}")]
    Upstream(String),
    #[error("the model provider timed out")]
    Timeout,
    #[error("model {0:?} is not served by any provider")]
    NoProvider(String),
}

/// One piece of a streamed generation: text as it arrives, tool-call deltas as the upstream sent them
/// (OpenAI's `delta.tool_calls`), then, last, the whole generation with its usage. A stream that ends
/// without `Done` failed, and bills nothing.
#[derive(Clone, Debug, PartialEq)]
pub enum Chunk {
    Text(String),
    ToolCalls(serde_json::Value),
    Done(Generation),
}

pub type ChunkStream = BoxStream<'static, Result<Chunk, LlmError>>;

#[async_trait]
pub trait Provider: Send + Sync {
    async fn generate(&self, model: &ModelSpec, prompt: &Prompt) -> Result<Generation, LlmError>;

    /// Streams the generation. Errors before the first chunk (connection, status, retries exhausted) are
    /// returned here; errors after it arrive in the stream. The default generates, then replays word by word.
    async fn stream(&self, model: &ModelSpec, prompt: &Prompt) -> Result<ChunkStream, LlmError> {
        Ok(replay(self.generate(model, prompt).await?))
    }
}

/// A finished generation delivered as a stream: its words, then `Done`.
pub fn replay(generation: Generation) -> ChunkStream {
    let mut words: Vec<Result<Chunk, LlmError>> =
        generation.text.split_inclusive(' ').map(|w| Ok(Chunk::Text(w.to_owned()))).collect();
    if let Some(serde_json::Value::Array(calls)) = &generation.tool_calls {
        // A stream's tool-call deltas carry their place in the array.
        let indexed = calls
            .iter()
            .enumerate()
            .map(|(i, call)| {
                let mut call = call.clone();
                call["index"] = serde_json::json!(i);
                call
            })
            .collect();
        words.push(Ok(Chunk::ToolCalls(serde_json::Value::Array(indexed))));
    }
    stream::iter(words).chain(stream::once(async move { Ok(Chunk::Done(generation)) })).boxed()
}

/// Dispatches to the provider a model is configured with.
#[derive(Clone)]
pub struct Providers {
    local: Arc<dyn Provider>,
    openai: Option<Arc<dyn Provider>>,
}

impl Default for Providers {
    fn default() -> Self {
        Self { local: Arc::new(LocalExtractive), openai: Some(Arc::new(OpenAiCompatible::default())) }
    }
}

impl Providers {
    pub fn with_openai(mut self, provider: Arc<dyn Provider>) -> Self {
        self.openai = Some(provider);
        self
    }

    pub async fn generate(&self, model: &ModelSpec, prompt: &Prompt) -> Result<Generation, LlmError> {
        self.provider(model)?.generate(model, prompt).await
    }

    pub async fn stream(&self, model: &ModelSpec, prompt: &Prompt) -> Result<ChunkStream, LlmError> {
        self.provider(model)?.stream(model, prompt).await
    }

    fn provider(&self, model: &ModelSpec) -> Result<&dyn Provider, LlmError> {
        match model.provider {
            ProviderKind::Local => Ok(self.local.as_ref()),
            ProviderKind::OpenAi => self.openai.as_deref().ok_or_else(|| LlmError::NoProvider(model.name.clone())),
        }
    }
}
