//! PDF: `pdf-extract` (on `lopdf`) decodes fonts and places every glyph; `layout` turns the glyphs into
//! paragraphs and headings, one or more blocks per page.
//!
//! PDF files come from anywhere and PDF parsers are large: `pdf-extract` panics on some malformed files and
//! parsing recurses on nested objects. The parse therefore runs on its own thread with a large stack, and a
//! panic there becomes `IngestError::Unparseable` instead of reaching the caller (this relies on the default
//! `panic = "unwind"`).
//!
//! A PDF is also compressed, and `lopdf` expands what it reads with no limit: `streams` measures every
//! stream before anything is expanded, and the text extracted is counted as it comes, so a file that would
//! expand past its `Limits` is refused before it can hold the memory. What drawing the pages will take (forms
//! drawn inside forms, many times over) is walked before the extractor starts (`drawing`), so a file that
//! would loop or run for hours is refused too.

mod drawing;
mod layout;
mod streams;

use std::any::Any;
use std::borrow::Cow;

use pdf_extract::{decode_text_string, Document, MediaBox, OutputDev, OutputError, Transform};

use crate::{clean_title, IngestError, Limits, ParsedDocument};

/// Stack of the parser thread: deep object nesting in a hostile file must not overflow it, which would abort
/// the whole process rather than panic.
const PARSER_STACK_BYTES: usize = 64 << 20;

/// Files whose header does not say `%PDF-` in the first kilobyte are not handed to the parser at all.
const HEADER_WINDOW: usize = 1024;

pub(crate) fn parse(bytes: &[u8], limits: &Limits) -> Result<ParsedDocument, IngestError> {
    if !has_pdf_header(bytes) {
        return Err(unparseable("not a PDF file (no %PDF header)"));
    }
    streams::check_raw(bytes, limits)?;
    isolated(|| extract(bytes, limits))
}

fn has_pdf_header(bytes: &[u8]) -> bool {
    bytes[..bytes.len().min(HEADER_WINDOW)].windows(5).any(|w| w == b"%PDF-")
}

/// Runs `f` on a fresh thread with a large stack; a panic in it is returned as `Unparseable`.
fn isolated<T: Send>(f: impl FnOnce() -> Result<T, IngestError> + Send) -> Result<T, IngestError> {
    std::thread::scope(|scope| {
        let parser = std::thread::Builder::new()
            .name("pdf-parser".into())
            .stack_size(PARSER_STACK_BYTES)
            .spawn_scoped(scope, f)
            .map_err(|e| unparseable(format!("could not start the PDF parser: {e}")))?;
        parser.join().unwrap_or_else(|panic| {
            Err(unparseable(format!("damaged or unsupported PDF: the parser failed ({})", panic_message(&*panic))))
        })
    })
}

fn panic_message(panic: &(dyn Any + Send)) -> &str {
    match (panic.downcast_ref::<&str>(), panic.downcast_ref::<String>()) {
        (Some(message), _) => message,
        (_, Some(message)) => message,
        _ => "no message",
    }
}

fn extract(bytes: &[u8], limits: &Limits) -> Result<ParsedDocument, IngestError> {
    let doc = Document::load_mem(bytes).map_err(|e| unparseable(format!("damaged PDF: {e}")))?;
    // lopdf opens files protected by an owner password only (an empty user password); anything else stays
    // encrypted and would yield no text.
    if doc.is_encrypted() && !doc.was_encrypted() {
        return Err(unparseable("the PDF is encrypted and needs a password"));
    }
    // An encrypted file's streams could only be measured once decrypted, which the load just did.
    if doc.was_encrypted() {
        streams::check_loaded(&doc, limits)?;
    }
    drawing::check(&doc, limits)?;
    let mut pages = Pages { pages: Vec::new(), text_left: limits.text_bytes, exceeded: false };
    let output = pdf_extract::output_doc(&doc, &mut pages);
    if pages.exceeded {
        return Err(crate::text_too_large(limits));
    }
    output.map_err(|e| unparseable(format!("damaged PDF: {e}")))?;
    if pages.pages.is_empty() {
        return Err(unparseable("the PDF has no pages"));
    }
    if !pages.pages.iter().any(layout::Page::has_text) {
        return Err(unparseable("the PDF has no text layer (a scan?)"));
    }
    Ok(ParsedDocument { title: info_title(&doc), blocks: layout::blocks(&pages.pages) })
}

fn unparseable(reason: impl Into<String>) -> IngestError {
    IngestError::Unparseable(reason.into())
}

/// The Info dictionary's `/Title`, the only title a PDF states explicitly.
fn info_title(doc: &Document) -> Option<String> {
    let (_, info) = doc.dereference(doc.trailer.get(b"Info").ok()?).ok()?;
    let (_, title) = doc.dereference(info.as_dict().ok()?.get(b"Title").ok()?).ok()?;
    clean_title(&decode_text_string(title).ok()?)
}

/// Receives the glyphs `pdf-extract` places, page by page, until the document's text budget is spent.
struct Pages {
    pages: Vec<layout::Page>,
    /// Bytes of text still allowed.
    text_left: u64,
    /// The text went past the limit and the extraction was stopped (`extract` tells why).
    exceeded: bool,
}

impl Pages {
    fn spend(&mut self, bytes: usize) -> Result<(), OutputError> {
        match self.text_left.checked_sub(bytes as u64) {
            Some(left) => {
                self.text_left = left;
                Ok(())
            }
            None => {
                self.exceeded = true;
                Err(OutputError::FormatError(std::fmt::Error))
            }
        }
    }
}

impl OutputDev for Pages {
    fn begin_page(&mut self, page: u32, _: &MediaBox, _: Option<(f64, f64, f64, f64)>) -> Result<(), OutputError> {
        self.pages.push(layout::Page::new(page));
        Ok(())
    }

    fn end_page(&mut self) -> Result<(), OutputError> {
        Ok(())
    }

    /// `trm` maps glyph space to the page without the font size; `width` is the advance per unit of font size.
    fn output_character(
        &mut self,
        trm: &Transform,
        width: f64,
        _spacing: f64,
        font_size: f64,
        text: &str,
    ) -> Result<(), OutputError> {
        // The square root of the determinant is the scale whatever the rotation or skew.
        let size = font_size * (trm.m11 * trm.m22 - trm.m12 * trm.m21).abs().sqrt();
        let text = normalize(text);
        // A glyph costs at least its byte, even one that decodes to nothing (a page of them is still work).
        self.spend(text.len().max(1))?;
        if let Some(page) = self.pages.last_mut() {
            page.push(layout::Glyph { x: trm.m31, y: trm.m32, width: width * size, size, text: &text });
        }
        Ok(())
    }

    fn begin_word(&mut self) -> Result<(), OutputError> {
        Ok(())
    }

    fn end_word(&mut self) -> Result<(), OutputError> {
        Ok(())
    }

    fn end_line(&mut self) -> Result<(), OutputError> {
        Ok(())
    }
}

/// Typographic ligatures spelled out, so that `ﬁnal` is found by `final`; control characters (what an
/// undecodable glyph often maps to) dropped. Borrows in the common case: this runs once per glyph.
fn normalize(text: &str) -> Cow<'_, str> {
    let plain = |c: char| !('\u{fb00}'..='\u{fb06}').contains(&c) && !crate::is_stray_control(c);
    if text.chars().all(plain) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            'ﬀ' => out.push_str("ff"),
            'ﬁ' => out.push_str("fi"),
            'ﬂ' => out.push_str("fl"),
            'ﬃ' => out.push_str("ffi"),
            'ﬄ' => out.push_str("ffl"),
            'ﬅ' | 'ﬆ' => out.push_str("st"),
            c if crate::is_stray_control(c) => {}
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}
