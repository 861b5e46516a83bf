//! The worker's HTTP surface: [`app`] builds the router over any [`Backend`], one module per
//! route family. Every answer carries `X-Correlation-Id`; every non-2xx answer is the wire
//! crate's error envelope, unknown routes and wrong methods included (llorch-http).

mod cancel;
mod execute;
mod health;
mod metrics;
mod tokenize;

use std::sync::Arc;
use std::time::Instant;

use axum::middleware;
use axum::routing::{get, post};
use axum::Router;
use llorch_http::auth::{require_token, TokenGate};
use llorch_http::{ApiTokens, BodyLimit};

use crate::backend::Backend;
use crate::config::ServerConfig;
use crate::memory::MemoryMonitor;

pub use health::health_of;
pub use llorch_http::error_response as error;

/// The device a worker computes on, as `/health` reports it.
pub struct DeviceReport {
    /// `cpu`, `cuda` or `metal`.
    pub backend: &'static str,
    /// e.g. `cpu`, `cuda:0`.
    pub device: String,
    pub threads: usize,
    /// Device memory for `/health` and `worker_vram_bytes` (None: not measured).
    pub memory: Option<MemoryMonitor>,
}

/// Shared state of the handlers.
pub struct AppState {
    pub backend: Arc<dyn Backend>,
    pub metrics: crate::metrics::Metrics,
    pub worker_id: String,
    pub tokens: ApiTokens,
    pub device: DeviceReport,
    pub started: Instant,
    /// Wall time from `started` to ready.
    pub load_time_ms: f64,
    /// Largest request body (413 `PAYLOAD_TOO_LARGE` above it).
    pub max_body_bytes: usize,
}

impl AppState {
    /// State for serving `backend`; `started` is when the process started (the load time is
    /// measured from it to now).
    pub fn new(
        backend: Arc<dyn Backend>,
        server: &ServerConfig,
        device: DeviceReport,
        started: Instant,
    ) -> Arc<AppState> {
        Arc::new(AppState {
            backend,
            metrics: Default::default(),
            worker_id: server.worker_id.clone(),
            tokens: server.tokens.clone(),
            device,
            started,
            load_time_ms: started.elapsed().as_secs_f64() * 1e3,
            max_body_bytes: server.max_body_bytes,
        })
    }
}

type Shared = Arc<AppState>;

/// The worker's router: `/execute`, `/cancel`, `/health`, `/metrics`, `/tokenize`,
/// `/detokenize` (paths from `llorch_wire::routes::worker`), with token authentication (every
/// route but `/health`), the body limit, correlation ids and envelope fallbacks (llorch-http).
pub fn app(state: Arc<AppState>) -> Router {
    use llorch_wire::routes::worker as r;
    let gate = Arc::new(TokenGate {
        tokens: state.tokens.clone(),
        open_paths: crate::auth::OPEN_PATHS,
        hint: "LLORCH_WORKER_TOKEN",
    });
    let limit = BodyLimit {
        max: state.max_body_bytes,
        setting: "--max-body-bytes / LLORCH_WORKER_MAX_BODY_BYTES",
        shape: llorch_http::error::envelope,
    };
    let router = Router::new()
        .route(r::EXECUTE, post(execute::execute))
        .route(r::CANCEL, post(cancel::cancel))
        .route(r::HEALTH, get(health::health))
        .route(r::METRICS, get(metrics::metrics))
        .route(r::TOKENIZE, post(tokenize::tokenize))
        .route(r::DETOKENIZE, post(tokenize::detokenize));
    let router = llorch_http::fallback::apply(router, llorch_http::error::envelope)
        .layer(middleware::from_fn_with_state(gate, require_token));
    limit
        .apply(router)
        .layer(middleware::from_fn(llorch_http::correlation::correlation))
        .with_state(state)
}
