//! `tenantry`: the one binary. `serve` runs everything in one process; `demo` seeds a running instance
//! with tenants, documents and traffic; `openapi` prints the API description.

mod backup;
mod bench;
mod bench_cluster;
mod bench_embed;
mod bench_pages;
mod bench_retrieval;
mod bench_signup;
mod bench_webhooks;
mod demo;
mod eval;
mod eval_passages;
mod loadtest;
mod model_install;
mod otlp_metrics;
mod telemetry;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tenantry_domain::Config;
use tenantry_web::Application;

/// mimalloc rather than glibc's allocator: the request path allocates many small, short-lived objects across
/// threads, where glibc's arenas spent over a tenth of the gateway's CPU (`perf`, BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "tenantry", version, about = "Multi-tenant RAG SaaS platform in one binary")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct ServeArgs {
    /// TOML configuration file (every key has a default).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Data directory for the embedded store, indexes and uploads (overrides server.data_dir).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Address to listen on (overrides server.bind).
    #[arg(long)]
    bind: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service.
    Serve(ServeArgs),
    /// Start the service, seed three tenants with documents and queries, and print what each got.
    Demo {
        #[command(flatten)]
        serve: ServeArgs,
        /// Stop after seeding instead of serving until Ctrl-C.
        #[arg(long)]
        exit: bool,
    },
    /// Copy an embedded installation's database, key pepper and outbox into a new directory while it runs;
    /// `serve --data-dir DIR` restores from it. PostgreSQL is backed up with pg_dump (docs/OPERATIONS.md).
    Backup {
        #[command(flatten)]
        serve: ServeArgs,
        /// The directory to write (new or empty).
        #[arg(long)]
        to: PathBuf,
    },
    /// Print the OpenAPI document.
    Openapi,
    /// Provision many tenants of different plans, models, retrieval modes and prompts, drive an open-loop
    /// mix of their requests at a target rate, then reconcile what they saw with what the service recorded
    /// (usage, ledger, documents, quotas, plans, the upstream's view of models and prompts). Exits 1 when
    /// any guarantee did not hold.
    Loadtest(loadtest::LoadtestArgs),
    /// Benchmarks (see BENCHMARKS.md).
    #[command(subcommand)]
    Bench(BenchCommand),
    /// The audit trail.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Retrieval quality through the API's own ingestion and retrieval, in a scratch tenant of an embedded
    /// instance: nDCG@10 and recall@100 on a BEIR-format dataset (--dataset), or hit@k and MRR on a question
    /// set over documents (--questions with --document).
    Eval {
        /// Directory with corpus.jsonl[.gz], queries.jsonl and qrels/<split>.tsv (e.g. ../shared/data/scifact).
        #[arg(long, required_unless_present = "questions", conflicts_with = "questions")]
        dataset: Option<PathBuf>,
        /// A question set: JSONL, one {"id", "question", "answer"} a line, `answer` a verbatim span of the
        /// passage that answers the question (e.g. eval/gdpr-paraphrases.jsonl).
        #[arg(long, value_name = "FILE", requires = "document")]
        questions: Option<PathBuf>,
        /// A document the questions are asked over (PDF, HTML, Markdown or text by its extension); repeatable.
        #[arg(long, value_name = "PATH")]
        document: Vec<PathBuf>,
        /// With --questions: print, for each question whose answer is not in the top 3, what ranked first.
        #[arg(long, requires = "questions")]
        show_misses: bool,
        /// Retrieval mode: basic, advanced or agentic.
        #[arg(long, default_value = "basic")]
        mode: String,
        /// The qrels split to score.
        #[arg(long, default_value = "test")]
        split: String,
        /// Also print one JSON object with the results as the last line.
        #[arg(long)]
        json: bool,
        /// Score only the first N judged queries (by id), or the first N questions.
        #[arg(long)]
        max_queries: Option<usize>,
        /// Ingest only the first N corpus documents (queries without a relevant one among them are left out).
        #[arg(long, conflicts_with = "questions")]
        max_documents: Option<usize>,
        /// Embed with the local model in DIR (`search.embedding_model_dir`) instead of the built-in embedder.
        #[arg(long, value_name = "DIR")]
        embedding_model_dir: Option<PathBuf>,
        /// `advanced`'s fusion as [METHOD:]LEXICAL:EXPANDED:SEMANTIC, METHOD `rrf` (the default) or `convex`
        /// (e.g. 1:0.3:1, convex:1:0:0.3); repeat to score several over one ingestion (one report, and with
        /// --json one JSON line, per setting).
        #[arg(long, value_name = "[M:]L:E:S")]
        fusion: Vec<String>,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Recompute the hash chain of the audit trail in the configured database; exit 1 at the first edited,
    /// removed or reordered entry.
    Verify(ServeArgs),
}

#[derive(Subcommand)]
enum BenchCommand {
    /// The gateway's overhead per request on the full HTTP path, at fixed request rates.
    Gateway {
        /// Request rates to run, one after another (requests per second).
        #[arg(long, value_delimiter = ',', default_value = "500,1000,2000,3000,4000")]
        rates: Vec<u64>,
        /// Seconds per rate.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Most requests in flight at once.
        #[arg(long, default_value_t = 256)]
        max_in_flight: usize,
        /// Ask through `/v1/chat/completions` with a conversation of this many user turns (the question
        /// and the exchanges before it) instead of `/v1/query` with one question.
        #[arg(long)]
        turns: Option<u32>,
        /// Send every request with an `Idempotency-Key` of its own, to measure what keeping responses costs.
        #[arg(long)]
        idempotency_keys: bool,
    },
    /// The local semantic model's embedding speed on a text file's chunks (chunks/s and GFLOP/s).
    Embed {
        /// The model directory (as `search.embedding_model_dir`).
        #[arg(long)]
        model_dir: PathBuf,
        /// A plain-text file, chunked as an upload is.
        file: PathBuf,
        /// Chunks to embed per round (the file's first).
        #[arg(long, default_value_t = 64)]
        chunks: usize,
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// One vector per whole chunk instead of per 40-word window (how the model reads a chunk at most).
        #[arg(long)]
        whole: bool,
    },
    /// Ingestion throughput: uploads each file into fresh tenants and reports MB/s and pages/s.
    Ingest {
        /// Files to upload (PDF, HTML, Markdown, text).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Uploads per file.
        #[arg(long, default_value_t = 3)]
        repeat: usize,
    },
    /// Question latency per retrieval mode across many tenants, through the full query path.
    Query {
        /// Tenants, each with its own document and namespace.
        #[arg(long, default_value_t = 1)]
        tenants: usize,
        /// Questions per mode.
        #[arg(long, default_value_t = 1000)]
        queries: usize,
        #[arg(long, value_delimiter = ',', default_value = "basic,advanced,agentic")]
        modes: Vec<String>,
    },
    /// Several `tenantry serve` processes on one PostgreSQL database against the embedded store: upload and
    /// question throughput, cross-node visibility lag, an empty node's warm-up, storage per 1,000 chunks.
    Cluster {
        /// An administrative PostgreSQL URL; each setup gets a fresh database beside it.
        #[arg(long, env = "TENANTRY_TEST_POSTGRES_URL", default_value = "")]
        database_url: String,
        /// Node counts to run on PostgreSQL.
        #[arg(long, value_delimiter = ',', default_value = "1,2,3")]
        nodes: Vec<usize>,
        /// Seconds of uploads, then of questions, per setup.
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        /// Concurrent clients.
        #[arg(long, default_value_t = 8)]
        clients: usize,
        /// Tenants for the warm-up measurement (0: skip it).
        #[arg(long, default_value_t = 1000)]
        warm_tenants: usize,
        /// Documents per tenant for the warm-up measurement.
        #[arg(long, default_value_t = 10)]
        warm_documents: usize,
    },
    /// Paid signups: time from payment confirmed to tenant active (the provisioning job).
    Signup {
        #[arg(long, default_value_t = 100)]
        signups: usize,
    },
    /// Server time of the portal's and the console's requests with many tenants and a year of hourly usage.
    Pages {
        /// Tenants in all (one of them the busy one).
        #[arg(long, default_value_t = 10_000)]
        tenants: usize,
        /// Hours of usage of the busy tenant, one question each.
        #[arg(long, default_value_t = 8_760)]
        hours: usize,
        /// Tenants (of `tenants`) on a priced plan, billed every month of the year.
        #[arg(long, default_value_t = 1_000)]
        paying: usize,
        /// Requests per page.
        #[arg(long, default_value_t = 200)]
        samples: usize,
    },
    /// Outbound webhook deliveries per second, and each delivery's latency, to a receiver in this process.
    Webhooks {
        /// Tenants, one endpoint each.
        #[arg(long, default_value_t = 100)]
        tenants: usize,
        /// Events recorded at once, spread over the tenants.
        #[arg(long, default_value_t = 10_000)]
        events: usize,
        /// How long the receiver takes to answer each delivery.
        #[arg(long, default_value_t = 0)]
        receiver_ms: u64,
        /// An administrative PostgreSQL URL: run on a fresh database beside it instead of embedded SQLite.
        #[arg(long, default_value = "")]
        database_url: String,
    },
}

fn load_config(args: &ServeArgs) -> anyhow::Result<Config> {
    let mut config = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            Config::from_toml(&text).with_context(|| format!("in {}", path.display()))?
        }
        None => Config::builtin(),
    };
    if let Some(dir) = &args.data_dir {
        config.server.data_dir = dir.clone();
    }
    if let Some(bind) = &args.bind {
        config.server.bind = bind.clone();
    }
    if let Ok(token) = std::env::var("TENANTRY_OPERATOR_TOKEN") {
        if !token.is_empty() {
            config.server.operator_token = token;
        }
    }
    if let Ok(install) = std::env::var("TENANTRY_INSTALL_MODEL") {
        config.search.install_model = match install.trim().to_ascii_lowercase().as_str() {
            "0" | "off" | "false" | "no" => false,
            "1" | "on" | "true" | "yes" => true,
            other => anyhow::bail!("TENANTRY_INSTALL_MODEL={other:?}: expected on or off"),
        };
    }
    Ok(config)
}

/// Writes `text` and a newline to standard output. A reader that stops early (`tenantry openapi | head`)
/// closes the pipe: that ends the output, it is not an error (`println!` would panic).
fn print_to_stdout(text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// What `serve` prints once it listens: where the API, the portal, the console and the metrics are, and
/// where the data lives. A wildcard bind is shown as the loopback address a browser on this machine can open.
fn where_to_look(addr: std::net::SocketAddr, data_dir: &std::path::Path) -> String {
    let mut shown = addr;
    if addr.ip().is_unspecified() {
        shown.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let base = format!("http://{shown}");
    let data = std::path::absolute(data_dir).unwrap_or_else(|_| data_dir.to_owned());
    format!(
        "Tenantry is serving on {addr}\n  \
         API       {base}/v1   (described at {base}/openapi.json)\n  \
         portal    {base}/portal   (tenant admins: an API key with the admin scope)\n  \
         console   {base}/console   (operators: server.operator_token)\n  \
         metrics   {base}/metrics\n  \
         data      {}",
        data.display()
    )
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutting down");
}

/// A failure is one line per cause on stderr and exit status 1: what went wrong for the person at the
/// terminal, never a backtrace (whatever `RUST_BACKTRACE` says; a panic still prints its own).
fn main() -> std::process::ExitCode {
    disable_transparent_huge_pages();
    let ran = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(run()));
    match ran {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tenantry: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Opts this process out of transparent huge pages, before any thread starts, as Redis does. Where the
/// kernel applies them to every mapping (`enabled = always`), each allocator region first touched by a thread
/// faults in a whole 2 MiB page that the kernel zeroes first: on a fresh 2-core machine the gateway's first
/// burst at 2,000 requests/s stalled for half a second while its threads faulted in 700 MB (BENCHMARKS.md).
fn disable_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::thread::disable_transparent_huge_pages(true) {
        eprintln!("tenantry: could not opt out of transparent huge pages: {e}");
    }
}

async fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            let mut config = load_config(&args)?;
            let _telemetry = telemetry::init("info,sqlx=warn,tantivy=warn,tower_http=warn", Some(&config.telemetry))?;
            model_install::prepare(&mut config).await;
            let data_dir = config.server.data_dir.clone();
            let telemetry_config = config.telemetry.clone();
            let app = Application::build(config).await?;
            if let Some(endpoint) = telemetry::otlp_endpoint(Some(&telemetry_config)) {
                let interval = telemetry::metrics_interval(&telemetry_config);
                otlp_metrics::export(&endpoint, telemetry_config.service_name.clone(), interval, app.metrics());
            }
            tracing::info!(addr = %app.local_addr(), "tenantry serving");
            print_to_stdout(&where_to_look(app.local_addr(), &data_dir))?;
            app.run_until_stopped(shutdown_signal()).await?;
        }
        Command::Demo { serve, exit } => {
            let mut config = load_config(&serve)?;
            // The demo's results are its printed lines; only warnings and errors are logged beside them.
            let _telemetry = telemetry::init("warn,sqlx=warn,tantivy=warn", Some(&config.telemetry))?;
            if serve.data_dir.is_none() && serve.config.is_none() {
                config.server.data_dir = PathBuf::from("./tenantry-demo-data");
            }
            model_install::prepare(&mut config).await;
            demo::run(config, exit).await?;
        }
        Command::Backup { serve, to } => {
            let config = load_config(&serve)?;
            backup::run(&config, &to)?;
        }
        Command::Bench(BenchCommand::Gateway { rates, seconds, max_in_flight, turns, idempotency_keys }) => {
            bench::gateway(bench::GatewayBench { rates, seconds, max_in_flight, turns, idempotency_keys }).await?;
        }
        Command::Bench(BenchCommand::Embed { model_dir, file, chunks, rounds, whole }) => {
            let opts = bench_embed::EmbedBench { model_dir, file, chunks, rounds, whole };
            tokio::task::spawn_blocking(move || bench_embed::embed(opts)).await??;
        }
        Command::Bench(BenchCommand::Ingest { files, repeat }) => {
            bench_retrieval::ingest(bench_retrieval::IngestBench { files, repeat }).await?;
        }
        Command::Bench(BenchCommand::Cluster {
            database_url,
            nodes,
            seconds,
            clients,
            warm_tenants,
            warm_documents,
        }) => {
            let opts =
                bench_cluster::ClusterBench { database_url, nodes, seconds, clients, warm_tenants, warm_documents };
            bench_cluster::cluster(opts).await?;
        }
        Command::Bench(BenchCommand::Signup { signups }) => {
            bench_signup::signup(bench_signup::SignupBench { signups }).await?;
        }
        Command::Bench(BenchCommand::Pages { tenants, hours, paying, samples }) => {
            bench_pages::pages(bench_pages::PagesBench { tenants, hours, paying, samples }).await?;
        }
        Command::Bench(BenchCommand::Webhooks { tenants, events, receiver_ms, database_url }) => {
            let opts = bench_webhooks::WebhookBench { tenants, events, receiver_ms, database_url };
            bench_webhooks::webhooks(opts).await?;
        }
        Command::Bench(BenchCommand::Query { tenants, queries, modes }) => {
            bench_retrieval::query(bench_retrieval::QueryBench { tenants, queries, modes }).await?;
        }
        Command::Eval {
            dataset,
            questions,
            document,
            show_misses,
            mode,
            split,
            json,
            max_queries,
            max_documents,
            embedding_model_dir,
            fusion,
        } => match (dataset, questions) {
            (_, Some(questions)) => {
                let args = eval_passages::PassageArgs {
                    questions,
                    documents: document,
                    mode,
                    json,
                    max_queries,
                    embedding_model_dir,
                    fusion,
                    show_misses,
                };
                eval_passages::run(args).await?;
            }
            (Some(dataset), None) => {
                let args = eval::EvalArgs {
                    dataset,
                    mode,
                    split,
                    json,
                    max_queries,
                    max_documents,
                    embedding_model_dir,
                    fusion,
                };
                eval::run(args).await?;
            }
            (None, None) => anyhow::bail!("eval needs --dataset DIR or --questions FILE with --document PATH"),
        },
        Command::Audit(AuditCommand::Verify(args)) => {
            let config = load_config(&args)?;
            let store = tenantry_store::Store::open(&config.database.url, &config.server.data_dir).await?;
            let verdict = store.verify_audit().await?;
            store.close().await;
            match verdict {
                Ok(n) => println!("audit trail intact: {n} entries verified"),
                Err(broken) => {
                    eprintln!("audit trail BROKEN: {broken}");
                    std::process::exit(1);
                }
            }
        }
        Command::Loadtest(args) => {
            let _telemetry = telemetry::init("warn,sqlx=warn,tantivy=warn", None)?;
            loadtest::run(args).await?;
        }
        Command::Openapi => print_to_stdout(&serde_json::to_string_pretty(&tenantry_web::openapi())?)?,
    }
    Ok(())
}
