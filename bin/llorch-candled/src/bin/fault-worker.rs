//! `fault-worker` (FAULT INJECTION, tests only): the worker's real HTTP layer, registration and
//! heartbeats over [`FaultBackend`], a backend that misbehaves on purpose (`--mode` picks the
//! fault) and generates no real text. orchestratord's failure tests run it.

#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use llorch_candled::auth::ApiTokens;
use llorch_candled::fault::{FaultBackend, FaultMode, FaultScript};
use llorch_candled::{AppState, DeviceReport, OrchestratorConfig, ServerConfig};

#[derive(Debug, Clone, Parser)]
#[command(
    name = "fault-worker",
    about = "A worker that fails on purpose (tests only)"
)]
struct Args {
    #[arg(long, value_enum)]
    mode: FaultMode,
    #[arg(long)]
    port: u16,
    #[arg(long, default_value = "fault-worker")]
    worker_id: String,
    /// Model name served (and registered).
    #[arg(long, default_value = "SmolLM2-135M-Instruct.Q4_1")]
    model: String,
    #[arg(long, default_value_t = 2048)]
    context_length: u32,
    /// Jobs at once, as reported and registered (not enforced).
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
    #[command(flatten)]
    log: llorch_http::logging::LogArgs,
}

async fn run(args: Args) -> anyhow::Result<()> {
    let started = Instant::now();
    let orchestrator = args.orchestrator_url.clone().map(|url| OrchestratorConfig {
        url,
        token: None,
        model_id: None,
    });
    let server = ServerConfig::new(
        "127.0.0.1",
        args.port,
        ApiTokens::default(),
        Some(args.worker_id),
        None,
        orchestrator,
    )?;
    let listener = llorch_candled::serve::bind(server.bind).await?;
    let script = FaultScript {
        mode: args.mode,
        tokens: args.tokens,
        token_delay: Duration::from_millis(args.token_delay_ms),
    };
    let backend = FaultBackend::new(script, &args.model, args.context_length, args.slots);
    let device = DeviceReport {
        backend: "cpu",
        device: "cpu".into(),
        threads: 1,
        memory: None,
    };
    let state = AppState::new(Arc::new(backend), &server, device, started);
    llorch_candled::serve(listener, state, &server).await
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    llorch_http::logging::init(args.log.log_format, "info");
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fault-worker: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
