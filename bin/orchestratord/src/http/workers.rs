//! `GET /v2/workers`, `POST /v2/workers/register`, `POST /v2/workers/{id}/heartbeat`,
//! `GET|DELETE /v2/workers/{id}`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use llorch_wire::tasks::{
    WorkerHeartbeat, WorkerHeartbeatAck, WorkerInfo, WorkerList, WorkerRegistered,
};

use super::parse_json;
use crate::error::ApiError;
use crate::state::Orchestrator;
use crate::workers;

/// Every known worker, in id order.
pub async fn list(State(orch): State<Arc<Orchestrator>>) -> Json<WorkerList> {
    let workers = orch.core().registry.iter().map(|w| w.info()).collect();
    Json(WorkerList { workers })
}

/// One worker.
pub async fn show(
    State(orch): State<Arc<Orchestrator>>,
    Path(id): Path<String>,
) -> Result<Json<WorkerInfo>, ApiError> {
    let info = orch.core().registry.get(&id).map(|w| w.info());
    info.map(Json)
        .ok_or_else(|| ApiError::not_found("worker", &id))
}

/// Register (or re-register) a worker.
pub async fn register(
    State(orch): State<Arc<Orchestrator>>,
    body: Bytes,
) -> Result<Json<WorkerRegistered>, ApiError> {
    let reg = parse_json(&body)?;
    workers::register(&orch, reg).map(Json)
}

/// A worker's sign of life; the body is optional.
pub async fn heartbeat(
    State(orch): State<Arc<Orchestrator>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<WorkerHeartbeatAck>, ApiError> {
    let hb: WorkerHeartbeat = if body.is_empty() {
        WorkerHeartbeat::default()
    } else {
        parse_json(&body)?
    };
    workers::heartbeat(&orch, &id, &hb).map(Json)
}

/// `POST /v2/workers/{id}/drain`: no new tasks; running ones finish; a fleet worker is then
/// stopped (any other worker keeps running, without tasks, until undrained).
pub async fn drain(
    State(orch): State<Arc<Orchestrator>>,
    Path(id): Path<String>,
) -> Result<Json<WorkerInfo>, ApiError> {
    set_draining(&orch, &id, true)
}

/// `POST /v2/workers/{id}/undrain`.
pub async fn undrain(
    State(orch): State<Arc<Orchestrator>>,
    Path(id): Path<String>,
) -> Result<Json<WorkerInfo>, ApiError> {
    set_draining(&orch, &id, false)
}

fn set_draining(
    orch: &Arc<Orchestrator>,
    id: &str,
    on: bool,
) -> Result<Json<WorkerInfo>, ApiError> {
    {
        let mut st = orch.fleet.state();
        if on {
            st.drained_workers.insert(id.to_string());
        } else {
            st.drained_workers.remove(id);
        }
    }
    let info = {
        let mut core = orch.core();
        if !core.registry.set_draining(id, on) {
            drop(core);
            orch.fleet.state().drained_workers.remove(id);
            return Err(ApiError::not_found("worker", id));
        }
        core.registry.get(id).map(|w| w.info())
    };
    orch.fleet.wake.notify_one();
    if !on {
        orch.wake.notify_one();
    }
    tracing::info!(worker_id = %id, draining = on, "worker drain changed");
    info.map(Json)
        .ok_or_else(|| ApiError::not_found("worker", id))
}

/// Forget a worker (it shuts down).
pub async fn deregister(
    State(orch): State<Arc<Orchestrator>>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    workers::deregister(&orch, &id).map(|()| StatusCode::NO_CONTENT)
}
