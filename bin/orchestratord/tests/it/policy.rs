//! The policy hook through the real daemon with fault-injection workers: each example of
//! `examples/policies/` (a night-only route to a pool, a model allow-list, placement scores),
//! a runaway script (stopped, the task served by the built-in policy), a syntax error at start
//! (refused, naming the file and line) and on reload (the previous version stays).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::*;
use crate::tenancy::{call, get, key, post, tenant, wait_done, ADMIN};

/// 2026-12-05 23:30 UTC (night) and 12:00 UTC (day).
const NIGHT_MS: &str = "1796513400000";
const DAY_MS: &str = "1796472000000";

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/policies")
        .join(name)
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

async fn metrics(o: &Orchd) -> String {
    scrape(&o.url(""), Some(ADMIN)).await
}

fn series(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// orchestratord with the admin token, `script` as its policy and `extra` flags; workers
/// registered by hand stay healthy (no heartbeats).
fn start_with(script: &Path, extra: &[&str]) -> Orchd {
    let mut args = vec![
        "--api-token",
        ADMIN,
        "--heartbeat-timeout-ms",
        "600000",
        "--policy",
        script.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    Orchd::start(&args)
}

async fn register_as(o: &Orchd, id: &str, w: &FaultWorker, model: &str, slots: u32) {
    let body = json!({"worker_id": id, "url": w.url(), "model": model, "backend": "cpu",
        "slots_total": slots, "context_length": 2048});
    let (s, _, v) = post(o, "/v2/workers/register", ADMIN, body).await;
    assert_eq!(s, 200, "{v}");
}

async fn wait_workers_ready(o: &Orchd, n: usize) {
    let t0 = Instant::now();
    loop {
        let (_, v) = get(o, "/v2/workers", ADMIN).await;
        let ready = v["workers"]
            .as_array()
            .map_or(0, |ws| ws.iter().filter(|w| w["status"] == "ready").count());
        if ready >= n {
            return;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "workers: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn batch(max_tokens: u32) -> Value {
    json!({"model": FAULT_MODEL, "prompt": "hi", "max_tokens": max_tokens, "priority": "batch"})
}

/// Submit with `token`, expect 202, wait for the end: the finished status.
async fn run_task(o: &Orchd, token: &str, body: Value) -> Value {
    let (s, _, v) = post(o, "/v2/tasks", token, body).await;
    assert_eq!(s, 202, "{v}");
    wait_done(o, v["task_id"].as_str().unwrap(), token).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn night_batch_example_routes_to_its_pool_at_night_and_refuses_by_day() {
    let gpu = FaultWorker::start("slow", "gpu-1", &["--token-delay-ms", "1"]);
    let cpu = FaultWorker::start("slow", "cpu-1", &["--token-delay-ms", "1"]);
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!(
        "heartbeat_interval_ms = 200\n[[workers]]\nurl = {:?}\npool = \"gpu-box\"\n\
         [[workers]]\nurl = {:?}\npool = \"cpu-box\"\n[policy]\nscript = {:?}\n",
        gpu.url(),
        cpu.url(),
        example("night-batch-on-gpu-box.rhai").display().to_string()
    );
    let cfg = write(dir.path(), "orchd.toml", &cfg);
    let cfg = cfg.to_str().unwrap();
    let args = ["--config", cfg, "--api-token", ADMIN];

    let night = Orchd::start_env(&args, &[("LLORCH_ORCH_POLICY_NOW_MS", NIGHT_MS)]);
    wait_workers_ready(&night, 2).await;
    tenant(&night, "nightly", 1, json!({})).await;
    let (k, _) = key(&night, "nightly", json!({})).await;
    // idle workers, least-loaded: the built-in order takes cpu-1 first (id order); the route
    // sends every batch task of the tenant to gpu-box
    for _ in 0..4 {
        let st = run_task(&night, &k, batch(2)).await;
        assert_eq!(st["worker_id"], "gpu-1", "{st}");
        assert_eq!(st["state"], "completed", "{st}");
    }
    // (other prompts: no prompt-cache affinity to gpu-1 in the built-in order)
    let interactive = json!({"model": FAULT_MODEL, "prompt": "hello", "max_tokens": 2});
    let st = run_task(&night, &k, interactive.clone()).await;
    assert_eq!(
        st["worker_id"], "cpu-1",
        "other tasks keep the built-in policy: {st}"
    );
    let other =
        json!({"model": FAULT_MODEL, "prompt": "other", "max_tokens": 2, "priority": "batch"});
    let st = run_task(&night, ADMIN, other).await;
    assert_eq!(st["worker_id"], "cpu-1", "other tenants too: {st}");
    drop(night);

    let day = Orchd::start_env(&args, &[("LLORCH_ORCH_POLICY_NOW_MS", DAY_MS)]);
    wait_workers_ready(&day, 2).await;
    tenant(&day, "nightly", 1, json!({})).await;
    let (k, _) = key(&day, "nightly", json!({})).await;
    let (s, _, v) = post(&day, "/v2/tasks", &k, batch(2)).await;
    assert_eq!(s, 403, "{v}");
    assert_eq!(v["error"]["code"], "POLICY_REJECTED");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("at night only") && msg.contains("12:00 UTC"),
        "{msg}"
    );
    run_task(&day, &k, interactive).await;
    let m = metrics(&day).await;
    assert!(
        m.contains(
            "orchd_tasks_rejected_total{component=\"orchestratord\",reason=\"POLICY_REJECTED\"}"
        ),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_list_example_refuses_other_models_for_its_tenant_only() {
    let smol = FaultWorker::start("slow", "smol", &["--token-delay-ms", "1"]);
    let qwen = FaultWorker::start(
        "slow",
        "qwen",
        &["--token-delay-ms", "1", "--model", "Qwen2.5-0.5B-Instruct"],
    );
    let script = example("model-allow-list.rhai");
    let o = start_with(&script, &[]);
    register_as(&o, "smol", &smol, FAULT_MODEL, 1).await;
    register_as(&o, "qwen", &qwen, "Qwen2.5-0.5B-Instruct", 1).await;
    tenant(&o, "trial", 1, json!({})).await;
    tenant(&o, "paid", 1, json!({})).await;
    let (trial, _) = key(&o, "trial", json!({})).await;
    let (paid, _) = key(&o, "paid", json!({})).await;
    let qwen_task = json!({"model": "Qwen2.5-0.5B-Instruct", "prompt": "hi", "max_tokens": 2});
    let (s, _, v) = post(&o, "/v2/tasks", &trial, qwen_task.clone()).await;
    assert_eq!(s, 403, "{v}");
    assert_eq!(v["error"]["code"], "POLICY_REJECTED");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("Qwen2.5-0.5B-Instruct is not on the allow-list"));
    // OpenAI routes answer in OpenAI's shape
    let chat = json!({"model": "Qwen2.5-0.5B-Instruct", "max_tokens": 2,
        "messages": [{"role": "user", "content": "hi"}]});
    let (s, _, v) = post(&o, "/v1/chat/completions", &trial, chat).await;
    assert_eq!(s, 403, "{v}");
    assert_eq!(v["error"]["code"], "policy_rejected", "{v}");
    assert_eq!(v["error"]["type"], "permission_error", "{v}");
    let st = run_task(&o, &trial, batch(2)).await;
    assert_eq!(st["state"], "completed", "{st}");
    let st = run_task(&o, &paid, qwen_task).await;
    assert_eq!(st["worker_id"], "qwen", "{st}");
    let m = metrics(&o).await;
    assert_eq!(
        series(
            &m,
            "orchd_policy_calls_total{component=\"orchestratord\",hook=\"admit\"}"
        ),
        4.0,
        "{m}"
    );
    assert!(
        m.contains("orchd_policy_errors_total{component=\"orchestratord\"} 0\n"),
        "no policy error: {m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placement_example_scores_beat_round_robin() {
    // 200 tokens at 50 ms: each task holds its slot for about 10 s
    let a = FaultWorker::start("slow", "a", &["--token-delay-ms", "50", "--slots", "4"]);
    let b = FaultWorker::start("slow", "b", &["--token-delay-ms", "50"]);
    let script = example("prefer-free-slots.rhai");
    let o = start_with(&script, &["--placement", "round-robin"]);
    register_as(&o, "a", &a, FAULT_MODEL, 4).await;
    register_as(&o, "b", &b, FAULT_MODEL, 1).await;
    // scores (free slots - load): a 4, 2.75, 1.5 against b 1, then a 0.25 against b 1
    let mut placed = Vec::new();
    for _ in 0..4 {
        let (s, _, v) = post(&o, "/v2/tasks", ADMIN, batch(200)).await;
        assert_eq!(s, 202, "{v}");
        let id = v["task_id"].as_str().unwrap().to_string();
        let t0 = Instant::now();
        let worker = loop {
            let (_, st) = get(&o, &format!("/v2/tasks/{id}"), ADMIN).await;
            if let Some(w) = st["worker_id"].as_str() {
                break w.to_string();
            }
            assert!(t0.elapsed() < Duration::from_secs(30), "never placed: {st}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        placed.push(worker);
    }
    // round-robin alone would give a, b, a, a
    assert_eq!(placed, ["a", "a", "a", "b"]);
    let m = metrics(&o).await;
    assert!(
        series(
            &m,
            "orchd_policy_calls_total{component=\"orchestratord\",hook=\"place\"}"
        ) >= 4.0,
        "{m}"
    );
    assert!(
        m.contains("orchd_policy_errors_total{component=\"orchestratord\"} 0\n"),
        "no policy error: {m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runaway_or_failing_script_falls_back_and_the_task_is_served() {
    let w1 = FaultWorker::start("slow", "w1", &["--token-delay-ms", "1"]);
    let w2 = FaultWorker::start("slow", "w2", &["--token-delay-ms", "1"]);
    let dir = tempfile::tempdir().unwrap();
    let script = write(
        dir.path(),
        "runaway.rhai",
        "fn admit(task, tenant) { loop { } }\nfn place(task, workers) { throw \"no scores\" }\n",
    );
    let o = start_with(&script, &[]);
    register_as(&o, "w1", &w1, FAULT_MODEL, 1).await;
    register_as(&o, "w2", &w2, FAULT_MODEL, 1).await;
    let t0 = Instant::now();
    let st = run_task(&o, ADMIN, batch(3)).await;
    assert_eq!(st["state"], "completed", "{st}");
    assert_eq!(st["priority"], "batch");
    assert!(t0.elapsed() < Duration::from_secs(30));
    let m = metrics(&o).await;
    let err = |hook: &str, kind: &str| {
        series(
            &m,
            &format!("orchd_policy_errors_total{{component=\"orchestratord\",hook=\"{hook}\",kind=\"{kind}\"}}"),
        )
    };
    assert_eq!(err("admit", "operations"), 1.0, "{m}");
    assert!(err("place", "runtime") >= 1.0, "{m}");
    assert!(o.log_text().contains("policy script failed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syntax_errors_refuse_the_start_and_a_broken_reload_keeps_the_old_script() {
    let dir = tempfile::tempdir().unwrap();
    let bad = write(
        dir.path(),
        "bad.rhai",
        "fn admit(task, tenant) {\n    let x = ;\n}\n",
    );
    let out = Command::new(env!("CARGO_BIN_EXE_orchestratord"))
        .args([
            "--bind",
            &format!("127.0.0.1:{}", llorch_testkit::free_port()),
        ])
        .arg("--db")
        .arg(dir.path().join("db.sqlite"))
        .arg("--policy")
        .arg(&bad)
        .env_remove("LLORCH_API_TOKEN")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{}:2:", bad.display())),
        "{stderr}"
    );

    let w = FaultWorker::start("slow", "w", &["--token-delay-ms", "1"]);
    let script = write(
        dir.path(),
        "live.rhai",
        r#"fn admit(task, tenant) { #{ reject: "v1" } }"#,
    );
    let o = start_with(&script, &[]);
    register_as(&o, "w", &w, FAULT_MODEL, 1).await;
    let interactive = json!({"model": FAULT_MODEL, "prompt": "hi", "max_tokens": 2});
    let message = |v: &Value| v["error"]["message"].as_str().unwrap_or("").to_string();
    let (s, _, v) = post(&o, "/v2/tasks", ADMIN, interactive.clone()).await;
    assert_eq!((s, message(&v)), (403, "refused by policy: v1".to_string()));

    std::fs::write(&script, "fn admit(task, tenant) { #{ reject: ").unwrap();
    let t0 = Instant::now();
    let errors =
        "orchd_policy_errors_total{component=\"orchestratord\",hook=\"reload\",kind=\"compile\"}";
    while series(&metrics(&o).await, errors) < 1.0 {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "reload never refused"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, _, v) = post(&o, "/v2/tasks", ADMIN, interactive.clone()).await;
    assert_eq!(message(&v), "refused by policy: v1");
    assert!(o.log_text().contains("policy script not reloaded"));

    // a valid version replaces it: interactive tasks are demoted to batch
    std::fs::write(
        &script,
        r#"fn admit(task, tenant) { #{ priority: "batch" } }"#,
    )
    .unwrap();
    let t0 = Instant::now();
    let st = loop {
        let (s, _, v) = call(
            &o,
            reqwest::Method::POST,
            "/v2/tasks",
            Some(ADMIN),
            Some(interactive.clone()),
        )
        .await;
        if s == 202 {
            break wait_done(&o, v["task_id"].as_str().unwrap(), ADMIN).await;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "reload never happened: {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(st["priority"], "batch", "{st}");
    assert_eq!(st["state"], "completed", "{st}");
    let m = metrics(&o).await;
    assert_eq!(
        series(
            &m,
            "orchd_policy_reloads_total{component=\"orchestratord\"}"
        ),
        1.0,
        "{m}"
    );
}
