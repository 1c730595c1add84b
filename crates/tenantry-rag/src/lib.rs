//! Answer pipelines over retrieval and a model: retrieve from the tenant's namespace in the tenant's mode,
//! assemble the prompt with the tenant's system prompt, generate with the tenant's model, and cite.
//! Everything tenant-specific comes from the `TenantContext`.

use async_trait::async_trait;
use tenantry_domain::{ProviderKind, RetrievalMode, TenantContext};
use tenantry_llm::{
    ChunkStream, ContextLengthExceeded, Conversation, LlmError, Options, Passage, Prompt, Providers, Rewrite,
    TokenUsage,
};
pub use tenantry_search::Hit;
use tracing::Instrument;

pub mod agentic;
mod hybrid;

/// Retrieval as the pipelines need it, always in the context's own namespace; the service implements it
/// over the search indexes and the store.
#[async_trait]
pub trait Retriever: Send + Sync {
    /// BM25 over the tenant's chunks.
    async fn lexical(&self, ctx: &TenantContext, query: &str, top_k: usize) -> Result<Vec<Hit>, RagError>;
    /// BM25 with pseudo-relevance feedback (the query expanded with its first hits' distinctive terms).
    async fn expanded(&self, ctx: &TenantContext, query: &str, top_k: usize) -> Result<Vec<Hit>, RagError>;
    /// Nearest chunks by embedding.
    async fn semantic(&self, ctx: &TenantContext, query: &str, top_k: usize) -> Result<Vec<Hit>, RagError>;
    /// How `advanced` weighs the three lists; they depend on what the embedder is worth.
    fn fusion(&self) -> FusionWeights {
        FusionWeights::default()
    }
}

/// How `advanced` combines its lists, and the weight of each.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct FusionWeights {
    pub method: FusionMethod,
    pub lexical: f64,
    pub expanded: f64,
    pub semantic: f64,
}

impl Default for FusionWeights {
    /// Set by `tenantry eval` on SciFact with the built-in hashing embedder (BENCHMARKS.md): a convex
    /// combination with a small weight on its vector list ranks best (nDCG@10 0.690 against 0.665 for the
    /// former RRF 1:0.3:0.3), and feedback expansion adds recall but not nDCG@10, so it is not run.
    fn default() -> Self {
        Self { method: FusionMethod::Convex, lexical: 1.0, expanded: 0.0, semantic: 0.3 }
    }
}

impl std::fmt::Display for FusionWeights {
    /// The weights as `--fusion` and `search.fusion_weights` take them (`convex:1:0:0.3`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let method = match self.method {
            FusionMethod::Rrf => "rrf",
            FusionMethod::Convex => "convex",
        };
        write!(f, "{method}:{}:{}:{}", self.lexical, self.expanded, self.semantic)
    }
}

/// How fused lists' hits are scored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FusionMethod {
    /// Weighted reciprocal-rank fusion: ranks only, no calibration between lists.
    Rrf,
    /// Convex combination of scores, each list's min-max normalised (Bruch et al. 2023).
    Convex,
}

impl FusionWeights {
    /// Parses `[METHOD:]LEXICAL:EXPANDED:SEMANTIC` (`1:0.3:0.3`, `convex:0.5:0:0.5`): an optional method
    /// (`rrf`, the default, or `convex`), then three finite, non-negative numbers, not all zero.
    pub fn parse(raw: &str) -> Option<Self> {
        let (method, weights) = match raw.trim().split_once(':') {
            Some(("rrf", rest)) => (FusionMethod::Rrf, rest),
            Some(("convex", rest)) => (FusionMethod::Convex, rest),
            _ => (FusionMethod::Rrf, raw),
        };
        let parts: Vec<f64> = weights.split(':').map(|p| p.trim().parse::<f64>().ok()).collect::<Option<_>>()?;
        let [lexical, expanded, semantic] = parts[..] else { return None };
        let valid = parts.iter().all(|w| w.is_finite() && *w >= 0.0) && parts.iter().any(|w| *w > 0.0);
        valid.then_some(Self { method, lexical, expanded, semantic })
    }
}

/// The `top_k` chunks for `query` in the context's retrieval mode: `basic` is BM25; `advanced` fuses BM25
/// and vector search (see `hybrid`); `agentic` plans steps and merges their evidence (see `agentic`).
pub async fn retrieve(
    ctx: &TenantContext,
    retriever: &dyn Retriever,
    query: &str,
    top_k: usize,
) -> Result<Vec<Hit>, RagError> {
    Ok(retrieve_with_plan(ctx, retriever, query, &[], top_k).await?.0)
}

/// `retrieve`, with the queries the tenant's model wrote for it (`rewrite_question`; none: the question
/// alone), and the steps it took (one step unless the mode is `agentic`). `advanced` fuses the question's
/// list with a list per rewording; `agentic` takes the model's queries as its plan instead of its own.
pub async fn retrieve_with_plan(
    ctx: &TenantContext,
    retriever: &dyn Retriever,
    query: &str,
    rewrites: &[String],
    top_k: usize,
) -> Result<(Vec<Hit>, Vec<String>), RagError> {
    let single = || vec![query.to_owned()];
    match ctx.retrieval_mode {
        RetrievalMode::Basic => Ok((retriever.lexical(ctx, query, top_k).await?, single())),
        RetrievalMode::Advanced if rewrites.is_empty() => {
            Ok((hybrid::retrieve(ctx, retriever, query, top_k).await?, single()))
        }
        RetrievalMode::Advanced => {
            Ok((hybrid::retrieve_reworded(ctx, retriever, query, rewrites, top_k).await?, single()))
        }
        RetrievalMode::Agentic => {
            let plan = match rewrites {
                [] => agentic::plan(query),
                written => agentic::Plan { steps: written.to_vec() },
            };
            let hits = agentic::retrieve(ctx, retriever, query, &plan, top_k).await?;
            Ok((hits, plan.steps))
        }
    }
}

/// Search queries a tenant's hosted model wrote for a question, and the tokens it took to write them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Rewritten {
    pub queries: Vec<String>,
    pub usage: TokenUsage,
}

/// The queries retrieval should search for `question` beside it, written by the tenant's model when the
/// model is a hosted one, the plan allows it (`Plan::query_rewriting`) and the mode uses them: `advanced`
/// asks for other wordings in a document's words, `agentic` for its plan of sub-questions. Otherwise, or when
/// the model fails or writes nothing usable, none: retrieval searches the question alone (and `agentic`
/// plans by rule). The tokens spent are returned either way, to be billed.
pub async fn rewrite_question(ctx: &TenantContext, providers: &Providers, question: &str) -> Rewritten {
    let rewrite = match ctx.retrieval_mode {
        RetrievalMode::Basic => return Rewritten::default(),
        RetrievalMode::Advanced => Rewrite::Wordings,
        RetrievalMode::Agentic => Rewrite::Plan,
    };
    if ctx.model.provider != ProviderKind::OpenAi || !ctx.plan.query_rewriting {
        return Rewritten::default();
    }
    let Some(prompt) = Prompt::search_queries(&ctx.model, question, rewrite) else {
        return Rewritten::default();
    };
    match providers.generate(&ctx.model, &prompt).instrument(model_span(ctx)).await {
        Ok(generation) => Rewritten { queries: search_queries(&generation.text, question), usage: generation.usage },
        Err(e) => {
            tracing::warn!(error = %e, model = %ctx.model.name, "could not rewrite the question; searching it alone");
            Rewritten::default()
        }
    }
}

/// The queries in a model's reply: one a line, without list markers or quotes, at most `agentic::MAX_STEPS`,
/// none empty, repeated, equal to the question or far longer than it (an answer, not a query).
fn search_queries(text: &str, question: &str) -> Vec<String> {
    let mut queries: Vec<String> = Vec::new();
    for line in text.lines() {
        let line = unquoted(without_list_marker(line.trim()));
        let seen = |q: &String| q.eq_ignore_ascii_case(line);
        if line.is_empty() || longer_than_a_question(line, question) || line.eq_ignore_ascii_case(question.trim()) {
            continue;
        }
        if !queries.iter().any(seen) {
            queries.push(line.to_owned());
        }
        if queries.len() == agentic::MAX_STEPS {
            break;
        }
    }
    queries
}

/// `line` without a leading list marker: "1.", "2)", "-", "*" or "•" (a query that starts with a number
/// keeps it: "72 hours notification").
fn without_list_marker(line: &str) -> &str {
    if let Some(rest) = line.strip_prefix(['-', '*', '•']) {
        return rest;
    }
    let digits = line.len() - line.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    match line[digits..].strip_prefix(['.', ')']) {
        Some(rest) if digits > 0 => rest,
        _ => line,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RagError {
    #[error("retrieval failed: {0}")]
    Retrieval(String),
    #[error(transparent)]
    Llm(#[from] LlmError),
    #[error("retrieval mode {0:?} is not available")]
    ModeUnavailable(RetrievalMode),
    #[error(transparent)]
    ContextLength(#[from] ContextLengthExceeded),
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct Citation {
    pub document_id: String,
    pub chunk_id: String,
    pub title: String,
    /// The chunk's heading path in its document (" > "-joined), empty when it has none.
    pub heading: String,
    /// The 1-based page, for paginated formats (PDF).
    pub page: Option<u64>,
    pub text: String,
    pub score: f32,
}

#[derive(Clone, Debug)]
pub struct Answer {
    pub text: String,
    pub citations: Vec<Citation>,
    /// The model that actually ran (what is billed).
    pub model: String,
    pub mode: RetrievalMode,
    pub usage: TokenUsage,
}

/// Room left for the answer when the caller names no limit.
pub const MAX_COMPLETION_TOKENS: u32 = 512;

/// The most a caller may ask for (`max_tokens`); the model's window may allow less.
pub const MAX_REQUESTED_COMPLETION_TOKENS: u32 = 16_384;

/// Retrieval done and the prompt assembled: everything that decides the request's size before any model
/// is called, so the caller can reserve the exact tokens it may use.
pub struct Prepared {
    pub prompt: Prompt,
    /// The retrieval steps taken (the question itself unless the mode planned several).
    pub steps: Vec<String>,
    hits: Vec<Hit>,
}

impl Prepared {
    /// The most tokens generation can use: the prompt as counted, plus the completion cap.
    pub fn max_tokens(&self) -> u64 {
        self.prompt.token_count() + u64::from(self.prompt.max_completion_tokens())
    }

    /// The passages `text` cites with `[n]`; if it cites none, every passage the model was given.
    pub fn cite(&self, text: &str) -> Vec<Citation> {
        cite(text, &self.hits[..self.prompt.passages().len()])
    }
}

/// Retrieves in the context's namespace and mode, and assembles the prompt within the model's window,
/// leaving room for an answer of up to `max_completion_tokens` (at most `MAX_REQUESTED_COMPLETION_TOKENS`).
pub async fn prepare(
    ctx: &TenantContext,
    retriever: &dyn Retriever,
    question: &str,
    top_k: usize,
    max_completion_tokens: u32,
) -> Result<Prepared, RagError> {
    let conversation = Conversation::question(question);
    prepare_chat(ctx, retriever, conversation, question, &[], Options::default(), top_k, max_completion_tokens).await
}

/// `prepare` for a conversation: retrieval searches for `search`, its last question as a standalone one (see
/// `standalone_question`), with the model's `rewrites` of it (see `rewrite_question`), and the prompt
/// carries the conversation and the generation options.
#[allow(clippy::too_many_arguments)]
pub async fn prepare_chat(
    ctx: &TenantContext,
    retriever: &dyn Retriever,
    conversation: Conversation,
    search: &str,
    rewrites: &[String],
    options: Options,
    top_k: usize,
    max_completion_tokens: u32,
) -> Result<Prepared, RagError> {
    let (hits, steps) = retrieve_with_plan(ctx, retriever, search, rewrites, top_k).await?;
    let passages: Vec<Passage> = hits
        .iter()
        .enumerate()
        .map(|(i, h)| Passage {
            number: i + 1,
            title: h.title.clone(),
            heading: h.heading.clone(),
            text: h.text.clone(),
        })
        .collect();
    let completion = max_completion_tokens.clamp(1, MAX_REQUESTED_COMPLETION_TOKENS);
    let prompt = Prompt::build_chat(&ctx.model, &ctx.system_prompt, conversation, passages, completion, options)?;
    Ok(Prepared { prompt, steps, hits })
}

/// A conversation's last question as retrieval should read it, and the tokens it took to write it.
#[derive(Clone, Debug, PartialEq)]
pub struct Standalone {
    pub question: String,
    /// What the model used to restate the question; zero when the rule did.
    pub usage: TokenUsage,
}

/// The conversation's last question as a standalone one, so that a follow-up ("where is its
/// headquarters?") retrieves what it is about. A hosted model restates it from the conversation (its tokens
/// are returned, to be billed); the offline model, a model configured not to (`restate_follow_ups = false`),
/// a question with no earlier one, or a model that fails or
/// answers with something that is not a question, fall back to the rule of
/// `Conversation::standalone_question` (the previous question and answer read with it).
pub async fn standalone_question(
    ctx: &TenantContext,
    providers: &Providers,
    conversation: &Conversation,
) -> Standalone {
    let by_rule = || Standalone { question: conversation.standalone_question(), usage: TokenUsage::default() };
    if ctx.model.provider != ProviderKind::OpenAi || !ctx.model.restate_follow_ups {
        return by_rule();
    }
    let Some(prompt) = Prompt::standalone(&ctx.model, conversation) else {
        return by_rule();
    };
    match providers.generate(&ctx.model, &prompt).instrument(model_span(ctx)).await {
        Ok(generation) => match restated(&generation.text, &conversation.question) {
            Some(question) => Standalone { question, usage: generation.usage },
            None => Standalone { usage: generation.usage, ..by_rule() },
        },
        Err(e) => {
            tracing::warn!(error = %e, model = %ctx.model.name, "could not restate the follow-up; searching by rule");
            by_rule()
        }
    }
}

/// The question a model's restatement holds: its first line without a label or quotes; `None` when that is
/// empty or far longer than the question it restates (an answer, not a question).
fn restated(text: &str, question: &str) -> Option<String> {
    let line = text.lines().map(str::trim).find(|l| !l.is_empty())?;
    let line =
        line.split_once(':').filter(|(label, _)| label.to_lowercase().contains("question")).map_or(line, |(_, q)| q);
    let line = unquoted(line);
    (!line.is_empty() && !longer_than_a_question(line, question)).then(|| line.to_owned())
}

/// `line` trimmed of white space and of the quotes a model may wrap a question in.
fn unquoted(line: &str) -> &str {
    line.trim().trim_matches(|c| matches!(c, '"' | '\'' | '“' | '”' | '`')).trim()
}

/// Whether what a model wrote in place of `question` is far longer than it: an answer, not a question.
fn longer_than_a_question(line: &str, question: &str) -> bool {
    line.chars().count() > question.chars().count() * 4 + 200
}

/// The span of one call to the tenant's model: its tenant, request, model and provider.
pub fn model_span(ctx: &TenantContext) -> tracing::Span {
    tracing::info_span!(
        "model",
        tenant_id = %ctx.tenant_id,
        request_id = %ctx.request_id,
        model = %ctx.model.name,
        provider = ?ctx.model.provider
    )
}

/// Generates with the context's model and cites what the answer used.
pub async fn generate(ctx: &TenantContext, providers: &Providers, prepared: Prepared) -> Result<Answer, RagError> {
    let generation = providers.generate(&ctx.model, &prepared.prompt).instrument(model_span(ctx)).await?;
    let citations = prepared.cite(&generation.text);
    Ok(Answer {
        text: generation.text,
        citations,
        model: generation.model,
        mode: ctx.retrieval_mode,
        usage: generation.usage,
    })
}

/// Starts a streamed generation with the context's model; cite with `Prepared::cite` once it is `Done`.
pub async fn generate_stream(
    ctx: &TenantContext,
    providers: &Providers,
    prepared: &Prepared,
) -> Result<ChunkStream, RagError> {
    Ok(providers.stream(&ctx.model, &prepared.prompt).instrument(model_span(ctx)).await?)
}

/// `prepare` then `generate`.
pub async fn answer(
    ctx: &TenantContext,
    retriever: &dyn Retriever,
    providers: &Providers,
    question: &str,
    top_k: usize,
) -> Result<Answer, RagError> {
    let prepared = prepare(ctx, retriever, question, top_k, MAX_COMPLETION_TOKENS).await?;
    generate(ctx, providers, prepared).await
}

/// The passages the answer cites with `[n]`; if it cites none, every passage it was given.
fn cite(text: &str, used: &[Hit]) -> Vec<Citation> {
    let cited: Vec<usize> = (1..=used.len()).filter(|n| text.contains(&format!("[{n}]"))).collect();
    let chosen: Vec<usize> = if cited.is_empty() { (1..=used.len()).collect() } else { cited };
    chosen
        .into_iter()
        .map(|n| {
            let h = &used[n - 1];
            Citation {
                document_id: h.document_id.to_string(),
                chunk_id: h.chunk_id.clone(),
                title: h.title.clone(),
                heading: h.heading.clone(),
                page: h.page,
                text: h.text.clone(),
                score: h.score,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tenantry_domain::testing::context;
    use tenantry_domain::{DocumentId, TenantId};

    #[test]
    fn search_queries_are_read_one_a_line_without_markers_repeats_or_answers() {
        let q = "How do I get my data deleted?";
        let read = |text: &str| search_queries(text, q);
        assert_eq!(
            read("1. right to erasure\n2) \"erasure of personal data\"\n- Right to Erasure\n\n* data deletion request"),
            ["right to erasure", "erasure of personal data", "data deletion request"]
        );
        assert_eq!(
            read("How do I get my data deleted?\n  \n``"),
            Vec::<String>::new(),
            "the question itself is no rewording"
        );
        assert_eq!(read(&"Erasure applies when ".repeat(30)), Vec::<String>::new(), "an answer, not a query");
        assert_eq!(read("a\nb\nc\nd\ne").len(), agentic::MAX_STEPS);
        assert_eq!(
            read("72 hours breach notification\n3) 2016/679 scope"),
            ["72 hours breach notification", "2016/679 scope"]
        );
    }

    /// Rewriting needs a hosted model, a plan that allows it and a mode that searches wordings; a model that
    /// fails leaves the question searched alone, with nothing to bill.
    #[tokio::test]
    async fn a_question_is_rewritten_only_by_a_hosted_model_on_a_plan_that_allows_it() {
        let mut ctx = context(TenantId::generate());
        ctx.retrieval_mode = RetrievalMode::Advanced;
        std::sync::Arc::make_mut(&mut ctx.plan).query_rewriting = true;
        let providers = Providers::default();
        let q = "How do I get my data deleted?";
        assert_eq!(rewrite_question(&ctx, &providers, q).await, Rewritten::default(), "the offline model");

        std::sync::Arc::make_mut(&mut ctx.model).provider = ProviderKind::OpenAi;
        // No hosted provider is configured here: the call fails, and the question is searched alone.
        assert_eq!(rewrite_question(&ctx, &providers, q).await, Rewritten::default(), "a failing model");
        ctx.retrieval_mode = RetrievalMode::Basic;
        assert_eq!(rewrite_question(&ctx, &providers, q).await, Rewritten::default(), "basic searches BM25 alone");
    }

    #[test]
    fn a_restated_question_is_its_first_line_without_label_or_quotes() {
        let q = "Where is its headquarters?";
        let said = |text: &str| restated(text, q);
        assert_eq!(said("Where is Acme's headquarters?").as_deref(), Some("Where is Acme's headquarters?"));
        assert_eq!(
            said("\n  Standalone question: \"Where is Acme's headquarters?\"\nDone.").as_deref(),
            Some("Where is Acme's headquarters?")
        );
        assert_eq!(said("Note: where is Acme's headquarters?").as_deref(), Some("Note: where is Acme's headquarters?"));
        assert_eq!(said("  \n \"\""), None, "nothing said");
        assert_eq!(said(&"Acme was founded in 1901 and ".repeat(20)), None, "an answer, not a question");
    }

    struct Fixed(Vec<Hit>);

    #[async_trait]
    impl Retriever for Fixed {
        async fn lexical(&self, _: &TenantContext, _: &str, k: usize) -> Result<Vec<Hit>, RagError> {
            Ok(self.0.iter().take(k).cloned().collect())
        }

        async fn expanded(&self, _: &TenantContext, _: &str, k: usize) -> Result<Vec<Hit>, RagError> {
            Ok(self.0.iter().take(k).cloned().collect())
        }

        async fn semantic(&self, _: &TenantContext, _: &str, k: usize) -> Result<Vec<Hit>, RagError> {
            Ok(self.0.iter().rev().take(k).cloned().collect())
        }
    }

    fn hit(text: &str) -> Hit {
        Hit {
            chunk_id: "c".into(),
            document_id: DocumentId::generate(),
            title: "T".into(),
            heading: String::new(),
            page: None,
            text: text.into(),
            score: 1.0,
        }
    }

    #[tokio::test]
    async fn cites_only_what_the_answer_used() -> Result<(), RagError> {
        let ctx = context(TenantId::generate());
        let hits = vec![hit("Cats sleep a lot."), hit("Refunds take 14 days.")];
        let retriever = Fixed(hits.clone());
        let a = answer(&ctx, &retriever, &Providers::default(), "How long do refunds take?", 5).await?;
        assert_eq!(a.citations.len(), 1);
        assert_eq!(a.citations[0].document_id, hits[1].document_id.to_string());
        assert_eq!(a.model, ctx.model.name);
        assert!(a.usage.prompt_tokens > 0 && a.usage.completion_tokens > 0);
        Ok(())
    }
}
