//! `POST /v1/responses`: the basic Responses API (text in, `output_text` out, plain or as streamed events),
//! so that clients built on it (OpenAI's Agents SDK) can use Tenantry as their model. The input is read as a
//! chat conversation and answered by the same pipeline as `/v1/chat/completions`; tools, previous response
//! ids and stored state are not offered (400 `unsupported_parameter`).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};
use tenantry_domain::lifecycle::EndpointClass;
use tenantry_domain::{ProviderKind, RequestId};
use tenantry_service::gateway::Scope;
use tenantry_service::query::{Citation, Options, QueryEvent, QueryRequest, QueryResult};
use tenantry_service::Services;
use utoipa::ToSchema;

use crate::api::{tenant, with_quota_headers};
use crate::chat::{check_model, conversation, parse_body, ChatMessage, OpenAiError, OpenAiErrorBody};

#[derive(Debug, Deserialize, ToSchema)]
pub struct ResponseRequest {
    /// Omit, `"default"`, the tenant's model or an alias.
    pub model: Option<String>,
    /// A text (the question), or messages `{role, content}` whose content is a text or `input_text` parts.
    #[schema(value_type = Object)]
    pub input: Value,
    /// The client's instructions, sent after the tenant's system prompt.
    pub instructions: Option<String>,
    #[serde(default)]
    pub stream: bool,
    #[schema(minimum = 1)]
    pub max_output_tokens: Option<u32>,
    /// 0 to 2.
    pub temperature: Option<f64>,
    /// 0 to 1.
    pub top_p: Option<f64>,
    /// Not offered here: 400 `unsupported_parameter` when not empty.
    #[schema(value_type = Option<Vec<Object>>)]
    pub tools: Option<Value>,
    /// Not offered here: 400 `unsupported_parameter`.
    pub previous_response_id: Option<String>,
}

/// Answer a question from the tenant's documents in the Responses API's shape (OpenAI-compatible).
#[utoipa::path(post, path = "/v1/responses", tag = "query", security(("bearer" = [])),
    request_body = ResponseRequest,
    responses(
        (status = 200, description = "A `response` whose `output` holds one assistant message with an \
            `output_text` part; with `stream: true`, server-sent `response.*` events ending with \
            `response.completed`", content((Object = "application/json"), (crate::api::ServerSentEvent = "text/event-stream"))),
        (status = 400, body = OpenAiErrorBody, content_type = "application/problem+json"),
        (status = 401, body = OpenAiErrorBody, content_type = "application/problem+json"),
        (status = 404, body = OpenAiErrorBody, content_type = "application/problem+json"),
        (status = 429, body = OpenAiErrorBody, content_type = "application/problem+json"),
        (status = 502, body = OpenAiErrorBody, content_type = "application/problem+json"),
    ))]
pub async fn create_response(
    State(s): State<Services>,
    Extension(rid): Extension<RequestId>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, OpenAiError> {
    let ctx = tenant(&s, &headers, rid, EndpointClass::Service, Scope::Query).await?;
    let request: ResponseRequest = parse_body(&body, "response request")?;
    check_model(&s, request.model.as_deref(), ("This tenant's model", &ctx.model.name))?;
    if request.tools.as_ref().and_then(Value::as_array).is_some_and(|t| !t.is_empty()) {
        return Err(OpenAiError::unsupported(
            "tools",
            "tools are not offered on /v1/responses; use /v1/chat/completions",
        ));
    }
    if request.previous_response_id.is_some() {
        return Err(OpenAiError::unsupported("previous_response_id", "responses are not stored; send the whole input"));
    }
    let mut messages: Vec<ChatMessage> = Vec::new();
    if let Some(instructions) = &request.instructions {
        messages.push(message("system", instructions.clone()));
    }
    messages.extend(input_messages(&request.input)?);
    let mut options = Options::default();
    for (param, value, high) in [("temperature", request.temperature, 2.0), ("top_p", request.top_p, 1.0)] {
        if let Some(v) = value {
            if !(0.0..=high).contains(&v) {
                return Err(OpenAiError::out_of_range(
                    param,
                    format!("{param} must be between 0 and {high}, but got {v}"),
                ));
            }
            if ctx.model.provider != ProviderKind::Local {
                options.upstream.insert(param.into(), json!(v));
            }
        }
    }
    if request.max_output_tokens == Some(0) {
        return Err(OpenAiError::invalid("max_output_tokens", "max_output_tokens must be at least 1"));
    }
    let query = QueryRequest {
        conversation: conversation(&messages)?,
        top_k: None,
        max_completion_tokens: request.max_output_tokens,
        options,
    };
    let shape = Shape {
        id: format!("resp_{}", ctx.request_id),
        message_id: format!("msg_{}", ctx.request_id),
        created_at: s.clock().now().millis() / 1000,
        model: ctx.model.name.clone(),
    };
    if !request.stream {
        let result = s.query(&ctx, &query).await?;
        return Ok(with_quota_headers(&s, &ctx, axum::Json(shape.response(Some(&result))).into_response()).await?);
    }
    let events = s.query_stream(&ctx, &query).await?;
    let stream = shape.events(events).map(Ok::<_, std::convert::Infallible>);
    Ok(with_quota_headers(&s, &ctx, Sse::new(stream).keep_alive(KeepAlive::default()).into_response()).await?)
}

fn message(role: &str, text: String) -> ChatMessage {
    ChatMessage {
        role: role.to_owned(),
        content: Some(Value::String(text)),
        name: None,
        tool_calls: None,
        tool_call_id: None,
    }
}

/// The input as chat messages: a text is one user message; items `{role, content}` keep their role, and
/// their `input_text`/`output_text` parts are read as text.
fn input_messages(input: &Value) -> Result<Vec<ChatMessage>, OpenAiError> {
    let bad = || OpenAiError::invalid("input", "input must be a text or an array of {role, content} messages");
    match input {
        Value::String(text) => Ok(vec![message("user", text.clone())]),
        Value::Array(items) => items
            .iter()
            .map(|item| {
                let role = item["role"].as_str().ok_or_else(bad)?;
                let text = match &item["content"] {
                    Value::String(text) => text.clone(),
                    Value::Array(parts) => parts
                        .iter()
                        .filter(|p| matches!(p["type"].as_str(), Some("input_text" | "output_text" | "text")))
                        .filter_map(|p| p["text"].as_str())
                        .collect::<Vec<_>>()
                        .join("\n"),
                    _ => return Err(bad()),
                };
                Ok(message(role, text))
            })
            .collect(),
        _ => Err(bad()),
    }
}

/// The ids and fields every object of one response shares.
#[derive(Clone)]
struct Shape {
    id: String,
    message_id: String,
    created_at: i64,
    model: String,
}

impl Shape {
    /// The `response` object: in progress (`None`, no output yet) or completed with the answer.
    fn response(&self, result: Option<&QueryResult>) -> Value {
        let (status, output, usage) = match result {
            None => ("in_progress", json!([]), Value::Null),
            Some(r) => (
                if r.finish_reason == tenantry_service::query::FinishReason::Length {
                    "incomplete"
                } else {
                    "completed"
                },
                json!([self.message(&r.answer, &r.citations)]),
                json!({"input_tokens": r.usage.prompt_tokens, "output_tokens": r.usage.completion_tokens,
                       "total_tokens": r.usage.prompt_tokens + r.usage.completion_tokens,
                       "input_tokens_details": {"cached_tokens": 0},
                       "output_tokens_details": {"reasoning_tokens": 0}}),
            ),
        };
        let mut response = json!({
            "id": self.id, "object": "response", "created_at": self.created_at, "status": status,
            "model": self.model, "output": output, "usage": usage, "error": null, "incomplete_details": null,
            "instructions": null, "metadata": {}, "parallel_tool_calls": false, "tool_choice": "none", "tools": [],
            "temperature": null, "top_p": null,
        });
        if let Some(r) = result {
            if status == "incomplete" {
                response["incomplete_details"] = json!({"reason": "max_output_tokens"});
            }
            response["citations"] = json!(r.citations);
        }
        response
    }

    /// The assistant message, its citations as `file_citation` annotations (the document's id and title),
    /// which clients that know the Responses API surface.
    fn message(&self, text: &str, citations: &[Citation]) -> Value {
        json!({"type": "message", "id": self.message_id, "status": "completed", "role": "assistant",
               "content": [{"type": "output_text", "text": text, "annotations": annotations(citations)}]})
    }

    /// The streamed events: `response.created`, the message and its part opened, `response.output_text.delta`
    /// per token, then both closed and `response.completed` (or `error` on a failure).
    fn events(self, answer: tenantry_service::query::QueryStream) -> impl futures::Stream<Item = Event> {
        let mut sequence = 0u64;
        let mut next = move |kind: &str, mut data: Value| {
            data["type"] = json!(kind);
            data["sequence_number"] = json!(sequence);
            sequence += 1;
            Event::default().event(kind).data(data.to_string())
        };
        let opening = vec![
            next("response.created", json!({"response": self.response(None)})),
            next(
                "response.output_item.added",
                json!({"output_index": 0, "item": {"type": "message", "id":
                self.message_id, "status": "in_progress", "role": "assistant", "content": []}}),
            ),
            next(
                "response.content_part.added",
                json!({"item_id": self.message_id, "output_index": 0,
                "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": []}}),
            ),
        ];
        let shape = self.clone();
        let rest = answer.flat_map(move |event| {
            let events = match event {
                QueryEvent::Token(text) => vec![next(
                    "response.output_text.delta",
                    json!({"item_id":
                    shape.message_id, "output_index": 0, "content_index": 0, "delta": text}),
                )],
                QueryEvent::ToolCalls(_) => Vec::new(),
                QueryEvent::Finished(result) => vec![
                    next(
                        "response.output_text.done",
                        json!({"item_id": shape.message_id, "output_index": 0,
                        "content_index": 0, "text": result.answer}),
                    ),
                    next(
                        "response.content_part.done",
                        json!({"item_id": shape.message_id, "output_index": 0,
                        "content_index": 0, "part": {"type": "output_text", "text": result.answer, "annotations": []}}),
                    ),
                    next(
                        "response.output_item.done",
                        json!({"output_index": 0, "item": shape.message(&result.answer, &result.citations)}),
                    ),
                    next("response.completed", json!({"response": shape.response(Some(&result))})),
                ],
                QueryEvent::Failed(error) => {
                    let body = OpenAiError::from(error).body();
                    vec![next(
                        "error",
                        json!({"code": body["error"]["code"], "message": body["error"]["message"],
                        "param": null}),
                    )]
                }
            };
            futures::stream::iter(events)
        });
        futures::stream::iter(opening).chain(rest)
    }
}

/// Each cited document once as a `file_citation`: its id, its title, and its place among the citations.
fn annotations(citations: &[Citation]) -> Value {
    let mut seen = std::collections::HashSet::new();
    let documents = citations.iter().filter(|c| seen.insert(c.document_id.as_str()));
    let entries = documents.enumerate().map(
        |(index, c)| json!({"type": "file_citation", "file_id": c.document_id, "filename": c.title, "index": index}),
    );
    Value::Array(entries.collect())
}
