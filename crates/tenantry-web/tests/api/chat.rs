//! Streaming and the OpenAI-compatible route with the built-in model: `/v1/query` as server-sent events and
//! `/v1/chat/completions` plain and streamed, each billed once, with OpenAI's error shape on that route.

use serde_json::{json, Value};
use tenantry_domain::config::{PlanConfig, Quotas};

use crate::helpers::{assert_problem, spawn_app, spawn_app_with, sse_events, Tenant, TestApp};

const POLICY: &str = "Refunds are issued within 14 days of a request. Shipping is free above 50 euros.";
const QUESTION: &str = "How long do refunds take?";

async fn tenant_with_policy(app: &TestApp, email: &str) -> Tenant {
    let t = app.signup(email, "trial").await;
    app.upload_text(&t.key, "Policy", POLICY).await;
    t
}

fn chat(question: &str) -> Value {
    json!({"model": "default", "messages": [
        {"role": "system", "content": "You are helpful."},
        {"role": "user", "content": question},
    ]})
}

/// An error response of the OpenAI-compatible routes: OpenAI's `error` (status, `error.type`, `error.code`)
/// and API.md's problem+json in the same body; returns `error`.
async fn assert_openai_error(r: reqwest::Response, status: u16, kind: &str, code: &str) -> Value {
    assert_eq!(r.status().as_u16(), status);
    assert!(r.headers().contains_key("x-request-id"));
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let body: Value = r.json().await.expect("json");
    let error = body["error"].clone();
    assert_eq!((error["type"].as_str(), error["code"].as_str()), (Some(kind), Some(code)), "{body}");
    assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    assert_eq!(body["status"], status, "{body}");
    for field in ["type", "title", "detail", "code"] {
        assert!(body[field].as_str().is_some_and(|s| !s.is_empty()), "problem+json has {field}: {body}");
    }
    error
}

#[tokio::test]
async fn a_streamed_query_sends_tokens_then_citations_usage_and_the_result_billed_once() {
    let app = spawn_app().await;
    let t = tenant_with_policy(&app, "stream@chat.test").await;
    let plain = app.query(&t.key, QUESTION).await;

    let r = app.post_json(&t.key, "/v1/query", json!({"question": QUESTION, "stream": true})).await;
    assert!(r.headers().contains_key("x-quota-queries-remaining"));
    let events = sse_events(r).await;
    let names: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
    let tokens = names.iter().take_while(|n| **n == "token").count();
    assert!(tokens > 1, "several tokens: {names:?}");
    assert_eq!(&names[tokens..], ["citations", "usage", "done"]);

    let streamed: String =
        events[..tokens].iter().map(|e| e.json()["text"].as_str().expect("text").to_owned()).collect();
    let done = events[tokens + 2].json();
    assert_eq!(streamed, done["answer"].as_str().expect("answer"));
    assert_eq!(done["answer"], plain["answer"], "same pipeline, same answer");
    assert_eq!(events[tokens].json()["citations"], done["citations"]);
    assert_eq!(events[tokens + 1].json(), done["usage"]);
    assert!(done["answer"].as_str().is_some_and(|a| a.contains("14 days")));

    let usage = app.usage(&t.key).await;
    assert_eq!(usage["totals"]["queries"], 2);
    let billed_tokens = usage["totals"]["prompt_tokens"].as_u64().expect("n")
        + usage["totals"]["completion_tokens"].as_u64().expect("n");
    assert_eq!(billed_tokens, 2 * done["usage"]["total_tokens"].as_u64().expect("n"));
}

#[tokio::test]
async fn a_streamed_query_with_bad_input_fails_before_the_stream_starts() {
    let app = spawn_app().await;
    let t = tenant_with_policy(&app, "stream-bad@chat.test").await;
    let r = app.post_json(&t.key, "/v1/query", json!({"question": "  ", "stream": true})).await;
    assert_problem(r, 422, "validation_failed").await;
    assert_eq!(app.usage(&t.key).await["totals"]["queries"], 0);
}

#[tokio::test]
async fn chat_completions_answer_from_the_tenants_documents_in_openais_shape() {
    let app = spawn_app().await;
    let t = tenant_with_policy(&app, "plain@chat.test").await;
    let r = app.post_json(&t.key, "/v1/chat/completions", chat(QUESTION)).await;
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("x-quota-tokens-remaining"));
    let c: Value = r.json().await.expect("json");
    assert_eq!(c["object"], "chat.completion");
    assert!(c["id"].as_str().is_some_and(|id| id.starts_with("chatcmpl-")));
    assert!(c["created"].as_i64().is_some_and(|t| t > 1_700_000_000));
    assert_eq!(c["model"], "local-small");
    assert_eq!(c["choices"][0]["message"]["role"], "assistant");
    assert_eq!(c["choices"][0]["finish_reason"], "stop");
    let answer = c["choices"][0]["message"]["content"].as_str().expect("content");
    assert!(answer.contains("14 days") && !answer.contains("Shipping"), "{answer}");
    let u = &c["usage"];
    assert_eq!(
        u["total_tokens"],
        u["prompt_tokens"].as_u64().expect("n") + u["completion_tokens"].as_u64().expect("n")
    );
    assert_eq!(c["citations"][0]["title"], "Policy");

    // Content given as parts, and the model named explicitly.
    let parts = json!({"model": "local-small", "messages": [
        {"role": "user", "content": [{"type": "text", "text": QUESTION}]},
    ]});
    let r = app.post_json(&t.key, "/v1/chat/completions", parts).await;
    assert_eq!(r.status(), 200);
    let c2: Value = r.json().await.expect("json");
    assert_eq!(c2["choices"][0]["message"]["content"], answer);

    let usage = app.usage(&t.key).await;
    assert_eq!(usage["by_model"]["local-small"]["queries"], 2);
}

#[tokio::test]
async fn streamed_chat_completions_are_openai_chunks_with_usage_and_done() {
    let app = spawn_app().await;
    let t = tenant_with_policy(&app, "chunks@chat.test").await;
    let mut body = chat(QUESTION);
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let events = sse_events(app.post_json(&t.key, "/v1/chat/completions", body).await).await;

    assert_eq!(events.last().map(|e| e.data.as_str()), Some("[DONE]"));
    let chunks: Vec<Value> = events[..events.len() - 1].iter().map(|e| e.json()).collect();
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk" && c["model"] == "local-small"));
    assert!(chunks.windows(2).all(|w| w[0]["id"] == w[1]["id"]), "one id for the whole stream");
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");

    let (usage_chunk, rest) = chunks.split_last().expect("chunks");
    assert_eq!(usage_chunk["choices"], json!([]));
    let (stop, deltas) = rest.split_last().expect("chunks");
    assert_eq!(stop["choices"][0]["finish_reason"], "stop");
    assert!(deltas.iter().all(|c| c["choices"][0]["finish_reason"].is_null() && c["usage"].is_null()));
    let text: String = deltas.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert!(text.contains("14 days"), "{text}");

    let usage = app.usage(&t.key).await;
    assert_eq!(usage["totals"]["queries"], 1);
    let billed = usage["totals"]["prompt_tokens"].as_u64().expect("n")
        + usage["totals"]["completion_tokens"].as_u64().expect("n");
    assert_eq!(usage_chunk["usage"]["total_tokens"].as_u64(), Some(billed));

    // Without include_usage there is no usage chunk: the stop chunk is last before [DONE].
    let mut body = chat(QUESTION);
    body["stream"] = json!(true);
    let events = sse_events(app.post_json(&t.key, "/v1/chat/completions", body).await).await;
    assert_eq!(events[events.len() - 2].json()["choices"][0]["finish_reason"], "stop");
    assert!(events.iter().all(|e| e.data == "[DONE]" || e.json().get("usage").is_none()));
}

#[tokio::test]
async fn chat_completion_errors_have_openais_shape_and_bill_nothing() {
    let app = spawn_app_with(|c| {
        let mut plan: PlanConfig = c.plans.iter().find(|p| p.name == "trial").expect("trial").clone();
        plan.name = "one-query".into();
        plan.quotas = Quotas { queries: 1, ..plan.quotas };
        c.plans.push(plan);
    })
    .await;
    let t = app.signup("errors@chat.test", "one-query").await;
    app.upload_text(&t.key, "Policy", POLICY).await;
    let url = app.url("/v1/chat/completions");

    let r = app.client.post(&url).bearer_auth("tk_nope").json(&chat(QUESTION)).send().await.expect("request");
    assert_openai_error(r, 401, "authentication_error", "unauthenticated").await;

    let mut other_model = chat(QUESTION);
    other_model["model"] = json!("gpt-4o");
    let e = assert_openai_error(
        app.post_json(&t.key, "/v1/chat/completions", other_model).await,
        404,
        "invalid_request_error",
        "model_not_found",
    )
    .await;
    assert_eq!(e["param"], "model");
    assert!(e["message"].as_str().is_some_and(|m| m.contains("local-small")), "names the tenant's model: {e}");

    let no_user = json!({"messages": [{"role": "system", "content": "Hi"}]});
    let r = app.post_json(&t.key, "/v1/chat/completions", no_user).await;
    assert_openai_error(r, 400, "invalid_request_error", "bad_request").await;

    let r = app.client.post(&url).bearer_auth(&t.key).body("{not json").send().await.expect("request");
    assert_openai_error(r, 400, "invalid_request_error", "bad_request").await;

    assert_eq!(app.usage(&t.key).await["totals"]["queries"], 0, "refused requests are not billed");

    let r = app.post_json(&t.key, "/v1/chat/completions", chat(QUESTION)).await;
    assert_eq!(r.status(), 200);
    let r = app.post_json(&t.key, "/v1/chat/completions", chat(QUESTION)).await;
    assert_openai_error(r, 429, "insufficient_quota", "quota_exceeded").await;
    assert_eq!(app.usage(&t.key).await["totals"]["queries"], 1);
}

#[tokio::test]
async fn models_answer_by_name_default_or_alias_and_refuse_others() {
    let app = spawn_app_with(|c| c.gateway.model_aliases = vec!["gpt-4o-mini".into()]).await;
    let t = tenant_with_policy(&app, "models@chat.test").await;
    for name in ["local-small", "default", "gpt-4o-mini"] {
        let model: Value = app.get(&t.key, &format!("/v1/models/{name}")).await.json().await.expect("json");
        assert_eq!((model["id"].as_str(), model["object"].as_str()), (Some(name), Some("model")), "{model}");
    }
    let r = app.get(&t.key, "/v1/models/gpt-4o").await;
    let error = assert_openai_error(r, 404, "invalid_request_error", "model_not_found").await;
    assert_eq!(error["param"], "model");
    // The alias is answered by the tenant's own model, billed as that model.
    let mut request = chat(QUESTION);
    request["model"] = json!("gpt-4o-mini");
    let r = app.post_json(&t.key, "/v1/chat/completions", request).await;
    assert_eq!(r.status(), 200);
    let completion: Value = r.json().await.expect("json");
    assert_eq!(completion["model"], "local-small");
}

#[tokio::test]
async fn browsers_may_call_from_configured_origins_only() {
    let preflight = |app: &TestApp, origin: &str| {
        app.client
            .request(reqwest::Method::OPTIONS, app.url("/v1/chat/completions"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "authorization, content-type, x-stainless-os")
            .send()
    };
    let app = spawn_app_with(|c| c.gateway.cors_origins = vec!["https://app.example.com".into()]).await;
    let r = preflight(&app, "https://app.example.com").await.expect("preflight");
    assert!(r.status().is_success(), "{}", r.status());
    assert_eq!(r.headers()["access-control-allow-origin"], "https://app.example.com");
    let allowed = r.headers()["access-control-allow-headers"].to_str().expect("ascii").to_owned();
    assert!(allowed.contains("authorization") && allowed.contains("x-stainless-os"), "{allowed}");
    let r = preflight(&app, "https://evil.example.com").await.expect("preflight");
    assert!(!r.headers().contains_key("access-control-allow-origin"), "another origin is not allowed");
    // An actual request carries the header too, and exposes the quota headers to the page.
    let t = tenant_with_policy(&app, "cors@chat.test").await;
    let r = app
        .client
        .post(app.url("/v1/chat/completions"))
        .bearer_auth(&t.key)
        .header("origin", "https://app.example.com")
        .json(&chat(QUESTION))
        .send()
        .await
        .expect("post");
    assert_eq!(r.headers()["access-control-allow-origin"], "https://app.example.com");
    assert!(r.headers().contains_key("access-control-expose-headers"));

    let closed = spawn_app().await;
    let r = preflight(&closed, "https://app.example.com").await.expect("preflight");
    assert!(!r.headers().contains_key("access-control-allow-origin"), "no origins configured, no CORS");
}

#[tokio::test]
async fn embeddings_come_from_the_local_embedder_metered_and_held_to_the_quota() {
    let app = spawn_app_with(|c| {
        let trial = c.plans.iter_mut().find(|p| p.name == "trial").expect("trial");
        trial.quotas.tokens = 40;
    })
    .await;
    let t = app.signup("vectors@chat.test", "trial").await;
    let text = "Refunds are issued within fourteen days.";
    let r = app.post_json(&t.key, "/v1/embeddings", json!({"input": text})).await;
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("x-quota-tokens-remaining"));
    let float: Value = r.json().await.expect("json");
    let vector: Vec<f32> = serde_json::from_value(float["data"][0]["embedding"].clone()).expect("floats");
    assert!(!vector.is_empty());
    let tokens = float["usage"]["prompt_tokens"].as_u64().expect("tokens");
    assert_eq!(tokens, tenantry_domain::tokens::count(text));
    let usage = app.usage(&t.key).await;
    assert_eq!(usage["totals"]["prompt_tokens"].as_u64(), Some(tokens), "{usage}");
    assert_eq!(usage["totals"]["queries"], 0, "{usage}");

    // base64, as OpenAI's SDKs ask by default: the same vector as little-endian f32s.
    let r = app.post_json(&t.key, "/v1/embeddings", json!({"input": [text], "encoding_format": "base64"})).await;
    let encoded: Value = r.json().await.expect("json");
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded["data"][0]["embedding"].as_str().expect("a string"))
        .expect("base64");
    let decoded: Vec<f32> = bytes.chunks(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    assert_eq!(decoded, vector);

    let r = app.post_json(&t.key, "/v1/embeddings", json!({"input": text, "model": "text-embedding-3-small"})).await;
    assert_openai_error(r, 404, "invalid_request_error", "model_not_found").await;
    let r = app.post_json(&t.key, "/v1/embeddings", json!({"input": [1, 2, 3]})).await;
    assert_eq!(assert_openai_error(r, 400, "invalid_request_error", "bad_request").await["param"], "input");
    // The token quota (40) holds: four more texts of the same size do not fit.
    let r = app.post_json(&t.key, "/v1/embeddings", json!({"input": [text, text, text, text]})).await;
    assert_openai_error(r, 429, "insufficient_quota", "quota_exceeded").await;
}

#[tokio::test]
async fn the_responses_api_answers_and_bills_like_a_chat_completion() {
    let app = spawn_app().await;
    let t = tenant_with_policy(&app, "responses@chat.test").await;
    let r = app.post_json(&t.key, "/v1/responses", json!({"model": "default", "input": QUESTION})).await;
    assert_eq!(r.status(), 200);
    let response: Value = r.json().await.expect("json");
    assert_eq!(response["status"], "completed");
    let text = response["output"][0]["content"][0]["text"].as_str().expect("output_text");
    assert!(text.contains("14 days"), "{response}");
    assert!(!response["citations"].as_array().expect("citations").is_empty());
    let usage = app.usage(&t.key).await;
    assert_eq!(usage["totals"]["queries"], 1, "{usage}");
    let input = response["usage"]["input_tokens"].as_u64().expect("input");
    assert_eq!(usage["totals"]["prompt_tokens"].as_u64(), Some(input), "{usage}");

    let cut = app.post_json(&t.key, "/v1/responses", json!({"input": QUESTION, "max_output_tokens": 2})).await;
    let cut: Value = cut.json().await.expect("json");
    assert_eq!(
        (cut["status"].as_str(), cut["incomplete_details"]["reason"].as_str()),
        (Some("incomplete"), Some("max_output_tokens"))
    );
    let tool = json!([{"type": "function", "name": "lookup", "parameters": {}}]);
    let r = app.post_json(&t.key, "/v1/responses", json!({"input": QUESTION, "tools": tool})).await;
    assert_eq!(assert_openai_error(r, 400, "invalid_request_error", "unsupported_parameter").await["param"], "tools");
    for (refused, param) in [
        (json!({"input": QUESTION, "tools": [{"type": "file_search", "vector_store_ids": ["vs_1"]}]}), "tools"),
        (json!({"input": QUESTION, "previous_response_id": "resp_1"}), "previous_response_id"),
        (
            json!({"input": QUESTION, "text": {"format": {"type": "json_schema", "name": "P", "schema": {}}}}),
            "response_format",
        ),
    ] {
        let r = app.post_json(&t.key, "/v1/responses", refused).await;
        assert_eq!(assert_openai_error(r, 400, "invalid_request_error", "unsupported_parameter").await["param"], param);
    }
    let r = app.post_json(&t.key, "/v1/responses", json!({"input": [{"type": "computer_call", "id": "c"}]})).await;
    assert_eq!(assert_openai_error(r, 400, "invalid_request_error", "bad_request").await["param"], "input");
    assert_eq!(app.usage(&t.key).await["totals"]["queries"], 2, "nothing refused was billed");
}
