//! `tenantry bench webhooks`: outbound webhook deliveries per second. Tenants with an endpoint each on a
//! receiver in this process; a burst of events recorded for them at once; the time until the receiver has
//! acknowledged every delivery, and each delivery's latency from its event being recorded to its arrival.
//! Embedded SQLite by default, or a fresh PostgreSQL database beside `--database-url`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::bench::InProcess;
use anyhow::{bail, Context};
use serde_json::{json, Value};
use tenantry_domain::{Config, TenantId};
use tenantry_store::NewEvent;

pub struct WebhookBench {
    pub tenants: usize,
    pub events: usize,
    pub receiver_ms: u64,
    pub database_url: String,
}

/// Arrival time of each event at the receiver, by its `data.document_id`.
type Arrivals = Arc<parking_lot::Mutex<HashMap<String, Instant>>>;

/// Opened by adding permits: while it has none, the receiver holds every request.
type Gate = Arc<tokio::sync::Semaphore>;

const OPEN: usize = 1 << 24;

async fn receiver(delay: Duration) -> anyhow::Result<(String, Arrivals, Gate)> {
    let arrivals: Arrivals = Arc::default();
    let gate: Gate = Arc::new(tokio::sync::Semaphore::new(OPEN));
    let (seen, held) = (arrivals.clone(), gate.clone());
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: axum::body::Bytes| {
            let (seen, held) = (seen.clone(), held.clone());
            async move {
                drop(held.acquire().await);
                tokio::time::sleep(delay).await;
                if let Ok(event) = serde_json::from_slice::<Value>(&body) {
                    if let Some(id) = event["data"]["document_id"].as_str() {
                        seen.lock().entry(id.to_owned()).or_insert_with(Instant::now);
                    }
                }
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((url, arrivals, gate))
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

pub async fn webhooks(opts: WebhookBench) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut config = Config::builtin();
    config.server.bind = "127.0.0.1:0".into();
    config.server.data_dir = dir.path().to_owned();
    config.webhooks.allow_private_addresses = true;
    let backend = if opts.database_url.is_empty() {
        "embedded SQLite"
    } else {
        config.database.url = tenantry_store::Store::create_test_database(&opts.database_url).await?;
        "PostgreSQL"
    };
    let service = InProcess::start(config).await?;
    let (base, services) = (service.base.clone(), service.services.clone());
    let (url, arrivals, gate) = receiver(Duration::from_millis(opts.receiver_ms)).await?;
    let client = reqwest::Client::new();
    let mut tenants = Vec::with_capacity(opts.tenants);
    for i in 0..opts.tenants {
        let body =
            json!({"email": format!("hooks{i}@bench.test"), "organization": format!("Hooks {i}"), "plan": "trial"});
        let signup: Value = client.post(format!("{base}/v1/signup")).json(&body).send().await?.json().await?;
        let key = signup["api_key"].as_str().context("api key")?.to_owned();
        let tenant = TenantId::parse(signup["tenant_id"].as_str().context("tenant id")?).context("tenant id")?;
        let hook = json!({"url": url, "events": ["document.indexed"]});
        let r = client.post(format!("{base}/v1/webhooks")).bearer_auth(&key).json(&hook).send().await?;
        if r.status() != reqwest::StatusCode::CREATED {
            bail!("webhook not created: {}", r.text().await?);
        }
        tenants.push(tenant);
    }
    println!(
        "tenantry bench webhooks: {} events over {} tenants, one endpoint each, receiver answers after {} ms; {backend}",
        opts.events, opts.tenants, opts.receiver_ms
    );
    // Live: events recorded one after another while the dispatcher delivers them.
    let live = record(&services, &tenants, 0, opts.events).await?;
    let (elapsed, latencies) = wait_for(&arrivals, &live, opts.events).await?;
    println!(
        "live:    {} events recorded at {:.0}/s and delivered in {:.2} s: {:.0} deliveries/s; latency from \
         recording p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        opts.events,
        opts.events as f64 / live.1.as_secs_f64(),
        elapsed.as_secs_f64(),
        opts.events as f64 / elapsed.as_secs_f64(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        percentile(&latencies, 1.0),
    );
    // Backlog: the receiver holds its requests while the events are recorded, then answers: how fast the
    // dispatcher drains what waits.
    let closed = gate.acquire_many(OPEN as u32).await?;
    let backlog = record(&services, &tenants, opts.events, opts.events).await?;
    let opened = Instant::now();
    drop(closed);
    let drained = HashMap::from_iter(backlog.0.keys().map(|id| (id.clone(), opened)));
    let (elapsed, _) = wait_for(&arrivals, &(drained, Duration::ZERO), 2 * opts.events).await?;
    println!(
        "backlog: {} waiting deliveries drained in {:.2} s: {:.0} deliveries/s",
        opts.events,
        elapsed.as_secs_f64(),
        opts.events as f64 / elapsed.as_secs_f64()
    );
    service.stop().await
}

/// Records `n` events, numbered from `first`, over the tenants: when each was recorded, and how long it took.
async fn record(
    services: &tenantry_service::Services,
    tenants: &[TenantId],
    first: usize,
    n: usize,
) -> anyhow::Result<(HashMap<String, Instant>, Duration)> {
    let started = Instant::now();
    let mut recorded = HashMap::with_capacity(n);
    for i in first..first + n {
        let event = NewEvent {
            tenant_id: &tenants[i % tenants.len()],
            kind: "document.indexed",
            data: json!({"document_id": format!("doc_bench_{i}"), "title": "Bench", "chunks": 1}),
            dedupe_key: Some(format!("bench:{i}")),
        };
        services.emit(&event).await.map_err(|e| anyhow::anyhow!(e.detail))?;
        recorded.insert(format!("doc_bench_{i}"), Instant::now());
    }
    Ok((recorded, started.elapsed()))
}

/// Waits until `total` events have arrived; the time from the first of `since` and each one's latency.
async fn wait_for(
    arrivals: &Arrivals,
    since: &(HashMap<String, Instant>, Duration),
    total: usize,
) -> anyhow::Result<(Duration, Vec<Duration>)> {
    let start = since.0.values().min().copied().unwrap_or_else(Instant::now);
    let deadline = Instant::now() + Duration::from_secs(600);
    while arrivals.lock().len() < total {
        if Instant::now() > deadline {
            bail!("only {} of {total} deliveries arrived in ten minutes", arrivals.lock().len());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let arrived = arrivals.lock().clone();
    let last = since.0.keys().filter_map(|id| arrived.get(id)).max().copied().unwrap_or(start);
    let mut latencies: Vec<Duration> =
        since.0.iter().filter_map(|(id, at)| Some(arrived.get(id)?.saturating_duration_since(*at))).collect();
    latencies.sort_unstable();
    Ok((last.saturating_duration_since(start), latencies))
}
