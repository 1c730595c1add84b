//! PDF: `pdf-extract` (on `lopdf`) decodes fonts and places every glyph; `layout` turns the glyphs into
//! paragraphs and headings, one or more blocks per page.
//!
//! PDF files come from anywhere and PDF parsers are large: `pdf-extract` panics on some malformed files and
//! parsing recurses on nested objects. The parse therefore runs on its own thread with a large stack, and a
//! panic there becomes `IngestError::Unparseable` instead of reaching the caller (this relies on the default
//! `panic = "unwind"`).

mod layout;

use std::any::Any;
use std::borrow::Cow;

use pdf_extract::{decode_text_string, Document, MediaBox, OutputDev, OutputError, Transform};

use crate::{clean_title, IngestError, ParsedDocument};

/// Stack of the parser thread: deep object nesting in a hostile file must not overflow it, which would abort
/// the whole process rather than panic.
const PARSER_STACK_BYTES: usize = 64 << 20;

/// Files whose header does not say `%PDF-` in the first kilobyte are not handed to the parser at all.
const HEADER_WINDOW: usize = 1024;

pub(crate) fn parse(bytes: &[u8]) -> Result<ParsedDocument, IngestError> {
    if !has_pdf_header(bytes) {
        return Err(unparseable("not a PDF file (no %PDF header)"));
    }
    isolated(|| extract(bytes))
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

fn extract(bytes: &[u8]) -> Result<ParsedDocument, IngestError> {
    let doc = Document::load_mem(bytes).map_err(|e| unparseable(format!("damaged PDF: {e}")))?;
    // lopdf opens files protected by an owner password only (an empty user password); anything else stays
    // encrypted and would yield no text.
    if doc.is_encrypted() && !doc.was_encrypted() {
        return Err(unparseable("the PDF is encrypted and needs a password"));
    }
    let mut pages = Pages::default();
    pdf_extract::output_doc(&doc, &mut pages).map_err(|e| unparseable(format!("damaged PDF: {e}")))?;
    if pages.0.is_empty() {
        return Err(unparseable("the PDF has no pages"));
    }
    if !pages.0.iter().any(layout::Page::has_text) {
        return Err(unparseable("the PDF has no text layer (a scan?)"));
    }
    Ok(ParsedDocument { title: info_title(&doc), blocks: layout::blocks(&pages.0) })
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

/// Receives the glyphs `pdf-extract` places, page by page.
#[derive(Default)]
struct Pages(Vec<layout::Page>);

impl OutputDev for Pages {
    fn begin_page(&mut self, page: u32, _: &MediaBox, _: Option<(f64, f64, f64, f64)>) -> Result<(), OutputError> {
        self.0.push(layout::Page::new(page));
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
        if let Some(page) = self.0.last_mut() {
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
