//! Webhook events built from Stripe's example objects (tests/fixtures/README.md).

use tenantry_billing::stripe::{Event, EventError, EventKind};
use tenantry_billing::InvoiceStatus;
use tenantry_domain::{TenantId, Timestamp};

const TENANT: &str = "ten_0190f0a1b2c3d4e5f60718293a4b5c6d";

fn parse(payload: &str) -> Event {
    Event::parse(payload.as_bytes()).expect("a valid event")
}

fn tenant() -> Option<TenantId> {
    TenantId::parse(TENANT)
}

#[test]
fn checkout_session_completed() {
    let event = parse(include_str!("../fixtures/event_checkout_session_completed.json"));
    assert_eq!(event.id, "evt_1PgcCheckoutCompleted00001");
    assert_eq!(event.event_type(), "checkout.session.completed");
    assert_eq!(event.created_at(), Timestamp(1_721_954_100_000));
    assert_eq!(event.tenant_id(), tenant());
    assert_eq!(event.customer_id(), Some("cus_QXg1o8vcGmoR32"));
    let EventKind::CheckoutSessionCompleted(session) = &event.kind else { panic!("{:?}", event.kind) };
    assert_eq!(event.object_id(), Some(session.id.as_str()));
    assert_eq!(session.payment_status.as_deref(), Some("paid"));
    assert_eq!(session.client_reference_id.as_deref(), Some(TENANT));
    assert_eq!(session.metadata.get("tenantry_invoice").map(String::as_str), Some("INV-000001"));
    assert!(session.url.as_deref().is_some_and(|u| u.starts_with("https://checkout.stripe.com/")));
}

#[test]
fn invoice_paid_and_payment_succeeded() {
    for (fixture, kind) in [
        (include_str!("../fixtures/event_invoice_paid.json"), "invoice.paid"),
        (include_str!("../fixtures/event_invoice_payment_succeeded.json"), "invoice.payment_succeeded"),
    ] {
        let event = parse(fixture);
        assert_eq!(event.event_type(), kind);
        assert_eq!(event.tenant_id(), tenant());
        assert_eq!(event.object_id(), Some("in_1Pgc6tB7WZ01zgkWu9fdqL6I"));
        assert_eq!(event.customer_id(), Some("cus_QXg1o8vcGmoR32"));
        let (EventKind::InvoicePaid(invoice) | EventKind::InvoicePaymentSucceeded(invoice)) = &event.kind else {
            panic!("{:?}", event.kind)
        };
        assert_eq!(invoice.status(), Some(InvoiceStatus::Paid));
        assert_eq!(invoice.amount_paid, 1_000);
        assert_eq!(invoice.metadata.get("tenantry_invoice").map(String::as_str), Some("INV-000002"));
    }
}

#[test]
fn invoice_payment_failed_without_metadata_and_an_expanded_customer() {
    let event = parse(include_str!("../fixtures/event_invoice_payment_failed.json"));
    assert_eq!(event.tenant_id(), None, "made outside Tenantry: matched by stored ids instead");
    assert_eq!(event.customer_id(), Some("cus_QXg1o8vcGmoR32"));
    let EventKind::InvoicePaymentFailed(invoice) = &event.kind else { panic!("{:?}", event.kind) };
    assert_eq!(invoice.customer.as_deref(), Some("cus_QXg1o8vcGmoR32"));
    assert_eq!(invoice.status(), Some(InvoiceStatus::Open));
    assert_eq!(invoice.attempt_count, 1);
}

#[test]
fn invoice_voided_and_marked_uncollectible() {
    // Stripe's example event with the type and status of each: same envelope, same invoice object.
    for (kind, status) in [("invoice.voided", "void"), ("invoice.marked_uncollectible", "uncollectible")] {
        let mut event: serde_json::Value =
            serde_json::from_str(include_str!("../fixtures/event_invoice_paid.json")).expect("json");
        event["type"] = serde_json::json!(kind);
        event["data"]["object"]["status"] = serde_json::json!(status);
        let event = parse(&event.to_string());
        assert_eq!(event.event_type(), kind);
        assert_eq!(event.tenant_id(), tenant());
        let invoice = match &event.kind {
            EventKind::InvoiceVoided(i) if kind == "invoice.voided" => i,
            EventKind::InvoiceMarkedUncollectible(i) if kind == "invoice.marked_uncollectible" => i,
            other => panic!("{kind}: {other:?}"),
        };
        assert_eq!(invoice.status().map(InvoiceStatus::as_str), Some(status));
    }
}

#[test]
fn customer_subscription_deleted() {
    let event = parse(include_str!("../fixtures/event_customer_subscription_deleted.json"));
    assert_eq!(event.tenant_id(), tenant());
    let EventKind::CustomerSubscriptionDeleted(sub) = &event.kind else { panic!("{:?}", event.kind) };
    assert_eq!(sub.id, "sub_1Pgc6rB7WZ01zgkWNy0Cn5nw");
    assert_eq!(sub.status.as_deref(), Some("canceled"));
    assert_eq!(event.customer_id(), Some("cus_QXg1o8vcGmoR32"));
}

#[test]
fn other_types_are_kept_by_name() {
    // Stripe's example event as published: a `plan.created`.
    let event = parse(include_str!("../fixtures/event.json"));
    assert_eq!(event.kind, EventKind::Other("plan.created".into()));
    assert_eq!(event.event_type(), "plan.created");
    assert_eq!(event.object_id(), Some("price_1PgafmB7WZ01zgkW6dKueIc5"));
    assert_eq!(event.tenant_id(), None);
    assert_eq!(event.customer_id(), None);
    // A customer event's customer is the object itself.
    let customer = include_str!("../fixtures/customer.json");
    let payload = format!(r#"{{"id":"evt_2","type":"customer.updated","created":1,"data":{{"object":{customer}}}}}"#);
    assert_eq!(parse(&payload).customer_id(), Some("cus_QXg1o8vcGmoR32"));
}

#[test]
fn out_of_order_delivery_can_be_detected_by_created() {
    let paid = parse(include_str!("../fixtures/event_invoice_paid.json"));
    let failed = parse(include_str!("../fixtures/event_invoice_payment_failed.json"));
    assert!(failed.created_at() > paid.created_at());
}

#[test]
fn broken_events_are_typed_errors() {
    assert!(matches!(Event::parse(b"not json"), Err(EventError::Envelope(_))));
    assert!(matches!(Event::parse(br#"{"id":"evt_1","type":"invoice.paid"}"#), Err(EventError::Envelope(_))));
    let no_id = br#"{"id":"evt_1","type":"invoice.paid","created":1,"data":{"object":{"status":"paid"}}}"#;
    assert!(matches!(Event::parse(no_id), Err(EventError::Object { event_type, .. }) if event_type == "invoice.paid"));
    // An unknown type with any object is fine.
    let other = br#"{"id":"evt_1","type":"x.y","created":1,"data":{"object":{}}}"#;
    assert!(Event::parse(other).is_ok());
}
