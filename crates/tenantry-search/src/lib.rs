//! Per-tenant search namespaces on disk. Each tenant has its own tantivy index under
//! `<root>/<tenant id>/lexical` and its own vector index under `<root>/<tenant id>/vectors`; the namespace is
//! always taken from the request's `TenantContext`, never from request data, so one tenant's query cannot
//! reach another's index. Open namespaces are kept in a bounded cache so thousands of tenants fit in memory.
//! All calls block: run them off the async runtime.

pub mod bert;
pub mod embed;
mod lexical;
mod vector;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use tenantry_domain::{DocumentId, TenantContext, TenantId};

use embed::{EmbedError, HashEmbedder, TextEmbedder};
use lexical::LexicalIndex;
use vector::VectorIndex;

#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("search index: {0}")]
    Index(#[from] tantivy::TantivyError),
    #[error("search index directory: {0}")]
    Directory(#[from] tantivy::directory::error::OpenDirectoryError),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Embed(#[from] EmbedError),
}

pub type Result<T, E = SearchError> = std::result::Result<T, E>;

/// A chunk handed to the index.
#[derive(Clone, Debug)]
pub struct ChunkToIndex {
    pub chunk_id: String,
    pub ordinal: u64,
    pub heading: String,
    pub page: Option<u64>,
    pub text: String,
}

/// One retrieved chunk.
#[derive(Clone, Debug, PartialEq)]
pub struct Hit {
    pub chunk_id: String,
    pub document_id: DocumentId,
    pub title: String,
    pub heading: String,
    pub page: Option<u64>,
    pub text: String,
    pub score: f32,
}

pub struct SearchIndexes {
    root: PathBuf,
    capacity: usize,
    embedder: Arc<dyn TextEmbedder>,
    open: Mutex<Cache>,
}

/// One tenant's indexes, opened together.
struct Namespace {
    lexical: LexicalIndex,
    vectors: VectorIndex,
}

#[derive(Default)]
struct Cache {
    tick: u64,
    entries: HashMap<TenantId, (Arc<Namespace>, u64)>,
}

impl SearchIndexes {
    /// Indexes under `root`, at most `capacity` namespaces open, vectors from the built-in embedder.
    pub fn new(root: impl Into<PathBuf>, capacity: usize) -> Self {
        Self::with_embedder(root, capacity, Arc::new(HashEmbedder::default()))
    }

    pub fn with_embedder(root: impl Into<PathBuf>, capacity: usize, embedder: Arc<dyn TextEmbedder>) -> Self {
        Self { root: root.into(), capacity: capacity.max(1), embedder, open: Mutex::new(Cache::default()) }
    }

    fn dir(&self, tenant: &TenantId) -> PathBuf {
        self.root.join(tenant.as_str())
    }

    fn namespace(&self, ctx: &TenantContext) -> Result<Arc<Namespace>> {
        self.namespace_of(&ctx.tenant_id)
    }

    fn namespace_of(&self, tenant: &TenantId) -> Result<Arc<Namespace>> {
        let mut cache = self.open.lock();
        cache.tick += 1;
        let tick = cache.tick;
        if let Some((ns, last)) = cache.entries.get_mut(tenant) {
            *last = tick;
            return Ok(ns.clone());
        }
        let dir = self.dir(tenant);
        let ns = Arc::new(Namespace {
            lexical: LexicalIndex::open_or_create(&dir.join("lexical"))?,
            vectors: VectorIndex::open_or_create(
                &dir.join("vectors"),
                self.embedder.name(),
                self.embedder.dimensions(),
            )?,
        });
        if cache.entries.len() >= self.capacity {
            // Evict the least recently used; its in-flight users keep their `Arc`.
            if let Some(oldest) = cache.entries.iter().min_by_key(|(_, (_, t))| *t).map(|(k, _)| k.clone()) {
                cache.entries.remove(&oldest);
            }
        }
        cache.entries.insert(tenant.clone(), (ns.clone(), tick));
        Ok(ns)
    }

    /// Indexes a document's chunks, durably; visible to the next search. Lexically always; in the vector index
    /// too when `with_vectors` (the tenant's plan offers a mode that searches vectors), each chunk embedded as
    /// its title, heading and text, the same fields BM25 sees.
    pub fn add_document(
        &self,
        ctx: &TenantContext,
        document: &DocumentId,
        title: &str,
        chunks: &[ChunkToIndex],
        with_vectors: bool,
    ) -> Result<()> {
        let ns = self.namespace(ctx)?;
        // Embedded before anything is written, so a model failure leaves neither index with the document.
        let vectors = if with_vectors { Some(self.embed_chunks(title, chunks)?) } else { None };
        ns.lexical.add(document, title, chunks)?;
        if let Some(vectors) = vectors {
            ns.vectors.add(document, &vectors)?;
        }
        Ok(())
    }

    fn embed_chunks(&self, title: &str, chunks: &[ChunkToIndex]) -> Result<Vec<(String, Vec<f32>)>> {
        let texts: Vec<String> = chunks.iter().map(|c| format!("{title}\n{}\n{}", c.heading, c.text)).collect();
        let vectors = self.embedder.embed_batch(&texts.iter().map(String::as_str).collect::<Vec<_>>())?;
        let dimensions = self.embedder.dimensions();
        if vectors.len() != chunks.len() || vectors.iter().any(|v| v.len() != dimensions) {
            return Err(EmbedError(format!("expected {} vectors of {dimensions} dimensions", chunks.len())).into());
        }
        Ok(chunks.iter().map(|c| c.chunk_id.clone()).zip(vectors).collect())
    }

    /// The identity of the vectors this instance writes and searches (the embedder's name).
    pub fn embedder_name(&self) -> &str {
        self.embedder.name()
    }

    /// (Re)builds a tenant's vectors for one document, replacing any it had: the background job that
    /// prepares a tenant for a plan with vector retrieval. Not reachable from a request (the tenant comes from
    /// the job, which the tenant's own plan change created).
    pub fn index_vectors(
        &self,
        tenant: &TenantId,
        document: &DocumentId,
        title: &str,
        chunks: &[ChunkToIndex],
    ) -> Result<()> {
        let ns = self.namespace_of(tenant)?;
        ns.vectors.delete(document)?;
        ns.vectors.add(document, &self.embed_chunks(title, chunks)?)
    }

    /// Whether the tenant's vectors were written by another embedder than this one (the embedder changed
    /// since), from its files, without opening the namespace: those vectors count as absent until the
    /// documents are embedded again.
    pub fn vectors_from_another_embedder(&self, tenant: &TenantId) -> Result<bool> {
        vector::written_by_another(&self.dir(tenant).join("vectors"), self.embedder.name(), self.embedder.dimensions())
    }

    /// Deletes the other embedders' vector logs set aside for the tenant (once its documents are embedded
    /// again).
    pub fn discard_stale_vectors(&self, tenant: &TenantId) -> Result<()> {
        for path in vector::stale_logs(&self.dir(tenant).join("vectors"))? {
            std::fs::remove_file(path)?;
        }
        Ok(())
    }

    pub fn delete_document(&self, ctx: &TenantContext, document: &DocumentId) -> Result<()> {
        let ns = self.namespace(ctx)?;
        ns.lexical.delete(document)?;
        ns.vectors.delete(document)
    }

    /// BM25 over the tenant's chunks.
    pub fn search(&self, ctx: &TenantContext, query: &str, top_k: usize) -> Result<Vec<Hit>> {
        self.namespace(ctx)?.lexical.search(query, top_k)
    }

    /// BM25 with pseudo-relevance feedback: the query expanded with the distinctive terms of its first hits.
    pub fn search_expanded(&self, ctx: &TenantContext, query: &str, top_k: usize) -> Result<Vec<Hit>> {
        self.namespace(ctx)?.lexical.search_with_feedback(query, top_k)
    }

    /// The chunks nearest to the query's embedding (cosine), best first.
    pub fn semantic(&self, ctx: &TenantContext, query: &str, top_k: usize) -> Result<Vec<Hit>> {
        let ns = self.namespace(ctx)?;
        let nearest = ns.vectors.search(&self.embedder.embed(query)?, top_k);
        let mut stored = ns.lexical.fetch(nearest.iter().map(|h| h.chunk_id.as_str()))?;
        Ok(nearest
            .into_iter()
            .filter_map(|n| stored.remove(&n.chunk_id).map(|hit| Hit { score: n.score, ..hit }))
            .collect())
    }

    /// Chunks with vectors in the tenant's namespace.
    pub fn vector_count(&self, ctx: &TenantContext) -> Result<usize> {
        Ok(self.namespace(ctx)?.vectors.live_chunks())
    }

    /// Removes the tenant's namespace from disk (erasure). Returns the bytes removed.
    pub fn drop_namespace(&self, tenant: &TenantId) -> Result<u64> {
        self.open.lock().entries.remove(tenant);
        let dir = self.dir(tenant);
        let bytes = dir_size(&dir);
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        Ok(bytes)
    }

    pub fn open_namespaces(&self) -> usize {
        self.open.lock().entries.len()
    }
}

fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tenantry_domain::testing::context;

    fn chunk(id: &str, text: &str) -> ChunkToIndex {
        ChunkToIndex { chunk_id: id.into(), ordinal: 0, heading: String::new(), page: None, text: text.into() }
    }

    #[test]
    fn tenants_with_overlapping_vocabulary_see_only_their_own_chunks() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let indexes = SearchIndexes::new(dir.path(), 1); // capacity 1 also exercises eviction
        let (a, b) = (context(TenantId::generate()), context(TenantId::generate()));
        let (da, db) = (DocumentId::generate(), DocumentId::generate());
        indexes.add_document(&a, &da, "A policy", &[chunk("a:0", "Refunds are issued within 14 days.")], true)?;
        indexes.add_document(&b, &db, "B policy", &[chunk("b:0", "Refunds are never issued.")], true)?;
        let hits_a = indexes.search(&a, "refunds issued", 10)?;
        let hits_b = indexes.search(&b, "refunds issued", 10)?;
        assert_eq!(hits_a.iter().map(|h| &h.document_id).collect::<Vec<_>>(), [&da]);
        assert_eq!(hits_b.iter().map(|h| &h.document_id).collect::<Vec<_>>(), [&db]);
        assert!(indexes.open_namespaces() <= 1);
        Ok(())
    }

    #[test]
    fn deleted_documents_leave_the_index() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let indexes = SearchIndexes::new(dir.path(), 8);
        let ctx = context(TenantId::generate());
        let d = DocumentId::generate();
        indexes.add_document(&ctx, &d, "Doc", &[chunk("c:0", "stemming works for refunding")], true)?;
        assert_eq!(indexes.search(&ctx, "refunds", 5)?.len(), 1, "stemmed match");
        assert!(indexes.search(&ctx, "the of and", 5)?.is_empty(), "stop words alone match nothing");
        indexes.delete_document(&ctx, &d)?;
        assert!(indexes.search(&ctx, "refunds", 5)?.is_empty());
        assert!(indexes.drop_namespace(&ctx.tenant_id)? > 0);
        Ok(())
    }

    /// Another embedder: every text to the same 3-dimensional unit vector.
    struct Constant;

    impl TextEmbedder for Constant {
        fn name(&self) -> &str {
            "constant-3"
        }
        fn dimensions(&self) -> usize {
            3
        }
        fn embed_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
            Ok(texts.iter().map(|_| vec![1.0, 0.0, 0.0]).collect())
        }
    }

    #[test]
    fn vectors_of_another_embedder_are_treated_as_absent_until_rebuilt() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let ctx = context(TenantId::generate());
        let d = DocumentId::generate();
        let chunks = [chunk("c:0", "Refunds are issued within 14 days.")];
        SearchIndexes::new(dir.path(), 8).add_document(&ctx, &d, "Refunds", &chunks, true)?;

        let switched = SearchIndexes::with_embedder(dir.path(), 8, Arc::new(Constant));
        assert_eq!(switched.vector_count(&ctx)?, 0, "2,048-dimension hashing vectors are never searched as 3");
        assert!(switched.semantic(&ctx, "refunds", 5)?.is_empty());
        assert_eq!(switched.search(&ctx, "refunds", 5)?.len(), 1, "BM25 is untouched");
        switched.index_vectors(&ctx.tenant_id, &d, "Refunds", &chunks)?; // the re-embedding path
        assert_eq!(switched.semantic(&ctx, "anything", 5)?[0].document_id, d);
        Ok(())
    }

    #[test]
    fn feedback_expansion_reaches_chunks_in_the_first_hits_vocabulary() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let indexes = SearchIndexes::new(dir.path(), 8);
        let ctx = context(TenantId::generate());
        let (a, b) = (DocumentId::generate(), DocumentId::generate());
        indexes.add_document(&ctx, &a, "Refunds", &[chunk("a:0", "Refunds are paid by bank transfer.")], true)?;
        indexes.add_document(
            &ctx,
            &b,
            "Payments",
            &[chunk("b:0", "A bank transfer settles in two business days.")],
            true,
        )?;
        assert_eq!(indexes.search(&ctx, "refunds", 10)?.len(), 1);
        let expanded = indexes.search_expanded(&ctx, "refunds", 10)?;
        let docs: Vec<_> = expanded.iter().map(|h| &h.document_id).collect();
        assert_eq!(docs, [&a, &b], "the question's own match stays first");
        assert_eq!(indexes.vector_count(&ctx)?, 2);
        assert_eq!(indexes.semantic(&ctx, "refund", 1)?[0].document_id, a);
        Ok(())
    }
}
