//! `POST /v1/responses`: the Responses API (text or items in, `output_text` and function calls out, plain or
//! as streamed events), so that clients built on it (OpenAI's Agents SDK) can use Tenantry as their model.
//! The request is read as a chat completion (its input items as messages, its function tools, `tool_choice`
//! and `text.format` in chat's shapes), checked and answered by the same pipeline as
//! `/v1/chat/completions`. Responses are not stored: `previous_response_id` is a 400 `unsupported_parameter`,
//! and so are tools other than functions (hosted tools such as `file_search` run at OpenAI).

use axum::body::Bytes;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};
use tenantry_service::query::{Citation, FinishReason, QueryEvent, QueryResult};
use tenantry_service::Services;
use utoipa::ToSchema;

use crate::chat::{
    check_model, parse_body, query_request, ChatCompletionRequest, ChatMessage, OpenAiError, OpenAiErrorBody,
};
use crate::extract::{Asks, Tenant};
use crate::problem::ApiError;

#[derive(Debug, Deserialize, ToSchema)]
pub struct ResponseRequest {
    /// Omit, `"default"`, the tenant's model or an alias.
    pub model: Option<String>,
    /// A text (the question), or items: messages `{role, content}` whose content is a text or
    /// `input_text`/`output_text` parts, the model's earlier `function_call`s and the client's
    /// `function_call_output`s (a tool loop); `reasoning` items are skipped.
    #[schema(value_type = Object)]
    pub input: Value,
    /// The client's instructions, sent after the tenant's system prompt.
    pub instructions: Option<String>,
    #[serde(default)]
    pub stream: bool,
    #[schema(minimum = 1)]
    pub max_output_tokens: Option<u32>,
    /// 0 to 2. This and the parameters below reach a hosted model; the built-in offline model refuses
    /// tools and `json_schema` (400 `unsupported_parameter`).
    pub temperature: Option<f64>,
    /// 0 to 1.
    pub top_p: Option<f64>,
    /// Function tools `{"type": "function", name, description, parameters, strict}`; other tool types are
    /// 400 `unsupported_parameter`.
    #[schema(value_type = Option<Vec<Object>>)]
    pub tools: Option<Value>,
    /// `"none"`, `"auto"`, `"required"` or `{"type": "function", "name": …}`.
    #[schema(value_type = Option<Object>)]
    pub tool_choice: Option<Value>,
    pub parallel_tool_calls: Option<bool>,
    /// `{"format": {"type": "text" | "json_object" | "json_schema", name, schema, strict}}`.
    #[schema(value_type = Option<Object>)]
    pub text: Option<Value>,
    pub user: Option<String>,
    /// Not offered (responses are not stored): 400 `unsupported_parameter`.
    pub previous_response_id: Option<String>,
}

/// Answer a question from the tenant's documents in the Responses API's shape (OpenAI-compatible).
#[utoipa::path(post, path = "/v1/responses", tag = "query", security(("bearer" = [])),
    request_body = ResponseRequest,
    responses(
        (status = 200, description = "A `response` whose `output` holds the assistant message with an \
            `output_text` part and the model's `function_call`s; with `stream: true`, server-sent `response.*` \
            events ending with `response.completed`", content((Object = "application/json"), (crate::api::ServerSentEvent = "text/event-stream"))),
        (status = 400, body = OpenAiErrorBody, content_type = "application/problem+json"),
        (status = 401, body = OpenAiErrorBody, content_type = "application/problem+json"),
        (status = 404, body = OpenAiErrorBody, content_type = "application/problem+json"),
        (status = 429, body = OpenAiErrorBody, content_type = "application/problem+json"),
        (status = 502, body = OpenAiErrorBody, content_type = "application/problem+json"),
    ))]
pub async fn create_response(
    State(s): State<Services>,
    auth: Result<Tenant<Asks>, ApiError>,
    body: Bytes,
) -> Result<Response, OpenAiError> {
    let Tenant { ctx, .. } = auth?;
    let request: ResponseRequest = parse_body(&body, "response request")?;
    check_model(&s, request.model.as_deref(), ("This tenant's model", &ctx.model.name))?;
    if request.previous_response_id.is_some() {
        return Err(OpenAiError::unsupported("previous_response_id", "responses are not stored; send the whole input"));
    }
    let query = query_request(&ctx.model, &as_chat(&request)?)?;
    let shape = Shape {
        id: format!("resp_{}", ctx.request_id),
        message_id: format!("msg_{}", ctx.request_id),
        created_at: s.clock().now().millis() / 1000,
        model: ctx.model.name.clone(),
        tools: request.tools.clone().unwrap_or_else(|| json!([])),
        tool_choice: request.tool_choice.clone().unwrap_or_else(|| json!("auto")),
    };
    if !request.stream {
        let result = s.query(&ctx, &query).await?;
        return Ok(axum::Json(shape.response(Some(&result))).into_response());
    }
    let events = s.query_stream(&ctx, &query).await?;
    let stream = shape.events(events).map(Ok::<_, std::convert::Infallible>);
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()).into_response())
}

/// The request in chat's shapes, so that one set of checks serves both APIs: instructions and input items as
/// messages, function tools and `tool_choice` nested under `function`, `text.format` as `response_format`.
fn as_chat(request: &ResponseRequest) -> Result<ChatCompletionRequest, OpenAiError> {
    let mut messages = Vec::new();
    if let Some(instructions) = &request.instructions {
        messages.push(message("system", instructions.clone()));
    }
    messages.extend(input_messages(&request.input)?);
    Ok(ChatCompletionRequest {
        messages,
        max_completion_tokens: request.max_output_tokens,
        temperature: request.temperature,
        top_p: request.top_p,
        tools: request.tools.as_ref().map(chat_tools).transpose()?,
        tool_choice: request.tool_choice.as_ref().map(|choice| match choice["name"].as_str() {
            Some(name) if choice["type"] == "function" => json!({"type": "function", "function": {"name": name}}),
            _ => choice.clone(),
        }),
        parallel_tool_calls: request.parallel_tool_calls,
        response_format: request.text.as_ref().map(|t| response_format(&t["format"])).filter(|f| !f.is_null()),
        user: request.user.clone(),
        ..ChatCompletionRequest::default()
    })
}

/// Function tools as chat declares them (`{"type": "function", "function": {name, description, parameters,
/// strict}}`); any other tool type is refused by name.
fn chat_tools(tools: &Value) -> Result<Value, OpenAiError> {
    let Some(tools) = tools.as_array() else {
        return Err(OpenAiError::invalid("tools", "tools must be an array of function tools"));
    };
    let mut chat = Vec::with_capacity(tools.len());
    for tool in tools {
        if tool["type"] != "function" {
            let kind = tool["type"].as_str().unwrap_or("untyped");
            return Err(OpenAiError::unsupported(
                "tools",
                format!("`{kind}` tools are not offered; only function tools"),
            ));
        }
        let mut function = serde_json::Map::new();
        for field in ["name", "description", "parameters", "strict"] {
            if let Some(v) = tool.get(field).filter(|v| !v.is_null()) {
                function.insert(field.into(), v.clone());
            }
        }
        chat.push(json!({"type": "function", "function": function}));
    }
    Ok(Value::Array(chat))
}

/// `text.format` as chat's `response_format`: `json_schema`'s fields move under `json_schema`; null for none.
fn response_format(format: &Value) -> Value {
    match format["type"].as_str() {
        Some("json_schema") => {
            let mut schema = format.as_object().cloned().unwrap_or_default();
            schema.remove("type");
            json!({"type": "json_schema", "json_schema": schema})
        }
        Some(_) => format.clone(),
        None => Value::Null,
    }
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

/// The input as chat messages: a text is one user message; message items keep their role, and their
/// `input_text`/`output_text` parts are read as text; a `function_call` joins the assistant message before
/// it (or opens one) as a tool call, and a `function_call_output` is a `tool` message answering it.
fn input_messages(input: &Value) -> Result<Vec<ChatMessage>, OpenAiError> {
    let items = match input {
        Value::String(text) => return Ok(vec![message("user", text.clone())]),
        Value::Array(items) => items,
        _ => return Err(OpenAiError::invalid("input", "input must be a text or an array of items")),
    };
    let mut messages: Vec<ChatMessage> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let bad = |what: &str| OpenAiError::invalid("input", format!("input[{i}] {what}"));
        match item["type"].as_str().unwrap_or("message") {
            "message" => {
                let role = item["role"].as_str().ok_or_else(|| bad("is a message without a role"))?;
                messages.push(message(role, text_of(&item["content"]).ok_or_else(|| bad("has no readable content"))?));
            }
            "function_call" => {
                let (Some(call_id), Some(name)) = (item["call_id"].as_str(), item["name"].as_str()) else {
                    return Err(bad("is a function_call without call_id and name"));
                };
                let arguments = item["arguments"].as_str().unwrap_or("{}");
                let call =
                    json!({"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}});
                match messages.last_mut().filter(|m| m.role == "assistant") {
                    Some(assistant) => match assistant.tool_calls.as_mut().and_then(Value::as_array_mut) {
                        Some(calls) => calls.push(call),
                        None => assistant.tool_calls = Some(json!([call])),
                    },
                    None => messages.push(ChatMessage {
                        content: None,
                        tool_calls: Some(json!([call])),
                        ..message("assistant", String::new())
                    }),
                }
            }
            "function_call_output" => {
                let call_id =
                    item["call_id"].as_str().ok_or_else(|| bad("is a function_call_output without call_id"))?;
                let output = text_of(&item["output"]).ok_or_else(|| bad("has no readable output"))?;
                messages.push(ChatMessage { tool_call_id: Some(call_id.to_owned()), ..message("tool", output) });
            }
            "reasoning" => {}
            other => return Err(bad(&format!("has type {other:?}, which is not offered"))),
        }
    }
    Ok(messages)
}

/// A text, or the text of `input_text`/`output_text`/`text` parts joined; `None` for anything else.
fn text_of(content: &Value) -> Option<String> {
    match content {
        Value::String(text) => Some(text.clone()),
        Value::Array(parts) => Some(
            parts
                .iter()
                .filter(|p| matches!(p["type"].as_str(), Some("input_text" | "output_text" | "text")))
                .filter_map(|p| p["text"].as_str())
                .collect::<Vec<_>>()
                .join("\n"),
        ),
        _ => None,
    }
}

/// The ids and fields every object of one response shares.
#[derive(Clone)]
struct Shape {
    id: String,
    message_id: String,
    created_at: i64,
    model: String,
    tools: Value,
    tool_choice: Value,
}

impl Shape {
    /// The `response` object: in progress (`None`, no output yet) or completed with the answer.
    fn response(&self, result: Option<&QueryResult>) -> Value {
        let (status, output, usage) = match result {
            None => ("in_progress", json!([]), Value::Null),
            Some(r) => (
                if r.finish_reason == FinishReason::Length { "incomplete" } else { "completed" },
                Value::Array(self.output(r)),
                json!({"input_tokens": r.usage.prompt_tokens, "output_tokens": r.usage.completion_tokens,
                       "total_tokens": r.usage.prompt_tokens + r.usage.completion_tokens,
                       "input_tokens_details": {"cached_tokens": 0},
                       "output_tokens_details": {"reasoning_tokens": 0}}),
            ),
        };
        let mut response = json!({
            "id": self.id, "object": "response", "created_at": self.created_at, "status": status,
            "model": self.model, "output": output, "usage": usage, "error": null, "incomplete_details": null,
            "instructions": null, "metadata": {}, "parallel_tool_calls": true, "tool_choice": self.tool_choice,
            "tools": self.tools, "temperature": null, "top_p": null, "store": false,
        });
        if let Some(r) = result {
            if status == "incomplete" {
                response["incomplete_details"] = json!({"reason": "max_output_tokens"});
            }
            response["citations"] = json!(r.citations);
        }
        response
    }

    /// The output items: the assistant message (unless the model only called functions), then each call.
    fn output(&self, result: &QueryResult) -> Vec<Value> {
        let calls = function_calls(&self.id, result);
        let mut output = Vec::with_capacity(calls.len() + 1);
        if !result.answer.is_empty() || calls.is_empty() {
            output.push(self.message(&result.answer, &result.citations));
        }
        output.extend(calls);
        output
    }

    /// The assistant message, its citations as `file_citation` annotations (the document's id and title),
    /// which clients that know the Responses API surface.
    fn message(&self, text: &str, citations: &[Citation]) -> Value {
        json!({"type": "message", "id": self.message_id, "status": "completed", "role": "assistant",
               "content": [{"type": "output_text", "text": text, "annotations": annotations(citations)}]})
    }

    /// The streamed events: `response.created`; the message and its part opened at the first token, a
    /// `response.output_text.delta` per token, both closed at the end; each function call added, its
    /// arguments and itself done; then `response.completed` (or `error` on a failure).
    fn events(self, answer: tenantry_service::query::QueryStream) -> impl futures::Stream<Item = Event> {
        let mut events = Events { shape: self, sequence: 0, message_open: false };
        let created = events.next("response.created", json!({"response": events.shape.response(None)}));
        futures::stream::once(async move { created })
            .chain(answer.flat_map(move |event| futures::stream::iter(events.of(event))))
    }
}

/// Writes one response's stream: numbers the events and remembers whether the message is open.
struct Events {
    shape: Shape,
    sequence: u64,
    message_open: bool,
}

impl Events {
    fn next(&mut self, kind: &str, mut data: Value) -> Event {
        data["type"] = json!(kind);
        data["sequence_number"] = json!(self.sequence);
        self.sequence += 1;
        Event::default().event(kind).data(data.to_string())
    }

    /// The events one step of the answer makes.
    fn of(&mut self, event: QueryEvent) -> Vec<Event> {
        let mut events = Vec::new();
        match event {
            QueryEvent::Token(text) => {
                self.open_message(&mut events);
                let at = self.text_at();
                events.push(self.next("response.output_text.delta", merged(&at, json!({"delta": text}))));
            }
            // Function calls are sent whole once the generation has ended.
            QueryEvent::ToolCalls(_) => {}
            QueryEvent::Finished(result) => {
                for (index, item) in self.shape.output(&result).iter().enumerate() {
                    if item["type"] == "message" {
                        self.close_message(&mut events, &result.answer, &item["content"][0]["annotations"]);
                    } else {
                        self.function_call(&mut events, index, item);
                    }
                    events.push(self.next("response.output_item.done", json!({"output_index": index, "item": item})));
                }
                let completed = json!({"response": self.shape.response(Some(&result))});
                events.push(self.next("response.completed", completed));
            }
            QueryEvent::Failed(error) => {
                let body = OpenAiError::from(error).body();
                let error = json!({"code": body["error"]["code"], "message": body["error"]["message"], "param": null});
                events.push(self.next("error", error));
            }
        }
        events
    }

    /// Where the message's one text part is.
    fn text_at(&self) -> Value {
        json!({"item_id": self.shape.message_id, "output_index": 0, "content_index": 0})
    }

    fn open_message(&mut self, events: &mut Vec<Event>) {
        if std::mem::replace(&mut self.message_open, true) {
            return;
        }
        let item = json!({"type": "message", "id": self.shape.message_id, "status": "in_progress",
                          "role": "assistant", "content": []});
        events.push(self.next("response.output_item.added", json!({"output_index": 0, "item": item})));
        let part = json!({"part": {"type": "output_text", "text": "", "annotations": []}});
        let added = merged(&self.text_at(), part);
        events.push(self.next("response.content_part.added", added));
    }

    fn close_message(&mut self, events: &mut Vec<Event>, text: &str, annotations: &Value) {
        self.open_message(events);
        let at = self.text_at();
        events.push(self.next("response.output_text.done", merged(&at, json!({"text": text}))));
        let part = json!({"part": {"type": "output_text", "text": text, "annotations": annotations}});
        events.push(self.next("response.content_part.done", merged(&at, part)));
    }

    fn function_call(&mut self, events: &mut Vec<Event>, index: usize, item: &Value) {
        let started = merged(item, json!({"status": "in_progress", "arguments": ""}));
        events.push(self.next("response.output_item.added", json!({"output_index": index, "item": started})));
        let at = json!({"item_id": item["id"], "output_index": index});
        let arguments = &item["arguments"];
        events.push(self.next("response.function_call_arguments.delta", merged(&at, json!({"delta": arguments}))));
        events.push(self.next("response.function_call_arguments.done", merged(&at, json!({"arguments": arguments}))));
    }
}

/// `base` with the fields of `more` set over it.
fn merged(base: &Value, more: Value) -> Value {
    let mut merged = base.clone();
    if let (Some(merged), Value::Object(more)) = (merged.as_object_mut(), more) {
        merged.extend(more);
    }
    merged
}

/// The model's tool calls as `function_call` output items, each with its own id and the `call_id` the
/// client answers with a `function_call_output`.
fn function_calls(response_id: &str, result: &QueryResult) -> Vec<Value> {
    let calls = result.tool_calls.as_ref().and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
    calls
        .iter()
        .enumerate()
        .map(|(i, call)| {
            json!({"type": "function_call", "id": format!("fc_{}_{i}", response_id.trim_start_matches("resp_")),
                   "call_id": call["id"], "name": call["function"]["name"],
                   "arguments": call["function"]["arguments"], "status": "completed"})
        })
        .collect()
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
