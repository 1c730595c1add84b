//! `POST /v1/chat/completions`: OpenAI's chat API over the tenant's documents, so any OpenAI SDK works with a
//! Tenantry key and base URL. The last user message is the question; retrieval, the system prompt and the
//! model are the tenant's. Responses, stream chunks, `usage` and errors have OpenAI's shapes; citations ride
//! along as an extra `citations` field, which SDKs keep.

use axum::body::Bytes;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tenantry_domain::{ErrorCode, ModelSpec, ProviderKind};
use tenantry_service::query::{
    Citation, Conversation, Options, QueryEvent, QueryRequest, QueryResult, ResponseFormat, Role, Turn,
};
use tenantry_service::{ServiceError, Services};
use utoipa::ToSchema;

use crate::extract::{Asks, Tenant};
use crate::problem::ApiError;

#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct ChatCompletionRequest {
    /// Omit, `"default"`, or the tenant's configured model; any other model is refused (404).
    pub model: Option<String>,
    /// The conversation: `system`/`developer` instructions (after the tenant's own prompt), earlier
    /// `user`/`assistant`/`tool` turns, and a last `user` message, the question retrieval answers.
    pub messages: Vec<ChatMessage>,
    #[serde(default)]
    pub stream: bool,
    pub stream_options: Option<StreamOptions>,
    /// Caps the answer's tokens (default 512, at most 16,384 and what the model's window leaves).
    #[schema(minimum = 1)]
    pub max_tokens: Option<u32>,
    #[schema(minimum = 1)]
    pub max_completion_tokens: Option<u32>,
    /// Only 1 is supported.
    pub n: Option<u32>,
    /// 0 to 2. This and the parameters below reach a hosted model as they came; the built-in offline model
    /// honours `stop` and `response_format` `json_object`, ignores sampling, and refuses `tools`,
    /// `json_schema` and `logprobs` (400 `unsupported_parameter`).
    pub temperature: Option<f64>,
    /// 0 to 1.
    pub top_p: Option<f64>,
    /// A string or up to 4 strings.
    #[schema(value_type = Option<Object>)]
    pub stop: Option<Value>,
    pub seed: Option<i64>,
    /// -2 to 2.
    pub presence_penalty: Option<f64>,
    /// -2 to 2.
    pub frequency_penalty: Option<f64>,
    pub logprobs: Option<bool>,
    /// 0 to 20, with `logprobs`.
    pub top_logprobs: Option<u32>,
    /// Token id → bias from -100 to 100.
    #[schema(value_type = Option<Object>)]
    pub logit_bias: Option<Value>,
    /// `{"type": "text" | "json_object" | "json_schema", "json_schema": {name, schema, strict}}`.
    #[schema(value_type = Option<Object>)]
    pub response_format: Option<Value>,
    /// Functions the model may call: `[{"type": "function", "function": {name, description, parameters}}]`.
    #[schema(value_type = Option<Vec<Object>>)]
    pub tools: Option<Value>,
    /// `"none"`, `"auto"`, `"required"` or `{"type": "function", "function": {"name": …}}`.
    #[schema(value_type = Option<Object>)]
    pub tool_choice: Option<Value>,
    pub parallel_tool_calls: Option<bool>,
    pub user: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct ChatMessage {
    /// `system`, `developer`, `user`, `assistant` or `tool`.
    pub role: String,
    /// A string, or an array of content parts of which the `text` parts are read; null for an assistant
    /// message that only calls tools.
    #[schema(value_type = Option<MessageContent>)]
    pub content: Option<Value>,
    pub name: Option<String>,
    /// An assistant's tool calls, as the model returned them.
    #[schema(value_type = Option<Vec<Object>>)]
    pub tool_calls: Option<Value>,
    /// The call a `tool` message answers.
    pub tool_call_id: Option<String>,
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
    /// `stop`, `length` (cut by the token limit), `tool_calls`, or what the upstream said.
    pub finish_reason: String,
    #[schema(value_type = Option<Object>)]
    pub logprobs: Option<Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AssistantMessage {
    pub role: &'static str,
    /// Null when the model only called tools.
    pub content: Option<String>,
    /// The model's tool calls, as the upstream returned them.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Object>>)]
    pub tool_calls: Option<Value>,
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
        let param = (error.code == ErrorCode::ContextLengthExceeded).then_some("messages");
        Self { error, code: None, param }
    }
}

impl From<crate::problem::ApiError> for OpenAiError {
    fn from(e: crate::problem::ApiError) -> Self {
        e.0.into()
    }
}

impl OpenAiError {
    pub(crate) fn invalid(param: &'static str, message: impl Into<String>) -> Self {
        Self { error: ServiceError::new(ErrorCode::BadRequest, message), code: None, param: Some(param) }
    }

    /// A value outside OpenAI's range for `param` (OpenAI's code `invalid_value`).
    pub(crate) fn out_of_range(param: &'static str, message: impl Into<String>) -> Self {
        Self { code: Some("invalid_value"), ..Self::invalid(param, message) }
    }

    pub(crate) fn unsupported(param: &'static str, message: impl Into<String>) -> Self {
        Self { error: ServiceError::new(ErrorCode::UnsupportedParameter, message), code: None, param: Some(param) }
    }

    pub(crate) fn body(&self) -> Value {
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
            content((ChatCompletion = "application/json"), (crate::api::ServerSentEvent = "text/event-stream"))),
        (status = 400, body = OpenAiErrorBody, content_type = "application/problem+json"), (status = 401, body = OpenAiErrorBody, content_type = "application/problem+json"),
        (status = 404, body = OpenAiErrorBody, content_type = "application/problem+json"), (status = 429, body = OpenAiErrorBody, content_type = "application/problem+json"),
        (status = 502, body = OpenAiErrorBody, content_type = "application/problem+json"), (status = 504, body = OpenAiErrorBody, content_type = "application/problem+json"),
    ))]
pub async fn chat_completions(
    State(s): State<Services>,
    auth: Result<Tenant<Asks>, ApiError>,
    body: Bytes,
) -> Result<Response, OpenAiError> {
    let Tenant { ctx, .. } = auth?;
    let request: ChatCompletionRequest = parse_body(&body, "chat completion")?;
    check_model(&s, request.model.as_deref(), ("This tenant's model", &ctx.model.name))?;
    let query = query_request(&ctx.model, &request)?;
    let id = format!("chatcmpl-{}", ctx.request_id);
    let created = s.clock().now().millis() / 1000;

    if !request.stream {
        let result = s.query(&ctx, &query).await?;
        let completion = completion(id, created, result);
        return Ok(axum::Json(completion).into_response());
    }
    let include_usage = request.stream_options.is_some_and(|o| o.include_usage);
    let chunks = Chunks { id, created, model: ctx.model.name.clone(), include_usage };
    let first = chunks.delta(json!({"role": "assistant", "content": ""}), None);
    let events = s.query_stream(&ctx, &query).await?.flat_map(move |event| futures::stream::iter(chunks.events(event)));
    let stream = futures::stream::once(async move { first }).chain(events).map(Ok::<_, std::convert::Infallible>);
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()).into_response())
}

/// The request as the query pipeline takes it: the conversation, the token cap and the generation
/// parameters, each checked; a parameter the tenant's model cannot honour (the offline model and `tools`,
/// say) is a 400 `unsupported_parameter` naming it.
pub(crate) fn query_request(model: &ModelSpec, request: &ChatCompletionRequest) -> Result<QueryRequest, OpenAiError> {
    let query = QueryRequest {
        conversation: conversation(&request.messages)?,
        top_k: None,
        max_completion_tokens: max_tokens(request)?,
        options: options(request)?,
    };
    if model.provider == ProviderKind::Local {
        if let Some(param) = query.options.unsupported_offline() {
            let message = format!(
                "`{param}` is not supported by this tenant's model `{}` (the built-in offline model)",
                model.name
            );
            return Err(OpenAiError::unsupported(param, message));
        }
    }
    Ok(query)
}

/// Checks that `name`, when the request names a model, means the model that will serve it (`served`, what
/// it is to the client: "this tenant's model", "the embedding model"): its own name, `default`, or one of
/// the operator's aliases (`gateway.model_aliases`); any other name is OpenAI's 404 `model_not_found`,
/// never silently replaced.
pub(crate) fn check_model(s: &Services, name: Option<&str>, served: (&str, &str)) -> Result<(), OpenAiError> {
    let Some(name) = name else { return Ok(()) };
    let (what, own) = served;
    if name == "default" || name == own || s.config().gateway.model_aliases.iter().any(|a| a == name) {
        return Ok(());
    }
    let message = format!(
        "The model `{name}` does not exist or you do not have access to it. {what} is `{own}`; pass it, \
         \"default\", or no model."
    );
    Err(OpenAiError {
        error: ServiceError::new(ErrorCode::NotFound, message),
        code: Some("model_not_found"),
        param: Some("model"),
    })
}

/// The request body as `T`, or a 400 naming the body and what it should have been.
pub(crate) fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8], what: &str) -> Result<T, OpenAiError> {
    serde_json::from_slice(body)
        .map_err(|e| OpenAiError::invalid("body", format!("the request body is not a valid {what}: {e}")))
}

/// The most text all the messages of one request may carry: far past any model's window, so a request
/// this long could never be answered.
const MAX_CONVERSATION_CHARS: usize = 2_000_000;

/// The messages as a conversation around the last user message: every `system`/`developer` message is an
/// instruction, the turns before the last user message are its history, those after it (an assistant's tool
/// calls and their results) follow it.
pub(crate) fn conversation(messages: &[ChatMessage]) -> Result<Conversation, OpenAiError> {
    let last_user =
        messages
            .iter()
            .rposition(|m| m.role == "user" && !text_of(m.content.as_ref()).trim().is_empty())
            .ok_or_else(|| OpenAiError::invalid("messages", "messages must include a user message with text"))?;
    let mut conversation =
        Conversation { question: text_of(messages[last_user].content.as_ref()), ..Conversation::default() };
    let mut chars = 0;
    for (i, m) in messages.iter().enumerate() {
        let text = text_of(m.content.as_ref());
        chars += text.len();
        if chars > MAX_CONVERSATION_CHARS {
            return Err(OpenAiError {
                error: ServiceError::new(
                    ErrorCode::ContextLengthExceeded,
                    format!("the messages hold more than {MAX_CONVERSATION_CHARS} characters of text"),
                ),
                code: None,
                param: Some("messages"),
            });
        }
        if i == last_user {
            continue;
        }
        let role = match m.role.as_str() {
            "system" | "developer" => Role::System,
            "user" => Role::User,
            "assistant" => Role::Assistant,
            "tool" => Role::Tool,
            other => {
                return Err(OpenAiError::invalid(
                    "messages",
                    format!("messages[{i}].role {other:?} is not one of system, developer, user, assistant, tool"),
                ))
            }
        };
        let mut extra = serde_json::Map::new();
        if let Some(name) = &m.name {
            extra.insert("name".into(), json!(name));
        }
        match role {
            Role::Assistant => {
                if let Some(calls) = m.tool_calls.as_ref().filter(|c| !c.is_null()) {
                    if !calls
                        .as_array()
                        .is_some_and(|a| a.iter().all(|c| c["id"].is_string() && c["function"]["name"].is_string()))
                    {
                        return Err(OpenAiError::invalid(
                            "messages",
                            format!("messages[{i}].tool_calls must be an array of {{id, type, function: {{name, arguments}}}}"),
                        ));
                    }
                    extra.insert("tool_calls".into(), calls.clone());
                }
            }
            Role::Tool => {
                let id = m.tool_call_id.as_deref().ok_or_else(|| {
                    OpenAiError::invalid("messages", format!("messages[{i}] is a tool message without tool_call_id"))
                })?;
                extra.insert("tool_call_id".into(), json!(id));
            }
            Role::System | Role::User => {}
        }
        let turn = Turn::new(role, &text, extra);
        match (role, i < last_user) {
            (Role::System, _) => conversation.instructions.push(turn),
            (_, true) => conversation.history.push(turn),
            (_, false) => conversation.after.push(turn),
        }
    }
    Ok(conversation)
}

/// `max_completion_tokens`, or the older `max_tokens`: at least 1 when given.
fn max_tokens(request: &ChatCompletionRequest) -> Result<Option<u32>, OpenAiError> {
    match (request.max_completion_tokens, request.max_tokens) {
        (Some(0), _) => Err(OpenAiError::invalid("max_completion_tokens", "max_completion_tokens must be at least 1")),
        (None, Some(0)) => Err(OpenAiError::invalid("max_tokens", "max_tokens must be at least 1")),
        (given, older) => Ok(given.or(older)),
    }
}

/// The generation parameters, checked against OpenAI's ranges; a value out of range is a 400 naming it.
fn options(request: &ChatCompletionRequest) -> Result<Options, OpenAiError> {
    if request.n.is_some_and(|n| n != 1) {
        return Err(OpenAiError::unsupported("n", "only n = 1 is supported"));
    }
    let within = |param: &'static str, value: Option<f64>, low: f64, high: f64| match value {
        Some(v) if !(low..=high).contains(&v) => {
            Err(OpenAiError::out_of_range(param, format!("{param} must be between {low} and {high}, but got {v}")))
        }
        _ => Ok(()),
    };
    within("temperature", request.temperature, 0.0, 2.0)?;
    within("top_p", request.top_p, 0.0, 1.0)?;
    within("presence_penalty", request.presence_penalty, -2.0, 2.0)?;
    within("frequency_penalty", request.frequency_penalty, -2.0, 2.0)?;
    within("top_logprobs", request.top_logprobs.map(f64::from), 0.0, 20.0)?;
    if request.top_logprobs.is_some() && request.logprobs != Some(true) {
        return Err(OpenAiError::invalid("top_logprobs", "top_logprobs requires logprobs to be true"));
    }
    let stop = match &request.stop {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) if items.len() <= 4 && items.iter().all(Value::is_string) => {
            items.iter().filter_map(Value::as_str).map(str::to_owned).collect()
        }
        Some(_) => return Err(OpenAiError::invalid("stop", "stop must be a string or an array of up to 4 strings")),
    };
    if let Some(bias) = &request.logit_bias {
        let valid = bias.as_object().is_some_and(|m| {
            m.iter().all(|(k, v)| k.parse::<u32>().is_ok() && v.as_f64().is_some_and(|b| (-100.0..=100.0).contains(&b)))
        });
        if !valid {
            return Err(OpenAiError::invalid("logit_bias", "logit_bias maps token ids to biases between -100 and 100"));
        }
    }
    let response_format = match &request.response_format {
        None | Some(Value::Null) => ResponseFormat::Text,
        Some(format) => match format["type"].as_str() {
            Some("text") => ResponseFormat::Text,
            Some("json_object") => ResponseFormat::JsonObject,
            Some("json_schema") if format["json_schema"]["name"].is_string() => ResponseFormat::JsonSchema,
            Some("json_schema") => {
                return Err(OpenAiError::invalid("response_format", "response_format.json_schema must have a name"))
            }
            _ => {
                return Err(OpenAiError::invalid(
                    "response_format",
                    "response_format.type must be one of text, json_object, json_schema",
                ))
            }
        },
    };
    let tool_names = match &request.tools {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(tools)) if tools.len() <= 128 => {
            let names: Option<Vec<&str>> = tools
                .iter()
                .map(|t| {
                    (t["type"] == "function")
                        .then(|| t["function"]["name"].as_str())
                        .flatten()
                        .filter(|n| valid_function_name(n))
                })
                .collect();
            names.ok_or_else(|| {
                OpenAiError::invalid(
                    "tools",
                    "each tool must be {\"type\": \"function\", \"function\": {\"name\": …}} with a name of 1 to 64 letters, digits, _ or -",
                )
            })?
        }
        Some(_) => return Err(OpenAiError::invalid("tools", "tools must be an array of at most 128 functions")),
    };
    match &request.tool_choice {
        None | Some(Value::Null) => {}
        Some(Value::String(c)) if c == "none" || c == "auto" => {}
        Some(Value::String(c)) if c == "required" && !tool_names.is_empty() => {}
        Some(choice)
            if choice["type"] == "function"
                && choice["function"]["name"].as_str().is_some_and(|n| tool_names.contains(&n)) => {}
        Some(_) => {
            return Err(OpenAiError::invalid(
                "tool_choice",
                "tool_choice must be \"none\", \"auto\", \"required\" (with tools) or a function among the tools",
            ))
        }
    }
    let mut upstream = serde_json::Map::new();
    let mut pass = |name: &str, value: Option<Value>| {
        if let Some(v) = value.filter(|v| !v.is_null()) {
            upstream.insert(name.to_owned(), v);
        }
    };
    pass("temperature", request.temperature.map(|v| json!(v)));
    pass("top_p", request.top_p.map(|v| json!(v)));
    pass("stop", request.stop.clone());
    pass("seed", request.seed.map(|v| json!(v)));
    pass("presence_penalty", request.presence_penalty.map(|v| json!(v)));
    pass("frequency_penalty", request.frequency_penalty.map(|v| json!(v)));
    pass("logprobs", request.logprobs.map(|v| json!(v)));
    pass("top_logprobs", request.top_logprobs.map(|v| json!(v)));
    pass("logit_bias", request.logit_bias.clone());
    pass("response_format", request.response_format.clone());
    pass("tools", request.tools.clone());
    pass("tool_choice", request.tool_choice.clone());
    pass("parallel_tool_calls", request.parallel_tool_calls.map(|v| json!(v)));
    pass("user", request.user.clone().map(|v| json!(v)));
    Ok(Options { upstream, stop, response_format })
}

/// OpenAI's rule for a function's name: 1 to 64 of `a-z A-Z 0-9 _ -`.
fn valid_function_name(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
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
            message: AssistantMessage {
                role: "assistant",
                content: (!result.answer.is_empty() || result.tool_calls.is_none()).then_some(result.answer),
                tool_calls: result.tool_calls,
                refusal: None,
            },
            finish_reason: result.finish_reason.as_str().to_owned(),
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

    /// Tokens become content deltas, tool calls `tool_calls` deltas; the end is a chunk with the finish
    /// reason (and the citations), the usage chunk when
    /// asked for (`stream_options.include_usage`, as OpenAI: empty `choices`), then `[DONE]`. A failure is
    /// an `{"error": …}` event, which OpenAI's SDKs raise as an API error.
    fn events(&self, event: QueryEvent) -> Vec<Event> {
        match event {
            QueryEvent::Token(text) => vec![self.delta(json!({ "content": text }), None)],
            QueryEvent::ToolCalls(calls) => vec![self.delta(json!({ "tool_calls": calls }), None)],
            QueryEvent::Finished(result) => {
                let reason = result.finish_reason.as_str();
                let mut stop =
                    self.chunk(json!([{"index": 0, "delta": {}, "logprobs": null, "finish_reason": reason}]));
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
    State(_s): State<Services>,
    auth: Result<Tenant<Asks>, ApiError>,
) -> Result<axum::Json<ModelList>, OpenAiError> {
    let Tenant { ctx, .. } = auth?;
    Ok(axum::Json(ModelList { object: "list", data: vec![model_entry(&ctx.model.name)] }))
}

fn model_entry(id: &str) -> ModelEntry {
    ModelEntry { id: id.to_owned(), object: "model", created: 0, owned_by: "tenantry" }
}

/// One model (OpenAI-compatible): the tenant's model by its name, `default` or an operator's alias, each
/// answered under the name asked for; any other name is 404 `model_not_found`.
#[utoipa::path(get, path = "/v1/models/{model}", tag = "query", security(("bearer" = [])),
    params(("model" = String, Path, description = "the tenant's model, `default`, or an alias")),
    responses((status = 200, body = ModelEntry),
        (status = 401, body = OpenAiErrorBody, content_type = "application/problem+json"),
        (status = 404, body = OpenAiErrorBody, content_type = "application/problem+json")))]
pub async fn get_model(
    State(s): State<Services>,
    auth: Result<Tenant<Asks>, ApiError>,
    axum::extract::Path(model): axum::extract::Path<String>,
) -> Result<axum::Json<ModelEntry>, OpenAiError> {
    let Tenant { ctx, .. } = auth?;
    check_model(&s, Some(&model), ("This tenant's model", &ctx.model.name))?;
    Ok(axum::Json(model_entry(&model)))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct EmbeddingRequest {
    /// A text or an array of texts (1 to 2,048, each at most 8,192 tokens). Token arrays are not accepted.
    #[schema(value_type = Object)]
    pub input: Value,
    /// Omit, `"default"`, the embedder's name or an alias (`gateway.model_aliases`); others are 404.
    pub model: Option<String>,
    /// `float` (default) or `base64` (little-endian `f32`s, as OpenAI's SDKs ask by default).
    pub encoding_format: Option<String>,
    /// Only the embedder's own length is available.
    pub dimensions: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EmbeddingList {
    /// Always `list`.
    pub object: &'static str,
    pub data: Vec<EmbeddingEntry>,
    pub model: String,
    pub usage: EmbeddingUsage,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EmbeddingEntry {
    /// Always `embedding`.
    pub object: &'static str,
    pub index: usize,
    /// An array of numbers, or a base64 string with `encoding_format: "base64"`.
    #[schema(value_type = Object)]
    pub embedding: Value,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EmbeddingUsage {
    pub prompt_tokens: u64,
    pub total_tokens: u64,
}

/// Vectors of the caller's texts from the embedder that indexes the tenant's documents (OpenAI-compatible),
/// metered as prompt tokens of the embedding model and held to the token quota.
#[utoipa::path(post, path = "/v1/embeddings", tag = "query", security(("bearer" = [])),
    request_body = EmbeddingRequest,
    responses((status = 200, body = EmbeddingList),
        (status = 400, body = OpenAiErrorBody, content_type = "application/problem+json"),
        (status = 401, body = OpenAiErrorBody, content_type = "application/problem+json"),
        (status = 404, body = OpenAiErrorBody, content_type = "application/problem+json"),
        (status = 429, body = OpenAiErrorBody, content_type = "application/problem+json"),
        (status = 502, body = OpenAiErrorBody, content_type = "application/problem+json")))]
pub async fn embeddings(
    State(s): State<Services>,
    auth: Result<Tenant<Asks>, ApiError>,
    body: Bytes,
) -> Result<Response, OpenAiError> {
    let Tenant { ctx, .. } = auth?;
    let request: EmbeddingRequest = parse_body(&body, "embeddings request")?;
    check_model(&s, request.model.as_deref(), ("The embedding model", &s.search_embedder_name()))?;
    let inputs = match &request.input {
        Value::String(text) => vec![text.clone()],
        Value::Array(items) if items.iter().all(Value::is_string) => {
            items.iter().filter_map(Value::as_str).map(str::to_owned).collect()
        }
        _ => return Err(OpenAiError::invalid("input", "input must be a string or an array of strings")),
    };
    let base64 = match request.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(_) => return Err(OpenAiError::invalid("encoding_format", "encoding_format must be float or base64")),
    };
    let dimensions = s.search_embedder_dimensions();
    if request.dimensions.is_some_and(|d| d as usize != dimensions) {
        return Err(OpenAiError::unsupported(
            "dimensions",
            format!("the embedding model's vectors have {dimensions} dimensions"),
        ));
    }
    let embedded = s.embed_texts(&ctx, inputs).await?;
    let data = embedded
        .vectors
        .into_iter()
        .enumerate()
        .map(|(index, vector)| {
            let embedding = if base64 {
                use base64::Engine;
                let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(vector)
            };
            EmbeddingEntry { object: "embedding", index, embedding }
        })
        .collect();
    let usage = EmbeddingUsage { prompt_tokens: embedded.tokens, total_tokens: embedded.tokens };
    let list = EmbeddingList { object: "list", data, model: embedded.model, usage };
    Ok(axum::Json(list).into_response())
}
