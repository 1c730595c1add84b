//! Billing from the ledger with the manual provider, over HTTP: closing a period rates exactly the ledger's
//! usage (hand-computed here), opens one invoice per tenant and period, and payment reports move the invoice
//! and the tenant's lifecycle.

use serde_json::{json, Value};
use tenantry_domain::config::{Config, Included, Overage, PlanConfig};

use crate::helpers::{assert_problem, spawn_app_with};

const OP: &str = "op-billing";

/// The operator token and the test clock these stories drive.
fn test_clock(c: &mut Config) {
    c.server.operator_token = OP.into();
    c.server.clock = "test".into();
}

#[tokio::test]
async fn a_closed_period_bills_the_ledgers_overage_and_the_next_base_price() {
    let app = spawn_app_with(|c| {
        let mut plan: PlanConfig = c.plans.iter().find(|p| p.name == "trial").expect("trial").clone();
        plan.name = "metered".into();
        plan.price_cents = 1_000;
        plan.included = Included { queries: 2, tokens: 100 };
        plan.overage = Overage { query_micros: 2_000, token_micros_per_1k: 100, ..Overage::default() };
        c.plans.push(plan);
        c.server.operator_token = OP.into();
    })
    .await;
    let t = app.signup("metered@billing.test", "metered").await;
    let free = app.signup("free@billing.test", "trial").await;
    app.upload_text(&t.key, "Policy", "Refunds are issued within 14 days.").await;
    for _ in 0..5 {
        app.query(&t.key, "How long do refunds take?").await;
    }
    app.query(&free.key, "anything?").await;

    let close = || app.client.post(app.url("/admin/billing/close-period")).bearer_auth(OP).send();
    let made: Value = close().await.expect("close").json().await.expect("json");
    let invoices = made["invoices"].as_array().expect("invoices");
    assert_eq!(invoices.len(), 1, "the free tenant owes nothing: {made}");
    let invoice = &invoices[0];
    assert_eq!((invoice["tenant_id"].as_str(), invoice["status"].as_str()), (Some(t.id.as_str()), Some("open")));
    assert!(invoice["number"].as_str().is_some_and(|n| n.starts_with("INV-")));

    // Hand-computed from the ledger: 5 queries, 2 included, 0.2 cent each over → 0.6 → 1 cent; tokens over
    // 100 at 0.1 micro-dollar each (far below a cent); the period's rest after the 14-day trial, prorated;
    // the next period's base, 10.00, in advance.
    let usage = app.usage(&t.key).await;
    let tokens = usage["totals"]["prompt_tokens"].as_u64().expect("n")
        + usage["totals"]["completion_tokens"].as_u64().expect("n");
    assert_eq!(usage["totals"]["queries"], 5);
    let lines = invoice["lines"].as_array().expect("lines");
    let by_meter = |m: &str| lines.iter().find(|l| l["meter"] == m).cloned().unwrap_or(Value::Null);
    assert_eq!(
        (by_meter("queries")["quantity"].as_u64(), by_meter("queries")["amount_cents"].as_i64()),
        (Some(3), Some(1))
    );
    assert_eq!(by_meter("tokens")["quantity"].as_u64(), Some(tokens - 100), "billed tokens = ledger tokens − included");
    assert_eq!(by_meter("tokens")["amount_cents"], 0);
    let base: Vec<&Value> = lines.iter().filter(|l| l["meter"].is_null()).collect();
    assert_eq!(base.len(), 2, "{lines:?}");
    let rest = base[0]["amount_cents"].as_i64().expect("cents");
    assert!(base[0]["description"].as_str().expect("text").contains("after the trial"), "{lines:?}");
    assert!((1_000 * 14 / 28..=1_000 * 17 / 31 + 1).contains(&rest), "the rest of a 28- to 31-day period: {rest}");
    assert_eq!(base[1]["amount_cents"], 1_000);
    let sum: i64 = lines.iter().map(|l| l["amount_cents"].as_i64().expect("amount")).sum();
    assert_eq!(
        (invoice["subtotal_cents"].as_i64(), invoice["total_cents"].as_i64()),
        (Some(sum), Some(1 + rest + 1_000))
    );

    // Closing again makes nothing new; the tenant sees its one invoice, the other tenant none.
    let again: Value = close().await.expect("close").json().await.expect("json");
    assert_eq!(again["invoices"], json!([]));
    let mine: Value = app.get(&t.key, "/v1/invoices").await.json().await.expect("json");
    assert_eq!(mine["invoices"].as_array().map(Vec::len), Some(1));
    assert_eq!(mine["invoices"][0]["invoice_id"], invoice["invoice_id"]);
    let theirs: Value = app.get(&free.key, "/v1/invoices").await.json().await.expect("json");
    assert_eq!(theirs["invoices"], json!([]));

    // A failed payment: invoice stays open, the tenant is past_due and still served.
    let id = invoice["invoice_id"].as_str().expect("id");
    let pay = |outcome: &str| {
        app.client
            .post(app.url(&format!("/admin/invoices/{id}/payment")))
            .bearer_auth(OP)
            .json(&json!({"outcome": outcome}))
            .send()
    };
    let failed: Value = pay("failed").await.expect("pay").json().await.expect("json");
    assert_eq!(failed["status"], "open");
    let tenant: Value = app.get(&t.key, "/v1/tenant").await.json().await.expect("json");
    assert_eq!(tenant["state"], "past_due");
    app.query(&t.key, "How long do refunds take?").await;

    // A successful one: paid, active again; a second report is refused.
    let paid: Value = pay("succeeded").await.expect("pay").json().await.expect("json");
    assert_eq!(paid["status"], "paid");
    let tenant: Value = app.get(&t.key, "/v1/tenant").await.json().await.expect("json");
    assert_eq!(tenant["state"], "active");
    assert_problem(pay("succeeded").await.expect("pay"), 409, "invalid_transition").await;
    assert_problem(pay("maybe").await.expect("pay"), 422, "validation_failed").await;

    let audit = app.audit(OP, &t.id).await;
    let actions: Vec<&str> = audit.iter().filter_map(|e| e["action"].as_str()).collect();
    assert!(actions.contains(&"invoice.opened") && actions.contains(&"invoice.payment_reported"), "{actions:?}");
}

#[tokio::test]
async fn graduated_tiers_and_per_model_token_prices_from_the_configuration() {
    use tenantry_domain::config::PriceTier;
    let app = spawn_app_with(|c| {
        let mut plan: PlanConfig = c.plans.iter().find(|p| p.name == "trial").expect("trial").clone();
        plan.name = "tiered".into();
        plan.price_cents = 0;
        plan.included = Included { queries: 0, tokens: 0 };
        plan.overage = Overage {
            query_tiers: vec![
                PriceTier { up_to: Some(2), unit_micros: 10_000 },
                PriceTier { up_to: None, unit_micros: 5_000 },
            ],
            model_token_micros_per_1k: [("local-small".to_owned(), 1_000_000)].into_iter().collect(),
            ..Overage::default()
        };
        c.plans.push(plan);
        c.server.operator_token = OP.into();
    })
    .await;
    let t = app.signup("tiers@billing.test", "tiered").await;
    app.upload_text(&t.key, "Policy", "Refunds are issued within 14 days.").await;
    for _ in 0..5 {
        app.query(&t.key, "How long do refunds take?").await;
    }
    let usage = app.usage(&t.key).await;
    let tokens = usage["totals"]["prompt_tokens"].as_i64().expect("n")
        + usage["totals"]["completion_tokens"].as_i64().expect("n");
    let made: Value = app.close_periods(OP).await;
    let lines = made["invoices"][0]["lines"].as_array().expect("lines").clone();
    // Queries: the first 2 at 1 cent, the other 3 at 0.5 cent (1.5 → 2 cents, half away from zero).
    let queries: Vec<(u64, i64)> = lines
        .iter()
        .filter(|l| l["meter"] == "queries")
        .map(|l| (l["quantity"].as_u64().expect("q"), l["amount_cents"].as_i64().expect("a")))
        .collect();
    assert_eq!(queries, [(2, 2), (3, 2)]);
    // Tokens at local-small's own price, 1 dollar per 1,000: the ledger's tokens / 10 cents, rounded.
    let token_line = lines.iter().find(|l| l["meter"] == "tokens").expect("tokens line");
    assert_eq!(token_line["model"], "local-small");
    assert_eq!(token_line["quantity"].as_i64(), Some(tokens));
    assert_eq!(token_line["amount_cents"].as_i64(), Some((tokens + 5) / 10));
    let sum: i64 = lines.iter().filter_map(|l| l["amount_cents"].as_i64()).sum();
    assert_eq!(made["invoices"][0]["total_cents"].as_i64(), Some(sum));
}

#[tokio::test]
async fn bad_price_tiers_stop_the_service_at_start() {
    use tenantry_domain::config::PriceTier;
    let dir = tempfile::tempdir().expect("dir");
    let mut config = tenantry_domain::Config::builtin();
    config.server.data_dir = dir.path().to_owned();
    let plan = config.plans.iter_mut().find(|p| p.name == "starter").expect("starter");
    // Tiers must rise and end open-ended.
    plan.overage.query_tiers =
        vec![PriceTier { up_to: Some(10), unit_micros: 1 }, PriceTier { up_to: Some(5), unit_micros: 1 }];
    let err = tenantry_service::Services::start(config).await.err().expect("refused");
    assert!(err.to_string().contains("starter"), "{err}");
}

/// A paid plan's trial ends after its `trial_days`: the first invoice (the usage so far and the next period's
/// base price) is made then, not at the period's end, and its payment makes the tenant `active`. A free
/// plan's trial has nothing to charge: its tenant simply becomes `active`.
#[tokio::test]
async fn a_paid_plans_trial_converts_when_its_days_are_over() {
    let app = spawn_app_with(test_clock).await;
    let op = |path: String, body: Value| app.client.post(app.url(&path)).bearer_auth(OP).json(&body).send();
    let advance = |days: i64| op("/admin/clock/advance".into(), json!({"seconds": days * 86_400}));
    let invoices = |key: String| {
        let app = &app;
        async move {
            let list: Value = app.get(&key, "/v1/invoices").await.json().await.expect("json");
            list["invoices"].as_array().expect("invoices").clone()
        }
    };
    let state = |key: String| {
        let app = &app;
        async move { app.get(&key, "/v1/tenant").await.json::<Value>().await.expect("json")["state"].clone() }
    };
    // The built-in `starter`: 14-day trial, then 49.00 a month; `trial`: free, 14 days.
    let paid = app.signup("convert@trial.test", "starter").await;
    let free = app.signup("free@trial.test", "trial").await;
    app.query(&paid.key, "anything?").await;
    assert_eq!(state(paid.key.clone()).await, "trialing");

    assert_eq!(advance(13).await.expect("advance").status(), 200);
    assert!(invoices(paid.key.clone()).await.is_empty(), "nothing billed during the trial");
    assert_eq!(state(paid.key.clone()).await, "trialing");

    assert_eq!(advance(2).await.expect("advance").status(), 200);
    let billed = invoices(paid.key.clone()).await;
    assert_eq!(billed.len(), 1, "the trial's end made the first invoice: {billed:?}");
    assert_eq!(billed[0]["status"], "open");
    let base: Vec<&Value> =
        billed[0]["lines"].as_array().expect("lines").iter().filter(|l| l["meter"].is_null()).collect();
    assert_eq!(base.len(), 2, "the rest of the trial's period and the next one's base price: {billed:?}");
    // The trial ended on day 14 of a 28- to 31-day period: the rest of it, prorated, is owed.
    let rest = base[0]["amount_cents"].as_i64().expect("cents");
    assert!((4_900 * 14 / 28..=4_900 * 17 / 31 + 1).contains(&rest), "prorated rest of the period: {rest}");
    assert!(base[0]["description"].as_str().expect("text").contains("after the trial"), "{billed:?}");
    assert_eq!(base[1]["amount_cents"], 4_900, "the next period's base price, in advance");
    assert_eq!(state(paid.key.clone()).await, "trialing", "served until the payment is reported");
    let id = billed[0]["invoice_id"].as_str().expect("id").to_owned();
    let paid_report = op(format!("/admin/invoices/{id}/payment"), json!({"outcome": "succeeded"})).await.expect("pay");
    assert_eq!(paid_report.status(), 200);
    assert_eq!(state(paid.key.clone()).await, "active", "the trial converted");

    assert!(invoices(free.key.clone()).await.is_empty(), "a free plan's trial bills nothing");
    assert_eq!(state(free.key.clone()).await, "active", "a free plan's trial is over, with nothing to pay");
    app.query(&free.key, "still served?").await;

    // The period's own close at its end bills only what came after the trial's invoice: no second base price.
    assert_eq!(advance(17).await.expect("advance").status(), 200);
    let later = invoices(paid.key.clone()).await;
    let bases = later
        .iter()
        .flat_map(|i| i["lines"].as_array().cloned().unwrap_or_default())
        .filter(|l| l["meter"].is_null())
        .count();
    assert_eq!(bases, 2, "no base price twice: the trial's rest and the next period: {later:?}");
}

/// The operator closes the period early while a tenant's trial still runs: the invoice bills the period's rest
/// after the trial (the trial's own end then finds the period invoiced) and the next period in advance, so
/// no day after the trial goes unbilled and none is billed twice.
#[tokio::test]
async fn an_early_close_during_a_trial_bills_the_rest_of_the_period_after_it() {
    let app = spawn_app_with(test_clock).await;
    let op = |path: &str, body: Value| app.client.post(app.url(path)).bearer_auth(OP).json(&body).send();
    let advance = |days: i64| op("/admin/clock/advance", json!({"seconds": days * 86_400}));
    let bases = |invoices: &Value| -> Vec<Value> {
        let all = invoices["invoices"].as_array().expect("invoices");
        all.iter()
            .flat_map(|i| i["lines"].as_array().cloned().unwrap_or_default())
            .filter(|l| l["meter"].is_null())
            .collect()
    };
    // The built-in `starter`: a 14-day trial, then 49.00 a month.
    let t = app.signup("early@trial.test", "starter").await;
    assert_eq!(advance(2).await.expect("advance").status(), 200);
    assert_eq!(op("/admin/billing/close-period", json!({})).await.expect("close").status(), 200);
    let billed: Value = app.get(&t.key, "/v1/invoices").await.json().await.expect("json");
    let lines = bases(&billed);
    assert_eq!(lines.len(), 2, "the rest after the trial and the next period: {billed}");
    let rest = lines[0]["amount_cents"].as_i64().expect("cents");
    assert!((4_900 * 14 / 28..=4_900 * 17 / 31 + 1).contains(&rest), "prorated rest of the period: {rest}");
    assert!(lines[0]["description"].as_str().expect("text").contains("after the trial"), "{billed}");
    assert_eq!(lines[1]["amount_cents"], 4_900, "the next period's base price, in advance");

    assert_eq!(advance(13).await.expect("advance").status(), 200);
    let later: Value = app.get(&t.key, "/v1/invoices").await.json().await.expect("json");
    assert_eq!(bases(&later), lines, "the trial's end bills no base price again: {later}");
}

/// A trial longer than a period: the close that falls inside the trial bills no base price for trial time,
/// only the next period's part after the trial; the trial's end then bills the period after, in advance.
#[tokio::test]
async fn a_trial_longer_than_a_period_bills_only_the_time_after_it() {
    let app = spawn_app_with(|c| {
        test_clock(c);
        let mut plan: PlanConfig = c.plans.iter().find(|p| p.name == "starter").expect("starter").clone();
        plan.name = "long-trial".into();
        plan.trial_days = 45;
        plan.price_cents = 3_000;
        c.plans.push(plan);
    })
    .await;
    let advance = |days: i64| {
        app.client.post(app.url("/admin/clock/advance")).bearer_auth(OP).json(&json!({"seconds": days * 86_400})).send()
    };
    let t = app.signup("long@trial.test", "long-trial").await;
    let base_lines = || async {
        let list: Value = app.get(&t.key, "/v1/invoices").await.json().await.expect("json");
        list["invoices"]
            .as_array()
            .expect("invoices")
            .iter()
            .flat_map(|i| i["lines"].as_array().cloned().unwrap_or_default())
            .filter(|l| l["meter"].is_null())
            .map(|l| l["amount_cents"].as_i64().expect("cents"))
            .collect::<Vec<i64>>()
    };

    // The first period closes (day 28 to 31) inside the trial: the second period is billed from day 45 on.
    assert_eq!(advance(32).await.expect("advance").status(), 200);
    let first = base_lines().await;
    assert_eq!(first.len(), 1, "{first:?}");
    // Day 45 falls 14 to 17 days into a 28- to 31-day second period: its last 11 to 17 days are owed.
    assert!((3_000 * 11 / 31..=3_000 * 17 / 28 + 1).contains(&first[0]), "prorated second period: {first:?}");

    // The trial's end bills the third period in advance, and nothing more of the second.
    assert_eq!(advance(14).await.expect("advance").status(), 200);
    let after = base_lines().await;
    assert_eq!(after.len(), 2, "{after:?}");
    assert!(after.contains(&first[0]) && after.contains(&3_000), "the third period's base price: {after:?}");
}

/// A tenant suspended by the operator, or cancelled by itself, during its trial and brought back before the
/// trial's end is in its trial again (`trial_resumed`), so the trial's end bills it like any trialing tenant;
/// coming back `active` skipped that bill. Brought back after the trial's end, it is `active`.
#[tokio::test]
async fn a_trial_interrupted_and_resumed_is_billed_at_its_end_like_any_other() {
    let app = spawn_app_with(test_clock).await;
    let op = |path: String| app.client.post(app.url(&path)).bearer_auth(OP).json(&json!({})).send();
    let advance = |days: i64| {
        let app = &app;
        async move {
            let r = app.client.post(app.url("/admin/clock/advance")).bearer_auth(OP);
            let r = r.json(&json!({"seconds": days * 86_400})).send().await.expect("advance");
            assert_eq!(r.status(), 200);
        }
    };
    let state = |key: String| {
        let app = &app;
        async move { app.get(&key, "/v1/tenant").await.json::<Value>().await.expect("json")["state"].clone() }
    };
    let bases = |key: String| {
        let app = &app;
        async move {
            let list: Value = app.get(&key, "/v1/invoices").await.json().await.expect("json");
            let all = list["invoices"].as_array().expect("invoices").clone();
            all.iter()
                .flat_map(|i| i["lines"].as_array().cloned().unwrap_or_default())
                .filter(|l| l["meter"].is_null())
                .map(|l| l["amount_cents"].as_i64().expect("cents"))
                .collect::<Vec<i64>>()
        }
    };
    // The built-in `starter`: a 14-day trial, then 49.00 a month.
    let untouched = app.signup("untouched@resume.test", "starter").await;
    let suspended = app.signup("suspended@resume.test", "starter").await;
    let cancelled = app.signup("cancelled@resume.test", "starter").await;
    let late = app.signup("late@resume.test", "starter").await;
    advance(3).await;
    for t in [&suspended, &late] {
        assert_eq!(op(format!("/admin/tenants/{}/suspend", t.id)).await.expect("suspend").status(), 200);
    }
    assert_eq!(op(format!("/admin/tenants/{}/reactivate", suspended.id)).await.expect("reactivate").status(), 200);
    assert_eq!(state(suspended.key.clone()).await, "trialing");
    assert_eq!(app.post_json(&cancelled.key, "/v1/tenant/cancel", json!({})).await.status(), 200);
    assert_eq!(state(cancelled.key.clone()).await, "cancelled");
    assert_eq!(app.post_json(&cancelled.key, "/v1/tenant/reactivate", json!({})).await.status(), 200);
    assert_eq!(state(cancelled.key.clone()).await, "trialing");

    advance(12).await;
    let expected = bases(untouched.key.clone()).await;
    assert_eq!(expected.len(), 2, "the rest after the trial and the next period: {expected:?}");
    assert_eq!(bases(suspended.key.clone()).await, expected, "billed like the untouched trial");
    assert_eq!(bases(cancelled.key.clone()).await, expected, "billed like the untouched trial");

    // Suspended past the trial's end: it comes back active, its trial over.
    assert_eq!(op(format!("/admin/tenants/{}/reactivate", late.id)).await.expect("reactivate").status(), 200);
    assert_eq!(state(late.key.clone()).await, "active");
    let detail: Value = app.get(OP, &format!("/admin/tenants/{}", suspended.id)).await.json().await.expect("json");
    let events = detail["events"].as_array().expect("events");
    assert!(events.iter().any(|e| e["event"] == "trial_resumed"), "the event says what happened: {detail}");
}

/// A trialing tenant that changes plan keeps its trial: it ends when it would have, and the new plan's price
/// is billed from then on, not from the period's start (the trial's end was computed from the current plan,
/// so a move to a plan without a trial billed the whole period, trial days included).
#[tokio::test]
async fn a_plan_change_during_a_trial_keeps_the_trials_end() {
    let app = spawn_app_with(test_clock).await;
    // The built-in `trial`: free for 14 days; `pro`: 499.00 a month, no trial.
    let t = app.signup("upgrade@trial.test", "trial").await;
    let r = app.post_json(&t.key, "/v1/plan", json!({"plan": "pro"})).await;
    assert_eq!(r.status(), 200);
    let changed: Value = r.json().await.expect("json");
    assert_eq!(changed["state"], "trialing");
    assert_eq!(changed["proration"]["charge_cents"], 0, "nothing is owed during the trial");

    let advance = |days: i64| {
        let r = app.client.post(app.url("/admin/clock/advance")).bearer_auth(OP);
        r.json(&json!({"seconds": days * 86_400})).send()
    };
    assert_eq!(advance(13).await.expect("advance").status(), 200);
    let list: Value = app.get(&t.key, "/v1/invoices").await.json().await.expect("json");
    assert_eq!(list["invoices"].as_array().map(Vec::len), Some(0), "still in the trial: {list}");
    assert_eq!(advance(2).await.expect("advance").status(), 200);
    let list: Value = app.get(&t.key, "/v1/invoices").await.json().await.expect("json");
    let lines = list["invoices"][0]["lines"].as_array().cloned().unwrap_or_default();
    let rest = lines
        .iter()
        .find(|l| l["description"].as_str().is_some_and(|d| d.contains("after the trial")))
        .unwrap_or_else(|| panic!("the rest after the trial: {list}"));
    let rest = rest["amount_cents"].as_i64().expect("cents");
    assert!((49_900 * 14 / 31..=49_900 * 17 / 28 + 1).contains(&rest), "pro from the trial's end only: {rest}");
}

/// A paid signup waiting for its first payment cannot read `/v1/invoices` (402, as API.md's state table says)
/// but sees what it owes on `GET /v1/tenant`; once paid, nothing is open.
#[tokio::test]
async fn a_tenant_waiting_for_its_first_payment_sees_the_invoice_it_owes() {
    let app = spawn_app_with(test_clock).await;
    let t = app.signup("owes@billing.test", "pro").await;
    let tenant: Value = app.get(&t.key, "/v1/tenant").await.json().await.expect("json");
    assert_eq!(tenant["state"], "pending_payment");
    let open = tenant["open_invoices"].as_array().expect("open invoices");
    assert_eq!(open.len(), 1, "{tenant}");
    assert_eq!(open[0]["kind"], "signup");
    assert_eq!(open[0]["status"], "open");
    let detail: Value = app.get(OP, &format!("/admin/tenants/{}", t.id)).await.json().await.expect("json");
    assert_eq!(open[0]["invoice_id"], detail["invoices"][0]["invoice_id"]);
    assert_eq!(open[0]["total_cents"], detail["invoices"][0]["total_cents"]);
    assert!(!open[0]["lines"].as_array().expect("lines").is_empty(), "with its lines");
    assert_problem(app.get(&t.key, "/v1/invoices").await, 402, "payment_required").await;

    let invoice = open[0]["invoice_id"].as_str().expect("id");
    let r = app.post_json(OP, &format!("/admin/invoices/{invoice}/payment"), json!({"outcome": "succeeded"})).await;
    assert_eq!(r.status(), 200);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let tenant: Value = app.get(&t.key, "/v1/tenant").await.json().await.expect("json");
        if tenant["state"] == "active" {
            assert_eq!(tenant["open_invoices"], json!([]), "{tenant}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never provisioned: {tenant}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_upcoming_invoice_shows_what_the_close_then_bills() {
    let app = spawn_app_with(|c| {
        let mut plan: PlanConfig = c.plans.iter().find(|p| p.name == "trial").expect("trial").clone();
        plan.name = "metered".into();
        plan.price_cents = 1_000;
        plan.included = Included { queries: 1, tokens: 10_000_000 };
        plan.overage = Overage { query_micros: 20_000, token_micros_per_1k: 0, ..Overage::default() };
        c.plans.push(plan);
        c.server.operator_token = OP.into();
    })
    .await;
    let t = app.signup("upcoming@billing.test", "metered").await;
    let other = app.signup("other@billing.test", "metered").await;
    app.upload_text(&t.key, "Policy", "Refunds are issued within 14 days.").await;
    for _ in 0..3 {
        app.query(&t.key, "How long do refunds take?").await;
    }
    let app = &app;
    let upcoming = |key: String| async move {
        let r = app.get(&key, "/v1/invoices/upcoming").await;
        assert_eq!(r.status(), 200);
        r.json::<Value>().await.expect("json")
    };
    let before = upcoming(t.key.clone()).await;
    let overage: Vec<&Value> =
        before["lines"].as_array().expect("lines").iter().filter(|l| l["meter"] == "queries").collect();
    assert_eq!(overage.len(), 1, "{before}");
    assert_eq!((overage[0]["quantity"].as_i64(), overage[0]["amount_cents"].as_i64()), (Some(2), Some(4)));
    let others = upcoming(other.key.clone()).await;
    assert!(others["lines"].as_array().expect("lines").iter().all(|l| l["meter"] != "queries"), "only its own usage");
    assert_eq!(app.get(&t.key, "/v1/invoices").await.json::<Value>().await.expect("json")["invoices"], json!([]));

    // The close made now bills exactly what the preview showed.
    let made: Value = app
        .client
        .post(app.url("/admin/billing/close-period"))
        .bearer_auth(OP)
        .send()
        .await
        .expect("close")
        .json()
        .await
        .expect("json");
    let invoice = made["invoices"].as_array().expect("invoices").iter().find(|i| i["tenant_id"] == t.id.as_str());
    let invoice = invoice.expect("the tenant's invoice");
    assert_eq!(invoice["lines"], before["lines"]);
    assert_eq!(invoice["subtotal_cents"], before["subtotal_cents"]);

    // After an early close, the preview is what the true-up would add: nothing, then the new usage.
    let after = upcoming(t.key.clone()).await;
    assert_eq!((after["lines"].clone(), after["subtotal_cents"].clone()), (json!([]), json!(0)), "{after}");
    app.query(&t.key, "And exchanges?").await;
    let more = upcoming(t.key.clone()).await;
    assert_eq!(more["lines"][0]["quantity"], 1, "{more}");
    assert_eq!(more["subtotal_cents"], 2);
}
