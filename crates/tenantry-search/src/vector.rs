//! One tenant's vector index: an append-only log of (document → chunk vectors) and tombstones, replayed into
//! memory when the namespace opens, searched exactly (a dot product per live vector). A chunk may have several
//! vectors, one per window of its text (`TextEmbedder::window_words`); it scores as its best window.
//!
//! Exact search keeps recall at 100% and needs no tuning; a scan of 100k chunks × 512 dimensions is about
//! 50 M multiply-adds, a few milliseconds, which covers the per-tenant corpora this service is sized for.
//! An approximate index (HNSW) is the step after that, behind the same interface.
//!
//! Record: `[u32 body length][u32 CRC-32 of body][body]`, little-endian. A torn or corrupt tail (a crash in
//! the middle of an append) is cut off at the last good record when the log is opened. Every append is
//! flushed to disk before the call returns. The first record names the embedder and its dimensions; a log
//! written by another embedder is set aside, not mixed.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use parking_lot::{Mutex, RwLock};
use tenantry_domain::DocumentId;

use crate::embed::dot;
use crate::Result;

const TAG_META: u8 = 0;
const TAG_ADD: u8 = 1;
const TAG_DELETE: u8 = 2;

/// Rewrite the log when tombstoned vectors outnumber live ones (and there are enough to matter).
const COMPACT_MIN_DEAD: usize = 1_000;

pub(crate) struct VectorIndex {
    path: PathBuf,
    meta: Vec<u8>,
    dimensions: usize,
    state: RwLock<State>,
    log: Mutex<File>,
}

#[derive(Default)]
struct State {
    /// One per vector; a chunk's windows are consecutive entries.
    entries: Vec<Entry>,
    /// `dimensions` floats per entry, in entry order.
    vectors: Vec<f32>,
    dead: usize,
    /// The number the next chunk added gets.
    next_chunk: u64,
}

struct Entry {
    chunk_id: String,
    document_id: DocumentId,
    /// The same for every window of one chunk, distinct between chunks (re-adding a chunk gives a new one).
    chunk: u64,
    live: bool,
}

/// A scored chunk from the vector index.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct VectorHit {
    pub chunk_id: String,
    pub document_id: DocumentId,
    pub score: f32,
}

/// The first record of a log written by `embedder`.
fn meta_record(embedder: &str, dimensions: usize) -> Vec<u8> {
    let mut meta = vec![TAG_META];
    meta.extend_from_slice(&(dimensions as u32).to_le_bytes());
    put_str(&mut meta, embedder);
    meta
}

/// Whether the index in `dir` holds vectors of another embedder: a log set aside when it was opened since
/// the change, or a log whose first record names another embedder (not opened since). Reads one record.
pub(crate) fn written_by_another(dir: &Path, embedder: &str, dimensions: usize) -> Result<bool> {
    if !stale_logs(dir)?.is_empty() {
        return Ok(true);
    }
    let Ok(mut file) = File::open(dir.join("vectors.log")) else { return Ok(false) };
    let mut header = [0u8; 8];
    if file.read_exact(&mut header).is_err() {
        return Ok(false);
    }
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let meta = meta_record(embedder, dimensions);
    if len != meta.len() {
        return Ok(true);
    }
    let mut first = vec![0u8; len];
    file.read_exact(&mut first)?;
    Ok(first != meta)
}

/// The logs of other embedders set aside in `dir`.
pub(crate) fn stale_logs(dir: &Path) -> Result<Vec<PathBuf>> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Ok(Vec::new()) };
    let mut stale = Vec::new();
    for entry in entries {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if name.starts_with("vectors.log.") && name.ends_with(".stale") {
            stale.push(path);
        }
    }
    Ok(stale)
}

impl VectorIndex {
    pub(crate) fn open_or_create(dir: &Path, embedder: &str, dimensions: usize) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("vectors.log");
        let meta = meta_record(embedder, dimensions);

        let mut state = State::default();
        let mut bytes = Vec::new();
        if path.exists() {
            File::open(&path)?.read_to_end(&mut bytes)?;
        }
        let (records, good_len) = split_records(&bytes);
        if records.first().is_some_and(|first| *first != meta.as_slice()) {
            let aside = dir.join(format!("vectors.log.{}.stale", std::process::id()));
            tracing::warn!(path = %path.display(), "vector log written by another embedder; set aside");
            std::fs::rename(&path, aside)?;
            return Self::open_or_create(dir, embedder, dimensions);
        }
        for body in records.iter().skip(1) {
            state.apply(body, dimensions);
        }
        let mut log = OpenOptions::new().create(true).append(true).read(true).open(&path)?;
        if good_len < bytes.len() {
            tracing::warn!(path = %path.display(), cut = bytes.len() - good_len, "torn vector log tail removed");
            log.set_len(good_len as u64)?;
        }
        if records.is_empty() {
            log.set_len(0)?;
            write_record(&mut log, &meta)?;
        }
        Ok(Self { path, meta, dimensions, state: RwLock::new(state), log: Mutex::new(log) })
    }

    /// Adds a document's chunks, each with one vector or several (its windows', `dimensions` floats each, one
    /// after the other). Written as one (chunk id, vector) pair per window, a chunk's pairs in a row: that is
    /// how a reader tells the windows of one chunk apart from the next chunk.
    pub(crate) fn add(&self, document: &DocumentId, chunks: &[(String, Vec<f32>)]) -> Result<()> {
        debug_assert!(chunks.iter().all(|(_, v)| !v.is_empty() && v.len() % self.dimensions == 0));
        let windows: Vec<(&str, &[f32])> =
            chunks.iter().flat_map(|(id, v)| v.chunks_exact(self.dimensions).map(move |w| (id.as_str(), w))).collect();
        let mut body = vec![TAG_ADD];
        put_str(&mut body, document.as_str());
        put_len(&mut body, windows.len());
        for (chunk_id, vector) in windows {
            put_str(&mut body, chunk_id);
            vector.iter().for_each(|x| body.extend_from_slice(&x.to_le_bytes()));
        }
        let mut log = self.log.lock();
        write_record(&mut log, &body)?;
        self.state.write().apply(&body, self.dimensions);
        Ok(())
    }

    pub(crate) fn delete(&self, document: &DocumentId) -> Result<()> {
        let mut body = vec![TAG_DELETE];
        put_str(&mut body, document.as_str());
        let mut log = self.log.lock();
        write_record(&mut log, &body)?;
        let mut state = self.state.write();
        state.apply(&body, self.dimensions);
        let live = state.entries.len() - state.dead;
        if state.dead >= COMPACT_MIN_DEAD && state.dead > live {
            self.compact(&mut log, &mut state)?;
        }
        Ok(())
    }

    /// The `top_k` live chunks most similar to `query` (a unit vector), best first; a chunk with windows
    /// scores as its most similar window.
    pub(crate) fn search(&self, query: &[f32], top_k: usize) -> Vec<VectorHit> {
        if top_k == 0 || query.len() != self.dimensions || query.iter().all(|x| *x == 0.0) {
            return Vec::new();
        }
        let state = self.state.read();
        // (score, the entry of the chunk's best window so far), one per chunk.
        let mut scored: Vec<(f32, usize)> = Vec::new();
        let live = state.entries.iter().zip(state.vectors.chunks_exact(self.dimensions)).enumerate();
        for (i, (entry, vector)) in live.filter(|(_, (e, _))| e.live) {
            let score = dot(query, vector);
            match scored.last_mut() {
                Some(best) if state.entries[best.1].chunk == entry.chunk => {
                    if score > best.0 {
                        *best = (score, i);
                    }
                }
                _ => scored.push((score, i)),
            }
        }
        scored.retain(|(score, _)| *score > 0.0);
        let by_score = |a: &(f32, usize), b: &(f32, usize)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
        if scored.len() > top_k {
            scored.select_nth_unstable_by(top_k - 1, by_score);
            scored.truncate(top_k);
        }
        scored.sort_by(by_score);
        scored
            .into_iter()
            .map(|(score, i)| VectorHit {
                chunk_id: state.entries[i].chunk_id.clone(),
                document_id: state.entries[i].document_id.clone(),
                score,
            })
            .collect()
    }

    /// Chunks with at least one live vector.
    pub(crate) fn live_chunks(&self) -> usize {
        let state = self.state.read();
        let mut previous = None;
        let mut count = 0;
        for entry in state.entries.iter().filter(|e| e.live) {
            if previous != Some(entry.chunk) {
                count += 1;
                previous = Some(entry.chunk);
            }
        }
        count
    }

    /// Rewrites the log with only live vectors (one record per document, a chunk's windows still in a row), then
    /// swaps it in atomically.
    fn compact(&self, log: &mut File, state: &mut State) -> Result<()> {
        let mut fresh = State::default();
        let tmp = self.path.with_extension("log.compacting");
        let mut out = File::create(&tmp)?;
        write_record(&mut out, &self.meta)?;
        let mut i = 0;
        while i < state.entries.len() {
            let doc = state.entries[i].document_id.clone();
            let mut chunks = Vec::new();
            while i < state.entries.len() && state.entries[i].document_id == doc {
                if state.entries[i].live {
                    let v = &state.vectors[i * self.dimensions..(i + 1) * self.dimensions];
                    chunks.push((state.entries[i].chunk_id.clone(), v.to_vec()));
                }
                i += 1;
            }
            if !chunks.is_empty() {
                let mut body = vec![TAG_ADD];
                put_str(&mut body, doc.as_str());
                put_len(&mut body, chunks.len());
                for (chunk_id, vector) in &chunks {
                    put_str(&mut body, chunk_id);
                    vector.iter().for_each(|x| body.extend_from_slice(&x.to_le_bytes()));
                }
                write_record(&mut out, &body)?;
                fresh.apply(&body, self.dimensions);
            }
        }
        out.sync_all()?;
        std::fs::rename(&tmp, &self.path)?;
        *log = OpenOptions::new().append(true).read(true).open(&self.path)?;
        *state = fresh;
        Ok(())
    }
}

impl State {
    /// Applies one record body; a body that does not decode is ignored (its CRC matched, so it was written
    /// by a different version, and skipping it only loses vectors the lexical index still has).
    fn apply(&mut self, body: &[u8], dimensions: usize) {
        let mut r = Reader(body);
        match r.u8() {
            Some(TAG_ADD) => {
                let Some((doc, n)) = r.string().zip(r.u32()) else { return };
                let document_id = DocumentId::from_trusted(doc);
                for pair in 0..n {
                    let Some(chunk_id) = r.string() else { return };
                    let Some(vector) = r.floats(dimensions) else { return };
                    // A pair with the chunk id of the pair before it in this record is another window of that
                    // chunk.
                    let chunk = match self.entries.last() {
                        Some(last) if pair > 0 && last.chunk_id == chunk_id => last.chunk,
                        _ => {
                            self.next_chunk += 1;
                            self.next_chunk - 1
                        }
                    };
                    self.entries.push(Entry { chunk_id, document_id: document_id.clone(), chunk, live: true });
                    self.vectors.extend(vector);
                }
            }
            Some(TAG_DELETE) => {
                let Some(doc) = r.string() else { return };
                for e in self.entries.iter_mut().filter(|e| e.live && e.document_id.as_str() == doc) {
                    e.live = false;
                    self.dead += 1;
                }
            }
            _ => {}
        }
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_len(out, s.len());
    out.extend_from_slice(s.as_bytes());
}

/// A length as the log's u32. Record bodies are far below 4 GiB (a document's vectors, a chunk id).
fn put_len(out: &mut Vec<u8>, len: usize) {
    out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_le_bytes());
}

fn write_record(file: &mut File, body: &[u8]) -> Result<()> {
    let mut record = Vec::with_capacity(body.len() + 8);
    record.extend_from_slice(&(body.len() as u32).to_le_bytes());
    record.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
    record.extend_from_slice(body);
    file.write_all(&record)?;
    file.sync_data()?;
    Ok(())
}

/// The intact records of a log, and the length of the intact prefix.
fn split_records(bytes: &[u8]) -> (Vec<&[u8]>, usize) {
    let mut records = Vec::new();
    let mut at = 0;
    while bytes.len() - at >= 8 {
        let len = u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]) as usize;
        let crc = u32::from_le_bytes([bytes[at + 4], bytes[at + 5], bytes[at + 6], bytes[at + 7]]);
        let Some(body) = bytes.get(at + 8..at + 8 + len) else { break };
        if crc32fast::hash(body) != crc {
            break;
        }
        records.push(body);
        at += 8 + len;
    }
    (records, at)
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u32(&mut self) -> Option<u32> {
        self.take(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn string(&mut self) -> Option<String> {
        let n = self.u32()? as usize;
        self.take(n).and_then(|b| String::from_utf8(b.to_vec()).ok())
    }

    fn floats(&mut self, n: usize) -> Option<Vec<f32>> {
        let bytes = self.take(n * 4)?;
        Some(bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(dims: usize, hot: usize) -> Vec<f32> {
        let mut v = vec![0.0; dims];
        v[hot] = 1.0;
        v
    }

    #[test]
    fn vectors_survive_reopening_and_deletes_are_durable() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let (a, b) = (DocumentId::generate(), DocumentId::generate());
        {
            let index = VectorIndex::open_or_create(dir.path(), "test", 4)?;
            index.add(&a, &[("a:0".into(), unit(4, 0)), ("a:1".into(), unit(4, 1))])?;
            index.add(&b, &[("b:0".into(), unit(4, 0))])?;
            index.delete(&a)?;
        }
        let index = VectorIndex::open_or_create(dir.path(), "test", 4)?;
        let hits = index.search(&unit(4, 0), 10);
        assert_eq!(hits.iter().map(|h| h.chunk_id.as_str()).collect::<Vec<_>>(), ["b:0"]);
        assert_eq!(index.live_chunks(), 1);
        Ok(())
    }

    #[test]
    fn a_chunks_windows_score_as_its_best_and_stay_one_chunk_through_compaction() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let (windows, other, filler) = (DocumentId::generate(), DocumentId::generate(), DocumentId::generate());
        let index = VectorIndex::open_or_create(dir.path(), "test", 2)?;
        index.add(&windows, &[("w".into(), vec![1.0, 0.0, 0.0, 1.0]), ("v".into(), vec![0.6, 0.8])])?;
        index.add(&other, &[("w".into(), vec![0.8, 0.6])])?; // the same chunk id in another record: another chunk
        let dead: Vec<(String, Vec<f32>)> =
            (0..COMPACT_MIN_DEAD + 1).map(|i| (format!("f{i}"), vec![1.0, 0.0])).collect();
        index.add(&filler, &dead)?;
        index.delete(&filler)?; // compacts
        assert_eq!(index.state.read().dead, 0, "compacted");
        drop(index);
        let index = VectorIndex::open_or_create(dir.path(), "test", 2)?;
        let found = |query: &[f32]| -> Vec<(String, f32)> {
            index.search(query, 10).into_iter().map(|h| (h.chunk_id, h.score)).collect()
        };
        assert_eq!(found(&[0.0, 1.0]), [("w".into(), 1.0), ("v".into(), 0.8), ("w".into(), 0.6)]);
        assert_eq!(found(&[1.0, 0.0]), [("w".into(), 1.0), ("w".into(), 0.8), ("v".into(), 0.6)]);
        assert_eq!(index.live_chunks(), 3);
        Ok(())
    }

    #[test]
    fn a_torn_tail_is_cut_and_the_rest_kept() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let (a, b) = (DocumentId::generate(), DocumentId::generate());
        {
            let index = VectorIndex::open_or_create(dir.path(), "test", 4)?;
            index.add(&a, &[("a:0".into(), unit(4, 2))])?;
            index.add(&b, &[("b:0".into(), unit(4, 2))])?;
        }
        let path = dir.path().join("vectors.log");
        let len = std::fs::metadata(&path)?.len();
        OpenOptions::new().write(true).open(&path)?.set_len(len - 5)?; // a crash mid-append
        let index = VectorIndex::open_or_create(dir.path(), "test", 4)?;
        assert_eq!(index.search(&unit(4, 2), 10).len(), 1);
        index.add(&b, &[("b:0".into(), unit(4, 2))])?; // appends after the cut, readable again
        drop(index);
        assert_eq!(VectorIndex::open_or_create(dir.path(), "test", 4)?.search(&unit(4, 2), 10).len(), 2);
        Ok(())
    }

    #[test]
    fn another_embedders_log_is_set_aside() -> Result<()> {
        let dir = tempfile::tempdir()?;
        VectorIndex::open_or_create(dir.path(), "old", 4)?.add(&DocumentId::generate(), &[("x".into(), unit(4, 0))])?;
        let index = VectorIndex::open_or_create(dir.path(), "new", 4)?;
        assert_eq!(index.live_chunks(), 0);
        Ok(())
    }

    #[test]
    fn another_embedders_vectors_are_detected_from_the_files() -> Result<()> {
        let dir = tempfile::tempdir()?;
        assert!(!written_by_another(dir.path(), "new", 4)?, "no vectors at all");
        VectorIndex::open_or_create(dir.path(), "old", 4)?.add(&DocumentId::generate(), &[("x".into(), unit(4, 0))])?;
        assert!(!written_by_another(dir.path(), "old", 4)?);
        assert!(written_by_another(dir.path(), "new", 4)?, "not opened since the change");
        assert!(written_by_another(dir.path(), "old", 8)?, "same name, other dimensions");
        drop(VectorIndex::open_or_create(dir.path(), "new", 4)?);
        assert!(written_by_another(dir.path(), "new", 4)?, "opened since: the old log lies set aside");
        for stale in stale_logs(dir.path())? {
            std::fs::remove_file(stale)?;
        }
        assert!(!written_by_another(dir.path(), "new", 4)?);
        Ok(())
    }

    #[test]
    fn compaction_keeps_exactly_the_live_vectors() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let index = VectorIndex::open_or_create(dir.path(), "test", 2)?;
        let docs: Vec<DocumentId> = (0..3).map(|_| DocumentId::generate()).collect();
        let many =
            |prefix: &str| (0..COMPACT_MIN_DEAD).map(|i| (format!("{prefix}:{i}"), vec![1.0, 0.0])).collect::<Vec<_>>();
        index.add(&docs[0], &many("d0"))?;
        index.add(&docs[1], &many("d1"))?;
        index.add(&docs[2], &[("keep".into(), vec![0.0, 1.0])])?;
        index.delete(&docs[0])?;
        index.delete(&docs[1])?; // dead 2000 > live 1: compacts
        assert_eq!(index.state.read().entries.len(), 1);
        drop(index);
        let reopened = VectorIndex::open_or_create(dir.path(), "test", 2)?;
        assert_eq!(reopened.search(&[0.0, 1.0], 5).iter().map(|h| h.chunk_id.as_str()).collect::<Vec<_>>(), ["keep"]);
        assert!(reopened.search(&[1.0, 0.0], 5).is_empty());
        Ok(())
    }
}
