//! Embeddings behind one interface. `OpenAiEmbedder` calls any OpenAI-compatible `POST {base_url}/embeddings`
//! with the same key, timeout and retry rules as chat; the built-in offline embedder lives with retrieval.

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::json;
use tenantry_domain::{tokens, ModelSpec};

use crate::openai::{read_error, OpenAiCompatible, Usage};
use crate::LlmError;

/// One vector per input text, in input order, and the tokens the call used (billed like prompt tokens).
#[derive(Clone, Debug, PartialEq)]
pub struct Embeddings {
    pub vectors: Vec<Vec<f32>>,
    pub tokens: u64,
}

#[async_trait]
pub trait Embedder: Send + Sync {
    /// The model name recorded with the usage.
    fn model(&self) -> &str;
    async fn embed(&self, texts: &[String]) -> Result<Embeddings, LlmError>;
}

/// An embedding model on an OpenAI-compatible endpoint (`[[models]]` entry with provider `openai`).
pub struct OpenAiEmbedder {
    client: OpenAiCompatible,
    model: ModelSpec,
}

impl OpenAiEmbedder {
    pub fn new(client: OpenAiCompatible, model: ModelSpec) -> Self {
        Self { client, model }
    }
}

#[derive(Deserialize)]
struct EmbeddingResponse {
    data: Vec<EmbeddingData>,
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct EmbeddingData {
    index: usize,
    embedding: Vec<f32>,
}

#[async_trait]
impl Embedder for OpenAiEmbedder {
    fn model(&self) -> &str {
        &self.model.name
    }

    async fn embed(&self, texts: &[String]) -> Result<Embeddings, LlmError> {
        if texts.is_empty() {
            return Ok(Embeddings { vectors: Vec::new(), tokens: 0 });
        }
        let body = json!({"model": self.model.upstream_model, "input": texts, "encoding_format": "float"});
        let response = self.client.send(&self.model, "embeddings", &body, false).await?;
        let parsed: EmbeddingResponse = response.json().await.map_err(read_error)?;
        let mut vectors: Vec<Option<Vec<f32>>> = vec![None; texts.len()];
        for d in parsed.data {
            match vectors.get_mut(d.index) {
                Some(slot @ None) => *slot = Some(d.embedding),
                _ => {
                    return Err(LlmError::Upstream(format!("embedding index {} is out of range or repeated", d.index)))
                }
            }
        }
        let vectors: Vec<Vec<f32>> = vectors
            .into_iter()
            .collect::<Option<_>>()
            .ok_or_else(|| LlmError::Upstream("the upstream returned fewer embeddings than inputs".into()))?;
        let dims = vectors[0].len();
        if dims == 0 || vectors.iter().any(|v| v.len() != dims) {
            return Err(LlmError::Upstream("embeddings of unequal or zero length".into()));
        }
        let tokens = match parsed.usage {
            Some(u) => u.prompt_tokens,
            None => texts.iter().map(|t| tokens::count(t)).sum(),
        };
        Ok(Embeddings { vectors, tokens })
    }
}
