//! A BERT encoder for inference on the CPU: the forward pass of candle-transformers' `BertModel` over the
//! same weights, with the two steps that dominated its profile done the fast way. Its GELU computed the error
//! function one value at a time through libm (a fifth of the time: `tenantry bench embed` under perf); here
//! `erf` is a rational approximation without branches or `exp`, which the compiler vectorises, within 1e-6 of
//! libm's (tested), on candle's threads (rayon). Its softmax took four passes over the attention scores; here
//! candle's fused one. (A fused softmax with a vectorised polynomial `exp` measured no faster.)

use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Module, Shape, Tensor};
use candle_nn::{embedding, layer_norm, linear, Embedding, LayerNorm, Linear, VarBuilder};
use candle_transformers::models::bert::{Config, HiddenAct};
use rayon::prelude::*;

pub(crate) struct Encoder {
    word_embeddings: Embedding,
    position_embeddings: Embedding,
    token_type_embeddings: Embedding,
    embeddings_norm: LayerNorm,
    layers: Vec<Layer>,
    pub(crate) device: Device,
}

struct Layer {
    query: Linear,
    key: Linear,
    value: Linear,
    attention_out: Linear,
    attention_norm: LayerNorm,
    intermediate: Linear,
    activation: HiddenAct,
    out: Linear,
    out_norm: LayerNorm,
    heads: usize,
    head_size: usize,
}

impl Encoder {
    /// The weights under `bert.` or at the top level, named as Hugging Face's BERT names them.
    pub(crate) fn load(vb: VarBuilder, config: &Config) -> candle_core::Result<Self> {
        let vb = if vb.contains_tensor("bert.embeddings.word_embeddings.weight") { vb.pp("bert") } else { vb };
        let (hidden, eps) = (config.hidden_size, config.layer_norm_eps);
        let emb = vb.pp("embeddings");
        let heads = config.num_attention_heads;
        if heads == 0 || hidden % heads != 0 {
            candle_core::bail!("hidden size {hidden} is not a multiple of {heads} attention heads");
        }
        let layers = (0..config.num_hidden_layers)
            .map(|i| {
                let vb = vb.pp(format!("encoder.layer.{i}"));
                let (attention, intermediate, output) = (vb.pp("attention"), vb.pp("intermediate"), vb.pp("output"));
                Ok(Layer {
                    query: linear(hidden, hidden, attention.pp("self").pp("query"))?,
                    key: linear(hidden, hidden, attention.pp("self").pp("key"))?,
                    value: linear(hidden, hidden, attention.pp("self").pp("value"))?,
                    attention_out: linear(hidden, hidden, attention.pp("output").pp("dense"))?,
                    attention_norm: layer_norm(hidden, eps, attention.pp("output").pp("LayerNorm"))?,
                    intermediate: linear(hidden, config.intermediate_size, intermediate.pp("dense"))?,
                    activation: config.hidden_act,
                    out: linear(config.intermediate_size, hidden, output.pp("dense"))?,
                    out_norm: layer_norm(hidden, eps, output.pp("LayerNorm"))?,
                    heads,
                    head_size: hidden / heads,
                })
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self {
            word_embeddings: embedding(config.vocab_size, hidden, emb.pp("word_embeddings"))?,
            position_embeddings: embedding(config.max_position_embeddings, hidden, emb.pp("position_embeddings"))?,
            token_type_embeddings: embedding(config.type_vocab_size, hidden, emb.pp("token_type_embeddings"))?,
            embeddings_norm: layer_norm(hidden, eps, emb.pp("LayerNorm"))?,
            layers,
            device: vb.device().clone(),
        })
    }

    /// The last hidden states, (batch, tokens, hidden), of token ids and type ids (batch, tokens) whose
    /// padding `mask` (1 for a token, 0 for padding) marks.
    pub(crate) fn forward(&self, ids: &Tensor, types: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
        let (_, tokens) = ids.dims2()?;
        let positions = Tensor::arange(0u32, u32::try_from(tokens).unwrap_or(u32::MAX), ids.device())?;
        let embedded = (self.word_embeddings.forward(ids)? + self.token_type_embeddings.forward(types)?)?
            .broadcast_add(&self.position_embeddings.forward(&positions)?)?;
        let mut hidden = self.embeddings_norm.forward(&embedded)?;
        // Padding gets the lowest score before the softmax, so no token attends to it: (batch, 1, 1, tokens).
        let mask = mask.to_dtype(DType::F32)?.unsqueeze(1)?.unsqueeze(1)?;
        let mask = ((mask.ones_like()? - &mask)? * f64::from(f32::MIN))?;
        for layer in &self.layers {
            hidden = layer.forward(&hidden, &mask)?;
        }
        Ok(hidden)
    }
}

impl Layer {
    fn forward(&self, hidden: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
        let (batch, tokens, width) = hidden.dims3()?;
        let split = |x: Tensor| x.reshape((batch, tokens, self.heads, self.head_size))?.transpose(1, 2)?.contiguous();
        let query = split(self.query.forward(hidden)?)?;
        let key = split(self.key.forward(hidden)?)?;
        let value = split(self.value.forward(hidden)?)?;
        let scale = 1.0 / (self.head_size as f64).sqrt();
        let scores = (query.matmul(&key.t()?)? * scale)?.broadcast_add(mask)?;
        let weights = candle_nn::ops::softmax_last_dim(&scores)?;
        let context = weights.matmul(&value)?.transpose(1, 2)?.contiguous()?.reshape((batch, tokens, width))?;
        let attended = self.attention_norm.forward(&(self.attention_out.forward(&context)? + hidden)?)?;
        let expanded = self.intermediate.forward(&attended)?;
        let activated = match self.activation {
            HiddenAct::Gelu => expanded.apply_op1_no_bwd(&Gelu)?,
            HiddenAct::GeluApproximate => expanded.gelu()?,
            HiddenAct::Relu => expanded.relu()?,
        };
        self.out_norm.forward(&(self.out.forward(&activated)? + attended)?)
    }
}

/// GELU with the exact error function: x · (1 + erf(x / √2)) / 2.
struct Gelu;

impl CustomOp1 for Gelu {
    fn name(&self) -> &'static str {
        "gelu-erf-rational"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(values) = storage else { candle_core::bail!("gelu: only f32 is supported") };
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("gelu: only a contiguous tensor is supported")
        };
        let mut out = vec![0.0; end - start];
        out.par_chunks_mut(PARALLEL_CHUNK).zip(values[start..end].par_chunks(PARALLEL_CHUNK)).for_each(|(out, xs)| {
            for (o, &x) in out.iter_mut().zip(xs) {
                *o = gelu(x);
            }
        });
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }
}

/// Values per task of an element-wise pass: large enough that splitting costs nothing beside the work.
const PARALLEL_CHUNK: usize = 1 << 14;

#[inline(always)]
fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// The error function as the ratio of an odd polynomial of degree 13 and an even one of degree 8 over
/// [-4, 4], where single precision reaches ±1 (the approximation of Eigen's and XLA's `erf` for `float`).
#[inline(always)]
fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    // Horner's rule on x²; plain products and sums (no `mul_add`, a libm call without FMA in the target).
    let p = -2.726_142e-10_f32;
    let p = p * x2 + 2.770_681_4e-8;
    let p = p * x2 - 2.101_024e-6;
    let p = p * x2 - 5.692_506_4e-5;
    let p = p * x2 - 7.349_906_3e-4;
    let p = p * x2 - 2.954_6e-3;
    let p = p * x2 - 1.609_603_3e-2;
    let q = -1.456_607_2e-5_f32;
    let q = q * x2 - 2.133_740_6e-4;
    let q = q * x2 - 1.682_827e-3;
    let q = q * x2 - 7.373_329e-3;
    let q = q * x2 - 1.426_474e-2;
    x * p / q
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rational_erf_is_within_a_millionth_of_libms() {
        let mut worst = 0.0f64;
        for i in -80_000..=80_000 {
            let x = i as f32 / 10_000.0; // -8 to 8
            let exact = candle_core::cpu::erf::erf_f64(f64::from(x));
            worst = worst.max((f64::from(erf(x)) - exact).abs());
        }
        assert!(worst < 1e-6, "largest difference {worst}");
    }

    #[test]
    fn gelu_matches_candles_exact_gelu_on_a_tensor() -> candle_core::Result<()> {
        let xs: Vec<f32> = (-600..600).map(|i| i as f32 / 100.0).collect();
        let t = Tensor::from_vec(xs, (2, 600), &Device::Cpu)?;
        let ours: Vec<Vec<f32>> = t.apply_op1_no_bwd(&Gelu)?.to_vec2()?;
        let exact: Vec<Vec<f32>> = t.gelu_erf()?.to_vec2()?;
        for (a, b) in ours.iter().flatten().zip(exact.iter().flatten()) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
        Ok(())
    }
}
