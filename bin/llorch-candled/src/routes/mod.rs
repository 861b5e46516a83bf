//! The worker's HTTP surface: [`app`] builds the router over any [`Backend`], one module per
//! route family. Every answer carries `X-Correlation-Id`; every non-2xx answer is the wire
//! crate's error envelope, unknown routes and wrong methods included.

mod cancel;
mod execute;
mod health;
mod metrics;
mod tokenize;

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use llorch_metrics::Registry;
use llorch_wire::{ErrorCode, ErrorEnvelope, FieldError};

use crate::auth::ApiTokens;
use crate::backend::Backend;
use crate::config::ServerConfig;
use crate::memory::MemoryMonitor;

pub use health::health_of;

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
    pub metrics: Registry,
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
            metrics: crate::metrics::registry(),
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
/// `/detokenize`, with token authentication (every route but `/health`) and correlation ids.
pub fn app(state: Arc<AppState>) -> Router {
    let tokens = Arc::new(state.tokens.clone());
    let max_body = state.max_body_bytes;
    Router::new()
        .route("/execute", post(execute::execute))
        .route("/cancel", post(cancel::cancel))
        .route("/health", get(health::health))
        .route("/metrics", get(metrics::metrics))
        .route("/tokenize", post(tokenize::tokenize))
        .route("/detokenize", post(tokenize::detokenize))
        .fallback(unknown_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(middleware::from_fn_with_state(
            tokens,
            crate::auth::require_token,
        ))
        .layer(middleware::from_fn_with_state(max_body, body_limit))
        .layer(DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn(correlation_id))
        .with_state(state)
}

/// A body over the limit gets the envelope (413 `PAYLOAD_TOO_LARGE`, naming the limit) with
/// `Connection: close`: the rest of the body is never read, so the connection cannot serve
/// another request, and a client that pooled it would see its next request fail.
async fn body_limit(
    axum::extract::State(max): axum::extract::State<usize>,
    req: Request,
    next: Next,
) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_none_or(|n| n <= max as u64) {
        let resp = next.run(req).await;
        if resp.status() != StatusCode::PAYLOAD_TOO_LARGE {
            return resp;
        }
    }
    let mut resp = error(ErrorEnvelope::new(
        ErrorCode::PayloadTooLarge,
        format!(
            "request body too large: the limit is {max} bytes \
             (--max-body-bytes / LLORCH_WORKER_MAX_BODY_BYTES)"
        ),
    ));
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
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

/// An error envelope as an HTTP response with the code's status (and `Retry-After` when the
/// envelope says when to retry).
pub fn error(env: ErrorEnvelope) -> Response {
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

/// A JSON body, or an `INVALID_REQUEST` envelope naming `body`.
fn parse_json<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, Box<ErrorEnvelope>> {
    serde_json::from_slice(body).map_err(|e| {
        Box::new(ErrorEnvelope::invalid(vec![FieldError::new(
            "body",
            "json",
            format!("invalid JSON body: {e}"),
        )]))
    })
}

/// Answer for an unknown route: 404 `NOT_FOUND` naming it.
async fn unknown_route(req: Request) -> Response {
    error(ErrorEnvelope::new(
        ErrorCode::NotFound,
        format!("no route {} {}", req.method(), req.uri().path()),
    ))
}

/// Answer for a known route called with the wrong method: 405 `METHOD_NOT_ALLOWED`.
async fn wrong_method(req: Request) -> Response {
    error(ErrorEnvelope::new(
        ErrorCode::MethodNotAllowed,
        format!(
            "{} does not accept {} (see .specs/worker.md for the routes)",
            req.uri().path(),
            req.method()
        ),
    ))
}
