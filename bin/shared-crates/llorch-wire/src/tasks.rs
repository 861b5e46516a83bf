//! orchestratord's API: tasks (submit, SSE events, status), worker registration and heartbeats,
//! capabilities. Contract: `.specs/orchestratord.md`; served as OpenAPI at `/v2/openapi.json`.

use serde::{Deserialize, Serialize};

pub use crate::registry::*;
pub use crate::secret::Secret;

use crate::error::{ErrorCode, FieldError};
use crate::execute::{ExecuteRequest, Generation, StopReason, TokenLogprob};

/// API version reported by `/v2/meta/capabilities` and the OpenAPI `info.version`.
pub const API_VERSION: &str = "2.0.0";

/// Route a worker calls once it is ready (`POST`, body [`WorkerRegistration`]).
pub const REGISTER_PATH: &str = crate::routes::orchestrator::WORKER_REGISTER;

/// `POST` here every `heartbeat_interval_ms` (body [`WorkerHeartbeat`], may be empty `{}`).
pub fn heartbeat_path(worker_id: &str) -> String {
    crate::routes::fill(crate::routes::orchestrator::WORKER_HEARTBEAT, &[worker_id])
}

/// `DELETE` here on shutdown.
pub fn worker_path(worker_id: &str) -> String {
    crate::routes::fill(crate::routes::orchestrator::WORKER, &[worker_id])
}

/// Longest accepted `task_id`, `session_id` or `worker_id`.
pub const MAX_ID_LEN: usize = 128;

/// Whether `id` is a usable task/worker id: 1..=128 chars of `[A-Za-z0-9._:-]`.
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':'))
}

/// Scheduling class of a task. Interactive tasks go first; batch tasks are not starved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    #[default]
    Interactive,
    Batch,
}

impl Priority {
    /// The wire spelling (also the metric label).
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Interactive => "interactive",
            Priority::Batch => "batch",
        }
    }
}

/// Body of `POST /v2/tasks`. Generation fields are the worker's ([`ExecuteRequest`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskRequest {
    /// Model id or alias as registered by a worker (see `GET /v2/meta/capabilities`).
    pub model: String,
    /// Caller-chosen id (`[A-Za-z0-9._:-]`, at most 128 chars); generated when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    /// Free-form session tag, recorded and logged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    #[serde(default)]
    pub priority: Priority,
    /// The task must end within this many ms of submission, else `DEADLINE_EXCEEDED`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
    /// The prompt and how to generate: the same fields as the worker's `/execute`.
    #[serde(flatten)]
    pub gen: Generation,
}

impl TaskRequest {
    /// Every JSON key the body may hold; anything else is rejected (catches typos).
    pub const FIELDS: &'static [&'static str] = &[
        "model",
        "task_id",
        "session_id",
        "priority",
        "deadline_ms",
        "prompt",
        "messages",
        "prompt_ids",
        "max_tokens",
        "temperature",
        "top_p",
        "top_k",
        "min_p",
        "repetition_penalty",
        "seed",
        "stop",
        "logprobs",
        "constraint",
        "tools",
    ];

    /// The worker request for one attempt of this task.
    pub fn to_execute(&self, job_id: String) -> ExecuteRequest {
        ExecuteRequest {
            job_id: Some(job_id),
            gen: self.gen.clone(),
            prompt_logprobs: None,
        }
    }

    /// Check every field; returns all problems at once.
    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut errors = Vec::new();
        self.gen.validate_into(&mut errors);
        if self.model.is_empty() {
            errors.insert(0, FieldError::new("model", "required", "model is required"));
        }
        for (name, id) in [("task_id", &self.task_id), ("session_id", &self.session_id)] {
            if id.as_deref().is_some_and(|v| !is_valid_id(v)) {
                errors.push(FieldError::new(
                    name,
                    "pattern([A-Za-z0-9._:-]{1,128})",
                    format!("{name} must be 1 to {MAX_ID_LEN} characters of A-Z a-z 0-9 . _ : -"),
                ));
            }
        }
        if self.deadline_ms == Some(0) {
            errors.push(
                FieldError::new("deadline_ms", "range(1..)", "deadline_ms must be positive")
                    .with_value(0),
            );
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

/// 202 answer of `POST /v2/tasks`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskAccepted {
    pub task_id: String,
    /// Tasks ahead of this one (0 = next to run).
    pub queue_position: u32,
    /// Estimated wait before a worker takes the task, from the measured drain rate.
    pub predicted_start_ms: u64,
    /// `GET` this for the SSE event stream.
    pub events_url: String,
    /// `GET` this for the task's status.
    pub status_url: String,
}

/// Life cycle of a task; the last three are terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    Queued,
    Running,
    Completed,
    Failed,
    Cancelled,
}

impl TaskState {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Queued => "queued",
            TaskState::Running => "running",
            TaskState::Completed => "completed",
            TaskState::Failed => "failed",
            TaskState::Cancelled => "cancelled",
        }
    }

    /// Parse the wire spelling.
    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Queued,
            Self::Running,
            Self::Completed,
            Self::Failed,
            Self::Cancelled,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }

    /// Completed, failed or cancelled.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskState::Completed | TaskState::Failed | TaskState::Cancelled
        )
    }
}

/// Orchestrator-side timings of a task, in ms.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskTimings {
    /// Submission → a worker accepted the (last) attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_time_ms: Option<f64>,
    /// Submission → first token relayed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttft_ms: Option<f64>,
    /// Submission → terminal event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e2e_ms: Option<f64>,
    /// As reported by the worker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefill_time_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decode_time_ms: Option<f64>,
}

/// Token counts of a task.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskUsage {
    pub tokens_in: u32,
    pub tokens_out: u32,
}

/// Why a task failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskError {
    pub code: ErrorCode,
    pub message: String,
}

/// `GET /v2/tasks/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskStatus {
    pub task_id: String,
    pub model: String,
    pub priority: Priority,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    pub state: TaskState,
    /// Present while queued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_position: Option<u32>,
    /// The worker of the last attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<String>,
    /// Dispatch attempts so far (retries before the first token add attempts).
    pub attempts: u32,
    /// Unix ms.
    pub created_at_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at_ms: Option<u64>,
    pub timings: TaskTimings,
    pub usage: TaskUsage,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<StopReason>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<TaskError>,
    /// The tenant that submitted the task (`default` without a tenant key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
}

/// `GET /v2/tasks[?state=S&limit=N]`: the most recent tasks (also of earlier runs), newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskList {
    pub tasks: Vec<TaskStatus>,
}

/// One SSE event of `GET /v2/tasks/{id}/events`: `event: <type>`, `id: <n>` (1-based, per task)
/// and `data: <json>` carrying the same `type`. Order: `queued`*, `started`, (`token` | `metrics`)*,
/// then exactly one `end` or `error`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TaskEvent {
    /// Waiting for a worker; sent on admission and whenever the position changes.
    Queued {
        task_id: String,
        queue_position: u32,
        predicted_start_ms: u64,
        /// While a worker is being started for the task's model (fleet on-demand start):
        /// `placing`, `downloading` or `loading`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        phase: Option<String>,
        /// The pool the worker is being started on, with the phase.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pool: Option<String>,
        /// Phase `downloading`: bytes of the model's files on the pool so far.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        bytes_done: Option<u64>,
        /// Phase `downloading`: total bytes of the model's files.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        bytes_total: Option<u64>,
    },
    /// A worker runs the task (sent with the first token, so a retry stays invisible).
    Started {
        task_id: String,
        worker_id: String,
        model: String,
        attempt: u32,
        queue_time_ms: f64,
        tokens_in: u32,
        seed: u64,
    },
    /// One generated token, as the worker sent it.
    Token {
        i: u32,
        id: u32,
        t: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        logprob: Option<TokenLogprob>,
    },
    /// Progress, about once a second while tokens flow.
    Metrics {
        task_id: String,
        tokens_out: u32,
        elapsed_ms: f64,
        tokens_per_sec: f64,
    },
    /// Normal end (also for a cancelled task, with `stop_reason: cancelled`).
    End {
        task_id: String,
        stop_reason: StopReason,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stop_sequence_matched: Option<String>,
        tokens_in: u32,
        tokens_out: u32,
        /// Prompt tokens the worker took from its prompt cache (absent when 0).
        #[serde(default, skip_serializing_if = "is_zero")]
        tokens_cached: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        worker_id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seed: Option<u64>,
        attempts: u32,
        queue_time_ms: f64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ttft_ms: Option<f64>,
        e2e_ms: f64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        prefill_time_ms: Option<f64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        decode_time_ms: Option<f64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        decode_tokens_per_sec: Option<f64>,
    },
    /// The task failed; nothing follows.
    Error {
        task_id: String,
        code: ErrorCode,
        message: String,
        retriable: bool,
        /// Tokens already sent to the client.
        tokens_out: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        worker_id: Option<String>,
    },
}

impl TaskEvent {
    /// The `type` tag (also the SSE `event:` name).
    pub fn kind(&self) -> &'static str {
        match self {
            TaskEvent::Queued { .. } => "queued",
            TaskEvent::Started { .. } => "started",
            TaskEvent::Token { .. } => "token",
            TaskEvent::Metrics { .. } => "metrics",
            TaskEvent::End { .. } => "end",
            TaskEvent::Error { .. } => "error",
        }
    }

    /// `end` or `error`.
    pub fn is_terminal(&self) -> bool {
        matches!(self, TaskEvent::End { .. } | TaskEvent::Error { .. })
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_request_defaults_and_validation() {
        let req: TaskRequest = serde_json::from_str(
            r#"{"model":"m","prompt":"hi","temperature":0,"priority":"batch"}"#,
        )
        .unwrap();
        assert_eq!(req.priority, Priority::Batch);
        assert_eq!(req.gen.sampling.temperature, 0.0);
        assert!(req.validate().is_ok());
        let bad = TaskRequest {
            task_id: Some("a b".into()),
            deadline_ms: Some(0),
            ..Default::default()
        };
        let fields: Vec<_> = bad
            .validate()
            .unwrap_err()
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(fields, ["model", "prompt", "task_id", "deadline_ms"]);
    }

    #[test]
    fn events_are_type_tagged() {
        let ev = TaskEvent::Queued {
            phase: None,
            pool: None,
            bytes_done: None,
            bytes_total: None,
            task_id: "t".into(),
            queue_position: 2,
            predicted_start_ms: 10,
        };
        assert_eq!(
            serde_json::to_string(&ev).unwrap(),
            r#"{"type":"queued","task_id":"t","queue_position":2,"predicted_start_ms":10}"#
        );
        assert!(!ev.is_terminal());
    }

    #[test]
    fn every_field_name_is_listed() {
        let full = TaskRequest {
            model: "m".into(),
            task_id: Some("t".into()),
            session_id: Some("s".into()),
            deadline_ms: Some(1),
            gen: Generation {
                prompt: Some("p".into()),
                messages: Some(vec![]),
                prompt_ids: Some(vec![1]),
                max_tokens: Some(1),
                sampling: crate::SamplingParams {
                    seed: Some(1),
                    ..Default::default()
                },
                stop: vec!["x".into()],
                logprobs: Some(1),
                constraint: Some(crate::Constraint::JsonObject(true)),
                tools: Some(crate::tools::ChatTools {
                    tools: vec![],
                    system: "s".into(),
                }),
            },
            ..Default::default()
        };
        let v = serde_json::to_value(&full).unwrap();
        for key in v.as_object().unwrap().keys() {
            assert!(
                TaskRequest::FIELDS.contains(&key.as_str()),
                "{key} missing from FIELDS"
            );
        }
        assert_eq!(v.as_object().unwrap().len(), TaskRequest::FIELDS.len());
    }
}
