//! `Stripe-Signature` verification as Stripe specifies it.

use tenantry_billing::stripe::signature::{self, sign, SignatureError, WebhookVerifier};
use tenantry_domain::Timestamp;

const SECRET: &str = "whsec_test_current";
const OLD_SECRET: &str = "whsec_test_previous";
const T: i64 = 1_721_954_100;
const PAYLOAD: &[u8] = include_bytes!("../fixtures/event_invoice_paid.json");

fn at(unix: i64) -> Timestamp {
    Timestamp(unix * 1_000)
}

fn verifier() -> WebhookVerifier {
    WebhookVerifier::new([SECRET]).expect("one secret")
}

#[test]
fn a_valid_header_is_accepted() {
    let header = sign(PAYLOAD, SECRET, T);
    assert_eq!(verifier().verify(PAYLOAD, &header, at(T + 5)), Ok(T));
}

#[test]
fn any_one_of_several_v1_signatures_is_enough() {
    let good = signature::signature(PAYLOAD, SECRET, T);
    let other = signature::signature(PAYLOAD, "whsec_someone_else", T);
    let header = format!("t={T},v1={other},v1=not-hex,v1={good},v0={other}");
    assert_eq!(verifier().verify(PAYLOAD, &header, at(T)), Ok(T));
}

#[test]
fn a_tampered_payload_is_rejected() {
    let header = sign(PAYLOAD, SECRET, T);
    let mut tampered = PAYLOAD.to_vec();
    let i = tampered.iter().position(|&b| b == b'1').expect("a digit to change");
    tampered[i] = b'2';
    assert_eq!(verifier().verify(&tampered, &header, at(T)), Err(SignatureError::NoMatch));
    // Re-serialised JSON is not the raw body either.
    let value: serde_json::Value = serde_json::from_slice(PAYLOAD).expect("json");
    let reserialised = serde_json::to_vec(&value).expect("json");
    assert_eq!(verifier().verify(&reserialised, &header, at(T)), Err(SignatureError::NoMatch));
}

#[test]
fn a_wrong_secret_is_rejected() {
    let header = sign(PAYLOAD, "whsec_wrong", T);
    assert_eq!(verifier().verify(PAYLOAD, &header, at(T)), Err(SignatureError::NoMatch));
}

#[test]
fn a_timestamp_other_than_the_signed_one_is_rejected() {
    let sig = signature::signature(PAYLOAD, SECRET, T);
    let header = format!("t={},v1={sig}", T + 1);
    assert_eq!(verifier().verify(PAYLOAD, &header, at(T)), Err(SignatureError::NoMatch));
}

#[test]
fn stale_and_future_timestamps_are_rejected_beyond_the_tolerance() {
    let header = sign(PAYLOAD, SECRET, T);
    assert_eq!(verifier().verify(PAYLOAD, &header, at(T + 300)), Ok(T), "300 s is still within");
    assert_eq!(
        verifier().verify(PAYLOAD, &header, at(T + 301)),
        Err(SignatureError::OutsideTolerance { age_secs: 301, tolerance_secs: 300 })
    );
    assert_eq!(verifier().verify(PAYLOAD, &header, at(T - 300)), Ok(T));
    assert_eq!(
        verifier().verify(PAYLOAD, &header, at(T - 301)),
        Err(SignatureError::OutsideTolerance { age_secs: -301, tolerance_secs: 300 })
    );
    let strict = verifier().with_tolerance_secs(10);
    assert!(matches!(strict.verify(PAYLOAD, &header, at(T + 11)), Err(SignatureError::OutsideTolerance { .. })));
    // Extreme timestamps do not overflow.
    let header = sign(PAYLOAD, SECRET, i64::MIN);
    assert!(matches!(verifier().verify(PAYLOAD, &header, at(T)), Err(SignatureError::OutsideTolerance { .. })));
}

#[test]
fn malformed_headers_are_rejected() {
    let sig = signature::signature(PAYLOAD, SECRET, T);
    let cases = [
        ("", SignatureError::Malformed),
        ("garbage", SignatureError::Malformed),
        (&format!("v1={sig}"), SignatureError::MissingTimestamp),
        (&format!("t=,v1={sig}"), SignatureError::Malformed),
        (&format!("t=abc,v1={sig}"), SignatureError::Malformed),
        (&format!("t={T},t={T},v1={sig}"), SignatureError::Malformed),
        (&format!("t={T}"), SignatureError::NoV1Signature),
        (&format!("t={T},v0={sig}"), SignatureError::NoV1Signature),
        (&format!("t={T},v1="), SignatureError::NoMatch),
        (&format!("t={T},v1={}", &sig[..62]), SignatureError::NoMatch),
    ];
    for (header, expected) in cases {
        assert_eq!(verifier().verify(PAYLOAD, header, at(T)), Err(expected), "{header:?}");
    }
}

#[test]
fn rotation_accepts_either_secret_while_both_are_configured() {
    let both = WebhookVerifier::new([SECRET, OLD_SECRET]).expect("two secrets");
    assert_eq!(both.verify(PAYLOAD, &sign(PAYLOAD, SECRET, T), at(T)), Ok(T));
    assert_eq!(both.verify(PAYLOAD, &sign(PAYLOAD, OLD_SECRET, T), at(T)), Ok(T));
    // During Stripe's own roll it signs with both; either matching is enough.
    let header = format!(
        "t={T},v1={},v1={}",
        signature::signature(PAYLOAD, OLD_SECRET, T),
        signature::signature(PAYLOAD, "whsec_unknown", T)
    );
    assert_eq!(both.verify(PAYLOAD, &header, at(T)), Ok(T));
    // Once the old secret is dropped, its signatures stop working.
    assert_eq!(verifier().verify(PAYLOAD, &sign(PAYLOAD, OLD_SECRET, T), at(T)), Err(SignatureError::NoMatch));
}

#[test]
fn no_secret_no_verifier() {
    assert_eq!(WebhookVerifier::new(Vec::<String>::new()).err(), Some(SignatureError::NoSecret));
    assert_eq!(WebhookVerifier::new([""]).err(), Some(SignatureError::NoSecret));
}
