//! Fleet orchestration: orchestratord places deployed models on pools (hosts running
//! `llorch-pool`, reached over ssh), starts workers on demand, restarts dead ones, adopts
//! running ones after a restart and stops idle ones. Contract: `.specs/fleet.md`.
//!
//! Layout: `config` (`[[pools]]`, `[[models]]`, `[fleet]`), `transport` (running
//! `llorch-pool --json` locally or over ssh), `placement` (pure decision), `reconcile` (the
//! loop and its actions), this module (state and its JSON views).

pub mod config;
mod download;
pub mod placement;
pub mod reconcile;
mod start;
pub mod transport;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use llorch_catalog::{DownloadProgress, FitView, StatusView};
use serde::Serialize;
use tokio::sync::Notify;

use self::config::{Deployment, FleetSettings, PoolConfig};
use self::transport::PoolTransport;

/// Prefix of the ids of workers the fleet starts (how it recognises its own after a restart).
pub const WORKER_PREFIX: &str = "fleet-";

/// Lifecycle of a fleet worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerPhase {
    /// `worker spawn` is running (placing, downloading or loading).
    Starting,
    /// Ready (spawn returned, or adopted).
    Running,
    /// Being stopped (idle, eviction, drain, scale-down).
    Stopping,
}

/// A worker the fleet started or adopted.
#[derive(Debug, Clone, Serialize)]
pub struct ManagedWorker {
    pub id: String,
    pub pool: String,
    pub model: String,
    pub phase: WorkerPhase,
    /// Memory estimate the placement counted for it.
    pub estimate_bytes: u64,
    pub url: Option<String>,
    /// Resident memory as the pool last reported it.
    pub rss_bytes: Option<u64>,
    /// Whether it was found running rather than started by this orchestratord.
    pub adopted: bool,
    #[serde(skip)]
    pub last_used: Instant,
    #[serde(skip)]
    pub started: Instant,
}

/// State of a deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeployState {
    /// No worker and none wanted (on demand, nothing queued).
    Idle,
    /// A worker is being started.
    Starting,
    /// At least one worker runs.
    Ready,
    /// Too many failures in the window; retried once the window has passed.
    Failed,
}

/// What the reconciler remembers about one deployment.
#[derive(Debug, Clone, Default)]
pub struct DeploymentState {
    pub failures: VecDeque<Instant>,
    pub restarts: u32,
    pub starts: u32,
    pub next_attempt: Option<Instant>,
    pub last_error: Option<String>,
    /// The last lines of the worker log after a failed start.
    pub log_tail: Option<String>,
    pub failed: bool,
    /// A worker died (or failed) since the last successful start: the next start is a restart.
    pub died: bool,
    /// Last measured spawn-to-ready time.
    pub load_ms: Option<f64>,
    /// Phase and pool of a start in progress.
    pub starting: Option<(String, String)>,
}

/// What the reconciler knows about one pool.
#[derive(Debug, Clone, Default)]
pub struct PoolState {
    /// `None` until the first probe.
    pub reachable: Option<bool>,
    pub last_error: Option<String>,
    pub status: Option<StatusView>,
    pub probed_at: Option<Instant>,
    pub probe_ms: Option<f64>,
    pub drained: bool,
    /// `models fit` answers by model id.
    pub estimates: HashMap<String, FitView>,
    /// Downloads in flight there (the fleet's own), by model id, as last polled.
    pub downloads: BTreeMap<String, DownloadProgress>,
}

/// Mutable fleet state (one lock; never held across an await).
#[derive(Debug, Default)]
pub struct FleetState {
    pub pools: BTreeMap<String, PoolState>,
    pub workers: BTreeMap<String, ManagedWorker>,
    pub deployments: BTreeMap<String, DeploymentState>,
    /// Whether the first probe of every pool (and adoption) happened.
    pub inventoried: bool,
    /// Fleet workers drained one by one (`POST /v2/workers/{id}/drain`).
    pub drained_workers: BTreeSet<String>,
}

/// The fleet: configuration, transports, state.
#[derive(Debug)]
pub struct Fleet {
    pub pools: Vec<PoolConfig>,
    pub transports: BTreeMap<String, PoolTransport>,
    pub deployments: Vec<Deployment>,
    pub settings: FleetSettings,
    state: Mutex<FleetState>,
    /// Wakes the reconciler (a task arrived for a deployed model, a drain, a worker died).
    pub wake: Notify,
    control: Mutex<Option<llorch_ssh::control::ControlDir>>,
    /// Whether a pass fetching memory estimates runs (one at a time).
    pub prewarming: std::sync::atomic::AtomicBool,
}

impl Fleet {
    /// The fleet of a config (empty when no pools are configured).
    pub fn new(
        pools: Vec<PoolConfig>,
        deployments: Vec<Deployment>,
        settings: FleetSettings,
    ) -> Self {
        let control = if pools.iter().any(|p| !p.is_local()) {
            match llorch_ssh::control::ControlDir::create() {
                Ok(d) => Some(d),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot create the ssh control directory; one connection per pool command");
                    None
                }
            }
        } else {
            None
        };
        let persist = Duration::from_secs(settings.control_persist_s);
        let transports = pools
            .iter()
            .map(|p| {
                (
                    p.name.clone(),
                    PoolTransport::new(p, control.as_ref(), settings.connect_timeout_s, persist),
                )
            })
            .collect();
        let mut st = FleetState::default();
        for p in &pools {
            st.pools.insert(p.name.clone(), PoolState::default());
        }
        for d in &deployments {
            st.deployments
                .insert(d.id.clone(), DeploymentState::default());
        }
        Self {
            pools,
            transports,
            deployments,
            settings,
            state: Mutex::new(st),
            wake: Notify::new(),
            control: Mutex::new(control),
            prewarming: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Whether any pool is configured.
    pub fn enabled(&self) -> bool {
        !self.pools.is_empty()
    }

    /// Lock the state.
    pub fn state(&self) -> MutexGuard<'_, FleetState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The deployment of `model`, if any.
    pub fn deployment(&self, model: &str) -> Option<&Deployment> {
        self.deployments.iter().find(|d| d.id == model)
    }

    /// Why tasks for `model` cannot be accepted now (a failed deployment), if so.
    pub fn refusal(&self, model: &str) -> Option<String> {
        let st = self.state();
        let d = st.deployments.get(model)?;
        d.failed.then(|| {
            format!(
                "deployment {model:?} failed {} times in {} s; last error: {}",
                d.failures.len(),
                self.settings.failure_window_s,
                d.last_error.as_deref().unwrap_or("unknown")
            )
        })
    }

    /// Set a pool's drain flag; false for an unknown pool.
    pub fn set_drained(&self, pool: &str, drained: bool) -> bool {
        let ok = match self.state().pools.get_mut(pool) {
            Some(p) => {
                p.drained = drained;
                true
            }
            None => false,
        };
        self.wake.notify_one();
        ok
    }

    /// Whether a pool is drained.
    pub fn is_drained(&self, pool: &str) -> bool {
        self.state().pools.get(pool).is_some_and(|p| p.drained)
    }

    /// Remove the ssh control directory (its masters are told to exit).
    pub fn shutdown(&self) {
        let dir = self
            .control
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        drop(dir);
    }

    /// `GET /v2/pools` (and `/v2/pools/{name}` via [`Fleet::pool_view`]).
    pub fn view(&self, busy: &dyn Fn(&str) -> Option<u32>) -> FleetView {
        let st = self.state();
        let pools = self.pools.iter().map(|p| pool_view(p, &st, busy)).collect();
        let deployments = self
            .deployments
            .iter()
            .map(|d| deployment_view(d, &st))
            .collect();
        FleetView { pools, deployments }
    }

    /// One pool's view.
    pub fn pool_view(&self, name: &str, busy: &dyn Fn(&str) -> Option<u32>) -> Option<PoolView> {
        let st = self.state();
        let p = self.pools.iter().find(|p| p.name == name)?;
        Some(pool_view(p, &st, busy))
    }
}

/// `GET /v2/pools`.
#[derive(Debug, Clone, Serialize)]
pub struct FleetView {
    pub pools: Vec<PoolView>,
    pub deployments: Vec<DeploymentView>,
}

/// One pool in `GET /v2/pools`.
#[derive(Debug, Clone, Serialize)]
pub struct PoolView {
    pub name: String,
    /// `local` or the ssh destination.
    pub transport: String,
    /// `null` until first probed.
    pub reachable: Option<bool>,
    pub drained: bool,
    pub last_error: Option<String>,
    /// Milliseconds since the last successful probe, and what it cost.
    pub probed_ago_ms: Option<u64>,
    pub probe_ms: Option<f64>,
    pub max_memory_bytes: Option<u64>,
    /// Sum of the estimates of the fleet's workers there.
    pub planned_bytes: u64,
    /// `status --json` of the pool's llorch-pool (inventory, models, workers).
    pub inventory: Option<StatusView>,
    pub workers: Vec<WorkerView>,
    /// Model downloads in flight there, as last polled (every 500 ms).
    pub downloads: Vec<DownloadProgress>,
}

/// A fleet worker with its load.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerView {
    #[serde(flatten)]
    pub worker: ManagedWorker,
    pub slots_busy: Option<u32>,
    pub idle_ms: u64,
}

/// One deployment in `GET /v2/pools`.
#[derive(Debug, Clone, Serialize)]
pub struct DeploymentView {
    pub model: String,
    pub state: DeployState,
    pub min_replicas: u32,
    pub max_replicas: u32,
    pub replicas: u32,
    pub starts: u32,
    pub restarts: u32,
    pub failures_in_window: u32,
    pub last_error: Option<String>,
    pub log_tail: Option<String>,
    pub load_ms: Option<f64>,
    /// Phase and pool of a start in progress.
    pub phase: Option<String>,
    pub phase_pool: Option<String>,
}

fn pool_view(p: &PoolConfig, st: &FleetState, busy: &dyn Fn(&str) -> Option<u32>) -> PoolView {
    let ps = st.pools.get(&p.name).cloned().unwrap_or_default();
    let workers: Vec<WorkerView> = st
        .workers
        .values()
        .filter(|w| w.pool == p.name)
        .map(|w| WorkerView {
            worker: w.clone(),
            slots_busy: busy(&w.id),
            idle_ms: w.last_used.elapsed().as_millis() as u64,
        })
        .collect();
    PoolView {
        name: p.name.clone(),
        transport: p
            .destination()
            .map(|d| format!("ssh {}", d.display()))
            .unwrap_or_else(|| "local".into()),
        reachable: ps.reachable,
        drained: ps.drained,
        last_error: ps.last_error,
        probed_ago_ms: ps.probed_at.map(|t| t.elapsed().as_millis() as u64),
        probe_ms: ps.probe_ms,
        max_memory_bytes: p.max_memory_bytes,
        planned_bytes: workers.iter().map(|w| w.worker.estimate_bytes).sum(),
        inventory: ps.status,
        workers,
        downloads: ps.downloads.into_values().collect(),
    }
}

fn deployment_view(d: &Deployment, st: &FleetState) -> DeploymentView {
    let ds = st.deployments.get(&d.id).cloned().unwrap_or_default();
    let replicas = st
        .workers
        .values()
        .filter(|w| w.model == d.id && w.phase != WorkerPhase::Stopping)
        .collect::<Vec<_>>();
    let running = replicas
        .iter()
        .filter(|w| w.phase == WorkerPhase::Running)
        .count();
    let state = if ds.failed {
        DeployState::Failed
    } else if running > 0 {
        DeployState::Ready
    } else if !replicas.is_empty() || ds.starting.is_some() {
        DeployState::Starting
    } else {
        DeployState::Idle
    };
    let (phase, phase_pool) = ds.starting.clone().unzip();
    DeploymentView {
        model: d.id.clone(),
        state,
        min_replicas: d.min_replicas,
        max_replicas: d.max_replicas,
        replicas: replicas.len() as u32,
        starts: ds.starts,
        restarts: ds.restarts,
        failures_in_window: ds.failures.len() as u32,
        last_error: ds.last_error,
        log_tail: ds.log_tail,
        load_ms: ds.load_ms,
        phase,
        phase_pool,
    }
}
