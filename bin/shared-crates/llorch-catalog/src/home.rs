//! The pool home directory: catalog, worker records and worker logs.

use std::path::{Path, PathBuf};

/// Layout of a pool home (default `$XDG_DATA_HOME/llorch`, i.e. `~/.local/share/llorch`).
///
/// ```text
/// catalog.json        versioned model catalog (atomic replace)
/// catalog.lock        lock file serialising catalog writers
/// workers/<id>.json   one record per spawned worker
/// logs/<id>.log       stdout+stderr of each worker
/// downloads/<id>.json progress of a model download in flight (removed when it ends)
/// ```
#[derive(Debug, Clone)]
pub struct PoolHome {
    root: PathBuf,
}

impl PoolHome {
    /// Use `explicit` (from `--home`/`LLORCH_HOME`) or the XDG default.
    pub fn resolve(explicit: Option<PathBuf>) -> PoolHome {
        let root = explicit.unwrap_or_else(default_home);
        PoolHome { root }
    }

    /// The home directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `catalog.json`.
    pub fn catalog_path(&self) -> PathBuf {
        self.root.join("catalog.json")
    }

    /// `catalog.lock`.
    pub fn catalog_lock_path(&self) -> PathBuf {
        self.root.join("catalog.lock")
    }

    /// `workers/`.
    pub fn workers_dir(&self) -> PathBuf {
        self.root.join("workers")
    }

    /// `logs/`.
    pub fn logs_dir(&self) -> PathBuf {
        self.root.join("logs")
    }

    /// `downloads/<id>.json`: progress of a download of model `id` in flight.
    pub fn download_progress(&self, id: &str) -> PathBuf {
        self.root.join("downloads").join(format!("{id}.json"))
    }

    /// `logs/<id>.log`.
    pub fn worker_log(&self, id: &str) -> PathBuf {
        self.logs_dir().join(format!("{id}.log"))
    }
}

/// `$XDG_DATA_HOME/llorch`, falling back to `$HOME/.local/share/llorch`.
fn default_home() -> PathBuf {
    if let Some(d) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        let d = PathBuf::from(d);
        if d.is_absolute() {
            return d.join("llorch");
        }
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".local").join("share").join("llorch")
}
