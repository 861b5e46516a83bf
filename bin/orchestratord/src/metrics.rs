//! The `orchd_*` metric families, each declared once as a typed handle over the shared
//! `llorch-metrics` registry (no lookup by name). Every series carries
//! `component="orchestratord"`.

use llorch_metrics::{Counter, Gauge, Histogram, Registry, DECISION_MS, LATENCY_MS, TOKEN_GAP_MS};

/// Every family this process exports, as fields named after the metric (less `orchd_`); the
/// help text is the one rendered in `/metrics`.
#[derive(Debug)]
pub struct Metrics {
    reg: Registry,
    /// `orchd_queue_depth`
    pub queue_depth: Gauge,
    /// `orchd_tasks_enqueued_total`
    pub tasks_enqueued_total: Counter,
    /// `orchd_tasks_rejected_total`
    pub tasks_rejected_total: Counter,
    /// `orchd_tasks_evicted_total`
    pub tasks_evicted_total: Counter,
    /// `orchd_tenant_tasks_total`
    pub tenant_tasks_total: Counter,
    /// `orchd_tenant_tokens_total`
    pub tenant_tokens_total: Counter,
    /// `orchd_tenant_rejected_total`
    pub tenant_rejected_total: Counter,
    /// `orchd_policy_calls_total`
    pub policy_calls_total: Counter,
    /// `orchd_policy_errors_total`
    pub policy_errors_total: Counter,
    /// `orchd_policy_reloads_total`
    pub policy_reloads_total: Counter,
    /// `orchd_policy_call_ms`
    pub policy_call_ms: Histogram,
    /// `orchd_tasks_dispatched_total`
    pub tasks_dispatched_total: Counter,
    /// `orchd_tasks_retried_total`
    pub tasks_retried_total: Counter,
    /// `orchd_tasks_finished_total`
    pub tasks_finished_total: Counter,
    /// `orchd_tasks_running`
    pub tasks_running: Gauge,
    /// `orchd_workers`
    pub workers: Gauge,
    /// `orchd_worker_connections_active`
    pub worker_connections_active: Gauge,
    /// `orchd_tokens_out_total`
    pub tokens_out_total: Counter,
    /// `orchd_admission_latency_ms`
    pub admission_latency_ms: Histogram,
    /// `orchd_scheduling_latency_ms`
    pub scheduling_latency_ms: Histogram,
    /// `orchd_queue_time_ms`
    pub queue_time_ms: Histogram,
    /// `orchd_ttft_ms`
    pub ttft_ms: Histogram,
    /// `orchd_inter_token_ms`
    pub inter_token_ms: Histogram,
    /// `orchd_e2e_ms`
    pub e2e_ms: Histogram,
    /// `orchd_fleet_pool_reachable`
    pub fleet_pool_reachable: Gauge,
    /// `orchd_fleet_probe_ms`
    pub fleet_probe_ms: Histogram,
    /// `orchd_fleet_memory_total_bytes`
    pub fleet_memory_total_bytes: Gauge,
    /// `orchd_fleet_memory_free_bytes`
    pub fleet_memory_free_bytes: Gauge,
    /// `orchd_fleet_worker_starts_total`
    pub fleet_worker_starts_total: Counter,
    /// `orchd_fleet_worker_stops_total`
    pub fleet_worker_stops_total: Counter,
    /// `orchd_fleet_evictions_total`
    pub fleet_evictions_total: Counter,
    /// `orchd_fleet_placement_failures_total`
    pub fleet_placement_failures_total: Counter,
    /// `orchd_fleet_placement_ms`
    pub fleet_placement_ms: Histogram,
    /// `orchd_fleet_start_ms`
    pub fleet_start_ms: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        let reg = Registry::with_labels(&[("component", "orchestratord")]);
        Self {
            queue_depth: reg.gauge(
                "orchd_queue_depth",
                "Tasks waiting, per priority class.",
            ),
            tasks_enqueued_total: reg.counter(
                "orchd_tasks_enqueued_total",
                "Task submissions by outcome (accepted|rejected).",
            ),
            tasks_rejected_total: reg.counter(
                "orchd_tasks_rejected_total",
                "Rejected submissions by reason (error code).",
            ),
            tasks_evicted_total: reg.counter(
                "orchd_tasks_evicted_total",
                "Batch tasks evicted by the drop-lru policy.",
            ),
            tenant_tasks_total: reg.counter(
                "orchd_tenant_tasks_total",
                "Tasks ended per tenant (first 100 tenants; the rest as \"other\") and outcome.",
            ),
            tenant_tokens_total: reg.counter(
                "orchd_tenant_tokens_total",
                "Tokens per tenant and kind (in|out|cached) of ended tasks.",
            ),
            tenant_rejected_total: reg.counter(
                "orchd_tenant_rejected_total",
                "Submissions refused per tenant and reason (error code).",
            ),
            policy_calls_total: reg.counter(
                "orchd_policy_calls_total",
                "Policy script calls by hook (admit|place).",
            ),
            policy_errors_total: reg.counter(
                "orchd_policy_errors_total",
                "Policy script calls that fell back to the built-in policy, by hook (admit|place) and kind (operations|timeout|limit|runtime|return), and refused reloads (hook=reload, kind=compile).",
            ),
            policy_reloads_total: reg.counter(
                "orchd_policy_reloads_total",
                "Policy script versions loaded after a change of the file.",
            ),
            policy_call_ms: reg.histogram(
                "orchd_policy_call_ms",
                "Time of one policy script call, by hook.",
                DECISION_MS,
            ),
            tasks_dispatched_total: reg.counter(
                "orchd_tasks_dispatched_total",
                "Dispatch attempts by worker and outcome (success|failure).",
            ),
            tasks_retried_total: reg.counter(
                "orchd_tasks_retried_total",
                "Attempts retried on another worker before the first token, by reason.",
            ),
            tasks_finished_total: reg.counter(
                "orchd_tasks_finished_total",
                "Finished tasks by model and outcome (completed|cancelled|error code).",
            ),
            tasks_running: reg.gauge(
                "orchd_tasks_running",
                "Tasks running on workers.",
            ),
            workers: reg.gauge(
                "orchd_workers",
                "Known workers by status (ready|unhealthy).",
            ),
            worker_connections_active: reg.gauge(
                "orchd_worker_connections_active",
                "Open /execute streams per worker.",
            ),
            tokens_out_total: reg.counter(
                "orchd_tokens_out_total",
                "Tokens relayed to clients, per model.",
            ),
            admission_latency_ms: reg.histogram(
                "orchd_admission_latency_ms",
                "Time to decide a submission (parse, validate, enqueue).",
                DECISION_MS,
            ),
            scheduling_latency_ms: reg.histogram(
                "orchd_scheduling_latency_ms",
                "Time to pick a task and a worker, per algorithm.",
                DECISION_MS,
            ),
            queue_time_ms: reg.histogram(
                "orchd_queue_time_ms",
                "Submission to worker accepted, per model.",
                LATENCY_MS,
            ),
            ttft_ms: reg.histogram(
                "orchd_ttft_ms",
                "Submission to first token relayed, per model.",
                LATENCY_MS,
            ),
            inter_token_ms: reg.histogram(
                "orchd_inter_token_ms",
                "Gap between relayed tokens, per model.",
                TOKEN_GAP_MS,
            ),
            e2e_ms: reg.histogram(
                "orchd_e2e_ms",
                "Submission to terminal event, per model.",
                LATENCY_MS,
            ),
            fleet_pool_reachable: reg.gauge(
                "orchd_fleet_pool_reachable",
                "Whether the last probe of a pool answered (1) or not (0).",
            ),
            fleet_probe_ms: reg.histogram(
                "orchd_fleet_probe_ms",
                "Duration of one pool probe (llorch-pool status over the pool's transport).",
                LATENCY_MS,
            ),
            fleet_memory_total_bytes: reg.gauge(
                "orchd_fleet_memory_total_bytes",
                "Memory of a pool's device as its last probe reported.",
            ),
            fleet_memory_free_bytes: reg.gauge(
                "orchd_fleet_memory_free_bytes",
                "Free (available) memory of a pool's device as its last probe reported.",
            ),
            fleet_worker_starts_total: reg.counter(
                "orchd_fleet_worker_starts_total",
                "Fleet workers started, by pool and reason (start|restart|adopted).",
            ),
            fleet_worker_stops_total: reg.counter(
                "orchd_fleet_worker_stops_total",
                "Fleet workers stopped or lost, by pool and reason (idle|evicted|drain|died).",
            ),
            fleet_evictions_total: reg.counter(
                "orchd_fleet_evictions_total",
                "Idle workers stopped to make room for another model, per pool.",
            ),
            fleet_placement_failures_total: reg.counter(
                "orchd_fleet_placement_failures_total",
                "Starts refused because no pool had room (NO_CAPACITY), per model.",
            ),
            fleet_placement_ms: reg.histogram(
                "orchd_fleet_placement_ms",
                "Time of one placement decision.",
                DECISION_MS,
            ),
            fleet_start_ms: reg.histogram(
                "orchd_fleet_start_ms",
                "On-demand start of a worker: placement to ready (ssh, spawn, load), per model.",
                LATENCY_MS,
            ),
            reg,
        }
    }
}

impl Metrics {
    /// The Prometheus text format.
    pub fn render(&self) -> String {
        self.reg.render()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_cumulative_histograms() {
        let m = Metrics::default();
        m.tasks_enqueued_total.inc(&[("outcome", "accepted")]);
        m.tasks_enqueued_total.inc(&[("outcome", "accepted")]);
        m.ttft_ms.observe(&[("model", "m")], 3.0);
        m.ttft_ms.observe(&[("model", "m")], 700.0);
        let text = m.render();
        assert!(
            text.contains(
                "orchd_tasks_enqueued_total{component=\"orchestratord\",outcome=\"accepted\"} 2\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "orchd_ttft_ms_bucket{component=\"orchestratord\",model=\"m\",le=\"5\"} 1\n"
            ),
            "{text}"
        );
        assert!(text.contains(
            "orchd_ttft_ms_bucket{component=\"orchestratord\",model=\"m\",le=\"1000\"} 2\n"
        ));
        assert!(text.contains("orchd_ttft_ms_count{component=\"orchestratord\",model=\"m\"} 2\n"));
        assert!(text.contains("# TYPE orchd_e2e_ms histogram"));
        assert_eq!(
            m.tasks_enqueued_total.value(&[("outcome", "accepted")]),
            2.0
        );
    }

    const NAMES: usize = 34;

    #[test]
    fn every_family_is_rendered_once_with_help_and_type() {
        let text = Metrics::default().render();
        let names: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .map(|l| l.split(' ').next().unwrap_or_default())
            .collect();
        let mut unique = names.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(
            names.len(),
            unique.len(),
            "a family declared twice: {names:?}"
        );
        assert_eq!(names.len(), NAMES, "{names:?}");
        assert!(names.iter().all(|n| n.starts_with("orchd_")), "{names:?}");
    }
}
