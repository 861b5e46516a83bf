//! Start-up (threads, device, model) and the HTTP routes of the worker.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::stream::Stream;
use llorch_engine::{Engine, EngineOptions, LoadOptions, SubmitError};
use llorch_metrics::Registry;
use llorch_wire::tasks::{WorkerHeartbeat, WorkerRegistration};
use llorch_wire::{
    CancelRequest, CancelResponse, ChatTemplateReport, DetokenizeRequest, DetokenizeResponse,
    ErrorCode, ErrorEnvelope, ExecuteRequest, TokenizeRequest, TokenizeResponse, WorkerEvent,
    WorkerHealth, WorkerState,
};
use tokio::sync::mpsc;

use crate::cli::{Args, Backend};
use crate::register::Registration;

/// Shared state of the HTTP handlers.
struct AppState {
    engine: Engine,
    metrics: Registry,
    worker_id: String,
    backend: Backend,
    device_name: String,
    /// Device memory for `/health` and `worker_vram_bytes`.
    memory: crate::memory::MemoryMonitor,
    threads: usize,
    started: Instant,
    load_time_ms: f64,
}

type Shared = Arc<AppState>;

fn device(args: &Args) -> Result<candle_core::Device> {
    match args.backend {
        Backend::Cpu => Ok(candle_core::Device::Cpu),
        Backend::Cuda => {
            if !candle_core::utils::cuda_is_available() {
                bail!("--backend cuda: this llorch-candled was built without the `cuda` feature (rebuild with `--features cuda`)");
            }
            candle_core::Device::new_cuda(args.device)
                .with_context(|| format!("cannot open CUDA device {}", args.device))
        }
        Backend::Metal => {
            if !candle_core::utils::metal_is_available() {
                bail!("--backend metal: this llorch-candled was built without the `metal` feature (rebuild with `--features metal`)");
            }
            candle_core::Device::new_metal(args.device)
                .with_context(|| format!("cannot open Metal device {}", args.device))
        }
    }
}

/// Load the model, bind, serve until SIGTERM/SIGINT.
pub fn run(args: Args) -> Result<()> {
    let started = Instant::now();
    // before the (slow) model load: a refused configuration fails at once
    let tokens = crate::auth::ApiTokens::new(&args.api_token)?;
    crate::auth::check_bind(&args.host, &tokens)?;
    let estimate = crate::memory::check(&args)?;
    let threads = args
        .threads
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        })
        .max(1);
    // candle's CPU kernels and the Q4_1 kernel use the global rayon pool, which reads
    // RAYON_NUM_THREADS when first used: size it before anything touches it.
    std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    let dev = device(&args)?;
    let device_name = match args.backend {
        Backend::Cpu => "cpu".to_string(),
        b => format!("{}:{}", b.as_str(), args.device),
    };
    let opts = LoadOptions {
        device: dev,
        requant: args.weights.requant(),
        max_context: args.ctx_size,
        chat_template: args.chat_template.clone(),
        kernels: args.kernels,
    };
    let lm = llorch_engine::load(&args.model, &opts)?;
    tracing::info!(
        model = %lm.info.name, arch = lm.info.architecture, quant = %lm.info.quantization,
        runtime_quant = %lm.info.runtime_quantization, kernels = %lm.info.kernels, ctx = lm.info.context_length,
        load_ms = format!("{:.0}", lm.info.load_time_ms), "model loaded"
    );
    let chat = &lm.info.chat_template;
    if chat.probe.as_ref().is_some_and(|p| !p.learned()) {
        tracing::warn!(template = %chat.name, "{}", chat.reason);
    } else {
        tracing::info!(template = %chat.name, reason = %chat.reason, "chat template");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let memory = crate::memory::MemoryMonitor::new(
        args.backend,
        args.device,
        estimate.map_or(0, |e| e.total_bytes),
    );
    rt.block_on(serve(
        args,
        tokens,
        lm,
        threads,
        (device_name, memory),
        started,
    ))
}

/// FAULT INJECTION (tests only): `LLORCH_FAULT_ENGINE_PANIC_AFTER_JOBS=N` makes the engine
/// thread panic when it admits job N+1, to test that a dead engine is reported.
const FAULT_ENGINE_PANIC_ENV: &str = "LLORCH_FAULT_ENGINE_PANIC_AFTER_JOBS";
/// FAULT INJECTION (tests only): `LLORCH_FAULT_JOB_PANIC=TEXT` makes a job whose id contains
/// TEXT panic in its decode step, to test that one job's panic fails that job only.
const FAULT_JOB_PANIC_ENV: &str = "LLORCH_FAULT_JOB_PANIC";
/// FAULT INJECTION (tests only): `LLORCH_FAULT_JOB_OOM=TEXT` makes a job whose id contains TEXT
/// fail its decode step with a device out-of-memory error, to test `VRAM_OOM`.
const FAULT_JOB_OOM_ENV: &str = "LLORCH_FAULT_JOB_OOM";

async fn serve(
    args: Args,
    tokens: crate::auth::ApiTokens,
    lm: llorch_engine::LoadedModel,
    threads: usize,
    (device_name, memory): (String, crate::memory::MemoryMonitor),
    started: Instant,
) -> Result<()> {
    let addr = format!("{}:{}", args.host, args.port);
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .with_context(|| {
            format!("cannot listen on {addr} (port in use? pick another with --port)")
        })?;
    let worker_id = args
        .worker_id
        .clone()
        .unwrap_or_else(|| format!("worker-{}", args.port));
    let model_name = lm.info.name.clone();
    let ctx = lm.info.context_length as u32;
    let engine = Engine::with_options(
        Arc::new(lm),
        EngineOptions {
            queue_capacity: args.max_queue,
            parallel: args.parallel,
            prompt_cache_bytes: args.prompt_cache_mb << 20,
            fault_panic_after_jobs: std::env::var(FAULT_ENGINE_PANIC_ENV)
                .ok()
                .and_then(|v| v.parse().ok())
                .inspect(|n| tracing::warn!("FAULT INJECTION: {FAULT_ENGINE_PANIC_ENV}={n}")),
            fault_job_panic: std::env::var(FAULT_JOB_PANIC_ENV)
                .ok()
                .inspect(|t| tracing::warn!("FAULT INJECTION: {FAULT_JOB_PANIC_ENV}={t}")),
            fault_job_oom: std::env::var(FAULT_JOB_OOM_ENV)
                .ok()
                .inspect(|t| tracing::warn!("FAULT INJECTION: {FAULT_JOB_OOM_ENV}={t}")),
        },
    );
    let state = Arc::new(AppState {
        metrics: crate::metrics::registry(),
        engine,
        worker_id: worker_id.clone(),
        backend: args.backend,
        device_name,
        memory,
        threads,
        started,
        load_time_ms: started.elapsed().as_secs_f64() * 1e3,
    });
    let app = router(state.clone(), tokens.clone());
    tracing::info!(%addr, worker_id, auth = tokens.required(), ready_ms = format!("{:.0}", state.load_time_ms), "worker ready");
    let http = reqwest::Client::new();
    let registration = args.orchestrator_url.as_ref().map(|o| Registration {
        orchestrator_url: o.clone(),
        token: args.orchestrator_token.clone(),
        body: WorkerRegistration {
            worker_id: worker_id.clone(),
            url: args
                .advertise_url
                .clone()
                .unwrap_or_else(|| format!("http://{addr}")),
            model: args.model_id.clone().unwrap_or_else(|| model_name.clone()),
            aliases: if args.model_id.is_some() {
                vec![model_name.clone()]
            } else {
                vec![]
            },
            backend: args.backend.as_str().to_string(),
            // jobs the engine batches together; queueing beyond that is the orchestrator's job
            slots_total: args.parallel,
            context_length: ctx,
            api_token: tokens
                .first()
                .map(|t| llorch_wire::tasks::Secret(t.to_string())),
        },
    });
    let reg_task = registration.clone().map(|r| {
        let st = state.clone();
        let load = move || {
            let failure = st.engine.status().failure();
            WorkerHeartbeat {
                active_jobs: st.engine.status().active.load(Ordering::SeqCst),
                queued_jobs: st.engine.status().queued.load(Ordering::SeqCst),
                status: Some(if failure.is_some() { "failed" } else { "ready" }.into()),
                failure,
            }
        };
        tokio::spawn(r.run(http.clone(), load))
    });
    // Events are small writes: without TCP_NODELAY a token written right after `started` waits
    // for the peer's delayed ACK (up to 40 ms on Linux) on a kept-alive connection.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    if let Some(t) = reg_task {
        t.abort();
    }
    if let Some(r) = registration {
        r.deregister(&http).await;
    }
    tracing::info!("worker stopped");
    Ok(())
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
    tracing::info!("shutdown signal received");
}

fn router(state: Shared, tokens: crate::auth::ApiTokens) -> Router {
    Router::new()
        .route("/execute", post(execute))
        .route("/cancel", post(cancel))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/tokenize", post(tokenize))
        .route("/detokenize", post(detokenize))
        .fallback(crate::auth::unknown_route)
        .method_not_allowed_fallback(crate::auth::wrong_method)
        .layer(middleware::from_fn_with_state(
            Arc::new(tokens),
            crate::auth::require_token,
        ))
        .layer(middleware::from_fn(correlation_id))
        .with_state(state)
}

/// Echo `X-Correlation-Id` (or make one) on every response.
async fn correlation_id(req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get("x-correlation-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let mut resp = next.run(req).await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-correlation-id", v);
    }
    resp
}

/// An error envelope as an HTTP response with the code's status (and Retry-After when busy).
fn error(env: ErrorEnvelope) -> Response {
    let status = StatusCode::from_u16(env.error.code.http_status())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = (status, Json(&env)).into_response();
    if let Some(ms) = env.error.retry_after_ms {
        let secs = ms.div_ceil(1000).max(1);
        resp.headers_mut()
            .insert("retry-after", HeaderValue::from(secs));
    }
    resp
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, Box<ErrorEnvelope>> {
    serde_json::from_slice(body).map_err(|e| {
        Box::new(ErrorEnvelope::invalid(vec![llorch_wire::FieldError::new(
            "body",
            "json",
            format!("invalid JSON body: {e}"),
        )]))
    })
}

async fn execute(State(st): State<Shared>, body: Bytes) -> Response {
    let req: ExecuteRequest = match parse_json(&body) {
        Ok(r) => r,
        Err(env) => return error(*env),
    };
    let lm = st.engine.model().clone();
    let job = match tokio::task::spawn_blocking(move || crate::prepare::prepare(&lm, req)).await {
        Ok(Ok(job)) => job,
        Ok(Err(env)) => {
            st.metrics
                .inc("worker_requests_total", &[("outcome", "rejected")], 1.0);
            return error(env);
        }
        Err(e) => {
            return error(ErrorEnvelope::new(
                ErrorCode::Internal,
                format!("tokenizer task failed: {e}"),
            ))
        }
    };
    let job_id = job.job_id.clone();
    let (tx, rx) = mpsc::unbounded_channel::<WorkerEvent>();
    let admitted = Instant::now();
    let metrics_state = st.clone();
    let mut last_token: Option<Instant> = None;
    let sink = Box::new(move |ev: WorkerEvent| {
        let now = Instant::now();
        let first = matches!(ev, WorkerEvent::Token { .. }) && last_token.is_none();
        let since_prev = last_token.map(|t| (now - t).as_secs_f64() * 1e3);
        if matches!(ev, WorkerEvent::Token { .. }) {
            last_token = Some(now);
        }
        crate::metrics::record(
            &metrics_state.metrics,
            &ev,
            (now - admitted).as_secs_f64() * 1e3,
            since_prev,
            first,
        );
        tx.send(ev).is_ok()
    });
    if let Err(e) = st.engine.submit(job, sink) {
        st.metrics
            .inc("worker_requests_total", &[("outcome", "rejected")], 1.0);
        let env = match e {
            SubmitError::Busy(q) => {
                let mut env = ErrorEnvelope::new(
                    ErrorCode::WorkerBusy,
                    format!("worker is busy: {q} jobs already waiting"),
                );
                env.error.retry_after_ms = Some(1000);
                env
            }
            SubmitError::DuplicateJobId(id) => {
                ErrorEnvelope::invalid(vec![llorch_wire::FieldError::new(
                    "job_id",
                    "unique",
                    format!("job_id `{id}` is already running or queued on this worker"),
                )])
            }
            SubmitError::Stopped => {
                ErrorEnvelope::new(ErrorCode::ShuttingDown, "worker is shutting down")
            }
            SubmitError::Failed(reason) => ErrorEnvelope::new(
                ErrorCode::EngineFailed,
                format!("this worker's engine has failed and it must be restarted: {reason}"),
            ),
        };
        return error(env);
    }
    let guard = CancelOnDrop {
        engine: st.engine.clone(),
        job_id,
        done: false,
    };
    Sse::new(event_stream(rx, guard))
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// Cancels the job if the client goes away before the terminal event.
struct CancelOnDrop {
    engine: Engine,
    job_id: String,
    done: bool,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if !self.done && self.engine.cancel(&self.job_id) {
            tracing::info!(job_id = %self.job_id, "client disconnected; job cancelled");
        }
    }
}

fn event_stream(
    rx: mpsc::UnboundedReceiver<WorkerEvent>,
    guard: CancelOnDrop,
) -> impl Stream<Item = Result<Event, std::convert::Infallible>> {
    futures::stream::unfold((rx, guard), |(mut rx, mut guard)| async move {
        let ev = rx.recv().await?;
        if ev.is_terminal() {
            guard.done = true;
        }
        let data = serde_json::to_string(&ev).unwrap_or_default();
        Some((
            Ok(Event::default().event(ev.kind()).data(data)),
            (rx, guard),
        ))
    })
}

async fn cancel(State(st): State<Shared>, body: Bytes) -> Response {
    let req: CancelRequest = match parse_json(&body) {
        Ok(r) => r,
        Err(env) => return error(*env),
    };
    if st.engine.cancel(&req.job_id) {
        Json(CancelResponse {
            job_id: req.job_id,
            status: "cancelling".into(),
        })
        .into_response()
    } else {
        error(ErrorEnvelope::new(
            ErrorCode::NotFound,
            format!("no running or queued job `{}`", req.job_id),
        ))
    }
}

fn health_of(st: &AppState) -> WorkerHealth {
    let info = &st.engine.model().info;
    let active = st.engine.status().active.load(Ordering::SeqCst);
    let queued = st.engine.status().queued.load(Ordering::SeqCst);
    let failure = st.engine.status().failure();
    WorkerHealth {
        status: if failure.is_some() { "failed" } else { "ready" }.into(),
        failure,
        state: if active + queued > 0 {
            WorkerState::Busy
        } else {
            WorkerState::Idle
        },
        worker_id: st.worker_id.clone(),
        model: info.name.clone(),
        model_path: info.path.display().to_string(),
        format: info.format.into(),
        architecture: info.architecture.into(),
        quantization: info.quantization.clone(),
        runtime_quantization: info.runtime_quantization.clone(),
        context_length: info.context_length as u32,
        vocab_size: info.vocab_size as u32,
        backend: st.backend.as_str().into(),
        device: st.device_name.clone(),
        threads: st.threads as u32,
        simd: llorch_engine::simd_features(),
        active_jobs: active,
        queued_jobs: queued,
        slots_total: st.engine.slots_total(),
        parallel: st.engine.parallel(),
        uptime_s: st.started.elapsed().as_secs_f64(),
        load_time_ms: st.load_time_ms,
        memory: Some(st.memory.current()),
        version: env!("CARGO_PKG_VERSION").into(),
        chat_template: Some(ChatTemplateReport {
            name: info.chat_template.name.clone(),
            reason: info.chat_template.reason.clone(),
            turn_stops: st.engine.model().chat.turn_stops().to_vec(),
            end_of_turn_token: info.chat_template.probe.as_ref().map(|p| p.token.clone()),
            end_of_turn_logprob: info.chat_template.probe.as_ref().map(|p| p.logprob),
        }),
    }
}

async fn health(State(st): State<Shared>) -> Json<WorkerHealth> {
    Json(health_of(&st))
}

async fn metrics(State(st): State<Shared>) -> Response {
    let s = st.engine.status();
    st.metrics.set(
        "worker_jobs_active",
        &[],
        s.active.load(Ordering::SeqCst) as f64,
    );
    st.metrics.set(
        "worker_jobs_queued",
        &[],
        s.queued.load(Ordering::SeqCst) as f64,
    );
    st.metrics.set(
        "worker_uptime_seconds",
        &[],
        st.started.elapsed().as_secs_f64(),
    );
    st.metrics.set(
        "worker_vram_bytes",
        &[],
        st.memory.current().used_bytes as f64,
    );
    st.metrics
        .set("worker_slots", &[], st.engine.parallel() as f64);
    st.metrics.set(
        "worker_batch_size_peak",
        &[],
        s.peak_batch.load(Ordering::SeqCst) as f64,
    );
    let mut h = HeaderMap::new();
    h.insert(
        "content-type",
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    (h, st.metrics.render()).into_response()
}

async fn tokenize(State(st): State<Shared>, body: Bytes) -> Response {
    let req: TokenizeRequest = match parse_json(&body) {
        Ok(r) => r,
        Err(env) => return error(*env),
    };
    let lm = st.engine.model().clone();
    let res = tokio::task::spawn_blocking(move || -> Result<TokenizeResponse, ErrorEnvelope> {
        let invalid = |m: String| {
            ErrorEnvelope::invalid(vec![llorch_wire::FieldError::new("text", "valid", m)])
        };
        let (text, rendered) = match (req.text, req.messages) {
            (Some(t), None) => (t, None),
            (None, Some(m)) => {
                let r = lm
                    .chat
                    .render(&m, true)
                    .map_err(|e| invalid(format!("chat template failed: {e:#}")))?;
                (r.clone(), Some(r))
            }
            _ => return Err(invalid("give exactly one of text or messages".into())),
        };
        let ids = lm
            .tokenizer
            .encode(
                &text,
                req.add_special_tokens && crate::prepare::add_bos_for(&lm, &text),
            )
            .map_err(|e| invalid(format!("{e:#}")))?;
        let pieces = req.with_pieces.then(|| {
            ids.iter()
                .map(|&i| lm.tokenizer.piece(i).unwrap_or_default().to_string())
                .collect()
        });
        Ok(TokenizeResponse {
            count: ids.len(),
            ids,
            pieces,
            rendered,
        })
    })
    .await;
    match res {
        Ok(Ok(r)) => Json(r).into_response(),
        Ok(Err(env)) => error(env),
        Err(e) => error(ErrorEnvelope::new(ErrorCode::Internal, e.to_string())),
    }
}

async fn detokenize(State(st): State<Shared>, body: Bytes) -> Response {
    let req: DetokenizeRequest = match parse_json(&body) {
        Ok(r) => r,
        Err(env) => return error(*env),
    };
    let vocab = st.engine.model().info.vocab_size as u32;
    if let Some(bad) = req.ids.iter().find(|&&i| i >= vocab) {
        return error(ErrorEnvelope::invalid(vec![llorch_wire::FieldError::new(
            "ids",
            format!("range(0..{vocab})"),
            format!("ids contains {bad}, outside the vocabulary (0..{vocab})"),
        )]));
    }
    let text = st
        .engine
        .model()
        .tokenizer
        .decode(&req.ids, req.skip_special_tokens);
    Json(DetokenizeResponse { text }).into_response()
}
