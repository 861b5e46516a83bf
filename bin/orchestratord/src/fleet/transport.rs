//! How orchestratord runs `llorch-pool --json ...` on a pool: directly for this host, over the
//! system ssh (shared `llorch-ssh` crate, one persistent connection per pool) for others.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use llorch_ssh::{RemoteCommand, SshHost};
use serde::de::DeserializeOwned;

use super::config::PoolConfig;

/// Why a pool command gave no usable answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PoolCallError {
    /// ssh could not reach or log into the host (or timed out).
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// `llorch-pool` ran and failed; `kind` is its stable error kind.
    #[error("llorch-pool failed ({kind}): {message}")]
    Failed { kind: String, message: String },
    /// `llorch-pool` could not be started, or printed something that is not the expected JSON.
    #[error("{0}")]
    Broken(String),
}

impl PoolCallError {
    /// Whether the pool itself is unreachable (as opposed to a command failing there).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, PoolCallError::Unreachable(_))
    }
}

/// The way to one pool.
#[derive(Debug)]
pub struct PoolTransport {
    pub name: String,
    bin: String,
    env: BTreeMap<String, String>,
    ssh: Option<SshHost>,
    persist: Duration,
}

impl PoolTransport {
    /// The transport of `cfg`; remote pools get a control socket under `control_dir`.
    pub fn new(
        cfg: &PoolConfig,
        control_dir: Option<&llorch_ssh::control::ControlDir>,
        connect_timeout_s: u64,
        persist: Duration,
    ) -> Self {
        let mut env = BTreeMap::new();
        if let Some(h) = &cfg.home {
            env.insert("LLORCH_HOME".to_string(), h.clone());
        }
        let ssh = cfg.destination().map(|d| {
            let mut h = SshHost::new(&cfg.name, d, connect_timeout_s);
            h.control_path = control_dir.map(|c| c.socket_for(&cfg.name));
            h
        });
        Self {
            name: cfg.name.clone(),
            bin: cfg.llorch_pool.clone(),
            env,
            ssh,
            persist,
        }
    }

    /// Whether commands go over ssh.
    pub fn is_remote(&self) -> bool {
        self.ssh.is_some()
    }

    /// Run `llorch-pool --json ARGS` and parse its stdout as `T`. Returns the wall time too.
    pub async fn call<T: DeserializeOwned>(
        &self,
        args: &[String],
        timeout: Duration,
    ) -> Result<(T, Duration), PoolCallError> {
        let mut full = vec!["--json".to_string()];
        full.extend(args.iter().cloned());
        let start = Instant::now();
        let (code, stdout, stderr) = match &self.ssh {
            Some(host) => {
                if let Err(e) = llorch_ssh::control::ensure_master(host, self.persist).await {
                    return Err(PoolCallError::Unreachable(e.to_string()));
                }
                let cmd = RemoteCommand {
                    env: self.env.clone(),
                }
                .program(&self.bin, &full);
                let out = llorch_ssh::run_captured_async(host, &cmd, timeout)
                    .await
                    .map_err(|e| match e {
                        llorch_ssh::SshError::Spawn { .. } => PoolCallError::Broken(e.to_string()),
                        _ => PoolCallError::Unreachable(e.to_string()),
                    })?;
                (out.code, out.stdout, out.stderr)
            }
            None => self.run_local(&full, timeout).await?,
        };
        let elapsed = start.elapsed();
        if code == 0 {
            return serde_json::from_str(&stdout)
                .map(|v| (v, elapsed))
                .map_err(|e| {
                    PoolCallError::Broken(format!(
                        "pool {}: unexpected output of llorch-pool {}: {e}: {}",
                        self.name,
                        args.first().map(String::as_str).unwrap_or(""),
                        stdout.chars().take(200).collect::<String>()
                    ))
                });
        }
        if code == 127 {
            return Err(PoolCallError::Broken(format!(
                "pool {}: `{}` not found there (exit 127); set llorch_pool in its [[pools]] entry",
                self.name, self.bin
            )));
        }
        let view: Option<llorch_catalog::ErrorView> = serde_json::from_str(&stdout).ok();
        Err(match view {
            Some(v) => PoolCallError::Failed {
                kind: v.error.kind,
                message: v.error.message,
            },
            None => PoolCallError::Broken(format!(
                "pool {}: llorch-pool exited {code}: {}",
                self.name,
                stderr.trim()
            )),
        })
    }

    async fn run_local(
        &self,
        args: &[String],
        timeout: Duration,
    ) -> Result<(i32, String, String), PoolCallError> {
        let mut cmd = tokio::process::Command::new(expand_home(&self.bin));
        cmd.args(args)
            .envs(&self.env)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        let out = match tokio::time::timeout(timeout, cmd.output()).await {
            Ok(Ok(o)) => o,
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(PoolCallError::Broken(format!(
                    "pool {}: `{}` not found; set llorch_pool in its [[pools]] entry",
                    self.name, self.bin
                )))
            }
            Ok(Err(e)) => {
                return Err(PoolCallError::Broken(format!(
                    "pool {}: cannot run {}: {e}",
                    self.name, self.bin
                )))
            }
            Err(_) => {
                return Err(PoolCallError::Broken(format!(
                    "pool {}: llorch-pool gave no answer within {} s",
                    self.name,
                    timeout.as_secs()
                )))
            }
        };
        Ok((
            out.status.code().unwrap_or(130),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    /// Close the persistent connection (shutdown).
    pub async fn close(&self) {
        if let Some(h) = &self.ssh {
            llorch_ssh::control::stop_master(h).await;
        }
    }
}

fn expand_home(p: &str) -> PathBuf {
    match (p.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(p),
    }
}
