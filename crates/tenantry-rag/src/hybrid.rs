//! `advanced` retrieval: BM25, BM25 with pseudo-relevance feedback and vector search each return a deep
//! candidate list, fused with weighted reciprocal-rank fusion (Cormack et al. 2009: `score = Σ w / (k +
//! rank)`, k = 60), which needs no score calibration between lists; then a diversity pass keeps one document
//! from filling the answer's context with near-duplicate chunks.

use std::collections::HashMap;

use tenantry_domain::TenantContext;

use crate::{Hit, RagError, Retriever};

/// RRF's rank constant: large enough that a top rank in one list does not drown agreement across lists.
const RRF_K: f32 = 60.0;
/// Candidates taken from each list per requested result.
const DEPTH_FACTOR: usize = 4;
const MIN_DEPTH: usize = 50;
/// List weights, set by `tenantry eval` on SciFact (BENCHMARKS.md): with the built-in hashing embedder, any
/// weight on the vector list costs ranking quality, and feedback expansion raises recall but not nDCG@10,
/// so both are kept small; BM25 leads. A real semantic embedder earns a higher vector weight.
const LEXICAL_WEIGHT: f32 = 1.0;
const EXPANDED_WEIGHT: f32 = 0.3;
const SEMANTIC_WEIGHT: f32 = 0.3;
/// At most this many chunks of one document in the results while other documents remain.
const MAX_PER_DOCUMENT: usize = 3;

pub(crate) async fn retrieve(
    ctx: &TenantContext,
    retriever: &dyn Retriever,
    query: &str,
    top_k: usize,
) -> Result<Vec<Hit>, RagError> {
    let depth = (top_k * DEPTH_FACTOR).max(MIN_DEPTH);
    let (lexical, expanded, semantic) = futures::try_join!(
        retriever.lexical(ctx, query, depth),
        retriever.expanded(ctx, query, depth),
        retriever.semantic(ctx, query, depth)
    )?;
    let lists = [(&lexical[..], LEXICAL_WEIGHT), (&expanded[..], EXPANDED_WEIGHT), (&semantic[..], SEMANTIC_WEIGHT)];
    Ok(diversify(fuse_weighted(&lists), top_k))
}

/// Weighted reciprocal-rank fusion: a hit at rank r (from 0) of a list of weight w scores `w / (k + r + 1)`.
pub(crate) fn fuse_weighted(lists: &[(&[Hit], f32)]) -> Vec<Hit> {
    let mut fused: HashMap<&str, (f32, &Hit)> = HashMap::new();
    for (list, weight) in lists {
        for (rank, hit) in list.iter().enumerate() {
            let entry = fused.entry(hit.chunk_id.as_str()).or_insert((0.0, hit));
            entry.0 += weight / (RRF_K + rank as f32 + 1.0);
        }
    }
    let mut ranked: Vec<(f32, &Hit)> = fused.into_values().collect();
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.chunk_id.cmp(&b.1.chunk_id)));
    ranked.into_iter().map(|(score, hit)| Hit { score, ..hit.clone() }).collect()
}

/// Reciprocal-rank fusion of ranked lists of equal weight; the fused score replaces the lists' own scores.
pub(crate) fn fuse(lists: &[Vec<Hit>]) -> Vec<Hit> {
    let weighted: Vec<(&[Hit], f32)> = lists.iter().map(|l| (&l[..], 1.0)).collect();
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
    fn agreement_across_lists_outranks_a_single_top_rank() {
        let d = DocumentId::generate();
        let lexical = vec![hit("a", &d), hit("b", &d), hit("c", &d)];
        let semantic = vec![hit("x", &d), hit("b", &d), hit("c", &d)];
        let ids: Vec<String> = fuse(&[lexical, semantic]).into_iter().map(|h| h.chunk_id).collect();
        assert_eq!(ids, ["b", "c", "a", "x"]);
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
