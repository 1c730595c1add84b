//! The local semantic embedder: a BERT sentence encoder run on the CPU with candle (`crate::encoder`),
//! mean-pooled over the attention mask and L2-normalised, as sentence-transformers does. all-MiniLM-L6-v2 (384
//! dimensions) is the model tested and measured. It is loaded from a directory (`config.json`, `tokenizer.json`,
//! `model.safetensors`, and sentence-transformers' `sentence_bert_config.json` and `1_Pooling/config.json`
//! when present); nothing is ever downloaded.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{Config, DTYPE};
use serde::Deserialize;
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

use crate::embed::{normalize, EmbedError, TextEmbedder};
use crate::encoder::Encoder;

/// Texts per forward pass. Texts are sorted by length first, so a batch pads little; 16 × 256 tokens keeps the
/// attention scores of one batch (16 × 12 heads × 256²) around 50 MB.
const BATCH: usize = 16;

/// The words of a chunk one vector stands for (`TextEmbedder::window_words`), with the title and heading
/// before them. A 256-token chunk's mean blurs several provisions into one vector; on the question set of
/// BENCHMARKS.md ("Passages found for questions in a user's own words") vectors alone found the passage in
/// the top 3 for 26 % of questions whole, 40 % with 40-word windows; 24 to 32 words and 48 to 80 did worse.
const WINDOW_WORDS: usize = 40;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("embedding model directory {}: {file} is missing", .dir.display())]
    Missing { dir: PathBuf, file: String },
    #[error("embedding model {}: {reason}", .path.display())]
    Invalid { path: PathBuf, reason: String },
}

/// sentence-transformers' settings for the encoder.
#[derive(Deserialize)]
struct SentenceConfig {
    max_seq_length: Option<usize>,
}

#[derive(Deserialize)]
struct PoolingConfig {
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
}

pub struct BertEmbedder {
    model: Encoder,
    tokenizer: Tokenizer,
    dimensions: usize,
    name: String,
    layers: usize,
    intermediate: usize,
}

impl BertEmbedder {
    /// Loads the model in `dir`. Blocking (reads ~100 MB); call off the async runtime.
    pub fn load(dir: &Path) -> Result<Self, LoadError> {
        check_files(dir)?;
        let invalid = |path: PathBuf| move |reason: String| LoadError::Invalid { path, reason };
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read(&path).map_err(|e| invalid(path.clone())(e.to_string()))
        };

        let config_path = dir.join("config.json");
        let config: Config =
            serde_json::from_slice(&read("config.json")?).map_err(|e| invalid(config_path.clone())(e.to_string()))?;
        let mut max_tokens = config.max_position_embeddings;
        if dir.join("sentence_bert_config.json").exists() {
            let path = dir.join("sentence_bert_config.json");
            let st: SentenceConfig = serde_json::from_slice(&read("sentence_bert_config.json")?)
                .map_err(|e| invalid(path.clone())(e.to_string()))?;
            max_tokens = st.max_seq_length.unwrap_or(max_tokens).min(config.max_position_embeddings);
        }
        let pooling_path = dir.join("1_Pooling").join("config.json");
        if pooling_path.exists() {
            let pooling: PoolingConfig = serde_json::from_slice(&read("1_Pooling/config.json")?)
                .map_err(|e| invalid(pooling_path.clone())(e.to_string()))?;
            if !pooling.pooling_mode_mean_tokens {
                return Err(invalid(pooling_path)("only mean pooling is supported".into()));
            }
        }

        let tokenizer_path = dir.join("tokenizer.json");
        let mut tokenizer =
            Tokenizer::from_file(&tokenizer_path).map_err(|e| invalid(tokenizer_path.clone())(e.to_string()))?;
        // tokenizer.json carries its own (often shorter, fixed-length) settings; the model's are these.
        tokenizer
            .with_truncation(Some(TruncationParams { max_length: max_tokens, ..Default::default() }))
            .map_err(|e| invalid(tokenizer_path.clone())(e.to_string()))?;
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            pad_id: u32::try_from(config.pad_token_id).unwrap_or(0),
            ..Default::default()
        }));

        let weights_path = dir.join("model.safetensors");
        let (tensors, fingerprint) =
            read_weights(&weights_path).map_err(|e| invalid(weights_path.clone())(e.to_string()))?;
        let vb = VarBuilder::from_tensors(tensors, DTYPE, &Device::Cpu);
        let model = Encoder::load(vb, &config).map_err(|e| invalid(weights_path.clone())(e.to_string()))?;
        let dimensions = config.hidden_size;
        let name = format!("bert-mean-{dimensions}d-{max_tokens}t-w{WINDOW_WORDS}-{fingerprint:08x}");
        tracing::info!(dir = %dir.display(), name, "embedding model loaded");
        let (layers, intermediate) = (config.num_hidden_layers, config.intermediate_size);
        Ok(Self { model, tokenizer, dimensions, name, layers, intermediate })
    }

    /// The tokens the model reads of `text` (special tokens included, after truncation).
    pub fn tokens(&self, text: &str) -> Result<usize, EmbedError> {
        let encoding = self.tokenizer.encode(text, true).map_err(|e| EmbedError(e.to_string()))?;
        Ok(encoding.get_ids().len())
    }

    /// Floating-point operations of one forward pass over a text of `tokens` tokens (a multiply-add counts
    /// two): per layer the four attention projections (8·n·d²), the feed-forward pair (4·n·d·ff) and the
    /// attention scores and mix (4·n²·d); embeddings, norms and activations are negligible beside them.
    pub fn flops(&self, tokens: usize) -> f64 {
        let (n, d, ff) = (tokens as f64, self.dimensions as f64, self.intermediate as f64);
        self.layers as f64 * (8.0 * n * d * d + 4.0 * n * d * ff + 4.0 * n * n * d)
    }

    /// One forward pass over texts of similar length.
    fn forward(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let encodings = self.tokenizer.encode_batch(texts.to_vec(), true).map_err(|e| EmbedError(e.to_string()))?;
        let (rows, width) = (encodings.len(), encodings.first().map_or(0, |e| e.get_ids().len()));
        let flat = |f: fn(&tokenizers::Encoding) -> &[u32]| -> Vec<u32> {
            encodings.iter().flat_map(|e| f(e).iter().copied()).collect()
        };
        let device = &self.model.device;
        let tensor = |v: Vec<u32>| Tensor::from_vec(v, (rows, width), device);
        let ids = tensor(flat(tokenizers::Encoding::get_ids))?;
        let types = tensor(flat(tokenizers::Encoding::get_type_ids))?;
        let mask = tensor(flat(tokenizers::Encoding::get_attention_mask))?;
        let hidden = self.model.forward(&ids, &types, &mask)?; // (rows, width, dimensions)
        let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?; // (rows, width, 1)
        let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
        let counts = mask.sum(1)?.clamp(1e-9f32, f32::MAX)?;
        let mut vectors: Vec<Vec<f32>> = summed.broadcast_div(&counts)?.to_vec2()?;
        vectors.iter_mut().for_each(|v| normalize(v));
        Ok(vectors)
    }
}

/// One tensor's entry in a safetensors header.
#[derive(Deserialize)]
struct TensorEntry {
    dtype: safetensors::Dtype,
    shape: Vec<usize>,
    data_offsets: [usize; 2],
}

/// The tensors of a safetensors file, read one at a time (a file is never held whole beside its tensors: that
/// doubled the model's memory at load, and the allocator kept the freed copy), and the file's CRC-32, which
/// names the vectors (`BertEmbedder::name`). Memory mapping would spare the copies but is `unsafe`, which the
/// workspace forbids.
fn read_weights(path: &Path) -> Result<(std::collections::HashMap<String, Tensor>, u32), String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut fingerprint = crc32fast::Hasher::new();
    let mut piece = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut piece).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        fingerprint.update(&piece[..n]);
    }
    file.seek(SeekFrom::Start(0)).map_err(|e| e.to_string())?;
    let mut length = [0u8; 8];
    file.read_exact(&mut length).map_err(|e| e.to_string())?;
    let header_bytes = usize::try_from(u64::from_le_bytes(length))
        .ok()
        .filter(|n| *n <= 100 << 20)
        .ok_or("the safetensors header is implausibly long")?;
    let mut header = vec![0u8; header_bytes];
    file.read_exact(&mut header).map_err(|e| e.to_string())?;
    // The header is JSON: each tensor's dtype, shape and byte range after the header, and `__metadata__`.
    let entries: std::collections::HashMap<String, serde_json::Value> =
        serde_json::from_slice(&header).map_err(|e| format!("the safetensors header: {e}"))?;
    let data_start = 8 + u64::try_from(header_bytes).map_err(|e| e.to_string())?;
    let mut tensors = std::collections::HashMap::new();
    for (name, entry) in entries.into_iter().filter(|(name, _)| name != "__metadata__") {
        let info: TensorEntry = serde_json::from_value(entry).map_err(|e| format!("{name}: {e}"))?;
        let [start, end] = info.data_offsets;
        let mut bytes = vec![0u8; end.saturating_sub(start)];
        let offset = data_start + u64::try_from(start).map_err(|e| e.to_string())?;
        file.seek(SeekFrom::Start(offset)).map_err(|e| e.to_string())?;
        file.read_exact(&mut bytes).map_err(|e| format!("{name}: {e}"))?;
        let view =
            safetensors::tensor::TensorView::new(info.dtype, info.shape, &bytes).map_err(|e| format!("{name}: {e}"))?;
        let tensor = candle_core::safetensors::Load::load(&view, &Device::Cpu).map_err(|e| format!("{name}: {e}"))?;
        let tensor = tensor.to_dtype(DTYPE).map_err(|e| format!("{name}: {e}"))?;
        tensors.insert(name, tensor);
    }
    Ok((tensors, fingerprint.finalize()))
}

impl From<candle_core::Error> for EmbedError {
    fn from(e: candle_core::Error) -> Self {
        EmbedError(e.to_string())
    }
}

/// The first required file missing from `dir`, as an error that names it.
pub fn check_files(dir: &Path) -> Result<(), LoadError> {
    if !dir.is_dir() {
        return Err(LoadError::Missing { dir: dir.to_owned(), file: "the directory itself".into() });
    }
    match tenantry_domain::config::EMBEDDING_MODEL_FILES.iter().find(|f| !dir.join(f).is_file()) {
        Some(file) => Err(LoadError::Missing { dir: dir.to_owned(), file: (*file).into() }),
        None => Ok(()),
    }
}

impl TextEmbedder for BertEmbedder {
    fn name(&self) -> &str {
        &self.name
    }

    fn dimensions(&self) -> usize {
        self.dimensions
    }

    fn window_words(&self) -> Option<usize> {
        Some(WINDOW_WORDS)
    }

    /// Half a second at the 16 chunks a second measured here with their windows, a second with AVX2 alone
    /// (BENCHMARKS.md, "Embedding speed").
    fn chunks_in_request(&self) -> usize {
        8
    }

    fn embed_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|i| texts[*i].len());
        let mut out = vec![Vec::new(); texts.len()];
        for batch in order.chunks(BATCH) {
            let batch_texts: Vec<&str> = batch.iter().map(|i| texts[*i]).collect();
            for (i, v) in batch.iter().zip(self.forward(&batch_texts)?) {
                out[*i] = v;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embed::dot;

    /// The model directory, when the environment provides one (`.ci/run` installs it).
    fn model() -> Option<BertEmbedder> {
        let Ok(dir) = std::env::var("TENANTRY_TEST_MINILM_DIR") else {
            eprintln!("skipped: TENANTRY_TEST_MINILM_DIR is not set");
            return None;
        };
        match BertEmbedder::load(Path::new(&dir)) {
            Ok(model) => Some(model),
            Err(e) => panic!("TENANTRY_TEST_MINILM_DIR is set but the model does not load: {e}"),
        }
    }

    #[test]
    fn vectors_have_384_dimensions_and_unit_norm() -> Result<(), EmbedError> {
        let Some(model) = model() else { return Ok(()) };
        assert_eq!(model.dimensions(), 384);
        assert!(model.name().starts_with("bert-mean-384d-256t-"), "{}", model.name());
        for v in model.embed_batch(&["Refunds are issued within 14 days.", "", "a"])? {
            assert_eq!(v.len(), 384);
            assert!((dot(&v, &v) - 1.0).abs() < 1e-4);
        }
        Ok(())
    }

    /// The name carries the weights file's CRC-32, as it always has: vectors made before a change in how the
    /// file is read keep their name and are not embedded again.
    #[test]
    fn the_name_fingerprints_the_whole_weights_file() -> std::io::Result<()> {
        let Some(model) = model() else { return Ok(()) };
        let dir = std::env::var("TENANTRY_TEST_MINILM_DIR").unwrap_or_default();
        let crc = crc32fast::hash(&std::fs::read(Path::new(&dir).join("model.safetensors"))?);
        assert!(model.name().ends_with(&format!("-{crc:08x}")), "{}", model.name());
        Ok(())
    }

    #[test]
    fn paraphrases_are_closer_than_unrelated_sentences() -> Result<(), EmbedError> {
        let Some(model) = model() else { return Ok(()) };
        let q = model.embed("How do I get my money back?")?;
        let policy = model.embed("Refund policy: we return payments within 14 days")?;
        let cat = model.embed("The cat sat on the mat")?;
        let (related, unrelated) = (dot(&q, &policy), dot(&q, &cat));
        assert!(related > unrelated + 0.2, "related {related}, unrelated {unrelated}");
        Ok(())
    }

    #[test]
    fn batching_and_padding_do_not_change_a_vector() -> Result<(), EmbedError> {
        let Some(model) = model() else { return Ok(()) };
        let short = "Refunds are issued within 14 days.";
        let long = "A much longer sentence about the shipping carriers, the warehouses and the customs forms \
                    that every international order needs before it leaves the building.";
        let alone = model.embed(short)?;
        let batched = model.embed_batch(&[long, short])?;
        assert!(dot(&alone, &batched[1]) > 0.9999, "padded in a batch: {}", dot(&alone, &batched[1]));
        assert!(dot(&model.embed(long)?, &batched[0]) > 0.9999);
        Ok(())
    }

    #[test]
    fn long_texts_are_truncated_to_the_models_length() -> Result<(), EmbedError> {
        let Some(model) = model() else { return Ok(()) };
        let head = "Vaccination schedules for infants. ".repeat(60); // well over 256 tokens
        let with_tail = format!("{head} Completely unrelated trailing words about volcanoes and lava.");
        let (a, b) = (model.embed(&head)?, model.embed(&with_tail)?);
        assert!(dot(&a, &b) > 0.9999, "words past the limit are cut: {}", dot(&a, &b));
        Ok(())
    }

    /// The first components of "How do I get my money back?" from an independent float64 numpy implementation
    /// of the same pipeline (HF BERT, mean pooling, normalisation) over the same files:
    /// `scripts/minilm_reference.py` (needs numpy, tokenizers, safetensors; sentence-transformers itself needs
    /// torch, too heavy to install here).
    #[test]
    fn matches_sentence_transformers_reference() -> Result<(), EmbedError> {
        let Some(model) = model() else { return Ok(()) };
        let v = model.embed("How do I get my money back?")?;
        for (i, expected) in REFERENCE.iter().enumerate() {
            assert!((v[i] - expected).abs() < 1e-3, "component {i}: {} vs {expected}", v[i]);
        }
        Ok(())
    }

    const REFERENCE: [f32; 8] = [-0.014776, 0.047721, -0.014670, -0.005958, -0.040567, -0.012155, 0.063997, -0.038782];

    #[test]
    fn a_directory_without_the_weights_is_refused_by_name() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("config.json"), "{}")?;
        std::fs::write(dir.path().join("tokenizer.json"), "{}")?;
        let Err(err) = BertEmbedder::load(dir.path()) else { panic!("loaded without weights") };
        assert!(err.to_string().contains("model.safetensors is missing"), "{err}");
        let Err(err) = BertEmbedder::load(&dir.path().join("nowhere")) else { panic!("loaded nothing") };
        assert!(err.to_string().contains("nowhere"), "{err}");
        Ok(())
    }
}
