//! [`ApiError`]: an HTTP status plus the shared error envelope (and headers such as
//! `Retry-After`), turned into a response by axum; [`parse_json`] for request bodies.

use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use llorch_wire::{ErrorCode, ErrorEnvelope, FieldError};
use serde::de::DeserializeOwned;

/// How a daemon turns an error into a response for a request path (the orchestrator answers
/// OpenAI's error shape under `/v1`); [`envelope`] is the plain envelope.
pub type Shape = fn(&str, ApiError) -> Response;

/// The plain error envelope, whatever the path.
pub fn envelope(_path: &str, err: ApiError) -> Response {
    err.into_response()
}

/// An error answer: status, envelope, extra headers.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub envelope: ErrorEnvelope,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl ApiError {
    /// An error with the code's own status.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorEnvelope::new(code, message).into()
    }

    /// 400 `INVALID_REQUEST` listing every bad field.
    pub fn invalid(fields: Vec<FieldError>) -> Self {
        ErrorEnvelope::invalid(fields).into()
    }

    /// 404 `NOT_FOUND` for an id of some kind (`task`, `worker`, ...).
    pub fn not_found(what: &str, id: &str) -> Self {
        Self::new(ErrorCode::NotFound, format!("{what} {id:?} not found"))
    }

    /// 429 `QUEUE_FULL` with `Retry-After` (s) and `X-Backoff-Ms`.
    pub fn queue_full(message: impl Into<String>, backoff_ms: u64) -> Self {
        Self::retry_later(ErrorCode::QueueFull, message, backoff_ms)
    }

    /// The code's error with `retry_after_ms`, `Retry-After` (s, rounded up) and `X-Backoff-Ms`.
    pub fn retry_later(code: ErrorCode, message: impl Into<String>, backoff_ms: u64) -> Self {
        let mut env = ErrorEnvelope::new(code, message);
        env.error.retry_after_ms = Some(backoff_ms);
        env.into()
    }

    /// The stable code.
    pub fn code(&self) -> ErrorCode {
        self.envelope.error.code
    }

    /// Add a header to the answer.
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }
}

/// The envelope with its code's status; an envelope that says when to retry
/// (`retry_after_ms`) also gets `Retry-After` (seconds, rounded up, at least 1) and
/// `X-Backoff-Ms`.
impl From<ErrorEnvelope> for ApiError {
    fn from(envelope: ErrorEnvelope) -> Self {
        let status = StatusCode::from_u16(envelope.error.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut headers = Vec::new();
        if let Some(ms) = envelope.error.retry_after_ms {
            let secs = ms.div_ceil(1000).max(1);
            headers.push((
                HeaderName::from_static("retry-after"),
                HeaderValue::from(secs),
            ));
            headers.push((
                HeaderName::from_static("x-backoff-ms"),
                HeaderValue::from(ms),
            ));
        }
        Self {
            status,
            envelope,
            headers,
        }
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

/// An envelope as a response (see [`ApiError`]'s `From<ErrorEnvelope>`).
pub fn error_response(env: ErrorEnvelope) -> Response {
    ApiError::from(env).into_response()
}

/// Parse a JSON body into `T`, or 400 `INVALID_REQUEST` naming the field `body`.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::invalid(vec![FieldError::new(
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
    fn retry_headers_come_from_the_envelope() {
        let e = ApiError::queue_full("full", 1500);
        assert_eq!(e.status, StatusCode::TOO_MANY_REQUESTS);
        let resp = e.into_response();
        assert_eq!(resp.headers()["retry-after"], "2");
        assert_eq!(resp.headers()["x-backoff-ms"], "1500");
        let mut env = ErrorEnvelope::new(ErrorCode::WorkerBusy, "busy");
        env.error.retry_after_ms = Some(10);
        let resp = error_response(env);
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers()["retry-after"], "1");
        let plain = error_response(ErrorEnvelope::new(ErrorCode::NotFound, "x"));
        assert!(!plain.headers().contains_key("retry-after"));
    }

    #[test]
    fn bad_json_names_the_body() {
        let e = parse_json::<serde_json::Value>(b"{").unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidRequest);
        assert_eq!(e.envelope.error.fields[0].field, "body");
    }
}
