//! The invoice: its number, lines and totals, and the one table that says which status may follow which.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tenantry_domain::quota::BillingPeriod;
use tenantry_domain::{Cents, Timestamp};

use crate::line::InvoiceLine;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InvoiceError {
    #[error("an invoice cannot go from {from} to {to}")]
    InvalidTransition { from: InvoiceStatus, to: InvoiceStatus },
    #[error("lines can only be added to a draft invoice; this one is {0}")]
    NotDraft(InvoiceStatus),
    #[error("the invoice total does not fit in 64-bit cents")]
    AmountOverflow,
    #[error("currency must be a three-letter ISO 4217 code, got {0:?}")]
    InvalidCurrency(String),
}

/// `INV-000123`: the caller's sequence number, zero-padded to six digits (more when it grows past them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InvoiceNumber(u64);

impl InvoiceNumber {
    pub const PREFIX: &'static str = "INV-";

    pub fn new(sequence: u64) -> Self {
        Self(sequence)
    }

    pub fn sequence(self) -> u64 {
        self.0
    }

    /// Accepts what `Display` writes: the prefix and at least six digits.
    pub fn parse(raw: &str) -> Option<Self> {
        let digits = raw.strip_prefix(Self::PREFIX)?;
        if digits.len() < 6 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse().ok().map(Self).filter(|n| n.to_string() == raw)
    }
}

impl fmt::Display for InvoiceNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{:06}", Self::PREFIX, self.0)
    }
}

impl Serialize for InvoiceNumber {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for InvoiceNumber {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Self::parse(&raw).ok_or_else(|| serde::de::Error::custom(format!("not an invoice number: {raw:?}")))
    }
}

pub use tenantry_domain::invoice::{InvoiceStatus, TRANSITIONS};

/// An invoice for one tenant and period. The totals are always the sum of the lines: the fields are
/// private so nothing can set one without the other.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Invoice {
    number: InvoiceNumber,
    period_start: Timestamp,
    period_end: Timestamp,
    currency: String,
    status: InvoiceStatus,
    lines: Vec<InvoiceLine>,
    subtotal_cents: Cents,
    total_cents: Cents,
}

impl Invoice {
    /// A new draft. `currency` is an ISO 4217 code in any case; it is kept lower-case, as Stripe does.
    pub fn draft(
        number: InvoiceNumber,
        period: BillingPeriod,
        currency: &str,
        lines: Vec<InvoiceLine>,
    ) -> Result<Self, InvoiceError> {
        Self::restore(number, period, currency, InvoiceStatus::Draft, lines)
    }

    /// An invoice read back from the store, in whatever status it was saved in; totals are recomputed.
    pub fn restore(
        number: InvoiceNumber,
        period: BillingPeriod,
        currency: &str,
        status: InvoiceStatus,
        lines: Vec<InvoiceLine>,
    ) -> Result<Self, InvoiceError> {
        let currency = currency.to_ascii_lowercase();
        if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_lowercase()) {
            return Err(InvoiceError::InvalidCurrency(currency));
        }
        let subtotal = sum(&lines)?;
        Ok(Self {
            number,
            period_start: period.start,
            period_end: period.end,
            currency,
            status,
            lines,
            subtotal_cents: subtotal,
            // No tax or discounts yet: the total is the subtotal.
            total_cents: subtotal,
        })
    }

    pub fn number(&self) -> InvoiceNumber {
        self.number
    }

    pub fn period(&self) -> BillingPeriod {
        BillingPeriod { start: self.period_start, end: self.period_end }
    }

    pub fn currency(&self) -> &str {
        &self.currency
    }

    pub fn status(&self) -> InvoiceStatus {
        self.status
    }

    pub fn lines(&self) -> &[InvoiceLine] {
        &self.lines
    }

    pub fn subtotal_cents(&self) -> Cents {
        self.subtotal_cents
    }

    /// May be negative when credits (proration) exceed charges; the caller decides whether that becomes
    /// a customer balance.
    pub fn total_cents(&self) -> Cents {
        self.total_cents
    }

    /// Adds a line (e.g. proration) while the invoice is still a draft.
    pub fn push_line(&mut self, line: InvoiceLine) -> Result<(), InvoiceError> {
        if self.status != InvoiceStatus::Draft {
            return Err(InvoiceError::NotDraft(self.status));
        }
        let subtotal = self.subtotal_cents.0.checked_add(line.amount_cents.0).ok_or(InvoiceError::AmountOverflow)?;
        self.lines.push(line);
        self.subtotal_cents = Cents(subtotal);
        self.total_cents = Cents(subtotal);
        Ok(())
    }

    /// Moves to `to` if [`TRANSITIONS`] allows it; otherwise nothing changes.
    pub fn transition(&mut self, to: InvoiceStatus) -> Result<(), InvoiceError> {
        if !self.status.can_become(to) {
            return Err(InvoiceError::InvalidTransition { from: self.status, to });
        }
        self.status = to;
        Ok(())
    }
}

fn sum(lines: &[InvoiceLine]) -> Result<Cents, InvoiceError> {
    lines
        .iter()
        .try_fold(0i64, |total, line| total.checked_add(line.amount_cents.0))
        .map(Cents)
        .ok_or(InvoiceError::AmountOverflow)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::line::LineKind;

    fn period() -> BillingPeriod {
        BillingPeriod { start: Timestamp(0), end: Timestamp(86_400_000) }
    }

    #[test]
    fn numbers_are_zero_padded_and_round_trip() {
        assert_eq!(InvoiceNumber::new(123).to_string(), "INV-000123");
        assert_eq!(InvoiceNumber::new(12_345_678).to_string(), "INV-12345678");
        assert_eq!(InvoiceNumber::parse("INV-000123"), Some(InvoiceNumber::new(123)));
        assert_eq!(InvoiceNumber::parse("INV-12345678"), Some(InvoiceNumber::new(12_345_678)));
        for bad in ["INV-123", "INV-0000123", "inv-000123", "INV-00012a", "INV-", "000123"] {
            assert_eq!(InvoiceNumber::parse(bad), None, "{bad}");
        }
        let json = serde_json::to_string(&InvoiceNumber::new(7)).expect("serialises");
        assert_eq!(json, "\"INV-000007\"");
        assert_eq!(serde_json::from_str::<InvoiceNumber>(&json).ok(), Some(InvoiceNumber::new(7)));
    }

    #[test]
    fn the_transition_table_is_exactly_the_documented_one() {
        use InvoiceStatus::*;
        let allowed = [
            (Draft, Open),
            (Open, Paid),
            (Open, Uncollectible),
            (Open, Void),
            (Uncollectible, Paid),
            (Uncollectible, Void),
            (Draft, Void),
        ];
        for from in InvoiceStatus::ALL {
            for to in InvoiceStatus::ALL {
                let mut invoice =
                    Invoice::restore(InvoiceNumber::new(1), period(), "usd", from, vec![]).expect("valid");
                let result = invoice.transition(to);
                if allowed.contains(&(from, to)) {
                    assert_eq!(result, Ok(()), "{from} → {to}");
                    assert_eq!(invoice.status(), to);
                } else {
                    assert_eq!(result, Err(InvoiceError::InvalidTransition { from, to }), "{from} → {to}");
                    assert_eq!(invoice.status(), from, "a refused transition changes nothing");
                }
            }
        }
        assert!(Paid.is_final() && Void.is_final());
        assert!(!Draft.is_final() && !Open.is_final() && !Uncollectible.is_final());
    }

    #[test]
    fn only_drafts_take_lines_and_totals_follow() {
        let lines = vec![
            InvoiceLine::fixed(LineKind::Base, "a", Cents(1_000)),
            InvoiceLine::fixed(LineKind::Base, "credit", Cents(-300)),
        ];
        let mut invoice = Invoice::draft(InvoiceNumber::new(1), period(), "USD", lines).expect("valid");
        assert_eq!(invoice.currency(), "usd");
        assert_eq!(invoice.subtotal_cents(), Cents(700));
        invoice.push_line(InvoiceLine::fixed(LineKind::Base, "b", Cents(50))).expect("draft");
        assert_eq!(invoice.total_cents(), Cents(750));
        invoice.transition(InvoiceStatus::Open).expect("finalise");
        assert_eq!(
            invoice.push_line(InvoiceLine::fixed(LineKind::Base, "c", Cents(1))),
            Err(InvoiceError::NotDraft(InvoiceStatus::Open))
        );
        assert_eq!(invoice.total_cents(), Cents(750));
    }

    #[test]
    fn bad_currency_and_overflow_are_refused() {
        let n = InvoiceNumber::new(1);
        assert!(matches!(Invoice::draft(n, period(), "dollars", vec![]), Err(InvoiceError::InvalidCurrency(_))));
        let huge = vec![
            InvoiceLine::fixed(LineKind::Base, "a", Cents(i64::MAX)),
            InvoiceLine::fixed(LineKind::Base, "b", Cents(1)),
        ];
        assert_eq!(Invoice::draft(n, period(), "usd", huge), Err(InvoiceError::AmountOverflow));
    }

    #[test]
    fn serialises_in_the_api_shape() {
        let invoice = Invoice::draft(
            InvoiceNumber::new(42),
            period(),
            "usd",
            vec![InvoiceLine::fixed(LineKind::Base, "Pro plan", Cents(49_900))],
        )
        .expect("valid");
        let json = serde_json::to_value(&invoice).expect("serialises");
        assert_eq!(json["number"], "INV-000042");
        assert_eq!(json["period_start"], "1970-01-01T00:00:00Z");
        assert_eq!(json["status"], "draft");
        assert_eq!(json["total_cents"], 49_900);
        assert_eq!(json["lines"][0]["meter"], serde_json::Value::Null);
        assert_eq!(json["lines"][0]["unit_amount_decimal"], "49900");
    }
}
