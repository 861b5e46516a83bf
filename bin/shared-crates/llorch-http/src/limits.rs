//! The request body limit's answer: 413 `PAYLOAD_TOO_LARGE` in the error envelope naming the
//! limit and the setting that raises it, for a `Content-Length` over the limit (before the
//! body is read) and for a body that turns out larger while it is read (axum's plain-text
//! 413), with `Connection: close`: the rest of the body is never read, so the connection
//! cannot serve another request, and a client that pooled it would see its next request fail.

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::Router;
use llorch_wire::ErrorCode;

use crate::error::{ApiError, Shape};

/// The limit and how to answer when a body exceeds it.
#[derive(Clone, Copy)]
pub struct BodyLimit {
    /// Largest request body, bytes.
    pub max: usize,
    /// The setting that raises it, named in the message (e.g. `--max-body-bytes`).
    pub setting: &'static str,
    /// The daemon's error shape.
    pub shape: Shape,
}

impl BodyLimit {
    /// Apply the limit to `router`: axum's own limit plus [`body_limit`] for the answer.
    pub fn apply<S: Clone + Send + Sync + 'static>(self, router: Router<S>) -> Router<S> {
        router
            .layer(middleware::from_fn_with_state(self, body_limit))
            .layer(DefaultBodyLimit::max(self.max))
    }

    fn too_large(&self, path: &str) -> Response {
        let msg = format!(
            "request body too large: the limit is {} bytes ({})",
            self.max, self.setting
        );
        let mut resp = (self.shape)(path, ApiError::new(ErrorCode::PayloadTooLarge, msg));
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        resp
    }
}

/// Middleware: answer an oversized body with the envelope instead of axum's plain text (a
/// handler's own JSON 413 passes through).
pub async fn body_limit(State(limit): State<BodyLimit>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit.max as u64) {
        return limit.too_large(&path);
    }
    let resp = next.run(req).await;
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if resp.status() == StatusCode::PAYLOAD_TOO_LARGE && !is_json {
        return limit.too_large(&path);
    }
    resp
}
