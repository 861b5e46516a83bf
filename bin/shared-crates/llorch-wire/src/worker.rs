//! The worker's other routes: `/health`, `/tokenize`, `/detokenize`, `/cancel`.

use serde::{Deserialize, Serialize};

use crate::execute::ChatMessage;

/// Whether the worker is generating right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerState {
    Idle,
    Busy,
}

/// Memory of a worker's device, in `/health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerMemory {
    /// In use now: this process's RSS on the CPU; the device's used memory (every process) on
    /// a GPU.
    pub used_bytes: u64,
    /// The device's total (system memory on the CPU); absent when unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_bytes: Option<u64>,
    /// The start-up estimate: weights + KV cache for ctx x parallel + prompt cache + overhead.
    pub estimate_bytes: u64,
    /// Where `used_bytes` comes from: `rss` or `nvidia-smi`.
    pub source: String,
}

/// `GET /health`: answered from cached state, also while a job runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerHealth {
    /// `"ready"` once the HTTP server answers (the model is loaded before it binds);
    /// `"failed"` when the engine thread has died (then `failure` says why, and `/execute`
    /// answers 503 `ENGINE_FAILED` until the worker is restarted).
    pub status: String,
    /// Why the worker failed (with `status: "failed"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    pub state: WorkerState,
    pub worker_id: String,
    /// Model name (file stem or directory name).
    pub model: String,
    pub model_path: String,
    /// `gguf` or `safetensors`.
    pub format: String,
    /// e.g. `llama`, `qwen2`, `gemma3`.
    pub architecture: String,
    /// Weight type as stored (e.g. `Q4_1`) and as run (e.g. `Q8_0` after load-time requantization).
    pub quantization: String,
    pub runtime_quantization: String,
    /// Context window this worker serves (may be below the model's trained context).
    pub context_length: u32,
    pub vocab_size: u32,
    /// `cpu`, `cuda` or `metal`.
    pub backend: String,
    /// e.g. `cpu`, `cuda:0`.
    pub device: String,
    /// Compute threads of the engine.
    pub threads: u32,
    /// CPU SIMD features compiled into this build (e.g. `avx2`, `fma`, `f16c`).
    pub simd: Vec<String>,
    /// Jobs generating now (at most the worker's `--parallel`) and waiting.
    pub active_jobs: u32,
    pub queued_jobs: u32,
    /// Jobs the worker accepts at once (`--parallel` generating + `--max-queue` waiting);
    /// beyond that it answers 503.
    pub slots_total: u32,
    /// Jobs the worker generates at once (`--parallel`); 0 from workers that predate it.
    #[serde(default)]
    pub parallel: u32,
    pub uptime_s: f64,
    /// Wall time from process start to ready.
    pub load_time_ms: f64,
    /// Memory on the worker's device (absent from workers that predate it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<WorkerMemory>,
    pub version: String,
    /// The chat template `messages` are rendered with, and why it was chosen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat_template: Option<ChatTemplateReport>,
}

/// `/health`'s account of the chat template in use.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatTemplateReport {
    /// `model` (from the model's metadata), `chatml`, `gemma`, `transcript`, or a file path.
    pub name: String,
    /// Why this one (e.g. `model metadata`, `--chat-template`, or the base-model finding).
    pub reason: String,
    /// Text that ends a reply under this template besides end-of-turn tokens (transcript).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub turn_stops: Vec<String>,
    /// The load-time probe: the template's end-of-turn token and its log-probability after a
    /// finished reply (very negative = the model never learned it: a base model).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_of_turn_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_of_turn_logprob: Option<f32>,
}

/// `POST /tokenize`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TokenizeRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Rendered with the chat template first (generation prompt appended).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages: Option<Vec<ChatMessage>>,
    /// Parse special tokens written in the text and add BOS where the model wants it (default true).
    #[serde(default = "default_true")]
    pub add_special_tokens: bool,
    /// Also return each token's text.
    #[serde(default)]
    pub with_pieces: bool,
}

fn default_true() -> bool {
    true
}

/// Answer of `POST /tokenize`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenizeResponse {
    pub ids: Vec<u32>,
    pub count: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pieces: Option<Vec<String>>,
    /// The rendered prompt when `messages` were given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rendered: Option<String>,
}

/// `POST /detokenize`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DetokenizeRequest {
    pub ids: Vec<u32>,
    /// Leave out control tokens such as `<|im_end|>` (default false).
    #[serde(default)]
    pub skip_special_tokens: bool,
}

/// Answer of `POST /detokenize`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DetokenizeResponse {
    pub text: String,
}

/// `POST /cancel`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CancelRequest {
    pub job_id: String,
}

/// Answer of `POST /cancel`: `cancelling` for a running or queued job; unknown ids get 404.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CancelResponse {
    pub job_id: String,
    pub status: String,
}
