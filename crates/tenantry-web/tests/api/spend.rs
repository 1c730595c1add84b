//! The spend cap (API.md "Integrations"): `overage_limit_cents` bounds what a period's overage may cost, as
//! exactly as the quotas bound usage — concurrent requests never take the invoice past it — and `null`
//! lifts it.

use reqwest::StatusCode;
use serde_json::{json, Value};
use tenantry_domain::Config;

use crate::helpers::{add_metered_plan, assert_problem, on_postgres, spawn_app_with, TestApp};

const OP: &str = "op-spend";

fn metered(c: &mut Config) {
    add_metered_plan(c);
    c.server.operator_token = OP.into();
}

async fn patch_config(app: &TestApp, key: &str, body: Value) -> reqwest::Response {
    app.client.patch(app.url("/v1/tenant/config")).bearer_auth(key).json(&body).send().await.expect("patch")
}

/// One query included, 2 cents per query past it, a cap of 10 cents: six questions are answered however
/// many are asked at once, and the closing invoice bills exactly the cap.
async fn the_cap_holds_under_concurrency(app: TestApp) {
    let t = app.signup("capped@spend.test", "metered").await;
    app.upload_text(&t.key, "Refunds", "Refunds are issued within 14 days.").await;
    let r = patch_config(&app, &t.key, json!({"overage_limit_cents": 10})).await;
    assert_eq!(r.status(), StatusCode::OK);
    let changed: Value = r.json().await.expect("json");
    assert_eq!(changed["overage_limit_cents"], 10, "{changed}");

    let asks = (0..32).map(|_| app.post_json(&t.key, "/v1/query", json!({"question": "How long do refunds take?"})));
    let answers = futures::future::join_all(asks).await;
    let answered = answers.iter().filter(|r| r.status() == StatusCode::OK).count();
    assert_eq!(answered, 6, "1 included + 5 × 2 cents = the 10-cent cap");
    let refused = answers.into_iter().find(|r| r.status() != StatusCode::OK).expect("a refusal");
    let problem = assert_problem(refused, 429, "quota_exceeded").await;
    assert!(problem["detail"].as_str().is_some_and(|d| d.contains("spend cap of 0.10")), "{problem}");

    let closed: Value = app
        .client
        .post(app.url("/admin/billing/close-period"))
        .bearer_auth(OP)
        .send()
        .await
        .expect("close")
        .json()
        .await
        .expect("json");
    let invoice = closed["invoices"].as_array().and_then(|i| i.iter().find(|i| i["tenant_id"] == t.id.as_str()));
    let lines = invoice.and_then(|i| i["lines"].as_array()).unwrap_or_else(|| panic!("an invoice: {closed}"));
    let queries = lines.iter().find(|l| l["meter"] == "queries").expect("a queries line");
    assert_eq!((queries["quantity"].as_i64(), queries["amount_cents"].as_i64()), (Some(5), Some(10)), "{queries}");
}

#[tokio::test]
async fn the_spend_cap_holds_under_concurrency() {
    the_cap_holds_under_concurrency(spawn_app_with(metered).await).await;
}

#[tokio::test]
async fn the_spend_cap_holds_under_concurrency_on_postgres() {
    on_postgres(|url| async move {
        let app = spawn_app_with(|c| {
            metered(c);
            c.database.url = url.expect("url");
        })
        .await;
        the_cap_holds_under_concurrency(app).await;
    })
    .await;
}

#[tokio::test]
async fn the_cap_is_validated_shown_and_lifted() {
    let app = spawn_app_with(metered).await;
    let t = app.signup("lifted@spend.test", "metered").await;
    app.upload_text(&t.key, "Refunds", "Refunds are issued within 14 days.").await;
    for bad in [json!(-1), json!(1_000_000_001), json!("10"), json!(1.5)] {
        let r = patch_config(&app, &t.key, json!({"overage_limit_cents": bad})).await;
        assert_problem(r, 422, "validation_failed").await;
    }
    let tenant: Value = app.get(&t.key, "/v1/tenant").await.json().await.expect("json");
    assert!(tenant["config"]["overage_limit_cents"].is_null(), "no cap by default: {tenant}");

    // A cap of zero: only what is included is served.
    assert_eq!(patch_config(&app, &t.key, json!({"overage_limit_cents": 0})).await.status(), StatusCode::OK);
    app.query(&t.key, "How long do refunds take?").await;
    let over = app.post_json(&t.key, "/v1/query", json!({"question": "And again?"})).await;
    assert_problem(over, 429, "quota_exceeded").await;
    // Other settings leave the cap alone; null lifts it.
    assert_eq!(patch_config(&app, &t.key, json!({"system_prompt": "Be brief."})).await.status(), StatusCode::OK);
    let tenant: Value = app.get(&t.key, "/v1/tenant").await.json().await.expect("json");
    assert_eq!(tenant["config"]["overage_limit_cents"], 0);
    assert_eq!(patch_config(&app, &t.key, json!({"overage_limit_cents": null})).await.status(), StatusCode::OK);
    app.query(&t.key, "How long do refunds take?").await;
}
