//! The Stripe client against a fake Stripe (axum on 127.0.0.1:0) that checks what real Stripe would
//! check (Bearer key, form encoding, Idempotency-Key on every POST) and answers with Stripe's own example
//! objects (tests/fixtures).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Value};
use tenantry_billing::stripe::{
    IdempotencyKey, NewCheckoutSession, NewCustomer, NewInvoice, NewInvoiceItem, RetryPolicy, StripeClient,
    StripeError, StripeErrorType,
};
use tenantry_billing::{InvoiceNumber, InvoiceStatus};
use tenantry_domain::{Cents, TenantId};

const API_KEY: &str = "sk_test_fake_4eC39HqLyjWDarjtT1zdp7dc";
const TENANT: &str = "ten_0190f0a1b2c3d4e5f60718293a4b5c6d";

/// One request as the fake saw it.
#[derive(Clone, Debug)]
struct Seen {
    path: String,
    idempotency_key: String,
    raw_body: String,
    form: BTreeMap<String, String>,
}

#[derive(Clone, Default)]
struct Fake {
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Fake {
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("not poisoned").clone()
    }

    fn attempts(&self, path: &str) -> usize {
        self.seen().iter().filter(|s| s.path == path).count()
    }
}

fn fixture(raw: &str) -> Value {
    serde_json::from_str(raw).expect("fixture is JSON")
}

fn stripe_error(status: StatusCode, kind: &str, code: &str, message: &str) -> Response {
    let body = json!({"error": {"type": kind, "code": code, "message": message, "doc_url": "https://stripe.com/docs"}});
    (status, [("request-id", "req_fake123")], axum::Json(body)).into_response()
}

fn metadata(form: &BTreeMap<String, String>) -> Value {
    let map: serde_json::Map<String, Value> = form
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix("metadata[")?.strip_suffix(']')?.to_owned(), json!(v))))
        .collect();
    Value::Object(map)
}

async fn stripe(State(fake): State<Fake>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    if header("authorization") != format!("Bearer {API_KEY}") {
        return stripe_error(StatusCode::UNAUTHORIZED, "invalid_request_error", "api_key_invalid", "Invalid API Key");
    }
    if header("content-type") != "application/x-www-form-urlencoded" {
        return stripe_error(StatusCode::BAD_REQUEST, "invalid_request_error", "bad_content_type", "form bodies only");
    }
    let raw_body = String::from_utf8(body.to_vec()).expect("utf-8 body");
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(&raw_body).expect("a form body");
    let form: BTreeMap<String, String> = pairs.into_iter().collect();
    let path = uri.path().to_owned();
    let seen = Seen { path: path.clone(), idempotency_key: header("idempotency-key"), raw_body, form: form.clone() };
    let attempt = {
        let mut all = fake.seen.lock().expect("not poisoned");
        all.push(seen.clone());
        all.iter().filter(|s| s.path == path).count()
    };
    if seen.idempotency_key.is_empty() {
        return stripe_error(StatusCode::BAD_REQUEST, "invalid_request_error", "missing_key", "no Idempotency-Key");
    }
    let invoice = |status: &str| {
        let mut object = fixture(include_str!("../fixtures/invoice.json"));
        let id = path.split('/').nth(3).unwrap_or_default();
        object["id"] = json!(id);
        object["status"] = json!(status);
        object
    };
    let object = match path.as_str() {
        "/v1/customers" => {
            let mut object = fixture(include_str!("../fixtures/customer.json"));
            object["email"] = json!(form.get("email"));
            object["name"] = json!(form.get("name"));
            object["metadata"] = metadata(&form);
            object
        }
        "/v1/invoiceitems" => {
            let mut object = fixture(include_str!("../fixtures/invoiceitem.json"));
            object["amount"] = json!(form.get("amount").and_then(|a| a.parse::<i64>().ok()));
            object["invoice"] = json!(form.get("invoice"));
            object["description"] = json!(form.get("description"));
            object["metadata"] = metadata(&form);
            object
        }
        "/v1/invoices" => {
            let mut object = fixture(include_str!("../fixtures/invoice.json"));
            object["status"] = json!("draft");
            object["metadata"] = metadata(&form);
            object
        }
        "/v1/invoices/in_1Pgc6tB7WZ01zgkWu9fdqL6I/finalize" => invoice("open"),
        "/v1/invoices/in_1Pgc6tB7WZ01zgkWu9fdqL6I/pay" => invoice("paid"),
        "/v1/invoices/in_1Pgc6tB7WZ01zgkWu9fdqL6I/mark_uncollectible" => invoice("uncollectible"),
        "/v1/invoices/in_1Pgc6tB7WZ01zgkWu9fdqL6I/void" => invoice("void"),
        "/v1/invoices/in_declined/pay" => {
            let mut response =
                stripe_error(StatusCode::PAYMENT_REQUIRED, "card_error", "card_declined", "Your card was declined.");
            // Stripe says a decline is final for this request.
            response.headers_mut().insert("stripe-should-retry", "false".parse().expect("header value"));
            return response;
        }
        "/v1/invoices/in_down/pay" => {
            return stripe_error(StatusCode::SERVICE_UNAVAILABLE, "api_error", "unavailable", "Try again later.")
        }
        "/v1/checkout/sessions" if attempt == 1 => {
            return stripe_error(
                StatusCode::TOO_MANY_REQUESTS,
                "invalid_request_error",
                "rate_limit",
                "Too many requests",
            )
        }
        "/v1/checkout/sessions" => {
            let mut object = fixture(include_str!("../fixtures/checkout_session.json"));
            object["client_reference_id"] = json!(form.get("client_reference_id"));
            object["metadata"] = metadata(&form);
            object
        }
        _ => return stripe_error(StatusCode::NOT_FOUND, "invalid_request_error", "resource_missing", "No such path"),
    };
    axum::Json(object).into_response()
}

async fn spawn_fake_at() -> (Fake, String) {
    let fake = Fake::default();
    let app = Router::new().fallback(stripe).with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (fake, base)
}

/// A fake Stripe and a client for it with short backoffs.
async fn spawn_fake() -> (Fake, StripeClient) {
    let (fake, base) = spawn_fake_at().await;
    let retry = RetryPolicy {
        max_retries: 2,
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(20),
    };
    let client = StripeClient::new(API_KEY, base).expect("valid client").with_retry_policy(retry);
    (fake, client)
}

fn tenant() -> TenantId {
    TenantId::parse(TENANT).expect("valid tenant id")
}

fn key(k: &str) -> IdempotencyKey {
    IdempotencyKey::new(k).expect("valid key")
}

#[tokio::test]
async fn creates_a_customer_tagged_with_the_tenant() {
    let (fake, client) = spawn_fake().await;
    let new = NewCustomer { tenant_id: tenant(), email: "ada@example.com".into(), name: "Analytical Engines".into() };
    let customer = client.create_customer(&new, &key("ten_1:customer")).await.expect("created");
    assert_eq!(customer.id, "cus_QXg1o8vcGmoR32");
    assert_eq!(customer.email.as_deref(), Some("ada@example.com"));
    assert_eq!(customer.metadata.get("tenant_id").map(String::as_str), Some(TENANT));

    let seen = &fake.seen()[0];
    assert_eq!(seen.idempotency_key, "ten_1:customer");
    assert_eq!(
        seen.raw_body,
        format!("email=ada%40example.com&name=Analytical%20Engines&metadata[tenant_id]={TENANT}"),
        "brackets literal, everything else percent-encoded"
    );
}

#[tokio::test]
async fn bills_an_invoice_end_to_end() {
    let (fake, client) = spawn_fake().await;
    let stripe_invoice = client
        .create_invoice(
            &NewInvoice {
                tenant_id: tenant(),
                customer: "cus_QXg1o8vcGmoR32".into(),
                number: InvoiceNumber::new(123),
                description: Some("February 2026".into()),
                metadata: BTreeMap::new(),
            },
            &key("INV-000123:create"),
        )
        .await
        .expect("created");
    assert_eq!(stripe_invoice.status(), Some(InvoiceStatus::Draft));
    assert_eq!(stripe_invoice.metadata.get("tenantry_invoice").map(String::as_str), Some("INV-000123"));

    let item = client
        .create_invoice_item(
            &NewInvoiceItem {
                tenant_id: tenant(),
                customer: "cus_QXg1o8vcGmoR32".into(),
                invoice: Some(stripe_invoice.id.clone()),
                amount: Cents(-2_000),
                currency: "USD".into(),
                description: "Unused time on the starter plan".into(),
                metadata: BTreeMap::from([("line".to_owned(), "2".to_owned())]),
            },
            &key("INV-000123:line:2"),
        )
        .await
        .expect("created");
    assert_eq!(item.amount, -2_000);
    assert_eq!(item.invoice.as_deref(), Some(stripe_invoice.id.as_str()));

    let id = stripe_invoice.id.as_str();
    let open = client.finalize_invoice(id, &key("INV-000123:finalize")).await.expect("finalised");
    assert_eq!(open.status(), Some(InvoiceStatus::Open));
    let paid = client.pay_invoice(id, &key("INV-000123:pay:1")).await.expect("paid");
    assert_eq!(paid.status(), Some(InvoiceStatus::Paid));
    // The fake keeps no state: the write-off and void calls below check their wire format, not a story.
    let written_off = client.mark_uncollectible(id, &key("INV-000123:uncollectible")).await.expect("written off");
    assert_eq!(written_off.status(), Some(InvoiceStatus::Uncollectible));
    let void = client.void_invoice(id, &key("INV-000123:void")).await.expect("voided");
    assert_eq!(void.status(), Some(InvoiceStatus::Void));

    let seen = fake.seen();
    let invoice_form = &seen[0].form;
    assert_eq!(invoice_form["customer"], "cus_QXg1o8vcGmoR32");
    assert_eq!(invoice_form["collection_method"], "charge_automatically");
    assert_eq!(invoice_form["auto_advance"], "false");
    assert_eq!(invoice_form["metadata[tenant_id]"], TENANT);
    assert_eq!(invoice_form["metadata[tenantry_invoice]"], "INV-000123");
    let item_form = &seen[1].form;
    assert_eq!(item_form["amount"], "-2000");
    assert_eq!(item_form["currency"], "usd");
    assert_eq!(item_form["invoice"], "in_1Pgc6tB7WZ01zgkWu9fdqL6I");
    assert_eq!(item_form["metadata[line]"], "2");
    assert_eq!(item_form["metadata[tenant_id]"], TENANT);
    assert_eq!(
        seen.iter().map(|s| s.path.as_str()).collect::<Vec<_>>(),
        [
            "/v1/invoices",
            "/v1/invoiceitems",
            "/v1/invoices/in_1Pgc6tB7WZ01zgkWu9fdqL6I/finalize",
            "/v1/invoices/in_1Pgc6tB7WZ01zgkWu9fdqL6I/pay",
            "/v1/invoices/in_1Pgc6tB7WZ01zgkWu9fdqL6I/mark_uncollectible",
            "/v1/invoices/in_1Pgc6tB7WZ01zgkWu9fdqL6I/void",
        ]
    );
    assert!(seen.iter().all(|s| !s.idempotency_key.is_empty()), "every POST carries a key");
}

#[tokio::test]
async fn a_429_is_retried_with_the_same_idempotency_key() {
    let (fake, client) = spawn_fake().await;
    let new = NewCheckoutSession {
        tenant_id: tenant(),
        amount: Cents(49_900),
        currency: "usd".into(),
        product_name: "Tenantry pro, first month".into(),
        success_url: "https://tenantry.test/portal?paid=1".into(),
        cancel_url: "https://tenantry.test/signup".into(),
        customer: Some("cus_QXg1o8vcGmoR32".into()),
        customer_email: Some("ignored-when-customer-is-set@example.com".into()),
        invoice_number: Some(InvoiceNumber::new(1)),
        metadata: BTreeMap::new(),
    };
    let session =
        client.create_checkout_session(&new, &key("INV-000001:checkout")).await.expect("created after a retry");
    assert!(session.url.as_deref().is_some_and(|u| u.starts_with("https://checkout.stripe.com/")));
    assert_eq!(session.client_reference_id.as_deref(), Some(TENANT));
    assert_eq!(session.metadata.get("tenantry_invoice").map(String::as_str), Some("INV-000001"));

    let seen = fake.seen();
    assert_eq!(seen.len(), 2, "one 429, then success");
    assert_eq!(seen[0].idempotency_key, "INV-000001:checkout");
    assert_eq!(seen[1].idempotency_key, seen[0].idempotency_key, "the retry reuses the key");
    assert_eq!(seen[1].raw_body, seen[0].raw_body, "and the same body");
    let form = &seen[1].form;
    assert_eq!(form["mode"], "payment");
    assert_eq!(form["line_items[0][price_data][currency]"], "usd");
    assert_eq!(form["line_items[0][price_data][unit_amount]"], "49900");
    assert_eq!(form["line_items[0][price_data][product_data][name]"], "Tenantry pro, first month");
    assert_eq!(form["line_items[0][quantity]"], "1");
    assert_eq!(form["success_url"], "https://tenantry.test/portal?paid=1");
    assert_eq!(form["client_reference_id"], TENANT);
    assert_eq!(form["metadata[tenant_id]"], TENANT);
    assert_eq!(form["payment_intent_data[metadata][tenant_id]"], TENANT);
    assert_eq!(form["customer"], "cus_QXg1o8vcGmoR32");
    assert!(!form.contains_key("customer_email"), "Stripe refuses customer and customer_email together");
}

#[tokio::test]
async fn stripe_errors_are_typed() {
    let (fake, client) = spawn_fake().await;
    let err = client.pay_invoice("in_declined", &key("in_declined:pay")).await.expect_err("declined");
    let api = err.api().expect("an API error");
    assert_eq!(api.status, 402);
    assert_eq!(api.kind, StripeErrorType::CardError);
    assert_eq!(api.code.as_deref(), Some("card_declined"));
    assert_eq!(api.message, "Your card was declined.");
    assert_eq!(api.request_id.as_deref(), Some("req_fake123"));
    assert!(!err.is_retryable());
    assert_eq!(fake.attempts("/v1/invoices/in_declined/pay"), 1, "a decline is not retried");

    let err = client.finalize_invoice("in_missing", &key("in_missing:finalize")).await.expect_err("missing");
    assert_eq!(err.api().map(|e| (e.status, e.code.as_deref())), Some((404, Some("resource_missing"))));
    assert_eq!(fake.attempts("/v1/invoices/in_missing/finalize"), 1);
}

#[tokio::test]
async fn retries_are_bounded() {
    let (fake, client) = spawn_fake().await;
    let err = client.pay_invoice("in_down", &key("in_down:pay")).await.expect_err("stays down");
    assert_eq!(err.api().map(|e| e.status), Some(503));
    assert!(err.is_retryable(), "the caller's job may try again later, with the same key");
    assert_eq!(fake.attempts("/v1/invoices/in_down/pay"), 3, "the first attempt and two retries");
    let keys: Vec<String> = fake.seen().into_iter().map(|s| s.idempotency_key).collect();
    assert!(keys.iter().all(|k| k == "in_down:pay"));
}

#[tokio::test]
async fn the_key_and_unreachable_servers() {
    let (_fake, client) = spawn_fake().await;
    let wrong =
        StripeClient::new("sk_test_wrong", "http://127.0.0.1:1").expect("valid").with_retry_policy(RetryPolicy {
            max_retries: 1,
            initial_backoff: Duration::ZERO,
            max_backoff: Duration::ZERO,
        });
    let err = wrong.void_invoice("in_1", &key("k")).await.expect_err("nothing listens on port 1");
    assert!(matches!(err, StripeError::Transport(_)) && err.is_retryable(), "{err:?}");

    let bad_id = client.void_invoice("in_1/../../customers", &key("k")).await.expect_err("not an id");
    assert!(matches!(bad_id, StripeError::InvalidRequest(_)));
}

#[tokio::test]
async fn a_wrong_api_key_is_refused_by_stripe() {
    let (fake, base) = spawn_fake_at().await;
    let client = StripeClient::new("sk_test_wrong", base).expect("valid");
    let err = client.pay_invoice("in_1Pgc6tB7WZ01zgkWu9fdqL6I", &key("k")).await.expect_err("unauthorised");
    let api = err.api().expect("an API error");
    assert_eq!(
        (api.status, api.kind.clone(), api.code.as_deref()),
        (401, StripeErrorType::InvalidRequestError, Some("api_key_invalid"))
    );
    assert!(!err.is_retryable());
    assert!(fake.seen().is_empty(), "the fake refused before recording");
}
