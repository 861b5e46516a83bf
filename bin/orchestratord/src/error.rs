//! `ApiError`: an HTTP status plus the shared error envelope (and extra headers such as
//! `Retry-After`), turned into a response by axum.

use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use llorch_wire::{ErrorCode, ErrorEnvelope, FieldError};

/// An error answer of the orchestrator API.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub envelope: ErrorEnvelope,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl ApiError {
    /// An error with the code's own status.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        let status =
            StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        Self {
            status,
            envelope: ErrorEnvelope::new(code, message),
            headers: Vec::new(),
        }
    }

    /// 400 `INVALID_REQUEST` listing every bad field.
    pub fn invalid(fields: Vec<FieldError>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            envelope: ErrorEnvelope::invalid(fields),
            headers: Vec::new(),
        }
    }

    /// 404 `NOT_FOUND` for a task or worker id.
    pub fn not_found(what: &str, id: &str) -> Self {
        Self::new(ErrorCode::NotFound, format!("{what} {id:?} not found"))
    }

    /// 429 `QUEUE_FULL` with `Retry-After` (s) and `X-Backoff-Ms`.
    pub fn queue_full(message: impl Into<String>, backoff_ms: u64) -> Self {
        Self::retry_later(ErrorCode::QueueFull, message, backoff_ms)
    }

    /// The code's error with `retry_after_ms`, `Retry-After` (s, rounded up) and `X-Backoff-Ms`.
    pub fn retry_later(code: ErrorCode, message: impl Into<String>, backoff_ms: u64) -> Self {
        let mut e = Self::new(code, message);
        e.envelope.error.retry_after_ms = Some(backoff_ms);
        let secs = backoff_ms.div_ceil(1000).max(1);
        e.headers.push((
            HeaderName::from_static("retry-after"),
            HeaderValue::from(secs),
        ));
        e.headers.push((
            HeaderName::from_static("x-backoff-ms"),
            HeaderValue::from(backoff_ms),
        ));
        e
    }

    /// The stable code.
    pub fn code(&self) -> ErrorCode {
        self.envelope.error.code
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, Json(self.envelope)).into_response();
        for (k, v) in self.headers {
            resp.headers_mut().insert(k, v);
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_full_carries_retry_headers() {
        let e = ApiError::queue_full("full", 1500);
        assert_eq!(e.status, StatusCode::TOO_MANY_REQUESTS);
        let resp = e.into_response();
        assert_eq!(resp.headers()["retry-after"], "2");
        assert_eq!(resp.headers()["x-backoff-ms"], "1500");
    }
}
