//! One tenant's lexical index: BM25 over title, heading and text as one field (the BEIR "title+text"
//! setup), English stemming and stop words.

use std::collections::HashMap;
use std::path::Path;

use parking_lot::Mutex;
use tantivy::collector::TopDocs;
use tantivy::query::{BooleanQuery, Occur, Query, TermQuery};
use tantivy::schema::{Field, IndexRecordOption, Schema, TextFieldIndexing, TextOptions, Value, STORED, STRING};
use tantivy::tokenizer::{
    Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer, StopWordFilter, TextAnalyzer,
};
use tantivy::{doc, Index, IndexReader, ReloadPolicy, TantivyDocument, Term};
use tenantry_domain::DocumentId;

use crate::{ChunkToIndex, Hit, Result};

const ANALYZER: &str = "tenantry_en";
const WRITER_MEMORY: usize = 15_000_000;

struct Fields {
    chunk_id: Field,
    document_id: Field,
    title: Field,
    heading: Field,
    text: Field,
    ordinal: Field,
    page: Field,
    body: Field,
}

pub(crate) struct LexicalIndex {
    index: Index,
    reader: IndexReader,
    fields: Fields,
    /// One writer at a time per namespace.
    write: Mutex<()>,
}

fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let body_options = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default().set_tokenizer(ANALYZER).set_index_option(IndexRecordOption::WithFreqs),
    );
    let fields = Fields {
        chunk_id: b.add_text_field("chunk_id", STRING | STORED),
        document_id: b.add_text_field("document_id", STRING | STORED),
        title: b.add_text_field("title", STORED),
        heading: b.add_text_field("heading", STORED),
        text: b.add_text_field("text", STORED),
        ordinal: b.add_u64_field("ordinal", STORED),
        page: b.add_u64_field("page", STORED),
        body: b.add_text_field("body", body_options),
    };
    (b.build(), fields)
}

/// Commits, then waits for the merges the commit started. Writers are short-lived (a long-lived one per
/// namespace would pin its memory arena for every open tenant), and a dropped writer abandons its merges, so
/// without the wait every upload would leave one more segment and queries would slow down with the tenant's
/// document count. The log merge policy keeps the amortised cost per upload logarithmic.
fn commit(mut writer: tantivy::IndexWriter<TantivyDocument>) -> Result<()> {
    writer.commit()?;
    writer.wait_merging_threads()?;
    Ok(())
}

fn analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(40))
        .filter(LowerCaser)
        .filter(StopWordFilter::new(Language::English).unwrap_or_else(|| StopWordFilter::remove(Vec::new())))
        .filter(Stemmer::new(Language::English))
        .build()
}

impl LexicalIndex {
    pub(crate) fn open_or_create(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let (schema, fields) = schema();
        let mmap = tantivy::directory::MmapDirectory::open(dir)?;
        let index = Index::open_or_create(mmap, schema)?;
        index.tokenizers().register(ANALYZER, analyzer());
        let reader = index.reader_builder().reload_policy(ReloadPolicy::Manual).try_into()?;
        Ok(Self { index, reader, fields, write: Mutex::new(()) })
    }

    pub(crate) fn add(&self, document: &DocumentId, title: &str, chunks: &[ChunkToIndex]) -> Result<()> {
        let _guard = self.write.lock();
        let writer = self.index.writer_with_num_threads::<TantivyDocument>(1, WRITER_MEMORY)?;
        let f = &self.fields;
        for c in chunks {
            let mut d = doc!(
                f.chunk_id => c.chunk_id.as_str(),
                f.document_id => document.as_str(),
                f.title => title,
                f.heading => c.heading.as_str(),
                f.text => c.text.as_str(),
                f.ordinal => c.ordinal,
                f.body => format!("{title}\n{}\n{}", c.heading, c.text),
            );
            if let Some(p) = c.page {
                d.add_u64(f.page, p);
            }
            writer.add_document(d)?;
        }
        commit(writer)?;
        self.reader.reload()?;
        Ok(())
    }

    pub(crate) fn delete(&self, document: &DocumentId) -> Result<()> {
        let _guard = self.write.lock();
        let writer = self.index.writer_with_num_threads::<TantivyDocument>(1, WRITER_MEMORY)?;
        writer.delete_term(Term::from_field_text(self.fields.document_id, document.as_str()));
        commit(writer)?;
        self.reader.reload()?;
        Ok(())
    }

    /// The stored chunks with these ids (score 0), by id.
    pub(crate) fn fetch<'a>(&self, chunk_ids: impl Iterator<Item = &'a str>) -> Result<HashMap<String, Hit>> {
        let searcher = self.reader.searcher();
        let mut found = HashMap::new();
        for id in chunk_ids {
            let query = TermQuery::new(Term::from_field_text(self.fields.chunk_id, id), IndexRecordOption::Basic);
            if let Some((_, address)) = searcher.search(&query, &TopDocs::with_limit(1))?.into_iter().next() {
                let d: TantivyDocument = searcher.doc(address)?;
                found.insert(id.to_owned(), self.hit(&d, 0.0));
            }
        }
        Ok(found)
    }

    fn hit(&self, d: &TantivyDocument, score: f32) -> Hit {
        let f = &self.fields;
        let text = |field: Field| d.get_first(field).and_then(|v| v.as_str()).unwrap_or_default().to_owned();
        Hit {
            chunk_id: text(f.chunk_id),
            document_id: DocumentId::from_trusted(text(f.document_id)),
            title: text(f.title),
            heading: text(f.heading),
            page: d.get_first(f.page).and_then(|v| v.as_u64()),
            text: text(f.text),
            score,
        }
    }

    pub(crate) fn search(&self, query: &str, top_k: usize) -> Result<Vec<Hit>> {
        let mut terms: Vec<String> = Vec::new();
        let mut analyzer = self.index.tokenizer_for_field(self.fields.body)?;
        let mut stream = analyzer.token_stream(query);
        while let Some(token) = stream.next() {
            if !terms.contains(&token.text) {
                terms.push(token.text.clone());
            }
        }
        if terms.is_empty() || top_k == 0 {
            return Ok(Vec::new());
        }
        let clauses: Vec<(Occur, Box<dyn Query>)> = terms
            .iter()
            .map(|t| {
                let term = Term::from_field_text(self.fields.body, t);
                let q: Box<dyn Query> = Box::new(TermQuery::new(term, IndexRecordOption::WithFreqs));
                (Occur::Should, q)
            })
            .collect();
        let query = BooleanQuery::new(clauses);
        let searcher = self.reader.searcher();
        let top = searcher.search(&query, &TopDocs::with_limit(top_k))?;
        let mut hits = Vec::with_capacity(top.len());
        for (score, address) in top {
            let d: TantivyDocument = searcher.doc(address)?;
            hits.push(self.hit(&d, score));
        }
        Ok(hits)
    }
}
