//! Operations: `GET /metrics` in both Prometheus text formats, with requests counted by route and problem code,
//! tenants by state, and tenant and request ids only as exemplars, never as labels; and the quota headers on
//! every response to an authenticated tenant, errors included.

use reqwest::StatusCode;
use serde_json::json;
use tenantry_domain::config::{PlanConfig, Quotas};

use crate::helpers::{assert_problem, spawn_app_with, TestApp};

async fn scrape(app: &TestApp, accept: Option<&str>) -> (String, String) {
    let mut r = app.client.get(app.url("/metrics"));
    if let Some(accept) = accept {
        r = r.header("accept", accept);
    }
    let r = r.send().await.expect("scrape");
    assert_eq!(r.status(), StatusCode::OK);
    let content_type = r.headers()["content-type"].to_str().expect("ascii").to_owned();
    (content_type, r.text().await.expect("text"))
}

/// The sample line of `name` whose labels contain every one of `labels`, and its value.
fn sample(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .find(|l| labels.iter().all(|label| l.split(" # ").next().unwrap_or("").contains(label)))
        .and_then(|l| l.split(" # ").next()?.rsplit(' ').next()?.parse().ok())
}

fn one_query_plan(c: &mut tenantry_domain::Config) {
    let mut plan: PlanConfig = c.plans.iter().find(|p| p.name == "trial").expect("trial").clone();
    plan.name = "one-query".into();
    plan.quotas = Quotas { queries: 1, ..plan.quotas };
    c.plans.push(plan);
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_code_and_keep_tenants_out_of_labels() {
    let app = spawn_app_with(one_query_plan).await;
    let t = app.signup("metrics@ops.test", "one-query").await;
    app.query(&t.key, "anything?").await;
    let over = app.post_json(&t.key, "/v1/query", json!({"question": "one more?"})).await;
    assert_problem(over, 429, "quota_exceeded").await;
    assert_problem(app.get(&t.key, "/v1/documents/doc_missing").await, 404, "not_found").await;
    assert_problem(app.get("tk_forged_key", "/v1/tenant").await, 401, "unauthenticated").await;

    // OpenMetrics, as Prometheus asks for it.
    let (content_type, om) = scrape(&app, Some("application/openmetrics-text; version=1.0.0")).await;
    assert!(content_type.starts_with("application/openmetrics-text"), "{content_type}");
    assert!(om.trim_end().ends_with("# EOF"), "an OpenMetrics exposition ends with # EOF");
    let ok = ["method=\"POST\"", "route=\"/v1/query\"", "status=\"200\""];
    assert_eq!(sample(&om, "tenantry_http_requests_total", &ok), Some(1.0));
    let over = ["route=\"/v1/query\"", "status=\"429\"", "code=\"quota_exceeded\""];
    assert_eq!(sample(&om, "tenantry_http_requests_total", &over), Some(1.0));
    let missing = ["route=\"/v1/documents/{id}\"", "status=\"404\"", "code=\"not_found\""];
    assert_eq!(sample(&om, "tenantry_http_requests_total", &missing), Some(1.0), "routes by template, not path");
    let forged = ["route=\"/v1/tenant\"", "status=\"401\"", "code=\"unauthenticated\""];
    assert_eq!(sample(&om, "tenantry_http_requests_total", &forged), Some(1.0));
    assert_eq!(sample(&om, "tenantry_tenants", &["state=\"trialing\""]), Some(1.0));
    assert_eq!(
        sample(&om, "tenantry_http_request_duration_seconds_count", &["route=\"/v1/query\""]),
        Some(2.0),
        "both queries timed"
    );
    // The tenant is in exemplars (after " # "), never in a label.
    assert!(
        om.lines().any(|l| l.split_once(" # ").is_some_and(|(_, ex)| ex.contains(&t.id))),
        "an exemplar names the tenant"
    );
    for line in om.lines().filter(|l| !l.starts_with('#')) {
        let labels = line.split(" # ").next().unwrap_or("");
        assert!(!labels.contains(&t.id) && !labels.contains("doc_missing"), "no tenant or raw path in labels: {line}");
    }

    // The classic text format for anything else: counters named by their samples, no exemplars.
    let (content_type, text) = scrape(&app, None).await;
    assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
    assert!(text.contains("# TYPE tenantry_http_requests_total counter"), "{text}");
    assert!(!text.contains(" # {") && !text.contains("# EOF"), "no exemplars or EOF in 0.0.4");
    assert_eq!(sample(&text, "tenantry_http_requests_total", &ok), Some(1.0));

    let spec: serde_json::Value =
        app.client.get(app.url("/openapi.json")).send().await.expect("spec").json().await.expect("json");
    assert!(spec["paths"]["/metrics"]["get"].is_object(), "/metrics is in the OpenAPI document");
}

#[tokio::test]
async fn every_response_to_an_authenticated_tenant_carries_the_quota_headers() {
    let app = spawn_app_with(one_query_plan).await;
    let t = app.signup("headers@ops.test", "one-query").await;
    let doc = app.upload_text(&t.key, "Refunds", "Refunds take five days.").await;
    let remaining = |r: &reqwest::Response| {
        let h = |name: &str| r.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        (h("x-quota-queries-remaining"), h("x-quota-tokens-remaining"))
    };
    app.query(&t.key, "How long do refunds take?").await;
    let responses = [
        app.get(&t.key, "/v1/invoices").await,
        app.get(&t.key, "/v1/documents/doc_missing").await,
        app.post_json(&t.key, "/v1/query", json!({"question": "again?"})).await,
        app.client
            .delete(app.url(&format!("/v1/documents/{}", doc["document_id"].as_str().expect("id"))))
            .bearer_auth(&t.key)
            .send()
            .await
            .expect("delete"),
    ];
    let expected = [StatusCode::OK, StatusCode::NOT_FOUND, StatusCode::TOO_MANY_REQUESTS, StatusCode::NO_CONTENT];
    for (r, status) in responses.iter().zip(expected) {
        assert_eq!(r.status(), status);
        let (queries, tokens) = remaining(r);
        assert_eq!(queries.as_deref(), Some("0"), "{} has the queries left", r.url());
        assert!(tokens.is_some_and(|t| t.parse::<u64>().is_ok()), "{} has the tokens left", r.url());
    }
    // Without a tenant there is nothing to count against: no quota headers.
    let anonymous = app.client.get(app.url("/v1/tenant")).send().await.expect("request");
    assert_eq!(remaining(&anonymous), (None, None));
}
