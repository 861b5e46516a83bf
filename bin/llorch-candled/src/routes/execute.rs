//! `POST /execute`: validate, hand the job to the backend, stream its events as SSE; a client
//! that goes away before the terminal event cancels the job.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::stream::Stream;
use llorch_wire::{ErrorCode, ErrorEnvelope, ExecuteRequest, WorkerEvent};
use tokio::sync::mpsc;

use llorch_http::parse_json;

use super::{error, Shared};
use crate::backend::{Backend, EventSink};

pub(super) async fn execute(State(st): State<Shared>, body: Bytes) -> Response {
    let req: ExecuteRequest = match parse_json(&body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    if let Err(fields) = req.validate() {
        reject(&st);
        return error(ErrorEnvelope::invalid(fields));
    }
    let (tx, rx) = mpsc::unbounded_channel::<WorkerEvent>();
    // job timings count from admission: set when submit returns, or by the first event
    let admitted = Arc::new(OnceLock::new());
    let sink = metered_sink(st.clone(), tx, admitted.clone());
    let backend = st.backend.clone();
    let job_id = match tokio::task::spawn_blocking(move || backend.submit(req, sink)).await {
        Ok(Ok(id)) => id,
        Ok(Err(env)) => {
            reject(&st);
            return error(env);
        }
        Err(e) => {
            return error(ErrorEnvelope::new(
                ErrorCode::Internal,
                format!("tokenizer task failed: {e}"),
            ))
        }
    };
    admitted.get_or_init(Instant::now);
    let guard = CancelOnDrop {
        backend: st.backend.clone(),
        job_id,
        done: false,
    };
    Sse::new(event_stream(rx, guard))
        .keep_alive(KeepAlive::default())
        .into_response()
}

fn reject(st: &Shared) {
    st.metrics.requests_total.inc(&[("outcome", "rejected")]);
}

/// Records each event in the metrics (on the backend's thread, so a job's end is counted even
/// when its client has gone), then forwards it to the response stream.
fn metered_sink(
    st: Shared,
    tx: mpsc::UnboundedSender<WorkerEvent>,
    admitted: Arc<OnceLock<Instant>>,
) -> EventSink {
    let mut last_token: Option<Instant> = None;
    Box::new(move |ev: WorkerEvent| {
        let now = Instant::now();
        let admitted = *admitted.get_or_init(|| now);
        let is_token = matches!(ev, WorkerEvent::Token { .. });
        let first = is_token && last_token.is_none();
        let since_prev = last_token.map(|t| now.saturating_duration_since(t).as_secs_f64() * 1e3);
        if is_token {
            last_token = Some(now);
        }
        st.metrics.record(
            &ev,
            now.saturating_duration_since(admitted).as_secs_f64() * 1e3,
            since_prev,
            first,
        );
        tx.send(ev).is_ok()
    })
}

/// Cancels the job if the client goes away before the terminal event.
struct CancelOnDrop {
    backend: Arc<dyn Backend>,
    job_id: String,
    done: bool,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if !self.done && self.backend.cancel(&self.job_id) {
            tracing::info!(job_id = %self.job_id, "client disconnected; job cancelled");
        }
    }
}

/// Each event as one SSE frame: `event: <kind>` and the event's JSON as `data`.
fn event_stream(
    rx: mpsc::UnboundedReceiver<WorkerEvent>,
    guard: CancelOnDrop,
) -> impl Stream<Item = Result<Event, std::convert::Infallible>> {
    futures::stream::unfold((rx, guard), |(mut rx, mut guard)| async move {
        let ev = rx.recv().await?;
        if ev.is_terminal() {
            guard.done = true;
        }
        let data = serde_json::to_string(&ev).unwrap_or_default();
        Some((
            Ok(Event::default().event(ev.kind()).data(data)),
            (rx, guard),
        ))
    })
}
