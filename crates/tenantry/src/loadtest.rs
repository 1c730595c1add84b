//! `tenantry loadtest`: many tenants of different plans, models, retrieval modes and prompts, an open-loop
//! mix of their requests at a target rate, then a reconciliation of everything they saw against what the
//! service recorded. Against its own embedded service by default, or a deployment (`--url`, one or more
//! nodes, asked round robin) configured with `--print-config`; hosted models point at a fake
//! OpenAI-compatible upstream this process serves, which checks each tenant's model and prompt.
//!
//! Latency is measured from each request's scheduled send time, so a stall is not hidden by a slower
//! sender (coordinated omission).

mod profile;
mod reconcile;
mod upstream;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tenantry_domain::{Clock, Config, SystemClock};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::bench::{open_loop, percentile_ms, InProcess};
use profile::Profile;
use reconcile::{Observed, ServerView};
use upstream::Upstream;

#[derive(clap::Args)]
pub struct LoadtestArgs {
    /// Tenants to provision.
    #[arg(long, default_value_t = 1_000)]
    pub tenants: usize,
    /// Seconds of traffic.
    #[arg(long, default_value_t = 60)]
    pub duration: u64,
    /// Requests per second, sent on schedule whatever the answers' pace.
    #[arg(long, default_value_t = 200)]
    pub rate: u64,
    /// A deployment's node (repeat, or separate with commas, for several: asked round robin) instead of an
    /// embedded service; it needs the configuration `--print-config` prints.
    #[arg(long = "url", value_delimiter = ',')]
    pub urls: Vec<String>,
    /// Also print one JSON object with the results (its `reconciliation` holding each kind of mismatch) as
    /// the last line.
    #[arg(long)]
    pub json: bool,
    /// The deployment's operator token (for its ledger series; embedded: one of its own).
    #[arg(long, env = "TENANTRY_OPERATOR_TOKEN", default_value = "", hide_env_values = true)]
    pub operator_token: String,
    /// Where the fake OpenAI-compatible upstream listens (the hosted models' base URL).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub upstream_bind: String,
    /// Print the models and plans a deployment needs for `--upstream-bind`, and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Most requests in flight at once.
    #[arg(long, default_value_t = 512)]
    pub max_in_flight: usize,
    /// Seed of the request mix.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// How often each operation is picked, as `name=weight` pairs (query, chat, usage, upload, delete, plan);
    /// `--mix query` sends questions only.
    #[arg(long, default_value = DEFAULT_MIX)]
    pub mix: Mix,
}

pub async fn run(args: LoadtestArgs) -> anyhow::Result<()> {
    if args.print_config {
        print!("{}", profile::config(&format!("http://{}", args.upstream_bind)));
        return Ok(());
    }
    if args.tenants == 0 || args.rate == 0 || args.duration == 0 {
        bail!("--tenants, --rate and --duration must be at least 1");
    }
    let profiles: Vec<Profile> = (0..args.tenants).map(Profile::of).collect();
    let upstream = Upstream::new(profiles.iter().map(|p| p.model.upstream).collect());
    let listener = tokio::net::TcpListener::bind(&args.upstream_bind)
        .await
        .with_context(|| format!("the fake upstream cannot listen on {}", args.upstream_bind))?;
    let upstream_url = format!("http://{}", listener.local_addr()?);
    upstream.serve(listener);

    let (embedded, target) = match args.urls.as_slice() {
        [] => {
            let embedded = Embedded::start(&upstream_url).await?;
            let target = Target::new(vec![embedded.service.base.clone()], embedded.token.clone(), args.max_in_flight)?;
            (Some(embedded), target)
        }
        urls => (None, Target::new(urls.to_vec(), args.operator_token.clone(), args.max_in_flight)?),
    };
    let started_at = SystemClock.now().plus_seconds(-60);
    let target = Arc::new(target);
    let tenants = provision(&target, profiles).await?;
    let traffic = Arc::new(Traffic::default());
    let elapsed = drive(&target, &tenants, &traffic, &args).await?;
    let outcome = reconcile_all(&target, &tenants, &upstream, started_at).await?;
    let report = Report::new(&args, &traffic, elapsed, outcome, &upstream);
    if let Some(embedded) = embedded {
        embedded.service.stop().await?;
        // Its data directory is deleted here, with the rest of `embedded`, once the service has let go of it.
    }
    report.print(args.json)?;
    let mismatches: u64 = report.reconciliation.values().sum();
    if mismatches > 0 {
        bail!("reconciliation found {mismatches} mismatches");
    }
    Ok(())
}

/// A service in this process with the load test's plans and models, its hosted models pointing at the
/// fake upstream; its operator token; its data directory, deleted when dropped.
struct Embedded {
    service: InProcess,
    token: String,
    _data: tempfile::TempDir,
}

impl Embedded {
    async fn start(upstream_url: &str) -> anyhow::Result<Self> {
        let data = tempfile::tempdir()?;
        let mut config = Config::from_toml(&profile::config(upstream_url))?;
        config.server.bind = "127.0.0.1:0".into();
        config.server.data_dir = data.path().to_owned();
        let token = format!("loadtest-{:032x}", rand::thread_rng().gen::<u128>());
        config.server.operator_token = token.clone();
        Ok(Self { service: InProcess::start(config).await?, token, _data: data })
    }
}

/// The nodes requests go to, round robin, and the client that sends them.
struct Target {
    urls: Vec<String>,
    next: AtomicUsize,
    operator_token: String,
    client: reqwest::Client,
}

impl Target {
    fn new(urls: Vec<String>, operator_token: String, max_in_flight: usize) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(max_in_flight)
            .timeout(Duration::from_secs(60))
            .build()?;
        let urls = urls.into_iter().map(|u| u.trim_end_matches('/').to_owned()).collect();
        Ok(Self { urls, next: AtomicUsize::new(0), operator_token, client })
    }

    fn url(&self, path: &str) -> String {
        let node = self.next.fetch_add(1, Ordering::Relaxed) % self.urls.len();
        format!("{}{path}", self.urls[node])
    }
}

/// A provisioned tenant and what the load test saw happen to it.
struct TenantRun {
    profile: Profile,
    tenant_id: String,
    key: String,
    /// Every document the tenant was told it stored.
    owned: Mutex<HashSet<String>>,
    /// Documents uploaded during the run and not yet chosen for deletion.
    deletable: Mutex<Vec<String>>,
    /// Every document an answer cited (checked against `owned` at the end: an answer can cite an upload
    /// whose response has not reached this process yet).
    cited: Mutex<HashSet<String>>,
    serial: AtomicU64,
    plan: Mutex<&'static str>,
    changing_plan: AtomicBool,
    asked: AtomicU64,
    uploaded: AtomicU64,
    deleted: AtomicU64,
    unanswered: AtomicU64,
    wrong_model_answers: AtomicU64,
}

/// Signs up every tenant, sets its model, retrieval mode and prompt, and gives it one document.
async fn provision(target: &Target, profiles: Vec<Profile>) -> anyhow::Result<Vec<Arc<TenantRun>>> {
    let bar = progress(profiles.len() as u64, "provisioning");
    let run_id = format!("{:08x}", rand::thread_rng().gen::<u32>());
    let limit = Arc::new(Semaphore::new(32));
    let mut tasks = JoinSet::new();
    for profile in profiles {
        let permit = limit.clone().acquire_owned().await?;
        let (client, base, run_id) = (target.client.clone(), target.url(""), run_id.clone());
        tasks.spawn(async move {
            let _permit = permit;
            provision_one(&client, &base, profile, &run_id).await
        });
    }
    let mut tenants = Vec::new();
    while let Some(done) = tasks.join_next().await {
        tenants.push(Arc::new(done??));
        bar.inc(1);
    }
    bar.finish_and_clear();
    tenants.sort_by_key(|t| t.profile.index);
    Ok(tenants)
}

async fn provision_one(
    client: &reqwest::Client,
    base: &str,
    profile: Profile,
    run_id: &str,
) -> anyhow::Result<TenantRun> {
    let i = profile.index;
    let signup = json!({"email": format!("lt{i}-{run_id}@loadtest.test"), "organization": format!("Load test {i}"),
                        "plan": profile.plan});
    let r = client.post(format!("{base}/v1/signup")).json(&signup).send().await?;
    let status = r.status();
    let body: Value = r.json().await?;
    if status != 201 {
        bail!("signup of tenant {i}: {status} {body}");
    }
    let key = body["api_key"].as_str().context("api_key")?.to_owned();
    let tenant_id = body["tenant_id"].as_str().context("tenant_id")?.to_owned();
    wait_until_active(client, base, &key).await?;
    let config = json!({"model": profile.model.name, "retrieval_mode": profile.mode,
                        "system_prompt": profile.system_prompt()});
    let r = client.patch(format!("{base}/v1/tenant/config")).bearer_auth(&key).json(&config).send().await?;
    if r.status() != 200 {
        bail!("configuring tenant {i}: {} {}", r.status(), r.text().await?);
    }
    let document = json!({"title": format!("Procedure {i}"), "text": profile.document(0)});
    let r = client.post(format!("{base}/v1/documents")).bearer_auth(&key).json(&document).send().await?;
    if r.status() != 201 {
        bail!("first document of tenant {i}: {} {}", r.status(), r.text().await?);
    }
    let first: Value = r.json().await?;
    let first = first["document_id"].as_str().context("document_id")?.to_owned();
    let plan = profile.plan;
    Ok(TenantRun {
        profile,
        tenant_id,
        key,
        owned: Mutex::new(HashSet::from([first])),
        deletable: Mutex::default(),
        cited: Mutex::default(),
        serial: AtomicU64::new(1),
        plan: Mutex::new(plan),
        changing_plan: AtomicBool::new(false),
        asked: AtomicU64::new(0),
        uploaded: AtomicU64::new(0),
        deleted: AtomicU64::new(0),
        unanswered: AtomicU64::new(0),
        wrong_model_answers: AtomicU64::new(0),
    })
}

/// A free plan provisions within a second of signing up.
async fn wait_until_active(client: &reqwest::Client, base: &str, key: &str) -> anyhow::Result<()> {
    for _ in 0..100 {
        let tenant: Value = client.get(format!("{base}/v1/tenant")).bearer_auth(key).send().await?.json().await?;
        if tenant["state"] == "active" {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("a tenant did not become active within 10 s")
}

/// What a tenant does in one request of the mix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Op {
    Query,
    Chat,
    Usage,
    Upload,
    Delete,
    PlanChange,
}

/// How often each operation is picked: `query=50,chat=25,usage=12,upload=6,delete=4,plan=3` by default.
pub const DEFAULT_MIX: &str = "query=50,chat=25,usage=12,upload=6,delete=4,plan=3";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mix(Vec<(Op, u32)>);

impl std::str::FromStr for Mix {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let mut weights = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, weight) = part.split_once('=').unwrap_or((part, "1"));
            let op = Op::ALL.into_iter().find(|op| op.short_name() == name).ok_or_else(|| {
                format!("unknown operation {name:?}; one of query, chat, usage, upload, delete, plan")
            })?;
            let weight = weight.parse::<u32>().map_err(|_| format!("weight of {name} is not a whole number"))?;
            weights.push((op, weight));
        }
        if weights.iter().map(|(_, w)| u64::from(*w)).sum::<u64>() == 0 {
            return Err("the mix needs at least one operation with a weight above zero".into());
        }
        Ok(Self(weights))
    }
}

impl Mix {
    fn pick(&self, rng: &mut StdRng) -> Op {
        let total: u32 = self.0.iter().map(|(_, w)| w).sum();
        let mut roll = rng.gen_range(0..total);
        for &(op, weight) in &self.0 {
            if roll < weight {
                return op;
            }
            roll -= weight;
        }
        Op::Query
    }
}

impl Op {
    const ALL: [Op; 6] = [Op::Query, Op::Chat, Op::Usage, Op::Upload, Op::Delete, Op::PlanChange];

    fn short_name(self) -> &'static str {
        match self {
            Op::Query => "query",
            Op::Chat => "chat",
            Op::Usage => "usage",
            Op::Upload => "upload",
            Op::Delete => "delete",
            Op::PlanChange => "plan",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Op::Query => "POST /v1/query",
            Op::Chat => "POST /v1/chat/completions",
            Op::Usage => "GET /v1/usage",
            Op::Upload => "POST /v1/documents",
            Op::Delete => "DELETE /v1/documents/{id}",
            Op::PlanChange => "POST /v1/plan",
        }
    }
}

/// What the traffic phase measured.
#[derive(Default)]
struct Traffic {
    latencies: Mutex<HashMap<Op, Vec<Duration>>>,
    /// Refusals and failures by endpoint, status and problem code.
    errors: Mutex<BTreeMap<String, u64>>,
    server_errors: AtomicU64,
}

impl Traffic {
    fn answered(&self, op: Op, due: Instant, status: u16, body: &Value) {
        self.latencies.lock().entry(op).or_default().push(due.elapsed());
        if status >= 400 {
            let code = body["code"].as_str().unwrap_or("-");
            *self.errors.lock().entry(format!("{} {status} {code}", op.name())).or_default() += 1;
        }
        if status >= 500 {
            self.server_errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn unanswered(&self, op: Op, error: &reqwest::Error) {
        let kind = if error.is_timeout() { "timed out" } else { "no answer" };
        *self.errors.lock().entry(format!("{} {kind}", op.name())).or_default() += 1;
    }
}

/// Sends the mix at `args.rate` requests a second for `args.duration` seconds, each to a tenant picked at
/// random, and waits for every answer; how long that took.
async fn drive(
    target: &Arc<Target>,
    tenants: &[Arc<TenantRun>],
    traffic: &Arc<Traffic>,
    args: &LoadtestArgs,
) -> anyhow::Result<Duration> {
    let total = usize::try_from(args.rate * args.duration)?;
    let bar = progress(total as u64, "requests");
    let mut rng = StdRng::seed_from_u64(args.seed);
    let (target, tenants, traffic, mix, counted) =
        (target.clone(), tenants.to_vec(), traffic.clone(), args.mix.clone(), bar.clone());
    let (_, elapsed) = open_loop(args.rate, total, args.max_in_flight, move |_, due| {
        let tenant = tenants[rng.gen_range(0..tenants.len())].clone();
        let op = mix.pick(&mut rng);
        counted.inc(1);
        let (target, traffic) = (target.clone(), traffic.clone());
        async move { send(&target, &traffic, &tenant, op, due).await }
    })
    .await?;
    bar.finish_and_clear();
    Ok(elapsed)
}

/// One request of the mix, and what its answer tells about the tenant.
async fn send(target: &Target, traffic: &Traffic, tenant: &TenantRun, op: Op, due: Instant) {
    let op = tenant.feasible(op);
    let request = match op {
        Op::Query => target.client.post(target.url("/v1/query")).json(&json!({"question": tenant.profile.question()})),
        Op::Chat => target.client.post(target.url("/v1/chat/completions")).json(&json!({
            "model": "default",
            "messages": [{"role": "user", "content": tenant.profile.question()}],
        })),
        Op::Usage => target.client.get(target.url("/v1/usage")),
        Op::Upload => {
            let serial = tenant.serial.fetch_add(1, Ordering::Relaxed);
            let i = tenant.profile.index;
            let document = json!({"title": format!("Procedure {i}-{serial}"), "text": tenant.profile.document(serial)});
            target.client.post(target.url("/v1/documents")).json(&document)
        }
        Op::Delete => match tenant.deletable.lock().pop() {
            Some(id) => target.client.delete(target.url(&format!("/v1/documents/{id}"))),
            None => target.client.get(target.url("/v1/usage")),
        },
        Op::PlanChange => {
            let to = if *tenant.plan.lock() == profile::LOOSE { profile::PLUS } else { profile::LOOSE };
            target.client.post(target.url("/v1/plan")).json(&json!({"plan": to}))
        }
    };
    match answer(request.bearer_auth(&tenant.key)).await {
        Ok((status, body)) => {
            traffic.answered(op, due, status, &body);
            tenant.learn(op, status, &body);
        }
        Err(e) => {
            traffic.unanswered(op, &e);
            tenant.unanswered.fetch_add(1, Ordering::Relaxed);
        }
    }
    if op == Op::PlanChange {
        tenant.changing_plan.store(false, Ordering::Release);
    }
}

/// The status and JSON body (null when there is none) of a whole answer.
async fn answer(request: reqwest::RequestBuilder) -> Result<(u16, Value), reqwest::Error> {
    let response = request.send().await?;
    let status = response.status().as_u16();
    let bytes = response.bytes().await?;
    Ok((status, serde_json::from_slice(&bytes).unwrap_or(Value::Null)))
}

impl TenantRun {
    /// The operation to run in place of `op` when it cannot apply (nothing to delete, a plan change
    /// already under way or on the tight plan): a usage read. A delete takes its document here.
    fn feasible(&self, op: Op) -> Op {
        match op {
            Op::Delete if self.deletable.lock().is_empty() => Op::Usage,
            Op::PlanChange
                if self.profile.plan == profile::TIGHT || self.changing_plan.swap(true, Ordering::AcqRel) =>
            {
                Op::Usage
            }
            other => other,
        }
    }

    /// Records what a successful answer says happened.
    fn learn(&self, op: Op, status: u16, body: &Value) {
        match (op, status) {
            (Op::Query, 200) => {
                self.asked.fetch_add(1, Ordering::Relaxed);
                if body["model"] != self.profile.model.name {
                    self.wrong_model_answers.fetch_add(1, Ordering::Relaxed);
                }
                let cited = body["citations"].as_array().into_iter().flatten();
                let mut seen = self.cited.lock();
                seen.extend(cited.filter_map(|c| c["document_id"].as_str()).map(str::to_owned));
            }
            (Op::Chat, 200) => {
                self.asked.fetch_add(1, Ordering::Relaxed);
            }
            (Op::Upload, 201) => {
                if let Some(id) = body["document_id"].as_str() {
                    self.uploaded.fetch_add(1, Ordering::Relaxed);
                    self.owned.lock().insert(id.to_owned());
                    self.deletable.lock().push(id.to_owned());
                }
            }
            (Op::Delete, 204) => {
                self.deleted.fetch_add(1, Ordering::Relaxed);
            }
            (Op::PlanChange, 200 | 202) => {
                if let Some(plan) = [profile::LOOSE, profile::PLUS].into_iter().find(|p| body["plan"] == *p) {
                    *self.plan.lock() = plan;
                }
            }
            _ => {}
        }
    }

    fn observed(&self, upstream_calls: u64) -> Observed {
        Observed {
            asked: self.asked.load(Ordering::Relaxed),
            uploaded: self.uploaded.load(Ordering::Relaxed),
            deleted: self.deleted.load(Ordering::Relaxed),
            unanswered: self.unanswered.load(Ordering::Relaxed),
            wrong_model_answers: self.wrong_model_answers.load(Ordering::Relaxed),
            foreign_citations: self.cited.lock().difference(&self.owned.lock()).count() as u64,
            model: self.profile.model.name.to_owned(),
            hosted: self.profile.model.upstream.is_some(),
            plan: (*self.plan.lock()).to_owned(),
            upstream_calls,
        }
    }
}

/// What the end of the run found: each kind of mismatch, and how many tenants ClickHouse's totals were
/// compared for (none without ClickHouse).
struct Outcome {
    mismatches: BTreeMap<&'static str, u64>,
    analytics_tenants: u64,
}

/// Reads back what the service recorded for every tenant and compares it with what the tenants saw. The
/// ledger is read right after the last answer; a difference is read again for a few seconds (usage
/// shipped to ClickHouse arrives after the answer), then counted.
async fn reconcile_all(
    target: &Target,
    tenants: &[Arc<TenantRun>],
    upstream: &Upstream,
    since: tenantry_domain::Timestamp,
) -> anyhow::Result<Outcome> {
    let bar = progress(tenants.len() as u64, "reconciling");
    let mut totals = reconcile::Mismatches::default();
    let mut analytics_tenants = 0;
    for tenant in tenants {
        let calls = upstream.seen().calls.get(&tenant.profile.index).copied().unwrap_or(0);
        let observed = tenant.observed(calls);
        let mut found = reconcile::Mismatches::default();
        for attempt in 0..5 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            let view = server_view(target, tenant, since).await?;
            found = reconcile::tenant(&observed, &view);
            if found.is_empty() || attempt == 4 {
                analytics_tenants += u64::from(view.analytics_queries.is_some());
                break;
            }
        }
        totals.add(&found);
        bar.inc(1);
    }
    bar.finish_and_clear();
    let seen = upstream.seen();
    totals.upstream(seen.wrong_model, seen.unattributed, seen.foreign_passages);
    Ok(Outcome { mismatches: totals.into_map(), analytics_tenants })
}

/// The tenant as the service records it: its usage, the operator's ledger series, ClickHouse's totals (when
/// configured), documents, quotas and plan.
async fn server_view(
    target: &Target,
    tenant: &TenantRun,
    since: tenantry_domain::Timestamp,
) -> anyhow::Result<ServerView> {
    let range = format!("from={}&to={}", since.to_rfc3339(), SystemClock.now().plus_seconds(3_600).to_rfc3339());
    let get = |path: String, token: &str| {
        let request = target.client.get(target.url(&path)).bearer_auth(token);
        async move {
            let r = request.send().await?;
            if r.status() != 200 {
                bail!("GET {path}: {}", r.status());
            }
            Ok::<Value, anyhow::Error>(r.json().await?)
        }
    };
    let usage = get(format!("/v1/usage?{range}"), &tenant.key).await?;
    let series = format!("/admin/tenants/{}/usage/timeseries?granularity=day&{range}", tenant.tenant_id);
    let series = get(series, &target.operator_token).await?;
    let documents = get("/v1/documents".into(), &tenant.key).await?;
    let quotas = get("/v1/quotas".into(), &tenant.key).await?;
    let me = get("/v1/tenant".into(), &tenant.key).await?;
    let analytics = format!("/admin/analytics/reconcile?tenant_id={}", tenant.tenant_id);
    let analytics = target.client.get(target.url(&analytics)).bearer_auth(&target.operator_token).send().await?;
    let analytics = match analytics.status().as_u16() {
        200 => Some(analytics.json::<Value>().await?),
        404 => None, // no ClickHouse configured
        status => bail!("GET /admin/analytics/reconcile: {status}"),
    };
    Ok(ServerView::read(&usage, &series, &documents, &quotas, &me, analytics.as_ref()))
}

/// The run's numbers, as text and as one JSON object.
struct Report {
    json: Value,
    reconciliation: BTreeMap<&'static str, u64>,
}

impl Report {
    fn new(args: &LoadtestArgs, traffic: &Traffic, elapsed: Duration, outcome: Outcome, upstream: &Upstream) -> Self {
        let mut reconciliation = outcome.mismatches;
        reconciliation.insert("server_errors", traffic.server_errors.load(Ordering::Relaxed));
        let elapsed = elapsed.as_secs_f64();
        let mut endpoints = serde_json::Map::new();
        for (op, latencies) in traffic.latencies.lock().iter_mut() {
            latencies.sort_unstable();
            endpoints.insert(
                op.name().to_owned(),
                json!({
                    "requests": latencies.len(),
                    "p50_ms": percentile_ms(latencies, 0.50),
                    "p95_ms": percentile_ms(latencies, 0.95),
                    "p99_ms": percentile_ms(latencies, 0.99),
                    "max_ms": percentile_ms(latencies, 1.0),
                }),
            );
        }
        let answered: usize = traffic.latencies.lock().values().map(Vec::len).sum();
        let json = json!({
            "tenants": args.tenants,
            "nodes": args.urls.len().max(1),
            "duration_s": elapsed,
            "target_rps": args.rate,
            "sent": args.rate * args.duration,
            "answered": answered,
            "achieved_rps": answered as f64 / elapsed,
            "endpoints": endpoints,
            "errors": *traffic.errors.lock(),
            "upstream_calls": upstream.seen().calls.values().sum::<u64>(),
            "analytics_reconciled_tenants": outcome.analytics_tenants,
            "peak_rss_mib": peak_rss_mib(),
            "reconciliation": reconciliation,
        });
        Self { json, reconciliation }
    }

    fn print(&self, as_json: bool) -> anyhow::Result<()> {
        let j = &self.json;
        let mut text = format!(
            "{} tenants on {} node(s): {} requests sent in {:.1} s, {} answered ({:.0}/s against {}/s asked); \
             {} upstream calls; peak RSS of this process {} MiB\n\n",
            j["tenants"],
            j["nodes"],
            j["sent"],
            j["duration_s"].as_f64().unwrap_or(0.0),
            j["answered"],
            j["achieved_rps"].as_f64().unwrap_or(0.0),
            j["target_rps"],
            j["upstream_calls"],
            j["peak_rss_mib"],
        );
        text.push_str("| endpoint | requests | p50 ms | p95 ms | p99 ms | max ms |\n|---|---|---|---|---|---|\n");
        for (name, e) in j["endpoints"].as_object().into_iter().flatten() {
            let ms = |k: &str| e[k].as_f64().unwrap_or(f64::NAN);
            text.push_str(&format!(
                "| {name} | {} | {:.2} | {:.2} | {:.2} | {:.2} |\n",
                e["requests"],
                ms("p50_ms"),
                ms("p95_ms"),
                ms("p99_ms"),
                ms("max_ms")
            ));
        }
        text.push_str("\nrefusals and errors (endpoint, status, code):\n");
        for (what, n) in j["errors"].as_object().into_iter().flatten() {
            text.push_str(&format!("  {what}: {n}\n"));
        }
        text.push_str("\nreconciliation (mismatches of each kind; all zero when every guarantee held):\n");
        for (kind, n) in &self.reconciliation {
            text.push_str(&format!("  {kind}: {n}\n"));
        }
        crate::print_to_stdout(text.trim_end())?;
        if as_json {
            crate::print_to_stdout(&self.json.to_string())?;
        }
        Ok(())
    }
}

fn progress(total: u64, what: &'static str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(total);
    if let Ok(style) = indicatif::ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} {per_sec} eta {eta}") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what);
    bar
}

/// The most memory this process has held (Linux `VmHWM`), in MiB.
fn peak_rss_mib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? / 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mix_names_operations_and_their_weights() {
        let mix: Mix = DEFAULT_MIX.parse().expect("the default parses");
        assert_eq!(mix.0.len(), 6);
        assert_eq!("query".parse::<Mix>(), Ok(Mix(vec![(Op::Query, 1)])));
        assert!("query=0".parse::<Mix>().is_err());
        assert!("queries=3".parse::<Mix>().is_err());
        let only_usage: Mix = "query=0,usage=2".parse().expect("parses");
        let mut rng = StdRng::seed_from_u64(7);
        assert!((0..100).all(|_| only_usage.pick(&mut rng) == Op::Usage));
    }
}
