//! `POST /v2/tasks`, `GET /v2/tasks/{id}`, `POST /v2/tasks/{id}/cancel`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use llorch_wire::tasks::TaskStatus;

use super::CorrelationId;
use crate::admission;
use crate::error::ApiError;
use crate::state::{EndCause, Orchestrator};

/// Admit a task: 202 with its id, queue position, predicted start and events URL.
pub async fn submit(
    State(orch): State<Arc<Orchestrator>>,
    Extension(cid): Extension<CorrelationId>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let accepted = admission::submit(&orch, &body, &cid.0).await?;
    let location = accepted.status_url.clone();
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(accepted),
    )
        .into_response())
}

/// The task's state, timings and usage; answered from memory or the history.
pub async fn status(
    State(orch): State<Arc<Orchestrator>>,
    Path(id): Path<String>,
) -> Result<Json<TaskStatus>, ApiError> {
    if let Some(task) = orch.task(&id) {
        let position = orch.core().queue.position(&id);
        return Ok(Json(task.status(position)));
    }
    match orch.store.task(&id) {
        Ok(Some(row)) => Ok(Json(row.status)),
        Ok(None) => Err(ApiError::not_found("task", &id)),
        Err(e) => Err(ApiError::new(
            llorch_wire::ErrorCode::Internal,
            format!("state database: {e}"),
        )),
    }
}

/// Cancel a task (idempotent): a queued task leaves the queue, a running one is stopped on its
/// worker; either way its stream ends with `end` (`stop_reason: cancelled`).
pub async fn cancel(
    State(orch): State<Arc<Orchestrator>>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if let Some(task) = orch.task(&id) {
        orch.end_task(&task, EndCause::Cancelled);
        return Ok(StatusCode::NO_CONTENT);
    }
    match orch.store.task(&id) {
        Ok(Some(_)) => Ok(StatusCode::NO_CONTENT),
        _ => Err(ApiError::not_found("task", &id)),
    }
}
