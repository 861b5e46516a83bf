//! The scheduler loop (woken by `Notify`: pick task + worker atomically, spawn its relay) and
//! the maintenance loop (queue position announcements, heartbeat expiry, queue-wait limit,
//! static worker probes, history pruning).

use std::sync::Arc;
use std::time::{Duration, Instant};

use llorch_wire::tasks::TaskEvent;

use crate::policy::{PlaceInput, Pools};
use crate::registry::WorkerEntry;
use crate::relay::{self, Target};
use crate::state::{EndCause, Orchestrator};
use crate::workers;

/// How often the maintenance loop runs.
const TICK: Duration = Duration::from_millis(200);
/// How often old history is pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Dispatch until nothing more can be placed, each time the scheduler is woken.
pub async fn run(orch: Arc<Orchestrator>) {
    loop {
        orch.wake.notified().await;
        if orch.is_shutting_down() {
            return;
        }
        dispatch_ready(&orch);
    }
}

/// Place every task that can be placed now. New queue positions are announced by the
/// maintenance loop, at most once per tick (O(queue) work, so never per dispatch).
pub fn dispatch_ready(orch: &Arc<Orchestrator>) {
    let algorithm = orch.cfg.placement.as_str();
    let policy = orch.policy.as_ref();
    // read before the core lock (the fleet has its own); only policies look at pools
    let pools = policy.map(|_| policy_pools(orch)).unwrap_or_default();
    let mut moved = false;
    loop {
        let t0 = Instant::now();
        let picked = {
            let mut guard = orch.core();
            let core = &mut *guard;
            let registry = &mut core.registry;
            let chosen = if registry.any_free_slot() {
                core.queue.select(|e| {
                    let route = e.route.as_deref();
                    let allowed = |w: &WorkerEntry| {
                        route.is_none_or(|r| r.allows(&w.reg.worker_id, pools.of(w)))
                    };
                    let mut score = |c: &[&WorkerEntry]| {
                        let input = PlaceInput {
                            task_id: &e.task_id,
                            model: &e.model,
                            priority: e.priority,
                            tenant: &e.tenant,
                        };
                        policy?.place(&orch.metrics, &input, c, &pools)
                    };
                    registry.pick_steered(&e.model, &e.avoid, e.affinity, &allowed, &mut score)
                })
            } else {
                None
            };
            chosen.map(|(entry, worker_id)| {
                core.registry.acquire(&worker_id);
                core.running += 1;
                core.drain.record(Instant::now());
                let (url, token) = core
                    .registry
                    .get(&worker_id)
                    .map(|w| (w.reg.url.clone(), w.reg.api_token.clone()))
                    .unwrap_or_default();
                (
                    entry,
                    Target {
                        worker_id,
                        url,
                        token,
                    },
                )
            })
        };
        let Some((entry, target)) = picked else { break };
        moved = true;
        orch.metrics.scheduling_latency_ms.observe(
            &[("algorithm", algorithm)],
            t0.elapsed().as_secs_f64() * 1000.0,
        );
        match orch.task(&entry.task_id) {
            Some(task) => {
                tracing::debug!(task_id = %task.id, worker_id = %target.worker_id, "dispatch");
                tokio::spawn(relay::run(orch.clone(), task, target, Instant::now()));
            }
            None => orch.release_slot(&target.worker_id, &entry.tenant),
        }
    }
    if moved {
        orch.core().positions_dirty = true;
    }
}

/// The pool of each worker as policy scripts see it: fleet workers by id, static workers with a
/// configured `pool` by URL.
fn policy_pools(orch: &Orchestrator) -> Pools {
    let by_id = orch
        .fleet
        .state()
        .workers
        .values()
        .map(|w| (w.id.clone(), w.pool.clone()))
        .collect();
    let by_url = orch
        .cfg
        .workers
        .iter()
        .filter_map(|w| Some((w.url.trim_end_matches('/').to_string(), w.pool.clone()?)))
        .collect();
    Pools { by_id, by_url }
}

/// Send `queued` with the new position to every waiting task whose position changed.
fn announce_positions(orch: &Orchestrator) {
    let (positions, etas) = {
        let core = orch.core();
        let now = Instant::now();
        let positions = core.queue.positions();
        let etas: Vec<u64> = positions
            .iter()
            .map(|(_, p)| core.drain.eta_ms(now, p + 1))
            .collect();
        (positions, etas)
    };
    for ((id, position), eta) in positions.into_iter().zip(etas) {
        if let Some(task) = orch.task(&id) {
            if task.set_position(position) {
                task.push(&TaskEvent::Queued {
                    phase: None,
                    pool: None,
                    bytes_done: None,
                    bytes_total: None,
                    task_id: id,
                    queue_position: position,
                    predicted_start_ms: eta,
                });
            }
        }
    }
}

/// Periodic upkeep; never returns while the process runs.
pub async fn maintenance(orch: Arc<Orchestrator>) {
    let mut last_probe = Instant::now() - Duration::from_secs(3600);
    let mut last_prune = Instant::now() - PRUNE_EVERY;
    let probe_every = Duration::from_millis(orch.cfg.heartbeat_interval_ms);
    let mut tick = tokio::time::interval(TICK);
    loop {
        tick.tick().await;
        if orch.is_shutting_down() {
            return;
        }
        let now = Instant::now();
        let (expired_workers, expired_tasks) = {
            let mut core = orch.core();
            let hb = Duration::from_millis(orch.cfg.heartbeat_timeout_ms);
            let wait = Duration::from_millis(orch.cfg.max_queue_wait_ms);
            (
                core.registry.expire(now, hb),
                core.queue.take_expired(now, wait),
            )
        };
        for id in expired_workers {
            tracing::warn!(worker_id = %id, "worker missed its heartbeats; no new tasks go to it");
        }
        for entry in expired_tasks {
            if let Some(task) = orch.task(&entry.task_id) {
                orch.end_task(&task, EndCause::QueueWait);
            }
        }
        if std::mem::take(&mut orch.core().positions_dirty) {
            announce_positions(&orch);
        }
        if now.duration_since(last_probe) >= probe_every {
            last_probe = now;
            tokio::spawn(workers::probe_static(orch.clone()));
        }
        if now.duration_since(last_prune) >= PRUNE_EVERY {
            last_prune = now;
            let keep_ms = orch.cfg.history_retention_days as u64 * 86_400_000;
            orch.store
                .prune(crate::task::unix_ms().saturating_sub(keep_ms));
        }
    }
}
