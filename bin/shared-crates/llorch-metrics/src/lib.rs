//! Minimal Prometheus metrics: labelled counters, gauges and histograms rendered in the text
//! exposition format (version 0.0.4). Thread-safe; cheap enough for per-token updates.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

type Labels = Vec<(String, String)>;

fn key(labels: &[(&str, &str)]) -> Labels {
    labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn fmt_labels(labels: &Labels, extra: Option<(&str, String)>) -> String {
    let mut parts: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    if let Some((k, v)) = extra {
        parts.push(format!("{k}=\"{v}\""));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[derive(Debug)]
struct Hist {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

#[derive(Debug)]
enum Family {
    Counter(BTreeMap<Labels, f64>),
    Gauge(BTreeMap<Labels, f64>),
    Histogram {
        buckets: Vec<f64>,
        series: BTreeMap<Labels, Hist>,
    },
}

/// A registry of metric families, rendered in registration order.
#[derive(Debug, Default)]
pub struct Registry {
    inner: Mutex<Vec<(String, String, Family)>>,
}

/// Latency buckets in milliseconds, 1 ms … 60 s.
pub const MS_BUCKETS: &[f64] = &[
    1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0,
];

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    fn with<R>(&self, name: &str, f: impl FnOnce(&mut Family) -> R) -> R {
        let mut g = self.inner.lock().unwrap();
        let fam = g
            .iter_mut()
            .find(|(n, _, _)| n == name)
            .unwrap_or_else(|| panic!("metric {name} not registered"));
        f(&mut fam.2)
    }

    /// Declare a counter.
    pub fn counter(&self, name: &str, help: &str) {
        self.inner.lock().unwrap().push((
            name.into(),
            help.into(),
            Family::Counter(BTreeMap::new()),
        ));
    }

    /// Declare a gauge.
    pub fn gauge(&self, name: &str, help: &str) {
        self.inner
            .lock()
            .unwrap()
            .push((name.into(), help.into(), Family::Gauge(BTreeMap::new())));
    }

    /// Declare a histogram with upper bounds `buckets` (ascending).
    pub fn histogram(&self, name: &str, help: &str, buckets: &[f64]) {
        let fam = Family::Histogram {
            buckets: buckets.to_vec(),
            series: BTreeMap::new(),
        };
        self.inner
            .lock()
            .unwrap()
            .push((name.into(), help.into(), fam));
    }

    /// Add `v` to a counter series.
    pub fn inc(&self, name: &str, labels: &[(&str, &str)], v: f64) {
        self.with(name, |f| {
            if let Family::Counter(m) = f {
                *m.entry(key(labels)).or_default() += v;
            }
        })
    }

    /// Set a gauge series.
    pub fn set(&self, name: &str, labels: &[(&str, &str)], v: f64) {
        self.with(name, |f| {
            if let Family::Gauge(m) = f {
                m.insert(key(labels), v);
            }
        })
    }

    /// Record one observation in a histogram series.
    pub fn observe(&self, name: &str, labels: &[(&str, &str)], v: f64) {
        self.with(name, |f| {
            if let Family::Histogram { buckets, series } = f {
                let h = series.entry(key(labels)).or_insert_with(|| Hist {
                    counts: vec![0; buckets.len()],
                    sum: 0.0,
                    count: 0,
                });
                for (i, b) in buckets.iter().enumerate() {
                    if v <= *b {
                        h.counts[i] += 1;
                    }
                }
                h.sum += v;
                h.count += 1;
            }
        })
    }

    /// Current value of a counter or gauge series (tests, summaries).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.with(name, |f| match f {
            Family::Counter(m) | Family::Gauge(m) => m.get(&key(labels)).copied().unwrap_or(0.0),
            Family::Histogram { series, .. } => series
                .get(&key(labels))
                .map(|h| h.count as f64)
                .unwrap_or(0.0),
        })
    }

    /// Sum of every series of a counter or gauge family (0 for a histogram).
    pub fn total(&self, name: &str) -> f64 {
        self.with(name, |f| match f {
            Family::Counter(m) | Family::Gauge(m) => m.values().sum(),
            Family::Histogram { .. } => 0.0,
        })
    }

    /// A histogram family summed over its series: the bucket bounds, the cumulative count at
    /// each bound (as rendered) and the total count. Empty for a counter or gauge.
    pub fn histogram_total(&self, name: &str) -> (Vec<f64>, Vec<u64>, u64) {
        self.with(name, |f| match f {
            Family::Histogram { buckets, series } => {
                let mut counts = vec![0; buckets.len()];
                let mut total = 0;
                for h in series.values() {
                    for (c, v) in counts.iter_mut().zip(&h.counts) {
                        *c += v;
                    }
                    total += h.count;
                }
                (buckets.clone(), counts, total)
            }
            _ => (Vec::new(), Vec::new(), 0),
        })
    }

    /// Render everything in the Prometheus text format.
    pub fn render(&self) -> String {
        let g = self.inner.lock().unwrap();
        let mut out = String::new();
        for (name, help, fam) in g.iter() {
            let kind = match fam {
                Family::Counter(_) => "counter",
                Family::Gauge(_) => "gauge",
                Family::Histogram { .. } => "histogram",
            };
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            match fam {
                Family::Counter(m) | Family::Gauge(m) => {
                    if m.is_empty() && matches!(fam, Family::Counter(_)) {
                        let _ = writeln!(out, "{name} 0");
                    }
                    for (l, v) in m {
                        let _ = writeln!(out, "{name}{} {v}", fmt_labels(l, None));
                    }
                }
                Family::Histogram { buckets, series } => {
                    for (l, h) in series {
                        for (b, c) in buckets.iter().zip(&h.counts) {
                            let _ = writeln!(
                                out,
                                "{name}_bucket{} {c}",
                                fmt_labels(l, Some(("le", b.to_string())))
                            );
                        }
                        let _ = writeln!(
                            out,
                            "{name}_bucket{} {}",
                            fmt_labels(l, Some(("le", "+Inf".into()))),
                            h.count
                        );
                        let _ = writeln!(out, "{name}_sum{} {}", fmt_labels(l, None), h.sum);
                        let _ = writeln!(out, "{name}_count{} {}", fmt_labels(l, None), h.count);
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_text_format() {
        let r = Registry::new();
        r.counter("x_total", "things");
        r.histogram("lat_ms", "latency", &[1.0, 10.0]);
        r.inc("x_total", &[("outcome", "ok")], 2.0);
        r.observe("lat_ms", &[], 5.0);
        let t = r.render();
        assert!(t.contains("x_total{outcome=\"ok\"} 2"));
        assert!(t.contains("lat_ms_bucket{le=\"1\"} 0"));
        assert!(t.contains("lat_ms_bucket{le=\"10\"} 1"));
        assert!(t.contains("lat_ms_count 1"));
        assert_eq!(r.value("x_total", &[("outcome", "ok")]), 2.0);
    }

    #[test]
    fn totals_sum_every_series() {
        let r = Registry::new();
        r.counter("x_total", "things");
        r.histogram("lat_ms", "latency", &[1.0, 10.0]);
        r.inc("x_total", &[("model", "a")], 2.0);
        r.inc("x_total", &[("model", "b")], 3.0);
        r.observe("lat_ms", &[("model", "a")], 0.5);
        r.observe("lat_ms", &[("model", "b")], 5.0);
        r.observe("lat_ms", &[("model", "b")], 50.0);
        assert_eq!(r.total("x_total"), 5.0);
        assert_eq!(
            r.histogram_total("lat_ms"),
            (vec![1.0, 10.0], vec![1, 2], 3)
        );
        assert_eq!(r.histogram_total("x_total").2, 0);
    }
}
