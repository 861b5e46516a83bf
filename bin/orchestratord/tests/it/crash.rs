//! Accepted work survives a SIGKILL of orchestratord: queued tasks (and running ones that had
//! sent nothing) run after the restart, streaming ones end with `WORKER_LOST`; every task ends
//! with exactly one terminal event, seen once by a client that reconnects with
//! `Last-Event-ID`.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::*;

const TASKS: usize = 30;

async fn wait_ready(o: &Orchd, id: &str) {
    let start = Instant::now();
    while get_json(&o.url(&format!("/v2/workers/{id}"))).await.1["status"] != "ready" {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "worker {id} not ready:\n{}",
            o.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Read a task's stream until the connection ends (the task ended, or the server died).
async fn read_until_closed(base: &str, id: &str, last: Option<u64>) -> Vec<Ev> {
    let mut s = EventStream::open_at(base, id, last).await;
    let mut out = Vec::new();
    while let Some(ev) = s.next().await {
        out.push(ev);
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn thirty_accepted_tasks_survive_a_sigkill() {
    let o = Orchd::start(&["--heartbeat-interval-ms", "200"]);
    let _w = FaultWorker::start(
        "slow",
        "crash-w",
        &[
            "--orchestrator-url",
            &o.base,
            "--slots",
            "2",
            "--token-delay-ms",
            "40",
        ],
    );
    wait_ready(&o, "crash-w").await;
    let mut ids = Vec::new();
    for i in 0..TASKS {
        let body = json!({"model": FAULT_MODEL, "prompt": format!("task {i}"), "max_tokens": 4});
        ids.push(submit_ok(&o, body).await);
    }
    // a client follows every task
    let readers: Vec<_> = ids
        .iter()
        .map(|id| {
            let (base, id) = (o.base.clone(), id.clone());
            tokio::spawn(async move { read_until_closed(&base, &id, None).await })
        })
        .collect();
    // some tasks finish, two stream, the rest wait: then the process is killed
    tokio::time::sleep(Duration::from_millis(400)).await;
    let o = o.restart_hard();
    let mut before = Vec::new();
    for r in readers {
        before.push(r.await.unwrap());
    }
    let (mut ended, mut worker_lost) = (0, 0);
    for (id, before) in ids.iter().zip(before) {
        let last = before.last().and_then(|e| e.id);
        let saw_terminal = before.iter().any(|e| e.kind == "end" || e.kind == "error");
        // reconnect as an SSE client does, with the last id seen
        let after = read_until_closed(&o.base, id, last).await;
        let all: Vec<Ev> = before.into_iter().chain(after).collect();
        let ids_seen: Vec<u64> = all.iter().filter_map(|e| e.id).collect();
        assert!(
            ids_seen.windows(2).all(|w| w[0] < w[1]),
            "task {id}: event ids go forward: {ids_seen:?}"
        );
        let terminal = single_terminal(&all);
        if saw_terminal {
            assert!(
                std::ptr::eq(terminal, all.last().unwrap()),
                "task {id}: nothing after the terminal event"
            );
        }
        let tokens = all.iter().filter(|e| e.kind == "token").count();
        match (terminal.kind.as_str(), terminal.data["code"].as_str()) {
            ("end", _) => {
                assert_eq!(tokens, 4, "task {id}: each token once: {all:#?}");
                ended += 1;
            }
            ("error", Some("WORKER_LOST")) => worker_lost += 1,
            _ => panic!("task {id} ended with {:?}", terminal.data),
        }
        let (status, st) = get_json(&o.url(&format!("/v2/tasks/{id}"))).await;
        assert_eq!(status, 200, "task {id} is known after the restart");
        assert!(st["finished_at_ms"].is_u64(), "{st}");
    }
    eprintln!("crash test: {TASKS} accepted, {ended} completed, {worker_lost} WORKER_LOST, 0 lost");
    assert_eq!(ended + worker_lost, TASKS);
    assert!(worker_lost <= 2, "only the tasks streaming at the kill");
    assert!(ended >= TASKS - 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn with_prompts_kept_off_disk_queued_tasks_fail_at_restart() {
    let o = Orchd::start(&[
        "--persist-requests",
        "false",
        "--heartbeat-interval-ms",
        "200",
    ]);
    let _w = FaultWorker::start(
        "slow",
        "offdisk-w",
        &["--orchestrator-url", &o.base, "--token-delay-ms", "20"],
    );
    wait_ready(&o, "offdisk-w").await;
    let secret = "secret-prompt-text-4242";
    let long = json!({"model": FAULT_MODEL, "prompt": secret, "max_tokens": 2000});
    let running = submit_ok(&o, long.clone()).await;
    let queued = submit_ok(&o, long).await;
    wait_task(&o, &running, |v| v["state"] == "running").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let o = o.restart_hard();
    for id in [&running, &queued] {
        let evs = all_events(&o, id).await;
        assert_eq!(
            (evs[0].kind.as_str(), evs[0].data["code"].as_str()),
            ("error", Some("SHUTTING_DOWN")),
            "task {id}"
        );
    }
    for suffix in ["", "-wal"] {
        let path = format!("{}{suffix}", o.db.display());
        let bytes = std::fs::read(&path).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&bytes).contains(secret),
            "the prompt reached {path}"
        );
    }
}
