//! Stripe webhook payloads fuzzed: Stripe's example events with values swapped for JSON of any type, keys
//! dropped, and bytes overwritten, inserted, deleted or cut. Every payload parses to an event or a typed
//! error; nothing panics. From a fixed seed; `PROPTEST_CASES` sets the cases (default 256).

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRng, TestRunner};
use serde_json::Value;
use tenantry_billing::stripe::Event;

const EVENTS: [&str; 6] = [
    include_str!("../fixtures/event.json"),
    include_str!("../fixtures/event_checkout_session_completed.json"),
    include_str!("../fixtures/event_customer_subscription_deleted.json"),
    include_str!("../fixtures/event_invoice_paid.json"),
    include_str!("../fixtures/event_invoice_payment_failed.json"),
    include_str!("../fixtures/event_invoice_payment_succeeded.json"),
];

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        ".{0,20}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(".{0,8}", inner, 0..4).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// The JSON pointer of every value in `json`, the root included.
fn pointers(json: &Value) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![(String::new(), json)];
    while let Some((at, value)) = stack.pop() {
        match value {
            Value::Object(map) => {
                let escape = |k: &str| k.replace('~', "~0").replace('/', "~1");
                stack.extend(map.iter().map(|(k, v)| (format!("{at}/{}", escape(k)), v)));
            }
            Value::Array(items) => stack.extend(items.iter().enumerate().map(|(i, v)| (format!("{at}/{i}"), v))),
            _ => {}
        }
        found.push(at);
    }
    found
}

/// An example event with some of its values replaced by arbitrary JSON.
fn swapped_values() -> impl Strategy<Value = Vec<u8>> {
    let swaps = prop::collection::vec((any::<prop::sample::Index>(), any_json()), 1..4);
    (prop::sample::select(EVENTS.to_vec()), swaps).prop_map(|(raw, swaps)| {
        let mut json: Value = serde_json::from_str(raw).expect("fixture is JSON");
        for (at, replacement) in swaps {
            let all = pointers(&json);
            if let Some(value) = json.pointer_mut(&all[at.index(all.len())]) {
                *value = replacement;
            }
        }
        serde_json::to_vec(&json).expect("serializes")
    })
}

/// An example event with bytes overwritten, inserted or deleted, then maybe cut short.
fn damaged_bytes() -> impl Strategy<Value = Vec<u8>> {
    let edits = prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 0..8);
    (prop::sample::select(EVENTS.to_vec()), edits, prop::option::of(any::<prop::sample::Index>())).prop_map(
        |(raw, edits, cut)| {
            let mut bytes = raw.as_bytes().to_vec();
            for (at, byte, kind) in edits {
                let i = at.index(bytes.len().max(1)).min(bytes.len().saturating_sub(1));
                match kind {
                    0 if !bytes.is_empty() => bytes[i] = byte,
                    1 => bytes.insert(i, byte),
                    _ if !bytes.is_empty() => {
                        bytes.remove(i);
                    }
                    _ => {}
                }
            }
            if let Some(cut) = cut {
                bytes.truncate(cut.index(bytes.len() + 1));
            }
            bytes
        },
    )
}

fn run(strategy: impl Strategy<Value = Vec<u8>>) {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(256);
    let config = Config { cases, failure_persistence: None, ..Config::default() };
    let mut runner = TestRunner::new_with_rng(config.clone(), TestRng::deterministic_rng(config.rng_algorithm));
    let outcome = runner.run(&strategy, |payload| {
        // Ok or a typed error; a panic fails the case.
        let _ = Event::parse(&payload);
        Ok(())
    });
    if let Err(e) = outcome {
        panic!("{e}");
    }
}

#[test]
fn events_with_values_of_any_type_parse_or_are_refused() {
    run(swapped_values());
}

#[test]
fn damaged_event_bytes_parse_or_are_refused() {
    run(damaged_bytes());
}
