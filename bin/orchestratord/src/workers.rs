//! Worker registry operations: registration, heartbeats, deregistration, restoring the
//! registry from SQLite at start, and polling the `/health` of static (configured) workers.

use std::sync::Arc;
use std::time::Duration;

use llorch_client::WorkerClient;
use llorch_wire::tasks::{
    is_valid_id, WorkerHeartbeat, WorkerHeartbeatAck, WorkerRegistered, WorkerRegistration,
    WorkerSource, WorkerStatus,
};
use llorch_wire::{ErrorCode, FieldError};

use crate::error::ApiError;
use crate::state::Orchestrator;
use crate::store::WorkerRow;
use crate::task::unix_ms;

/// Most slots one worker may declare.
const MAX_SLOTS: u32 = 1024;
/// Longest wait for a worker's `/health`.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

fn validate(reg: &WorkerRegistration) -> Result<(), ApiError> {
    let mut errors = Vec::new();
    if !is_valid_id(&reg.worker_id) {
        errors.push(FieldError::new(
            "worker_id",
            "pattern([A-Za-z0-9._:-]{1,128})",
            "worker_id must be 1 to 128 characters of A-Z a-z 0-9 . _ : -",
        ));
    }
    if !(reg.url.starts_with("http://") || reg.url.starts_with("https://")) {
        errors.push(
            FieldError::new("url", "url", "url must start with http:// or https://")
                .with_value(&reg.url),
        );
    }
    if reg.model.is_empty() {
        errors.push(FieldError::new(
            "model",
            "required",
            "model must not be empty",
        ));
    }
    if !(1..=MAX_SLOTS).contains(&reg.slots_total) {
        errors.push(
            FieldError::new(
                "slots_total",
                format!("range(1..={MAX_SLOTS})"),
                format!("slots_total must be between 1 and {MAX_SLOTS}"),
            )
            .with_value(reg.slots_total),
        );
    }
    if reg.context_length == 0 {
        errors.push(FieldError::new(
            "context_length",
            "range(1..)",
            "context_length must be positive",
        ));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(errors))
    }
}

/// `POST /v2/workers/register`.
pub fn register(
    orch: &Orchestrator,
    mut reg: WorkerRegistration,
) -> Result<WorkerRegistered, ApiError> {
    validate(&reg)?;
    reg.url = reg.url.trim_end_matches('/').to_string();
    let now = unix_ms();
    tracing::info!(worker_id = %reg.worker_id, url = %reg.url, model = %reg.model, slots = reg.slots_total, "worker registered");
    orch.store.put_worker(WorkerRow {
        reg: reg.clone(),
        source: WorkerSource::Registered,
        last_seen_ms: now,
    });
    let worker_id = reg.worker_id.clone();
    orch.core()
        .registry
        .upsert(reg, WorkerSource::Registered, WorkerStatus::Ready, now);
    orch.wake.notify_one();
    Ok(WorkerRegistered {
        worker_id,
        heartbeat_interval_ms: orch.cfg.heartbeat_interval_ms,
        heartbeat_timeout_ms: orch.cfg.heartbeat_timeout_ms,
    })
}

/// Why a heartbeat or `/health` says the worker cannot serve, if it does (`status: failed`).
fn failure_of(status: Option<&str>, failure: Option<&str>) -> Option<String> {
    match status {
        Some("ready") | None => None,
        Some(s) => Some(failure.map_or_else(|| format!("worker status {s:?}"), str::to_string)),
    }
}

/// `POST /v2/workers/{id}/heartbeat`; 404 tells the worker to register again. A heartbeat
/// saying `failed` keeps the worker out of placement (with its reason) until one says `ready`.
pub fn heartbeat(
    orch: &Orchestrator,
    id: &str,
    hb: &WorkerHeartbeat,
) -> Result<WorkerHeartbeatAck, ApiError> {
    let now = unix_ms();
    let failure = failure_of(hb.status.as_deref(), hb.failure.as_deref());
    let (known, was_ready, newly_failed) = {
        let mut core = orch.core();
        let was_ready = core
            .registry
            .get(id)
            .map(|w| w.status == WorkerStatus::Ready);
        match &failure {
            Some(reason) => {
                let changed = core.registry.fail(id, reason, now);
                (was_ready.is_some(), true, changed)
            }
            None => (
                core.registry.touch(id, now),
                was_ready.unwrap_or(false),
                false,
            ),
        }
    };
    if !known {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            format!("worker {id:?} is not registered; register again"),
        ));
    }
    orch.store.touch_worker(id, now);
    if newly_failed {
        tracing::error!(worker_id = %id, reason = failure.as_deref().unwrap_or_default(),
            "worker reports it has failed; no tasks go to it");
    } else if !was_ready {
        tracing::info!(worker_id = %id, "worker is back");
        orch.wake.notify_one();
    }
    Ok(WorkerHeartbeatAck {
        worker_id: id.to_string(),
        heartbeat_interval_ms: orch.cfg.heartbeat_interval_ms,
    })
}

/// `DELETE /v2/workers/{id}`. Tasks running there finish or fail on their own.
pub fn deregister(orch: &Orchestrator, id: &str) -> Result<(), ApiError> {
    if orch.core().registry.remove(id).is_none() {
        return Err(ApiError::not_found("worker", id));
    }
    orch.store.delete_worker(id);
    tracing::info!(worker_id = %id, "worker deregistered");
    Ok(())
}

/// Load the registry persisted by an earlier run: every worker starts unhealthy and becomes
/// ready on its next heartbeat, or at once if its `/health` answers with the same id.
pub fn restore(orch: &Arc<Orchestrator>) -> usize {
    let rows = match orch.store.workers() {
        Ok(rows) => rows,
        Err(e) => {
            tracing::error!(error = %e, "cannot read workers from the state database");
            return 0;
        }
    };
    let n = rows.len();
    for row in rows {
        let (id, url) = (row.reg.worker_id.clone(), row.reg.url.clone());
        orch.core().registry.upsert(
            row.reg,
            row.source,
            WorkerStatus::Unhealthy,
            row.last_seen_ms,
        );
        let orch = orch.clone();
        tokio::spawn(async move {
            let client = WorkerClient::with_client(&url, orch.http.clone());
            if let Ok(Ok(h)) = tokio::time::timeout(PROBE_TIMEOUT, client.health()).await {
                if h.worker_id == id
                    && h.status == "ready"
                    && orch.core().registry.touch(&id, unix_ms())
                {
                    tracing::info!(worker_id = %id, "restored worker answers");
                    orch.wake.notify_one();
                }
            }
        });
    }
    n
}

/// Poll every static worker's `/health`: (re)register it when it answers, mark it unhealthy
/// when it does not.
pub async fn probe_static(orch: Arc<Orchestrator>) {
    for sw in orch.cfg.workers.clone() {
        let url = sw.url.trim_end_matches('/').to_string();
        let client = WorkerClient::with_client(&url, orch.http.clone());
        match tokio::time::timeout(PROBE_TIMEOUT, client.health()).await {
            Ok(Ok(h)) if failure_of(Some(&h.status), h.failure.as_deref()).is_some() => {
                let reason = failure_of(Some(&h.status), h.failure.as_deref()).unwrap_or_default();
                if orch.core().registry.fail(&h.worker_id, &reason, unix_ms()) {
                    tracing::error!(worker_id = %h.worker_id, %reason, "static worker reports it has failed");
                }
            }
            Ok(Ok(h)) => {
                let reg = WorkerRegistration {
                    worker_id: h.worker_id.clone(),
                    url: url.clone(),
                    model: h.model.clone(),
                    aliases: Vec::new(),
                    backend: h.backend.clone(),
                    // generation slots; the worker's own queue is not capacity to fill
                    slots_total: if h.parallel > 0 {
                        h.parallel
                    } else {
                        h.slots_total.max(1)
                    },
                    context_length: h.context_length,
                    api_token: sw.api_token.clone(),
                };
                let now = unix_ms();
                let mut core = orch.core();
                let was_ready = core
                    .registry
                    .get(&h.worker_id)
                    .map(|w| w.status == WorkerStatus::Ready);
                let changed = core
                    .registry
                    .get(&h.worker_id)
                    .map(|w| w.reg != reg)
                    .unwrap_or(true);
                if changed {
                    core.registry.upsert(
                        reg.clone(),
                        WorkerSource::Static,
                        WorkerStatus::Ready,
                        now,
                    );
                } else {
                    core.registry.touch(&h.worker_id, now);
                }
                drop(core);
                if changed {
                    orch.store.put_worker(WorkerRow {
                        reg,
                        source: WorkerSource::Static,
                        last_seen_ms: now,
                    });
                }
                if was_ready != Some(true) {
                    tracing::info!(worker_id = %h.worker_id, %url, "static worker ready");
                    orch.wake.notify_one();
                }
            }
            _ => {
                let ids: Vec<String> = orch
                    .core()
                    .registry
                    .iter()
                    .filter(|w| w.source == WorkerSource::Static && w.reg.url == url)
                    .map(|w| w.reg.worker_id.clone())
                    .collect();
                for id in ids {
                    orch.mark_unhealthy(&id, "static worker does not answer /health");
                }
            }
        }
    }
}
