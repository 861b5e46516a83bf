//! Correlation ids: accept the client's `X-Correlation-Id` (when usable) or generate one,
//! expose it to handlers as a [`CorrelationId`] extension, echo it on every response.

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;

/// Request and response header carrying the correlation id.
pub const CORRELATION_HEADER: &str = "x-correlation-id";

/// Longest correlation id accepted from a client.
pub const MAX_CORRELATION_LEN: usize = 128;

/// The correlation id of the current request (accepted from the client or generated).
#[derive(Debug, Clone)]
pub struct CorrelationId(pub String);

/// The one validation rule: 1 to [`MAX_CORRELATION_LEN`] visible ASCII characters.
pub fn usable(v: &HeaderValue) -> Option<String> {
    let s = v.to_str().ok()?;
    (!s.is_empty() && s.len() <= MAX_CORRELATION_LEN && s.bytes().all(|b| b.is_ascii_graphic()))
        .then(|| s.to_string())
}

/// Middleware: accept or generate the id, put it in the request's extensions, log the
/// request at debug level, echo the id on the response.
pub async fn correlation(mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(CORRELATION_HEADER)
        .and_then(usable)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_rule() {
        let ok = |s: &str| usable(&HeaderValue::from_str(s).unwrap());
        assert_eq!(ok("abc-123").as_deref(), Some("abc-123"));
        assert_eq!(ok(""), None);
        assert_eq!(ok("has space"), None);
        assert_eq!(ok(&"x".repeat(129)), None);
        assert!(ok(&"x".repeat(128)).is_some());
    }
}
