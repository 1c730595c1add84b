//! Hosted models through an OpenAI-compatible upstream: a fake server started here that speaks the wire
//! format. Each tenant's request reaches it as that tenant's model with that tenant's prompt and the
//! configured key; 429s are retried; a hanging or failing upstream bills nothing.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};
use tenantry_domain::config::{Config, ModelConfig, PlanConfig};

use crate::helpers::{assert_problem, spawn_app_with, sse_events, TestApp};

/// What the upstream received: the Authorization header and the JSON body of each call.
type Calls = Arc<Mutex<Vec<(Option<String>, Value)>>>;

#[derive(Clone, Default)]
struct Upstream {
    seen: Calls,
}

async fn chat(State(up): State<Upstream>, headers: HeaderMap, body: axum::Json<Value>) -> Response {
    let model = body["model"].as_str().unwrap_or("").to_owned();
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let calls = {
        let mut seen = up.seen.lock().expect("lock");
        seen.push((auth, body.0.clone()));
        seen.iter().filter(|(_, b)| b["model"] == model.as_str()).count()
    };
    if body["messages"][0]["content"].as_str().is_some_and(|c| c.starts_with(RESTATE_INSTRUCTIONS)) {
        return axum::Json(json!({
            "id": "chatcmpl-restate", "object": "chat.completion", "created": 1_700_000_000, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": RESTATED}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 40, "completion_tokens": 9, "total_tokens": 49}
        }))
        .into_response();
    }
    let system = body["messages"][0]["content"].as_str().unwrap_or("");
    let rewritten = [(WORDINGS_INSTRUCTIONS, WORDINGS), (PLAN_INSTRUCTIONS, PLAN)];
    if let Some((_, reply)) = rewritten.iter().find(|(instructions, _)| system.starts_with(instructions)) {
        return axum::Json(json!({
            "id": "chatcmpl-rewrite", "object": "chat.completion", "created": 1_700_000_000, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 30, "completion_tokens": 12, "total_tokens": 42}
        }))
        .into_response();
    }
    if body["stream"] == true {
        return stream_reply(&model, body["stream_options"]["include_usage"] == true);
    }
    match model.as_str() {
        "hang" => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            StatusCode::OK.into_response()
        }
        "flaky" if calls == 1 => {
            (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "0")], axum::Json(json!({"error": {"message": "slow down", "type": "rate_limit"}}))).into_response()
        }
        "broken" => (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(json!({"error": {"message": "boom"}}))).into_response(),
        _ => axum::Json(json!({
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "created": 1_700_000_000,
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": format!("Answer from {model} [1]")}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 111, "completion_tokens": 22, "total_tokens": 133}
        }))
        .into_response(),
    }
}

/// How the service asks a model to restate a follow-up, and what this upstream answers to it.
const RESTATE_INSTRUCTIONS: &str = "Rewrite the user's last question";
const RESTATED: &str = "Where is the headquarters of Acme Corporation?";

/// How the service asks a model to rewrite a question for retrieval, and what this upstream answers: other
/// wordings (`advanced`), a plan of sub-questions (`agentic`), each with list markers to be read past.
const WORDINGS_INSTRUCTIONS: &str = "Write up to three search queries";
const WORDINGS: &str = "1. right to erasure of personal data\n2. \"obtain from the controller the erasure\"\n";
const PLAN_INSTRUCTIONS: &str = "Break the user's question into";
const PLAN: &str = "- erasure of personal data by the controller\n- deadline to notify a personal data breach";

/// A streamed reply as OpenAI sends it: content deltas, the stop chunk, the usage chunk when asked, `[DONE]`.
/// Model `cut` drops the connection after its first delta.
fn stream_reply(model: &str, include_usage: bool) -> Response {
    let chunk = |delta: Value, finish: Value, usage: Value| {
        let mut c = json!({"id": "chatcmpl-test", "object": "chat.completion.chunk", "created": 1_700_000_000,
                           "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
        if include_usage {
            c["usage"] = usage;
        }
        Event::default().data(c.to_string())
    };
    let mut events = vec![
        chunk(json!({"role": "assistant", "content": ""}), Value::Null, Value::Null),
        chunk(json!({"content": "Answer from "}), Value::Null, Value::Null),
    ];
    if model != "cut" {
        events.push(chunk(json!({"content": format!("{model} [1]")}), Value::Null, Value::Null));
        events.push(chunk(json!({}), json!("stop"), Value::Null));
        if include_usage {
            let usage = json!({"id": "chatcmpl-test", "object": "chat.completion.chunk", "created": 1_700_000_000,
                               "model": model, "choices": [],
                               "usage": {"prompt_tokens": 111, "completion_tokens": 22, "total_tokens": 133}});
            events.push(Event::default().data(usage.to_string()));
        }
        events.push(Event::default().data("[DONE]"));
    }
    Sse::new(futures::stream::iter(events.into_iter().map(Ok::<_, std::convert::Infallible>))).into_response()
}

async fn start_upstream() -> (String, Upstream) {
    let up = Upstream::default();
    let app = Router::new().route("/v1/chat/completions", post(chat)).with_state(up.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/v1"), up)
}

fn hosted(name: &str, upstream_model: &str, base_url: &str, input: f64, output: f64) -> ModelConfig {
    ModelConfig {
        name: name.into(),
        provider: "openai".into(),
        base_url: base_url.into(),
        api_key_env: "TENANTRY_TEST_UPSTREAM_KEY".into(),
        upstream_model: Some(upstream_model.into()),
        input_usd_per_million: input,
        output_usd_per_million: output,
        context_window: 8192,
        answer_sentences: 3,
        timeout_secs: 1,
        max_retries: 1,
        restate_follow_ups: true,
    }
}

async fn hosted_app() -> (TestApp, Upstream) {
    // Only this module reads this variable.
    std::env::set_var("TENANTRY_TEST_UPSTREAM_KEY", "sk-test-upstream");
    let (base, up) = start_upstream().await;
    let app = spawn_app_with(move |c: &mut Config| {
        c.models.push(hosted("gpt-a", "model-a", &base, 30.0, 60.0));
        c.models.push(hosted("gpt-b", "model-b", &base, 0.5, 1.5));
        c.models.push(hosted("gpt-hang", "hang", &base, 1.0, 1.0));
        c.models.push(hosted("gpt-flaky", "flaky", &base, 1.0, 1.0));
        c.models.push(hosted("gpt-broken", "broken", &base, 1.0, 1.0));
        c.models.push(hosted("gpt-cut", "cut", &base, 1.0, 1.0));
        c.models.push(ModelConfig { restate_follow_ups: false, ..hosted("gpt-literal", "model-a", &base, 30.0, 60.0) });
        let mut plan: PlanConfig = c.plans.iter().find(|p| p.name == "trial").expect("trial").clone();
        plan.name = "hosted".into();
        plan.models = ["gpt-a", "gpt-b", "gpt-hang", "gpt-flaky", "gpt-broken", "gpt-cut", "gpt-literal"]
            .map(String::from)
            .to_vec();
        plan.default_model = "gpt-a".into();
        c.plans.push(plan);
    })
    .await;
    (app, up)
}

async fn set_model(app: &TestApp, key: &str, body: Value) {
    let r = app.client.patch(app.url("/v1/tenant/config")).bearer_auth(key).json(&body).send().await.expect("patch");
    assert_eq!(r.status(), 200);
    // The new config, at the top level (API.md) and inside the tenant it also shows.
    let changed: Value = r.json().await.expect("json");
    for (field, value) in body.as_object().expect("fields") {
        assert_eq!((&changed[field], &changed["config"][field]), (value, value), "{changed}");
    }
    assert!(changed["tenant_id"].is_string() && changed["model"].is_string(), "{changed}");
}

#[tokio::test]
async fn each_tenant_reaches_the_upstream_as_its_own_model_prompt_and_key() {
    let (app, up) = hosted_app().await;
    let a = app.signup("a@models.test", "hosted").await;
    let b = app.signup("b@models.test", "hosted").await;
    set_model(&app, &a.key, json!({"system_prompt": "You are Alpha's assistant."})).await;
    set_model(&app, &b.key, json!({"model": "gpt-b", "system_prompt": "You are Bravo's assistant."})).await;
    app.upload_text(&a.key, "Alpha policy", "Alpha refunds take 14 days.").await;
    app.upload_text(&b.key, "Bravo policy", "Bravo refunds take 30 days.").await;

    let qa = app.query(&a.key, "How long do refunds take?").await;
    let qb = app.query(&b.key, "How long do refunds take?").await;
    assert_eq!((qa["model"].as_str(), qa["answer"].as_str()), (Some("gpt-a"), Some("Answer from model-a [1]")));
    assert_eq!((qb["model"].as_str(), qb["answer"].as_str()), (Some("gpt-b"), Some("Answer from model-b [1]")));

    let seen = up.seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 2);
    for ((auth, body), (model, prompt, evidence, other)) in seen.iter().zip([
        ("model-a", "You are Alpha's assistant.", "Alpha refunds", "Bravo"),
        ("model-b", "You are Bravo's assistant.", "Bravo refunds", "Alpha"),
    ]) {
        assert_eq!(auth.as_deref(), Some("Bearer sk-test-upstream"), "the configured upstream key");
        assert_eq!(body["model"], model);
        let messages = body["messages"].as_array().expect("messages");
        assert_eq!(messages[0]["role"], "system");
        assert!(messages[0]["content"].as_str().is_some_and(|c| c.starts_with(prompt)), "{body}");
        let user = messages[1]["content"].as_str().expect("user message");
        assert!(user.contains(evidence) && !user.contains(other), "only the tenant's own evidence: {user}");
        assert!(body["max_tokens"].as_u64().is_some());
    }

    // Usage is the upstream's, priced with each tenant's model.
    assert_eq!(
        qa["usage"],
        json!({"prompt_tokens": 111, "completion_tokens": 22, "embedding_tokens": 0, "total_tokens": 133,
               "cost_micros": 111 * 30 + 22 * 60})
    );
    assert_eq!(qb["usage"]["cost_micros"], json!((111.0_f64 * 0.5 + 22.0 * 1.5).round() as i64));
    let usage_a = app.usage(&a.key).await;
    assert_eq!(usage_a["by_model"]["gpt-a"]["queries"], 1);
    assert!(usage_a["by_model"].get("gpt-b").is_none());
}

#[tokio::test]
async fn a_follow_up_is_restated_by_the_tenants_model_searched_as_restated_and_billed() {
    let (app, up) = hosted_app().await;
    let t = app.signup("follow-up@models.test", "hosted").await;
    app.upload_text(&t.key, "Globex", "Globex headquarters: the headquarters of Globex are in Berlin.").await;
    app.upload_text(&t.key, "Acme", "Acme Corporation has its headquarters in Lyon.").await;
    app.upload_text(&t.key, "Initech", "Initech headquarters moved; its headquarters is in Austin.").await;
    let conversation = json!({"model": "gpt-a", "messages": [
        {"role": "user", "content": "Who makes the Widget 3000?"},
        {"role": "assistant", "content": "Its maker is in the catalogue."},
        {"role": "user", "content": "Where is its headquarters?"},
    ]});
    // Read with the turns before it, the question matches Globex's and Initech's passages best; only the
    // model, which knows who the maker is, can name Acme.
    let r = app.post_json(&t.key, "/v1/chat/completions", conversation.clone()).await;
    assert_eq!(r.status(), 200);
    let c: Value = r.json().await.expect("json");

    let seen: Vec<Value> = up.seen.lock().expect("lock").iter().map(|(_, body)| body.clone()).collect();
    assert_eq!(seen.len(), 2, "the restatement, then the answer");
    let transcript = seen[0]["messages"][1]["content"].as_str().expect("text");
    assert_eq!(
        transcript,
        "Conversation:\nUser: Who makes the Widget 3000?\nAssistant: Its maker is in the catalogue.\n\n\
         Last question: Where is its headquarters?"
    );
    assert_eq!((seen[0]["model"].as_str(), seen[0]["temperature"].as_i64()), (Some("model-a"), Some(0)));
    // The answer's evidence was found by the restated question: Acme's passage first.
    let evidence = seen[1]["messages"].as_array().expect("messages").last().expect("question")["content"]
        .as_str()
        .expect("text")
        .to_owned();
    assert!(evidence.contains("[1] Acme\nAcme Corporation has its headquarters in Lyon."), "{evidence}");
    assert!(evidence.ends_with("Question: Where is its headquarters?"), "the client's question is answered");
    assert_eq!(c["citations"][0]["title"], "Acme");

    // Both calls are the request's usage, billed once at the tenant's model's prices.
    assert_eq!(
        c["usage"],
        json!({"prompt_tokens": 151, "completion_tokens": 31, "total_tokens": 182, "embedding_tokens": 0,
               "cost_micros": 151 * 30 + 31 * 60})
    );
    let usage = app.usage(&t.key).await;
    assert_eq!(usage["by_model"]["gpt-a"]["queries"], 1);
    assert_eq!(usage["totals"]["prompt_tokens"], 151);
    assert_eq!(usage["totals"]["completion_tokens"], 31);
    assert_eq!(usage["totals"]["cost_micros"], json!(151 * 30 + 31 * 60), "{usage}");

    // A question with nothing before it is searched as asked: one call.
    app.query(&t.key, "Where is Acme's headquarters?").await;
    assert_eq!(up.seen.lock().expect("lock").len(), 3);

    // A model configured not to restate answers the follow-up with one call, read with the turn before it.
    set_model(&app, &t.key, json!({"model": "gpt-literal"})).await;
    let mut literal = conversation.clone();
    literal["model"] = json!("gpt-literal");
    let r = app.post_json(&t.key, "/v1/chat/completions", literal).await;
    assert_eq!(r.status(), 200);
    let seen = up.seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 4, "no restatement");
    assert!(!seen[3].1["messages"][0]["content"].as_str().expect("text").starts_with(RESTATE_INSTRUCTIONS));
}

#[tokio::test]
async fn a_failed_answer_to_a_follow_up_bills_only_the_restatement_the_upstream_made() {
    let (app, up) = hosted_app().await;
    let t = app.signup("restated-then-failed@models.test", "hosted").await;
    set_model(&app, &t.key, json!({"model": "gpt-broken"})).await;
    app.upload_text(&t.key, "Acme", "Acme Corporation has its headquarters in Lyon.").await;
    // Both models cost 1 µ$ a token each way.
    let conversation = |stream: bool| {
        json!({"stream": stream, "messages": [
            {"role": "user", "content": "Who makes the Widget 3000?"},
            {"role": "assistant", "content": "Its maker is in the catalogue."},
            {"role": "user", "content": "Where is its headquarters?"},
        ]})
    };
    let r = app.post_json(&t.key, "/v1/chat/completions", conversation(false)).await;
    assert_eq!(r.status(), 502);
    // A stream cut after its first delta.
    set_model(&app, &t.key, json!({"model": "gpt-cut"})).await;
    let events = sse_events(app.post_json(&t.key, "/v1/chat/completions", conversation(true)).await).await;
    assert!(events.iter().any(|e| e.data.contains("\"error\"")), "the stream ends with an error");
    // Each model restated its follow-up (this upstream restates for any model), then failed to answer.
    let calls: Vec<Value> = up.seen.lock().expect("lock").iter().map(|(_, b)| b["model"].clone()).collect();
    assert_eq!(calls, ["broken", "broken", "broken", "cut", "cut"], "the failing answer is retried once");

    let usage = app.usage(&t.key).await;
    assert_eq!(usage["totals"]["queries"], 0, "no answer, no query: {usage}");
    assert_eq!(
        (usage["totals"]["prompt_tokens"].as_u64(), usage["totals"]["completion_tokens"].as_u64()),
        (Some(2 * 40), Some(2 * 9)),
        "{usage}"
    );
    assert_eq!(usage["totals"]["cost_micros"], json!(2 * (40 + 9)), "{usage}");
    let quotas: Value = app.get(&t.key, "/v1/quotas").await.json().await.expect("json");
    assert_eq!(
        (quotas["reserved"]["tokens"].as_u64(), quotas["used"]["tokens"].as_u64()),
        (Some(0), Some(98)),
        "{quotas}"
    );
}

#[tokio::test]
async fn a_429_is_retried_and_a_failing_or_hanging_upstream_bills_nothing() {
    let (app, up) = hosted_app().await;
    let t = app.signup("retry@models.test", "hosted").await;
    app.upload_text(&t.key, "Doc", "Refunds take 14 days.").await;

    set_model(&app, &t.key, json!({"model": "gpt-flaky"})).await;
    let q = app.query(&t.key, "refunds?").await;
    assert_eq!(q["answer"], "Answer from flaky [1]");
    let flaky_calls = up.seen.lock().expect("lock").iter().filter(|(_, b)| b["model"] == "flaky").count();
    assert_eq!(flaky_calls, 2, "one 429, one success");

    set_model(&app, &t.key, json!({"model": "gpt-broken"})).await;
    let r = app.post_json(&t.key, "/v1/query", json!({"question": "refunds?"})).await;
    assert_problem(r, 502, "upstream_failed").await;

    set_model(&app, &t.key, json!({"model": "gpt-hang"})).await;
    let r = app.post_json(&t.key, "/v1/query", json!({"question": "refunds?"})).await;
    assert_problem(r, 504, "upstream_timeout").await;
    // The operator's health view counts both (the 429 that was retried is no error).
    let operator = tenantry_domain::config::DEFAULT_OPERATOR_TOKEN;
    let overview: Value = app.get(operator, "/admin/overview").await.json().await.expect("json");
    assert_eq!(overview["integrations"]["upstream_model_errors"], 2, "{overview}");

    let usage = app.usage(&t.key).await;
    assert_eq!(usage["totals"]["queries"], 1, "only the successful query is billed");
    assert!(usage["by_model"].get("gpt-broken").is_none() && usage["by_model"].get("gpt-hang").is_none());
    // The failed requests' reservations were released.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let quotas: Value = app.get(&t.key, "/v1/quotas").await.json().await.expect("json");
    assert_eq!(quotas["reserved"]["queries"], 0);
    assert_eq!(quotas["used"]["queries"], 1);
}

#[tokio::test]
async fn streams_reach_the_upstream_as_each_tenants_model_and_bill_the_upstreams_usage_once() {
    let (app, up) = hosted_app().await;
    let a = app.signup("stream-a@models.test", "hosted").await;
    let b = app.signup("stream-b@models.test", "hosted").await;
    set_model(&app, &a.key, json!({"system_prompt": "You are Alpha's assistant."})).await;
    set_model(&app, &b.key, json!({"model": "gpt-b"})).await;
    app.upload_text(&a.key, "Alpha policy", "Alpha refunds take 14 days.").await;
    app.upload_text(&b.key, "Bravo policy", "Bravo refunds take 30 days.").await;

    let events =
        sse_events(app.post_json(&a.key, "/v1/query", json!({"question": "refunds?", "stream": true})).await).await;
    let text: String = events
        .iter()
        .filter(|e| e.event == "token")
        .map(|e| e.json()["text"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(text, "Answer from model-a [1]");
    let done = events.iter().find(|e| e.event == "done").expect("done").json();
    assert_eq!(done["model"], "gpt-a");
    assert_eq!(
        done["usage"],
        json!({"prompt_tokens": 111, "completion_tokens": 22, "embedding_tokens": 0, "total_tokens": 133,
               "cost_micros": 111 * 30 + 22 * 60})
    );

    let chat = json!({"messages": [{"role": "user", "content": "refunds?"}], "stream": true});
    let events = sse_events(app.post_json(&b.key, "/v1/chat/completions", chat).await).await;
    let chunks: Vec<Value> = events.iter().filter(|e| e.data != "[DONE]").map(|e| e.json()).collect();
    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(text, "Answer from model-b [1]");
    assert!(chunks.iter().all(|c| c["model"] == "gpt-b"));

    let seen = up.seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 2);
    for ((auth, body), model) in seen.iter().zip(["model-a", "model-b"]) {
        assert_eq!(auth.as_deref(), Some("Bearer sk-test-upstream"));
        assert_eq!((body["model"].as_str(), body["stream"].as_bool()), (Some(model), Some(true)));
        assert_eq!(body["stream_options"]["include_usage"], true, "usage is asked for in streams");
    }
    assert!(seen[0].1["messages"][0]["content"].as_str().is_some_and(|c| c.starts_with("You are Alpha's assistant.")));

    for (key, model) in [(&a.key, "gpt-a"), (&b.key, "gpt-b")] {
        let usage = app.usage(key).await;
        assert_eq!(usage["totals"]["queries"], 1);
        assert_eq!(usage["by_model"][model]["prompt_tokens"], 111);
        assert_eq!(usage["by_model"][model]["completion_tokens"], 22);
    }
}

#[tokio::test]
async fn a_stream_cut_mid_way_ends_with_an_error_and_bills_nothing() {
    let (app, _) = hosted_app().await;
    let t = app.signup("cut@models.test", "hosted").await;
    app.upload_text(&t.key, "Doc", "Refunds take 14 days.").await;
    set_model(&app, &t.key, json!({"model": "gpt-cut"})).await;

    let events =
        sse_events(app.post_json(&t.key, "/v1/query", json!({"question": "refunds?", "stream": true})).await).await;
    let last = events.last().expect("events");
    assert_eq!(last.event, "error");
    assert_eq!(last.json()["code"], "upstream_failed");
    assert!(events.iter().any(|e| e.event == "token"), "the partial answer was streamed first");
    assert!(!events.iter().any(|e| e.event == "done" || e.event == "usage"));

    let chat = json!({"messages": [{"role": "user", "content": "refunds?"}], "stream": true});
    let events = sse_events(app.post_json(&t.key, "/v1/chat/completions", chat).await).await;
    let last = events.last().expect("events").json();
    assert_eq!(last["error"]["code"], "upstream_failed", "{last}");

    let quotas: Value = app.get(&t.key, "/v1/quotas").await.json().await.expect("json");
    assert_eq!((quotas["used"]["queries"].as_u64(), quotas["reserved"]["queries"].as_u64()), (Some(0), Some(0)));
    assert_eq!(app.usage(&t.key).await["totals"]["queries"], 0);
}

/// A plan with `query_rewriting` has the tenant's hosted model reword each question for retrieval
/// (`advanced`) or plan it (`agentic`): what it writes is searched beside the question, and its tokens are
/// the request's. A plan without it sends the question alone.
#[tokio::test]
async fn a_plan_with_query_rewriting_searches_the_models_wordings_and_bills_them() {
    std::env::set_var("TENANTRY_TEST_UPSTREAM_KEY", "sk-test-upstream");
    let (base, up) = start_upstream().await;
    let app = spawn_app_with(move |c: &mut Config| {
        c.models.push(hosted("gpt-a", "model-a", &base, 30.0, 60.0));
        let mut plan: PlanConfig = c.plans.iter().find(|p| p.name == "trial").expect("trial").clone();
        plan.models = vec!["gpt-a".into()];
        plan.default_model = "gpt-a".into();
        plan.retrieval_modes = vec!["basic".into(), "advanced".into(), "agentic".into()];
        plan.default_retrieval_mode = "advanced".into();
        c.plans.push(PlanConfig { name: "literal".into(), ..plan.clone() });
        c.plans.push(PlanConfig { name: "rewriting".into(), query_rewriting: true, ..plan });
    })
    .await;
    let (rewriting, literal) =
        (app.signup("rewrite@models.test", "rewriting").await, app.signup("literal@models.test", "literal").await);
    for t in [&rewriting, &literal] {
        app.upload_text(
            &t.key,
            "Accounts",
            "To delete a company account, an admin holds the delete button for a while.",
        )
        .await;
        app.upload_text(
            &t.key,
            "Erasure",
            "The data subject shall have the right to obtain from the controller the erasure of personal data \
             concerning him or her without undue delay.",
        )
        .await;
        app.upload_text(
            &t.key,
            "Breach",
            "A personal data breach is notified to the supervisory authority within 72 hours.",
        )
        .await;
    }
    let question = "How can I get a company to delete everything it holds about me?";

    // Asked as written, the question's words find the account page first.
    let plain = app.query(&literal.key, question).await;
    assert_eq!(plain["citations"][0]["title"], "Accounts", "{plain}");
    assert_eq!(up.seen.lock().expect("lock").len(), 1, "the answer only: no rewriting on this plan");

    // Reworded by the model in the regulation's words, the erasure passage comes first.
    let reworded = app.query(&rewriting.key, question).await;
    let seen: Vec<Value> = up.seen.lock().expect("lock").iter().map(|(_, body)| body.clone()).collect();
    assert_eq!(seen.len(), 3, "the rewriting, then the answer");
    assert_eq!(seen[1]["messages"][1]["content"], format!("Question: {question}"));
    assert_eq!((seen[1]["model"].as_str(), seen[1]["temperature"].as_i64()), (Some("model-a"), Some(0)));
    assert_eq!(reworded["citations"][0]["title"], "Erasure", "{reworded}");
    assert_eq!(reworded["steps"], json!([question]), "advanced searched wordings beside the one question");
    assert_eq!(
        reworded["usage"],
        json!({"prompt_tokens": 141, "completion_tokens": 34, "total_tokens": 175, "embedding_tokens": 0,
               "cost_micros": 141 * 30 + 34 * 60})
    );
    let usage = app.usage(&rewriting.key).await;
    assert_eq!((usage["totals"]["queries"].as_i64(), usage["totals"]["prompt_tokens"].as_i64()), (Some(1), Some(141)));
    assert_eq!(usage["totals"]["cost_micros"], json!(141 * 30 + 34 * 60), "{usage}");

    // In agentic mode the model's plan is the plan: each of its queries is a step.
    set_model(&app, &rewriting.key, json!({"retrieval_mode": "agentic"})).await;
    let r = app.post_json(&rewriting.key, "/v1/query", json!({"question": question, "top_k": 2})).await;
    assert_eq!(r.status(), 200);
    let planned: Value = r.json().await.expect("json");
    assert_eq!(
        planned["steps"],
        json!(["erasure of personal data by the controller", "deadline to notify a personal data breach"])
    );
    let seen = up.seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 5, "the plan, then the answer");
    assert!(seen[3].1["messages"][0]["content"].as_str().is_some_and(|m| m.starts_with(PLAN_INSTRUCTIONS)));
    let evidence = seen[4].1["messages"].as_array().expect("messages").last().expect("question")["content"]
        .as_str()
        .expect("text")
        .to_owned();
    // Two passages, one per step of the model's plan; the question's own best (the account page) gives way.
    assert!(evidence.contains("] Erasure\n") && evidence.contains("] Breach\n"), "each step's evidence: {evidence}");
    assert!(!evidence.contains("] Accounts\n"), "{evidence}");
    assert_eq!(planned["citations"][0]["title"], "Erasure", "{planned}");
}
