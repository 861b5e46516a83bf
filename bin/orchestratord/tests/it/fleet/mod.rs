//! Fleet acceptance with real processes: orchestratord drives the workspace's `llorch-pool`
//! on pools that are this host or "remote" behind a real sshd on loopback (each pool its own
//! LLORCH_HOME), and real `llorch-candled` workers load SmolLM2. Skipped locally (with the
//! reason) when a binary, the model or sshd is missing; under CI=true those fail instead.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use llorch_testkit::sshd::Sshd;
use llorch_testkit::{require_bin, require_smollm2};
use serde_json::{json, Value};

use crate::common::*;
use crate::real::SERIAL;

mod bench;
mod capacity;
mod download;
mod engine_failure;

const PROMPT: &str = "<|im_start|>user\nName three colors.<|im_end|>\n<|im_start|>assistant\n";
/// Generous bound for anything that involves starting a worker on the shared 2-core box.
const START_BOUND: Duration = Duration::from_secs(120);

/// A pool home with the SmolLM2 file imported under `ids`.
struct PoolHome {
    dir: PathBuf,
}

/// Binaries, model and homes of one test; stops every worker of every home on drop.
struct Env {
    pool_bin: PathBuf,
    homes: Vec<PoolHome>,
    _tmp: tempfile::TempDir,
    sshd: Option<Sshd>,
}

impl Env {
    /// `homes`: (directory name, catalog ids to import the SmolLM2 file as).
    fn new(test: &str, homes: &[(&str, &[&str])], ssh: bool) -> Option<Env> {
        let pool_bin = require_bin(test, "llorch-pool")?;
        require_bin(test, "llorch-candled")?;
        let model = require_smollm2(test)?;
        let sshd = if ssh { Some(Sshd::start(test)?) } else { None };
        let tmp = tempfile::Builder::new().prefix("fleet-").tempdir().unwrap();
        let mut out = Vec::new();
        for (name, ids) in homes {
            let dir = tmp.path().join(name);
            for id in *ids {
                let o = Command::new(&pool_bin)
                    .args(["--json", "models", "import"])
                    .arg(&model)
                    .args(["--id", id])
                    .env("LLORCH_HOME", &dir)
                    .output()
                    .unwrap();
                assert!(
                    o.status.success(),
                    "import: {}",
                    String::from_utf8_lossy(&o.stderr)
                );
            }
            out.push(PoolHome { dir });
        }
        Some(Env {
            pool_bin,
            homes: out,
            _tmp: tmp,
            sshd,
        })
    }

    fn home(&self, i: usize) -> &Path {
        &self.homes[i].dir
    }

    /// `[[pools]]` entry for home `i`, local or through the sshd.
    fn pool_toml(&self, name: &str, i: usize, extra: &str) -> String {
        let mut s = format!(
            "[[pools]]\nname = {name:?}\nllorch_pool = {:?}\nhome = {:?}\n{extra}\n",
            self.pool_bin.display().to_string(),
            self.home(i).display().to_string()
        );
        if let Some(sshd) = &self.sshd {
            if extra.contains("#ssh") {
                s.push_str(&format!(
                    "ssh = \"127.0.0.1\"\nssh_port = {}\nssh_user = {:?}\nssh_identity = {:?}\n\
                     ssh_config = \"/dev/null\"\nssh_options = {:?}\nworker_bind = \"127.0.0.1\"\n",
                    sshd.port,
                    sshd.user,
                    sshd.path("id_ed25519").display().to_string(),
                    sshd.client_options()
                ));
            }
        }
        s
    }

    /// `worker list --json` of home `i`.
    fn workers(&self, i: usize) -> Vec<Value> {
        let o = Command::new(&self.pool_bin)
            .args(["--json", "worker", "list"])
            .env("LLORCH_HOME", self.home(i))
            .output()
            .unwrap();
        let v: Value = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
        v["workers"].as_array().cloned().unwrap_or_default()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        for h in &self.homes {
            let _ = Command::new(&self.pool_bin)
                .args(["worker", "stop-all", "--grace", "2"])
                .env("LLORCH_HOME", &h.dir)
                .output();
        }
    }
}

/// orchestratord with `toml` as its config file (fast probes and backoff).
fn orchd(dir: &Path, toml: &str) -> Orchd {
    let path = dir.join("orchd.toml");
    let cfg = format!("[fleet]\nprobe_interval_ms = 300\nrestart_backoff_ms = 200\n{toml}");
    std::fs::write(&path, cfg).unwrap();
    Orchd::start(&["--config", path.to_str().unwrap()])
}

fn greedy(model: &str) -> Value {
    json!({"model": model, "prompt": PROMPT, "max_tokens": 8, "temperature": 0})
}

/// Submit and follow one task to its end: (events, ms from submit to the first token).
async fn run_task(o: &Orchd, model: &str) -> (Vec<Ev>, f64) {
    let t0 = Instant::now();
    let id = submit_ok(o, greedy(model)).await;
    let mut s = EventStream::open(o, &id, None).await;
    let mut evs = Vec::new();
    let mut first_token = None;
    let deadline = Instant::now() + START_BOUND;
    while let Some(ev) = tokio::time::timeout_at(deadline.into(), s.next())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "task {id} did not end within {START_BOUND:?}:\n{}",
                o.log_text()
            )
        })
    {
        if ev.kind == "token" && first_token.is_none() {
            first_token = Some(t0.elapsed().as_secs_f64() * 1000.0);
        }
        evs.push(ev);
    }
    (evs, first_token.unwrap_or(f64::NAN))
}

fn assert_end(evs: &[Ev], o: &Orchd) -> String {
    let end = single_terminal(evs);
    assert_eq!(end.kind, "end", "{evs:#?}\n{}", o.log_text());
    end.data["worker_id"].as_str().unwrap().to_string()
}

/// Poll `GET /v2/pools` until `pred` holds.
async fn wait_pools(o: &Orchd, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let (_, v) = get_json(&o.url("/v2/pools")).await;
        if pred(&v) {
            return v;
        }
        assert!(
            start.elapsed() < START_BOUND,
            "{what}: never happened; last /v2/pools: {v:#}\n{}",
            o.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn deployment<'a>(v: &'a Value, model: &str) -> &'a Value {
    v["deployments"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["model"] == model))
        .unwrap_or(&Value::Null)
}

fn pool<'a>(v: &'a Value, name: &str) -> &'a Value {
    v["pools"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["name"] == name))
        .unwrap_or(&Value::Null)
}

#[tokio::test(flavor = "multi_thread")]
async fn fleet_on_demand_over_ssh_reuses_the_worker_and_survives_sshd_outage() {
    let _serial = SERIAL.lock().await;
    let test = "fleet_on_demand_over_ssh";
    // A hostile pool home: spaces, quotes, $() and backticks reach llorch-pool as data.
    let evil = "home 'q' \"d\" $(touch pwned) `touch pwned2`";
    let model: &[&str] = &["smollm2-135m"];
    let Some(env) = Env::new(test, &[(evil, model), ("near", model)], true) else {
        return;
    };
    // "near" has a cap below what "far" reports free (and "far" wins a tie by name): far first.
    let toml = format!(
        "{}{}[[models]]\nid = \"smollm2-135m\"\nparallel = 2\n",
        env.pool_toml("far", 0, "#ssh"),
        env.pool_toml("near", 1, "max_memory_bytes = 1200000000")
    );
    let o = orchd(env._tmp.path(), &toml);
    let (evs, ttft) = run_task(&o, "smollm2-135m").await;
    let w1 = assert_end(&evs, &o);
    let phases: Vec<&str> = evs
        .iter()
        .filter_map(|e| e.data["phase"].as_str())
        .collect();
    assert!(
        phases.contains(&"loading"),
        "queued events carry phases: {phases:?}"
    );
    assert!(
        evs.iter().any(|e| e.data["pool"] == "far"),
        "the loading phase names the pool"
    );
    eprintln!("fleet over ssh: cold start to first token {ttft:.0} ms");
    let (evs, ttft2) = run_task(&o, "smollm2-135m").await;
    assert_eq!(
        assert_end(&evs, &o),
        w1,
        "the second task reuses the worker"
    );
    eprintln!("fleet over ssh: warm task first token {ttft2:.0} ms");
    assert!(w1.starts_with("fleet-far-smollm2-135m-"), "{w1}");
    assert_eq!(env.workers(0).len(), 1, "one worker in the hostile home");
    for f in ["pwned", "pwned2"] {
        assert!(!env._tmp.path().join(f).exists(), "{f}: injection!");
    }
    let v = wait_pools(&o, "pool far reachable", |v| {
        pool(v, "far")["reachable"] == true
    })
    .await;
    assert_eq!(deployment(&v, "smollm2-135m")["starts"], 1, "{v:#}");
    eprintln!("probe over ssh: {} ms", pool(&v, "far")["probe_ms"]);
    // One persistent connection: many probes and commands, one login.
    let calls = get_text(&o.url("/metrics")).await;
    let probes = calls
        .lines()
        .find(|l| l.starts_with("orchd_fleet_probe_ms_count") && l.contains("pool=\"far\""))
        .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .unwrap_or(0);
    let logins = env
        .sshd
        .as_ref()
        .unwrap()
        .log()
        .matches("Accepted publickey")
        .count();
    eprintln!("ssh: {probes} probes + spawn/fit over {logins} login(s)");
    assert!(
        probes >= 2 && logins <= 2,
        "{probes} probes, {logins} logins"
    );

    // sshd stops (and, as when a host goes down, its worker dies): the pool is marked
    // unreachable within a few probes and the next task gets a worker on the other pool.
    let mut env = env;
    env.sshd.as_mut().unwrap().stop();
    let t = Instant::now();
    wait_pools(&o, "pool far unreachable", |v| {
        pool(v, "far")["reachable"] == false
    })
    .await;
    eprintln!("unreachable noticed after {} ms", t.elapsed().as_millis());
    let pid = env.workers(0)[0]["pid"].as_u64().unwrap();
    Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    let (evs, _) = run_task(&o, "smollm2-135m").await;
    let w_near = assert_end(&evs, &o);
    assert!(w_near.starts_with("fleet-near-"), "{w_near}");
    // sshd is back: the pool is used again (near drained, so the next start must go far).
    env.sshd.as_mut().unwrap().restart();
    wait_pools(&o, "pool far reachable again", |v| {
        pool(v, "far")["reachable"] == true
            && pool(v, "far")["workers"]
                .as_array()
                .is_some_and(Vec::is_empty)
    })
    .await;
    let r = client()
        .post(o.url("/v2/pools/near/drain"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    wait_pools(&o, "near emptied", |v| {
        pool(v, "near")["workers"]
            .as_array()
            .is_some_and(Vec::is_empty)
    })
    .await;
    let (evs, _) = run_task(&o, "smollm2-135m").await;
    let w_far = assert_end(&evs, &o);
    assert!(w_far.starts_with("fleet-far-") && w_far != w1, "{w_far}");
}

#[tokio::test(flavor = "multi_thread")]
async fn fleet_local_idle_ttl_stops_and_the_next_task_starts_again() {
    let _serial = SERIAL.lock().await;
    let Some(env) = Env::new("fleet_local_idle_ttl", &[("a", &["smollm2-135m"])], false) else {
        return;
    };
    let toml = format!(
        "{}[[models]]\nid = \"smollm2-135m\"\nidle_ttl_s = 2\n",
        env.pool_toml("a", 0, "")
    );
    let o = orchd(env._tmp.path(), &toml);
    let (evs, ttft) = run_task(&o, "smollm2-135m").await;
    let w1 = assert_end(&evs, &o);
    eprintln!("fleet local: cold start to first token {ttft:.0} ms");
    // Gone from the fleet's view only once the pool confirmed the stop.
    let v = wait_pools(&o, "idle worker stopped", |v| {
        pool(v, "a")["workers"]
            .as_array()
            .is_some_and(Vec::is_empty)
    })
    .await;
    assert_eq!(deployment(&v, "smollm2-135m")["state"], "idle", "{v:#}");
    assert!(env.workers(0).is_empty(), "the pool stopped it");
    let (evs, _) = run_task(&o, "smollm2-135m").await;
    let w2 = assert_end(&evs, &o);
    assert_ne!(w1, w2, "a new worker served the next task");
    // Draining one worker: it gets no new task and the fleet stops it once idle.
    let r = client()
        .post(o.url(&format!("/v2/workers/{w2}/drain")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    wait_pools(&o, "drained worker stopped", |v| {
        pool(v, "a")["workers"]
            .as_array()
            .is_some_and(Vec::is_empty)
    })
    .await;
    assert!(env.workers(0).is_empty());
    let m = get_text(&o.url("/metrics")).await;
    assert!(
        m.contains("orchd_fleet_worker_stops_total{component=\"orchestratord\",pool=\"a\",reason=\"idle\"} 1"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn fleet_restarts_a_killed_worker_and_adopts_after_orchestratord_sigkill() {
    let _serial = SERIAL.lock().await;
    let Some(env) = Env::new("fleet_restart_adopt", &[("a", &["smollm2-135m"])], false) else {
        return;
    };
    let toml = format!(
        "{}[[models]]\nid = \"smollm2-135m\"\nmin_replicas = 1\n",
        env.pool_toml("a", 0, "")
    );
    let o = orchd(env._tmp.path(), &toml);
    wait_pools(&o, "min_replicas started", |v| {
        deployment(v, "smollm2-135m")["state"] == "ready"
    })
    .await;
    let pid = env.workers(0)[0]["pid"].as_u64().unwrap();
    Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    // A task submitted meanwhile waits for the restart (or reaches the new worker).
    let (evs, _) = run_task(&o, "smollm2-135m").await;
    let served_by = assert_end(&evs, &o);
    let v = wait_pools(&o, "restart counted", |v| {
        deployment(v, "smollm2-135m")["restarts"] == 1
            && deployment(v, "smollm2-135m")["state"] == "ready"
    })
    .await;
    let alive: Vec<Value> = env
        .workers(0)
        .into_iter()
        .filter(|w| w["alive"] == true)
        .collect();
    assert_eq!(alive.len(), 1, "{alive:#?}");
    assert_eq!(alive[0]["id"], served_by.as_str());
    eprintln!("restarted: {v:#}");

    // orchestratord dies hard; the new one adopts the running worker and spawns nothing.
    let o = o.restart_hard();
    let v = wait_pools(&o, "worker adopted", |v| {
        pool(v, "a")["workers"]
            .as_array()
            .is_some_and(|w| w.len() == 1 && w[0]["adopted"] == true)
    })
    .await;
    assert_eq!(deployment(&v, "smollm2-135m")["starts"], 0, "{v:#}");
    let (evs, _) = run_task(&o, "smollm2-135m").await;
    assert_eq!(assert_end(&evs, &o), served_by, "the adopted worker serves");
    assert_eq!(env.workers(0).len(), 1, "no duplicate spawn");

    // Drain: the idle worker stops and nothing starts there; undrain brings min_replicas back.
    let r = client()
        .post(o.url("/v2/pools/a/drain"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    wait_pools(&o, "drained pool emptied", |v| {
        pool(v, "a")["drained"] == true
            && pool(v, "a")["workers"]
                .as_array()
                .is_some_and(Vec::is_empty)
    })
    .await;
    assert!(
        env.workers(0).is_empty(),
        "the drained pool's worker was stopped"
    );
    if let Some(llorch) = require_bin("fleet_restart_adopt", "llorch") {
        let out = Command::new(llorch)
            .args(["fleet", "status", "--json", "--orchestrator", &o.base])
            .output()
            .unwrap();
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(pool(&v, "a")["drained"], true, "{v:#}");
        let out = Command::new(require_bin("fleet", "llorch").unwrap())
            .args(["fleet", "status", "--orchestrator", &o.base])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("POOL") && text.contains("smollm2-135m"),
            "{text}"
        );
    }
    let r = client()
        .post(o.url("/v2/pools/a/undrain"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    wait_pools(&o, "min_replicas back after undrain", |v| {
        deployment(v, "smollm2-135m")["state"] == "ready"
    })
    .await;
}

fn write_exec(path: &Path, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

async fn get_text(url: &str) -> String {
    client()
        .get(url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}
