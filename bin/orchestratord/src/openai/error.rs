//! Errors under `/v1`: the status and headers (`Retry-After`, `X-Backoff-Ms`) of the
//! orchestrator's [`ApiError`], with OpenAI's body `{"error": {message, type, param, code}}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use llorch_wire::openai::{OpenAiError, OpenAiErrorBody};
use llorch_wire::{ErrorCode, FieldError};

use crate::error::ApiError;

/// An error answer of the OpenAI routes.
#[derive(Debug)]
pub struct OaiError(pub ApiError);

impl From<ApiError> for OaiError {
    fn from(e: ApiError) -> Self {
        Self(e)
    }
}

impl IntoResponse for OaiError {
    fn into_response(self) -> Response {
        let mut resp = (self.0.status, Json(body(&self.0))).into_response();
        for (k, v) in self.0.headers {
            resp.headers_mut().insert(k, v);
        }
        resp
    }
}

/// OpenAI's body for an orchestrator error; `param` is the first invalid field.
pub fn body(e: &ApiError) -> OpenAiError {
    let err = &e.envelope.error;
    let field = err.fields.first();
    OpenAiError {
        error: OpenAiErrorBody {
            message: err.message.clone(),
            kind: error_type(e.status).into(),
            param: field.map(|f| f.field.clone()).filter(|f| f != "body"),
            code: Some(code(err.code, field)),
        },
    }
}

/// OpenAI's error `type` for a status.
fn error_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "authentication_error",
        403 => "permission_error",
        429 => "rate_limit_error",
        400..=499 => "invalid_request_error",
        _ => "server_error",
    }
}

/// The `code`: OpenAI's spelling for request problems, else the orchestrator's code in lower case
/// (`model_not_found`, `context_length_exceeded`, `queue_full`, `worker_lost`, ...).
fn code(code: ErrorCode, field: Option<&FieldError>) -> String {
    if code != ErrorCode::InvalidRequest {
        return code.as_str().to_ascii_lowercase();
    }
    match field.map(|f| f.constraint.as_str()) {
        Some("unknown_field") => "unknown_parameter",
        Some("unsupported") => "unsupported_parameter",
        Some("unsupported_value") => "unsupported_value",
        Some("required") => "missing_required_parameter",
        Some("json" | "object" | "type") => "invalid_request_body",
        _ => "invalid_value",
    }
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_and_headers() {
        let resp = OaiError(ApiError::queue_full("full", 1500)).into_response();
        assert_eq!(resp.status(), 429);
        assert_eq!(resp.headers()["retry-after"], "2");
        let b = body(&ApiError::queue_full("full", 1500)).error;
        assert_eq!(
            (b.kind.as_str(), b.code.as_deref()),
            ("rate_limit_error", Some("queue_full"))
        );
        let e = ApiError::invalid(vec![FieldError::new("n", "unsupported_value", "only n=1")]);
        let b = body(&e).error;
        assert_eq!(b.param.as_deref(), Some("n"));
        assert_eq!(b.code.as_deref(), Some("unsupported_value"));
        assert_eq!(b.kind, "invalid_request_error");
        let b = body(&ApiError::new(ErrorCode::ModelNotFound, "no")).error;
        assert_eq!(b.code.as_deref(), Some("model_not_found"));
        assert_eq!(b.param, None);
        let b = body(&ApiError::new(ErrorCode::WorkerLost, "gone")).error;
        assert_eq!(b.kind, "server_error");
    }
}
