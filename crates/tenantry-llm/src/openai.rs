//! Any OpenAI-compatible chat endpoint (OpenAI, Azure-style deployments, vLLM, Ollama, llama.cpp server):
//! `POST {base_url}/chat/completions`. Each attempt is bounded by the model's timeout; a 429 or 5xx is
//! retried with exponential backoff (or the upstream's `Retry-After`) up to the model's retry count. Usage is
//! the upstream's `usage` when it reports one, else counted with our tokenizer.

use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::json;
use tenantry_domain::{tokens, ModelSpec};

use crate::prompt::Prompt;
use crate::{Generation, LlmError, Provider, TokenUsage};

/// Longest wait between retries, whatever the upstream asks.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct OpenAiCompatible {
    client: reqwest::Client,
    /// Reads an API key by environment variable name; injectable for tests.
    key_source: fn(&str) -> Option<String>,
}

impl Default for OpenAiCompatible {
    fn default() -> Self {
        Self::new(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
    }
}

#[derive(Deserialize)]
struct ChatResponse {
    choices: Vec<Choice>,
    model: Option<String>,
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct Choice {
    message: ChoiceMessage,
}

#[derive(Deserialize)]
struct ChoiceMessage {
    content: Option<String>,
}

#[derive(Deserialize)]
struct Usage {
    prompt_tokens: u64,
    completion_tokens: u64,
}

enum Attempt {
    Done(Generation),
    Retry(Option<Duration>),
    Fail(LlmError),
}

impl OpenAiCompatible {
    pub fn new(key_source: fn(&str) -> Option<String>) -> Self {
        let client = reqwest::Client::builder().pool_idle_timeout(Duration::from_secs(60)).build().unwrap_or_default();
        Self { client, key_source }
    }

    async fn attempt(&self, model: &ModelSpec, prompt: &Prompt) -> Attempt {
        let body = json!({
            "model": model.upstream_model,
            "messages": prompt.messages(),
            "max_tokens": prompt.max_completion_tokens(),
            "stream": false,
        });
        let mut request =
            self.client.post(format!("{}/chat/completions", model.base_url)).timeout(model.timeout).json(&body);
        if let Some(key) = (!model.api_key_env.is_empty()).then(|| (self.key_source)(&model.api_key_env)).flatten() {
            request = request.bearer_auth(key);
        }
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) if e.is_timeout() => return Attempt::Fail(LlmError::Timeout),
            Err(e) => return Attempt::Retry(None).or_fail_if(e.is_builder(), || LlmError::Upstream(e.to_string())),
        };
        let status = response.status();
        if status.as_u16() == 429 || status.is_server_error() {
            let retry_after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            tracing::warn!(status = status.as_u16(), model = %model.name, "upstream asked to retry");
            return Attempt::Retry(retry_after);
        }
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            return Attempt::Fail(LlmError::Upstream(format!("HTTP {status}: {}", truncate(&text, 300))));
        }
        let parsed: ChatResponse = match response.json().await {
            Ok(p) => p,
            Err(e) if e.is_timeout() => return Attempt::Fail(LlmError::Timeout),
            Err(e) => return Attempt::Fail(LlmError::Upstream(format!("unreadable response: {e}"))),
        };
        let text = parsed.choices.into_iter().next().and_then(|c| c.message.content).unwrap_or_default();
        let usage = match parsed.usage {
            Some(u) => TokenUsage { prompt_tokens: u.prompt_tokens, completion_tokens: u.completion_tokens },
            None => TokenUsage { prompt_tokens: prompt.token_count(), completion_tokens: tokens::count(&text) },
        };
        // Bill the model we configured and asked for; the upstream's name for it is logged, not trusted.
        if let Some(upstream) = parsed.model.as_deref().filter(|m| *m != model.upstream_model) {
            tracing::debug!(requested = %model.upstream_model, reported = upstream, "upstream reports another model name");
        }
        Attempt::Done(Generation { text, usage, model: model.name.clone() })
    }
}

impl Attempt {
    fn or_fail_if(self, fail: bool, err: impl FnOnce() -> LlmError) -> Attempt {
        if fail {
            Attempt::Fail(err())
        } else {
            self
        }
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[async_trait]
impl Provider for OpenAiCompatible {
    async fn generate(&self, model: &ModelSpec, prompt: &Prompt) -> Result<Generation, LlmError> {
        let mut backoff = Duration::from_millis(200);
        for attempt in 0..=model.max_retries {
            match self.attempt(model, prompt).await {
                Attempt::Done(g) => return Ok(g),
                Attempt::Fail(e) => return Err(e),
                Attempt::Retry(after) if attempt < model.max_retries => {
                    tokio::time::sleep(after.unwrap_or(backoff).min(MAX_BACKOFF)).await;
                    backoff *= 2;
                }
                Attempt::Retry(_) => break,
            }
        }
        Err(LlmError::Upstream(format!("gave up after {} retries", model.max_retries)))
    }
}
