//! Proration on a plan change inside a period: credit for the old plan's unused time, charge for the new
//! plan's remaining time. Base prices only: usage is billed in arrears when the period closes.
//!
//! The rule: `amount = round(price × seconds remaining / period seconds)`, half away from zero, in integer
//! arithmetic (i128). Seconds are whole: the remaining time is `(end − t)` in milliseconds, floored to
//! seconds, so a change in a period's last second prorates to nothing. A change at `start` credits and
//! charges the full prices; at `end`, nothing.

use serde::Serialize;
use tenantry_domain::quota::BillingPeriod;
use tenantry_domain::{Cents, Timestamp};

use crate::arith::div_round_half_away;
use crate::line::{InvoiceLine, LineKind};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProrationError {
    #[error("the change at {at} is outside the period {start} to {end}")]
    OutsidePeriod { at: Timestamp, start: Timestamp, end: Timestamp },
    #[error("the period is shorter than a second")]
    EmptyPeriod,
    #[error("a plan price must not be negative")]
    NegativePrice,
}

/// `POST /v1/plan`'s `proration`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Proration {
    /// Refunded for the old plan's unused time; at most the old price.
    pub credit_cents: Cents,
    /// Due for the new plan's remaining time; at most the new price.
    pub charge_cents: Cents,
    pub currency: String,
}

/// Prorates a change from a plan priced `old` to one priced `new` at `at`, inside `period` or at its end.
pub fn prorate(
    old: Cents,
    new: Cents,
    period: BillingPeriod,
    at: Timestamp,
    currency: &str,
) -> Result<Proration, ProrationError> {
    if old.0 < 0 || new.0 < 0 {
        return Err(ProrationError::NegativePrice);
    }
    Ok(Proration {
        credit_cents: remaining_part(old, period, at)?,
        charge_cents: remaining_part(new, period, at)?,
        currency: currency.to_ascii_lowercase(),
    })
}

/// `price` for the part of `period` after `at`, by the rule above.
pub fn remaining_part(price: Cents, period: BillingPeriod, at: Timestamp) -> Result<Cents, ProrationError> {
    let (remaining, total) = remaining_seconds(period, at)?;
    let exact = i128::from(price.0) * i128::from(remaining);
    // remaining ≤ total, so the result is at most `price` and fits.
    Ok(Cents(i64::try_from(div_round_half_away(exact, i128::from(total))).unwrap_or(price.0)))
}

/// `(seconds remaining after at, seconds in the period)`.
pub fn remaining_seconds(period: BillingPeriod, at: Timestamp) -> Result<(i64, i64), ProrationError> {
    if at < period.start || at > period.end {
        return Err(ProrationError::OutsidePeriod { at, start: period.start, end: period.end });
    }
    let total = (period.end.0 - period.start.0) / 1_000;
    if total <= 0 {
        return Err(ProrationError::EmptyPeriod);
    }
    Ok(((period.end.0 - at.0) / 1_000, total))
}

impl Proration {
    /// What the tenant owes for the change (negative: what it is owed).
    pub fn net_cents(&self) -> Cents {
        Cents(self.charge_cents.0 - self.credit_cents.0)
    }

    /// The change as invoice lines: a negative line for the credit, a positive one for the charge; a zero
    /// amount gives no line.
    pub fn lines(&self, old_plan: &str, new_plan: &str) -> Vec<InvoiceLine> {
        let mut lines = Vec::new();
        if self.credit_cents.0 != 0 {
            lines.push(InvoiceLine::fixed(
                LineKind::Proration,
                format!("Unused time on the {old_plan} plan"),
                Cents(-self.credit_cents.0),
            ));
        }
        if self.charge_cents.0 != 0 {
            lines.push(InvoiceLine::fixed(
                LineKind::Proration,
                format!("Remaining time on the {new_plan} plan"),
                self.charge_cents,
            ));
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY_MS: i64 = 86_400_000;

    fn period() -> BillingPeriod {
        BillingPeriod { start: Timestamp(0), end: Timestamp(30 * DAY_MS) }
    }

    #[test]
    fn a_third_of_the_way_through() {
        let p = prorate(Cents(3_000), Cents(9_000), period(), Timestamp(10 * DAY_MS), "USD").expect("inside");
        assert_eq!(p, Proration { credit_cents: Cents(2_000), charge_cents: Cents(6_000), currency: "usd".into() });
        assert_eq!(p.net_cents(), Cents(4_000));
        let lines = p.lines("starter", "pro");
        assert_eq!(lines[0].amount_cents, Cents(-2_000));
        assert_eq!(lines[1].amount_cents, Cents(6_000));
    }

    #[test]
    fn at_the_edges() {
        let full = prorate(Cents(4_999), Cents(49_900), period(), Timestamp(0), "usd").expect("inside");
        assert_eq!((full.credit_cents, full.charge_cents), (Cents(4_999), Cents(49_900)));
        let none = prorate(Cents(4_999), Cents(49_900), period(), Timestamp(30 * DAY_MS), "usd").expect("at end");
        assert_eq!((none.credit_cents, none.charge_cents), (Cents(0), Cents(0)));
        assert!(none.lines("a", "b").is_empty());
        // The last second is a partial second: floored to nothing.
        let last = prorate(Cents(100), Cents(100), period(), Timestamp(30 * DAY_MS - 1), "usd").expect("inside");
        assert_eq!(last.charge_cents, Cents(0));
    }

    #[test]
    fn half_a_cent_rounds_away_from_zero() {
        let two_secs = BillingPeriod { start: Timestamp(0), end: Timestamp(2_000) };
        let p = prorate(Cents(1), Cents(3), two_secs, Timestamp(1_000), "usd").expect("inside");
        assert_eq!((p.credit_cents, p.charge_cents), (Cents(1), Cents(2)));
    }

    #[test]
    fn refuses_what_makes_no_sense() {
        let p = period();
        assert!(matches!(
            prorate(Cents(1), Cents(1), p, Timestamp(-1), "usd"),
            Err(ProrationError::OutsidePeriod { .. })
        ));
        assert!(matches!(
            prorate(Cents(1), Cents(1), p, Timestamp(30 * DAY_MS + 1), "usd"),
            Err(ProrationError::OutsidePeriod { .. })
        ));
        assert_eq!(prorate(Cents(-1), Cents(1), p, Timestamp(0), "usd"), Err(ProrationError::NegativePrice));
        let tiny = BillingPeriod { start: Timestamp(0), end: Timestamp(999) };
        assert_eq!(prorate(Cents(1), Cents(1), tiny, Timestamp(0), "usd"), Err(ProrationError::EmptyPeriod));
    }
}
