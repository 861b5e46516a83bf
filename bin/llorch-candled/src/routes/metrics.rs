//! `GET /metrics`: the Prometheus text of [`crate::metrics`], gauges refreshed from the
//! backend's load.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};

use super::Shared;

pub(super) async fn metrics(State(st): State<Shared>) -> Response {
    let load = st.backend.load();
    let m = &st.metrics;
    m.jobs_active.set(&[], load.active as f64);
    m.jobs_queued.set(&[], load.queued as f64);
    m.uptime_seconds
        .set(&[], st.started.elapsed().as_secs_f64());
    let used = st
        .device
        .memory
        .as_ref()
        .map_or(0, |d| d.current().used_bytes);
    m.vram_bytes.set(&[], used as f64);
    m.slots.set(&[], st.backend.info().parallel as f64);
    m.batch_size_peak.set(&[], load.peak_batch as f64);
    let mut h = HeaderMap::new();
    h.insert(
        "content-type",
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    (h, m.render()).into_response()
}
