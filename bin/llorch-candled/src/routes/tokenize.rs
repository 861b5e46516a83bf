//! `POST /tokenize` and `POST /detokenize`.

use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use llorch_wire::{DetokenizeRequest, ErrorCode, ErrorEnvelope, TokenizeRequest};

use llorch_http::parse_json;

use super::{error, Shared};

pub(super) async fn tokenize(State(st): State<Shared>, body: Bytes) -> Response {
    let req: TokenizeRequest = match parse_json(&body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let backend = st.backend.clone();
    match tokio::task::spawn_blocking(move || backend.tokenize(req)).await {
        Ok(Ok(r)) => Json(r).into_response(),
        Ok(Err(env)) => error(env),
        Err(e) => error(ErrorEnvelope::new(ErrorCode::Internal, e.to_string())),
    }
}

pub(super) async fn detokenize(State(st): State<Shared>, body: Bytes) -> Response {
    let req: DetokenizeRequest = match parse_json(&body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    match st.backend.detokenize(req) {
        Ok(r) => Json(r).into_response(),
        Err(env) => error(env),
    }
}
