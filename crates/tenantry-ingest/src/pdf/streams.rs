//! What a PDF's compressed streams expand to, measured before the parser expands any of them.
//!
//! `lopdf` decompresses a stream whole into memory, with no limit, when it loads the file (object and
//! cross-reference streams) and when `pdf-extract` reads a page, a font or a form. A few hundred kilobytes of
//! Flate data can expand to gigabytes, so every stream is first decoded here as a stream of bytes that are
//! counted and thrown away: nothing is held, and decoding stops as soon as a limit is crossed.
//!
//! The scan works on the file's bytes, not on parsed objects, because the parser's first act is already to
//! expand object streams. Every stream's data follows the keyword `stream` and an end of line; the scan
//! decodes it with the filters its dictionary names (`/FlateDecode`, `/LZWDecode`, `/ASCII85Decode`, the
//! only ones `lopdf` expands), and also treats as Flate any output that opens like zlib data, so a filter
//! that the scan misread or a chain it could not see is still measured. The decoders find the end of their
//! data themselves, so a `/Length` that lies changes nothing.
//!
//! The parser also holds all of a page's operators at once, at a few hundred bytes each, and a copy of the
//! graphics state for every `q` not yet closed by `Q`. So while a content stream (a page's or a form's) is
//! decoded, its operators are counted and its `q` depth followed, and a stream past `Limits::stream_operators`
//! or nesting deeper than [`MAX_GRAPHICS_NESTING`] is refused too.
//!
//! In an encrypted file the stream data is ciphertext until `lopdf` decrypts it. Its compressed object
//! streams, which `lopdf` expands while decrypting, are bounded by Flate's highest possible ratio instead;
//! every other stream is measured after the load, on its decrypted bytes (`check_loaded`).

use std::io::{self, BufRead, BufReader, Read};

use pdf_extract::{Document, Object};

use crate::{IngestError, Limits};

/// Flate's highest expansion: a deflate stream cannot encode more than 258 bytes in fewer than 2 bits
/// (RFC 1951), about 1,032 to 1.
const FLATE_MAX_RATIO: u64 = 1_032;

/// Filters inside filters: a real file has one or two; past this many the stream is refused.
const MAX_LAYERS: usize = 4;

/// The deepest `q` nesting accepted. PDF 1.7 (Annex C) sets 28 as the implementation limit writers keep to;
/// this leaves room for careless ones.
pub(crate) const MAX_GRAPHICS_NESTING: u32 = 256;

/// How far before the keyword `stream` the dictionary's `/Filter` is looked for.
const DICTIONARY_WINDOW: usize = 4_096;

/// Refuses a file whose streams, decoded, would exceed `limits`.
pub(crate) fn check_raw(bytes: &[u8], limits: &Limits) -> Result<(), IngestError> {
    let encrypted = memchr::memmem::find(bytes, b"/Encrypt").is_some();
    let mut budget = Budget::new(limits);
    for data_start in stream_starts(bytes) {
        let dictionary = &bytes[data_start.saturating_sub(DICTIONARY_WINDOW)..data_start];
        let dictionary = after_last(dictionary, b"obj").unwrap_or(dictionary);
        let data = &bytes[data_start..];
        if encrypted {
            if memchr::memmem::find(dictionary, b"/ObjStm").is_some() {
                budget.bound_ciphertext(raw_length(data))?;
            }
            continue;
        }
        let filters = declared_filters(dictionary);
        budget.measure(data, &filters, holds_operators(dictionary))?;
    }
    Ok(())
}

/// Measures every stream of a loaded document (decrypted, when it was encrypted) the same way.
pub(crate) fn check_loaded(doc: &Document, limits: &Limits) -> Result<(), IngestError> {
    let mut budget = Budget::new(limits);
    for object in doc.objects.values() {
        if let Object::Stream(stream) = object {
            let filters: Vec<Filter> =
                stream.filters().unwrap_or_default().into_iter().filter_map(Filter::named).collect();
            let subtype = stream.dict.get(b"Subtype").and_then(|s| s.as_name()).ok();
            let operators = match subtype {
                Some(name) => name == b"Form",
                None => !["Type", "Length1", "Length2", "Length3", "N"].iter().any(|k| stream.dict.has(k.as_bytes())),
            };
            budget.measure(&stream.content, &filters, operators)?;
        }
    }
    Ok(())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Filter {
    Flate,
    Lzw,
    Ascii85,
}

impl Filter {
    fn named(name: &[u8]) -> Option<Filter> {
        match name {
            b"FlateDecode" => Some(Filter::Flate),
            b"LZWDecode" => Some(Filter::Lzw),
            b"ASCII85Decode" => Some(Filter::Ascii85),
            _ => None,
        }
    }
}

/// The bytes spent so far against the per-stream and per-file limits.
struct Budget {
    stream_limit: u64,
    file_limit: u64,
    operator_limit: u64,
    spent: u64,
}

impl Budget {
    fn new(limits: &Limits) -> Self {
        Self {
            stream_limit: limits.stream_bytes,
            file_limit: limits.expanded_bytes,
            operator_limit: limits.stream_operators,
            spent: 0,
        }
    }

    /// Decodes `data` through `filters` (then through Flate again for as long as the output opens like
    /// zlib data), counting what comes out, and for a content stream (`operators`) its operators too.
    fn measure(&mut self, data: &[u8], filters: &[Filter], operators: bool) -> Result<(), IngestError> {
        let allowed = self.stream_limit.min(self.file_limit.saturating_sub(self.spent));
        let mut scan = operators.then(|| OperatorScan::new(self.operator_limit));
        let decoded = decoded_len(data, filters, allowed, scan.as_mut())?;
        if decoded > self.stream_limit {
            return Err(too_large(format!(
                "a compressed stream in the PDF expands past {} bytes (the limit of one stream)",
                self.stream_limit
            )));
        }
        self.charge(decoded)
    }

    /// An encrypted object stream of `len` bytes, counted at the most Flate could expand it to.
    fn bound_ciphertext(&mut self, len: u64) -> Result<(), IngestError> {
        let bound = len.saturating_mul(FLATE_MAX_RATIO);
        if bound > self.stream_limit {
            return Err(too_large(
                "the PDF is encrypted and has a compressed object stream too large to check before decryption; \
                 save it without password protection",
            ));
        }
        self.charge(bound)
    }

    fn charge(&mut self, bytes: u64) -> Result<(), IngestError> {
        self.spent = self.spent.saturating_add(bytes);
        if self.spent > self.file_limit {
            return Err(too_large(format!(
                "the PDF's compressed streams expand past {} bytes in all (the limit of one document)",
                self.file_limit
            )));
        }
        Ok(())
    }
}

fn too_large(reason: impl Into<String>) -> IngestError {
    IngestError::TooLarge(reason.into())
}

/// Where each stream's data starts: after `stream` (not `endstream`), optional spaces or tabs, and an end
/// of line (`lopdf`'s grammar).
fn stream_starts(bytes: &[u8]) -> impl Iterator<Item = usize> + '_ {
    memchr::memmem::find_iter(bytes, b"stream").filter_map(move |at| {
        if bytes[..at].ends_with(b"end") {
            return None;
        }
        let mut i = at + b"stream".len();
        while matches!(bytes.get(i), Some(b' ' | b'\t')) {
            i += 1;
        }
        match (bytes.get(i), bytes.get(i + 1)) {
            (Some(b'\r'), Some(b'\n')) => Some(i + 2),
            (Some(b'\n' | b'\r'), _) => Some(i + 1),
            _ => None,
        }
    })
}

/// The stream's raw length: up to its `endstream`, or the end of the file.
fn raw_length(data: &[u8]) -> u64 {
    memchr::memmem::find(data, b"endstream").unwrap_or(data.len()) as u64
}

fn after_last<'a>(haystack: &'a [u8], needle: &[u8]) -> Option<&'a [u8]> {
    memchr::memmem::rfind(haystack, needle).map(|at| &haystack[at + needle.len()..])
}

/// The filters the dictionary before a stream names, in decoding order: `/Filter /Name` or
/// `/Filter [/A /B]`. Anything else (an indirect filter, which `lopdf` does not decode) is none.
fn declared_filters(dictionary: &[u8]) -> Vec<Filter> {
    let Some(rest) = after_last(dictionary, b"/Filter") else { return Vec::new() };
    let rest = rest.trim_ascii_start();
    let names: &[u8] = match rest.first() {
        Some(b'[') => rest[1..].split(|&b| b == b']').next().unwrap_or_default(),
        Some(b'/') => {
            let end = rest[1..].iter().position(|&b| is_delimiter(b)).map_or(rest.len(), |p| p + 1);
            &rest[..end]
        }
        _ => return Vec::new(),
    };
    names
        .split(|&b| b == b'/')
        .map(|name| name.split(|&b| is_delimiter(b)).next().unwrap_or_default())
        .filter_map(Filter::named)
        .collect()
}

fn is_delimiter(b: u8) -> bool {
    b.is_ascii_whitespace() || b"()<>[]{}/%".contains(&b)
}

/// Whether the stream after `dictionary` holds operators: a page's content (a dictionary with neither
/// `/Type` nor `/Subtype`, and not a font program or a colour profile) or a form.
fn holds_operators(dictionary: &[u8]) -> bool {
    let has = |key: &[u8]| {
        memchr::memmem::find_iter(dictionary, key)
            .any(|at| dictionary.get(at + key.len()).is_none_or(|&b| is_delimiter(b)))
    };
    if has(b"/Subtype") {
        return after_last(dictionary, b"/Subtype")
            .map(|rest| rest.trim_ascii_start())
            .is_some_and(|rest| rest.starts_with(b"/Form") && rest.get(5).is_none_or(|&b| is_delimiter(b)));
    }
    ![b"/Type".as_slice(), b"/Length1", b"/Length2", b"/Length3", b"/N"].iter().any(|key| has(key))
}

/// The decoded length of `data`, counted up to `allowed + 1` bytes (anything past `allowed` is refused, so
/// the count stops there), with its operators fed to `scan` when there is one.
fn decoded_len(
    data: &[u8],
    filters: &[Filter],
    allowed: u64,
    scan: Option<&mut OperatorScan>,
) -> Result<u64, IngestError> {
    let mut reader: Box<dyn BufRead + '_> = Box::new(data);
    let mut layers = 0;
    for &filter in filters {
        reader = decode(reader, filter);
        layers += 1;
    }
    // A Flate layer the dictionary did not show (or a chain the scan misread) is measured all the same.
    loop {
        let opens_like_zlib = matches!(reader.fill_buf(), Ok(head) if looks_like_zlib(head));
        if !opens_like_zlib {
            break;
        }
        if layers == MAX_LAYERS {
            return Err(too_large("a stream in the PDF is compressed in too many layers"));
        }
        reader = decode(reader, Filter::Flate);
        layers += 1;
    }
    count(reader, allowed, scan)
}

fn decode<'a>(inner: Box<dyn BufRead + 'a>, filter: Filter) -> Box<dyn BufRead + 'a> {
    match filter {
        Filter::Flate => Box::new(BufReader::new(flate2::bufread::ZlibDecoder::new(inner))),
        Filter::Lzw => Box::new(BufReader::new(LzwReader::new(inner))),
        Filter::Ascii85 => Box::new(BufReader::new(Ascii85Reader::new(inner))),
    }
}

/// A zlib header (RFC 1950): deflate, a window of at most 32 KiB, and a check value that holds.
fn looks_like_zlib(head: &[u8]) -> bool {
    match head {
        [cmf, flg, ..] => cmf & 0x0f == 8 && cmf >> 4 <= 7 && (u16::from(*cmf) << 8 | u16::from(*flg)) % 31 == 0,
        _ => false,
    }
}

/// Bytes read from `reader` until it ends, fails (damaged data ends a stream for `lopdf` too), or passes
/// `allowed`; each is fed to `scan` when there is one, which may refuse the stream first.
fn count(mut reader: impl Read, allowed: u64, mut scan: Option<&mut OperatorScan>) -> Result<u64, IngestError> {
    let mut buf = [0u8; 16 * 1024];
    let mut total = 0u64;
    while total <= allowed {
        match reader.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                total += n as u64;
                if let Some(scan) = scan.as_deref_mut() {
                    scan.feed(&buf[..n])?;
                }
            }
        }
    }
    if let Some(scan) = scan {
        scan.finish()?;
    }
    Ok(total)
}

/// Where the scan of a content stream is: in the middle of a token, a string, a hex string, a comment, or
/// an inline image's data (which ends at white space, `EI` and white space).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lexeme {
    Between,
    Token,
    String {
        depth: u32,
        escaped: bool,
    },
    Hex,
    Comment,
    /// How much of `<white space>EI` has been seen.
    InlineImage {
        seen: u8,
    },
}

/// Counts the operators of a content stream and follows its `q`/`Q` nesting, as its bytes go by.
struct OperatorScan {
    lexeme: Lexeme,
    /// The current token's first bytes (enough to tell `q`, `Q`, `ID` and the keywords apart) and length.
    token: [u8; 5],
    token_len: usize,
    operators: u64,
    operator_limit: u64,
    nesting: u32,
}

impl OperatorScan {
    fn new(operator_limit: u64) -> Self {
        Self { lexeme: Lexeme::Between, token: [0; 5], token_len: 0, operators: 0, operator_limit, nesting: 0 }
    }

    fn feed(&mut self, bytes: &[u8]) -> Result<(), IngestError> {
        for &b in bytes {
            self.lexeme = match self.lexeme {
                Lexeme::Comment => match b {
                    b'\n' | b'\r' => Lexeme::Between,
                    _ => Lexeme::Comment,
                },
                Lexeme::String { depth, escaped: true } => Lexeme::String { depth, escaped: false },
                Lexeme::String { depth, escaped: false } => match b {
                    b'\\' => Lexeme::String { depth, escaped: true },
                    b'(' => Lexeme::String { depth: depth.saturating_add(1), escaped: false },
                    b')' if depth <= 1 => Lexeme::Between,
                    b')' => Lexeme::String { depth: depth - 1, escaped: false },
                    _ => Lexeme::String { depth, escaped: false },
                },
                Lexeme::Hex => match b {
                    b'>' => Lexeme::Between,
                    _ => Lexeme::Hex,
                },
                Lexeme::InlineImage { seen } => match (seen, b) {
                    (2, b'I') => Lexeme::InlineImage { seen: 3 },
                    (3, b) if is_delimiter(b) => {
                        self.operator(b"EI")?;
                        Lexeme::Between
                    }
                    (1, b'E') => Lexeme::InlineImage { seen: 2 },
                    (_, b) if b.is_ascii_whitespace() => Lexeme::InlineImage { seen: 1 },
                    _ => Lexeme::InlineImage { seen: 0 },
                },
                Lexeme::Between | Lexeme::Token => self.between_or_token(b)?,
            };
        }
        Ok(())
    }

    fn between_or_token(&mut self, b: u8) -> Result<Lexeme, IngestError> {
        if !is_delimiter(b) || (b == b'/' && self.lexeme == Lexeme::Between) {
            if self.token_len < self.token.len() {
                self.token[self.token_len] = b;
            }
            self.token_len += 1;
            return Ok(Lexeme::Token);
        }
        let ended = self.end_token()?;
        Ok(match b {
            _ if ended == Some(Lexeme::InlineImage { seen: 1 }) => Lexeme::InlineImage { seen: 1 },
            b'(' => Lexeme::String { depth: 1, escaped: false },
            b'<' => Lexeme::Hex,
            b'%' => Lexeme::Comment,
            b'/' => {
                self.token[0] = b'/';
                self.token_len = 1;
                Lexeme::Token
            }
            _ => Lexeme::Between,
        })
    }

    /// Ends the current token: an operator is counted (and `q`, `Q`, `ID` acted on); names, numbers and
    /// keywords are not. Returns the lexeme an `ID` operator starts.
    fn end_token(&mut self) -> Result<Option<Lexeme>, IngestError> {
        let len = std::mem::take(&mut self.token_len);
        if len == 0 {
            return Ok(None);
        }
        let token = &self.token[..len.min(self.token.len())];
        let first = token[0];
        let not_an_operator = first == b'/'
            || first.is_ascii_digit()
            || matches!(first, b'+' | b'-' | b'.')
            || (len <= 5 && matches!(token, b"true" | b"false" | b"null"));
        if not_an_operator {
            return Ok(None);
        }
        let starts_inline_image = token == b"ID";
        let operator: [u8; 5] = self.token;
        self.operator(&operator[..len.min(5)])?;
        Ok(starts_inline_image.then_some(Lexeme::InlineImage { seen: 1 }))
    }

    fn operator(&mut self, name: &[u8]) -> Result<(), IngestError> {
        self.operators += 1;
        if self.operators > self.operator_limit {
            return Err(too_large(format!(
                "a page or form in the PDF draws more than {} operators (the limit of one content stream)",
                self.operator_limit
            )));
        }
        match name {
            b"q" => {
                self.nesting += 1;
                if self.nesting > MAX_GRAPHICS_NESTING {
                    return Err(too_large(format!(
                        "a page or form in the PDF nests graphics states more than {MAX_GRAPHICS_NESTING} deep"
                    )));
                }
            }
            b"Q" => self.nesting = self.nesting.saturating_sub(1),
            _ => {}
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), IngestError> {
        if matches!(self.lexeme, Lexeme::Token) {
            self.end_token()?;
        }
        Ok(())
    }
}

/// LZW (`lopdf` decodes with early change and 8-bit symbols, as PDF's default) as a reader.
struct LzwReader<'a> {
    inner: Box<dyn BufRead + 'a>,
    decoder: weezl::decode::Decoder,
    done: bool,
}

impl<'a> LzwReader<'a> {
    fn new(inner: Box<dyn BufRead + 'a>) -> Self {
        let decoder = weezl::decode::Decoder::with_tiff_size_switch(weezl::BitOrder::Msb, 8);
        Self { inner, decoder, done: false }
    }
}

impl Read for LzwReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while !self.done {
            let input = self.inner.fill_buf()?;
            let at_end = input.is_empty();
            let result = self.decoder.decode_bytes(input, out);
            self.inner.consume(result.consumed_in);
            match result.status {
                Ok(weezl::LzwStatus::Done) | Err(_) => self.done = true,
                Ok(weezl::LzwStatus::NoProgress) if at_end => self.done = true,
                Ok(_) => {}
            }
            if result.consumed_out > 0 {
                return Ok(result.consumed_out);
            }
        }
        Ok(0)
    }
}

/// ASCII base-85 (`z` for four zero bytes; ends at `~>`) as a reader.
struct Ascii85Reader<'a> {
    inner: Box<dyn BufRead + 'a>,
    group: Group,
    done: bool,
}

/// The base-85 digits of the group being read.
#[derive(Default)]
struct Group {
    digits: [u8; 5],
    len: usize,
}

impl Group {
    fn push(&mut self, digit: u8, out: &mut Vec<u8>) {
        self.digits[self.len] = digit;
        self.len += 1;
        if self.len == 5 {
            self.flush(out);
        }
    }

    /// The bytes of a group of `len` digits (a short last group is padded with `u`).
    fn flush(&mut self, out: &mut Vec<u8>) {
        if self.len == 0 {
            return;
        }
        let value = (0..5).fold(0u64, |acc, i| acc * 85 + if i < self.len { u64::from(self.digits[i]) } else { 84 });
        // An invalid group overflows 32 bits; its low bytes are as good as any for counting.
        let bytes = (value as u32).to_be_bytes();
        out.extend_from_slice(&bytes[..self.len - 1]);
        self.len = 0;
    }
}

impl<'a> Ascii85Reader<'a> {
    fn new(inner: Box<dyn BufRead + 'a>) -> Self {
        Self { inner, group: Group::default(), done: false }
    }
}

impl Read for Ascii85Reader<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        // At most 4 bytes come of one input byte, so reading a quarter of `out` never overflows it.
        let mut produced = Vec::with_capacity(out.len());
        while !self.done && produced.len() + 4 <= out.len() {
            let input = self.inner.fill_buf()?;
            if input.is_empty() {
                self.done = true;
                break;
            }
            let take = input.len().min((out.len() - produced.len()) / 4);
            let mut used = 0;
            for &c in &input[..take] {
                used += 1;
                match c {
                    b'~' => {
                        self.done = true;
                        break;
                    }
                    b'z' if self.group.len == 0 => produced.extend_from_slice(&[0; 4]),
                    b'!'..=b'u' => self.group.push(c - b'!', &mut produced),
                    c if c.is_ascii_whitespace() => {}
                    _ => {
                        self.done = true;
                        break;
                    }
                }
            }
            self.inner.consume(used);
        }
        if self.done {
            self.group.flush(&mut produced);
        }
        out[..produced.len()].copy_from_slice(&produced);
        Ok(produced.len())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    /// The operators `content` draws, or the refusal.
    fn operators(content: &[u8], limit: u64) -> Result<u64, IngestError> {
        let mut scan = OperatorScan::new(limit);
        // Fed in small pieces, so that tokens, strings and inline images cross the pieces' edges.
        for piece in content.chunks(3) {
            scan.feed(piece)?;
        }
        scan.finish()?;
        Ok(scan.operators)
    }

    #[test]
    fn operators_are_counted_and_operands_are_not() {
        let page = b"q 1 0 0 1 72 700 cm BT /F1 12 Tf (Hello (nested) q Q \\) world) Tj ET Q\n\
            % a comment with q q q\n<48656c6c6f> Tj [(a) -120 (b)] TJ /Span <</MCID 0>> BDC EMC true false null";
        // q cm BT Tf Tj ET Q Tj TJ BDC EMC: the q in the string and the comment are not operators.
        assert_eq!(operators(page, 1_000), Ok(11));
    }

    #[test]
    fn an_inline_images_data_is_not_read_as_operators() {
        let page = b"q BI /W 2 /H 2 /BPC 8 /CS /G ID \x00q q q Q\xffEI\x01 EI Q";
        // q BI ID EI Q: the image data (with its false `EI`) draws nothing.
        assert_eq!(operators(page, 1_000), Ok(5));
    }

    #[test]
    fn too_many_operators_or_too_deep_a_nesting_is_refused() {
        assert_eq!(operators(&b"0 0 m ".repeat(100), 100), Ok(100));
        assert!(matches!(operators(&b"0 0 m ".repeat(101), 100), Err(IngestError::TooLarge(_))));
        let deep = [b"q ".repeat(MAX_GRAPHICS_NESTING as usize), b"Q ".repeat(MAX_GRAPHICS_NESTING as usize)].concat();
        assert!(operators(&deep, 1_000_000).is_ok(), "as deep as allowed");
        let deeper = b"q ".repeat(MAX_GRAPHICS_NESTING as usize + 1);
        match operators(&deeper, 1_000_000) {
            Err(IngestError::TooLarge(reason)) => assert!(reason.contains("nests graphics states"), "{reason}"),
            other => panic!("expected TooLarge, got {other:?}"),
        }
        // Balanced nesting, however long, is fine.
        assert!(operators(&b"q Q ".repeat(10_000), 1_000_000).is_ok());
    }

    #[test]
    fn only_pages_and_forms_are_scanned_for_operators() {
        assert!(holds_operators(b"<< /Length 120 /Filter /FlateDecode >>"));
        assert!(holds_operators(b"<< /Type /XObject /Subtype /Form /BBox [0 0 1 1] /Length 9 >>"));
        assert!(!holds_operators(b"<< /Type /XObject /Subtype /Image /Width 2 /Length 9 >>"));
        assert!(!holds_operators(b"<< /Type /ObjStm /N 10 /First 60 /Length 9 >>"));
        assert!(!holds_operators(b"<< /Length1 5000 /Length 2000 /Filter /FlateDecode >>"));
        assert!(!holds_operators(b"<< /N 3 /Alternate /DeviceRGB /Length 9 >>"));
        assert!(!holds_operators(b"<< /Subtype /Formula /Length 9 >>"));
    }

    fn limits(stream_bytes: u64, expanded_bytes: u64) -> Limits {
        Limits { stream_bytes, expanded_bytes, ..Limits::default() }
    }

    fn zlib(data: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        encoder.write_all(data).expect("in memory");
        encoder.finish().expect("in memory")
    }

    fn object(dictionary: &str, data: &[u8]) -> Vec<u8> {
        let mut object = format!("1 0 obj\n<< {dictionary} /Length {} >>\nstream\r\n", data.len()).into_bytes();
        object.extend_from_slice(data);
        object.extend_from_slice(b"\nendstream\nendobj\n");
        object
    }

    #[test]
    fn a_flate_bomb_is_refused_without_being_held() {
        let bomb = zlib(&vec![0u8; 50 << 20]);
        assert!(bomb.len() < 100 << 10, "50 MiB of zeros compress to {} bytes", bomb.len());
        let file = object("/Filter /FlateDecode", &bomb);
        let err = check_raw(&file, &limits(10 << 20, 100 << 20)).expect_err("over the stream limit");
        assert!(matches!(&err, IngestError::TooLarge(r) if r.contains("one stream")), "{err:?}");
        check_raw(&file, &limits(64 << 20, 100 << 20)).expect("within the limits");
    }

    #[test]
    fn the_file_limit_adds_up_every_stream() {
        let part = zlib(&vec![b'a'; 4 << 20]);
        let file: Vec<u8> = (0..5).flat_map(|_| object("/Filter /FlateDecode", &part)).collect();
        let err = check_raw(&file, &limits(8 << 20, 16 << 20)).expect_err("20 MiB in all");
        assert!(matches!(&err, IngestError::TooLarge(r) if r.contains("in all")), "{err:?}");
        check_raw(&file, &limits(8 << 20, 24 << 20)).expect("within the limits");
    }

    #[test]
    fn nested_and_undeclared_flate_layers_are_measured() {
        let twice = zlib(&zlib(&vec![0u8; 32 << 20]));
        for dictionary in ["/Filter [/FlateDecode /FlateDecode]", "/Filter /FlateDecode", "/Filter 7 0 R", ""] {
            let file = object(dictionary, &twice);
            let err = check_raw(&file, &limits(8 << 20, 64 << 20)).expect_err(dictionary);
            assert!(matches!(err, IngestError::TooLarge(_)), "{dictionary}: {err:?}");
        }
    }

    #[test]
    fn a_lying_length_changes_nothing() {
        let mut file = b"1 0 obj\n<< /Filter /FlateDecode /Length 3 >>\nstream\n".to_vec();
        file.extend_from_slice(&zlib(&vec![0u8; 32 << 20]));
        file.extend_from_slice(b"\nendstream\nendobj\n");
        let err = check_raw(&file, &limits(8 << 20, 64 << 20)).expect_err("measured from the data");
        assert!(matches!(err, IngestError::TooLarge(_)), "{err:?}");
    }

    #[test]
    fn lzw_and_ascii85_layers_are_decoded() {
        let plain = vec![b'x'; 4 << 20];
        let lzw =
            weezl::encode::Encoder::with_tiff_size_switch(weezl::BitOrder::Msb, 8).encode(&plain).expect("encodes");
        let file = object("/Filter /LZWDecode", &lzw);
        assert!(check_raw(&file, &limits(1 << 20, 64 << 20)).is_err(), "LZW measured");
        check_raw(&file, &limits(8 << 20, 64 << 20)).expect("within the limits");

        let inner = zlib(&vec![0u8; 4 << 20]);
        let a85 = ascii85(&inner);
        let file = object("/Filter [/ASCII85Decode /FlateDecode]", &a85);
        assert!(check_raw(&file, &limits(1 << 20, 64 << 20)).is_err(), "Flate under ASCII85 measured");
        check_raw(&file, &limits(8 << 20, 64 << 20)).expect("within the limits");
    }

    #[test]
    fn the_ascii85_reader_decodes_like_the_spec() {
        for plain in [&b""[..], b"M", b"Ma", b"Man is", &[0, 0, 0, 0, 1, 2, 3], &[255; 9]] {
            let mut decoded = Vec::new();
            Ascii85Reader::new(Box::new(&ascii85(plain)[..])).read_to_end(&mut decoded).expect("decodes");
            assert_eq!(decoded, plain);
        }
    }

    #[test]
    fn an_encrypted_object_stream_is_bounded_by_flates_ratio() {
        let small = object("/Type /ObjStm /Filter /FlateDecode /N 1 /First 4", &[7u8; 1_000]);
        let large = object("/Type /ObjStm /Filter /FlateDecode /N 1 /First 4", &[7u8; 100_000]);
        let trailer = b"trailer\n<< /Encrypt 9 0 R >>\n";
        let with = |object: &[u8]| [object, trailer].concat();
        check_raw(&with(&small), &limits(8 << 20, 64 << 20)).expect("1 KB of ciphertext is at most ~1 MB");
        let err = check_raw(&with(&large), &limits(8 << 20, 64 << 20)).expect_err("100 KB could be 100 MB");
        assert!(matches!(&err, IngestError::TooLarge(r) if r.contains("encrypted")), "{err:?}");
    }

    #[test]
    fn filters_are_read_from_the_dictionary() {
        assert_eq!(declared_filters(b"<< /Length 5 /Filter /FlateDecode >>"), [Filter::Flate]);
        assert_eq!(declared_filters(b"<</Filter/LZWDecode/Length 5>>"), [Filter::Lzw]);
        assert_eq!(
            declared_filters(b"<< /Filter [ /ASCII85Decode /FlateDecode ] >>"),
            [Filter::Ascii85, Filter::Flate]
        );
        assert_eq!(declared_filters(b"<< /Filter /DCTDecode >>"), []);
        assert_eq!(declared_filters(b"<< /Length 5 >>"), []);
    }

    #[test]
    fn only_a_stream_keyword_at_an_end_of_line_starts_data() {
        let bytes = b"stream\r\nA endstream\n(stream) stream \nB streamX";
        let starts: Vec<usize> = stream_starts(bytes).collect();
        assert_eq!(starts.iter().map(|&s| bytes[s]).collect::<Vec<_>>(), [b'A', b'B']);
    }

    /// ASCII base-85 as PDF writes it (`z` for zero groups, `~>` at the end).
    fn ascii85(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for chunk in data.chunks(4) {
            let mut group = [0u8; 4];
            group[..chunk.len()].copy_from_slice(chunk);
            let mut value = u32::from_be_bytes(group);
            if value == 0 && chunk.len() == 4 {
                out.push(b'z');
                continue;
            }
            let mut digits = [0u8; 5];
            for d in digits.iter_mut().rev() {
                *d = (value % 85) as u8 + b'!';
                value /= 85;
            }
            out.extend_from_slice(&digits[..chunk.len() + 1]);
        }
        out.extend_from_slice(b"~>");
        out
    }
}
