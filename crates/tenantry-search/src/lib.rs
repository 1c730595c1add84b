//! Per-tenant search namespaces on disk. Each tenant has its own tantivy index under
//! `<root>/<tenant id>/lexical` and its own vector index under `<root>/<tenant id>/vectors`; the namespace is
//! always taken from the request's `TenantContext`, never from request data, so one tenant's query cannot
//! reach another's index. Open namespaces are kept in a bounded cache so thousands of tenants fit in memory.
//! All calls block: run them off the async runtime.

pub mod bert;
pub mod embed;
mod encoder;
mod lexical;
mod vector;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};

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
    /// The number of the last of the tenant's document changes both indexes hold (`SYNCED_FILE`).
    synced: Mutex<i64>,
    dir: PathBuf,
}

/// A document as `SearchIndexes::apply_changes` indexes it: its chunks, and their vectors when it has some
/// (one entry per chunk, in order, holding the vector of each of the chunk's windows one after the other).
#[derive(Clone, Debug)]
pub struct DocumentToIndex {
    pub id: DocumentId,
    pub title: String,
    pub chunks: Vec<ChunkToIndex>,
    pub vectors: Option<Vec<Vec<f32>>>,
}

/// Where a namespace records the last change it applied; written after the indexes, so a crash between the
/// two replays changes the indexes already hold, which leaves them as they were.
const SYNCED_FILE: &str = "synced";

/// A chunk's id and its windows' vectors, one after the other.
type ChunkVector = (String, Vec<f32>);

/// The way to one tenant's namespace: the instance open now, if any. Each tenant has one slot with its own
/// lock, so opening a tenant's indexes (reading its vector log can take a while) holds up only that tenant's
/// requests, and a tenant never has two instances at once (two would append to one vector log with two
/// in-memory copies, and a compaction by one would drop the other's appends).
type Slot = Mutex<Weak<Namespace>>;

#[derive(Default)]
struct Cache {
    tick: u64,
    /// A slot per tenant whose namespace may be open, including evicted ones that requests still use.
    slots: HashMap<TenantId, Arc<Slot>>,
    /// The `capacity` most recently used namespaces, kept open, with their last use.
    recent: HashMap<TenantId, (Arc<Namespace>, u64)>,
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
        let slot = self.slot(tenant);
        let ns = {
            let mut open = slot.lock();
            match open.upgrade() {
                Some(ns) => ns,
                None => {
                    let dir = self.dir(tenant);
                    let ns = Arc::new(Namespace {
                        lexical: LexicalIndex::open_or_create(&dir.join("lexical"))?,
                        vectors: VectorIndex::open_or_create(
                            &dir.join("vectors"),
                            self.embedder.name(),
                            self.embedder.dimensions(),
                        )?,
                        synced: Mutex::new(read_synced(&dir)?),
                        dir,
                    });
                    *open = Arc::downgrade(&ns);
                    ns
                }
            }
        };
        let evicted = self.keep_open(tenant, &ns);
        drop(evicted); // outside the cache's lock: the last reference closes the indexes
        Ok(ns)
    }

    fn slot(&self, tenant: &TenantId) -> Arc<Slot> {
        self.open.lock().slots.entry(tenant.clone()).or_default().clone()
    }

    /// Marks the namespace as just used, keeping it open; returns the least recently used one it evicts (its
    /// in-flight users keep it alive, and its slot finds it again until they are done).
    fn keep_open(&self, tenant: &TenantId, ns: &Arc<Namespace>) -> Option<Arc<Namespace>> {
        let mut cache = self.open.lock();
        cache.tick += 1;
        let tick = cache.tick;
        cache.recent.insert(tenant.clone(), (ns.clone(), tick));
        let mut evicted = None;
        if cache.recent.len() > self.capacity {
            if let Some(oldest) = cache.recent.iter().min_by_key(|(_, (_, t))| *t).map(|(k, _)| k.clone()) {
                evicted = cache.recent.remove(&oldest).map(|(ns, _)| ns);
            }
        }
        if cache.slots.len() > 2 * self.capacity + 64 {
            // Forget the slots of namespaces nobody uses any more, unless a request is in one right now (it
            // cloned the slot under this lock). Amortised: the map doubles past the cache before a sweep.
            let recent = std::mem::take(&mut cache.recent);
            cache.slots.retain(|t, slot| {
                recent.contains_key(t) || Arc::strong_count(slot) > 1 || slot.lock().strong_count() > 0
            });
            cache.recent = recent;
        }
        evicted
    }

    /// Indexes a document's chunks, durably; visible to the next search. Lexically always; in the vector index
    /// too when `with_vectors` (the tenant's plan offers a mode that searches vectors), each chunk embedded as
    /// its title, heading and text or its windows (`embedding_texts`). Returns the tokens the
    /// embedder's upstream billed (0 for a local embedder).
    pub fn add_document(
        &self,
        ctx: &TenantContext,
        document: &DocumentId,
        title: &str,
        chunks: &[ChunkToIndex],
        with_vectors: bool,
    ) -> Result<u64> {
        let ns = self.namespace(ctx)?;
        // Embedded before anything is written, so a model failure leaves neither index with the document.
        let vectors = if with_vectors { Some(self.embed_chunks(title, chunks)?) } else { None };
        ns.lexical.add(document, title, chunks)?;
        let mut billed = 0;
        if let Some((vectors, tokens)) = vectors {
            ns.vectors.add(document, &vectors)?;
            billed = tokens;
        }
        Ok(billed)
    }

    /// Each chunk's id with its vector, and the tokens the embedder's upstream billed.
    fn embed_chunks(&self, title: &str, chunks: &[ChunkToIndex]) -> Result<(Vec<ChunkVector>, u64)> {
        let (vectors, tokens) = self.embed_document(title, chunks)?;
        Ok((chunks.iter().map(|c| c.chunk_id.clone()).zip(vectors).collect(), tokens))
    }

    /// The vectors of each chunk by this instance's embedder (one entry per chunk, in order, holding its
    /// windows' vectors one after the other), and the tokens its upstream billed (0 for a local embedder).
    pub fn embed_document(&self, title: &str, chunks: &[ChunkToIndex]) -> Result<(Vec<Vec<f32>>, u64)> {
        let passages = self.embedding_texts(title, chunks);
        let texts: Vec<&str> = passages.iter().flatten().map(String::as_str).collect();
        let metered = self.embedder.embed_metered(&texts)?;
        let dimensions = self.embedder.dimensions();
        if metered.vectors.len() != texts.len() || metered.vectors.iter().any(|v| v.len() != dimensions) {
            return Err(EmbedError(format!("expected {} vectors of {dimensions} dimensions", texts.len())).into());
        }
        let mut vectors = metered.vectors.into_iter();
        let per_chunk = passages.iter().map(|p| vectors.by_ref().take(p.len()).flatten().collect()).collect();
        Ok((per_chunk, metered.tokens))
    }

    /// What this instance's embedder embeds for each chunk (`embedding_texts`).
    pub fn embedding_texts(&self, title: &str, chunks: &[ChunkToIndex]) -> Vec<Vec<String>> {
        embedding_texts(title, chunks, self.embedder.window_words())
    }

    /// The number of the last document change the tenant's namespace holds (0 for a new one).
    pub fn synced_seq(&self, tenant: &TenantId) -> Result<i64> {
        Ok(*self.namespace_of(tenant)?.synced.lock())
    }

    /// Applies a run of the tenant's document changes up to change number `seq`: `removed` leave both
    /// indexes, `put` replace whatever the indexes held of them (vectors only for the documents that have
    /// some). Not reachable from a request: the tenant and the documents come from the database's change
    /// record. A replay of the same run leaves the same indexes.
    pub fn apply_changes(
        &self,
        tenant: &TenantId,
        removed: &[DocumentId],
        put: &[DocumentToIndex],
        seq: i64,
    ) -> Result<()> {
        let ns = self.namespace_of(tenant)?;
        let dimensions = self.embedder.dimensions();
        for doc in put {
            if let Some(vectors) = &doc.vectors {
                let whole_windows = |v: &Vec<f32>| !v.is_empty() && v.len() % dimensions == 0;
                if vectors.len() != doc.chunks.len() || !vectors.iter().all(whole_windows) {
                    let msg = format!("document {} has vectors that do not fit its chunks or the embedder", doc.id);
                    return Err(EmbedError(msg).into());
                }
            }
        }
        let removed_refs: Vec<&DocumentId> = removed.iter().collect();
        let added: Vec<(&DocumentId, &str, &[ChunkToIndex])> =
            put.iter().map(|d| (&d.id, d.title.as_str(), d.chunks.as_slice())).collect();
        ns.lexical.replace(&removed_refs, &added)?;
        for id in removed.iter().chain(put.iter().map(|d| &d.id)) {
            ns.vectors.delete(id)?;
        }
        for doc in put {
            if let Some(vectors) = &doc.vectors {
                let chunks: Vec<ChunkVector> =
                    doc.chunks.iter().map(|c| c.chunk_id.clone()).zip(vectors.iter().cloned()).collect();
                ns.vectors.add(&doc.id, &chunks)?;
            }
        }
        let mut synced = ns.synced.lock();
        if seq > *synced {
            write_synced(&ns.dir, seq)?;
            *synced = seq;
        }
        Ok(())
    }

    /// The number of the last change the tenant's namespace recorded on disk, without opening it (0 if none).
    pub fn synced_on_disk(&self, tenant: &TenantId) -> Result<i64> {
        read_synced(&self.dir(tenant))
    }

    /// The tenants with a namespace on this node's disk (open or not).
    pub fn tenants_on_disk(&self) -> Result<Vec<TenantId>> {
        let entries = match std::fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut tenants = Vec::new();
        for entry in entries {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                if let Some(id) = entry.file_name().to_str().and_then(TenantId::parse) {
                    tenants.push(id);
                }
            }
        }
        Ok(tenants)
    }

    /// The identity of the vectors this instance writes and searches (the embedder's name).
    pub fn embedder_name(&self) -> &str {
        self.embedder.name()
    }

    /// The embedder itself, for callers that want vectors of their own texts.
    pub fn embedder(&self) -> &Arc<dyn TextEmbedder> {
        &self.embedder
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
    ) -> Result<u64> {
        let ns = self.namespace_of(tenant)?;
        let (vectors, billed) = self.embed_chunks(title, chunks)?;
        ns.vectors.delete(document)?;
        ns.vectors.add(document, &vectors)?;
        Ok(billed)
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

    /// The chunks nearest to the query's embedding (cosine), best first, and the tokens the embedder's
    /// upstream billed for the query (0 for a local embedder).
    pub fn semantic(&self, ctx: &TenantContext, query: &str, top_k: usize) -> Result<(Vec<Hit>, u64)> {
        let ns = self.namespace(ctx)?;
        let metered = self.embedder.embed_metered(&[query])?;
        let [vector] = &metered.vectors[..] else {
            return Err(EmbedError(format!("expected one vector, got {}", metered.vectors.len())).into());
        };
        let nearest = ns.vectors.search(vector, top_k);
        let mut stored = ns.lexical.fetch(nearest.iter().map(|h| h.chunk_id.as_str()))?;
        let hits = nearest
            .into_iter()
            .filter_map(|n| stored.remove(&n.chunk_id).map(|hit| Hit { score: n.score, ..hit }))
            .collect();
        Ok((hits, metered.tokens))
    }

    /// Chunks with vectors in the tenant's namespace.
    pub fn vector_count(&self, ctx: &TenantContext) -> Result<usize> {
        Ok(self.namespace(ctx)?.vectors.live_chunks())
    }

    /// Removes the tenant's namespace from disk (erasure). Returns the bytes removed.
    pub fn drop_namespace(&self, tenant: &TenantId) -> Result<u64> {
        let evicted = {
            let mut cache = self.open.lock();
            cache.slots.remove(tenant);
            cache.recent.remove(tenant)
        };
        drop(evicted);
        let dir = self.dir(tenant);
        let bytes = dir_size(&dir);
        // A writer still finishing (an upload in flight at an erasure) may add a file while the tree is
        // removed; the removal then finds a directory not empty and is simply repeated.
        let mut attempts = 0;
        loop {
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => return Ok(bytes),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(bytes),
                Err(e) if e.kind() == std::io::ErrorKind::DirectoryNotEmpty && attempts < 10 => {
                    attempts += 1;
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Namespaces kept open by the cache (at most its capacity; evicted ones in use are not counted).
    pub fn open_namespaces(&self) -> usize {
        self.open.lock().recent.len()
    }
}

fn read_synced(dir: &Path) -> Result<i64> {
    match std::fs::read_to_string(dir.join(SYNCED_FILE)) {
        Ok(text) => Ok(text.trim().parse().unwrap_or(0)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e.into()),
    }
}

/// Records `seq` whole: a temp file, flushed, renamed into place.
fn write_synced(dir: &Path, seq: i64) -> Result<()> {
    use std::io::Write;
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!("{SYNCED_FILE}.partial"));
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(seq.to_string().as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, dir.join(SYNCED_FILE))?;
    Ok(())
}

/// What the vector index embeds for each chunk, in order: its document's title, heading and text, the fields
/// BM25 sees; or, with `window_words`, one passage per overlapping window of the text, each under the same
/// title and heading. Every chunk has at least one. A caller that bills embedding counts these passages'
/// tokens to reserve quota before the work.
pub fn embedding_texts(title: &str, chunks: &[ChunkToIndex], window_words: Option<usize>) -> Vec<Vec<String>> {
    chunks
        .iter()
        .map(|c| {
            let windows = match window_words {
                Some(words) => word_windows(&c.text, words),
                None => vec![c.text.as_str()],
            };
            windows.into_iter().map(|w| format!("{title}\n{}\n{w}", c.heading)).collect()
        })
        .collect()
}

/// `text` as windows of `words` words cut at whitespace, each starting three quarters of a window after the
/// one before (the last one ending with the text); the whole text when it is no longer than one window.
fn word_windows(text: &str, words: usize) -> Vec<&str> {
    let spans = word_spans(text);
    let words = words.max(1);
    if spans.len() <= words {
        return vec![text];
    }
    let stride = (words - words / 4).max(1);
    let mut windows = Vec::new();
    let mut start = 0;
    loop {
        let end = start + words;
        windows.push(&text[spans[start].0..spans[end - 1].1]);
        if end == spans.len() {
            return windows;
        }
        start = (start + stride).min(spans.len() - words);
    }
}

/// The byte range of each whitespace-separated word of `text`.
fn word_spans(text: &str) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut start = None;
    for (i, c) in text.char_indices() {
        match (c.is_whitespace(), start) {
            (true, Some(s)) => {
                spans.push((s, i));
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    if let Some(s) = start {
        spans.push((s, text.len()));
    }
    spans
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
    fn a_namespace_being_opened_holds_up_only_its_own_tenant() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let indexes = Arc::new(SearchIndexes::new(dir.path(), 8));
        let (slow, other) = (context(TenantId::generate()), context(TenantId::generate()));
        // As if `slow`'s indexes were being read from disk right now.
        let slot = indexes.slot(&slow.tenant_id);
        let opening = slot.lock();
        let (done, finished) = std::sync::mpsc::channel();
        let (searcher, ctx) = (indexes.clone(), other.clone());
        std::thread::spawn(move || {
            let _ = done.send(searcher.search(&ctx, "anything", 5).map(|hits| hits.len()));
        });
        let searched = finished.recv_timeout(std::time::Duration::from_secs(30));
        assert_eq!(searched.expect("another tenant's search is not held up")?, 0);
        drop(opening);
        assert!(indexes.search(&slow, "anything", 5)?.is_empty(), "then the slot opens as usual");
        assert_eq!(indexes.open_namespaces(), 2);
        Ok(())
    }

    #[test]
    fn an_evicted_namespace_still_in_use_is_the_one_its_tenant_gets_again() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let indexes = SearchIndexes::new(dir.path(), 1);
        let (a, b) = (TenantId::generate(), TenantId::generate());
        let in_use = indexes.namespace_of(&a)?; // e.g. an upload still writing
        indexes.namespace_of(&b)?; // evicts `a` from the cache
        assert_eq!(indexes.open_namespaces(), 1);
        assert!(Arc::ptr_eq(&indexes.namespace_of(&a)?, &in_use), "never a second instance of a's indexes");
        drop(in_use);
        indexes.namespace_of(&b)?; // evicts `a`, now unused: closed
        let d = DocumentId::generate();
        indexes.add_document(&context(a.clone()), &d, "Reopened", &[chunk("a:0", "refunds")], true)?;
        assert_eq!(indexes.search(&context(a), "refunds", 5)?.len(), 1, "opened again from disk");
        // Slots of closed namespaces are swept once they outnumber the cache.
        for _ in 0..200 {
            indexes.namespace_of(&TenantId::generate())?;
        }
        assert!(indexes.open.lock().slots.len() <= 2 + 64 + 1, "{}", indexes.open.lock().slots.len());
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
        assert!(switched.semantic(&ctx, "refunds", 5)?.0.is_empty());
        assert_eq!(switched.search(&ctx, "refunds", 5)?.len(), 1, "BM25 is untouched");
        switched.index_vectors(&ctx.tenant_id, &d, "Refunds", &chunks)?; // the re-embedding path
        assert_eq!(switched.semantic(&ctx, "anything", 5)?.0[0].document_id, d);
        Ok(())
    }

    #[test]
    fn windows_cover_every_word_and_overlap_by_a_quarter() {
        let text: Vec<String> = (0..200).map(|i| format!("w{i}")).collect();
        let text = text.join(" ");
        let windows = word_windows(&text, 80);
        let words: Vec<Vec<&str>> = windows.iter().map(|w| w.split(' ').collect()).collect();
        assert_eq!(words.iter().map(|w| (w[0], w.len())).collect::<Vec<_>>(), [("w0", 80), ("w60", 80), ("w120", 80)]);
        assert_eq!(words[2][79], "w199", "the last window ends with the text");
        assert_eq!(word_windows("  short\ttext ", 80), ["  short\ttext "], "one window: the text as it is");
        assert_eq!(word_windows("", 80), [""]);
        let titled = embedding_texts("Title", &[chunk("c", &text)], Some(80));
        assert!(titled[0].iter().all(|p| p.starts_with("Title\n\nw")), "each window under the title and heading");
        assert_eq!(embedding_texts("Title", &[chunk("c", &text)], None), [vec![format!("Title\n\n{text}")]]);
    }

    /// An embedder with 4-word windows: [1, 0] for a text that mentions a refund, [0, 1] for any other.
    struct Keyword;

    impl TextEmbedder for Keyword {
        fn name(&self) -> &str {
            "keyword-2-w4"
        }
        fn dimensions(&self) -> usize {
            2
        }
        fn window_words(&self) -> Option<usize> {
            Some(4)
        }
        fn embed_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
            Ok(texts.iter().map(|t| if t.contains("refund") { vec![1.0, 0.0] } else { vec![0.0, 1.0] }).collect())
        }
    }

    #[test]
    fn a_chunk_scores_as_its_best_window_and_is_found_once() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let ctx = context(TenantId::generate());
        let d = DocumentId::generate();
        let chunks = [
            chunk("c:0", "alpha beta gamma delta epsilon zeta eta theta iota refund"), // windows at 0, 3 and 6
            chunk("c:1", "nothing to see here"),
        ];
        let indexes = SearchIndexes::with_embedder(dir.path(), 8, Arc::new(Keyword));
        let (vectors, _) = indexes.embed_document("Doc", &chunks)?;
        assert_eq!(vectors.iter().map(Vec::len).collect::<Vec<_>>(), [3 * 2, 2], "three windows, then one");
        assert_eq!(&vectors[0][4..], [1.0, 0.0], "only the last window mentions the refund");
        indexes.add_document(&ctx, &d, "Doc", &chunks, true)?;
        for indexes in [indexes, SearchIndexes::with_embedder(dir.path(), 8, Arc::new(Keyword))] {
            let (hits, _) = indexes.semantic(&ctx, "refund", 10)?;
            assert_eq!(hits.iter().map(|h| (h.chunk_id.as_str(), h.score)).collect::<Vec<_>>(), [("c:0", 1.0)]);
            assert_eq!(indexes.vector_count(&ctx)?, 2, "chunks, not windows");
        }
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
        assert_eq!(indexes.semantic(&ctx, "refund", 1)?.0[0].document_id, a);
        Ok(())
    }
}
