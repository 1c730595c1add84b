//! Retrieval for the pipelines: catch the context's namespace up with the database, search it off the async
//! runtime, then drop hits whose document row is gone (deleted since the namespace last caught up).

use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use tenantry_domain::{DocumentId, TenantContext};
use tenantry_llm::LlmError;
use tenantry_rag::{FusionMethod, FusionWeights, Hit, RagError, Retriever};
use tenantry_search::{SearchError, SearchIndexes};

use crate::Services;

/// `advanced`'s fusion with the local semantic model (all-MiniLM-L6-v2), from `tenantry eval` on SciFact
/// (BENCHMARKS.md): its vector list earns the same weight as BM25's (nDCG@10 0.736; a lighter BM25, which
/// the paraphrased questions prefer, scores 0.729 at 0.5 and 0.714 at 0.2), a convex combination of
/// normalised scores ranks better than RRF, and feedback expansion adds nothing (so it is not run).
pub(crate) const SEMANTIC_MODEL_FUSION: FusionWeights =
    FusionWeights { method: FusionMethod::Convex, lexical: 1.0, expanded: 0.0, semantic: 1.0 };

pub(crate) struct TenantRetriever<'a> {
    services: &'a Services,
    /// Tokens an upstream embedder billed for this retriever's queries (agentic mode embeds several).
    embedding_tokens: AtomicU64,
    /// Whether the namespace was caught up with the database for this retrieval (once is enough).
    synced: std::sync::atomic::AtomicBool,
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Lexical,
    Expanded,
    Semantic,
}

impl<'a> TenantRetriever<'a> {
    pub(crate) fn new(services: &'a Services) -> Self {
        Self { services, embedding_tokens: AtomicU64::new(0), synced: Default::default() }
    }

    /// What an upstream embedder billed for the retrieval so far (0 with a local embedder).
    pub(crate) fn embedding_tokens(&self) -> u64 {
        self.embedding_tokens.load(Ordering::Relaxed)
    }

    #[tracing::instrument(name = "retrieval", skip_all, fields(
        tenant_id = %ctx.tenant_id, request_id = %ctx.request_id, list = ?kind, top_k
    ))]
    async fn run(&self, kind: Kind, ctx: &TenantContext, query: &str, top_k: usize) -> Result<Vec<Hit>, RagError> {
        // Documents committed through any node before this question are in the namespace before it searches.
        if !self.synced.swap(true, Ordering::Relaxed) {
            if let Err(e) = self.services.sync_index(&ctx.tenant_id).await {
                tracing::warn!(error = %e.detail, "could not catch the index up; searching it as it is");
            }
        }
        let search = self.services.search().clone();
        let (owned_ctx, owned_query) = (ctx.clone(), query.to_owned());
        let (hits, billed) = tokio::task::spawn_blocking(move || {
            let search: &SearchIndexes = &search;
            match kind {
                Kind::Lexical => search.search(&owned_ctx, &owned_query, top_k).map(|hits| (hits, 0)),
                Kind::Expanded => search.search_expanded(&owned_ctx, &owned_query, top_k).map(|hits| (hits, 0)),
                Kind::Semantic => search.semantic(&owned_ctx, &owned_query, top_k),
            }
        })
        .await
        .map_err(|e| RagError::Retrieval(e.to_string()))?
        .map_err(|e| match e {
            SearchError::Embed(e) => RagError::Llm(LlmError::Upstream(e.to_string())),
            other => RagError::Retrieval(other.to_string()),
        })?;
        self.embedding_tokens.fetch_add(billed, Ordering::Relaxed);
        let mut ids: Vec<DocumentId> = hits.iter().map(|h| h.document_id.clone()).collect();
        ids.sort();
        ids.dedup();
        let live = self
            .services
            .store()
            .live_documents(&ctx.tenant_id, &ids)
            .await
            .map_err(|e| RagError::Retrieval(e.to_string()))?;
        Ok(hits.into_iter().filter(|h| live.contains(&h.document_id)).collect())
    }
}

#[async_trait]
impl Retriever for TenantRetriever<'_> {
    async fn lexical(&self, ctx: &TenantContext, query: &str, top_k: usize) -> Result<Vec<Hit>, RagError> {
        self.run(Kind::Lexical, ctx, query, top_k).await
    }

    async fn expanded(&self, ctx: &TenantContext, query: &str, top_k: usize) -> Result<Vec<Hit>, RagError> {
        self.run(Kind::Expanded, ctx, query, top_k).await
    }

    async fn semantic(&self, ctx: &TenantContext, query: &str, top_k: usize) -> Result<Vec<Hit>, RagError> {
        self.run(Kind::Semantic, ctx, query, top_k).await
    }

    fn fusion(&self) -> FusionWeights {
        self.services.fusion_weights()
    }
}

impl Services {
    /// `advanced`'s fusion weights now.
    pub fn fusion_weights(&self) -> FusionWeights {
        *self.inner.fusion.read()
    }

    /// Changes `advanced`'s fusion weights for the next queries (`tenantry eval --fusion` compares several on
    /// one ingested corpus).
    pub fn set_fusion_weights(&self, weights: FusionWeights) {
        *self.inner.fusion.write() = weights;
    }
}
