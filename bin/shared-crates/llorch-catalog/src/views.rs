//! The JSON shapes printed by `llorch-pool ... --json` (stable; see `.specs/pool-ctl.md`).
//! New fields may be added; existing fields keep their meaning.

use serde::{Deserialize, Serialize};

use crate::model::{LocalModel, ModelSpec};
use crate::workers::WorkerRecord;

/// A catalog entry with its local state (`models catalog|list|info|download|import`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelView {
    #[serde(flatten)]
    pub spec: ModelSpec,
    /// Whether the entry is built into llorch-pool (as opposed to registered/imported).
    pub builtin: bool,
    /// Whether the model's files are on this host.
    pub downloaded: bool,
    /// Where the files are, when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<LocalModel>,
}

/// A worker record plus live process facts (`worker list|spawn`, `status`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerView {
    #[serde(flatten)]
    pub record: WorkerRecord,
    /// Whether the recorded process is still running (same pid and start time, not a zombie).
    pub alive: bool,
    /// Resident memory of the worker process, when alive and readable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rss_bytes: Option<u64>,
    /// Seconds since the worker was started.
    pub uptime_s: u64,
    /// The worker's own `/health` status when it answers: `ready`, or `failed` (its engine
    /// died; `failure` says why); `unreachable` when alive but not answering.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<String>,
    /// Why the worker failed (with `health: failed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}

/// One compute backend on this host (`backends list`, `status`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackendView {
    /// `cpu`, `cuda` or `metal`.
    pub name: String,
    pub available: bool,
    /// Number of devices (logical CPUs for `cpu`).
    pub devices: u32,
    /// Why the backend is unavailable, or how it was detected.
    pub detail: String,
    /// Whether the host's `llorch-candled` was built with this backend (its
    /// `--print-backends`); absent when the binary could not be asked. A backend the worker
    /// lacks is never `available`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compiled: Option<bool>,
}

/// `llorch-pool status --json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusView {
    pub host: String,
    /// llorch-pool version.
    pub version: String,
    /// Pool home directory.
    pub home: String,
    /// Hugging Face cache directory used for downloads.
    pub hf_cache: String,
    pub backends: Vec<BackendView>,
    /// Models whose files are on this host.
    pub models: Vec<ModelView>,
    pub workers: Vec<WorkerView>,
    /// CPU, memory and GPUs of this host (absent from llorch-pool before 0.1 fleet support).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine: Option<MachineView>,
}

/// What a host has for placement (`status --json` field `machine`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MachineView {
    /// Logical CPUs usable by this process.
    pub cpu_cores: u32,
    /// `MemTotal` of `/proc/meminfo` (other systems: total physical memory).
    pub mem_total_bytes: u64,
    /// `MemAvailable` of `/proc/meminfo`: what new processes can use without swapping.
    pub mem_available_bytes: u64,
    /// Every GPU found (CUDA via `nvidia-smi`; Apple unified memory is the system memory).
    pub gpus: Vec<GpuView>,
}

/// One GPU.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuView {
    /// `cuda` or `metal`.
    pub backend: String,
    /// Device index as the worker's `--device` takes it.
    pub index: u32,
    /// Product name.
    pub name: String,
    pub mem_total_bytes: u64,
    pub mem_free_bytes: u64,
}

/// `models fit ID --json`: the memory estimate of one worker and where it fits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FitView {
    pub model: String,
    /// `cpu`, `cuda` or `metal`.
    pub backend: String,
    /// Context length per sequence the estimate assumes.
    pub ctx: u64,
    /// Sequences generated at once (the worker's `--parallel`).
    pub parallel: u32,
    /// Whether the model's files are on this host.
    pub present: bool,
    /// What the weights take once loaded (each tensor at the type and layout it runs as);
    /// the catalog's file size when the model is not on this host.
    pub weights_bytes: u64,
    /// Rotary position tables at `ctx` (F32 cos and sin).
    #[serde(default)]
    pub rope_bytes: u64,
    /// Transformer blocks, KV heads, head dimension and bytes per cached element.
    pub layers: u64,
    pub kv_heads: u64,
    pub head_dim: u64,
    pub kv_bytes_per_elem: u64,
    /// 2 (K and V) x layers x kv_heads x head_dim x ctx x parallel x bytes per element.
    pub kv_cache_bytes: u64,
    /// Prompt cache budget of the worker (`--prompt-cache-mb`).
    pub prompt_cache_bytes: u64,
    /// Fixed runtime overhead (buffers, tokenizer, activations).
    pub overhead_bytes: u64,
    /// weights + rotary tables + kv cache + prompt cache + overhead.
    pub total_bytes: u64,
    /// Every device of the backend with its free memory and whether the estimate fits.
    pub devices: Vec<DeviceFit>,
}

/// Whether one device can hold the estimate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceFit {
    /// `cpu`, `cuda:0`, `metal:0`.
    pub device: String,
    pub mem_total_bytes: u64,
    pub mem_free_bytes: u64,
    pub fits: bool,
}

/// `$LLORCH_HOME/downloads/<id>.json` while `models download ID` runs, and the answer of
/// `models progress ID`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DownloadProgress {
    pub model: String,
    /// Bytes of the model's files present so far (cached files and resumed parts count).
    pub bytes_done: u64,
    /// Sum of the sizes of the model's files.
    pub bytes_total: u64,
    /// Unix time in ms of the last update (the writer updates it at least every 250 ms while
    /// bytes arrive).
    pub updated: u64,
    /// Process id of the downloading `llorch-pool`.
    pub pid: u32,
}

/// Printed on stdout instead of a result when a command fails under `--json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorView {
    pub error: ErrorDetail,
}

/// The error inside [`ErrorView`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Stable snake_case kind, e.g. `model_not_found`, `checksum_mismatch`, `worker_failed`.
    pub kind: String,
    pub message: String,
}
