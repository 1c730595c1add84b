//! A month of a paying tenant's life with the test clock, over HTTP: paid signup, confirmation and
//! provisioning, usage, the scheduled period close, a failed payment, dunning retries, suspension after the
//! grace period, payment and reactivation. Also the job queue's own guarantees: a job that always fails ends
//! parked, and a crash between payment and provisioning recovers to `active` on restart.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use tenantry_domain::Config;
use tenantry_service::Services;
use tenantry_store::NewJob;

use crate::helpers::{add_metered_plan, assert_problem, spawn_app_with, TestApp};

const OP: &str = "op-month";
const DAY: i64 = 86_400;

fn test_clock(c: &mut Config) {
    c.server.clock = "test".into();
    c.server.operator_token = OP.into();
}

impl TestApp {
    async fn op_get(&self, path: &str) -> Value {
        let r = self.client.get(self.url(path)).bearer_auth(OP).send().await.expect("request");
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        r.json().await.expect("json")
    }

    async fn op_post(&self, path: &str, body: Value) -> reqwest::Response {
        self.client.post(self.url(path)).bearer_auth(OP).json(&body).send().await.expect("request")
    }

    async fn advance_days(&self, days: i64) -> Value {
        let r = self.op_post("/admin/clock/advance", json!({"seconds": days * DAY})).await;
        assert_eq!(r.status(), StatusCode::OK);
        r.json().await.expect("json")
    }

    async fn state(&self, key: &str) -> String {
        let t: Value = self.get(key, "/v1/tenant").await.json().await.expect("json");
        t["state"].as_str().expect("state").to_owned()
    }

    async fn pay(&self, invoice_id: &str, outcome: &str) -> Value {
        let r = self.op_post(&format!("/admin/invoices/{invoice_id}/payment"), json!({"outcome": outcome})).await;
        assert_eq!(r.status(), StatusCode::OK);
        r.json().await.expect("json")
    }

    async fn query_status(&self, key: &str) -> u16 {
        let r = self.post_json(key, "/v1/query", json!({"question": "How long do refunds take?"})).await;
        r.status().as_u16()
    }
}

/// The lifecycle events of `GET /admin/tenants/{id}` that moved the tenant (not milestones), in order.
fn transitions(detail: &Value) -> Vec<&str> {
    let events = detail["events"].as_array().expect("events");
    events.iter().filter(|e| !e["from"].is_null()).filter_map(|e| e["event"].as_str()).collect()
}

async fn wait_for_state(app: &TestApp, key: &str, want: &str, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        if app.state(key).await == want {
            return started.elapsed();
        }
        assert!(started.elapsed() < within, "tenant not {want} within {within:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_paying_tenants_month_signup_close_dunning_suspension_and_reactivation() {
    a_paying_tenants_month_signup_close_dunning_suspension_and_reactivation_on(None).await;
}

#[tokio::test]
async fn a_paying_tenants_month_signup_close_dunning_suspension_and_reactivation_on_postgres() {
    crate::helpers::on_postgres(a_paying_tenants_month_signup_close_dunning_suspension_and_reactivation_on).await;
}

async fn a_paying_tenants_month_signup_close_dunning_suspension_and_reactivation_on(database_url: Option<String>) {
    let app = spawn_app_with(move |c| {
        test_clock(c);
        if let Some(url) = database_url {
            c.database.url = url;
        }
    })
    .await;

    // A paid plan waits for its first invoice to be paid; nothing but GET /v1/tenant is served meanwhile.
    let r = app
        .client
        .post(app.url("/v1/signup"))
        .json(&json!({"email": "cfo@month.test", "organization": "Month Ltd", "plan": "pro"}))
        .send()
        .await
        .expect("signup");
    assert_eq!(r.status(), StatusCode::CREATED);
    let signup: Value = r.json().await.expect("json");
    assert_eq!(signup["state"], "pending_payment");
    assert_eq!(signup["checkout_url"], Value::Null, "the manual provider has no checkout");
    let key = signup["api_key"].as_str().expect("key").to_owned();
    let id = signup["tenant_id"].as_str().expect("id").to_owned();
    assert_eq!(app.state(&key).await, "pending_payment");
    assert_problem(app.post_json(&key, "/v1/query", json!({"question": "hi"})).await, 402, "payment_required").await;

    let detail = app.op_get(&format!("/admin/tenants/{id}")).await;
    let invoices = detail["invoices"].as_array().expect("invoices");
    assert_eq!(invoices.len(), 1);
    let first = &invoices[0];
    assert_eq!((first["kind"].as_str(), first["status"].as_str()), (Some("signup"), Some("open")));
    let pro_price = first["total_cents"].as_i64().expect("total");
    assert!(pro_price > 0);

    // Paying it provisions the tenant in the background, well within a second.
    let paid = app.pay(first["invoice_id"].as_str().expect("id"), "succeeded").await;
    assert_eq!(paid["status"], "paid");
    wait_for_state(&app, &key, "active", Duration::from_secs(1)).await;
    app.upload_text(&key, "Refunds", "Refunds are issued within 14 days of the request.").await;
    for _ in 0..3 {
        assert_eq!(app.query_status(&key).await, 200);
    }

    // The period ends: the scheduled close opens an invoice with the next period's base price in advance.
    let moved = app.advance_days(31).await;
    assert!(moved["jobs_run"].as_u64().expect("n") >= 1, "{moved}");
    let mine: Value = app.get(&key, "/v1/invoices").await.json().await.expect("json");
    let closing = mine["invoices"][0].clone();
    assert_eq!((closing["kind"].as_str(), closing["status"].as_str()), (Some("closing"), Some("open")), "{mine}");
    assert!(closing["lines"]
        .as_array()
        .expect("lines")
        .iter()
        .any(|l| l["meter"].is_null() && l["amount_cents"] == pro_price));
    let closing_id = closing["invoice_id"].as_str().expect("id").to_owned();

    // The payment fails: past_due, still served.
    assert_eq!(app.pay(&closing_id, "failed").await["status"], "open");
    assert_eq!(app.state(&key).await, "past_due");
    assert_eq!(app.query_status(&key).await, 200);

    // Dunning: the first retry comes a day later (billing.retry_days = [1, 3, 5]).
    app.advance_days(1).await;
    let retries = |audit: Vec<Value>| audit.iter().filter(|e| e["action"] == "invoice.payment_retry").count();
    assert_eq!(retries(app.audit(OP, &id).await), 1);
    assert_eq!(app.state(&key).await, "past_due");

    // Seven days unpaid (billing.grace_days): suspended, 402 on the next request; invoices stay readable.
    app.advance_days(6).await;
    assert_eq!(app.state(&key).await, "suspended");
    assert_problem(app.post_json(&key, "/v1/query", json!({"question": "hi"})).await, 402, "payment_required").await;
    assert_eq!(app.get(&key, "/v1/invoices").await.status(), StatusCode::OK);
    assert_eq!(retries(app.audit(OP, &id).await), 3);

    // A later successful payment reactivates at once.
    assert_eq!(app.pay(&closing_id, "succeeded").await["status"], "paid");
    assert_eq!(app.state(&key).await, "active");
    assert_eq!(app.query_status(&key).await, 200);

    // Every step is on record as a lifecycle event, in order.
    let detail = app.op_get(&format!("/admin/tenants/{id}")).await;
    assert_eq!(
        transitions(&detail),
        ["payment_confirmed", "provisioned_active", "payment_failed", "grace_expired", "payment_succeeded"]
    );
    let milestones: Vec<&str> = detail["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["from"].is_null())
        .filter_map(|e| e["event"].as_str())
        .collect();
    assert!(milestones.starts_with(&["signed_up", "provisioned"]), "{milestones:?}");

    // The next period's close is scheduled; nothing is left parked.
    let queued = app.op_get(&format!("/admin/jobs?state=queued&tenant_id={id}")).await;
    assert!(queued["jobs"].as_array().expect("jobs").iter().any(|j| j["kind"] == "close_period"), "{queued}");
    assert_eq!(app.op_get("/admin/jobs?state=parked").await["jobs"], json!([]));
}

#[tokio::test]
async fn written_off_invoices_stay_owed_voided_ones_do_not_and_operator_suspensions_outlast_payment() {
    written_off_invoices_stay_owed_voided_ones_do_not_and_operator_suspensions_outlast_payment_on(None).await;
}

#[tokio::test]
async fn written_off_invoices_stay_owed_voided_ones_do_not_and_operator_suspensions_outlast_payment_on_postgres() {
    crate::helpers::on_postgres(
        written_off_invoices_stay_owed_voided_ones_do_not_and_operator_suspensions_outlast_payment_on,
    )
    .await;
}

async fn written_off_invoices_stay_owed_voided_ones_do_not_and_operator_suspensions_outlast_payment_on(
    database_url: Option<String>,
) {
    let app = spawn_app_with(move |c| {
        test_clock(c);
        if let Some(url) = database_url {
            c.database.url = url;
        }
    })
    .await;
    let t = app.signup("ar@month.test", "pro").await;
    let signup_invoice = app.op_get(&format!("/admin/tenants/{}", t.id)).await["invoices"][0]["invoice_id"]
        .as_str()
        .expect("id")
        .to_owned();
    app.pay(&signup_invoice, "succeeded").await;
    wait_for_state(&app, &t.key, "active", Duration::from_secs(1)).await;
    app.advance_days(31).await;
    let closing = |list: Value| list["invoices"][0]["invoice_id"].as_str().expect("id").to_owned();
    let owed = closing(app.get(&t.key, "/v1/invoices").await.json().await.expect("json"));
    app.pay(&owed, "failed").await;
    assert_eq!(app.state(&t.key).await, "past_due");

    // Written off: no longer expected, still owed. The tenant stays in dunning and is suspended on time.
    let r = app.op_post(&format!("/admin/invoices/{owed}/mark-uncollectible"), json!({})).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.expect("json")["status"], "uncollectible");
    assert_eq!(app.state(&t.key).await, "past_due");
    let again = app.op_post(&format!("/admin/invoices/{owed}/mark-uncollectible"), json!({})).await;
    assert_problem(again, 409, "invalid_transition").await;
    let failed_again = app.op_post(&format!("/admin/invoices/{owed}/payment"), json!({"outcome": "failed"})).await;
    assert_problem(failed_again, 409, "invalid_transition").await;
    app.advance_days(7).await;
    assert_eq!(app.state(&t.key).await, "suspended");

    // Voided: nothing is owed, so dunning's suspension is lifted at once.
    let r = app.op_post(&format!("/admin/invoices/{owed}/void"), json!({})).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.expect("json")["status"], "void");
    assert_eq!(app.state(&t.key).await, "active");
    assert_eq!(app.query_status(&t.key).await, 200);
    for path in [format!("/admin/invoices/{owed}/void"), format!("/admin/invoices/{owed}/mark-uncollectible")] {
        assert_problem(app.op_post(&path, json!({})).await, 409, "invalid_transition").await;
    }
    let paid = app.op_post(&format!("/admin/invoices/{signup_invoice}/void"), json!({})).await;
    assert_problem(paid, 409, "invalid_transition").await;
    assert_problem(app.op_post("/admin/invoices/inv_nothing/void", json!({})).await, 404, "not_found").await;
    let r = app.client.post(app.url(&format!("/admin/invoices/{owed}/void"))).bearer_auth(&t.key).send().await;
    assert_eq!(r.expect("request").status(), StatusCode::UNAUTHORIZED, "a tenant key is not the operator's");

    // A suspension the operator made is not about money: paying does not lift it.
    app.advance_days(31).await;
    let next = closing(app.get(&t.key, "/v1/invoices").await.json().await.expect("json"));
    assert_ne!(next, owed);
    let r = app.op_post(&format!("/admin/tenants/{}/suspend", t.id), json!({})).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(app.pay(&next, "succeeded").await["status"], "paid");
    assert_eq!(app.state(&t.key).await, "suspended");

    let detail = app.op_get(&format!("/admin/tenants/{}", t.id)).await;
    assert_eq!(
        transitions(&detail),
        [
            "payment_confirmed",
            "provisioned_active",
            "payment_failed",
            "grace_expired",
            "unpaid_voided",
            "operator_suspended"
        ]
    );
    let audit = app.audit(OP, &t.id).await;
    for action in ["invoice.marked_uncollectible", "invoice.voided"] {
        let entry = audit.iter().find(|e| e["action"] == action).unwrap_or_else(|| panic!("{action} audited"));
        assert_eq!((entry["target"].as_str(), entry["actor"].as_str()), (Some(owed.as_str()), Some("operator")));
    }
}

#[tokio::test]
async fn an_early_close_and_the_scheduled_close_bill_every_query_once() {
    let app = spawn_app_with(|c| {
        test_clock(c);
        add_metered_plan(c);
    })
    .await;
    let t = app.signup("early@month.test", "metered").await;
    app.upload_text(&t.key, "Refunds", "Refunds are issued within 14 days of the request.").await;
    for _ in 0..2 {
        assert_eq!(app.query_status(&t.key).await, 200);
    }
    let closed: Value = app.op_post("/admin/billing/close-period", json!({})).await.json().await.expect("json");
    assert_eq!(closed["invoices"].as_array().map(Vec::len), Some(1));
    let again: Value = app.op_post("/admin/billing/close-period", json!({})).await.json().await.expect("json");
    assert_eq!(again["invoices"], json!([]), "closing twice makes nothing new");

    // Usage after the early close is billed when the period really ends, and only that usage.
    for _ in 0..3 {
        assert_eq!(app.query_status(&t.key).await, 200);
    }
    assert_eq!(app.usage(&t.key).await["totals"]["queries"], 5, "the ledger's count for the period");
    app.advance_days(31).await;
    let mine: Value = app.get(&t.key, "/v1/invoices").await.json().await.expect("json");
    let invoices = mine["invoices"].as_array().expect("list");
    let queries_on = |kind: &str| -> (u64, i64) {
        let lines: Vec<Value> = invoices
            .iter()
            .filter(|i| i["kind"] == kind)
            .flat_map(|i| i["lines"].as_array().cloned().unwrap_or_default())
            .filter(|l| l["meter"] == "queries")
            .collect();
        (
            lines.iter().filter_map(|l| l["quantity"].as_u64()).sum(),
            lines.iter().filter_map(|l| l["amount_cents"].as_i64()).sum(),
        )
    };
    // 5 queries, 1 included: the early close billed 1 (2 cents), the true-up the 3 after it (6 cents).
    assert_eq!(queries_on("closing"), (1, 2), "{mine}");
    assert_eq!(queries_on("true_up"), (3, 6), "{mine}");
}

#[tokio::test]
async fn a_job_that_always_fails_ends_parked_and_the_operator_can_requeue_it() {
    let app = spawn_app_with(test_clock).await;
    let now = app.services.clock().now();
    let broken = NewJob {
        kind: "no_such_job".into(),
        tenant_id: None,
        payload: "{\"kind\": \"no_such_job\"}".into(),
        idempotency_key: Some("broken-1".into()),
        max_attempts: 3,
        run_at: now,
    };
    app.services.store().enqueue(&broken, now).await.expect("enqueue");
    for _ in 0..5 {
        app.advance_days(1).await;
    }
    let parked = app.op_get("/admin/jobs?state=parked").await;
    let jobs = parked["jobs"].as_array().expect("jobs");
    assert_eq!(jobs.len(), 1, "{parked}");
    assert_eq!(jobs[0]["attempts"], 3, "it stopped at its last attempt instead of looping");
    assert!(jobs[0]["last_error"].as_str().is_some_and(|e| e.contains("cannot be read")));
    let audit = app.op_get("/admin/audit?limit=1000").await;
    assert!(audit["entries"].as_array().expect("entries").iter().any(|e| e["action"] == "job.parked"));

    let id = jobs[0]["job_id"].as_str().expect("id");
    let r = app.op_post(&format!("/admin/jobs/{id}/requeue"), json!({})).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_problem(app.op_post(&format!("/admin/jobs/{id}/requeue"), json!({})).await, 404, "not_found").await;
    assert_problem(app.op_post("/admin/jobs/job_nonsense/requeue", json!({})).await, 404, "not_found").await;
}

#[tokio::test]
async fn the_system_clock_cannot_be_moved() {
    let app = spawn_app_with(|c| c.server.operator_token = OP.into()).await;
    assert_problem(app.op_post("/admin/clock/advance", json!({"seconds": 60})).await, 403, "forbidden").await;
    let test = spawn_app_with(test_clock).await;
    assert_problem(test.op_post("/admin/clock/advance", json!({"seconds": 0})).await, 422, "validation_failed").await;
    assert_problem(test.op_post("/admin/clock/advance", json!({"secs": 5})).await, 422, "validation_failed").await;
}

#[tokio::test]
async fn a_crash_between_payment_and_provisioning_recovers_to_active_on_restart() {
    let dir = tempfile::tempdir().expect("dir");
    let mut config = Config::builtin();
    config.server.data_dir = dir.path().to_owned();
    config.server.operator_token = OP.into();

    // The first run confirms the payment (committing the provisioning job with the transition) and dies
    // before any worker runs the job: no background loop is started.
    let services = Services::start(config).await.expect("start");
    let signup = services
        .signup(tenantry_service::tenants::SignupRequest {
            email: "crash@month.test".into(),
            organization: "Crash Co".into(),
            plan: "pro".into(),
        })
        .await
        .expect("signup");
    let invoice = services.store().invoices(&signup.tenant_id).await.expect("invoices").remove(0);
    services.report_payment(&invoice.id, "succeeded").await.expect("paid");
    let row = services.store().tenant(&signup.tenant_id).await.expect("read").expect("tenant");
    assert_eq!(row.state.as_str(), "provisioning");
    services.shutdown().await;
    drop(services);

    // The restart finds the job and finishes provisioning.
    let data = dir.path().to_owned();
    let app = spawn_app_with(move |c| {
        c.server.data_dir = data;
        c.server.operator_token = OP.into();
    })
    .await;
    wait_for_state(&app, &signup.api_key, "active", Duration::from_secs(3)).await;
}
