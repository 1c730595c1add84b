//! HTML: the WHATWG tokenizer of `html5gum` (which decodes character references) feeds a small walker that
//! keeps the text of the page's content. Headings `h1`–`h6` form the heading path as in Markdown; paragraphs,
//! list items, table rows, `pre` and quotes become blocks. Scripts, styles, navigation, page headers and
//! footers, forms and the like are dropped with everything inside them.
//!
//! No DOM is built: text only needs to know which elements are open, and any block-level tag, opening or
//! closing, ends the current block, so unclosed `<p>` and `<li>` (valid HTML) still split correctly.

use encoding_rs::Encoding;
use html5gum::{DefaultEmitter, Token, Tokenizer};

use crate::{clean_title, Block, ParsedDocument};

/// Elements whose content is never document text.
const SKIPPED: &[&[u8]] =
    &[b"script", b"style", b"noscript", b"template", b"nav", b"aside", b"form", b"svg", b"iframe", b"object"];
/// Page furniture, except inside an `article` or `main`, where `<header>` holds the article's own title.
const FURNITURE: &[&[u8]] = &[b"header", b"footer"];
/// Elements that hold the main content, see `FURNITURE`.
const CONTENT: &[&[u8]] = &[b"article", b"main"];
/// Elements whose start and end separate blocks.
const BLOCKS: &[&[u8]] = &[
    b"p",
    b"div",
    b"li",
    b"ul",
    b"ol",
    b"dl",
    b"dt",
    b"dd",
    b"tr",
    b"table",
    b"thead",
    b"tbody",
    b"tfoot",
    b"caption",
    b"pre",
    b"blockquote",
    b"section",
    b"article",
    b"main",
    b"figure",
    b"figcaption",
    b"details",
    b"summary",
    b"address",
    b"hr",
    b"body",
    b"center",
    b"fieldset",
    b"legend",
];
/// How far into the file a `<meta charset>` is looked for (the HTML standard says 1024 bytes).
const CHARSET_WINDOW: usize = 1024;

pub(crate) fn parse(bytes: &[u8]) -> ParsedDocument {
    let text = decode(bytes);
    let mut emitter = DefaultEmitter::default();
    // Without a tree builder the tokenizer needs telling that `<script>` or `<style>` content is raw text.
    emitter.naively_switch_states(true);
    let mut walker = Walker::default();
    for Ok(token) in Tokenizer::new_with_emitter(text.as_str(), emitter) {
        walker.token(token);
    }
    walker.finish()
}

/// UTF-8 unless a byte-order mark or, for bytes that are not UTF-8, a declared charset says otherwise; invalid
/// sequences become U+FFFD rather than failing the upload.
fn decode(bytes: &[u8]) -> String {
    let encoding = Encoding::for_bom(bytes)
        .map(|(encoding, _)| encoding)
        .or_else(|| std::str::from_utf8(bytes).is_err().then(|| declared_charset(bytes)).flatten())
        .unwrap_or(encoding_rs::UTF_8);
    encoding.decode_with_bom_removal(bytes).0.into_owned()
}

/// The encoding named by `charset=` in the head: `<meta charset="…">` or the `http-equiv` form.
fn declared_charset(bytes: &[u8]) -> Option<&'static Encoding> {
    let head = String::from_utf8_lossy(&bytes[..bytes.len().min(CHARSET_WINDOW)]).to_ascii_lowercase();
    let value = head.split("charset=").nth(1)?.trim_start_matches(['"', '\'']);
    let label = value.split(|c: char| !(c.is_ascii_alphanumeric() || "-_:.".contains(c))).next()?;
    // The standard reads a declared UTF-16 as UTF-8: the declaration itself was readable as ASCII.
    Encoding::for_label(label.as_bytes()).filter(|e| *e != encoding_rs::UTF_16LE && *e != encoding_rs::UTF_16BE)
}

#[derive(Default)]
struct Walker {
    /// The element whose content is being dropped, and how many of it are open (an `svg` can hold an `svg`).
    skipping: Option<(Vec<u8>, usize)>,
    /// Open `article`/`main` elements.
    content_depth: usize,
    /// The first `<title>`, and the text of the one being read.
    title: Option<String>,
    title_buf: Option<String>,
    first_h1: Option<String>,
    /// (level, text) of the headings in force, outermost first.
    headings: Vec<(u8, String)>,
    /// The heading being read: its level and text so far.
    heading: Option<(u8, String)>,
    /// Text of the current block; `row_cells` counts the cells already in it when it is a table row.
    buf: String,
    row_cells: usize,
    blocks: Vec<Block>,
}

impl Walker {
    fn token(&mut self, token: Token) {
        match token {
            Token::StartTag(tag) if tag.self_closing => self.void(&tag.name),
            Token::StartTag(tag) => self.start(&tag.name),
            Token::EndTag(tag) => self.end(&tag.name),
            Token::String(text) => self.text(&text.value),
            Token::Comment(_) | Token::Doctype(_) | Token::Error(_) => {}
        }
    }

    fn start(&mut self, name: &[u8]) {
        if let Some((skipped, open)) = self.skipping.as_mut() {
            if skipped == name {
                *open += 1;
            }
            return;
        }
        if SKIPPED.contains(&name) || (FURNITURE.contains(&name) && self.content_depth == 0) {
            self.flush();
            self.skipping = Some((name.to_vec(), 1));
            return;
        }
        if CONTENT.contains(&name) {
            self.content_depth += 1;
        }
        match name {
            b"title" => self.title_buf = Some(String::new()),
            _ if heading_level(name).is_some() => {
                self.flush();
                self.heading = heading_level(name).map(|level| (level, String::new()));
            }
            b"td" | b"th" => self.cell(),
            _ => self.void(name),
        }
    }

    /// A tag without content: `<br/>` and `<hr/>` separate, `<svg/>` or `<nav/>` are empty.
    fn void(&mut self, name: &[u8]) {
        match name {
            _ if self.skipping.is_some() => {}
            b"br" => self.text(b" "),
            _ => self.block_boundary(name),
        }
    }

    /// Block elements inside a heading (`<h1><div>Title</div></h1>`) belong to the heading.
    fn block_boundary(&mut self, name: &[u8]) {
        if BLOCKS.contains(&name) && self.heading.is_none() {
            self.flush();
        }
    }

    fn end(&mut self, name: &[u8]) {
        if let Some((skipped, open)) = self.skipping.as_mut() {
            if skipped == name {
                *open -= 1;
                if *open == 0 {
                    self.skipping = None;
                }
            }
            return;
        }
        if CONTENT.contains(&name) {
            self.content_depth = self.content_depth.saturating_sub(1);
        }
        match name {
            b"title" => {
                let title = self.title_buf.take();
                self.title = self.title.take().or(title);
            }
            _ if heading_level(name).is_some() => self.end_heading(),
            _ => self.block_boundary(name),
        }
    }

    fn text(&mut self, text: &[u8]) {
        if self.skipping.is_some() {
            return;
        }
        let text = String::from_utf8_lossy(text);
        if let Some(title) = self.title_buf.as_mut() {
            title.push_str(&text);
        } else if let Some((_, heading)) = self.heading.as_mut() {
            heading.push_str(&text);
        } else {
            self.buf.push_str(&text);
        }
    }

    /// Cells of a row stay in one block, separated like the Markdown parser's table rows.
    fn cell(&mut self) {
        if self.row_cells > 0 {
            self.buf.push_str(" | ");
        }
        self.row_cells += 1;
    }

    /// Any end of heading closes the one being read: `<h2>…</h3>` is common enough in the wild.
    fn end_heading(&mut self) {
        let Some((level, text)) = self.heading.take() else { return };
        let text = collapse(&text);
        if text.is_empty() {
            return;
        }
        if level == 1 && self.first_h1.is_none() {
            self.first_h1 = Some(text.clone());
        }
        self.headings.retain(|(l, _)| *l < level);
        self.headings.push((level, text));
    }

    fn flush(&mut self) {
        self.end_heading();
        let text = collapse(&std::mem::take(&mut self.buf));
        self.row_cells = 0;
        if !text.is_empty() {
            let heading = self.headings.iter().map(|(_, h)| h.as_str()).collect::<Vec<_>>().join(" > ");
            self.blocks.push(Block { heading, page: None, text });
        }
    }

    fn finish(mut self) -> ParsedDocument {
        self.flush();
        let title =
            self.title.as_deref().and_then(clean_title).or_else(|| self.first_h1.as_deref().and_then(clean_title));
        ParsedDocument { title, blocks: self.blocks }
    }
}

fn heading_level(name: &[u8]) -> Option<u8> {
    match name {
        [b'h', level @ b'1'..=b'6'] => Some(level - b'0'),
        _ => None,
    }
}

fn collapse(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocks(html: &str) -> Vec<(String, String)> {
        parse(html.as_bytes()).blocks.into_iter().map(|b| (b.heading, b.text)).collect()
    }

    #[test]
    fn headings_nest_by_level() {
        let got = blocks(
            "<h1>Guide</h1><p>Intro.</p><h2>Setup</h2><p>Install.</p><h3>Linux</h3><p>apt.</p><h2>Use</h2><p>Run.</p>",
        );
        let want = [
            ("Guide", "Intro."),
            ("Guide > Setup", "Install."),
            ("Guide > Setup > Linux", "apt."),
            ("Guide > Use", "Run."),
        ];
        assert_eq!(got, want.map(|(h, t)| (h.to_owned(), t.to_owned())));
    }

    #[test]
    fn unclosed_paragraphs_and_items_split() {
        let got = blocks("<p>One<p>Two<ul><li>a<li>b</ul>tail");
        let texts: Vec<_> = got.iter().map(|(_, t)| t.as_str()).collect();
        assert_eq!(texts, ["One", "Two", "a", "b", "tail"]);
    }

    #[test]
    fn table_rows_are_blocks_with_cells() {
        let got = blocks("<table><tr><th>Plan</th><th>Price</th></tr><tr><td>Pro</td><td>10 &euro;</td></tr></table>");
        let texts: Vec<_> = got.iter().map(|(_, t)| t.as_str()).collect();
        assert_eq!(texts, ["Plan | Price", "Pro | 10 €"]);
    }

    #[test]
    fn inline_markup_is_text_and_br_is_a_space() {
        let got = blocks("<p>Use <code>tenantry&nbsp;serve</code> and <b>bold</b><br>next<br/>line</p>");
        assert_eq!(got[0].1, "Use tenantry serve and bold next line");
    }

    #[test]
    fn article_header_is_kept_but_page_header_is_not() {
        let html = "<header><h1>Site</h1></header><article><header><h1>Post</h1></header><p>Body.</p></article>";
        assert_eq!(blocks(html), [("Post".to_owned(), "Body.".to_owned())]);
    }

    #[test]
    fn nested_skipped_elements_end_at_the_right_tag() {
        let html = "<nav><nav>inner</nav>still nav</nav><p>kept</p><svg><svg></svg>drawn</svg><p>too</p>";
        let texts: Vec<_> = blocks(html).into_iter().map(|(_, t)| t).collect();
        assert_eq!(texts, ["kept", "too"]);
    }

    #[test]
    fn title_falls_back_to_the_first_h1() {
        assert_eq!(parse(b"<title> A &amp; B </title><h1>C</h1><p>x</p>").title.as_deref(), Some("A & B"));
        assert_eq!(parse(b"<h2>B</h2><h1>C</h1><p>x</p>").title.as_deref(), Some("C"));
    }

    #[test]
    fn declared_charset_is_used_for_non_utf8_bytes() {
        let html = b"<meta charset=\"windows-1252\"><p>caf\xe9 \x80</p>";
        assert_eq!(parse(html).blocks[0].text, "café €");
        let html = b"<meta http-equiv=Content-Type content='text/html; charset=ISO-8859-1'><p>\xfcber</p>";
        assert_eq!(parse(html).blocks[0].text, "über");
        assert_eq!(parse(b"<p>bad \xff byte</p>").blocks[0].text, "bad \u{fffd} byte");
        assert_eq!(parse("<meta charset=latin1><p>déjà</p>".as_bytes()).blocks[0].text, "déjà");
    }
}
