//! Whole numbers as JSON Schema counts them: `3` and `3.0` are the same integer, so a body field typed
//! `integer` accepts both. serde alone refuses `3.0` for an integer field, which would turn down requests
//! that the OpenAPI document allows.

use serde::de::{Deserializer, Error};
use serde::Deserialize;

/// An integer, written with or without a zero fraction.
pub fn integer<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    from_number(serde_json::Number::deserialize(deserializer)?)
}

/// An optional integer, written with or without a zero fraction.
pub fn optional_integer<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<i64>, D::Error> {
    Option::<serde_json::Number>::deserialize(deserializer)?.map(from_number).transpose()
}

/// An integer that may be left out (`None`, with `#[serde(default)]`), `null` (`Some(None)`) or given.
pub fn nullable_integer<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Option<i64>>, D::Error> {
    optional_integer(deserializer).map(Some)
}

fn from_number<E: Error>(number: serde_json::Number) -> Result<i64, E> {
    if let Some(n) = number.as_i64() {
        return Ok(n);
    }
    match number.as_f64() {
        // Beyond ±2^53 a float no longer names one integer; refuse rather than round.
        Some(f) if f.fract() == 0.0 && f.abs() <= 9_007_199_254_740_992.0 => Ok(f as i64),
        _ => Err(E::custom(format!("expected an integer, not {number}"))),
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    #[derive(Deserialize)]
    struct Body {
        #[serde(deserialize_with = "super::integer")]
        n: i64,
        #[serde(default, deserialize_with = "super::optional_integer")]
        m: Option<i64>,
    }

    fn parse(json: &str) -> Result<(i64, Option<i64>), String> {
        serde_json::from_str::<Body>(json).map(|b| (b.n, b.m)).map_err(|e| e.to_string())
    }

    #[test]
    fn integers_may_carry_a_zero_fraction() {
        assert_eq!(parse(r#"{"n": 3}"#), Ok((3, None)));
        assert_eq!(parse(r#"{"n": 3.0, "m": -2.0}"#), Ok((3, Some(-2))));
        assert_eq!(parse(r#"{"n": 1e3, "m": null}"#), Ok((1000, None)));
    }

    #[test]
    fn fractions_strings_and_huge_floats_are_refused() {
        assert!(parse(r#"{"n": 3.5}"#).is_err());
        assert!(parse(r#"{"n": "3"}"#).is_err());
        assert!(parse(r#"{"n": 1e300}"#).is_err());
        assert!(parse(r#"{"n": 1, "m": 0.25}"#).is_err());
    }
}
