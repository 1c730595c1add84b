//! Usage over time (`GET /v1/usage/timeseries`): hourly and daily buckets per meter and model that add up to
//! the usage report, the same as JSON and as CSV, one tenant's only, and bad parameters refused.

use serde_json::Value;
use tenantry_domain::{TenantId, Timestamp};

use crate::helpers::{assert_problem, on_postgres, spawn_app_with, TestApp};

const HOUR_MS: i64 = 3_600_000;

pub async fn series(app: &TestApp, key: &str, query: &str) -> Value {
    let r = app.get(key, &format!("/v1/usage/timeseries?{query}")).await;
    assert_eq!(r.status(), 200, "{query}");
    r.json().await.expect("json")
}

fn points(series: &Value) -> &Vec<Value> {
    series["points"].as_array().expect("points")
}

fn start(point: &Value) -> i64 {
    Timestamp::parse_rfc3339(point["start"].as_str().expect("start")).expect("RFC 3339").0
}

/// The sum of `field` over the points of `meter` (any model when `model` is `None`).
fn total(series: &Value, meter: &str, model: Option<&str>, field: &str) -> i64 {
    points(series)
        .iter()
        .filter(|p| p["meter"] == meter && model.is_none_or(|m| p["model"] == m))
        .map(|p| p[field].as_i64().expect("number"))
        .sum()
}

/// The points as the ledger sums them, for comparing a series with the ledger whatever served it.
pub async fn ledger_points(app: &TestApp, tenant: &str, series: &Value, bucket_ms: i64) -> Vec<Value> {
    let bound = |name: &str| Timestamp::parse_rfc3339(series[name].as_str().expect("bound")).expect("RFC 3339");
    let tenant = TenantId::parse(tenant).expect("id");
    let mut buckets = app
        .services
        .store()
        .usage_buckets(&tenant, bound("from"), bound("to"), bucket_ms)
        .await
        .expect("ledger buckets");
    buckets.sort_by(|a, b| (a.start, a.meter.as_str(), &a.model).cmp(&(b.start, b.meter.as_str(), &b.model)));
    buckets
        .into_iter()
        .map(|b| {
            serde_json::json!({"start": b.start.to_rfc3339(), "meter": b.meter.as_str(), "model": b.model,
                "quantity": b.quantity, "cost_micros": b.cost_micros})
        })
        .collect()
}

#[tokio::test]
async fn hourly_and_daily_series_add_up_to_the_usage_report() {
    series_story(None).await;
}

#[tokio::test]
async fn hourly_and_daily_series_add_up_to_the_usage_report_on_postgres() {
    on_postgres(series_story).await;
}

async fn series_story(database: Option<String>) {
    let app = spawn_app_with(|c| {
        c.server.clock = "test".into();
        c.database.url = database.unwrap_or_default();
    })
    .await;
    let a = app.signup("series@a.test", "trial").await;
    let b = app.signup("series@b.test", "trial").await;
    app.upload_text(&a.key, "Handbook", "Refunds are issued within 14 days of purchase.").await;
    app.query(&a.key, "How long do refunds take?").await;
    app.query(&a.key, "When are refunds issued?").await;
    app.services.clock().advance(2 * 3600);
    app.query(&a.key, "Is there a refund window?").await;
    app.query(&b.key, "Anything?").await;

    let hourly = series(&app, &a.key, "granularity=hour").await;
    assert_eq!(hourly["source"], "ledger", "{hourly}");
    assert_eq!(hourly["granularity"], "hour");
    assert_eq!(hourly["tenant_id"], a.id.as_str());
    assert!(points(&hourly).iter().all(|p| start(p) % HOUR_MS == 0), "buckets start on the hour: {hourly}");
    let queries: Vec<(i64, i64)> = points(&hourly)
        .iter()
        .filter(|p| p["meter"] == "queries")
        .map(|p| (start(p), p["quantity"].as_i64().expect("quantity")))
        .collect();
    assert_eq!(queries.len(), 2, "two hours with queries: {hourly}");
    assert_eq!((queries[0].1, queries[1].1), (2, 1), "{hourly}");
    assert_eq!(queries[1].0 - queries[0].0, 2 * HOUR_MS, "two hours apart");
    assert_eq!(total(&hourly, "documents", None, "quantity"), 1, "the upload is a documents point: {hourly}");

    // The series adds up to the usage report, per meter and per model.
    let usage = app.usage(&a.key).await;
    let daily = series(&app, &a.key, "granularity=day").await;
    assert!(points(&daily).iter().all(|p| start(p) % (24 * HOUR_MS) == 0), "{daily}");
    for s in [&hourly, &daily] {
        for meter in ["queries", "prompt_tokens", "completion_tokens"] {
            assert_eq!(total(s, meter, None, "quantity"), usage["totals"][meter].as_i64().expect("total"), "{meter}");
        }
        let cost: i64 = points(s).iter().map(|p| p["cost_micros"].as_i64().expect("cost")).sum();
        assert_eq!(cost, usage["totals"]["cost_micros"].as_i64().expect("cost"));
        let by_model = usage["by_model"].as_object().expect("by_model");
        assert!(!by_model.is_empty(), "{usage}");
        for (model, m) in by_model {
            for meter in ["queries", "prompt_tokens", "completion_tokens"] {
                assert_eq!(total(s, meter, Some(model), "quantity"), m[meter].as_i64().expect("n"), "{model} {meter}");
            }
        }
    }

    // The other tenant's series holds its own query only.
    let theirs = series(&app, &b.key, "granularity=hour").await;
    assert_eq!(total(&theirs, "queries", None, "quantity"), 1, "{theirs}");
    assert_eq!(total(&theirs, "documents", None, "quantity"), 0, "{theirs}");

    // A range narrower than the data keeps only its buckets; bounds widen to whole buckets.
    let second = queries[1].0;
    let narrow = series(
        &app,
        &a.key,
        &format!(
            "granularity=hour&from={}&to={}",
            Timestamp(second + 60_000).to_rfc3339(),
            Timestamp(second + 120_000).to_rfc3339()
        ),
    )
    .await;
    let from = Timestamp::parse_rfc3339(narrow["from"].as_str().expect("from")).expect("RFC 3339");
    assert_eq!(from.0, second, "from rounds down to the hour: {narrow}");
    assert_eq!(total(&narrow, "queries", None, "quantity"), 1, "{narrow}");
    assert_eq!(narrow["points"], serde_json::Value::Array(ledger_points(&app, &a.id, &narrow, HOUR_MS).await));
}

#[tokio::test]
async fn the_csv_holds_the_same_points() {
    let app = spawn_app_with(|_| {}).await;
    let t = app.signup("csv@series.test", "trial").await;
    app.upload_text(&t.key, "Handbook", "Refunds are issued within 14 days of purchase.").await;
    app.query(&t.key, "How long do refunds take?").await;
    let json = series(&app, &t.key, "granularity=day").await;

    let r = app.get(&t.key, "/v1/usage/timeseries?granularity=day&format=csv").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/csv; charset=utf-8");
    assert!(r.headers()["content-disposition"].to_str().expect("ascii").contains("usage.csv"));
    let text = r.text().await.expect("text");
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("start,meter,model,quantity,cost_micros"));
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), points(&json).len(), "{text}");
    for (row, p) in rows.iter().zip(points(&json)) {
        let expected = format!(
            "{},{},{},{},{}",
            p["start"].as_str().expect("start"),
            p["meter"].as_str().expect("meter"),
            p["model"].as_str().expect("model"),
            p["quantity"],
            p["cost_micros"]
        );
        assert_eq!(*row, expected);
    }
}

#[tokio::test]
async fn bad_series_parameters_are_refused() {
    let app = spawn_app_with(|_| {}).await;
    let t = app.signup("bad@series.test", "trial").await;
    for query in [
        "",
        "granularity=minute",
        "granularity=hour&format=xml",
        "granularity=hour&from=yesterday",
        "granularity=hour&from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z",
        "granularity=hour&from=2020-01-01T00:00:00Z&to=2026-01-01T00:00:00Z",
        "granularity=day&from=1990-01-01T00:00:00Z&to=2026-01-01T00:00:00Z",
    ] {
        let body =
            assert_problem(app.get(&t.key, &format!("/v1/usage/timeseries?{query}")).await, 422, "validation_failed")
                .await;
        assert!(!body["detail"].as_str().expect("detail").is_empty(), "{query}: {body}");
    }
    assert_problem(app.get("tk_not_a_key", "/v1/usage/timeseries?granularity=day").await, 401, "unauthenticated").await;
}

#[tokio::test]
async fn the_operator_sees_a_tenants_series_as_the_tenant_does() {
    const OP: &str = "op-series";
    let app = spawn_app_with(|c| c.server.operator_token = OP.into()).await;
    let t = app.signup("seen@series.test", "trial").await;
    let other = app.signup("other@series.test", "trial").await;
    app.upload_text(&t.key, "Handbook", "Refunds are issued within 14 days of purchase.").await;
    app.query(&t.key, "How long do refunds take?").await;
    app.upload_text(&other.key, "Other", "Something else entirely, about travel.").await;

    let own = series(&app, &t.key, "granularity=hour").await;
    let path = format!("/admin/tenants/{}/usage/timeseries?granularity=hour", t.id);
    let r = app.get(OP, &path).await;
    assert_eq!(r.status(), 200);
    let seen: Value = r.json().await.expect("json");
    assert!(!points(&own).is_empty());
    assert_eq!(seen, own, "the same series, the other tenant's usage not in it");

    assert_problem(app.get(&t.key, &path).await, 401, "unauthenticated").await;
    let unknown = "/admin/tenants/ten_00000000000000000000000000000000/usage/timeseries?granularity=day";
    assert_problem(app.get(OP, unknown).await, 404, "not_found").await;
}
