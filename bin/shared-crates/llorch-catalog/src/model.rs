//! Catalog entries (what a model is and where it comes from) and local state (where its files
//! are on this host).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// On-disk weight format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelFormat {
    /// One self-contained `.gguf` file (weights, tokenizer, chat template).
    Gguf,
    /// A directory of `*.safetensors` shards plus `config.json` and `tokenizer.json`.
    Safetensors,
}

impl ModelFormat {
    /// `gguf` or `safetensors`.
    pub fn as_str(self) -> &'static str {
        match self {
            ModelFormat::Gguf => "gguf",
            ModelFormat::Safetensors => "safetensors",
        }
    }
}

impl std::fmt::Display for ModelFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A known model: where to get it and what it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSpec {
    /// Catalog id used on the command line, e.g. `smollm2-135m`.
    pub id: String,
    /// Human-readable name.
    pub name: String,
    /// Hugging Face repo (`org/name`); absent for models that were only imported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    /// Branch, tag or commit on the hub.
    #[serde(default = "default_revision")]
    pub revision: String,
    /// Files to fetch: exact repo paths, or glob patterns (`*`, `?`) matched against the repo listing.
    #[serde(default)]
    pub files: Vec<String>,
    pub format: ModelFormat,
    /// e.g. `llama`, `qwen2`, `phi3`, `mistral`.
    pub architecture: String,
    /// Total size of the files in bytes (approximate for built-ins; 0 = unknown).
    pub size_bytes: u64,
    /// sha256 of the single weights file, where known (GGUF entries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// The default hub revision.
pub fn default_revision() -> String {
    "main".to_string()
}

impl ModelSpec {
    /// Whether `id` is a valid catalog id: 1-64 of `[a-z0-9._-]`, starting alphanumeric.
    pub fn valid_id(id: &str) -> bool {
        let ok_char =
            |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-');
        !id.is_empty()
            && id.len() <= 64
            && id.chars().all(ok_char)
            && id.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
    }
}

/// How a model's files got onto this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelSource {
    /// Fetched by `models download` into the Hugging Face cache.
    Download,
    /// Registered in place by `models import`.
    Import,
}

/// One file of a model present on this host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LocalFile {
    /// Path inside the repo (or the file name for imports).
    pub name: String,
    /// Absolute path on this host.
    pub path: PathBuf,
    pub size_bytes: u64,
    /// sha256 (hex) of the content, computed when the file was downloaded or imported.
    pub sha256: String,
}

/// A model's files on this host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LocalModel {
    pub source: ModelSource,
    /// What the worker's `--model` gets: the `.gguf` file or the safetensors directory.
    pub path: PathBuf,
    pub files: Vec<LocalFile>,
    pub size_bytes: u64,
    /// Hub commit the files came from (downloads only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// Unix seconds when the files were downloaded or imported.
    pub added_at: u64,
    /// Trained context length read from the model's metadata, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_length: Option<u64>,
    /// Dominant weight type read from the model's metadata (e.g. `Q4_1`, `BF16`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantization: Option<String>,
}
