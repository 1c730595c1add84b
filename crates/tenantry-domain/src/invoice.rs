//! What an invoice is and which status may follow which: the kinds and statuses every layer names (the
//! store's rows, the billing rules, the API's views), so that none compares them as strings.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why an invoice was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum InvoiceKind {
    /// The first period's base price, at signup.
    Signup,
    /// A period's overage and the next period's base price.
    Closing,
    /// Usage recorded after its period was closed early (a plan change).
    TrueUp,
}

impl InvoiceKind {
    pub const ALL: [Self; 3] = [Self::Signup, Self::Closing, Self::TrueUp];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Signup => "signup",
            Self::Closing => "closing",
            Self::TrueUp => "true_up",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == raw)
    }
}

impl fmt::Display for InvoiceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where an invoice is in Stripe's invoice model (`TRANSITIONS`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum InvoiceStatus {
    Draft,
    Open,
    Paid,
    Uncollectible,
    Void,
}

/// Every allowed `(from, to)`; anything else is refused. Stripe's invoice model: a draft is finalised
/// (open) or thrown away (void); an open invoice is paid, written off (uncollectible) or voided; a written-
/// off invoice can still be paid late or voided. Paid and void are final.
pub const TRANSITIONS: [(InvoiceStatus, InvoiceStatus); 7] = {
    use InvoiceStatus::*;
    [
        (Draft, Open),
        (Draft, Void),
        (Open, Paid),
        (Open, Uncollectible),
        (Open, Void),
        (Uncollectible, Paid),
        (Uncollectible, Void),
    ]
};

impl InvoiceStatus {
    pub const ALL: [Self; 5] = [Self::Draft, Self::Open, Self::Paid, Self::Uncollectible, Self::Void];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Draft => "draft",
            Self::Open => "open",
            Self::Paid => "paid",
            Self::Uncollectible => "uncollectible",
            Self::Void => "void",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == raw)
    }

    /// Whether [`TRANSITIONS`] allows `self → to`. A status never "moves" to itself: a caller handling a
    /// repeated webhook should treat `from == to` as already done, not as a transition.
    pub fn can_become(self, to: Self) -> bool {
        TRANSITIONS.contains(&(self, to))
    }

    /// Paid and void invoices never change again.
    pub fn is_final(self) -> bool {
        !TRANSITIONS.iter().any(|(from, _)| *from == self)
    }
}

impl fmt::Display for InvoiceStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_statuses_read_back_what_they_write() {
        for kind in InvoiceKind::ALL {
            assert_eq!(InvoiceKind::parse(kind.as_str()), Some(kind));
            assert_eq!(serde_json::to_value(kind).expect("json"), kind.as_str());
        }
        for status in InvoiceStatus::ALL {
            assert_eq!(InvoiceStatus::parse(status.as_str()), Some(status));
            assert_eq!(serde_json::to_value(status).expect("json"), status.as_str());
        }
        assert_eq!((InvoiceKind::parse("Closing"), InvoiceStatus::parse("")), (None, None));
    }
}
