//! GPUs without a GPU: the real `llorch-pool` binary with a fake `nvidia-smi` first on `PATH`
//! (fault injection: one that fails, one that hangs, one that lists 4 GPUs) and, for `worker
//! spawn cuda --gpu N`, a fake worker script that records the arguments it was started with.
//! Everything else (catalog, backend detection, spawn) is the real code.

use crate::support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use support::{text, Env};

/// What the 4-GPU fake prints for the query `llorch_catalog::machine::cuda_gpus` makes (recorded
/// from real hosts' formats: `index, name, memory.total, memory.free` in MiB).
const FOUR_GPUS: &str = "0, NVIDIA GeForce RTX 4090, 24564, 24211\n\
                         1, NVIDIA GeForce RTX 4090, 24564, 1023\n\
                         2, Tesla T4, 15360, 15100\n\
                         3, NVIDIA A100-SXM4-80GB, 81920, 81050\n";

/// Write an executable `/bin/sh` script `name` into `dir` (created) and return `dir`.
fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir.to_path_buf()
}

/// A directory holding a fake `nvidia-smi` with `body`.
fn fake_smi(env: &Env, kind: &str, body: &str) -> PathBuf {
    script(
        &env.dir.path().join(format!("smi-{kind}")),
        "nvidia-smi",
        body,
    )
}

/// The 4-GPU fake: answers the memory query, fails anything else (as a driver would not).
fn four_gpus(env: &Env) -> PathBuf {
    fake_smi(
        env,
        "four",
        &format!(
            "case \"$*\" in *--query-gpu=index,name,memory.total,memory.free*) printf '{}' ;; *) exit 6 ;; esac",
            FOUR_GPUS.replace('\n', "\\n")
        ),
    )
}

/// Run `llorch-pool args` with `dir` first on `PATH`.
fn run_with(env: &Env, dir: &Path, args: &[&str]) -> Output {
    let path = format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    env.cmd().env("PATH", path).args(args).output().unwrap()
}

fn status_json(env: &Env, dir: &Path) -> serde_json::Value {
    let out = run_with(env, dir, &["status", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Whether this host's driver shows GPUs itself (then `backends` counts those, not the fake's).
fn real_nvidia_driver() -> bool {
    Path::new("/proc/driver/nvidia/gpus").exists() || Path::new("/dev/nvidia0").exists()
}

fn cuda_backend(v: &serde_json::Value) -> &serde_json::Value {
    v["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == "cuda")
        .expect("a cuda entry")
}

#[test]
fn status_survives_a_failing_or_hanging_nvidia_smi_and_lists_4_gpus() {
    let env = Env::new();

    // exits non-zero with the driver's message: no GPUs, no failure
    let failing = fake_smi(
        &env,
        "failing",
        "echo \"NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\"; exit 9",
    );
    let v = status_json(&env, &failing);
    assert_eq!(v["machine"]["gpus"], serde_json::json!([]), "{v}");
    if !real_nvidia_driver() {
        assert_eq!(cuda_backend(&v)["devices"], 0, "{v}");
        assert_eq!(cuda_backend(&v)["available"], false, "{v}");
    }

    // never answers: killed at the 5 s timeout, asked once by `status`
    let hanging = fake_smi(&env, "hanging", "exec sleep 60");
    let t = Instant::now();
    let v = status_json(&env, &hanging);
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(4500) && took < Duration::from_secs(9),
        "status took {took:?}: one nvidia-smi wait of 5 s expected"
    );
    assert_eq!(v["machine"]["gpus"], serde_json::json!([]), "{v}");

    // four GPUs, listed with their memory; the cuda backend counts them (on a host without a
    // driver of its own), but is not available: the default worker was built without cuda
    let four = four_gpus(&env);
    let v = status_json(&env, &four);
    let gpus = v["machine"]["gpus"].as_array().unwrap();
    assert_eq!(gpus.len(), 4, "{v}");
    assert_eq!(
        gpus.iter()
            .map(|g| g["index"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [0, 1, 2, 3]
    );
    assert_eq!(gpus[2]["name"], "Tesla T4");
    assert_eq!(gpus[1]["mem_free_bytes"], 1023u64 * 1024 * 1024);
    assert!(gpus.iter().all(|g| g["backend"] == "cuda"));
    let cuda = cuda_backend(&v);
    if !real_nvidia_driver() {
        assert_eq!(cuda["devices"], 4, "{v}");
        assert!(
            cuda["detail"].as_str().unwrap().contains("nvidia-smi"),
            "{v}"
        );
    }
    assert_eq!(cuda["compiled"], false, "{v}");
    assert_eq!(cuda["available"], false, "{v}");
    let out = run_with(&env, &four, &["status"]);
    let human = String::from_utf8_lossy(&out.stdout);
    assert!(
        human.contains("cuda:3 NVIDIA A100-SXM4-80GB"),
        "{}",
        text(&out)
    );
}

#[test]
fn spawn_cuda_passes_the_gpu_as_device_and_cpu_refuses_a_gpu() {
    let env = Env::new();
    let smi = four_gpus(&env);
    let args_file = env.dir.path().join("worker-args.txt");
    // A worker built with cuda (what --print-backends says) that records its arguments and
    // exits: spawn then reports the failed start, after the arguments were recorded.
    let bin_dir = script(
        &env.dir.path().join("fake-worker"),
        "llorch-candled",
        &format!(
            "if [ \"$1\" = --print-backends ]; then echo '{{\"backends\": [\"cpu\", \"cuda\"]}}'; exit 0; fi\n\
             printf '%s\\n' \"$@\" > '{}'\necho 'fake worker: recorded its arguments' >&2\nexit 3",
            args_file.display()
        ),
    );
    let worker = bin_dir.join("llorch-candled");
    let worker = worker.to_str().unwrap();
    let gguf = env.dir.path().join("t.gguf");
    std::fs::write(&gguf, support::tiny_gguf(8)).unwrap();
    env.ok(&["models", "import", gguf.to_str().unwrap(), "--id", "t"]);

    let out = run_with(
        &env,
        &smi,
        &[
            "worker",
            "spawn",
            "cuda",
            "--model",
            "t",
            "--gpu",
            "1",
            "--worker-bin",
            worker,
            "--timeout",
            "30",
            "--json",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(err["error"]["kind"], "worker_failed", "{err}");
    let recorded = std::fs::read_to_string(&args_file).expect("the worker was started");
    let argv: Vec<&str> = recorded.lines().collect();
    let pair = |flag: &str| {
        argv.windows(2)
            .find(|w| w[0] == flag)
            .map(|w| w[1])
            .unwrap_or_else(|| panic!("{flag} missing from {argv:?}"))
    };
    assert_eq!(pair("--backend"), "cuda", "{argv:?}");
    assert_eq!(pair("--device"), "1", "{argv:?}");
    assert_eq!(
        argv.iter().filter(|a| **a == "--device").count(),
        1,
        "{argv:?}"
    );
    assert_eq!(
        env.json(&["worker", "list"])["workers"],
        serde_json::json!([])
    );

    // --gpu on the CPU backend: a usage error, and no worker started
    std::fs::remove_file(&args_file).unwrap();
    let out = run_with(
        &env,
        &smi,
        &[
            "worker",
            "spawn",
            "cpu",
            "--model",
            "t",
            "--gpu",
            "1",
            "--worker-bin",
            worker,
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--gpu applies to cuda and metal only"),
        "{}",
        text(&out)
    );
    assert!(!args_file.exists(), "no worker may start");
}
