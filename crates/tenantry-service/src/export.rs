//! Data export (`POST /v1/export`): one gzipped tar archive of everything Tenantry holds about the tenant,
//! with a manifest listing every file's size and SHA-256. Layout (format `tenantry-export/1`):
//!
//! ```text
//! manifest.json                  export id, tenant, time, counts, and every file with bytes and sha256
//! tenant.json                    profile, plan, state and configuration
//! api_keys.json                  key metadata: id, name, scopes, times (never secrets or their hashes)
//! documents.json                 one entry per document
//! documents/<id>/original        the uploaded bytes
//! documents/<id>/chunks.jsonl    the extracted text as indexed: chunk id, ordinal, heading, page, text
//! usage.jsonl                    the usage ledger
//! audit.jsonl                    the tenant's audit trail entries
//! invoices.json                  invoices with their lines
//! lifecycle.jsonl                lifecycle transitions and activation milestones, with times
//! notifications.jsonl            every notification sent or queued: template, recipient, subject, body
//! ```
//!
//! The archive is built by a job and stored in the database with the export marked `ready` in one
//! transaction (so any node serves the download, and erasure removes it with the tenant's rows); another job
//! deletes it after `limits.export_ttl_hours`. A tenant has
//! at most one export pending (asking again answers that one) and makes at most `limits.exports_per_day`.

use serde::Serialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tenantry_domain::ErrorCode;
use tenantry_domain::{ExportStatus, TenantContext, TenantId, Timestamp};
use tenantry_store::{ExportRow, ExportStart};
use utoipa::ToSchema;

use crate::audit::Actor;
use crate::jobs::Job;
use crate::{ServiceError, ServiceResult, Services};

pub const FORMAT: &str = "tenantry-export/1";

#[derive(Debug, Serialize, ToSchema)]
pub struct ExportStarted {
    pub export_id: String,
    /// `pending` while the archive is built; then `GET /v1/export/{id}` downloads it.
    pub status: ExportStatus,
    pub expires_at: String,
}

impl From<ExportRow> for ExportStarted {
    fn from(row: ExportRow) -> Self {
        Self { export_id: row.id, status: row.status, expires_at: row.expires_at.to_rfc3339() }
    }
}

/// What `GET /v1/export/{id}` answers: the status while pending, then the archive.
pub enum ExportDownload {
    Pending(ExportStarted),
    Ready(ExportRow, Vec<u8>),
}

/// One file of the archive, as listed in the manifest.
struct Entry {
    path: String,
    bytes: Vec<u8>,
}

impl Services {
    /// Records the export as `pending` with the job that builds it (one transaction); the archive is made in
    /// the background and `GET /v1/export/{id}` serves it once `ready`. While one is pending, asking again
    /// answers that one; past the day's allowance, 429 until the oldest of the day's exports is a day old.
    pub async fn start_export(&self, ctx: &TenantContext) -> ServiceResult<ExportStarted> {
        let id = tenantry_domain::ExportId::generate().as_str().to_owned();
        let now = self.clock().now();
        let limits = &self.config().limits;
        let ttl_secs = i64::try_from(limits.export_ttl_hours.saturating_mul(3_600)).unwrap_or(i64::MAX);
        let expires_at = now.plus_seconds(ttl_secs);
        let row = ExportRow {
            id: id.clone(),
            tenant_id: ctx.tenant_id.to_string(),
            status: ExportStatus::Pending,
            created_at: now,
            expires_at,
            bytes: 0,
            sha256: String::new(),
        };
        let build = Job::Export { tenant_id: ctx.tenant_id.clone(), export_id: id.clone() }.at(now);
        let expire = Job::ExpireExport { tenant_id: ctx.tenant_id.clone(), export_id: id.clone() }.at(expires_at);
        match self.store().start_export(&row, &[build, expire], limits.exports_per_day).await? {
            ExportStart::Started => {}
            ExportStart::Pending(pending) => return Ok(pending.into()),
            ExportStart::DailyLimit { oldest } => {
                let wait = (oldest.plus_seconds(86_400).0 - now.0 + 999).max(1_000) / 1_000;
                return Err(ServiceError::new(
                    ErrorCode::RateLimited,
                    format!("at most {} exports a day; the next can be made in {wait} s", limits.exports_per_day),
                )
                .retry_after(wait.unsigned_abs()));
            }
        }
        self.wake_jobs();
        let request_id = ctx.request_id.to_string();
        self.audit(Actor::Tenant(ctx), Some(&ctx.tenant_id), "tenant.export_requested", &id, json!({}), &request_id)
            .await;
        Ok(row.into())
    }

    /// The `Export` job: collects everything, writes the archive whole (temp file, then rename) and marks the
    /// export `ready`. Running it again rewrites the same archive.
    pub(crate) async fn build_export(&self, tenant_id: &TenantId, id: &str) -> ServiceResult<()> {
        let Some(row) = self.store().export_by_id(id).await? else { return Ok(()) };
        if row.status != ExportStatus::Pending {
            return Ok(());
        }
        let entries = self.collect_export(tenant_id).await?;
        let manifest_head = json!({
            "format": FORMAT,
            "export_id": id,
            "tenant_id": tenant_id.as_str(),
            "created_at": row.created_at.to_rfc3339(),
        });
        let archive = tokio::task::spawn_blocking(move || build_archive(manifest_head, entries))
            .await?
            .map_err(ServiceError::internal)?;
        let sha256 = hex::encode(Sha256::digest(&archive));
        self.store().set_export_ready(tenant_id, id, &archive, &sha256, self.clock().now()).await?;
        let detail = json!({"bytes": archive.len(), "sha256": sha256});
        self.audit(Actor::System, Some(tenant_id), "tenant.exported", id, detail, "").await;
        Ok(())
    }

    /// The `ExpireExport` job: the archive is deleted when its time is up.
    pub(crate) async fn expire_export(&self, id: &str) -> ServiceResult<()> {
        let Some(row) = self.store().export_by_id(id).await? else { return Ok(()) };
        if row.status == ExportStatus::Expired {
            return Ok(());
        }
        self.store().set_export_expired(id).await?;
        Ok(())
    }

    /// One of the tenant's exports: still being built, or its archive while it has not expired.
    pub async fn export_archive(&self, ctx: &TenantContext, id: &str) -> ServiceResult<ExportDownload> {
        let row = self.store().export(&ctx.tenant_id, id).await?.ok_or_else(|| ServiceError::not_found("export"))?;
        if row.status == ExportStatus::Pending {
            return Ok(ExportDownload::Pending(row.into()));
        }
        if row.status == ExportStatus::Expired || self.clock().now() >= row.expires_at {
            return Err(ServiceError::not_found("export (it has expired)"));
        }
        let bytes =
            self.store().file(&ctx.tenant_id, &row.id).await?.ok_or_else(|| ServiceError::not_found("export"))?;
        Ok(ExportDownload::Ready(row, bytes))
    }

    async fn collect_export(&self, tenant: &TenantId) -> ServiceResult<Vec<Entry>> {
        let store = self.store();
        let json_entry = |path: &str, value: &Value| Entry { path: path.into(), bytes: pretty(value) };
        let jsonl_entry = |path: &str, rows: Vec<Value>| Entry {
            path: path.into(),
            bytes: rows.iter().map(|r| format!("{r}\n")).collect::<String>().into_bytes(),
        };

        let mut entries = Vec::new();
        let row = store.tenant(tenant).await?.ok_or_else(|| ServiceError::not_found("tenant"))?;
        let profile = serde_json::to_value(crate::tenants::view(row)).map_err(ServiceError::internal)?;
        entries.push(json_entry("tenant.json", &profile));

        let keys: Vec<Value> = store
            .keys(tenant)
            .await?
            .into_iter()
            .map(|k| {
                json!({
                    "key_id": k.id.as_str(),
                    "name": k.name,
                    "scopes": k.scopes.split_whitespace().collect::<Vec<_>>(),
                    "created_at": k.created_at.to_rfc3339(),
                    "last_used_at": k.last_used_at.map(Timestamp::to_rfc3339),
                    "revoked_at": k.revoked_at.map(Timestamp::to_rfc3339),
                })
            })
            .collect();
        entries.push(json_entry("api_keys.json", &Value::Array(keys)));

        let mut documents = Vec::new();
        for d in store.documents(tenant).await? {
            let original = store
                .file(tenant, d.id.as_str())
                .await?
                .ok_or_else(|| ServiceError::internal(format!("the original of document {} is not stored", d.id)))?;
            let chunks: Vec<Value> = store
                .chunks(tenant, &d.id)
                .await?
                .into_iter()
                .map(|c| json!({"chunk_id": c.id.to_string(), "ordinal": c.ordinal, "heading": c.heading, "page": c.page, "text": c.text}))
                .collect();
            let dir = format!("documents/{}", d.id.as_str());
            documents.push(json!({
                "document_id": d.id.as_str(),
                "title": d.title,
                "content_type": d.content_type,
                "bytes": d.bytes,
                "chunks": d.chunks,
                "sha256": d.content_sha256,
                "created_at": d.created_at.to_rfc3339(),
                "original": format!("{dir}/original"),
                "chunks_file": format!("{dir}/chunks.jsonl"),
            }));
            entries.push(Entry { path: format!("{dir}/original"), bytes: original });
            entries.push(jsonl_entry(&format!("{dir}/chunks.jsonl"), chunks));
        }
        entries.push(json_entry("documents.json", &Value::Array(documents)));

        let usage: Vec<Value> = store
            .usage_events(tenant)
            .await?
            .into_iter()
            .map(|e| {
                json!({
                    "event_id": e.event_id,
                    "request_id": e.request_id,
                    "meter": e.meter.as_str(),
                    "model": e.model,
                    "quantity": e.quantity,
                    "cost_micros": e.cost_micros,
                    "at": e.at.to_rfc3339(),
                })
            })
            .collect();
        entries.push(jsonl_entry("usage.jsonl", usage));

        let audit: Vec<Value> = store
            .audit_entries(Some(tenant), 0, i64::MAX)
            .await?
            .into_iter()
            .map(|e| serde_json::to_value(e).unwrap_or(Value::Null))
            .collect();
        entries.push(jsonl_entry("audit.jsonl", audit));
        let invoices = serde_json::to_value(
            store.invoices(tenant).await?.into_iter().map(crate::billing::view).collect::<Vec<_>>(),
        )
        .map_err(ServiceError::internal)?;
        entries.push(json_entry("invoices.json", &invoices));

        let lifecycle: Vec<Value> = store
            .tenant_events(tenant)
            .await?
            .into_iter()
            .map(|e| json!({"event": e.event, "from": e.from_state, "to": e.to_state, "at": e.at.to_rfc3339()}))
            .collect();
        entries.push(jsonl_entry("lifecycle.jsonl", lifecycle));
        let notifications: Vec<Value> = store
            .notifications(tenant)
            .await?
            .into_iter()
            .map(|n| {
                json!({
                    "notification_id": n.id,
                    "template": n.template,
                    "recipient": n.recipient,
                    "subject": n.subject,
                    "body": n.body,
                    "created_at": n.created_at.to_rfc3339(),
                    "delivered_at": n.delivered_at.map(Timestamp::to_rfc3339),
                })
            })
            .collect();
        entries.push(jsonl_entry("notifications.jsonl", notifications));
        Ok(entries)
    }
}

fn pretty(value: &Value) -> Vec<u8> {
    serde_json::to_vec_pretty(value).unwrap_or_default()
}

/// The archive: a gzipped tar of the manifest (listing every file with its size and digest) and the files.
fn build_archive(mut manifest: Value, entries: Vec<Entry>) -> std::io::Result<Vec<u8>> {
    let files: Vec<Value> = entries
        .iter()
        .map(|e| json!({"path": e.path, "bytes": e.bytes.len(), "sha256": hex::encode(Sha256::digest(&e.bytes))}))
        .collect();
    manifest["files"] = Value::Array(files);
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    let mut append = |name: &str, bytes: &[u8]| -> std::io::Result<()> {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_cksum();
        tar.append_data(&mut header, name, bytes)
    };
    append("manifest.json", &pretty(&manifest))?;
    for e in &entries {
        append(&e.path, &e.bytes)?;
    }
    tar.into_inner()?.finish()
}
