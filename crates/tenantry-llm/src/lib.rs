//! Language models: the prompt assembled within a token budget, the provider interface, and the built-in
//! offline provider (an extractive answerer). Token usage is counted with the real tokenizer when a provider
//! does not report it.

mod local;
mod openai;
pub mod prompt;

use std::sync::Arc;

use async_trait::async_trait;
use tenantry_domain::{ModelSpec, ProviderKind};

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

#[async_trait]
pub trait Provider: Send + Sync {
    async fn generate(&self, model: &ModelSpec, prompt: &Prompt) -> Result<Generation, LlmError>;
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
        match model.provider {
            ProviderKind::Local => self.local.generate(model, prompt).await,
            ProviderKind::OpenAi => match &self.openai {
                Some(p) => p.generate(model, prompt).await,
                None => Err(LlmError::NoProvider(model.name.clone())),
            },
        }
    }
}
