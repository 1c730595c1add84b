//! Fuzzing every parser that reads a tenant's bytes (PDF, HTML, Markdown, text) with proptest generators
//! over a corpus of real files, decompression bombs, deep nesting and truncations. Each case must end in a
//! document within the text limit or a typed error: no escaped panic. CI runs these from a fixed seed.
//!
//! A counting allocator (`peak_alloc`) also measures the heap each case takes, which must stay within a
//! bound derived from the limits.
//!
//! Cases per generator: `PROPTEST_CASES` (default 64); a longer run is
//! `PROPTEST_CASES=20000 cargo test --release -p tenantry-ingest --test fuzz`.

use std::sync::{Mutex, OnceLock};

use peak_alloc::PeakAlloc;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRng, TestRunner};
use support::{one_page_pdf_compressed, pdf_with_a_looping_tree, pdf_with_forms, Form};
use tenantry_ingest::{parse, Format, IngestError, Limits};

mod support;

/// Counts the bytes the process holds, and the most it held since the last reset.
#[global_allocator]
static HEAP: PeakAlloc = PeakAlloc;

/// One test measures at a time: the counter is the whole process's.
static MEASURING: Mutex<()> = Mutex::new(());

/// Small limits, so that a bomb crosses them quickly and the bound below is tight.
const LIMITS: Limits = Limits {
    stream_bytes: 1 << 20,
    expanded_bytes: 4 << 20,
    text_bytes: 256 << 10,
    stream_operators: 20_000,
    document_operators: 200_000,
};

/// What one parse may add to the heap: the limits' worth of decoded data a few times over (buffers grow by
/// doubling), plus the parser's own structures, which grow with the input.
fn heap_bound(input: usize) -> usize {
    4 * LIMITS.expanded_bytes as usize + 64 * input + (8 << 20)
}

/// Parses `bytes` as `format`, checking that it ends well: a document within the text limit, or a typed
/// error. Returns the most heap the parse took.
fn parse_ends_well(format: Format, bytes: &[u8]) -> Result<usize, TestCaseError> {
    HEAP.reset_peak_usage();
    let before = HEAP.current_usage();
    let parsed = parse(format, bytes, &LIMITS);
    let grew = HEAP.peak_usage().saturating_sub(before);
    match parsed {
        Ok(doc) => prop_assert!(doc.text_bytes() <= LIMITS.text_bytes, "{} bytes of text", doc.text_bytes()),
        Err(IngestError::NotUtf8 | IngestError::Empty | IngestError::Unparseable(_) | IngestError::TooLarge(_)) => {}
    }
    Ok(grew)
}

/// `ends_well`, and within the heap bound.
fn within_the_bound(format: Format) -> impl Fn(Vec<u8>) -> Result<(), TestCaseError> {
    move |bytes| {
        let grew = parse_ends_well(format, &bytes)?;
        let bound = heap_bound(bytes.len());
        prop_assert!(grew <= bound, "{format:?} of {} bytes took {grew} bytes of heap (bound {bound})", bytes.len());
        Ok(())
    }
}

/// Runs `PROPTEST_CASES` (default 64) cases of the strategy `make` makes through `check`, from a fixed seed,
/// one test at a time (the strategy is made under the lock too: the PDF corpus allocates a bomb).
fn fuzz<S: Strategy>(make: impl FnOnce() -> S, check: impl Fn(S::Value) -> Result<(), TestCaseError>) {
    let _alone = MEASURING.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    // The PDF parser's panics are caught and become errors; the default hook would print each (and, with
    // RUST_BACKTRACE set, symbolize a backtrace: tens of MB counted against the parse).
    std::panic::set_hook(Box::new(|_| {}));
    let strategy = make();
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(64);
    let config = Config { cases, failure_persistence: None, ..Config::default() };
    let mut runner = TestRunner::new_with_rng(config.clone(), TestRng::deterministic_rng(config.rng_algorithm));
    let outcome = runner.run(&strategy, check);
    drop(std::panic::take_hook());
    if let Err(e) = outcome {
        panic!("{e}");
    }
}

/// Overwrites, inserts and deletes a few bytes, then maybe cuts the file short.
fn mutated(corpus: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    let edits = prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 0..12);
    (prop::sample::select(corpus), edits, prop::option::of(any::<prop::sample::Index>())).prop_map(
        |(mut bytes, edits, cut)| {
            for (at, byte, kind) in edits {
                if bytes.is_empty() {
                    bytes.push(byte);
                    continue;
                }
                let i = at.index(bytes.len());
                match kind {
                    0 => bytes[i] = byte,
                    1 => bytes.insert(i, byte),
                    _ => {
                        bytes.remove(i);
                    }
                }
            }
            if let Some(cut) = cut {
                bytes.truncate(cut.index(bytes.len() + 1));
            }
            bytes
        },
    )
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))).expect("fixture")
}

/// The PDF corpus: real files, a truncated one, encrypted ones, a Flate bomb (32 MiB of content in a file of
/// about 32 KB), deeply nested graphics states (50,000 `q` in 754 bytes), and a page of dense operators
/// (1 MB of text drawing).
fn pdf_corpus() -> &'static Vec<Vec<u8>> {
    static CORPUS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    CORPUS.get_or_init(|| {
        let mut bomb = b"BT /F1 12 Tf 72 700 Td (Boom) Tj ET".to_vec();
        bomb.resize(32 << 20, b' ');
        let nested = [b"q ".repeat(50_000), b"BT (deep) Tj ET".to_vec(), b" Q".repeat(50_000)].concat();
        let dense = b"BT /F1 12 Tf 72 700 Td (all work and no play) Tj ET ".repeat(20_000);
        vec![
            fixture("sample.pdf"),
            fixture("truncated.pdf"),
            fixture("encrypted.pdf"),
            fixture("owner-password-only.pdf"),
            one_page_pdf_compressed(&bomb),
            one_page_pdf_compressed(&nested),
            one_page_pdf_compressed(&dense),
            pdf_with_forms(b"/X1 Do", &[Form { name: "X1", content: b"/X1 Do", own_resources: false }], 1),
            pdf_with_forms(
                &b"/X1 Do ".repeat(50_000),
                &[Form { name: "X1", content: &dense[..5_000], own_resources: true }],
                1,
            ),
            pdf_with_a_looping_tree(b"BT /F1 12 Tf 72 700 Td (loop) Tj ET"),
        ]
    })
}

#[test]
fn pdf_parsing_ends_well_within_the_heap_bound() {
    fuzz(|| mutated(pdf_corpus().clone()), within_the_bound(Format::Pdf));
    // The bomb, the deep nesting, the dense page and the form drawn 50,000 times are refused as too large,
    // not parsed; the form that draws itself and the looping page tree as damaged.
    let _alone = MEASURING.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    for i in [7, 9] {
        assert!(matches!(parse(Format::Pdf, &pdf_corpus()[i], &LIMITS), Err(IngestError::Unparseable(_))), "{i}");
    }
    for i in [4, 5, 6, 8] {
        assert!(matches!(parse(Format::Pdf, &pdf_corpus()[i], &LIMITS), Err(IngestError::TooLarge(_))), "{i}");
    }
}

/// HTML from nested elements (up to tens of thousands deep, closed or not), text, entities and comments.
fn html() -> impl Strategy<Value = Vec<u8>> {
    let tag = prop::sample::select(vec!["div", "ul", "li", "table", "td", "h1", "h2", "p", "script", "b", "pre"]);
    let piece = prop_oneof![
        (tag.clone(), 1usize..30_000, any::<bool>()).prop_map(|(tag, depth, closed)| {
            let open = format!("<{tag}>").repeat(depth);
            let close = if closed { format!("</{tag}>").repeat(depth) } else { String::new() };
            format!("{open}text{close}")
        }),
        "[a-zA-Z &;#<>/=\"'!-]{0,200}",
        Just("<!-- unterminated".to_owned()),
        Just("&#x110000;&#0;&amp&lt;".to_owned()),
    ];
    prop::collection::vec(piece, 0..6).prop_map(|parts| parts.concat().into_bytes())
}

#[test]
fn html_parsing_ends_well_within_the_heap_bound() {
    fuzz(html, within_the_bound(Format::Html));
    fuzz(|| mutated(vec![fixture("page.html")]), within_the_bound(Format::Html));
}

/// Markdown with deep quotes and lists, headings, fences, tables, links, and stray bytes.
fn markdown() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        (1usize..20_000).prop_map(|n| format!("{} quoted\n", ">".repeat(n))),
        (1usize..5_000).prop_map(|n| (0..n).map(|i| format!("{}- item\n", "  ".repeat(i % 200))).collect()),
        (1usize..10_000).prop_map(|n| format!("{}text{}\n", "[".repeat(n), "](x)".repeat(n))),
        "#{1,7} [a-z ]{0,40}\n",
        "```[a-z]{0,5}\n[a-z\n]{0,100}",
        "\\|[a-z |-]{0,60}\n",
        "[\\x00-\\x7f]{0,200}",
    ];
    prop::collection::vec(piece, 0..6).prop_map(|parts| parts.concat().into_bytes())
}

#[test]
fn markdown_and_text_parsing_end_well_within_the_heap_bound() {
    fuzz(markdown, within_the_bound(Format::Markdown));
    fuzz(
        || prop::collection::vec(any::<u8>(), 0..4096),
        |bytes| {
            within_the_bound(Format::Markdown)(bytes.clone())?;
            within_the_bound(Format::Text)(bytes)
        },
    );
}
