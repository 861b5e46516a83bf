//! The worker's Prometheus metrics (`worker_*`, see `.specs/worker.md`).

use llorch_metrics::{Registry, MS_BUCKETS};
use llorch_wire::{StopReason, WorkerEvent};

/// Build the registry with every worker metric declared.
pub fn registry() -> Registry {
    let r = Registry::new();
    r.counter(
        "worker_requests_total",
        "Finished /execute jobs by outcome (success|error|cancelled|rejected).",
    );
    r.counter("worker_tokens_in_total", "Prompt tokens processed.");
    r.counter(
        "worker_tokens_cached_total",
        "Prompt tokens whose keys and values came from the prompt cache.",
    );
    r.counter("worker_tokens_generated_total", "Tokens generated.");
    r.histogram(
        "worker_inference_duration_ms",
        "Job duration from admission to terminal event.",
        MS_BUCKETS,
    );
    r.histogram(
        "worker_time_to_first_token_ms",
        "Admission to first generated token.",
        MS_BUCKETS,
    );
    r.histogram(
        "worker_inter_token_ms",
        "Time between consecutive generated tokens.",
        MS_BUCKETS,
    );
    r.histogram(
        "worker_queue_time_ms",
        "Time a job waited before it ran.",
        MS_BUCKETS,
    );
    r.gauge("worker_jobs_active", "Jobs generating now.");
    r.gauge("worker_jobs_queued", "Jobs waiting.");
    r.gauge("worker_slots", "Jobs that generate at once (--parallel).");
    r.gauge(
        "worker_batch_size_peak",
        "Most jobs one decode step has served since start.",
    );
    r.gauge("worker_uptime_seconds", "Process uptime.");
    r.gauge(
        "worker_vram_bytes",
        "Memory in use on the worker's device: this process's RSS on the CPU, the GPU's used memory (every process) on CUDA.",
    );
    r
}

/// Record one event of a job; `since_admit_ms` and `since_prev_ms` are measured by the caller.
pub fn record(
    r: &Registry,
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
            r.inc("worker_tokens_in_total", &[], *tokens_in as f64);
            r.inc("worker_tokens_cached_total", &[], *tokens_cached as f64);
            r.observe("worker_queue_time_ms", &[], *queue_time_ms);
        }
        WorkerEvent::Token { .. } => {
            r.inc("worker_tokens_generated_total", &[], 1.0);
            if first {
                r.observe("worker_time_to_first_token_ms", &[], since_admit_ms);
            } else if let Some(d) = since_prev_token_ms {
                r.observe("worker_inter_token_ms", &[], d);
            }
        }
        WorkerEvent::End { stop_reason, .. } => {
            let outcome = if *stop_reason == StopReason::Cancelled {
                "cancelled"
            } else {
                "success"
            };
            r.inc("worker_requests_total", &[("outcome", outcome)], 1.0);
            r.observe("worker_inference_duration_ms", &[], since_admit_ms);
        }
        WorkerEvent::Error { .. } => {
            r.inc("worker_requests_total", &[("outcome", "error")], 1.0);
            r.observe("worker_inference_duration_ms", &[], since_admit_ms);
        }
    }
}
