//! Webhook signatures as Stripe specifies them: the `Stripe-Signature` header is
//! `t=<unix seconds>,v1=<hex>[,v1=<hex>…][,v0=…]`, and a `v1` is
//! `hex(HMAC-SHA256(secret, "{t}.{raw body}"))`. Any `v1` matching any configured secret is accepted
//! (Stripe sends several while a secret is rolled; we accept several while ours is), compared in constant
//! time. The timestamp must be within the tolerance of now, both ways, so a captured delivery cannot be
//! replayed later.

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use tenantry_domain::Timestamp;

/// The header's name.
pub const HEADER: &str = "Stripe-Signature";
/// Stripe's libraries' default tolerance, and API.md's.
pub const DEFAULT_TOLERANCE_SECS: u64 = 300;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("no webhook secret is configured")]
    NoSecret,
    #[error("the Stripe-Signature header is malformed")]
    Malformed,
    #[error("the Stripe-Signature header has no timestamp")]
    MissingTimestamp,
    #[error("the Stripe-Signature header has no v1 signature")]
    NoV1Signature,
    #[error("no v1 signature matches the payload")]
    NoMatch,
    #[error("the signature is {age_secs} s old (negative: in the future), beyond the {tolerance_secs} s tolerance")]
    OutsideTolerance { age_secs: i64, tolerance_secs: u64 },
}

/// The header, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignatureHeader {
    pub timestamp: i64,
    /// The `v1` values as sent (other schemes, such as Stripe's test-mode `v0`, are ignored).
    pub v1: Vec<String>,
}

impl SignatureHeader {
    pub fn parse(header: &str) -> Result<Self, SignatureError> {
        let mut timestamp = None;
        let mut v1 = Vec::new();
        for item in header.split(',') {
            let (key, value) = item.trim().split_once('=').ok_or(SignatureError::Malformed)?;
            match key {
                "t" => {
                    let t = value.parse::<i64>().map_err(|_| SignatureError::Malformed)?;
                    if timestamp.replace(t).is_some() {
                        return Err(SignatureError::Malformed);
                    }
                }
                "v1" => v1.push(value.to_owned()),
                _ => {}
            }
        }
        let timestamp = timestamp.ok_or(SignatureError::MissingTimestamp)?;
        if v1.is_empty() {
            return Err(SignatureError::NoV1Signature);
        }
        Ok(Self { timestamp, v1 })
    }
}

/// Verifies deliveries against one or more endpoint secrets (`whsec_…`).
#[derive(Clone)]
pub struct WebhookVerifier {
    secrets: Vec<String>,
    tolerance_secs: u64,
}

impl fmt::Debug for WebhookVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookVerifier")
            .field("secrets", &self.secrets.len())
            .field("tolerance_secs", &self.tolerance_secs)
            .finish()
    }
}

impl WebhookVerifier {
    /// Empty secrets are skipped; none left is an error, so an unconfigured endpoint refuses everything
    /// instead of accepting a signature made with the empty key.
    pub fn new<I, S>(secrets: I) -> Result<Self, SignatureError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let secrets: Vec<String> =
            secrets.into_iter().map(|s| s.as_ref().trim().to_owned()).filter(|s| !s.is_empty()).collect();
        if secrets.is_empty() {
            return Err(SignatureError::NoSecret);
        }
        Ok(Self { secrets, tolerance_secs: DEFAULT_TOLERANCE_SECS })
    }

    pub fn with_tolerance_secs(mut self, tolerance_secs: u64) -> Self {
        self.tolerance_secs = tolerance_secs;
        self
    }

    /// Checks `header` against the raw request body, exactly as received (not re-serialised JSON).
    /// Returns the signed timestamp (unix seconds). The signature is checked before the timestamp, so
    /// only an authentic delivery can be told that it is stale.
    pub fn verify(&self, payload: &[u8], header: &str, now: Timestamp) -> Result<i64, SignatureError> {
        let parsed = SignatureHeader::parse(header)?;
        // Undecodable values cannot match; they do not make the others invalid.
        let candidates: Vec<Vec<u8>> =
            parsed.v1.iter().filter_map(|v| hex::decode(v).ok()).filter(|v| v.len() == MAC_LEN).collect();
        let matched = self.secrets.iter().any(|secret| {
            let Some(expected) = mac(payload, secret, parsed.timestamp) else {
                return false;
            };
            // Every candidate is compared, so the time taken does not say which one matched.
            candidates.iter().fold(false, |found, candidate| found | bool::from(expected.ct_eq(candidate.as_slice())))
        });
        if !matched {
            return Err(SignatureError::NoMatch);
        }
        let age = i128::from(now.0.div_euclid(1_000)) - i128::from(parsed.timestamp);
        if age.unsigned_abs() > u128::from(self.tolerance_secs) {
            let age_secs = i64::try_from(age).unwrap_or(if age < 0 { i64::MIN } else { i64::MAX });
            return Err(SignatureError::OutsideTolerance { age_secs, tolerance_secs: self.tolerance_secs });
        }
        Ok(parsed.timestamp)
    }
}

/// `hex(HMAC-SHA256(secret, "{timestamp}.{payload}"))`: one `v1` value.
pub fn signature(payload: &[u8], secret: &str, timestamp: i64) -> String {
    mac(payload, secret, timestamp).map(hex::encode).unwrap_or_default()
}

/// A `Stripe-Signature` header value for `payload`, as Stripe would send it: for tests and fake servers.
pub fn sign(payload: &[u8], secret: &str, timestamp: i64) -> String {
    format!("t={timestamp},v1={}", signature(payload, secret, timestamp))
}

/// HMAC-SHA256 is 32 bytes.
const MAC_LEN: usize = 32;

fn mac(payload: &[u8], secret: &str, timestamp: i64) -> Option<Vec<u8>> {
    // HMAC takes a key of any length, so this never fails in practice.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).ok()?;
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(payload);
    Some(mac.finalize().into_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stripes_header_shape() {
        let h = SignatureHeader::parse("t=1492774577,v1=5257a869,v0=6ffbb59b,v1=abcd").expect("valid");
        assert_eq!(h, SignatureHeader { timestamp: 1_492_774_577, v1: vec!["5257a869".into(), "abcd".into()] });
        assert_eq!(SignatureHeader::parse(""), Err(SignatureError::Malformed));
        assert_eq!(SignatureHeader::parse("v1=abcd"), Err(SignatureError::MissingTimestamp));
        assert_eq!(SignatureHeader::parse("t=12,v0=abcd"), Err(SignatureError::NoV1Signature));
        assert_eq!(SignatureHeader::parse("t=soon,v1=abcd"), Err(SignatureError::Malformed));
        assert_eq!(SignatureHeader::parse("t=1,t=2,v1=abcd"), Err(SignatureError::Malformed));
        assert_eq!(SignatureHeader::parse("t=1;v1=abcd"), Err(SignatureError::Malformed));
    }

    /// A known answer, computed independently:
    /// `printf '1700000000.{"id":"evt_1"}' | openssl dgst -sha256 -hmac whsec_test`.
    #[test]
    fn matches_an_independent_hmac() {
        assert_eq!(
            signature(br#"{"id":"evt_1"}"#, "whsec_test", 1_700_000_000),
            "c89214b5b5da833daed6f0b8c5bb6bd58cea9022bd80ccc78230f3942d632925"
        );
    }

    #[test]
    fn the_debug_form_hides_secrets() {
        let v = WebhookVerifier::new(["whsec_secret"]).expect("one secret");
        assert!(!format!("{v:?}").contains("whsec_secret"));
        assert_eq!(WebhookVerifier::new(["", "  "]).err(), Some(SignatureError::NoSecret));
    }
}
