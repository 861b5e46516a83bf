//! Configuration: command-line flags > environment (`LLORCH_ORCH_*`, `LLORCH_API_TOKEN`) > TOML
//! file (`--config`) > defaults, merged into one validated [`Config`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::{Parser, ValueEnum};
use serde::Deserialize;

use crate::fleet::config::{Deployment, FleetSettings, PoolConfig};
use crate::limits::{LimitArgs, Limits, LimitsFile};

/// What happens when a priority class of the queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum QueuePolicy {
    /// Answer 429 with `Retry-After`.
    Reject,
    /// A new batch task evicts the oldest queued batch task (which gets an `EVICTED` error);
    /// interactive tasks are never evicted and get 429.
    DropLru,
}

impl QueuePolicy {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            QueuePolicy::Reject => "reject",
            QueuePolicy::DropLru => "drop-lru",
        }
    }
}

/// How the scheduler picks among workers that can take a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Placement {
    /// Lowest busy/slots ratio, then fewest busy, then smallest worker id.
    LeastLoaded,
    /// Next worker after the last one chosen, in worker-id order.
    RoundRobin,
}

impl Placement {
    /// The wire spelling (also the metric label).
    pub fn as_str(self) -> &'static str {
        match self {
            Placement::LeastLoaded => "least-loaded",
            Placement::RoundRobin => "round-robin",
        }
    }
}

/// Command-line flags; each also reads an environment variable.
#[derive(Debug, Default, Parser)]
#[command(
    name = "orchestratord",
    version,
    about = "llama-orch orchestrator daemon"
)]
pub struct Args {
    /// TOML config file.
    #[arg(long, env = "LLORCH_ORCH_CONFIG")]
    pub config: Option<PathBuf>,
    /// Listen address (default 127.0.0.1:8080).
    #[arg(long, env = "LLORCH_ORCH_BIND")]
    pub bind: Option<SocketAddr>,
    /// SQLite database file for the registry and task history.
    #[arg(long, env = "LLORCH_ORCH_DB")]
    pub db: Option<PathBuf>,
    /// Bearer token clients and workers must send (comma-separated for several).
    #[arg(long, env = "LLORCH_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
    /// Queue capacity per priority class (default 100).
    #[arg(long, env = "LLORCH_ORCH_QUEUE_CAPACITY")]
    pub queue_capacity: Option<u32>,
    /// Full-queue policy (default reject).
    #[arg(long, env = "LLORCH_ORCH_QUEUE_POLICY")]
    pub queue_policy: Option<QueuePolicy>,
    /// Worker choice (default least-loaded).
    #[arg(long, env = "LLORCH_ORCH_PLACEMENT")]
    pub placement: Option<Placement>,
    /// Interactive dispatches in a row before a waiting batch task goes (default 4).
    #[arg(long, env = "LLORCH_ORCH_BATCH_STARVATION_BOUND")]
    pub batch_starvation_bound: Option<u32>,
    /// Dispatch attempts per task before the first token (default 3).
    #[arg(long, env = "LLORCH_ORCH_MAX_ATTEMPTS")]
    pub max_attempts: Option<u32>,
    /// First retry backoff, doubled per attempt (default 50).
    #[arg(long, env = "LLORCH_ORCH_RETRY_BACKOFF_MS")]
    pub retry_backoff_ms: Option<u64>,
    /// Heartbeat interval asked of workers (default 5000).
    #[arg(long, env = "LLORCH_ORCH_HEARTBEAT_INTERVAL_MS")]
    pub heartbeat_interval_ms: Option<u64>,
    /// Silence after which a worker is unhealthy (default 3 intervals).
    #[arg(long, env = "LLORCH_ORCH_HEARTBEAT_TIMEOUT_MS")]
    pub heartbeat_timeout_ms: Option<u64>,
    /// After the last SSE client leaves, cancel the task if none reconnects within this (default 2000).
    #[arg(long, env = "LLORCH_ORCH_DISCONNECT_GRACE_MS")]
    pub disconnect_grace_ms: Option<u64>,
    /// Longest a task waits in the queue (default 300000).
    #[arg(long, env = "LLORCH_ORCH_MAX_QUEUE_WAIT_MS")]
    pub max_queue_wait_ms: Option<u64>,
    /// A worker silent this long mid-task is treated as lost (default 60000).
    #[arg(long, env = "LLORCH_ORCH_STALL_TIMEOUT_MS")]
    pub stall_timeout_ms: Option<u64>,
    /// Static workers, comma-separated base URLs (polled via /health).
    #[arg(long, env = "LLORCH_ORCH_WORKERS", value_delimiter = ',')]
    pub workers: Option<Vec<String>>,
    /// Keep accepted tasks' requests (prompts included) in the database until they end, so a
    /// crash does not lose them (default true; false keeps prompts off the disk).
    #[arg(long, env = "LLORCH_ORCH_PERSIST_REQUESTS", value_name = "true|false")]
    pub persist_requests: Option<bool>,
    /// Body, header, connection and stream limits.
    #[command(flatten)]
    pub limits: LimitArgs,
    /// Policy hook: a Rhai script called at admission and placement (reloaded on change;
    /// `[policy]` in the config file sets its limits).
    #[arg(long, env = "LLORCH_ORCH_POLICY", value_name = "FILE")]
    pub policy: Option<PathBuf>,
    #[command(flatten)]
    pub log: llorch_http::logging::LogArgs,
}

/// One `[[workers]]` entry of the config file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticWorker {
    pub url: String,
    /// The worker's API token (its `LLORCH_WORKER_TOKEN`), sent on its `/execute`, `/cancel`
    /// and `/tokenize`. Workers listed with `--workers` have none.
    #[serde(default)]
    pub api_token: Option<llorch_wire::tasks::Secret>,
    /// The pool (host) it runs on, as policy scripts see it (fleet workers have their pool).
    #[serde(default)]
    pub pool: Option<String>,
}

/// `[policy]`: the policy hook (`.specs/tenancy.md`, "Policy hook").
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// The Rhai script; none: the built-in policy alone.
    pub script: Option<PathBuf>,
    /// Operations one call of the script may run.
    pub max_operations: u64,
    /// Wall time one call may take, in ms.
    pub timeout_ms: u64,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            script: None,
            max_operations: 100_000,
            timeout_ms: 50,
        }
    }
}

/// The TOML file: every key optional, same names as the flags (with `_`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub bind: Option<SocketAddr>,
    pub db: Option<PathBuf>,
    pub api_tokens: Option<Vec<String>>,
    pub queue_capacity: Option<u32>,
    pub queue_policy: Option<QueuePolicy>,
    pub placement: Option<Placement>,
    pub batch_starvation_bound: Option<u32>,
    pub max_attempts: Option<u32>,
    pub retry_backoff_ms: Option<u64>,
    pub heartbeat_interval_ms: Option<u64>,
    pub heartbeat_timeout_ms: Option<u64>,
    pub disconnect_grace_ms: Option<u64>,
    pub max_queue_wait_ms: Option<u64>,
    pub stall_timeout_ms: Option<u64>,
    pub finished_tasks_in_memory: Option<usize>,
    pub history_retention_days: Option<u32>,
    pub workers: Option<Vec<StaticWorker>>,
    pub persist_requests: Option<bool>,
    /// Hosts whose `llorch-pool` the fleet drives (`.specs/fleet.md`).
    pub pools: Option<Vec<PoolConfig>>,
    /// Models the fleet keeps available.
    pub models: Option<Vec<Deployment>>,
    /// Reconciler timing.
    pub fleet: Option<FleetSettings>,
    /// Body, header, connection and stream limits (`crate::limits`).
    pub limits: Option<LimitsFile>,
    /// The policy hook.
    pub policy: Option<PolicyConfig>,
}

/// Validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub bind: SocketAddr,
    pub db: PathBuf,
    pub api_tokens: Vec<String>,
    pub queue_capacity: u32,
    pub queue_policy: QueuePolicy,
    pub placement: Placement,
    pub batch_starvation_bound: u32,
    pub max_attempts: u32,
    pub retry_backoff_ms: u64,
    pub heartbeat_interval_ms: u64,
    pub heartbeat_timeout_ms: u64,
    pub disconnect_grace_ms: u64,
    pub max_queue_wait_ms: u64,
    pub stall_timeout_ms: u64,
    /// Finished tasks whose full event log stays replayable; older ones keep only their
    /// terminal event (in SQLite).
    pub finished_tasks_in_memory: usize,
    pub history_retention_days: u32,
    pub workers: Vec<StaticWorker>,
    /// Keep accepted, unfinished tasks' requests in SQLite (see `durable`).
    pub persist_requests: bool,
    pub pools: Vec<PoolConfig>,
    pub models: Vec<Deployment>,
    pub fleet: FleetSettings,
    pub limits: Limits,
    pub policy: PolicyConfig,
}

/// A configuration that cannot be used; the message says what to change.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("invalid configuration: {0}")]
    Invalid(String),
    #[error(
        "refusing to bind {0}: it is not a loopback address and no API token is set; \
         set LLORCH_API_TOKEN (or api_tokens in the config file), or bind 127.0.0.1"
    )]
    PublicBindWithoutToken(SocketAddr),
}

impl Default for Config {
    fn default() -> Self {
        Self {
            bind: "127.0.0.1:8080".parse().expect("valid address"),
            db: default_db_path(),
            api_tokens: Vec::new(),
            queue_capacity: 100,
            queue_policy: QueuePolicy::Reject,
            placement: Placement::LeastLoaded,
            batch_starvation_bound: 4,
            max_attempts: 3,
            retry_backoff_ms: 50,
            heartbeat_interval_ms: 5000,
            heartbeat_timeout_ms: 15000,
            disconnect_grace_ms: 2000,
            max_queue_wait_ms: 300_000,
            stall_timeout_ms: 60_000,
            finished_tasks_in_memory: 1000,
            history_retention_days: 7,
            workers: Vec::new(),
            persist_requests: true,
            pools: Vec::new(),
            models: Vec::new(),
            fleet: FleetSettings::default(),
            limits: Limits::default(),
            policy: PolicyConfig::default(),
        }
    }
}

/// `$XDG_STATE_HOME/llorch/orchestratord.sqlite` (or under `~/.local/state`).
fn default_db_path() -> PathBuf {
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".local")
                .join("state")
        });
    base.join("llorch").join("orchestratord.sqlite")
}

/// Read and parse a TOML config file.
pub fn load_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        source: Box::new(e),
    })
}

impl Config {
    /// Merge flags/env over the file (if any) over defaults, then validate.
    pub fn from_args(args: Args) -> Result<Config, ConfigError> {
        let file = match &args.config {
            Some(path) => load_file(path)?,
            None => FileConfig::default(),
        };
        Self::merge(args, file)
    }

    /// Merge already-parsed sources (flags/env win), then validate.
    pub fn merge(args: Args, file: FileConfig) -> Result<Config, ConfigError> {
        let d = Config::default();
        let tokens = match args.api_token {
            Some(t) => t
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            None => file.api_tokens.unwrap_or_default(),
        };
        let workers = match args.workers {
            Some(urls) => urls
                .into_iter()
                .filter(|u| !u.trim().is_empty())
                .map(|url| StaticWorker {
                    url,
                    api_token: None,
                    pool: None,
                })
                .collect(),
            None => file.workers.unwrap_or_default(),
        };
        let interval = args
            .heartbeat_interval_ms
            .or(file.heartbeat_interval_ms)
            .unwrap_or(d.heartbeat_interval_ms);
        let cfg = Config {
            bind: args.bind.or(file.bind).unwrap_or(d.bind),
            db: args.db.or(file.db).unwrap_or(d.db),
            api_tokens: tokens,
            queue_capacity: args
                .queue_capacity
                .or(file.queue_capacity)
                .unwrap_or(d.queue_capacity),
            queue_policy: args
                .queue_policy
                .or(file.queue_policy)
                .unwrap_or(d.queue_policy),
            placement: args.placement.or(file.placement).unwrap_or(d.placement),
            batch_starvation_bound: args
                .batch_starvation_bound
                .or(file.batch_starvation_bound)
                .unwrap_or(d.batch_starvation_bound),
            max_attempts: args
                .max_attempts
                .or(file.max_attempts)
                .unwrap_or(d.max_attempts),
            retry_backoff_ms: args
                .retry_backoff_ms
                .or(file.retry_backoff_ms)
                .unwrap_or(d.retry_backoff_ms),
            heartbeat_interval_ms: interval,
            heartbeat_timeout_ms: args
                .heartbeat_timeout_ms
                .or(file.heartbeat_timeout_ms)
                .unwrap_or(interval * 3),
            disconnect_grace_ms: args
                .disconnect_grace_ms
                .or(file.disconnect_grace_ms)
                .unwrap_or(d.disconnect_grace_ms),
            max_queue_wait_ms: args
                .max_queue_wait_ms
                .or(file.max_queue_wait_ms)
                .unwrap_or(d.max_queue_wait_ms),
            stall_timeout_ms: args
                .stall_timeout_ms
                .or(file.stall_timeout_ms)
                .unwrap_or(d.stall_timeout_ms),
            finished_tasks_in_memory: file
                .finished_tasks_in_memory
                .unwrap_or(d.finished_tasks_in_memory),
            history_retention_days: file
                .history_retention_days
                .unwrap_or(d.history_retention_days),
            workers,
            persist_requests: args
                .persist_requests
                .or(file.persist_requests)
                .unwrap_or(d.persist_requests),
            pools: file.pools.unwrap_or_default(),
            models: file.models.unwrap_or_default(),
            fleet: file.fleet.unwrap_or_default(),
            limits: Limits::merge(&args.limits, file.limits),
            policy: {
                let mut p = file.policy.unwrap_or_default();
                p.script = args.policy.or(p.script);
                p
            },
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Check ranges and the public-bind rule.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: &str| Err(ConfigError::Invalid(m.to_string()));
        if !(1..=10_000).contains(&self.queue_capacity) {
            return bad("queue_capacity must be between 1 and 10000");
        }
        if self.batch_starvation_bound == 0 {
            return bad("batch_starvation_bound must be at least 1");
        }
        if !(1..=10).contains(&self.max_attempts) {
            return bad("max_attempts must be between 1 and 10");
        }
        if self.heartbeat_interval_ms < 100 {
            return bad("heartbeat_interval_ms must be at least 100");
        }
        if self.heartbeat_timeout_ms <= self.heartbeat_interval_ms {
            return bad("heartbeat_timeout_ms must be greater than heartbeat_interval_ms");
        }
        if self.stall_timeout_ms < 100 || self.max_queue_wait_ms < 100 {
            return bad("stall_timeout_ms and max_queue_wait_ms must be at least 100");
        }
        for w in &self.workers {
            if !(w.url.starts_with("http://") || w.url.starts_with("https://")) {
                return Err(ConfigError::Invalid(format!(
                    "worker url {:?} must start with http:// or https://",
                    w.url
                )));
            }
        }
        if !(1..=100_000_000).contains(&self.policy.max_operations)
            || !(1..=10_000).contains(&self.policy.timeout_ms)
        {
            return bad(
                "policy.max_operations must be between 1 and 100000000 and policy.timeout_ms \
                 between 1 and 10000",
            );
        }
        crate::fleet::config::validate(&self.pools, &self.models, &self.fleet)
            .map_err(ConfigError::Invalid)?;
        self.limits.validate().map_err(ConfigError::Invalid)?;
        if !self.bind.ip().is_loopback() && self.api_tokens.is_empty() {
            return Err(ConfigError::PublicBindWithoutToken(self.bind));
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
