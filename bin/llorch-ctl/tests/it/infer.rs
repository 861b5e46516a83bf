//! `llorch infer` against a real `llorch-candled` with SmolLM2 (streaming, summary, Ctrl-C
//! cancel, rejected jobs), plus a scripted SSE peer for the one path a healthy worker cannot be
//! made to take on demand: an `error` event in the middle of a stream.

use crate::common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{llorch_bin, run};
use llorch_testkit::{require_bin, require_smollm2, WorkerProcess};

fn llorch(args: &[&str]) -> std::process::Command {
    let mut cmd = std::process::Command::new(llorch_bin());
    cmd.args(args).env_remove("RUST_LOG").stdin(Stdio::null());
    cmd
}

fn worker(test: &str, extra: &[&str]) -> Option<WorkerProcess> {
    let model = require_smollm2(test)?;
    let bin = require_bin(test, "llorch-candled")?;
    Some(WorkerProcess::start(&bin, &model, extra))
}

#[test]
fn a_worker_with_a_token_needs_worker_token() {
    let test = "a_worker_with_a_token_needs_worker_token";
    let (Some(model), Some(bin)) = (require_smollm2(test), require_bin(test, "llorch-candled"))
    else {
        return;
    };
    let token = "infer-test-token-0123456789";
    let w = WorkerProcess::start_with_env(&bin, &model, &[], &[("LLORCH_WORKER_TOKEN", token)]);
    let args = [
        "infer",
        "--worker",
        &w.addr,
        "-p",
        "Hi",
        "--max-tokens",
        "2",
    ];
    let mut cmd = llorch(&args);
    cmd.env_remove("LLORCH_WORKER_TOKEN");
    let r = run(cmd);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(r.stderr.contains("UNAUTHORIZED"), "{}", r.stderr);
    let mut with_flag = args.to_vec();
    with_flag.extend(["--worker-token", token]);
    let mut cmd = llorch(&with_flag);
    cmd.env_remove("LLORCH_WORKER_TOKEN");
    let r = run(cmd);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let mut cmd = llorch(&args);
    cmd.env("LLORCH_WORKER_TOKEN", token);
    let r = run(cmd);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
}

#[test]
fn streams_tokens_and_prints_a_summary() {
    let Some(w) = worker("streams_tokens_and_prints_a_summary", &[]) else {
        return;
    };
    let r = run(llorch(&[
        "infer",
        "--worker",
        &w.addr,
        "-m",
        "user:Write one sentence about the ocean.",
        "--max-tokens",
        "8",
        "--temperature",
        "0",
    ]));
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(r.stdout.starts_with("The ocean is a"), "{:?}", r.stdout);
    assert!(
        r.stdout.ends_with('\n'),
        "the text is closed with a newline"
    );
    let summary = r.stderr.lines().last().unwrap();
    assert!(
        summary.starts_with("--- 8 tokens")
            && summary.contains("TTFT")
            && summary.contains("stop max_tokens"),
        "{summary}"
    );

    let r = run(llorch(&[
        "infer",
        "--worker",
        &w.url(),
        "--prompt",
        "The quick brown fox",
        "--max-tokens",
        "4",
        "--json",
        "--seed",
        "7",
    ]));
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let events: Vec<llorch_wire::WorkerEvent> = r
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.first().unwrap().kind(), "started");
    assert_eq!(events.iter().filter(|e| e.kind() == "token").count(), 4);
    assert!(matches!(
        events.last().unwrap(),
        llorch_wire::WorkerEvent::End {
            seed: 7,
            tokens_out: 4,
            ..
        }
    ));
}

#[test]
fn ctrl_c_cancels_the_job_and_exits_130() {
    let Some(w) = worker("ctrl_c_cancels_the_job_and_exits_130", &[]) else {
        return;
    };
    let mut child = llorch(&[
        "infer",
        "--worker",
        &w.addr,
        "--prompt",
        "1, 2, 3, 4, 5,",
        "--max-tokens",
        "4000",
        "--temperature",
        "0",
        "--job-id",
        "cancel-me",
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let run = llorch_testkit::interrupt_after_first_output(&mut child);
    let err = run.stderr;
    assert_eq!(run.status.code(), Some(130), "stderr: {err}");
    assert!(
        run.exit_after < Duration::from_secs(30),
        "exit took {:?}",
        run.exit_after
    );
    assert!(err.contains("cancelling job cancel-me"), "{err}");
    assert!(
        err.contains("stop cancelled"),
        "the worker confirms with an end event: {err}"
    );
    let start = Instant::now();
    loop {
        let (_, body) = llorch_testkit::http_get(&w.addr, "/health").unwrap();
        let h: llorch_wire::WorkerHealth = serde_json::from_str(&body).unwrap();
        if h.active_jobs == 0 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "job still active: {body}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn rejected_job_and_bad_flags_are_clear() {
    let Some(w) = worker(
        "rejected_job_and_bad_flags_are_clear",
        &["--ctx-size", "64"],
    ) else {
        return;
    };
    let r = run(llorch(&[
        "infer",
        "--worker",
        &w.addr,
        "--prompt",
        "hello",
        "--max-tokens",
        "200",
    ]));
    assert_eq!(r.code, Some(1));
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    assert!(
        r.stderr.starts_with(&format!(
            "llorch: worker {}: rejected the job (HTTP 400): CONTEXT_LENGTH_EXCEEDED",
            w.url()
        )),
        "{}",
        r.stderr
    );

    let r = run(llorch(&[
        "infer",
        "--worker",
        &w.addr,
        "--prompt",
        "x",
        "--temperature",
        "7",
    ]));
    assert_eq!(r.code, Some(2));
    assert!(
        r.stderr.contains("temperature must be between 0.0 and 2.0"),
        "{}",
        r.stderr
    );
}

#[test]
fn unreachable_worker_fails_with_one_line() {
    let port = llorch_testkit::free_port();
    let r = run(llorch(&[
        "infer",
        "--worker",
        &format!("127.0.0.1:{port}"),
        "--prompt",
        "hi",
    ]));
    assert_eq!(r.code, Some(1));
    let line = r.stderr.trim_end();
    assert!(!line.contains('\n'), "{line}");
    assert!(
        line.starts_with(&format!(
            "llorch: worker http://127.0.0.1:{port}: unreachable"
        )),
        "{line}"
    );
}

/// Serve one `/execute` with the given SSE body; returns the request body it received.
fn scripted_worker(sse: &'static str) -> (String, std::thread::JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let handle = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut len = 0usize;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap();
            }
            if line == "\r\n" {
                break;
            }
        }
        let mut body = vec![0u8; len];
        reader.read_exact(&mut body).unwrap();
        let mut s = stream;
        write!(
            s,
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n{sse}"
        )
        .unwrap();
        String::from_utf8(body).unwrap()
    });
    (addr, handle)
}

#[test]
fn error_event_is_shown_and_fails_the_command() {
    let sse = "event: started\ndata: {\"type\":\"started\",\"job_id\":\"j1\",\"model\":\"m\",\"started_at\":\"2026-01-01T00:00:00Z\",\"seed\":1,\"tokens_in\":3,\"queue_time_ms\":0.0}\n\n\
               event: token\ndata: {\"type\":\"token\",\"i\":0,\"id\":5,\"t\":\"Hel\"}\n\n\
               event: error\ndata: {\"type\":\"error\",\"job_id\":\"j1\",\"code\":\"INFERENCE_FAILED\",\"message\":\"forward pass produced NaN\",\"retriable\":false,\"tokens_out\":1}\n\n";
    let (addr, server) = scripted_worker(sse);
    let r = run(llorch(&[
        "infer",
        "--worker",
        &addr,
        "-m",
        "system:Be brief",
        "-m",
        "user:'; $(id)",
        "--job-id",
        "j1",
    ]));
    let body: serde_json::Value = serde_json::from_str(&server.join().unwrap()).unwrap();
    assert_eq!(body["job_id"], "j1");
    assert_eq!(body["messages"][1]["content"], "'; $(id)");
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert_eq!(r.stdout, "Hel\n");
    assert_eq!(
        r.stderr.trim_end(),
        format!("llorch: job j1 failed on worker http://{addr} after 1 tokens: INFERENCE_FAILED: forward pass produced NaN")
    );
}
