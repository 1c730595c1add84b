//! The Stripe provider over HTTP, against a fake Stripe that speaks Stripe's wire format (Bearer secret key,
//! form-encoded bodies, `Idempotency-Key` replays, error objects) and answers with Stripe's own example
//! objects (`crates/tenantry-billing/tests/fixtures`, from Stripe's `fixtures3.json`); and the webhook,
//! with events signed the way Stripe signs them.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use reqwest::StatusCode as Status;
use serde_json::{json, Value};
use tenantry_billing::stripe::sign;

use crate::helpers::{assert_problem, spawn_app_with, TestApp};

const OP: &str = "op-stripe";
const API_KEY: &str = "sk_test_fake_4eC39HqLyjWDarjtT1zdp7dc";
const WEBHOOK_SECRET: &str = "whsec_test_secret";
const DAY: i64 = 86_400;

#[derive(Clone, Debug)]
struct Seen {
    get: bool,
    path: String,
    idempotency_key: String,
    form: BTreeMap<String, String>,
}

#[derive(Clone, Default)]
struct FakeStripe {
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Responses by idempotency key: Stripe replays the first answer to a repeated key.
    replies: Arc<Mutex<HashMap<String, (u16, Value)>>>,
    next_id: Arc<AtomicUsize>,
    decline: Arc<AtomicBool>,
    down: Arc<AtomicBool>,
}

impl FakeStripe {
    async fn start() -> (Self, String) {
        let fake = Self::default();
        let app = axum::Router::new().fallback(stripe).with_state(fake.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        (fake, format!("http://{addr}"))
    }

    fn seen(&self, path_prefix: &str) -> Vec<Seen> {
        self.seen.lock().expect("lock").iter().filter(|s| s.path.starts_with(path_prefix)).cloned().collect()
    }
}

fn fixture(name: &str) -> Value {
    let path = format!("{}/../tenantry-billing/tests/fixtures/{name}.json", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("json")
}

fn error(status: u16, kind: &str, code: &str, message: &str) -> (u16, Value) {
    (status, json!({"error": {"type": kind, "code": code, "message": message}}))
}

fn metadata(form: &BTreeMap<String, String>) -> Value {
    let map: serde_json::Map<String, Value> = form
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix("metadata[")?.strip_suffix(']')?.to_owned(), json!(v))))
        .collect();
    Value::Object(map)
}

async fn stripe(State(fake): State<FakeStripe>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let reply = |(status, body): (u16, Value)| {
        (StatusCode::from_u16(status).expect("status"), axum::Json(body)).into_response()
    };
    if header("authorization") != format!("Bearer {API_KEY}") {
        return reply(error(401, "invalid_request_error", "api_key_invalid", "Invalid API Key provided"));
    }
    let get = method == Method::GET;
    if !get && header("content-type") != "application/x-www-form-urlencoded" {
        return reply(error(400, "invalid_request_error", "parameter_invalid", "form-encoded bodies only"));
    }
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(&body).expect("form body");
    let form: BTreeMap<String, String> = pairs.into_iter().collect();
    let path = uri.path().to_owned();
    let key = header("idempotency-key");
    fake.seen.lock().expect("lock").push(Seen {
        get: method == Method::GET,
        path: path.clone(),
        idempotency_key: key.clone(),
        form: form.clone(),
    });
    if get {
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        return match segments.as_slice() {
            ["v1", "payment_intents", id] => {
                let mut o = fixture("payment_intent");
                o["id"] = json!(id);
                o["status"] = json!("succeeded");
                o["payment_method"] = json!("pm_card_from_checkout");
                reply((200, o))
            }
            _ => reply(error(404, "invalid_request_error", "resource_missing", "No such object")),
        };
    }
    if key.is_empty() {
        return reply(error(400, "invalid_request_error", "idempotency_key_missing", "no Idempotency-Key"));
    }
    if let Some(previous) = fake.replies.lock().expect("lock").get(&key).cloned() {
        return reply(previous);
    }
    if fake.down.load(Ordering::SeqCst) {
        return reply(error(500, "api_error", "internal", "Something went wrong on Stripe's end."));
    }
    let n = fake.next_id.fetch_add(1, Ordering::SeqCst);
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let answer = match segments.as_slice() {
        ["v1", "checkout", "sessions"] => {
            let mut o = fixture("checkout_session");
            let id = format!("cs_test_fake{n}");
            o["id"] = json!(id);
            o["url"] = json!(format!("https://checkout.stripe.com/c/pay/{id}"));
            o["client_reference_id"] = json!(form.get("client_reference_id"));
            o["amount_total"] =
                json!(form.get("line_items[0][price_data][unit_amount]").and_then(|a| a.parse::<i64>().ok()));
            o["metadata"] = metadata(&form);
            (200, o)
        }
        ["v1", "customers", id] => {
            let mut o = fixture("customer");
            o["id"] = json!(id);
            (200, o)
        }
        ["v1", "customers"] => {
            let mut o = fixture("customer");
            o["id"] = json!(format!("cus_fake{n}"));
            o["email"] = json!(form.get("email"));
            o["metadata"] = metadata(&form);
            (200, o)
        }
        ["v1", "invoices"] => {
            let mut o = fixture("invoice");
            o["id"] = json!(format!("in_fake{n}"));
            o["status"] = json!("draft");
            o["customer"] = json!(form.get("customer"));
            o["metadata"] = metadata(&form);
            (200, o)
        }
        ["v1", "invoiceitems"] => {
            let mut o = fixture("invoiceitem");
            o["id"] = json!(format!("ii_fake{n}"));
            o["amount"] = json!(form.get("amount").and_then(|a| a.parse::<i64>().ok()));
            o["invoice"] = json!(form.get("invoice"));
            o["metadata"] = metadata(&form);
            (200, o)
        }
        ["v1", "invoices", id, "finalize"] => {
            let mut o = fixture("invoice");
            o["id"] = json!(id);
            o["status"] = json!("open");
            o["hosted_invoice_url"] = json!(format!("https://invoice.stripe.com/i/acct_fake/{id}"));
            (200, o)
        }
        ["v1", "invoices", id, "pay"] => {
            if fake.decline.load(Ordering::SeqCst) {
                error(402, "card_error", "card_declined", "Your card was declined.")
            } else {
                let mut o = fixture("invoice");
                o["id"] = json!(id);
                o["status"] = json!("paid");
                (200, o)
            }
        }
        ["v1", "invoices", id, action @ ("void" | "mark_uncollectible")] => {
            let mut o = fixture("invoice");
            o["id"] = json!(id);
            o["status"] = json!(if *action == "void" { "void" } else { "uncollectible" });
            (200, o)
        }
        _ => error(404, "invalid_request_error", "resource_missing", "Unrecognized request URL"),
    };
    fake.replies.lock().expect("lock").insert(key, answer.clone());
    reply(answer)
}

async fn stripe_app(base: &str, database_url: Option<String>) -> TestApp {
    let base = base.to_owned();
    spawn_app_with(move |c| {
        if let Some(url) = database_url {
            c.database.url = url;
        }
        c.server.clock = "test".into();
        c.server.operator_token = OP.into();
        c.billing.provider = "stripe".into();
        c.billing.stripe.api_key = API_KEY.into();
        c.billing.stripe.api_base = base;
        c.billing.stripe.webhook_secret = WEBHOOK_SECRET.into();
    })
    .await
}

fn now_secs() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("after 1970").as_secs() as i64
}

fn event(id: &str, kind: &str, created: i64, object: Value) -> Vec<u8> {
    let mut e = fixture("event");
    e["id"] = json!(id);
    e["type"] = json!(kind);
    e["created"] = json!(created);
    e["data"] = json!({"object": object});
    serde_json::to_vec(&e).expect("json")
}

async fn deliver(app: &TestApp, payload: &[u8], signature: Option<String>) -> reqwest::Response {
    let mut r = app.client.post(app.url("/webhooks/stripe")).header("content-type", "application/json");
    if let Some(s) = signature {
        r = r.header("stripe-signature", s);
    }
    r.body(payload.to_vec()).send().await.expect("webhook")
}

async fn deliver_signed(app: &TestApp, payload: &[u8]) -> Value {
    let r = deliver(app, payload, Some(sign(payload, WEBHOOK_SECRET, now_secs()))).await;
    assert_eq!(r.status(), Status::OK);
    r.json().await.expect("json")
}

async fn state(app: &TestApp, key: &str) -> String {
    let t: Value = app.get(key, "/v1/tenant").await.json().await.expect("json");
    t["state"].as_str().expect("state").to_owned()
}

async fn invoices(app: &TestApp, key: &str) -> Vec<Value> {
    let v: Value = app.get(key, "/v1/invoices").await.json().await.expect("json");
    v["invoices"].as_array().expect("invoices").clone()
}

async fn advance(app: &TestApp, days: i64) {
    let r = app
        .client
        .post(app.url("/admin/clock/advance"))
        .bearer_auth(OP)
        .json(&json!({"seconds": days * DAY}))
        .send()
        .await
        .expect("advance");
    assert_eq!(r.status(), Status::OK);
}

#[tokio::test]
async fn stripe_checkout_webhooks_and_charges_carry_a_paying_tenant() {
    stripe_checkout_webhooks_and_charges_carry_a_paying_tenant_on(None).await;
}

#[tokio::test]
async fn stripe_checkout_webhooks_and_charges_carry_a_paying_tenant_on_postgres() {
    crate::helpers::on_postgres(stripe_checkout_webhooks_and_charges_carry_a_paying_tenant_on).await;
}

async fn stripe_checkout_webhooks_and_charges_carry_a_paying_tenant_on(database_url: Option<String>) {
    let (fake, base) = FakeStripe::start().await;
    let app = stripe_app(&base, database_url).await;

    // A paid signup gets a Checkout URL; the session names the tenant and the first invoice's amount.
    let r = app
        .client
        .post(app.url("/v1/signup"))
        .json(&json!({"email": "ap@stripe.test", "organization": "Stripe Co", "plan": "pro"}))
        .send()
        .await
        .expect("signup");
    assert_eq!(r.status(), Status::CREATED);
    let signup: Value = r.json().await.expect("json");
    let (id, key) = (signup["tenant_id"].as_str().expect("id"), signup["api_key"].as_str().expect("key"));
    assert_eq!(signup["state"], "pending_payment");
    assert!(signup["checkout_url"].as_str().is_some_and(|u| u.starts_with("https://checkout.stripe.com/")));
    let sessions = fake.seen("/v1/checkout/sessions");
    assert_eq!(sessions.len(), 1);
    let form = &sessions[0].form;
    assert_eq!(form.get("metadata[tenant_id]").map(String::as_str), Some(id));
    assert_eq!(form.get("mode").map(String::as_str), Some("payment"));
    // The card is kept for the invoices that follow, charged off-session.
    assert_eq!(form.get("payment_intent_data[setup_future_usage]").map(String::as_str), Some("off_session"));
    assert_eq!(form.get("customer_creation").map(String::as_str), Some("always"));
    assert_eq!(sessions[0].idempotency_key, format!("checkout-{id}"));
    let price: i64 = form.get("line_items[0][price_data][unit_amount]").expect("amount").parse().expect("int");
    let invoice_id = form.get("metadata[invoice_id]").expect("our invoice").clone();

    // checkout.session.completed: paid, provisioned, active within a second; a redelivery changes nothing.
    let mut session = fixture("checkout_session");
    session["id"] = json!("cs_test_fake0");
    session["payment_status"] = json!("paid");
    session["status"] = json!("complete");
    session["customer"] = json!("cus_from_checkout");
    session["payment_intent"] = json!("pi_from_checkout");
    session["metadata"] = json!({"tenant_id": id, "invoice_id": invoice_id});
    let completed = event("evt_checkout_1", "checkout.session.completed", now_secs(), session);
    let receipt = deliver_signed(&app, &completed).await;
    assert!(receipt["outcome"].as_str().is_some_and(|o| o.starts_with("applied")), "{receipt}");
    let started = Instant::now();
    while state(&app, key).await != "active" {
        assert!(started.elapsed() < Duration::from_secs(1), "not active within a second");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(deliver_signed(&app, &completed).await["outcome"], "duplicate");
    // The checkout's payment method became the customer's default for invoices.
    assert!(fake.seen("/v1/payment_intents/pi_from_checkout").len() == 1, "the payment intent was read once");
    let defaults = fake.seen("/v1/customers/cus_from_checkout");
    assert_eq!(defaults.len(), 1);
    assert_eq!(
        defaults[0].form.get("invoice_settings[default_payment_method]").map(String::as_str),
        Some("pm_card_from_checkout")
    );

    // The period closes: Stripe invoice for the checkout's customer, one item per line, finalised, paid.
    advance(&app, 31).await;
    let drafts = fake.seen("/v1/invoices");
    let created: Vec<&Seen> = drafts.iter().filter(|s| s.path == "/v1/invoices").collect();
    assert_eq!(created.len(), 1, "{drafts:?}");
    assert_eq!(created[0].form.get("customer").map(String::as_str), Some("cus_from_checkout"));
    assert!(fake.seen("/v1/customers").iter().all(|s| s.path != "/v1/customers"), "the checkout's customer is reused");
    let items = fake.seen("/v1/invoiceitems");
    assert!(items.iter().any(|i| i.form.get("amount") == Some(&price.to_string())), "{items:?}");
    assert!(drafts.iter().any(|s| s.path.ends_with("/finalize")) && drafts.iter().any(|s| s.path.ends_with("/pay")));
    let all = invoices(&app, key).await;
    assert_eq!(all.iter().filter(|i| i["status"] == "paid").count(), 2, "signup and first close paid: {all:?}");
    assert_eq!(state(&app, key).await, "active");

    // The next charge is declined: past_due, dunning starts.
    fake.decline.store(true, Ordering::SeqCst);
    advance(&app, 31).await;
    assert_eq!(state(&app, key).await, "past_due");
    let unpaid = invoices(&app, key).await.into_iter().find(|i| i["status"] == "open").expect("an open invoice");
    let ours = unpaid["invoice_id"].as_str().expect("id");
    let stripe_invoice = fake
        .seen("/v1/invoices")
        .iter()
        .filter(|s| s.path == "/v1/invoices")
        .filter(|s| s.form.get("metadata[invoice_id]").map(String::as_str) == Some(ours))
        .count();
    assert_eq!(stripe_invoice, 1);
    // The open invoice links to Stripe's hosted page, where the customer pays it; paid ones do not.
    let mirror =
        fake.replies.lock().expect("lock")[&format!("invoice-{ours}")].1["id"].as_str().expect("id").to_owned();
    assert_eq!(unpaid["pay_url"], format!("https://invoice.stripe.com/i/acct_fake/{mirror}"), "{unpaid}");
    let owed: Value = app.get(key, "/v1/tenant").await.json().await.expect("json");
    assert_eq!(owed["open_invoices"][0]["pay_url"], unpaid["pay_url"], "{owed}");
    assert!(invoices(&app, key).await.iter().filter(|i| i["status"] == "paid").all(|i| i.get("pay_url").is_none()));

    // invoice.paid arrives (the customer fixed the card) and then, late, an older invoice.payment_failed:
    // the tenant is active and stays so.
    let paid_at = now_secs();
    let mut inv = fixture("invoice");
    inv["id"] = json!("in_from_stripe_retry");
    inv["status"] = json!("paid");
    inv["metadata"] = json!({"tenant_id": id, "invoice_id": ours});
    let paid = event("evt_paid_2", "invoice.paid", paid_at, inv.clone());
    assert!(deliver_signed(&app, &paid).await["outcome"].as_str().is_some_and(|o| o.starts_with("applied")));
    assert_eq!(state(&app, key).await, "active");
    inv["status"] = json!("open");
    let failed = event("evt_failed_1", "invoice.payment_failed", paid_at - 60, inv);
    let late = deliver_signed(&app, &failed).await;
    assert!(late["outcome"].as_str().is_some_and(|o| o.contains("newer event")), "{late}");
    assert_eq!(state(&app, key).await, "active");
    assert!(invoices(&app, key).await.iter().all(|i| i["status"] == "paid"));

    // Declined again. Someone writes the invoice off in Stripe's dashboard: ours follows, still owed.
    advance(&app, 31).await;
    assert_eq!(state(&app, key).await, "past_due");
    let unpaid = invoices(&app, key).await.into_iter().find(|i| i["status"] == "open").expect("an open invoice");
    let ours = unpaid["invoice_id"].as_str().expect("id");
    let mirror =
        fake.replies.lock().expect("lock")[&format!("invoice-{ours}")].1["id"].as_str().expect("id").to_owned();
    let mut inv = fixture("invoice");
    inv["id"] = json!(mirror);
    inv["status"] = json!("uncollectible");
    inv["metadata"] = json!({"tenant_id": id, "invoice_id": ours});
    let written_off = event("evt_uncollectible_3", "invoice.marked_uncollectible", now_secs(), inv);
    let receipt = deliver_signed(&app, &written_off).await;
    assert!(receipt["outcome"].as_str().is_some_and(|o| o.starts_with("applied")), "{receipt}");
    let status_of =
        |list: Vec<Value>| list.into_iter().find(|i| i["invoice_id"] == ours).expect("ours")["status"].clone();
    assert_eq!(status_of(invoices(&app, key).await), "uncollectible");
    assert_eq!(state(&app, key).await, "past_due");

    // The operator voids it: Stripe's copy is voided first (with its own idempotency key), then ours, and
    // with nothing left owed the tenant is active again. While Stripe fails, nothing changes here.
    let void = || app.client.post(app.url(&format!("/admin/invoices/{ours}/void"))).bearer_auth(OP).send();
    fake.down.store(true, Ordering::SeqCst);
    assert_problem(void().await.expect("void"), 502, "upstream_failed").await;
    assert_eq!(status_of(invoices(&app, key).await), "uncollectible");
    fake.down.store(false, Ordering::SeqCst);
    assert_eq!(void().await.expect("void").status(), Status::OK);
    let voids = fake.seen(&format!("/v1/invoices/{mirror}/void"));
    assert!(voids.iter().all(|v| v.idempotency_key == format!("invoice-{ours}-void")), "{voids:?}");
    assert_eq!(status_of(invoices(&app, key).await), "void");
    assert_eq!(state(&app, key).await, "active");

    // Every POST carried an idempotency key.
    assert!(fake.seen("/").iter().filter(|s| !s.get).all(|s| !s.idempotency_key.is_empty()));
}

#[tokio::test]
async fn webhooks_reject_forgeries_and_acknowledge_what_they_ignore() {
    let (_fake, base) = FakeStripe::start().await;
    let app = stripe_app(&base, None).await;
    let mut inv = fixture("invoice");
    inv["metadata"] = json!({"tenant_id": "ten_0190f0a1b2c3d4e5f60718293a4b5c6d"});
    let payload = event("evt_unknown_tenant", "invoice.paid", now_secs(), inv);

    // Forged, stale, unsigned and unparseable deliveries are 400s.
    let forged = sign(&payload, "whsec_someone_else", now_secs());
    assert_problem(deliver(&app, &payload, Some(forged)).await, 400, "bad_request").await;
    let stale = sign(&payload, WEBHOOK_SECRET, now_secs() - 600);
    assert_problem(deliver(&app, &payload, Some(stale)).await, 400, "bad_request").await;
    assert_problem(deliver(&app, &payload, None).await, 400, "bad_request").await;
    let garbage = b"{\"not\": \"an event\"}".to_vec();
    let signed_garbage = sign(&garbage, WEBHOOK_SECRET, now_secs());
    assert_problem(deliver(&app, &garbage, Some(signed_garbage)).await, 400, "bad_request").await;

    // An event for no known tenant, and an event type Tenantry does not handle, are acknowledged.
    let unknown = deliver_signed(&app, &payload).await;
    assert!(unknown["outcome"].as_str().is_some_and(|o| o.contains("no tenant")), "{unknown}");
    let other = event("evt_other", "customer.updated", now_secs(), fixture("customer"));
    let ignored = deliver_signed(&app, &other).await;
    assert!(ignored["outcome"].as_str().is_some_and(|o| o.contains("not handled")), "{ignored}");

    // Several v1 signatures (a secret being rolled): one valid one is enough.
    let t = now_secs();
    let both = format!(
        "t={t},v1={},v1={}",
        "00".repeat(32),
        sign(&other, WEBHOOK_SECRET, t).rsplit("v1=").next().expect("sig")
    );
    let replay = deliver(&app, &other, Some(both)).await;
    assert_eq!(replay.status(), Status::OK);
    let body: Value = replay.json().await.expect("json");
    assert_eq!(body["outcome"], "duplicate", "the same event id again is a no-op");

    // Without a webhook secret there is no such endpoint: 404, not a failure of the service.
    let manual = spawn_app_with(|_| {}).await;
    assert_problem(
        deliver(&manual, &payload, Some(sign(&payload, WEBHOOK_SECRET, now_secs()))).await,
        404,
        "not_found",
    )
    .await;
}

#[tokio::test]
async fn a_stripe_outage_at_signup_leaves_nothing_behind() {
    let (fake, base) = FakeStripe::start().await;
    let app = stripe_app(&base, None).await;
    fake.down.store(true, Ordering::SeqCst);
    let body = json!({"email": "retry@stripe.test", "organization": "Retry Co", "plan": "pro"});
    let r = app.client.post(app.url("/v1/signup")).json(&body).send().await.expect("signup");
    assert_problem(r, 502, "upstream_failed").await;
    let tenants: Value = app
        .client
        .get(app.url("/admin/tenants"))
        .bearer_auth(OP)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    assert_eq!(tenants["tenants"], json!([]), "no tenant was stored");

    // Stripe is back: the same email signs up.
    fake.down.store(false, Ordering::SeqCst);
    let r = app.client.post(app.url("/v1/signup")).json(&body).send().await.expect("signup");
    assert_eq!(r.status(), Status::CREATED);
}

#[tokio::test]
async fn a_checkout_event_delivered_several_times_at_once_provisions_once() {
    let (_fake, base) = FakeStripe::start().await;
    let app = stripe_app(&base, None).await;
    let r = app
        .client
        .post(app.url("/v1/signup"))
        .json(&json!({"email": "race@stripe.test", "organization": "Race Co", "plan": "pro"}))
        .send()
        .await
        .expect("signup");
    let signup: Value = r.json().await.expect("json");
    let (id, key) = (signup["tenant_id"].as_str().expect("id"), signup["api_key"].as_str().expect("key"));
    let mut session = fixture("checkout_session");
    session["id"] = json!("cs_test_race");
    session["payment_status"] = json!("paid");
    session["status"] = json!("complete");
    session["metadata"] = json!({"tenant_id": id});
    let completed = event("evt_checkout_race", "checkout.session.completed", now_secs(), session);

    let deliveries = futures::future::join_all((0..6).map(|_| deliver_signed(&app, &completed))).await;
    assert!(deliveries.iter().all(|d| d["received"] == true), "{deliveries:?}");
    let started = Instant::now();
    while state(&app, key).await != "active" {
        assert!(started.elapsed() < Duration::from_secs(2), "not active");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let detail: Value = app
        .client
        .get(app.url(&format!("/admin/tenants/{id}")))
        .bearer_auth(OP)
        .send()
        .await
        .expect("detail")
        .json()
        .await
        .expect("json");
    let events: Vec<&str> =
        detail["events"].as_array().expect("events").iter().filter_map(|e| e["event"].as_str()).collect();
    assert_eq!(events.iter().filter(|e| **e == "payment_confirmed").count(), 1, "{events:?}");
    assert_eq!(events.iter().filter(|e| **e == "provisioned_active").count(), 1, "{events:?}");
    let provisions = detail["jobs"].as_array().expect("jobs").iter().filter(|j| j["kind"] == "provision").count();
    assert_eq!(provisions, 1);
    assert_eq!(detail["invoices"][0]["status"], "paid");
}
