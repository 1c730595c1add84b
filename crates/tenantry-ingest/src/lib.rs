//! Ingestion: turn an upload into text blocks that keep the document's structure (headings, pages), then
//! into overlapping chunks of bounded token size. Pure functions, no I/O (a PDF is parsed on a helper thread,
//! see `pdf`).

mod chunk;
mod html;
mod markdown;
mod pdf;

pub use chunk::{chunk, Chunk, ChunkOptions};

/// A supported input format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    Markdown,
    Pdf,
    Html,
}

impl Format {
    /// The format named by a content type (parameters ignored) or, failing that, a file name's extension.
    pub fn detect(content_type: Option<&str>, file_name: Option<&str>) -> Option<Format> {
        let mime =
            content_type.map(|c| c.split(';').next().unwrap_or("").trim().to_ascii_lowercase()).unwrap_or_default();
        match mime.as_str() {
            "text/plain" => return Some(Format::Text),
            "text/markdown" | "text/x-markdown" => return Some(Format::Markdown),
            "application/pdf" => return Some(Format::Pdf),
            "text/html" | "application/xhtml+xml" => return Some(Format::Html),
            _ => {}
        }
        let ext = file_name?.rsplit_once('.')?.1.to_ascii_lowercase();
        match ext.as_str() {
            "txt" | "text" => Some(Format::Text),
            "md" | "markdown" => Some(Format::Markdown),
            "pdf" => Some(Format::Pdf),
            "html" | "htm" | "xhtml" => Some(Format::Html),
            _ => None,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => "text/plain",
            Format::Markdown => "text/markdown",
            Format::Pdf => "application/pdf",
            Format::Html => "text/html",
        }
    }
}

/// A run of text under one heading path (and page, for paginated formats).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    /// Headings from the outermost in, joined with " > ".
    pub heading: String,
    pub page: Option<u32>,
    pub text: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ParsedDocument {
    /// A title found in the document itself: the first top-level heading, the HTML `<title>`, or the PDF's
    /// Info dictionary title.
    pub title: Option<String>,
    pub blocks: Vec<Block>,
}

impl ParsedDocument {
    pub fn is_empty(&self) -> bool {
        self.blocks.iter().all(|b| b.text.trim().is_empty())
    }

    /// Bytes of text in the blocks (headings included).
    pub fn text_bytes(&self) -> u64 {
        self.blocks.iter().map(|b| (b.text.len() + b.heading.len()) as u64).sum()
    }
}

pub(crate) fn text_too_large(limits: &Limits) -> IngestError {
    IngestError::TooLarge(format!(
        "the document's text is longer than {} bytes (the limit of one document)",
        limits.text_bytes
    ))
}

/// Text a document is sure to hold, counted while its bytes arrive, so that a file bound to pass the text
/// limit is refused before the rest of it is read. Only plain text has such a floor: every printable ASCII
/// byte of it stays in its text (white space collapses, but never takes a printable byte with it); the
/// other formats' markup can shrink to nothing.
#[derive(Clone, Debug)]
pub struct TextFloor {
    format: Format,
    counted: u64,
    limits: Limits,
}

impl TextFloor {
    pub fn new(format: Format, limits: Limits) -> Self {
        Self { format, counted: 0, limits }
    }

    /// Counts the next bytes of the file; `TooLarge`, with the same reason `parse` would give, once the
    /// text is sure to pass the limit.
    pub fn arrived(&mut self, bytes: &[u8]) -> Result<(), IngestError> {
        if self.format != Format::Text {
            return Ok(());
        }
        let printable = bytes.iter().filter(|b| b.is_ascii_graphic()).count();
        self.counted = self.counted.saturating_add(u64::try_from(printable).unwrap_or(u64::MAX));
        if self.counted > self.limits.text_bytes {
            return Err(text_too_large(&self.limits));
        }
        Ok(())
    }
}

/// What one upload may expand to. Parsing stops as soon as one is crossed, so a small file that decodes to
/// gigabytes never holds more than these in memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Decoded bytes of any one compressed stream inside a file (a PDF's Flate, LZW or ASCII85 streams).
    pub stream_bytes: u64,
    /// Decoded bytes of all the compressed streams of one file together.
    pub expanded_bytes: u64,
    /// Bytes of text extracted from one document.
    pub text_bytes: u64,
    /// Operators in any one content stream (a page or a form): the parser holds a page's operators at once,
    /// at a few hundred bytes each.
    pub stream_operators: u64,
    /// Operators run to draw a whole document, every form counted each time it is drawn: the work the
    /// extractor does, whatever the file's size.
    pub document_operators: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            stream_bytes: 64 << 20,
            expanded_bytes: 256 << 20,
            text_bytes: 16 << 20,
            stream_operators: 500_000,
            document_operators: 20_000_000,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IngestError {
    #[error("the document is not valid UTF-8 text")]
    NotUtf8,
    #[error("the document has no text")]
    Empty,
    /// The file is damaged, encrypted, not of the format it claims, or has no text layer; the reason is meant
    /// for the uploader.
    #[error("{0}")]
    Unparseable(String),
    /// The document expands past one of its `Limits`; the reason names which.
    #[error("{0}")]
    TooLarge(String),
}

pub fn parse(format: Format, bytes: &[u8], limits: &Limits) -> Result<ParsedDocument, IngestError> {
    let mut doc = match format {
        Format::Text => parse_text(utf8(bytes)?, limits)?,
        Format::Markdown => markdown::parse(utf8(bytes)?),
        Format::Pdf => pdf::parse(bytes, limits)?,
        Format::Html => html::parse(bytes),
    };
    // Text and Markdown hold no more text than their bytes, nor HTML (entities shorten); a PDF's text is
    // counted while it is extracted, and stops there. This is the one check for every format.
    if doc.text_bytes() > limits.text_bytes {
        return Err(text_too_large(limits));
    }
    // Control characters (NUL above all, which PostgreSQL's text refuses) carry nothing a reader or the
    // search needs; white space stays.
    for block in &mut doc.blocks {
        strip_controls(&mut block.heading);
        strip_controls(&mut block.text);
    }
    if let Some(title) = &mut doc.title {
        strip_controls(title);
    }
    if doc.is_empty() {
        return Err(IngestError::Empty);
    }
    Ok(doc)
}

/// Longest title taken from a document: a PDF's Info title or an HTML `<title>` can be a whole sentence of
/// boilerplate, and the service refuses titles over 500 characters.
const MAX_TITLE_CHARS: usize = 200;

/// A title with white space collapsed and cut to `MAX_TITLE_CHARS`; `None` if nothing is left.
fn clean_title(raw: &str) -> Option<String> {
    let title = raw.split_whitespace().collect::<Vec<_>>().join(" ");
    match title.char_indices().nth(MAX_TITLE_CHARS) {
        _ if title.is_empty() => None,
        Some((cut, _)) => Some(format!("{}…", title[..cut].trim_end())),
        None => Some(title),
    }
}

/// Removes control characters other than white space, in place (nothing is copied when there are none).
fn strip_controls(text: &mut String) {
    if text.chars().any(is_stray_control) {
        text.retain(|c| !is_stray_control(c));
    }
}

/// A control character other than white space: nothing a reader or the search needs (titles holding one
/// are refused by the service).
pub fn is_stray_control(c: char) -> bool {
    c.is_control() && !c.is_whitespace()
}

fn utf8(bytes: &[u8]) -> Result<&str, IngestError> {
    std::str::from_utf8(bytes).map_err(|_| IngestError::NotUtf8)
}

/// Plain text: paragraphs are separated by blank lines. The text the paragraphs will hold is measured
/// first, so a file past the limit is refused before any of it is copied.
fn parse_text(text: &str, limits: &Limits) -> Result<ParsedDocument, IngestError> {
    let paragraph_bytes = |p: &str| {
        let (letters, words) = p.split_whitespace().fold((0, 0), |(n, w), word| (n + word.len(), w + 1));
        (letters + words).saturating_sub(1) as u64
    };
    if text.split("\n\n").map(paragraph_bytes).sum::<u64>() > limits.text_bytes {
        return Err(text_too_large(limits));
    }
    let paragraphs = text.split("\n\n").map(str::trim).filter(|p| !p.is_empty());
    Ok(ParsedDocument { title: None, blocks: plain_blocks(paragraphs) })
}

/// Heading lines met before one paragraph, at most: a longer run of short lines is text (a list, a poem).
const MOST_HEADING_LINES: usize = 6;
const MOST_HEADING_CHARS: usize = 300;

/// Plain text's paragraphs as blocks, with the structure plain text shows without markup: a run of short
/// lines without closing punctuation before a paragraph ("Article 17", "Right to erasure") is that
/// paragraph's heading, and the headings of the paragraphs after it until the next run; a paragraph that is
/// only an enumerator ("(a)", "(10)", "3.") is the start of the next one.
fn plain_blocks<'a>(paragraphs: impl Iterator<Item = &'a str>) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut heading = String::new();
    let mut pending: Vec<String> = Vec::new();
    let mut marker: Option<String> = None;
    let flat = |p: &str| p.split_whitespace().collect::<Vec<_>>().join(" ");
    for paragraph in paragraphs {
        let text = flat(paragraph);
        if is_enumerator(&text) {
            marker = Some(text);
            continue;
        }
        if marker.is_none() && looks_like_heading(paragraph) {
            pending.push(text);
            continue;
        }
        let run_chars: usize = pending.iter().map(|h| h.chars().count()).sum();
        if !pending.is_empty() && pending.len() <= MOST_HEADING_LINES && run_chars <= MOST_HEADING_CHARS {
            heading = pending.join(" > ");
        } else {
            blocks.extend(pending.iter().map(|t| Block { heading: heading.clone(), page: None, text: t.clone() }));
        }
        pending.clear();
        let text = match marker.take() {
            Some(m) => format!("{m} {text}"),
            None => text,
        };
        blocks.push(Block { heading: heading.clone(), page: None, text });
    }
    let rest = pending.into_iter().chain(marker);
    blocks.extend(rest.map(|text| Block { heading: heading.clone(), page: None, text }));
    blocks
}

/// One short line that does not end a sentence or a clause, and is not an aside in parentheses.
fn looks_like_heading(paragraph: &str) -> bool {
    let line = paragraph.trim();
    !line.contains('\n')
        && line.chars().count() <= 120
        && line.split_whitespace().count() <= 15
        && line.chars().any(char::is_alphabetic)
        && !line.ends_with(['.', ',', ';', ':'])
        && !(line.starts_with('(') && line.ends_with(')'))
}

/// "(a)", "(10)", "a)", "3." or "iv.": a list item's label on a line of its own.
fn is_enumerator(text: &str) -> bool {
    let inner = text.strip_prefix('(').unwrap_or(text);
    let inner = inner.strip_suffix([')', '.']).unwrap_or(inner);
    inner.len() != text.len() && (1..=4).contains(&inner.len()) && inner.chars().all(|c| c.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_default(format: Format, bytes: &[u8]) -> Result<ParsedDocument, IngestError> {
        parse(format, bytes, &Limits::default())
    }

    #[test]
    fn plain_text_headings_and_list_labels_are_read_from_the_layout() {
        let text = "CHAPTER III\n\nRights of the data subject\n\n(Text with EEA relevance)\n\nArticle 17\n\n\
                    Right to erasure\n\n\
                    1.   The data subject shall have the right to erasure where:\n\n(a)\n\nthe data are no \
                    longer necessary;\n\nArticle 18\n\nRight to restriction\n\nThe data subject may ask.";
        let doc = parse_default(Format::Text, text.as_bytes()).expect("parsed");
        let got: Vec<(&str, &str)> = doc.blocks.iter().map(|b| (b.heading.as_str(), b.text.as_str())).collect();
        assert_eq!(
            got,
            [
                ("CHAPTER III > Rights of the data subject", "(Text with EEA relevance)"),
                ("Article 17 > Right to erasure", "1. The data subject shall have the right to erasure where:"),
                ("Article 17 > Right to erasure", "(a) the data are no longer necessary;"),
                ("Article 18 > Right to restriction", "The data subject may ask."),
            ]
        );
    }

    #[test]
    fn short_lines_without_a_paragraph_after_them_stay_text() {
        let poem = (1..=9).map(|i| format!("Line number {i}")).collect::<Vec<_>>().join("\n\n");
        let doc = parse_default(Format::Text, poem.as_bytes()).expect("parsed");
        assert_eq!(doc.blocks.len(), 9);
        assert!(doc.blocks.iter().all(|b| b.heading.is_empty()), "{doc:?}");
        let doc = parse_default(Format::Text, b"Just a title").expect("parsed");
        assert_eq!((doc.blocks[0].heading.as_str(), doc.blocks[0].text.as_str()), ("", "Just a title"));
        let list = (1..=9).map(|i| format!("Item {i}")).collect::<Vec<_>>().join("\n\n") + "\n\nA closing sentence.";
        let doc = parse_default(Format::Text, list.as_bytes()).expect("parsed");
        assert_eq!(doc.blocks.len(), 10, "a long run of short lines is a list, not a heading");
        assert!(doc.blocks.iter().all(|b| b.heading.is_empty()), "{doc:?}");
    }

    #[test]
    fn text_past_the_limit_is_refused() {
        let limits = Limits { text_bytes: 1_000, ..Limits::default() };
        let long = "word ".repeat(300);
        for format in [Format::Text, Format::Markdown, Format::Html] {
            let err = parse(format, long.as_bytes(), &limits).expect_err("1,500 bytes of text");
            assert!(matches!(&err, IngestError::TooLarge(r) if r.contains("1000 bytes")), "{format:?}: {err:?}");
            parse(format, &long.as_bytes()[..900], &limits).expect("under the limit");
        }
    }

    #[test]
    fn a_plain_text_file_is_refused_as_soon_as_its_printable_bytes_pass_the_limit() {
        let limits = Limits { text_bytes: 1_000, ..Limits::default() };
        let mut floor = TextFloor::new(Format::Text, limits);
        let line = b"Refunds are issued within fourteen days.\n";
        let mut sent = 0;
        let refused = loop {
            sent += line.len();
            if let Err(e) = floor.arrived(line) {
                break e;
            }
        };
        assert!(matches!(&refused, IngestError::TooLarge(r) if r.contains("1000 bytes")), "{refused:?}");
        assert!(sent < 1_300, "refused after {sent} bytes");
        // Markup can vanish in parsing, so the other formats are left to the parser.
        let mut html = TextFloor::new(Format::Html, limits);
        assert_eq!(html.arrived(&b"<p></p>".repeat(1_000)), Ok(()));
    }

    proptest::proptest! {
        /// The floor never refuses what the parser would take: white space of any kind (Unicode's
        /// included) collapses without taking a printable byte with it.
        #[test]
        fn the_text_floor_refuses_only_what_parsing_refuses(
            pieces in proptest::collection::vec(
                proptest::prop_oneof!["[a-z]{1,12}", "[ \t\n]{1,4}", "\u{a0}|\u{3000}|\u{2028}", "[é☃]{1,3}"],
                0..200,
            ),
            limit in 1u64..600,
        ) {
            let text = pieces.concat();
            let limits = Limits { text_bytes: limit, ..Limits::default() };
            let mut floor = TextFloor::new(Format::Text, limits);
            let floor_refuses = text.as_bytes().chunks(7).any(|c| floor.arrived(c).is_err());
            if floor_refuses {
                let parsed = parse(Format::Text, text.as_bytes(), &limits);
                proptest::prop_assert!(matches!(parsed, Err(IngestError::TooLarge(_))), "{parsed:?}");
            }
        }
    }

    #[test]
    fn detects_by_type_then_extension() {
        assert_eq!(Format::detect(Some("text/markdown; charset=utf-8"), None), Some(Format::Markdown));
        assert_eq!(Format::detect(Some("application/octet-stream"), Some("a.MD")), Some(Format::Markdown));
        assert_eq!(Format::detect(None, Some("notes.txt")), Some(Format::Text));
        assert_eq!(Format::detect(Some("image/png"), Some("x.png")), None);
        assert_eq!(Format::detect(None, None), None);
    }

    #[test]
    fn detects_pdf_and_html() {
        assert_eq!(Format::detect(Some("application/pdf"), None), Some(Format::Pdf));
        assert_eq!(Format::detect(Some("Text/HTML; charset=ISO-8859-1"), None), Some(Format::Html));
        assert_eq!(Format::detect(Some("application/xhtml+xml"), Some("a.txt")), Some(Format::Html));
        assert_eq!(Format::detect(Some("application/octet-stream"), Some("Scan.PDF")), Some(Format::Pdf));
        for name in ["index.html", "old.HTM", "page.xhtml"] {
            assert_eq!(Format::detect(None, Some(name)), Some(Format::Html), "{name}");
        }
        assert_eq!(Format::Pdf.content_type(), "application/pdf");
        assert_eq!(Format::Html.content_type(), "text/html");
        for format in [Format::Text, Format::Markdown, Format::Pdf, Format::Html] {
            assert_eq!(Format::detect(Some(format.content_type()), None), Some(format));
        }
    }

    #[test]
    fn titles_are_collapsed_and_bounded() {
        assert_eq!(clean_title("  A\n  title \t"), Some("A title".to_owned()));
        assert_eq!(clean_title(" \n "), None);
        let long = clean_title(&"word ".repeat(100)).expect("a title");
        assert_eq!(long.chars().count(), MAX_TITLE_CHARS);
        assert!(long.ends_with("word…"), "{long}");
    }

    #[test]
    fn control_characters_are_dropped_and_white_space_kept() {
        let doc = parse_default(Format::Markdown, "# Ti\0tle\n\nOne\u{7}\ttwo\r\nthree\0".as_bytes()).expect("parses");
        assert_eq!(doc.title.as_deref(), Some("Title"));
        let text: String = doc.blocks.iter().map(|b| b.text.as_str()).collect();
        assert!(!text.chars().any(is_stray_control), "{text:?}");
        assert_eq!(text.split_whitespace().collect::<Vec<_>>(), ["One", "two", "three"], "white space kept");
        assert_eq!(parse_default(Format::Text, b"\0\0\x07"), Err(IngestError::Empty), "nothing but controls is empty");
    }

    #[test]
    fn empty_and_binary_documents_are_refused() {
        assert_eq!(parse_default(Format::Text, b"  \n\n \t"), Err(IngestError::Empty));
        assert_eq!(parse_default(Format::Text, &[0xff, 0xfe, 0x00]), Err(IngestError::NotUtf8));
        assert_eq!(parse_default(Format::Markdown, b"# \n\n"), Err(IngestError::Empty));
    }

    #[test]
    fn text_paragraphs_become_blocks() {
        let doc = parse_default(Format::Text, b"First para\nwraps.\n\nSecond.").expect("parses");
        let texts: Vec<_> = doc.blocks.iter().map(|b| b.text.as_str()).collect();
        assert_eq!(texts, ["First para wraps.", "Second."]);
    }
}
