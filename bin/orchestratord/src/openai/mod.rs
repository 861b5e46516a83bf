//! The OpenAI-compatible API (`/v1`), a thin translation over the same admission, queue,
//! scheduler and relay as `/v2/tasks`: a request becomes a task (id `chatcmpl-<uuid>` /
//! `cmpl-<uuid>`, visible under `/v2/tasks`), its events become OpenAI chunks or one answer.
//! The HTTP request is the task's client: when it goes away, the task is cancelled at once.
//! `n` > 1 admits one task per choice (ids `<id>.<i>`), answered together.
//! Contract: `.specs/openai.md`.

mod answer;
mod completions;
mod error;
mod follow;
mod models;
pub mod openapi;
pub(crate) mod request;
mod stream;
mod tools;

use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;
use llorch_wire::routes::orchestrator as r;

pub use error::OaiError;

use crate::state::Orchestrator;

/// Which endpoint a request came in on (decides the response shapes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `POST /v1/chat/completions`.
    Chat,
    /// `POST /v1/completions`.
    Completion,
}

/// What the answer needs besides the task's events.
#[derive(Debug, Clone)]
pub struct Meta {
    pub kind: Kind,
    /// The response id, also the task id.
    pub id: String,
    /// Unix seconds at admission.
    pub created: u64,
    /// The model as the request named it.
    pub model: String,
    pub stream: bool,
    pub include_usage: bool,
    /// Tool calling: how to read the answer (`None`: plain text).
    pub tools: Option<tools::ToolMode>,
    /// Log-probabilities asked for: `Some(alternatives per token)`.
    pub logprobs: Option<u32>,
}

/// The `/v1` routes (auth and correlation ids come from the enclosing router).
pub fn routes() -> Router<Arc<Orchestrator>> {
    Router::new()
        .route(r::OPENAI_CHAT, post(completions::chat))
        .route(r::OPENAI_COMPLETIONS, post(completions::completion))
        .route(r::OPENAI_MODELS, get(models::list))
        .route(r::OPENAI_MODEL, get(models::show))
}

/// Whether a path is answered in OpenAI's error shape.
pub fn is_openai_path(path: &str) -> bool {
    path.starts_with("/v1/")
}

/// Paths that admit tasks (counted as submissions in the metrics).
pub const SUBMIT_PATHS: &[&str] = &[r::OPENAI_CHAT, r::OPENAI_COMPLETIONS];
