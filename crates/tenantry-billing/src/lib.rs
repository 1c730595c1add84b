//! Billing's core: rating a period's metered usage into invoice lines, proration on plan change, the
//! invoice and its status table, and Stripe's wire protocol (webhook signatures, events, a REST client).
//! No database and no service wiring: the caller feeds it the ledger's sums and stores what it returns.

mod arith;
pub mod invoice;
pub mod line;
pub mod proration;
pub mod rating;
pub mod stripe;

pub use invoice::{Invoice, InvoiceError, InvoiceNumber, InvoiceStatus};
pub use line::{BillingMeter, InvoiceLine, LineKind};
pub use proration::{prorate, Proration, ProrationError};
pub use rating::{MeteredUsage, Pricing, RatingError, Tier, TierPart, Tiers};
