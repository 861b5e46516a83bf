//! Hyper-parameters of a decoder-only transformer, read from GGUF metadata or `config.json`.

use anyhow::{bail, Context, Result};
use candle_core::quantized::gguf_file;

/// Architectures the engine runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// Llama 2/3, TinyLlama, SmolLM, Mistral (GGUF `llama`; safetensors `llama`/`mistral`).
    Llama,
    /// Qwen 2 / 2.5 (q/k/v biases).
    Qwen2,
    /// Phi-3 (fused qkv and gate/up projections).
    Phi3,
    /// Gemma 3 (extra norms, q/k norms, GELU, scaled embeddings, sliding-window layers).
    Gemma3,
}

impl Architecture {
    /// Parse a GGUF `general.architecture` or a HF `model_type`.
    pub fn parse(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "llama" | "mistral" => Some(Self::Llama),
            "qwen2" => Some(Self::Qwen2),
            "phi3" => Some(Self::Phi3),
            "gemma3" | "gemma3_text" => Some(Self::Gemma3),
            _ => None,
        }
    }

    /// Canonical name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Llama => "llama",
            Self::Qwen2 => "qwen2",
            Self::Phi3 => "phi3",
            Self::Gemma3 => "gemma3",
        }
    }
}

/// Everything the forward pass needs to know about the model's shape.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    pub arch: Architecture,
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
    pub n_ff: usize,
    pub vocab_size: usize,
    pub rms_eps: f64,
    pub rope_theta: f32,
    /// RoPE base for local (sliding-window) layers (Gemma 3).
    pub rope_local_theta: f32,
    /// Linear RoPE scaling of the global layers: positions are divided by it (Gemma 3 4B and up: 8).
    pub rope_scale: f32,
    /// Rotate interleaved pairs (GGUF llama layout) instead of halves (HF/NeoX layout).
    pub rope_interleaved: bool,
    /// Per-frequency RoPE divisors from `config.json`'s `rope_scaling` (Llama 3.1+); GGUF files
    /// carry them as the `rope_freqs.weight` tensor instead, read by the transformer.
    pub rope_freq_factors: Option<Vec<f32>>,
    /// Context the model was trained for.
    pub trained_context: usize,
    /// Sliding window: a query sees this many positions, itself included.
    pub sliding_window: Option<usize>,
    /// With a window, every `sliding_window_pattern`-th layer is global (Gemma 3: 6); 0: every
    /// layer uses the window (Mistral's `sliding_window`).
    pub sliding_window_pattern: usize,
    /// Scale applied to attention scores (default 1/sqrt(head_dim)).
    pub attn_scale: f64,
}

/// `config.json`'s `rope_scaling`: none, or Llama 3's (`rope_type`/`type` `llama3`); any other
/// kind is refused rather than run with the wrong positions.
fn hf_rope_factors(
    rs: &serde_json::Value,
    head_dim: usize,
    theta: f32,
) -> Result<Option<Vec<f32>>> {
    if rs.is_null() {
        return Ok(None);
    }
    let kind = rs["rope_type"]
        .as_str()
        .or(rs["type"].as_str())
        .unwrap_or("");
    let f = |k: &str| -> Result<f32> {
        rs[k]
            .as_f64()
            .map(|x| x as f32)
            .with_context(|| format!("config.json: rope_scaling.{k} missing"))
    };
    match kind {
        "default" => Ok(None),
        "llama3" => Ok(Some(super::rope::llama3_factors(
            head_dim,
            theta,
            f("factor")?,
            f("low_freq_factor")?,
            f("high_freq_factor")?,
            f("original_max_position_embeddings")?,
        ))),
        other => bail!("config.json: unsupported rope_scaling type `{other}` (supported: llama3)"),
    }
}

fn md_u(c: &gguf_file::Content, key: &str) -> Result<usize> {
    let v = c
        .metadata
        .get(key)
        .with_context(|| format!("missing GGUF metadata `{key}`"))?;
    Ok(v.to_u32()
        .map(|x| x as usize)
        .or_else(|_| v.to_u64().map(|x| x as usize))?)
}

fn md_f(c: &gguf_file::Content, key: &str) -> Option<f32> {
    c.metadata.get(key).and_then(|v| v.to_f32().ok())
}

impl ModelConfig {
    /// Read from GGUF metadata (`{arch}.block_count` etc.).
    pub fn from_gguf(c: &gguf_file::Content) -> Result<Self> {
        let arch_name = c
            .metadata
            .get("general.architecture")
            .context("missing GGUF metadata `general.architecture`")?
            .to_string()?
            .clone();
        let Some(arch) = Architecture::parse(&arch_name) else {
            bail!("unsupported architecture `{arch_name}` (supported: llama, mistral, qwen2, phi3, gemma3)");
        };
        let p = |k: &str| format!("{arch_name}.{k}");
        let n_embd = md_u(c, &p("embedding_length"))?;
        let n_head = md_u(c, &p("attention.head_count"))?;
        let n_kv_head = md_u(c, &p("attention.head_count_kv")).unwrap_or(n_head);
        let head_dim = md_u(c, &p("attention.key_length")).unwrap_or(n_embd / n_head);
        let vocab_size = match md_u(c, &p("vocab_size")) {
            Ok(v) => v,
            Err(_) => match c.metadata.get("tokenizer.ggml.tokens") {
                Some(gguf_file::Value::Array(a)) => a.len(),
                _ => c
                    .tensor_infos
                    .get("token_embd.weight")
                    .map(|t| t.shape.dims()[0])
                    .unwrap_or(0),
            },
        };
        let rms_eps = md_f(c, &p("attention.layer_norm_rms_epsilon")).unwrap_or(1e-5) as f64;
        let default_theta = if arch == Architecture::Gemma3 {
            1_000_000.0
        } else {
            10_000.0
        };
        let rope_theta = md_f(c, &p("rope.freq_base")).unwrap_or(default_theta);
        let sliding_window = md_u(c, &p("attention.sliding_window")).ok();
        let n_layer = md_u(c, &p("block_count"))?;
        let mut attn_scale = (head_dim as f64).powf(-0.5);
        let mut rope_scale = 1.0;
        if arch == Architecture::Gemma3 {
            // query_pre_attn_scalar is not in GGUF; like llama.cpp, 27B (62 layers) uses
            // n_embd / n_head, the other sizes head_dim.
            if n_layer == 62 {
                attn_scale = ((n_embd / n_head) as f64).powf(-0.5);
            }
            let scaling = c
                .metadata
                .get(&p("rope.scaling.type"))
                .and_then(|v| v.to_string().ok());
            match scaling.map(String::as_str) {
                None | Some("none") => {}
                Some("linear") => rope_scale = md_f(c, &p("rope.scaling.factor")).unwrap_or(1.0),
                Some(other) => {
                    bail!("gemma3: unsupported rope.scaling.type `{other}` (supported: linear)")
                }
            }
        }
        Ok(Self {
            arch,
            n_layer,
            n_embd,
            n_head,
            n_kv_head,
            head_dim,
            n_ff: md_u(c, &p("feed_forward_length"))?,
            vocab_size,
            rms_eps,
            rope_theta,
            rope_local_theta: md_f(c, &p("rope.freq_base_swa")).unwrap_or(10_000.0),
            rope_scale,
            rope_interleaved: arch == Architecture::Llama,
            rope_freq_factors: None,
            trained_context: md_u(c, &p("context_length")).unwrap_or(4096),
            sliding_window: if arch == Architecture::Gemma3 {
                sliding_window.or(Some(512))
            } else {
                None
            },
            sliding_window_pattern: 6,
            attn_scale,
        })
    }

    /// Read from a HF `config.json`.
    pub fn from_hf_json(v: &serde_json::Value) -> Result<Self> {
        let model_type = v["model_type"].as_str().unwrap_or_default().to_string();
        let Some(arch) = Architecture::parse(&model_type) else {
            bail!("unsupported model_type `{model_type}` (supported: llama, mistral, qwen2, phi3)");
        };
        if arch == Architecture::Gemma3 {
            bail!("gemma3 is supported from GGUF files only");
        }
        let u = |k: &str| -> Result<usize> {
            v[k].as_u64()
                .map(|x| x as usize)
                .with_context(|| format!("config.json: missing `{k}`"))
        };
        let n_embd = u("hidden_size")?;
        let n_head = u("num_attention_heads")?;
        let head_dim = u("head_dim").unwrap_or(n_embd / n_head);
        let rope_theta = v["rope_theta"].as_f64().unwrap_or(10_000.0) as f32;
        let rope_freq_factors = hf_rope_factors(&v["rope_scaling"], head_dim, rope_theta)?;
        Ok(Self {
            arch,
            n_layer: u("num_hidden_layers")?,
            n_embd,
            n_head,
            n_kv_head: u("num_key_value_heads").unwrap_or(n_head),
            head_dim,
            n_ff: u("intermediate_size")?,
            vocab_size: u("vocab_size")?,
            rms_eps: v["rms_norm_eps"].as_f64().unwrap_or(1e-5),
            rope_theta,
            rope_local_theta: 10_000.0,
            rope_scale: 1.0,
            rope_interleaved: false,
            rope_freq_factors,
            trained_context: u("max_position_embeddings").unwrap_or(4096),
            // Mistral's window applies to every layer (as in transformers; llama.cpp runs
            // Mistral GGUFs as `llama`, without one). Qwen2's and Phi-3's are not read: their
            // GGUF conversions run without a window in llama.cpp too.
            sliding_window: match model_type.as_str() {
                "mistral" => v["sliding_window"].as_u64().map(|w| w as usize),
                _ => None,
            },
            sliding_window_pattern: 0,
            attn_scale: (head_dim as f64).powf(-0.5),
        })
    }

    /// Whether layer `i` uses sliding-window attention.
    pub fn is_local_layer(&self, i: usize) -> bool {
        self.sliding_window.is_some()
            && (self.sliding_window_pattern == 0
                || !(i + 1).is_multiple_of(self.sliding_window_pattern))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::gguf_file::{Content, Value, VersionedMagic};

    fn gemma3(
        layers: u32,
        n_embd: u32,
        heads: u32,
        key_len: u32,
        extra: &[(&str, Value)],
    ) -> ModelConfig {
        let mut md: Vec<(String, Value)> = vec![
            (
                "general.architecture".into(),
                Value::String("gemma3".into()),
            ),
            ("gemma3.block_count".into(), Value::U32(layers)),
            ("gemma3.embedding_length".into(), Value::U32(n_embd)),
            ("gemma3.attention.head_count".into(), Value::U32(heads)),
            ("gemma3.attention.head_count_kv".into(), Value::U32(1)),
            ("gemma3.attention.key_length".into(), Value::U32(key_len)),
            ("gemma3.feed_forward_length".into(), Value::U32(4 * n_embd)),
            ("gemma3.vocab_size".into(), Value::U32(262144)),
        ];
        md.extend(
            extra
                .iter()
                .map(|(k, v)| (format!("gemma3.{k}"), v.clone())),
        );
        let c = Content {
            magic: VersionedMagic::GgufV3,
            metadata: md.into_iter().collect(),
            tensor_infos: Default::default(),
            tensor_data_offset: 0,
        };
        ModelConfig::from_gguf(&c).unwrap()
    }

    #[test]
    fn gemma3_layers_scales_and_rope() {
        let c = gemma3(18, 640, 4, 256, &[]);
        let global: Vec<usize> = (0..18).filter(|&i| !c.is_local_layer(i)).collect();
        assert_eq!(global, [5, 11, 17]);
        assert_eq!(
            (
                c.sliding_window,
                c.rope_theta,
                c.rope_local_theta,
                c.rope_scale
            ),
            (Some(512), 1e6, 1e4, 1.0)
        );
        assert_eq!(c.attn_scale, 1.0 / 16.0);
        let big = gemma3(
            62,
            5376,
            32,
            128,
            &[
                ("rope.scaling.type", Value::String("linear".into())),
                ("rope.scaling.factor", Value::F32(8.0)),
                ("attention.sliding_window", Value::U32(1024)),
            ],
        );
        assert_eq!(big.attn_scale, 168f64.powf(-0.5));
        assert_eq!((big.rope_scale, big.sliding_window), (8.0, Some(1024)));
    }
}
