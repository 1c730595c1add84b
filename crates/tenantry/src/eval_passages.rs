//! `tenantry eval --questions`: does retrieval put the passage that answers a question near the top? A
//! question set is JSONL, one `{"id", "question", "answer"}` a line, where `answer` is a verbatim span of the
//! passage that answers it (whitespace is not significant). The documents (`--document`, any format the API
//! takes) are uploaded into a scratch tenant through `upload_document`, each question is retrieved through
//! the API's own retrieval in the chosen mode, and the first chunk holding the span is the question's rank.
//! Scores: hit@1, hit@3, hit@5, hit@10 (the share of questions answered within that many chunks) and MRR
//! (the mean of 1/rank, 0 past the depth).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use serde::Deserialize;
use tenantry_domain::{DocumentId, TenantContext};
use tenantry_service::documents::{Upload, Uploaded};
use tenantry_service::Services;

use crate::eval::{parse_fusions, progress, until_searchable, Scratch};

pub struct PassageArgs {
    pub questions: PathBuf,
    pub documents: Vec<PathBuf>,
    pub mode: String,
    pub json: bool,
    pub max_queries: Option<usize>,
    pub embedding_model_dir: Option<PathBuf>,
    pub fusion: Vec<String>,
    /// Print what ranked above the answer for each question missed at 3.
    pub show_misses: bool,
}

#[derive(Deserialize)]
struct Question {
    id: String,
    question: String,
    answer: String,
}

/// Chunks retrieved per question: the rank of the answer is looked for this deep.
const DEPTH: usize = 100;
/// Below this many questions one question moves a score by more than 3 points.
const FEW_QUESTIONS: usize = 30;

pub async fn run(args: PassageArgs) -> anyhow::Result<()> {
    let mut questions = read_questions(&args.questions)?;
    questions.truncate(args.max_queries.unwrap_or(usize::MAX));
    if questions.is_empty() {
        bail!("{}: no questions to score", args.questions.display());
    }
    if questions.len() < FEW_QUESTIONS {
        eprintln!(
            "warning: only {} questions; each moves hit@k by {:.1} points, so small differences are noise",
            questions.len(),
            100.0 / questions.len() as f64
        );
    }
    if args.documents.is_empty() {
        bail!("--questions needs the documents they are asked over (--document PATH, repeatable)");
    }
    let mut fusion = parse_fusions(&args.fusion)?;

    let Scratch { services, ctx, embedder, dir: _dir } =
        Scratch::start(args.embedding_model_dir.as_deref(), &args.mode).await?;

    let started = Instant::now();
    let mut ids = Vec::with_capacity(args.documents.len());
    let mut chunks = 0;
    for (done, path) in args.documents.iter().enumerate() {
        progress(&format!("ingesting {} ({} of {})", path.display(), done + 1, args.documents.len()));
        let (id, count) = upload(&services, &ctx, path).await?;
        ids.push(id);
        chunks += count;
    }
    until_searchable(&services, &ctx).await?;
    let ingest_seconds = started.elapsed().as_secs_f64();
    let unreachable = unreachable(&services, &ctx, &ids, &questions).await?;
    for id in &unreachable {
        eprintln!("warning: question {id}: no chunk holds its answer whole, so it counts as a miss");
    }

    if fusion.is_empty() {
        fusion.push(services.fusion_weights());
    }
    for weights in fusion {
        services.set_fusion_weights(weights);
        let ranks = rank_answers(&services, &ctx, &questions, args.show_misses).await?;
        let scores = Scores::of(&ranks);
        let missed: Vec<&str> = questions
            .iter()
            .zip(&ranks)
            .filter(|(_, rank)| rank.is_none_or(|r| r > 3))
            .map(|(q, _)| q.id.as_str())
            .collect();
        let fusion = (args.mode != "basic").then_some(weights);
        println!("questions      {} ({})", questions.len(), args.questions.display());
        println!("documents      {} → {chunks} chunks, ingested in {ingest_seconds:.1} s", args.documents.len());
        println!("mode           {} · embedder {embedder}", args.mode);
        if let Some(w) = fusion {
            println!("fusion         {w}");
        }
        println!(
            "hit@1 {:.3} · hit@3 {:.3} · hit@5 {:.3} · hit@10 {:.3} · MRR {:.3}",
            scores.hit[0], scores.hit[1], scores.hit[2], scores.hit[3], scores.mrr
        );
        println!("not in the top 3: {}", if missed.is_empty() { "none".into() } else { missed.join(", ") });
        if args.json {
            let report = serde_json::json!({
                "questions": questions.len(),
                "question_set": args.questions.display().to_string(),
                "mode": args.mode,
                "embedder": embedder,
                "fusion": fusion,
                "documents": args.documents.len(),
                "chunks": chunks,
                "ingest_seconds": round3(ingest_seconds),
                "hit_at_1": round3(scores.hit[0]),
                "hit_at_3": round3(scores.hit[1]),
                "hit_at_5": round3(scores.hit[2]),
                "hit_at_10": round3(scores.hit[3]),
                "mrr": round3(scores.mrr),
                "unreachable": unreachable,
                "missed_at_3": missed,
            });
            println!("{report}");
        }
    }
    services.shutdown().await;
    Ok(())
}

fn read_questions(path: &Path) -> anyhow::Result<Vec<Question>> {
    let file = std::fs::File::open(path).with_context(|| path.display().to_string())?;
    let mut out = Vec::new();
    for (n, line) in BufReader::new(file).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let q: Question = serde_json::from_str(&line).with_context(|| {
            format!("{} line {}: expected {{\"id\", \"question\", \"answer\"}}", path.display(), n + 1)
        })?;
        if normalize(&q.answer).is_empty() {
            bail!("{} line {}: the answer span is empty", path.display(), n + 1);
        }
        out.push(q);
    }
    Ok(out)
}

async fn upload(services: &Services, ctx: &TenantContext, path: &Path) -> anyhow::Result<(DocumentId, i64)> {
    let bytes = std::fs::read(path).with_context(|| path.display().to_string())?;
    let upload = Upload {
        title: None,
        file_name: path.file_name().map(|n| n.to_string_lossy().into_owned()),
        content_type: None,
        bytes,
    };
    let view = match services.upload_document(ctx, upload).await {
        Ok(Uploaded::Created(v) | Uploaded::Duplicate(v)) => v,
        Err(e) => bail!("{}: {}", path.display(), e.detail),
    };
    Ok((view.document_id, view.chunks))
}

/// The questions whose answer no stored chunk holds whole (a span cut by a chunk boundary, or text the
/// parser reads differently): no retrieval can rank them, which the report says rather than hides.
async fn unreachable(
    services: &Services,
    ctx: &TenantContext,
    ids: &[DocumentId],
    questions: &[Question],
) -> anyhow::Result<Vec<String>> {
    let docs = services.store().documents_to_index(&ctx.tenant_id, ids).await?;
    let texts: Vec<String> = docs.iter().flat_map(|d| d.chunks.iter().map(|c| normalize(&c.text))).collect();
    Ok(questions
        .iter()
        .filter(|q| {
            let answer = normalize(&q.answer);
            !texts.iter().any(|t| t.contains(&answer))
        })
        .map(|q| q.id.clone())
        .collect())
}

/// Each question's rank (1-based) of the first retrieved chunk holding its answer, within `DEPTH`.
async fn rank_answers(
    services: &Services,
    ctx: &TenantContext,
    questions: &[Question],
    show_misses: bool,
) -> anyhow::Result<Vec<Option<usize>>> {
    let mut ranks = Vec::with_capacity(questions.len());
    for q in questions {
        let answer = normalize(&q.answer);
        let hits = services.retrieve(ctx, &q.question, DEPTH).await.map_err(|e| anyhow::anyhow!("{}", e.detail))?;
        let rank = hits.iter().position(|h| normalize(&h.text).contains(&answer)).map(|i| i + 1);
        if show_misses && rank.is_none_or(|r| r > 3) {
            eprintln!("{} ({}): {:?}, answer at {rank:?}", q.id, q.question, q.answer);
            for hit in hits.iter().take(3) {
                let start: String = hit.text.chars().take(100).collect();
                eprintln!("    [{}] {start}", hit.heading);
            }
        }
        ranks.push(rank);
    }
    Ok(ranks)
}

struct Scores {
    /// hit@1, hit@3, hit@5, hit@10.
    hit: [f64; 4],
    mrr: f64,
}

impl Scores {
    fn of(ranks: &[Option<usize>]) -> Self {
        let n = ranks.len().max(1) as f64;
        let within = |k: usize| ranks.iter().filter(|r| r.is_some_and(|r| r <= k)).count() as f64 / n;
        let mrr = ranks.iter().map(|r| r.map_or(0.0, |r| 1.0 / r as f64)).sum::<f64>() / n;
        Self { hit: [within(1), within(3), within(5), within(10)], mrr }
    }
}

/// Lower-cased with runs of whitespace made one space, so a span matches however the parser broke its lines.
fn normalize(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase()
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_count_hits_within_each_cut_off_and_the_reciprocal_rank() {
        let s = Scores::of(&[Some(1), Some(3), Some(7), None]);
        assert_eq!(s.hit, [0.25, 0.5, 0.5, 0.75]);
        assert!((s.mrr - (1.0 + 1.0 / 3.0 + 1.0 / 7.0) / 4.0).abs() < 1e-12);
    }

    #[test]
    fn a_span_matches_across_line_breaks_and_case() {
        assert_eq!(normalize("  The Right\n to   object "), "the right to object");
        assert!(normalize("… shall have the right\nto object at any time").contains(&normalize("Right to object")));
    }
}
