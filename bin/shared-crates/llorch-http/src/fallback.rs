//! Envelope answers for an unknown route (404 `NOT_FOUND`) and a known route called with the
//! wrong method (405 `METHOD_NOT_ALLOWED`), instead of axum's empty bodies.

use axum::extract::Request;
use axum::Router;
use llorch_wire::ErrorCode;

use crate::error::{ApiError, Shape};

/// The 404 for `req`.
pub fn not_found(req: &Request) -> ApiError {
    ApiError::new(
        ErrorCode::NotFound,
        format!("no route {} {}", req.method(), req.uri().path()),
    )
}

/// The 405 for `req`.
pub fn wrong_method(req: &Request) -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        format!("{} does not accept {}", req.uri().path(), req.method()),
    )
}

/// Give `router` both fallbacks, answered in the daemon's error shape.
pub fn apply<S: Clone + Send + Sync + 'static>(router: Router<S>, shape: Shape) -> Router<S> {
    router
        .fallback(move |req: Request| async move { shape(req.uri().path(), not_found(&req)) })
        .method_not_allowed_fallback(move |req: Request| async move {
            shape(req.uri().path(), wrong_method(&req))
        })
}
