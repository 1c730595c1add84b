//! `tenantry eval`: retrieval quality on a BEIR-format dataset (corpus.jsonl[.gz], queries.jsonl,
//! qrels/<split>.tsv), measured through the same ingestion and retrieval code the API uses. The corpus is
//! uploaded into a scratch tenant of an embedded instance in a temporary directory; each query is retrieved
//! in the chosen mode; chunk hits are pooled to documents by their best rank. Metrics are the standard ones:
//! nDCG@10 with linear gains (trec_eval's `ndcg_cut_10`) and recall@100, averaged over the split's queries.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use serde::Deserialize;
use tenantry_domain::config::{PlanConfig, Quotas};
use tenantry_domain::lifecycle::EndpointClass;
use tenantry_domain::{Config, RequestId, TenantContext};
use tenantry_rag::FusionWeights;
use tenantry_service::documents::{DocumentStatus, Upload, Uploaded};
use tenantry_service::gateway::Scope;
use tenantry_service::tenants::{ConfigUpdate, SignupRequest};
use tenantry_service::Services;

pub struct EvalArgs {
    pub dataset: PathBuf,
    pub mode: String,
    pub split: String,
    pub json: bool,
    pub max_queries: Option<usize>,
    pub max_documents: Option<usize>,
    /// A local embedding model for the vector leg; `None`: the built-in embedder.
    pub embedding_model_dir: Option<PathBuf>,
    /// `advanced`'s fusions to score, each over the same ingested corpus
    /// (`[METHOD:]LEXICAL:EXPANDED:SEMANTIC`); empty: the configured one.
    pub fusion: Vec<String>,
}

#[derive(Deserialize)]
struct CorpusDoc {
    #[serde(rename = "_id")]
    id: String,
    #[serde(default)]
    title: String,
    text: String,
}

#[derive(Deserialize)]
struct QueryLine {
    #[serde(rename = "_id")]
    id: String,
    text: String,
}

/// Chunks retrieved per query; pooled to documents, the first 100 documents are scored.
const CHUNK_DEPTH: usize = 300;

pub async fn run(args: EvalArgs) -> anyhow::Result<()> {
    let corpus = read_corpus(&args.dataset)?;
    let queries = read_queries(&args.dataset.join("queries.jsonl"))?;
    let qrels = read_qrels(&args.dataset.join("qrels").join(format!("{}.tsv", args.split)))?;
    let mut judged: Vec<(&String, &HashMap<String, u32>)> = qrels.iter().collect();
    judged.sort_by(|a, b| a.0.cmp(b.0));
    judged.truncate(args.max_queries.unwrap_or(usize::MAX));
    let corpus: Vec<CorpusDoc> = corpus.into_iter().take(args.max_documents.unwrap_or(usize::MAX)).collect();
    let judged = scorable(judged, &corpus)?;

    // Checked before the (possibly long) ingestion; none given: the configured weights.
    let mut fusion = parse_fusions(&args.fusion)?;

    let Scratch { services, ctx, embedder, dir: _dir } =
        Scratch::start(args.embedding_model_dir.as_deref(), &args.mode).await?;

    let started = Instant::now();
    let mut by_document_id: HashMap<String, String> = HashMap::with_capacity(corpus.len());
    let mut chunks = 0;
    let mut last_report = Instant::now();
    for (done, doc) in corpus.iter().enumerate() {
        if last_report.elapsed().as_secs() >= 2 {
            last_report = Instant::now();
            let left = started.elapsed().as_secs_f64() / done.max(1) as f64 * (corpus.len() - done) as f64;
            progress(&format!("ingested {done} of {} documents, about {left:.0} s left", corpus.len()));
        }
        let upload = Upload {
            title: Some(if doc.title.trim().is_empty() { doc.id.clone() } else { doc.title.clone() }),
            file_name: None,
            content_type: Some("text/plain".into()),
            bytes: doc.text.clone().into_bytes(),
        };
        let view = match services.upload_document(&ctx, upload).await? {
            Uploaded::Created(v) | Uploaded::Duplicate(v) => v,
        };
        chunks += view.chunks;
        by_document_id.insert(view.document_id.to_string(), doc.id.clone());
    }
    until_searchable(&services, &ctx).await?;
    let ingest_seconds = started.elapsed().as_secs_f64();

    if fusion.is_empty() {
        fusion.push(services.fusion_weights());
    }
    let ingest = Ingested { corpus_len: corpus.len(), chunks, seconds: ingest_seconds };
    for weights in fusion {
        services.set_fusion_weights(weights);
        let scored = score(&services, &ctx, &judged, &queries, &by_document_id).await?;
        report(&args, &embedder, weights, &ingest, &scored);
    }
    services.shutdown().await;
    Ok(())
}

/// Below this many queries one query moves nDCG@10 by more than 3 points.
const FEW_QUERIES: usize = 30;

/// The judged queries with a relevant document in the (possibly cut) corpus: the others cannot score
/// anything but 0, so they are left out with a warning; none left is an error, few a warning.
fn scorable<'a>(
    judged: Vec<(&'a String, &'a HashMap<String, u32>)>,
    corpus: &[CorpusDoc],
) -> anyhow::Result<Vec<(&'a String, &'a HashMap<String, u32>)>> {
    let ingested: HashSet<&str> = corpus.iter().map(|d| d.id.as_str()).collect();
    let total = judged.len();
    let kept: Vec<_> =
        judged.into_iter().filter(|(_, relevant)| relevant.keys().any(|d| ingested.contains(d.as_str()))).collect();
    if kept.is_empty() {
        bail!(
            "too small to score: none of the {total} judged queries has a relevant document among the {} ingested",
            corpus.len()
        );
    }
    if kept.len() < total {
        eprintln!(
            "warning: {} of {total} judged queries have no relevant document among the {} ingested; scoring the other {}",
            total - kept.len(),
            corpus.len(),
            kept.len()
        );
    }
    if kept.len() < FEW_QUERIES {
        eprintln!(
            "warning: only {} queries; each moves nDCG@10 by up to {:.1} points, so small differences are noise",
            kept.len(),
            100.0 / kept.len() as f64
        );
    }
    Ok(kept)
}

struct Ingested {
    corpus_len: usize,
    chunks: i64,
    seconds: f64,
}

struct Scored {
    queries: usize,
    ndcg: f64,
    recall: f64,
    p50_ms: f64,
    p95_ms: f64,
}

/// Retrieves every judged query and scores the documents its chunks rank.
async fn score(
    services: &Services,
    ctx: &TenantContext,
    judged: &[(&String, &HashMap<String, u32>)],
    queries: &HashMap<String, String>,
    by_document_id: &HashMap<String, String>,
) -> anyhow::Result<Scored> {
    let mut ndcg = Vec::new();
    let mut recall = Vec::new();
    let mut latencies_ms = Vec::new();
    for (query_id, relevant) in judged {
        let Some(text) = queries.get(*query_id) else { bail!("query {query_id} is judged but not in queries.jsonl") };
        let t = Instant::now();
        let hits = services.retrieve(ctx, text, CHUNK_DEPTH).await?;
        latencies_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        let mut ranked: Vec<&str> = Vec::with_capacity(100);
        let mut seen = HashSet::new();
        for hit in &hits {
            if let Some(corpus_id) = by_document_id.get(hit.document_id.as_str()) {
                if seen.insert(corpus_id.as_str()) {
                    ranked.push(corpus_id);
                }
            }
            if ranked.len() == 100 {
                break;
            }
        }
        ndcg.push(ndcg_at(&ranked, relevant, 10));
        recall.push(recall_at(&ranked, relevant, 100));
    }
    let mean = |v: &[f64]| if v.is_empty() { 0.0 } else { v.iter().sum::<f64>() / v.len() as f64 };
    latencies_ms.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        latencies_ms
            .get(((latencies_ms.len() as f64 * p) as usize).min(latencies_ms.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0.0)
    };
    Ok(Scored { queries: judged.len(), ndcg: mean(&ndcg), recall: mean(&recall), p50_ms: pct(0.50), p95_ms: pct(0.95) })
}

fn report(args: &EvalArgs, embedder: &str, fusion: FusionWeights, ingest: &Ingested, scored: &Scored) {
    let fusion = (args.mode != "basic").then_some(fusion);
    let report = serde_json::json!({
        "dataset": args.dataset.display().to_string(),
        "split": args.split,
        "mode": args.mode,
        "embedder": embedder,
        "fusion": fusion,
        "queries": scored.queries,
        "documents": ingest.corpus_len,
        "chunks": ingest.chunks,
        "ndcg_at_10": round4(scored.ndcg),
        "recall_at_100": round4(scored.recall),
        "ingest_seconds": round4(ingest.seconds),
        "ingest_docs_per_second": round4(ingest.corpus_len as f64 / ingest.seconds.max(1e-9)),
        "query_p50_ms": round4(scored.p50_ms),
        "query_p95_ms": round4(scored.p95_ms),
    });
    println!("dataset        {} ({} split)", args.dataset.display(), args.split);
    println!("mode           {}", args.mode);
    println!("embedder       {embedder}");
    if let Some(w) = fusion {
        println!("fusion         {w} (method:lexical:expanded:semantic)");
    }
    println!(
        "corpus         {} documents, {} chunks, ingested in {:.1} s ({:.0} docs/s)",
        ingest.corpus_len,
        ingest.chunks,
        ingest.seconds,
        ingest.corpus_len as f64 / ingest.seconds.max(1e-9)
    );
    println!("queries        {}", scored.queries);
    println!("nDCG@10        {:.4}", scored.ndcg);
    println!("recall@100     {:.4}", scored.recall);
    println!("query latency  p50 {:.2} ms, p95 {:.2} ms", scored.p50_ms, scored.p95_ms);
    if args.json {
        println!("{report}");
    }
}

fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

/// An embedded instance with one plan big enough for any benchmark corpus, allowing every mode this build
/// serves.
pub(crate) fn eval_config(dir: &Path) -> Config {
    let mut config = Config::builtin();
    config.server.data_dir = dir.to_owned();
    let mut plan: PlanConfig =
        config.plans.iter().find(|p| p.name == "trial").cloned().unwrap_or_else(|| config.plans[0].clone());
    plan.name = "eval".into();
    plan.retrieval_modes = vec!["basic".into(), "advanced".into(), "agentic".into()];
    plan.quotas = Quotas {
        queries: u64::MAX / 4,
        tokens: u64::MAX / 4,
        documents: 10_000_000,
        storage_bytes: 1 << 40,
        requests_per_minute: u64::MAX / 4,
    };
    config.plans.push(plan);
    config
}

/// An embedded instance in a temporary directory, with one tenant on the `eval` plan in a retrieval mode.
pub(crate) struct Scratch {
    pub(crate) services: Services,
    pub(crate) ctx: TenantContext,
    /// What embeds the vectors: "built-in" or the model's directory.
    pub(crate) embedder: String,
    /// Removed when dropped.
    pub(crate) dir: tempfile::TempDir,
}

impl Scratch {
    /// Starts the instance, embedding with the local model in `model_dir` when given.
    pub(crate) async fn start(model_dir: Option<&Path>, mode: &str) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let mut config = eval_config(dir.path());
        if let Some(model_dir) = model_dir {
            config.search.embedding_model_dir = model_dir.to_owned();
        }
        let embedder = model_dir.map_or("built-in".into(), |d| d.display().to_string());
        let services = Services::start(config).await?;
        let ctx = scratch_tenant(&services, mode).await?;
        Ok(Self { services, ctx, embedder, dir })
    }
}

/// Waits until every document of the scratch tenant is searchable in every mode: a long document's vectors
/// are made by a job after its upload is answered (`TextEmbedder::chunks_in_request`), run here.
pub(crate) async fn until_searchable(services: &Services, ctx: &TenantContext) -> anyhow::Result<()> {
    loop {
        services.drain_jobs().await?;
        let indexing =
            services.list_documents(ctx).await?.iter().filter(|d| d.status == DocumentStatus::Indexing).count();
        if indexing == 0 {
            return Ok(());
        }
        if !services.store().jobs_pending(services.clock().now()).await? {
            bail!("{indexing} documents are still indexing, and no job is left to index them (see the log)");
        }
        progress(&format!("{indexing} documents still indexing"));
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// `--fusion` values, checked before any (possibly long) ingestion.
pub(crate) fn parse_fusions(raw: &[String]) -> anyhow::Result<Vec<FusionWeights>> {
    raw.iter()
        .map(|raw| {
            FusionWeights::parse(raw)
                .with_context(|| format!("--fusion {raw:?}: expected e.g. 1:0.3:0.3 or convex:1:0:0.3"))
        })
        .collect()
}

/// A progress line on standard error, where it stays out of the report (and of `--json`'s last line).
pub(crate) fn progress(line: &str) {
    eprintln!("… {line}");
}

async fn scratch_tenant(services: &Services, mode: &str) -> anyhow::Result<TenantContext> {
    Ok(scratch_tenant_named(services, "eval@tenantry.invalid", mode).await?.1)
}

/// A tenant on the `eval` plan in `mode`: its key, and a context authenticated with it.
pub(crate) async fn scratch_tenant_named(
    services: &Services,
    email: &str,
    mode: &str,
) -> anyhow::Result<(String, TenantContext)> {
    let signup = services
        .signup(SignupRequest { email: email.into(), organization: "Evaluation".into(), plan: "eval".into() })
        .await
        .map_err(|e| anyhow::anyhow!("signup: {}", e.detail))?;
    let ctx = set_mode(services, &signup.api_key, mode).await?;
    Ok((signup.api_key, ctx))
}

/// Switches the key's tenant to `mode` and returns a fresh context (contexts are snapshots).
pub(crate) async fn set_mode(services: &Services, key: &str, mode: &str) -> anyhow::Result<TenantContext> {
    let ctx = |scope| services.authenticate(Some(key), RequestId::generate(), EndpointClass::Service, scope);
    let admin = ctx(Scope::Admin).await.map_err(|e| anyhow::anyhow!("authenticate: {}", e.detail))?;
    services
        .update_config(
            &admin,
            ConfigUpdate {
                model: None,
                retrieval_mode: Some(mode.to_owned()),
                system_prompt: None,
                overage_limit_cents: None,
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("retrieval mode {mode:?}: {}", e.detail))?;
    ctx(Scope::Ingest).await.map_err(|e| anyhow::anyhow!("authenticate: {}", e.detail))
}

fn read_corpus(dataset: &Path) -> anyhow::Result<Vec<CorpusDoc>> {
    let gz = dataset.join("corpus.jsonl.gz");
    let plain = dataset.join("corpus.jsonl");
    let reader: Box<dyn Read> = if gz.exists() {
        Box::new(flate2::read::GzDecoder::new(std::fs::File::open(&gz).with_context(|| gz.display().to_string())?))
    } else {
        Box::new(std::fs::File::open(&plain).with_context(|| plain.display().to_string())?)
    };
    BufReader::new(reader)
        .lines()
        .filter(|l| l.as_ref().map_or(true, |l| !l.trim().is_empty()))
        .map(|l| Ok(serde_json::from_str(&l?)?))
        .collect()
}

fn read_queries(path: &Path) -> anyhow::Result<HashMap<String, String>> {
    let file = std::fs::File::open(path).with_context(|| path.display().to_string())?;
    let mut out = HashMap::new();
    for line in BufReader::new(file).lines() {
        let line = line?;
        if !line.trim().is_empty() {
            let q: QueryLine = serde_json::from_str(&line)?;
            out.insert(q.id, q.text);
        }
    }
    Ok(out)
}

/// `query-id<TAB>corpus-id<TAB>score` with a header line; judgments with score 0 are not relevant.
fn read_qrels(path: &Path) -> anyhow::Result<HashMap<String, HashMap<String, u32>>> {
    let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
    let mut out: HashMap<String, HashMap<String, u32>> = HashMap::new();
    for line in text.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        let mut parts = line.split('\t');
        let (Some(q), Some(d), Some(score)) = (parts.next(), parts.next(), parts.next()) else {
            bail!("malformed qrels line {line:?}");
        };
        let score: u32 = score.trim().parse().with_context(|| format!("score in {line:?}"))?;
        if score > 0 {
            out.entry(q.to_owned()).or_default().insert(d.to_owned(), score);
        }
    }
    Ok(out)
}

/// nDCG@k with linear gains: Σ rel_i / log2(i + 1) over the first k, divided by the ideal ordering's.
pub fn ndcg_at(ranked: &[&str], relevant: &HashMap<String, u32>, k: usize) -> f64 {
    let dcg: f64 = ranked
        .iter()
        .take(k)
        .enumerate()
        .map(|(i, d)| f64::from(relevant.get(*d).copied().unwrap_or(0)) / ((i + 2) as f64).log2())
        .sum();
    let mut ideal: Vec<u32> = relevant.values().copied().collect();
    ideal.sort_unstable_by(|a, b| b.cmp(a));
    let idcg: f64 = ideal.iter().take(k).enumerate().map(|(i, r)| f64::from(*r) / ((i + 2) as f64).log2()).sum();
    if idcg == 0.0 {
        0.0
    } else {
        dcg / idcg
    }
}

pub fn recall_at(ranked: &[&str], relevant: &HashMap<String, u32>, k: usize) -> f64 {
    if relevant.is_empty() {
        return 0.0;
    }
    let found = ranked.iter().take(k).filter(|d| relevant.contains_key(**d)).count();
    found as f64 / relevant.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rels(pairs: &[(&str, u32)]) -> HashMap<String, u32> {
        pairs.iter().map(|(d, r)| ((*d).to_owned(), *r)).collect()
    }

    #[test]
    fn ndcg_matches_hand_computed_values() {
        let relevant = rels(&[("a", 1), ("b", 1)]);
        assert!((ndcg_at(&["a", "b", "x"], &relevant, 10) - 1.0).abs() < 1e-12);
        // a at rank 2 only: (1/log2 3) / (1 + 1/log2 3)
        let expected = (1.0 / 3f64.log2()) / (1.0 + 1.0 / 3f64.log2());
        assert!((ndcg_at(&["x", "a"], &relevant, 10) - expected).abs() < 1e-12);
        assert_eq!(ndcg_at(&["x", "y"], &relevant, 10), 0.0);
        // Graded: the ideal puts the grade-2 document first.
        let graded = rels(&[("a", 2), ("b", 1)]);
        let expected = (1.0 + 2.0 / 3f64.log2()) / (2.0 + 1.0 / 3f64.log2());
        assert!((ndcg_at(&["b", "a"], &graded, 10) - expected).abs() < 1e-12);
        // Beyond the cut-off counts nothing.
        let late: Vec<&str> = (0..10).map(|_| "x").chain(["a"]).collect();
        assert_eq!(ndcg_at(&late, &relevant, 10), 0.0);
    }

    #[test]
    fn recall_counts_relevant_documents_found_within_k() {
        let relevant = rels(&[("a", 1), ("b", 1), ("c", 1), ("d", 1)]);
        assert_eq!(recall_at(&["a", "x", "c"], &relevant, 100), 0.5);
        assert_eq!(recall_at(&["a", "x", "c"], &relevant, 1), 0.25);
    }
}
