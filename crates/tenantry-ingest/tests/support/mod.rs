//! PDFs made for the tests with lopdf's writer, shared by the test binaries.

use pdf_extract::{Dictionary, Document, Object, Stream};

/// A one-page PDF drawing `content` with Helvetica as /F1, made with lopdf's writer.
pub fn one_page_pdf(content: &[u8], with_media_box: bool) -> Vec<u8> {
    let mut doc = Document::with_version("1.5");
    let mut fonts = Dictionary::new();
    fonts.set("F1", helvetica(&mut doc));
    let mut resources = Dictionary::new();
    resources.set("Font", fonts);
    let contents = doc.add_object(Stream::new(Dictionary::new(), content.to_vec()));
    let mut page = Dictionary::new();
    page.set("Contents", contents);
    page.set("Resources", resources);
    if with_media_box {
        page.set("MediaBox", vec![0.into(), 0.into(), 595.into(), 842.into()]);
    }
    with_one_page(doc, page)
}

/// Helvetica as a Type 1 font object of `doc`.
fn helvetica(doc: &mut Document) -> pdf_extract::ObjectId {
    let mut font = Dictionary::new();
    font.set("Type", "Font");
    font.set("Subtype", "Type1");
    font.set("BaseFont", "Helvetica");
    doc.add_object(font)
}

/// `doc` with `page` as its only page (under a page tree and a catalog), written out.
fn with_one_page(mut doc: Document, mut page: Dictionary) -> Vec<u8> {
    let pages = doc.new_object_id();
    page.set("Type", "Page");
    page.set("Parent", pages);
    let page = doc.add_object(page);
    let mut tree = Dictionary::new();
    tree.set("Type", "Pages");
    tree.set("Kids", vec![Object::Reference(page)]);
    tree.set("Count", 1);
    doc.objects.insert(pages, Object::Dictionary(tree));
    let mut catalog = Dictionary::new();
    catalog.set("Type", "Catalog");
    catalog.set("Pages", pages);
    let catalog = doc.add_object(catalog);
    doc.trailer.set("Root", catalog);
    let mut bytes = Vec::new();
    doc.save_to(&mut bytes).expect("lopdf writes the test PDF");
    bytes
}

/// `one_page_pdf` with its content stream Flate-compressed.
pub fn one_page_pdf_compressed(content: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(content).expect("in memory");
    let compressed = encoder.finish().expect("in memory");
    let mut doc = Document::load_mem(&one_page_pdf(b"", true)).expect("the template loads");
    let contents = doc.objects.values_mut().find_map(|o| o.as_stream_mut().ok()).expect("a content stream");
    contents.dict.set("Filter", "FlateDecode");
    contents.set_content(compressed);
    let mut bytes = Vec::new();
    doc.save_to(&mut bytes).expect("lopdf writes the test PDF");
    bytes
}

/// A form XObject for `pdf_with_forms`: its resource name, its content, and whether it names its own
/// resources (the page's dictionary) or inherits the drawer's.
pub struct Form<'a> {
    pub name: &'a str,
    pub content: &'a [u8],
    pub own_resources: bool,
}

/// A one-page PDF drawing `content`, whose resources (one dictionary object) hold Helvetica as /F1 and
/// `forms` as XObjects; the page lists its content stream `listed` times in `/Contents`.
pub fn pdf_with_forms(content: &[u8], forms: &[Form], listed: usize) -> Vec<u8> {
    let mut doc = Document::with_version("1.5");
    let font = helvetica(&mut doc);
    let resources = doc.new_object_id();
    let mut xobjects = Dictionary::new();
    for form in forms {
        let mut dict = Dictionary::new();
        dict.set("Type", "XObject");
        dict.set("Subtype", "Form");
        dict.set("BBox", vec![0.into(), 0.into(), 595.into(), 842.into()]);
        if form.own_resources {
            dict.set("Resources", resources);
        }
        let id = doc.add_object(Stream::new(dict, form.content.to_vec()));
        xobjects.set(form.name, id);
    }
    let mut fonts = Dictionary::new();
    fonts.set("F1", font);
    let mut dict = Dictionary::new();
    dict.set("Font", fonts);
    dict.set("XObject", xobjects);
    doc.objects.insert(resources, Object::Dictionary(dict));
    let contents = doc.add_object(Stream::new(Dictionary::new(), content.to_vec()));
    let mut page = Dictionary::new();
    page.set("Contents", vec![Object::Reference(contents); listed]);
    page.set("Resources", resources);
    page.set("MediaBox", vec![0.into(), 0.into(), 595.into(), 842.into()]);
    with_one_page(doc, page)
}

/// `one_page_pdf` whose page has no resources and no media box of its own and whose page tree's root
/// names the page as its parent, so that looking up an inherited key climbs forever.
pub fn pdf_with_a_looping_tree(content: &[u8]) -> Vec<u8> {
    let mut doc = Document::load_mem(&one_page_pdf(content, false)).expect("the template loads");
    let page_id = doc.page_iter().next().expect("a page");
    let page = doc.get_dictionary_mut(page_id).expect("the page");
    page.remove(b"Resources");
    let tree_id = page.get(b"Parent").and_then(Object::as_reference).expect("a parent");
    doc.get_dictionary_mut(tree_id).expect("the tree").set("Parent", page_id);
    let mut bytes = Vec::new();
    doc.save_to(&mut bytes).expect("lopdf writes the test PDF");
    bytes
}
