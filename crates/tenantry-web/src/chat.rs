//! `POST /v1/chat/completions`: OpenAI's chat API over the tenant's documents, so any OpenAI SDK works with a
//! Tenantry key and base URL. The last user message is the question; retrieval, the system prompt and the
//! model are the tenant's. Responses, stream chunks, `usage` and errors have OpenAI's shapes; citations ride
//! along as an extra `citations` field, which SDKs keep.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tenantry_domain::lifecycle::EndpointClass;
use tenantry_domain::{ErrorCode, RequestId};
use tenantry_service::gateway::Scope;
use tenantry_service::query::{Citation, QueryEvent, QueryRequest, QueryResult};
use tenantry_service::{ServiceError, Services};
use utoipa::ToSchema;

use crate::api::{tenant, with_quota_headers};

#[derive(Debug, Deserialize, ToSchema)]
pub struct ChatCompletionRequest {
    /// Omit, `"default"`, or the tenant's configured model; any other model is refused (404).
    pub model: Option<String>,
    pub messages: Vec<ChatMessage>,
    #[serde(default)]
    pub stream: bool,
    pub stream_options: Option<StreamOptions>,
    /// Caps the answer's tokens (never above the service's own cap).
    pub max_tokens: Option<u32>,
    pub max_completion_tokens: Option<u32>,
    /// Only 1 is supported.
    pub n: Option<u32>,
    // Sampling fields (`temperature`, `top_p`, `user`, …) are accepted and ignored: the tenant's model
    // settings decide.
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct ChatMessage {
    pub role: String,
    /// A string, or an array of content parts of which the `text` parts are read.
    #[schema(value_type = Option<MessageContent>)]
    pub content: Option<Value>,
}

/// A message's content as OpenAI's API types it (schema only: the handler reads the JSON value).
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
#[serde(untagged)]
pub enum MessageContent {
    Text(String),
    Parts(Vec<ContentPart>),
}

/// One part of a message's content: `{"type": "text", "text": …}` is read; other types (images, audio) are
/// accepted and skipped.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    pub text: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ChatCompletion {
    pub id: String,
    /// Always `chat.completion`.
    pub object: &'static str,
    pub created: i64,
    pub model: String,
    pub choices: Vec<ChatChoice>,
    pub usage: ChatUsage,
    /// The passages the answer cites (Tenantry extension).
    #[schema(value_type = Vec<Object>)]
    pub citations: Vec<Citation>,
    #[schema(value_type = Option<String>)]
    pub system_fingerprint: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ChatChoice {
    pub index: u32,
    pub message: AssistantMessage,
    pub finish_reason: &'static str,
    #[schema(value_type = Option<Object>)]
    pub logprobs: Option<Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AssistantMessage {
    pub role: &'static str,
    pub content: String,
    #[schema(value_type = Option<String>)]
    pub refusal: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ChatUsage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// `prompt_tokens + completion_tokens`, as OpenAI counts it.
    pub total_tokens: u64,
    /// Tokens an upstream embedding model billed for retrieval (Tenantry extension; 0 with a local embedder).
    pub embedding_tokens: u64,
    /// What the request cost the tenant, embedding included, in micro-dollars (Tenantry extension).
    pub cost_micros: i64,
}

/// An error on the OpenAI-compatible routes: problem+json's fields plus OpenAI's
/// `{"error": {message, type, param, code}}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct OpenAiErrorBody {
    #[serde(flatten)]
    pub problem: crate::problem::Problem,
    #[schema(value_type = Object)]
    pub error: Value,
}

/// An error on this route, shaped as OpenAI's API shapes it, with the same HTTP status as problem+json would
/// have (so SDKs raise the matching exception) and our `code`.
#[derive(Debug)]
pub struct OpenAiError {
    error: ServiceError,
    /// An OpenAI code that replaces ours where SDK users would look for it (`model_not_found`).
    code: Option<&'static str>,
    param: Option<&'static str>,
}

impl From<ServiceError> for OpenAiError {
    fn from(error: ServiceError) -> Self {
        Self { error, code: None, param: None }
    }
}

impl From<crate::problem::ApiError> for OpenAiError {
    fn from(e: crate::problem::ApiError) -> Self {
        e.0.into()
    }
}

impl OpenAiError {
    fn invalid(param: &'static str, message: impl Into<String>) -> Self {
        Self { error: ServiceError::new(ErrorCode::BadRequest, message), code: None, param: Some(param) }
    }

    fn body(&self) -> Value {
        let kind = match self.error.code {
            ErrorCode::Unauthenticated => "authentication_error",
            ErrorCode::Forbidden => "permission_error",
            ErrorCode::PaymentRequired => "billing_error",
            ErrorCode::QuotaExceeded => "insufficient_quota",
            ErrorCode::RateLimited => "rate_limit_error",
            ErrorCode::Internal | ErrorCode::Unavailable => "server_error",
            ErrorCode::UpstreamFailed | ErrorCode::UpstreamTimeout => "api_error",
            _ => "invalid_request_error",
        };
        json!({"error": {
            "message": self.error.detail,
            "type": kind,
            "param": self.param,
            "code": self.code.unwrap_or(self.error.code.as_str()),
        }})
    }
}

impl IntoResponse for OpenAiError {
    /// One body that is both: API.md's problem+json (`type`, `title`, `status`, `detail`, `code`) and OpenAI's
    /// `error` object, which the SDKs read whatever the content type says.
    fn into_response(self) -> Response {
        let openai = match self.body() {
            Value::Object(fields) => fields,
            _ => serde_json::Map::new(),
        };
        crate::problem::problem_response(&self.error, openai)
    }
}

/// Answer a chat completion from the tenant's documents with the tenant's model (OpenAI-compatible).
#[utoipa::path(post, path = "/v1/chat/completions", tag = "query", security(("bearer" = [])),
    request_body = ChatCompletionRequest,
    responses(
        (status = 200, description = "A `chat.completion`, or with `stream: true` server-sent \
            `chat.completion.chunk`s ending with `data: [DONE]`",
            content((ChatCompletion = "application/json"), (String = "text/event-stream"))),
        (status = 400, body = OpenAiErrorBody, content_type = "application/problem+json"), (status = 401, body = OpenAiErrorBody, content_type = "application/problem+json"),
        (status = 404, body = OpenAiErrorBody, content_type = "application/problem+json"), (status = 429, body = OpenAiErrorBody, content_type = "application/problem+json"),
        (status = 502, body = OpenAiErrorBody, content_type = "application/problem+json"), (status = 504, body = OpenAiErrorBody, content_type = "application/problem+json"),
    ))]
pub async fn chat_completions(
    State(s): State<Services>,
    Extension(rid): Extension<RequestId>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, OpenAiError> {
    let ctx = tenant(&s, &headers, rid, EndpointClass::Service, Scope::Query).await?;
    let request: ChatCompletionRequest = serde_json::from_slice(&body)
        .map_err(|e| OpenAiError::invalid("body", format!("the request body is not a valid chat completion: {e}")))?;
    match request.model.as_deref() {
        None | Some("default") => {}
        Some(m) if m == ctx.model.name => {}
        Some(m) => {
            let message = format!(
                "The model `{m}` does not exist or you do not have access to it. This tenant's model is `{}`; \
                 pass it, \"default\", or no model.",
                ctx.model.name
            );
            return Err(OpenAiError {
                error: ServiceError::new(ErrorCode::NotFound, message),
                code: Some("model_not_found"),
                param: Some("model"),
            });
        }
    }
    if request.n.is_some_and(|n| n != 1) {
        return Err(OpenAiError::invalid("n", "only n = 1 is supported"));
    }
    let question = request
        .messages
        .iter()
        .rev()
        .find(|m| m.role == "user")
        .map(|m| text_of(m.content.as_ref()))
        .filter(|q| !q.trim().is_empty())
        .ok_or_else(|| OpenAiError::invalid("messages", "messages must include a user message with text"))?;
    let query = QueryRequest {
        question,
        top_k: None,
        max_completion_tokens: request.max_completion_tokens.or(request.max_tokens),
    };
    let id = format!("chatcmpl-{}", ctx.request_id);
    let created = s.clock().now().millis() / 1000;

    if !request.stream {
        let result = s.query(&ctx, &query).await?;
        let completion = completion(id, created, result);
        return Ok(with_quota_headers(&s, &ctx, axum::Json(completion).into_response()).await?);
    }
    let include_usage = request.stream_options.is_some_and(|o| o.include_usage);
    let chunks = Chunks { id, created, model: ctx.model.name.clone(), include_usage };
    let first = chunks.delta(json!({"role": "assistant", "content": ""}), None);
    let events = s.query_stream(&ctx, &query).await?.flat_map(move |event| futures::stream::iter(chunks.events(event)));
    let stream = futures::stream::once(async move { first }).chain(events).map(Ok::<_, std::convert::Infallible>);
    Ok(with_quota_headers(&s, &ctx, Sse::new(stream).keep_alive(KeepAlive::default()).into_response()).await?)
}

/// A message's text: the string, or its `text` parts joined.
fn text_of(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter(|p| p["type"] == "text")
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

fn usage(result: &QueryResult) -> ChatUsage {
    ChatUsage {
        prompt_tokens: result.usage.prompt_tokens,
        completion_tokens: result.usage.completion_tokens,
        total_tokens: result.usage.prompt_tokens + result.usage.completion_tokens,
        embedding_tokens: result.usage.embedding_tokens,
        cost_micros: result.usage.cost_micros,
    }
}

fn completion(id: String, created: i64, result: QueryResult) -> ChatCompletion {
    ChatCompletion {
        id,
        object: "chat.completion",
        created,
        usage: usage(&result),
        model: result.model,
        choices: vec![ChatChoice {
            index: 0,
            message: AssistantMessage { role: "assistant", content: result.answer, refusal: None },
            finish_reason: "stop",
            logprobs: None,
        }],
        citations: result.citations,
        system_fingerprint: None,
    }
}

/// Builds the `chat.completion.chunk` events of one streamed completion.
struct Chunks {
    id: String,
    created: i64,
    model: String,
    include_usage: bool,
}

impl Chunks {
    /// A `chat.completion.chunk` with these `choices`; `usage` is null on every chunk but the usage chunk
    /// when the client asked for usage, and absent otherwise, as OpenAI sends it.
    fn chunk(&self, choices: Value) -> Value {
        let mut chunk = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": null,
            "choices": choices,
        });
        if self.include_usage {
            chunk["usage"] = Value::Null;
        }
        chunk
    }

    fn delta(&self, delta: Value, finish_reason: Option<&str>) -> Event {
        let choices = json!([{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason}]);
        Event::default().data(self.chunk(choices).to_string())
    }

    /// Tokens become content deltas; the end is a `stop` chunk (with the citations), the usage chunk when
    /// asked for (`stream_options.include_usage`, as OpenAI: empty `choices`), then `[DONE]`. A failure is
    /// an `{"error": …}` event, which OpenAI's SDKs raise as an API error.
    fn events(&self, event: QueryEvent) -> Vec<Event> {
        match event {
            QueryEvent::Token(text) => vec![self.delta(json!({ "content": text }), None)],
            QueryEvent::Finished(result) => {
                let mut stop =
                    self.chunk(json!([{"index": 0, "delta": {}, "logprobs": null, "finish_reason": "stop"}]));
                stop["citations"] = json!(result.citations);
                let mut events = vec![Event::default().data(stop.to_string())];
                if self.include_usage {
                    let mut usage_chunk = self.chunk(json!([]));
                    usage_chunk["usage"] = json!(usage(&result));
                    events.push(Event::default().data(usage_chunk.to_string()));
                }
                events.push(Event::default().data("[DONE]"));
                events
            }
            QueryEvent::Failed(error) => {
                vec![Event::default().data(OpenAiError::from(error).body().to_string())]
            }
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ModelList {
    /// Always `list`.
    pub object: &'static str,
    pub data: Vec<ModelEntry>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ModelEntry {
    pub id: String,
    /// Always `model`.
    pub object: &'static str,
    pub created: i64,
    pub owned_by: &'static str,
}

/// The models this key can use on `/v1/chat/completions`: the tenant's configured model (OpenAI-compatible).
#[utoipa::path(get, path = "/v1/models", tag = "query", security(("bearer" = [])),
    responses((status = 200, body = ModelList), (status = 401, body = OpenAiErrorBody, content_type = "application/problem+json")))]
pub async fn list_models(
    State(s): State<Services>,
    Extension(rid): Extension<RequestId>,
    headers: HeaderMap,
) -> Result<axum::Json<ModelList>, OpenAiError> {
    let ctx = tenant(&s, &headers, rid, EndpointClass::Service, Scope::Query).await?;
    let entry = ModelEntry { id: ctx.model.name.clone(), object: "model", created: 0, owned_by: "tenantry" };
    Ok(axum::Json(ModelList { object: "list", data: vec![entry] }))
}
