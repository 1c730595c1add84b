//! Webhook events: `{id, type, created, data: {object}}` → the few types billing acts on, typed, and
//! everything else as `Other(type)`. Parse only a payload whose signature was verified.
//!
//! Stripe delivers at least once and in no particular order. Handlers key on [`Event::id`] to drop
//! repeats, and compare [`Event::created`] with what they last applied for the same object so an older
//! event never overwrites newer state.

use serde::Deserialize;
use serde_json::Value;
use tenantry_domain::{TenantId, Timestamp};

use super::objects::{CheckoutSession, StripeInvoice, Subscription};
use super::METADATA_TENANT_ID;

#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("not a Stripe event: {0}")]
    Envelope(#[from] serde_json::Error),
    #[error("{event_type} event with an unexpected object: {source}")]
    Object { event_type: String, source: serde_json::Error },
}

#[derive(Clone, Debug, PartialEq)]
pub enum EventKind {
    /// Checkout's payment went through (with `payment_status` = `paid` for card payments).
    CheckoutSessionCompleted(CheckoutSession),
    InvoicePaid(StripeInvoice),
    InvoicePaymentSucceeded(StripeInvoice),
    InvoicePaymentFailed(StripeInvoice),
    /// The invoice was voided in Stripe (by Tenantry, or by someone in Stripe's dashboard).
    InvoiceVoided(StripeInvoice),
    /// The invoice was written off in Stripe.
    InvoiceMarkedUncollectible(StripeInvoice),
    CustomerSubscriptionDeleted(Subscription),
    /// Any other type, by name; acknowledge it and do nothing.
    Other(String),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub id: String,
    /// Unix seconds, as Stripe sends it; see [`Event::created_at`].
    pub created: i64,
    pub livemode: bool,
    pub kind: EventKind,
    /// `data.object` as sent, for what the typed view leaves out.
    pub object: Value,
}

#[derive(Deserialize)]
struct Envelope {
    id: String,
    #[serde(rename = "type")]
    event_type: String,
    created: i64,
    #[serde(default)]
    livemode: bool,
    data: Data,
}

#[derive(Deserialize)]
struct Data {
    object: Value,
}

impl Event {
    /// Parses a webhook body.
    pub fn parse(payload: &[u8]) -> Result<Self, EventError> {
        let envelope: Envelope = serde_json::from_slice(payload)?;
        let object = envelope.data.object;
        let typed = |object: &Value| -> Result<EventKind, serde_json::Error> {
            let kind = match envelope.event_type.as_str() {
                "checkout.session.completed" => {
                    EventKind::CheckoutSessionCompleted(CheckoutSession::deserialize(object)?)
                }
                "invoice.paid" => EventKind::InvoicePaid(StripeInvoice::deserialize(object)?),
                "invoice.payment_succeeded" => EventKind::InvoicePaymentSucceeded(StripeInvoice::deserialize(object)?),
                "invoice.payment_failed" => EventKind::InvoicePaymentFailed(StripeInvoice::deserialize(object)?),
                "invoice.voided" => EventKind::InvoiceVoided(StripeInvoice::deserialize(object)?),
                "invoice.marked_uncollectible" => {
                    EventKind::InvoiceMarkedUncollectible(StripeInvoice::deserialize(object)?)
                }
                "customer.subscription.deleted" => {
                    EventKind::CustomerSubscriptionDeleted(Subscription::deserialize(object)?)
                }
                other => EventKind::Other(other.to_owned()),
            };
            Ok(kind)
        };
        let kind =
            typed(&object).map_err(|source| EventError::Object { event_type: envelope.event_type.clone(), source })?;
        Ok(Self { id: envelope.id, created: envelope.created, livemode: envelope.livemode, kind, object })
    }

    /// The event's type as Stripe names it (`invoice.paid`).
    pub fn event_type(&self) -> &str {
        match &self.kind {
            EventKind::CheckoutSessionCompleted(_) => "checkout.session.completed",
            EventKind::InvoicePaid(_) => "invoice.paid",
            EventKind::InvoicePaymentSucceeded(_) => "invoice.payment_succeeded",
            EventKind::InvoicePaymentFailed(_) => "invoice.payment_failed",
            EventKind::InvoiceVoided(_) => "invoice.voided",
            EventKind::InvoiceMarkedUncollectible(_) => "invoice.marked_uncollectible",
            EventKind::CustomerSubscriptionDeleted(_) => "customer.subscription.deleted",
            EventKind::Other(t) => t,
        }
    }

    /// When Stripe created the event: the order to apply events in, whatever order they arrive in.
    pub fn created_at(&self) -> Timestamp {
        Timestamp(self.created.saturating_mul(1_000))
    }

    /// `metadata.tenant_id` of the object, when it is there and is a well-formed tenant id. Objects made
    /// outside Tenantry lack it; the caller then matches by stored Stripe ids ([`Event::customer_id`]).
    pub fn tenant_id(&self) -> Option<TenantId> {
        self.object.get("metadata")?.get(METADATA_TENANT_ID)?.as_str().and_then(TenantId::parse)
    }

    /// The object's id (`in_…`, `cs_…`, `sub_…`).
    pub fn object_id(&self) -> Option<&str> {
        self.object.get("id")?.as_str()
    }

    /// The customer the object belongs to: its `customer` (an id, or an expanded object's id), or the
    /// object itself when it is a customer.
    pub fn customer_id(&self) -> Option<&str> {
        match self.object.get("customer") {
            Some(Value::String(id)) => Some(id),
            Some(Value::Object(customer)) => customer.get("id")?.as_str(),
            _ if self.object.get("object").and_then(Value::as_str) == Some("customer") => self.object_id(),
            _ => None,
        }
    }
}
