//! Acceptance with real `llorch-candled` workers and SmolLM2-135M (skipped locally until the
//! worker binary is built and the model fetched; required under CI=true).

use std::time::{Duration, Instant};

use futures::StreamExt;
use llorch_client::WorkerClient;
use llorch_testkit::{require_bin, require_smollm2, WorkerProcess};
use llorch_wire::{ExecuteRequest, SamplingParams, WorkerEvent};
use serde_json::{json, Value};

use crate::common::*;

/// Real workers share 2 cores: these tests run one at a time.
pub(crate) static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const PROMPT: &str = "<|im_start|>user\nName three colors.<|im_end|>\n<|im_start|>assistant\n";

/// Start a real worker that registers itself with `o` (`--orchestrator-url`) and heartbeats;
/// wait until it is ready there. Returns it and the model id it registered.
/// `--parallel 1 --max-queue 0`: one job at a time, so every waiting task sits in the
/// orchestrator's queue.
async fn real_worker(test: &str, o: &Orchd, id: &str) -> Option<(WorkerProcess, String)> {
    real_worker_env(test, o, id, &[]).await
}

/// [`real_worker`] with extra environment variables for the worker.
pub(crate) async fn real_worker_env(
    test: &str,
    o: &Orchd,
    id: &str,
    env: &[(&str, &str)],
) -> Option<(WorkerProcess, String)> {
    let bin = require_bin(test, "llorch-candled")?;
    let model = require_smollm2(test)?;
    let w = WorkerProcess::start_with_env(
        &bin,
        &model,
        &[
            "--worker-id",
            id,
            "--orchestrator-url",
            &o.base,
            "--parallel",
            "1",
            "--max-queue",
            "0",
        ],
        env,
    );
    let start = Instant::now();
    loop {
        let (_, info) = get_json(&o.url(&format!("/v2/workers/{id}"))).await;
        if info["status"] == "ready" {
            assert_eq!(info["slots_total"], 1, "{info}");
            return Some((w, info["model"].as_str().unwrap().to_string()));
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "worker {id} never registered:\n{}",
            w.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn direct_greedy_ids(url: &str, max_tokens: u32) -> Vec<u64> {
    let req = ExecuteRequest {
        gen: llorch_wire::Generation {
            prompt: Some(PROMPT.into()),
            max_tokens: Some(max_tokens),
            sampling: SamplingParams::greedy(),
            ..Default::default()
        },
        ..Default::default()
    };
    let stream = WorkerClient::new(url).execute(&req).await.unwrap();
    let evs: Vec<WorkerEvent> = stream.map(|e| e.unwrap()).collect().await;
    evs.iter()
        .filter_map(|e| {
            if let WorkerEvent::Token { id, .. } = e {
                Some(*id as u64)
            } else {
                None
            }
        })
        .collect()
}

fn greedy(model: &str, n: u32) -> Value {
    json!({"model": model, "prompt": PROMPT, "max_tokens": n, "temperature": 0})
}

#[tokio::test(flavor = "multi_thread")]
async fn two_real_workers_relay_the_direct_greedy_tokens() {
    let _serial = SERIAL.lock().await;
    let o = Orchd::start(&[]);
    let Some((w1, model)) = real_worker("two_real_workers", &o, "real-1").await else {
        return;
    };
    let Some((_w2, _)) = real_worker("two_real_workers", &o, "real-2").await else {
        return;
    };
    let direct = direct_greedy_ids(&w1.url(), 24).await;
    assert!(!direct.is_empty());
    let ids = [
        submit_ok(&o, greedy(&model, 24)).await,
        submit_ok(&o, greedy(&model, 24)).await,
    ];
    let mut workers = Vec::new();
    for id in &ids {
        let evs = all_events(&o, id).await;
        let end = single_terminal(&evs);
        assert_eq!(end.kind, "end", "{evs:#?}");
        assert_eq!(
            tokens(&evs).1,
            direct,
            "same greedy tokens through orchestratord"
        );
        workers.push(end.data["worker_id"].as_str().unwrap().to_string());
        assert!(end.data["ttft_ms"].as_f64().unwrap() > 0.0);
    }
    workers.sort();
    assert_eq!(
        workers,
        ["real-1", "real-2"],
        "both workers served (least-loaded)"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn overload_gives_429_with_retry_after_and_every_task_ends_once() {
    let _serial = SERIAL.lock().await;
    let o = Orchd::start(&["--queue-capacity", "4"]);
    let Some((_w, model)) = real_worker("overload", &o, "real-1").await else {
        return;
    };
    let submits = (0..20).map(|_| {
        let body = json!({"model": model, "prompt": PROMPT, "max_tokens": 16, "temperature": 0});
        let url = o.url("/v2/tasks");
        tokio::spawn(async move {
            let r = client().post(url).json(&body).send().await.unwrap();
            let retry_after = r
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_string());
            (
                r.status().as_u16(),
                retry_after,
                r.json::<Value>().await.unwrap(),
            )
        })
    });
    let results: Vec<_> = futures::future::join_all(submits)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    let accepted: Vec<String> = results
        .iter()
        .filter(|r| r.0 == 202)
        .map(|r| r.2["task_id"].as_str().unwrap().to_string())
        .collect();
    let rejected: Vec<_> = results.iter().filter(|r| r.0 == 429).collect();
    assert_eq!(accepted.len() + rejected.len(), 20, "{results:?}");
    assert!(
        accepted.len() <= 5 && !rejected.is_empty(),
        "capacity 4 + 1 running: {} accepted",
        accepted.len()
    );
    for r in &rejected {
        assert!(r.1.as_deref().unwrap().parse::<u64>().unwrap() >= 1);
        assert_eq!(r.2["error"]["code"], "QUEUE_FULL");
    }
    let start = Instant::now();
    for id in &accepted {
        assert_eq!(single_terminal(&all_events(&o, id).await).kind, "end");
    }
    assert!(start.elapsed() < Duration::from_secs(120), "nothing hangs");
}

async fn worker_cancelled_count(url: &str) -> f64 {
    let text = scrape(url, None).await;
    metric_sum(&text, "worker_requests_total", "cancelled")
}

async fn wait_cancelled_on_worker(url: &str, at_least: f64) {
    let start = Instant::now();
    while worker_cancelled_count(url).await < at_least {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "worker never reported the job cancelled"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_and_disconnect_stop_the_job_on_the_real_worker() {
    let _serial = SERIAL.lock().await;
    let o = Orchd::start(&["--disconnect-grace-ms", "100"]);
    let Some((w, model)) = real_worker("cancel_real", &o, "real-1").await else {
        return;
    };
    let long = json!({"model": model, "prompt": PROMPT, "max_tokens": 2000, "temperature": 0.8, "seed": 1});
    let queued_body = long.clone();

    let running = submit_ok(&o, long.clone()).await;
    let mut s = EventStream::open(&o, &running, None).await;
    while s.next().await.unwrap().kind != "token" {}
    let queued = submit_ok(&o, queued_body).await;
    assert_eq!(
        wait_task(&o, &queued, |v| v["state"] == "queued").await["state"],
        "queued"
    );
    for id in [&queued, &running] {
        let r = client()
            .post(o.url(&format!("/v2/tasks/{id}/cancel")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
    }
    let evs = s.rest().await;
    assert_eq!(single_terminal(&evs).data["stop_reason"], "cancelled");
    wait_cancelled_on_worker(&w.url(), 1.0).await;

    let gone = submit_ok(&o, long).await;
    let mut s = EventStream::open(&o, &gone, None).await;
    while s.next().await.unwrap().kind != "token" {}
    drop(s);
    wait_task(&o, &gone, |v| v["state"] == "cancelled").await;
    wait_cancelled_on_worker(&w.url(), 2.0).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn death_before_first_token_completes_on_the_real_worker() {
    let _serial = SERIAL.lock().await;
    let o = Orchd::start(&[]);
    let Some((_w, model)) = real_worker("retry_real", &o, "b-real").await else {
        return;
    };
    let _dies = FaultWorker::start(
        "die-before-first-token",
        "a-dies",
        &["--orchestrator-url", &o.base, "--model", &model],
    );
    while get_json(&o.url("/v2/workers/a-dies")).await.1["status"] != "ready" {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let id = submit_ok(&o, greedy(&model, 8)).await;
    let evs = all_events(&o, &id).await;
    let end = single_terminal(&evs);
    assert_eq!(
        (end.kind.as_str(), end.data["worker_id"].as_str()),
        ("end", Some("b-real")),
        "{evs:#?}"
    );
    assert_eq!(end.data["attempts"], 2);
}

/// Placement keeps a conversation's prefix warm: with both workers idle, a task whose system
/// prompt another task used goes to the worker that ran that task, where the worker's prompt
/// cache serves the shared prefix (`tokens_cached`). Load still comes first.
#[tokio::test(flavor = "multi_thread")]
async fn tasks_sharing_a_system_prompt_go_where_it_is_cached() {
    let _serial = SERIAL.lock().await;
    let o = Orchd::start(&[]);
    let Some((_w1, model)) = real_worker("affinity", &o, "real-1").await else {
        return;
    };
    let Some((_w2, _)) = real_worker("affinity", &o, "real-2").await else {
        return;
    };
    let system = "You are the harbour office assistant. Answer in one short sentence, and say \
                  so plainly when you do not know.";
    let ask = |q: &str| {
        json!({"model": model, "max_tokens": 4, "temperature": 0,
               "messages": [{"role": "system", "content": system}, {"role": "user", "content": q}]})
    };
    // real-1 is busy with a long task, so the first question goes to real-2
    let long = submit_ok(
        &o,
        json!({"model": model, "prompt": PROMPT, "max_tokens": 2000}),
    )
    .await;
    let mut s = EventStream::open(&o, &long, None).await;
    while s.next().await.unwrap().kind != "token" {}
    let first = submit_ok(&o, ask("When is high tide?")).await;
    let evs = all_events(&o, &first).await;
    assert_eq!(
        single_terminal(&evs).data["worker_id"],
        "real-2",
        "{evs:#?}"
    );
    let r = client()
        .post(o.url(&format!("/v2/tasks/{long}/cancel")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    s.rest().await;
    for id in ["real-1", "real-2"] {
        let start = Instant::now();
        while get_json(&o.url(&format!("/v2/workers/{id}"))).await.1["slots_busy"] != 0 {
            assert!(start.elapsed() < Duration::from_secs(30), "{id} stays busy");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // both idle: the id order would say real-1; the shared system prompt says real-2
    let second = submit_ok(&o, ask("Where can I moor a dinghy?")).await;
    let evs = all_events(&o, &second).await;
    let end = single_terminal(&evs);
    assert_eq!(end.data["worker_id"], "real-2", "{evs:#?}");
    assert!(
        end.data["tokens_cached"].as_u64().unwrap_or(0) > 10,
        "the system prompt came from real-2's prompt cache: {}",
        end.data
    );
}
