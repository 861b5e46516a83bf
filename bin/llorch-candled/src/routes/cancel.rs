//! `POST /cancel {job_id}`: stop a running or queued job; 404 for an unknown one.

use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use llorch_wire::{CancelRequest, CancelResponse, ErrorCode, ErrorEnvelope};

use llorch_http::parse_json;

use super::{error, Shared};

pub(super) async fn cancel(State(st): State<Shared>, body: Bytes) -> Response {
    let req: CancelRequest = match parse_json(&body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    if st.backend.cancel(&req.job_id) {
        Json(CancelResponse {
            job_id: req.job_id,
            status: "cancelling".into(),
        })
        .into_response()
    } else {
        error(ErrorEnvelope::new(
            ErrorCode::NotFound,
            format!("no running or queued job `{}`", req.job_id),
        ))
    }
}
