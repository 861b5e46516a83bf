//! `GET /metrics`: the Prometheus text of [`crate::metrics`], gauges refreshed from the
//! backend's load.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};

use super::Shared;

pub(super) async fn metrics(State(st): State<Shared>) -> Response {
    let load = st.backend.load();
    let m = &st.metrics;
    m.set("worker_jobs_active", &[], load.active as f64);
    m.set("worker_jobs_queued", &[], load.queued as f64);
    m.set(
        "worker_uptime_seconds",
        &[],
        st.started.elapsed().as_secs_f64(),
    );
    let used = st
        .device
        .memory
        .as_ref()
        .map_or(0, |d| d.current().used_bytes);
    m.set("worker_vram_bytes", &[], used as f64);
    m.set("worker_slots", &[], st.backend.info().parallel as f64);
    m.set("worker_batch_size_peak", &[], load.peak_batch as f64);
    let mut h = HeaderMap::new();
    h.insert(
        "content-type",
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    (h, m.render()).into_response()
}
