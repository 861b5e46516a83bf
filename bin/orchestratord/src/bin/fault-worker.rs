//! `fault-worker`: a worker that misbehaves on purpose, for orchestratord's failure tests.
//! It speaks the worker protocol (`/health`, `/execute` SSE, `/cancel`, registration and
//! heartbeats) but generates no real text: `--mode` picks the fault.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use clap::{Parser, ValueEnum};
use futures::stream::{self, StreamExt};
use llorch_wire::tasks::{heartbeat_path, worker_path, WorkerRegistration, REGISTER_PATH};
use llorch_wire::{
    ErrorCode, ErrorEnvelope, ExecuteRequest, StopReason, WorkerEvent, WorkerHealth, WorkerState,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// The process exits as soon as an `/execute` request arrives.
    DieBeforeFirstToken,
    /// Sends `started` and `--tokens` tokens, then the process exits.
    DieMidStream,
    /// Sends `started` and `--tokens` tokens, then goes silent with the connection open.
    Stall,
    /// Streams up to `max_tokens` tokens, one per `--token-delay-ms`, then ends normally.
    Slow,
    /// Answers every `/execute` with 503 `WORKER_BUSY`.
    Busy,
}

#[derive(Debug, Clone, Parser)]
#[command(
    name = "fault-worker",
    about = "A worker that fails on purpose (tests only)"
)]
struct Args {
    #[arg(long, value_enum)]
    mode: Mode,
    #[arg(long)]
    port: u16,
    #[arg(long, default_value = "fault-worker")]
    worker_id: String,
    #[arg(long, default_value = "SmolLM2-135M-Instruct.Q4_1")]
    model: String,
    #[arg(long, default_value_t = 2048)]
    context_length: u32,
    #[arg(long, default_value_t = 1)]
    slots: u32,
    /// Tokens sent before the fault (die-mid-stream, stall).
    #[arg(long, default_value_t = 3)]
    tokens: u32,
    #[arg(long, default_value_t = 20)]
    token_delay_ms: u64,
    /// Register with this orchestrator and heartbeat.
    #[arg(long)]
    orchestrator_url: Option<String>,
}

fn health(a: &Args) -> WorkerHealth {
    WorkerHealth {
        status: "ready".into(),
        failure: None,
        state: WorkerState::Idle,
        worker_id: a.worker_id.clone(),
        model: a.model.clone(),
        model_path: String::new(),
        format: "none".into(),
        architecture: "fault".into(),
        quantization: "none".into(),
        runtime_quantization: "none".into(),
        context_length: a.context_length,
        vocab_size: 0,
        backend: "cpu".into(),
        device: "cpu".into(),
        threads: 1,
        simd: Vec::new(),
        memory: None,
        active_jobs: 0,
        queued_jobs: 0,
        slots_total: a.slots,
        parallel: a.slots,
        uptime_s: 0.0,
        load_time_ms: 0.0,
        version: env!("CARGO_PKG_VERSION").into(),
        chat_template: None,
    }
}

fn sse_event(ev: &WorkerEvent) -> Result<Event, Infallible> {
    Ok(Event::default()
        .event(ev.kind())
        .data(serde_json::to_string(ev).expect("serializable")))
}

async fn execute(State(a): State<Arc<Args>>, Json(req): Json<ExecuteRequest>) -> Response {
    let job_id = req.job_id.clone().unwrap_or_default();
    let delay = Duration::from_millis(a.token_delay_ms);
    let n = match a.mode {
        Mode::DieBeforeFirstToken => std::process::exit(3),
        Mode::Busy => {
            let env = ErrorEnvelope::new(ErrorCode::WorkerBusy, "fault-worker is always busy");
            return (
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                [("retry-after", "1")],
                Json(env),
            )
                .into_response();
        }
        Mode::DieMidStream | Mode::Stall => a.tokens,
        Mode::Slow => req.max_tokens_or_default(),
    };
    let started = WorkerEvent::Started {
        job_id: job_id.clone(),
        model: a.model.clone(),
        started_at: String::new(),
        seed: 0,
        tokens_in: 1,
        tokens_cached: 0,
        queue_time_ms: 0.0,
        prompt_logprobs: None,
    };
    let mode = a.mode;
    let tokens = stream::iter(0..n).then(move |i| async move {
        tokio::time::sleep(delay).await;
        sse_event(&WorkerEvent::Token {
            i,
            id: i,
            t: format!("tok{i} "),
            logprob: None,
        })
    });
    let tail = stream::once(async move {
        match mode {
            Mode::DieMidStream => {
                tokio::time::sleep(delay).await;
                std::process::exit(3)
            }
            Mode::Stall => std::future::pending().await,
            _ => sse_event(&WorkerEvent::End {
                job_id,
                stop_reason: StopReason::MaxTokens,
                stop_sequence_matched: None,
                tokens_in: 1,
                tokens_out: n,
                seed: 0,
                queue_time_ms: 0.0,
                prefill_time_ms: 0.0,
                decode_time_ms: 0.0,
                prefill_tokens_per_sec: 0.0,
                decode_tokens_per_sec: 0.0,
            }),
        }
    });
    Sse::new(
        stream::once(async move { sse_event(&started) })
            .chain(tokens)
            .chain(tail),
    )
    .into_response()
}

/// Register, then heartbeat until the process ends (re-registering after a 404).
async fn register_loop(a: Arc<Args>, base: String) {
    let http = reqwest::Client::new();
    let reg = WorkerRegistration {
        worker_id: a.worker_id.clone(),
        url: format!("http://127.0.0.1:{}", a.port),
        model: a.model.clone(),
        aliases: Vec::new(),
        backend: "cpu".into(),
        slots_total: a.slots,
        context_length: a.context_length,
        api_token: None,
    };
    let mut registered = false;
    loop {
        if !registered {
            registered = http
                .post(format!("{base}{REGISTER_PATH}"))
                .json(&reg)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
        } else {
            let r = http
                .post(format!("{base}{}", heartbeat_path(&a.worker_id)))
                .json(&serde_json::json!({}))
                .send()
                .await;
            registered = !r.is_ok_and(|r| r.status() == 404);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::main]
async fn main() {
    let args = Arc::new(Args::parse());
    let h = health(&args);
    let app = Router::new()
        .route("/health", get(move || async move { Json(h) }))
        .route("/execute", post(execute))
        .route(
            "/cancel",
            post(|| async { Json(serde_json::json!({"status": "cancelling"})) }),
        )
        .with_state(args.clone());
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.port))
        .await
        .expect("bind");
    if let Some(base) = args.orchestrator_url.clone() {
        tokio::spawn(register_loop(
            args.clone(),
            base.trim_end_matches('/').to_string(),
        ));
        let (a, b) = (args.clone(), base.clone());
        tokio::spawn(async move {
            let _ = tokio::signal::ctrl_c().await;
            let _ = reqwest::Client::new()
                .delete(format!(
                    "{}{}",
                    b.trim_end_matches('/'),
                    worker_path(&a.worker_id)
                ))
                .send()
                .await;
            std::process::exit(0);
        });
    }
    axum::serve(listener, app).await.expect("serve");
}
