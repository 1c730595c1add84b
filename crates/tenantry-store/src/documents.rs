//! Document metadata and chunk text. The search index is derived from these rows; the row is the truth.
//! A document and its chunks are written, and removed, in one transaction together with their ledger events.

use std::collections::HashSet;

use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};
use tenantry_domain::{ChunkId, DocumentId, TenantId, TenantState, Timestamp};

use crate::changes::{encode_vector, record_change_in, ChangeKind};
use crate::files::{delete_file_in, write_file_in};
use crate::jobs::{enqueue_in, NewJob};
use crate::quota::{settle_in, Settlement};
use crate::tenants::lock_tenant_in;
use crate::usage::{parameter_list, runs, UsageEvent};
use crate::webhooks::{emit_in, NewEvent};
use crate::{Result, Store, StoreError};

#[derive(Clone, Debug)]
pub struct NewDocument {
    pub id: DocumentId,
    pub tenant_id: TenantId,
    pub title: String,
    pub content_type: String,
    /// The upload's size.
    pub bytes: i64,
    /// What the document counts against the storage quota: the upload and its extracted text.
    pub stored_bytes: i64,
    pub content_sha256: String,
    pub now: Timestamp,
    /// The embedder that made the chunks' vectors ('' when they have none).
    pub embedder: String,
    /// The job that embeds the document after the upload is answered, when its vectors are left for later:
    /// enqueued in the document's transaction, so no crash leaves a document that nothing will embed.
    pub embed_later: Option<NewJob>,
}

/// What `Store::insert_document` did.
#[derive(Clone, Debug)]
pub enum Inserted {
    /// The document was stored.
    New(DocumentRow),
    /// The tenant already had a document with these bytes; nothing was written.
    Existing(DocumentRow),
}

#[derive(Clone, Debug)]
pub struct NewChunk {
    pub id: ChunkId,
    pub ordinal: i64,
    pub heading: String,
    pub page: Option<i64>,
    pub text: String,
    /// The chunk's vectors by the document's embedder: one per window of its text, one after the other.
    pub embedding: Option<Vec<f32>>,
}

#[derive(Clone, Debug)]
pub struct DocumentRow {
    pub id: DocumentId,
    pub tenant_id: TenantId,
    pub title: String,
    pub content_type: String,
    pub bytes: i64,
    pub stored_bytes: i64,
    pub chunks: i64,
    pub content_sha256: String,
    pub created_at: Timestamp,
    /// The embedder that made the chunks' vectors ('' while they have none).
    pub embedder: String,
}

#[derive(Clone, Debug)]
pub struct ChunkRow {
    pub id: ChunkId,
    pub document_id: DocumentId,
    pub ordinal: i64,
    pub heading: String,
    pub page: Option<i64>,
    pub text: String,
}

const DOC_COLUMNS: &str =
    "id, tenant_id, title, content_type, bytes, stored_bytes, chunks, content_sha256, created_at, embedder";

fn document_from_row(row: &AnyRow) -> Result<DocumentRow> {
    Ok(DocumentRow {
        id: DocumentId::from_trusted(row.try_get("id")?),
        tenant_id: TenantId::from_trusted(row.try_get("tenant_id")?),
        title: row.try_get("title")?,
        content_type: row.try_get("content_type")?,
        bytes: row.try_get("bytes")?,
        stored_bytes: row.try_get("stored_bytes")?,
        chunks: row.try_get("chunks")?,
        content_sha256: row.try_get("content_sha256")?,
        created_at: Timestamp(row.try_get("created_at")?),
        embedder: row.try_get("embedder")?,
    })
}

async fn insert_chunks(tx: &mut Transaction<'_, Any>, doc: &NewDocument, chunks: &[NewChunk]) -> Result<()> {
    for c in chunks {
        sqlx::query(
            "INSERT INTO chunks (id, document_id, tenant_id, ordinal, heading, page, text, embedding) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(c.id.as_str())
        .bind(doc.id.as_str())
        .bind(doc.tenant_id.as_str())
        .bind(c.ordinal)
        .bind(&c.heading)
        .bind(c.page)
        .bind(&c.text)
        .bind(c.embedding.as_deref().map(encode_vector))
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// The tenant's (`$1`) first document with the content digest `$2`.
fn by_digest_sql() -> String {
    format!(
        "SELECT {DOC_COLUMNS} FROM documents WHERE tenant_id = $1 AND content_sha256 = $2 ORDER BY created_at LIMIT 1"
    )
}

impl Store {
    /// Stores a document, its chunks (with their vectors), its original bytes, its change record and its
    /// settlement in one transaction, unless the tenant already has a
    /// document with the same content: then nothing is written and that one is returned. The check is made
    /// inside the write transaction, after the tenant's uploads are serialised (SQLite's single writer; the
    /// tenant's row locked on PostgreSQL), so identical uploads racing each other store one document. A tenant
    /// erased meanwhile (or unknown) gets `TenantErased` and nothing is written.
    pub async fn insert_document(
        &self,
        doc: &NewDocument,
        chunks: &[NewChunk],
        original: &[u8],
        settlement: &Settlement,
        events: &[UsageEvent],
    ) -> Result<Inserted> {
        let mut guard = self.settlement_guard(settlement).await?;
        let mut tx = self.begin_write().await?;
        // An erasure either committed before, and the document is refused, or waits for this insert and
        // removes it.
        let state = lock_tenant_in(&mut tx, self.backend, &doc.tenant_id).await?;
        if state.is_none_or(|s| s == TenantState::Erased.as_str()) {
            tx.rollback().await?;
            return Err(StoreError::TenantErased);
        }
        let same = sqlx::query(&by_digest_sql())
            .bind(doc.tenant_id.as_str())
            .bind(&doc.content_sha256)
            .fetch_optional(&mut *tx)
            .await?;
        if let Some(row) = same {
            tx.rollback().await?;
            return Ok(Inserted::Existing(document_from_row(&row)?));
        }
        sqlx::query(
            "INSERT INTO documents \
             (id, tenant_id, title, content_type, bytes, stored_bytes, chunks, content_sha256, created_at, embedder) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(doc.id.as_str())
        .bind(doc.tenant_id.as_str())
        .bind(&doc.title)
        .bind(&doc.content_type)
        .bind(doc.bytes)
        .bind(doc.stored_bytes)
        .bind(chunks.len() as i64)
        .bind(&doc.content_sha256)
        .bind(doc.now.0)
        .bind(&doc.embedder)
        .execute(&mut *tx)
        .await?;
        insert_chunks(&mut tx, doc, chunks).await?;
        write_file_in(&mut tx, doc.id.as_str(), &doc.tenant_id, original).await?;
        record_change_in(&mut tx, &doc.tenant_id, &doc.id, ChangeKind::Put).await?;
        let applied = settle_in(&mut tx, settlement, events, self.ledger_writes()).await?;
        let indexed = NewEvent {
            tenant_id: &doc.tenant_id,
            kind: "document.indexed",
            data: serde_json::json!({
                "document_id": doc.id.as_str(),
                "title": doc.title,
                "content_type": doc.content_type,
                "bytes": doc.bytes,
                "chunks": chunks.len(),
            }),
            dedupe_key: None,
        };
        emit_in(&mut tx, &indexed, doc.now).await?;
        if let Some(job) = &doc.embed_later {
            enqueue_in(&mut tx, job, doc.now).await?;
        }
        tx.commit().await?;
        if applied {
            self.settled(&mut guard, settlement);
        }
        Ok(Inserted::New(DocumentRow {
            id: doc.id.clone(),
            tenant_id: doc.tenant_id.clone(),
            title: doc.title.clone(),
            content_type: doc.content_type.clone(),
            bytes: doc.bytes,
            stored_bytes: doc.stored_bytes,
            chunks: chunks.len() as i64,
            content_sha256: doc.content_sha256.clone(),
            created_at: doc.now,
            embedder: doc.embedder.clone(),
        }))
    }

    pub async fn documents(&self, tenant: &TenantId) -> Result<Vec<DocumentRow>> {
        let sql = format!("SELECT {DOC_COLUMNS} FROM documents WHERE tenant_id = $1 ORDER BY created_at, id");
        let rows = sqlx::query(&sql).bind(tenant.as_str()).fetch_all(&self.read).await?;
        rows.iter().map(document_from_row).collect()
    }

    /// The tenant's document with this content digest (SHA-256, hex), if it uploaded one.
    pub async fn document_by_digest(&self, tenant: &TenantId, sha256: &str) -> Result<Option<DocumentRow>> {
        let row = sqlx::query(&by_digest_sql()).bind(tenant.as_str()).bind(sha256).fetch_optional(&self.read).await?;
        row.as_ref().map(document_from_row).transpose()
    }

    /// The tenant's document `id`; another tenant's document is simply not found.
    pub async fn document(&self, tenant: &TenantId, id: &DocumentId) -> Result<Option<DocumentRow>> {
        let sql = format!("SELECT {DOC_COLUMNS} FROM documents WHERE id = $1 AND tenant_id = $2");
        let row = sqlx::query(&sql).bind(id.as_str()).bind(tenant.as_str()).fetch_optional(&self.read).await?;
        row.as_ref().map(document_from_row).transpose()
    }

    pub async fn chunks(&self, tenant: &TenantId, id: &DocumentId) -> Result<Vec<ChunkRow>> {
        let rows = sqlx::query(
            "SELECT id, document_id, ordinal, heading, page, text FROM chunks \
             WHERE document_id = $1 AND tenant_id = $2 ORDER BY ordinal",
        )
        .bind(id.as_str())
        .bind(tenant.as_str())
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ChunkRow {
                    id: ChunkId::from_trusted(r.try_get("id")?),
                    document_id: DocumentId::from_trusted(r.try_get("document_id")?),
                    ordinal: r.try_get("ordinal")?,
                    heading: r.try_get("heading")?,
                    page: r.try_get("page")?,
                    text: r.try_get("text")?,
                })
            })
            .collect()
    }

    /// Which of `ids` are live documents of `tenant`, in the order of `ids`. Search hits are checked against
    /// this, so an index entry whose row is gone (a crash between the two writes) is never shown. One query per
    /// run of ids (`usage::runs`: at most 64, in few statement shapes).
    pub async fn live_documents(&self, tenant: &TenantId, ids: &[DocumentId]) -> Result<Vec<DocumentId>> {
        let mut found: HashSet<String> = HashSet::with_capacity(ids.len());
        for run in runs(ids) {
            let list = parameter_list(2, run.len());
            let sql = format!("SELECT id FROM documents WHERE tenant_id = $1 AND id IN ({list})");
            let mut q = sqlx::query(&sql).bind(tenant.as_str());
            for id in run {
                q = q.bind(id.as_str());
            }
            for row in q.fetch_all(&self.read).await? {
                found.insert(row.try_get("id")?);
            }
        }
        Ok(ids.iter().filter(|id| found.contains(id.as_str())).cloned().collect())
    }

    /// Deletes the document, its chunks and its original, records the change and settles `events` (negative
    /// levels) in one transaction.
    pub async fn delete_document(
        &self,
        tenant: &TenantId,
        id: &DocumentId,
        settlement: &Settlement,
        events: &[UsageEvent],
    ) -> Result<()> {
        let mut guard = self.settlement_guard(settlement).await?;
        let mut tx = self.begin_write().await?;
        // The tenant's row first (the change number), as every writer of the tenant's documents takes it.
        record_change_in(&mut tx, tenant, id, ChangeKind::Delete).await?;
        sqlx::query("DELETE FROM chunks WHERE document_id = $1 AND tenant_id = $2")
            .bind(id.as_str())
            .bind(tenant.as_str())
            .execute(&mut *tx)
            .await?;
        let done = sqlx::query("DELETE FROM documents WHERE id = $1 AND tenant_id = $2")
            .bind(id.as_str())
            .bind(tenant.as_str())
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() != 1 {
            return Err(StoreError::NotFound);
        }
        delete_file_in(&mut tx, id.as_str()).await?;
        let applied = settle_in(&mut tx, settlement, events, self.ledger_writes()).await?;
        tx.commit().await?;
        if applied {
            self.settled(&mut guard, settlement);
        }
        Ok(())
    }
}
