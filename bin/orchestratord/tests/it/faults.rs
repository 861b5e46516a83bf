//! Failure handling with `fault-worker`: death before the first token (invisible retry),
//! death mid-stream (typed error within 1 s), stalls, busy workers, deadlines, heartbeats.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::*;

fn body(n: u32) -> serde_json::Value {
    json!({"model": FAULT_MODEL, "prompt": "hi", "max_tokens": n})
}

#[tokio::test(flavor = "multi_thread")]
async fn death_before_first_token_is_retried_on_another_worker() {
    let o = Orchd::start(&[]);
    // Same load, so the id tie-break tries "a-dies" first.
    let dies = FaultWorker::start("die-before-first-token", "a-dies", &[]);
    let ok = FaultWorker::start("slow", "b-slow", &["--token-delay-ms", "5"]);
    register(&o, "a-dies", &dies.url(), FAULT_MODEL, 1, 2048).await;
    register(&o, "b-slow", &ok.url(), FAULT_MODEL, 1, 2048).await;
    let id = submit_ok(&o, body(4)).await;
    let evs = all_events(&o, &id).await;
    let end = single_terminal(&evs);
    assert_eq!(end.kind, "end", "{evs:#?}");
    assert_eq!(end.data["worker_id"], "b-slow");
    assert_eq!(end.data["attempts"], 2);
    assert_eq!(
        evs.iter().filter(|e| e.kind == "started").count(),
        1,
        "the failed attempt is invisible"
    );
    assert_eq!(tokens(&evs).1, [0, 1, 2, 3]);
    let (_, workers) = get_json(&o.url("/v2/workers/a-dies")).await;
    assert_eq!(workers["status"], "unhealthy");
}

#[tokio::test(flavor = "multi_thread")]
async fn death_mid_stream_ends_with_worker_lost_within_a_second() {
    let o = Orchd::start(&[]);
    let w = FaultWorker::start(
        "die-mid-stream",
        "w1",
        &["--tokens", "3", "--token-delay-ms", "50"],
    );
    register(&o, "w1", &w.url(), FAULT_MODEL, 1, 2048).await;
    let id = submit_ok(&o, body(100)).await;
    let evs = all_events(&o, &id).await;
    let err = single_terminal(&evs);
    assert_eq!(err.kind, "error", "{evs:#?}");
    assert_eq!(err.data["code"], "WORKER_LOST");
    assert_eq!(err.data["tokens_out"], 3);
    assert_eq!(err.data["worker_id"], "w1");
    let last_token = evs.iter().rev().find(|e| e.kind == "token").unwrap();
    let gap = err.at.duration_since(last_token.at);
    assert!(gap < Duration::from_secs(5), "WORKER_LOST after {gap:?}");
    let st = wait_task(&o, &id, |v| v["state"] == "failed").await;
    assert_eq!(st["error"]["code"], "WORKER_LOST");
}

#[tokio::test(flavor = "multi_thread")]
async fn stalled_worker_is_lost_after_the_stall_timeout() {
    let o = Orchd::start(&["--stall-timeout-ms", "400"]);
    let w = FaultWorker::start("stall", "w1", &["--tokens", "2", "--token-delay-ms", "10"]);
    register(&o, "w1", &w.url(), FAULT_MODEL, 1, 2048).await;
    let id = submit_ok(&o, body(100)).await;
    let evs = all_events(&o, &id).await;
    let err = single_terminal(&evs);
    assert_eq!(
        (err.data["code"].as_str(), err.data["tokens_out"].as_u64()),
        (Some("WORKER_LOST"), Some(2))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn busy_worker_exhausts_attempts_with_a_typed_error() {
    let o = Orchd::start(&["--max-attempts", "2", "--retry-backoff-ms", "10"]);
    let w = FaultWorker::start("busy", "w1", &[]);
    register(&o, "w1", &w.url(), FAULT_MODEL, 1, 2048).await;
    let id = submit_ok(&o, body(4)).await;
    let evs = all_events(&o, &id).await;
    let err = single_terminal(&evs);
    assert_eq!(err.data["code"], "WORKER_BUSY", "{evs:#?}");
    assert_eq!(
        wait_task(&o, &id, |v| v["state"] == "failed").await["attempts"],
        2
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn deadlines_end_running_and_queued_tasks() {
    let o = Orchd::start(&[]);
    let w = FaultWorker::start("slow", "w1", &["--token-delay-ms", "20"]);
    register(&o, "w1", &w.url(), FAULT_MODEL, 1, 2048).await;
    let t0 = Instant::now();
    let running = submit_ok(
        &o,
        json!({"model": FAULT_MODEL, "prompt": "hi", "max_tokens": 1000, "deadline_ms": 400}),
    )
    .await;
    let queued = submit_ok(
        &o,
        json!({"model": FAULT_MODEL, "prompt": "hi", "max_tokens": 5, "deadline_ms": 200}),
    )
    .await;
    let q = all_events(&o, &queued).await;
    let qerr = single_terminal(&q);
    assert_eq!(
        (qerr.data["code"].as_str(), qerr.data["tokens_out"].as_u64()),
        (Some("DEADLINE_EXCEEDED"), Some(0))
    );
    let r = all_events(&o, &running).await;
    let rerr = single_terminal(&r);
    assert_eq!(rerr.data["code"], "DEADLINE_EXCEEDED");
    assert!(rerr.data["tokens_out"].as_u64().unwrap() > 0);
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "1000 tokens at 20 ms would take 20 s"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn silent_worker_is_marked_unhealthy_and_gets_no_tasks() {
    let o = Orchd::start(&[
        "--heartbeat-interval-ms",
        "200",
        "--heartbeat-timeout-ms",
        "700",
    ]);
    let mut w = FaultWorker::start("slow", "w1", &["--orchestrator-url", &o.base]);
    let start = Instant::now();
    while get_json(&o.url("/v2/workers/w1")).await.1["status"] != "ready" {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "worker never registered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    w.child.kill().unwrap();
    let _ = w.child.wait();
    let killed = Instant::now();
    while get_json(&o.url("/v2/workers/w1")).await.1["status"] != "unhealthy" {
        assert!(
            killed.elapsed() < Duration::from_secs(30),
            "worker still ready after missing heartbeats"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let id = submit_ok(&o, body(2)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let st = get_json(&o.url(&format!("/v2/tasks/{id}"))).await.1;
    assert_eq!(
        (st["state"].as_str(), st["attempts"].as_u64()),
        (Some("queued"), Some(0)),
        "{st}"
    );
    assert_eq!(get_json(&o.url("/ready")).await.0, 503);
}
