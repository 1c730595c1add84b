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

    mod properties {
        use proptest::prelude::*;

        use super::*;
        use crate::config::{Config, ModelConfig};

        /// Prices as operators write them: dollars per million with up to six decimals.
        fn price() -> impl Strategy<Value = f64> {
            (0u64..200_000_000).prop_map(|micros| micros as f64 / 1_000_000.0)
        }

        proptest! {
            #[test]
            fn a_configured_price_converts_exactly(usd in price()) {
                let p = MicrosPerMillion::from_usd(usd).expect("valid");
                prop_assert_eq!(p.0 as f64, (usd * 1_000_000.0).round());
            }

            #[test]
            fn cost_is_the_exact_product_rounded_half_up(per_million in 0i64..1_000_000_000, units in 0u64..10_000_000_000) {
                let cost = MicrosPerMillion(per_million).cost(units).0;
                let exact = i128::from(per_million) * i128::from(units); // in millionths of a micro-dollar
                let scaled = i128::from(cost) * 1_000_000;
                prop_assert!(scaled - 500_000 <= exact && exact < scaled + 500_000, "{cost} for {exact}");
            }

            #[test]
            fn splitting_a_request_changes_its_cost_by_at_most_one_micro(
                per_million in 0i64..1_000_000_000, a in 0u64..1_000_000_000, b in 0u64..1_000_000_000,
            ) {
                let p = MicrosPerMillion(per_million);
                let whole = p.cost(a + b).0;
                let parts = p.cost(a).0 + p.cost(b).0;
                prop_assert!((whole - parts).abs() <= 1);
                prop_assert!(p.cost(a) <= p.cost(a + b), "monotone");
            }

            #[test]
            fn cents_are_the_nearest_cent(micros in -1_000_000_000_000i64..1_000_000_000_000) {
                let cents = Micros(micros).to_cents_rounded().0;
                prop_assert!((i128::from(cents) * 10_000 - i128::from(micros)).abs() <= 5_000);
            }

            /// Every model in a catalogue prices a request as its input and output prices say, in integers.
            #[test]
            fn a_models_cost_follows_its_price_table(
                input in price(), output in price(), prompt in 0u64..2_000_000, completion in 0u64..200_000,
            ) {
                let mut config = Config::builtin();
                config.models.push(ModelConfig {
                    name: "priced".into(),
                    provider: "openai".into(),
                    base_url: "http://127.0.0.1:9/v1".into(),
                    api_key_env: String::new(),
                    upstream_model: None,
                    input_usd_per_million: input,
                    output_usd_per_million: output,
                    context_window: 8192,
                    answer_sentences: 3,
                    timeout_secs: 60,
                    max_retries: 2,
                    restate_follow_ups: true,
                });
                let catalog = config.catalog().expect("valid");
                let model = catalog.model("priced").expect("exists");
                let in_micros = (input * 1_000_000.0).round() as i128;
                let out_micros = (output * 1_000_000.0).round() as i128;
                let expected = (in_micros * i128::from(prompt) + 500_000) / 1_000_000
                    + (out_micros * i128::from(completion) + 500_000) / 1_000_000;
                prop_assert_eq!(i128::from(model.cost(prompt, completion).0), expected);
            }
        }
    }
}
