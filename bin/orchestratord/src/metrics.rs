//! The `orchd_*` metric families (names, help, buckets) over the shared `llorch-metrics`
//! registry. Every series carries `component="orchestratord"`.

use llorch_metrics::Registry;

/// Metric kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One metric family: name, kind, help text and (for histograms) bucket bounds.
pub struct Family {
    pub name: &'static str,
    pub kind: Kind,
    pub help: &'static str,
    pub buckets: &'static [f64],
}

const MS_BUCKETS: &[f64] = &[
    1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0,
];
const ITL_BUCKETS: &[f64] = &[
    1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0, 640.0, 1280.0, 5000.0,
];
const FAST_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 50.0,
];

/// Every family this process exports.
pub const FAMILIES: &[Family] = &[
    Family {
        name: "orchd_queue_depth",
        kind: Kind::Gauge,
        help: "Tasks waiting, per priority class.",
        buckets: &[],
    },
    Family {
        name: "orchd_tasks_enqueued_total",
        kind: Kind::Counter,
        help: "Task submissions by outcome (accepted|rejected).",
        buckets: &[],
    },
    Family {
        name: "orchd_tasks_rejected_total",
        kind: Kind::Counter,
        help: "Rejected submissions by reason (error code).",
        buckets: &[],
    },
    Family {
        name: "orchd_tasks_evicted_total",
        kind: Kind::Counter,
        help: "Batch tasks evicted by the drop-lru policy.",
        buckets: &[],
    },
    Family {
        name: "orchd_tenant_tasks_total",
        kind: Kind::Counter,
        help: "Tasks ended per tenant (first 100 tenants; the rest as \"other\") and outcome.",
        buckets: &[],
    },
    Family {
        name: "orchd_tenant_tokens_total",
        kind: Kind::Counter,
        help: "Tokens per tenant and kind (in|out|cached) of ended tasks.",
        buckets: &[],
    },
    Family {
        name: "orchd_tenant_rejected_total",
        kind: Kind::Counter,
        help: "Submissions refused per tenant and reason (error code).",
        buckets: &[],
    },
    Family {
        name: "orchd_policy_calls_total",
        kind: Kind::Counter,
        help: "Policy script calls by hook (admit|place).",
        buckets: &[],
    },
    Family {
        name: "orchd_policy_errors_total",
        kind: Kind::Counter,
        help:
            "Policy script calls that fell back to the built-in policy, by hook (admit|place) and \
               kind (operations|timeout|limit|runtime|return), and refused reloads \
               (hook=reload, kind=compile).",
        buckets: &[],
    },
    Family {
        name: "orchd_policy_reloads_total",
        kind: Kind::Counter,
        help: "Policy script versions loaded after a change of the file.",
        buckets: &[],
    },
    Family {
        name: "orchd_policy_call_ms",
        kind: Kind::Histogram,
        help: "Time of one policy script call, by hook.",
        buckets: FAST_BUCKETS,
    },
    Family {
        name: "orchd_tasks_dispatched_total",
        kind: Kind::Counter,
        help: "Dispatch attempts by worker and outcome (success|failure).",
        buckets: &[],
    },
    Family {
        name: "orchd_tasks_retried_total",
        kind: Kind::Counter,
        help: "Attempts retried on another worker before the first token, by reason.",
        buckets: &[],
    },
    Family {
        name: "orchd_tasks_finished_total",
        kind: Kind::Counter,
        help: "Finished tasks by model and outcome (completed|cancelled|error code).",
        buckets: &[],
    },
    Family {
        name: "orchd_tasks_running",
        kind: Kind::Gauge,
        help: "Tasks running on workers.",
        buckets: &[],
    },
    Family {
        name: "orchd_workers",
        kind: Kind::Gauge,
        help: "Known workers by status (ready|unhealthy).",
        buckets: &[],
    },
    Family {
        name: "orchd_worker_connections_active",
        kind: Kind::Gauge,
        help: "Open /execute streams per worker.",
        buckets: &[],
    },
    Family {
        name: "orchd_tokens_out_total",
        kind: Kind::Counter,
        help: "Tokens relayed to clients, per model.",
        buckets: &[],
    },
    Family {
        name: "orchd_admission_latency_ms",
        kind: Kind::Histogram,
        help: "Time to decide a submission (parse, validate, enqueue).",
        buckets: FAST_BUCKETS,
    },
    Family {
        name: "orchd_scheduling_latency_ms",
        kind: Kind::Histogram,
        help: "Time to pick a task and a worker, per algorithm.",
        buckets: FAST_BUCKETS,
    },
    Family {
        name: "orchd_queue_time_ms",
        kind: Kind::Histogram,
        help: "Submission to worker accepted, per model.",
        buckets: MS_BUCKETS,
    },
    Family {
        name: "orchd_ttft_ms",
        kind: Kind::Histogram,
        help: "Submission to first token relayed, per model.",
        buckets: MS_BUCKETS,
    },
    Family {
        name: "orchd_inter_token_ms",
        kind: Kind::Histogram,
        help: "Gap between relayed tokens, per model.",
        buckets: ITL_BUCKETS,
    },
    Family {
        name: "orchd_e2e_ms",
        kind: Kind::Histogram,
        help: "Submission to terminal event, per model.",
        buckets: MS_BUCKETS,
    },
    Family {
        name: "orchd_fleet_pool_reachable",
        kind: Kind::Gauge,
        help: "Whether the last probe of a pool answered (1) or not (0).",
        buckets: &[],
    },
    Family {
        name: "orchd_fleet_probe_ms",
        kind: Kind::Histogram,
        help: "Duration of one pool probe (llorch-pool status over the pool's transport).",
        buckets: MS_BUCKETS,
    },
    Family {
        name: "orchd_fleet_memory_total_bytes",
        kind: Kind::Gauge,
        help: "Memory of a pool's device as its last probe reported.",
        buckets: &[],
    },
    Family {
        name: "orchd_fleet_memory_free_bytes",
        kind: Kind::Gauge,
        help: "Free (available) memory of a pool's device as its last probe reported.",
        buckets: &[],
    },
    Family {
        name: "orchd_fleet_worker_starts_total",
        kind: Kind::Counter,
        help: "Fleet workers started, by pool and reason (start|restart|adopted).",
        buckets: &[],
    },
    Family {
        name: "orchd_fleet_worker_stops_total",
        kind: Kind::Counter,
        help: "Fleet workers stopped or lost, by pool and reason (idle|evicted|drain|died).",
        buckets: &[],
    },
    Family {
        name: "orchd_fleet_evictions_total",
        kind: Kind::Counter,
        help: "Idle workers stopped to make room for another model, per pool.",
        buckets: &[],
    },
    Family {
        name: "orchd_fleet_placement_failures_total",
        kind: Kind::Counter,
        help: "Starts refused because no pool had room (NO_CAPACITY), per model.",
        buckets: &[],
    },
    Family {
        name: "orchd_fleet_placement_ms",
        kind: Kind::Histogram,
        help: "Time of one placement decision.",
        buckets: FAST_BUCKETS,
    },
    Family {
        name: "orchd_fleet_start_ms",
        kind: Kind::Histogram,
        help: "On-demand start of a worker: placement to ready (ssh, spawn, load), per model.",
        buckets: MS_BUCKETS,
    },
];

/// The process's metrics: the shared `llorch-metrics` registry with every family declared and
/// `component="orchestratord"` added to every series.
#[derive(Debug)]
pub struct Metrics {
    reg: Registry,
}

impl Default for Metrics {
    fn default() -> Self {
        let reg = Registry::new();
        for f in FAMILIES {
            match f.kind {
                Kind::Counter => reg.counter(f.name, f.help),
                Kind::Gauge => reg.gauge(f.name, f.help),
                Kind::Histogram => reg.histogram(f.name, f.help, f.buckets),
            }
        }
        Self { reg }
    }
}

fn with_component<'a>(labels: &[(&'static str, &'a str)]) -> Vec<(&'static str, &'a str)> {
    let mut all = Vec::with_capacity(labels.len() + 1);
    all.push(("component", "orchestratord"));
    all.extend_from_slice(labels);
    all
}

impl Metrics {
    /// Add 1 to a counter.
    pub fn inc(&self, name: &'static str, labels: &[(&'static str, &str)]) {
        self.reg.inc(name, &with_component(labels), 1.0);
    }

    /// Add `v` to a counter.
    pub fn add(&self, name: &'static str, labels: &[(&'static str, &str)], v: f64) {
        self.reg.inc(name, &with_component(labels), v);
    }

    /// Set a gauge.
    pub fn set(&self, name: &'static str, labels: &[(&'static str, &str)], v: f64) {
        self.reg.set(name, &with_component(labels), v);
    }

    /// Record one histogram observation.
    pub fn observe(&self, name: &'static str, labels: &[(&'static str, &str)], v: f64) {
        self.reg.observe(name, &with_component(labels), v);
    }

    /// Current value of a counter or gauge (observation count of a histogram).
    pub fn value(&self, name: &'static str, labels: &[(&'static str, &str)]) -> f64 {
        self.reg.value(name, &with_component(labels))
    }

    /// Sum of a counter or gauge over all its series (e.g. tokens of every model).
    pub fn total(&self, name: &'static str) -> f64 {
        self.reg.total(name)
    }

    /// A histogram summed over its series: bounds, cumulative counts, total count.
    pub fn histogram_total(&self, name: &'static str) -> (Vec<f64>, Vec<u64>, u64) {
        self.reg.histogram_total(name)
    }

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
        m.inc("orchd_tasks_enqueued_total", &[("outcome", "accepted")]);
        m.inc("orchd_tasks_enqueued_total", &[("outcome", "accepted")]);
        m.observe("orchd_ttft_ms", &[("model", "m")], 3.0);
        m.observe("orchd_ttft_ms", &[("model", "m")], 700.0);
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
            m.value("orchd_tasks_enqueued_total", &[("outcome", "accepted")]),
            2.0
        );
    }
}
