//! The request body limit's answer: 413 `PAYLOAD_TOO_LARGE` in the error envelope (OpenAI's
//! shape under `/v1`) naming the limit, for a `Content-Length` over it (before the body is
//! read) and for a body that turns out larger while it is read; with `Connection: close`.

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use llorch_wire::ErrorCode;

use crate::error::ApiError;

/// The 413 answer for a body over `max` bytes.
fn too_large(path: &str, max: usize) -> Response {
    let msg = format!(
        "request body too large: the limit is {max} bytes (max_body_bytes; \
         --max-body-bytes / LLORCH_ORCH_MAX_BODY_BYTES)"
    );
    let mut resp = super::shaped(path, ApiError::new(ErrorCode::PayloadTooLarge, msg));
    // The rest of the body is never read: the connection cannot serve another request, and a
    // client that pooled it would see its next request fail.
    resp.headers_mut().insert(
        header::CONNECTION,
        axum::http::HeaderValue::from_static("close"),
    );
    resp
}

/// Middleware: answer an oversized body with the envelope instead of axum's plain text.
pub async fn body_limit(State(max): State<usize>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return too_large(&path, max);
    }
    let resp = next.run(req).await;
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if resp.status() == StatusCode::PAYLOAD_TOO_LARGE && !is_json {
        return too_large(&path, max);
    }
    resp
}
