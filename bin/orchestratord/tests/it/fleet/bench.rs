//! Fleet benchmarks (issue 11), not timed tests: `#[ignore]`d, run on demand with
//! `cargo test --release --workspace bench_fleet -- --ignored --nocapture --test-threads=1`
//! (`scripts/bench.sh --fleet` does). They print what the closing notes quote:
//! - the on-demand cold start through orchestratord to the first token, on a local pool and on
//!   one behind sshd on loopback, with its parts (transport round trip, spawn and register,
//!   model load, prefill and first token), and the warm task after it;
//! - 20 local pools (each its own LLORCH_HOME and `llorch-pool` processes): probes per minute
//!   per pool and their cost, orchestratord's CPU (with its `llorch-pool` children), and the
//!   time of the placement decisions among the 20.

use std::time::{Duration, Instant};

use super::*;

/// Sum and count of a histogram family's series whose labels contain `labels`.
fn hist(text: &str, family: &str, labels: &str) -> (f64, f64) {
    (
        metric_sum(text, &format!("{family}_sum"), labels),
        metric_sum(text, &format!("{family}_count"), labels),
    )
}

/// CPU seconds (user + system, of the process and its waited-for children) of `pid`.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = after
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    // fields 14..17 of stat (utime stime cutime cstime) are 11..14 after the ")"
    f.get(11..15).map_or(0.0, |v| v.iter().sum::<f64>()) / 100.0
}

async fn cold_start(ssh: bool) {
    let test = "bench_fleet_cold_start";
    let Some(env) = Env::new(test, &[("p", &["smollm2-135m"])], ssh) else {
        return;
    };
    let extra = if ssh { "#ssh" } else { "" };
    let toml = format!(
        "{}[[models]]\nid = \"smollm2-135m\"\nparallel = 1\n",
        env.pool_toml("p", 0, extra)
    );
    let o = orchd(env._tmp.path(), &toml);
    // the model file is present and the pool probed (and the estimate prewarmed) before timing
    let v = wait_pools(&o, "pool reachable", |v| pool(v, "p")["reachable"] == true).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let _ = v;
    let (evs, ttft) = run_task(&o, "smollm2-135m").await;
    let worker = assert_end(&evs, &o);
    let end = single_terminal(&evs).data.clone();
    let queue_ms = end["queue_time_ms"].as_f64().unwrap_or(f64::NAN);
    let text = scrape(&o.url(""), None).await;
    let (place_ms, _) = hist(&text, "orchd_fleet_placement_ms", "");
    let (probe_sum, probes) = hist(&text, "orchd_fleet_probe_ms", "");
    let (_, info) = get_json(&o.url(&format!("/v2/workers/{worker}"))).await;
    let url = info["url"].as_str().unwrap_or_default().to_string();
    let (_, health) = get_json(&format!("{url}/health")).await;
    let load_ms = health["load_time_ms"].as_f64().unwrap_or(f64::NAN);
    let (evs2, warm) = run_task(&o, "smollm2-135m").await;
    assert_end(&evs2, &o);
    let label = if ssh { "ssh" } else { "local" };
    // queue_time_ms: submit -> the worker accepted the task (placement, the spawn command over
    // the transport, process start, model load, registration, dispatch)
    println!(
        "fleet cold start ({label}): first token {ttft:.0} ms after submit = {queue_ms:.0} ms to a \
         ready worker [model load {load_ms:.0} ms; placement {place_ms:.2} ms; transport, spawn, \
         registration, dispatch {:.0} ms; one llorch-pool command over the transport {:.1} ms \
         (mean of {probes} probes)] + {:.0} ms prefill and first token; warm task first token \
         {warm:.0} ms",
        queue_ms - load_ms - place_ms,
        probe_sum / probes.max(1.0),
        ttft - queue_ms,
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark: scripts/bench.sh --fleet"]
async fn bench_fleet_cold_start_local_and_ssh() {
    let _serial = SERIAL.lock().await;
    cold_start(false).await;
    cold_start(true).await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark: scripts/bench.sh --fleet"]
async fn bench_fleet_twenty_pools() {
    let _serial = SERIAL.lock().await;
    let test = "bench_fleet_twenty_pools";
    let names: Vec<String> = (0..20).map(|i| format!("p{i:02}")).collect();
    let homes: Vec<(&str, &[&str])> = names
        .iter()
        .map(|n| (n.as_str(), &["smollm2-135m"][..]))
        .collect();
    let Some(env) = Env::new(test, &homes, false) else {
        return;
    };
    // Every pool capped below the model: each start is a full placement decision among the
    // 20 pools that ends in NO_CAPACITY (no worker load muddies the numbers).
    let mut toml = String::new();
    for (i, n) in names.iter().enumerate() {
        toml.push_str(&env.pool_toml(n, i, "max_memory_bytes = 1000"));
    }
    toml.push_str("[[models]]\nid = \"smollm2-135m\"\n");
    let path = env._tmp.path().join("orchd.toml");
    // the default probe interval (2 s), a short backoff so decisions can repeat
    std::fs::write(&path, format!("[fleet]\nrestart_backoff_ms = 100\n{toml}")).unwrap();
    let o = Orchd::start(&["--config", path.to_str().unwrap()]);
    wait_pools(&o, "20 pools reachable", |v| {
        names.iter().all(|n| pool(v, n)["reachable"] == true)
    })
    .await;
    let pid = o.child.id();
    let (cpu0, t0) = (cpu_seconds(pid), Instant::now());
    let before = scrape(&o.url(""), None).await;
    let mut refused = 0;
    for _ in 0..30 {
        let (status, _, v) = submit(&o, greedy("smollm2-135m")).await;
        if status == 202 {
            let id = v["task_id"].as_str().unwrap_or_default().to_string();
            let mut s = EventStream::open(&o, &id, None).await;
            while let Some(ev) = s.next().await {
                if ev.kind == "error" {
                    refused += 1;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    tokio::time::sleep(Duration::from_secs(20)).await;
    let (cpu1, secs) = (cpu_seconds(pid), t0.elapsed().as_secs_f64());
    let after = scrape(&o.url(""), None).await;
    let (ps1, pn1) = hist(&after, "orchd_fleet_probe_ms", "");
    let (ps0, pn0) = hist(&before, "orchd_fleet_probe_ms", "");
    let (ds, dn) = hist(&after, "orchd_fleet_placement_ms", "");
    let text = after.clone();
    let slowest = text
        .lines()
        .filter(|l| l.starts_with("orchd_fleet_placement_ms_bucket"))
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?.to_string();
            let n: f64 = l.rsplit(' ').next()?.parse().ok()?;
            Some((le, n))
        })
        .find(|(_, n)| *n >= dn)
        .map(|(le, _)| le)
        .unwrap_or_default();
    let probes_per_min_per_pool = (pn1 - pn0) / secs * 60.0 / 20.0;
    println!(
        "fleet 20 local pools: {probes_per_min_per_pool:.1} probes/min/pool, {:.1} ms per probe \
         (mean); orchestratord + llorch-pool children {:.1}% of one core over {secs:.0} s; \
         {dn:.0} placement decisions among 20 pools, mean {:.3} ms, all within le={slowest} ms; \
         {refused} tasks refused NO_CAPACITY",
        (ps1 - ps0) / (pn1 - pn0).max(1.0),
        (cpu1 - cpu0) / secs * 100.0,
        ds / dn.max(1.0),
    );
    assert!(dn > 0.0, "placement ran: {after}");
}
