//! Downloading hub files into the Hugging Face cache with resume and checksum verification.
//!
//! Implemented over the hub's URL layout with reqwest instead of the `hf-hub` crate: no hf-hub
//! version verifies the sha256 from the hub's LFS metadata, and 1.0 no longer resumes
//! (see `.specs/pool-ctl.md` §5). The cache layout is the one `huggingface_hub` uses, so Python
//! tools share the files: a partial download lives in `blobs/<etag>.incomplete` and is resumed
//! with an HTTP `Range` request, also by a later run.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use fs2::FileExt;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use reqwest::header::{CONTENT_RANGE, RANGE};
use sha1::Sha1;
use sha2::{Digest, Sha256};

use crate::error::{PoolError, Result};
use crate::hub::{blob_link_target, FileMeta, Hub};
use crate::progress::ProgressFile;

const BUF_SIZE: usize = 256 * 1024;

/// How a download behaves.
#[derive(Debug, Clone)]
pub struct DownloadOptions {
    /// Extra attempts after a dropped connection (each resumes where the last stopped).
    pub retries: u32,
    /// Wait before the first retry (doubled each time).
    pub retry_delay: Duration,
    /// Draw a progress bar on stderr (only when it is a terminal).
    pub progress: bool,
    /// Progress file other processes read (`models progress`).
    pub progress_file: Option<std::rc::Rc<ProgressFile>>,
}

/// A file present in the cache after [`fetch_file`].
#[derive(Debug, Clone)]
pub struct Fetched {
    pub name: String,
    /// `snapshots/<commit>/<name>` (a symlink into `blobs/`).
    pub path: PathBuf,
    pub size: u64,
    pub sha256: String,
    pub commit: String,
}

/// Running hashes of the bytes of one file.
struct Hashes {
    sha256: Sha256,
    /// git blob sha1 (`blob <size>\0` + content), for regular (non-LFS) files.
    git_sha1: Option<Sha1>,
}

impl Hashes {
    fn new(meta: &FileMeta) -> Hashes {
        let git_sha1 = (meta.checksum_kind() == Some("git-sha1")).then(|| {
            let mut h = Sha1::new();
            h.update(format!("blob {}\0", meta.size).as_bytes());
            h
        });
        Hashes {
            sha256: Sha256::new(),
            git_sha1,
        }
    }

    fn update(&mut self, bytes: &[u8]) {
        self.sha256.update(bytes);
        if let Some(h) = &mut self.git_sha1 {
            h.update(bytes);
        }
    }
}

/// Download `file` of `repo` at `revision` into the cache (or reuse a verified cached copy).
/// `pinned_sha256` is the catalog's sha256 for the file, when it has one.
pub fn fetch_file(
    hub: &Hub,
    repo: &str,
    revision: &str,
    file: &str,
    pinned_sha256: Option<&str>,
    opts: &DownloadOptions,
) -> Result<Fetched> {
    let meta = hub.file_meta(repo, revision, file)?;
    if let (Some(pin), Some("sha256")) = (pinned_sha256, meta.checksum_kind()) {
        if !pin.eq_ignore_ascii_case(&meta.etag) {
            return Err(PoolError::ChecksumMismatch {
                file: file.into(),
                algo: "sha256 (catalog pin vs hub metadata)",
                expected: pin.to_lowercase(),
                actual: meta.etag.clone(),
            });
        }
    }
    let repo_dir = hub.config.repo_dir(repo);
    let blob = repo_dir.join("blobs").join(&meta.etag);
    let lock_path = hub.config.lock_path(repo, &meta.etag);
    create_dir(lock_path.parent().expect("lock has a parent"))?;
    create_dir(blob.parent().expect("blob has a parent"))?;
    let lock = File::create(&lock_path).map_err(|e| PoolError::io("create", &lock_path, e))?;
    lock.lock_exclusive()
        .map_err(|e| PoolError::io("lock", &lock_path, e))?;

    let mut sha256 = None;
    if blob.is_file() {
        tracing::info!(file, "verifying cached blob {}", blob.display());
        match verify_cached(&blob, &meta, pinned_sha256) {
            Ok(h) => sha256 = Some(h),
            Err(e) => {
                tracing::warn!("cached {file} is corrupt ({e}); downloading it again");
                fs::remove_file(&blob).map_err(|e| PoolError::io("remove", &blob, e))?;
            }
        }
    }
    let sha256 = match sha256 {
        Some(h) => h,
        None => download_blob(hub, &meta, file, &blob, pinned_sha256, opts)?,
    };
    if let Some(p) = &opts.progress_file {
        p.file_finished(meta.size);
    }
    let path = link_snapshot(&repo_dir, &meta, file, revision)?;
    drop(lock);
    Ok(Fetched {
        name: file.into(),
        path,
        size: meta.size,
        sha256,
        commit: meta.commit,
    })
}

fn create_dir(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).map_err(|e| PoolError::io("create directory", dir, e))
}

/// Hash a cached blob and check it against the hub metadata and the pin.
fn verify_cached(blob: &Path, meta: &FileMeta, pinned: Option<&str>) -> Result<String> {
    let mut hashes = Hashes::new(meta);
    let mut f = File::open(blob).map_err(|e| PoolError::io("open", blob, e))?;
    let mut buf = vec![0u8; BUF_SIZE];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| PoolError::io("read", blob, e))?;
        if n == 0 {
            break;
        }
        hashes.update(&buf[..n]);
    }
    check(hashes, meta, &blob.display().to_string(), pinned)
}

/// Compare the finished hashes with the etag and the pin; returns the sha256 hex.
fn check(hashes: Hashes, meta: &FileMeta, file: &str, pinned: Option<&str>) -> Result<String> {
    let sha256 = hex(&hashes.sha256.finalize());
    let mismatch = |algo: &'static str, expected: &str, actual: &str| PoolError::ChecksumMismatch {
        file: file.to_string(),
        algo,
        expected: expected.to_lowercase(),
        actual: actual.to_string(),
    };
    match (meta.checksum_kind(), hashes.git_sha1) {
        (Some("sha256"), _) if !meta.etag.eq_ignore_ascii_case(&sha256) => {
            return Err(mismatch("sha256", &meta.etag, &sha256))
        }
        (Some("git-sha1"), Some(h)) => {
            let actual = hex(&h.finalize());
            if !meta.etag.eq_ignore_ascii_case(&actual) {
                return Err(mismatch("git-sha1", &meta.etag, &actual));
            }
        }
        _ => {}
    }
    if let Some(pin) = pinned {
        if !pin.eq_ignore_ascii_case(&sha256) {
            return Err(mismatch("sha256", pin, &sha256));
        }
    }
    Ok(sha256)
}

/// Lowercase hex of a digest.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Why one transfer attempt stopped.
enum Attempt {
    Done,
    /// Dropped connection or server hiccup: resume with another attempt.
    Retry(String),
}

fn download_blob(
    hub: &Hub,
    meta: &FileMeta,
    file: &str,
    blob: &Path,
    pinned: Option<&str>,
    opts: &DownloadOptions,
) -> Result<String> {
    let part = PathBuf::from(format!("{}.incomplete", blob.display()));
    let mut out = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&part)
        .map_err(|e| PoolError::io("open", &part, e))?;
    let mut have = out
        .metadata()
        .map_err(|e| PoolError::io("stat", &part, e))?
        .len();
    if have > meta.size {
        have = 0;
        out.set_len(0)
            .map_err(|e| PoolError::io("truncate", &part, e))?;
    }
    // Hash what an earlier run already wrote, so the final hash covers the whole file.
    let mut hashes = Hashes::new(meta);
    hash_prefix(&mut out, have, &mut hashes).map_err(|e| PoolError::io("read", &part, e))?;
    if have > 0 {
        tracing::info!(file, "resuming at byte {have} of {}", meta.size);
    }
    let bar = progress_bar(opts.progress, file, meta.size, have);
    let mut attempts = 0;
    loop {
        attempts += 1;
        let sink = Sink {
            bar: &bar,
            file: opts.progress_file.as_deref(),
        };
        match transfer(hub, meta, &part, &mut out, &mut have, &mut hashes, &sink)? {
            Attempt::Done => break,
            Attempt::Retry(reason) if attempts > opts.retries => {
                bar.abandon();
                return Err(PoolError::DownloadFailed {
                    file: file.into(),
                    attempts,
                    reason,
                });
            }
            Attempt::Retry(reason) => {
                let wait = opts.retry_delay * 2u32.saturating_pow(attempts - 1);
                tracing::warn!(file, "{reason}; resuming at byte {have} in {wait:?}");
                std::thread::sleep(wait);
            }
        }
    }
    bar.finish();
    out.sync_all()
        .map_err(|e| PoolError::io("sync", &part, e))?;
    drop(out);
    let sha256 = check(hashes, meta, file, pinned).inspect_err(|_| {
        let _ = fs::remove_file(&part);
    })?;
    fs::rename(&part, blob).map_err(|e| PoolError::io("rename", &part, e))?;
    Ok(sha256)
}

fn hash_prefix(f: &mut File, len: u64, hashes: &mut Hashes) -> std::io::Result<()> {
    f.seek(SeekFrom::Start(0))?;
    let mut left = len;
    let mut buf = vec![0u8; BUF_SIZE];
    while left > 0 {
        let want = left.min(BUF_SIZE as u64) as usize;
        f.read_exact(&mut buf[..want])?;
        hashes.update(&buf[..want]);
        left -= want as u64;
    }
    f.seek(SeekFrom::Start(len))?;
    Ok(())
}

fn progress_bar(enabled: bool, file: &str, size: u64, have: u64) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(size), ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template(
        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    )
    .expect("valid template")
    .progress_chars("=> ");
    bar.set_style(style);
    bar.set_message(file.to_string());
    bar.set_position(have);
    bar
}

/// Where the position of a transfer is shown: the terminal bar and the progress file.
struct Sink<'a> {
    bar: &'a ProgressBar,
    file: Option<&'a ProgressFile>,
}

impl Sink<'_> {
    fn set_position(&self, have: u64) {
        self.bar.set_position(have);
        if let Some(f) = self.file {
            f.update(have);
        }
    }
}

/// One GET of the missing bytes; appends to `out` and updates `have` and `hashes`.
fn transfer(
    hub: &Hub,
    meta: &FileMeta,
    part: &Path,
    out: &mut File,
    have: &mut u64,
    hashes: &mut Hashes,
    bar: &Sink,
) -> Result<Attempt> {
    if *have == meta.size {
        return Ok(Attempt::Done);
    }
    let mut req = hub.get(&meta.url);
    if *have > 0 {
        req = req.header(RANGE, format!("bytes={have}-"));
    }
    let mut resp = match req.send() {
        Ok(r) => r,
        Err(e) => return Ok(Attempt::Retry(format!("request failed: {e}"))),
    };
    let status = resp.status().as_u16();
    let restart = match status {
        206 => content_range_start(&resp) != Some(*have),
        200 => *have > 0,
        500..=599 | 429 => return Ok(Attempt::Retry(format!("HTTP {status}"))),
        _ => {
            return Err(PoolError::HttpStatus {
                url: meta.url.clone(),
                status,
            })
        }
    };
    if restart {
        // The server ignored or mangled the range: start the file over.
        tracing::warn!("server did not honour the range request; restarting from byte 0");
        if status == 206 {
            return start_over(out, part, have, hashes, meta, bar)
                .map(|_| Attempt::Retry("range mismatch".into()));
        }
        start_over(out, part, have, hashes, meta, bar)?;
    }
    let mut buf = vec![0u8; BUF_SIZE];
    loop {
        let n = match resp.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                return Ok(Attempt::Retry(format!(
                    "connection lost after {have} of {} bytes: {e}",
                    meta.size
                )))
            }
        };
        if *have + n as u64 > meta.size {
            start_over(out, part, have, hashes, meta, bar)?;
            return Err(PoolError::BadHubResponse {
                url: meta.url.clone(),
                reason: format!("more than the announced {} bytes", meta.size),
            });
        }
        out.write_all(&buf[..n])
            .map_err(|e| PoolError::io("write", part, e))?;
        hashes.update(&buf[..n]);
        *have += n as u64;
        bar.set_position(*have);
    }
    if *have < meta.size {
        return Ok(Attempt::Retry(format!(
            "connection closed after {have} of {} bytes",
            meta.size
        )));
    }
    Ok(Attempt::Done)
}

fn start_over(
    out: &mut File,
    part: &Path,
    have: &mut u64,
    hashes: &mut Hashes,
    meta: &FileMeta,
    bar: &Sink,
) -> Result<()> {
    out.set_len(0)
        .map_err(|e| PoolError::io("truncate", part, e))?;
    out.seek(SeekFrom::Start(0))
        .map_err(|e| PoolError::io("seek", part, e))?;
    *have = 0;
    *hashes = Hashes::new(meta);
    bar.set_position(0);
    Ok(())
}

fn content_range_start(resp: &reqwest::blocking::Response) -> Option<u64> {
    let v = resp.headers().get(CONTENT_RANGE)?.to_str().ok()?;
    v.strip_prefix("bytes ")?
        .split('-')
        .next()?
        .trim()
        .parse()
        .ok()
}

/// Point `snapshots/<commit>/<file>` at the blob and record `refs/<revision>`.
fn link_snapshot(repo_dir: &Path, meta: &FileMeta, file: &str, revision: &str) -> Result<PathBuf> {
    let path = repo_dir.join("snapshots").join(&meta.commit).join(file);
    create_dir(path.parent().expect("snapshot path has a parent"))?;
    if fs::symlink_metadata(&path).is_ok() {
        fs::remove_file(&path).map_err(|e| PoolError::io("remove", &path, e))?;
    }
    std::os::unix::fs::symlink(blob_link_target(file, &meta.etag), &path)
        .map_err(|e| PoolError::io("symlink", &path, e))?;
    write_ref(repo_dir, revision, &meta.commit)?;
    Ok(path)
}

/// Record `refs/<revision>` = `commit` (nothing to record when the revision is the commit).
pub fn write_ref(repo_dir: &Path, revision: &str, commit: &str) -> Result<()> {
    if revision == commit {
        return Ok(());
    }
    let r = repo_dir.join("refs").join(revision);
    create_dir(r.parent().expect("ref has a parent"))?;
    fs::write(&r, commit).map_err(|e| PoolError::io("write", &r, e))
}
