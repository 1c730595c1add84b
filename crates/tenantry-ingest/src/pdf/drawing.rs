//! What drawing a PDF's pages will cost the extractor, walked before it starts.
//!
//! `pdf-extract` runs each page's content and, for every `Do`, the whole content of the form XObject it
//! names, decoded afresh each time, recursively (a form may draw forms), with no count and no trail. A page
//! may also list one content stream many times. So a few kilobytes can ask for unbounded work: a form drawn
//! a million times, a chain of forms each drawing the next a thousand times, a 64 MiB stream listed as a
//! page's content ten thousand times. A form that draws itself (directly, through other forms, or by
//! inheriting the resources that name it) recurses until the stack overflows, which aborts the process, and
//! so does a page tree whose `/Parent` links loop, which the extractor follows for inherited keys.
//!
//! Before extraction every page is therefore walked as the extractor will walk it, without drawing: loops
//! and nesting past [`MAX_FORM_NESTING`] are refused, and every stream is charged each time it would be
//! run, its operators against `Limits::document_operators` and its decoded bytes against
//! `Limits::expanded_bytes`. The walk stops as soon as either is spent, so its own work is bounded by them.

use std::collections::HashMap;

use pdf_extract::content::Content;
use pdf_extract::{Dictionary, Document, Object, ObjectId};

use crate::{IngestError, Limits};

/// Forms drawn inside forms, this deep at most. Real files nest a few levels; the extractor recurses once
/// per level with a large frame.
pub(crate) const MAX_FORM_NESTING: usize = 32;

/// Page-tree levels followed up from a page for inherited keys; real trees are a few levels deep.
const MAX_TREE_DEPTH: usize = 64;

/// Refuses a document whose drawing loops, nests too deep, or would run past `limits`.
pub(crate) fn check(doc: &Document, limits: &Limits) -> Result<(), IngestError> {
    let mut walk = Walk {
        doc,
        limits,
        operators_left: limits.document_operators,
        bytes_left: limits.expanded_bytes,
        streams: HashMap::new(),
        path: Vec::new(),
    };
    for page_id in doc.page_iter() {
        let page = doc.get_dictionary(page_id).map_err(|e| unparseable(format!("damaged PDF: {e}")))?;
        check_tree(doc, page_id, page)?;
        let resources = inherited_resources(doc, page);
        for content_id in doc.get_page_contents(page_id) {
            walk.draw(content_id, resources)?;
        }
    }
    Ok(())
}

/// What a stream holds for the walk, decoded once however often it is drawn.
struct Stream {
    operators: u64,
    bytes: u64,
    /// The names its `Do` operators draw, in order.
    draws: Vec<Vec<u8>>,
    /// Its own `/Resources`, which the forms it draws are named in (else the drawer's).
    resources: Option<ObjectRef>,
}

/// Where a resources dictionary is: an object of its own, or inline in the object with this id.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum ObjectRef {
    Object(ObjectId),
    InlineIn(ObjectId),
}

struct Walk<'a> {
    doc: &'a Document,
    limits: &'a Limits,
    operators_left: u64,
    bytes_left: u64,
    streams: HashMap<ObjectId, Stream>,
    /// The forms being drawn, outermost first.
    path: Vec<ObjectId>,
}

impl<'a> Walk<'a> {
    /// Charges drawing stream `id` once with `resources` naming its forms, and the forms it draws.
    fn draw(&mut self, id: ObjectId, resources: Option<&'a Dictionary>) -> Result<(), IngestError> {
        if !self.streams.contains_key(&id) {
            let stream = self.read(id);
            self.streams.insert(id, stream);
        }
        let Some(stream) = self.streams.get(&id) else { return Ok(()) };
        let draws = stream.draws.clone();
        let own = stream.resources;
        let (operators, bytes) = (stream.operators, stream.bytes);
        self.charge(operators, bytes)?;
        let resources = own.and_then(|r| self.resolve(r)).or(resources);
        for name in draws {
            let Some(form) = xobject(self.doc, resources, &name) else { continue };
            if self.path.contains(&form) {
                return Err(unparseable("damaged PDF: a form draws itself"));
            }
            if self.path.len() >= MAX_FORM_NESTING {
                return Err(unparseable(format!("the PDF nests forms inside forms more than {MAX_FORM_NESTING} deep")));
            }
            self.path.push(form);
            self.draw(form, resources)?;
            self.path.pop();
        }
        Ok(())
    }

    fn charge(&mut self, operators: u64, bytes: u64) -> Result<(), IngestError> {
        self.operators_left = self.operators_left.checked_sub(operators).ok_or_else(|| {
            IngestError::TooLarge(format!(
                "drawing the PDF's pages takes more than {} operators, its forms counted each time they are \
                 drawn (the limit of one document)",
                self.limits.document_operators
            ))
        })?;
        self.bytes_left = self.bytes_left.checked_sub(bytes).ok_or_else(|| {
            IngestError::TooLarge(format!(
                "drawing the PDF's pages decodes more than {} bytes, its streams counted each time they are \
                 drawn (the limit of one document)",
                self.limits.expanded_bytes
            ))
        })?;
        Ok(())
    }

    /// Decodes stream `id` as the extractor will: a stream it cannot parse is charged its bytes and draws
    /// nothing (the extractor refuses it).
    fn read(&self, id: ObjectId) -> Stream {
        let Ok(stream) = self.doc.get_object(id).and_then(Object::as_stream) else {
            return Stream { operators: 0, bytes: 0, draws: Vec::new(), resources: None };
        };
        let data = stream.decompressed_content().unwrap_or_else(|_| stream.content.clone());
        let resources = match stream.dict.get(b"Resources") {
            Ok(Object::Reference(r)) => Some(ObjectRef::Object(*r)),
            Ok(Object::Dictionary(_)) => Some(ObjectRef::InlineIn(id)),
            _ => None,
        };
        let bytes = data.len() as u64;
        match Content::decode(&data) {
            Ok(content) => Stream {
                operators: content.operations.len() as u64,
                bytes,
                draws: content
                    .operations
                    .iter()
                    .filter(|op| op.operator == "Do")
                    .filter_map(|op| op.operands.first()?.as_name().ok().map(<[u8]>::to_vec))
                    .collect(),
                resources,
            },
            Err(_) => Stream { operators: 0, bytes, draws: Vec::new(), resources },
        }
    }

    fn resolve(&self, r: ObjectRef) -> Option<&'a Dictionary> {
        match r {
            ObjectRef::Object(id) => self.doc.get_dictionary(id).ok(),
            ObjectRef::InlineIn(id) => {
                self.doc.get_object(id).and_then(Object::as_stream).ok()?.dict.get(b"Resources").ok()?.as_dict().ok()
            }
        }
    }
}

/// The XObject `name` in `resources`, as the extractor looks it up.
fn xobject(doc: &Document, resources: Option<&Dictionary>, name: &[u8]) -> Option<ObjectId> {
    let xobjects = match resources?.get(b"XObject").ok()? {
        Object::Reference(id) => doc.get_dictionary(*id).ok()?,
        object => object.as_dict().ok()?,
    };
    xobjects.get(name).ok()?.as_reference().ok()
}

/// The page's `/Resources`, its own or the nearest ancestor's, as the extractor finds them.
fn inherited_resources<'a>(doc: &'a Document, page: &'a Dictionary) -> Option<&'a Dictionary> {
    let mut node = page;
    for _ in 0..MAX_TREE_DEPTH {
        if let Ok(resources) = node.get(b"Resources") {
            return match resources {
                Object::Reference(id) => doc.get_dictionary(*id).ok(),
                object => object.as_dict().ok(),
            };
        }
        node = doc.get_dictionary(node.get(b"Parent").ok()?.as_reference().ok()?).ok()?;
    }
    None
}

/// Refuses a page whose `/Parent` links loop or climb past [`MAX_TREE_DEPTH`].
fn check_tree(doc: &Document, page_id: ObjectId, page: &Dictionary) -> Result<(), IngestError> {
    let mut seen = vec![page_id];
    let mut node = page;
    while let Ok(parent) = node.get(b"Parent").and_then(Object::as_reference) {
        if seen.contains(&parent) || seen.len() > MAX_TREE_DEPTH {
            return Err(unparseable("damaged PDF: the page tree loops"));
        }
        seen.push(parent);
        match doc.get_dictionary(parent) {
            Ok(dictionary) => node = dictionary,
            Err(_) => break,
        }
    }
    Ok(())
}

fn unparseable(reason: impl Into<String>) -> IngestError {
    IngestError::Unparseable(reason.into())
}
