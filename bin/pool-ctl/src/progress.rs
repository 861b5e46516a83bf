//! Download progress visible to other processes: `$LLORCH_HOME/downloads/<id>.json`
//! ([`DownloadProgress`]) is rewritten atomically while `models download` runs and removed when
//! it ends; `models progress ID` prints it (orchestratord polls it over the pool transport).

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use llorch_catalog::DownloadProgress;

use crate::error::{PoolError, Result};
use crate::Ctx;

/// Least time between two rewrites of the file while bytes arrive.
const MIN_INTERVAL: Duration = Duration::from_millis(250);

/// Writer of one model's progress file; removes the file when dropped.
#[derive(Debug)]
pub struct ProgressFile {
    path: PathBuf,
    model: String,
    total: u64,
    /// Bytes of the files already finished.
    base: Cell<u64>,
    last: Cell<Option<Instant>>,
}

impl ProgressFile {
    /// Start reporting a download of `model` (`total` bytes over all its files).
    pub fn create(path: PathBuf, model: &str, total: u64) -> ProgressFile {
        let p = ProgressFile {
            path,
            model: model.to_string(),
            total,
            base: Cell::new(0),
            last: Cell::new(None),
        };
        p.write(0, true);
        p
    }

    /// `file_done` bytes of the current file are present.
    pub fn update(&self, file_done: u64) {
        self.write(self.base.get() + file_done, false);
    }

    /// The current file (of `size` bytes) is complete.
    pub fn file_finished(&self, size: u64) {
        self.base.set(self.base.get() + size);
        self.write(self.base.get(), true);
    }

    fn write(&self, done: u64, force: bool) {
        let now = Instant::now();
        if !force && self.last.get().is_some_and(|t| now - t < MIN_INTERVAL) {
            return;
        }
        self.last.set(Some(now));
        let view = DownloadProgress {
            model: self.model.clone(),
            bytes_done: done.min(self.total),
            bytes_total: self.total,
            updated: unix_ms(),
            pid: std::process::id(),
        };
        // Best effort: progress reporting never fails a download.
        if let Err(e) = write_atomic(&self.path, &view) {
            tracing::debug!("progress file {}: {e}", self.path.display());
        }
    }
}

impl Drop for ProgressFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn write_atomic(path: &Path, view: &DownloadProgress) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("json.{}.tmp", std::process::id()));
    std::fs::write(&tmp, serde_json::to_vec(view).expect("serialisable"))?;
    std::fs::rename(&tmp, path)
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `models progress ID`: print the progress file of a download in flight.
pub fn show(ctx: &Ctx, id: &str) -> Result<()> {
    let path = ctx.home.download_progress(id);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(PoolError::NoDownload(id.into()))
        }
        Err(e) => return Err(PoolError::io("read", &path, e)),
    };
    let view: DownloadProgress =
        serde_json::from_slice(&bytes).map_err(|_| PoolError::NoDownload(id.into()))?;
    // A file left by a downloader that was killed is no download in flight.
    if !crate::procs::is_alive(view.pid, None) {
        return Err(PoolError::NoDownload(id.into()));
    }
    let pct = if view.bytes_total > 0 {
        view.bytes_done as f64 * 100.0 / view.bytes_total as f64
    } else {
        0.0
    };
    ctx.done(
        &view,
        &format!(
            "{id}: {} of {} bytes ({pct:.1}%)",
            view.bytes_done, view.bytes_total
        ),
    );
    Ok(())
}
