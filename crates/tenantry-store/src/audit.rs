//! The audit trail: append-only, hash-chained (see `migrations/0004_audit.sql`). `append` links each entry to
//! the previous one inside one transaction; `verify_audit` recomputes the whole chain and names the first
//! entry that does not match.

use sha2::{Digest, Sha256};
use sqlx::Row;
use tenantry_domain::{TenantId, Timestamp};

use crate::{Result, Store};

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

impl Store {
    /// Appends an entry to the chain and returns it.
    pub async fn append_audit(&self, entry: &NewAuditEntry) -> Result<AuditEntry> {
        let mut tx = self.write.begin().await?;
        let head = sqlx::query("UPDATE audit_head SET seq = seq + 1 WHERE id = 1 RETURNING seq, hash")
            .fetch_one(&mut *tx)
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
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE audit_head SET hash = $1 WHERE id = 1").bind(&hash).execute(&mut *tx).await?;
        tx.commit().await?;
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

    /// Recomputes the chain from the first entry: every sequence number present, every link and hash right,
    /// and the head agreeing with the last entry. Returns the number of entries verified.
    pub async fn verify_audit(&self) -> Result<std::result::Result<i64, AuditBreak>> {
        const PAGE: i64 = 1_000;
        let (mut expected, mut prev) = (1_i64, GENESIS_HASH.to_owned());
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
        Ok(Ok(found))
    }
}
