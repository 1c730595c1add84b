//! One invoice line, as `GET /v1/invoices` shows it and as it becomes one Stripe invoice item.

use serde::{Deserialize, Serialize};
use tenantry_domain::Cents;

use crate::arith::{decimal, div_round_half_away};
use crate::rating::RatingError;

/// The quota key a usage line bills (API.md: `meter` is the quota key). Lines that bill no usage (base
/// price, proration) have no meter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BillingMeter {
    Queries,
    /// Prompt plus completion tokens.
    Tokens,
}

impl BillingMeter {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queries => "queries",
            Self::Tokens => "tokens",
        }
    }
}

/// What a line bills, for revenue reporting: MRR counts `base` lines; `usage` is overage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LineKind {
    /// A whole period's base price.
    Base,
    /// Usage above what the plan includes.
    Usage,
    /// A part of a period's base price: a plan change's credit and charge, a trial's remainder.
    Proration,
    /// Credit: prepaid, or carried from an invoice that came out negative.
    Credit,
    /// A discount on the base price (a win-back offer).
    Discount,
}

impl LineKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Base => "base",
            Self::Usage => "usage",
            Self::Proration => "proration",
            Self::Credit => "credit",
            Self::Discount => "discount",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        [Self::Base, Self::Usage, Self::Proration, Self::Credit, Self::Discount].into_iter().find(|k| k.as_str() == raw)
    }
}

/// Micro-dollars per cent.
const MICROS_PER_CENT: u32 = 4; // as a power of ten

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceLine {
    pub description: String,
    pub meter: Option<BillingMeter>,
    /// The model whose tokens a per-model-priced line bills.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Units billed: for a usage line, units above the included amount (tokens, not thousands).
    pub quantity: u64,
    /// The unit price rounded to the cent, for display only: a price below a cent shows as 0.
    pub unit_amount_cents: Cents,
    /// The exact unit price in cents, like Stripe's `unit_amount_decimal` ("0.2", "0.00001").
    pub unit_amount_decimal: String,
    /// `quantity × exact unit price`, rounded to the cent once, half away from zero.
    pub amount_cents: Cents,
    /// What the line bills; absent on lines made before kinds were recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<LineKind>,
}

impl InvoiceLine {
    /// A fixed amount of `kind` (base price, proration, credit): quantity 1 at that amount.
    pub fn fixed(kind: LineKind, description: impl Into<String>, amount: Cents) -> Self {
        Self {
            description: description.into(),
            meter: None,
            model: None,
            quantity: 1,
            unit_amount_cents: amount,
            unit_amount_decimal: amount.0.to_string(),
            amount_cents: amount,
            kind: Some(kind),
        }
    }

    /// What the line bills; a line from before kinds were recorded is judged by its meter and sign (a
    /// proration then counts as base).
    pub fn kind(&self) -> LineKind {
        match (self.kind, self.meter) {
            (Some(kind), _) => kind,
            (None, Some(_)) => LineKind::Usage,
            (None, None) if self.amount_cents.0 < 0 => LineKind::Credit,
            (None, None) => LineKind::Base,
        }
    }

    /// `quantity` units at `unit_micros` per `10^unit_exp` units (1 query, 1,000 tokens). The exact
    /// amount is a fraction of a micro-dollar in general; it is rounded to cents here and nowhere else.
    pub(crate) fn metered(
        description: String,
        meter: BillingMeter,
        model: Option<String>,
        quantity: u64,
        unit_micros: i64,
        unit_exp: u32,
    ) -> Result<Self, RatingError> {
        let scale = unit_exp + MICROS_PER_CENT;
        let den = 10i128.pow(scale);
        // u64 × i64 always fits in i128.
        let exact = i128::from(quantity) * i128::from(unit_micros);
        let cents = |v: i128| i64::try_from(v).map(Cents).map_err(|_| RatingError::AmountOverflow);
        Ok(Self {
            description,
            meter: Some(meter),
            model,
            quantity,
            unit_amount_cents: cents(div_round_half_away(i128::from(unit_micros), den))?,
            unit_amount_decimal: decimal(i128::from(unit_micros), scale),
            amount_cents: cents(div_round_half_away(exact, den))?,
            kind: Some(LineKind::Usage),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_line_rounds_once() {
        // 9,999 tokens at 500 µ$ per 1k = 4,999.5 µ$ = 0.49995 ¢ → 0 ¢. Rounding to micros first would
        // give 5,000 µ$ and then 1 ¢.
        let line = InvoiceLine::metered("t".into(), BillingMeter::Tokens, None, 9_999, 500, 3).expect("fits");
        assert_eq!(line.amount_cents, Cents(0));
        assert_eq!(line.unit_amount_decimal, "0.00005");
        let line = InvoiceLine::metered("t".into(), BillingMeter::Tokens, None, 10_000, 500, 3).expect("fits");
        assert_eq!(line.amount_cents, Cents(1));
    }

    #[test]
    fn an_amount_beyond_i64_cents_is_refused() {
        let huge = InvoiceLine::metered("q".into(), BillingMeter::Queries, None, u64::MAX, i64::MAX, 0);
        assert_eq!(huge, Err(RatingError::AmountOverflow));
    }
}
