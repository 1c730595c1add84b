//! One tenant's lexical index: BM25 over title, heading and text as one field (the BEIR "title+text"
//! setup), English stemming and stop words.

use std::collections::HashMap;
use std::path::Path;

use parking_lot::Mutex;
use tantivy::collector::TopDocs;
use tantivy::query::{BooleanQuery, BoostQuery, Occur, Query, TermQuery};
use tantivy::schema::{Field, IndexRecordOption, Schema, TextFieldIndexing, TextOptions, Value, STORED, STRING};
use tantivy::tokenizer::{
    Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer, StopWordFilter, TextAnalyzer,
};
use tantivy::{doc, DocAddress, Index, IndexReader, ReloadPolicy, Searcher, TantivyDocument, Term};
use tenantry_domain::DocumentId;

use crate::{ChunkToIndex, Hit, Result};

const ANALYZER: &str = "tenantry_en";
/// Pseudo-relevance feedback: chunks read, terms added, and the added terms' weight relative to the
/// question's own.
const FEEDBACK_DOCS: usize = 3;
const FEEDBACK_TERMS: usize = 10;
const FEEDBACK_WEIGHT: f32 = 0.5;
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

/// English words: lower-cased, stop words dropped, Porter-stemmed. BM25 and the built-in embedder both see
/// text through it, so they agree on what a term is.
pub(crate) fn analyzer() -> TextAnalyzer {
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
        self.replace(&[], &[(document, title, chunks)])
    }

    /// Removes the documents `removed` and the earlier entries of the documents `added`, then adds these, in
    /// one commit: replaying it leaves the same index.
    pub(crate) fn replace(
        &self,
        removed: &[&DocumentId],
        added: &[(&DocumentId, &str, &[ChunkToIndex])],
    ) -> Result<()> {
        let _guard = self.write.lock();
        let writer = self.index.writer_with_num_threads::<TantivyDocument>(1, WRITER_MEMORY)?;
        for document in removed.iter().copied().chain(added.iter().map(|(d, _, _)| *d)) {
            writer.delete_term(Term::from_field_text(self.fields.document_id, document.as_str()));
        }
        for (document, title, chunks) in added {
            self.write_chunks(&writer, document, title, chunks)?;
        }
        commit(writer)?;
        self.reader.reload()?;
        Ok(())
    }

    fn write_chunks(
        &self,
        writer: &tantivy::IndexWriter<TantivyDocument>,
        document: &DocumentId,
        title: &str,
        chunks: &[ChunkToIndex],
    ) -> Result<()> {
        let f = &self.fields;
        for c in chunks.iter() {
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

    /// The analysed terms of `text`, in order, with repeats.
    fn analyze(&self, text: &str) -> Result<Vec<String>> {
        let mut terms = Vec::new();
        let mut analyzer = self.index.tokenizer_for_field(self.fields.body)?;
        let mut stream = analyzer.token_stream(text);
        while let Some(token) = stream.next() {
            terms.push(token.text.clone());
        }
        Ok(terms)
    }

    /// BM25 over weighted terms: each term's score counts `weight` times.
    fn run(&self, searcher: &Searcher, terms: &[(String, f32)], top_k: usize) -> Result<Vec<(f32, DocAddress)>> {
        if terms.is_empty() || top_k == 0 {
            return Ok(Vec::new());
        }
        let clauses: Vec<(Occur, Box<dyn Query>)> = terms
            .iter()
            .map(|(t, weight)| {
                let term = Term::from_field_text(self.fields.body, t);
                let q: Box<dyn Query> = Box::new(TermQuery::new(term, IndexRecordOption::WithFreqs));
                let q: Box<dyn Query> =
                    if (*weight - 1.0).abs() < f32::EPSILON { q } else { Box::new(BoostQuery::new(q, *weight)) };
                (Occur::Should, q)
            })
            .collect();
        Ok(searcher.search(&BooleanQuery::new(clauses), &TopDocs::with_limit(top_k))?)
    }

    fn hits(&self, searcher: &Searcher, top: Vec<(f32, DocAddress)>) -> Result<Vec<Hit>> {
        let mut hits = Vec::with_capacity(top.len());
        for (score, address) in top {
            let d: TantivyDocument = searcher.doc(address)?;
            hits.push(self.hit(&d, score));
        }
        Ok(hits)
    }

    fn query_terms(&self, query: &str) -> Result<Vec<(String, f32)>> {
        let mut terms: Vec<(String, f32)> = Vec::new();
        for t in self.analyze(query)? {
            if !terms.iter().any(|(seen, _)| *seen == t) {
                terms.push((t, 1.0));
            }
        }
        Ok(terms)
    }

    pub(crate) fn search(&self, query: &str, top_k: usize) -> Result<Vec<Hit>> {
        let searcher = self.reader.searcher();
        let top = self.run(&searcher, &self.query_terms(query)?, top_k)?;
        self.hits(&searcher, top)
    }

    /// BM25 with pseudo-relevance feedback (RM3-style): the top `FEEDBACK_DOCS` chunks of a first pass vote
    /// for their most distinctive terms (frequency in the feedback set × IDF); the best `FEEDBACK_TERMS` not
    /// already in the query join it at a fraction of an original term's weight, and the expanded query runs
    /// again. It finds relevant chunks that use the vocabulary of the first hits rather than the question's.
    pub(crate) fn search_with_feedback(&self, query: &str, top_k: usize) -> Result<Vec<Hit>> {
        let searcher = self.reader.searcher();
        let mut terms = self.query_terms(query)?;
        let first = self.run(&searcher, &terms, FEEDBACK_DOCS)?;
        let docs = searcher.num_docs() as f32;
        let mut votes: HashMap<String, f32> = HashMap::new();
        for (_, address) in &first {
            let d: TantivyDocument = searcher.doc(*address)?;
            let hit = self.hit(&d, 0.0);
            let words = self.analyze(&format!("{}\n{}\n{}", hit.title, hit.heading, hit.text))?;
            let share = 1.0 / words.len().max(1) as f32;
            for w in words {
                *votes.entry(w).or_default() += share;
            }
        }
        let mut candidates: Vec<(String, f32)> = Vec::with_capacity(votes.len());
        for (word, tf) in votes {
            if terms.iter().any(|(t, _)| *t == word) {
                continue;
            }
            let df = searcher.doc_freq(&Term::from_field_text(self.fields.body, &word))? as f32;
            let idf = (1.0 + (docs - df + 0.5) / (df + 0.5)).ln();
            candidates.push((word, tf * idf));
        }
        candidates.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        candidates.truncate(FEEDBACK_TERMS);
        if let Some(best) = candidates.first().map(|c| c.1).filter(|w| *w > 0.0) {
            terms.extend(candidates.into_iter().map(|(t, w)| (t, FEEDBACK_WEIGHT * w / best)));
        }
        let top = self.run(&searcher, &terms, top_k)?;
        self.hits(&searcher, top)
    }
}
