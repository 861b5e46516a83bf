//! `GET /health`: what is served, on what, and the load now (from cached state: answers while
//! generating).

use axum::extract::State;
use axum::Json;
use llorch_wire::{WorkerHealth, WorkerState};

use super::{AppState, Shared};

/// The worker's health report.
pub fn health_of(st: &AppState) -> WorkerHealth {
    let info = st.backend.info();
    let load = st.backend.load();
    WorkerHealth {
        status: if load.failure.is_some() {
            "failed"
        } else {
            "ready"
        }
        .into(),
        failure: load.failure,
        state: if load.active + load.queued > 0 {
            WorkerState::Busy
        } else {
            WorkerState::Idle
        },
        worker_id: st.worker_id.clone(),
        model: info.name.clone(),
        model_path: info.path.clone(),
        format: info.format.clone(),
        architecture: info.architecture.clone(),
        quantization: info.quantization.clone(),
        runtime_quantization: info.runtime_quantization.clone(),
        context_length: info.context_length,
        vocab_size: info.vocab_size,
        backend: st.device.backend.into(),
        device: st.device.device.clone(),
        threads: st.device.threads as u32,
        simd: info.simd.clone(),
        active_jobs: load.active,
        queued_jobs: load.queued,
        slots_total: info.slots_total,
        parallel: info.parallel,
        uptime_s: st.started.elapsed().as_secs_f64(),
        load_time_ms: st.load_time_ms,
        memory: st.device.memory.as_ref().map(|m| m.current()),
        version: env!("CARGO_PKG_VERSION").into(),
        chat_template: info.chat_template.clone(),
    }
}

pub(super) async fn health(State(st): State<Shared>) -> Json<WorkerHealth> {
    Json(health_of(&st))
}
