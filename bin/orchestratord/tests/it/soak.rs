//! Soak: clients at 10× the workers' capacity for `LLORCH_SOAK_SECS` (60 in CI; the bench mode
//! `scripts/soak.sh` runs 600) submit tasks and read, cancel, abandon (disconnect) or ignore
//! them, while one worker is SIGKILLed and started again mid-run. Asserts: every accepted task
//! ends with exactly one terminal event, none is lost; orchestratord's and the surviving
//! worker's RSS grow less than [`RSS_BOUND_KB`] and their open file descriptors less than
//! [`FD_SLACK`] between the idle moment after warm-up and the idle moment after the run. Prints
//! and writes the figures (tasks, RSS, fds, admission p50/p99) to `target/soak-report.json`.
//!
//! Workers: `fault-worker --mode slow` by default (protocol-complete, 10 ms per token), so the
//! run measures the orchestrator, not two shared cores decoding; `LLORCH_SOAK_WORKER=real`
//! uses real `llorch-candled` workers with SmolLM2 (`--parallel 2 --prompt-cache-mb 8`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use llorch_testkit::{FuzzRng, WorkerProcess};
use serde_json::{json, Value};

use crate::common::*;

/// Largest accepted RSS growth of a daemon over the run (kB).
const RSS_BOUND_KB: i64 = 20 * 1024;
/// Largest accepted growth in open file descriptors.
const FD_SLACK: i64 = 16;
/// Slots per worker; two workers.
const SLOTS: u32 = 2;
const MODEL: &str = "soak-model";

/// A worker of the soak: the fault-injection worker or a real one.
enum SoakWorker {
    Fault(FaultWorker),
    Real(WorkerProcess),
}

impl SoakWorker {
    /// Start worker `id`, registering with the orchestrator at `base`.
    fn start(real: bool, base: &str, id: &str) -> Option<SoakWorker> {
        let slots = SLOTS.to_string();
        let reg = ["--worker-id", id, "--orchestrator-url", base];
        if !real {
            let mut args = vec![
                "--slots",
                &slots,
                "--token-delay-ms",
                "10",
                "--model",
                MODEL,
            ];
            args.extend_from_slice(&reg[2..]);
            return Some(SoakWorker::Fault(FaultWorker::start("slow", id, &args)));
        }
        let test = "soak_at_ten_times_capacity";
        let bin = llorch_testkit::require_bin(test, "llorch-candled")?;
        let model = llorch_testkit::require_smollm2(test)?;
        // The prompt cache fills up to its budget by design: keep that small so it is not
        // counted as growth.
        let mut args = vec![
            "--parallel",
            &slots,
            "--model-id",
            MODEL,
            "--prompt-cache-mb",
            "8",
        ];
        args.extend_from_slice(&reg);
        Some(SoakWorker::Real(WorkerProcess::start(&bin, &model, &args)))
    }

    fn child(&mut self) -> &mut std::process::Child {
        match self {
            SoakWorker::Fault(w) => &mut w.child,
            SoakWorker::Real(w) => &mut w.child,
        }
    }
}

/// (VmRSS in kB, open file descriptors) of a process.
fn usage(pid: u32) -> (i64, i64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(-1);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count() as i64)
        .unwrap_or(-1);
    (rss, fds)
}

/// What the clients saw.
#[derive(Default)]
struct Tally {
    accepted: Vec<String>,
    rejected: u64,
    admission_ms: Vec<f64>,
    /// Terminal outcome (`completed`, `cancelled`, error code) of the streams read to the end.
    outcomes: BTreeMap<String, u64>,
}

fn outcome(ev: &Ev) -> String {
    if ev.kind == "end" {
        match ev.data["stop_reason"].as_str() {
            Some("cancelled") => "cancelled".into(),
            _ => "completed".into(),
        }
    } else {
        ev.data["code"].as_str().unwrap_or("?").to_string()
    }
}

/// One client: submit, then read to the end (55 %), cancel mid-stream (15 %), disconnect
/// mid-stream (15 %) or never subscribe (15 %), until `until`.
async fn client_loop(base: String, seed: u64, until: Instant, tally: Arc<Mutex<Tally>>) {
    let mut rng = FuzzRng::new(seed);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    while Instant::now() < until {
        let body = json!({"model": MODEL, "prompt": "Hi", "max_tokens": 1 + rng.below(24),
            "priority": *rng.pick(&["interactive", "batch"])});
        let t0 = Instant::now();
        let r = http
            .post(format!("{base}/v2/tasks"))
            .json(&body)
            .send()
            .await
            .unwrap();
        let ms = t0.elapsed().as_secs_f64() * 1e3;
        let status = r.status().as_u16();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        if status == 429 {
            tally.lock().unwrap().rejected += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        assert_eq!(status, 202, "{v}");
        let id = v["task_id"].as_str().unwrap().to_string();
        {
            let mut t = tally.lock().unwrap();
            t.accepted.push(id.clone());
            t.admission_ms.push(ms);
        }
        let action = rng.below(100);
        if action >= 85 {
            continue; // never subscribes: the task runs on
        }
        let mut s = EventStream::open_at(&base, &id, None).await;
        if action >= 55 {
            let first = s.next().await;
            if first
                .as_ref()
                .is_some_and(|e| e.kind == "end" || e.kind == "error")
            {
                continue;
            }
            if action < 70 {
                http.post(format!("{base}/v2/tasks/{id}/cancel"))
                    .send()
                    .await
                    .unwrap();
            } else {
                drop(s); // the client goes away; the task is cancelled after the grace
                continue;
            }
        }
        let evs = s.rest().await;
        let last = single_terminal(&evs);
        *tally
            .lock()
            .unwrap()
            .outcomes
            .entry(outcome(last))
            .or_default() += 1;
    }
}

/// Run `clients` client loops for `secs` seconds; returns when all have finished.
async fn load(base: &str, clients: u64, secs: u64, seed: u64, tally: &Arc<Mutex<Tally>>) {
    let until = Instant::now() + Duration::from_secs(secs);
    let handles: Vec<_> = (0..clients)
        .map(|i| {
            tokio::spawn(client_loop(
                base.to_string(),
                seed + i,
                until,
                tally.clone(),
            ))
        })
        .collect();
    for h in handles {
        h.await.expect("client panicked");
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::test(flavor = "multi_thread")]
async fn soak_at_ten_times_capacity() {
    let secs: u64 = std::env::var("LLORCH_SOAK_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let real = std::env::var("LLORCH_SOAK_WORKER").is_ok_and(|v| v == "real");
    let _serial = if real {
        Some(crate::real::SERIAL.lock().await)
    } else {
        None
    };
    let o = Orchd::start(&[
        "--disconnect-grace-ms",
        "300",
        "--heartbeat-interval-ms",
        "500",
        "--queue-capacity",
        "1000",
    ]);
    let Some(mut a) = SoakWorker::start(real, &o.base, "soak-a") else {
        return;
    };
    let Some(mut b) = SoakWorker::start(real, &o.base, "soak-b") else {
        return;
    };
    for id in ["soak-a", "soak-b"] {
        wait_ready_worker(&o, id).await;
    }
    let clients = u64::from(10 * 2 * SLOTS);
    let tally = Arc::new(Mutex::new(Tally::default()));
    // Warm-up, then the idle baseline.
    let warm = (secs / 6).max(5);
    load(&o.base, clients, warm, 1000, &tally).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let a_pid = a.child().id();
    let (o_before, a_before) = (usage(o.child.id()), usage(a_pid));
    // The run; a third of the way in, worker b is SIGKILLed and started again 2 s later.
    let main = secs.saturating_sub(warm).max(10);
    let base = o.base.clone();
    let killer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(main / 3)).await;
        let _ = b.child().kill();
        let _ = b.child().wait();
        tokio::time::sleep(Duration::from_secs(2)).await;
        tokio::task::spawn_blocking(move || SoakWorker::start(real, &base, "soak-b"))
            .await
            .unwrap()
            .expect("soak-b starts again")
    });
    load(&o.base, clients, main, 5000, &tally).await;
    let _b = killer.await.unwrap();
    // Every accepted task ends: exactly one terminal event when read from the start.
    let ids = tally.lock().unwrap().accepted.clone();
    let mut lost = Vec::new();
    let mut ended: BTreeMap<String, u64> = BTreeMap::new();
    let results: Vec<(String, Vec<Ev>)> = futures::stream::iter(ids.iter().cloned())
        .map(|id| {
            let base = o.base.clone();
            async move {
                let evs = tokio::time::timeout(Duration::from_secs(120), async {
                    EventStream::open_at(&base, &id, None).await.rest().await
                })
                .await
                .unwrap_or_default();
                (id, evs)
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    for (id, evs) in &results {
        let terminals = evs.iter().filter(|e| e.kind == "end" || e.kind == "error");
        match terminals.count() {
            1 => *ended.entry(outcome(single_terminal(evs))).or_default() += 1,
            0 => lost.push(id.clone()),
            n => panic!("task {id}: {n} terminal events: {evs:#?}"),
        }
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (o_after, a_after) = (usage(o.child.id()), usage(a_pid));
    let t = tally.lock().unwrap();
    let mut lat = t.admission_ms.clone();
    lat.sort_by(f64::total_cmp);
    let report = json!({
        "seconds": secs, "worker": if real { "llorch-candled SmolLM2" } else { "fault-worker slow" },
        "clients": clients, "capacity_slots": 2 * SLOTS,
        "accepted": ids.len(), "rejected_429": t.rejected, "ended": ended.values().sum::<u64>(),
        "lost": lost.len(), "ended_by_outcome": ended, "read_to_end_by_outcome": t.outcomes,
        "admission_ms": {"p50": percentile(&lat, 0.5), "p99": percentile(&lat, 0.99),
            "max": lat.last().copied().unwrap_or(0.0)},
        "orchestratord": {"rss_kb": [o_before.0, o_after.0], "fds": [o_before.1, o_after.1]},
        "worker_a": {"rss_kb": [a_before.0, a_after.0], "fds": [a_before.1, a_after.1]},
    });
    let text = serde_json::to_string_pretty(&report).unwrap();
    eprintln!("soak report:\n{text}");
    let _ = std::fs::write(
        llorch_testkit::repo_root().join("target/soak-report.json"),
        &text,
    );
    assert!(
        lost.is_empty(),
        "tasks without a terminal event: {lost:?}\n{text}"
    );
    assert!(ids.len() > 100, "too few tasks to mean anything:\n{text}");
    for (who, before, after) in [
        ("orchestratord", o_before, o_after),
        ("worker a", a_before, a_after),
    ] {
        assert!(
            before.0 > 0 && after.0 > 0,
            "{who}: no /proc figures\n{text}"
        );
        assert!(after.0 - before.0 < RSS_BOUND_KB, "{who}: RSS grew\n{text}");
        assert!(
            after.1 - before.1 < FD_SLACK,
            "{who}: file descriptors grew\n{text}"
        );
    }
    drop(t);
    drop(a);
}

/// Wait until worker `id` is registered and ready.
async fn wait_ready_worker(o: &Orchd, id: &str) {
    let start = Instant::now();
    loop {
        let (_, info) = get_json(&o.url(&format!("/v2/workers/{id}"))).await;
        if info["status"] == "ready" {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "worker {id} never registered: {info}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
