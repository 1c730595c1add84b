//! Plan changes over HTTP (`POST /v1/plan`) with the test clock and daily periods: the proration is
//! hand-computed and lands once on the invoice that closes the period; the new plan's quotas, models and
//! retrieval modes apply from the next request; states that may not change plan, and concurrent changes,
//! answer 409 without writing anything.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use tenantry_domain::config::{Included, PlanConfig, Quotas};
use tenantry_domain::{Config, TenantId};

use crate::helpers::{assert_problem, fresh_postgres_database, spawn_app_with, Tenant, TestApp};

const OP: &str = "op-plan";

/// A plan with `price` cents per (daily) period, no trial, the two built-in models and two retrieval modes
/// (defaults `local-large` and `basic`), `queries` per period (all included).
fn plan(name: &str, price: i64, queries: u64) -> PlanConfig {
    PlanConfig {
        name: name.into(),
        price_cents: price,
        trial_days: 0,
        models: vec!["local-large".into(), "local-small".into()],
        default_model: "local-large".into(),
        retrieval_modes: vec!["basic".into(), "advanced".into()],
        default_retrieval_mode: "basic".into(),
        // Polling a tenant under the frozen test clock must not trip the per-minute limit.
        quotas: Quotas { queries, requests_per_minute: 100_000, ..Quotas::default() },
        included: Included { queries, tokens: 10_000_000 },
        overage: Default::default(),
        limits: Default::default(),
        query_rewriting: false,
    }
}

fn configure(c: &mut Config, plans: Vec<PlanConfig>) {
    c.server.clock = "test".into();
    c.server.operator_token = OP.into();
    c.billing.period = "day".into();
    c.plans.extend(plans);
}

async fn op_post(app: &TestApp, path: &str, body: Value) -> reqwest::Response {
    app.client.post(app.url(path)).bearer_auth(OP).json(&body).send().await.expect("request")
}

async fn op_get(app: &TestApp, path: &str) -> Value {
    let r = app.client.get(app.url(path)).bearer_auth(OP).send().await.expect("request");
    assert_eq!(r.status(), StatusCode::OK, "{path}");
    r.json().await.expect("json")
}

async fn advance(app: &TestApp, seconds: i64) {
    let r = op_post(app, "/admin/clock/advance", json!({ "seconds": seconds })).await;
    assert_eq!(r.status(), StatusCode::OK);
}

async fn tenant_json(app: &TestApp, key: &str) -> Value {
    let r = app.get(key, "/v1/tenant").await;
    assert_eq!(r.status(), StatusCode::OK);
    r.json().await.expect("json")
}

/// Signs up on a paid plan, pays the signup invoice and waits until the tenant is active.
async fn paying_tenant(app: &TestApp, email: &str, plan: &str) -> Tenant {
    let t = app.signup(email, plan).await;
    let detail = op_get(app, &format!("/admin/tenants/{}", t.id)).await;
    let invoice = detail["invoices"][0]["invoice_id"].as_str().expect("signup invoice").to_owned();
    let r = op_post(app, &format!("/admin/invoices/{invoice}/payment"), json!({"outcome": "succeeded"})).await;
    assert_eq!(r.status(), StatusCode::OK);
    let started = Instant::now();
    while tenant_json(app, &t.key).await["state"] != "active" {
        assert!(started.elapsed() < Duration::from_secs(5), "not active after payment");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    t
}

async fn change_plan(app: &TestApp, key: &str, plan: &str) -> reqwest::Response {
    app.post_json(key, "/v1/plan", json!({ "plan": plan })).await
}

async fn plan_changes(app: &TestApp, tenant: &str) -> Vec<Value> {
    let audit = op_get(app, &format!("/admin/audit?tenant_id={tenant}&limit=1000")).await;
    audit["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter(|e| e["action"] == "plan.changed")
        .map(|e| serde_json::from_str(e["detail"].as_str().expect("detail")).expect("detail is JSON"))
        .collect()
}

fn lines_of(invoice: &Value) -> Vec<(String, i64)> {
    invoice["lines"]
        .as_array()
        .expect("lines")
        .iter()
        .map(|l| (l["description"].as_str().expect("text").to_owned(), l["amount_cents"].as_i64().expect("amount")))
        .collect()
}

#[tokio::test]
async fn an_upgrade_halfway_through_a_period_is_prorated_onto_the_closing_invoice_once() {
    let app = spawn_app_with(|c| configure(c, vec![plan("small", 3_000, 1_000), plan("big", 6_000, 1_000)])).await;
    let t = paying_tenant(&app, "upgrade@plan.test", "small").await;

    // Half of the day's period is left: 3000 × ½ back for `small`, 6000 × ½ due for `big`.
    advance(&app, 43_200).await;
    let r = change_plan(&app, &t.key, "big").await;
    assert_eq!(r.status(), StatusCode::OK);
    let changed: Value = r.json().await.expect("json");
    assert_eq!((changed["plan"].as_str(), changed["previous_plan"].as_str()), (Some("big"), Some("small")));
    assert_eq!(changed["state"], "active");
    assert_eq!(changed["proration"], json!({"credit_cents": 1_500, "charge_cents": 3_000, "currency": "usd"}));
    assert_eq!(tenant_json(&app, &t.key).await["plan"], "big");
    let audit = plan_changes(&app, &t.id).await;
    assert_eq!(audit.len(), 1);
    assert_eq!((audit[0]["from"].as_str(), audit[0]["to"].as_str()), (Some("small"), Some("big")));
    assert_eq!(audit[0]["proration"]["credit_cents"], 1_500);
    assert_eq!(audit[0]["proration"]["charge_cents"], 3_000);

    // The period ends: its closing invoice carries both lines beside the next period's base at `big`.
    advance(&app, 43_200).await;
    let mine: Value = app.get(&t.key, "/v1/invoices").await.json().await.expect("json");
    let closing = mine["invoices"].as_array().expect("list").iter().find(|i| i["kind"] == "closing").cloned();
    let closing = closing.unwrap_or_else(|| panic!("a closing invoice: {mine}"));
    let lines = lines_of(&closing);
    assert!(lines.contains(&("Unused time on the small plan".to_owned(), -1_500)), "{lines:?}");
    assert!(lines.contains(&("Remaining time on the big plan".to_owned(), 3_000)), "{lines:?}");
    assert!(lines.iter().any(|(d, a)| d.starts_with("big plan") && *a == 6_000), "{lines:?}");
    let sum: i64 = lines.iter().map(|(_, a)| a).sum();
    assert_eq!(sum, 7_500);
    assert_eq!((closing["subtotal_cents"].as_i64(), closing["total_cents"].as_i64()), (Some(sum), Some(sum)));
    let tenant_id = TenantId::parse(&t.id).expect("id");
    let items = app.services.store().invoice_items(&tenant_id).await.expect("items");
    assert_eq!(items.len(), 2);
    assert!(items.iter().all(|i| i.invoice_id.as_deref() == closing["invoice_id"].as_str()), "{items:?}");

    // Closing again (early, then the scheduled close with its true-up) never bills them a second time.
    let early: Value = op_post(&app, "/admin/billing/close-period", json!({})).await.json().await.expect("json");
    assert_eq!(early["invoices"].as_array().map(Vec::len), Some(1), "{early}");
    assert_eq!(lines_of(&early["invoices"][0]).iter().filter(|(_, a)| *a != 6_000).count(), 0, "{early}");
    advance(&app, 86_400).await;
    let mine: Value = app.get(&t.key, "/v1/invoices").await.json().await.expect("json");
    let proration_lines = mine["invoices"]
        .as_array()
        .expect("list")
        .iter()
        .flat_map(lines_of)
        .filter(|(d, _)| d.starts_with("Unused time") || d.starts_with("Remaining time"))
        .count();
    assert_eq!(proration_lines, 2, "{mine}");
    assert!(app.services.store().pending_items(&tenant_id).await.expect("items").is_empty());
}

/// The preview shows the proration and configuration a change would bring and changes nothing; the change
/// made right after it brings exactly that.
#[tokio::test]
async fn a_preview_shows_the_proration_the_change_then_brings_and_changes_nothing() {
    let mut small = plan("small", 3_000, 1_000);
    small.models = vec!["local-small".into()];
    small.default_model = "local-small".into();
    let app = spawn_app_with(|c| configure(c, vec![small, plan("big", 6_000, 1_000)])).await;
    let t = paying_tenant(&app, "preview@plan.test", "big").await;
    advance(&app, 43_200).await;

    let r = app.get(&t.key, "/v1/plan/preview?plan=small").await;
    assert_eq!(r.status(), StatusCode::OK);
    let preview: Value = r.json().await.expect("json");
    assert_eq!((preview["plan"].as_str(), preview["current_plan"].as_str()), (Some("small"), Some("big")));
    assert_eq!(preview["proration"], json!({"credit_cents": 3_000, "charge_cents": 1_500, "currency": "usd"}));
    assert_eq!(lines_of(&preview).iter().map(|(_, a)| a).sum::<i64>(), -1_500, "{preview}");
    assert_eq!(preview["model"], "local-small", "small does not offer local-large: {preview}");
    assert_eq!(tenant_json(&app, &t.key).await["plan"], "big", "a preview changes nothing");
    assert!(plan_changes(&app, &t.id).await.is_empty());
    let tenant_id = TenantId::parse(&t.id).expect("id");
    assert!(app.services.store().pending_items(&tenant_id).await.expect("items").is_empty());

    let changed: Value = change_plan(&app, &t.key, "small").await.json().await.expect("json");
    assert_eq!(changed["proration"], preview["proration"]);
    assert_eq!(changed["config"]["model"], preview["model"]);

    let same: Value = app.get(&t.key, "/v1/plan/preview?plan=small").await.json().await.expect("json");
    assert_eq!(same["proration"], json!({"credit_cents": 0, "charge_cents": 0, "currency": "usd"}));
    assert_eq!(same["lines"], json!([]));
    assert_problem(app.get(&t.key, "/v1/plan/preview?plan=gold").await, 422, "validation_failed").await;
    assert_problem(app.get(&t.key, "/v1/plan/preview").await, 422, "validation_failed").await;
}

/// The catalogue is public and shows what each plan offers, as configured.
#[tokio::test]
async fn the_plan_catalogue_is_public() {
    let app = spawn_app_with(|c| configure(c, vec![plan("small", 3_000, 1_000)])).await;
    let r = app.client.get(app.url("/v1/plans")).send().await.expect("request");
    assert_eq!(r.status(), StatusCode::OK);
    let catalogue: Value = r.json().await.expect("json");
    let plans = catalogue["plans"].as_array().expect("plans");
    let names: Vec<&str> = plans.iter().filter_map(|p| p["name"].as_str()).collect();
    let configured: Vec<String> = app.services.catalog().plans().map(|p| p.name.clone()).collect();
    assert_eq!(names, configured.iter().map(String::as_str).collect::<Vec<_>>());
    let small = plans.iter().find(|p| p["name"] == "small").expect("small");
    assert_eq!(small["price_cents"], 3_000);
    assert_eq!(small["period"], "day");
    assert_eq!(small["models"], json!(["local-large", "local-small"]));
    assert_eq!(small["retrieval_modes"], json!(["basic", "advanced"]));
    assert_eq!(
        (small["default_model"].as_str(), small["default_retrieval_mode"].as_str()),
        (Some("local-large"), Some("basic"))
    );
    assert_eq!(small["quotas"]["queries"], 1_000);
    assert_eq!(small["included"]["tokens"], 10_000_000);
}

/// The closing invoice of a period with a big downgrade credit sums below zero: like Stripe, it asks for
/// nothing (paid as made, total 0, never collected, no dunning) and the credit goes to the next invoice, which
/// passes on what it cannot use up, until an invoice owes something again.
#[tokio::test]
async fn a_credit_larger_than_the_invoice_is_carried_forward_and_never_collected() {
    let app = spawn_app_with(|c| configure(c, vec![plan("tiny", 1_000, 1_000), plan("big", 6_000, 1_000)])).await;
    let t = paying_tenant(&app, "credit@plan.test", "big").await;
    // Half the period left: 3000 back for `big`, 500 due for `tiny`; the next period's base is 1000.
    advance(&app, 43_200).await;
    assert_eq!(change_plan(&app, &t.key, "tiny").await.status(), StatusCode::OK);
    advance(&app, 43_200).await;
    let closings = |mine: Value| -> Vec<Value> {
        let list = mine["invoices"].as_array().expect("list").iter().filter(|i| i["kind"] == "closing");
        list.cloned().collect()
    };
    let mine: Value = app.get(&t.key, "/v1/invoices").await.json().await.expect("json");
    let first = closings(mine.clone()).pop().unwrap_or_else(|| panic!("a closing invoice: {mine}"));
    let lines = lines_of(&first);
    assert!(lines.contains(&("Credit carried to the next invoice".to_owned(), 1_500)), "{lines:?}");
    assert_eq!(lines.iter().map(|(_, a)| a).sum::<i64>(), 0, "{lines:?}");
    assert_eq!((first["status"].as_str(), first["total_cents"].as_i64()), (Some("paid"), Some(0)), "{first}");
    assert_eq!(tenant_json(&app, &t.key).await["state"], "active");
    // Nothing to pay, so nothing to fail: a payment report is refused and the tenant stays served.
    let id = first["invoice_id"].as_str().expect("id");
    let failed = op_post(&app, &format!("/admin/invoices/{id}/payment"), json!({"outcome": "failed"})).await;
    assert_problem(failed, 409, "invalid_transition").await;
    assert_eq!(tenant_json(&app, &t.key).await["state"], "active");

    // Next close: 1000 base against the 1500 credit leaves 500 to carry; the one after owes 500.
    advance(&app, 86_400).await;
    advance(&app, 86_400).await;
    let mine: Value = app.get(&t.key, "/v1/invoices").await.json().await.expect("json");
    let all = closings(mine.clone());
    assert_eq!(all.len(), 3, "{mine}");
    let by_start = |i: &Value| i["period_start"].as_str().expect("start").to_owned();
    let mut all = all;
    all.sort_by_key(by_start);
    let credit_from = |i: &Value| lines_of(i).into_iter().find(|(d, _)| d.starts_with("Credit from invoice"));
    assert_eq!(credit_from(&all[1]).map(|(_, a)| a), Some(-1_500), "{}", all[1]);
    assert!(lines_of(&all[1]).contains(&("Credit carried to the next invoice".to_owned(), 500)), "{}", all[1]);
    assert_eq!((all[1]["status"].as_str(), all[1]["total_cents"].as_i64()), (Some("paid"), Some(0)));
    assert_eq!(credit_from(&all[2]).map(|(_, a)| a), Some(-500), "{}", all[2]);
    assert_eq!((all[2]["status"].as_str(), all[2]["total_cents"].as_i64()), (Some("open"), Some(500)));
    let tenant_id = TenantId::parse(&t.id).expect("id");
    assert!(app.services.store().pending_items(&tenant_id).await.expect("items").is_empty(), "every credit used");
}

#[tokio::test]
async fn after_an_early_close_the_next_period_already_invoiced_is_corrected_too() {
    let app = spawn_app_with(|c| configure(c, vec![plan("small", 3_000, 1_000), plan("big", 6_000, 1_000)])).await;
    let t = paying_tenant(&app, "early@plan.test", "small").await;

    // The operator closes the period early: the next period's base is invoiced at `small`'s price.
    let early: Value = op_post(&app, "/admin/billing/close-period", json!({})).await.json().await.expect("json");
    assert_eq!(lines_of(&early["invoices"][0]).iter().map(|(_, a)| a).sum::<i64>(), 3_000, "{early}");

    // A quarter of the period left: 750 back and 1500 due for this period, 3000 back and 6000 due for the next.
    advance(&app, 64_800).await;
    let changed: Value = change_plan(&app, &t.key, "big").await.json().await.expect("json");
    assert_eq!(changed["proration"], json!({"credit_cents": 3_750, "charge_cents": 7_500, "currency": "usd"}));

    // They go on the period's next invoice: the true-up at its end.
    advance(&app, 21_600).await;
    let mine: Value = app.get(&t.key, "/v1/invoices").await.json().await.expect("json");
    let true_up = mine["invoices"].as_array().expect("list").iter().find(|i| i["kind"] == "true_up").cloned();
    let true_up = true_up.unwrap_or_else(|| panic!("a true-up invoice: {mine}"));
    let amounts: Vec<i64> = lines_of(&true_up).iter().map(|(_, a)| *a).collect();
    assert_eq!(amounts, [-750, 1_500, -3_000, 6_000], "{true_up}");
    assert_eq!(true_up["total_cents"], 3_750);
}

#[tokio::test]
async fn unknown_plans_and_states_that_may_not_change_plan_are_refused() {
    let app = spawn_app_with(|c| configure(c, vec![plan("free", 0, 1_000), plan("big", 6_000, 1_000)])).await;
    let t = app.signup("rules@plan.test", "free").await;
    let before = tenant_json(&app, &t.key).await;
    assert_eq!(before["state"], "active");

    assert_problem(change_plan(&app, &t.key, "platinum").await, 422, "validation_failed").await;
    assert_problem(app.post_json(&t.key, "/v1/plan", json!({})).await, 422, "validation_failed").await;
    assert_problem(app.post_json(&t.key, "/v1/plan", json!({"plan": 7})).await, 422, "validation_failed").await;
    let r = app.client.post(app.url("/v1/plan")).json(&json!({"plan": "big"})).send().await.expect("request");
    assert_problem(r, 401, "unauthenticated").await;
    // Without a key the body is not judged: 401, not the body's 422.
    let r = app.client.post(app.url("/v1/plan")).json(&json!({"plan": 7})).send().await.expect("request");
    assert_problem(r, 401, "unauthenticated").await;

    // The current plan again changes nothing and prorates nothing.
    let r = change_plan(&app, &t.key, "free").await;
    assert_eq!(r.status(), StatusCode::OK);
    let same: Value = r.json().await.expect("json");
    assert_eq!((same["plan"].as_str(), same["previous_plan"].as_str()), (Some("free"), Some("free")));
    assert_eq!(same["proration"], json!({"credit_cents": 0, "charge_cents": 0, "currency": "usd"}));
    assert_eq!(tenant_json(&app, &t.key).await["config_version"], before["config_version"]);

    // Suspended: no plan change until reactivated.
    let r = op_post(&app, &format!("/admin/tenants/{}/suspend", t.id), json!({})).await;
    assert_eq!(r.status(), StatusCode::OK);
    // API.md's state table: a suspended tenant's endpoints answer 402 (only its listed account endpoints
    // stay open), and a bad body does not get past that.
    assert_problem(change_plan(&app, &t.key, "big").await, 402, "payment_required").await;
    assert_problem(app.post_json(&t.key, "/v1/plan", json!({"plan": 7})).await, 402, "payment_required").await;
    assert_eq!(tenant_json(&app, &t.key).await["plan"], "free");
    let r = op_post(&app, &format!("/admin/tenants/{}/reactivate", t.id), json!({})).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(change_plan(&app, &t.key, "big").await.status(), StatusCode::OK);

    // A paid signup waiting for its first payment cannot change plan either.
    let pending = app.signup("pending@plan.test", "big").await;
    assert_eq!(tenant_json(&app, &pending.key).await["state"], "pending_payment");
    assert_problem(change_plan(&app, &pending.key, "free").await, 402, "payment_required").await;
    assert_eq!(plan_changes(&app, &t.id).await.len(), 1, "only the change that applied is on record");
    assert!(plan_changes(&app, &pending.id).await.is_empty());
}

#[tokio::test]
async fn a_trialing_tenant_changes_plan_without_proration() {
    let app = spawn_app_with(|c| configure(c, vec![])).await;
    // The built-in `starter` has a 14-day trial and a price; `pro` costs ten times more.
    let t = app.signup("trial@plan.test", "starter").await;
    assert_eq!(tenant_json(&app, &t.key).await["state"], "trialing");
    advance(&app, 43_200).await;
    let r = change_plan(&app, &t.key, "pro").await;
    assert_eq!(r.status(), StatusCode::OK);
    let changed: Value = r.json().await.expect("json");
    assert_eq!((changed["plan"].as_str(), changed["state"].as_str()), (Some("pro"), Some("trialing")));
    assert_eq!(changed["proration"], json!({"credit_cents": 0, "charge_cents": 0, "currency": "usd"}));
    let tenant_id = TenantId::parse(&t.id).expect("id");
    assert!(app.services.store().invoice_items(&tenant_id).await.expect("items").is_empty());
    assert_eq!(plan_changes(&app, &t.id).await.len(), 1);

    // The trial goes on (it ends when it would have): the period's close inside it bills no base price.
    advance(&app, 43_200).await;
    let mine: Value = app.get(&t.key, "/v1/invoices").await.json().await.expect("json");
    let billed: Vec<(String, i64)> = mine["invoices"].as_array().expect("list").iter().flat_map(lines_of).collect();
    assert!(billed.iter().all(|(_, a)| *a == 0), "nothing billed for trial time: {mine}");
    assert_eq!(tenant_json(&app, &t.key).await["state"], "trialing");
}

#[tokio::test]
async fn a_downgrade_enforces_the_new_quota_from_the_next_request() {
    let app = spawn_app_with(|c| configure(c, vec![plan("roomy", 0, 100), plan("tight", 0, 2)])).await;
    let t = app.signup("quota@plan.test", "roomy").await;
    app.upload_text(&t.key, "Refunds", "Refunds are issued within 14 days of the request.").await;
    for _ in 0..2 {
        app.query(&t.key, "How long do refunds take?").await;
    }

    let r = change_plan(&app, &t.key, "tight").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["x-quota-queries-remaining"], "0", "the headers are the new plan's");
    let refused = app.post_json(&t.key, "/v1/query", json!({"question": "How long do refunds take?"})).await;
    assert_problem(refused, 429, "quota_exceeded").await;
    let quotas: Value = app.get(&t.key, "/v1/quotas").await.json().await.expect("json");
    assert_eq!((quotas["limits"]["queries"].as_i64(), quotas["used"]["queries"].as_i64()), (Some(2), Some(2)));

    // And an upgrade lifts it at once.
    assert_eq!(change_plan(&app, &t.key, "roomy").await.status(), StatusCode::OK);
    app.query(&t.key, "How long do refunds take?").await;
}

#[tokio::test]
async fn a_model_or_retrieval_mode_the_new_plan_does_not_offer_is_reset_to_its_defaults() {
    let mut lite = plan("lite", 0, 1_000);
    lite.models = vec!["local-small".into()];
    lite.default_model = "local-small".into();
    lite.retrieval_modes = vec!["basic".into()];
    let app = spawn_app_with(|c| configure(c, vec![plan("full", 0, 1_000), lite])).await;
    let t = app.signup("models@plan.test", "full").await;
    let r = app
        .client
        .patch(app.url("/v1/tenant/config"))
        .bearer_auth(&t.key)
        .json(&json!({"retrieval_mode": "advanced", "system_prompt": "Answer briefly."}))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), StatusCode::OK);
    let before = tenant_json(&app, &t.key).await;
    assert_eq!(before["config"]["model"], "local-large");

    let changed: Value = change_plan(&app, &t.key, "lite").await.json().await.expect("json");
    let expected = json!({
        "model": "local-small",
        "retrieval_mode": "basic",
        "system_prompt": "Answer briefly.",
        "overage_limit_cents": null,
    });
    assert_eq!(changed["config"], expected);
    let after = tenant_json(&app, &t.key).await;
    assert_eq!((after["plan"].as_str(), &after["config"]), (Some("lite"), &expected));
    assert_eq!(after["config_version"].as_i64(), before["config_version"].as_i64().map(|v| v + 1));
    let answer = app.query(&t.key, "anything?").await;
    assert_eq!((answer["model"].as_str(), answer["retrieval_mode"].as_str()), (Some("local-small"), Some("basic")));

    // Back on `full`, what the tenant has is allowed and kept (not reset to `full`'s default model).
    let changed: Value = change_plan(&app, &t.key, "full").await.json().await.expect("json");
    assert_eq!(changed["config"], expected);
}

/// Eight concurrent changes to eight different plans: each either applies (200) or loses the race (409), and
/// the record shows exactly the applied ones, each starting from the plan the one before it left.
async fn concurrent_plan_changes_apply_one_at_a_time(database_url: Option<String>) {
    let targets: Vec<String> = (0..8).map(|i| format!("p{i}")).collect();
    let mut plans: Vec<PlanConfig> =
        targets.iter().enumerate().map(|(i, name)| plan(name, 1_000 * (i as i64 + 1), 1_000)).collect();
    plans.push(plan("base", 0, 1_000));
    let app = spawn_app_with(move |c| {
        configure(c, plans);
        if let Some(url) = database_url {
            c.database.url = url;
        }
    })
    .await;
    let t = app.signup("race@plan.test", "base").await;
    advance(&app, 3_600).await;

    let responses = futures::future::join_all(targets.iter().map(|p| change_plan(&app, &t.key, p))).await;
    let mut applied = 0;
    for r in responses {
        match r.status().as_u16() {
            200 => applied += 1,
            409 => {
                assert_problem(r, 409, "transition_in_progress").await;
            }
            other => panic!("unexpected status {other}: {:?}", r.text().await),
        }
    }
    assert!(applied >= 1, "at least one change applies");

    let changes = plan_changes(&app, &t.id).await;
    assert_eq!(changes.len(), applied, "one audit entry per applied change: {changes:?}");
    // Audit entries are appended after their change commits, so two racing changes may be recorded in either
    // order; what must hold is that the applied changes form one chain from `base` (none applied to a stale
    // read).
    let mut from = "base".to_owned();
    let mut left: Vec<&Value> = changes.iter().collect();
    while !left.is_empty() {
        let next = left.iter().position(|c| c["from"].as_str() == Some(from.as_str()));
        let next = next.unwrap_or_else(|| panic!("no change applied to a stale read: {changes:?}"));
        from = left.remove(next)["to"].as_str().expect("to").to_owned();
    }
    let tenant = tenant_json(&app, &t.key).await;
    assert_eq!(tenant["plan"].as_str(), Some(from.as_str()));
    assert_eq!(tenant["config_version"].as_u64(), Some(1 + applied as u64));

    let tenant_id = TenantId::parse(&t.id).expect("id");
    let stored: BTreeSet<String> =
        app.services.store().pending_items(&tenant_id).await.expect("items").into_iter().map(|i| i.id).collect();
    let recorded: BTreeSet<String> = changes
        .iter()
        .flat_map(|c| c["items"].as_array().cloned().unwrap_or_default())
        .map(|i| i.as_str().expect("item id").to_owned())
        .collect();
    assert_eq!(stored, recorded, "the pending items are exactly the applied changes'");
    assert!(!stored.is_empty());
}

#[tokio::test]
async fn concurrent_plan_changes_never_apply_to_a_stale_read() {
    concurrent_plan_changes_apply_one_at_a_time(None).await;
}

#[tokio::test]
async fn concurrent_plan_changes_never_apply_to_a_stale_read_on_postgres() {
    match fresh_postgres_database().await {
        Some(url) => concurrent_plan_changes_apply_one_at_a_time(Some(url)).await,
        None => eprintln!("TENANTRY_TEST_POSTGRES_URL not set: PostgreSQL story skipped"),
    }
}

#[tokio::test]
async fn the_openapi_document_describes_plan_changes() {
    let app = spawn_app_with(|_| {}).await;
    let spec: Value = app.client.get(app.url("/openapi.json")).send().await.expect("get").json().await.expect("json");
    let op = &spec["paths"]["/v1/plan"]["post"];
    assert!(op["requestBody"].is_object(), "{op}");
    for status in ["200", "401", "409", "422"] {
        assert!(op["responses"][status].is_object(), "{status} in {op}");
    }
    let proration = &spec["components"]["schemas"]["ProrationView"]["properties"];
    for field in ["credit_cents", "charge_cents", "currency"] {
        assert!(proration[field].is_object(), "{field} in {proration}");
    }
    assert!(spec["components"]["schemas"]["PlanChanged"]["properties"]["proration"].is_object());
}

/// A plan without vector retrieval keeps no vectors; moving to one with it answers 202, keeps serving on the
/// old plan while a job builds the vector index, refuses another change meanwhile, then switches. Driven at
/// the service layer without the background worker, so the pending window is deterministic.
#[tokio::test]
async fn a_change_that_needs_a_vector_index_answers_202_and_switches_when_the_index_is_built() {
    use tenantry_domain::lifecycle::EndpointClass;
    use tenantry_domain::{RequestId, RetrievalMode};
    use tenantry_service::documents::Upload;
    use tenantry_service::gateway::Scope;
    use tenantry_service::Services;

    let dir = tempfile::tempdir().expect("dir");
    let mut config = Config::builtin();
    config.server.data_dir = dir.path().to_owned();
    let mut lexical = plan("lexical", 0, 1_000);
    lexical.retrieval_modes = vec!["basic".into()];
    configure(&mut config, vec![lexical, plan("hybrid", 0, 1_000)]);
    let services = Services::start(config).await.expect("start");
    let signup = services
        .signup(tenantry_service::tenants::SignupRequest {
            email: "vectors@plan.test".into(),
            organization: "Vectors".into(),
            plan: "lexical".into(),
        })
        .await
        .expect("signup");
    let ctx = || async {
        services
            .authenticate(Some(&signup.api_key), RequestId::generate(), EndpointClass::Service, Scope::Admin)
            .await
            .expect("authenticated")
    };
    let upload = |title: &str, text: &str| Upload {
        title: Some(title.into()),
        file_name: None,
        content_type: Some("text/plain".into()),
        bytes: text.as_bytes().to_vec(),
    };
    let c = ctx().await;
    assert!(!c.index_vectors, "a basic-only plan keeps no vectors");
    services.upload_document(&c, upload("Refunds", "Refunds are issued within 14 days.")).await.expect("upload");
    assert_eq!(services.vector_count(&c).expect("count"), 0);
    // An upload that authenticated before the change and commits after the switch listed the documents.
    let stale = c.clone();

    let pending = services.change_plan(&c, "hybrid").await.expect("change");
    assert_eq!((pending.plan.as_str(), pending.pending_plan.as_deref()), ("lexical", Some("hybrid")));
    let c = ctx().await;
    assert_eq!(c.plan.name, "lexical", "still served on the old plan");
    assert!(c.index_vectors, "documents uploaded meanwhile are embedded at once");
    let again = services.change_plan(&c, "lexical").await.expect_err("refused");
    assert_eq!(again.code, tenantry_domain::ErrorCode::TransitionInProgress);

    // The job builds the index and switches.
    services.drain_jobs().await.expect("jobs");
    let c = ctx().await;
    assert_eq!(c.plan.name, "hybrid");
    let row = services.store().tenant(&c.tenant_id).await.expect("read").expect("tenant");
    assert_eq!(row.pending_plan, None);
    let vectors = services.vector_count(&c).expect("count");
    assert!(vectors > 0, "the document has vectors now");
    services.upload_document(&stale, upload("Late", "Late uploads are embedded too.")).await.expect("late upload");
    assert!(services.vector_count(&c).expect("count") > vectors, "the late upload was embedded after its commit");
    let hybrid = tenantry_domain::TenantContext { retrieval_mode: RetrievalMode::Advanced, ..c.clone() };
    let hits = services.retrieve(&hybrid, "refunds issued", 5).await.expect("retrieve");
    assert!(!hits.is_empty());
    services.shutdown().await;
}

/// A switch whose index cannot be built retries, then parks; parking abandons the change, so the tenant keeps
/// serving on its plan and may ask again instead of being stuck behind a pending change.
#[tokio::test]
async fn a_switch_that_keeps_failing_is_parked_and_the_change_abandoned() {
    use tenantry_domain::lifecycle::EndpointClass;
    use tenantry_domain::RequestId;
    use tenantry_service::documents::Upload;
    use tenantry_service::gateway::Scope;
    use tenantry_service::Services;

    let dir = tempfile::tempdir().expect("dir");
    let mut config = Config::builtin();
    config.server.data_dir = dir.path().to_owned();
    config.server.clock = "test".into();
    let mut lexical = plan("lexical", 0, 1_000);
    lexical.retrieval_modes = vec!["basic".into()];
    configure(&mut config, vec![lexical, plan("hybrid", 0, 1_000)]);
    let services = Services::start(config.clone()).await.expect("start");
    let signup = services
        .signup(tenantry_service::tenants::SignupRequest {
            email: "stuck@plan.test".into(),
            organization: "Stuck".into(),
            plan: "lexical".into(),
        })
        .await
        .expect("signup");
    let c = services
        .authenticate(Some(&signup.api_key), RequestId::generate(), EndpointClass::Service, Scope::Admin)
        .await
        .expect("authenticated");
    let upload = Upload {
        title: Some("Refunds".into()),
        file_name: None,
        content_type: Some("text/plain".into()),
        bytes: b"Refunds are issued within 14 days.".to_vec(),
    };
    services.upload_document(&c, upload).await.expect("upload");
    services.shutdown().await;
    // Where the vector index would go is a file: every attempt to open the namespace and build it fails.
    let vectors = dir.path().join("tenants").join(c.tenant_id.as_str()).join("vectors");
    std::fs::remove_dir_all(&vectors).expect("the vector index directory existed");
    std::fs::write(&vectors, b"not a directory").expect("block the index");
    let services = Services::start(config).await.expect("restart");

    services.change_plan(&c, "hybrid").await.expect("change accepted");
    for _ in 0..8 {
        services.advance_clock(3_600).await.expect("advance");
    }
    let parked = services.admin_jobs(Some("parked"), Some(c.tenant_id.as_str())).await.expect("jobs");
    assert_eq!(parked.iter().map(|j| j.kind.as_str()).collect::<Vec<_>>(), ["switch_plan"]);
    let row = services.store().tenant(&c.tenant_id).await.expect("read").expect("tenant");
    assert_eq!((row.plan.as_str(), row.pending_plan.as_deref()), ("lexical", None), "abandoned, still served");
    let audit = services.store().audit_entries(Some(&c.tenant_id), 0, 1_000).await.expect("audit");
    assert!(audit.iter().any(|e| e.action == "plan.change_abandoned"), "the abandonment is audited");
    let again = services.change_plan(&c, "hybrid").await.expect("a new change is accepted");
    assert_eq!(again.pending_plan.as_deref(), Some("hybrid"));
    services.shutdown().await;
}
