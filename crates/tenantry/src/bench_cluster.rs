//! `tenantry bench cluster`: several `tenantry serve` processes (this binary) on one fresh PostgreSQL
//! database, against the embedded store, all on this machine. For each setup: upload throughput with
//! concurrent clients spread round robin over the nodes, and meanwhile how long until a document acknowledged
//! by one node is cited through another (the cross-node visibility lag); then question throughput and
//! latency. Then the warm-up of a node started with an empty data directory beside a database of many
//! tenants, and what PostgreSQL stores per 1,000 chunks.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};
use tokio::sync::Mutex;

use crate::bench::percentile_ms;

pub struct ClusterBench {
    /// An administrative PostgreSQL URL; each setup gets a database of its own beside it.
    pub database_url: String,
    pub nodes: Vec<usize>,
    pub seconds: u64,
    pub clients: usize,
    pub warm_tenants: usize,
    pub warm_documents: usize,
}

const PEPPER: &str = "bench-cluster-pepper-0123456789abcdef0123456789";
const TENANTS: usize = 10;

fn config(database_url: &str) -> String {
    format!(
        r#"
[database]
url = "{database_url}"

[gateway]
rate_limiter = "{limiter}"

[[plans]]
name = "bench"
models = ["local-small"]
default_model = "local-small"
retrieval_modes = ["basic", "advanced"]
default_retrieval_mode = "advanced"
[plans.quotas]
queries = 1000000000
tokens = 1000000000000
documents = 1000000
storage_bytes = 1000000000000
requests_per_minute = 100000000
"#,
        limiter = if database_url.is_empty() { "local" } else { "shared" }
    )
}

struct Node {
    base: String,
    child: Child,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_node(dir: &Path, name: &str) -> anyhow::Result<Node> {
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let log = std::fs::File::create(dir.join(format!("{name}.log")))?;
    let child = Command::new(std::env::current_exe()?)
        .args(["serve", "--config"])
        .arg(dir.join("tenantry.toml"))
        .arg("--data-dir")
        .arg(dir.join(format!("data-{name}")))
        .args(["--bind", &format!("127.0.0.1:{port}")])
        .env("TENANTRY_KEY_PEPPER", PEPPER)
        .env("RUST_LOG", "info,sqlx=warn,tantivy=warn")
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()?;
    Ok(Node { base: format!("http://127.0.0.1:{port}"), child })
}

async fn wait_ready(client: &reqwest::Client, node: &Node) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        if client.get(format!("{}/readyz", node.base)).send().await.is_ok_and(|r| r.status() == 200) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("node {} did not become ready", node.base)
}

async fn signup(client: &reqwest::Client, base: &str, i: usize) -> anyhow::Result<String> {
    let body =
        json!({"email": format!("bench{i}@cluster.test"), "organization": format!("Bench {i}"), "plan": "bench"});
    let r: Value = client.post(format!("{base}/v1/signup")).json(&body).send().await?.json().await?;
    Ok(r["api_key"].as_str().context("api key")?.to_owned())
}

/// A document of about 2 KB whose marker word no other document has.
fn document(marker: &str) -> Vec<u8> {
    let mut text = format!("# Bench note {marker}\n\nThe {marker} procedure is described here.\n\n");
    while text.len() < 2_000 {
        text.push_str("Tenants upload notes that are chunked, embedded and indexed before questions cite them. ");
    }
    text.into_bytes()
}

async fn upload(client: &reqwest::Client, base: &str, key: &str, marker: &str) -> anyhow::Result<String> {
    let part = reqwest::multipart::Part::bytes(document(marker)).file_name(format!("{marker}.md"));
    let form = reqwest::multipart::Form::new().part("file", part.mime_str("text/markdown")?);
    let r = client.post(format!("{base}/v1/documents")).bearer_auth(key).multipart(form).send().await?;
    if r.status() != 201 {
        bail!("upload: {}", r.status());
    }
    let body: Value = r.json().await?;
    Ok(body["document_id"].as_str().context("document id")?.to_owned())
}

async fn cites(client: &reqwest::Client, base: &str, key: &str, question: &str, document: &str) -> bool {
    let Ok(r) =
        client.post(format!("{base}/v1/query")).bearer_auth(key).json(&json!({"question": question})).send().await
    else {
        return false;
    };
    let Ok(body) = r.json::<Value>().await else { return false };
    body["citations"].as_array().is_some_and(|c| c.iter().any(|c| c["document_id"] == document))
}

struct SetupResult {
    name: String,
    uploads_per_s: f64,
    upload_p50_ms: f64,
    upload_p99_ms: f64,
    lag_p50_ms: f64,
    lag_p99_ms: f64,
    lag_samples: usize,
    queries_per_s: f64,
    query_p50_ms: f64,
    query_p99_ms: f64,
}

async fn run_setup(opts: &ClusterBench, nodes: usize, database: &str, name: String) -> anyhow::Result<SetupResult> {
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("tenantry.toml"), config(database))?;
    let client = reqwest::Client::builder().timeout(Duration::from_secs(60)).build()?;
    let mut running = Vec::new();
    for i in 0..nodes {
        let node = start_node(dir.path(), &format!("n{i}"))?;
        wait_ready(&client, &node).await?;
        running.push(node);
    }
    let bases: Arc<Vec<String>> = Arc::new(running.iter().map(|n| n.base.clone()).collect());
    let mut keys = Vec::new();
    for i in 0..TENANTS {
        keys.push(signup(&client, &bases[0], i).await?);
    }
    let keys = Arc::new(keys);

    // Uploads, round robin over nodes and tenants; every 5th acknowledged one is looked for through the next
    // node until cited.
    let deadline = Instant::now() + Duration::from_secs(opts.seconds);
    let upload_latencies = Arc::new(Mutex::new(Vec::new()));
    let lags = Arc::new(Mutex::new(Vec::new()));
    let mut workers = Vec::new();
    for w in 0..opts.clients {
        let (client, bases, keys, latencies, lags) =
            (client.clone(), bases.clone(), keys.clone(), upload_latencies.clone(), lags.clone());
        workers.push(tokio::spawn(async move {
            let mut n = 0usize;
            let mut checks = Vec::new();
            while Instant::now() < deadline {
                let (node, tenant) = ((w + n) % bases.len(), (w * 7 + n) % keys.len());
                let marker = format!("zq{w}x{n}v");
                let started = Instant::now();
                if let Ok(id) = upload(&client, &bases[node], &keys[tenant], &marker).await {
                    let acked = Instant::now();
                    latencies.lock().await.push(acked - started);
                    if bases.len() > 1 && n % 5 == 0 {
                        let (client, other, key, lags) = (
                            client.clone(),
                            bases[(node + 1) % bases.len()].clone(),
                            keys[tenant].clone(),
                            lags.clone(),
                        );
                        checks.push(tokio::spawn(async move {
                            while acked.elapsed() < Duration::from_secs(30) {
                                if cites(&client, &other, &key, &format!("{marker} procedure"), &id).await {
                                    lags.lock().await.push(acked.elapsed());
                                    return;
                                }
                                tokio::time::sleep(Duration::from_millis(10)).await;
                            }
                        }));
                    }
                }
                n += 1;
            }
            for c in checks {
                let _ = c.await;
            }
        }));
    }
    for w in workers {
        w.await?;
    }
    let mut upload_latencies = std::mem::take(&mut *upload_latencies.lock().await);
    let mut lags = std::mem::take(&mut *lags.lock().await);
    upload_latencies.sort();
    lags.sort();

    // Questions, round robin over nodes and tenants.
    let started = Instant::now();
    let deadline = started + Duration::from_secs(opts.seconds);
    let query_latencies = Arc::new(Mutex::new(Vec::new()));
    let mut workers = Vec::new();
    for w in 0..opts.clients {
        let (client, bases, keys, latencies) = (client.clone(), bases.clone(), keys.clone(), query_latencies.clone());
        workers.push(tokio::spawn(async move {
            let mut n = 0usize;
            while Instant::now() < deadline {
                let (node, tenant) = ((w + n) % bases.len(), (w * 3 + n) % keys.len());
                let asked = Instant::now();
                let r = client
                    .post(format!("{}/v1/query", bases[node]))
                    .bearer_auth(&keys[tenant])
                    .json(&json!({"question": format!("how does the zq{w}x{n}v procedure work")}))
                    .send()
                    .await;
                if r.is_ok_and(|r| r.status() == 200) {
                    latencies.lock().await.push(asked.elapsed());
                }
                n += 1;
            }
        }));
    }
    for w in workers {
        w.await?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let mut query_latencies = std::mem::take(&mut *query_latencies.lock().await);
    query_latencies.sort();
    Ok(SetupResult {
        name,
        uploads_per_s: upload_latencies.len() as f64 / opts.seconds as f64,
        upload_p50_ms: percentile_ms(&upload_latencies, 0.50),
        upload_p99_ms: percentile_ms(&upload_latencies, 0.99),
        lag_p50_ms: percentile_ms(&lags, 0.50),
        lag_p99_ms: percentile_ms(&lags, 0.99),
        lag_samples: lags.len(),
        queries_per_s: query_latencies.len() as f64 / elapsed,
        query_p50_ms: percentile_ms(&query_latencies, 0.50),
        query_p99_ms: percentile_ms(&query_latencies, 0.99),
    })
}

/// Many tenants' documents uploaded through one node; then a node with an empty data directory starts and
/// warms every tenant. Returns its warm-up seconds (from its own log) and the database's sizes.
async fn warm_up(opts: &ClusterBench) -> anyhow::Result<()> {
    let database = tenantry_store::Store::create_test_database(&opts.database_url).await?;
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("tenantry.toml"), config(&database))?;
    let client = reqwest::Client::builder().timeout(Duration::from_secs(60)).build()?;
    let loader = start_node(dir.path(), "loader")?;
    wait_ready(&client, &loader).await?;
    let loading = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..opts.clients {
        let (client, base, next, documents) = (client.clone(), loader.base.clone(), next.clone(), opts.warm_documents);
        let tenants = opts.warm_tenants;
        workers.push(tokio::spawn(async move {
            loop {
                let t = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if t >= tenants {
                    return Ok::<_, anyhow::Error>(());
                }
                let key = signup(&client, &base, 100_000 + t).await?;
                for d in 0..documents {
                    upload(&client, &base, &key, &format!("wt{t}d{d}m")).await?;
                }
            }
        }));
    }
    for w in workers {
        w.await??;
    }
    println!(
        "loaded {} tenants × {} documents through one node in {:.1} s",
        opts.warm_tenants,
        opts.warm_documents,
        loading.elapsed().as_secs_f64()
    );
    drop(loader);

    let fresh = start_node(dir.path(), "fresh")?;
    let started = Instant::now();
    wait_ready(&client, &fresh).await?;
    let ready = started.elapsed();
    let log_path = dir.path().join("fresh.log");
    let warm = loop {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        if let Some(line) = log.lines().find(|l| l.contains("search indexes warm")) {
            break line.to_owned();
        }
        if started.elapsed() > Duration::from_secs(1_800) {
            bail!("the fresh node did not finish warming in 30 minutes");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The log line's `seconds` field, its colour codes (`ESC [ … m`) removed first.
    let mut plain = String::new();
    let mut chars = warm.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().find(|c| *c == 'm');
        } else {
            plain.push(c);
        }
    }
    let seconds = plain
        .split("seconds=")
        .nth(1)
        .map(|rest| rest.chars().take_while(|c| c.is_ascii_digit() || *c == '.').collect::<String>())
        .and_then(|digits| digits.parse::<f64>().ok())
        .map_or_else(|| "?".into(), |s| format!("{s:.1}"));
    println!(
        "empty node: ready (serving) after {:.2} s; all {} tenants warm after {seconds} s of warming",
        ready.as_secs_f64(),
        opts.warm_tenants
    );

    let store = tenantry_store::Store::open(&database, dir.path()).await?;
    let (chunks, chunk_bytes) = store.table_size("chunks").await?.context("postgres")?;
    let (documents, document_bytes) = store.table_size("documents").await?.context("postgres")?;
    let (parts, file_bytes) = store.table_size("file_parts").await?.context("postgres")?;
    let (_, change_bytes) = store.table_size("document_changes").await?.context("postgres")?;
    let per_1000 = |bytes: i64| bytes as f64 * 1_000.0 / chunks.max(1) as f64 / 1_048_576.0;
    println!(
        "PostgreSQL: {chunks} chunks of {documents} documents; per 1,000 chunks: chunks {:.2} MiB (text and \
         embeddings), documents {:.2} MiB, originals {:.2} MiB ({parts} parts), change record {:.2} MiB",
        per_1000(chunk_bytes),
        per_1000(document_bytes),
        per_1000(file_bytes),
        per_1000(change_bytes),
    );
    store.close().await;
    Ok(())
}

pub async fn cluster(opts: ClusterBench) -> anyhow::Result<()> {
    if opts.database_url.is_empty() {
        bail!("--database-url: an administrative PostgreSQL URL, e.g. postgres://postgres@127.0.0.1:5432/postgres");
    }
    println!(
        "tenantry bench cluster: {} s of uploads then {} s of questions per setup, {} clients, {TENANTS} tenants, \
         nodes on this machine",
        opts.seconds, opts.seconds, opts.clients
    );
    let mut results = vec![run_setup(&opts, 1, "", "embedded SQLite, 1 node".into()).await?];
    for &n in &opts.nodes {
        let database = tenantry_store::Store::create_test_database(&opts.database_url).await?;
        results.push(
            run_setup(&opts, n, &database, format!("PostgreSQL, {n} node{}", if n == 1 { "" } else { "s" })).await?,
        );
    }
    println!(
        "| setup | uploads/s | upload p50 / p99 ms | visibility lag p50 / p99 ms (samples) | questions/s | question p50 / p99 ms |"
    );
    println!("|---|---|---|---|---|---|");
    for r in &results {
        let lag = if r.lag_samples == 0 {
            "—".to_owned()
        } else {
            format!("{:.0} / {:.0} ({})", r.lag_p50_ms, r.lag_p99_ms, r.lag_samples)
        };
        println!(
            "| {} | {:.1} | {:.0} / {:.0} | {lag} | {:.1} | {:.0} / {:.0} |",
            r.name, r.uploads_per_s, r.upload_p50_ms, r.upload_p99_ms, r.queries_per_s, r.query_p50_ms, r.query_p99_ms
        );
    }
    if opts.warm_tenants > 0 {
        warm_up(&opts).await?;
    }
    Ok(())
}
