//! Worker lifecycle with the real SmolLM2 GGUF and the real `llorch-candled` binary (built by
//! `cargo build --workspace --bins`): import → spawn (returns only once ready) → completion →
//! list → stop (SIGTERM) → stop-all; spawn failures leave no record and show the log tail.

use crate::support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use support::{text, Env};

/// The model and worker binary, or skip (fail under CI=true).
fn prerequisites(test: &str) -> Option<(PathBuf, PathBuf)> {
    let model = llorch_testkit::require_smollm2(test)?;
    let bin = llorch_testkit::require_bin(test, "llorch-candled")?;
    Some((model, bin))
}

/// Stops every worker of the environment even when an assertion fails.
struct StopAll<'a>(&'a Env);

impl Drop for StopAll<'_> {
    fn drop(&mut self) {
        let _ = self.0.run(&["worker", "stop-all", "--grace", "2"]);
    }
}

/// Whether `pid` is a running (non-zombie) process.
fn running(pid: u64) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !matches!(
            s.rsplit(')').next().unwrap_or("").split_whitespace().next(),
            Some("Z" | "X")
        ),
        Err(_) => false,
    }
}

fn spawn_json(env: &Env, bin: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "worker",
        "spawn",
        "cpu",
        "--model",
        "smollm2-135m",
        "--threads",
        "1",
        "--worker-bin",
        bin.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    env.json(&args)
}

/// Poll `cond` for up to 10 s.
fn wait_for(mut cond: impl FnMut() -> bool) -> bool {
    for _ in 0..200 {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// POST /execute and return the raw SSE answer.
fn execute(addr: &str, body: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    write!(
        s,
        "POST /execute HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn spawn_serve_list_stop_lifecycle() {
    let Some((model, bin)) = prerequisites("spawn_serve_list_stop_lifecycle") else {
        return;
    };
    let env = Env::new();
    let _guard = StopAll(&env);
    assert_eq!(
        env.json(&["models", "import", model.to_str().unwrap()])["id"],
        "smollm2-135m"
    );
    let port = llorch_testkit::free_port();
    let port_s = port.to_string();
    let extra = [
        "--port",
        &port_s,
        "--parallel",
        "2",
        "--chat-template",
        "chatml",
    ];
    let w = spawn_json(&env, &bin, &extra);
    let id = w["id"].as_str().unwrap().to_string();
    let pid = w["pid"].as_u64().unwrap();
    assert_eq!(id, format!("smollm2-135m-cpu-{port}"));
    assert_eq!(w["url"], format!("http://127.0.0.1:{port}"));
    assert_eq!(w["alive"], true);
    assert!(running(pid));

    // spawn returned, so the worker must already answer ready.
    let addr = format!("127.0.0.1:{port}");
    let (status, body) = llorch_testkit::http_get(&addr, "/health").unwrap();
    assert_eq!(status, 200, "{body}");
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["status"], "ready");
    assert_eq!(health["worker_id"], id.as_str());
    // worker options pass through: 2 generating + 16 waiting, the forced template
    assert_eq!(health["slots_total"], 18, "{body}");
    assert_eq!(health["chat_template"]["name"], "chatml", "{body}");

    let sse = execute(
        &addr,
        r#"{"prompt":"The capital of France is","max_tokens":4,"temperature":0}"#,
    );
    assert!(sse.starts_with("HTTP/1.1 200"), "{sse}");
    assert!(sse.contains("event: token"), "{sse}");
    assert!(sse.contains("event: end"), "{sse}");

    let list = env.json(&["worker", "list"]);
    let workers = list["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 1);
    assert_eq!(workers[0]["id"], id.as_str());
    assert_eq!(workers[0]["pid"], pid);
    assert_eq!(workers[0]["alive"], true);
    assert!(workers[0]["rss_bytes"].as_u64().unwrap() > 10_000_000);
    assert_eq!(env.json(&["status"])["workers"][0]["id"], id.as_str());
    assert!(env.ok(&["worker", "logs", &id]).contains("# llorch-pool"));

    // `logs --follow` keeps streaming until the worker exits.
    let follow = env
        .cmd()
        .args(["worker", "logs", &id, "--follow"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));

    let stopped = env.json(&["worker", "stop", &id]);
    assert_eq!(
        stopped["signal"], "SIGTERM",
        "the worker should exit on SIGTERM within the grace period"
    );
    assert!(!running(pid));
    assert_eq!(
        env.json(&["worker", "list"])["workers"],
        serde_json::json!([])
    );
    assert_eq!(env.run(&["worker", "stop", &id]).status.code(), Some(1));
    let followed = follow.wait_with_output().unwrap();
    assert!(followed.status.success());
    assert!(String::from_utf8_lossy(&followed.stdout).contains("# llorch-pool"));
}

#[test]
fn stop_all_ends_several_workers() {
    let Some((model, bin)) = prerequisites("stop_all_ends_several_workers") else {
        return;
    };
    let env = Env::new();
    let _guard = StopAll(&env);
    env.ok(&["models", "import", model.to_str().unwrap()]);
    // One worker on a port picked by llorch-pool, one on an explicit port.
    let a = spawn_json(&env, &bin, &[]);
    let b = spawn_json(
        &env,
        &bin,
        &[
            "--port",
            &llorch_testkit::free_port().to_string(),
            "--id",
            "second",
        ],
    );
    let pids = [a["pid"].as_u64().unwrap(), b["pid"].as_u64().unwrap()];
    assert_ne!(a["port"], b["port"]);
    assert!(pids.iter().all(|&p| running(p)));
    assert_eq!(
        env.json(&["worker", "list"])["workers"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // A worker that dies behind llorch-pool's back shows as dead and `cleanup` drops it.
    let killed = std::process::Command::new("kill")
        .args(["-9", &pids[1].to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    assert!(wait_for(|| !running(pids[1])));
    let list = env.json(&["worker", "list"]);
    let alive: Vec<(String, bool)> = list["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            (
                w["id"].as_str().unwrap().to_string(),
                w["alive"].as_bool().unwrap(),
            )
        })
        .collect();
    assert!(alive.contains(&("second".to_string(), false)), "{alive:?}");
    assert_eq!(alive.iter().filter(|w| w.1).count(), 1, "{alive:?}");
    assert_eq!(
        env.json(&["worker", "cleanup"])["removed"],
        serde_json::json!(["second"])
    );

    let out = env.json(&["worker", "stop-all"]);
    assert_eq!(out["stopped"].as_array().unwrap().len(), 1);
    assert!(pids.iter().all(|&p| !running(p)));
    assert_eq!(
        env.json(&["worker", "list"])["workers"],
        serde_json::json!([])
    );
}

#[test]
fn spawn_failures_show_the_log_tail_and_leave_no_record() {
    let Some((model, bin)) = prerequisites("spawn_failures_show_the_log_tail_and_leave_no_record")
    else {
        return;
    };
    let env = Env::new();
    let _guard = StopAll(&env);
    let bin_s = bin.to_str().unwrap();

    // Port in use: the worker cannot bind and exits.
    env.ok(&["models", "import", model.to_str().unwrap()]);
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port().to_string();
    let out = env.run(&[
        "worker",
        "spawn",
        "cpu",
        "--model",
        "smollm2-135m",
        "--port",
        &port,
        "--worker-bin",
        bin_s,
        "--timeout",
        "60",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("failed to start") && stderr.contains("--- last lines of"),
        "{stderr}"
    );
    assert!(
        stderr.contains("# llorch-pool"),
        "log tail missing: {stderr}"
    );
    assert_eq!(
        env.json(&["worker", "list"])["workers"],
        serde_json::json!([])
    );

    // Corrupt model file (same size, broken header) registered under another id.
    let copy = env.dir.path().join("broken.gguf");
    std::fs::copy(&model, &copy).unwrap();
    env.ok(&["models", "import", copy.to_str().unwrap(), "--id", "broken"]);
    let mut bytes = std::fs::read(&copy).unwrap();
    bytes[..4].copy_from_slice(b"XXXX");
    std::fs::write(&copy, bytes).unwrap();
    let out = env.run(&[
        "worker",
        "spawn",
        "cpu",
        "--model",
        "broken",
        "--worker-bin",
        bin_s,
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(err["error"]["kind"], "worker_failed");
    assert!(
        err["error"]["message"].as_str().unwrap().contains("exited"),
        "{err}"
    );
    assert_eq!(
        env.json(&["worker", "list"])["workers"],
        serde_json::json!([])
    );
}

#[test]
fn spawn_refuses_what_it_cannot_start() {
    let env = Env::new();
    let out = env.run(&[
        "worker",
        "spawn",
        "cpu",
        "--model",
        "smollm2-135m",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("model_not_downloaded"),
        "{}",
        text(&out)
    );
    let out = env.run(&["worker", "spawn", "tpu", "--model", "x"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "unknown backend is a usage error"
    );
    if !std::path::Path::new("/proc/driver/nvidia/gpus").exists()
        && !std::path::Path::new("/dev/nvidia0").exists()
    {
        let out = env.run(&[
            "worker",
            "spawn",
            "cuda",
            "--model",
            "smollm2-135m",
            "--json",
        ]);
        assert_eq!(out.status.code(), Some(1));
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("backend_unavailable"),
            "{}",
            text(&out)
        );
    }
    let gguf = env.dir.path().join("t.gguf");
    std::fs::write(&gguf, support::tiny_gguf(8)).unwrap();
    env.ok(&["models", "import", gguf.to_str().unwrap(), "--id", "t"]);
    let out = env.run(&[
        "worker",
        "spawn",
        "cpu",
        "--model",
        "t",
        "--worker-bin",
        "/nonexistent/llorch-candled",
        "--json",
    ]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("worker_bin_not_found"),
        "{}",
        text(&out)
    );
    assert_eq!(
        env.json(&["worker", "list"])["workers"],
        serde_json::json!([])
    );
    let backends = env.json(&["backends", "list"]);
    assert_eq!(backends["backends"][0]["name"], "cpu");
    assert_eq!(backends["backends"][0]["available"], true);
    // the llorch-candled next to llorch-pool was asked what it was built with (a default build:
    // cpu only, so no GPU backend can be available, whatever the devices)
    let b = &backends["backends"];
    assert_eq!(b[0]["compiled"], true, "{backends}");
    assert_eq!(b[1]["name"], "cuda");
    assert_eq!(b[1]["compiled"], false, "{backends}");
    assert_eq!(b[1]["available"], false, "{backends}");
    // the answer is kept per binary in the home, and the next probe uses it
    assert!(env.home().join("worker-backends.json").is_file());
    assert_eq!(env.json(&["backends", "list"]), backends);
}

/// A record for an arbitrary process, as `worker spawn` would write it.
fn record_for(env: &Env, id: &str, pid: u32, pid_start: Option<u64>) {
    let rec = llorch_catalog::WorkerRecord {
        id: id.into(),
        model: "none".into(),
        model_path: "/dev/null".into(),
        backend: "cpu".into(),
        gpu: None,
        host: "127.0.0.1".into(),
        port: 1,
        url: "http://127.0.0.1:1".into(),
        pid,
        pid_start,
        started_at: llorch_catalog::unix_now(),
        log: env.home().join(format!("logs/{id}.log")),
        worker_bin: "/bin/sh".into(),
        api_token: None,
    };
    llorch_catalog::WorkerStore::new(env.home().join("workers"))
        .put(&rec)
        .unwrap();
}

fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(')')
        .next()?
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()
}

#[test]
fn stop_escalates_to_sigkill_and_never_signals_a_reused_pid() {
    let env = Env::new();
    // A process that ignores SIGTERM.
    let mut stubborn = std::process::Command::new("sh")
        .args(["-c", "trap '' TERM; while :; do sleep 0.05; done"])
        .spawn()
        .unwrap();
    let pid = stubborn.id();
    std::thread::sleep(Duration::from_millis(200));
    record_for(&env, "stubborn", pid, start_time(pid));
    let out = env.json(&["worker", "stop", "stubborn", "--grace", "0.5"]);
    assert_eq!(out["signal"], "SIGKILL");
    assert!(!running(pid as u64));
    stubborn.wait().unwrap();

    // A record whose pid now belongs to another process (different start time): shown dead,
    // the process is left alone, the record is dropped.
    let mut other = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    let opid = other.id();
    std::thread::sleep(Duration::from_millis(100));
    let wrong_start = start_time(opid).map(|s| s + 1);
    record_for(&env, "stale", opid, wrong_start);
    if cfg!(target_os = "linux") {
        assert_eq!(env.json(&["worker", "list"])["workers"][0]["alive"], false);
        let out = env.json(&["worker", "stop", "stale"]);
        assert_eq!(out["signal"], serde_json::Value::Null);
        assert!(running(opid as u64), "a reused pid must not be signalled");
    }
    assert_eq!(
        env.json(&["worker", "list"])["workers"],
        serde_json::json!([])
    );
    other.kill().unwrap();
    other.wait().unwrap();
}

/// POST /execute with an optional bearer token; the raw answer.
fn execute_with(addr: &str, token: Option<&str>, body: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "POST /execute HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn a_network_worker_gets_a_token_and_a_dead_engine_shows_in_list() {
    let test = "a_network_worker_gets_a_token_and_a_dead_engine_shows_in_list";
    let Some((model, bin)) = prerequisites(test) else {
        return;
    };
    let env = Env::new();
    let _guard = StopAll(&env);
    env.json(&["models", "import", model.to_str().unwrap()]);
    let port = llorch_testkit::free_port().to_string();
    // FAULT INJECTION (inherited by the worker): its engine panics on its first job.
    let out = env
        .cmd()
        .args([
            "--json",
            "worker",
            "spawn",
            "cpu",
            "--model",
            "smollm2-135m",
        ])
        .args(["--threads", "1", "--bind", "0.0.0.0", "--port", &port])
        .args(["--worker-bin", bin.to_str().unwrap()])
        .env("LLORCH_FAULT_ENGINE_PANIC_AFTER_JOBS", "0")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let w: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = w["id"].as_str().unwrap().to_string();
    assert!(w.get("api_token").is_none(), "the token is not shown: {w}");
    let record = env.home().join("workers").join(format!("{id}.json"));
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&record).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let token = env.json(&["worker", "token", &id])["api_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(token.len(), 64);
    let log = std::fs::read_to_string(w["log"].as_str().unwrap()).unwrap();
    assert!(!log.contains(&token), "token in the log:\n{log}");
    let addr = format!("127.0.0.1:{port}");
    let body = r#"{"prompt":"Hi","max_tokens":2}"#;
    assert!(execute_with(&addr, None, body).starts_with("HTTP/1.1 401"));
    let answer = execute_with(&addr, Some(&token), body);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let mut listed = serde_json::Value::Null;
    let failed = wait_for(|| {
        listed = env.json(&["worker", "list"])["workers"][0].clone();
        listed["health"] == "failed"
    });
    assert!(failed, "{listed}");
    assert!(
        listed["failure"]
            .as_str()
            .unwrap()
            .contains("fault injection"),
        "{listed}"
    );
    let table = env.ok(&["worker", "list"]);
    assert!(table.contains("FAILED: engine thread panicked"), "{table}");
}
