//! Tiny random-weight GGUF models of each architecture the engine claims, for the architecture
//! fixtures (`fixtures/arch-*.json`, reference outputs of llama.cpp on the same files, written by
//! `scripts/arch-fixtures.py`). The bytes are a pure function of the architecture and the
//! tokenizer they borrow, so a test can write the file again and check it against the fixture's
//! sha256 before comparing outputs.
//!
//! Every model has 2 layers (Gemma 3: 6, so that five sliding-window layers precede a global
//! one), hidden size 256, 4 query and 2 key/value heads of 64, and an MLP of 512, so every
//! matrix row fits the k-quants' 256-value super-blocks. The tokenizer (vocabulary,
//! merges, special ids) is copied from a real GGUF (SmolLM2), so prompts are real text.

use std::collections::BTreeMap;
use std::io::BufWriter;
use std::path::Path;

use anyhow::{Context, Result};
use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};

const HIDDEN: usize = 256;
const LAYERS: usize = 2;
const GEMMA3_LAYERS: usize = 6;
/// Gemma 3's sliding window here: short enough that the long prompt crosses it.
const GEMMA3_WINDOW: usize = 128;
const HEADS: usize = 4;
const KV_HEADS: usize = 2;
const HEAD_DIM: usize = 64;
const FF: usize = 512;

/// An architecture variant with its own code path in the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TinyArch {
    /// Llama (interleaved RoPE, separate gate/up), matrices in Q4_K.
    Llama,
    /// Llama with Llama 3 RoPE frequency factors (`rope_freqs.weight`), matrices in Q8_0.
    Llama3Rope,
    /// Qwen2 (q/k/v biases, NeoX RoPE), matrices in Q5_K.
    Qwen2,
    /// Phi-3 (fused QKV and gate-up projections), matrices in Q6_K.
    Phi3,
    /// Gemma 3 (q/k norms, post-attention and post-MLP norms, GELU, embeddings scaled by
    /// sqrt(hidden) and tied to the output, five sliding-window layers then a global one, two
    /// RoPE bases), matrices in Q5_0.
    Gemma3,
    /// Mistral: a `llama` GGUF (as llama.cpp converts Mistral models) with grouped-query
    /// attention, matrices in Q4_1; its safetensors export is declared `mistral` with a
    /// `sliding_window` (the tests set it).
    Mistral,
}

impl TinyArch {
    /// Every variant, in fixture order.
    pub const ALL: [TinyArch; 6] = [
        Self::Llama,
        Self::Llama3Rope,
        Self::Qwen2,
        Self::Phi3,
        Self::Gemma3,
        Self::Mistral,
    ];

    /// The fixture's name (`fixtures/arch-NAME.json`) and the file's stem.
    pub fn name(self) -> &'static str {
        match self {
            Self::Llama => "llama-q4k",
            Self::Llama3Rope => "llama3rope-q8_0",
            Self::Qwen2 => "qwen2-q5k",
            Self::Phi3 => "phi3-q6k",
            Self::Gemma3 => "gemma3-q5_0",
            Self::Mistral => "mistral-q4_1",
        }
    }

    fn gguf_arch(self) -> &'static str {
        match self {
            Self::Llama | Self::Llama3Rope | Self::Mistral => "llama",
            Self::Qwen2 => "qwen2",
            Self::Phi3 => "phi3",
            Self::Gemma3 => "gemma3",
        }
    }

    fn matrix_type(self) -> GgmlDType {
        match self {
            Self::Llama => GgmlDType::Q4K,
            Self::Llama3Rope => GgmlDType::Q8_0,
            Self::Qwen2 => GgmlDType::Q5K,
            Self::Phi3 => GgmlDType::Q6K,
            Self::Gemma3 => GgmlDType::Q5_0,
            Self::Mistral => GgmlDType::Q4_1,
        }
    }
}

/// Deterministic values uniform in `[-scale, scale]` (a 64-bit LCG seeded by `seed`).
pub fn uniform(shape: &[usize], seed: u64, scale: f32) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let data: Vec<f32> = (0..n)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((x >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect();
    Ok(Tensor::from_vec(data, shape, &Device::Cpu)?)
}

/// Builds the tensor list; each tensor gets its own seed from its order.
struct Tensors {
    list: Vec<(String, QTensor)>,
}

impl Tensors {
    fn add(&mut self, name: String, shape: &[usize], scale: f32, dtype: GgmlDType) -> Result<()> {
        let seed = self.list.len() as u64 + 1;
        let t = uniform(shape, seed, scale)?;
        self.list.push((name, QTensor::quantize(&t, dtype)?));
        Ok(())
    }

    /// A norm weight: 1 ± 0.2.
    fn norm(&mut self, name: String, len: usize) -> Result<()> {
        let seed = self.list.len() as u64 + 1;
        let t = (uniform(&[len], seed, 0.2)? + 1.0)?;
        self.list
            .push((name, QTensor::quantize(&t, GgmlDType::F32)?));
        Ok(())
    }

    /// A `(n, k)` matrix scaled so its outputs keep the inputs' magnitude.
    fn matrix(&mut self, name: String, n: usize, k: usize, dtype: GgmlDType) -> Result<()> {
        self.add(name, &[n, k], 1.7 / (k as f32).sqrt(), dtype)
    }
}

/// Llama 3.2's RoPE divisors for this head size (theta 500000, factor 32, low 1, high 4,
/// original context 8192): most frequencies change, so a file without them would differ.
fn llama3_factors() -> Vec<f32> {
    crate::model::rope::llama3_factors(HEAD_DIM, 500_000.0, 32.0, 1.0, 4.0, 8192.0)
}

/// Write the tiny `arch` model to `out`, with the tokenizer of the GGUF file `tokenizer_from`.
pub fn write_gguf(arch: TinyArch, tokenizer_from: &Path, out: &Path) -> Result<()> {
    let mut f = std::fs::File::open(tokenizer_from)
        .with_context(|| format!("open {}", tokenizer_from.display()))?;
    let source = gguf_file::Content::read(&mut f)?;
    let mut md: BTreeMap<String, Value> = source
        .metadata
        .iter()
        .filter(|(k, _)| k.starts_with("tokenizer."))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let vocab = match md.get("tokenizer.ggml.tokens") {
        Some(Value::Array(a)) => a.len(),
        _ => anyhow::bail!("{}: no tokenizer.ggml.tokens", tokenizer_from.display()),
    };
    let a = arch.gguf_arch();
    let u = |v: usize| Value::U32(v as u32);
    md.insert("general.architecture".into(), Value::String(a.into()));
    // (no architecture in the name: llama.cpp changes token attributes for names with "phi3")
    md.insert(
        "general.name".into(),
        Value::String("llorch tiny test model".into()),
    );
    let gemma = arch == TinyArch::Gemma3;
    let layers = if gemma { GEMMA3_LAYERS } else { LAYERS };
    md.insert(format!("{a}.context_length"), u(2048));
    md.insert(format!("{a}.embedding_length"), u(HIDDEN));
    md.insert(format!("{a}.block_count"), u(layers));
    md.insert(format!("{a}.feed_forward_length"), u(FF));
    md.insert(format!("{a}.attention.head_count"), u(HEADS));
    md.insert(format!("{a}.attention.head_count_kv"), u(KV_HEADS));
    md.insert(format!("{a}.rope.dimension_count"), u(HEAD_DIM));
    md.insert(
        format!("{a}.attention.layer_norm_rms_epsilon"),
        Value::F32(if gemma { 1e-6 } else { 1e-5 }),
    );
    let theta = match arch {
        TinyArch::Llama3Rope => 500_000.0,
        TinyArch::Gemma3 => 1_000_000.0,
        _ => 10_000.0,
    };
    if gemma {
        md.insert(format!("{a}.attention.key_length"), u(HEAD_DIM));
        md.insert(format!("{a}.attention.value_length"), u(HEAD_DIM));
        md.insert(format!("{a}.attention.sliding_window"), u(GEMMA3_WINDOW));
        md.insert(format!("{a}.rope.freq_base_swa"), Value::F32(10_000.0));
    }
    md.insert(format!("{a}.rope.freq_base"), Value::F32(theta));

    let q = arch.matrix_type();
    let kv = KV_HEADS * HEAD_DIM;
    let mut t = Tensors { list: Vec::new() };
    // Gemma scales the embeddings by sqrt(hidden) = 16 on input and ties them to the output:
    // 0.06 keeps both near a real model's range.
    let embd_scale = if gemma { 0.06 } else { 1.0 };
    t.add(
        "token_embd.weight".into(),
        &[vocab, HIDDEN],
        embd_scale,
        GgmlDType::Q8_0,
    )?;
    t.norm("output_norm.weight".into(), HIDDEN)?;
    // An output projection of its own: tied to random embeddings, each position would predict
    // its own token with a margin of ~50 nats (the tied path is covered by SmolLM2's parity and
    // Gemma 3 here); 0.35 spreads the logits like a real model's, a few nats between the top
    // tokens.
    if !gemma {
        t.add(
            "output.weight".into(),
            &[vocab, HIDDEN],
            0.35,
            GgmlDType::Q8_0,
        )?;
    }
    if arch == TinyArch::Llama3Rope {
        let f = Tensor::new(llama3_factors(), &Device::Cpu)?;
        t.list.push((
            "rope_freqs.weight".into(),
            QTensor::quantize(&f, GgmlDType::F32)?,
        ));
    }
    for i in 0..layers {
        let p = |s: &str| format!("blk.{i}.{s}");
        t.norm(p("attn_norm.weight"), HIDDEN)?;
        t.norm(p("ffn_norm.weight"), HIDDEN)?;
        if gemma {
            t.norm(p("attn_q_norm.weight"), HEAD_DIM)?;
            t.norm(p("attn_k_norm.weight"), HEAD_DIM)?;
            t.norm(p("post_attention_norm.weight"), HIDDEN)?;
            t.norm(p("post_ffw_norm.weight"), HIDDEN)?;
        }
        if arch == TinyArch::Phi3 {
            t.matrix(p("attn_qkv.weight"), HIDDEN + 2 * kv, HIDDEN, q)?;
            t.matrix(p("ffn_up.weight"), 2 * FF, HIDDEN, q)?;
        } else {
            t.matrix(p("attn_q.weight"), HIDDEN, HIDDEN, q)?;
            t.matrix(p("attn_k.weight"), kv, HIDDEN, q)?;
            t.matrix(p("attn_v.weight"), kv, HIDDEN, q)?;
            t.matrix(p("ffn_gate.weight"), FF, HIDDEN, q)?;
            t.matrix(p("ffn_up.weight"), FF, HIDDEN, q)?;
        }
        if arch == TinyArch::Qwen2 {
            t.add(p("attn_q.bias"), &[HIDDEN], 0.5, GgmlDType::F32)?;
            t.add(p("attn_k.bias"), &[kv], 0.5, GgmlDType::F32)?;
            t.add(p("attn_v.bias"), &[kv], 0.5, GgmlDType::F32)?;
        }
        t.matrix(p("attn_output.weight"), HIDDEN, HIDDEN, q)?;
        t.matrix(p("ffn_down.weight"), HIDDEN, FF, q)?;
    }

    let md_refs: Vec<(&str, &Value)> = md.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let t_refs: Vec<(&str, &QTensor)> = t.list.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let file = std::fs::File::create(out).with_context(|| format!("create {}", out.display()))?;
    let mut w = BufWriter::new(file);
    gguf_file::write(&mut w, &md_refs, &t_refs)?;
    Ok(())
}
