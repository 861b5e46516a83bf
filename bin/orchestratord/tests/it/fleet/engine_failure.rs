//! A fleet worker whose engine thread dies keeps answering `/health` (with `failed`): the
//! reconciler stops it, counts a failure and starts a replacement, and the task that hit the
//! dead engine is served by the replacement.

use super::*;

#[tokio::test(flavor = "multi_thread")]
async fn fleet_replaces_a_worker_whose_engine_failed() {
    let _serial = SERIAL.lock().await;
    let Some(env) = Env::new("fleet_engine_failure", &[("a", &["smollm2-135m"])], false) else {
        return;
    };
    let path = env._tmp.path().join("orchd.toml");
    let cfg = format!(
        "[fleet]\nprobe_interval_ms = 300\nrestart_backoff_ms = 200\n{}[[models]]\nid = \"smollm2-135m\"\n",
        env.pool_toml("a", 0, "")
    );
    std::fs::write(&path, cfg).unwrap();
    // FAULT INJECTION, inherited by llorch-pool and the workers it spawns: every worker's
    // engine thread panics when it admits its second job.
    let o = Orchd::start_env(
        &["--config", path.to_str().unwrap()],
        &[("LLORCH_FAULT_ENGINE_PANIC_AFTER_JOBS", "1")],
    );
    let (evs, _) = run_task(&o, "smollm2-135m").await;
    let w1 = assert_end(&evs, &o);
    // The second job kills w1's engine; the task is served by the replacement.
    let (evs, _) = run_task(&o, "smollm2-135m").await;
    let w2 = assert_end(&evs, &o);
    assert_ne!(w1, w2, "the failed worker served again");
    let v = wait_pools(&o, "replacement ready, failed worker gone", |v| {
        pool(v, "a")["workers"]
            .as_array()
            .is_some_and(|w| w.len() == 1 && w[0]["id"] == w2.as_str())
    })
    .await;
    eprintln!("after the engine failure: {v:#}");
    let alive: Vec<Value> = env
        .workers(0)
        .into_iter()
        .filter(|w| w["alive"] == true)
        .collect();
    assert_eq!(alive.len(), 1, "the failed worker was stopped: {alive:#?}");
    assert_eq!(alive[0]["id"], w2.as_str());
    let m = get_text(&o.url("/metrics")).await;
    assert!(
        m.contains(
            "orchd_fleet_worker_stops_total{component=\"orchestratord\",pool=\"a\",reason=\"failed\"} 1"
        ),
        "{m}"
    );
    assert!(
        o.log_text().contains("reported a failed engine"),
        "{}",
        o.log_text()
    );
}
