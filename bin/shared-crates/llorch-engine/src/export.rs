//! Write a GGUF model out as a HF-style safetensors directory (`config.json`, `tokenizer.json`,
//! `model.safetensors`): weights dequantized to F32, llama Q/K rows un-permuted back to the HF
//! half-rotation layout (qwen2 and phi3 GGUFs keep HF's layout), phi3's fused gate/up as
//! `gate_up_proj`, Llama 3 RoPE frequency factors as the `rope_scaling` of `config.json` that
//! reproduces them. Used to test the safetensors loader against the same weights.

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

/// The `rope_scaling` parameters of the Llama 3 releases (3.1/3.3: factor 8; 3.2: factor 32;
/// both with low/high frequency factors 1 and 4 over an original context of 8192).
const LLAMA3_SCALINGS: [(f32, f32, f32, f32); 2] =
    [(8.0, 1.0, 4.0, 8192.0), (32.0, 1.0, 4.0, 8192.0)];

/// The `config.json` `rope_scaling` whose divisors equal a GGUF's `rope_freqs.weight`: GGUF keeps
/// only the computed divisors, so the known Llama 3 parameter sets are tried and the one that
/// reproduces every divisor (to 1e-5 relative) is written; any other table is refused rather
/// than exported with different positions.
fn llama3_rope_scaling(factors: &[f32], head_dim: usize, theta: f32) -> Result<serde_json::Value> {
    for (factor, low, high, original) in LLAMA3_SCALINGS {
        let want = crate::model::rope::llama3_factors(head_dim, theta, factor, low, high, original);
        let same = want.len() == factors.len()
            && want
                .iter()
                .zip(factors)
                .all(|(a, b)| (a - b).abs() <= 1e-5 * a.abs().max(1.0));
        if same {
            return Ok(serde_json::json!({
                "rope_type": "llama3",
                "factor": factor,
                "low_freq_factor": low,
                "high_freq_factor": high,
                "original_max_position_embeddings": original as u64,
            }));
        }
    }
    bail!(
        "export: rope_freqs.weight ({} divisors) matches no Llama 3 rope_scaling \
         (factor 8 or 32, low 1, high 4, original context 8192)",
        factors.len()
    )
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
    let rope_scaling = if content.tensor_infos.contains_key("rope_freqs.weight") {
        let factors = content
            .tensor(&mut file, "rope_freqs.weight", &Device::Cpu)?
            .dequantize(&Device::Cpu)?
            .to_vec1::<f32>()?;
        llama3_rope_scaling(&factors, cfg.head_dim, cfg.rope_theta)?
    } else {
        serde_json::Value::Null
    };
    let llama = cfg.arch == Architecture::Llama;
    std::fs::create_dir_all(out)?;
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    for name in content.tensor_infos.keys() {
        if name == "rope_freqs.weight" {
            continue; // carried by config.json's rope_scaling
        }
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
        "rope_scaling": rope_scaling,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama3_divisors_map_back_to_their_rope_scaling() {
        let theta = 500_000.0;
        for factor in [8.0, 32.0] {
            let divisors = crate::model::rope::llama3_factors(64, theta, factor, 1.0, 4.0, 8192.0);
            let rs = llama3_rope_scaling(&divisors, 64, theta).unwrap();
            assert_eq!(rs["rope_type"], "llama3");
            assert_eq!(rs["factor"].as_f64(), Some(factor as f64));
            assert_eq!(rs["original_max_position_embeddings"], 8192);
        }
        let mut other = crate::model::rope::llama3_factors(64, theta, 16.0, 1.0, 4.0, 8192.0);
        let err = llama3_rope_scaling(&other, 64, theta)
            .unwrap_err()
            .to_string();
        assert!(err.contains("matches no Llama 3 rope_scaling"), "{err}");
        other.pop();
        assert!(llama3_rope_scaling(&other, 64, theta).is_err());
    }
}
