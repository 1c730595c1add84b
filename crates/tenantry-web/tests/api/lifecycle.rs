//! What the skeleton already guarantees about tenant states and request ids.

use serde_json::json;

use crate::helpers::{assert_problem, spawn_app};

#[tokio::test]
async fn a_paid_plan_waits_for_payment_and_is_gated() {
    let app = spawn_app().await;
    let r = app
        .client
        .post(app.url("/v1/signup"))
        .json(&json!({"email": "pay@later.test", "organization": "Payer", "plan": "pro"}))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 201);
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body["state"], "pending_payment");
    assert!(body["checkout_url"].is_null(), "manual provider: no checkout url");
    let key = body["api_key"].as_str().expect("key");
    let tenant: serde_json::Value = app.get(key, "/v1/tenant").await.json().await.expect("json");
    assert_eq!(tenant["state"], "pending_payment", "GET /v1/tenant answers before payment");
    assert_problem(app.get(key, "/v1/documents").await, 402, "payment_required").await;
    let r = app.post_json(key, "/v1/query", json!({"question": "anything"})).await;
    assert_problem(r, 402, "payment_required").await;
}

#[tokio::test]
async fn duplicate_email_is_409_and_case_insensitive() {
    let app = spawn_app().await;
    app.signup("Dup@Example.test", "trial").await;
    let r = app
        .client
        .post(app.url("/v1/signup"))
        .json(&json!({"email": "dup@example.TEST", "organization": "Again", "plan": "trial"}))
        .send()
        .await
        .expect("post");
    assert_problem(r, 409, "conflict").await;
}

#[tokio::test]
async fn request_ids_are_echoed_or_generated() {
    let app = spawn_app().await;
    let r = app.client.get(app.url("/healthz")).header("x-request-id", "trace-me-42").send().await.expect("get");
    assert_eq!(r.headers()["x-request-id"], "trace-me-42");
    let r = app.client.get(app.url("/healthz")).send().await.expect("get");
    let generated = r.headers()["x-request-id"].to_str().expect("ascii").to_owned();
    assert!(generated.starts_with("req_"), "{generated}");
    let t = app.signup("rid@example.test", "trial").await;
    app.upload_text(&t.key, "Doc", "Refunds take 14 days.").await;
    let r = app
        .client
        .post(app.url("/v1/query"))
        .bearer_auth(&t.key)
        .header("x-request-id", "q-1")
        .json(&json!({"question": "refunds"}))
        .send()
        .await
        .expect("post");
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body["request_id"], "q-1");
}

#[tokio::test]
async fn a_reused_request_id_never_merges_usage_within_or_across_tenants() {
    let app = spawn_app().await;
    let a = app.signup("rid-a@example.test", "trial").await;
    let b = app.signup("rid-b@example.test", "trial").await;
    for t in [&a, &b, &a] {
        let r = app
            .client
            .post(app.url("/v1/query"))
            .bearer_auth(&t.key)
            .header("x-request-id", "same-id")
            .json(&json!({"question": "anything"}))
            .send()
            .await
            .expect("post");
        assert_eq!(r.status(), 200);
    }
    assert_eq!(app.usage(&a.key).await["totals"]["queries"], 2);
    assert_eq!(app.usage(&b.key).await["totals"]["queries"], 1);
}
