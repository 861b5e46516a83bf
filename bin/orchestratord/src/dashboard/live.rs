//! The sampler: every [`SAMPLE_EVERY`] it reads the queue, the registry, the fleet and the
//! metrics counters, appends a [`Sample`] to the ring buffer and broadcasts one `tick` (the
//! sample plus the fleet's current state) to every open dashboard stream.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use llorch_wire::tasks::{Priority, WorkerInfo};
use serde::Serialize;
use tokio::sync::broadcast;

use super::history::{Counters, Gauges, History, Sample, SAMPLE_EVERY};
use crate::fleet::{DeploymentView, FleetView};
use crate::state::Orchestrator;
use crate::task::unix_ms;

/// Ticks a slow stream may fall behind before it skips ahead.
const TICK_BUFFER: usize = 16;

/// A worker as the dashboard shows it.
#[derive(Debug, Clone, Serialize)]
pub struct DashWorker {
    #[serde(flatten)]
    pub info: WorkerInfo,
    /// Drained: no new tasks.
    pub draining: bool,
    /// Tokens relayed from it per second over the last sample interval.
    pub tokens_per_sec: f64,
    /// Where it runs, for fleet workers: `pool: backend[:gpu]`.
    pub device: Option<String>,
}

/// One pool, without its inventory (the Models view reads `GET /v2/pools` for that).
#[derive(Debug, Clone, Serialize)]
pub struct DashPool {
    pub name: String,
    pub transport: String,
    pub reachable: Option<bool>,
    pub drained: bool,
    pub last_error: Option<String>,
    pub max_memory_bytes: Option<u64>,
    pub planned_bytes: u64,
    /// GPU product names from the last probe.
    pub gpus: Vec<String>,
    pub workers: usize,
}

/// The fleet part of a tick (absent without `[[pools]]`).
#[derive(Debug, Clone, Serialize)]
pub struct DashFleet {
    pub pools: Vec<DashPool>,
    pub deployments: Vec<DeploymentView>,
}

/// What every stream receives each interval.
#[derive(Debug, Clone, Serialize)]
pub struct Tick {
    pub sample: Sample,
    pub workers: Vec<DashWorker>,
    pub fleet: Option<DashFleet>,
    /// Changes whenever the task list would (new, finished or progressing tasks): the Tasks
    /// view refetches `GET /v2/tasks` only then.
    pub tasks_key: u64,
}

/// Tokens per task at the previous sample, to attribute rates to workers.
#[derive(Debug, Default)]
struct Progress {
    seen: HashMap<String, (Option<String>, u32)>,
}

/// The ring buffer, the latest tick and the broadcast of ticks.
#[derive(Debug)]
pub struct Live {
    history: Mutex<History>,
    latest: Mutex<Option<Arc<str>>>,
    ticks: broadcast::Sender<Arc<str>>,
}

impl Default for Live {
    fn default() -> Self {
        Self {
            history: Mutex::new(History::default()),
            latest: Mutex::new(None),
            ticks: broadcast::channel(TICK_BUFFER).0,
        }
    }
}

impl Live {
    /// Every sample of the ring buffer (oldest first) and the latest tick, as JSON, and a
    /// receiver of the ticks that follow.
    pub fn subscribe(&self) -> (String, broadcast::Receiver<Arc<str>>) {
        let rx = self.ticks.subscribe();
        let history = {
            let h = self.history.lock().unwrap_or_else(|p| p.into_inner());
            serde_json::to_string(&h.samples().collect::<Vec<_>>()).unwrap_or_default()
        };
        let latest = self
            .latest
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let snapshot = format!(
            r#"{{"sample_every_ms":{},"history":{history},"tick":{}}}"#,
            SAMPLE_EVERY.as_millis(),
            latest.as_deref().unwrap_or("null")
        );
        (snapshot, rx)
    }

    fn publish(&self, g: Gauges, c: Counters, rest: impl FnOnce(Sample) -> Tick) {
        let sample = self
            .history
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(unix_ms(), g, c);
        let json: Arc<str> = serde_json::to_string(&rest(sample))
            .unwrap_or_default()
            .into();
        *self.latest.lock().unwrap_or_else(|p| p.into_inner()) = Some(json.clone());
        // No receiver (no open page) is not an error.
        let _ = self.ticks.send(json);
    }
}

/// Sample until the orchestrator or the dashboard is gone.
pub async fn run(orch: Weak<Orchestrator>, live: Weak<Live>) {
    let mut every = tokio::time::interval(SAMPLE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut progress = Progress::default();
    let mut last = Instant::now();
    loop {
        every.tick().await;
        let (Some(orch), Some(live)) = (orch.upgrade(), live.upgrade()) else {
            return;
        };
        if orch.is_shutting_down() {
            // Tells every open stream to end, so shutdown need not wait for them.
            let _ = live.ticks.send(Arc::from(""));
            return;
        }
        let now = Instant::now();
        let dt = now.duration_since(last).as_secs_f64();
        last = now;
        let (g, c) = read_counters(&orch, now);
        let rates = progress.worker_rates(&orch, dt);
        let fleet = orch.fleet.enabled().then(|| {
            let busy = |id: &str| orch.core().registry.get(id).map(|w| w.busy);
            orch.fleet.view(&busy)
        });
        let workers = workers(&orch, &rates, fleet.as_ref());
        let tasks_key = tasks_key(&orch);
        live.publish(g, c, |sample| Tick {
            sample,
            workers,
            fleet: fleet.map(summarize),
            tasks_key,
        });
    }
}

fn read_counters(orch: &Orchestrator, now: Instant) -> (Gauges, Counters) {
    let g = {
        let core = orch.core();
        let (ready, total) = core.registry.counts();
        let (busy, slots) = core
            .registry
            .iter()
            .fold((0, 0), |(b, s), w| (b + w.busy, s + w.reg.slots_total));
        Gauges {
            queue_interactive: core.queue.depth(Priority::Interactive) as u32,
            queue_batch: core.queue.depth(Priority::Batch) as u32,
            running: core.running,
            workers_ready: ready,
            workers_total: total,
            slots_busy: busy,
            slots_total: slots,
        }
    };
    let llorch_metrics::HistogramTotal {
        bounds: ttft_bounds,
        cumulative: ttft_buckets,
        count: ttft_count,
    } = orch.metrics.ttft_ms.total();
    let c = Counters {
        at: now,
        tokens_out: orch.metrics.tokens_out_total.total(),
        ttft_bounds,
        ttft_buckets,
        ttft_count,
    };
    (g, c)
}

impl Progress {
    /// Tokens per second per worker since the last call: running tasks' progress, plus the
    /// last tokens of tasks that ended in between (while they are still in memory).
    fn worker_rates(&mut self, orch: &Orchestrator, dt: f64) -> HashMap<String, f64> {
        let mut tokens: HashMap<String, u32> = HashMap::new();
        let mut seen = HashMap::new();
        for t in orch.unfinished() {
            let (worker, out) = (t.worker_id(), t.tokens_out());
            let before = self.seen.remove(&t.id).map_or(0, |(_, n)| n);
            if let Some(w) = &worker {
                *tokens.entry(w.clone()).or_default() += out.saturating_sub(before);
            }
            seen.insert(t.id.clone(), (worker, out));
        }
        for (id, (worker, before)) in self.seen.drain() {
            if let (Some(t), Some(w)) = (orch.task(&id), worker) {
                *tokens.entry(w).or_default() += t.tokens_out().saturating_sub(before);
            }
        }
        self.seen = seen;
        tokens
            .into_iter()
            .map(|(w, n)| (w, if dt > 0.0 { f64::from(n) / dt } else { 0.0 }))
            .collect()
    }
}

/// `pool: backend[:gpu]` of a fleet worker, from its pool's last inventory.
fn device_of(fleet: Option<&FleetView>, id: &str) -> Option<String> {
    fleet?.pools.iter().find_map(|p| {
        let rec = &p
            .inventory
            .as_ref()?
            .workers
            .iter()
            .find(|w| w.record.id == id)?
            .record;
        Some(match rec.gpu {
            Some(g) => format!("{}: {}:{g}", p.name, rec.backend),
            None => format!("{}: {}", p.name, rec.backend),
        })
    })
}

fn workers(
    orch: &Orchestrator,
    rates: &HashMap<String, f64>,
    fleet: Option<&FleetView>,
) -> Vec<DashWorker> {
    let device = |id: &str| device_of(fleet, id);
    let core = orch.core();
    core.registry
        .iter()
        .map(|w| DashWorker {
            info: w.info(),
            draining: w.draining,
            tokens_per_sec: rates.get(&w.reg.worker_id).copied().unwrap_or(0.0),
            device: device(&w.reg.worker_id),
        })
        .collect()
}

fn summarize(v: FleetView) -> DashFleet {
    let pools = v
        .pools
        .into_iter()
        .map(|p| DashPool {
            gpus: p
                .inventory
                .as_ref()
                .and_then(|i| i.machine.as_ref())
                .map(|m| m.gpus.iter().map(|g| g.name.clone()).collect())
                .unwrap_or_default(),
            workers: p.workers.len(),
            name: p.name,
            transport: p.transport,
            reachable: p.reachable,
            drained: p.drained,
            last_error: p.last_error,
            max_memory_bytes: p.max_memory_bytes,
            planned_bytes: p.planned_bytes,
        })
        .collect();
    let deployments = v
        .deployments
        .into_iter()
        .map(|mut d| {
            d.log_tail = None;
            d
        })
        .collect();
    DashFleet { pools, deployments }
}

/// A digest of the task table's visible state.
fn tasks_key(orch: &Orchestrator) -> u64 {
    let mut h = DefaultHasher::new();
    orch.metrics
        .tasks_enqueued_total
        .total()
        .to_bits()
        .hash(&mut h);
    orch.metrics
        .tasks_finished_total
        .total()
        .to_bits()
        .hash(&mut h);
    let mut live: Vec<(String, u32, bool)> = orch
        .unfinished()
        .iter()
        .map(|t| (t.id.clone(), t.tokens_out(), t.worker_id().is_some()))
        .collect();
    live.sort();
    live.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::PoolView;

    fn pool() -> PoolView {
        let inventory = serde_json::from_value(serde_json::json!({
            "host": "gpu-box", "version": "0.1.0", "home": "/h", "hf_cache": "/c",
            "backends": [], "models": [],
            "workers": [{ "id": "w1", "model": "m", "model_path": "/m.gguf", "backend": "cuda",
                "gpu": 1, "host": "127.0.0.1", "port": 8001, "url": "http://127.0.0.1:8001",
                "pid": 7, "started_at": 0, "log": "/l", "worker_bin": "/b", "api_token": "secret-token",
                "alive": true, "uptime_s": 5 }],
            "machine": { "cpu_cores": 8, "mem_total_bytes": 1, "mem_available_bytes": 1,
                "gpus": [{ "backend": "cuda", "index": 1, "name": "Test GPU",
                    "mem_total_bytes": 2, "mem_free_bytes": 1 }] }
        }))
        .unwrap();
        PoolView {
            name: "p1".into(),
            transport: "local".into(),
            reachable: Some(true),
            drained: false,
            last_error: None,
            probed_ago_ms: Some(10),
            probe_ms: Some(1.0),
            max_memory_bytes: Some(2),
            planned_bytes: 1,
            inventory: Some(inventory),
            workers: Vec::new(),
            downloads: Vec::new(),
        }
    }

    #[test]
    fn fleet_workers_get_their_device_and_pools_lose_their_inventory() {
        let view = FleetView {
            pools: vec![pool()],
            deployments: Vec::new(),
        };
        assert_eq!(device_of(Some(&view), "w1").as_deref(), Some("p1: cuda:1"));
        assert_eq!(device_of(Some(&view), "other"), None);
        assert_eq!(device_of(None, "w1"), None);
        let dash = summarize(view);
        assert_eq!(dash.pools[0].gpus, ["Test GPU"]);
        let json = serde_json::to_string(&dash).unwrap();
        // Inventory details (worker records, tokens among them) never reach the page.
        assert!(
            !json.contains("secret-token") && !json.contains("model_path"),
            "{json}"
        );
    }
}
