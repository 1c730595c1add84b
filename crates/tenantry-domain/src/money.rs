//! Money is integers: cents for invoices, micro-dollars (millionths of the currency unit) for usage cost.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Cents(pub i64);

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Micros(pub i64);

impl Micros {
    /// Converts to cents, rounding half away from zero (the rule invoices use).
    pub fn to_cents_rounded(self) -> Cents {
        let (q, r) = (self.0 / 10_000, self.0 % 10_000);
        let adjust = if r.abs() * 2 >= 10_000 { r.signum() } else { 0 };
        Cents(q + adjust)
    }
}

impl std::ops::Add for Micros {
    type Output = Micros;
    fn add(self, rhs: Self) -> Self {
        Micros(self.0 + rhs.0)
    }
}

/// A price per million units (tokens), held exactly as micro-dollars per million.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MicrosPerMillion(pub i64);

impl MicrosPerMillion {
    /// From a configured decimal dollar price; config is the only place a float appears, and it is
    /// converted once, at load, to the nearest micro-dollar.
    pub fn from_usd(usd_per_million: f64) -> Option<Self> {
        let micros = (usd_per_million * 1_000_000.0).round();
        (usd_per_million.is_finite() && usd_per_million >= 0.0 && micros < i64::MAX as f64)
            .then_some(Self(micros as i64))
    }

    /// Cost of `units` at this price, rounded half up to the micro-dollar.
    pub fn cost(self, units: u64) -> Micros {
        let exact = i128::from(self.0) * i128::from(units);
        let micros = (exact + 500_000) / 1_000_000;
        Micros(i64::try_from(micros).unwrap_or(i64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cents_round_half_away_from_zero() {
        assert_eq!(Micros(14_999).to_cents_rounded(), Cents(1));
        assert_eq!(Micros(15_000).to_cents_rounded(), Cents(2));
        assert_eq!(Micros(-15_000).to_cents_rounded(), Cents(-2));
        assert_eq!(Micros(4_999).to_cents_rounded(), Cents(0));
    }

    #[test]
    fn token_cost_is_exact_integer_arithmetic() {
        let gpt4_input = MicrosPerMillion::from_usd(30.0).expect("valid price");
        assert_eq!(gpt4_input.cost(1_000), Micros(30_000));
        assert_eq!(gpt4_input.cost(1), Micros(30));
        let cheap = MicrosPerMillion::from_usd(0.15).expect("valid price");
        assert_eq!(cheap.cost(10), Micros(2)); // 1.5 rounds up
        assert_eq!(cheap.cost(3), Micros(0)); // 0.45 rounds down
        assert!(MicrosPerMillion::from_usd(-1.0).is_none());
        assert!(MicrosPerMillion::from_usd(f64::NAN).is_none());
    }
}
