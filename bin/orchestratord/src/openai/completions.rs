//! `POST /v1/chat/completions` and `POST /v1/completions`: parse, admit through the same
//! admission as `/v2/tasks`, then answer from the task's events.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::response::Response;
use axum::Extension;

use super::request::{self, Prepared};
use super::{answer, follow::Follower, stream, OaiError};
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
    let p = match prepared {
        Ok(p) => p,
        Err(e) => {
            // Counted and metered as a rejected submission, as on /v2/tasks.
            admission::submit_task(&orch, Err(e), &cid.0, &caller).await?;
            unreachable!("an invalid request is never admitted");
        }
    };
    // One task per choice, admitted in order; the shared prompt gives them the same placement
    // affinity, so an idle worker runs them side by side in its batch. Should one be refused,
    // dropping the followers cancels the choices already admitted.
    let mut followers = Vec::with_capacity(p.n as usize);
    for task in p.choices() {
        let (_, task) = admission::submit_task(&orch, Ok(task), &cid.0, &caller).await?;
        followers.push(Follower::attach(orch.clone(), task));
    }
    if p.meta.stream {
        Ok(stream::stream(followers, p.meta))
    } else {
        answer::collect(followers, p.meta).await
    }
}
