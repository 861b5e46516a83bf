//! `GET /health`, `GET /ready`, `GET /metrics`, `GET /v2/meta/capabilities`, `GET /v2/openapi.json`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use llorch_wire::tasks::{Capabilities, OrchestratorHealth, Priority, API_VERSION};
use llorch_wire::LIMITS;

use crate::state::Orchestrator;

fn health_body(orch: &Orchestrator) -> OrchestratorHealth {
    let core = orch.core();
    let (ready, total) = core.registry.counts();
    OrchestratorHealth {
        status: "ok".into(),
        workers_ready: ready,
        workers_total: total,
        queue_depth: core.queue.len() as u32,
        tasks_running: core.running,
        version: env!("CARGO_PKG_VERSION").into(),
    }
}

/// Liveness: 200 while the process answers.
pub async fn health(State(orch): State<Arc<Orchestrator>>) -> Json<OrchestratorHealth> {
    Json(health_body(&orch))
}

/// Readiness: 200 when at least one worker is ready and shutdown has not begun, else 503.
pub async fn ready(State(orch): State<Arc<Orchestrator>>) -> Response {
    let mut body = health_body(&orch);
    let ok = body.workers_ready > 0 && !orch.is_shutting_down();
    if !ok {
        body.status = if orch.is_shutting_down() {
            "shutting_down".into()
        } else {
            "no_ready_worker".into()
        };
    }
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// Prometheus metrics; gauges are refreshed from the live state first.
pub async fn metrics(State(orch): State<Arc<Orchestrator>>) -> Response {
    let m = &orch.metrics;
    {
        let core = orch.core();
        for p in [Priority::Interactive, Priority::Batch] {
            m.queue_depth
                .set(&[("priority", p.as_str())], core.queue.depth(p) as f64);
        }
        m.tasks_running.set(&[], core.running as f64);
        let (ready, total) = core.registry.counts();
        m.workers.set(&[("status", "ready")], ready as f64);
        m.workers
            .set(&[("status", "unhealthy")], (total - ready) as f64);
        for w in core.registry.iter() {
            m.worker_connections_active
                .set(&[("worker_id", &w.reg.worker_id)], w.busy as f64);
        }
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        m.render(),
    )
        .into_response()
}

/// What this orchestrator serves and how it admits.
pub async fn capabilities(State(orch): State<Arc<Orchestrator>>) -> Json<Capabilities> {
    let models = orch.core().registry.models();
    Json(Capabilities {
        api_version: API_VERSION.into(),
        models,
        priorities: vec![Priority::Interactive, Priority::Batch],
        queue_capacity: orch.cfg.queue_capacity,
        queue_policy: orch.cfg.queue_policy.as_str().into(),
        placement: orch.cfg.placement.as_str().into(),
        max_tokens: LIMITS.max_tokens,
        auth_required: !orch.cfg.api_tokens.is_empty(),
    })
}

/// The OpenAPI 3.1 document of this API.
pub async fn openapi() -> Json<serde_json::Value> {
    Json(crate::openapi::document())
}
