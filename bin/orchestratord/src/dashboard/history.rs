//! The dashboard's ring buffer: one [`Sample`] every [`SAMPLE_EVERY`] for the last
//! [`HISTORY`], computed from the metrics counters (rates and windowed TTFT quantiles) and the
//! live queue and registry. Pure: the sampler feeds it.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::Serialize;

/// Time between two samples.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(2);
/// How far back the ring buffer reaches.
pub const HISTORY: Duration = Duration::from_secs(15 * 60);
/// TTFT quantiles cover the first tokens of this many past sample intervals (30 s).
const TTFT_WINDOW: usize = 15;

/// One point of the dashboard's charts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sample {
    /// Unix ms of the sample.
    pub t_ms: u64,
    /// Tokens relayed to clients per second since the previous sample, every model together.
    pub tokens_per_sec: f64,
    /// TTFT quantiles over the last 30 s (from the `orchd_ttft_ms` buckets); null without a
    /// first token in that window.
    pub ttft_p50_ms: Option<f64>,
    pub ttft_p95_ms: Option<f64>,
    #[serde(flatten)]
    pub gauges: Gauges,
}

/// Point-in-time values read from the queue and registry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Gauges {
    pub queue_interactive: u32,
    pub queue_batch: u32,
    /// Attempts running on workers.
    pub running: u32,
    pub workers_ready: u32,
    pub workers_total: u32,
    pub slots_busy: u32,
    pub slots_total: u32,
}

/// Cumulative counters at one instant; samples are their differences.
#[derive(Debug, Clone, PartialEq)]
pub struct Counters {
    pub at: Instant,
    pub tokens_out: f64,
    /// `orchd_ttft_ms` bucket bounds, cumulative counts and total count.
    pub ttft_bounds: Vec<f64>,
    pub ttft_buckets: Vec<u64>,
    pub ttft_count: u64,
}

/// The ring buffer.
#[derive(Debug)]
pub struct History {
    samples: VecDeque<Sample>,
    /// The last `TTFT_WINDOW + 1` counter readings, oldest first.
    counters: VecDeque<Counters>,
    capacity: usize,
}

impl Default for History {
    fn default() -> Self {
        let capacity = (HISTORY.as_millis() / SAMPLE_EVERY.as_millis()) as usize;
        Self {
            samples: VecDeque::with_capacity(capacity),
            counters: VecDeque::with_capacity(TTFT_WINDOW + 1),
            capacity,
        }
    }
}

impl History {
    /// Record a sample taken at `t_ms` from `c` and `g`; returns it.
    pub fn push(&mut self, t_ms: u64, g: Gauges, c: Counters) -> Sample {
        let tokens_per_sec = self.counters.back().map_or(0.0, |prev| {
            let dt = c.at.duration_since(prev.at).as_secs_f64();
            if dt > 0.0 {
                ((c.tokens_out - prev.tokens_out) / dt).max(0.0)
            } else {
                0.0
            }
        });
        let (p50, p95) = match self.counters.front() {
            Some(old) if old.ttft_buckets.len() == c.ttft_buckets.len() => {
                let window: Vec<u64> = c
                    .ttft_buckets
                    .iter()
                    .zip(&old.ttft_buckets)
                    .map(|(n, o)| n.saturating_sub(*o))
                    .collect();
                let total = c.ttft_count.saturating_sub(old.ttft_count);
                (
                    quantile(&c.ttft_bounds, &window, total, 0.5),
                    quantile(&c.ttft_bounds, &window, total, 0.95),
                )
            }
            _ => (None, None),
        };
        let sample = Sample {
            t_ms,
            tokens_per_sec,
            ttft_p50_ms: p50,
            ttft_p95_ms: p95,
            gauges: g,
        };
        if self.counters.len() > TTFT_WINDOW {
            self.counters.pop_front();
        }
        self.counters.push_back(c);
        if self.samples.len() == self.capacity {
            self.samples.pop_front();
        }
        self.samples.push_back(sample.clone());
        sample
    }

    /// Every sample, oldest first.
    pub fn samples(&self) -> impl Iterator<Item = &Sample> {
        self.samples.iter()
    }

    /// How many samples the buffer holds at most.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

/// The `q` quantile of `total` observations counted cumulatively at `bounds` (linear within
/// the bucket, as Prometheus' `histogram_quantile`); beyond the last bound, the last bound.
pub fn quantile(bounds: &[f64], cumulative: &[u64], total: u64, q: f64) -> Option<f64> {
    if total == 0 || bounds.is_empty() {
        return None;
    }
    let rank = q * total as f64;
    let mut below = 0u64;
    let mut lower = 0.0;
    for (bound, &count) in bounds.iter().zip(cumulative) {
        if count as f64 >= rank && count > below {
            let share = (rank - below as f64) / (count - below) as f64;
            return Some(lower + (bound - lower) * share.clamp(0.0, 1.0));
        }
        below = count;
        lower = *bound;
    }
    bounds.last().copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNDS: &[f64] = &[10.0, 100.0, 1000.0];

    fn counters(at: Instant, tokens: f64, buckets: [u64; 3], count: u64) -> Counters {
        Counters {
            at,
            tokens_out: tokens,
            ttft_bounds: BOUNDS.to_vec(),
            ttft_buckets: buckets.to_vec(),
            ttft_count: count,
        }
    }

    #[test]
    fn quantiles_interpolate_within_the_bucket() {
        // 10 observations: 2 <= 10 ms, 8 in (10, 100].
        assert_eq!(
            quantile(BOUNDS, &[2, 10, 10], 10, 0.5),
            Some(10.0 + 90.0 * 3.0 / 8.0)
        );
        assert_eq!(quantile(BOUNDS, &[2, 10, 10], 10, 0.1), Some(5.0));
        // Beyond every bound: the last bound.
        assert_eq!(quantile(BOUNDS, &[0, 0, 0], 4, 0.5), Some(1000.0));
        assert_eq!(quantile(BOUNDS, &[0, 0, 0], 0, 0.5), None);
    }

    #[test]
    fn rates_and_windowed_ttft_come_from_counter_differences() {
        let mut h = History::default();
        let t0 = Instant::now();
        let g = Gauges {
            queue_interactive: 3,
            ..Gauges::default()
        };
        let first = h.push(1, g, counters(t0, 100.0, [5, 5, 5], 5));
        assert_eq!(first.tokens_per_sec, 0.0);
        let s = h.push(
            2,
            g,
            counters(t0 + Duration::from_secs(2), 160.0, [5, 7, 7], 7),
        );
        assert_eq!(s.tokens_per_sec, 30.0);
        assert_eq!(s.gauges.queue_interactive, 3);
        // The two new first tokens both fell in (10, 100].
        assert_eq!(s.ttft_p50_ms, Some(55.0));
        // No new first token: no quantile once the window has moved past them.
        let mut last = s;
        for i in 0..=TTFT_WINDOW as u64 {
            last = h.push(
                3 + i,
                g,
                counters(t0 + Duration::from_secs(4 + 2 * i), 160.0, [5, 7, 7], 7),
            );
        }
        assert_eq!(last.ttft_p95_ms, None);
        assert_eq!(last.tokens_per_sec, 0.0);
    }

    #[test]
    fn the_ring_keeps_fifteen_minutes() {
        let mut h = History::default();
        assert_eq!(h.capacity(), 450);
        let t0 = Instant::now();
        for i in 0..500u64 {
            h.push(
                i,
                Gauges::default(),
                counters(t0 + Duration::from_secs(i), 0.0, [0, 0, 0], 0),
            );
        }
        assert_eq!(h.samples().count(), 450);
        assert_eq!(h.samples().next().map(|s| s.t_ms), Some(50));
    }
}
