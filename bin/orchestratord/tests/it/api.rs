//! The API contract: validation, correlation ids, SSE ids and resume, cancel, disconnect,
//! priorities and the full-queue policies. The worker is a `fault-worker --mode slow` (tokens
//! at a fixed pace), so timing-dependent behaviour is deterministic.

use std::time::Duration;

use serde_json::json;

use crate::common::*;

fn slow(id: &str, delay_ms: u64) -> FaultWorker {
    FaultWorker::start("slow", id, &["--token-delay-ms", &delay_ms.to_string()])
}

/// Context window registered for the slow worker (large: these tests run long tasks).
const CTX: u32 = 100_000;

#[tokio::test(flavor = "multi_thread")]
async fn validation_errors_name_fields_models_and_limits() {
    let o = Orchd::start(&[]);
    let w = slow("w1", 10);
    register(&o, "w1", &w.url(), FAULT_MODEL, 1, 64).await;

    let (st, _, v) = submit(&o, json!({"model": "nope", "prompt": "hi"})).await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (404, Some("MODEL_NOT_FOUND"))
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains(FAULT_MODEL),
        "{v}"
    );

    let (st, _, v) = submit(
        &o,
        json!({"model": FAULT_MODEL, "prompt": "hi", "temperature": 7, "top_p": 0}),
    )
    .await;
    assert_eq!(st, 400);
    let fields: Vec<_> = v["error"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["temperature", "top_p"]);

    let (st, _, v) = submit(
        &o,
        json!({"model": FAULT_MODEL, "prompt": "hi", "temprature": 0}),
    )
    .await;
    assert_eq!(
        (st, v["error"]["fields"][0]["field"].as_str()),
        (400, Some("temprature"))
    );

    let ids: Vec<u32> = (0..100).collect();
    let (st, _, v) = submit(&o, json!({"model": FAULT_MODEL, "prompt_ids": ids})).await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (400, Some("CONTEXT_LENGTH_EXCEEDED")),
        "{v}"
    );
    let (st, _, v) = submit(
        &o,
        json!({"model": FAULT_MODEL, "prompt": "hi", "max_tokens": 64}),
    )
    .await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (400, Some("CONTEXT_LENGTH_EXCEEDED"))
    );
    let (st, _, v) = submit(
        &o,
        json!({"model": FAULT_MODEL, "prompt": "hi", "priority": "urgent"}),
    )
    .await;
    assert_eq!(st, 400, "{v}");

    let r = client()
        .get(o.url("/health"))
        .header("X-Correlation-Id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-correlation-id"], "abc-123");
    let r = client().get(o.url("/v2/tasks/nope")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(
        r.headers()["x-correlation-id"].len(),
        36,
        "a generated UUID"
    );
    let r = client()
        .post(o.url("/v2/tasks/nope/cancel"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    let (st, spec) = get_json(&o.url("/v2/openapi.json")).await;
    assert_eq!(st, 200);
    assert!(spec["openapi"].as_str().unwrap().starts_with("3."));
    assert!(spec["paths"]["/v2/tasks/{id}/events"].is_object());
    let (_, caps) = get_json(&o.url("/v2/meta/capabilities")).await;
    assert_eq!(caps["models"][0]["model"], FAULT_MODEL);
    assert_eq!(caps["models"][0]["context_length"], 64);
    assert_eq!(get_json(&o.url("/ready")).await.0, 200);
    let metrics = scrape(&o.url(""), None).await;
    assert!(
        metrics.contains(
            "orchd_tasks_rejected_total{component=\"orchestratord\",reason=\"MODEL_NOT_FOUND\"} 1"
        ),
        "{metrics}"
    );
    assert!(metrics.contains("orchd_admission_latency_ms_count"));
}

#[tokio::test(flavor = "multi_thread")]
async fn events_have_ids_and_resume_without_duplicates() {
    let o = Orchd::start(&[]);
    let w = slow("w1", 40);
    register(&o, "w1", &w.url(), FAULT_MODEL, 1, CTX).await;
    let (st, headers, acc) = submit(
        &o,
        json!({"model": FAULT_MODEL, "prompt": "hi", "max_tokens": 8}),
    )
    .await;
    assert_eq!(st, 202);
    let id = acc["task_id"].as_str().unwrap().to_string();
    assert_eq!(acc["events_url"], format!("/v2/tasks/{id}/events"));
    assert_eq!(headers["location"], format!("/v2/tasks/{id}"));

    let mut s = EventStream::open(&o, &id, None).await;
    let mut first = Vec::new();
    while first.last().map(|e: &Ev| e.id.unwrap()) != Some(4) {
        first.push(s.next().await.unwrap());
    }
    drop(s);
    assert_eq!(first[0].kind, "queued");
    assert_eq!(first[1].kind, "started");
    assert_eq!(first[1].data["worker_id"], "w1");
    let rest = EventStream::open(&o, &id, Some(4)).await.rest().await;
    assert_eq!(rest[0].id, Some(5), "resumes right after Last-Event-ID");
    let all: Vec<Ev> = first.into_iter().chain(rest).collect();
    let ids: Vec<u64> = all.iter().map(|e| e.id.unwrap()).collect();
    assert_eq!(
        ids,
        (1..=all.len() as u64).collect::<Vec<_>>(),
        "contiguous ids, no duplicates"
    );
    let end = single_terminal(&all);
    assert_eq!(end.kind, "end");
    assert_eq!(end.data["tokens_out"], 8);
    assert!(end.data["ttft_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(tokens(&all).1, (0..8).collect::<Vec<u64>>());

    let status = wait_task(&o, &id, |v| v["state"] == "completed").await;
    assert_eq!(status["usage"]["tokens_out"], 8);
    assert_eq!(status["worker_id"], "w1");
    // A finished task replays everything, or nothing after its terminal id.
    let replay = all_events(&o, &id).await;
    assert_eq!(replay.len(), all.len());
    let after = EventStream::open(&o, &id, end.id).await.rest().await;
    assert!(after.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_queued_and_running_tasks() {
    let o = Orchd::start(&[]);
    let w = slow("w1", 20);
    register(&o, "w1", &w.url(), FAULT_MODEL, 1, CTX).await;
    let body = json!({"model": FAULT_MODEL, "prompt": "hi", "max_tokens": 1000});
    let running = submit_ok(&o, body.clone()).await;
    let mut rs = EventStream::open(&o, &running, None).await;
    while rs.next().await.unwrap().kind != "token" {}
    let queued = submit_ok(&o, body).await;
    assert_eq!(
        wait_task(&o, &queued, |v| v["state"] == "queued").await["queue_position"],
        0
    );

    let r = client()
        .post(o.url(&format!("/v2/tasks/{queued}/cancel")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let qevs = all_events(&o, &queued).await;
    let end = single_terminal(&qevs);
    assert_eq!(
        (end.kind.as_str(), end.data["stop_reason"].as_str()),
        ("end", Some("cancelled"))
    );
    assert!(qevs
        .iter()
        .all(|e| e.kind != "token" && e.kind != "started"));

    let r = client()
        .post(o.url(&format!("/v2/tasks/{running}/cancel")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let revs = rs.rest().await;
    let end = single_terminal(&revs);
    assert_eq!(end.data["stop_reason"], "cancelled");
    let status = wait_task(&o, &running, |v| v["state"] == "cancelled").await;
    assert!(status["usage"]["tokens_out"].as_u64().unwrap() >= 1);
    // Idempotent, and the worker slot is free again.
    let r = client()
        .post(o.url(&format!("/v2/tasks/{running}/cancel")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let next = submit_ok(
        &o,
        json!({"model": FAULT_MODEL, "prompt": "hi", "max_tokens": 2}),
    )
    .await;
    assert_eq!(single_terminal(&all_events(&o, &next).await).kind, "end");
}

#[tokio::test(flavor = "multi_thread")]
async fn client_disconnect_cancels_after_grace() {
    let o = Orchd::start(&["--disconnect-grace-ms", "200"]);
    let w = slow("w1", 20);
    register(&o, "w1", &w.url(), FAULT_MODEL, 1, CTX).await;
    let id = submit_ok(
        &o,
        json!({"model": FAULT_MODEL, "prompt": "hi", "max_tokens": 5000}),
    )
    .await;
    let mut s = EventStream::open(&o, &id, None).await;
    while s.next().await.unwrap().kind != "token" {}
    drop(s);
    let st = wait_task(&o, &id, |v| v["state"] == "cancelled").await;
    assert!(
        st["usage"]["tokens_out"].as_u64().unwrap() < 200,
        "stopped soon after the disconnect: {st}"
    );
    let (_, workers) = get_json(&o.url("/v2/workers")).await;
    assert_eq!(workers["workers"][0]["slots_busy"], 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn priorities_drop_lru_and_backpressure() {
    let o = Orchd::start(&["--queue-capacity", "1", "--queue-policy", "drop-lru"]);
    let w = slow("w1", 10);
    register(&o, "w1", &w.url(), FAULT_MODEL, 1, CTX).await;
    let body = |prio: &str, n: u32| json!({"model": FAULT_MODEL, "prompt": "hi", "max_tokens": n, "priority": prio});
    let first = submit_ok(&o, body("interactive", 60)).await;
    wait_task(&o, &first, |v| v["state"] == "running").await;
    let b1 = submit_ok(&o, body("batch", 2)).await;
    let b2 = submit_ok(&o, body("batch", 2)).await;
    let evicted = all_events(&o, &b1).await;
    let err = single_terminal(&evicted);
    assert_eq!(
        (err.kind.as_str(), err.data["code"].as_str()),
        ("error", Some("EVICTED"))
    );
    let i1 = submit_ok(&o, body("interactive", 2)).await;
    let (st, headers, v) = submit(&o, body("interactive", 2)).await;
    assert_eq!(st, 429);
    assert!(
        headers["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    assert!(headers.contains_key("x-backoff-ms"));
    assert_eq!(v["error"]["code"], "QUEUE_FULL");
    assert!(v["error"]["retry_after_ms"].as_u64().is_some());

    let i1_done = wait_task(&o, &i1, |v| v["state"] == "completed").await;
    let b2_done = wait_task(&o, &b2, |v| v["state"] == "completed").await;
    assert!(
        i1_done["finished_at_ms"].as_u64() <= b2_done["finished_at_ms"].as_u64(),
        "interactive task submitted later runs before the waiting batch task"
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    let metrics = scrape(&o.url(""), None).await;
    assert!(
        metrics.contains("orchd_tasks_evicted_total{component=\"orchestratord\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("reason=\"QUEUE_FULL\"} 1"));
}
