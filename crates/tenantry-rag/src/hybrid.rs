//! `advanced` retrieval: BM25, BM25 with pseudo-relevance feedback and vector search each return a deep
//! candidate list, fused by the method and weights of `Retriever::fusion`: weighted reciprocal-rank fusion
//! (Cormack et al. 2009: `score = Σ w / (k + rank)`, k = 60), which needs no score calibration between
//! lists, or a convex combination of min-max normalised scores (Bruch et al. 2023), which keeps how far
//! apart the scores are and measured better on SciFact (BENCHMARKS.md); then a diversity pass keeps one
//! document from filling the answer's context with near-duplicate chunks.

use std::collections::HashMap;

use tenantry_domain::TenantContext;

use crate::{FusionMethod, Hit, RagError, Retriever};

/// RRF's rank constant: large enough that a top rank in one list does not drown agreement across lists.
const RRF_K: f32 = 60.0;
/// Candidates taken from each list per requested result.
const DEPTH_FACTOR: usize = 4;
const MIN_DEPTH: usize = 50;
/// At most this many chunks of one document in the results while other documents remain.
const MAX_PER_DOCUMENT: usize = 3;

pub(crate) async fn retrieve(
    ctx: &TenantContext,
    retriever: &dyn Retriever,
    query: &str,
    top_k: usize,
) -> Result<Vec<Hit>, RagError> {
    let depth = (top_k * DEPTH_FACTOR).max(MIN_DEPTH);
    let w = retriever.fusion();
    let (lexical, expanded, semantic) = futures::try_join!(
        searched_if(w.lexical, retriever.lexical(ctx, query, depth)),
        searched_if(w.expanded, retriever.expanded(ctx, query, depth)),
        searched_if(w.semantic, retriever.semantic(ctx, query, depth)),
    )?;
    let lists = [(&lexical[..], w.lexical), (&expanded[..], w.expanded), (&semantic[..], w.semantic)];
    let fused = match w.method {
        FusionMethod::Rrf => fuse_weighted(&lists),
        FusionMethod::Convex => fuse_convex(&lists),
    };
    Ok(diversify(fused, top_k))
}

/// `retrieve` for the question and for each of its rewordings, fused by reciprocal rank with every wording
/// weighing the same (RAG-Fusion): a passage that several wordings find rises above one only the question's
/// words find. Then diversified.
pub(crate) async fn retrieve_reworded(
    ctx: &TenantContext,
    retriever: &dyn Retriever,
    query: &str,
    rewordings: &[String],
    top_k: usize,
) -> Result<Vec<Hit>, RagError> {
    let depth = (top_k * DEPTH_FACTOR).max(MIN_DEPTH);
    let mut lists = vec![retrieve(ctx, retriever, query, depth).await?];
    for rewording in rewordings {
        lists.push(retrieve(ctx, retriever, rewording, depth).await?);
    }
    Ok(diversify(fuse(&lists), top_k))
}

/// The list, unless its weight is zero: then it is not searched at all (a future does nothing until awaited).
async fn searched_if(
    weight: f64,
    search: impl std::future::Future<Output = Result<Vec<Hit>, RagError>>,
) -> Result<Vec<Hit>, RagError> {
    if weight > 0.0 {
        search.await
    } else {
        Ok(Vec::new())
    }
}

/// Weighted reciprocal-rank fusion: a hit at rank r (from 0) of a list of weight w scores `w / (k + r + 1)`.
pub(crate) fn fuse_weighted(lists: &[(&[Hit], f64)]) -> Vec<Hit> {
    let mut fused: HashMap<&str, (f32, &Hit)> = HashMap::new();
    for (list, weight) in lists {
        for (rank, hit) in list.iter().enumerate() {
            let entry = fused.entry(hit.chunk_id.as_str()).or_insert((0.0, hit));
            entry.0 += (*weight as f32) / (RRF_K + rank as f32 + 1.0);
        }
    }
    ranked(fused)
}

/// Convex combination: each list's scores min-max normalised to [0, 1] over the list, then `Σ w · s`; a hit
/// a list did not return adds nothing from it. Unlike RRF it keeps how far apart the scores are, so a
/// clear winner in one list is not flattened to its rank.
pub(crate) fn fuse_convex(lists: &[(&[Hit], f64)]) -> Vec<Hit> {
    let mut fused: HashMap<&str, (f64, &Hit)> = HashMap::new();
    for (list, weight) in lists {
        let (lo, hi) = list.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), h| {
            (lo.min(f64::from(h.score)), hi.max(f64::from(h.score)))
        });
        let span = hi - lo;
        for hit in list.iter() {
            let normalised = if span > 0.0 { (f64::from(hit.score) - lo) / span } else { 1.0 };
            fused.entry(hit.chunk_id.as_str()).or_insert((0.0, hit)).0 += weight * normalised;
        }
    }
    ranked(fused)
}

/// Fused hits, best first (ties by chunk id, so the order is stable), each carrying its fused score.
fn ranked<S: Copy + Into<f64>>(fused: HashMap<&str, (S, &Hit)>) -> Vec<Hit> {
    let mut ranked: Vec<(f64, &Hit)> = fused.into_values().map(|(score, hit)| (score.into(), hit)).collect();
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.chunk_id.cmp(&b.1.chunk_id)));
    ranked.into_iter().map(|(score, hit)| Hit { score: score as f32, ..hit.clone() }).collect()
}

/// Reciprocal-rank fusion of ranked lists of equal weight; the fused score replaces the lists' own scores.
pub(crate) fn fuse(lists: &[Vec<Hit>]) -> Vec<Hit> {
    let weighted: Vec<(&[Hit], f64)> = lists.iter().map(|l| (&l[..], 1.0)).collect();
    fuse_weighted(&weighted)
}

/// The first `top_k` hits, passing over a document's chunks beyond `MAX_PER_DOCUMENT` while other documents'
/// chunks remain; those come back at the end if the list would otherwise be short.
pub(crate) fn diversify(ranked: Vec<Hit>, top_k: usize) -> Vec<Hit> {
    let mut per_document: HashMap<String, usize> = HashMap::new();
    let (mut kept, mut deferred) = (Vec::with_capacity(top_k), Vec::new());
    for hit in ranked {
        let seen = per_document.entry(hit.document_id.to_string()).or_default();
        *seen += 1;
        if *seen <= MAX_PER_DOCUMENT {
            kept.push(hit);
        } else {
            deferred.push(hit);
        }
        if kept.len() == top_k {
            return kept;
        }
    }
    kept.extend(deferred.into_iter().take(top_k.saturating_sub(kept.len())));
    kept
}

#[cfg(test)]
mod tests {
    use super::*;
    use tenantry_domain::DocumentId;

    fn hit(chunk: &str, doc: &DocumentId) -> Hit {
        Hit {
            chunk_id: chunk.into(),
            document_id: doc.clone(),
            title: String::new(),
            heading: String::new(),
            page: None,
            text: String::new(),
            score: 0.0,
        }
    }

    #[test]
    fn fusion_weights_parse_three_non_negative_numbers() {
        let w = crate::FusionWeights::parse("1:0.3:0.25").expect("valid");
        assert_eq!((w.method, w.lexical, w.expanded, w.semantic), (FusionMethod::Rrf, 1.0, 0.3, 0.25));
        let w = crate::FusionWeights::parse("convex:0.5:0:0.5").expect("valid");
        assert_eq!((w.method, w.lexical, w.expanded, w.semantic), (FusionMethod::Convex, 0.5, 0.0, 0.5));
        assert_eq!(crate::FusionWeights::parse("rrf:1:0:1").map(|w| w.method), Some(FusionMethod::Rrf));
        for bad in ["", "1:0.3", "1:0.3:0.3:1", "1:-1:0", "0:0:0", "1:x:0", "1:NaN:0", "inf:0:0", "cc:1:0:1", "convex:"]
        {
            assert_eq!(crate::FusionWeights::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn agreement_across_lists_outranks_a_single_top_rank() {
        let d = DocumentId::generate();
        let lexical = vec![hit("a", &d), hit("b", &d), hit("c", &d)];
        let semantic = vec![hit("x", &d), hit("b", &d), hit("c", &d)];
        let ids: Vec<String> = fuse(&[lexical, semantic]).into_iter().map(|h| h.chunk_id).collect();
        assert_eq!(ids, ["b", "c", "a", "x"]);
    }

    #[test]
    fn convex_fusion_keeps_how_far_apart_the_scores_are() {
        let d = DocumentId::generate();
        let scored = |id: &str, score: f32| Hit { score, ..hit(id, &d) };
        // "a" leads BM25 by far; "b" is a close second in both lists. RRF, seeing ranks only, puts "b" first.
        let lexical = vec![scored("a", 30.0), scored("b", 11.0), scored("d", 10.5), scored("c", 10.0)];
        let semantic = vec![scored("c", 0.80), scored("b", 0.79), scored("d", 0.78), scored("a", 0.70)];
        let rrf: Vec<String> =
            fuse_weighted(&[(&lexical, 1.0), (&semantic, 1.0)]).into_iter().map(|h| h.chunk_id).collect();
        assert_eq!(rrf[0], "b");
        let convex = fuse_convex(&[(&lexical, 1.0), (&semantic, 1.0)]);
        let ids: Vec<&str> = convex.iter().map(|h| h.chunk_id.as_str()).collect();
        assert_eq!(ids, ["a", "c", "b", "d"]);
        // Scores are the weighted sums of min-max normalised scores: "a" is 1 + 0, "c" 0 + 1, "b" 0.05 + 0.9.
        assert!((convex[0].score - 1.0).abs() < 1e-6 && (convex[2].score - 0.95).abs() < 1e-3, "{convex:?}");
        // A list of equal scores counts every hit fully; a weight of zero counts nothing.
        let flat = vec![scored("x", 2.0), scored("y", 2.0)];
        let fused = fuse_convex(&[(&flat, 0.5), (&lexical, 0.0)]);
        assert!(fused.iter().filter(|h| h.chunk_id == "x" || h.chunk_id == "y").all(|h| h.score == 0.5));
        assert!(fused.iter().filter(|h| h.chunk_id == "a").all(|h| h.score == 0.0));
    }

    #[test]
    fn one_document_cannot_fill_the_results_while_others_remain() {
        let (big, small) = (DocumentId::generate(), DocumentId::generate());
        let mut ranked: Vec<Hit> = (0..6).map(|i| hit(&format!("big{i}"), &big)).collect();
        ranked.push(hit("small0", &small));
        let ids: Vec<String> = diversify(ranked.clone(), 5).into_iter().map(|h| h.chunk_id).collect();
        assert_eq!(ids, ["big0", "big1", "big2", "small0", "big3"]);
        assert_eq!(diversify(ranked, 10).len(), 7, "deferred hits fill a short list");
    }
}
