//! Typed Prometheus metrics: each family is declared once on a [`Registry`] and used through the
//! handle that declaration returns ([`Counter`], [`Gauge`], [`Histogram`]), so there is no lookup
//! by name at run time and no panic path. Rendered in the text exposition format (0.0.4).
//!
//! Each family has its own lock, held only to update one series; a poisoned lock (a panic
//! elsewhere while holding it) is recovered, never propagated, so a metric update cannot take the
//! engine thread or a request handler down.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// Latency buckets in milliseconds, 1 ms … 5 min: request phases (queue, TTFT, end to end).
pub const LATENCY_MS: &[f64] = &[
    1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0,
];

/// Gap between two streamed tokens in milliseconds, 1 ms … 5 s.
pub const TOKEN_GAP_MS: &[f64] = &[
    1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0, 640.0, 1280.0, 5000.0,
];

/// In-process decisions in milliseconds, 5 µs … 50 ms (admission, scheduling, policy calls).
pub const DECISION_MS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 50.0,
];

type Labels = Vec<(String, String)>;

fn key(labels: &[(&str, &str)]) -> Labels {
    labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn fmt_labels(constant: &Labels, labels: &Labels, le: Option<&str>) -> String {
    let mut parts: Vec<String> = constant
        .iter()
        .chain(labels)
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    if let Some(le) = le {
        parts.push(format!("le=\"{le}\""));
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

/// One family's rendering, behind the registry's list.
trait Render: Send + Sync {
    fn render(&self, out: &mut String, constant: &Labels);
}

/// A counter or gauge family: one value per label set.
struct Scalar {
    name: &'static str,
    help: &'static str,
    counter: bool,
    series: Mutex<BTreeMap<Labels, f64>>,
}

impl Scalar {
    fn value(&self, labels: &[(&str, &str)]) -> f64 {
        lock(&self.series).get(&key(labels)).copied().unwrap_or(0.0)
    }

    fn total(&self) -> f64 {
        lock(&self.series).values().sum()
    }
}

impl Render for Scalar {
    fn render(&self, out: &mut String, constant: &Labels) {
        let (name, kind) = (self.name, if self.counter { "counter" } else { "gauge" });
        let _ = writeln!(out, "# HELP {name} {}\n# TYPE {name} {kind}", self.help);
        let series = lock(&self.series);
        if series.is_empty() && self.counter {
            let _ = writeln!(out, "{name}{} 0", fmt_labels(constant, &Vec::new(), None));
        }
        for (l, v) in series.iter() {
            let _ = writeln!(out, "{name}{} {v}", fmt_labels(constant, l, None));
        }
    }
}

#[derive(Debug)]
struct Hist {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

/// A histogram family: cumulative bucket counts, sum and count per label set.
struct HistFamily {
    name: &'static str,
    help: &'static str,
    buckets: &'static [f64],
    series: Mutex<BTreeMap<Labels, Hist>>,
}

impl Render for HistFamily {
    fn render(&self, out: &mut String, constant: &Labels) {
        let name = self.name;
        let _ = writeln!(out, "# HELP {name} {}\n# TYPE {name} histogram", self.help);
        for (l, h) in lock(&self.series).iter() {
            for (b, c) in self.buckets.iter().zip(&h.counts) {
                let le = fmt_labels(constant, l, Some(&b.to_string()));
                let _ = writeln!(out, "{name}_bucket{le} {c}");
            }
            let inf = fmt_labels(constant, l, Some("+Inf"));
            let _ = writeln!(out, "{name}_bucket{inf} {}", h.count);
            let plain = fmt_labels(constant, l, None);
            let _ = writeln!(out, "{name}_sum{plain} {}", h.sum);
            let _ = writeln!(out, "{name}_count{plain} {}", h.count);
        }
    }
}

/// A monotonically increasing count, per label set.
#[derive(Clone)]
pub struct Counter(Arc<Scalar>);

impl Counter {
    /// Add 1 to the series with these labels.
    pub fn inc(&self, labels: &[(&str, &str)]) {
        self.add(labels, 1.0);
    }

    /// Add `v` to the series with these labels.
    pub fn add(&self, labels: &[(&str, &str)], v: f64) {
        *lock(&self.0.series).entry(key(labels)).or_default() += v;
    }

    /// The series' current value (0 when never touched).
    pub fn value(&self, labels: &[(&str, &str)]) -> f64 {
        self.0.value(labels)
    }

    /// The sum over every series.
    pub fn total(&self) -> f64 {
        self.0.total()
    }
}

/// A value that goes up and down, per label set.
#[derive(Clone)]
pub struct Gauge(Arc<Scalar>);

impl Gauge {
    /// Set the series with these labels.
    pub fn set(&self, labels: &[(&str, &str)], v: f64) {
        lock(&self.0.series).insert(key(labels), v);
    }

    /// The series' current value (0 when never set).
    pub fn value(&self, labels: &[(&str, &str)]) -> f64 {
        self.0.value(labels)
    }

    /// The sum over every series.
    pub fn total(&self) -> f64 {
        self.0.total()
    }
}

/// Observations counted in fixed buckets, per label set.
#[derive(Clone)]
pub struct Histogram(Arc<HistFamily>);

/// A histogram summed over its series: bucket bounds, the cumulative count at each bound (as
/// rendered) and the total count.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramTotal {
    pub bounds: Vec<f64>,
    pub cumulative: Vec<u64>,
    pub count: u64,
}

impl Histogram {
    /// Record one observation in the series with these labels.
    pub fn observe(&self, labels: &[(&str, &str)], v: f64) {
        let buckets = self.0.buckets;
        let mut series = lock(&self.0.series);
        let h = series.entry(key(labels)).or_insert_with(|| Hist {
            counts: vec![0; buckets.len()],
            sum: 0.0,
            count: 0,
        });
        for (c, b) in h.counts.iter_mut().zip(buckets) {
            if v <= *b {
                *c += 1;
            }
        }
        h.sum += v;
        h.count += 1;
    }

    /// Observations recorded in the series with these labels.
    pub fn count(&self, labels: &[(&str, &str)]) -> u64 {
        lock(&self.0.series)
            .get(&key(labels))
            .map_or(0, |h| h.count)
    }

    /// Every series summed.
    pub fn total(&self) -> HistogramTotal {
        let mut cumulative = vec![0; self.0.buckets.len()];
        let mut count = 0;
        for h in lock(&self.0.series).values() {
            for (c, v) in cumulative.iter_mut().zip(&h.counts) {
                *c += v;
            }
            count += h.count;
        }
        HistogramTotal {
            bounds: self.0.buckets.to_vec(),
            cumulative,
            count,
        }
    }
}

macro_rules! debug_by_name {
    ($($t:ident),*) => {$(
        impl std::fmt::Debug for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_tuple(stringify!($t)).field(&self.0.name).finish()
            }
        }
    )*};
}
debug_by_name!(Counter, Gauge, Histogram);

/// The families of one process, rendered in declaration order, with constant labels (e.g.
/// `component="orchestratord"`) put first on every series.
#[derive(Default)]
pub struct Registry {
    constant: Labels,
    families: Mutex<Vec<Arc<dyn Render>>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("constant", &self.constant)
            .field("families", &lock(&self.families).len())
            .finish()
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty registry whose series all carry these labels.
    pub fn with_labels(constant: &[(&str, &str)]) -> Self {
        Self {
            constant: key(constant),
            families: Mutex::default(),
        }
    }

    fn scalar(&self, name: &'static str, help: &'static str, counter: bool) -> Arc<Scalar> {
        let s = Arc::new(Scalar {
            name,
            help,
            counter,
            series: Mutex::default(),
        });
        lock(&self.families).push(s.clone());
        s
    }

    /// Declare a counter.
    pub fn counter(&self, name: &'static str, help: &'static str) -> Counter {
        Counter(self.scalar(name, help, true))
    }

    /// Declare a gauge.
    pub fn gauge(&self, name: &'static str, help: &'static str) -> Gauge {
        Gauge(self.scalar(name, help, false))
    }

    /// Declare a histogram with upper bounds `buckets` (ascending; one of this crate's sets).
    pub fn histogram(
        &self,
        name: &'static str,
        help: &'static str,
        buckets: &'static [f64],
    ) -> Histogram {
        let h = Arc::new(HistFamily {
            name,
            help,
            buckets,
            series: Mutex::default(),
        });
        lock(&self.families).push(h.clone());
        Histogram(h)
    }

    /// Everything in the Prometheus text format.
    pub fn render(&self) -> String {
        let families: Vec<_> = lock(&self.families).clone();
        let mut out = String::new();
        for f in families {
            f.render(&mut out, &self.constant);
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
        let things = r.counter("x_total", "things");
        let lat = r.histogram("lat_ms", "latency", &[1.0, 10.0]);
        let idle = r.counter("idle_total", "never touched");
        things.add(&[("outcome", "ok")], 2.0);
        lat.observe(&[], 5.0);
        let t = r.render();
        assert!(t.contains("# TYPE x_total counter\nx_total{outcome=\"ok\"} 2\n"));
        assert!(t.contains("lat_ms_bucket{le=\"1\"} 0"));
        assert!(t.contains("lat_ms_bucket{le=\"10\"} 1"));
        assert!(t.contains("lat_ms_bucket{le=\"+Inf\"} 1"));
        assert!(t.contains("lat_ms_count 1"));
        assert!(t.contains("idle_total 0\n"));
        assert!(t.find("x_total").unwrap() < t.find("lat_ms").unwrap());
        assert_eq!(things.value(&[("outcome", "ok")]), 2.0);
        assert_eq!(idle.value(&[]), 0.0);
    }

    #[test]
    fn constant_labels_come_first_and_values_escape() {
        let r = Registry::with_labels(&[("component", "w")]);
        let g = r.gauge("g", "a gauge");
        g.set(&[("model", "a\"b")], 3.0);
        r.counter("c_total", "untouched");
        let t = r.render();
        assert!(t.contains("g{component=\"w\",model=\"a\\\"b\"} 3\n"), "{t}");
        assert!(t.contains("c_total{component=\"w\"} 0\n"), "{t}");
        assert_eq!(g.value(&[("model", "a\"b")]), 3.0);
    }

    #[test]
    fn totals_sum_every_series() {
        let r = Registry::new();
        let x = r.counter("x_total", "things");
        let lat = r.histogram("lat_ms", "latency", &[1.0, 10.0]);
        x.add(&[("model", "a")], 2.0);
        x.add(&[("model", "b")], 3.0);
        lat.observe(&[("model", "a")], 0.5);
        lat.observe(&[("model", "b")], 5.0);
        lat.observe(&[("model", "b")], 50.0);
        assert_eq!(x.total(), 5.0);
        assert_eq!(
            lat.total(),
            HistogramTotal {
                bounds: vec![1.0, 10.0],
                cumulative: vec![1, 2],
                count: 3
            }
        );
        assert_eq!(lat.count(&[("model", "b")]), 2);
    }

    #[test]
    fn a_poisoned_family_keeps_counting() {
        let r = Registry::new();
        let x = r.counter("x_total", "things");
        let y = x.clone();
        let _ = std::thread::spawn(move || {
            let _held = y.0.series.lock().unwrap();
            panic!("a panic while the family's lock is held");
        })
        .join();
        x.inc(&[]);
        assert_eq!(x.value(&[]), 1.0);
        assert!(r.render().contains("x_total 1\n"));
    }
}
