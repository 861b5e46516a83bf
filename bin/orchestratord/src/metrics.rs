//! Prometheus metrics (`orchd_*`): counters, gauges and fixed-bucket histograms with labels,
//! rendered in the text exposition format. Every series carries `component="orchestratord"`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

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

const MS_BUCKETS: &[f64] =
    &[1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0, 60000.0, 300000.0];
const ITL_BUCKETS: &[f64] = &[1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0, 640.0, 1280.0, 5000.0];
const FAST_BUCKETS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 50.0];

/// Every family this process exports.
pub const FAMILIES: &[Family] = &[
    Family { name: "orchd_queue_depth", kind: Kind::Gauge, help: "Tasks waiting, per priority class.", buckets: &[] },
    Family { name: "orchd_tasks_enqueued_total", kind: Kind::Counter, help: "Task submissions by outcome (accepted|rejected).", buckets: &[] },
    Family { name: "orchd_tasks_rejected_total", kind: Kind::Counter, help: "Rejected submissions by reason (error code).", buckets: &[] },
    Family { name: "orchd_tasks_evicted_total", kind: Kind::Counter, help: "Batch tasks evicted by the drop-lru policy.", buckets: &[] },
    Family { name: "orchd_tasks_dispatched_total", kind: Kind::Counter, help: "Dispatch attempts by worker and outcome (success|failure).", buckets: &[] },
    Family { name: "orchd_tasks_retried_total", kind: Kind::Counter, help: "Attempts retried on another worker before the first token, by reason.", buckets: &[] },
    Family { name: "orchd_tasks_finished_total", kind: Kind::Counter, help: "Finished tasks by model and outcome (completed|cancelled|error code).", buckets: &[] },
    Family { name: "orchd_tasks_running", kind: Kind::Gauge, help: "Tasks running on workers.", buckets: &[] },
    Family { name: "orchd_workers", kind: Kind::Gauge, help: "Known workers by status (ready|unhealthy).", buckets: &[] },
    Family { name: "orchd_worker_connections_active", kind: Kind::Gauge, help: "Open /execute streams per worker.", buckets: &[] },
    Family { name: "orchd_tokens_out_total", kind: Kind::Counter, help: "Tokens relayed to clients, per model.", buckets: &[] },
    Family { name: "orchd_admission_latency_ms", kind: Kind::Histogram, help: "Time to decide a submission (parse, validate, enqueue).", buckets: FAST_BUCKETS },
    Family { name: "orchd_scheduling_latency_ms", kind: Kind::Histogram, help: "Time to pick a task and a worker, per algorithm.", buckets: FAST_BUCKETS },
    Family { name: "orchd_queue_time_ms", kind: Kind::Histogram, help: "Submission to worker accepted, per model.", buckets: MS_BUCKETS },
    Family { name: "orchd_ttft_ms", kind: Kind::Histogram, help: "Submission to first token relayed, per model.", buckets: MS_BUCKETS },
    Family { name: "orchd_inter_token_ms", kind: Kind::Histogram, help: "Gap between relayed tokens, per model.", buckets: ITL_BUCKETS },
    Family { name: "orchd_e2e_ms", kind: Kind::Histogram, help: "Submission to terminal event, per model.", buckets: MS_BUCKETS },
];

type Key = (&'static str, Vec<(&'static str, String)>);

#[derive(Debug, Default)]
struct Hist {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

#[derive(Debug, Default)]
struct Series {
    values: BTreeMap<Key, f64>,
    hists: BTreeMap<Key, Hist>,
}

/// The process's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    series: Mutex<Series>,
}

fn key(name: &'static str, labels: &[(&'static str, &str)]) -> Key {
    (name, labels.iter().map(|(k, v)| (*k, v.to_string())).collect())
}

fn family(name: &str) -> &'static Family {
    FAMILIES.iter().find(|f| f.name == name).unwrap_or_else(|| panic!("unknown metric {name}"))
}

impl Metrics {
    fn lock(&self) -> std::sync::MutexGuard<'_, Series> {
        self.series.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Add 1 to a counter.
    pub fn inc(&self, name: &'static str, labels: &[(&'static str, &str)]) {
        *self.lock().values.entry(key(name, labels)).or_default() += 1.0;
    }

    /// Set a gauge.
    pub fn set(&self, name: &'static str, labels: &[(&'static str, &str)], v: f64) {
        self.lock().values.insert(key(name, labels), v);
    }

    /// Drop every series of a gauge (before re-setting it from a snapshot).
    pub fn clear(&self, name: &'static str) {
        self.lock().values.retain(|(n, _), _| *n != name);
    }

    /// Record one histogram observation.
    pub fn observe(&self, name: &'static str, labels: &[(&'static str, &str)], v: f64) {
        let buckets = family(name).buckets;
        let mut s = self.lock();
        let h = s.hists.entry(key(name, labels)).or_insert_with(|| Hist { counts: vec![0; buckets.len()], ..Default::default() });
        if let Some(i) = buckets.iter().position(|b| v <= *b) {
            h.counts[i] += 1;
        }
        h.sum += v;
        h.count += 1;
    }

    /// Current value of a counter or gauge (tests and capabilities).
    pub fn value(&self, name: &'static str, labels: &[(&'static str, &str)]) -> f64 {
        self.lock().values.get(&key(name, labels)).copied().unwrap_or(0.0)
    }

    /// The Prometheus text format.
    pub fn render(&self) -> String {
        let s = self.lock();
        let mut out = String::new();
        for f in FAMILIES {
            let kind = match f.kind {
                Kind::Counter => "counter",
                Kind::Gauge => "gauge",
                Kind::Histogram => "histogram",
            };
            let _ = writeln!(out, "# HELP {} {}\n# TYPE {} {kind}", f.name, f.help, f.name);
            if f.kind == Kind::Histogram {
                for ((_, labels), h) in s.hists.range(range(f.name)) {
                    let mut cumulative = 0;
                    for (b, c) in f.buckets.iter().zip(&h.counts) {
                        cumulative += c;
                        let le = format!("{b}");
                        let _ = writeln!(out, "{}_bucket{} {cumulative}", f.name, fmt_labels(labels, Some(&le)));
                    }
                    let _ = writeln!(out, "{}_bucket{} {}", f.name, fmt_labels(labels, Some("+Inf")), h.count);
                    let _ = writeln!(out, "{}_sum{} {}", f.name, fmt_labels(labels, None), h.sum);
                    let _ = writeln!(out, "{}_count{} {}", f.name, fmt_labels(labels, None), h.count);
                }
            } else {
                for ((_, labels), v) in s.values.range(range(f.name)) {
                    let _ = writeln!(out, "{}{} {v}", f.name, fmt_labels(labels, None));
                }
            }
        }
        out
    }
}

fn range(name: &'static str) -> std::ops::RangeInclusive<Key> {
    let hi: Vec<(&'static str, String)> = vec![("\u{10FFFF}", String::new())];
    (name, Vec::new())..=(name, hi)
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn fmt_labels(labels: &[(&'static str, String)], le: Option<&str>) -> String {
    let mut parts = vec!["component=\"orchestratord\"".to_string()];
    parts.extend(labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))));
    if let Some(le) = le {
        parts.push(format!("le=\"{le}\""));
    }
    format!("{{{}}}", parts.join(","))
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
        assert!(text.contains("orchd_tasks_enqueued_total{component=\"orchestratord\",outcome=\"accepted\"} 2\n"), "{text}");
        assert!(text.contains("orchd_ttft_ms_bucket{component=\"orchestratord\",model=\"m\",le=\"5\"} 1\n"));
        assert!(text.contains("orchd_ttft_ms_bucket{component=\"orchestratord\",model=\"m\",le=\"1000\"} 2\n"));
        assert!(text.contains("orchd_ttft_ms_count{component=\"orchestratord\",model=\"m\"} 2\n"));
        assert!(text.contains("# TYPE orchd_e2e_ms histogram"));
        assert_eq!(m.value("orchd_tasks_enqueued_total", &[("outcome", "accepted")]), 2.0);
    }
}
