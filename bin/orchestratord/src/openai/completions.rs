//! `POST /v1/chat/completions` and `POST /v1/completions`: parse, admit through the same
//! admission as `/v2/tasks`, then answer from the task's events.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::response::Response;
use axum::Extension;

use super::request::{self, Prepared};
use super::{answer, follow::Follower, OaiError};
use crate::admission;
use crate::error::ApiError;
use crate::http::CorrelationId;
use crate::state::Orchestrator;
use crate::tenancy::Caller;

/// `POST /v1/chat/completions`.
pub async fn chat(
    State(orch): State<Arc<Orchestrator>>,
    Extension(cid): Extension<CorrelationId>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Result<Response, OaiError> {
    run(orch, cid, caller, request::chat(&body)).await
}

/// `POST /v1/completions`.
pub async fn completion(
    State(orch): State<Arc<Orchestrator>>,
    Extension(cid): Extension<CorrelationId>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Result<Response, OaiError> {
    run(orch, cid, caller, request::completion(&body)).await
}

async fn run(
    orch: Arc<Orchestrator>,
    cid: CorrelationId,
    caller: Caller,
    prepared: Result<Prepared, ApiError>,
) -> Result<Response, OaiError> {
    let (meta, req) = match prepared {
        Ok(p) => (Some(p.meta), Ok(p.task)),
        Err(e) => (None, Err(e)),
    };
    let (_, task) = admission::submit_task(&orch, req, &cid.0, &caller).await?;
    let meta = meta.expect("an admitted request was parsed");
    let follower = Follower::attach(orch, task);
    if meta.stream {
        Ok(answer::stream(follower, meta))
    } else {
        answer::collect(follower, meta).await
    }
}
