//! What a customer's usage may cost (API.md "Integrations"): the spend cap, `overage_limit_cents`, bounds a
//! period's overage as exactly as the quotas bound usage — concurrent requests never take the invoice past
//! it — and `null` lifts it; prepaid credit granted by the operator pays invoices, shown as a line.

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

    let closed: Value = app.close_periods(OP).await;
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
    // A whole number written with a zero fraction is that integer, as JSON Schema reads it.
    assert_eq!(patch_config(&app, &t.key, json!({"overage_limit_cents": 25.0})).await.status(), StatusCode::OK);
    let tenant: Value = app.get(&t.key, "/v1/tenant").await.json().await.expect("json");
    assert_eq!(tenant["config"]["overage_limit_cents"], 25);
    assert_eq!(patch_config(&app, &t.key, json!({"overage_limit_cents": null})).await.status(), StatusCode::OK);
    app.query(&t.key, "How long do refunds take?").await;
}

#[tokio::test]
async fn prepaid_credit_pays_the_closing_invoice_and_shows_its_use() {
    let app = spawn_app_with(metered).await;
    let t = app.signup("prepaid@spend.test", "metered").await;
    app.upload_text(&t.key, "Refunds", "Refunds are issued within 14 days.").await;
    for _ in 0..4 {
        app.query(&t.key, "How long do refunds take?").await;
    }
    let credits = format!("/admin/tenants/{}/credits", t.id);
    let grant = |body: Value| app.post_json(OP, &credits, body);
    for bad in [
        json!({"amount_cents": 0, "reason": "x"}),
        json!({"amount_cents": 500, "reason": ""}),
        json!({"amount_cents": 500, "reason": "x", "expires_at": "2001-01-01T00:00:00Z"}),
        json!({"amount_cents": 500, "reason": "x", "expires_at": "soon"}),
    ] {
        assert_problem(grant(bad).await, 422, "validation_failed").await;
    }
    let nobody = app.post_json(
        OP,
        "/admin/tenants/ten_00000000000000000000000000000000/credits",
        json!({"amount_cents": 1, "reason": "x"}),
    );
    assert_problem(nobody.await, 404, "not_found").await;
    assert_eq!(
        app.post_json(&t.key, &format!("/admin/tenants/{}/credits", t.id), json!({"amount_cents": 1, "reason": "x"}))
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );

    let r = grant(json!({"amount_cents": 5, "reason": "Sorry for the outage"})).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let granted: Value = r.json().await.expect("json");
    assert_eq!((granted["amount_cents"].as_i64(), granted["remaining_cents"].as_i64()), (Some(5), Some(5)));
    let before: Value = app.get(&t.key, "/v1/credits").await.json().await.expect("json");
    assert_eq!(before["balance_cents"], 5, "{before}");

    let closed = app.close_periods(OP).await;
    let invoice = closed["invoices"]
        .as_array()
        .and_then(|i| i.iter().find(|i| i["tenant_id"] == t.id.as_str()))
        .cloned()
        .unwrap_or_else(|| panic!("an invoice: {closed}"));
    let lines = invoice["lines"].as_array().expect("lines");
    let credit = lines.iter().find(|l| l["description"] == "Prepaid credit").expect("a credit line");
    assert_eq!(credit["amount_cents"], -5);
    let sum: i64 = lines.iter().map(|l| l["amount_cents"].as_i64().expect("amount")).sum();
    assert_eq!(invoice["total_cents"].as_i64(), Some(sum), "the total is the lines' sum: {invoice}");

    let after: Value = app.get(&t.key, "/v1/credits").await.json().await.expect("json");
    assert_eq!(after["balance_cents"], 0, "{after}");
    let used = &after["grants"][0];
    assert_eq!((used["remaining_cents"].as_i64(), used["reason"].as_str()), (Some(0), Some("Sorry for the outage")));
    assert_eq!(used["applied"][0]["invoice_id"], invoice["invoice_id"]);
    assert_eq!(used["applied"][0]["amount_cents"], 5);
}
