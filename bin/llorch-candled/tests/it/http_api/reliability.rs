//! Authentication (`--api-token` / `LLORCH_WORKER_TOKEN`), error envelopes for unknown routes
//! and wrong methods, and a dead engine reported by `/health` (FAULT INJECTION: the engine
//! thread is made to panic with `LLORCH_FAULT_ENGINE_PANIC_AFTER_JOBS`).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use llorch_client::{ClientError, WorkerClient};
use llorch_testkit::WorkerProcess;
use llorch_wire::{ErrorCode, WorkerEvent, WorkerHealth};

use super::{greedy_req, rt};

const TOKEN_A: &str = "worker-token-aaaaaaaaaaaaaaaa";
const TOKEN_B: &str = "worker-token-bbbbbbbbbbbbbbbb";

fn start_env(test: &str, env: &[(&str, &str)]) -> Option<WorkerProcess> {
    let model = llorch_testkit::require_smollm2(test)?;
    Some(WorkerProcess::start_with_env(
        std::path::Path::new(env!("CARGO_BIN_EXE_llorch-candled")),
        &model,
        &[],
        env,
    ))
}

/// One raw HTTP request: (status, headers + body as text).
fn raw(addr: &str, method: &str, path: &str, auth: Option<&str>, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let auth = auth
        .map(|t| format!("authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nhost: x\r\n{auth}content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, out)
}

fn envelope_code(text: &str) -> String {
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| {
        panic!("not a JSON envelope ({e}): {text}");
    });
    v["error"]["code"].as_str().unwrap_or_default().to_string()
}

#[test]
fn tokens_guard_every_route_but_health() {
    let tokens = format!("{TOKEN_A},{TOKEN_B}");
    let Some(w) = start_env(
        "tokens_guard_every_route_but_health",
        &[("LLORCH_WORKER_TOKEN", &tokens)],
    ) else {
        return;
    };
    let exec = r#"{"prompt":"Hi","max_tokens":2,"temperature":0}"#;
    assert_eq!(raw(&w.addr, "GET", "/health", None, "").0, 200);
    for (auth, why) in [
        (None, "no token"),
        (Some("worker-token-wrong-00000000"), "wrong"),
    ] {
        for (method, path, body) in [
            ("POST", "/execute", exec),
            ("POST", "/cancel", r#"{"job_id":"x"}"#),
            ("POST", "/tokenize", r#"{"text":"x"}"#),
            ("GET", "/metrics", ""),
        ] {
            let (status, text) = raw(&w.addr, method, path, auth, body);
            assert_eq!(status, 401, "{why} {path}: {text}");
            assert_eq!(envelope_code(&text), "UNAUTHORIZED");
            assert!(
                text.to_ascii_lowercase()
                    .contains("www-authenticate: bearer"),
                "{text}"
            );
        }
    }
    // either token works, through the typed client too
    for t in [TOKEN_A, TOKEN_B] {
        assert_eq!(
            raw(&w.addr, "POST", "/tokenize", Some(t), r#"{"text":"x"}"#).0,
            200
        );
        let client = WorkerClient::new(&w.url()).with_token(Some(t.into()));
        let n = rt().block_on(async {
            let s = client.execute(&greedy_req("Hello", 2)).await.unwrap();
            futures::StreamExt::collect::<Vec<_>>(s).await.len()
        });
        assert!(n >= 2, "started and end at least");
    }
    // unknown routes and wrong methods answer with the envelope
    let (status, text) = raw(&w.addr, "GET", "/nope", Some(TOKEN_A), "");
    assert_eq!((status, envelope_code(&text).as_str()), (404, "NOT_FOUND"));
    let (status, text) = raw(&w.addr, "GET", "/execute", Some(TOKEN_A), "");
    assert_eq!(
        (status, envelope_code(&text).as_str()),
        (405, "METHOD_NOT_ALLOWED")
    );
    let log = std::fs::read_to_string(&w.log).unwrap();
    assert!(
        !log.contains("worker-token-"),
        "a token reached the log:\n{log}"
    );
}

fn health(w: &WorkerProcess) -> WorkerHealth {
    let (status, body) = llorch_testkit::http_get(&w.addr, "/health").unwrap();
    assert_eq!(status, 200);
    serde_json::from_str(&body).unwrap()
}

#[test]
fn a_dead_engine_is_reported_not_hidden() {
    // FAULT INJECTION: the engine thread panics when it admits the second job.
    let Some(w) = start_env(
        "a_dead_engine_is_reported_not_hidden",
        &[("LLORCH_FAULT_ENGINE_PANIC_AFTER_JOBS", "1")],
    ) else {
        return;
    };
    let client = WorkerClient::new(&w.url());
    assert_eq!(health(&w).status, "ready");
    rt().block_on(async {
        // the first job runs normally
        let s = client.execute(&greedy_req("Hello", 3)).await.unwrap();
        let evs: Vec<_> = futures::StreamExt::collect::<Vec<_>>(s).await;
        assert!(matches!(evs.last(), Some(Ok(WorkerEvent::End { .. }))));
        // the second kills the engine: its stream breaks off without a terminal event
        match client.execute(&greedy_req("Hello", 3)).await {
            Ok(s) => {
                let evs: Vec<_> = futures::StreamExt::collect::<Vec<_>>(s).await;
                assert!(
                    !evs.iter().any(|e| matches!(e, Ok(ev) if ev.is_terminal())),
                    "{evs:?}"
                );
            }
            Err(e) => panic!("the job was accepted before the engine died: {e}"),
        }
    });
    let start = Instant::now();
    let h = loop {
        let h = health(&w);
        if h.status == "failed" || start.elapsed() > Duration::from_secs(30) {
            break h;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(h.status, "failed");
    let reason = h.failure.unwrap_or_default();
    assert!(reason.contains("fault injection"), "{reason}");
    // every further job is refused at once with the reason
    match rt().block_on(client.execute(&greedy_req("Hello", 3))) {
        Err(ClientError::Api {
            status, envelope, ..
        }) => {
            assert_eq!(status, 503);
            assert_eq!(envelope.error.code, ErrorCode::EngineFailed);
            assert!(envelope.error.message.contains("fault injection"));
        }
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("a dead engine accepted a job"),
    }
}

/// Token ids of a finished stream, and its terminal event.
fn tokens_and_end(evs: &[Result<WorkerEvent, ClientError>]) -> (Vec<u32>, Option<WorkerEvent>) {
    let ids = evs
        .iter()
        .filter_map(|e| match e {
            Ok(WorkerEvent::Token { id, .. }) => Some(*id),
            _ => None,
        })
        .collect();
    let end = evs
        .iter()
        .filter_map(|e| e.as_ref().ok())
        .find(|e| e.is_terminal())
        .cloned();
    (ids, end)
}

#[test]
fn a_panic_in_one_job_fails_that_job_only() {
    // FAULT INJECTION: a job whose id contains "boom" panics in its decode step; one whose id
    // contains "oom" fails it with a device out-of-memory error.
    let Some(w) = start_env(
        "a_panic_in_one_job_fails_that_job_only",
        &[
            ("LLORCH_FAULT_JOB_PANIC", "boom"),
            ("LLORCH_FAULT_JOB_OOM", "vram"),
        ],
    ) else {
        return;
    };
    let client = WorkerClient::new(&w.url());
    let with_id = |id: &str| {
        let mut r = greedy_req("The capital of France is", 16);
        r.job_id = Some(id.into());
        r
    };
    rt().block_on(async {
        let collect = |req| {
            let client = client.clone();
            async move {
                let s = client.execute(&req).await.unwrap();
                futures::StreamExt::collect::<Vec<_>>(s).await
            }
        };
        // batched with the failing job, then alone: the same tokens, and a clean end
        let (ok, bad) = tokio::join!(collect(with_id("ok-1")), collect(with_id("boom-1")));
        let (solo, _) = tokens_and_end(&collect(with_id("ok-2")).await);
        let (ok_ids, ok_end) = tokens_and_end(&ok);
        assert!(matches!(ok_end, Some(WorkerEvent::End { .. })), "{ok:?}");
        assert_eq!(ok_ids, solo, "the job beside the panic was disturbed");
        match tokens_and_end(&bad).1 {
            Some(WorkerEvent::Error { code, message, .. }) => {
                assert_eq!(code, ErrorCode::InferenceFailed);
                assert!(message.contains("job panicked"), "{message}");
            }
            other => panic!("the panicking job ended with {other:?}"),
        }
        // an out-of-memory ends that job with VRAM_OOM (retriable), the worker stays up
        match tokens_and_end(&collect(with_id("vram-1")).await).1 {
            Some(WorkerEvent::Error {
                code, retriable, ..
            }) => assert_eq!((code, retriable), (ErrorCode::VramOom, true)),
            other => panic!("the out-of-memory job ended with {other:?}"),
        }
        let (again, _) = tokens_and_end(&collect(with_id("ok-3")).await);
        assert_eq!(again, solo, "the worker serves the next job unchanged");
    });
    assert_eq!(health(&w).status, "ready", "{}", w.log_tail());
    assert_eq!(health(&w).active_jobs, 0);
}
