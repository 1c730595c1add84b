//! What the skeleton already guarantees about tenant states and request ids.

use serde_json::json;

use crate::helpers::{assert_problem, spawn_app};

#[tokio::test]
async fn a_paid_plan_waits_for_payment_and_is_gated() {
    let app = spawn_app().await;
    let r = app
        .client
        .post(app.url("/v1/signup"))
        .json(&json!({"email": "pay@later.test", "organization": "Payer", "plan": "pro"}))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 201);
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body["state"], "pending_payment");
    assert!(body["checkout_url"].is_null(), "manual provider: no checkout url");
    let key = body["api_key"].as_str().expect("key");
    let tenant: serde_json::Value = app.get(key, "/v1/tenant").await.json().await.expect("json");
    assert_eq!(tenant["state"], "pending_payment", "GET /v1/tenant answers before payment");
    assert_problem(app.get(key, "/v1/documents").await, 402, "payment_required").await;
    let r = app.post_json(key, "/v1/query", json!({"question": "anything"})).await;
    assert_problem(r, 402, "payment_required").await;
}

#[tokio::test]
async fn duplicate_email_is_409_and_case_insensitive() {
    let app = spawn_app().await;
    app.signup("Dup@Example.test", "trial").await;
    let r = app
        .client
        .post(app.url("/v1/signup"))
        .json(&json!({"email": "dup@example.TEST", "organization": "Again", "plan": "trial"}))
        .send()
        .await
        .expect("post");
    assert_problem(r, 409, "conflict").await;
}

#[tokio::test]
async fn request_ids_are_echoed_or_generated() {
    let app = spawn_app().await;
    let r = app.client.get(app.url("/healthz")).header("x-request-id", "trace-me-42").send().await.expect("get");
    assert_eq!(r.headers()["x-request-id"], "trace-me-42");
    let r = app.client.get(app.url("/healthz")).send().await.expect("get");
    let generated = r.headers()["x-request-id"].to_str().expect("ascii").to_owned();
    assert!(generated.starts_with("req_"), "{generated}");
    let t = app.signup("rid@example.test", "trial").await;
    app.upload_text(&t.key, "Doc", "Refunds take 14 days.").await;
    let r = app
        .client
        .post(app.url("/v1/query"))
        .bearer_auth(&t.key)
        .header("x-request-id", "q-1")
        .json(&json!({"question": "refunds"}))
        .send()
        .await
        .expect("post");
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body["request_id"], "q-1");
}

#[tokio::test]
async fn a_reused_request_id_never_merges_usage_within_or_across_tenants() {
    let app = spawn_app().await;
    let a = app.signup("rid-a@example.test", "trial").await;
    let b = app.signup("rid-b@example.test", "trial").await;
    for t in [&a, &b, &a] {
        let r = app
            .client
            .post(app.url("/v1/query"))
            .bearer_auth(&t.key)
            .header("x-request-id", "same-id")
            .json(&json!({"question": "anything"}))
            .send()
            .await
            .expect("post");
        assert_eq!(r.status(), 200);
    }
    assert_eq!(app.usage(&a.key).await["totals"]["queries"], 2);
    assert_eq!(app.usage(&b.key).await["totals"]["queries"], 1);
}

mod transitions {
    //! The transition table over HTTP: every state a served tenant can be in, driven there through the API,
    //! then every operator and tenant action from it — allowed ones move it, the rest are 409
    //! `invalid_transition` and change nothing.

    use reqwest::StatusCode;
    use serde_json::{json, Value};

    use crate::helpers::{assert_problem, spawn_app_with, Tenant, TestApp};

    const OP: &str = "op-transitions";

    async fn op(app: &TestApp, path: &str, body: Value) -> reqwest::Response {
        app.client.post(app.url(path)).bearer_auth(OP).json(&body).send().await.expect("request")
    }

    async fn state(app: &TestApp, id: &str) -> String {
        let r = app.client.get(app.url(&format!("/admin/tenants/{id}"))).bearer_auth(OP).send().await.expect("get");
        let v: Value = r.json().await.expect("json");
        v["state"].as_str().expect("state").to_owned()
    }

    async fn signup(app: &TestApp, email: &str, plan: &str) -> Tenant {
        let r = app
            .client
            .post(app.url("/v1/signup"))
            .json(&json!({"email": email, "organization": "Org", "plan": plan}))
            .send()
            .await
            .expect("signup");
        let v: Value = r.json().await.expect("json");
        Tenant { id: v["tenant_id"].as_str().expect("id").into(), key: v["api_key"].as_str().expect("key").into() }
    }

    async fn first_invoice(app: &TestApp, id: &str) -> String {
        let r = app.client.get(app.url(&format!("/admin/tenants/{id}"))).bearer_auth(OP).send().await.expect("get");
        let v: Value = r.json().await.expect("json");
        v["invoices"][0]["invoice_id"].as_str().expect("invoice").to_owned()
    }

    /// A tenant in `target`, reached through the API only.
    async fn tenant_in(app: &TestApp, n: usize, target: &str) -> Tenant {
        let email = format!("{target}{n}@transitions.test");
        match target {
            "pending_payment" => signup(app, &email, "pro").await,
            "trialing" => signup(app, &email, "starter").await,
            // A cancelled tenant that was paying: cancelled during a trial, it would come back trialing
            // (`billing::a_trial_interrupted_and_resumed_is_billed_at_its_end_like_any_other`).
            "active" | "past_due" | "suspended" | "cancelled" => {
                let t = signup(app, &email, "pro").await;
                let invoice = first_invoice(app, &t.id).await;
                let r = op(app, &format!("/admin/invoices/{invoice}/payment"), json!({"outcome": "succeeded"})).await;
                assert_eq!(r.status(), StatusCode::OK);
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
                while state(app, &t.id).await != "active" {
                    assert!(std::time::Instant::now() < deadline, "not provisioned");
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
                if target == "past_due" {
                    let closed: Value =
                        op(app, "/admin/billing/close-period", json!({})).await.json().await.expect("json");
                    let mine = closed["invoices"]
                        .as_array()
                        .expect("invoices")
                        .iter()
                        .find(|i| i["tenant_id"] == t.id.as_str())
                        .expect("a closing invoice")["invoice_id"]
                        .as_str()
                        .expect("id")
                        .to_owned();
                    op(app, &format!("/admin/invoices/{mine}/payment"), json!({"outcome": "failed"})).await;
                }
                if target == "suspended" || target == "cancelled" {
                    let action = if target == "suspended" { "suspend" } else { "cancel" };
                    assert_eq!(
                        op(app, &format!("/admin/tenants/{}/{action}", t.id), json!({})).await.status(),
                        StatusCode::OK
                    );
                }
                t
            }
            other => panic!("no recipe for {other}"),
        }
    }

    /// `(from, action, to or None for 409)`, the table's rows reachable through the API.
    const CASES: &[(&str, &str, Option<&str>)] = &[
        ("pending_payment", "suspend", None),
        ("pending_payment", "reactivate", None),
        ("pending_payment", "cancel", Some("cancelled")),
        ("trialing", "suspend", Some("suspended")),
        ("trialing", "reactivate", None),
        ("trialing", "cancel", Some("cancelled")),
        ("trialing", "erase", Some("erased")),
        ("active", "suspend", Some("suspended")),
        ("active", "reactivate", None),
        ("active", "cancel", Some("cancelled")),
        ("active", "erase", Some("erased")),
        ("past_due", "suspend", Some("suspended")),
        ("past_due", "cancel", Some("cancelled")),
        ("past_due", "erase", Some("erased")),
        ("suspended", "reactivate", Some("active")),
        ("suspended", "suspend", None),
        ("suspended", "cancel", Some("cancelled")),
        ("suspended", "erase", Some("erased")),
        ("cancelled", "suspend", None),
        ("cancelled", "reactivate", None),
        ("cancelled", "cancel", None),
        ("cancelled", "win_back", Some("active")),
        ("cancelled", "erase", Some("erased")),
    ];

    #[tokio::test]
    async fn every_reachable_row_of_the_table_over_http() {
        let app = spawn_app_with(|c| c.server.operator_token = OP.into()).await;
        for (n, (from, action, to)) in CASES.iter().enumerate() {
            let t = tenant_in(&app, n, from).await;
            assert_eq!(&state(&app, &t.id).await, from, "setup for {from} {action}");
            let r = match *action {
                "suspend" | "reactivate" | "cancel" => {
                    op(&app, &format!("/admin/tenants/{}/{action}", t.id), json!({})).await
                }
                "win_back" => {
                    app.client.post(app.url("/v1/tenant/reactivate")).bearer_auth(&t.key).send().await.expect("post")
                }
                "erase" => app.client.delete(app.url("/v1/tenant")).bearer_auth(&t.key).send().await.expect("delete"),
                other => panic!("unknown action {other}"),
            };
            match to {
                Some(to) => {
                    assert!(r.status().is_success(), "{from} --{action}--> {to}: {}", r.status());
                    assert_eq!(&state(&app, &t.id).await, to, "{from} --{action}-->");
                }
                None => {
                    assert_problem(r, 409, "invalid_transition").await;
                    assert_eq!(&state(&app, &t.id).await, from, "a refused {action} changes nothing");
                }
            }
        }
    }
}
