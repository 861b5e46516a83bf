//! orchestratord's worker-facing and meta API: worker registration, heartbeats, the worker list,
//! capabilities and health. Contract: `.specs/orchestratord.md`. Re-exported by [`crate::tasks`].

use serde::{Deserialize, Serialize};

use crate::secret::Secret;
use crate::tasks::Priority;

/// Body of `POST /v2/workers/register`, sent by a worker once it is ready (idempotent:
/// re-registering the same `worker_id` replaces its entry).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerRegistration {
    pub worker_id: String,
    /// Base URL the orchestrator reaches the worker at, e.g. `http://10.0.0.5:8001`.
    pub url: String,
    /// Model id tasks name (catalog id, else the model name from `/health`).
    pub model: String,
    /// Other names tasks may use for the same model (e.g. the file stem).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// `cpu`, `cuda` or `metal`.
    pub backend: String,
    /// Tasks the orchestrator runs on this worker at once.
    pub slots_total: u32,
    /// Context window the worker serves.
    pub context_length: u32,
    /// Bearer token the orchestrator must send on the worker's `/execute`, `/cancel` and
    /// `/tokenize` (absent for a worker without `--api-token`). Never shown by `GET /v2/workers`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_token: Option<Secret>,
}

/// Answer of a registration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerRegistered {
    pub worker_id: String,
    /// Heartbeat this often.
    pub heartbeat_interval_ms: u64,
    /// A worker silent this long gets no new tasks until it heartbeats again.
    pub heartbeat_timeout_ms: u64,
}

/// Body of `POST /v2/workers/{id}/heartbeat` (all fields optional). A 404 answer means the
/// orchestrator does not know the worker: register again.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkerHeartbeat {
    #[serde(default)]
    pub active_jobs: u32,
    #[serde(default)]
    pub queued_jobs: u32,
    /// The worker's `/health` status: `ready`, or `failed` when its engine died (the
    /// orchestrator then stops sending it tasks until a heartbeat says `ready` again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Why the worker failed (with `status: failed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}

/// Answer of a heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerHeartbeatAck {
    pub worker_id: String,
    pub heartbeat_interval_ms: u64,
}

/// Whether the scheduler may place tasks on a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerStatus {
    Ready,
    /// Missed heartbeats or failed a request; gets no new tasks.
    Unhealthy,
}

/// How the orchestrator learned about a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerSource {
    /// `POST /v2/workers/register`; kept alive by heartbeats.
    Registered,
    /// Listed in the config; kept alive by the orchestrator polling its `/health`.
    Static,
}

/// One entry of `GET /v2/workers`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerInfo {
    pub worker_id: String,
    pub url: String,
    pub model: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    pub backend: String,
    pub slots_total: u32,
    /// Tasks the orchestrator runs on it now.
    pub slots_busy: u32,
    pub context_length: u32,
    pub status: WorkerStatus,
    pub source: WorkerSource,
    /// Unix ms of the last heartbeat or successful health probe.
    pub last_seen_ms: u64,
    /// Why the worker is unhealthy, when it said so itself (e.g. its engine died).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}

/// `GET /v2/workers`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerList {
    pub workers: Vec<WorkerInfo>,
}

/// One model of `GET /v2/meta/capabilities`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCapability {
    pub model: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// Smallest context window among its workers (the admission limit).
    pub context_length: u32,
    pub workers_ready: u32,
    pub slots_total: u32,
}

/// `GET /v2/meta/capabilities`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Capabilities {
    pub api_version: String,
    pub models: Vec<ModelCapability>,
    pub priorities: Vec<Priority>,
    /// Queue capacity per priority class.
    pub queue_capacity: u32,
    /// `reject` or `drop-lru`.
    pub queue_policy: String,
    /// `least-loaded` or `round-robin`.
    pub placement: String,
    pub max_tokens: u32,
    pub auth_required: bool,
}

/// `GET /health` of the orchestrator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrchestratorHealth {
    /// Always `ok` while the process answers.
    pub status: String,
    pub workers_ready: u32,
    pub workers_total: u32,
    pub queue_depth: u32,
    pub tasks_running: u32,
    pub version: String,
}
