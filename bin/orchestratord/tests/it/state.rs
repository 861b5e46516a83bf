//! State across restarts (SQLite), authentication, and configuration precedence.

use std::process::Command;
use std::time::{Duration, Instant};

use llorch_testkit::free_port;
use serde_json::json;

use crate::common::*;

async fn wait_worker_ready(o: &Orchd, id: &str) {
    let start = Instant::now();
    while get_json(&o.url(&format!("/v2/workers/{id}"))).await.1["status"] != "ready" {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "worker {id} not ready:\n{}",
            o.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn restart_restores_registry_and_history_and_ends_streaming_tasks() {
    let o = Orchd::start(&["--heartbeat-interval-ms", "200"]);
    let _w = FaultWorker::start(
        "slow",
        "w1",
        &[
            "--orchestrator-url",
            &o.base,
            "--token-delay-ms",
            "20",
            "--context-length",
            "100000",
        ],
    );
    wait_worker_ready(&o, "w1").await;
    let done = submit_ok(
        &o,
        json!({"model": FAULT_MODEL, "prompt": "hi", "max_tokens": 3}),
    )
    .await;
    let done_events = all_events(&o, &done).await;
    assert_eq!(single_terminal(&done_events).kind, "end");
    let running = submit_ok(
        &o,
        json!({"model": FAULT_MODEL, "prompt": "hi", "max_tokens": 10000}),
    )
    .await;
    wait_task(&o, &running, |v| v["state"] == "running").await;
    // History writes are batched on a writer thread and committed within milliseconds; give a
    // loaded test machine time before the SIGKILL.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let o = o.restart_hard();
    let (st, old) = get_json(&o.url(&format!("/v2/tasks/{done}"))).await;
    assert_eq!((st, old["state"].as_str()), (200, Some("completed")));
    assert_eq!(old["usage"]["tokens_out"], 3);
    // it had sent tokens: it cannot run again (see reliability.rs for queued tasks)
    let (_, lost) = get_json(&o.url(&format!("/v2/tasks/{running}"))).await;
    assert_eq!(
        (lost["state"].as_str(), lost["error"]["code"].as_str()),
        (Some("failed"), Some("WORKER_LOST"))
    );
    // Finished tasks replay their terminal event after the restart.
    let replay = all_events(&o, &done).await;
    assert_eq!(replay.len(), 1);
    assert_eq!(
        (replay[0].kind.as_str(), replay[0].id),
        ("end", done_events.last().unwrap().id)
    );
    let replay = all_events(&o, &running).await;
    assert_eq!(
        (replay[0].kind.as_str(), replay[0].data["code"].as_str()),
        ("error", Some("WORKER_LOST"))
    );
    // The registry came back and the worker serves again.
    let (_, workers) = get_json(&o.url("/v2/workers")).await;
    assert_eq!(workers["workers"][0]["worker_id"], "w1");
    wait_worker_ready(&o, "w1").await;
    let again = submit_ok(
        &o,
        json!({"model": FAULT_MODEL, "prompt": "hi", "max_tokens": 2}),
    )
    .await;
    assert_eq!(single_terminal(&all_events(&o, &again).await).kind, "end");
}

#[tokio::test(flavor = "multi_thread")]
async fn bearer_token_is_required_when_configured() {
    let token = "test-token-0123456789abcdef";
    let o = Orchd::start_env(&[], &[("LLORCH_API_TOKEN", token)]);
    let w = FaultWorker::start("slow", "w1", &[]);
    let c = client();
    let reg = json!({"worker_id": "w1", "url": w.url(), "model": FAULT_MODEL, "backend": "cpu",
        "slots_total": 1, "context_length": 2048});
    let r = c
        .post(o.url("/v2/workers/register"))
        .json(&reg)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = c
        .post(o.url("/v2/workers/register"))
        .bearer_auth(token)
        .json(&reg)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let task = json!({"model": FAULT_MODEL, "prompt": "hi", "max_tokens": 2});
    let r = c.post(o.url("/v2/tasks")).json(&task).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "UNAUTHORIZED");
    let r = c
        .post(o.url("/v2/tasks"))
        .bearer_auth("wrong-token")
        .json(&task)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = c
        .post(o.url("/v2/tasks"))
        .bearer_auth(token)
        .json(&task)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(c.get(o.url("/metrics")).send().await.unwrap().status(), 401);
    assert_eq!(
        c.get(o.url("/health")).send().await.unwrap().status(),
        200,
        "probes stay open"
    );
}

#[test]
fn public_bind_without_token_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_orchestratord"))
        .args(["--bind", &format!("0.0.0.0:{}", free_port()), "--db"])
        .arg(dir.path().join("db.sqlite"))
        .env_remove("LLORCH_API_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("refusing to bind 0.0.0.0") && stderr.contains("LLORCH_API_TOKEN"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn flags_override_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("orchd.toml");
    std::fs::write(
        &file,
        "queue_capacity = 7\nplacement = \"round-robin\"\nqueue_policy = \"drop-lru\"\n",
    )
    .unwrap();
    let o = Orchd::start_env(
        &["--config", file.to_str().unwrap(), "--queue-capacity", "9"],
        &[("LLORCH_ORCH_QUEUE_POLICY", "reject")],
    );
    let (_, caps) = get_json(&o.url("/v2/meta/capabilities")).await;
    assert_eq!(caps["queue_capacity"], 9, "flag beats file");
    assert_eq!(caps["queue_policy"], "reject", "env beats file");
    assert_eq!(caps["placement"], "round-robin", "file beats default");

    std::fs::write(&file, "queue_capacty = 7\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_orchestratord"))
        .args(["--config", file.to_str().unwrap(), "--db"])
        .arg(dir.path().join("db.sqlite"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("queue_capacty"));
}

#[tokio::test(flavor = "multi_thread")]
async fn static_workers_are_polled_on_health() {
    let mut w = FaultWorker::start("slow", "static-1", &["--token-delay-ms", "5"]);
    let o = Orchd::start(&["--workers", &w.url(), "--heartbeat-interval-ms", "200"]);
    let start = Instant::now();
    while get_json(&o.url("/v2/workers/static-1")).await.1["status"] != "ready" {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "static worker never probed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, info) = get_json(&o.url("/v2/workers/static-1")).await;
    assert_eq!(
        (info["source"].as_str(), info["model"].as_str()),
        (Some("static"), Some(FAULT_MODEL))
    );
    let id = submit_ok(
        &o,
        json!({"model": FAULT_MODEL, "prompt": "hi", "max_tokens": 3}),
    )
    .await;
    assert_eq!(single_terminal(&all_events(&o, &id).await).kind, "end");
    w.child.kill().unwrap();
    let _ = w.child.wait();
    let killed = Instant::now();
    while get_json(&o.url("/v2/workers/static-1")).await.1["status"] != "unhealthy" {
        assert!(
            killed.elapsed() < Duration::from_secs(30),
            "dead static worker still ready"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
