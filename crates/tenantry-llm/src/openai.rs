//! Any OpenAI-compatible endpoint (OpenAI, Azure-style deployments, vLLM, Ollama, llama.cpp server):
//! `POST {base_url}/chat/completions`, plain or streamed as server-sent events, and `POST {base_url}/embeddings`.
//!
//! Each attempt is bounded by the model's timeout (for a stream: until the response starts, then between
//! chunks); a 429, 5xx or refused connection is retried with exponential backoff (or the upstream's
//! `Retry-After`) up to the model's retry count. Usage is the upstream's `usage` (streams ask for it with
//! `stream_options.include_usage`), else counted with our tokenizer.

use std::time::Duration;

use async_trait::async_trait;
use eventsource_stream::Eventsource;
use futures::stream::{BoxStream, StreamExt};
use serde::Deserialize;
use serde_json::{json, Value};
use tenantry_domain::{tokens, ModelSpec};

use crate::prompt::Prompt;
use crate::{Chunk, ChunkStream, FinishReason, Generation, LlmError, Provider, TokenUsage};

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
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct ChoiceMessage {
    content: Option<String>,
    tool_calls: Option<Value>,
}

#[derive(Deserialize)]
pub(crate) struct Usage {
    pub(crate) prompt_tokens: u64,
    #[serde(default)]
    pub(crate) completion_tokens: u64,
}

/// One `chat.completion.chunk` of a stream.
#[derive(Deserialize)]
struct StreamChunk {
    #[serde(default)]
    choices: Vec<StreamChoice>,
    usage: Option<Usage>,
    error: Option<Value>,
}

#[derive(Deserialize)]
struct StreamChoice {
    #[serde(default)]
    delta: Delta,
    finish_reason: Option<String>,
}

#[derive(Default, Deserialize)]
struct Delta {
    content: Option<String>,
    tool_calls: Option<Value>,
}

enum Attempt {
    Done(reqwest::Response),
    Retry(Option<Duration>),
    Fail(LlmError),
}

impl OpenAiCompatible {
    pub fn new(key_source: fn(&str) -> Option<String>) -> Self {
        let client = reqwest::Client::builder().pool_idle_timeout(Duration::from_secs(60)).build().unwrap_or_default();
        Self { client, key_source }
    }

    /// POSTs `body` to `{base_url}/{path}`, retrying what may succeed later; returns the first successful
    /// response. A non-streaming attempt's timeout also covers reading the body.
    pub(crate) async fn send(
        &self,
        model: &ModelSpec,
        path: &str,
        body: &Value,
        streaming: bool,
    ) -> Result<reqwest::Response, LlmError> {
        let mut backoff = Duration::from_millis(200);
        for attempt in 0..=model.max_retries {
            match self.attempt(model, path, body, streaming).await {
                Attempt::Done(response) => return Ok(response),
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

    async fn attempt(&self, model: &ModelSpec, path: &str, body: &Value, streaming: bool) -> Attempt {
        let mut request = self.client.post(format!("{}/{path}", model.base_url.trim_end_matches('/'))).json(body);
        if !streaming {
            request = request.timeout(model.timeout);
        }
        if let Some(key) = (!model.api_key_env.is_empty()).then(|| (self.key_source)(&model.api_key_env)).flatten() {
            request = request.bearer_auth(key);
        }
        let response = match tokio::time::timeout(model.timeout, request.send()).await {
            Err(_) => return Attempt::Fail(LlmError::Timeout),
            Ok(Ok(r)) => r,
            Ok(Err(e)) if e.is_timeout() => return Attempt::Fail(LlmError::Timeout),
            Ok(Err(e)) if e.is_builder() => return Attempt::Fail(LlmError::Upstream(e.to_string())),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, model = %model.name, "upstream unreachable; retrying");
                return Attempt::Retry(None);
            }
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
        Attempt::Done(response)
    }

    /// The request: the client's parameters as they came, then what the service decides (the model, the
    /// messages, the token cap, streaming), which no parameter overrides.
    fn chat_body(model: &ModelSpec, prompt: &Prompt, stream: bool) -> Value {
        let mut body = prompt.options().upstream.clone();
        body.insert("model".into(), json!(model.upstream_model));
        body.insert("messages".into(), json!(prompt.messages()));
        body.insert("max_tokens".into(), json!(prompt.max_completion_tokens()));
        body.remove("max_completion_tokens");
        body.insert("stream".into(), json!(stream));
        if stream {
            body.insert("stream_options".into(), json!({"include_usage": true}));
        }
        Value::Object(body)
    }
}

pub(crate) fn read_error(e: reqwest::Error) -> LlmError {
    if e.is_timeout() {
        LlmError::Timeout
    } else {
        LlmError::Upstream(format!("unreadable response: {e}"))
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Why a generation ended when the upstream did not say: `length` when it used its whole allowance.
fn stopped_by(usage: &TokenUsage, prompt: &Prompt) -> FinishReason {
    match usage.completion_tokens >= u64::from(prompt.max_completion_tokens()) {
        true => FinishReason::Length,
        false => FinishReason::Stop,
    }
}

/// Adds one streamed tool-call delta to the calls assembled so far: the first delta of a call (by `index`)
/// brings its `id`, `type` and function `name`; later ones append to its `arguments`.
fn merge_tool_call(calls: &mut Vec<Value>, delta: &Value) {
    let index = delta["index"].as_u64().unwrap_or(0) as usize;
    if index >= calls.len() {
        calls.resize(index + 1, json!({"type": "function", "function": {"name": "", "arguments": ""}}));
    }
    let call = &mut calls[index];
    for key in ["id", "type"] {
        if let Some(v) = delta.get(key).filter(|v| !v.is_null()) {
            call[key] = v.clone();
        }
    }
    for key in ["name", "arguments"] {
        if let Some(piece) = delta["function"][key].as_str() {
            let joined = format!("{}{piece}", call["function"][key].as_str().unwrap_or(""));
            call["function"][key] = json!(joined);
        }
    }
}

/// Usage as the upstream reported it, or as we count it over what was sent and received.
fn usage_or_counted(reported: Option<Usage>, prompt: u64, text: &str) -> TokenUsage {
    match reported {
        Some(u) => TokenUsage { prompt_tokens: u.prompt_tokens, completion_tokens: u.completion_tokens },
        None => TokenUsage { prompt_tokens: prompt, completion_tokens: tokens::count(text) },
    }
}

#[async_trait]
impl Provider for OpenAiCompatible {
    async fn generate(&self, model: &ModelSpec, prompt: &Prompt) -> Result<Generation, LlmError> {
        let response = self.send(model, "chat/completions", &Self::chat_body(model, prompt, false), false).await?;
        let parsed: ChatResponse = response.json().await.map_err(read_error)?;
        let choice = parsed.choices.into_iter().next();
        let finish_reason = choice.as_ref().and_then(|c| c.finish_reason.as_deref()).map(FinishReason::parse);
        let (text, tool_calls) = match choice {
            Some(c) => (c.message.content.unwrap_or_default(), c.message.tool_calls.filter(|t| !t.is_null())),
            None => (String::new(), None),
        };
        // Bill the model we configured and asked for; the upstream's name for it is logged, not trusted.
        if let Some(upstream) = parsed.model.as_deref().filter(|m| *m != model.upstream_model) {
            tracing::debug!(requested = %model.upstream_model, reported = upstream, "upstream reports another model name");
        }
        let usage = usage_or_counted(parsed.usage, prompt.token_count(), &text);
        let finish_reason = finish_reason.unwrap_or_else(|| stopped_by(&usage, prompt));
        Ok(Generation { text, usage, model: model.name.clone(), finish_reason, tool_calls })
    }

    async fn stream(&self, model: &ModelSpec, prompt: &Prompt) -> Result<ChunkStream, LlmError> {
        let response = self.send(model, "chat/completions", &Self::chat_body(model, prompt, true), true).await?;
        let events = response.bytes_stream().eventsource().map(|e| e.map_err(|e| e.to_string())).boxed();
        let state = StreamState {
            events,
            idle: model.timeout,
            text: String::new(),
            tool_calls: Vec::new(),
            finish_reason: None,
            usage: None,
            prompt_tokens: prompt.token_count(),
            max_completion_tokens: prompt.max_completion_tokens(),
            model: model.name.clone(),
            finished: false,
        };
        Ok(futures::stream::unfold(state, StreamState::next).boxed())
    }
}

/// Reads a chat completion stream: text deltas as they come, the usage chunk, and `[DONE]`. A stream that
/// ends before `[DONE]`, stalls for longer than the model's timeout, or carries an error object has failed.
struct StreamState {
    events: BoxStream<'static, Result<eventsource_stream::Event, String>>,
    idle: Duration,
    text: String,
    /// The tool calls as assembled from their deltas, by index.
    tool_calls: Vec<Value>,
    finish_reason: Option<FinishReason>,
    usage: Option<Usage>,
    prompt_tokens: u64,
    max_completion_tokens: u32,
    model: String,
    finished: bool,
}

impl StreamState {
    async fn next(mut self) -> Option<(Result<Chunk, LlmError>, Self)> {
        if self.finished {
            return None;
        }
        loop {
            let item = match tokio::time::timeout(self.idle, self.events.next()).await {
                Err(_) => return self.fail(LlmError::Timeout),
                Ok(None) => return self.fail(LlmError::Upstream("the stream ended before [DONE]".into())),
                Ok(Some(Err(e))) => return self.fail(LlmError::Upstream(format!("unreadable stream: {e}"))),
                Ok(Some(Ok(event))) => event,
            };
            if item.data.trim() == "[DONE]" {
                self.finished = true;
                let usage = usage_or_counted(self.usage.take(), self.prompt_tokens, &self.text);
                let finish_reason = self.finish_reason.take().unwrap_or(
                    if usage.completion_tokens >= u64::from(self.max_completion_tokens) {
                        FinishReason::Length
                    } else {
                        FinishReason::Stop
                    },
                );
                let tool_calls =
                    (!self.tool_calls.is_empty()).then(|| Value::Array(std::mem::take(&mut self.tool_calls)));
                let generation = Generation {
                    text: std::mem::take(&mut self.text),
                    usage,
                    model: self.model.clone(),
                    finish_reason,
                    tool_calls,
                };
                return Some((Ok(Chunk::Done(generation)), self));
            }
            let chunk: StreamChunk = match serde_json::from_str(&item.data) {
                Ok(c) => c,
                Err(e) => return self.fail(LlmError::Upstream(format!("unreadable stream chunk: {e}"))),
            };
            if let Some(error) = chunk.error {
                return self
                    .fail(LlmError::Upstream(format!("error in stream: {}", truncate(&error.to_string(), 300))));
            }
            if chunk.usage.is_some() {
                self.usage = chunk.usage;
            }
            let mut text = String::new();
            let mut calls = Vec::new();
            for choice in chunk.choices {
                if let Some(reason) = choice.finish_reason {
                    self.finish_reason = Some(FinishReason::parse(&reason));
                }
                text.extend(choice.delta.content);
                if let Some(Value::Array(deltas)) = choice.delta.tool_calls {
                    calls.extend(deltas);
                }
            }
            if !calls.is_empty() {
                for delta in &calls {
                    merge_tool_call(&mut self.tool_calls, delta);
                }
                self.text.push_str(&text);
                return Some((Ok(Chunk::ToolCalls(Value::Array(calls))), self));
            }
            if !text.is_empty() {
                self.text.push_str(&text);
                return Some((Ok(Chunk::Text(text)), self));
            }
        }
    }

    fn fail(mut self, error: LlmError) -> Option<(Result<Chunk, LlmError>, Self)> {
        self.finished = true;
        Some((Err(error), self))
    }
}
