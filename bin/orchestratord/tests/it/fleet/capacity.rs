//! Fleet capacity: memory caps decide placement, idle workers are evicted least-recently-used
//! first, an oversized model gets NO_CAPACITY naming needed vs available, and a deployment whose
//! worker keeps failing to start ends `failed` with the log tail.

use super::*;

#[tokio::test(flavor = "multi_thread")]
async fn fleet_memory_caps_place_evict_idle_and_name_needed_vs_available() {
    let _serial = SERIAL.lock().await;
    let ids: &[&str] = &["m1", "m2", "m3", "big"];
    let Some(env) = Env::new("fleet_memory_caps", &[("a", ids), ("b", ids)], false) else {
        return;
    };
    // Estimate of one worker (parallel 1, ctx 2048, prompt cache 64 MiB) from llorch-pool.
    let fit = Command::new(&env.pool_bin)
        .args([
            "--json",
            "models",
            "fit",
            "m1",
            "--parallel",
            "1",
            "--ctx",
            "2048",
        ])
        .args(["--prompt-cache-mb", "64"])
        .env("LLORCH_HOME", env.home(0))
        .output()
        .unwrap();
    let fit: Value = serde_json::from_slice(&fit.stdout).unwrap();
    let need = fit["total_bytes"].as_u64().unwrap();
    assert_eq!(
        fit["kv_cache_bytes"].as_u64().unwrap(),
        2 * fit["layers"].as_u64().unwrap()
            * fit["kv_heads"].as_u64().unwrap()
            * fit["head_dim"].as_u64().unwrap()
            * 2048
            * 2,
        "{fit}"
    );
    // Each pool holds one such worker, not two.
    let cap = need + need / 2;
    let dep = |id: &str, parallel: u32, ctx: u32| {
        format!(
            "[[models]]\nid = {id:?}\nparallel = {parallel}\nctx_size = {ctx}\nprompt_cache_mb = 64\n"
        )
    };
    let toml = format!(
        "{}{}{}{}{}{}",
        env.pool_toml("a", 0, &format!("max_memory_bytes = {cap}")),
        env.pool_toml("b", 1, &format!("max_memory_bytes = {cap}")),
        dep("m1", 1, 2048),
        dep("m2", 1, 2048),
        dep("m3", 1, 2048),
        dep("big", 64, 8192),
    );
    let o = orchd(env._tmp.path(), &toml);
    let pool_of = |w: &str| w.split('-').nth(1).unwrap().to_string();
    let (evs, _) = run_task(&o, "m1").await;
    let w1 = assert_end(&evs, &o);
    let (evs, _) = run_task(&o, "m2").await;
    let w2 = assert_end(&evs, &o);
    assert_ne!(
        pool_of(&w1),
        pool_of(&w2),
        "the second model goes to the other pool"
    );
    // m1 again (its worker is now the most recently used); m3 needs room: the least recently
    // used idle worker (m2's) is stopped for it.
    let (evs, _) = run_task(&o, "m1").await;
    assert_eq!(assert_end(&evs, &o), w1);
    let (evs, _) = run_task(&o, "m3").await;
    let w3 = assert_end(&evs, &o);
    assert_eq!(
        pool_of(&w3),
        pool_of(&w2),
        "m3 took the evicted worker's place"
    );
    let v = wait_pools(&o, "m2 evicted", |v| deployment(v, "m2")["replicas"] == 0).await;
    assert_eq!(deployment(&v, "m1")["replicas"], 1, "{v:#}");
    // 64 sequences of 8192 tokens fit nowhere, even after evictions: a typed error.
    let (evs, _) = run_task(&o, "big").await;
    let end = single_terminal(&evs);
    assert_eq!(end.data["code"], "NO_CAPACITY", "{evs:#?}");
    let msg = end.data["message"].as_str().unwrap();
    assert!(
        msg.contains("needs ") && msg.contains("pool a: ") && msg.contains("pool b: "),
        "{msg}"
    );
    let v = wait_pools(&o, "nothing evicted for big", |_| true).await;
    assert_eq!(deployment(&v, "m1")["replicas"], 1, "{v:#}");
    assert_eq!(deployment(&v, "m3")["replicas"], 1, "{v:#}");
    // Both workers busy: m2 fits only by stopping one of them, which never happens; the busy
    // tasks go on (a counting prompt that cannot end at EOS before m2 is answered) and end
    // cleanly when cancelled.
    let mut long = Vec::new();
    for model in ["m1", "m3"] {
        let req = json!({"model": model, "prompt": "1, 2, 3, 4, 5, 6, 7, 8,", "max_tokens": 1500,
            "temperature": 0});
        let id = submit_ok(&o, req).await;
        let mut s = EventStream::open(&o, &id, None).await;
        let mut seen = Vec::new();
        while let Some(ev) = tokio::time::timeout(START_BOUND, s.next()).await.unwrap() {
            let token = ev.kind == "token";
            seen.push(ev);
            if token {
                break;
            }
        }
        long.push((id, s, seen));
    }
    let (evs, _) = run_task(&o, "m2").await;
    let end = single_terminal(&evs);
    assert_eq!(end.data["code"], "NO_CAPACITY", "{evs:#?}");
    for (id, mut s, mut seen) in long {
        let r = reqwest::Client::new()
            .post(o.url(&format!("/v2/tasks/{id}/cancel")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204, "task {id} was still running");
        while let Some(ev) = tokio::time::timeout(START_BOUND, s.next()).await.unwrap() {
            seen.push(ev);
        }
        let end = single_terminal(&seen);
        assert_eq!(
            (end.kind.as_str(), end.data["stop_reason"].as_str()),
            ("end", Some("cancelled")),
            "a busy worker was stopped: {seen:#?}"
        );
    }
    let v = wait_pools(&o, "busy workers kept", |_| true).await;
    assert_eq!(deployment(&v, "m1")["replicas"], 1, "{v:#}");
    assert_eq!(deployment(&v, "m3")["replicas"], 1, "{v:#}");
    let m = get_text(&o.url("/metrics")).await;
    assert!(
        m.contains("orchd_fleet_evictions_total{component=\"orchestratord\",pool=\""),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn fleet_deployment_fails_after_repeated_start_failures_with_the_log_tail() {
    let _serial = SERIAL.lock().await;
    let Some(env) = Env::new(
        "fleet_failed_deployment",
        &[("a", &["smollm2-135m"])],
        false,
    ) else {
        return;
    };
    // A pool whose worker binary dies at once with a telling message.
    let dir = env._tmp.path();
    let worker = dir.join("broken-worker.sh");
    write_exec(
        &worker,
        "echo 'boom: this worker cannot load anything' >&2; exit 3",
    );
    let wrapper = dir.join("pool.sh");
    write_exec(
        &wrapper,
        &format!(
            "LLORCH_WORKER_BIN={:?} exec {:?} \"$@\"",
            worker.display().to_string(),
            env.pool_bin.display().to_string()
        ),
    );
    let toml = format!(
        "[[pools]]\nname = \"a\"\nllorch_pool = {:?}\nhome = {:?}\n\
         [[models]]\nid = \"smollm2-135m\"\n",
        wrapper.display().to_string(),
        env.home(0).display().to_string()
    );
    let path = dir.join("orchd.toml");
    std::fs::write(
        &path,
        format!(
            "[fleet]\nprobe_interval_ms = 300\nrestart_backoff_ms = 100\nmax_failures = 2\n{toml}"
        ),
    )
    .unwrap();
    let o = Orchd::start(&["--config", path.to_str().unwrap()]);
    let (evs, _) = run_task(&o, "smollm2-135m").await;
    let end = single_terminal(&evs);
    assert_eq!(end.kind, "error", "{evs:#?}");
    assert_eq!(end.data["code"], "MODEL_LOAD_FAILED", "{evs:#?}");
    let v = wait_pools(&o, "deployment failed", |v| {
        deployment(v, "smollm2-135m")["state"] == "failed"
    })
    .await;
    let d = deployment(&v, "smollm2-135m");
    assert!(
        d["log_tail"]
            .as_str()
            .unwrap_or("")
            .contains("boom: this worker cannot load"),
        "{d:#}"
    );
    assert_eq!(d["failures_in_window"], 2, "{d:#}");
    // New tasks are refused while failed.
    let (status, _, body) = submit(&o, greedy("smollm2-135m")).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (500, Some("MODEL_LOAD_FAILED")),
        "{body}"
    );
}
