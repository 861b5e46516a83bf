//! The worker's routes in process, without a model: `llorch_candled::app` over the scripted
//! fault-injection backend (FAULT INJECTION: `FaultBackend` in `slow` or `busy` mode), served
//! on 127.0.0.1:0. Validation envelopes, authentication, SSE framing, cancel, fallbacks.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use llorch_candled::auth::ApiTokens;
use llorch_candled::fault::{FaultBackend, FaultMode, FaultScript};
use llorch_candled::{AppState, DeviceReport, ServerConfig};
use llorch_wire::{ErrorEnvelope, WorkerHealth, WorkerState};
use serde_json::{json, Value};

const TOKEN: &str = "route-test-token-0123456789";

/// A worker app over a fault backend on a free port; returns its base URL.
async fn serve(mode: FaultMode, delay_ms: u64, tokens: &[&str]) -> String {
    let tokens =
        ApiTokens::new(&tokens.iter().map(|t| t.to_string()).collect::<Vec<_>>()).expect("tokens");
    let server = ServerConfig::new("127.0.0.1", 0, tokens, Some("w-routes".into()), None, None)
        .expect("config");
    let script = FaultScript {
        mode,
        tokens: 3,
        token_delay: Duration::from_millis(delay_ms),
    };
    let backend = Arc::new(FaultBackend::new(script, "fault-model", 2048, 2));
    let device = DeviceReport {
        backend: "cpu",
        device: "cpu".into(),
        threads: 1,
        memory: None,
    };
    let state = AppState::new(backend, &server, device, Instant::now());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, llorch_candled::app(state)).await });
    format!("http://{addr}")
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

async fn post(base: &str, path: &str, token: Option<&str>, body: &str) -> reqwest::Response {
    let mut rb = http()
        .post(format!("{base}{path}"))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(t) = token {
        rb = rb.bearer_auth(t);
    }
    rb.send().await.unwrap()
}

async fn get(base: &str, path: &str) -> reqwest::Response {
    http().get(format!("{base}{path}")).send().await.unwrap()
}

async fn metrics(base: &str) -> String {
    get(base, "/metrics").await.text().await.unwrap()
}

async fn health(base: &str) -> WorkerHealth {
    get(base, "/health").await.json().await.unwrap()
}

async fn envelope(r: reqwest::Response) -> (u16, ErrorEnvelope) {
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    let env =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not an envelope ({e}): {text}"));
    (status, env)
}

/// The SSE frames of a body: (event name, data as JSON).
fn frames(body: &str) -> Vec<(String, Value)> {
    body.split("\n\n")
        .filter(|f| !f.trim().is_empty() && !f.starts_with(':'))
        .map(|f| {
            let field = |name: &str| {
                f.lines()
                    .find_map(|l| l.strip_prefix(name))
                    .unwrap_or_else(|| panic!("frame without {name}: {f:?}"))
                    .trim()
                    .to_string()
            };
            let data = serde_json::from_str(&field("data:")).expect("data is JSON");
            (field("event:"), data)
        })
        .collect()
}

/// The value of an unlabelled or labelled sample in a Prometheus text.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread")]
async fn validation_errors_are_typed_envelopes_naming_every_field() {
    let base = serve(FaultMode::Slow, 1, &[]).await;
    let cases: &[(&str, &[&str])] = &[
        ("{not json", &["body"]),
        (r#"{"max_tokens":5}"#, &["prompt"]),
        (r#"{"prompt":"hi","temperature":-1}"#, &["temperature"]),
        (r#"{"prompt":"hi","top_p":2}"#, &["top_p"]),
        (
            r#"{"prompt":"hi","max_tokens":0,"temperature":-1,"top_p":2}"#,
            &["max_tokens", "temperature", "top_p"],
        ),
    ];
    for (body, fields) in cases {
        let (status, env) = envelope(post(&base, "/execute", None, body).await).await;
        assert_eq!(
            (status, env.error.code.as_str()),
            (400, "INVALID_REQUEST"),
            "{body}"
        );
        let got: Vec<&str> = env.error.fields.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(&got, fields, "{body}");
        assert!(env.error.fields.iter().all(|f| !f.message.is_empty()));
    }
    let (status, env) = envelope(post(&base, "/cancel", None, "[]").await).await;
    assert_eq!((status, env.error.fields[0].field.as_str()), (400, "body"));
    // a body that is not JSON is not a job; invalid jobs count as rejected
    let metrics = metrics(&base).await;
    assert_eq!(
        sample(&metrics, r#"worker_requests_total{outcome="rejected"}"#),
        Some(4.0),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_guards_every_route_but_health() {
    let base = serve(FaultMode::Slow, 1, &[TOKEN]).await;
    let r = get(&base, "/health").await;
    assert_eq!(r.status(), 200);
    for (path, body) in [
        ("/execute", r#"{"prompt":"hi","max_tokens":1}"#),
        ("/cancel", r#"{"job_id":"j"}"#),
    ] {
        for token in [None, Some("wrong-token-0123456789")] {
            let r = post(&base, path, token, body).await;
            assert_eq!(
                r.headers().get("www-authenticate").map(|v| v.as_bytes()),
                Some(&b"Bearer"[..]),
                "{path}"
            );
            let (status, env) = envelope(r).await;
            assert_eq!(
                (status, env.error.code.as_str()),
                (401, "UNAUTHORIZED"),
                "{path} {token:?}"
            );
        }
    }
    let r = get(&base, "/metrics").await;
    assert_eq!(r.status(), 401);
    let r = post(
        &base,
        "/execute",
        Some(TOKEN),
        r#"{"prompt":"hi","max_tokens":1}"#,
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(frames(&r.text().await.unwrap()).len(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn execute_streams_started_tokens_and_end_as_sse_frames() {
    let base = serve(FaultMode::Slow, 1, &[]).await;
    let r = http()
        .post(format!("{base}/execute"))
        .header("x-correlation-id", "corr-42")
        .json(&json!({"prompt": "hi", "max_tokens": 3, "job_id": "job-sse"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-correlation-id"], "corr-42");
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let evs = frames(&r.text().await.unwrap());
    let kinds: Vec<&str> = evs.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(kinds, ["started", "token", "token", "token", "end"]);
    assert_eq!(evs[0].1["job_id"], "job-sse");
    let text: String = evs[1..4]
        .iter()
        .map(|(_, d)| d["t"].as_str().unwrap())
        .collect();
    assert_eq!(text, "tok0 tok1 tok2 ");
    assert_eq!(evs[4].1["stop_reason"], "max_tokens");
    assert_eq!(evs[4].1["tokens_out"], 3);
    // the frames' data are wire events: the client crate parses them
    for (_, data) in &evs {
        serde_json::from_value::<llorch_wire::WorkerEvent>(data.clone()).expect("wire event");
    }
    let metrics = metrics(&base).await;
    assert_eq!(
        sample(&metrics, r#"worker_requests_total{outcome="success"}"#),
        Some(1.0)
    );
    assert_eq!(sample(&metrics, "worker_tokens_generated_total"), Some(3.0));
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_ends_a_running_job_and_unknown_jobs_are_404() {
    let base = serve(FaultMode::Slow, 20, &[]).await;
    let (status, env) = envelope(post(&base, "/cancel", None, r#"{"job_id":"nope"}"#).await).await;
    assert_eq!((status, env.error.code.as_str()), (404, "NOT_FOUND"));
    assert!(env.error.message.contains("nope"), "{}", env.error.message);

    let r = post(
        &base,
        "/execute",
        None,
        r#"{"prompt":"hi","max_tokens":1000,"job_id":"long"}"#,
    )
    .await;
    assert_eq!(r.status(), 200);
    let mut body = r.bytes_stream();
    let mut text = String::new();
    while !text.contains("event: token") {
        text.push_str(&String::from_utf8_lossy(
            &body.next().await.unwrap().unwrap(),
        ));
    }
    let h = health(&base).await;
    assert_eq!((h.state, h.active_jobs), (WorkerState::Busy, 1));
    let r = post(&base, "/cancel", None, r#"{"job_id":"long"}"#).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v, json!({"job_id": "long", "status": "cancelling"}));
    let t0 = Instant::now();
    while let Some(chunk) = body.next().await {
        text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
    }
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "the stream did not end"
    );
    let evs = frames(&text);
    let (kind, end) = evs.last().unwrap();
    assert_eq!(
        (kind.as_str(), end["stop_reason"].as_str()),
        ("end", Some("cancelled"))
    );
    assert!(end["tokens_out"].as_u64().unwrap() < 1000);
    // the job is gone
    let r = post(&base, "/cancel", None, r#"{"job_id":"long"}"#).await;
    assert_eq!(r.status(), 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_routes_wrong_methods_and_busy_get_envelopes() {
    let base = serve(FaultMode::Busy, 1, &[]).await;
    let r = get(&base, "/nope").await;
    let (status, env) = envelope(r).await;
    assert_eq!((status, env.error.code.as_str()), (404, "NOT_FOUND"));
    assert!(env.error.message.contains("/nope"), "{}", env.error.message);
    let r = get(&base, "/execute").await;
    let (status, env) = envelope(r).await;
    assert_eq!(
        (status, env.error.code.as_str()),
        (405, "METHOD_NOT_ALLOWED")
    );

    let r = post(&base, "/execute", None, r#"{"prompt":"hi"}"#).await;
    assert_eq!(r.headers()["retry-after"], "1");
    let (status, env) = envelope(r).await;
    assert_eq!((status, env.error.code.as_str()), (503, "WORKER_BUSY"));
    assert!(env.error.retriable);
    let h = health(&base).await;
    assert_eq!(
        (
            h.worker_id.as_str(),
            h.model.as_str(),
            h.context_length,
            h.parallel
        ),
        ("w-routes", "fault-model", 2048, 2)
    );
    assert_eq!((h.status.as_str(), h.state), ("ready", WorkerState::Idle));
}

/// The router serves exactly `llorch_wire::routes::worker` (each route with its methods, 405
/// for the others), and names its paths only through those constants.
#[tokio::test(flavor = "multi_thread")]
async fn the_router_serves_exactly_the_wire_crates_routes() {
    let base = serve(FaultMode::Busy, 1, &[TOKEN]).await;
    let addr = base.trim_start_matches("http://").to_string();
    let problems = tokio::task::spawn_blocking(move || {
        llorch_testkit::routes::check_served(&addr, llorch_wire::routes::worker::ALL, Some(TOKEN))
    })
    .await
    .unwrap();
    assert!(problems.is_empty(), "{problems:#?}");
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let literals = llorch_testkit::routes::literal_routes(&src, &[]);
    assert!(
        literals.is_empty(),
        "route paths must be llorch_wire::routes constants: {literals:#?}"
    );
}
