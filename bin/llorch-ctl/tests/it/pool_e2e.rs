//! `llorch pool` against the real `llorch-pool` (and `llorch-candled`) behind a real sshd, with
//! the pool home in a temp dir (`LLORCH_HOME` set through the host profile's `env`).

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{run, Sshd};
use llorch_testkit::{require_bin, require_smollm2};
use serde_json::Value;

/// sshd plus a profile `pool` running the workspace's llorch-pool with its own home.
struct PoolHost {
    sshd: Sshd,
    pool_bin: PathBuf,
    home: PathBuf,
}

impl PoolHost {
    fn start(test: &str) -> Option<PoolHost> {
        let pool_bin = require_bin(test, "llorch-pool")?;
        let sshd = Sshd::start(test)?;
        let home = sshd.path("pool home");
        let env = format!("LLORCH_HOME={}", home.display());
        sshd.add_host(
            "pool",
            &["--pool-bin", pool_bin.to_str().unwrap(), "--env", &env],
        );
        Some(PoolHost {
            sshd,
            pool_bin,
            home,
        })
    }

    /// `llorch-pool ARGS` run here, on the same home.
    fn local(&self, args: &[&str]) -> common::Run {
        let mut cmd = Command::new(&self.pool_bin);
        cmd.args(args)
            .env("LLORCH_HOME", &self.home)
            .env_remove("RUST_LOG");
        run(cmd)
    }

    /// `llorch pool ARGS --host pool`.
    fn remote(&self, args: &[&str]) -> common::Run {
        let mut v = vec!["pool"];
        v.extend_from_slice(args);
        v.extend(["--host", "pool"]);
        run(self.sshd.llorch(&v))
    }
}

impl Drop for PoolHost {
    fn drop(&mut self) {
        let _ = Command::new(&self.pool_bin)
            .args(["worker", "stop-all", "--grace", "2"])
            .env("LLORCH_HOME", &self.home)
            .output();
    }
}

fn json(r: &common::Run) -> Value {
    serde_json::from_str(&r.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}\nstderr: {}", r.stdout, r.stderr))
}

#[test]
fn evil_model_id_is_passed_literally() {
    let Some(h) = PoolHost::start("evil_model_id_is_passed_literally") else {
        return;
    };
    let d = h.sshd.dir.path().display().to_string();
    let evil = format!("x'; touch {d}/pwned #\n$(touch {d}/pwned2) `touch {d}/pwned3` a b");
    let local = h.local(&["models", "info", &evil]);
    let remote = h.remote(&["models", "info", &evil]);
    assert_ne!(local.code, Some(0));
    assert_eq!(remote.code, local.code, "remote stderr: {}", remote.stderr);
    assert!(
        remote.stderr.contains(&evil),
        "the error must echo the literal id: {}",
        remote.stderr
    );
    assert_eq!(remote.stderr, local.stderr);
    for f in ["pwned", "pwned2", "pwned3"] {
        assert!(
            !Path::new(&d).join(f).exists(),
            "{f} was created: injection!"
        );
    }
}

#[test]
fn exit_codes_and_json_match_the_local_command() {
    let Some(h) = PoolHost::start("exit_codes_and_json_match_the_local_command") else {
        return;
    };
    for args in [
        &["models", "list", "--json"][..],
        &["models", "catalog", "--json"],
        &["backends", "list", "--json"],
    ] {
        let local = h.local(args);
        let remote = h.remote(args);
        assert_eq!(local.code, Some(0), "{args:?}: {}", local.stderr);
        assert_eq!(remote.code, Some(0), "{args:?}: {}", remote.stderr);
        assert_eq!(
            remote.stdout, local.stdout,
            "{args:?}: --json output must pass through untouched"
        );
        assert_eq!(json(&remote), json(&local));
    }
    for args in [
        &["models", "info", "no-such-model"][..],
        &["models", "frobnicate"],
        &["worker", "stop", "nope"],
    ] {
        let local = h.local(args);
        let remote = h.remote(args);
        assert_ne!(local.code, Some(0), "{args:?}");
        assert_eq!(remote.code, local.code, "{args:?}: {}", remote.stderr);
    }
}

#[test]
fn hosts_check_reports_a_ready_pool() {
    let Some(h) = PoolHost::start("hosts_check_reports_a_ready_pool") else {
        return;
    };
    let r = run(h.sshd.llorch(&["hosts", "check", "pool", "--json"]));
    assert_eq!(r.code, Some(0), "{}\n{}", r.stdout, r.stderr);
    let rep = &json(&r)[0];
    assert_eq!(rep["reachable"], true);
    assert!(
        rep["pool_version"]
            .as_str()
            .unwrap()
            .starts_with("llorch-pool "),
        "{rep}"
    );
    assert!(rep["pool_status"]["backends"].is_array(), "{rep}");
    assert_eq!(rep["missing"], serde_json::json!([]));
}

#[test]
fn import_spawn_infer_stop_over_ssh() {
    let test = "import_spawn_infer_stop_over_ssh";
    let Some(model) = require_smollm2(test) else {
        return;
    };
    let Some(_) = require_bin(test, "llorch-candled") else {
        return;
    };
    let Some(h) = PoolHost::start(test) else {
        return;
    };
    let model = model.to_str().unwrap();

    let r = h.remote(&["models", "import", model, "--id", "smollm2-135m", "--json"]);
    assert_eq!(r.code, Some(0), "import: {}", r.stderr);
    let r = h.remote(&["models", "list", "--json"]);
    let listed = json(&r);
    assert!(
        listed["models"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["id"] == "smollm2-135m"),
        "{listed}"
    );

    let r = h.remote(&[
        "worker",
        "spawn",
        "cpu",
        "--model",
        "smollm2-135m",
        "--threads",
        "2",
        "--json",
    ]);
    assert_eq!(r.code, Some(0), "spawn: {}", r.stderr);
    let w = json(&r);
    let id = w["id"].as_str().expect("worker id").to_string();
    let url = w["url"].as_str().expect("worker url").to_string();
    assert_eq!(w["alive"], true, "{w}");

    let r = h.remote(&["worker", "list", "--json"]);
    let workers = json(&r)["workers"].as_array().unwrap().clone();
    let me = workers
        .iter()
        .find(|x| x["id"] == id.as_str())
        .unwrap_or_else(|| panic!("{id} not listed: {workers:?}"));
    assert_eq!(me["alive"], true);
    assert_eq!(me["pid"], w["pid"]);

    let r = h.remote(&["status", "--json"]);
    assert_eq!(r.code, Some(0), "status: {}", r.stderr);
    let status = json(&r);
    assert!(
        status["workers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["id"] == id.as_str()),
        "{status}"
    );

    let r = run(h.sshd.llorch(&[
        "infer",
        "--worker",
        &url,
        "--message",
        "user:Write one sentence about the ocean.",
        "--max-tokens",
        "12",
        "--temperature",
        "0",
    ]));
    assert_eq!(r.code, Some(0), "infer: {}", r.stderr);
    assert!(
        r.stdout.starts_with("The ocean is a"),
        "greedy output: {:?}",
        r.stdout
    );
    assert!(
        r.stderr.contains("12 tokens") && r.stderr.contains("TTFT") && r.stderr.contains("tok/s"),
        "{}",
        r.stderr
    );

    let r = h.remote(&["worker", "stop", &id, "--grace", "5"]);
    assert_eq!(r.code, Some(0), "stop: {}", r.stderr);
    let r = h.remote(&["worker", "list", "--json"]);
    assert!(json(&r)["workers"]
        .as_array()
        .unwrap()
        .iter()
        .all(|x| x["id"] != id.as_str()));
    let addr = url.trim_start_matches("http://");
    assert!(
        llorch_testkit::http_get(addr, "/health").is_err(),
        "worker still answers after stop"
    );
}
