//! Write a GGUF model out as a HF-style safetensors directory (`config.json`, `tokenizer.json`,
//! `model.safetensors`): weights dequantized to F32, llama Q/K rows un-permuted back to the HF
//! half-rotation layout (qwen2 and phi3 GGUFs keep HF's layout), phi3's fused gate/up as
//! `gate_up_proj`. Used to test the safetensors loader against the same weights.

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::quantized::gguf_file;
use candle_core::{Device, Tensor};

use crate::load::hf_name;
use crate::model::{Architecture, ModelConfig};
use crate::tokenizer::Tokenizer;

/// Undo llama.cpp's Q/K row permutation: GGUF rows are `(head, pair, half)`; HF rows are
/// `(head, half, pair)`.
fn unpermute(t: &Tensor, n_head: usize) -> Result<Tensor> {
    let (rows, cols) = t.dims2()?;
    let hd = rows / n_head;
    Ok(t.reshape((n_head, hd / 2, 2, cols))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((rows, cols))?)
}

/// Export the llama-architecture GGUF at `gguf` into directory `out`.
pub fn gguf_to_safetensors(gguf: &Path, out: &Path) -> Result<()> {
    let mut file = File::open(gguf).with_context(|| format!("{}: cannot open", gguf.display()))?;
    let content = gguf_file::Content::read(&mut file)
        .map_err(|e| anyhow::anyhow!("{}: {e}", gguf.display()))?;
    let cfg = ModelConfig::from_gguf(&content)?;
    let (model_type, class) = match cfg.arch {
        Architecture::Llama => ("llama", "LlamaForCausalLM"),
        Architecture::Qwen2 => ("qwen2", "Qwen2ForCausalLM"),
        Architecture::Phi3 => ("phi3", "Phi3ForCausalLM"),
        other => bail!(
            "export supports llama, qwen2 and phi3 GGUF files (got {})",
            other.as_str()
        ),
    };
    if content.tensor_infos.contains_key("rope_freqs.weight") {
        bail!("export: RoPE frequency factors (Llama 3) have no config.json form here");
    }
    let llama = cfg.arch == Architecture::Llama;
    std::fs::create_dir_all(out)?;
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    for name in content.tensor_infos.keys() {
        let q = content.tensor(&mut file, name, &Device::Cpu)?;
        let mut t = q.dequantize(&Device::Cpu)?;
        if llama && name.ends_with("attn_q.weight") {
            t = unpermute(&t, cfg.n_head)?;
        } else if llama && name.ends_with("attn_k.weight") {
            t = unpermute(&t, cfg.n_kv_head)?;
        }
        let mut hf = hf_name(name);
        if cfg.arch == Architecture::Phi3 {
            hf = hf.replace("mlp.up_proj", "mlp.gate_up_proj");
        }
        tensors.insert(hf, t);
    }
    let tied = !tensors.contains_key("lm_head.weight");
    candle_core::safetensors::save(&tensors, out.join("model.safetensors"))?;
    let tok = Tokenizer::from_gguf(&content)?;
    std::fs::write(out.join("tokenizer.json"), tok.to_tokenizer_json()?)?;
    let config = serde_json::json!({
        "architectures": [class],
        "model_type": model_type,
        "hidden_size": cfg.n_embd,
        "intermediate_size": cfg.n_ff,
        "num_hidden_layers": cfg.n_layer,
        "num_attention_heads": cfg.n_head,
        "num_key_value_heads": cfg.n_kv_head,
        "head_dim": cfg.head_dim,
        "vocab_size": cfg.vocab_size,
        "rms_norm_eps": cfg.rms_eps,
        "rope_theta": cfg.rope_theta,
        "max_position_embeddings": cfg.trained_context,
        "tie_word_embeddings": tied,
        "bos_token_id": tok.bos_id(),
        "eos_token_id": tok.stop_ids().first(),
        "torch_dtype": "float32",
    });
    std::fs::write(
        out.join("config.json"),
        serde_json::to_string_pretty(&config)?,
    )?;
    let mut tcfg = serde_json::json!({
        "bos_token": tok.bos_token(),
        "eos_token": tok.eos_token(),
        "add_bos_token": false,
    });
    if let Some(t) = tok.chat_template() {
        tcfg["chat_template"] = serde_json::Value::String(t.to_string());
    }
    std::fs::write(
        out.join("tokenizer_config.json"),
        serde_json::to_string_pretty(&tcfg)?,
    )?;
    Ok(())
}
