//! Vectors from an embedding model on an OpenAI-compatible `POST /embeddings` (`search.embedding_model`),
//! behind the search indexes' `TextEmbedder`. The indexes embed on blocking threads (tantivy and the vector
//! files are blocking work), so this adapter waits there for the HTTP call, which runs on the service's
//! runtime; it is never called from a runtime worker. Every vector is checked against the configured length
//! and normalised to unit length (the vector index ranks by dot product), and the tokens the upstream
//! reports are returned for metering.

use std::sync::Arc;

use tenantry_domain::quota::Meter;
use tenantry_domain::{tokens, ErrorCode, ModelSpec, TenantContext};
use tenantry_llm::{Embedder, OpenAiCompatible, OpenAiEmbedder};
use tenantry_search::embed::{EmbedError, Metered, TextEmbedder};
use tokio::runtime::Handle;

/// Inputs per upstream call. OpenAI takes up to 2,048 inputs and 300,000 tokens per request; 64 chunks of a
/// few hundred tokens stay far inside both and keep each call (and its retry) short.
const INPUTS_PER_CALL: usize = 64;

pub(crate) struct UpstreamEmbedder {
    embedder: Arc<dyn Embedder>,
    runtime: Handle,
    name: String,
    dimensions: usize,
}

impl UpstreamEmbedder {
    /// An embedder for `model`, whose vectors have `dimensions` entries; calls run on `runtime`.
    pub(crate) fn new(model: &ModelSpec, dimensions: usize, runtime: Handle) -> Self {
        let embedder = Arc::new(OpenAiEmbedder::new(OpenAiCompatible::default(), model.clone()));
        Self::over(embedder, &model.upstream_model, dimensions, runtime)
    }

    fn over(embedder: Arc<dyn Embedder>, upstream_model: &str, dimensions: usize, runtime: Handle) -> Self {
        // The vectors' identity is the upstream model and length, not our name for it or its URL: renaming the
        // entry or moving it behind a proxy keeps the vectors; another model re-embeds (`reembed` jobs).
        Self { embedder, runtime, name: format!("upstream:{upstream_model}:{dimensions}"), dimensions }
    }

    fn call(&self, texts: &[&str]) -> Result<(Vec<Vec<f32>>, u64), EmbedError> {
        let owned: Vec<String> = texts.iter().map(|t| (*t).to_owned()).collect();
        let reply = self.runtime.block_on(self.embedder.embed(&owned)).map_err(|e| EmbedError(e.to_string()))?;
        if reply.vectors.len() != texts.len() {
            return Err(EmbedError(format!("{} vectors for {} texts", reply.vectors.len(), texts.len())));
        }
        let mut vectors = reply.vectors;
        for v in &mut vectors {
            if v.len() != self.dimensions {
                return Err(EmbedError(format!(
                    "the upstream returned vectors of {} dimensions; search.embedding_dimensions is {}",
                    v.len(),
                    self.dimensions
                )));
            }
            normalise(v)?;
        }
        Ok((vectors, reply.tokens))
    }
}

/// Scales to unit length; a vector with no direction (all zeros, or not finite) cannot be ranked.
fn normalise(v: &mut [f32]) -> Result<(), EmbedError> {
    let norm = v.iter().map(|x| f64::from(*x) * f64::from(*x)).sum::<f64>().sqrt();
    if !norm.is_finite() || norm == 0.0 {
        return Err(EmbedError("the upstream returned a zero or non-finite vector".into()));
    }
    for x in v.iter_mut() {
        *x = (f64::from(*x) / norm) as f32;
    }
    Ok(())
}

impl TextEmbedder for UpstreamEmbedder {
    fn name(&self) -> &str {
        &self.name
    }

    fn dimensions(&self) -> usize {
        self.dimensions
    }

    fn embed_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        Ok(self.embed_metered(texts)?.vectors)
    }

    fn embed_metered(&self, texts: &[&str]) -> Result<Metered, EmbedError> {
        let mut metered = Metered { vectors: Vec::with_capacity(texts.len()), tokens: 0 };
        for batch in texts.chunks(INPUTS_PER_CALL) {
            let (vectors, tokens) = self.call(batch)?;
            metered.vectors.extend(vectors);
            metered.tokens += tokens;
        }
        Ok(metered)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use async_trait::async_trait;
    use tenantry_llm::{Embeddings, LlmError};

    use super::*;

    /// Records each call's inputs; answers `[len, 0]` per text (or vectors of `width`), 2 tokens per text.
    struct Recording {
        calls: Mutex<Vec<usize>>,
        width: usize,
    }

    #[async_trait]
    impl Embedder for Recording {
        fn model(&self) -> &str {
            "recording"
        }

        async fn embed(&self, texts: &[String]) -> Result<Embeddings, LlmError> {
            self.calls.lock().expect("lock").push(texts.len());
            let vectors = texts
                .iter()
                .map(|t| (0..self.width).map(|i| if i == 0 { t.len() as f32 } else { 0.0 }).collect())
                .collect();
            Ok(Embeddings { vectors, tokens: 2 * texts.len() as u64 })
        }
    }

    fn upstream(width: usize, dimensions: usize) -> (Arc<Recording>, UpstreamEmbedder, tokio::runtime::Runtime) {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("rt");
        let recording = Arc::new(Recording { calls: Mutex::new(Vec::new()), width });
        let embedder =
            UpstreamEmbedder::over(recording.clone(), "text-embedding-3-small", dimensions, runtime.handle().clone());
        (recording, embedder, runtime)
    }

    #[test]
    fn long_inputs_go_up_in_bounded_calls_in_order_with_every_token_counted() {
        let (recording, embedder, _runtime) = upstream(3, 3);
        let texts: Vec<String> = (1..=150).map(|n| "x".repeat(n)).collect();
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let metered = embedder.embed_metered(&refs).expect("embedded");
        assert_eq!(*recording.calls.lock().expect("lock"), vec![64, 64, 22]);
        assert_eq!(metered.tokens, 300);
        assert_eq!(metered.vectors.len(), 150);
        for v in &metered.vectors {
            assert_eq!(v, &vec![1.0, 0.0, 0.0], "normalised to unit length");
        }
        assert_eq!(embedder.name(), "upstream:text-embedding-3-small:3");
    }

    #[test]
    fn vectors_of_another_length_than_configured_are_an_error() {
        let (_, embedder, _runtime) = upstream(4, 3);
        let err = embedder.embed_metered(&["a"]).expect_err("wrong length").to_string();
        assert!(err.contains("4 dimensions") && err.contains("search.embedding_dimensions is 3"), "{err}");
    }

    #[test]
    fn a_vector_without_direction_is_an_error() {
        let (_, embedder, _runtime) = upstream(3, 3);
        let err = embedder.embed_metered(&[""]).expect_err("zero vector").to_string();
        assert!(err.contains("zero"), "{err}");
    }

    #[test]
    fn works_from_the_blocking_pool_of_the_runtime_it_calls() {
        let (recording, embedder, runtime) = upstream(3, 3);
        let embedder = Arc::new(embedder);
        let e = embedder.clone();
        let metered =
            runtime.block_on(async move { tokio::task::spawn_blocking(move || e.embed_metered(&["ab"])).await });
        assert_eq!(metered.expect("joined").expect("embedded").tokens, 2);
        assert_eq!(recording.calls.lock().expect("lock").len(), 1);
    }
}

/// Texts one `POST /v1/embeddings` may embed, and the tokens each may hold (OpenAI's limits).
pub const MAX_EMBEDDING_INPUTS: usize = 2_048;
pub const MAX_EMBEDDING_INPUT_TOKENS: u64 = 8_192;

/// Vectors of a tenant's own texts, and what they were billed.
#[derive(Clone, Debug)]
pub struct TextEmbeddings {
    pub vectors: Vec<Vec<f32>>,
    /// The embedder's name (`search.embedding_model`'s entry, or the local model's).
    pub model: String,
    pub tokens: u64,
}

impl crate::Services {
    /// Embeds `inputs` with the service's embedder, the one that indexes the tenant's documents, as a
    /// metered request: quota is reserved for the tokens counted, and the tokens billed (an upstream's own
    /// count, else ours) are settled as prompt tokens of the embedding model.
    pub async fn embed_texts(&self, ctx: &TenantContext, inputs: Vec<String>) -> crate::ServiceResult<TextEmbeddings> {
        use crate::ServiceError;
        if inputs.is_empty() || inputs.len() > MAX_EMBEDDING_INPUTS {
            return Err(ServiceError::new(
                ErrorCode::BadRequest,
                format!("input must hold 1 to {MAX_EMBEDDING_INPUTS} texts"),
            ));
        }
        let mut counted = 0;
        for (i, text) in inputs.iter().enumerate() {
            if text.is_empty() {
                return Err(ServiceError::new(ErrorCode::BadRequest, format!("input[{i}] is empty")));
            }
            let n = tokens::count(text);
            if n > MAX_EMBEDDING_INPUT_TOKENS {
                return Err(ServiceError::new(
                    ErrorCode::ContextLengthExceeded,
                    format!(
                        "input[{i}] has {n} tokens; the embedding model takes at most {MAX_EMBEDDING_INPUT_TOKENS}"
                    ),
                ));
            }
            counted += n;
        }
        let amounts = tenantry_store::Amounts { tokens: counted as i64, ..tenantry_store::Amounts::default() };
        let reservation = self.reserve(ctx, amounts).await?;
        let embedder = self.search().embedder().clone();
        let metered = tokio::task::spawn_blocking(move || {
            let texts: Vec<&str> = inputs.iter().map(String::as_str).collect();
            embedder.embed_metered(&texts)
        })
        .await?
        .map_err(|e| {
            tracing::warn!(error = %e, "embedding failed");
            ServiceError::new(ErrorCode::UpstreamFailed, "the embedding model failed")
        })?;
        let billed = if metered.tokens > 0 { metered.tokens } else { counted };
        let (model, cost) = match self.embedding_model() {
            Some(model) => (model.name.clone(), model.input_price.cost(billed).0),
            None => (self.search().embedder_name().to_owned(), 0),
        };
        let event = tenantry_store::UsageEvent {
            event_id: format!("{}:embeddings:{}", ctx.operation_id, Meter::PromptTokens.as_str()),
            tenant_id: ctx.tenant_id.clone(),
            request_id: ctx.request_id.to_string(),
            meter: Meter::PromptTokens,
            model: model.clone(),
            quantity: billed as i64,
            cost_micros: cost,
            at: self.clock().now(),
        };
        let actual = tenantry_store::Amounts { tokens: billed as i64, ..tenantry_store::Amounts::default() };
        self.settle(ctx, Some(reservation), actual, &[event]).await?;
        Ok(TextEmbeddings { vectors: metered.vectors, model, tokens: billed })
    }
}
