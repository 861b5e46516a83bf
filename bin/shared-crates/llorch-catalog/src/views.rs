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
