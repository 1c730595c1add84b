//! The change sequence that keeps every node's search indexes derived from the database. Each change to a
//! tenant's documents (a document stored, deleted, or given new vectors) takes the next number of the
//! tenant's `document_seq` in the change's own transaction; the tenant's row is locked by that update, so a
//! tenant's changes commit in the order of their numbers and a reader never sees a number before the changes
//! below it. A node records the last number its index applied and catches up from `document_changes`.

use std::collections::HashMap;

use sqlx::{Any, Row, Transaction};
use tenantry_domain::{ChunkId, DocumentId, TenantId, TenantState};

use crate::usage::{parameter_list, runs};
use crate::{parsed, Result, Store, StoreError};

/// What happened to a document.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeKind {
    /// Stored, or its vectors replaced: index it as its rows say now.
    Put,
    /// Deleted: remove it from the index.
    Delete,
}

impl ChangeKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Put => "put",
            Self::Delete => "delete",
        }
    }

    fn parse(raw: &str) -> Option<Self> {
        [Self::Put, Self::Delete].into_iter().find(|k| k.as_str() == raw)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DocumentChange {
    pub seq: i64,
    pub document_id: DocumentId,
    pub kind: ChangeKind,
}

/// A tenant as the index follower sees it: its state and how far its documents have changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TenantHead {
    pub id: TenantId,
    pub state: TenantState,
    pub plan: String,
    pub pending_plan: Option<String>,
    pub document_seq: i64,
}

/// A live document with everything an index needs: its chunks, and their vectors when they were stored by
/// `embedder`.
#[derive(Clone, Debug)]
pub struct DocumentToIndex {
    pub id: DocumentId,
    pub title: String,
    pub embedder: String,
    pub chunks: Vec<IndexedChunk>,
}

#[derive(Clone, Debug)]
pub struct IndexedChunk {
    pub id: ChunkId,
    pub ordinal: i64,
    pub heading: String,
    pub page: Option<i64>,
    pub text: String,
    pub embedding: Option<Vec<f32>>,
}

/// Records `kind` of `document` as the tenant's next change, inside the change's transaction.
pub(crate) async fn record_change_in(
    tx: &mut Transaction<'static, Any>,
    tenant: &TenantId,
    document: &DocumentId,
    kind: ChangeKind,
) -> Result<i64> {
    let row = sqlx::query("UPDATE tenants SET document_seq = document_seq + 1 WHERE id = $1 RETURNING document_seq")
        .bind(tenant.as_str())
        .fetch_optional(&mut **tx)
        .await?
        .ok_or(StoreError::NotFound)?;
    let seq: i64 = row.try_get("document_seq")?;
    sqlx::query("INSERT INTO document_changes (tenant_id, seq, document_id, change) VALUES ($1, $2, $3, $4)")
        .bind(tenant.as_str())
        .bind(seq)
        .bind(document.as_str())
        .bind(kind.as_str())
        .execute(&mut **tx)
        .await?;
    Ok(seq)
}

/// A vector as stored: its floats, little-endian.
pub(crate) fn encode_vector(vector: &[f32]) -> Vec<u8> {
    vector.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn decode_vector(bytes: &[u8]) -> Result<Vec<f32>> {
    if bytes.len() % 4 != 0 {
        return Err(StoreError::Corrupt(format!("a stored vector of {} bytes", bytes.len())));
    }
    Ok(bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
}

impl Store {
    /// The number of the tenant's last document change (0 before the first); `None` for an unknown tenant.
    pub async fn document_seq(&self, tenant: &TenantId) -> Result<Option<i64>> {
        let row = sqlx::query("SELECT document_seq FROM tenants WHERE id = $1")
            .bind(tenant.as_str())
            .fetch_optional(&self.read)
            .await?;
        Ok(row.map(|r| r.try_get("document_seq")).transpose()?)
    }

    /// The tenant's changes numbered above `after`, in order, at most `limit`.
    pub async fn document_changes(&self, tenant: &TenantId, after: i64, limit: i64) -> Result<Vec<DocumentChange>> {
        let rows = sqlx::query(
            "SELECT seq, document_id, change FROM document_changes WHERE tenant_id = $1 AND seq > $2 \
             ORDER BY seq LIMIT $3",
        )
        .bind(tenant.as_str())
        .bind(after)
        .bind(limit)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(DocumentChange {
                    seq: r.try_get("seq")?,
                    document_id: DocumentId::from_trusted(r.try_get("document_id")?),
                    kind: parsed(r, "change", ChangeKind::parse)?,
                })
            })
            .collect()
    }

    /// Every tenant's state and change number, for the nodes' index follower.
    pub async fn tenant_heads(&self) -> Result<Vec<TenantHead>> {
        let rows = sqlx::query("SELECT id, state, plan, pending_plan, document_seq FROM tenants ORDER BY id")
            .fetch_all(&self.read)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(TenantHead {
                    id: TenantId::from_trusted(r.try_get("id")?),
                    state: parsed(r, "state", TenantState::parse)?,
                    plan: r.try_get("plan")?,
                    pending_plan: r.try_get("pending_plan")?,
                    document_seq: r.try_get("document_seq")?,
                })
            })
            .collect()
    }

    /// The live documents among `ids` of `tenant`, with their chunks in order and the stored vectors.
    pub async fn documents_to_index(&self, tenant: &TenantId, ids: &[DocumentId]) -> Result<Vec<DocumentToIndex>> {
        let mut docs: Vec<DocumentToIndex> = Vec::new();
        let mut at: HashMap<String, usize> = HashMap::new();
        for run in runs(ids) {
            let list = parameter_list(2, run.len());
            let sql = format!("SELECT id, title, embedder FROM documents WHERE tenant_id = $1 AND id IN ({list})");
            let mut q = sqlx::query(&sql).bind(tenant.as_str());
            for id in run {
                q = q.bind(id.as_str());
            }
            for row in q.fetch_all(&self.read).await? {
                let id: String = row.try_get("id")?;
                at.insert(id.clone(), docs.len());
                docs.push(DocumentToIndex {
                    id: DocumentId::from_trusted(id),
                    title: row.try_get("title")?,
                    embedder: row.try_get("embedder")?,
                    chunks: Vec::new(),
                });
            }
        }
        for doc in &mut docs {
            let rows = sqlx::query(
                "SELECT id, ordinal, heading, page, text, embedding FROM chunks \
                 WHERE document_id = $1 AND tenant_id = $2 ORDER BY ordinal",
            )
            .bind(doc.id.as_str())
            .bind(tenant.as_str())
            .fetch_all(&self.read)
            .await?;
            for r in rows {
                let embedding: Option<Vec<u8>> = r.try_get("embedding")?;
                doc.chunks.push(IndexedChunk {
                    id: ChunkId::from_trusted(r.try_get("id")?),
                    ordinal: r.try_get("ordinal")?,
                    heading: r.try_get("heading")?,
                    page: r.try_get("page")?,
                    text: r.try_get("text")?,
                    embedding: embedding.as_deref().map(decode_vector).transpose()?,
                });
            }
        }
        // In the order of `ids`, like the changes that named them.
        let order: HashMap<&str, usize> = ids.iter().enumerate().map(|(i, id)| (id.as_str(), i)).collect();
        docs.sort_by_key(|d| order.get(d.id.as_str()).copied().unwrap_or(usize::MAX));
        Ok(docs)
    }

    /// Stores the document's chunk vectors, made by `embedder`, one per chunk in ordinal order. With
    /// `announce` the document is also recorded as changed, so every node's index takes the new vectors (a
    /// re-embedding); without, the vectors only spare the next node the work (a node embedding what was
    /// stored without them, as every node would). `NotFound` if the document is gone.
    pub async fn set_document_vectors(
        &self,
        tenant: &TenantId,
        document: &DocumentId,
        embedder: &str,
        vectors: &[Vec<f32>],
        announce: bool,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        if announce {
            crate::tenants::lock_tenant_in(&mut tx, self.backend, tenant).await?;
        }
        let found = sqlx::query("UPDATE documents SET embedder = $1 WHERE id = $2 AND tenant_id = $3")
            .bind(embedder)
            .bind(document.as_str())
            .bind(tenant.as_str())
            .execute(&mut *tx)
            .await?;
        if found.rows_affected() != 1 {
            return Err(StoreError::NotFound);
        }
        let ids = sqlx::query("SELECT id FROM chunks WHERE document_id = $1 AND tenant_id = $2 ORDER BY ordinal")
            .bind(document.as_str())
            .bind(tenant.as_str())
            .fetch_all(&mut *tx)
            .await?;
        if ids.len() != vectors.len() {
            return Err(StoreError::Corrupt(format!("{} vectors for {} chunks", vectors.len(), ids.len())));
        }
        for (row, vector) in ids.iter().zip(vectors) {
            sqlx::query("UPDATE chunks SET embedding = $1 WHERE id = $2")
                .bind(encode_vector(vector))
                .bind(row.try_get::<String, _>("id")?)
                .execute(&mut *tx)
                .await?;
        }
        if announce {
            record_change_in(&mut tx, tenant, document, ChangeKind::Put).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The setting `name` as the cluster records it: `value` if no node recorded one before (this node is the
    /// first), else the one recorded.
    pub async fn claim_setting(&self, name: &str, value: &str) -> Result<String> {
        sqlx::query("INSERT INTO cluster_settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
            .bind(name)
            .bind(value)
            .execute(&self.write)
            .await?;
        let row =
            sqlx::query("SELECT value FROM cluster_settings WHERE name = $1").bind(name).fetch_one(&self.write).await?;
        Ok(row.try_get("value")?)
    }
}

impl Store {
    /// The shared rate limiter's step (a generic cell rate algorithm over all nodes): admits one request of
    /// `tenant` at `now_ns` when its theoretical arrival time is at most `tolerance_ns` ahead, moving it on
    /// by `interval_ns`, in one statement. `Ok(None)` admitted; `Ok(Some(wait_ns))` refused, and how long
    /// until a request would be admitted.
    pub async fn admit_rate(
        &self,
        tenant: &TenantId,
        now_ns: i64,
        interval_ns: i64,
        tolerance_ns: i64,
    ) -> Result<Option<i64>> {
        let admitted = sqlx::query(
            "INSERT INTO rate_limits (tenant_id, tat_ns) VALUES ($1, $2 + $3) \
             ON CONFLICT (tenant_id) DO UPDATE \
             SET tat_ns = (CASE WHEN rate_limits.tat_ns > $2 THEN rate_limits.tat_ns ELSE $2 END) + $3 \
             WHERE (CASE WHEN rate_limits.tat_ns > $2 THEN rate_limits.tat_ns ELSE $2 END) - $2 <= $4 \
             RETURNING tat_ns",
        )
        .bind(tenant.as_str())
        .bind(now_ns)
        .bind(interval_ns)
        .bind(tolerance_ns)
        .fetch_optional(&self.write)
        .await?;
        if admitted.is_some() {
            return Ok(None);
        }
        let row = sqlx::query("SELECT tat_ns FROM rate_limits WHERE tenant_id = $1")
            .bind(tenant.as_str())
            .fetch_optional(&self.read)
            .await?;
        let tat: i64 = row.map(|r| r.try_get("tat_ns")).transpose()?.unwrap_or(now_ns);
        Ok(Some((tat - now_ns - tolerance_ns).max(1)))
    }
}
