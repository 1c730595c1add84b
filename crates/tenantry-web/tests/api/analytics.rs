//! Usage analytics in a real ClickHouse (`TENANTRY_TEST_CLICKHOUSE_URL`, set by `.ci/run`): every ledger event
//! arrives once, a batch shipped twice still counts once, an analytics outage never touches the API, and an
//! erasure removes the tenant's rows from ClickHouse and certifies it while the other tenant stays intact.

use serde_json::Value;
use tenantry_domain::TenantId;

use crate::helpers::{assert_problem, on_postgres, spawn_app_with, TestApp};
use crate::timeseries::{ledger_points, series};

const HOUR_MS: i64 = 3_600_000;

const OPERATOR: &str = "op-analytics";

fn clickhouse_url() -> Option<String> {
    std::env::var("TENANTRY_TEST_CLICKHOUSE_URL").ok().filter(|u| !u.is_empty())
}

/// The app shipping to a fresh database on the test ClickHouse, on SQLite or on `postgres`.
async fn app_on_clickhouse(url: String, postgres: Option<String>) -> TestApp {
    let database = format!("tenantry_test_{}", TenantId::generate().as_str());
    spawn_app_with(move |c| {
        c.server.operator_token = OPERATOR.into();
        c.analytics.clickhouse_url = url;
        c.analytics.clickhouse_database = database;
        c.database.url = postgres.unwrap_or_default();
    })
    .await
}

async fn reconcile(app: &TestApp, tenant: &str) -> (u16, Value) {
    let r = app.get(OPERATOR, &format!("/admin/analytics/reconcile?tenant_id={tenant}")).await;
    (r.status().as_u16(), r.json().await.expect("json"))
}

/// The reconciliation once the background worker has shipped everything (waits up to 20 s).
async fn consistent(app: &TestApp, tenant: &str) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (status, body) = reconcile(app, tenant).await;
        assert_eq!(status, 200, "{body}");
        if body["consistent"] == true {
            return body;
        }
        assert!(std::time::Instant::now() < deadline, "ledger and analytics never agreed: {body}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

fn meter(reconciliation: &Value, name: &str) -> (i64, i64) {
    let m = reconciliation["meters"].as_array().expect("meters").iter().find(|m| m["meter"] == name);
    let m = m.unwrap_or_else(|| panic!("meter {name} in {reconciliation}"));
    (m["ledger"].as_i64().expect("ledger"), m["analytics"].as_i64().expect("analytics"))
}

#[tokio::test]
async fn every_ledger_event_reaches_clickhouse_once_and_erasure_removes_it() {
    let Some(url) = clickhouse_url() else {
        eprintln!("TENANTRY_TEST_CLICKHOUSE_URL not set: ClickHouse analytics skipped");
        return;
    };
    analytics_story(app_on_clickhouse(url, None).await).await;
}

#[tokio::test]
async fn every_ledger_event_reaches_clickhouse_once_on_postgresql() {
    let Some(url) = clickhouse_url() else {
        eprintln!("TENANTRY_TEST_CLICKHOUSE_URL not set: ClickHouse analytics skipped");
        return;
    };
    on_postgres(|db| async move { analytics_story(app_on_clickhouse(url, db).await).await }).await;
}

async fn analytics_story(app: TestApp) {
    let leaving = app.signup("leaving@ch.test", "trial").await;
    let staying = app.signup("staying@ch.test", "trial").await;
    for t in [&leaving, &staying] {
        app.upload_text(&t.key, "Handbook", "Refunds are issued within 14 days of purchase.").await;
    }
    for i in 0..7 {
        app.query(&leaving.key, &format!("How long do refunds take? ({i})")).await;
    }
    for _ in 0..3 {
        app.query(&staying.key, "When are refunds issued?").await;
    }

    let before = consistent(&app, &leaving.id).await;
    assert_eq!(meter(&before, "queries"), (7, 7), "{before}");
    assert_eq!(meter(&before, "documents"), (1, 1), "{before}");
    assert!(meter(&before, "prompt_tokens").1 > 0, "token meters are shipped too: {before}");
    assert_eq!(meter(&consistent(&app, &staying.id).await, "queries"), (3, 3));

    // Usage over time comes from ClickHouse and equals the ledger's, events not yet shipped included.
    let shipped = series(&app, &staying.key, "granularity=hour").await;
    assert_eq!(shipped["source"], "clickhouse", "{shipped}");
    assert_eq!(shipped["points"], Value::Array(ledger_points(&app, &staying.id, &shipped, HOUR_MS).await));
    app.query(&staying.key, "Are refunds issued?").await;
    let fresh = series(&app, &staying.key, "granularity=day").await;
    assert_eq!(fresh["source"], "clickhouse", "{fresh}");
    assert_eq!(fresh["points"], Value::Array(ledger_points(&app, &staying.id, &fresh, 24 * HOUR_MS).await));
    let queries: i64 = fresh["points"]
        .as_array()
        .expect("points")
        .iter()
        .filter(|p| p["meter"] == "queries")
        .map(|p| p["quantity"].as_i64().expect("quantity"))
        .sum();
    assert_eq!(queries, 4, "{fresh}");

    // A batch shipped again (a crash between ClickHouse's insert and the outbox delete) counts once.
    let ch = app.services.analytics().expect("analytics configured");
    let leaving_id = TenantId::parse(&leaving.id).expect("id");
    let events = app.services.store().usage_events(&leaving_id).await.expect("ledger");
    ch.insert(&events).await.expect("replayed batch");
    assert_eq!(ch.tenant_rows(&leaving_id).await.expect("rows") as usize, 2 * events.len(), "stored twice");
    let replayed = consistent(&app, &leaving.id).await;
    assert_eq!(meter(&replayed, "queries"), (7, 7), "counted once: {replayed}");

    let r = app.client.delete(app.url("/v1/tenant")).bearer_auth(&leaving.key).send().await.expect("erase");
    assert_eq!(r.status(), 202);
    let erasure_id = r.json::<Value>().await.expect("json")["erasure_id"].as_str().expect("id").to_owned();
    let cert = app.completed_erasure(OPERATOR, &erasure_id).await;
    let analytics = &cert["certificate"]["removed"]["analytics"];
    assert_eq!(analytics["store"], "clickhouse", "{cert}");
    assert_eq!(analytics["usage_events"].as_u64(), Some(events.len() as u64), "{cert}");
    assert_eq!(ch.tenant_rows(&leaving_id).await.expect("rows"), 0, "no row of the erased tenant is left");

    let intact = consistent(&app, &staying.id).await;
    assert_eq!(meter(&intact, "queries"), (4, 4), "the other tenant is intact: {intact}");
}

#[tokio::test]
async fn an_analytics_outage_never_reaches_the_api_and_nothing_is_lost() {
    // Nothing listens on port 9 (discard) here: ClickHouse is "down" for this app.
    let app = spawn_app_with(|c| {
        c.server.operator_token = OPERATOR.into();
        c.analytics.clickhouse_url = "http://127.0.0.1:9".into();
    })
    .await;
    let t = app.signup("outage@ch.test", "trial").await;
    app.upload_text(&t.key, "Handbook", "Refunds are issued within 14 days of purchase.").await;
    app.query(&t.key, "How long do refunds take?").await;

    // Queries are answered; the events wait in the outbox, none lost.
    let tenant = TenantId::parse(&t.id).expect("id");
    let ledger = app.services.store().usage_events(&tenant).await.expect("ledger").len() as i64;
    assert!(ledger >= 3, "upload and query are in the ledger");
    assert_eq!(app.services.store().analytics_pending().await.expect("pending"), ledger);
    assert!(app.services.ship_analytics().await.is_err(), "shipping reports the outage");
    let served = series(&app, &t.key, "granularity=hour").await;
    assert_eq!(served["source"], "ledger", "the ledger serves usage over time while ClickHouse is down");
    assert_eq!(served["points"], Value::Array(ledger_points(&app, &t.id, &served, HOUR_MS).await));
    assert_eq!(app.services.store().analytics_pending().await.expect("pending"), ledger, "still queued");
    assert_problem(
        app.get(OPERATOR, &format!("/admin/analytics/reconcile?tenant_id={}", t.id)).await,
        503,
        "unavailable",
    )
    .await;

    // An erasure's rows go at once; its job retries the analytics step instead of certifying a partial erasure.
    let r = app.client.delete(app.url("/v1/tenant")).bearer_auth(&t.key).send().await.expect("erase");
    assert_eq!(r.status(), 202);
    let erasure_id = r.json::<Value>().await.expect("json")["erasure_id"].as_str().expect("id").to_owned();
    assert_problem(app.get(&t.key, "/v1/tenant").await, 401, "unauthenticated").await;
    assert_eq!(app.services.store().analytics_pending().await.expect("pending"), 0, "the outbox forgot the tenant");
    let finish = failed_finish_job(&app, &t.id).await;
    assert_eq!(finish["state"], "queued", "waiting for its retry: {finish}");
    assert!(finish["last_error"].as_str().is_some_and(|e| e.contains("unreachable")), "{finish}");
    let cert: Value = app.get(OPERATOR, &format!("/admin/erasures/{erasure_id}")).await.json().await.expect("json");
    assert_eq!(cert["status"], "running", "not certified while ClickHouse is unreachable: {cert}");
}

/// The tenant's `finish_erasure` job once it has failed at least once (waits up to 20 s).
async fn failed_finish_job(app: &TestApp, tenant: &str) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let jobs: Value =
            app.get(OPERATOR, &format!("/admin/jobs?tenant_id={tenant}")).await.json().await.expect("json");
        let finish = jobs["jobs"].as_array().expect("jobs").iter().find(|j| j["kind"] == "finish_erasure").cloned();
        if let Some(job) = finish.filter(|j| !j["last_error"].is_null()) {
            return job;
        }
        assert!(std::time::Instant::now() < deadline, "no failed finish_erasure job: {jobs}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn without_analytics_the_reconcile_endpoint_says_so() {
    let app = spawn_app_with(|c| c.server.operator_token = OPERATOR.into()).await;
    let t = app.signup("no-analytics@ch.test", "trial").await;
    app.query(&t.key, "Anything?").await;
    assert_eq!(app.services.store().analytics_pending().await.expect("pending"), 0, "no outbox without analytics");
    let (status, body) = reconcile(&app, &t.id).await;
    assert_eq!(status, 404, "{body}");
}
