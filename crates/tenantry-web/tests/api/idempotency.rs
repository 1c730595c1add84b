//! `Idempotency-Key` (API.md "Integrations"): a retried request runs and is metered once, its first response
//! comes back marked `Idempotent-Replayed: true` (after a restart, and through another node), a key reused
//! for another request is refused, and one caller's key never replays another's response.

use reqwest::StatusCode;
use serde_json::{json, Value};
use tenantry_domain::Config;

use crate::helpers::{self, assert_problem, fresh_postgres_database, spawn_app, Tenant, TestApp};

const OPERATOR: &str = "idempotency-operator-token";

async fn keyed_post(app: &TestApp, key: &str, idempotency_key: &str, path: &str, body: &Value) -> reqwest::Response {
    app.client
        .post(app.url(path))
        .bearer_auth(key)
        .header("Idempotency-Key", idempotency_key)
        .json(body)
        .send()
        .await
        .expect("request")
}

fn replayed(r: &reqwest::Response) -> bool {
    r.headers().get("idempotent-replayed").is_some_and(|v| v == "true")
}

async fn queries_used(app: &TestApp, key: &str) -> i64 {
    let usage = app.usage(key).await;
    usage["totals"]["queries"].as_i64().unwrap_or_else(|| panic!("queries in {usage}"))
}

#[tokio::test]
async fn a_retried_query_or_upload_runs_once_and_is_metered_once() {
    let app = spawn_app().await;
    let t = app.signup("retry@idem.test", "starter").await;
    let doc = json!({"title": "Refunds", "text": "Refunds are issued within 14 days of a written request."});

    let first = keyed_post(&app, &t.key, "upload-1", "/v1/documents", &doc).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    assert!(!replayed(&first), "a first response is not a replay");
    let first: Value = first.json().await.expect("json");
    let again = keyed_post(&app, &t.key, "upload-1", "/v1/documents", &doc).await;
    assert_eq!(again.status(), StatusCode::CREATED, "the first response's status again");
    assert!(replayed(&again));
    assert_eq!(again.json::<Value>().await.expect("json"), first, "the first response's body again");
    let listed: Value = app.get(&t.key, "/v1/documents").await.json().await.expect("json");
    assert_eq!(listed["documents"].as_array().expect("documents").len(), 1, "one document: {listed}");

    let question = json!({"question": "How long do refunds take?"});
    let answer = keyed_post(&app, &t.key, "ask-1", "/v1/query", &question).await;
    assert_eq!(answer.status(), StatusCode::OK);
    let quota_left = answer.headers().get("x-quota-queries-remaining").cloned();
    let answer: Value = answer.json().await.expect("json");
    for _ in 0..3 {
        let again = keyed_post(&app, &t.key, "ask-1", "/v1/query", &question).await;
        assert!(replayed(&again));
        assert_eq!(again.headers().get("x-quota-queries-remaining").cloned(), quota_left, "headers kept");
        assert_eq!(again.json::<Value>().await.expect("json"), answer);
    }
    assert_eq!(queries_used(&app, &t.key).await, 1, "four requests, one execution, one metered query");

    // Without a key, the same question runs again.
    app.query(&t.key, "How long do refunds take?").await;
    assert_eq!(queries_used(&app, &t.key).await, 2);
}

#[tokio::test]
async fn a_key_reused_for_another_request_is_refused() {
    let app = spawn_app().await;
    let t = app.signup("reuse@idem.test", "starter").await;
    let r = keyed_post(&app, &t.key, "k", "/v1/query", &json!({"question": "first?"})).await;
    assert_eq!(r.status(), StatusCode::OK);

    let other_body = keyed_post(&app, &t.key, "k", "/v1/query", &json!({"question": "second?"})).await;
    let problem = assert_problem(other_body, 422, "idempotency_key_reused").await;
    assert!(problem["detail"].as_str().expect("detail").contains("another method, path or body"), "{problem}");
    let other_path = keyed_post(&app, &t.key, "k", "/v1/documents", &json!({"title": "x", "text": "y"})).await;
    assert_problem(other_path, 422, "idempotency_key_reused").await;
    assert_eq!(queries_used(&app, &t.key).await, 1);

    // A method the route does not serve is a 405 whatever key it carries.
    let r = app.client.patch(app.url("/v1/query")).bearer_auth(&t.key).header("Idempotency-Key", "k").send().await;
    assert_problem(r.expect("request"), 405, "method_not_allowed").await;

    // A key must be printable ASCII of at most 255 characters.
    let long = "k".repeat(256);
    let r = keyed_post(&app, &t.key, &long, "/v1/query", &json!({"question": "first?"})).await;
    assert_problem(r, 400, "bad_request").await;
    // On the OpenAI-compatible routes the refusal also carries OpenAI's error object.
    let chat = json!({"model": "default", "messages": [{"role": "user", "content": "hi"}]});
    let r = keyed_post(&app, &t.key, &long, "/v1/chat/completions", &chat).await;
    let problem = assert_problem(r, 400, "bad_request").await;
    assert_eq!(problem["error"]["type"], "invalid_request_error", "{problem}");
}

#[tokio::test]
async fn concurrent_retries_with_one_key_execute_once() {
    let app = spawn_app().await;
    let t = app.signup("storm@idem.test", "starter").await;
    let doc = json!({"title": "Storm", "text": "Lightning strikes the tallest tree in the meadow first."});
    let retries = (0..16).map(|_| keyed_post(&app, &t.key, "storm-1", "/v1/documents", &doc));
    let responses = futures::future::join_all(retries).await;
    let mut created = Vec::new();
    for r in responses {
        match r.status() {
            StatusCode::CREATED => created.push(r.json::<Value>().await.expect("json")["document_id"].clone()),
            StatusCode::CONFLICT => {
                assert!(r.headers().contains_key("retry-after"), "a running first attempt says when to retry");
                assert_problem(r, 409, "conflict").await;
            }
            other => panic!("unexpected {other}: {}", r.text().await.unwrap_or_default()),
        }
    }
    assert!(!created.is_empty(), "the first attempt answered");
    assert!(created.iter().all(|id| *id == created[0]), "one document, whoever answered: {created:?}");
    let after = keyed_post(&app, &t.key, "storm-1", "/v1/documents", &doc).await;
    assert!(replayed(&after));
    let listed: Value = app.get(&t.key, "/v1/documents").await.json().await.expect("json");
    assert_eq!(listed["documents"].as_array().expect("documents").len(), 1, "{listed}");
    let usage = app.usage(&t.key).await;
    assert_eq!(usage["totals"]["documents"], 1, "one document metered: {usage}");
}

#[tokio::test]
async fn one_callers_key_never_replays_anothers_response() {
    let app = spawn_app().await;
    let a = app.signup("a@idem.test", "starter").await;
    let b = app.signup("b@idem.test", "starter").await;
    app.upload_text(&a.key, "Secret of A", "The launch code of tenant A is falcon-seven.").await;
    let question = json!({"question": "What is the launch code?"});

    let for_a: Value = keyed_post(&app, &a.key, "shared", "/v1/query", &question).await.json().await.expect("json");
    assert!(!for_a["citations"].as_array().expect("citations").is_empty(), "A's document answers A: {for_a}");
    let r = keyed_post(&app, &b.key, "shared", "/v1/query", &question).await;
    assert!(!replayed(&r), "B's request is B's own");
    let for_b: Value = r.json().await.expect("json");
    assert!(for_b["citations"].as_array().expect("citations").is_empty(), "nothing of A reaches B: {for_b}");
    assert_eq!(queries_used(&app, &b.key).await, 1);

    // A bad key with a known idempotency key gets its 401, never the kept response.
    let r = keyed_post(&app, "tk_bogus", "shared", "/v1/query", &question).await;
    assert_problem(r, 401, "unauthenticated").await;
}

#[tokio::test]
async fn a_refusal_a_retry_can_get_past_is_not_kept() {
    let app = spawn_app().await;
    let t = app.signup("refused@idem.test", "starter").await;
    let created = app.post_json(&t.key, "/v1/keys", json!({"name": "reader", "scopes": ["query"]})).await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let reader = created.json::<Value>().await.expect("json")["api_key"].as_str().expect("key").to_owned();
    // The query-only key may not upload: 403, not kept...
    let doc = json!({"title": "Scoped", "text": "Only ingest keys may add this."});
    let r = keyed_post(&app, &reader, "scoped-1", "/v1/documents", &doc).await;
    assert_problem(r, 403, "forbidden").await;
    let r = keyed_post(&app, &reader, "scoped-1", "/v1/documents", &doc).await;
    assert!(!replayed(&r), "a refusal is not replayed: the request runs again");
    assert_problem(r, 403, "forbidden").await;
    // ...so the tenant's admin key may use the same key for the same request and have it run.
    let r = keyed_post(&app, &t.key, "scoped-1", "/v1/documents", &doc).await;
    assert_eq!(r.status(), StatusCode::CREATED);
}

async fn serve_on(data_dir: &std::path::Path, database_url: Option<&str>) -> TestApp {
    helpers::serve(config(data_dir, database_url), tempfile::tempdir().expect("temp dir")).await
}

fn config(data_dir: &std::path::Path, database_url: Option<&str>) -> Config {
    let mut config = Config::builtin();
    config.server.bind = "127.0.0.1:0".into();
    config.server.data_dir = data_dir.to_owned();
    config.server.operator_token = OPERATOR.into();
    config.server.key_pepper = "idempotency-test-pepper-shared-by-both-nodes".into();
    if let Some(url) = database_url {
        config.database.url = url.to_owned();
    }
    config
}

async fn signup(app: &TestApp) -> Tenant {
    app.signup("restart@idem.test", "starter").await
}

#[tokio::test]
async fn a_kept_response_survives_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let first = serve_on(dir.path(), None).await;
    let t = signup(&first).await;
    let question = json!({"question": "Anything?"});
    let answer: Value =
        keyed_post(&first, &t.key, "before-restart", "/v1/query", &question).await.json().await.expect("json");
    first.stop().await;

    let second = serve_on(dir.path(), None).await;
    let r = keyed_post(&second, &t.key, "before-restart", "/v1/query", &question).await;
    assert!(replayed(&r), "the key outlives the process");
    assert_eq!(r.json::<Value>().await.expect("json"), answer);
    assert_eq!(queries_used(&second, &t.key).await, 1);
    second.stop().await;
}

#[tokio::test]
async fn keys_hold_across_nodes_on_one_database() {
    let Some(url) = fresh_postgres_database().await else {
        eprintln!("TENANTRY_TEST_POSTGRES_URL not set: PostgreSQL variant skipped");
        return;
    };
    let (dir_a, dir_b) = (tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("dir"));
    let a = serve_on(dir_a.path(), Some(&url)).await;
    let b = serve_on(dir_b.path(), Some(&url)).await;
    let t = signup(&a).await;

    // Concurrent retries spread over both nodes run once.
    let question = json!({"question": "Which node answers?"});
    let tries = (0..12).map(|i| {
        let node = if i % 2 == 0 { &a } else { &b };
        keyed_post(node, &t.key, "two-nodes", "/v1/query", &question)
    });
    let statuses: Vec<u16> = futures::future::join_all(tries).await.iter().map(|r| r.status().as_u16()).collect();
    assert!(statuses.iter().all(|s| *s == 200 || *s == 409), "{statuses:?}");
    let through_b = keyed_post(&b, &t.key, "two-nodes", "/v1/query", &question).await;
    assert!(replayed(&through_b), "node B replays what node A or B ran");
    assert_eq!(queries_used(&a, &t.key).await, 1, "run and metered once across nodes: {statuses:?}");

    // The operator's keys are its own, and hold across nodes too: a suspension retried through the other
    // node is the first one's answer, not a 409 for suspending a suspended tenant.
    let path = format!("/admin/tenants/{}/suspend", t.id);
    let first = keyed_post(&a, OPERATOR, "op-1", &path, &json!({})).await;
    assert_eq!(first.status(), StatusCode::OK);
    let first: Value = first.json().await.expect("json");
    let again = keyed_post(&b, OPERATOR, "op-1", &path, &json!({})).await;
    assert!(replayed(&again));
    assert_eq!(again.json::<Value>().await.expect("json"), first);
    let fresh = keyed_post(&b, OPERATOR, "op-2", &path, &json!({})).await;
    assert_eq!(fresh.status(), StatusCode::CONFLICT, "a new key runs the request again");
    a.stop().await;
    b.stop().await;
}

/// After 24 hours a key is forgotten: the same key runs a new request (on either backend, where the claim
/// takes the expired row over).
async fn a_key_is_forgotten_after_a_day_on(database_url: Option<String>) {
    let app = crate::helpers::spawn_app_with(|c| {
        c.server.clock = "test".into();
        if let Some(url) = database_url {
            c.database.url = url;
        }
    })
    .await;
    let t = app.signup("forgotten@idem.test", "starter").await;
    let r = keyed_post(&app, &t.key, "daily", "/v1/query", &json!({"question": "first?"})).await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = keyed_post(&app, &t.key, "daily", "/v1/query", &json!({"question": "second?"})).await;
    assert_problem(r, 422, "idempotency_key_reused").await;

    app.services.advance_clock(24 * 60 * 60 + 1).await.expect("advance");
    let r = keyed_post(&app, &t.key, "daily", "/v1/query", &json!({"question": "second?"})).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(!replayed(&r), "a forgotten key runs its new request");
    let r = keyed_post(&app, &t.key, "daily", "/v1/query", &json!({"question": "second?"})).await;
    assert!(replayed(&r), "and keeps the new response");
}

#[tokio::test]
async fn a_key_is_forgotten_after_a_day() {
    a_key_is_forgotten_after_a_day_on(None).await;
    crate::helpers::on_postgres(a_key_is_forgotten_after_a_day_on).await;
}
