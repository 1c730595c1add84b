//! Vectors from an upstream embedding model (`search.embedding_model`): a fake OpenAI-compatible server
//! started here answers `POST /v1/embeddings` in the wire format. `advanced` finds documents by meaning
//! through it, and the tokens it bills for uploads and questions land in the tenant's ledger at the embedding
//! model's price; a failing upstream fails the upload with nothing recorded.

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};
use tenantry_domain::config::{Config, ModelConfig};

use crate::helpers::{assert_problem, spawn_app_with, TestApp};

/// Each call's inputs and the tokens the fake billed for them.
type Calls = Arc<Mutex<Vec<(Vec<String>, u64)>>>;

/// A concept per dimension, so texts that share no word can still be near: money back, shipping, invoices,
/// and a constant so no vector is zero.
fn concept_vector(text: &str) -> Vec<f64> {
    let t = text.to_lowercase();
    let has = |words: &[&str]| if words.iter().any(|w| t.contains(w)) { 1.0 } else { 0.0 };
    vec![has(&["refund", "reimburs", "money back"]), has(&["ship", "carrier", "parcel"]), has(&["invoice"]), 0.1]
}

async fn embeddings(State(calls): State<Calls>, body: axum::Json<Value>) -> Response {
    let inputs: Vec<String> = body["input"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    if body["model"] != "text-embedding-test" || body["encoding_format"] != "float" {
        return (StatusCode::BAD_REQUEST, axum::Json(json!({"error": {"message": "bad request"}}))).into_response();
    }
    if inputs.iter().any(|t| t.contains("BROKEN")) {
        return (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(json!({"error": {"message": "boom"}}))).into_response();
    }
    // The upstream's own count (words), which is not ours (cl100k): the ledger must hold the upstream's.
    let tokens: u64 = inputs.iter().map(|t| t.split_whitespace().count() as u64).sum();
    calls.lock().expect("lock").push((inputs.clone(), tokens));
    // Returned out of order, as the API allows: `index` says which input each vector belongs to.
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .rev()
        .map(|(i, t)| {
            let mut v = concept_vector(t);
            if t.contains("WIDE") {
                v.push(0.5);
            }
            json!({"object": "embedding", "index": i, "embedding": v})
        })
        .collect();
    axum::Json(json!({
        "object": "list",
        "data": data,
        "model": "text-embedding-test",
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens}
    }))
    .into_response()
}

async fn app_with_upstream_embedder() -> (TestApp, Calls) {
    let calls = Calls::default();
    let router = Router::new().route("/v1/embeddings", post(embeddings)).with_state(calls.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}/v1", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, router).await });
    let app = spawn_app_with(move |c: &mut Config| {
        c.models.push(ModelConfig {
            name: "embed-small".into(),
            provider: "openai".into(),
            base_url: base,
            api_key_env: String::new(),
            upstream_model: Some("text-embedding-test".into()),
            input_usd_per_million: 20.0,
            output_usd_per_million: 0.0,
            context_window: 8192,
            answer_sentences: 1,
            timeout_secs: 5,
            max_retries: 0,
            restate_follow_ups: true,
        });
        c.search.embedding_model = "embed-small".into();
        c.search.embedding_dimensions = 4;
        let mut plan = c.plans.iter().find(|p| p.name == "starter").expect("starter").clone();
        plan.name = "agent".into();
        plan.retrieval_modes = vec!["basic".into(), "advanced".into(), "agentic".into()];
        c.plans.push(plan);
    })
    .await;
    (app, calls)
}

async fn use_mode(app: &TestApp, key: &str, mode: &str) {
    let r = app
        .client
        .patch(app.url("/v1/tenant/config"))
        .bearer_auth(key)
        .json(&json!({"retrieval_mode": mode}))
        .send()
        .await
        .expect("patch");
    assert_eq!(r.status(), 200);
}

fn billed(calls: &Calls) -> u64 {
    calls.lock().expect("lock").iter().map(|(_, tokens)| tokens).sum()
}

#[tokio::test]
async fn advanced_finds_by_meaning_through_the_upstream_and_its_tokens_are_billed_to_the_tenant() {
    let (app, calls) = app_with_upstream_embedder().await;
    let t = app.signup("vectors@embeddings.test", "starter").await;
    let other = app.signup("other@embeddings.test", "starter").await;
    app.upload_text(&t.key, "Reimbursements", "Reimbursements are paid within 14 days of the return.").await;
    app.upload_text(&t.key, "Carriers", "Parcels leave the Berlin warehouse with DHL.").await;
    let uploads = billed(&calls);
    assert!(uploads > 0, "both uploads were embedded upstream");
    app.upload_text(&other.key, "Their refunds", "Refunds are never issued.").await;
    let others = billed(&calls) - uploads;

    // No word of the question is in the document; its meaning is.
    use_mode(&app, &t.key, "advanced").await;
    let question = "How do I get my money back?";
    let answer = app.query(&t.key, question).await;
    let titles: Vec<&str> =
        answer["citations"].as_array().expect("citations").iter().filter_map(|c| c["title"].as_str()).collect();
    assert_eq!(titles.first(), Some(&"Reimbursements"), "{answer}");
    assert!(!titles.contains(&"Their refunds"), "never another tenant's chunks: {titles:?}");
    let query_tokens = question.split_whitespace().count() as u64;
    assert_eq!(answer["usage"]["embedding_tokens"], query_tokens, "{answer}");
    let generation = answer["usage"]["prompt_tokens"].as_u64().expect("prompt")
        + answer["usage"]["completion_tokens"].as_u64().expect("completion");
    assert_eq!(answer["usage"]["total_tokens"].as_u64(), Some(generation + query_tokens));

    // The ledger: the upstream's own counts, under the embedding model, at its price (20 $/M = 20 µ$ a token).
    let usage = app.usage(&t.key).await;
    let embed = &usage["by_model"]["embed-small"];
    assert_eq!(embed["prompt_tokens"].as_u64(), Some(uploads + query_tokens), "{usage}");
    assert_eq!(embed["cost_micros"].as_i64(), Some(20 * (uploads + query_tokens) as i64), "{usage}");
    assert_eq!(embed["queries"], 0, "the query is counted under the answering model: {usage}");
    let quotas: Value = app.get(&t.key, "/v1/quotas").await.json().await.expect("json");
    assert_eq!(quotas["used"]["tokens"].as_u64(), Some(uploads + generation + query_tokens), "{quotas}");
    assert_eq!(app.usage(&other.key).await["by_model"]["embed-small"]["prompt_tokens"].as_u64(), Some(others));

    // A basic-mode question embeds nothing and bills no embedding.
    use_mode(&app, &t.key, "basic").await;
    let before = billed(&calls);
    let basic = app.query(&t.key, "How long until reimbursements are paid?").await;
    assert_eq!(basic["usage"]["embedding_tokens"], 0, "{basic}");
    assert_eq!(billed(&calls), before);
}

#[tokio::test]
async fn an_agentic_question_bills_the_embedding_of_every_step_it_retrieves_for() {
    let (app, calls) = app_with_upstream_embedder().await;
    let t = app.signup("agent@embeddings.test", "agent").await;
    app.upload_text(&t.key, "Reimbursements", "Reimbursements are paid within 14 days of the return.").await;
    app.upload_text(&t.key, "Carriers", "Parcels leave the Berlin warehouse with DHL.").await;
    use_mode(&app, &t.key, "agentic").await;
    let before = calls.lock().expect("lock").len();
    let answer = app.query(&t.key, "How do I get my money back and which carrier takes the parcels?").await;
    let steps = answer["steps"].as_array().expect("steps").len();
    assert!(steps >= 2, "a compound question is planned in steps: {answer}");
    let asked: Vec<(Vec<String>, u64)> = calls.lock().expect("lock")[before..].to_vec();
    assert!(asked.len() >= steps, "each step's text is embedded: {asked:?}");
    let billed: u64 = asked.iter().map(|(_, tokens)| tokens).sum();
    assert_eq!(answer["usage"]["embedding_tokens"].as_u64(), Some(billed), "{answer}");
    let usage = app.usage(&t.key).await;
    let uploads: u64 = calls.lock().expect("lock")[..before].iter().map(|(_, tokens)| tokens).sum();
    assert_eq!(usage["by_model"]["embed-small"]["prompt_tokens"].as_u64(), Some(uploads + billed), "{usage}");
}

#[tokio::test]
async fn a_failing_or_mismatched_upstream_embedder_fails_the_upload_and_leaves_nothing() {
    let (app, calls) = app_with_upstream_embedder().await;
    let t = app.signup("broken@embeddings.test", "starter").await;
    for text in ["This text is BROKEN upstream.", "This one comes back WIDE: five dimensions, not four."] {
        let r = app.post_json(&t.key, "/v1/documents", json!({"title": "Doomed", "text": text})).await;
        assert_problem(r, 502, "upstream_failed").await;
    }
    assert_eq!(calls.lock().expect("lock").len(), 1, "the wide reply was billed upstream, the failure was not");

    let docs: Value = app.get(&t.key, "/v1/documents").await.json().await.expect("json");
    assert_eq!(docs["documents"], json!([]), "{docs}");
    let quotas: Value = app.get(&t.key, "/v1/quotas").await.json().await.expect("json");
    for meter in ["documents", "storage_bytes", "tokens"] {
        assert_eq!(quotas["used"][meter], 0, "{meter}: {quotas}");
    }
    let usage = app.usage(&t.key).await;
    assert_eq!(usage["totals"]["documents"], 0, "{usage}");
    assert_eq!(usage["totals"]["prompt_tokens"], 0, "{usage}");

    // The same upload once the upstream is well: it lands, with no leftover of the failed attempts.
    app.upload_text(&t.key, "Fine", "Invoices are due within 30 days.").await;
    let docs: Value = app.get(&t.key, "/v1/documents").await.json().await.expect("json");
    assert_eq!(docs["documents"].as_array().map(Vec::len), Some(1), "{docs}");
}

#[tokio::test]
async fn an_embedding_model_that_is_not_an_upstream_model_is_a_start_error() {
    let data_dir = tempfile::tempdir().expect("temp dir");
    let mut config = Config::builtin();
    config.server.data_dir = data_dir.path().to_owned();
    config.search.embedding_dimensions = 4;
    for name in ["no-such-model", "local-small"] {
        config.search.embedding_model = name.into();
        let err = tenantry_service::Services::start(config.clone()).await.err().expect("refused").to_string();
        assert!(err.contains("search.embedding_model") && err.contains(name), "{err}");
    }
}

#[tokio::test]
async fn v1_embeddings_embeds_with_the_upstream_model_and_bills_its_tokens() {
    let (app, calls) = app_with_upstream_embedder().await;
    let t = app.signup("api@embeddings.test", "starter").await;
    let texts = ["Reimbursements take 14 days.", "Parcels leave Berlin."];
    let r = app.post_json(&t.key, "/v1/embeddings", json!({"model": "default", "input": texts})).await;
    assert_eq!(r.status(), 200);
    let list: Value = r.json().await.expect("json");
    assert_eq!((list["object"].as_str(), list["model"].as_str()), (Some("list"), Some("embed-small")), "{list}");
    let data = list["data"].as_array().expect("data");
    assert_eq!(data.len(), 2);
    for (i, entry) in data.iter().enumerate() {
        assert_eq!((entry["index"].as_u64(), entry["embedding"].as_array().map(Vec::len)), (Some(i as u64), Some(4)));
    }
    let billed_upstream = billed(&calls);
    assert_eq!(list["usage"]["prompt_tokens"].as_u64(), Some(billed_upstream), "the upstream's own count: {list}");
    let usage = app.usage(&t.key).await;
    let embed = &usage["by_model"]["embed-small"];
    assert_eq!(embed["prompt_tokens"].as_u64(), Some(billed_upstream), "{usage}");
    assert_eq!(embed["cost_micros"].as_i64(), Some(20 * billed_upstream as i64), "{usage}");
    assert_eq!(embed["queries"], 0, "{usage}");
}
