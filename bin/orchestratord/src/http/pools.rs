//! `GET /v2/pools`, `GET /v2/pools/{name}`, `POST /v2/pools/{name}/drain|undrain`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::Json;

use crate::error::ApiError;
use crate::fleet::{FleetView, PoolView};
use crate::state::Orchestrator;

/// Busy slots of a registered worker (for the views).
fn busy_of(orch: &Orchestrator) -> impl Fn(&str) -> Option<u32> + '_ {
    move |id| orch.core().registry.get(id).map(|w| w.busy)
}

/// Every pool and deployment.
pub async fn list(State(orch): State<Arc<Orchestrator>>) -> Json<FleetView> {
    let busy = busy_of(&orch);
    Json(orch.fleet.view(&busy))
}

/// One pool.
pub async fn show(
    State(orch): State<Arc<Orchestrator>>,
    Path(name): Path<String>,
) -> Result<Json<PoolView>, ApiError> {
    let busy = busy_of(&orch);
    orch.fleet
        .pool_view(&name, &busy)
        .map(Json)
        .ok_or_else(|| ApiError::not_found("pool", &name))
}

/// No new tasks or workers on the pool; its workers stop once idle.
pub async fn drain(
    State(orch): State<Arc<Orchestrator>>,
    Path(name): Path<String>,
) -> Result<Json<PoolView>, ApiError> {
    set(&orch, &name, true)
}

/// Use the pool again.
pub async fn undrain(
    State(orch): State<Arc<Orchestrator>>,
    Path(name): Path<String>,
) -> Result<Json<PoolView>, ApiError> {
    set(&orch, &name, false)
}

fn set(orch: &Arc<Orchestrator>, name: &str, drained: bool) -> Result<Json<PoolView>, ApiError> {
    if !orch.fleet.set_drained(name, drained) {
        return Err(ApiError::not_found("pool", name));
    }
    // Stop new dispatches at once (the reconciler keeps this in sync afterwards).
    let ids: Vec<String> = orch
        .fleet
        .state()
        .workers
        .values()
        .filter(|w| w.pool == name)
        .map(|w| w.id.clone())
        .collect();
    {
        let mut core = orch.core();
        for id in &ids {
            core.registry.set_draining(id, drained);
        }
    }
    if !drained {
        orch.wake.notify_one();
    }
    tracing::info!(pool = %name, drained, "pool drain changed");
    let busy = busy_of(orch);
    orch.fleet
        .pool_view(name, &busy)
        .map(Json)
        .ok_or_else(|| ApiError::not_found("pool", name))
}
