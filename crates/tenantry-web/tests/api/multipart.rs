//! Fuzzing the multipart upload form, the one parser of tenant bytes that runs before the document parsers:
//! proptest generates forms (file and title parts, odd part names, file names and content types, extra
//! headers, several files) and then damages some of them (cut short, bytes overwritten or inserted, the
//! boundary wrong or missing in the `Content-Type`). Every answer must be 201, or a 4xx problem+json that
//! leaves nothing stored; a well-formed form's answer is known in advance and must be the one given.
//! CI runs `PROPTEST_CASES` (default 64) cases from a fixed seed; a longer run is
//! `PROPTEST_CASES=5000 cargo test -p tenantry-web --test api multipart`.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRng, TestRunner};
use serde_json::Value;

use crate::helpers::{spawn_app_with, Tenant, TestApp};

const BOUNDARY: &str = "tenantry-fuzz-boundary";

#[derive(Clone)]
struct Part {
    name: Option<String>,
    file_name: Option<String>,
    content_type: Option<String>,
    extra_headers: Vec<String>,
    body: Vec<u8>,
}

impl std::fmt::Debug for Part {
    /// The body as escaped text, so that a failing case reads in one line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Part")
            .field("name", &self.name)
            .field("file_name", &self.file_name)
            .field("content_type", &self.content_type)
            .field("extra_headers", &self.extra_headers)
            .field("body", &self.body.escape_ascii().to_string())
            .finish()
    }
}

/// Damage done to a well-formed form.
#[derive(Debug, Clone)]
enum Damage {
    /// Cut the body at this fraction of its length (per mille).
    Cut(usize),
    /// Overwrite the byte at this fraction of the body (per mille).
    Overwrite(usize, u8),
    /// Insert bytes at this fraction of the body (per mille).
    Insert(usize, Vec<u8>),
    /// Declare another boundary than the body uses.
    OtherBoundary,
    /// Declare no boundary at all.
    NoBoundary,
    /// Leave out the closing boundary.
    Unclosed,
}

#[derive(Debug, Clone)]
struct Case {
    parts: Vec<Part>,
    damage: Option<Damage>,
}

/// A text a parser accepts: words with at least one letter.
fn readable_text() -> impl Strategy<Value = Vec<u8>> {
    "[A-Za-z][A-Za-z0-9 .,]{0,200}".prop_map(String::into_bytes)
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => readable_text(),
        1 => proptest::collection::vec(any::<u8>(), 0..512),
        1 => Just(b"<html><body><h1>Refunds</h1><p>Within 14 days.</p></body></html>".to_vec()),
        1 => Just(b"# Refunds\n\nWithin **14** days.\n".to_vec()),
        1 => Just(b"%PDF-1.4\n1 0 obj\n<< /Length 5 >>\nstream\nBT ET\nendstream\nendobj\n%%EOF".to_vec()),
        1 => Just(format!("--{BOUNDARY}\r\nnested").into_bytes()),
    ]
}

fn part() -> impl Strategy<Value = Part> {
    let name = prop_oneof![
        4 => Just(Some("file".to_owned())),
        2 => Just(Some("title".to_owned())),
        1 => Just(None),
        1 => "[a-z\"; ]{0,12}".prop_map(Some),
    ];
    let file_name =
        prop_oneof![Just(None), "[a-z]{1,8}\\.(txt|md|html|pdf|bin)".prop_map(Some), ".{0,20}".prop_map(Some)];
    let content_type = prop_oneof![
        Just(None),
        Just(Some("text/plain".to_owned())),
        Just(Some("text/markdown".to_owned())),
        Just(Some("text/html".to_owned())),
        Just(Some("application/pdf".to_owned())),
        "[a-z/;= -]{0,30}".prop_map(Some),
    ];
    let extra_headers = proptest::collection::vec("[A-Za-z-]{1,12}: [ -~]{0,40}", 0..3);
    (name, file_name, content_type, extra_headers, body()).prop_map(
        |(name, file_name, content_type, extra_headers, body)| Part {
            name,
            file_name,
            content_type,
            extra_headers,
            body,
        },
    )
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        (0..1000usize).prop_map(Damage::Cut),
        (0..1000usize, any::<u8>()).prop_map(|(at, b)| Damage::Overwrite(at, b)),
        (0..1000usize, proptest::collection::vec(any::<u8>(), 1..64)).prop_map(|(at, b)| Damage::Insert(at, b)),
        Just(Damage::OtherBoundary),
        Just(Damage::NoBoundary),
        Just(Damage::Unclosed),
    ]
}

/// A form the service must store: one plain-text file part, maybe a title.
fn good_form() -> impl Strategy<Value = Vec<Part>> {
    let plain = |name: &str, content_type: Option<&str>, body: Vec<u8>| Part {
        name: Some(name.to_owned()),
        file_name: None,
        content_type: content_type.map(str::to_owned),
        extra_headers: Vec::new(),
        body,
    };
    (readable_text(), proptest::option::of(readable_text())).prop_map(move |(text, title)| {
        let mut parts = vec![plain("file", Some("text/plain"), text)];
        parts.extend(title.map(|t| plain("title", None, t)));
        parts
    })
}

fn case() -> impl Strategy<Value = Case> {
    let parts = prop_oneof![1 => good_form(), 3 => proptest::collection::vec(part(), 0..4)];
    (parts, proptest::option::weighted(0.4, damage())).prop_map(|(parts, damage)| Case { parts, damage })
}

/// The form as bytes, and the `Content-Type` it is sent with.
fn encode(case: &Case) -> (Vec<u8>, String) {
    let mut out = Vec::new();
    for part in &case.parts {
        out.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
        let mut disposition = "Content-Disposition: form-data".to_owned();
        if let Some(name) = &part.name {
            disposition.push_str(&format!("; name=\"{name}\""));
        }
        if let Some(file_name) = &part.file_name {
            disposition.push_str(&format!("; filename=\"{file_name}\""));
        }
        out.extend_from_slice(disposition.as_bytes());
        out.extend_from_slice(b"\r\n");
        if let Some(content_type) = &part.content_type {
            out.extend_from_slice(format!("Content-Type: {content_type}\r\n").as_bytes());
        }
        for header in &part.extra_headers {
            out.extend_from_slice(format!("{header}\r\n").as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&part.body);
        out.extend_from_slice(b"\r\n");
    }
    if !matches!(case.damage, Some(Damage::Unclosed)) {
        out.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    }
    let at = |per_mille: usize, len: usize| len * per_mille / 1000;
    let mut content_type = format!("multipart/form-data; boundary={BOUNDARY}");
    match &case.damage {
        Some(Damage::Cut(p)) => out.truncate(at(*p, out.len())),
        Some(Damage::Overwrite(p, b)) if !out.is_empty() => {
            let i = at(*p, out.len() - 1);
            out[i] = *b;
        }
        Some(Damage::Insert(p, bytes)) => {
            let i = at(*p, out.len());
            out.splice(i..i, bytes.iter().copied());
        }
        Some(Damage::OtherBoundary) => content_type = "multipart/form-data; boundary=another-boundary".to_owned(),
        Some(Damage::NoBoundary) => content_type = "multipart/form-data".to_owned(),
        Some(Damage::Overwrite(..) | Damage::Unclosed) | None => {}
    }
    (out, content_type)
}

/// What a well-formed form must get: `Some(201)` or `Some(422)` when the answer is known in advance, `None`
/// for forms whose fate depends on the parsers (raw bytes, odd names, declared types).
fn expected_status(case: &Case) -> Option<u16> {
    let printable = |s: &str| s.bytes().all(|b| (b' '..=b'~').contains(&b) && b != b'"');
    let well_formed = case.parts.iter().all(|p| {
        let fields = [&p.name, &p.file_name, &p.content_type];
        fields.iter().all(|f| f.as_deref().is_none_or(printable))
            && p.extra_headers.is_empty()
            && !p.body.windows(BOUNDARY.len()).any(|w| w == BOUNDARY.as_bytes())
    });
    if case.damage.is_some() || !well_formed {
        return None;
    }
    let named = |n: &str| case.parts.iter().filter(|p| p.name.as_deref() == Some(n)).count();
    let (files, titles) = (named("file"), named("title"));
    if files != 1 {
        return Some(422);
    }
    let plain = |p: &Part| {
        p.body.first().is_some_and(u8::is_ascii_alphabetic)
            && p.body.iter().all(|b| b.is_ascii_alphanumeric() || b" .,".contains(b))
    };
    let file = case.parts.iter().find(|p| p.name.as_deref() == Some("file"))?;
    let text_file = file.content_type.as_deref() == Some("text/plain") && file.file_name.is_none();
    let simple_title = case.parts.iter().filter(|p| p.name.as_deref() == Some("title")).all(plain);
    let only_known = case.parts.iter().all(|p| matches!(p.name.as_deref(), Some("file" | "title")));
    (plain(file) && text_file && titles <= 1 && simple_title && only_known).then_some(201)
}

async fn document_count(app: &TestApp, t: &Tenant) -> usize {
    let list: Value = app.get(&t.key, "/v1/documents").await.json().await.expect("json");
    list["documents"].as_array().expect("documents").len()
}

/// Checks one form; returns the status, which was the expected one when it was known in advance.
async fn check(app: &TestApp, t: &Tenant, case: &Case) -> Result<u16, TestCaseError> {
    let before = document_count(app, t).await;
    let (body, content_type) = encode(case);
    let r = app
        .client
        .post(app.url("/v1/documents"))
        .bearer_auth(&t.key)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("post");
    let status = r.status().as_u16();
    let duplicate = r.headers().contains_key("tenantry-duplicate-of");
    let response_type = r.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let answer: Value = r.json().await.expect("a JSON body");
    let after = document_count(app, t).await;
    if let Some(expected) = expected_status(case) {
        prop_assert_eq!(status, expected, "{}", answer);
    }
    match status {
        201 => prop_assert_eq!(after, before + usize::from(!duplicate), "one document stored"),
        400 | 413 | 415 | 422 => {
            prop_assert_eq!(response_type.as_str(), "application/problem+json");
            prop_assert!(answer["code"].is_string() && answer["detail"].is_string(), "{}", answer);
            prop_assert_eq!(after, before, "a refused form stores nothing");
        }
        _ => prop_assert!(false, "unexpected {status}: {answer}"),
    }
    Ok(status)
}

#[test]
fn any_form_is_stored_whole_or_refused_with_a_problem() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let (app, t) = runtime.block_on(async {
        let app = spawn_app_with(|c| {
            for plan in &mut c.plans {
                plan.quotas.documents = 1_000_000;
                plan.quotas.requests_per_minute = 1_000_000;
            }
        })
        .await;
        let t = app.signup("forms@fuzz.test", "trial").await;
        (app, t)
    });
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(64);
    let config = Config { cases, failure_persistence: None, ..Config::default() };
    let mut runner = TestRunner::new_with_rng(config.clone(), TestRng::deterministic_rng(config.rng_algorithm));
    let foreseen = std::cell::Cell::new((0, 0));
    let outcome = runner.run(&case(), |case| {
        let status = runtime.block_on(check(&app, &t, &case))?;
        let (created, refused) = foreseen.get();
        match expected_status(&case) {
            Some(201) => foreseen.set((created + 1, refused)),
            Some(_) => foreseen.set((created, refused + status as usize / 422)),
            None => {}
        }
        Ok(())
    });
    if let Err(e) = outcome {
        panic!("{e}");
    }
    let (created, refused) = foreseen.get();
    assert!(
        created > 0 && refused > 0,
        "the run held forms whose answer was known: {created} stored, {refused} refused"
    );
    // The service still answers the tenant after every form it was sent.
    runtime
        .block_on(async { assert_eq!(app.upload_text(&t.key, "After", "Refunds take 14 days.").await["chunks"], 1) });
}
