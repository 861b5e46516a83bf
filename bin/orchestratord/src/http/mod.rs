//! The HTTP surface: routes, correlation ids, bearer auth. Handlers are thin; the work is in
//! `admission`, `state`, `workers`.

mod admin;
mod events;
mod limits;
mod meta;
mod pools;
mod tasks;
mod workers;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use llorch_wire::ErrorCode;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::ApiError;
use crate::openai;
use crate::state::Orchestrator;
use crate::tenancy::Caller;

/// Request and response header carrying the correlation id.
pub const CORRELATION_HEADER: &str = "x-correlation-id";
/// Routes answered without a token (probes and the public contract).
const OPEN_PATHS: &[&str] = &["/health", "/ready", "/v2/openapi.json"];

/// The correlation id of the current request (accepted from the client or generated).
#[derive(Debug, Clone)]
pub struct CorrelationId(pub String);

/// Every route of the orchestrator.
pub fn router(orch: Arc<Orchestrator>) -> Router {
    let max_body = orch.cfg.limits.max_body_bytes;
    Router::new()
        .route("/v2/tasks", post(tasks::submit).get(tasks::list))
        .route("/v2/tasks/{id}", get(tasks::status))
        .route("/v2/tasks/{id}/events", get(events::stream))
        .route("/v2/tasks/{id}/cancel", post(tasks::cancel))
        .route("/v2/workers", get(workers::list))
        .route("/v2/workers/register", post(workers::register))
        .route("/v2/workers/{id}/heartbeat", post(workers::heartbeat))
        .route("/v2/workers/{id}/drain", post(workers::drain))
        .route("/v2/workers/{id}/undrain", post(workers::undrain))
        .route(
            "/v2/workers/{id}",
            axum::routing::delete(workers::deregister).get(workers::show),
        )
        .route("/v2/pools", get(pools::list))
        .route("/v2/pools/{name}", get(pools::show))
        .route("/v2/pools/{name}/drain", post(pools::drain))
        .route("/v2/pools/{name}/undrain", post(pools::undrain))
        .route("/v2/meta/capabilities", get(meta::capabilities))
        .route("/v2/openapi.json", get(meta::openapi))
        .route("/health", get(meta::health))
        .route("/ready", get(meta::ready))
        .route("/metrics", get(meta::metrics))
        .merge(crate::openai::routes())
        .merge(admin::routes())
        .merge(crate::dashboard::routes(&orch))
        .fallback(unknown_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(middleware::from_fn_with_state(orch.clone(), auth))
        .layer(middleware::from_fn_with_state(max_body, limits::body_limit))
        .layer(middleware::from_fn(correlation))
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(orch)
}

fn usable_correlation_id(v: &HeaderValue) -> Option<String> {
    let s = v.to_str().ok()?;
    (!s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_graphic()))
        .then(|| s.to_string())
}

/// Accept or generate `X-Correlation-Id`, expose it to handlers, echo it on every response.
async fn correlation(mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(CORRELATION_HEADER)
        .and_then(usable_correlation_id)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    req.extensions_mut().insert(CorrelationId(id.clone()));
    let start = std::time::Instant::now();
    let mut resp = next.run(req).await;
    tracing::debug!(correlation_id = %id, %method, %path, status = resp.status().as_u16(),
        ms = start.elapsed().as_secs_f64() * 1000.0, "request");
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut()
            .insert(HeaderName::from_static(CORRELATION_HEADER), v);
    }
    resp
}

/// Whether `presented` equals one of `tokens`, in time independent of where they differ.
pub fn token_matches(presented: &str, tokens: &[String]) -> bool {
    let p = Sha256::digest(presented.as_bytes());
    tokens.iter().fold(0u8, |ok, t| {
        ok | Sha256::digest(t.as_bytes()).ct_eq(&p).unwrap_u8()
    }) == 1
}

/// Bearer auth on every route except [`OPEN_PATHS`] and the dashboard page's own files (they
/// hold no data): admin tokens, tenant keys (see `tenancy::auth`); the caller goes into the
/// request's extensions.
async fn auth(State(orch): State<Arc<Orchestrator>>, mut req: Request, next: Next) -> Response {
    let source = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0);
    let path = req.uri().path().to_string();
    if OPEN_PATHS.contains(&path.as_str()) || crate::dashboard::is_page(&path) {
        req.extensions_mut()
            .insert(Caller::anonymous(false, "open", source));
        return next.run(req).await;
    }
    let presented = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    let err = match crate::tenancy::auth::authenticate(&orch, &path, presented, source) {
        Ok(caller) => {
            req.extensions_mut().insert(caller);
            return next.run(req).await;
        }
        Err(err) => err,
    };
    if path == "/v2/tasks" || openai::SUBMIT_PATHS.contains(&path.as_str()) {
        orch.metrics
            .inc("orchd_tasks_enqueued_total", &[("outcome", "rejected")]);
        orch.metrics.inc(
            "orchd_tasks_rejected_total",
            &[("reason", err.code().as_str())],
        );
    }
    let unauthorized = err.code() == ErrorCode::Unauthorized;
    let mut resp = shaped(&path, err);
    if unauthorized {
        resp.headers_mut().insert(
            axum::http::header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer"),
        );
    }
    resp
}

/// The error as a response: OpenAI's error shape under `/v1`, the envelope elsewhere.
fn shaped(path: &str, err: ApiError) -> Response {
    if openai::is_openai_path(path) {
        openai::OaiError(err).into_response()
    } else {
        err.into_response()
    }
}

/// Unknown route: 404 `NOT_FOUND` naming it.
async fn unknown_route(req: Request) -> Response {
    let path = req.uri().path();
    let msg = format!(
        "no route {} {path} (routes: GET /v2/openapi.json)",
        req.method()
    );
    shaped(path, ApiError::new(ErrorCode::NotFound, msg))
}

/// Known route, wrong method: 405 `METHOD_NOT_ALLOWED`.
async fn wrong_method(req: Request) -> Response {
    let path = req.uri().path();
    let msg = format!("{path} does not accept {}", req.method());
    shaped(path, ApiError::new(ErrorCode::MethodNotAllowed, msg))
}

/// Parse a JSON body into `T`, answering with the error envelope when it does not fit.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::invalid(vec![llorch_wire::FieldError::new(
            "body",
            "json",
            format!("invalid JSON body: {e}"),
        )])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_compare() {
        let tokens = vec!["alpha-token".to_string(), "beta-token".to_string()];
        assert!(token_matches("beta-token", &tokens));
        assert!(!token_matches("beta-toke", &tokens));
        assert!(!token_matches("", &tokens));
    }
}
