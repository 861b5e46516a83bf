//! Starting one worker of a deployment: estimate, place (evicting idle workers when needed),
//! download when the pool lacks the files, `worker spawn`, and bookkeeping of the outcome.

use std::sync::Arc;
use std::time::{Duration, Instant};

use llorch_catalog::{FitView, StatusView, WorkerView as PoolWorker};
use llorch_wire::ErrorCode;

use super::config::{BackendChoice, Deployment};
use super::placement::{self, Candidate, IdleWorker, Plan};
use super::reconcile::{
    announce_phase, fail_queued, load_facts, quick, record_failure, stop_worker,
};
use super::transport::PoolCallError;
use super::{ManagedWorker, WorkerPhase, WORKER_PREFIX};
use crate::state::Orchestrator;

/// Time allowed for `worker spawn` (llorch-pool itself waits for readiness) and downloads.
const SPAWN_CALL: Duration = Duration::from_secs(900);
const DOWNLOAD_CALL: Duration = Duration::from_secs(6 * 3600);
/// Marker llorch-pool puts before a failed worker's log tail.
const TAIL_MARKER: &str = "\n--- last lines of ";

/// Fetch the memory estimates of every deployment on every reachable pool that lacks one, so
/// an on-demand start does not wait for them (one pass at a time).
pub async fn prewarm_estimates(orch: &Arc<Orchestrator>) {
    use std::sync::atomic::Ordering;
    if orch.fleet.prewarming.swap(true, Ordering::SeqCst) {
        return;
    }
    for d in &orch.fleet.deployments {
        let allowed: Vec<String> = orch
            .fleet
            .pools
            .iter()
            .filter(|p| d.pools.as_ref().is_none_or(|l| l.contains(&p.name)))
            .map(|p| p.name.clone())
            .collect();
        estimate(orch, d, &allowed).await;
    }
    orch.fleet.prewarming.store(false, Ordering::SeqCst);
}

/// Start one worker for `d` (called with the deployment marked `starting`; clears it).
pub async fn start_worker(orch: &Arc<Orchestrator>, d: &Deployment) {
    let t0 = Instant::now();
    let outcome = place_and_spawn(orch, d, t0).await;
    let mut st = orch.fleet.state();
    if let Some(ds) = st.deployments.get_mut(&d.id) {
        ds.starting = None;
    }
    match outcome {
        Ok(()) => {}
        Err(StartError::NoFit(report)) => {
            let msg = format!("no pool can hold a worker of {:?}: {report}", d.id);
            tracing::warn!(model = %d.id, %msg, "placement failed");
            let ds = st.deployments.entry(d.id.clone()).or_default();
            ds.last_error = Some(msg.clone());
            ds.next_attempt = Some(
                Instant::now() + Duration::from_millis(orch.fleet.settings.restart_backoff_ms),
            );
            drop(st);
            orch.metrics
                .fleet_placement_failures_total
                .inc(&[("model", &d.id)]);
            fail_queued(orch, &d.id, ErrorCode::NoCapacity, &msg);
        }
        Err(StartError::Retry(why)) => {
            tracing::info!(model = %d.id, why, "start postponed");
            let ds = st.deployments.entry(d.id.clone()).or_default();
            ds.next_attempt = Some(
                Instant::now() + Duration::from_millis(orch.fleet.settings.restart_backoff_ms),
            );
        }
        Err(StartError::Failed { message, tail }) => {
            tracing::warn!(model = %d.id, %message, "worker start failed");
            let failed = record_failure(orch, &mut st, &d.id, message, tail);
            drop(st);
            if let Some(m) = failed {
                fail_queued(orch, &d.id, ErrorCode::ModelLoadFailed, &m);
            }
        }
    }
}

enum StartError {
    /// Nothing fits anywhere; the report says what was needed and what each pool had.
    NoFit(String),
    /// Try again after the backoff (e.g. an eviction target became busy).
    Retry(&'static str),
    /// The start failed; counts toward the deployment's failures.
    Failed {
        message: String,
        tail: Option<String>,
    },
}

fn split_tail(message: &str) -> (String, Option<String>) {
    match message.split_once(TAIL_MARKER) {
        Some((head, rest)) => {
            let tail = rest.split_once('\n').map(|(_, t)| t).unwrap_or("");
            (head.to_string(), Some(tail.to_string()))
        }
        None => (message.to_string(), None),
    }
}

async fn place_and_spawn(
    orch: &Arc<Orchestrator>,
    d: &Deployment,
    t0: Instant,
) -> Result<(), StartError> {
    announce_phase(orch, &d.id, "placing", "");
    let allowed: Vec<String> = orch
        .fleet
        .pools
        .iter()
        .filter(|p| d.pools.as_ref().is_none_or(|l| l.contains(&p.name)))
        .map(|p| p.name.clone())
        .collect();
    let need = estimate(orch, d, &allowed).await;
    let Some(need) = need else {
        let cands = candidates(orch, d);
        return Err(StartError::NoFit(format!(
            "no memory estimate (model {:?} unknown to every reachable pool?); {}",
            d.id,
            placement::report(0, &cands)
        )));
    };
    let t_place = Instant::now();
    let cands = candidates(orch, d);
    let plan = placement::plan(need, &cands);
    orch.metrics
        .fleet_placement_ms
        .observe(&[], t_place.elapsed().as_secs_f64() * 1000.0);
    let (pool, evict) = match plan {
        Plan::NoFit { report } => return Err(StartError::NoFit(report)),
        Plan::Place { pool, evict } => (pool, evict),
    };
    for id in &evict {
        tracing::info!(worker_id = %id, %pool, model = %d.id, "evicting an idle worker to make room");
        if !stop_worker(orch, id, "evicted").await {
            return Err(StartError::Retry(
                "an eviction target became busy or could not stop",
            ));
        }
    }
    let Some(t) = orch.fleet.transports.get(&pool) else {
        return Err(StartError::Retry("pool vanished"));
    };
    let status = orch
        .fleet
        .state()
        .pools
        .get(&pool)
        .and_then(|p| p.status.clone());
    if !present_on(status.as_ref(), &d.id) {
        announce_phase(orch, &d.id, "downloading", &pool);
        if let Err(e) = super::download::download(orch, t, &pool, &d.id, DOWNLOAD_CALL).await {
            return Err(StartError::Failed {
                message: format!("download of {} on pool {pool} failed: {e}", d.id),
                tail: None,
            });
        }
    }
    announce_phase(orch, &d.id, "loading", &pool);
    let id = format!(
        "{WORKER_PREFIX}{pool}-{}-{}",
        d.id,
        &uuid::Uuid::new_v4().simple().to_string()[..6]
    );
    let backend = backend_for(d, status.as_ref());
    let bind = orch
        .fleet
        .pools
        .iter()
        .find(|p| p.name == pool)
        .and_then(|p| p.worker_bind.clone())
        .unwrap_or_else(|| {
            if t.is_remote() {
                "0.0.0.0"
            } else {
                "127.0.0.1"
            }
            .to_string()
        });
    let url = orch
        .fleet
        .settings
        .orchestrator_url
        .clone()
        .unwrap_or_else(|| format!("http://{}", orch.cfg.bind));
    let mut args: Vec<String> = [
        "worker",
        "spawn",
        backend,
        "--model",
        &d.id,
        "--id",
        &id,
        "--orchestrator-url",
        &url,
        "--bind",
        &bind,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(sizing_args(d, "--ctx-size"));
    {
        let mut st = orch.fleet.state();
        st.workers.insert(
            id.clone(),
            ManagedWorker {
                id: id.clone(),
                pool: pool.clone(),
                model: d.id.clone(),
                phase: WorkerPhase::Starting,
                estimate_bytes: need,
                url: None,
                rss_bytes: None,
                adopted: false,
                last_used: Instant::now(),
                started: Instant::now(),
            },
        );
    }
    let t_spawn = Instant::now();
    let r = t.call::<PoolWorker>(&args, SPAWN_CALL).await;
    let mut st = orch.fleet.state();
    match r {
        Ok((view, _)) => {
            let load_ms = t_spawn.elapsed().as_secs_f64() * 1000.0;
            if let Some(w) = st.workers.get_mut(&id) {
                w.phase = WorkerPhase::Running;
                w.url = Some(view.record.url.clone());
                w.rss_bytes = view.rss_bytes;
                w.last_used = Instant::now();
            }
            let ds = st.deployments.entry(d.id.clone()).or_default();
            ds.starts += 1;
            ds.load_ms = Some(load_ms);
            let reason = if std::mem::take(&mut ds.died) {
                ds.restarts += 1;
                "restart"
            } else {
                "start"
            };
            drop(st);
            orch.metrics
                .fleet_worker_starts_total
                .inc(&[("pool", &pool), ("reason", reason)]);
            orch.metrics
                .fleet_start_ms
                .observe(&[("model", &d.id)], t0.elapsed().as_secs_f64() * 1000.0);
            tracing::info!(worker_id = %id, %pool, model = %d.id, load_ms, total_ms = t0.elapsed().as_secs_f64() * 1000.0, reason, "fleet worker ready");
            Ok(())
        }
        Err(e) => {
            st.workers.remove(&id);
            drop(st);
            let (message, tail) = match &e {
                PoolCallError::Failed { message, .. } => split_tail(message),
                other => (other.to_string(), None),
            };
            Err(StartError::Failed {
                message: format!("spawn of {id} on pool {pool}: {message}"),
                tail,
            })
        }
    }
}

/// The backend a deployment gets on a pool.
/// The deployment's sizing options as `llorch-pool` flags (`worker spawn` names the context
/// `--ctx-size`, `models fit` names it `--ctx`), so the estimate and the spawn always agree.
fn sizing_args(d: &Deployment, ctx_flag: &str) -> Vec<String> {
    let mut args = Vec::new();
    if let Some(c) = d.ctx_size {
        args.extend([ctx_flag.to_string(), c.to_string()]);
    }
    if let Some(p) = d.parallel {
        args.extend(["--parallel".to_string(), p.to_string()]);
    }
    if let Some(m) = d.prompt_cache_mb {
        args.extend(["--prompt-cache-mb".to_string(), m.to_string()]);
    }
    args
}

fn backend_for(d: &Deployment, status: Option<&StatusView>) -> &'static str {
    match d.backend {
        BackendChoice::Cpu => "cpu",
        BackendChoice::Cuda => "cuda",
        BackendChoice::Metal => "metal",
        BackendChoice::Auto => {
            // a GPU backend only where the pool's worker binary was built with it
            let usable = |name: &str| {
                status.is_some_and(|s| s.backends.iter().any(|b| b.name == name && b.available))
            };
            let gpus = status.and_then(|s| s.machine.as_ref()).map(|m| &m.gpus);
            match gpus.and_then(|g| g.first()) {
                Some(g) if g.backend == "cuda" && usable("cuda") => "cuda",
                Some(g) if g.backend == "metal" && usable("metal") => "metal",
                _ => "cpu",
            }
        }
    }
}

/// Fetch missing `models fit` answers for `d` on every eligible pool; return the need.
pub(super) async fn estimate(
    orch: &Arc<Orchestrator>,
    d: &Deployment,
    pools: &[String],
) -> Option<u64> {
    let mut asks = Vec::new();
    {
        let st = orch.fleet.state();
        for p in pools {
            let Some(ps) = st.pools.get(p) else { continue };
            let present = present_on(ps.status.as_ref(), &d.id);
            let stale = ps.estimates.get(&d.id).is_none_or(|f| f.present != present);
            if stale && ps.reachable == Some(true) {
                asks.push((p.clone(), backend_for(d, ps.status.as_ref())));
            }
        }
    }
    for (pool, backend) in asks {
        let Some(t) = orch.fleet.transports.get(&pool) else {
            continue;
        };
        let mut args: Vec<String> = ["models", "fit", &d.id, "--backend", backend]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.extend(sizing_args(d, "--ctx"));
        match t.call::<FitView>(&args, quick(orch)).await {
            Ok((fit, _)) => {
                if let Some(ps) = orch.fleet.state().pools.get_mut(&pool) {
                    ps.estimates.insert(d.id.clone(), fit);
                }
            }
            Err(e) => tracing::warn!(%pool, model = %d.id, error = %e, "models fit failed"),
        }
    }
    let st = orch.fleet.state();
    let fits: Vec<&FitView> = st
        .pools
        .values()
        .filter_map(|p| p.estimates.get(&d.id))
        .collect();
    // A pool with the file read its header (KV cache included): trust it over catalog sizes.
    fits.iter()
        .filter(|f| f.present)
        .map(|f| f.total_bytes)
        .max()
        .or_else(|| fits.iter().map(|f| f.total_bytes).max())
}

fn present_on(status: Option<&StatusView>, model: &str) -> bool {
    status.is_some_and(|s| s.models.iter().any(|m| m.spec.id == model && m.downloaded))
}

/// Build the placement view of every pool for `d`. Idle = running, no task on it and none
/// queued for its model.
fn candidates(orch: &Orchestrator, d: &Deployment) -> Vec<Candidate> {
    let (busy, queued) = load_facts(orch);
    let st = orch.fleet.state();
    orch.fleet
        .pools
        .iter()
        .map(|p| {
            let ps = st.pools.get(&p.name).cloned().unwrap_or_default();
            let allowed = d.pools.as_ref().is_none_or(|l| l.contains(&p.name));
            let excluded = if !allowed {
                Some("not in the deployment's pools".to_string())
            } else if ps.drained {
                Some("drained".to_string())
            } else if ps.reachable != Some(true) {
                Some(format!(
                    "unreachable ({})",
                    ps.last_error.as_deref().unwrap_or("not probed yet")
                ))
            } else {
                None
            };
            let workers: Vec<&ManagedWorker> =
                st.workers.values().filter(|w| w.pool == p.name).collect();
            let backend = backend_for(d, ps.status.as_ref());
            let available = ps
                .status
                .as_ref()
                .and_then(|s| s.machine.as_ref())
                .map(|m| match backend {
                    "cpu" => m.mem_available_bytes,
                    b => m
                        .gpus
                        .iter()
                        .filter(|g| g.backend == b)
                        .map(|g| g.mem_free_bytes)
                        .max()
                        .unwrap_or(0),
                })
                .unwrap_or(0);
            Candidate {
                name: p.name.clone(),
                excluded,
                present: present_on(ps.status.as_ref(), &d.id),
                available,
                cap: p.max_memory_bytes,
                planned: workers.iter().map(|w| w.estimate_bytes).sum(),
                idle: workers
                    .iter()
                    .filter(|w| {
                        w.phase == WorkerPhase::Running
                            && w.model != d.id
                            && busy.get(&w.id).copied().unwrap_or(0) == 0
                            && queued.get(&w.model).copied().unwrap_or(0) == 0
                    })
                    .map(|w| IdleWorker {
                        id: w.id.clone(),
                        bytes: w.estimate_bytes,
                        last_used: w.last_used,
                    })
                    .collect(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_tail_is_split_off() {
        let (m, t) = split_tail("worker `x` failed to start: boom\n--- last lines of /l ---\na\nb");
        assert_eq!(m, "worker `x` failed to start: boom");
        assert_eq!(t.as_deref(), Some("a\nb"));
        assert_eq!(split_tail("plain").1, None);
    }

    #[test]
    fn auto_picks_a_gpu_only_where_the_worker_binary_can_use_it() {
        let d: Deployment = serde_json::from_value(serde_json::json!({"id": "m"})).unwrap();
        let status = |cuda_available: bool| -> StatusView {
            serde_json::from_value(serde_json::json!({
                "host": "h", "version": "0", "home": "/h", "hf_cache": "/c",
                "backends": [
                    {"name": "cpu", "available": true, "devices": 16, "detail": "", "compiled": true},
                    {"name": "cuda", "available": cuda_available, "devices": 1, "detail": "",
                     "compiled": cuda_available}
                ],
                "models": [], "workers": [],
                "machine": {"cpu_cores": 16, "mem_total_bytes": 1, "mem_available_bytes": 1,
                    "gpus": [{"backend": "cuda", "index": 0, "name": "H100",
                              "mem_total_bytes": 80, "mem_free_bytes": 80}]}
            }))
            .unwrap()
        };
        assert_eq!(backend_for(&d, Some(&status(true))), "cuda");
        assert_eq!(backend_for(&d, Some(&status(false))), "cpu");
        assert_eq!(backend_for(&d, None), "cpu");
    }
}
