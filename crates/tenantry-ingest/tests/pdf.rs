//! PDF ingestion against the committed fixtures (always) and the real documents under /work/shared (when present).

use std::path::Path;

use support::{one_page_pdf, one_page_pdf_compressed, pdf_with_a_looping_tree, pdf_with_forms, Form};
use tenantry_ingest::{chunk, parse, ChunkOptions, Format, IngestError, Limits, ParsedDocument};

mod support;

fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

fn unparseable(bytes: &[u8]) -> String {
    match parse(Format::Pdf, bytes, &Limits::default()) {
        Err(IngestError::Unparseable(reason)) => reason,
        other => panic!("expected Unparseable, got {other:?}"),
    }
}

fn text_on_page(doc: &ParsedDocument, page: u32) -> String {
    doc.blocks.iter().filter(|b| b.page == Some(page)).map(|b| b.text.as_str()).collect::<Vec<_>>().join("\n")
}

#[test]
fn sample_pdf_keeps_pages_paragraphs_and_headings() {
    let doc = parse(Format::Pdf, &fixture("sample.pdf"), &Limits::default()).expect("sample.pdf parses");
    assert_eq!(doc.title.as_deref(), Some("Tenantry Sample Handbook"));
    assert!(doc.blocks.iter().all(|b| matches!(b.page, Some(1..=3))));

    let page1 = text_on_page(&doc, 1);
    // "pro-" / "cessing" is hyphenated at a line end in the PDF.
    assert!(page1.contains(
        "rules relating to the protection of natural persons with regard to the processing of personal data"
    ));
    let page3 = text_on_page(&doc, 3);
    assert!(page3.contains("mentions the word zebra"), "{page3}");
    assert!(!page1.contains("zebra"));
    // The running page numbers ("-2-", "-3-") are not text.
    assert!(doc.blocks.iter().all(|b| !b.text.contains("-2-") && !b.text.contains("-3-")));

    let erasure: Vec<_> = doc.blocks.iter().filter(|b| b.heading == "Article 2 > Right to erasure").collect();
    assert_eq!(erasure.len(), 3, "{:#?}", doc.blocks);
    assert!(erasure.iter().all(|b| b.page == Some(2)));
    assert_eq!(erasure[1].text, "(a) the personal data have been unlawfully processed;");
    assert!(doc.blocks.iter().any(|b| b.heading.ends_with("Article 1 > Subject-matter and objectives")));
}

#[test]
fn sample_pdf_chunks_cite_pages_and_headings() {
    let doc = parse(Format::Pdf, &fixture("sample.pdf"), &Limits::default()).expect("sample.pdf parses");
    let chunks = chunk(&doc, ChunkOptions::default());
    let zebra = chunks.iter().find(|c| c.text.contains("zebra")).expect("a chunk mentions zebra");
    assert_eq!(zebra.page, Some(3));
    assert_eq!(zebra.heading, "Article 3 > Retention of uploaded documents");
}

#[test]
fn pdf_protected_by_an_owner_password_only_is_read() {
    let doc =
        parse(Format::Pdf, &fixture("owner-password-only.pdf"), &Limits::default()).expect("opens without a password");
    assert!(text_on_page(&doc, 3).contains("zebra"));
}

#[test]
fn pdf_that_needs_a_password_is_refused_clearly() {
    assert!(unparseable(&fixture("encrypted.pdf")).contains("encrypted"));
}

#[test]
fn truncated_pdf_is_unparseable() {
    let reason = unparseable(&fixture("truncated.pdf"));
    assert!(reason.contains("damaged"), "{reason}");
    let sample = fixture("sample.pdf");
    for len in [0, 10, sample.len() / 3, sample.len() - 40] {
        assert!(
            matches!(parse(Format::Pdf, &sample[..len], &Limits::default()), Err(IngestError::Unparseable(_))),
            "{len} bytes"
        );
    }
}

#[test]
fn random_bytes_are_unparseable() {
    // A fixed xorshift sequence: reproducible noise without a dependency.
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let noise: Vec<u8> = (0..64 * 1024)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[0]
        })
        .collect();
    assert!(unparseable(&noise).contains("not a PDF"));
    // Behind a PDF header the noise reaches the parser itself.
    let disguised = [b"%PDF-1.7\n".as_slice(), &noise].concat();
    unparseable(&disguised);
}

#[test]
fn generated_pdf_round_trips() {
    let doc = parse(
        Format::Pdf,
        &one_page_pdf(b"BT /F1 12 Tf 72 700 Td (Hello from lopdf.) Tj ET", true),
        &Limits::default(),
    )
    .expect("generated PDF parses");
    assert_eq!(doc.title, None);
    assert_eq!(text_on_page(&doc, 1), "Hello from lopdf.");
}

#[test]
fn pdf_without_a_text_layer_is_refused() {
    let scan_like = one_page_pdf(b"0 0 m 500 700 l S 10 10 200 300 re f", true);
    assert!(unparseable(&scan_like).contains("no text layer"));
}

#[test]
fn deeply_nested_content_is_unparseable_not_a_crash() {
    // lopdf refuses the nesting and pdf-extract unwraps that error: a panic, caught on the parser thread.
    let depth = 100_000;
    let content = format!("BT /F1 12 Tf 72 700 Td {}(x){} TJ ET", "[".repeat(depth), "]".repeat(depth));
    unparseable(&one_page_pdf(content.as_bytes(), true));
}

#[test]
fn a_panic_in_the_parser_becomes_unparseable() {
    // pdf-extract panics on a page without a MediaBox (`expect("MediaBox")`).
    let bytes = one_page_pdf(b"BT /F1 12 Tf 72 700 Td (x) Tj ET", false);
    let reason = unparseable(&bytes);
    assert!(reason.contains("MediaBox"), "{reason}");
}

/// The real documents are not in the repository; CI may not have them.
fn shared_document(name: &str) -> Option<Vec<u8>> {
    let path = Path::new("/work/shared/data/docs").join(name);
    match std::fs::read(&path) {
        Ok(bytes) => Some(bytes),
        Err(e) => {
            eprintln!("skipping: {} not readable ({e})", path.display());
            None
        }
    }
}

#[test]
fn gdpr_pdf_has_text_on_every_page_and_article_17_on_page_47() {
    let Some(bytes) = shared_document("gdpr.pdf") else { return };
    let doc = parse(Format::Pdf, &bytes, &Limits::default()).expect("gdpr.pdf parses");
    for page in 1..=96 {
        assert!(text_on_page(&doc, page).len() > 500, "page {page} has little text");
    }
    assert!(doc.blocks.iter().all(|b| matches!(b.page, Some(1..=96))));

    let article_17: Vec<_> =
        doc.blocks.iter().filter(|b| b.heading.starts_with("Article 17 > Right to erasure")).collect();
    assert_eq!(article_17.first().and_then(|b| b.page), Some(47));
    assert!(article_17[0]
        .text
        .starts_with("1. The data subject shall have the right to obtain from the controller the erasure"));
    assert!(doc.blocks.iter().any(|b| b.heading.starts_with("CHAPTER III > Rights of the data subject")));
}

#[test]
fn gdpr_pdf_words_match_the_source_text() {
    let Some(bytes) = shared_document("gdpr.pdf") else { return };
    let Some(source) = shared_document("gdpr_regulation_eu_2016_679_en.txt") else { return };
    let source = String::from_utf8_lossy(&source).to_lowercase();
    let vocabulary: std::collections::HashSet<&str> = words(&source).collect();
    let doc = parse(Format::Pdf, &bytes, &Limits::default()).expect("gdpr.pdf parses");
    let text = doc.blocks.iter().map(|b| b.text.to_lowercase()).collect::<Vec<_>>().join(" ");
    let all: Vec<&str> = words(&text).collect();
    let unknown: Vec<&str> = all.iter().copied().filter(|w| !vocabulary.contains(w)).collect();
    // Glued words ("thedatasubject") or split ones ("pro cessing") would be unknown; three real compounds
    // hyphenated at a line end ("case-law") are joined by mistake.
    assert!(all.len() > 50_000, "{} words", all.len());
    assert!(unknown.len() <= 5, "unknown words: {unknown:?}");
}

fn words(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty())
}

#[test]
fn manual_500_pdf_parses_every_page() {
    let Some(bytes) = shared_document("manual-500.pdf") else { return };
    let doc = parse(Format::Pdf, &bytes, &Limits::default()).expect("manual-500.pdf parses");
    let pages: std::collections::BTreeSet<u32> = doc.blocks.iter().filter_map(|b| b.page).collect();
    assert_eq!(pages.len(), 480);
    assert_eq!(pages.last(), Some(&480));
}

#[test]
fn a_flate_bomb_is_refused_before_it_expands() {
    // 200 MiB of page content (a text operator, then white space) in a file of about 200 KB.
    let mut content = b"BT /F1 12 Tf 72 700 Td (Boom) Tj ET".to_vec();
    content.resize(200 << 20, b' ');
    let bomb = one_page_pdf_compressed(&content);
    assert!(bomb.len() < 512 << 10, "the bomb is {} bytes", bomb.len());
    let limits = Limits { stream_bytes: 64 << 20, ..Limits::default() };
    match parse(Format::Pdf, &bomb, &limits) {
        Err(IngestError::TooLarge(reason)) => assert!(reason.contains("67108864 bytes"), "{reason}"),
        other => panic!("expected TooLarge, got {other:?}"),
    }
    // The same file within the limits parses: the guard measured, it did not guess.
    let roomy = Limits { stream_bytes: 256 << 20, expanded_bytes: 256 << 20, ..Limits::default() };
    let doc = parse(Format::Pdf, &bomb, &roomy).expect("within the limits");
    assert_eq!(text_on_page(&doc, 1), "Boom");
}

#[test]
fn text_past_the_documents_limit_stops_the_extraction() {
    let line = "BT /F1 12 Tf 72 700 Td (A line of text that repeats.) Tj ET\n";
    let content = line.repeat(100);
    let limits = Limits { text_bytes: 1_000, ..Limits::default() };
    let pdf = one_page_pdf_compressed(content.as_bytes());
    match parse(Format::Pdf, &pdf, &limits) {
        Err(IngestError::TooLarge(reason)) => assert!(reason.contains("1000 bytes"), "{reason}"),
        other => panic!("expected TooLarge, got {other:?}"),
    }
    parse(Format::Pdf, &pdf, &Limits::default()).expect("within the default limits");
}

fn too_large(bytes: &[u8]) -> String {
    match parse(Format::Pdf, bytes, &Limits::default()) {
        Err(IngestError::TooLarge(reason)) => reason,
        other => panic!("expected TooLarge, got {other:?}"),
    }
}

const TEXT: &[u8] = b"BT /F1 12 Tf 72 700 Td (Letterhead) Tj ET";

#[test]
fn forms_drawn_a_few_times_are_read() {
    let letterhead = Form { name: "X1", content: TEXT, own_resources: true };
    let doc = parse(
        Format::Pdf,
        &pdf_with_forms(b"/X1 Do q 1 0 0 1 0 -100 cm /X1 Do Q", &[letterhead], 1),
        &Limits::default(),
    )
    .expect("a form drawn twice parses");
    assert_eq!(text_on_page(&doc, 1).matches("Letterhead").count(), 2, "{:?}", text_on_page(&doc, 1));
}

#[test]
fn a_form_that_draws_itself_is_refused_not_followed_forever() {
    for own_resources in [false, true] {
        let form = Form { name: "X1", content: b"/X1 Do", own_resources };
        let reason = unparseable(&pdf_with_forms(b"/X1 Do", &[form], 1));
        assert!(reason.contains("draws itself"), "{reason}");
    }
    let forms = [
        Form { name: "X1", content: b"/X2 Do", own_resources: false },
        Form { name: "X2", content: b"/X1 Do", own_resources: true },
    ];
    assert!(unparseable(&pdf_with_forms(b"/X1 Do", &forms, 1)).contains("draws itself"));
}

#[test]
fn forms_nested_past_the_limit_are_refused() {
    let names: Vec<String> = (0..=40).map(|i| format!("X{i}")).collect();
    let contents: Vec<Vec<u8>> =
        (0..=40).map(|i| if i == 40 { TEXT.to_vec() } else { format!("/X{} Do", i + 1).into_bytes() }).collect();
    let forms: Vec<Form> =
        (0..=40).map(|i| Form { name: &names[i], content: &contents[i], own_resources: true }).collect();
    assert!(unparseable(&pdf_with_forms(b"/X0 Do", &forms, 1)).contains("more than 32 deep"));
    // Ten levels are fine.
    let doc = parse(Format::Pdf, &pdf_with_forms(b"/X30 Do", &forms, 1), &Limits::default()).expect("ten levels");
    assert_eq!(text_on_page(&doc, 1), "Letterhead");
}

#[test]
fn forms_drawn_a_billion_times_over_are_refused_before_drawing() {
    // A thousand operators, drawn a thousand times by a form the page draws a thousand times: 10^9
    // operators from a file of a few kilobytes.
    let leaf = [TEXT, &b"\n0 0 m".repeat(1_000)].concat();
    let middle = b"/X1 Do\n".repeat(1_000);
    let page = b"/X2 Do\n".repeat(1_000);
    let forms = [
        Form { name: "X1", content: &leaf, own_resources: false },
        Form { name: "X2", content: &middle, own_resources: false },
    ];
    let started = std::time::Instant::now();
    let reason = too_large(&pdf_with_forms(&page, &forms, 1));
    assert!(reason.contains("20000000 operators"), "{reason}");
    assert!(started.elapsed() < std::time::Duration::from_secs(30), "refused in {:?}", started.elapsed());
}

#[test]
fn a_stream_listed_as_content_many_times_is_charged_each_time() {
    let content = [TEXT, &b"\n".repeat(64 << 10)].concat();
    let reason = too_large(&pdf_with_forms(&content, &[], 8_192));
    assert!(reason.contains("decodes more than 268435456 bytes"), "{reason}");
    let doc = parse(Format::Pdf, &pdf_with_forms(&content, &[], 3), &Limits::default()).expect("listed thrice");
    assert_eq!(text_on_page(&doc, 1).matches("Letterhead").count(), 3);
}

#[test]
fn a_page_tree_that_loops_is_refused() {
    assert!(unparseable(&pdf_with_a_looping_tree(TEXT)).contains("page tree loops"));
}
