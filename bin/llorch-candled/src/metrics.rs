//! The worker's Prometheus metrics (`worker_*`, see `.specs/worker.md`), each family declared
//! once as a typed handle.

use llorch_metrics::{Counter, Gauge, Histogram, Registry, LATENCY_MS, TOKEN_GAP_MS};
use llorch_wire::{StopReason, WorkerEvent};

/// Every worker family; fields are named after the metric (less `worker_`).
#[derive(Debug)]
pub struct Metrics {
    reg: Registry,
    /// `worker_requests_total{outcome}`
    pub requests_total: Counter,
    /// `worker_tokens_in_total`
    pub tokens_in_total: Counter,
    /// `worker_tokens_cached_total`
    pub tokens_cached_total: Counter,
    /// `worker_tokens_generated_total`
    pub tokens_generated_total: Counter,
    /// `worker_inference_duration_ms`
    pub inference_duration_ms: Histogram,
    /// `worker_time_to_first_token_ms`
    pub time_to_first_token_ms: Histogram,
    /// `worker_inter_token_ms`
    pub inter_token_ms: Histogram,
    /// `worker_queue_time_ms`
    pub queue_time_ms: Histogram,
    /// `worker_jobs_active`
    pub jobs_active: Gauge,
    /// `worker_jobs_queued`
    pub jobs_queued: Gauge,
    /// `worker_slots`
    pub slots: Gauge,
    /// `worker_batch_size_peak`
    pub batch_size_peak: Gauge,
    /// `worker_uptime_seconds`
    pub uptime_seconds: Gauge,
    /// `worker_vram_bytes`
    pub vram_bytes: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let r = Registry::new();
        Self {
            requests_total: r.counter(
                "worker_requests_total",
                "Finished /execute jobs by outcome (success|error|cancelled|rejected).",
            ),
            tokens_in_total: r.counter("worker_tokens_in_total", "Prompt tokens processed."),
            tokens_cached_total: r.counter(
                "worker_tokens_cached_total",
                "Prompt tokens whose keys and values came from the prompt cache.",
            ),
            tokens_generated_total: r
                .counter("worker_tokens_generated_total", "Tokens generated."),
            inference_duration_ms: r.histogram(
                "worker_inference_duration_ms",
                "Job duration from admission to terminal event.",
                LATENCY_MS,
            ),
            time_to_first_token_ms: r.histogram(
                "worker_time_to_first_token_ms",
                "Admission to first generated token.",
                LATENCY_MS,
            ),
            inter_token_ms: r.histogram(
                "worker_inter_token_ms",
                "Time between consecutive generated tokens.",
                TOKEN_GAP_MS,
            ),
            queue_time_ms: r.histogram(
                "worker_queue_time_ms",
                "Time a job waited before it ran.",
                LATENCY_MS,
            ),
            jobs_active: r.gauge("worker_jobs_active", "Jobs generating now."),
            jobs_queued: r.gauge("worker_jobs_queued", "Jobs waiting."),
            slots: r.gauge("worker_slots", "Jobs that generate at once (--parallel)."),
            batch_size_peak: r.gauge(
                "worker_batch_size_peak",
                "Most jobs one decode step has served since start.",
            ),
            uptime_seconds: r.gauge("worker_uptime_seconds", "Process uptime."),
            vram_bytes: r.gauge(
                "worker_vram_bytes",
                "Memory in use on the worker's device: this process's RSS on the CPU, the GPU's used memory (every process) on CUDA.",
            ),
            reg: r,
        }
    }
}

impl Metrics {
    /// The Prometheus text format.
    pub fn render(&self) -> String {
        self.reg.render()
    }

    /// Record one event of a job; `since_admit_ms` and `since_prev_token_ms` are measured by
    /// the caller.
    pub fn record(
        &self,
        ev: &WorkerEvent,
        since_admit_ms: f64,
        since_prev_token_ms: Option<f64>,
        first: bool,
    ) {
        match ev {
            WorkerEvent::Started {
                tokens_in,
                tokens_cached,
                queue_time_ms,
                ..
            } => {
                self.tokens_in_total.add(&[], *tokens_in as f64);
                self.tokens_cached_total.add(&[], *tokens_cached as f64);
                self.queue_time_ms.observe(&[], *queue_time_ms);
            }
            WorkerEvent::Token { .. } => {
                self.tokens_generated_total.inc(&[]);
                if first {
                    self.time_to_first_token_ms.observe(&[], since_admit_ms);
                } else if let Some(d) = since_prev_token_ms {
                    self.inter_token_ms.observe(&[], d);
                }
            }
            WorkerEvent::End { stop_reason, .. } => {
                let outcome = if *stop_reason == StopReason::Cancelled {
                    "cancelled"
                } else {
                    "success"
                };
                self.requests_total.inc(&[("outcome", outcome)]);
                self.inference_duration_ms.observe(&[], since_admit_ms);
            }
            WorkerEvent::Error { .. } => {
                self.requests_total.inc(&[("outcome", "error")]);
                self.inference_duration_ms.observe(&[], since_admit_ms);
            }
        }
    }
}
