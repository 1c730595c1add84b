//! PDFs made for the tests with lopdf's writer, shared by the test binaries.

use pdf_extract::{Dictionary, Document, Object, Stream};

/// A one-page PDF drawing `content` with Helvetica as /F1, made with lopdf's writer.
pub fn one_page_pdf(content: &[u8], with_media_box: bool) -> Vec<u8> {
    let mut doc = Document::with_version("1.5");
    let mut font = Dictionary::new();
    font.set("Type", "Font");
    font.set("Subtype", "Type1");
    font.set("BaseFont", "Helvetica");
    let font = doc.add_object(font);
    let mut fonts = Dictionary::new();
    fonts.set("F1", font);
    let mut resources = Dictionary::new();
    resources.set("Font", fonts);
    let contents = doc.add_object(Stream::new(Dictionary::new(), content.to_vec()));
    let pages = doc.new_object_id();
    let mut page = Dictionary::new();
    page.set("Type", "Page");
    page.set("Parent", pages);
    page.set("Contents", contents);
    page.set("Resources", resources);
    if with_media_box {
        page.set("MediaBox", vec![0.into(), 0.into(), 595.into(), 842.into()]);
    }
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
