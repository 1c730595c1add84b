//! The web pages and the console's overview: `/portal` and `/console` are served with a strict CSP and no
//! inline script, and `GET /admin/overview` counts what the API did (tenants by state, the activation funnel,
//! revenue, dunning, job health). The pages themselves are driven in a real browser by
//! `tests/browser/dashboards.py`.

use reqwest::StatusCode;
use serde_json::{json, Value};
use tenantry_domain::config::{Included, Overage, PlanConfig};

use crate::helpers::{assert_problem, spawn_app_with, TestApp};

const OP: &str = "op-dashboards";

async fn op_get(app: &TestApp, path: &str) -> Value {
    let r = app.client.get(app.url(path)).bearer_auth(OP).send().await.expect("request");
    assert_eq!(r.status(), StatusCode::OK, "{path}");
    r.json().await.expect("json")
}

async fn op_post(app: &TestApp, path: &str, body: Value) -> Value {
    let r = app.client.post(app.url(path)).bearer_auth(OP).json(&body).send().await.expect("request");
    assert_eq!(r.status(), StatusCode::OK, "{path}");
    r.json().await.expect("json")
}

#[tokio::test]
async fn the_pages_are_static_html_with_a_strict_content_security_policy() {
    let app = spawn_app_with(|_| {}).await;
    for (path, script) in [
        ("/portal", "/assets/portal.js"),
        ("/portal/billing", "/assets/portal.js"),
        ("/portal/data", "/assets/portal.js"),
        ("/console", "/assets/console.js"),
    ] {
        let r = app.client.get(app.url(path)).send().await.expect("page");
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        let header = |name: &str| r.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        assert_eq!(header("content-type"), "text/html; charset=utf-8");
        assert_eq!(header("x-frame-options"), "DENY");
        let csp = header("content-security-policy");
        for directive in ["default-src 'none'", "script-src 'self'", "style-src 'self'", "frame-ancestors 'none'"] {
            assert!(csp.contains(directive), "{path}: {csp}");
        }
        assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"), "{csp}");
        let html = r.text().await.expect("html");
        assert!(html.contains(&format!("<script src=\"{script}\" defer></script>")), "{path}");
        // The CSP would block inline script and style anyway; keep the pages free of them.
        assert_eq!(html.matches("<script").count(), html.matches("<script src=").count(), "{path}: inline script");
        assert!(!html.contains("style=") && !html.contains("<style"), "{path}: inline style");
    }
    for (file, content_type) in [
        ("app.css", "text/css; charset=utf-8"),
        ("common.js", "text/javascript; charset=utf-8"),
        ("portal.js", "text/javascript; charset=utf-8"),
        ("console.js", "text/javascript; charset=utf-8"),
    ] {
        let r = app.client.get(app.url(&format!("/assets/{file}"))).send().await.expect("asset");
        assert_eq!(r.status(), StatusCode::OK, "{file}");
        assert_eq!(r.headers()["content-type"], content_type);
        let body = r.text().await.expect("text");
        // Tenant data is untrusted: the scripts build the DOM from text nodes only.
        for unsafe_sink in ["innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("] {
            assert!(!body.contains(unsafe_sink), "{file} uses {unsafe_sink}");
        }
    }
    assert_problem(app.client.get(app.url("/assets/secret.js")).send().await.expect("asset"), 404, "not_found").await;
    assert_problem(app.client.get(app.url("/portal/secrets")).send().await.expect("page"), 404, "not_found").await;

    let spec: Value = app.client.get(app.url("/openapi.json")).send().await.expect("spec").json().await.expect("json");
    for path in ["/admin/overview", "/", "/portal", "/portal/{section}", "/console", "/assets/{file}"] {
        assert!(spec["paths"][path].is_object(), "{path} in /openapi.json");
    }
}

/// A new operator who opens the address `serve` printed finds the way to the portal, the console and the API.
#[tokio::test]
async fn the_front_page_links_to_the_portal_the_console_and_the_api() {
    let app = spawn_app_with(|_| {}).await;
    let r = app.client.get(app.url("/")).send().await.expect("front page");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "text/html; charset=utf-8");
    assert!(r.headers()["content-security-policy"].to_str().expect("csp").contains("default-src 'none'"));
    let html = r.text().await.expect("html");
    for link in ["/portal", "/console", "/openapi.json", "/healthz"] {
        assert!(html.contains(&format!("href=\"{link}\"")), "links to {link}");
        let target = app.client.get(app.url(link)).send().await.expect("link");
        assert_eq!(target.status(), StatusCode::OK, "{link} answers");
    }
    assert!(!html.contains("<script") && !html.contains("style="), "static, no script or inline style");
}

#[tokio::test]
async fn the_overview_counts_states_funnel_revenue_dunning_and_jobs() {
    the_overview_counts_states_funnel_revenue_dunning_and_jobs_on(None).await;
}

#[tokio::test]
async fn the_overview_counts_states_funnel_revenue_dunning_and_jobs_on_postgres() {
    crate::helpers::on_postgres(the_overview_counts_states_funnel_revenue_dunning_and_jobs_on).await;
}

async fn the_overview_counts_states_funnel_revenue_dunning_and_jobs_on(database_url: Option<String>) {
    let app = spawn_app_with(move |c| {
        if let Some(url) = database_url {
            c.database.url = url;
        }
        // A plan with a trial and a price, so trialing tenants are invoiced when a period closes.
        let mut plan: PlanConfig = c.plans.iter().find(|p| p.name == "trial").expect("trial").clone();
        plan.name = "metered".into();
        plan.price_cents = 1_000;
        plan.included = Included { queries: 100, tokens: 100_000 };
        plan.overage = Overage::default();
        c.plans.push(plan);
        c.server.operator_token = OP.into();
        c.server.clock = "test".into();
    })
    .await;
    let unauthenticated = app.client.get(app.url("/admin/overview")).send().await.expect("request");
    assert_problem(unauthenticated, 401, "unauthenticated").await;

    // Four tenants: one activated and paying, one that pays late, one that did nothing, one that never paid.
    let payer = app.signup("payer@dash.test", "metered").await;
    let late = app.signup("late@dash.test", "metered").await;
    let idle = app.signup("idle@dash.test", "trial").await;
    let unpaid = app.signup("unpaid@dash.test", "pro").await;
    app.upload_text(&payer.key, "Refunds", "Refunds are issued within 14 days.").await;
    app.query(&payer.key, "How long do refunds take?").await;
    app.upload_text(&late.key, "Travel", "Economy class for flights under six hours.").await;
    let tenant_key = app.client.get(app.url("/admin/overview")).bearer_auth(&payer.key).send().await.expect("r");
    assert_problem(tenant_key, 401, "unauthenticated").await;

    let closed = op_post(&app, "/admin/billing/close-period", json!({})).await;
    let invoice_of = |tenant: &str| {
        closed["invoices"].as_array().expect("invoices").iter().find(|i| i["tenant_id"] == tenant).cloned()
    };
    let paid = invoice_of(&payer.id).expect("the payer's invoice");
    let owed = invoice_of(&late.id).expect("the late payer's invoice");
    assert!(invoice_of(&idle.id).is_none(), "a free plan owes nothing");
    for (invoice, outcome) in [(&paid, "succeeded"), (&owed, "failed")] {
        let path = format!("/admin/invoices/{}/payment", invoice["invoice_id"].as_str().expect("id"));
        op_post(&app, &path, json!({"outcome": outcome})).await;
    }

    let o = op_get(&app, "/admin/overview").await;
    assert_eq!(o["tenants_total"], 4, "{o}");
    assert_eq!(
        o["tenants_by_state"],
        json!({"pending_payment": 1, "provisioning": 0, "trialing": 1, "active": 1, "past_due": 1,
               "suspended": 0, "cancelled": 0, "erased": 0}),
        "{o}"
    );
    assert_eq!(
        o["funnel"],
        json!([
            {"milestone": "signed_up", "tenants": 4},
            {"milestone": "provisioned", "tenants": 3},
            {"milestone": "first_document", "tenants": 2},
            {"milestone": "first_query", "tenants": 1},
            {"milestone": "activated", "tenants": 1},
        ]),
        "{o}"
    );

    // Revenue agrees with the invoices themselves: the paid one, and the two open ones (the late payer's
    // and the unpaid signup's).
    let signup_invoice = op_get(&app, &format!("/admin/tenants/{}", unpaid.id)).await["invoices"][0].clone();
    assert_eq!(signup_invoice["status"], "open");
    let cents = |i: &Value| i["total_cents"].as_i64().expect("cents");
    assert!(cents(&paid) >= 1_000 && cents(&owed) >= 1_000 && cents(&signup_invoice) > 0);
    assert_eq!(
        o["revenue"],
        json!({"currency": "usd", "paid_cents": cents(&paid), "paid_invoices": 1,
               "open_cents": cents(&owed) + cents(&signup_invoice), "open_invoices": 2}),
        "{o}"
    );

    // Dunning: the tenant whose payment failed, with what it owes; not the one that never paid at signup.
    let dunning = o["dunning"].as_array().expect("dunning");
    assert_eq!(dunning.len(), 1, "{o}");
    assert_eq!(dunning[0]["tenant_id"], late.id.as_str());
    assert_eq!(dunning[0]["state"], "past_due");
    assert_eq!(
        (dunning[0]["open_invoices"].as_i64(), dunning[0]["open_cents"].as_i64()),
        (Some(1), Some(cents(&owed)))
    );
    // With when the payment is next retried and when the service is suspended, as the queued jobs say.
    let jobs = op_get(&app, &format!("/admin/jobs?state=queued&tenant_id={}", late.id)).await;
    let run_at = |kind: &str| {
        jobs["jobs"]
            .as_array()
            .expect("jobs")
            .iter()
            .filter(|j| j["kind"] == kind)
            .filter_map(|j| j["run_at"].as_str())
            .min()
            .map(str::to_owned)
    };
    assert!(run_at("payment_retry").is_some() && run_at("grace_expiry").is_some(), "{jobs}");
    assert_eq!(dunning[0]["next_retry_at"].as_str().map(str::to_owned), run_at("payment_retry"));
    assert_eq!(dunning[0]["suspends_at"].as_str().map(str::to_owned), run_at("grace_expiry"));

    // Job health: the queue holds the scheduled work (period closes, nudges, dunning retries), nothing parked;
    // the payment-failed notice went through the outbox.
    let h = &o["integrations"];
    assert_eq!(h["jobs_parked"], 0, "{o}");
    assert!(h["jobs_pending"].as_i64().is_some_and(|n| n >= 4), "{o}");
    assert_eq!(h["payment_provider"], "manual");
    assert_eq!(h["stripe_events_received"], 0);
    assert_eq!((h["analytics_store"].as_str(), h["analytics_pending"].as_i64()), (Some("none"), Some(0)));
    let by_state = h["jobs_by_state"].as_object().expect("jobs_by_state");
    assert_eq!(by_state.keys().collect::<Vec<_>>(), ["done", "parked", "queued", "running"]);
    assert_eq!(h["jobs_pending"], by_state["queued"].as_i64().expect("n") + by_state["running"].as_i64().expect("n"));
    let outbox =
        h["notifications_delivered"].as_i64().expect("n") + h["notifications_undelivered"].as_i64().expect("n");
    assert_eq!(outbox, 1, "one payment_failed notice: {o}");

    // A day later the idle tenant has been nudged: one more notification, delivered.
    op_post(&app, "/admin/clock/advance", json!({"seconds": 25 * 3_600})).await;
    let later = op_get(&app, "/admin/overview").await;
    let notices = &later["integrations"];
    assert!(notices["notifications_delivered"].as_i64().is_some_and(|n| n >= 2), "{later}");
    let idle_detail = op_get(&app, &format!("/admin/tenants/{}", idle.id)).await;
    assert_eq!(idle_detail["notifications"][0]["template"], "nudge_no_document", "{idle_detail}");

    // The tenant's detail shows its current period's usage, as its own GET /v1/usage does.
    let payer_detail = op_get(&app, &format!("/admin/tenants/{}", payer.id)).await;
    let own: serde_json::Value = app.get(&payer.key, "/v1/usage").await.json().await.expect("usage");
    assert_eq!(payer_detail["usage"]["totals"]["queries"], 1, "{payer_detail}");
    assert_eq!(payer_detail["usage"], own);
}

#[tokio::test]
async fn the_operator_extends_a_trial_and_billing_waits_for_its_new_end() {
    let app = spawn_app_with(|c| {
        c.server.operator_token = OP.into();
        c.server.clock = "test".into();
    })
    .await;
    let t = app.signup("trial@dash.test", "starter").await;
    let unpaid = app.signup("unpaid@dash.test", "pro").await;
    app.upload_text(&t.key, "Handbook", "Refunds are issued within 14 days.").await;
    let detail = op_get(&app, &format!("/admin/tenants/{}", t.id)).await;
    assert_eq!(
        (detail["state"].as_str(), detail["documents"].as_i64(), detail["active_keys"].as_i64()),
        (Some("trialing"), Some(1), Some(1)),
        "{detail}"
    );
    let ends = detail["trial_ends_at"].as_str().expect("a trial end").to_owned();

    let extend = |id: String, body: Value| {
        app.client.post(app.url(&format!("/admin/tenants/{id}/trial"))).bearer_auth(OP).json(&body).send()
    };
    assert_problem(extend(t.id.clone(), json!({"days": 0})).await.expect("post"), 422, "validation_failed").await;
    let r = extend(unpaid.id.clone(), json!({"days": 7})).await.expect("post");
    let refused = assert_problem(r, 409, "invalid_transition").await;
    assert!(refused["detail"].as_str().expect("detail").contains("pending_payment"), "{refused}");
    let r = extend(t.id.clone(), json!({"days": 7})).await.expect("post");
    assert_eq!(r.status(), StatusCode::OK);
    let extended: Value = r.json().await.expect("json");
    let to = |s: &str| time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).expect("time");
    assert_eq!(to(extended["trial_ends_at"].as_str().expect("end")) - to(&ends), time::Duration::days(7));
    let audit = app.audit(OP, &t.id).await;
    let entry = audit.iter().find(|e| e["action"] == "trial.extended").expect("audited");
    assert_eq!(entry["actor"], "operator");

    // The old end passes without a bill; the new one bills.
    let advance = |days: i64| op_post(&app, "/admin/clock/advance", json!({"seconds": days * 86_400 + 3_600}));
    advance(14).await;
    let detail = op_get(&app, &format!("/admin/tenants/{}", t.id)).await;
    assert_eq!((detail["state"].as_str(), detail["invoices"].as_array().map(Vec::len)), (Some("trialing"), Some(0)));
    advance(7).await;
    let detail = op_get(&app, &format!("/admin/tenants/{}", t.id)).await;
    assert!(!detail["invoices"].as_array().expect("invoices").is_empty(), "billed at the new end: {detail}");
    // Its trial has ended (billed, waiting for the payment): there is nothing left to extend.
    assert_eq!(detail["state"], "trialing");
    let r = extend(t.id.clone(), json!({"days": 7})).await.expect("post");
    assert_problem(r, 409, "invalid_transition").await;
}

/// Plans `small` (10.00 a month, one query included, 2 cents a query beyond) and `large` (20.00), paid up
/// front without a trial.
fn revenue_plans(c: &mut tenantry_domain::Config) {
    for (name, price) in [("small", 1_000), ("large", 2_000)] {
        let mut plan: PlanConfig = c.plans.iter().find(|p| p.name == "pro").expect("pro").clone();
        plan.name = name.into();
        plan.price_cents = price;
        plan.trial_days = 0;
        plan.included = Included { queries: 1, tokens: 10_000_000 };
        plan.overage = Overage { query_micros: 20_000, token_micros_per_1k: 0, ..Overage::default() };
        c.plans.push(plan);
    }
    c.server.operator_token = OP.into();
    c.server.clock = "test".into();
}

/// Signs up on a paid plan and pays the signup invoice, as the operator records a bank transfer.
async fn paying_tenant(app: &TestApp, email: &str, plan: &str) -> crate::helpers::Tenant {
    let t = app.signup(email, plan).await;
    let detail = op_get(app, &format!("/admin/tenants/{}", t.id)).await;
    let invoice = detail["invoices"][0]["invoice_id"].as_str().expect("signup invoice").to_owned();
    op_post(app, &format!("/admin/invoices/{invoice}/payment"), json!({"outcome": "succeeded"})).await;
    t
}

#[tokio::test]
async fn revenue_tracks_mrr_and_its_movement_month_by_month() {
    let app = spawn_app_with(revenue_plans).await;
    let stays = paying_tenant(&app, "stays@revenue.test", "small").await;
    let grows = paying_tenant(&app, "grows@revenue.test", "small").await;
    let leaves = paying_tenant(&app, "leaves@revenue.test", "small").await;
    app.upload_text(&stays.key, "Policy", "Refunds are issued within 14 days.").await;
    for _ in 0..3 {
        app.query(&stays.key, "How long do refunds take?").await;
    }
    let r = app.post_json(&grows.key, "/v1/plan", json!({"plan": "large"})).await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = app.post_json(&leaves.key, "/v1/tenant/cancel", json!({})).await;
    assert_eq!(r.status(), StatusCode::OK);

    let first = op_get(&app, "/admin/revenue?months=1").await;
    let month = &first["months"][0];
    assert_eq!((month["mrr_cents"].as_i64(), month["paying_tenants"].as_i64()), (Some(3_000), Some(3)), "{first}");
    assert_eq!(month["billed_cents"].as_i64().map(|c| c >= 3_000), Some(true), "{first}");

    // A month on, every period has closed: the one who stayed and the one who grew are billed for the next
    // month at their plans' prices, the one who left is not.
    op_post(&app, "/admin/clock/advance", json!({"seconds": 32 * 86_400})).await;
    let stays_invoice = op_get(&app, &format!("/admin/tenants/{}", stays.id)).await["invoices"][0].clone();
    let path = format!("/admin/invoices/{}/payment", stays_invoice["invoice_id"].as_str().expect("id"));
    op_post(&app, &path, json!({"outcome": "failed"})).await;

    let history = op_get(&app, "/admin/revenue?months=2").await;
    let months = history["months"].as_array().expect("months");
    assert_eq!(months.len(), 2);
    assert_eq!(months[0], month.clone(), "the earlier month is unchanged: {history}");
    let m = &months[1];
    assert_eq!(m["mrr_cents"], 3_000, "{history}");
    assert_eq!(m["paying_tenants"], 2);
    assert_eq!((m["new_cents"].as_i64(), m["expansion_cents"].as_i64()), (Some(0), Some(1_000)), "{history}");
    assert_eq!((m["contraction_cents"].as_i64(), m["churn_cents"].as_i64()), (Some(0), Some(1_000)), "{history}");
    assert_eq!(m["overage_cents"], 4, "two queries beyond the one included, at 2 cents: {history}");
    assert_eq!(m["failed_payments"], 1);
    let mrr_before = months[0]["mrr_cents"].as_i64().expect("mrr");
    let moved =
        ["new_cents", "expansion_cents", "contraction_cents", "churn_cents"].map(|k| m[k].as_i64().expect("cents"));
    assert_eq!(mrr_before + moved[0] + moved[1] - moved[2] - moved[3], 3_000, "the movement adds up");

    for bad in ["months=0", "months=37", "months=x"] {
        let r = app.client.get(app.url(&format!("/admin/revenue?{bad}"))).bearer_auth(OP).send().await;
        assert_eq!(r.expect("get").status(), StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
    }
    let r = app.client.get(app.url("/admin/revenue")).bearer_auth(&stays.key).send().await.expect("get");
    assert_problem(r, 401, "unauthenticated").await;
}
