//! Where a new worker goes (pure: no I/O, unit-tested).
//!
//! A pool is eligible when it is reachable, not drained and allowed by the deployment. Its free
//! memory is `min(available, max_memory_bytes - planned)`, where `available` is the host's
//! `MemAvailable` (or the GPU's free memory) and `planned` the estimates of the fleet's workers
//! there. Among eligible pools where the estimate fits: the ones that already have the model's
//! files first, then the most free memory, then the name. When none fits, idle workers (no
//! running or queued task) are stopped least-recently-used first on the pool that needs the
//! fewest stops; busy workers never. When that cannot help either, the answer is
//! [`Plan::NoFit`] with a report naming what was needed and what each pool had.

use std::time::Instant;

/// An idle fleet worker that may be stopped to make room.
#[derive(Debug, Clone)]
pub struct IdleWorker {
    pub id: String,
    /// Its memory estimate.
    pub bytes: u64,
    /// When it last ran a task (or started).
    pub last_used: Instant,
}

/// One pool as placement sees it.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub name: String,
    /// Why it cannot take anything (unreachable, drained, not allowed); `None` = eligible.
    pub excluded: Option<String>,
    /// Whether the model's files are there already.
    pub present: bool,
    /// Memory the host reports available for the backend.
    pub available: u64,
    /// `max_memory_bytes` of the pool.
    pub cap: Option<u64>,
    /// Sum of the estimates of the fleet's workers on the pool.
    pub planned: u64,
    pub idle: Vec<IdleWorker>,
}

impl Candidate {
    /// Memory a new worker may use here.
    pub fn free(&self) -> u64 {
        let by_cap = self
            .cap
            .map_or(u64::MAX, |c| c.saturating_sub(self.planned));
        self.available.min(by_cap)
    }
}

/// The decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Start the worker on `pool` after stopping `evict` (ids; empty when it fits as is).
    Place { pool: String, evict: Vec<String> },
    /// Nowhere, even after stopping every idle worker.
    NoFit { report: String },
}

/// Decide where a worker needing `need` bytes goes.
pub fn plan(need: u64, pools: &[Candidate]) -> Plan {
    let eligible: Vec<&Candidate> = pools.iter().filter(|c| c.excluded.is_none()).collect();
    let best_fit = eligible.iter().filter(|c| c.free() >= need).min_by(|a, b| {
        b.present
            .cmp(&a.present)
            .then(b.free().cmp(&a.free()))
            .then(a.name.cmp(&b.name))
    });
    if let Some(c) = best_fit {
        return Plan::Place {
            pool: c.name.clone(),
            evict: Vec::new(),
        };
    }
    // (stops needed, oldest use among them, not present, name, ids)
    let mut options: Vec<(usize, Instant, bool, &str, Vec<String>)> = Vec::new();
    for c in &eligible {
        let mut idle = c.idle.clone();
        idle.sort_by_key(|w| w.last_used);
        let mut free = c.free();
        let mut ids = Vec::new();
        let mut newest = None;
        for w in idle {
            if free >= need {
                break;
            }
            free = free.saturating_add(w.bytes);
            newest = Some(w.last_used);
            ids.push(w.id);
        }
        // Stopping a worker frees its estimate under the cap, but only what the host really
        // gives back counts against `available`: both grow by the same estimate here.
        if free >= need {
            if let Some(t) = newest {
                options.push((ids.len(), t, !c.present, c.name.as_str(), ids));
            }
        }
    }
    options.sort_by(|a, b| (a.0, a.1, a.2, a.3).cmp(&(b.0, b.1, b.2, b.3)));
    if let Some((_, _, _, pool, evict)) = options.into_iter().next() {
        return Plan::Place {
            pool: pool.to_string(),
            evict,
        };
    }
    Plan::NoFit {
        report: report(need, pools),
    }
}

/// `needs 700 MiB; pool a: 512 MiB free (cap 1 GiB, 600 MiB planned, 20 GiB available); ...`
pub fn report(need: u64, pools: &[Candidate]) -> String {
    let mut parts = vec![format!("needs {}", mib(need))];
    for c in pools {
        match &c.excluded {
            Some(why) => parts.push(format!("pool {}: {why}", c.name)),
            None => {
                let cap = c
                    .cap
                    .map(|v| format!("cap {}, ", mib(v)))
                    .unwrap_or_default();
                let idle: u64 = c.idle.iter().map(|w| w.bytes).sum();
                parts.push(format!(
                    "pool {}: {} free ({cap}{} planned, {} available; {} idle to stop)",
                    c.name,
                    mib(c.free()),
                    mib(c.planned),
                    mib(c.available),
                    mib(idle)
                ));
            }
        }
    }
    if pools.is_empty() {
        parts.push("no pool is allowed for this model".into());
    }
    parts.join("; ")
}

/// Bytes as `N MiB` (exact byte count in parentheses below 1 MiB).
pub fn mib(b: u64) -> String {
    if b < 1024 * 1024 {
        format!("{b} B")
    } else {
        format!("{} MiB", b / (1024 * 1024))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const M: u64 = 1024 * 1024;

    fn pool(name: &str, available: u64, cap: Option<u64>, planned: u64) -> Candidate {
        Candidate {
            name: name.into(),
            excluded: None,
            present: false,
            available,
            cap,
            planned,
            idle: Vec::new(),
        }
    }

    fn idle(id: &str, bytes: u64, age_s: u64) -> IdleWorker {
        IdleWorker {
            id: id.into(),
            bytes,
            last_used: Instant::now() - Duration::from_secs(age_s),
        }
    }

    fn place(p: &Plan) -> (&str, Vec<&str>) {
        match p {
            Plan::Place { pool, evict } => (pool, evict.iter().map(String::as_str).collect()),
            Plan::NoFit { report } => panic!("no fit: {report}"),
        }
    }

    #[test]
    fn prefers_present_then_most_free() {
        let mut a = pool("a", 10_000 * M, None, 0);
        let b = pool("b", 20_000 * M, None, 0);
        assert_eq!(place(&plan(100 * M, &[a.clone(), b.clone()])).0, "b");
        a.present = true;
        assert_eq!(place(&plan(100 * M, &[a.clone(), b.clone()])).0, "a");
        // the cap wins over what the host has
        let c = pool("c", 20_000 * M, Some(500 * M), 450 * M);
        assert_eq!(c.free(), 50 * M);
        assert_eq!(place(&plan(100 * M, &[c, b])).0, "b");
    }

    #[test]
    fn evicts_idle_lru_on_the_pool_needing_fewest_stops() {
        let mut a = pool("a", 20_000 * M, Some(1000 * M), 900 * M);
        a.idle = vec![idle("a-new", 300 * M, 1), idle("a-old", 300 * M, 50)];
        let mut b = pool("b", 20_000 * M, Some(1000 * M), 1000 * M);
        b.idle = vec![idle("b1", 200 * M, 100), idle("b2", 200 * M, 90)];
        // a: one stop (the least recently used) frees enough; b needs two
        assert_eq!(
            place(&plan(350 * M, &[a.clone(), b.clone()])),
            ("a", vec!["a-old"])
        );
        // excluded pools are never used, their idle workers never stopped
        a.excluded = Some("drained".into());
        assert_eq!(place(&plan(350 * M, &[a, b])), ("b", vec!["b1", "b2"]));
    }

    #[test]
    fn twenty_pools_decide_quickly() {
        let pools: Vec<Candidate> = (0..20)
            .map(|i| {
                let mut c = pool(&format!("p{i:02}"), 32_000 * M, Some(4000 * M), 3900 * M);
                c.idle = (0..8)
                    .map(|j| idle(&format!("p{i}-w{j}"), 450 * M, (i * 8 + j) as u64))
                    .collect();
                c
            })
            .collect();
        let t = Instant::now();
        let mut last = None;
        for _ in 0..100 {
            last = Some(plan(1000 * M, &pools));
        }
        let per = t.elapsed() / 100;
        eprintln!("placement over 20 pools x 8 idle workers: {per:?} per decision");
        // 20 pools, every one needing 2 stops: the least recently used pair wins (p19's oldest).
        let (p, evict) = place(last.as_ref().unwrap());
        assert_eq!((p, evict.len()), ("p19", 2));
        assert!(per < Duration::from_millis(50), "{per:?}");
    }

    #[test]
    fn no_fit_names_needed_and_available() {
        let mut a = pool("a", 20_000 * M, Some(600 * M), 500 * M);
        a.idle = vec![idle("x", 50 * M, 5)];
        let mut b = pool("b", 0, None, 0);
        b.excluded = Some("unreachable: connection refused".into());
        let Plan::NoFit { report } = plan(700 * M, &[a, b]) else {
            panic!("must not fit");
        };
        assert!(report.starts_with("needs 700 MiB"), "{report}");
        assert!(
            report.contains("pool a: 100 MiB free (cap 600 MiB, 500 MiB planned"),
            "{report}"
        );
        assert!(report.contains("pool b: unreachable"), "{report}");
    }
}
