//! Outbound webhooks and usage alerts (API.md "Integrations"), against a receiver in the test that speaks
//! HTTP: events arrive signed with the documented scheme, a failing receiver gets the event once it
//! recovers, retries end after three days and a resend delivers again, private and metadata addresses are
//! refused, a slow receiver holds up no request, and an alert threshold fires exactly once however many
//! clients cross it together.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode as AxumStatus};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sha2::Digest;
use tenantry_domain::config::Config;

use crate::helpers::{assert_problem, spawn_app_with, Tenant, TestApp};

const OP: &str = "op-webhooks";

/// What the receiver got: each request's `Tenantry-Signature` and body.
#[derive(Clone, Debug)]
struct Received {
    signature: String,
    body: String,
}

/// An HTTP receiver: answers the first `failures` requests with 500, then 200; while `hold` is closed it keeps
/// each request waiting.
#[derive(Clone)]
struct Receiver {
    url: String,
    got: Arc<parking_lot::Mutex<Vec<Received>>>,
    failures: Arc<std::sync::atomic::AtomicUsize>,
    hold: Arc<tokio::sync::Semaphore>,
    waiting: Arc<std::sync::atomic::AtomicUsize>,
}

impl Receiver {
    async fn start(failures: usize) -> Self {
        let receiver = Self {
            url: String::new(),
            got: Default::default(),
            failures: Arc::new(failures.into()),
            hold: Arc::new(tokio::sync::Semaphore::new(Self::OPEN)),
            waiting: Default::default(),
        };
        let state = receiver.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let state = state.clone();
                async move { state.handle(headers, body).await }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, ..receiver }
    }

    const OPEN: usize = 1 << 20;

    async fn handle(&self, headers: HeaderMap, body: Bytes) -> AxumStatus {
        use std::sync::atomic::Ordering::SeqCst;
        self.waiting.fetch_add(1, SeqCst);
        let permit = self.hold.acquire().await;
        drop(permit);
        self.waiting.fetch_sub(1, SeqCst);
        let signature = headers.get("tenantry-signature").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        self.got.lock().push(Received { signature, body: String::from_utf8_lossy(&body).into_owned() });
        let failing = self.failures.fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1)).is_ok();
        if failing {
            AxumStatus::INTERNAL_SERVER_ERROR
        } else {
            AxumStatus::OK
        }
    }

    fn events(&self, kind: &str) -> Vec<Value> {
        let got = self.got.lock().clone();
        got.iter()
            .map(|r| serde_json::from_str::<Value>(&r.body).expect("a JSON envelope"))
            .filter(|e| e["type"] == kind)
            .collect()
    }

    /// Waits up to 20 s until `n` requests carrying `kind` arrived.
    async fn wait_for(&self, kind: &str, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let events = self.events(kind);
            if events.len() >= n {
                return events;
            }
            assert!(Instant::now() < deadline, "{n} {kind} events did not arrive: {:?}", self.got.lock());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Verifies `Tenantry-Signature` the way API.md tells a receiver to: HMAC-SHA256 of `"<t>.<body>"` keyed
/// with the endpoint's secret, compared with `v1`.
fn verify(secret: &str, received: &Received) -> bool {
    let mut t = None;
    let mut v1 = None;
    for part in received.signature.split(',') {
        match part.split_once('=') {
            Some(("t", value)) => t = Some(value.to_owned()),
            Some(("v1", value)) => v1 = Some(value.to_owned()),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else { return false };
    hmac_sha256_hex(secret.as_bytes(), format!("{t}.{}", received.body).as_bytes()) == v1
}

/// HMAC-SHA256 (RFC 2104) from SHA-256, so the check does not share the service's HMAC code.
fn hmac_sha256_hex(key: &[u8], message: &[u8]) -> String {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&sha2::Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.iter().map(|b| b ^ byte).collect::<Vec<u8>>();
    let inner = sha2::Sha256::new().chain_update(pad(0x36)).chain_update(message).finalize();
    hex::encode(sha2::Sha256::new().chain_update(pad(0x5c)).chain_update(inner).finalize())
}

fn private_allowed(c: &mut Config) {
    c.webhooks.allow_private_addresses = true;
    c.server.operator_token = OP.into();
    c.server.clock = "test".into();
}

async fn subscribe(app: &TestApp, t: &Tenant, url: &str, events: &[&str]) -> Value {
    let r = app.post_json(&t.key, "/v1/webhooks", json!({"url": url, "events": events})).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    r.json().await.expect("json")
}

async fn deliveries(app: &TestApp, t: &Tenant, webhook_id: &str) -> Vec<Value> {
    let r = app.get(&t.key, &format!("/v1/webhooks/{webhook_id}/deliveries")).await;
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.expect("json");
    body["deliveries"].as_array().expect("deliveries").clone()
}

/// Waits up to 20 s until the endpoint's only delivery satisfies `done`.
async fn delivery_until(app: &TestApp, t: &Tenant, webhook_id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let all = deliveries(app, t, webhook_id).await;
        if let Some(d) = all.first().filter(|d| done(d)) {
            return d.clone();
        }
        assert!(Instant::now() < deadline, "the delivery never got there: {all:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn advance(app: &TestApp, seconds: i64) {
    let r = app.post_json(OP, "/admin/clock/advance", json!({"seconds": seconds})).await;
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn events_arrive_signed_with_the_documented_scheme() {
    let app = spawn_app_with(private_allowed).await;
    let receiver = Receiver::start(0).await;
    let t = app.signup("signed@hooks.test", "starter").await;
    let created = subscribe(&app, &t, &receiver.url, &["document.indexed", "export.ready"]).await;
    let secret = created["secret"].as_str().expect("secret");
    assert!(secret.starts_with("whsec_"), "{created}");
    let listed: Value = app.get(&t.key, "/v1/webhooks").await.json().await.expect("json");
    assert_eq!(listed["webhooks"][0]["webhook_id"], created["webhook_id"]);
    assert!(listed["webhooks"][0].get("secret").is_none(), "the secret is shown once: {listed}");

    let doc = app.upload_text(&t.key, "Refunds", "Refunds are issued within 14 days.").await;
    let events = receiver.wait_for("document.indexed", 1).await;
    let event = &events[0];
    assert!(event["id"].as_str().is_some_and(|id| id.starts_with("evt_")), "{event}");
    assert_eq!(event["tenant_id"], t.id.as_str());
    assert_eq!(event["data"]["document_id"], doc["document_id"]);
    assert!(event["created_at"].as_str().is_some());
    let received = receiver.got.lock()[0].clone();
    assert!(verify(secret, &received), "the signature verifies: {}", received.signature);
    assert!(!verify("whsec_another", &received), "and only with the endpoint's secret");

    let export: Value = app.post_json(&t.key, "/v1/export", json!({})).await.json().await.expect("json");
    let ready = receiver.wait_for("export.ready", 1).await;
    assert_eq!(ready[0]["data"]["export_id"], export["export_id"], "{ready:?}");

    let webhook_id = created["webhook_id"].as_str().expect("id");
    let all = deliveries(&app, &t, webhook_id).await;
    assert_eq!(all.len(), 2, "{all:?}");
    let indexed = all.iter().find(|d| d["type"] == "document.indexed").expect("listed");
    assert_eq!((indexed["status"].as_str(), indexed["attempts"].as_i64()), (Some("delivered"), Some(1)));
    assert_eq!(indexed["last_status_code"], 200);
    assert_eq!(indexed["event_id"], event["id"]);

    // Another tenant sees none of it; a deleted endpoint gets nothing more.
    let other = app.signup("other@hooks.test", "starter").await;
    assert_problem(app.get(&other.key, &format!("/v1/webhooks/{webhook_id}/deliveries")).await, 404, "not_found").await;
    let gone = app.client.delete(app.url(&format!("/v1/webhooks/{webhook_id}"))).bearer_auth(&t.key).send().await;
    assert_eq!(gone.expect("delete").status(), StatusCode::NO_CONTENT);
    app.upload_text(&t.key, "Shipping", "Orders ship within two days.").await;
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    assert_eq!(receiver.events("document.indexed").len(), 1, "nothing is sent to a deleted endpoint");
}

/// Two tenants, each with its own receiver: each receiver gets its own tenant's events, signed with its own
/// endpoint's secret, and none of the other's.
#[tokio::test]
async fn each_tenants_receiver_gets_only_its_own_tenants_events() {
    let app = spawn_app_with(private_allowed).await;
    let (receiver_a, receiver_b) = (Receiver::start(0).await, Receiver::start(0).await);
    let a = app.signup("a@isolated-hooks.test", "starter").await;
    let b = app.signup("b@isolated-hooks.test", "starter").await;
    let hook_a = subscribe(&app, &a, &receiver_a.url, &["document.indexed"]).await;
    let hook_b = subscribe(&app, &b, &receiver_b.url, &["document.indexed"]).await;
    for i in 0..3 {
        app.upload_text(&a.key, &format!("A{i}"), &format!("Tenant A's document number {i}.")).await;
        app.upload_text(&b.key, &format!("B{i}"), &format!("Tenant B's document number {i}.")).await;
    }
    for (receiver, tenant, hook) in [(&receiver_a, &a, &hook_a), (&receiver_b, &b, &hook_b)] {
        let events = receiver.wait_for("document.indexed", 3).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let got = receiver.got.lock().clone();
        assert_eq!(got.len(), 3, "exactly its tenant's three events: {got:?}");
        assert!(events.iter().all(|e| e["tenant_id"] == tenant.id.as_str()), "{events:?}");
        let secret = hook["secret"].as_str().expect("secret");
        assert!(got.iter().all(|r| verify(secret, r)), "signed with its own endpoint's secret");
    }
}

#[tokio::test]
async fn a_failing_receiver_gets_the_event_once_it_recovers() {
    let app = spawn_app_with(private_allowed).await;
    let receiver = Receiver::start(3).await;
    let t = app.signup("flaky@hooks.test", "starter").await;
    let created = subscribe(&app, &t, &receiver.url, &["document.indexed"]).await;
    let webhook_id = created["webhook_id"].as_str().expect("id");
    app.upload_text(&t.key, "Refunds", "Refunds are issued within 14 days.").await;

    let first = delivery_until(&app, &t, webhook_id, |d| d["attempts"] == 1).await;
    assert_eq!((first["status"].as_str(), first["last_status_code"].as_i64()), (Some("pending"), Some(500)));
    assert!(first["next_attempt_at"].as_str().is_some(), "a retry is scheduled: {first}");
    // Each retry waits (30 s, then 60 s, 120 s …); the test clock moves past it.
    for attempts in 2..=4 {
        advance(&app, 300).await;
        delivery_until(&app, &t, webhook_id, |d| d["attempts"] == attempts).await;
    }
    let done = delivery_until(&app, &t, webhook_id, |d| d["status"] == "delivered").await;
    let codes: Vec<i64> =
        done["attempt_log"].as_array().expect("log").iter().map(|a| a["status_code"].as_i64().expect("code")).collect();
    assert_eq!(codes, [500, 500, 500, 200], "{done}");
    let events = receiver.events("document.indexed");
    assert_eq!(events.len(), 4, "every attempt carried the event");
    assert!(events.iter().all(|e| e["id"] == events[0]["id"]), "the same event each time, deduplicable by id");
}

#[tokio::test]
async fn retries_end_after_three_days_and_a_resend_delivers() {
    let app = spawn_app_with(private_allowed).await;
    let receiver = Receiver::start(usize::MAX).await;
    let t = app.signup("down@hooks.test", "starter").await;
    let created = subscribe(&app, &t, &receiver.url, &["document.indexed"]).await;
    let webhook_id = created["webhook_id"].as_str().expect("id");
    app.upload_text(&t.key, "Refunds", "Refunds are issued within 14 days.").await;
    delivery_until(&app, &t, webhook_id, |d| d["attempts"] == 1).await;
    let mut last = 1;
    for _ in 0..20 {
        advance(&app, 6 * 3_600).await;
        let d =
            delivery_until(&app, &t, webhook_id, |d| d["attempts"].as_i64() > Some(last) || d["status"] == "failed")
                .await;
        last = d["attempts"].as_i64().expect("attempts");
        if d["status"] == "failed" {
            break;
        }
    }
    let failed = delivery_until(&app, &t, webhook_id, |d| d["status"] == "failed").await;
    assert!(failed["next_attempt_at"].is_null(), "no retry after three days: {failed}");
    let attempts = failed["attempts"].as_i64().expect("attempts");
    assert!((10..=16).contains(&attempts), "30 s doubling to 6 h over three days: {attempts} attempts");

    receiver.failures.store(0, std::sync::atomic::Ordering::SeqCst);
    let delivery_id = failed["delivery_id"].as_str().expect("id");
    let resend =
        app.post_json(&t.key, &format!("/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/resend"), json!({})).await;
    assert_eq!(resend.status(), StatusCode::ACCEPTED);
    let delivered = delivery_until(&app, &t, webhook_id, |d| d["status"] == "delivered").await;
    assert_eq!(delivered["attempts"].as_i64(), Some(attempts + 1));
}

#[tokio::test]
async fn private_and_metadata_addresses_are_refused() {
    let app = spawn_app_with(|c| c.server.operator_token = OP.into()).await;
    let t = app.signup("ssrf@hooks.test", "starter").await;
    for url in [
        "http://127.0.0.1:9/hook",
        "http://localhost:8080/hook",
        "http://10.0.0.5/hook",
        "http://[::1]/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::ffff:169.254.169.254]/",
        "ftp://hooks.example.com/x",
        "not a url",
    ] {
        let r = app.post_json(&t.key, "/v1/webhooks", json!({"url": url, "events": ["invoice.paid"]})).await;
        assert_problem(r, 422, "validation_failed").await;
    }
    let r =
        app.post_json(&t.key, "/v1/webhooks", json!({"url": "https://hooks.example.com/x", "events": ["nope"]})).await;
    assert_problem(r, 422, "validation_failed").await;

    // Allowing private networks never opens the metadata address.
    let open = spawn_app_with(private_allowed).await;
    let t = open.signup("ssrf2@hooks.test", "starter").await;
    let r =
        open.post_json(&t.key, "/v1/webhooks", json!({"url": "http://169.254.169.254/", "events": ["invoice.paid"]}));
    assert_problem(r.await, 422, "validation_failed").await;
    let r =
        open.post_json(&t.key, "/v1/webhooks", json!({"url": "http://127.0.0.1:9/hook", "events": ["invoice.paid"]}));
    assert_eq!(r.await.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn a_slow_receiver_holds_up_no_request() {
    let app = spawn_app_with(private_allowed).await;
    let receiver = Receiver::start(0).await;
    let permits = receiver.hold.acquire_many(Receiver::OPEN as u32).await.expect("closed");
    let t = app.signup("slow@hooks.test", "starter").await;
    subscribe(&app, &t, &receiver.url, &["document.indexed"]).await;
    for i in 0..3 {
        app.upload_text(&t.key, &format!("Doc {i}"), &format!("Refunds of order class {i} are issued within 14 days."))
            .await;
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while receiver.waiting.load(std::sync::atomic::Ordering::SeqCst) < 3 {
        assert!(Instant::now() < deadline, "the deliveries never reached the receiver");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Every delivery is held by the receiver; questions and uploads are answered meanwhile.
    let answer = app.query(&t.key, "How long do refunds take?").await;
    assert!(answer["citations"].as_array().is_some_and(|c| !c.is_empty()), "{answer}");
    app.upload_text(&t.key, "Doc 4", "Orders ship within two days.").await;
    assert!(receiver.got.lock().is_empty(), "the receiver still holds every delivery");
    drop(permits);
    receiver.hold.add_permits(Receiver::OPEN);
    receiver.wait_for("document.indexed", 4).await;
}

#[tokio::test]
async fn invoice_and_state_events_follow_billing() {
    let app = spawn_app_with(|c| {
        private_allowed(c);
        crate::helpers::add_metered_plan(c);
    })
    .await;
    let receiver = Receiver::start(0).await;
    let t = app.signup("billed@hooks.test", "metered").await;
    let events =
        ["invoice.created", "invoice.paid", "invoice.payment_failed", "tenant.state_changed", "document.indexed"];
    subscribe(&app, &t, &receiver.url, &events).await;
    let made = app.close_periods(OP).await;
    let invoice = made["invoices"]
        .as_array()
        .and_then(|all| all.iter().find(|i| i["tenant_id"] == t.id.as_str()))
        .cloned()
        .unwrap_or_else(|| panic!("an invoice for the tenant: {made}"));
    let invoice_id = invoice["invoice_id"].as_str().expect("invoice_id");
    let created = receiver.wait_for("invoice.created", 1).await;
    assert_eq!(created[0]["data"]["invoice_id"], invoice_id);
    assert_eq!(created[0]["data"]["total_cents"], invoice["total_cents"]);

    let pay = |outcome: &'static str| {
        let path = format!("/admin/invoices/{invoice_id}/payment");
        let app = &app;
        async move { app.post_json(OP, &path, json!({"outcome": outcome})).await }
    };
    assert_eq!(pay("failed").await.status(), StatusCode::OK);
    let failed = receiver.wait_for("invoice.payment_failed", 1).await;
    assert_eq!(failed[0]["data"]["invoice_id"], invoice_id);
    let past_due = receiver.wait_for("tenant.state_changed", 1).await;
    assert_eq!(past_due[0]["data"]["to"], "past_due", "{past_due:?}");
    // The same failure reported again (the tenant already in dunning) is not a second event.
    assert_eq!(pay("failed").await.status(), StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert_eq!(receiver.events("invoice.payment_failed").len(), 1, "one event per failed invoice");

    assert_eq!(pay("succeeded").await.status(), StatusCode::OK);
    let paid = receiver.wait_for("invoice.paid", 1).await;
    assert_eq!(paid[0]["data"]["invoice_id"], invoice_id);
    let back = receiver.wait_for("tenant.state_changed", 2).await;
    assert_eq!(back[1]["data"]["to"], "active", "{back:?}");
}

#[tokio::test]
async fn a_threshold_fires_once_however_many_clients_cross_it() {
    let app = spawn_app_with(|c| {
        private_allowed(c);
        let plan = c.plans.iter_mut().find(|p| p.name == "starter").expect("starter");
        plan.quotas.queries = 100;
    })
    .await;
    let receiver = Receiver::start(0).await;
    let t = app.signup("alerts@hooks.test", "starter").await;
    subscribe(&app, &t, &receiver.url, &["usage.threshold_reached"]).await;
    let defaults: Value = app.get(&t.key, "/v1/alerts").await.json().await.expect("json");
    assert_eq!(defaults["thresholds"].as_array().map(Vec::len), Some(8), "80 and 100 of four quotas: {defaults}");
    let out_of_range = json!({"thresholds": [{"meter": "queries", "percent": 5_000_000_000_i64}]});
    let r = app.client.put(app.url("/v1/alerts")).bearer_auth(&t.key).json(&out_of_range).send().await.expect("put");
    assert_problem(r, 422, "validation_failed").await;
    let body = json!({"thresholds": [{"meter": "queries", "percent": 50.0}, {"meter": "queries", "percent": 100}]});
    let put = app.client.put(app.url("/v1/alerts")).bearer_auth(&t.key).json(&body).send().await.expect("put");
    assert_eq!(put.status(), StatusCode::OK);
    app.upload_text(&t.key, "Refunds", "Refunds are issued within 14 days.").await;
    for _ in 0..40 {
        app.query(&t.key, "How long do refunds take?").await;
    }
    assert!(receiver.events("usage.threshold_reached").is_empty(), "40 of 100 crosses nothing");

    // 64 clients cross 50 % together, and then 100 %.
    let asks = (0..64).map(|_| app.post_json(&t.key, "/v1/query", json!({"question": "How long do refunds take?"})));
    let answered = futures::future::join_all(asks).await;
    assert_eq!(answered.iter().filter(|r| r.status() == StatusCode::OK).count(), 60, "the quota holds at 100");
    let fired = receiver.wait_for("usage.threshold_reached", 2).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let fired_again = receiver.events("usage.threshold_reached");
    assert_eq!(fired_again.len(), 2, "each threshold fires once: {fired_again:?}");
    let mut percents: Vec<i64> = fired.iter().map(|e| e["data"]["percent"].as_i64().expect("percent")).collect();
    percents.sort_unstable();
    assert_eq!(percents, [50, 100]);
    let full = fired.iter().find(|e| e["data"]["percent"] == 100).expect("100 %");
    assert_eq!((full["data"]["meter"].as_str(), full["data"]["limit"].as_i64()), (Some("queries"), Some(100)));
    assert_eq!(full["data"]["used"], 100);

    let alerts: Value = app.get(&t.key, "/v1/alerts").await.json().await.expect("json");
    assert_eq!(alerts["fired"].as_array().map(Vec::len), Some(2), "{alerts}");
    let notes = app.services.notifications(&tenantry_domain::TenantId::from_trusted(t.id.clone())).await.expect("read");
    let emails = notes.iter().filter(|n| n.template == "usage_threshold").count();
    assert_eq!(emails, 2, "one email per threshold");
}

#[tokio::test]
async fn a_threshold_fires_once_across_two_nodes() {
    let Some(url) = crate::helpers::fresh_postgres_database().await else {
        eprintln!("TENANTRY_TEST_POSTGRES_URL not set: PostgreSQL variant skipped");
        return;
    };
    let node = |url: String| {
        spawn_app_with(move |c| {
            private_allowed(c);
            c.database.url = url;
            c.server.key_pepper = "alerts-test-pepper-shared-by-both-nodes".into();
            c.plans.iter_mut().find(|p| p.name == "starter").expect("starter").quotas.queries = 40;
        })
    };
    let (a, b) = (node(url.clone()).await, node(url).await);
    let receiver = Receiver::start(0).await;
    let t = a.signup("nodes@hooks.test", "starter").await;
    subscribe(&a, &t, &receiver.url, &["usage.threshold_reached"]).await;
    // 64 clients over both nodes cross 80 % (32 of 40) and 100 % together.
    let asks = (0..64).map(|i| {
        let node = if i % 2 == 0 { &a } else { &b };
        node.post_json(&t.key, "/v1/query", json!({"question": "Anything?"}))
    });
    let answered = futures::future::join_all(asks).await;
    assert_eq!(answered.iter().filter(|r| r.status() == StatusCode::OK).count(), 40, "the quota holds at 40");
    receiver.wait_for("usage.threshold_reached", 2).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let fired = receiver.events("usage.threshold_reached");
    let mut percents: Vec<i64> = fired.iter().map(|e| e["data"]["percent"].as_i64().expect("percent")).collect();
    percents.sort_unstable();
    assert_eq!(percents, [80, 100], "each default threshold fired once over both nodes: {fired:?}");
    let tenant = tenantry_domain::TenantId::from_trusted(t.id.clone());
    let emails = a.services.notifications(&tenant).await.expect("read");
    assert_eq!(emails.iter().filter(|n| n.template == "usage_threshold").count(), 2, "one email per threshold");
}

#[tokio::test]
async fn one_slow_endpoint_holds_at_most_eight_deliveries() {
    let app = spawn_app_with(private_allowed).await;
    let (slow, quick) = (Receiver::start(0).await, Receiver::start(0).await);
    let held = slow.hold.acquire_many(Receiver::OPEN as u32).await.expect("closed");
    let (a, b) = (app.signup("backlog@hooks.test", "starter").await, app.signup("other@hooks.test", "starter").await);
    subscribe(&app, &a, &slow.url, &["document.indexed"]).await;
    subscribe(&app, &b, &quick.url, &["document.indexed"]).await;
    for i in 0..12 {
        app.upload_text(&a.key, &format!("Doc {i}"), &format!("Backlog document number {i} about refunds.")).await;
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while slow.waiting.load(std::sync::atomic::Ordering::SeqCst) < 8 {
        assert!(Instant::now() < deadline, "the slow endpoint never got its share");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The other tenant's event goes out while the slow endpoint holds its eight.
    app.upload_text(&b.key, "Shipping", "Orders ship within two days.").await;
    quick.wait_for("document.indexed", 1).await;
    assert_eq!(
        slow.waiting.load(std::sync::atomic::Ordering::SeqCst),
        8,
        "never more than eight in flight to one endpoint"
    );
    drop(held);
    slow.hold.add_permits(Receiver::OPEN);
    slow.wait_for("document.indexed", 12).await;
}
