//! Answering a question: the tenant's pipeline, then the usage it caused, recorded in the ledger with the
//! model that actually ran.

use serde::Serialize;
use tenantry_domain::quota::Meter;
use tenantry_domain::{RetrievalMode, TenantContext};
use tenantry_rag::Citation;
use tenantry_store::{Amounts, UsageEvent};
use utoipa::ToSchema;

use crate::retriever::TenantRetriever;
use crate::{ServiceError, ServiceResult, Services};

pub const MAX_QUESTION_CHARS: usize = 8_000;
pub const DEFAULT_TOP_K: usize = 5;
pub const MAX_TOP_K: usize = 50;

#[derive(Debug, Serialize, ToSchema)]
pub struct QueryUsage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    pub cost_micros: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct QueryResult {
    pub answer: String,
    pub citations: Vec<Citation>,
    pub model: String,
    pub retrieval_mode: RetrievalMode,
    pub usage: QueryUsage,
    pub request_id: String,
}

impl Services {
    pub async fn query(&self, ctx: &TenantContext, question: &str, top_k: Option<usize>) -> ServiceResult<QueryResult> {
        let question = question.trim();
        if question.is_empty() {
            return Err(ServiceError::validation("question must not be empty"));
        }
        if question.chars().count() > MAX_QUESTION_CHARS {
            return Err(ServiceError::validation(format!("question must be at most {MAX_QUESTION_CHARS} characters")));
        }
        let top_k = top_k.unwrap_or(DEFAULT_TOP_K);
        if !(1..=MAX_TOP_K).contains(&top_k) {
            return Err(ServiceError::validation(format!("top_k must be between 1 and {MAX_TOP_K}")));
        }

        // Retrieval and prompt assembly decide the request's exact size, so quota is reserved once they are
        // done: one query plus the prompt's tokens plus the completion cap, an upper bound on what generation
        // can use. Reserving a guess first and growing it later would let concurrent requests each hold a
        // small floor and then all fail to grow. A non-atomic pre-check spares the retrieval work when the
        // quota is plainly used up; the reservation is what enforces it.
        let floor = tenantry_domain::tokens::count(question) + u64::from(tenantry_rag::MAX_COMPLETION_TOKENS);
        self.precheck(ctx, Amounts { queries: 1, tokens: floor as i64, ..Amounts::default() }).await?;
        let retriever = TenantRetriever { services: self };
        let prepared = tenantry_rag::prepare(ctx, &retriever, question, top_k).await?;
        let reservation = self
            .reserve(ctx, Amounts { queries: 1, tokens: prepared.max_tokens() as i64, ..Amounts::default() })
            .await?;
        let answer = tenantry_rag::generate(ctx, self.providers(), prepared).await?;

        // Price with the model that ran, which is the context's model: the pipeline cannot pick another.
        let model = self.catalog().model(&answer.model).unwrap_or(&ctx.model);
        let prompt_cost = model.input_price.cost(answer.usage.prompt_tokens);
        let completion_cost = model.output_price.cost(answer.usage.completion_tokens);
        let now = self.clock().now();
        let event = |meter: Meter, quantity: u64, cost: i64| UsageEvent {
            event_id: format!("{}:{}", ctx.operation_id, meter.as_str()),
            tenant_id: ctx.tenant_id.clone(),
            request_id: ctx.request_id.to_string(),
            meter,
            model: answer.model.clone(),
            quantity: quantity as i64,
            cost_micros: cost,
            at: now,
        };
        let events = [
            event(Meter::Queries, 1, 0),
            event(Meter::PromptTokens, answer.usage.prompt_tokens, prompt_cost.0),
            event(Meter::CompletionTokens, answer.usage.completion_tokens, completion_cost.0),
        ];
        let actual = Amounts { queries: 1, tokens: answer.usage.total() as i64, ..Amounts::default() };
        self.settle(ctx, Some(reservation), actual, &events).await?;
        tracing::info!(
            model = %answer.model,
            prompt_tokens = answer.usage.prompt_tokens,
            completion_tokens = answer.usage.completion_tokens,
            "query answered"
        );

        Ok(QueryResult {
            answer: answer.text,
            citations: answer.citations,
            model: answer.model,
            retrieval_mode: answer.mode,
            usage: QueryUsage {
                prompt_tokens: answer.usage.prompt_tokens,
                completion_tokens: answer.usage.completion_tokens,
                total_tokens: answer.usage.total(),
                cost_micros: (prompt_cost + completion_cost).0,
            },
            request_id: ctx.request_id.to_string(),
        })
    }
}
