//! The OpenAI-compatible upstream a load test's hosted models point at: `POST /v1/chat/completions`, plain or
//! streamed (with `stream_options.include_usage`), answering at once. It attributes every request to the
//! tenant whose marker its system message carries and checks what reached it: the model must be that
//! tenant's, and no passage may carry another tenant's document marker.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use parking_lot::Mutex;
use serde_json::{json, Value};

use super::profile::{markers, PROMPT_MARKER};

/// What the upstream saw, per tenant index and in all.
#[derive(Debug, Default)]
pub struct Seen {
    /// Requests attributed to each tenant (by the marker in its system message).
    pub calls: HashMap<usize, u64>,
    /// Requests naming a model other than their tenant's upstream model.
    pub wrong_model: u64,
    /// Requests without exactly one tenant's marker in the system message.
    pub unattributed: u64,
    /// Requests whose messages carry another tenant's document marker.
    pub foreign_passages: u64,
}

#[derive(Clone)]
pub struct Upstream {
    /// Each tenant's upstream model, by index (`None`: a tenant on a local model, which must never call).
    expected: Arc<Vec<Option<&'static str>>>,
    seen: Arc<Mutex<Seen>>,
}

impl Upstream {
    pub fn new(expected: Vec<Option<&'static str>>) -> Self {
        Self { expected: Arc::new(expected), seen: Arc::default() }
    }

    /// Serves on `listener` until the process ends.
    pub fn serve(&self, listener: tokio::net::TcpListener) {
        let app = Router::new().route("/v1/chat/completions", post(chat)).with_state(self.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
    }

    pub fn seen(&self) -> parking_lot::MutexGuard<'_, Seen> {
        self.seen.lock()
    }

    /// Records one request: whose it is and whether it is what that tenant's configuration asks for.
    fn record(&self, body: &Value) {
        let messages = body["messages"].as_array().map(Vec::as_slice).unwrap_or_default();
        let text_of = |m: &Value| m["content"].as_str().unwrap_or_default().to_owned();
        let system: String = messages.iter().filter(|m| m["role"] == "system").map(text_of).collect();
        let owners = markers(&system, PROMPT_MARKER);
        let mut seen = self.seen.lock();
        let [tenant] = owners.as_slice() else {
            seen.unattributed += 1;
            return;
        };
        *seen.calls.entry(*tenant).or_default() += 1;
        if self.expected.get(*tenant).copied().flatten() != body["model"].as_str() {
            seen.wrong_model += 1;
        }
        let everything: String = messages.iter().map(text_of).collect();
        if markers(&everything, super::profile::DOCUMENT_MARKER).iter().any(|owner| owner != tenant) {
            seen.foreign_passages += 1;
        }
    }
}

async fn chat(State(upstream): State<Upstream>, Json(body): Json<Value>) -> Response {
    upstream.record(&body);
    let model = body["model"].as_str().unwrap_or_default().to_owned();
    let prompt_tokens = body.to_string().len() / 4;
    let usage = json!({"prompt_tokens": prompt_tokens, "completion_tokens": 6, "total_tokens": prompt_tokens + 6});
    let answer = "The passages answer the question.";
    if body["stream"] != true {
        return Json(json!({
            "id": "chatcmpl-loadtest",
            "object": "chat.completion",
            "created": 0,
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
            "usage": usage,
        }))
        .into_response();
    }
    let chunk = |choices: Value, usage: Value| {
        let chunk = json!({"id": "chatcmpl-loadtest", "object": "chat.completion.chunk", "created": 0,
                           "model": model, "choices": choices, "usage": usage});
        format!("data: {chunk}\n\n")
    };
    let events = [
        chunk(
            json!([{"index": 0, "delta": {"role": "assistant", "content": answer}, "finish_reason": null}]),
            Value::Null,
        ),
        chunk(json!([{"index": 0, "delta": {}, "finish_reason": "stop"}]), Value::Null),
        chunk(json!([]), usage),
        "data: [DONE]\n\n".to_owned(),
    ];
    ([(header::CONTENT_TYPE, "text/event-stream")], events.concat()).into_response()
}
