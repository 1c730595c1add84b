//! The OpenAI-compatible provider against a fake upstream that speaks the wire format: streamed chat
//! completions (server-sent `chat.completion.chunk`s, the `usage` chunk, `[DONE]`) and embeddings.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use futures::StreamExt;
use serde_json::{json, Value};
use tenantry_domain::config::Config;
use tenantry_domain::{tokens, ModelSpec};
use tenantry_llm::{
    Chunk, Conversation, Embedder, FinishReason, LlmError, OpenAiCompatible, OpenAiEmbedder, Options, Passage, Prompt,
    Provider,
};

fn chunk(content: Option<&str>, finish: Option<&str>) -> Value {
    let delta = match content {
        Some(c) => json!({ "content": c }),
        None => json!({}),
    };
    json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
           "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
}

fn sse(events: Vec<Value>, done: bool, stall: bool) -> Response {
    let mut items: Vec<Event> = events.into_iter().map(|v| Event::default().data(v.to_string())).collect();
    if done {
        items.push(Event::default().data("[DONE]"));
    }
    let stream = futures::stream::iter(items.into_iter().map(Ok::<_, Infallible>));
    let tail = futures::stream::once(async move {
        if stall {
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
        Ok::<_, Infallible>(Event::default().comment("end"))
    });
    Sse::new(stream.chain(tail)).into_response()
}

/// A tool call streamed as OpenAI streams one: id, type and name first, the arguments in pieces.
fn tool_call_chunks() -> Vec<Value> {
    let delta = |call: Value| {
        json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
               "choices": [{"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": null}]})
    };
    vec![
        delta(json!({"index": 0, "id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": ""}})),
        delta(json!({"index": 0, "function": {"arguments": "{\"order\": "}})),
        delta(json!({"index": 0, "function": {"arguments": "42}"}})),
        chunk(None, Some("tool_calls")),
    ]
}

async fn chat(calls: Arc<AtomicUsize>, body: Value) -> Response {
    let n = calls.fetch_add(1, Ordering::SeqCst);
    if body["stream"] == false {
        // Answers with what it received, cut by its token limit.
        let message = json!({"role": "assistant", "content": body.to_string(),
                             "tool_calls": [{"id": "call_9", "type": "function",
                                             "function": {"name": "lookup", "arguments": "{}"}}]});
        return axum::Json(json!({"id": "c2", "object": "chat.completion", "created": 1, "model": "m",
                                 "choices": [{"index": 0, "message": message, "finish_reason": "length"}],
                                 "usage": {"prompt_tokens": 10, "completion_tokens": 64, "total_tokens": 74}}))
        .into_response();
    }
    let wants_usage = body["stream_options"]["include_usage"] == true;
    let words = vec![chunk(Some(""), None), chunk(Some("Refunds take "), None), chunk(Some("14 days [1]."), None)];
    let finish = chunk(None, Some("stop"));
    let usage = json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [],
                       "usage": {"prompt_tokens": 40, "completion_tokens": 7, "total_tokens": 47}});
    match body["model"].as_str().unwrap_or("") {
        "with-usage" if wants_usage => sse([words, vec![finish, usage]].concat(), true, false),
        "no-usage" => sse([words, vec![finish]].concat(), true, false),
        "cut" => sse(words, false, false),
        "stall" => sse(words, false, true),
        "in-band-error" => sse(vec![json!({"error": {"message": "overloaded", "type": "server_error"}})], false, false),
        "busy-once" if n == 0 => (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "0")], "slow down").into_response(),
        "busy-once" => sse([words, vec![finish, usage]].concat(), true, false),
        "tools" => sse([tool_call_chunks(), vec![usage]].concat(), true, false),
        other => (StatusCode::BAD_REQUEST, format!("unexpected model {other}")).into_response(),
    }
}

async fn embeddings(body: Value) -> Response {
    let inputs = body["input"].as_array().cloned().unwrap_or_default();
    // Out of order on purpose: clients must place vectors by `index`.
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .rev()
        .map(|(i, text)| {
            let len = text.as_str().map_or(0, str::len) as f32;
            json!({"object": "embedding", "index": i, "embedding": [len, i as f32, 1.0]})
        })
        .collect();
    axum::Json(json!({"object": "list", "data": data, "model": body["model"],
                      "usage": {"prompt_tokens": 9, "total_tokens": 9}}))
    .into_response()
}

async fn upstream() -> (String, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let app = Router::new()
        .route(
            "/v1/chat/completions",
            post(move |axum::Json(body): axum::Json<Value>| {
                let calls = counter.clone();
                async move { chat(calls, body).await }
            }),
        )
        .route("/v1/embeddings", post(|axum::Json(body): axum::Json<Value>| async move { embeddings(body).await }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/v1"), calls)
}

fn model(base_url: &str, upstream_model: &str) -> ModelSpec {
    let catalog = Config::builtin().catalog().expect("valid");
    let mut m = (**catalog.model("local-small").expect("exists")).clone();
    m.provider = tenantry_domain::ProviderKind::OpenAi;
    m.base_url = base_url.to_owned();
    m.upstream_model = upstream_model.to_owned();
    m.api_key_env = String::new();
    m.timeout = Duration::from_millis(500);
    m.max_retries = 1;
    m
}

fn prompt(m: &ModelSpec) -> Prompt {
    let passage =
        Passage { number: 1, title: "Policy".into(), heading: String::new(), text: "Refunds take 14 days.".into() };
    Prompt::build(m, "", "How long do refunds take?", vec![passage], 64).expect("fits")
}

/// Collects a stream: the text deltas joined, and the final generation or the error that ended it.
async fn collect(provider: &OpenAiCompatible, m: &ModelSpec) -> (String, Result<tenantry_llm::Generation, LlmError>) {
    let mut stream = match provider.stream(m, &prompt(m)).await {
        Ok(s) => s,
        Err(e) => return (String::new(), Err(e)),
    };
    let mut text = String::new();
    while let Some(item) = stream.next().await {
        match item {
            Ok(Chunk::Text(t)) => text.push_str(&t),
            Ok(Chunk::ToolCalls(_)) => {}
            Ok(Chunk::Done(g)) => {
                assert!(stream.next().await.is_none(), "nothing after Done");
                return (text, Ok(g));
            }
            Err(e) => {
                assert!(stream.next().await.is_none(), "nothing after an error");
                return (text, Err(e));
            }
        }
    }
    (text, Err(LlmError::Upstream("stream ended without Done".into())))
}

#[tokio::test]
async fn a_stream_delivers_deltas_then_the_upstreams_usage() {
    let (base, _) = upstream().await;
    let m = model(&base, "with-usage");
    let (text, done) = collect(&OpenAiCompatible::default(), &m).await;
    let g = done.expect("finished");
    assert_eq!(text, "Refunds take 14 days [1].");
    assert_eq!(g.text, text);
    assert_eq!((g.usage.prompt_tokens, g.usage.completion_tokens), (40, 7));
    assert_eq!(g.model, m.name, "billed as the configured model, not the upstream's name for it");
}

#[tokio::test]
async fn without_a_usage_chunk_the_stream_is_counted_with_the_tokenizer() {
    let (base, _) = upstream().await;
    let m = model(&base, "no-usage");
    let (text, done) = collect(&OpenAiCompatible::default(), &m).await;
    let g = done.expect("finished");
    assert_eq!(g.usage.prompt_tokens, prompt(&m).token_count());
    assert_eq!(g.usage.completion_tokens, tokens::count(&text));
}

#[tokio::test]
async fn a_cut_stalled_or_erroring_stream_fails_after_its_partial_text() {
    let (base, _) = upstream().await;
    let provider = OpenAiCompatible::default();
    let (text, cut) = collect(&provider, &model(&base, "cut")).await;
    assert_eq!(text, "Refunds take 14 days [1].");
    assert!(matches!(cut, Err(LlmError::Upstream(ref m)) if m.contains("[DONE]")), "{cut:?}");

    let (_, stalled) = collect(&provider, &model(&base, "stall")).await;
    assert!(matches!(stalled, Err(LlmError::Timeout)), "{stalled:?}");

    let (text, in_band) = collect(&provider, &model(&base, "in-band-error")).await;
    assert!(text.is_empty());
    assert!(matches!(in_band, Err(LlmError::Upstream(ref m)) if m.contains("overloaded")), "{in_band:?}");
}

#[tokio::test]
async fn a_429_before_the_stream_starts_is_retried() {
    let (base, calls) = upstream().await;
    let (text, done) = collect(&OpenAiCompatible::default(), &model(&base, "busy-once")).await;
    assert!(done.is_ok(), "{done:?}");
    assert_eq!(text, "Refunds take 14 days [1].");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn embeddings_come_back_in_input_order_with_the_upstreams_usage() {
    let (base, _) = upstream().await;
    let embedder = OpenAiEmbedder::new(OpenAiCompatible::default(), model(&base, "embed"));
    let texts = vec!["a".to_owned(), "bbb".to_owned(), "cc".to_owned()];
    let e = embedder.embed(&texts).await.expect("embedded");
    assert_eq!(e.vectors, vec![vec![1.0, 0.0, 1.0], vec![3.0, 1.0, 1.0], vec![2.0, 2.0, 1.0]]);
    assert_eq!(e.tokens, 9);
    assert_eq!(embedder.embed(&[]).await.expect("nothing to do").vectors.len(), 0);
}

#[tokio::test]
async fn streamed_tool_calls_pass_through_and_are_assembled() {
    let (base, _) = upstream().await;
    let m = model(&base, "tools");
    let mut stream = OpenAiCompatible::new(|_| None).stream(&m, &prompt(&m)).await.expect("stream starts");
    let mut deltas = Vec::new();
    let mut done = None;
    while let Some(item) = stream.next().await {
        match item.expect("no error") {
            Chunk::ToolCalls(calls) => deltas.extend(calls.as_array().cloned().unwrap_or_default()),
            Chunk::Done(g) => done = Some(g),
            Chunk::Text(t) => panic!("no text expected, got {t:?}"),
        }
    }
    assert_eq!(deltas.len(), 3, "every delta reaches the client as it came: {deltas:?}");
    let g = done.expect("a generation");
    assert_eq!(g.finish_reason, FinishReason::ToolCalls);
    assert_eq!(
        g.tool_calls,
        Some(json!([{"id": "call_1", "type": "function",
                     "function": {"name": "lookup", "arguments": "{\"order\": 42}"}}]))
    );
}

#[tokio::test]
async fn the_clients_parameters_reach_the_upstream_and_its_finish_reason_comes_back() {
    let (base, _) = upstream().await;
    let m = model(&base, "echo");
    let mut options = Options::default();
    for (k, v) in [
        ("temperature", json!(0.3)),
        ("seed", json!(7)),
        (
            "tools",
            json!([{"type": "function",
        "function": {"name": "lookup"}}]),
        ),
        ("max_tokens", json!(9999)),
        ("model", json!("not-this-one")),
    ] {
        options.upstream.insert(k.into(), v);
    }
    let prompt =
        Prompt::build_chat(&m, "Be terse.", Conversation::question("Where is order 42?"), Vec::new(), 64, options)
            .expect("fits");
    let g = OpenAiCompatible::new(|_| None).generate(&m, &prompt).await.expect("generates");
    let sent: Value = serde_json::from_str(&g.text).expect("the echo");
    assert_eq!((sent["temperature"].clone(), sent["seed"].clone()), (json!(0.3), json!(7)));
    assert_eq!(sent["tools"][0]["function"]["name"], "lookup");
    assert_eq!(sent["max_tokens"], 64, "the service's cap, not a parameter's");
    assert_eq!(sent["model"], "echo", "the configured model, not a parameter's");
    assert_eq!(g.finish_reason, FinishReason::Length);
    assert_eq!(g.tool_calls.expect("tool calls")[0]["id"], "call_9");
}
