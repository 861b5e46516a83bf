//! The server's limits (`.specs/orchestratord.md` "Limits"): request body size (413 in the
//! envelope, OpenAI's shape under `/v1`), request head size (431), SSE streams per task (429),
//! idle and slow connections (closed), concurrent connections (the rest wait), and random
//! bodies on every route (never a 5xx, never down).

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::*;

/// Read from `s` until the peer closes; panics if that takes longer than `within`.
async fn closed_within(s: &mut TcpStream, within: Duration) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return out,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => panic!(
                "connection still open after {within:?}: {}",
                String::from_utf8_lossy(&out)
            ),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_bodies_get_413_with_the_envelope() {
    let o = Orchd::start(&["--max-body-bytes", "4096"]);
    let c = client();
    let big = json!({"model": "m", "prompt": "x".repeat(5000)});
    let r = c.post(o.url("/v2/tasks")).json(&big).send().await.unwrap();
    assert_eq!(r.status(), 413);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "PAYLOAD_TOO_LARGE", "{v}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("4096") && msg.contains("max_body_bytes"),
        "{msg}"
    );
    // OpenAI's shape under /v1
    let chat = json!({"model": "m", "messages": [{"role": "user", "content": "x".repeat(5000)}]});
    let r = c
        .post(o.url("/v1/chat/completions"))
        .json(&chat)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "payload_too_large", "{v}");
    assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
    // a chunked body (no Content-Length) is cut off while it is read
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..5).map(|_| Ok(vec![b' '; 1024])).collect();
    let r = c
        .post(o.url("/v2/workers/register"))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "PAYLOAD_TOO_LARGE", "{v}");
    // under the limit: an ordinary answer
    let small = json!({"model": "m", "prompt": "x".repeat(3000)});
    let (status, _, v) = submit(&o, small).await;
    assert_eq!(status, 404, "{v}");
    assert_eq!(v["error"]["code"], "MODEL_NOT_FOUND", "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_request_heads_get_431() {
    let o = Orchd::start(&["--max-header-bytes", "8192"]);
    let c = client();
    let r = c
        .get(o.url("/health"))
        .header("x-big", "a".repeat(20_000))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 431);
    let r = c
        .get(o.url("/health"))
        .header("x-big", "a".repeat(4000))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn sse_streams_per_task_are_limited() {
    let o = Orchd::start(&["--max-subscribers-per-task", "2"]);
    let w = FaultWorker::start("slow", "sub-w", &["--token-delay-ms", "20"]);
    register(&o, "sub-w", &w.url(), FAULT_MODEL, 1, 2048).await;
    let id = submit_ok(
        &o,
        json!({"model": FAULT_MODEL, "prompt": "hi", "max_tokens": 400}),
    )
    .await;
    let mut first = EventStream::open(&o, &id, None).await;
    let observer = client()
        .get(o.url(&format!("/v2/tasks/{id}/events?observe=true")))
        .send()
        .await
        .unwrap();
    assert_eq!(observer.status(), 200);
    let r = client()
        .get(o.url(&format!("/v2/tasks/{id}/events")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "TOO_MANY_SUBSCRIBERS", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_subscribers_per_task"),
        "{v}"
    );
    // a stream that leaves frees its place (noticed at the next event written to it)
    drop(observer);
    let start = Instant::now();
    let mut second = loop {
        let r = client()
            .get(o.url(&format!("/v2/tasks/{id}/events")))
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            break r;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "never freed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(second.chunk().await.unwrap().is_some());
    // the limit never ended the task: the first stream still sees it through
    client()
        .post(o.url(&format!("/v2/tasks/{id}/cancel")))
        .send()
        .await
        .unwrap();
    let evs = first.rest().await;
    assert_eq!(single_terminal(&evs).data["stop_reason"], "cancelled");
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_and_slow_connections_are_closed_but_streams_are_not() {
    let o = Orchd::start(&["--idle-timeout-ms", "500"]);
    let addr = format!("127.0.0.1:{}", o.port);
    // connected, never sent a byte
    let mut silent = TcpStream::connect(&addr).await.unwrap();
    // half a request head, then nothing (slowloris)
    let mut slow = TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nX-A:")
        .await
        .unwrap();
    // one request, then idle on the kept-alive connection
    let mut kept = TcpStream::connect(&addr).await.unwrap();
    kept.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let bound = Duration::from_secs(10);
    closed_within(&mut silent, bound).await;
    closed_within(&mut slow, bound).await;
    let answer = String::from_utf8(closed_within(&mut kept, bound).await).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // an SSE stream quiet for longer than the idle timeout stays open
    let w = FaultWorker::start("slow", "idle-w", &["--token-delay-ms", "700"]);
    register(&o, "idle-w", &w.url(), FAULT_MODEL, 1, 2048).await;
    let id = submit_ok(
        &o,
        json!({"model": FAULT_MODEL, "prompt": "hi", "max_tokens": 3}),
    )
    .await;
    let evs = all_events(&o, &id).await;
    assert_eq!(single_terminal(&evs).kind, "end", "{evs:#?}");
    assert_eq!(tokens(&evs).1, [0, 1, 2]);
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_beyond_the_limit_wait_for_a_free_one() {
    let o = Orchd::start(&["--max-connections", "4"]);
    let addr = format!("127.0.0.1:{}", o.port);
    // the harness's readiness probe closed its connection; hold all four places
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(TcpStream::connect(&addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let c = reqwest::Client::builder()
        .timeout(Duration::from_millis(1500))
        .build()
        .unwrap();
    let waited = c.get(o.url("/health")).send().await;
    assert!(waited.is_err(), "answered beyond the limit: {waited:?}");
    held.truncate(2);
    let start = Instant::now();
    loop {
        if let Ok(r) = client().get(o.url("/health")).send().await {
            assert_eq!(r.status(), 200);
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10));
    }
}

/// Fuzz-style (bounded: 40 seeded bodies per route, 14 routes): random JSON, cut JSON and
/// random bytes on every route that takes a body: never a 5xx, and the process keeps serving.
#[tokio::test(flavor = "multi_thread")]
async fn random_bodies_on_every_route_never_take_it_down() {
    let o = Orchd::start(&[]);
    let routes = [
        "/v2/tasks",
        "/v2/tasks/t1/cancel",
        "/v2/workers/register",
        "/v2/workers/w1/heartbeat",
        "/v2/workers/w1/drain",
        "/v2/workers/w1/undrain",
        "/v2/pools/p/drain",
        "/v1/chat/completions",
        "/v1/completions",
        "/v2/admin/tenants",
        "/v2/admin/tenants/t",
        "/v2/admin/keys",
        "/v2/admin/keys/k/revoke",
        "/v2/nope",
    ];
    let mut rng = llorch_testkit::FuzzRng::new(53);
    let c = client();
    let mut sent = 0;
    for route in routes {
        for _ in 0..40 {
            let mut body = serde_json::to_vec(&rng.json(3)).unwrap();
            match rng.below(4) {
                0 => body.truncate(rng.below(body.len() + 1)),
                1 => body = (0..rng.below(64)).map(|_| rng.next_u64() as u8).collect(),
                _ => {}
            }
            let r = c
                .post(o.url(route))
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let text = r.text().await.unwrap_or_default();
            assert!(
                status < 500,
                "{route} {status} {text} for {}",
                String::from_utf8_lossy(&body)
            );
            sent += 1;
        }
    }
    let (status, _) = get_json(&o.url("/health")).await;
    assert_eq!(status, 200);
    eprintln!("random_bodies_on_every_route_never_take_it_down: {sent} requests");
}
