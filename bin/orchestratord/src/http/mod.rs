//! The HTTP surface: routes (paths from `llorch_wire::routes::orchestrator`), bearer auth and
//! the caller's identity. Handlers are thin; the work is in `admission`, `state`, `workers`.
//! Correlation ids, the body limit, envelope fallbacks and error answers are llorch-http's.

mod admin;
mod events;
mod meta;
mod pools;
mod tasks;
mod workers;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;
use llorch_http::BodyLimit;
use llorch_wire::routes::orchestrator as r;

use crate::error::ApiError;
use crate::openai;
use crate::state::Orchestrator;
use crate::tenancy::Caller;

pub use llorch_http::{parse_json, token_matches, CorrelationId, CORRELATION_HEADER};

/// Routes answered without a token (probes and the public contract).
const OPEN_PATHS: &[&str] = &[r::HEALTH, r::READY, r::OPENAPI];

/// Every route of the orchestrator.
pub fn router(orch: Arc<Orchestrator>) -> Router {
    let limit = BodyLimit {
        max: orch.cfg.limits.max_body_bytes,
        setting: "max_body_bytes; --max-body-bytes / LLORCH_ORCH_MAX_BODY_BYTES",
        shape: shaped,
    };
    let router = Router::new()
        .route(r::TASKS, post(tasks::submit).get(tasks::list))
        .route(r::TASK, get(tasks::status))
        .route(r::TASK_EVENTS, get(events::stream))
        .route(r::TASK_CANCEL, post(tasks::cancel))
        .route(r::WORKERS, get(workers::list))
        .route(r::WORKER_REGISTER, post(workers::register))
        .route(r::WORKER_HEARTBEAT, post(workers::heartbeat))
        .route(r::WORKER_DRAIN, post(workers::drain))
        .route(r::WORKER_UNDRAIN, post(workers::undrain))
        .route(r::WORKER, delete(workers::deregister).get(workers::show))
        .route(r::POOLS, get(pools::list))
        .route(r::POOL, get(pools::show))
        .route(r::POOL_DRAIN, post(pools::drain))
        .route(r::POOL_UNDRAIN, post(pools::undrain))
        .route(r::CAPABILITIES, get(meta::capabilities))
        .route(r::OPENAPI, get(meta::openapi))
        .route(r::HEALTH, get(meta::health))
        .route(r::READY, get(meta::ready))
        .route(r::METRICS, get(meta::metrics))
        .merge(crate::openai::routes())
        .merge(admin::routes())
        .merge(crate::dashboard::routes(&orch));
    let router = llorch_http::fallback::apply(router, shaped)
        .layer(middleware::from_fn_with_state(orch.clone(), auth));
    limit
        .apply(router)
        .layer(middleware::from_fn(llorch_http::correlation::correlation))
        .with_state(orch)
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
    let presented = llorch_http::bearer_token(req.headers());
    let err = match crate::tenancy::auth::authenticate(&orch, &path, presented, source) {
        Ok(caller) => {
            req.extensions_mut().insert(caller);
            return next.run(req).await;
        }
        Err(err) => err,
    };
    if path == r::TASKS || openai::SUBMIT_PATHS.contains(&path.as_str()) {
        orch.metrics
            .tasks_enqueued_total
            .inc(&[("outcome", "rejected")]);
        orch.metrics
            .tasks_rejected_total
            .inc(&[("reason", err.code().as_str())]);
    }
    shaped(&path, err)
}

/// The error as a response: OpenAI's error shape under `/v1`, the envelope elsewhere.
fn shaped(path: &str, err: ApiError) -> Response {
    if openai::is_openai_path(path) {
        openai::OaiError(err).into_response()
    } else {
        err.into_response()
    }
}
