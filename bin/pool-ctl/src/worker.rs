//! `worker list|stop|stop-all|logs|cleanup` and the live view of a worker record.

use std::io::{Read, Seek, SeekFrom, Write};
use std::time::Duration;

use llorch_catalog::{WorkerRecord, WorkerView};
use serde_json::json;

use crate::cli::WorkerCmd;
use crate::error::{PoolError, Result};
use crate::output::{human_bytes, human_duration, print_json, print_table};
use crate::spawn::{log_tail, spawn};
use crate::{procs, Ctx};

/// Time allowed for a process to disappear after SIGKILL.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// Run one `worker` subcommand.
pub fn run(ctx: &Ctx, cmd: WorkerCmd) -> Result<()> {
    match cmd {
        WorkerCmd::Spawn(args) => spawn(ctx, *args),
        WorkerCmd::List => list(ctx),
        WorkerCmd::Stop { id, grace } => {
            let rec = ctx
                .workers
                .get(&id)?
                .ok_or_else(|| PoolError::WorkerNotFound(id.clone()))?;
            let out = stop_many(ctx, vec![rec], grace_duration(grace))?;
            let msg = describe(&out[0]);
            ctx.done(&out[0], &msg);
            Ok(())
        }
        WorkerCmd::StopAll { grace } => {
            let (records, _) = ctx.workers.list();
            let out = stop_many(ctx, records, grace_duration(grace))?;
            let lines: Vec<String> = out.iter().map(describe).collect();
            let msg = if lines.is_empty() {
                "no workers".to_string()
            } else {
                lines.join("\n")
            };
            ctx.done(&json!({ "stopped": out }), &msg);
            Ok(())
        }
        WorkerCmd::Logs { id, follow, lines } => logs(ctx, &id, follow, lines),
        WorkerCmd::Cleanup => cleanup(ctx),
        WorkerCmd::Token { id } => token(ctx, &id),
    }
}

fn grace_duration(secs: f64) -> Duration {
    Duration::from_secs_f64(secs.max(0.0))
}

/// A record with live facts (the API token left out: `worker token` prints it).
pub fn view(mut record: WorkerRecord) -> WorkerView {
    record.api_token = None;
    let alive = procs::is_alive(record.pid, record.pid_start);
    let rss_bytes = if alive {
        procs::rss_bytes(record.pid)
    } else {
        None
    };
    let (health, failure) = if alive {
        probe_health(&record)
    } else {
        (None, None)
    };
    let uptime_s = llorch_catalog::unix_now().saturating_sub(record.started_at);
    WorkerView {
        record,
        alive,
        rss_bytes,
        uptime_s,
        health,
        failure,
    }
}

/// Longest wait for a live worker's `/health` in `worker list`.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

/// The worker's `/health` status and failure reason (`unreachable` when it does not answer).
fn probe_health(rec: &WorkerRecord) -> (Option<String>, Option<String>) {
    let url = format!(
        "http://{}/health",
        crate::spawn::probe_addr(&rec.host, rec.port)
    );
    let answer = reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(HEALTH_TIMEOUT)
        .build()
        .ok()
        .and_then(|c| c.get(&url).send().ok())
        .and_then(|r| r.json::<serde_json::Value>().ok());
    match answer {
        Some(v) => (
            v["status"].as_str().map(str::to_string),
            v["failure"].as_str().map(str::to_string),
        ),
        None => (Some("unreachable".into()), None),
    }
}

/// `worker token ID`: print the worker's API token (for `llorch infer --worker-token`).
fn token(ctx: &Ctx, id: &str) -> Result<()> {
    let rec = ctx
        .workers
        .get(id)?
        .ok_or_else(|| PoolError::WorkerNotFound(id.to_string()))?;
    let Some(token) = rec.api_token else {
        return Err(PoolError::Usage(format!(
            "worker {id} has no API token (it was spawned on a loopback address without --api-token)"
        )));
    };
    ctx.done(&json!({ "worker_id": id, "api_token": token }), &token);
    Ok(())
}

/// Views of every recorded worker (unreadable records are reported on stderr).
pub fn views(ctx: &Ctx) -> Vec<WorkerView> {
    let (records, errors) = ctx.workers.list();
    for e in errors {
        tracing::warn!("skipping worker record: {e}");
    }
    records.into_iter().map(view).collect()
}

fn list(ctx: &Ctx) -> Result<()> {
    let views = views(ctx);
    if ctx.json {
        print_json(&json!({ "workers": views }));
        return Ok(());
    }
    let rows: Vec<Vec<String>> = views
        .iter()
        .map(|w| {
            let r = &w.record;
            vec![
                r.id.clone(),
                r.model.clone(),
                r.backend.clone(),
                r.port.to_string(),
                r.pid.to_string(),
                match (w.alive, w.health.as_deref()) {
                    (false, _) => "dead".into(),
                    (true, Some("failed")) => {
                        format!("FAILED: {}", w.failure.as_deref().unwrap_or("see the log"))
                    }
                    (true, Some("unreachable")) => "alive (not answering)".into(),
                    (true, _) => "alive".into(),
                },
                w.rss_bytes.map(human_bytes).unwrap_or_else(|| "-".into()),
                human_duration(w.uptime_s),
                r.url.clone(),
            ]
        })
        .collect();
    print_table(
        &[
            "ID", "MODEL", "BACKEND", "PORT", "PID", "STATE", "RSS", "UPTIME", "URL",
        ],
        &rows,
    );
    Ok(())
}

/// Result of stopping one worker (`--json` shape of `stop`, element of `stop-all`).
#[derive(Debug, serde::Serialize)]
pub struct Stopped {
    pub id: String,
    pub pid: u32,
    /// Whether the process was running when the stop began.
    pub was_alive: bool,
    /// Last signal sent: `SIGTERM`, `SIGKILL`, or null when it was already gone.
    pub signal: Option<&'static str>,
    pub log: String,
}

fn describe(s: &Stopped) -> String {
    match s.signal {
        Some(sig) => format!("stopped {} (pid {}, {sig})", s.id, s.pid),
        None => format!("removed record of {} (pid {} was not running)", s.id, s.pid),
    }
}

/// SIGTERM every live worker, wait up to `grace` for all, SIGKILL the rest, remove the records.
fn stop_many(ctx: &Ctx, records: Vec<WorkerRecord>, grace: Duration) -> Result<Vec<Stopped>> {
    let mut out: Vec<Stopped> = Vec::new();
    for r in &records {
        let alive = procs::is_alive(r.pid, r.pid_start);
        if alive {
            procs::signal(r.pid, libc::SIGTERM)
                .map_err(|e| PoolError::io("signal", format!("pid {}", r.pid), e))?;
        }
        let signal = alive.then_some("SIGTERM");
        out.push(Stopped {
            id: r.id.clone(),
            pid: r.pid,
            was_alive: alive,
            signal,
            log: r.log.display().to_string(),
        });
    }
    procs::wait_until(grace, || {
        records.iter().all(|r| !procs::is_alive(r.pid, r.pid_start))
    });
    for (r, s) in records.iter().zip(out.iter_mut()) {
        if procs::is_alive(r.pid, r.pid_start) {
            tracing::warn!(
                "{} did not exit within {grace:?} of SIGTERM; sending SIGKILL",
                r.id
            );
            procs::signal(r.pid, libc::SIGKILL)
                .map_err(|e| PoolError::io("signal", format!("pid {}", r.pid), e))?;
            s.signal = Some("SIGKILL");
        }
    }
    procs::wait_until(KILL_WAIT, || {
        records.iter().all(|r| !procs::is_alive(r.pid, r.pid_start))
    });
    for r in &records {
        if procs::is_alive(r.pid, r.pid_start) {
            return Err(PoolError::io(
                "stop",
                format!("pid {}", r.pid),
                std::io::Error::other("still running after SIGKILL"),
            ));
        }
        ctx.workers.remove(&r.id)?;
    }
    Ok(out)
}

/// SIGTERM `pid`, SIGKILL after `grace` (used when a spawn times out).
pub fn terminate(pid: u32, start: Option<u64>, grace: Duration) {
    let _ = procs::signal(pid, libc::SIGTERM);
    if !procs::wait_until(grace, || !procs::is_alive(pid, start)) {
        let _ = procs::signal(pid, libc::SIGKILL);
    }
}

fn logs(ctx: &Ctx, id: &str, follow: bool, lines: Option<usize>) -> Result<()> {
    let rec = ctx.workers.get(id)?;
    let path = rec
        .as_ref()
        .map(|r| r.log.clone())
        .unwrap_or_else(|| ctx.home.worker_log(id));
    if !path.is_file() {
        return Err(PoolError::WorkerNotFound(id.to_string()));
    }
    let mut f = std::fs::File::open(&path).map_err(|e| PoolError::io("open", &path, e))?;
    let mut stdout = std::io::stdout();
    match lines {
        Some(n) => {
            println!("{}", log_tail(&path, n));
            f.seek(SeekFrom::End(0))
                .map_err(|e| PoolError::io("seek", &path, e))?;
        }
        None => {
            std::io::copy(&mut f, &mut stdout).map_err(|e| PoolError::io("read", &path, e))?;
        }
    }
    if !follow {
        return Ok(());
    }
    let mut buf = Vec::new();
    loop {
        let alive = rec
            .as_ref()
            .is_some_and(|r| procs::is_alive(r.pid, r.pid_start));
        buf.clear();
        f.read_to_end(&mut buf)
            .map_err(|e| PoolError::io("read", &path, e))?;
        if !buf.is_empty() {
            let _ = stdout.write_all(&buf);
            let _ = stdout.flush();
        }
        if !alive {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn cleanup(ctx: &Ctx) -> Result<()> {
    let mut removed = Vec::new();
    for w in views(ctx).into_iter().filter(|w| !w.alive) {
        ctx.workers.remove(&w.record.id)?;
        let _ = std::fs::remove_file(&w.record.log);
        removed.push(w.record.id);
    }
    let msg = if removed.is_empty() {
        "no dead workers".to_string()
    } else {
        format!("removed {}", removed.join(", "))
    };
    ctx.done(&json!({ "removed": removed }), &msg);
    Ok(())
}
