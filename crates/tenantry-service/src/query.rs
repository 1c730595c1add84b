//! Answering a question: the tenant's pipeline, then the usage it caused, recorded in the ledger with the
//! model that actually ran. Plain and streamed answers share every step but delivery: validate, pre-check,
//! retrieve and assemble the prompt, reserve the exact upper bound, generate, settle.

use futures::stream::{BoxStream, StreamExt};
use serde::Serialize;
use tenantry_domain::quota::Meter;
use tenantry_domain::{ModelSpec, RetrievalMode, TenantContext, Timestamp};
use tenantry_llm::{Chunk, Generation, TokenUsage};
pub use tenantry_llm::{Conversation, FinishReason, Options, ResponseFormat, Role, Turn};
pub use tenantry_rag::Citation;
use tenantry_rag::Prepared;
use tenantry_store::{Amounts, UsageEvent};
use tracing::Instrument;
use utoipa::ToSchema;

use crate::documents::embedding_event;
use crate::quota::Reservation;
use crate::retriever::TenantRetriever;
use crate::{ServiceError, ServiceResult, Services};

pub const MAX_QUESTION_CHARS: usize = 8_000;
pub const DEFAULT_TOP_K: usize = 5;
pub const MAX_TOP_K: usize = 50;

/// A question, the conversation around it, and how to answer it.
#[derive(Clone, Debug, Default)]
pub struct QueryRequest {
    /// The question, its history and the client's instructions (`Conversation::question` for a lone one).
    pub conversation: Conversation,
    /// Passages to retrieve (default `DEFAULT_TOP_K`).
    pub top_k: Option<usize>,
    /// A cap on the answer's tokens (default `tenantry_rag::MAX_COMPLETION_TOKENS`, at most
    /// `tenantry_rag::MAX_REQUESTED_COMPLETION_TOKENS`).
    pub max_completion_tokens: Option<u32>,
    /// The client's generation parameters, validated.
    pub options: Options,
}

impl QueryRequest {
    pub fn new(question: impl Into<String>) -> Self {
        Self { conversation: Conversation::question(&question.into()), ..Self::default() }
    }
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct QueryUsage {
    /// Prompt tokens of the answer, and of what a hosted model wrote for retrieval before it: a follow-up
    /// restated as a standalone question, the question rewritten (`query_rewriting` plans).
    pub prompt_tokens: u64,
    /// Completion tokens of the answer and of what was written for retrieval.
    pub completion_tokens: u64,
    /// Tokens an upstream embedding model (`search.embedding_model`) billed for embedding the question (or
    /// its planned steps); 0 with a local embedder.
    pub embedding_tokens: u64,
    /// Every token billed for the request: prompt, completion and embedding.
    pub total_tokens: u64,
    /// What the request cost, all of it: generation at the answering model's prices, embedding at the
    /// embedding model's.
    pub cost_micros: i64,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct QueryResult {
    pub answer: String,
    /// Why the answer ended: `stop`, `length` (cut by the token limit), `tool_calls`, …
    #[schema(value_type = String)]
    #[serde(serialize_with = "finish_reason_str")]
    pub finish_reason: FinishReason,
    /// The tool calls the model made instead of (or beside) answering, as OpenAI shapes them.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Object>>)]
    pub tool_calls: Option<serde_json::Value>,
    pub citations: Vec<Citation>,
    pub model: String,
    pub retrieval_mode: RetrievalMode,
    /// The retrieval steps taken: the question itself, or in `agentic` mode the sub-questions planned.
    pub steps: Vec<String>,
    pub usage: QueryUsage,
    pub request_id: String,
}

fn finish_reason_str<S: serde::Serializer>(reason: &FinishReason, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(reason.as_str())
}

/// What a streamed answer delivers: tokens as they are generated, then either the settled result or the
/// error that ended it (nothing is billed then).
#[derive(Debug)]
pub enum QueryEvent {
    Token(String),
    /// Tool-call deltas, as OpenAI streams them.
    ToolCalls(serde_json::Value),
    Finished(QueryResult),
    Failed(ServiceError),
}

pub type QueryStream = BoxStream<'static, QueryEvent>;

impl Services {
    pub async fn query(&self, ctx: &TenantContext, request: &QueryRequest) -> ServiceResult<QueryResult> {
        let (begun, reservation) = self.begin_query(ctx, request).await?;
        let call = self.providers().generate(&ctx.model, &begun.prepared.prompt);
        match call.instrument(tenantry_rag::model_span(ctx)).await {
            Ok(generation) => self.finish_query(ctx, reservation, &begun, generation).await,
            Err(e) => {
                self.abandon_query(ctx, reservation, &begun).await;
                Err(e.into())
            }
        }
    }

    /// A streamed answer. Errors before the first token (validation, quota, an upstream that refuses) are
    /// returned as errors; later ones end the stream with `Failed`. The generation runs to its end in its own
    /// task, so the ledger records what the upstream produced even if the client goes away mid-stream.
    pub async fn query_stream(&self, ctx: &TenantContext, request: &QueryRequest) -> ServiceResult<QueryStream> {
        let (begun, reservation) = self.begin_query(ctx, request).await?;
        let mut chunks = match tenantry_rag::generate_stream(ctx, self.providers(), &begun.prepared).await {
            Ok(chunks) => chunks,
            Err(e) => {
                self.abandon_query(ctx, reservation, &begun).await;
                return Err(e.into());
            }
        };
        let (tx, rx) = tokio::sync::mpsc::channel::<QueryEvent>(64);
        let (services, ctx) = (self.clone(), ctx.clone());
        let run = async move {
            // Sends fail only once the client has gone; the generation is still finished and billed.
            let mut client_gone = false;
            loop {
                let event = match chunks.next().await {
                    Some(Ok(Chunk::Text(text))) => QueryEvent::Token(text),
                    Some(Ok(Chunk::ToolCalls(calls))) => QueryEvent::ToolCalls(calls),
                    Some(Ok(Chunk::Done(generation))) => {
                        match services.finish_query(&ctx, reservation, &begun, generation).await {
                            Ok(result) => QueryEvent::Finished(result),
                            Err(e) => QueryEvent::Failed(e),
                        }
                        .send_to(&tx, &mut client_gone)
                        .await;
                        break;
                    }
                    Some(Err(e)) => {
                        services.abandon_query(&ctx, reservation, &begun).await;
                        QueryEvent::Failed(e.into()).send_to(&tx, &mut client_gone).await;
                        break;
                    }
                    None => {
                        services.abandon_query(&ctx, reservation, &begun).await;
                        QueryEvent::Failed(ServiceError::from(tenantry_llm::LlmError::Upstream(
                            "the stream ended without a result".into(),
                        )))
                        .send_to(&tx, &mut client_gone)
                        .await;
                        break;
                    }
                };
                event.send_to(&tx, &mut client_gone).await;
            }
            if client_gone {
                tracing::info!("client left before the streamed answer ended; usage recorded");
            }
        };
        tokio::spawn(run.instrument(tracing::Span::current()));
        Ok(futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (e, rx)) }).boxed())
    }

    /// Validates, pre-checks quota, retrieves and assembles the prompt, then reserves its exact upper bound.
    async fn begin_query(&self, ctx: &TenantContext, request: &QueryRequest) -> ServiceResult<(Begun, Reservation)> {
        let question = request.conversation.question.trim();
        if question.is_empty() {
            return Err(ServiceError::validation("question must not be empty"));
        }
        if question.chars().count() > MAX_QUESTION_CHARS {
            return Err(ServiceError::validation(format!("question must be at most {MAX_QUESTION_CHARS} characters")));
        }
        ServiceError::unless_plain_text("question", question)?;
        let top_k = request.top_k.unwrap_or(DEFAULT_TOP_K);
        if !(1..=MAX_TOP_K).contains(&top_k) {
            return Err(ServiceError::validation(format!("top_k must be between 1 and {MAX_TOP_K}")));
        }
        let max_completion = match request.max_completion_tokens {
            Some(0) => return Err(ServiceError::validation("max_tokens must be at least 1")),
            Some(n) => n.min(tenantry_rag::MAX_REQUESTED_COMPLETION_TOKENS),
            None => tenantry_rag::MAX_COMPLETION_TOKENS,
        };
        if ctx.model.provider == tenantry_domain::ProviderKind::Local {
            if let Some(param) = request.options.unsupported_offline() {
                return Err(ServiceError::new(
                    tenantry_domain::ErrorCode::UnsupportedParameter,
                    format!(
                        "`{param}` is not supported by this tenant's model `{}` (the built-in offline model)",
                        ctx.model.name
                    ),
                ));
            }
        }

        // Retrieval and prompt assembly decide the request's exact size, so quota is reserved once they are
        // done: one query plus the prompt's tokens plus the completion cap, an upper bound on what generation
        // can use. Reserving a guess first and growing it later would let concurrent requests each hold a
        // small floor and then all fail to grow. A non-atomic pre-check spares the retrieval work when the
        // quota is plainly used up; the reservation is what enforces it.
        let floor = tenantry_domain::tokens::count(question) + u64::from(max_completion);
        self.precheck(ctx, Amounts { queries: 1, tokens: floor as i64, ..Amounts::default() }).await?;
        let retriever = TenantRetriever::new(self);
        let mut conversation = request.conversation.clone();
        conversation.question = question.to_owned();
        let standalone = tenantry_rag::standalone_question(ctx, self.providers(), &conversation).await;
        let rewritten = tenantry_rag::rewrite_question(ctx, self.providers(), &standalone.question).await;
        let options = request.options.clone();
        let prepared = tenantry_rag::prepare_chat(
            ctx,
            &retriever,
            conversation,
            &standalone.question,
            &rewritten.queries,
            options,
            top_k,
            max_completion,
        )
        .await?;
        // An upstream embedder has already billed the question's embedding, and the model the restated
        // follow-up and the rewritten question: exact, so reserved as they are.
        let embedding_tokens = retriever.embedding_tokens();
        let for_retrieval = standalone.usage + rewritten.usage;
        let tokens = prepared.max_tokens() + for_retrieval.total() + embedding_tokens;
        let reservation =
            self.reserve(ctx, Amounts { queries: 1, tokens: tokens as i64, ..Amounts::default() }).await?;
        Ok((Begun { prepared, for_retrieval, embedding_tokens }, reservation))
    }

    /// Prices the generation with the model that ran (the context's: the pipeline cannot pick another) and
    /// settles it: ledger rows and counters in one transaction, replacing the reservation.
    async fn finish_query(
        &self,
        ctx: &TenantContext,
        reservation: Reservation,
        begun: &Begun,
        generation: Generation,
    ) -> ServiceResult<QueryResult> {
        let prepared = &begun.prepared;
        let model = self.catalog().model(&generation.model).unwrap_or(&ctx.model);
        // The follow-up was restated and the question rewritten by the same model: their tokens are the
        // request's too.
        let usage = generation.usage + begun.for_retrieval;
        let now = self.clock().now();
        let tokens = token_events(ctx, &generation.model, model, usage, now);
        let generation_cost: i64 = tokens.iter().map(|e| e.cost_micros).sum();
        let mut events = vec![usage_event(ctx, Meter::Queries, &generation.model, 1, 0, now)];
        events.extend(tokens);
        let mut embedding_cost = 0;
        if let Some(embedding_model) = self.embedding_model().filter(|_| begun.embedding_tokens > 0) {
            let e = embedding_event(ctx, ctx.operation_id.as_str(), embedding_model, begun.embedding_tokens, now);
            embedding_cost = e.cost_micros;
            events.push(e);
        }
        let total_tokens = usage.total() + begun.embedding_tokens;
        let actual = Amounts { queries: 1, tokens: total_tokens as i64, ..Amounts::default() };
        self.settle(ctx, Some(reservation), actual, &events).await?;
        self.query_answered(&ctx.tenant_id).await;
        tracing::info!(
            model = %generation.model,
            prompt_tokens = usage.prompt_tokens,
            completion_tokens = usage.completion_tokens,
            "query answered"
        );
        Ok(QueryResult {
            citations: prepared.cite(&generation.text),
            answer: generation.text,
            finish_reason: generation.finish_reason,
            tool_calls: generation.tool_calls,
            model: generation.model,
            retrieval_mode: ctx.retrieval_mode,
            steps: prepared.steps.clone(),
            usage: QueryUsage {
                prompt_tokens: usage.prompt_tokens,
                completion_tokens: usage.completion_tokens,
                embedding_tokens: begun.embedding_tokens,
                total_tokens,
                cost_micros: generation_cost + embedding_cost,
            },
            request_id: ctx.request_id.to_string(),
        })
    }
}

impl Services {
    /// A query whose answer failed: what the upstream billed before it (the model's restatement of a
    /// follow-up, its rewriting of the question) is settled, without the query; the rest of the reservation
    /// is released. With nothing spent, the reservation is only released.
    async fn abandon_query(&self, ctx: &TenantContext, reservation: Reservation, begun: &Begun) {
        let spent = begun.for_retrieval;
        if spent.total() == 0 {
            return;
        }
        let events = token_events(ctx, &ctx.model.name, &ctx.model, spent, self.clock().now());
        let actual = Amounts { tokens: spent.total() as i64, ..Amounts::default() };
        if let Err(e) = self.settle(ctx, Some(reservation), actual, &events).await {
            tracing::warn!(error = %e, "could not bill the tokens written for a failed query's retrieval");
        }
    }
}

/// The prompt and completion token rows of `usage` under the model named `name`, priced with `prices`.
fn token_events(
    ctx: &TenantContext,
    name: &str,
    prices: &ModelSpec,
    usage: TokenUsage,
    at: Timestamp,
) -> [UsageEvent; 2] {
    let (prompt, completion) = (usage.prompt_tokens, usage.completion_tokens);
    [
        usage_event(ctx, Meter::PromptTokens, name, prompt, prices.input_price.cost(prompt).0, at),
        usage_event(ctx, Meter::CompletionTokens, name, completion, prices.output_price.cost(completion).0, at),
    ]
}

/// One ledger row of a query, keyed by its operation and meter so that a retried settlement writes it once.
fn usage_event(
    ctx: &TenantContext,
    meter: Meter,
    model: &str,
    quantity: u64,
    cost_micros: i64,
    at: Timestamp,
) -> UsageEvent {
    UsageEvent {
        event_id: format!("{}:{}", ctx.operation_id, meter.as_str()),
        tenant_id: ctx.tenant_id.clone(),
        request_id: ctx.request_id.to_string(),
        meter,
        model: model.to_owned(),
        quantity: i64::try_from(quantity).unwrap_or(i64::MAX),
        cost_micros,
        at,
    }
}

/// A query between retrieval and generation: the assembled prompt, the tokens the model used to restate a
/// follow-up and rewrite the question, and the tokens an upstream embedder billed for its retrieval.
pub(crate) struct Begun {
    prepared: Prepared,
    for_retrieval: TokenUsage,
    embedding_tokens: u64,
}

impl QueryEvent {
    async fn send_to(self, tx: &tokio::sync::mpsc::Sender<QueryEvent>, client_gone: &mut bool) {
        if !*client_gone && tx.send(self).await.is_err() {
            *client_gone = true;
        }
    }
}

impl Services {
    /// Retrieval alone, in the context's namespace and mode, with no generation and nothing metered: what
    /// `tenantry eval` measures. Up to `MAX_EVAL_TOP_K` chunks.
    pub async fn retrieve(
        &self,
        ctx: &TenantContext,
        query: &str,
        top_k: usize,
    ) -> ServiceResult<Vec<tenantry_rag::Hit>> {
        let retriever = TenantRetriever::new(self);
        Ok(tenantry_rag::retrieve(ctx, &retriever, query, top_k.clamp(1, MAX_EVAL_TOP_K)).await?)
    }
}

pub const MAX_EVAL_TOP_K: usize = 1_000;
