//! `POST /v2/tasks`, `GET /v2/tasks`, `GET /v2/tasks/{id}`, `POST /v2/tasks/{id}/cancel`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use llorch_wire::tasks::{TaskList, TaskState, TaskStatus};
use llorch_wire::FieldError;
use serde::Deserialize;

use super::CorrelationId;
use crate::admission;
use crate::error::ApiError;
use crate::state::{EndCause, Orchestrator};
use crate::tenancy::Caller;

/// Admit a task: 202 with its id, queue position, predicted start and events URL.
pub async fn submit(
    State(orch): State<Arc<Orchestrator>>,
    Extension(cid): Extension<CorrelationId>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let accepted = admission::submit(&orch, &body, &cid.0, &caller).await?;
    let location = accepted.status_url.clone();
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(accepted),
    )
        .into_response())
}

/// Query of `GET /v2/tasks`.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    state: Option<String>,
    limit: Option<u32>,
}

/// The most recent tasks (default 50, at most 1000), newest first: unfinished ones from memory,
/// the rest from the history (live state wins). A tenant key sees its tenant's tasks only.
pub async fn list(
    State(orch): State<Arc<Orchestrator>>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<ListQuery>,
) -> Result<Json<TaskList>, ApiError> {
    let state = match q.state.as_deref() {
        None => None,
        Some(s) => Some(TaskState::parse(s).ok_or_else(|| {
            ApiError::invalid(vec![FieldError::new(
                "state",
                "enum(queued|running|completed|failed|cancelled)",
                format!("state must be queued, running, completed, failed or cancelled; got {s:?}"),
            )])
        })?),
    };
    let limit = q.limit.unwrap_or(50).clamp(1, 1000);
    // a tenant's own tasks may be fewer than `limit` among the newest: read more history
    let read = if caller.admin { limit } else { 10_000 };
    let stored = orch.store.recent_tasks(state, read).map_err(|e| {
        ApiError::new(
            llorch_wire::ErrorCode::Internal,
            format!("state database: {e}"),
        )
    })?;
    let live = orch.unfinished();
    let mut tasks: Vec<TaskStatus> = stored
        .into_iter()
        .filter(|st| !live.iter().any(|t| t.id == st.task_id))
        .map(|st| orch.task(&st.task_id).map_or(st, |t| t.status(None)))
        .chain(
            live.iter()
                .map(|t| t.status(orch.core().queue.position(&t.id))),
        )
        .filter(|st| state.is_none_or(|s| st.state == s))
        .filter(|st| caller.may_see(st.tenant.as_deref()))
        .collect();
    tasks.sort_by(|a, b| (b.created_at_ms, &a.task_id).cmp(&(a.created_at_ms, &b.task_id)));
    tasks.truncate(limit as usize);
    Ok(Json(TaskList { tasks }))
}

/// The task's state, timings and usage; answered from memory or the history.
pub async fn status(
    State(orch): State<Arc<Orchestrator>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<TaskStatus>, ApiError> {
    if let Some(task) = orch.task(&id) {
        if !caller.may_see(Some(&*task.tenant)) {
            return Err(ApiError::not_found("task", &id));
        }
        let position = orch.core().queue.position(&id);
        return Ok(Json(task.status(position)));
    }
    match orch.store.task(&id) {
        Ok(Some(row)) if caller.may_see(row.status.tenant.as_deref()) => Ok(Json(row.status)),
        Ok(_) => Err(ApiError::not_found("task", &id)),
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
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if let Some(task) = orch.task(&id).filter(|t| caller.may_see(Some(&*t.tenant))) {
        orch.end_task(&task, EndCause::Cancelled);
        return Ok(StatusCode::NO_CONTENT);
    }
    match orch.store.task(&id) {
        Ok(Some(row)) if caller.may_see(row.status.tenant.as_deref()) => Ok(StatusCode::NO_CONTENT),
        _ => Err(ApiError::not_found("task", &id)),
    }
}
