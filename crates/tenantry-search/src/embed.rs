//! The built-in offline embedder: no network, no weights. A text becomes a fixed-size vector by feature
//! hashing (the "hashing trick") of its stemmed words and their character 4-grams, with sublinear term
//! frequency and signed buckets, L2-normalised so a dot product is a cosine. It is not a neural model: it
//! knows spelling, not meaning. What it adds to BM25 is matching across spelling variants that stemming
//! does not join ("colour" ~ "color"); on SciFact it does not improve ranking (BENCHMARKS.md). The local
//! semantic model (`crate::bert`) plugs in through the same trait.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use crate::lexical::analyzer;

/// Turns texts into unit vectors of one dimension. Blocking; call off the async runtime.
pub trait TextEmbedder: Send + Sync {
    /// Identifies the vectors: another name means vectors that must not be compared with these. A model's name
    /// covers its weights and its truncation, not only its family.
    fn name(&self) -> &str;
    fn dimensions(&self) -> usize;
    /// One vector per text, in the texts' order. Batching is the caller's best hint: a neural model runs a
    /// batch in one forward pass.
    fn embed_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError>;

    /// The most words one vector should stand for. A chunk longer than that is embedded as overlapping windows
    /// of this many words, each under the chunk's title and heading, and scores as its best window: a model
    /// that truncates its input, or blurs a long passage into one mean, then still sees every sentence. `None`
    /// (the default): one vector per chunk. Part of what the vectors are, so the name must change with it.
    fn window_words(&self) -> Option<usize> {
        None
    }

    /// The most chunks an upload may have and still get its vectors within its request: about a second of
    /// this embedder's work on two cores. A longer upload is answered once its text is stored (BM25 finds it
    /// at once) and a job adds its vectors.
    fn chunks_in_request(&self) -> usize {
        32
    }

    fn embed(&self, text: &str) -> Result<Vec<f32>, EmbedError> {
        self.embed_batch(&[text])?.pop().ok_or_else(|| EmbedError("the model returned no vector".into()))
    }

    /// The vectors and the tokens a priced upstream billed for them, which the caller meters to the tenant.
    /// A local model bills nothing (its work is the operator's CPU), so the default reports 0.
    fn embed_metered(&self, texts: &[&str]) -> Result<Metered, EmbedError> {
        Ok(Metered { vectors: self.embed_batch(texts)?, tokens: 0 })
    }
}

/// Vectors, and the tokens the embedder's upstream billed for them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Metered {
    pub vectors: Vec<Vec<f32>>,
    pub tokens: u64,
}

/// A model that failed at run time (its files were checked when it loaded).
#[derive(Debug, thiserror::Error)]
#[error("embedding model: {0}")]
pub struct EmbedError(pub String);

pub struct HashEmbedder {
    dimensions: usize,
}

pub const HASH_EMBEDDER_DIMENSIONS: usize = 2048;

impl Default for HashEmbedder {
    fn default() -> Self {
        Self { dimensions: HASH_EMBEDDER_DIMENSIONS }
    }
}

/// A stable 64-bit hash (SipHash with fixed keys): the same feature lands in the same bucket in every process,
/// which persisted vectors depend on.
fn feature_hash(kind: u8, feature: &str) -> u64 {
    #[allow(deprecated)]
    let mut h = std::hash::SipHasher::new_with_keys(0x7465_6e61_6e74_7279, 0x656d_6265_6464_6572);
    kind.hash(&mut h);
    feature.hash(&mut h);
    h.finish()
}

impl TextEmbedder for HashEmbedder {
    fn name(&self) -> &str {
        "tenantry-hash-2048-v2"
    }

    fn dimensions(&self) -> usize {
        self.dimensions
    }

    fn embed_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        Ok(texts.iter().map(|t| self.vector(t)).collect())
    }
}

impl HashEmbedder {
    fn vector(&self, text: &str) -> Vec<f32> {
        let mut words: Vec<String> = Vec::new();
        let mut analyzer = analyzer();
        let mut stream = analyzer.token_stream(text);
        while let Some(token) = stream.next() {
            words.push(token.text.clone());
        }
        let mut features: HashMap<(u8, String), f32> = HashMap::new();
        for w in &words {
            *features.entry((0, w.clone())).or_default() += 1.0;
            let padded: Vec<char> = format!("<{w}>").chars().collect();
            for gram in padded.windows(4) {
                *features.entry((2, gram.iter().collect())).or_default() += 0.25;
            }
        }
        let mut vector = vec![0.0f32; self.dimensions];
        for ((kind, feature), weight) in features {
            let h = feature_hash(kind, &feature);
            let bucket = (h % self.dimensions as u64) as usize;
            let sign = if (h >> 63) == 0 { 1.0 } else { -1.0 };
            vector[bucket] += sign * (1.0 + weight.ln_1p());
        }
        normalize(&mut vector);
        vector
    }
}

pub(crate) fn normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cosine(a: &str, b: &str) -> f32 {
        let e = HashEmbedder::default();
        dot(&e.vector(a), &e.vector(b))
    }

    #[test]
    fn vectors_are_unit_length_and_deterministic() {
        let e = HashEmbedder::default();
        let v = e.vector("Refunds are issued within 14 days.");
        assert_eq!(v.len(), HASH_EMBEDDER_DIMENSIONS);
        assert!((dot(&v, &v) - 1.0).abs() < 1e-5);
        assert_eq!(v, e.vector("Refunds are issued within 14 days."));
        assert!(e.vector("").iter().all(|x| *x == 0.0), "empty text embeds to zero, matching nothing");
    }

    #[test]
    fn related_texts_are_closer_than_unrelated_ones() {
        let related = cosine("how are refunds issued", "refunding is issued within two weeks");
        let unrelated = cosine("how are refunds issued", "the cat sleeps on the warm windowsill");
        assert!(related > 0.3, "{related}");
        assert!(unrelated < related / 2.0, "{unrelated} vs {related}");
        // Character n-grams carry variants that stemming does not join.
        assert!(cosine("vaccination", "vaccinated") > cosine("vaccination", "vacation"));
    }
}
