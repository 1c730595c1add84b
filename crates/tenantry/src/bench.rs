//! `tenantry bench gateway`: the gateway's own cost per request on the full HTTP path — authentication,
//! context, lifecycle gate, rate limit, quota reservation, settlement and the ledger write — with retrieval
//! and generation reduced to nothing (the tenant has no documents, so the search is over an empty namespace
//! and the offline model answers at once). Open-loop load at fixed rates from this same process: latency
//! is measured from each request's scheduled send time, so a stall is not hidden by a slower sender
//! (coordinated omission). Beside the client's view, the server's own: the share of the run's requests the
//! server answered within 2 ms by its request-duration histogram (`/metrics`, arrival to response head), so
//! a tail the server did not see (the client, the kernel, the host) shows as the difference.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::json;
use tenantry_domain::config::{PlanConfig, Quotas};
use tenantry_domain::quota::Meter;
use tenantry_domain::{Config, TenantId};
use tenantry_web::Application;
use tokio::sync::Semaphore;

/// A service on an ephemeral port in this process, which a benchmark drives over HTTP.
/// The nearest-rank `p` quantile (0 < p ≤ 1) of `sorted`, in milliseconds; NaN when there is none.
pub fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1_000.0
}

pub struct InProcess {
    pub base: String,
    pub services: tenantry_service::Services,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl InProcess {
    pub async fn start(config: Config) -> anyhow::Result<Self> {
        let app = Application::build(config).await?;
        let base = format!("http://{}", app.local_addr());
        let services = app.services().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(app.run_until_stopped(async move {
            let _ = stopped.await;
        }));
        Ok(Self { base, services, stop, server })
    }

    /// Stops serving and waits until the service has shut down.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        self.server.await??;
        Ok(())
    }
}

pub struct GatewayBench {
    pub rates: Vec<u64>,
    pub seconds: u64,
    pub max_in_flight: usize,
    /// `Some(n)`: ask through `/v1/chat/completions` with `n` user turns instead of `/v1/query`.
    pub turns: Option<u32>,
    /// Every request carries an `Idempotency-Key` of its own (claimed, run, its response kept).
    pub idempotency_keys: bool,
}

/// The route a run asks, and the body of each request.
struct Ask {
    route: &'static str,
    body: serde_json::Value,
    idempotency_keys: bool,
}

impl Ask {
    fn new(turns: Option<u32>) -> Self {
        let question = "How long do refunds take?";
        let Some(turns) = turns else {
            return Self { route: "/v1/query", body: json!({ "question": question }), idempotency_keys: false };
        };
        let mut messages = vec![json!({"role": "system", "content": "You are a helpful assistant."})];
        for i in 1..turns {
            messages.push(
                json!({"role": "user", "content": format!("What does clause {i} of the policy say about returns?")}),
            );
            messages.push(json!({"role": "assistant", "content": format!("Clause {i} says returns are accepted within {i} weeks, unless the goods were used.")}));
        }
        messages.push(json!({"role": "user", "content": question}));
        Self {
            route: "/v1/chat/completions",
            body: json!({ "model": "default", "messages": messages }),
            idempotency_keys: false,
        }
    }
}

/// Each request's own idempotency key, over every run of the process.
static NEXT_KEY: AtomicU64 = AtomicU64::new(0);

struct RunResult {
    rate: u64,
    sent: usize,
    errors: usize,
    achieved_rps: f64,
    p50_us: u64,
    p99_us: u64,
    max_us: u64,
    ledger_rows_per_s: f64,
    /// Of the run's requests, the share the server answered within 2 ms (its own histogram).
    server_within_2ms: f64,
}

pub async fn gateway(opts: GatewayBench) -> anyhow::Result<()> {
    let dir = tempfile_dir()?;
    let mut config = Config::builtin();
    config.server.bind = "127.0.0.1:0".into();
    config.server.data_dir = dir.clone();
    let mut plan: PlanConfig = config.plans.iter().find(|p| p.name == "trial").context("trial plan")?.clone();
    plan.name = "bench".into();
    plan.quotas = Quotas {
        queries: u64::MAX / 4,
        tokens: u64::MAX / 4,
        documents: 1_000,
        storage_bytes: 1 << 40,
        requests_per_minute: 100_000_000,
    };
    config.plans.push(plan);
    let service = InProcess::start(config).await?;
    let (base, services) = (service.base.clone(), service.services.clone());

    let client = reqwest::Client::builder().pool_max_idle_per_host(opts.max_in_flight).build()?;
    let signup: serde_json::Value = client
        .post(format!("{base}/v1/signup"))
        .json(&json!({"email": "bench@tenantry.test", "organization": "Bench", "plan": "bench"}))
        .send()
        .await?
        .json()
        .await?;
    let key = signup["api_key"].as_str().context("no api key")?.to_owned();
    let tenant = TenantId::parse(signup["tenant_id"].as_str().context("no tenant id")?).context("tenant id")?;

    let ask = Arc::new(Ask { idempotency_keys: opts.idempotency_keys, ..Ask::new(opts.turns) });
    match opts.turns {
        None => println!("tenantry bench gateway: POST /v1/query, empty namespace, offline model, embedded SQLite"),
        Some(n) => println!(
            "tenantry bench gateway: POST /v1/chat/completions with {n} user turns, empty namespace, offline model, \
             embedded SQLite"
        ),
    }
    if opts.idempotency_keys {
        println!("every request with an Idempotency-Key of its own");
    }
    println!("{} cores; client and server share this process; {}s per rate\n", num_cpus(), opts.seconds);
    // Warm up connections, the tokenizer and the index.
    run(&client, &base, &key, &ask, 200, 2, opts.max_in_flight).await?;
    println!(
        "{:>8} {:>8} {:>7} {:>10} {:>9} {:>9} {:>9} {:>13} {:>14}",
        "rate/s", "sent", "errors", "achieved/s", "p50 ms", "p99 ms", "max ms", "ledger rows/s", "server <=2ms"
    );
    let mut results = Vec::new();
    for &rate in &opts.rates {
        let before = services.store().usage_event_count(&tenant, Meter::Queries).await?;
        let served_before = server_durations(&client, &base, ask.route).await?;
        let started = Instant::now();
        let mut r = run(&client, &base, &key, &ask, rate, opts.seconds, opts.max_in_flight).await?;
        let elapsed = started.elapsed().as_secs_f64();
        let after = services.store().usage_event_count(&tenant, Meter::Queries).await?;
        let served_after = server_durations(&client, &base, ask.route).await?;
        // Three ledger rows per query: queries, prompt_tokens, completion_tokens.
        r.ledger_rows_per_s = 3.0 * (after - before) as f64 / elapsed;
        let (within, all) = (served_after.0 - served_before.0, served_after.1 - served_before.1);
        r.server_within_2ms = if all > 0.0 { 100.0 * within / all } else { 0.0 };
        println!(
            "{:>8} {:>8} {:>7} {:>10.0} {:>9.2} {:>9.2} {:>9.2} {:>13.0} {:>13.2}%",
            r.rate,
            r.sent,
            r.errors,
            r.achieved_rps,
            r.p50_us as f64 / 1000.0,
            r.p99_us as f64 / 1000.0,
            r.max_us as f64 / 1000.0,
            r.ledger_rows_per_s,
            r.server_within_2ms
        );
        results.push(r);
    }
    let sustained =
        results.iter().filter(|r| r.errors == 0 && r.achieved_rps >= 0.97 * r.rate as f64).map(|r| r.rate).max();
    match sustained {
        Some(rate) => println!("\nmax sustained with zero errors: {rate} requests/s"),
        None => println!("\nno rate was sustained with zero errors"),
    }
    service.stop().await?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

async fn run(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    ask: &Arc<Ask>,
    rate: u64,
    seconds: u64,
    max_in_flight: usize,
) -> anyhow::Result<RunResult> {
    let total = usize::try_from(rate * seconds)?;
    let url = format!("{base}{}", ask.route);
    let (client, key, ask) = (client.clone(), key.to_owned(), ask.clone());
    let (answers, elapsed) = open_loop(rate, total, max_in_flight, move |_, scheduled| {
        let (client, url, key, ask) = (client.clone(), url.clone(), key.clone(), ask.clone());
        async move {
            let mut request = client.post(&url).bearer_auth(&key).json(&ask.body);
            if ask.idempotency_keys {
                request =
                    request.header("Idempotency-Key", format!("bench-{}", NEXT_KEY.fetch_add(1, Ordering::Relaxed)));
            }
            let ok = request.send().await.is_ok_and(|r| r.status().is_success());
            (ok, scheduled.elapsed())
        }
    })
    .await?;
    let mut latencies = Vec::with_capacity(total);
    let mut errors = 0;
    for (ok, latency) in answers {
        if !ok {
            errors += 1;
        }
        latencies.push(latency.as_micros() as u64);
    }
    let elapsed = elapsed.as_secs_f64();
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    Ok(RunResult {
        rate,
        sent: total,
        errors,
        achieved_rps: total as f64 / elapsed,
        p50_us: pct(0.50),
        p99_us: pct(0.99),
        max_us: latencies.last().copied().unwrap_or(0),
        ledger_rows_per_s: 0.0,
        server_within_2ms: 0.0,
    })
}

/// Open-loop load: `request(i, scheduled)` is called for each `i` below `total`, `rate` a second from now
/// whatever the answers' pace, and each future it returns runs on the runtime once one of `max_in_flight`
/// permits is free. Returns every future's output, in order, and the time until the last finished. The pacing
/// runs on a thread of its own: tokio's timer wheel fires at millisecond granularity, so `sleep_until` would
/// start most requests up to a millisecond late, and that lateness (measured from the scheduled time, as it
/// must be) would be the load generator's, not the service's.
pub async fn open_loop<F, Fut, T>(
    rate: u64,
    total: usize,
    max_in_flight: usize,
    mut request: F,
) -> anyhow::Result<(Vec<T>, Duration)>
where
    F: FnMut(usize, Instant) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    if rate == 0 {
        bail!("rate must be positive");
    }
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let permits = Arc::new(Semaphore::new(max_in_flight));
    let runtime = tokio::runtime::Handle::current();
    let start = Instant::now();
    let (paced, tasks) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut tasks = Vec::with_capacity(total);
        for i in 0..total {
            let scheduled = start + interval.mul_f64(i as f64);
            if let Some(wait) = scheduled.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let Ok(permit) = runtime.block_on(permits.clone().acquire_owned()) else { break };
            let answer = request(i, scheduled);
            tasks.push(runtime.spawn(async move {
                let output = answer.await;
                drop(permit);
                output
            }));
        }
        let _ = paced.send(tasks);
    });
    let tasks = tasks.await.context("the pacing thread stopped")?;
    let mut outputs = Vec::with_capacity(tasks.len());
    for task in tasks {
        outputs.push(task.await?);
    }
    Ok((outputs, start.elapsed()))
}

/// `route`'s requests so far that the server answered within 2 ms, and all of them, from its
/// request-duration histogram on `/metrics`.
async fn server_durations(client: &reqwest::Client, base: &str, route: &str) -> anyhow::Result<(f64, f64)> {
    let text = client.get(format!("{base}/metrics")).send().await?.error_for_status()?.text().await?;
    let bucket = |le: &str| {
        text.lines()
            .filter(|l| {
                l.starts_with("tenantry_http_request_duration_seconds_bucket{")
                    && l.contains(&format!("route=\"{route}\""))
                    && l.contains(&format!("le=\"{le}\""))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    Ok((bucket("0.002"), bucket("+Inf")))
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("tenantry-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
