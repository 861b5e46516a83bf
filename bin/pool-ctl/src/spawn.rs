//! `worker spawn`: start `llorch-candled` detached, record it, and return only once its
//! `/health` answers `"status":"ready"`; on exit or timeout show the log tail and leave no record.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use llorch_catalog::{ModelSpec, WorkerRecord};

use crate::cli::{Backend, SpawnArgs};
use crate::error::{PoolError, Result};
use crate::{backends, models, procs, worker, Ctx};

/// First port tried when `--port` is not given.
const FIRST_PORT: u16 = 8001;
const LAST_PORT: u16 = 8999;
/// Readiness timeout: base plus this much per GB of model files.
const READY_BASE_S: f64 = 60.0;
const READY_PER_GB_S: f64 = 60.0;
/// Lines of the worker log shown when it fails to start.
const TAIL_LINES: usize = 40;
const WORKER_BIN: &str = "llorch-candled";

/// Run `worker spawn`.
pub fn spawn(ctx: &Ctx, a: SpawnArgs) -> Result<()> {
    let backend = a.backend.as_str();
    if let Some(b) = backends::detect(&ctx.home, a.worker_bin.clone())
        .into_iter()
        .find(|b| b.name == backend && !b.available)
    {
        return Err(PoolError::BackendUnavailable {
            backend: backend.into(),
            detail: b.detail,
        });
    }
    if a.backend == Backend::Cpu && a.gpu.is_some() {
        return Err(PoolError::Usage(
            "--gpu applies to cuda and metal only".into(),
        ));
    }
    let cat = ctx.store.load()?;
    let (spec, builtin) = cat
        .get(&a.model)
        .ok_or_else(|| llorch_catalog::CatalogError::NotFound(a.model.clone()))?;
    let view = models::view(&cat, spec, builtin);
    let local = match view.local {
        Some(l) if view.downloaded => l,
        _ => return Err(PoolError::NotDownloaded(a.model.clone())),
    };
    for f in &local.files {
        let size = std::fs::metadata(&f.path).map(|m| m.len()).ok();
        if size != Some(f.size_bytes) {
            return Err(PoolError::InvalidModel {
                path: f.path.clone(),
                reason: format!("file missing or changed size since it was recorded (run `llorch-pool models verify {}`)", a.model),
            });
        }
    }
    let bin = find_worker_bin(a.worker_bin.clone())?;
    // Held from port choice until the record is written, so concurrent spawns see each other.
    let spawn_lock = lock_spawns(ctx)?;
    let (records, _) = ctx.workers.list();
    let port = match a.port {
        Some(p) => p,
        None => pick_port(&a.bind, &records)?,
    };
    let id =
        a.id.clone()
            .unwrap_or_else(|| format!("{}-{}-{}", a.model, backend, port));
    if !ModelSpec::valid_id(&id) {
        return Err(PoolError::Usage(format!(
            "invalid worker id `{id}`: use a-z, 0-9, `.`, `_`, `-`"
        )));
    }
    if let Some(old) = ctx.workers.get(&id)? {
        if procs::is_alive(old.pid, old.pid_start) {
            return Err(PoolError::WorkerExists { id, pid: old.pid });
        }
        ctx.workers.remove(&id)?;
    }

    let log = ctx.home.worker_log(&id);
    let mut cmd = Command::new(&bin);
    cmd.arg("--model").arg(&local.path);
    cmd.args([
        "--port",
        &port.to_string(),
        "--worker-id",
        &id,
        "--host",
        &a.bind,
        "--backend",
        backend,
    ]);
    if let Some(g) = a.gpu {
        cmd.args(["--device", &g.to_string()]);
    }
    if let Some(t) = a.threads {
        cmd.args(["--threads", &t.to_string()]);
    }
    if let Some(n) = a.parallel {
        cmd.args(["--parallel", &n.to_string()]);
    }
    if let Some(n) = a.ctx_size {
        cmd.args(["--ctx-size", &n.to_string()]);
    }
    if let Some(n) = a.prompt_cache_mb {
        cmd.args(["--prompt-cache-mb", &n.to_string()]);
    }
    if let Some(t) = &a.chat_template {
        cmd.args(["--chat-template", t]);
    }
    if let Some(u) = &a.orchestrator_url {
        // register under the catalog id, which is what tasks name
        cmd.args(["--orchestrator-url", u, "--model-id", &a.model]);
    }
    let api_token = match &a.api_token {
        Some(t) => Some(t.clone()),
        None if !is_loopback(&a.bind) => Some(random_token()?),
        None => None,
    };
    if let Some(t) = &api_token {
        // by environment, never as an argument: the log's first line and `ps` show arguments
        cmd.env("LLORCH_WORKER_TOKEN", t);
    } else {
        cmd.env_remove("LLORCH_WORKER_TOKEN");
    }
    let logf = open_log(&log, &cmd)?;
    let err_log = logf
        .try_clone()
        .map_err(|e| PoolError::io("open", &log, e))?;
    cmd.stdin(Stdio::null()).stdout(logf).stderr(err_log);
    if std::env::var_os("NO_COLOR").is_none() {
        // The output goes to a file: keep colour codes out of it.
        cmd.env("NO_COLOR", "1");
    }
    let mut child = procs::spawn_detached(&mut cmd).map_err(|e| PoolError::io("start", &bin, e))?;
    let pid = child.id();
    let rec = WorkerRecord {
        id: id.clone(),
        model: a.model.clone(),
        model_path: local.path.clone(),
        backend: backend.into(),
        gpu: a.gpu,
        host: a.bind.clone(),
        port,
        url: public_url(&a.bind, port),
        pid,
        pid_start: procs::start_time(pid),
        started_at: llorch_catalog::unix_now(),
        log: log.clone(),
        worker_bin: bin,
        api_token,
    };
    ctx.workers.put(&rec)?;
    drop(spawn_lock);
    let timeout = a.timeout.map(Duration::from_secs_f64).unwrap_or_else(|| {
        Duration::from_secs_f64(READY_BASE_S + READY_PER_GB_S * local.size_bytes as f64 / 1e9)
    });
    ctx.info(&format!(
        "started {id} (pid {pid}); waiting up to {}s for it to load {} and answer /health",
        timeout.as_secs(),
        a.model
    ));
    if let Err(reason) = wait_ready(&mut child, &id, &probe_addr(&a.bind, port), timeout) {
        let _ = ctx.workers.remove(&id);
        return Err(PoolError::WorkerFailed {
            id,
            reason,
            tail: failure_tail(&log, TAIL_LINES),
            log,
        });
    }
    let view = worker::view(rec);
    ctx.done(
        &view,
        &format!(
            "{id} ready: {} (pid {pid}, log {})",
            view.record.url,
            log.display()
        ),
    );
    Ok(())
}

/// Take `workers/.spawn.lock` (released when the file is dropped).
fn lock_spawns(ctx: &Ctx) -> Result<File> {
    use fs2::FileExt;
    let dir = ctx.home.workers_dir();
    std::fs::create_dir_all(&dir).map_err(|e| PoolError::io("create directory", &dir, e))?;
    let path = dir.join(".spawn.lock");
    let f = File::create(&path).map_err(|e| PoolError::io("create", &path, e))?;
    f.lock_exclusive()
        .map_err(|e| PoolError::io("lock", &path, e))?;
    Ok(f)
}

/// `--worker-bin`/`LLORCH_WORKER_BIN`, else `llorch-candled` next to this executable, else PATH.
pub(crate) fn find_worker_bin(explicit: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return if p.is_file() {
            Ok(p)
        } else {
            Err(PoolError::WorkerBinNotFound {
                searched: p.display().to_string(),
            })
        };
    }
    let mut searched = Vec::new();
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        let p = dir.join(WORKER_BIN);
        if p.is_file() {
            return Ok(p);
        }
        searched.push(dir.display().to_string());
    }
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        let p = dir.join(WORKER_BIN);
        if p.is_file() {
            return Ok(p);
        }
    }
    searched.push("PATH".into());
    Err(PoolError::WorkerBinNotFound {
        searched: searched.join(", "),
    })
}

/// First port from 8001 that no recorded live worker uses and that can be bound now.
fn pick_port(host: &str, records: &[WorkerRecord]) -> Result<u16> {
    let taken = |p: u16| {
        records
            .iter()
            .any(|r| r.port == p && procs::is_alive(r.pid, r.pid_start))
    };
    (FIRST_PORT..=LAST_PORT)
        .find(|&p| !taken(p) && TcpListener::bind((host, p)).is_ok())
        .ok_or_else(|| {
            PoolError::Usage(format!(
                "no free port in {FIRST_PORT}-{LAST_PORT} on {host}; pass --port"
            ))
        })
}

fn open_log(path: &Path, cmd: &Command) -> Result<File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| PoolError::io("create directory", dir, e))?;
    }
    let mut f = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(path)
        .map_err(|e| PoolError::io("open", path, e))?;
    let args: Vec<String> = cmd
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let line = format!(
        "# llorch-pool {}: {} {}\n",
        llorch_catalog::unix_now(),
        cmd.get_program().to_string_lossy(),
        args.join(" ")
    );
    f.write_all(line.as_bytes())
        .map_err(|e| PoolError::io("write", path, e))?;
    Ok(f)
}

/// Whether the worker's bind address is loopback (then it needs no token).
fn is_loopback(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost")
        || h.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// 32 random bytes from the OS, hex-encoded.
fn random_token() -> Result<String> {
    use std::io::Read;
    let path = Path::new("/dev/urandom");
    let mut buf = [0u8; 32];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(|e| PoolError::io("read", path, e))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// URL clients use: the bind address, or this host's name for wildcard binds.
fn public_url(host: &str, port: u16) -> String {
    match host {
        "0.0.0.0" | "::" | "[::]" => format!("http://{}:{port}", procs::hostname()),
        h if h.contains(':') && !h.starts_with('[') => format!("http://[{h}]:{port}"),
        h => format!("http://{h}:{port}"),
    }
}

/// Address llorch-pool polls: loopback for wildcard binds.
pub fn probe_addr(host: &str, port: u16) -> String {
    match host {
        "0.0.0.0" => format!("127.0.0.1:{port}"),
        "::" | "[::]" => format!("[::1]:{port}"),
        h if h.contains(':') && !h.starts_with('[') => format!("[{h}]:{port}"),
        h => format!("{h}:{port}"),
    }
}

/// Poll `/health` until it says ready; on exit or timeout stop the worker and say why.
fn wait_ready(
    child: &mut Child,
    id: &str,
    addr: &str,
    timeout: Duration,
) -> std::result::Result<(), String> {
    let client = reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .build()
        .map_err(|e| e.to_string())?;
    let url = format!("http://{addr}/health");
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Err(format!("it exited ({status}) before becoming ready")),
            Ok(None) => {}
            Err(e) => return Err(format!("cannot watch the worker process: {e}")),
        }
        if let Ok(resp) = client.get(&url).send() {
            if resp.status().is_success() {
                if let Ok(body) = resp.json::<serde_json::Value>() {
                    // Another server on the port (e.g. a worker our child failed to displace)
                    // must not pass for ours.
                    let ours = body["worker_id"].as_str().is_none_or(|w| w == id);
                    if body["status"] == "ready" && ours {
                        return Ok(());
                    }
                }
            }
        }
        if start.elapsed() > timeout {
            worker::terminate(child.id(), None, Duration::from_secs(5));
            let _ = child.wait();
            return Err(format!(
                "no ready answer from {url} within {}s; the worker was stopped",
                timeout.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The last `n` lines of a log file, read as text.
pub fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Whether a log line is a Rust backtrace frame (`   3: name` or `      at file:line`).
fn is_backtrace_frame(line: &str) -> bool {
    let t = line.trim_start();
    if t.len() == line.len() {
        return false;
    }
    t.starts_with("at ")
        || t.split_once(": ")
            .is_some_and(|(num, _)| !num.is_empty() && num.bytes().all(|b| b.is_ascii_digit()))
}

/// The last `n` lines worth reading after a failed start: backtrace frames (present when
/// `RUST_BACKTRACE` is set) are folded into one line so the error message stays visible.
fn failure_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let mut lines: Vec<&str> = Vec::new();
    for line in text.lines() {
        if is_backtrace_frame(line) {
            if lines.last() != Some(&BACKTRACE_FOLDED) {
                lines.push(BACKTRACE_FOLDED);
            }
        } else {
            lines.push(line);
        }
    }
    lines[lines.len().saturating_sub(n)..].join("\n")
}

const BACKTRACE_FOLDED: &str = "   [backtrace omitted: see the full log]";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backtraces_are_folded_in_failure_tails() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("w.log");
        let text = "start\nerror: bad magic\n   0: candle::x\n             at src/a.rs:1:2\n  12: main\nlast: line\n";
        std::fs::write(&log, text).unwrap();
        assert_eq!(
            failure_tail(&log, 10),
            format!("start\nerror: bad magic\n{BACKTRACE_FOLDED}\nlast: line")
        );
        assert_eq!(log_tail(&log, 1), "last: line");
        assert!(!is_backtrace_frame("error: x"));
    }
}
