//! Reliability and security: authenticated workers, a dead engine taken out of placement,
//! admission with the worker's default `max_tokens`, error envelopes for unknown routes.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::*;
use crate::real::{real_worker_env, SERIAL};

const WORKER_TOKEN: &str = "orchd-test-worker-token-0123456789";
const PROMPT: &str = "<|im_start|>user\nName three colors.<|im_end|>\n<|im_start|>assistant\n";

fn greedy(model: &str, n: u32) -> Value {
    json!({"model": model, "prompt": PROMPT, "max_tokens": n, "temperature": 0})
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_with_a_token_gets_tasks_and_cancels_with_it() {
    let _serial = SERIAL.lock().await;
    let o = Orchd::start(&[]);
    let test = "a_worker_with_a_token_gets_tasks_and_cancels_with_it";
    let env = [("LLORCH_WORKER_TOKEN", WORKER_TOKEN)];
    let Some((w, model)) = real_worker_env(test, &o, "auth-w", &env).await else {
        return;
    };
    // the worker itself refuses anonymous jobs
    let anon = client()
        .post(format!("{}/execute", w.url()))
        .json(&json!({"prompt": "Hi", "max_tokens": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(anon.status(), 401);
    // through orchestratord the task runs (it sends the token it got at registration)
    let id = submit_ok(&o, greedy(&model, 8)).await;
    let evs = all_events(&o, &id).await;
    let last = single_terminal(&evs);
    assert_eq!(last.kind, "end", "{evs:#?}");
    // a long task cancelled through orchestratord is cancelled on the worker (with the token)
    let id = submit_ok(&o, greedy(&model, 400)).await;
    let mut s = EventStream::open(&o, &id, None).await;
    while let Some(ev) = s.next().await {
        if ev.kind == "token" {
            break;
        }
    }
    let r = client()
        .post(o.url(&format!("/v2/tasks/{id}/cancel")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let rest = s.rest().await;
    assert_eq!(
        rest.last().map(|e| e.data["stop_reason"].clone()),
        Some(json!("cancelled"))
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, info) = get_json(&o.url("/v2/workers/auth-w")).await;
    let (_, list) = get_json(&o.url("/v2/workers")).await;
    for v in [&info, &list] {
        assert!(!v.to_string().contains(WORKER_TOKEN), "token shown: {v}");
    }
    let worker_log = std::fs::read_to_string(&w.log).unwrap();
    assert_eq!(
        worker_log.matches("rejected").count(),
        1,
        "only this test's own anonymous call is rejected, never the orchestrator's:\n{worker_log}"
    );
    for log in [worker_log, o.log_text()] {
        assert!(!log.contains(WORKER_TOKEN), "token logged:\n{log}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_whose_engine_died_gets_no_more_tasks() {
    let _serial = SERIAL.lock().await;
    // a task left without a healthy worker ends after 8 s in the queue
    let o = Orchd::start(&[
        "--heartbeat-interval-ms",
        "200",
        "--retry-backoff-ms",
        "10",
        "--max-queue-wait-ms",
        "8000",
    ]);
    let test = "a_worker_whose_engine_died_gets_no_more_tasks";
    // FAULT INJECTION: the worker's engine thread panics when it admits its second job.
    let env = [("LLORCH_FAULT_ENGINE_PANIC_AFTER_JOBS", "1")];
    let Some((w, model)) = real_worker_env(test, &o, "doomed", &env).await else {
        return;
    };
    let first = submit_ok(&o, greedy(&model, 4)).await;
    assert_eq!(single_terminal(&all_events(&o, &first).await).kind, "end");
    let second = submit_ok(&o, greedy(&model, 4)).await;
    let evs = all_events(&o, &second).await;
    let last = single_terminal(&evs);
    assert_eq!(last.kind, "error", "{evs:#?}");
    // the worker stays registered and heartbeating, but unhealthy with its reason
    let start = Instant::now();
    let info = loop {
        let (_, info) = get_json(&o.url("/v2/workers/doomed")).await;
        if info["failure"].is_string() || start.elapsed() > Duration::from_secs(20) {
            break info;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(info["status"], "unhealthy", "{info}");
    let failure = info["failure"].as_str().unwrap_or_default();
    assert!(failure.contains("fault injection"), "{info}");
    // heartbeats keep coming; it stays out of placement
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (_, info) = get_json(&o.url("/v2/workers/doomed")).await;
    assert_eq!(info["status"], "unhealthy", "{info}");
    let third = submit_ok(&o, greedy(&model, 4)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, st) = get_json(&o.url(&format!("/v2/tasks/{third}"))).await;
    assert_eq!(
        st["state"], "queued",
        "no task goes to a failed worker: {st}"
    );
    drop(w);
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_routes_and_wrong_methods_answer_with_the_envelope() {
    let o = Orchd::start(&[]);
    let c = client();
    let r = c.get(o.url("/v2/nope")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "NOT_FOUND", "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("/v2/nope"));
    let r = c.delete(o.url("/v2/tasks")).send().await.unwrap();
    assert_eq!(r.status(), 405);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "METHOD_NOT_ALLOWED", "{v}");
    // OpenAI's shape under /v1
    let r = c.get(o.url("/v1/nope")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
    assert_eq!(v["error"]["code"], "not_found", "{v}");
    let r = c.get(o.url("/v1/chat/completions")).send().await.unwrap();
    assert_eq!(r.status(), 405);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "method_not_allowed", "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn admission_checks_the_context_with_the_workers_default_max_tokens() {
    let o = Orchd::start(&[]);
    let w = FaultWorker::start("slow", "ctx-w", &[]);
    register(&o, "ctx-w", &w.url(), "ctx-model", 1, 200).await;
    // no max_tokens: the worker would generate up to 256, which cannot fit 200
    let (status, _, v) = submit(&o, json!({"model": "ctx-model", "prompt": "hi"})).await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["code"], "CONTEXT_LENGTH_EXCEEDED", "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("256"),
        "{v}"
    );
    let (status, _, v) = submit(
        &o,
        json!({"model": "ctx-model", "prompt": "hi", "max_tokens": 4}),
    )
    .await;
    assert_eq!(status, 202, "{v}");
}
