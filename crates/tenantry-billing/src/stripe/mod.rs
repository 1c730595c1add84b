//! Stripe's wire protocol: webhook signatures, webhook events, and a small REST client. Nothing here
//! knows about tenants' state; the caller turns events into lifecycle events.

pub mod client;
pub mod event;
pub mod form;
pub mod objects;
pub mod signature;

pub use client::{
    ApiError, IdempotencyKey, NewCheckoutSession, NewCustomer, NewInvoice, NewInvoiceItem, RetryPolicy, StripeClient,
    StripeError, StripeErrorType,
};
pub use event::{Event, EventError, EventKind};
pub use objects::{CheckoutSession, Customer, InvoiceItem, PaymentIntent, StripeInvoice, Subscription};
pub use signature::{sign, SignatureError, WebhookVerifier};

/// The metadata key that names the tenant on every object we create (API.md: events are matched to
/// tenants by `metadata.tenant_id`).
pub const METADATA_TENANT_ID: &str = "tenant_id";
/// The metadata key that names our invoice (`INV-000123`) on Stripe invoices, items and Checkout Sessions.
pub const METADATA_INVOICE: &str = "tenantry_invoice";
