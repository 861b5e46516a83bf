//! The web dashboard and playground: a single page embedded in the binary (`GET /ui`, `/`
//! redirects there) and one SSE stream of live data (`GET /v2/dashboard/stream`) fed by a
//! sampler that keeps 15 minutes of history in a ring buffer. The page's files are public (it
//! asks for a token when the API needs one); the stream and every data call use the API's auth.
//!
//! Layout: `assets` (embedded files, caching and CSP headers), `history` (the ring buffer),
//! `live` (the sampler and the ticks it broadcasts).

pub mod assets;
pub mod history;
pub mod live;

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use futures::stream::{self, StreamExt};
use serde::Serialize;
use tokio::sync::broadcast::error::RecvError;

use crate::error::ApiError;
use crate::state::Orchestrator;
use live::Live;

/// The live data stream's route.
pub const STREAM_PATH: &str = llorch_wire::routes::orchestrator::DASHBOARD_STREAM;
/// What the page reads before it knows whether it needs a token (public).
const BOOT_PATH: &str = "/ui/boot.json";

/// Whether `path` is part of the page itself (answered without a token: it holds no data).
pub fn is_page(path: &str) -> bool {
    path == "/" || path == "/ui/" || path == BOOT_PATH || assets::find(path).is_some()
}

/// The dashboard's routes; starts the sampler (on the current Tokio runtime), which stops when
/// the router or the orchestrator is dropped.
pub fn routes(orch: &Arc<Orchestrator>) -> Router<Arc<Orchestrator>> {
    let live = Arc::new(Live::default());
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        rt.spawn(live::run(Arc::downgrade(orch), Arc::downgrade(&live)));
    }
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui") }))
        .route("/ui/", get(|| async { Redirect::to("/ui") }))
        .route("/ui", get(page))
        .route(BOOT_PATH, get(boot))
        .route("/ui/{file}", get(file))
        .route(STREAM_PATH, get(stream))
        .layer(Extension(live))
}

async fn page(headers: HeaderMap) -> Response {
    file(Path("".into()), headers).await
}

async fn file(Path(name): Path<String>, headers: HeaderMap) -> Response {
    let path = if name.is_empty() {
        "/ui".to_string()
    } else {
        format!("/ui/{name}")
    };
    match assets::find(&path) {
        Some((i, _)) => assets::serve(i, &headers),
        None => ApiError::not_found("dashboard file", &path).into_response(),
    }
}

/// `GET /ui/boot.json`.
#[derive(Debug, Serialize)]
struct Boot {
    /// The API wants a bearer token: the page asks for one before it shows anything.
    auth_required: bool,
    version: &'static str,
}

async fn boot(State(orch): State<Arc<Orchestrator>>) -> Response {
    let mut resp = Json(Boot {
        auth_required: !orch.cfg.api_tokens.is_empty(),
        version: env!("CARGO_PKG_VERSION"),
    })
    .into_response();
    let h = resp.headers_mut();
    h.insert(
        axum::http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    assets::security_headers(h);
    resp
}

/// `GET /v2/dashboard/stream`: `snapshot` (the ring buffer and the latest tick) at once, then
/// one `tick` per sample interval. Ends when the orchestrator shuts down (the sampler sends
/// an empty tick then).
async fn stream(
    State(orch): State<Arc<Orchestrator>>,
    Extension(live): Extension<Arc<Live>>,
) -> Response {
    let (snapshot, rx) = live.subscribe();
    let first = stream::once(async move {
        Ok::<_, Infallible>(Event::default().event("snapshot").data(snapshot))
    });
    let ticks = stream::unfold((rx, orch), |(mut rx, orch)| async move {
        loop {
            if orch.is_shutting_down() {
                return None;
            }
            match rx.recv().await {
                Ok(json) if json.is_empty() => return None,
                Ok(json) => {
                    let ev = Event::default().event("tick").data(&*json);
                    return Some((Ok::<_, Infallible>(ev), (rx, orch)));
                }
                // A slow reader skips to the newest ticks; the next one carries full state.
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => return None,
            }
        }
    });
    let mut resp = Sse::new(first.chain(ticks))
        .keep_alive(KeepAlive::default())
        .into_response();
    resp.headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    resp.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    resp
}

/// The dashboard's routes in the OpenAPI document.
pub fn openapi_paths() -> serde_json::Value {
    serde_json::json!({
        STREAM_PATH: { "get": {
            "summary": "Live data of the dashboard (SSE)",
            "description": "`event: snapshot` at once: `{sample_every_ms, history: [Sample], tick: Tick|null}` \
                (the last 15 minutes); then `event: tick` every sample interval (2 s): `{sample, workers, fleet, \
                tasks_key}`. Consume it with fetch() when a token is needed (EventSource sends no Authorization).",
            "responses": { "200": { "description": "text/event-stream" }, "401": { "description": "UNAUTHORIZED" } } } },
        "/ui": { "get": {
            "summary": "The dashboard page (no auth; it asks for a token when the API needs one)",
            "security": [],
            "responses": { "200": { "description": "text/html" }, "304": { "description": "Not modified (ETag)" } } } }
    })
}
