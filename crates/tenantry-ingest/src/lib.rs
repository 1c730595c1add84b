//! Ingestion: turn an upload into text blocks that keep the document's structure (headings, pages), then
//! into overlapping chunks of bounded token size. Pure functions, no I/O.

mod chunk;
mod markdown;

pub use chunk::{chunk, Chunk, ChunkOptions};

/// A supported input format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    Markdown,
}

impl Format {
    /// The format named by a content type (parameters ignored) or, failing that, a file name's extension.
    pub fn detect(content_type: Option<&str>, file_name: Option<&str>) -> Option<Format> {
        let mime =
            content_type.map(|c| c.split(';').next().unwrap_or("").trim().to_ascii_lowercase()).unwrap_or_default();
        match mime.as_str() {
            "text/plain" => return Some(Format::Text),
            "text/markdown" | "text/x-markdown" => return Some(Format::Markdown),
            _ => {}
        }
        let ext = file_name?.rsplit_once('.')?.1.to_ascii_lowercase();
        match ext.as_str() {
            "txt" | "text" => Some(Format::Text),
            "md" | "markdown" => Some(Format::Markdown),
            _ => None,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => "text/plain",
            Format::Markdown => "text/markdown",
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
    /// A title found in the document itself (the first top-level heading).
    pub title: Option<String>,
    pub blocks: Vec<Block>,
}

impl ParsedDocument {
    pub fn is_empty(&self) -> bool {
        self.blocks.iter().all(|b| b.text.trim().is_empty())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IngestError {
    #[error("the document is not valid UTF-8 text")]
    NotUtf8,
    #[error("the document has no text")]
    Empty,
}

pub fn parse(format: Format, bytes: &[u8]) -> Result<ParsedDocument, IngestError> {
    let text = std::str::from_utf8(bytes).map_err(|_| IngestError::NotUtf8)?;
    let doc = match format {
        Format::Text => parse_text(text),
        Format::Markdown => markdown::parse(text),
    };
    if doc.is_empty() {
        return Err(IngestError::Empty);
    }
    Ok(doc)
}

/// Plain text: paragraphs are separated by blank lines.
fn parse_text(text: &str) -> ParsedDocument {
    let blocks = text
        .split("\n\n")
        .map(|p| p.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|p| !p.is_empty())
        .map(|text| Block { heading: String::new(), page: None, text })
        .collect();
    ParsedDocument { title: None, blocks }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_by_type_then_extension() {
        assert_eq!(Format::detect(Some("text/markdown; charset=utf-8"), None), Some(Format::Markdown));
        assert_eq!(Format::detect(Some("application/octet-stream"), Some("a.MD")), Some(Format::Markdown));
        assert_eq!(Format::detect(None, Some("notes.txt")), Some(Format::Text));
        assert_eq!(Format::detect(Some("image/png"), Some("x.png")), None);
        assert_eq!(Format::detect(None, None), None);
    }

    #[test]
    fn empty_and_binary_documents_are_refused() {
        assert_eq!(parse(Format::Text, b"  \n\n \t"), Err(IngestError::Empty));
        assert_eq!(parse(Format::Text, &[0xff, 0xfe, 0x00]), Err(IngestError::NotUtf8));
        assert_eq!(parse(Format::Markdown, b"# \n\n"), Err(IngestError::Empty));
    }

    #[test]
    fn text_paragraphs_become_blocks() {
        let doc = parse(Format::Text, b"First para\nwraps.\n\nSecond.").expect("parses");
        let texts: Vec<_> = doc.blocks.iter().map(|b| b.text.as_str()).collect();
        assert_eq!(texts, ["First para wraps.", "Second."]);
    }
}
