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
pub use prompt::{Message, Passage, Prompt};

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

/// What a provider returns: the text, the tokens it reports (or we counted), and the model that ran.
#[derive(Clone, Debug, PartialEq)]
pub struct Generation {
    pub text: String,
    pub usage: TokenUsage,
    pub model: String,
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

/// One piece of a streamed generation: text as it arrives, then, last, the whole generation with its usage.
/// A stream that ends without `Done` failed, and bills nothing.
#[derive(Clone, Debug, PartialEq)]
pub enum Chunk {
    Text(String),
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
    let words: Vec<Result<Chunk, LlmError>> =
        generation.text.split_inclusive(' ').map(|w| Ok(Chunk::Text(w.to_owned()))).collect();
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
