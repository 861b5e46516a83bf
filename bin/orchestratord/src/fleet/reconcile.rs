//! The reconciler: probe every pool, adopt running fleet workers, notice dead ones, and compare
//! what is deployed with what runs: start workers (placement, download, spawn) with capped
//! exponential backoff, stop idle ones after `idle_ttl_s`, stop drained ones once idle.
//!
//! Locks: the orchestrator core lock and the fleet state lock are never held together.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use llorch_catalog::{StatusView, WorkerView as PoolWorker};
use llorch_wire::tasks::TaskEvent;
use llorch_wire::ErrorCode;

use super::start::start_worker;
use super::transport::PoolCallError;
use super::{ManagedWorker, WorkerPhase, WORKER_PREFIX};
use crate::state::{error_event, Orchestrator};

/// Time allowed for quick pool commands (status, fit, stop) beyond the ssh connect timeout.
const QUICK_CALL: Duration = Duration::from_secs(20);
/// Seconds a stopped worker gets between SIGTERM and SIGKILL.
const STOP_GRACE_S: &str = "5";
/// Assumed load time before one was measured.
pub(super) const DEFAULT_LOAD_MS: f64 = 5000.0;

/// Run until shutdown.
pub async fn run(orch: Arc<Orchestrator>) {
    let fleet = &orch.fleet;
    let interval = Duration::from_millis(fleet.settings.probe_interval_ms);
    let mut last_probe: Option<Instant> = None;
    loop {
        if orch.is_shutting_down() {
            for t in fleet.transports.values() {
                t.close().await;
            }
            fleet.shutdown();
            return;
        }
        if last_probe.is_none_or(|t| t.elapsed() >= interval) {
            probe_all(&orch).await;
            last_probe = Some(Instant::now());
            let o = orch.clone();
            tokio::spawn(async move { super::start::prewarm_estimates(&o).await });
        }
        reconcile(&orch);
        let wait = interval.saturating_sub(last_probe.map_or(Duration::ZERO, |t| t.elapsed()));
        tokio::select! {
            _ = tokio::time::sleep(wait.max(Duration::from_millis(50))) => {}
            _ = fleet.wake.notified() => {}
        }
    }
}

pub(super) fn quick(orch: &Orchestrator) -> Duration {
    QUICK_CALL + Duration::from_secs(orch.fleet.settings.connect_timeout_s)
}

/// Probe every pool at once (`status --json`), then sync workers.
async fn probe_all(orch: &Arc<Orchestrator>) {
    let fleet = &orch.fleet;
    let calls = fleet.transports.values().map(|t| async move {
        let r = t
            .call::<StatusView>(&["status".to_string()], quick(orch))
            .await;
        (t.name.clone(), r)
    });
    let results = futures::future::join_all(calls).await;
    for (pool, r) in results {
        match r {
            Ok((status, took)) => {
                let ms = took.as_secs_f64() * 1000.0;
                orch.metrics.fleet_probe_ms.observe(&[("pool", &pool)], ms);
                orch.metrics
                    .fleet_pool_reachable
                    .set(&[("pool", &pool)], 1.0);
                if let Some(m) = &status.machine {
                    orch.metrics.fleet_memory_total_bytes.set(
                        &[("pool", &pool), ("device", "cpu")],
                        m.mem_total_bytes as f64,
                    );
                    orch.metrics.fleet_memory_free_bytes.set(
                        &[("pool", &pool), ("device", "cpu")],
                        m.mem_available_bytes as f64,
                    );
                }
                sync_workers(orch, &pool, &status.workers);
                let mut st = fleet.state();
                let ps = st.pools.entry(pool.clone()).or_default();
                if ps.reachable != Some(true) {
                    tracing::info!(%pool, probe_ms = ms, "pool reachable");
                }
                ps.reachable = Some(true);
                ps.last_error = None;
                ps.probed_at = Some(Instant::now());
                ps.probe_ms = Some(ms);
                ps.status = Some(status);
            }
            Err(e) => {
                orch.metrics
                    .fleet_pool_reachable
                    .set(&[("pool", &pool)], 0.0);
                let mut st = fleet.state();
                let ps = st.pools.entry(pool.clone()).or_default();
                if ps.reachable != Some(false) || ps.last_error.as_deref() != Some(&e.to_string()) {
                    tracing::warn!(%pool, error = %e, "pool probe failed");
                }
                ps.reachable = Some(false);
                ps.last_error = Some(e.to_string());
            }
        }
    }
    fleet.state().inventoried = true;
}

/// Adopt running fleet workers we do not know; notice ours that are gone.
fn sync_workers(orch: &Arc<Orchestrator>, pool: &str, listed: &[PoolWorker]) {
    let fleet = &orch.fleet;
    let alive: HashMap<&str, &PoolWorker> = listed
        .iter()
        .filter(|w| w.alive)
        .map(|w| (w.record.id.as_str(), w))
        .collect();
    let mut dead = Vec::new();
    {
        let mut st = fleet.state();
        let known_estimates: HashMap<String, u64> = st
            .pools
            .values()
            .flat_map(|p| p.estimates.iter().map(|(m, f)| (m.clone(), f.total_bytes)))
            .collect();
        for w in st.workers.values_mut().filter(|w| w.pool == pool) {
            match alive.get(w.id.as_str()) {
                Some(pw) => w.rss_bytes = pw.rss_bytes,
                None if w.phase == WorkerPhase::Running => dead.push(w.id.clone()),
                None => {}
            }
        }
        for (id, pw) in &alive {
            if !id.starts_with(WORKER_PREFIX) || st.workers.contains_key(*id) {
                continue;
            }
            if fleet.deployment(&pw.record.model).is_none() {
                continue;
            }
            let estimate = known_estimates
                .get(&pw.record.model)
                .copied()
                .or(pw.rss_bytes)
                .unwrap_or(0);
            tracing::info!(worker_id = %id, %pool, model = %pw.record.model, "adopted a running fleet worker");
            orch.metrics
                .fleet_worker_starts_total
                .inc(&[("pool", pool), ("reason", "adopted")]);
            st.workers.insert(
                id.to_string(),
                ManagedWorker {
                    id: id.to_string(),
                    pool: pool.to_string(),
                    model: pw.record.model.clone(),
                    phase: WorkerPhase::Running,
                    estimate_bytes: estimate,
                    url: Some(pw.record.url.clone()),
                    rss_bytes: pw.rss_bytes,
                    adopted: true,
                    last_used: Instant::now(),
                    started: Instant::now(),
                },
            );
        }
    }
    let has_dead_records = listed
        .iter()
        .any(|w| !w.alive && w.record.id.starts_with(WORKER_PREFIX));
    for id in dead {
        worker_died(orch, pool, &id);
    }
    if has_dead_records {
        let orch = orch.clone();
        let pool = pool.to_string();
        tokio::spawn(async move {
            if let Some(t) = orch.fleet.transports.get(&pool) {
                let _ = t
                    .call::<serde_json::Value>(&["worker".into(), "cleanup".into()], quick(&orch))
                    .await;
            }
        });
    }
}

/// A running fleet worker is gone: forget it everywhere and count a failure.
fn worker_died(orch: &Arc<Orchestrator>, pool: &str, id: &str) {
    {
        let mut core = orch.core();
        core.registry.remove(id);
    }
    orch.store.delete_worker(id);
    let fleet = &orch.fleet;
    let mut st = fleet.state();
    let Some(w) = st.workers.remove(id) else {
        return;
    };
    tracing::warn!(worker_id = %id, %pool, model = %w.model, "fleet worker died; restarting as deployed");
    orch.metrics
        .fleet_worker_stops_total
        .inc(&[("pool", pool), ("reason", "died")]);
    let msg = format!("worker {id} on pool {pool} died");
    let failed = record_failure(orch, &mut st, &w.model, msg, None);
    drop(st);
    if let Some(message) = failed {
        fail_queued(orch, &w.model, ErrorCode::ModelLoadFailed, &message);
    }
    fleet.wake.notify_one();
}

/// Count a failure of `model`'s deployment: backoff, and `failed` after too many in the window.
/// Returns the message to end queued tasks with when the deployment just failed.
pub(super) fn record_failure(
    orch: &Orchestrator,
    st: &mut super::FleetState,
    model: &str,
    message: String,
    log_tail: Option<String>,
) -> Option<String> {
    let s = &orch.fleet.settings;
    let now = Instant::now();
    let ds = st.deployments.entry(model.to_string()).or_default();
    ds.failures.push_back(now);
    let window = Duration::from_secs(s.failure_window_s);
    while ds
        .failures
        .front()
        .is_some_and(|t| now.duration_since(*t) > window)
    {
        ds.failures.pop_front();
    }
    let n = ds.failures.len() as u32;
    let backoff = s
        .restart_backoff_ms
        .saturating_mul(1u64 << (n.saturating_sub(1)).min(20))
        .min(s.restart_backoff_max_ms);
    ds.next_attempt = Some(now + Duration::from_millis(backoff));
    ds.last_error = Some(message.clone());
    if log_tail.is_some() {
        ds.log_tail = log_tail;
    }
    ds.died = true;
    if n >= s.max_failures && !ds.failed {
        ds.failed = true;
        tracing::error!(%model, failures = n, "deployment failed");
        return Some(format!(
            "deployment {model:?} failed {n} times within {} s; last error: {message}",
            s.failure_window_s
        ));
    }
    None
}

/// End every queued task for `model` with `code`.
pub(super) fn fail_queued(orch: &Orchestrator, model: &str, code: ErrorCode, message: &str) {
    let ids = orch.core().queue.of_model(model);
    for (id, _) in ids {
        let Some(task) = orch.task(&id) else { continue };
        let removed = orch.core().queue.remove(&id);
        if removed {
            orch.core().positions_dirty = true;
            orch.finish(&task, error_event(&task, code, message.to_string(), 0));
        }
    }
}

/// Tell queued tasks of `model` what the start is doing.
pub(super) fn announce_phase(orch: &Orchestrator, model: &str, phase: &str, pool: &str) {
    announce(orch, model, phase, pool, None);
}

/// [`announce_phase`] with the bytes done and total of a download.
pub(super) fn announce(
    orch: &Orchestrator,
    model: &str,
    phase: &str,
    pool: &str,
    bytes: Option<(u64, u64)>,
) {
    let ids = orch.core().queue.of_model(model);
    let load_ms = orch
        .fleet
        .state()
        .deployments
        .get(model)
        .and_then(|d| d.load_ms)
        .unwrap_or(DEFAULT_LOAD_MS);
    if let Some(ds) = orch.fleet.state().deployments.get_mut(model) {
        ds.starting = Some((phase.to_string(), pool.to_string()));
    }
    for (id, position) in ids {
        if let Some(task) = orch.task(&id) {
            task.push(&TaskEvent::Queued {
                task_id: id,
                queue_position: position,
                predicted_start_ms: load_ms as u64,
                phase: Some(phase.to_string()),
                pool: (!pool.is_empty()).then(|| pool.to_string()),
                bytes_done: bytes.map(|b| b.0),
                bytes_total: bytes.map(|b| b.1),
            });
        }
    }
}

/// One pass of desired-versus-actual (no I/O here: actions are spawned).
fn reconcile(orch: &Arc<Orchestrator>) {
    let fleet = &orch.fleet;
    let now = Instant::now();
    let ids: Vec<String> = fleet.state().workers.keys().cloned().collect();
    let drained: HashMap<String, bool> = fleet
        .state()
        .pools
        .iter()
        .map(|(n, p)| (n.clone(), p.drained))
        .collect();
    // A worker drains when its pool does or when it was drained itself.
    let worker_drained: HashMap<String, bool> = {
        let st = fleet.state();
        st.workers
            .values()
            .map(|w| {
                let d = drained.get(&w.pool).copied().unwrap_or(false)
                    || st.drained_workers.contains(&w.id);
                (w.id.clone(), d)
            })
            .collect()
    };
    // Workers that answer but say they cannot serve (dead engine): replaced below.
    let failed: HashMap<String, String> = {
        let core = orch.core();
        ids.iter()
            .filter_map(|id| {
                let w = core.registry.get(id)?;
                let reason = w.failure.clone()?;
                (w.status == llorch_wire::tasks::WorkerStatus::Unhealthy)
                    .then(|| (id.clone(), reason))
            })
            .collect()
    };
    // Workers the registry can use now (registered and ready).
    let ready: HashMap<String, bool> = {
        let mut core = orch.core();
        for id in &ids {
            let d = worker_drained.get(id).copied().unwrap_or(false);
            core.registry.set_draining(id, d);
        }
        ids.iter()
            .map(|id| {
                let ok = core
                    .registry
                    .get(id)
                    .is_some_and(|w| w.status == llorch_wire::tasks::WorkerStatus::Ready);
                (id.clone(), ok)
            })
            .collect()
    };
    let reachable: HashMap<String, bool> = fleet
        .state()
        .pools
        .iter()
        .map(|(n, p)| (n.clone(), p.reachable != Some(false)))
        .collect();
    let (busy, queued) = load_facts(orch);
    let mut to_start = Vec::new();
    let mut to_stop = Vec::new();
    {
        let mut guard = fleet.state();
        if !guard.inventoried {
            return;
        }
        let st = &mut *guard;
        for w in st.workers.values_mut() {
            if busy.get(&w.id).copied().unwrap_or(0) > 0
                || queued.get(&w.model).copied().unwrap_or(0) > 0
            {
                w.last_used = now;
            }
        }
        for d in &fleet.deployments {
            let q = queued.get(&d.id).copied().unwrap_or(0);
            // A worker on an unreachable pool that the registry cannot use either (host down?)
            // does not count: another pool gets a replica meanwhile.
            let live: Vec<&ManagedWorker> = st
                .workers
                .values()
                .filter(|w| w.model == d.id && w.phase != WorkerPhase::Stopping)
                .filter(|w| {
                    w.phase == WorkerPhase::Starting
                        || reachable.get(&w.pool).copied().unwrap_or(true)
                        || ready.get(&w.id).copied().unwrap_or(false)
                })
                .collect();
            let running: Vec<&&ManagedWorker> = live
                .iter()
                .filter(|w| w.phase == WorkerPhase::Running)
                .collect();
            let all_busy = running
                .iter()
                .all(|w| busy.get(&w.id).copied().unwrap_or(0) > 0);
            let mut want = d.min_replicas;
            if q > 0 {
                want = want.max(1);
                if all_busy && !running.is_empty() {
                    want = want.max(live.len() as u32 + 1);
                }
            }
            let want = want.min(d.max_replicas);
            let ds = st.deployments.entry(d.id.clone()).or_default();
            let window = Duration::from_secs(fleet.settings.failure_window_s);
            while ds
                .failures
                .front()
                .is_some_and(|t| now.duration_since(*t) > window)
            {
                ds.failures.pop_front();
            }
            if ds.failed && (ds.failures.len() as u32) < fleet.settings.max_failures {
                ds.failed = false;
            }
            let may_start =
                !ds.failed && ds.starting.is_none() && ds.next_attempt.is_none_or(|t| t <= now);
            let live_n = live.len() as u32;
            if live_n < want && may_start {
                ds.starting = Some(("placing".into(), String::new()));
                to_start.push(d.clone());
            }
            if let Some(ttl) = d.idle_ttl_s {
                let mut keep = live_n;
                for w in &running {
                    if keep <= d.min_replicas || q > 0 {
                        break;
                    }
                    if busy.get(&w.id).copied().unwrap_or(0) == 0
                        && w.last_used.elapsed() >= Duration::from_secs(ttl)
                    {
                        to_stop.push((w.id.clone(), "idle"));
                        keep -= 1;
                    }
                }
            }
        }
        for w in st.workers.values() {
            if w.phase == WorkerPhase::Running && failed.contains_key(&w.id) {
                to_stop.push((w.id.clone(), "failed"));
                continue;
            }
            let on_drained = worker_drained.get(&w.id).copied().unwrap_or(false);
            if on_drained
                && w.phase == WorkerPhase::Running
                && busy.get(&w.id).copied().unwrap_or(0) == 0
                && !to_stop.iter().any(|(id, _)| id == &w.id)
            {
                to_stop.push((w.id.clone(), "drain"));
            }
        }
    }
    for (id, reason) in to_stop {
        let orch = orch.clone();
        let why = failed.get(&id).cloned();
        tokio::spawn(async move {
            let model = orch.fleet.state().workers.get(&id).map(|w| w.model.clone());
            if stop_worker(&orch, &id, reason).await {
                if let (Some(why), Some(model)) = (why, model) {
                    worker_failed(&orch, &id, &model, &why);
                }
            }
        });
    }
    for d in to_start {
        let orch = orch.clone();
        tokio::spawn(async move {
            start_worker(&orch, &d).await;
            orch.fleet.wake.notify_one();
        });
    }
}

/// A fleet worker whose engine failed was stopped: count a failure (backoff, `failed` after too
/// many); the next pass starts a replacement as deployed.
fn worker_failed(orch: &Arc<Orchestrator>, id: &str, model: &str, why: &str) {
    tracing::warn!(worker_id = %id, %model, reason = %why, "fleet worker reported a failed engine; replaced");
    let msg = format!("worker {id} failed: {why}");
    let failed = record_failure(orch, &mut orch.fleet.state(), model, msg, None);
    if let Some(message) = failed {
        fail_queued(orch, model, ErrorCode::ModelLoadFailed, &message);
    }
    orch.fleet.wake.notify_one();
}

/// Stop a fleet worker unless it is busy (a `failed` one is stopped anyway: it cannot finish
/// anything). Returns whether it was stopped.
pub async fn stop_worker(orch: &Arc<Orchestrator>, id: &str, reason: &'static str) -> bool {
    {
        let mut core = orch.core();
        if reason != "failed" && core.registry.get(id).is_some_and(|w| w.busy > 0) {
            return false;
        }
        core.registry.remove(id);
    }
    orch.store.delete_worker(id);
    let pool = {
        let mut st = orch.fleet.state();
        let Some(w) = st.workers.get_mut(id) else {
            return false;
        };
        if w.phase != WorkerPhase::Running {
            return false;
        }
        w.phase = WorkerPhase::Stopping;
        w.pool.clone()
    };
    tracing::info!(worker_id = %id, %pool, reason, "stopping fleet worker");
    let r = match orch.fleet.transports.get(&pool) {
        Some(t) => t
            .call::<serde_json::Value>(
                &[
                    "worker".into(),
                    "stop".into(),
                    id.into(),
                    "--grace".into(),
                    STOP_GRACE_S.into(),
                ],
                quick(orch),
            )
            .await
            .map(|_| ()),
        None => Ok(()),
    };
    let mut st = orch.fleet.state();
    match r {
        Ok(()) | Err(PoolCallError::Failed { .. }) => {
            st.workers.remove(id);
            st.drained_workers.remove(id);
            orch.metrics
                .fleet_worker_stops_total
                .inc(&[("pool", &pool), ("reason", reason)]);
            if reason == "evicted" {
                orch.metrics.fleet_evictions_total.inc(&[("pool", &pool)]);
            }
            true
        }
        Err(e) => {
            tracing::warn!(worker_id = %id, %pool, error = %e, "stop failed; will retry");
            if let Some(w) = st.workers.get_mut(id) {
                w.phase = WorkerPhase::Running;
            }
            false
        }
    }
}

/// Busy slots per fleet worker and queued tasks per deployed model; the workers' last use is
/// brought up to date from the registry on the way.
pub(super) fn load_facts(orch: &Orchestrator) -> (HashMap<String, u32>, HashMap<String, usize>) {
    let ids: Vec<String> = orch.fleet.state().workers.keys().cloned().collect();
    let (busy, last, queued) = {
        let core = orch.core();
        let mut busy = HashMap::new();
        let mut last = HashMap::new();
        for id in &ids {
            if let Some(w) = core.registry.get(id) {
                busy.insert(id.clone(), w.busy);
                if let Some(t) = w.last_busy {
                    last.insert(id.clone(), t);
                }
            }
        }
        let queued: HashMap<String, usize> = orch
            .fleet
            .deployments
            .iter()
            .map(|d| (d.id.clone(), core.queue.of_model(&d.id).len()))
            .collect();
        (busy, last, queued)
    };
    let mut st = orch.fleet.state();
    for (id, t) in last {
        if let Some(w) = st.workers.get_mut(&id) {
            w.last_used = w.last_used.max(t);
        }
    }
    (busy, queued)
}
