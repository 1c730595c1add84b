//! This node's search indexes as caches of the database. Every change to a tenant's documents is numbered
//! in the database (`Store::document_changes`); a tenant's namespace records the last number it applied and
//! catches up from there:
//!
//! - at once on the node that made the change (after its upload or delete commits), so that node's next
//!   question sees it;
//! - before every retrieval, when the database's number is ahead (one indexed read), so a question asked
//!   through any node sees every document committed before it;
//! - by the follower (`Services::follow_indexes`, every second), which also drops the namespaces of erased
//!   and unknown tenants, and at start warms every tenant with documents.
//!
//! A namespace can therefore be lost at any time (a deleted data directory, a new node): it is rebuilt from
//! the rows. Vectors come from the rows too; a document whose vectors are another embedder's is embedded
//! here (locally, as every node would) and its vectors written back for the next node; one with no vectors
//! yet is searched lexically until the job making them announces them.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tenantry_domain::{DocumentId, TenantId, TenantState};
use tenantry_search::ChunkToIndex;
use tenantry_store::{StoreError, TenantHead};

use crate::{ServiceResult, Services};

/// Changes applied per batch (one lexical commit each).
const CHANGES_PER_BATCH: i64 = 500;

/// Per-tenant locks, so one tenant's namespace is caught up by one task at a time while others proceed.
#[derive(Default)]
pub(crate) struct SyncLocks {
    locks: parking_lot::Mutex<HashMap<TenantId, Arc<tokio::sync::Mutex<()>>>>,
    /// The change number each namespace is known to hold, so the follower and questions skip a namespace
    /// that is up to date without opening it.
    applied: parking_lot::Mutex<HashMap<TenantId, i64>>,
    /// Tenants still to warm since start (a gauge for `/metrics` and the log).
    pub(crate) warming: AtomicUsize,
}

impl SyncLocks {
    fn of(&self, tenant: &TenantId) -> Arc<tokio::sync::Mutex<()>> {
        self.locks.lock().entry(tenant.clone()).or_default().clone()
    }

    fn forget(&self, tenant: &TenantId) {
        self.locks.lock().remove(tenant);
        self.applied.lock().remove(tenant);
    }

    fn known(&self, tenant: &TenantId) -> Option<i64> {
        self.applied.lock().get(tenant).copied()
    }

    fn record(&self, tenant: &TenantId, seq: i64) {
        self.applied.lock().insert(tenant.clone(), seq);
    }
}

impl Services {
    /// Brings the tenant's namespace up to the database's last change. Cheap when it is there already: one
    /// indexed read.
    pub(crate) async fn sync_index(&self, tenant: &TenantId) -> ServiceResult<()> {
        let Some(head) = self.store().document_seq(tenant).await? else { return Ok(()) };
        self.sync_index_to(tenant, head).await
    }

    async fn sync_index_to(&self, tenant: &TenantId, head: i64) -> ServiceResult<()> {
        if self.inner.sync.known(tenant).is_some_and(|applied| applied >= head) {
            return Ok(());
        }
        let lock = self.inner.sync.of(tenant);
        let _held = lock.lock().await;
        let search = self.search().clone();
        let owned = tenant.clone();
        let mut applied = tokio::task::spawn_blocking(move || search.synced_seq(&owned)).await??;
        self.inner.sync.record(tenant, applied);
        if applied >= head {
            return Ok(());
        }
        let Some(row) = self.store().tenant(tenant).await? else { return Ok(()) };
        if row.state == TenantState::Erased {
            return Ok(());
        }
        let needs = |plan: Option<&str>| plan.and_then(|p| self.catalog().plan(p)).is_some_and(|p| p.needs_vectors());
        let needs_vectors = needs(Some(&row.plan)) || needs(row.pending_plan.as_deref());
        while applied < head {
            let changes = self.store().document_changes(tenant, applied, CHANGES_PER_BATCH).await?;
            let Some(last) = changes.last().map(|c| c.seq) else { break };
            let mut seen = HashSet::new();
            let ids: Vec<DocumentId> =
                changes.iter().map(|c| c.document_id.clone()).filter(|id| seen.insert(id.clone())).collect();
            let live = self.store().documents_to_index(tenant, &ids).await?;
            let live_ids: HashSet<&DocumentId> = live.iter().map(|d| &d.id).collect();
            let removed: Vec<DocumentId> = ids.iter().filter(|id| !live_ids.contains(id)).cloned().collect();
            let mut put = Vec::with_capacity(live.len());
            for doc in live {
                put.push(self.prepare_for_index(tenant, doc, needs_vectors).await?);
            }
            let (search, owned) = (self.search().clone(), tenant.clone());
            tokio::task::spawn_blocking(move || search.apply_changes(&owned, &removed, &put, last)).await??;
            applied = last;
            self.inner.sync.record(tenant, applied);
        }
        Ok(())
    }

    /// A stored document as the index takes it: with its stored vectors when this node's embedder made them;
    /// embedded here when the tenant needs vectors and the rows hold another embedder's. A document with no
    /// vectors at all is indexed lexically: the job that makes them (an upload's `embed_document`, a plan
    /// switch, `reembed`) announces them as a change, and every node takes them then.
    async fn prepare_for_index(
        &self,
        tenant: &TenantId,
        doc: tenantry_store::DocumentToIndex,
        needs_vectors: bool,
    ) -> ServiceResult<tenantry_search::DocumentToIndex> {
        let stored: Option<Vec<Vec<f32>>> = if doc.embedder == self.search().embedder_name() {
            doc.chunks.iter().map(|c| c.embedding.clone()).collect()
        } else {
            None
        };
        let chunks: Vec<ChunkToIndex> = doc.chunks.into_iter().map(chunk_to_index).collect();
        let vectors = match stored {
            Some(vectors) => Some(vectors),
            None if needs_vectors && !doc.embedder.is_empty() && !chunks.is_empty() => {
                let (search, title, owned) = (self.search().clone(), doc.title.clone(), chunks.clone());
                let (vectors, _) = tokio::task::spawn_blocking(move || search.embed_document(&title, &owned)).await??;
                let embedder = self.search().embedder_name().to_owned();
                match self.store().set_document_vectors(tenant, &doc.id, &embedder, &vectors, false).await {
                    Ok(()) | Err(StoreError::NotFound) => {}
                    Err(e) => tracing::warn!(error = %e, document_id = %doc.id, "could not store the vectors"),
                }
                Some(vectors)
            }
            None => None,
        };
        Ok(tenantry_search::DocumentToIndex { id: doc.id, title: doc.title, chunks, vectors })
    }

    /// One pass of the follower: namespaces of erased or unknown tenants leave this node's disk, and every
    /// other tenant whose documents changed since its namespace was caught up is caught up. The directories
    /// are listed before the tenants are read, so a tenant created in between is never taken for unknown.
    pub(crate) async fn follow_indexes(&self) -> ServiceResult<()> {
        let search = self.search().clone();
        let on_disk = tokio::task::spawn_blocking(move || search.tenants_on_disk()).await??;
        let heads = self.store().tenant_heads().await?;
        let known: HashMap<&TenantId, &TenantHead> = heads.iter().map(|h| (&h.id, h)).collect();
        for tenant in &on_disk {
            let gone = known.get(tenant).is_none_or(|h| h.state == TenantState::Erased);
            if gone {
                self.drop_local_copies(tenant).await?;
            }
        }
        let on_disk: HashSet<&TenantId> = on_disk.iter().collect();
        for head in &heads {
            if head.state == TenantState::Erased || head.document_seq == 0 {
                continue;
            }
            // A tenant without a namespace here is warmed at start and otherwise when first asked.
            if !on_disk.contains(&head.id) {
                continue;
            }
            if self.inner.sync.known(&head.id).is_none() {
                // Not touched since start: what its namespace holds, from its record, without opening it.
                let (search, owned) = (self.search().clone(), head.id.clone());
                let on_file = tokio::task::spawn_blocking(move || search.synced_on_disk(&owned)).await??;
                self.inner.sync.record(&head.id, on_file);
            }
            if let Err(e) = self.sync_index_to(&head.id, head.document_seq).await {
                tracing::warn!(tenant_id = %head.id, error = %e.detail, "could not catch the index up");
            }
        }
        Ok(())
    }

    /// Removes this node's copies of the tenant's documents (its namespace: indexes and any legacy files).
    pub(crate) async fn drop_local_copies(&self, tenant: &TenantId) -> ServiceResult<u64> {
        let lock = self.inner.sync.of(tenant);
        let _held = lock.lock().await;
        let (search, owned) = (self.search().clone(), tenant.clone());
        let bytes = tokio::task::spawn_blocking(move || search.drop_namespace(&owned)).await??;
        if bytes > 0 {
            tracing::info!(tenant_id = %tenant, bytes, "the tenant was erased: this node's copies removed");
        }
        drop(_held);
        self.inner.sync.forget(tenant);
        Ok(bytes)
    }

    /// At start: every tenant with documents is caught up, one after another, with its progress logged. Runs
    /// beside serving; a question for a tenant not warmed yet catches its namespace up itself.
    pub(crate) async fn warm_indexes(&self) -> ServiceResult<()> {
        let heads = self.store().tenant_heads().await?;
        let todo: Vec<&TenantHead> =
            heads.iter().filter(|h| h.state != TenantState::Erased && h.document_seq > 0).collect();
        let total = todo.len();
        self.inner.sync.warming.store(total, Ordering::Relaxed);
        let started = std::time::Instant::now();
        let mut last_log = std::time::Instant::now();
        for (done, head) in todo.into_iter().enumerate() {
            if let Err(e) = self.sync_index_to(&head.id, head.document_seq).await {
                tracing::warn!(tenant_id = %head.id, error = %e.detail, "could not warm the index");
            }
            self.inner.sync.warming.store(total - done - 1, Ordering::Relaxed);
            if last_log.elapsed().as_secs() >= 5 {
                tracing::info!(done = done + 1, total, "warming the search indexes");
                last_log = std::time::Instant::now();
            }
        }
        if total > 0 {
            tracing::info!(tenants = total, seconds = started.elapsed().as_secs_f64(), "search indexes warm");
        }
        Ok(())
    }

    /// Tenants still to warm since start.
    pub fn indexes_warming(&self) -> usize {
        self.inner.sync.warming.load(Ordering::Relaxed)
    }
}

fn chunk_to_index(c: tenantry_store::IndexedChunk) -> ChunkToIndex {
    ChunkToIndex {
        chunk_id: c.id.to_string(),
        ordinal: u64::try_from(c.ordinal).unwrap_or(0),
        heading: c.heading,
        page: c.page.and_then(|p| u64::try_from(p).ok()),
        text: c.text,
    }
}
