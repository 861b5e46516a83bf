//! `llorch infer --orchestrator` and `llorch tasks submit|status|cancel|list` against a real
//! orchestratord with one real `llorch-candled` worker (SmolLM2) registered to it.

use crate::common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{llorch_bin, run};
use llorch_testkit::{free_port, http_get, require_bin, require_smollm2, WorkerProcess};
use serde_json::Value;

/// orchestratord + one registered worker; both killed on drop.
struct Stack {
    orch: Child,
    url: String,
    _worker: WorkerProcess,
    _dir: tempfile::TempDir,
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = self.orch.kill();
        let _ = self.orch.wait();
    }
}

fn stack(test: &str) -> Option<Stack> {
    let orchd = require_bin(test, "orchestratord")?;
    let worker_bin = require_bin(test, "llorch-candled")?;
    let model = require_smollm2(test)?;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let orch = Command::new(orchd)
        .args(["--bind", &format!("127.0.0.1:{port}"), "--db"])
        .arg(dir.path().join("o.sqlite"))
        .env_remove("LLORCH_API_TOKEN")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr = format!("127.0.0.1:{port}");
    let url = format!("http://{addr}");
    let start = Instant::now();
    while !matches!(http_get(&addr, "/health"), Ok((200, _))) {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "orchestratord not up"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let worker = WorkerProcess::start(
        &worker_bin,
        &model,
        &["--orchestrator-url", &url, "--model-id", "smollm2-135m"],
    );
    while !http_get(&addr, "/v1/models").is_ok_and(|(_, b)| b.contains("smollm2-135m")) {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "worker never registered"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(Stack {
        orch,
        url,
        _worker: worker,
        _dir: dir,
    })
}

fn llorch(args: &[&str]) -> Command {
    let mut cmd = Command::new(llorch_bin());
    cmd.args(args)
        .env_remove("RUST_LOG")
        .env_remove("LLORCH_API_TOKEN")
        .env_remove("LLORCH_ORCHESTRATOR_URL")
        .stdin(Stdio::null());
    cmd
}

fn task_json(s: &Stack, args: &[&str]) -> Value {
    let mut all = vec!["tasks", "--orchestrator", &s.url, "--json"];
    all.extend_from_slice(args);
    let r = run(llorch(&all));
    assert_eq!(r.code, Some(0), "{args:?}: {}", r.stderr);
    serde_json::from_str(&r.stdout).unwrap()
}

#[test]
fn infer_and_tasks_through_the_orchestrator() {
    let Some(s) = stack("infer_and_tasks_through_the_orchestrator") else {
        return;
    };
    let r = run(llorch(&[
        "infer",
        "--orchestrator",
        &s.url,
        "-m",
        "user:Write one sentence about the ocean.",
        "--max-tokens",
        "8",
        "--temperature",
        "0",
    ]));
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(r.stdout.starts_with("The ocean is a"), "{:?}", r.stdout);
    let summary = r.stderr.lines().last().unwrap();
    assert!(
        summary.starts_with("--- 8 tokens") && summary.contains("stop max_tokens"),
        "{summary}"
    );
    let r = run(llorch(&[
        "infer",
        "--orchestrator",
        &s.url,
        "--model",
        "nope",
        "-p",
        "x",
    ]));
    assert_eq!(r.code, Some(1));
    assert!(r.stderr.contains("MODEL_NOT_FOUND"), "{}", r.stderr);

    let r = run(llorch(&[
        "tasks",
        "--orchestrator",
        &s.url,
        "submit",
        "-p",
        "1, 2, 3, 4, 5,",
        "--max-tokens",
        "4000",
        "--temperature",
        "0",
        "--task-id",
        "long-count",
        "--priority",
        "batch",
    ]));
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_eq!(r.stdout.trim(), "long-count");
    let st = task_json(&s, &["status", "long-count"]);
    assert_eq!(st["priority"], "batch");
    assert!(st["state"] == "queued" || st["state"] == "running", "{st}");
    let list = task_json(&s, &["list", "--limit", "5"]);
    assert_eq!(
        list["tasks"][0]["task_id"], "long-count",
        "newest first: {list}"
    );
    assert_eq!(list["tasks"].as_array().unwrap().len(), 2);
    assert_eq!(task_json(&s, &["cancel", "long-count"])["cancelled"], true);
    let start = Instant::now();
    while task_json(&s, &["status", "long-count"])["state"] != "cancelled" {
        assert!(start.elapsed() < Duration::from_secs(30), "never cancelled");
        std::thread::sleep(Duration::from_millis(50));
    }
    let r = run(llorch(&[
        "tasks",
        "--orchestrator",
        &s.url,
        "list",
        "--state",
        "cancelled",
    ]));
    assert_eq!(
        r.stdout.lines().count(),
        2,
        "header + one task: {}",
        r.stdout
    );
    assert!(r
        .stdout
        .lines()
        .nth(1)
        .unwrap()
        .starts_with("long-count  cancelled"));
    let r = run(llorch(&[
        "tasks",
        "--orchestrator",
        &s.url,
        "status",
        "nope",
    ]));
    assert_eq!(r.code, Some(1));
    assert!(r.stderr.contains("NOT_FOUND"), "{}", r.stderr);
}

#[test]
fn ctrl_c_cancels_the_task() {
    let Some(s) = stack("ctrl_c_cancels_the_task") else {
        return;
    };
    let mut child = llorch(&[
        "infer",
        "--orchestrator",
        &s.url,
        "-p",
        "1, 2, 3, 4, 5,",
        "--max-tokens",
        "4000",
        "--temperature",
        "0",
        "--job-id",
        "interrupt-me",
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let run = llorch_testkit::interrupt_after_first_output(&mut child);
    let err = run.stderr;
    assert_eq!(run.status.code(), Some(130), "{err}");
    assert!(
        err.contains("cancelling task interrupt-me") && err.contains("stop cancelled"),
        "{err}"
    );
    let st = task_json(&s, &["status", "interrupt-me"]);
    assert_eq!(st["state"], "cancelled", "{st}");
}
