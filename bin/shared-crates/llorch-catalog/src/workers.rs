//! Worker records: one JSON file per spawned worker under `workers/`.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::CatalogError;
use crate::store::write_file_atomic_mode;

/// What `llorch-pool worker spawn` remembers about a worker it started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerRecord {
    /// Worker id (also passed to the worker as `--worker-id`).
    pub id: String,
    /// Catalog model id.
    pub model: String,
    /// What the worker got as `--model`.
    pub model_path: PathBuf,
    /// `cpu`, `cuda` or `metal`.
    pub backend: String,
    /// Device index for GPU backends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<u32>,
    /// Address the worker binds.
    pub host: String,
    pub port: u16,
    /// Base URL clients use, e.g. `http://127.0.0.1:8001`.
    pub url: String,
    /// Pid of the `llorch-candled` process itself.
    pub pid: u32,
    /// Process start time as the OS reports it (Linux: clock ticks since boot), used to tell the
    /// worker apart from a later process that reuses its pid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_start: Option<u64>,
    /// Unix seconds when the worker was started.
    pub started_at: u64,
    /// The worker's log file (stdout and stderr).
    pub log: PathBuf,
    /// Worker binary that was started.
    pub worker_bin: PathBuf,
    /// The worker's API token (`LLORCH_WORKER_TOKEN`); the record file is mode 0600.
    /// Never part of `worker list` output (see `llorch-pool worker token`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_token: Option<String>,
}

/// Reads and writes `workers/<id>.json`.
#[derive(Debug, Clone)]
pub struct WorkerStore {
    dir: PathBuf,
}

impl WorkerStore {
    /// A store over `dir` (created on first write).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        WorkerStore { dir: dir.into() }
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    /// Write (or replace) a record atomically.
    pub fn put(&self, rec: &WorkerRecord) -> Result<(), CatalogError> {
        let mut text = serde_json::to_string_pretty(rec).expect("record serialises");
        text.push('\n');
        // mode 0600: the record holds the worker's API token
        write_file_atomic_mode(&self.path(&rec.id), text.as_bytes(), 0o600)
    }

    /// The record of `id`, if any.
    pub fn get(&self, id: &str) -> Result<Option<WorkerRecord>, CatalogError> {
        let path = self.path(id);
        match fs::read_to_string(&path) {
            Ok(text) => parse(&path, &text).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(CatalogError::io("read", path, e)),
        }
    }

    /// Delete the record of `id`; returns whether it existed.
    pub fn remove(&self, id: &str) -> Result<bool, CatalogError> {
        let path = self.path(id);
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(CatalogError::io("remove", path, e)),
        }
    }

    /// Every record, sorted by id, plus the errors of files that could not be read.
    pub fn list(&self) -> (Vec<WorkerRecord>, Vec<CatalogError>) {
        let mut records = Vec::new();
        let mut errors = Vec::new();
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (records, errors),
            Err(e) => {
                return (
                    records,
                    vec![CatalogError::io("read directory", &self.dir, e)],
                )
            }
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            match fs::read_to_string(&path) {
                Ok(text) => match parse(&path, &text) {
                    Ok(r) => records.push(r),
                    Err(e) => errors.push(e),
                },
                Err(e) => errors.push(CatalogError::io("read", &path, e)),
            }
        }
        records.sort_by(|a, b| a.id.cmp(&b.id));
        (records, errors)
    }
}

fn parse(path: &Path, text: &str) -> Result<WorkerRecord, CatalogError> {
    serde_json::from_str(text).map_err(|e| CatalogError::Unreadable {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_get_list_remove() {
        let dir = tempfile::tempdir().unwrap();
        let store = WorkerStore::new(dir.path().join("workers"));
        assert!(store.list().0.is_empty());
        let rec = WorkerRecord {
            id: "w1".into(),
            model: "m".into(),
            model_path: "/m.gguf".into(),
            backend: "cpu".into(),
            gpu: None,
            host: "127.0.0.1".into(),
            port: 8001,
            url: "http://127.0.0.1:8001".into(),
            pid: 42,
            pid_start: Some(7),
            started_at: 1,
            log: "/l".into(),
            worker_bin: "/bin/llorch-candled".into(),
            api_token: Some("secret-token-0123456789".into()),
        };
        store.put(&rec).unwrap();
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.path().join("workers/w1.json"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "the record holds a token");
        }
        fs::write(dir.path().join("workers/bad.json"), "{").unwrap();
        assert_eq!(store.get("w1").unwrap(), Some(rec.clone()));
        let (records, errors) = store.list();
        assert_eq!(records, vec![rec]);
        assert_eq!(errors.len(), 1);
        assert!(store.remove("w1").unwrap());
        assert!(!store.remove("w1").unwrap());
    }
}
