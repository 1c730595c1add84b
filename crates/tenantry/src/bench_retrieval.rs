//! `tenantry bench ingest` and `tenantry bench query`: ingestion throughput and question latency through the
//! service layer (what an HTTP handler calls, minus HTTP), on an embedded instance in a temporary directory.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use tenantry_domain::TenantContext;
use tenantry_service::documents::{Upload, Uploaded};
use tenantry_service::query::QueryRequest;
use tenantry_service::Services;

use crate::eval::{eval_config, scratch_tenant_named, set_mode};

fn file_index(files: &[PathBuf], file: &PathBuf) -> usize {
    files.iter().position(|f| f == file).unwrap_or(0)
}

pub struct IngestBench {
    pub files: Vec<PathBuf>,
    pub repeat: usize,
}

/// Uploads each file `repeat` times (each time into a fresh tenant, so nothing is a duplicate) and reports
/// bytes/s, pages/s for paginated formats, chunks and per-upload latency.
pub async fn ingest(opts: IngestBench) -> anyhow::Result<()> {
    let scratch = tempfile::tempdir()?;
    let services = Services::start(eval_config(scratch.path())).await?;
    println!(
        "{:<40} {:>9} {:>7} {:>7} {:>10} {:>10} {:>10}",
        "file", "bytes", "pages", "chunks", "ms/upload", "MB/s", "pages/s"
    );
    for file in &opts.files {
        let bytes = std::fs::read(file).with_context(|| file.display().to_string())?;
        let name = file.file_name().map(|n| n.to_string_lossy().into_owned());
        let mut total_ms = 0.0;
        let (mut chunks, mut pages) = (0, 0);
        for i in 0..opts.repeat.max(1) {
            let email = format!("ingest-{i}-{}@bench.invalid", file_index(&opts.files, file));
            let (_, ctx) = scratch_tenant_named(&services, &email, "basic").await?;
            let upload = Upload { title: None, file_name: name.clone(), content_type: None, bytes: bytes.clone() };
            let started = Instant::now();
            let view = match services
                .upload_document(&ctx, upload)
                .await
                .map_err(|e| anyhow::anyhow!("{}: {}", file.display(), e.detail))?
            {
                Uploaded::Created(v) | Uploaded::Duplicate(v) => v,
            };
            total_ms += started.elapsed().as_secs_f64() * 1000.0;
            chunks = view.chunks;
            let rows = services.store().chunks(&ctx.tenant_id, &view.document_id).await?;
            pages = rows.iter().filter_map(|c| c.page).max().unwrap_or(0);
        }
        let per = total_ms / opts.repeat.max(1) as f64;
        let mb_s = bytes.len() as f64 / 1e6 / (per / 1000.0);
        let pages_s = if pages > 0 { format!("{:.0}", pages as f64 / (per / 1000.0)) } else { "-".into() };
        println!(
            "{:<40} {:>9} {:>7} {:>7} {:>10.1} {:>10.2} {:>10}",
            name.unwrap_or_default(),
            bytes.len(),
            if pages > 0 { pages.to_string() } else { "-".into() },
            chunks,
            per,
            mb_s,
            pages_s
        );
    }
    services.shutdown().await;
    Ok(())
}

pub struct QueryBench {
    pub tenants: usize,
    pub queries: usize,
    pub modes: Vec<String>,
}

const DOCUMENT: &str = "Refunds are issued within 14 days of a request, to the original payment method. \
Shipping is free above 50 euros; orders ship from Berlin with DHL Express. Support answers within one business \
day; enterprise customers have a named account manager. Invoices are due within 30 days.";
const QUESTIONS: [&str; 4] = [
    "How long do refunds take?",
    "Which carrier ships orders?",
    "When are invoices due?",
    "How fast does support answer?",
];

/// `tenants` tenants, each with one document; then `queries` questions per mode, each from a tenant picked
/// round-robin (so with many tenants, most questions open a namespace that is not the last one used), through
/// the full query path: gateway context, quota reservation, retrieval in the mode, the offline model,
/// settlement. Reports p50/p99 per mode.
pub async fn query(opts: QueryBench) -> anyhow::Result<()> {
    let scratch = tempfile::tempdir()?;
    let services = Services::start(eval_config(scratch.path())).await?;
    let started = Instant::now();
    let mut keys: Vec<String> = Vec::with_capacity(opts.tenants);
    for i in 0..opts.tenants.max(1) {
        let email = format!("query-{i}@bench.invalid");
        let (key, ctx) = scratch_tenant_named(&services, &email, "basic").await?;
        let upload = Upload {
            title: Some(format!("Policy {i}")),
            file_name: None,
            content_type: Some("text/plain".into()),
            bytes: format!("{DOCUMENT} Tenant number {i}.").into_bytes(),
        };
        services.upload_document(&ctx, upload).await.map_err(|e| anyhow::anyhow!("upload: {}", e.detail))?;
        keys.push(key);
    }
    println!("{} tenants seeded in {:.1} s", keys.len(), started.elapsed().as_secs_f64());
    println!("{:<10} {:>8} {:>10} {:>10} {:>10}", "mode", "queries", "p50 ms", "p99 ms", "max ms");
    for mode in &opts.modes {
        let mut contexts: Vec<TenantContext> = Vec::with_capacity(keys.len());
        for key in &keys {
            contexts.push(set_mode(&services, key, mode).await?);
        }
        let mut latencies = Vec::with_capacity(opts.queries);
        for q in 0..opts.queries {
            let ctx = &contexts[q % contexts.len()];
            let request = QueryRequest::new(QUESTIONS[q % QUESTIONS.len()]);
            let t = Instant::now();
            services.query(ctx, &request).await.map_err(|e| anyhow::anyhow!("query: {}", e.detail))?;
            latencies.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        latencies.sort_by(f64::total_cmp);
        let at = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
        println!("{:<10} {:>8} {:>10.2} {:>10.2} {:>10.2}", mode, latencies.len(), at(0.50), at(0.99), at(1.0));
    }
    services.shutdown().await;
    Ok(())
}
