//! Opt-in time accounting of the forward pass by operation, for benchmarks (`llorch-bench
//! --profile`). Off by default: then each probe costs one relaxed atomic load.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

static ENABLED: AtomicBool = AtomicBool::new(false);
static TOTALS: Mutex<BTreeMap<String, (Duration, u64)>> = Mutex::new(BTreeMap::new());

/// Start accounting (process-wide).
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// The start time of a probe, when accounting is on.
pub fn start() -> Option<Instant> {
    ENABLED.load(Ordering::Relaxed).then(Instant::now)
}

/// Add the time since `start` to operation `op` (named lazily: only when accounting is on).
pub fn record(start: Option<Instant>, op: impl FnOnce() -> String) {
    if let Some(t) = start {
        let e = t.elapsed();
        let mut totals = TOTALS.lock().unwrap_or_else(|p| p.into_inner());
        let entry = totals.entry(op()).or_default();
        entry.0 += e;
        entry.1 += 1;
    }
}

/// The totals so far (operation, time, calls), reset to zero.
pub fn take() -> Vec<(String, Duration, u64)> {
    let mut totals = TOTALS.lock().unwrap_or_else(|p| p.into_inner());
    std::mem::take(&mut *totals)
        .into_iter()
        .map(|(k, (d, n))| (k, d, n))
        .collect()
}

/// Run `f`, adding its time to operation `op` when accounting is on.
pub fn time<T>(op: &'static str, f: impl FnOnce() -> T) -> T {
    let t = start();
    let out = f();
    record(t, || op.into());
    out
}
