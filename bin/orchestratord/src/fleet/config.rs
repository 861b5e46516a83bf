//! Fleet configuration: `[[pools]]` (hosts running `llorch-pool`), `[[models]]` (deployments)
//! and `[fleet]` (reconciler timing). See `.specs/fleet.md`.

use std::collections::BTreeSet;

use serde::Deserialize;

/// One `[[pools]]` entry: a host whose `llorch-pool` orchestratord drives.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    /// Pool name: 1-32 of a-z, 0-9, `-`, `_` (part of worker ids).
    pub name: String,
    /// ssh destination as for `ssh` (`host`, `user@host`, an alias); absent = this host, no ssh.
    pub ssh: Option<String>,
    /// ssh port (`-p`).
    pub ssh_port: Option<u16>,
    /// ssh login (`-l`).
    pub ssh_user: Option<String>,
    /// Private key (`-i`, with `IdentitiesOnly=yes`).
    pub ssh_identity: Option<String>,
    /// ssh client config file (`-F`).
    pub ssh_config: Option<String>,
    /// Extra ssh `-o Name=value` options.
    #[serde(default)]
    pub ssh_options: Vec<String>,
    /// Path of `llorch-pool` on that host (default `llorch-pool` on its PATH).
    #[serde(default = "default_pool_bin")]
    pub llorch_pool: String,
    /// `LLORCH_HOME` there (default: llorch-pool's own default).
    pub home: Option<String>,
    /// Most memory the fleet may plan onto this pool (sum of the workers' estimates).
    pub max_memory_bytes: Option<u64>,
    /// Address the pool's workers bind (default 127.0.0.1 for this host, 0.0.0.0 over ssh).
    pub worker_bind: Option<String>,
}

fn default_pool_bin() -> String {
    "llorch-pool".into()
}

impl PoolConfig {
    /// Whether the pool is this host (no ssh).
    pub fn is_local(&self) -> bool {
        self.ssh.is_none()
    }

    /// The ssh destination with its options (`None` for a local pool).
    pub fn destination(&self) -> Option<llorch_ssh::Destination> {
        let target = self.ssh.as_ref()?;
        Some(llorch_ssh::Destination {
            target: target.clone(),
            user: self.ssh_user.clone(),
            port: self.ssh_port,
            identity: self.ssh_identity.clone(),
            ssh_config: self.ssh_config.clone(),
            ssh_options: self.ssh_options.clone(),
        })
    }
}

/// Compute backend requested by a deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendChoice {
    /// CUDA when the pool has an NVIDIA GPU, Metal on macOS, else CPU.
    #[default]
    Auto,
    Cpu,
    Cuda,
    Metal,
}

/// One `[[models]]` entry: a model the fleet keeps available.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deployment {
    /// Catalog id on the pools (also the model name tasks use).
    pub id: String,
    /// Workers kept running at all times; 0 = started on demand.
    #[serde(default)]
    pub min_replicas: u32,
    /// Most workers of this model.
    #[serde(default = "one")]
    pub max_replicas: u32,
    #[serde(default)]
    pub backend: BackendChoice,
    /// Pools allowed (default: every pool).
    pub pools: Option<Vec<String>>,
    /// The worker's `--parallel` (default 4).
    pub parallel: Option<u32>,
    /// The worker's `--ctx-size` (default: the model's, at most 8192).
    pub ctx_size: Option<u64>,
    /// The worker's `--prompt-cache-mb` (default 512).
    pub prompt_cache_mb: Option<u64>,
    /// Stop a worker idle this long (min_replicas are kept); absent = never.
    pub idle_ttl_s: Option<u64>,
}

fn one() -> u32 {
    1
}

/// `[fleet]`: reconciler timing and limits.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FleetSettings {
    /// How often every pool is probed (`llorch-pool status --json`).
    pub probe_interval_ms: u64,
    /// First restart delay after a worker died or failed to start; doubled per failure.
    pub restart_backoff_ms: u64,
    /// Cap of the restart delay.
    pub restart_backoff_max_ms: u64,
    /// Failures within `failure_window_s` after which a deployment is `failed`.
    pub max_failures: u32,
    pub failure_window_s: u64,
    /// URL workers register with (default `http://<bind>`).
    pub orchestrator_url: Option<String>,
    /// ssh connect timeout in seconds.
    pub connect_timeout_s: u64,
    /// Idle time after which an ssh master connection closes.
    pub control_persist_s: u64,
}

impl Default for FleetSettings {
    fn default() -> Self {
        Self {
            probe_interval_ms: 2000,
            restart_backoff_ms: 1000,
            restart_backoff_max_ms: 30_000,
            max_failures: 5,
            failure_window_s: 300,
            orchestrator_url: None,
            connect_timeout_s: 5,
            control_persist_s: 300,
        }
    }
}

fn valid_pool_name(n: &str) -> bool {
    (1..=32).contains(&n.len())
        && n.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

fn valid_model_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'_' || b == b'-'
        })
}

/// Check pools and deployments; the message names the entry and the field.
pub fn validate(
    pools: &[PoolConfig],
    models: &[Deployment],
    s: &FleetSettings,
) -> Result<(), String> {
    let mut names = BTreeSet::new();
    for p in pools {
        if !valid_pool_name(&p.name) {
            return Err(format!(
                "pools.name {:?}: use 1-32 of a-z, 0-9, '-', '_'",
                p.name
            ));
        }
        if !names.insert(p.name.as_str()) {
            return Err(format!("pools.name {:?} is used twice", p.name));
        }
        if let Some(d) = p.destination() {
            d.validate()
                .map_err(|e| format!("pools {:?}: {e}", p.name))?;
        }
        if p.llorch_pool.is_empty() {
            return Err(format!("pools {:?}: llorch_pool must not be empty", p.name));
        }
        if p.max_memory_bytes == Some(0) {
            return Err(format!(
                "pools {:?}: max_memory_bytes must be positive",
                p.name
            ));
        }
    }
    let mut ids = BTreeSet::new();
    for m in models {
        if !valid_model_id(&m.id) {
            return Err(format!(
                "models.id {:?}: a catalog id (a-z, 0-9, '.', '_', '-')",
                m.id
            ));
        }
        if !ids.insert(m.id.as_str()) {
            return Err(format!("models.id {:?} is deployed twice", m.id));
        }
        if m.max_replicas == 0 || m.min_replicas > m.max_replicas {
            return Err(format!(
                "models {:?}: need 1 <= max_replicas and min_replicas <= max_replicas (got {}..{})",
                m.id, m.min_replicas, m.max_replicas
            ));
        }
        if let Some(list) = &m.pools {
            if let Some(bad) = list.iter().find(|p| !names.contains(p.as_str())) {
                return Err(format!(
                    "models {:?}: pools names unknown pool {bad:?}",
                    m.id
                ));
            }
        }
        if m.parallel.is_some_and(|p| !(1..=64).contains(&p)) {
            return Err(format!("models {:?}: parallel must be 1..=64", m.id));
        }
    }
    if !models.is_empty() && pools.is_empty() {
        return Err("[[models]] are deployed but no [[pools]] are configured".into());
    }
    if s.probe_interval_ms < 100 || s.restart_backoff_ms == 0 || s.max_failures == 0 {
        return Err(
            "fleet: probe_interval_ms >= 100, restart_backoff_ms >= 1, max_failures >= 1".into(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct F {
        pools: Vec<PoolConfig>,
        models: Vec<Deployment>,
    }

    #[test]
    fn parse_and_validate() {
        let f: F = toml::from_str(
            r#"
[[pools]]
name = "local"
max_memory_bytes = 1000
[[pools]]
name = "mac"
ssh = "vince@mac"
ssh_port = 2222
home = "/tmp/a b"
[[models]]
id = "smollm2-135m"
pools = ["mac"]
idle_ttl_s = 60
"#,
        )
        .unwrap();
        assert!(f.pools[0].is_local() && !f.pools[1].is_local());
        assert_eq!(f.models[0].max_replicas, 1);
        assert_eq!(f.models[0].backend, BackendChoice::Auto);
        let s = FleetSettings::default();
        validate(&f.pools, &f.models, &s).unwrap();
        let mut bad = f.models.clone();
        bad[0].pools = Some(vec!["nope".into()]);
        assert!(validate(&f.pools, &bad, &s).unwrap_err().contains("nope"));
        let mut bad = f.pools.clone();
        bad[1].name = "Mac".into();
        assert!(validate(&bad, &f.models, &s).is_err());
        bad[1].name = "local".into();
        assert!(validate(&bad, &f.models, &s).unwrap_err().contains("twice"));
        assert!(toml::from_str::<PoolConfig>("name = \"a\"\nsshh = \"x\"").is_err());
    }
}
