//! Opening a model path (a GGUF file or a safetensors directory): format detection, validation
//! with errors that name the file and the reason, tokenizer and chat template.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::Device;
use llorch_constraint::{Compiler, ConstraintError, Guide};
use llorch_wire::Constraint;

use crate::chat::ChatTemplate;
use crate::chat_choice::{self, ChatTemplateChoice, ChatTemplateInfo};
use crate::model::{Kernels, ModelConfig, Requant, Transformer, Weights};
use crate::tokenizer::Tokenizer;

/// Load-time options.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub device: Device,
    pub requant: Requant,
    /// Largest context to serve; `None` = the model's trained context, capped at 8192.
    pub max_context: Option<usize>,
    /// How to pick the chat template.
    pub chat_template: ChatTemplateChoice,
    /// The engine's own CPU kernels, or the device-generic path GPUs run (see [`Kernels`]).
    pub kernels: Kernels,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            device: Device::Cpu,
            requant: Requant::Auto,
            max_context: None,
            chat_template: ChatTemplateChoice::Auto,
            kernels: Kernels::Native,
        }
    }
}

/// Facts about the loaded model, for `/health` and logs.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    pub name: String,
    pub path: PathBuf,
    pub format: &'static str,
    pub architecture: &'static str,
    pub quantization: String,
    pub runtime_quantization: String,
    pub context_length: usize,
    pub trained_context: usize,
    pub vocab_size: usize,
    pub tokenizer_kind: &'static str,
    /// The chat template in use and why.
    pub chat_template: ChatTemplateInfo,
    pub load_time_ms: f64,
    /// The compute path (`native` only on the CPU with the engine's kernels).
    pub kernels: Kernels,
}

/// A model ready to run.
pub struct LoadedModel {
    pub model: Transformer,
    pub tokenizer: Tokenizer,
    pub chat: ChatTemplate,
    pub info: ModelInfo,
    /// The constraint compiler over this vocabulary, built on first use.
    constraints: OnceLock<Result<Compiler, String>>,
}

impl LoadedModel {
    /// The compiler of constrained-decoding constraints for this model's vocabulary (its token
    /// trie is built on the first call, ~tens of ms; later calls share it).
    pub fn constraint_compiler(&self) -> Result<&Compiler, String> {
        self.constraints
            .get_or_init(|| {
                let tok = &self.tokenizer;
                let tokens: Vec<(Vec<u8>, bool)> = (0..tok.vocab_size() as u32)
                    .map(|id| (tok.token_bytes(id).to_vec(), tok.is_special(id)))
                    .collect();
                Compiler::new(&tokens, tok.stop_ids())
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// Compile `c` for this model: the guide a [`Job`](crate::Job) carries.
    pub fn compile_constraint(&self, c: &Constraint) -> Result<Guide, ConstraintError> {
        let compiler = self
            .constraint_compiler()
            .map_err(|message| ConstraintError {
                field: c.field().to_string(),
                message,
            })?;
        compiler.compile(c)
    }
}

const DEFAULT_CONTEXT_CAP: usize = 8192;

/// Load the model at `path`: a `.gguf` file or a directory with `config.json`, `tokenizer.json`
/// and `*.safetensors`.
pub fn load(path: &Path, opts: &LoadOptions) -> Result<LoadedModel> {
    let start = Instant::now();
    let meta = std::fs::metadata(path)
        .with_context(|| format!("{}: cannot open model", path.display()))?;
    let mut lm = if meta.is_dir() {
        load_safetensors(path, opts)?
    } else {
        load_gguf(path, opts)?
    };
    lm.info.load_time_ms = start.elapsed().as_secs_f64() * 1e3;
    Ok(lm)
}

fn context_for(trained: usize, opts: &LoadOptions) -> usize {
    opts.max_context
        .unwrap_or(DEFAULT_CONTEXT_CAP.min(trained))
        .min(trained)
        .max(16)
}

fn model_name(path: &Path) -> String {
    path.file_stem()
        .or_else(|| path.file_name())
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn load_gguf(path: &Path, opts: &LoadOptions) -> Result<LoadedModel> {
    use llorch_catalog::gguf::{self, GgufError};
    let (header, file) = gguf::read(path).map_err(|e| match e {
        GgufError::Open(e) => {
            anyhow::Error::new(e).context(format!("{}: cannot open model file", path.display()))
        }
        GgufError::Header(msg) if msg.contains("dtype") => anyhow::anyhow!(
            "{}: unsupported quantization type ({msg}); supported: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K..Q6_K",
            path.display()
        ),
        GgufError::Header(msg) => {
            anyhow::anyhow!("{}: not a valid GGUF file: {msg}", path.display())
        }
    })?;
    // A truncated download still has a readable header: check every tensor lies inside the file.
    if let Some(t) = header.truncated() {
        bail!(
            "{}: file is truncated: tensor `{}` ends at byte {} but the file has {} bytes \
             (re-download or re-verify the model)",
            path.display(),
            t.tensor,
            t.ends_at,
            t.file_size
        );
    }
    let cfg = ModelConfig::from_gguf(&header.content)
        .with_context(|| format!("{}: unsupported model", path.display()))?;
    let tokenizer = Tokenizer::from_gguf(&header.content).with_context(|| {
        format!(
            "{}: cannot build tokenizer from GGUF metadata",
            path.display()
        )
    })?;
    let ctx = context_for(cfg.trained_context, opts);
    let trained = cfg.trained_context;
    let mut weights = Weights::gguf(path, header, file, &opts.device, opts.requant, opts.kernels)?;
    let model = Transformer::load(cfg, &mut weights, &|n: &str| n.to_string(), ctx)
        .with_context(|| format!("{}: cannot load weights", path.display()))?;
    assemble(path, "gguf", trained, model, &weights, tokenizer, opts)
}

/// Put a loaded model together with its chat template and the facts `/health` reports about it.
fn assemble(
    path: &Path,
    format: &'static str,
    trained_context: usize,
    model: Transformer,
    weights: &Weights,
    tokenizer: Tokenizer,
    opts: &LoadOptions,
) -> Result<LoadedModel> {
    let (chat, chat_info) =
        chat_choice::choose(&opts.chat_template, &tokenizer, model.cfg.arch, &model)?;
    let info = ModelInfo {
        name: model_name(path),
        path: path.to_path_buf(),
        format,
        architecture: model.cfg.arch.as_str(),
        quantization: weights.stored_type.clone(),
        runtime_quantization: weights.runtime_type.clone(),
        context_length: model.max_context,
        trained_context,
        vocab_size: model.cfg.vocab_size,
        tokenizer_kind: tokenizer.kind(),
        chat_template: chat_info,
        load_time_ms: 0.0,
        kernels: if model.is_native() {
            Kernels::Native
        } else {
            Kernels::Generic
        },
    };
    Ok(LoadedModel {
        model,
        tokenizer,
        chat,
        info,
        constraints: OnceLock::new(),
    })
}

/// Map GGUF tensor names to HF safetensors names.
pub fn hf_name(gguf: &str) -> String {
    let fixed = match gguf {
        "token_embd.weight" => return "model.embed_tokens.weight".into(),
        "output_norm.weight" => return "model.norm.weight".into(),
        "output.weight" => return "lm_head.weight".into(),
        _ => gguf,
    };
    let Some(rest) = fixed.strip_prefix("blk.") else {
        return fixed.to_string();
    };
    let (layer, tail) = rest.split_once('.').unwrap_or((rest, ""));
    let (base, suffix) = match tail.split_once('.') {
        Some((b, s)) => (b, Some(s)),
        None => (tail, None),
    };
    let hf = match base {
        "attn_norm" => "input_layernorm",
        "ffn_norm" => "post_attention_layernorm",
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "attn_qkv" => "self_attn.qkv_proj",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_down" => "mlp.down_proj",
        "ffn_up" => "mlp.up_proj",
        other => other,
    };
    match suffix {
        Some(s) => format!("model.layers.{layer}.{hf}.{s}"),
        None => format!("model.layers.{layer}.{hf}"),
    }
}

fn load_safetensors(dir: &Path, opts: &LoadOptions) -> Result<LoadedModel> {
    let cfg_path = dir.join("config.json");
    let text = std::fs::read_to_string(&cfg_path)
        .with_context(|| format!("{}: cannot read", cfg_path.display()))?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{}: invalid JSON", cfg_path.display()))?;
    let cfg = ModelConfig::from_hf_json(&json)
        .with_context(|| format!("{}: unsupported model", cfg_path.display()))?;
    let tokenizer = Tokenizer::from_dir(dir)?;
    let ctx = context_for(cfg.trained_context, opts);
    let trained = cfg.trained_context;
    let phi3 = cfg.arch == crate::model::Architecture::Phi3;
    let mut weights = Weights::safetensors(dir, &opts.device, opts.requant, opts.kernels)?;
    let names = move |n: &str| {
        let hf = hf_name(n);
        if phi3 {
            hf.replace("mlp.up_proj", "mlp.gate_up_proj")
        } else {
            hf
        }
    };
    let model = Transformer::load(cfg, &mut weights, &names, ctx)
        .with_context(|| format!("{}: cannot load weights", dir.display()))?;
    assemble(
        dir,
        "safetensors",
        trained,
        model,
        &weights,
        tokenizer,
        opts,
    )
}
