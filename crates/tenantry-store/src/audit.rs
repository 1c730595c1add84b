//! The audit trail: append-only, hash-chained (see `migrations/0004_audit.sql`). `append` links each entry to
//! the previous one inside one transaction; `verify_audit` recomputes the whole chain and names the first
//! entry that does not match.

use sha2::{Digest, Sha256};
use sqlx::{Any, Row, Transaction};
use tenantry_domain::{TenantId, Timestamp};

use crate::{Result, Store, StoreError};

pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What happened, by whom, to what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewAuditEntry {
    pub at: Timestamp,
    /// The tenant concerned, if any.
    pub tenant_id: Option<TenantId>,
    /// `tenant:<key id>`, `operator` or `system`.
    pub actor: String,
    /// Dotted verb, e.g. `key.created`, `tenant.suspended`.
    pub action: String,
    pub target: String,
    /// Compact JSON with the particulars (never secrets).
    pub detail: String,
    pub request_id: String,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct AuditEntry {
    pub seq: i64,
    pub at: Timestamp,
    pub tenant_id: Option<String>,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub detail: String,
    pub request_id: String,
    pub prev_hash: String,
    pub hash: String,
}

/// The first place the chain does not hold.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuditBreak {
    #[error("entry {expected} is missing (found {found} next)")]
    Gap { expected: i64, found: i64 },
    #[error("entry {0} does not link to the entry before it")]
    Link(i64),
    #[error("entry {0} was altered: its hash does not match its contents")]
    Altered(i64),
    #[error("the newest entries were removed: the head records {head} entries, the log holds {found}")]
    Truncated { head: i64, found: i64 },
    #[error("the chain's anchor (entry {0}) does not match the audit.pruned entry that records it")]
    Anchor(i64),
}

/// What one pruning removed: entries up to `through_seq`, the last of which hashed to `anchor_hash`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct AuditPruned {
    pub through_seq: i64,
    pub anchor_hash: String,
    pub entries: u64,
}

/// The hash of an entry: SHA-256 over its length-prefixed fields and the previous hash, hex.
pub fn entry_hash(seq: i64, e: &NewAuditEntry, prev_hash: &str) -> String {
    let mut h = Sha256::new();
    let tenant = e.tenant_id.as_ref().map(|t| t.as_str()).unwrap_or("");
    let seq_text = seq.to_string();
    let at_text = e.at.0.to_string();
    for field in [
        seq_text.as_str(),
        at_text.as_str(),
        tenant,
        &e.actor,
        &e.action,
        &e.target,
        &e.detail,
        &e.request_id,
        prev_hash,
    ] {
        h.update((field.len() as u64).to_le_bytes());
        h.update(field.as_bytes());
    }
    hex::encode(h.finalize())
}

/// Appends `entry` to the chain inside `tx` and returns it (appends serialise on the head row).
pub(crate) async fn append_audit_in(tx: &mut Transaction<'static, Any>, entry: &NewAuditEntry) -> Result<AuditEntry> {
    let head = sqlx::query("UPDATE audit_head SET seq = seq + 1 WHERE id = 1 RETURNING seq, hash")
        .fetch_one(&mut **tx)
        .await?;
    let seq: i64 = head.try_get("seq")?;
    let prev_hash: String = head.try_get("hash")?;
    let hash = entry_hash(seq, entry, &prev_hash);
    sqlx::query(
        "INSERT INTO audit_log (seq, at, tenant_id, actor, action, target, detail, request_id, prev_hash, hash) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(seq)
    .bind(entry.at.0)
    .bind(entry.tenant_id.as_ref().map(|t| t.as_str().to_owned()))
    .bind(&entry.actor)
    .bind(&entry.action)
    .bind(&entry.target)
    .bind(&entry.detail)
    .bind(&entry.request_id)
    .bind(&prev_hash)
    .bind(&hash)
    .execute(&mut **tx)
    .await?;
    sqlx::query("UPDATE audit_head SET hash = $1 WHERE id = 1").bind(&hash).execute(&mut **tx).await?;
    Ok(AuditEntry {
        seq,
        at: entry.at,
        tenant_id: entry.tenant_id.as_ref().map(|t| t.as_str().to_owned()),
        actor: entry.actor.clone(),
        action: entry.action.clone(),
        target: entry.target.clone(),
        detail: entry.detail.clone(),
        request_id: entry.request_id.clone(),
        prev_hash,
        hash,
    })
}

impl Store {
    /// Appends an entry to the chain and returns it.
    pub async fn append_audit(&self, entry: &NewAuditEntry) -> Result<AuditEntry> {
        let mut tx = self.begin_write().await?;
        let appended = append_audit_in(&mut tx, entry).await?;
        tx.commit().await?;
        Ok(appended)
    }

    /// When each entry of `action` in `[from, to)` was made, and its detail (entries pruned by retention are
    /// gone).
    pub async fn audit_details(
        &self,
        action: &str,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<(Timestamp, String)>> {
        let rows = sqlx::query("SELECT at, detail FROM audit_log WHERE action = $1 AND at >= $2 AND at < $3")
            .bind(action)
            .bind(from.0)
            .bind(to.0)
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(|r| Ok((Timestamp(r.try_get("at")?), r.try_get("detail")?))).collect()
    }

    /// Entries, oldest first, optionally of one tenant, after `after_seq`, at most `limit`.
    pub async fn audit_entries(
        &self,
        tenant: Option<&TenantId>,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<AuditEntry>> {
        let rows = match tenant {
            Some(t) => {
                sqlx::query(
                    "SELECT seq, at, tenant_id, actor, action, target, detail, request_id, prev_hash, hash \
                     FROM audit_log WHERE tenant_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
                )
                .bind(t.as_str())
                .bind(after_seq)
                .bind(limit)
                .fetch_all(&self.read)
                .await?
            }
            None => {
                sqlx::query(
                    "SELECT seq, at, tenant_id, actor, action, target, detail, request_id, prev_hash, hash \
                     FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2",
                )
                .bind(after_seq)
                .bind(limit)
                .fetch_all(&self.read)
                .await?
            }
        };
        rows.iter()
            .map(|r| {
                Ok(AuditEntry {
                    seq: r.try_get("seq")?,
                    at: Timestamp(r.try_get("at")?),
                    tenant_id: r.try_get("tenant_id")?,
                    actor: r.try_get("actor")?,
                    action: r.try_get("action")?,
                    target: r.try_get("target")?,
                    detail: r.try_get("detail")?,
                    request_id: r.try_get("request_id")?,
                    prev_hash: r.try_get("prev_hash")?,
                    hash: r.try_get("hash")?,
                })
            })
            .collect()
    }

    /// Removes entries older than `cutoff` (retention), moves the chain's anchor to the last one removed,
    /// and appends an `audit.pruned` entry recording the anchor, in one transaction; `None` when no entry
    /// is that old.
    pub async fn prune_audit(&self, cutoff: Timestamp, now: Timestamp) -> Result<Option<AuditPruned>> {
        let mut tx = self.begin_write().await?;
        let last = sqlx::query("SELECT seq, hash FROM audit_log WHERE at < $1 ORDER BY seq DESC LIMIT 1")
            .bind(cutoff.0)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(last) = last else {
            tx.rollback().await?;
            return Ok(None);
        };
        let (through_seq, anchor_hash): (i64, String) = (last.try_get("seq")?, last.try_get("hash")?);
        let entries = sqlx::query("DELETE FROM audit_log WHERE seq <= $1")
            .bind(through_seq)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query("UPDATE audit_anchor SET seq = $1, hash = $2 WHERE id = 1")
            .bind(through_seq)
            .bind(&anchor_hash)
            .execute(&mut *tx)
            .await?;
        let pruned = AuditPruned { through_seq, anchor_hash, entries };
        let record = NewAuditEntry {
            at: now,
            tenant_id: None,
            actor: "system".into(),
            action: "audit.pruned".into(),
            target: format!("audit:{through_seq}"),
            detail: serde_json::to_string(&pruned).map_err(|e| StoreError::Corrupt(e.to_string()))?,
            request_id: String::new(),
        };
        append_audit_in(&mut tx, &record).await?;
        tx.commit().await?;
        Ok(Some(pruned))
    }

    /// Recomputes the chain from its anchor (the genesis hash until retention removes entries): every
    /// sequence number present, every link and hash right, the head agreeing with the last entry, and the
    /// anchor agreeing with the `audit.pruned` entry that moved it. Returns the number of entries verified.
    pub async fn verify_audit(&self) -> Result<std::result::Result<i64, AuditBreak>> {
        const PAGE: i64 = 1_000;
        let anchor = sqlx::query("SELECT seq, hash FROM audit_anchor WHERE id = 1").fetch_one(&self.read).await?;
        let (anchor_seq, anchor_hash): (i64, String) = (anchor.try_get("seq")?, anchor.try_get("hash")?);
        if anchor_seq > 0 && !self.anchor_recorded(anchor_seq, &anchor_hash).await? {
            return Ok(Err(AuditBreak::Anchor(anchor_seq)));
        }
        let (mut expected, mut prev) = (anchor_seq + 1, anchor_hash);
        loop {
            let page = self.audit_entries(None, expected - 1, PAGE).await?;
            for e in &page {
                if e.seq != expected {
                    return Ok(Err(AuditBreak::Gap { expected, found: e.seq }));
                }
                if e.prev_hash != prev {
                    return Ok(Err(AuditBreak::Link(e.seq)));
                }
                let fields = NewAuditEntry {
                    at: e.at,
                    tenant_id: e.tenant_id.clone().map(TenantId::from_trusted),
                    actor: e.actor.clone(),
                    action: e.action.clone(),
                    target: e.target.clone(),
                    detail: e.detail.clone(),
                    request_id: e.request_id.clone(),
                };
                if entry_hash(e.seq, &fields, &prev) != e.hash {
                    return Ok(Err(AuditBreak::Altered(e.seq)));
                }
                prev = e.hash.clone();
                expected += 1;
            }
            if (page.len() as i64) < PAGE {
                break;
            }
        }
        let head = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1").fetch_one(&self.read).await?;
        let (head_seq, head_hash): (i64, String) = (head.try_get("seq")?, head.try_get("hash")?);
        let found = expected - 1;
        if head_seq != found {
            return Ok(Err(AuditBreak::Truncated { head: head_seq, found }));
        }
        if head_hash != prev {
            return Ok(Err(AuditBreak::Link(found)));
        }
        Ok(Ok(found - anchor_seq))
    }

    /// Whether the newest `audit.pruned` entry records this anchor.
    async fn anchor_recorded(&self, seq: i64, hash: &str) -> Result<bool> {
        let row = sqlx::query("SELECT detail FROM audit_log WHERE action = 'audit.pruned' ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&self.read)
            .await?;
        let Some(row) = row else { return Ok(false) };
        let detail: serde_json::Value = serde_json::from_str(&row.try_get::<String, _>("detail")?).unwrap_or_default();
        Ok(detail["through_seq"].as_i64() == Some(seq) && detail["anchor_hash"].as_str() == Some(hash))
    }
}
