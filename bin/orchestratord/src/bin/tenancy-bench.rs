//! `tenancy-bench`: the cost of a tenant admission decision with many tenants and keys, in
//! process: key lookup + hash check, limit checks (buckets, quota), and the fair-share queue push
//! and position, with `--tenants` tenants each holding one key and `--queued` tasks waiting.
//! Prints p50/p99/max in µs. With `--policy FILE`, also the cost of the policy hook's admission
//! call (and placement call among `--candidates` workers when the script has `place`).

#![forbid(unsafe_code)]

use std::sync::Arc;
use std::time::Instant;

use clap::Parser;
use llorch_wire::tasks::Priority;
use llorch_wire::tenancy::{KeyCreate, TenantLimits, TenantSpec};
use orchestratord::config::QueuePolicy;
use orchestratord::queue::{Entry, TaskQueue};
use orchestratord::tenancy::limits::SystemClock;
use orchestratord::tenancy::Tenancy;

#[derive(Debug, Parser)]
#[command(
    name = "tenancy-bench",
    about = "Admission decision time with many tenants and keys"
)]
struct Args {
    /// Tenants, one key each.
    #[arg(long, default_value_t = 10_000)]
    tenants: usize,
    /// Tasks kept waiting in the queue (spread over the tenants).
    #[arg(long, default_value_t = 10_000)]
    queued: usize,
    /// Measured decisions.
    #[arg(long, default_value_t = 20_000)]
    decisions: usize,
    /// A policy script (e.g. `examples/policies/night-batch-on-gpu-box.rhai`) to time.
    #[arg(long)]
    policy: Option<std::path::PathBuf>,
    /// Workers offered to the placement hook.
    #[arg(long, default_value_t = 8)]
    candidates: usize,
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let a = Args::parse();
    let t = Tenancy::new(Arc::new(SystemClock));
    let limits = TenantLimits {
        models: Some(vec!["m".into()]),
        max_queued: Some(1_000_000),
        requests_per_minute: Some(1_000_000),
        tokens_per_minute: Some(1_000_000_000),
        tokens_per_day: Some(1_000_000_000_000),
        ..Default::default()
    };
    let t0 = Instant::now();
    let mut keys = Vec::with_capacity(a.tenants);
    for i in 0..a.tenants {
        let name = format!("tenant-{i}");
        let spec = TenantSpec {
            name: name.clone(),
            weight: Some(1 + (i % 4) as u32),
            limits: limits.clone(),
        };
        t.put_tenant(spec, true).expect("tenant");
        let (k, _) = t
            .create_key(KeyCreate {
                tenant: name,
                ..Default::default()
            })
            .expect("key");
        keys.push(k.key);
    }
    eprintln!(
        "{} tenants and keys in {:.0} ms",
        a.tenants,
        t0.elapsed().as_secs_f64() * 1000.0
    );
    let capacity = (a.queued + a.decisions + 1).min(10_000_000) as u32;
    let mut q = TaskQueue::new(capacity, QueuePolicy::Reject, 4);
    let entry = |id: usize, tenant: Arc<str>| Entry {
        task_id: format!("task-{id}"),
        model: "m".into(),
        priority: Priority::Batch,
        enqueued: Instant::now(),
        avoid: Vec::new(),
        affinity: None,
        tenant,
        share: Default::default(),
        route: None,
    };
    for i in 0..a.queued {
        q.push(entry(i, Arc::from(format!("tenant-{}", i % a.tenants))));
    }
    let (mut decide, mut full) = (Vec::new(), Vec::new());
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    for n in 0..a.decisions {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let key = &keys[(rng % keys.len() as u64) as usize];
        let start = Instant::now();
        let (tenant, _) = t.authenticate(key).expect("valid key");
        let adm = t.admit(&tenant, "m", Priority::Batch).expect("admitted");
        let decided = start.elapsed();
        let admitted = q.push(entry(a.queued + n, adm.tenant));
        let all = start.elapsed();
        assert!(!matches!(admitted, orchestratord::queue::Admit::Full));
        // keep the queue at its size
        q.remove(&format!("task-{}", a.queued + n));
        decide.push(decided.as_secs_f64() * 1e6);
        full.push(all.as_secs_f64() * 1e6);
    }
    // dispatch: the fair-share pick among every tenant's lane (one task leaves, one comes back)
    let mut pick = Vec::new();
    for n in 0..a.decisions.min(5_000) {
        let start = Instant::now();
        let (e, ()) = q.select(|_| Some(())).expect("queued");
        pick.push(start.elapsed().as_secs_f64() * 1e6);
        q.finished(&e.tenant);
        q.push(entry(a.queued + a.decisions + n, e.tenant));
    }
    let (mut hook_admit, mut hook_place) = match &a.policy {
        Some(path) => policy_costs(path, a.decisions, a.candidates),
        None => (Vec::new(), Vec::new()),
    };
    for (name, v) in [
        ("key + limits", &mut decide),
        ("key + limits + queue push", &mut full),
        ("dispatch pick", &mut pick),
        ("policy admit hook", &mut hook_admit),
        ("policy place hook", &mut hook_place),
    ] {
        if v.is_empty() {
            continue;
        }
        v.sort_by(f64::total_cmp);
        println!(
            "{name}: p50 {:.1} µs, p99 {:.1} µs, max {:.1} µs ({} decisions, {} tenants, {} queued)",
            pct(v, 0.5),
            pct(v, 0.99),
            v[v.len() - 1],
            v.len(),
            a.tenants,
            a.queued
        );
    }
}

/// Time `decisions` calls of the script's `admit` (tenant `nightly`, a batch task) and, if it
/// has `place`, of `place` among `candidates` workers: µs per call.
fn policy_costs(
    path: &std::path::Path,
    decisions: usize,
    candidates: usize,
) -> (Vec<f64>, Vec<f64>) {
    use llorch_wire::tasks::{WorkerRegistration, WorkerSource, WorkerStatus};
    use orchestratord::config::{Placement, PolicyConfig};
    use orchestratord::metrics::Metrics;
    use orchestratord::policy::{AdmitInput, PlaceInput, Policy, Pools};
    use orchestratord::registry::Registry;

    let cfg = PolicyConfig {
        script: Some(path.to_path_buf()),
        ..Default::default()
    };
    let policy = Policy::load(&cfg).unwrap_or_else(|e| panic!("{e}"));
    let metrics = Metrics::default();
    let input = AdmitInput {
        model: "SmolLM2-135M-Instruct.Q4_1",
        priority: Priority::Batch,
        tenant: "nightly",
        key_id: Some("0123456789ab"),
        admin: false,
        session: None,
        prompt_tokens: 300,
        max_tokens: 256,
        deadline_ms: None,
    };
    let admit = (0..decisions)
        .filter(|_| policy.admits())
        .map(|_| {
            let t0 = Instant::now();
            std::hint::black_box(policy.admit(&metrics, &input));
            t0.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    let mut place = Vec::new();
    if policy.places() {
        let mut reg = Registry::new(Placement::LeastLoaded);
        for i in 0..candidates {
            let r = WorkerRegistration {
                worker_id: format!("w{i}"),
                url: format!("http://w{i}"),
                model: "m".into(),
                aliases: Vec::new(),
                backend: "cpu".into(),
                slots_total: 4,
                context_length: 2048,
                api_token: None,
            };
            reg.upsert(r, WorkerSource::Registered, WorkerStatus::Ready, 0);
        }
        let workers: Vec<_> = reg.iter().collect();
        let task = PlaceInput {
            task_id: "t",
            model: "m",
            priority: Priority::Batch,
            tenant: "nightly",
        };
        let pools = Pools::default();
        for _ in 0..decisions {
            let t0 = Instant::now();
            std::hint::black_box(policy.place(&metrics, &task, &workers, &pools));
            place.push(t0.elapsed().as_secs_f64() * 1e6);
        }
    }
    let errors = metrics.policy_errors_total.total();
    assert_eq!(errors, 0.0, "the script failed {errors} times");
    (admit, place)
}
