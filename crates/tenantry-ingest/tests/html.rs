//! HTML ingestion of a realistic page: content kept with its heading path, page furniture and code dropped.

use tenantry_ingest::{chunk, parse, ChunkOptions, Format, IngestError, Limits};

const PAGE: &str = include_str!("fixtures/page.html");

fn blocks(html: &str) -> Vec<(String, String)> {
    let doc = parse(Format::Html, html.as_bytes(), &Limits::default()).expect("HTML parses");
    doc.blocks.into_iter().map(|b| (b.heading, b.text)).collect()
}

#[test]
fn realistic_page_keeps_content_under_its_headings() {
    let doc = parse(Format::Html, PAGE.as_bytes(), &Limits::default()).expect("page parses");
    assert_eq!(doc.title.as_deref(), Some("Refund policy – Acme Help Center"));
    assert!(doc.blocks.iter().all(|b| b.page.is_none()));
    let got: Vec<(&str, &str)> = doc.blocks.iter().map(|b| (b.heading.as_str(), b.text.as_str())).collect();
    let policy = "Refund policy";
    let how = "Refund policy > How to request a refund";
    let exceptions = "Refund policy > Exceptions";
    assert_eq!(
        got,
        [
            (policy, "Updated 3 March 2025"),
            (
                policy,
                "We refund orders within 14 days of delivery — no questions asked. Items must be unused & in their original packaging."
            ),
            (how, "Open your orders."),
            (how, "Choose “Request refund” next to the item."),
            (how, "Print the label & drop the parcel off."),
            (
                "Refund policy > How to request a refund > Card payments",
                "Refunds to cards take 5–10 business days. Prices < €10 are refunded as store credit."
            ),
            (exceptions, "Item | Refundable?"),
            (exceptions, "Gift cards | No"),
            (exceptions, "Software | Only if sealed"),
            (exceptions, "Our customers' trust matters more than any single sale."),
            (exceptions, "refund --order 1234 --reason \"damaged\""),
            (exceptions, "Was this article helpful?"),
        ]
    );
}

#[test]
fn scripts_styles_navigation_and_furniture_are_dropped() {
    let doc = parse(Format::Html, PAGE.as_bytes(), &Limits::default()).expect("page parses");
    let all: String = doc.blocks.iter().map(|b| format!("{} {}\n", b.heading, b.text)).collect();
    for marker in ["MARKER", "dataLayer", "font-family", "Search", "Orders", "Privacy", "Acme Inc", "circle"] {
        assert!(!all.contains(marker), "{marker:?} leaked into:\n{all}");
    }
}

#[test]
fn entities_are_decoded() {
    let got = blocks("<p>&lt;b&gt; &amp;amp; &quot;q&quot; &#x27;x&#39; caf&eacute; &hellip; &bogus; AT&T</p>");
    assert_eq!(got[0].1, "<b> &amp; \"q\" 'x' café … &bogus; AT&T");
}

#[test]
fn pages_without_text_are_empty() {
    for html in [
        "",
        "<!DOCTYPE html><html><head><title>Only a title</title></head><body></body></html>",
        "<body><nav>Home</nav><script>var x = 1;</script><!-- nothing --><footer>© 2025</footer></body>",
        "<div>   &nbsp; <p> </p></div>",
    ] {
        assert_eq!(parse(Format::Html, html.as_bytes(), &Limits::default()), Err(IngestError::Empty), "{html}");
    }
}

#[test]
fn html_chunks_carry_the_heading_path() {
    let doc = parse(Format::Html, PAGE.as_bytes(), &Limits::default()).expect("page parses");
    let chunks = chunk(&doc, ChunkOptions::default());
    let cards = chunks.iter().find(|c| c.text.contains("business days")).expect("a chunk about cards");
    assert_eq!(cards.heading, "Refund policy > How to request a refund > Card payments");
    assert_eq!(cards.page, None);
}
