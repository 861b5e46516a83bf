//! Test support shared by every crate's tests.
//!
//! Rule: under `CI=true` a test never skips for a missing model, binary or service; it fails.
//! Locally a test may skip, and then prints why. Use [`require_model`], [`require_bin`] or
//! [`skip_or_fail`] to apply that rule.

pub mod sshd;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// True when running under CI (`CI=true` or `CI=1`).
pub fn in_ci() -> bool {
    matches!(std::env::var("CI").as_deref(), Ok("true") | Ok("1"))
}

/// In CI: panic with `why`. Locally: print why the test is skipped, and append the line to the
/// file named by `LLORCH_SKIP_LOG` (scripts/test.sh sets it and prints every skip at the end, so
/// a skip cannot hide in the middle of the output). Returns `None` for `?`-style use.
pub fn skip_or_fail<T>(test: &str, why: &str) -> Option<T> {
    if in_ci() {
        panic!("{test}: {why} (CI=true: missing prerequisites fail instead of skipping)");
    }
    eprintln!("SKIPPED {test}: {why}");
    if let Some(log) = std::env::var_os("LLORCH_SKIP_LOG") {
        let line = format!("{test}: {why}\n");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log);
        if let Err(e) = file.and_then(|mut f| f.write_all(line.as_bytes())) {
            eprintln!(
                "could not record the skip in {}: {e}",
                Path::new(&log).display()
            );
        }
    }
    None
}

/// Repository root (the directory holding the workspace `Cargo.lock`/`Cargo.toml`).
pub fn repo_root() -> PathBuf {
    let mut dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    loop {
        if dir.join("Cargo.toml").is_file() && dir.join("fixtures").is_dir() {
            return dir;
        }
        if !dir.pop() {
            panic!(
                "repository root not found above {}",
                env!("CARGO_MANIFEST_DIR")
            );
        }
    }
}

/// Path of a file under `fixtures/`.
pub fn fixture(name: &str) -> PathBuf {
    repo_root().join("fixtures").join(name)
}

/// Parsed `fixtures/smollm2-greedy.json` (llama.cpp reference outputs).
pub fn smollm2_fixture() -> serde_json::Value {
    let path = fixture("smollm2-greedy.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("fixture is valid JSON")
}

/// Directory where `scripts/fetch-test-model.sh` caches models.
pub fn model_cache_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("LLORCH_MODEL_CACHE") {
        return PathBuf::from(dir);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache")
        });
    base.join("llorch").join("models")
}

/// Known test models and the file name the fetch script gives them.
pub const SMOLLM2_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
pub const GEMMA3_FILE: &str = "gemma-3-270m-Q4_K_M.gguf";

/// Path of a cached test model (`LLORCH_TEST_MODEL` overrides SmolLM2's); skip-or-fail if absent.
pub fn require_model(test: &str, file: &str) -> Option<PathBuf> {
    if file == SMOLLM2_FILE {
        if let Ok(p) = std::env::var("LLORCH_TEST_MODEL") {
            return Some(PathBuf::from(p));
        }
    }
    let path = model_cache_dir().join(file);
    if path.is_file() {
        Some(path)
    } else {
        skip_or_fail(
            test,
            &format!(
                "{} not found; run scripts/fetch-test-model.sh",
                path.display()
            ),
        )
    }
}

/// The SmolLM2-135M Q4_1 GGUF, or skip-or-fail.
pub fn require_smollm2(test: &str) -> Option<PathBuf> {
    require_model(test, SMOLLM2_FILE)
}

/// Directory holding the workspace's built binaries (`target/<profile>`), derived from the
/// running test executable (`target/<profile>/deps/<test>`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let deps = exe.parent().expect("exe dir");
    if deps.file_name().is_some_and(|n| n == "deps") {
        deps.parent().expect("profile dir").to_path_buf()
    } else {
        deps.to_path_buf()
    }
}

/// Path of a workspace binary built by `cargo build --bins`; skip-or-fail if it is not built.
pub fn require_bin(test: &str, name: &str) -> Option<PathBuf> {
    let path = bin_dir().join(name);
    if path.is_file() {
        Some(path)
    } else {
        skip_or_fail(
            test,
            &format!(
                "{} not built; run `cargo build --workspace --bins` first",
                path.display()
            ),
        )
    }
}

/// A currently free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Minimal blocking HTTP GET on loopback: returns (status, body). For readiness polling in tests.
pub fn http_get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    let status = buf
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// A worker (`llorch-candled`) started for a test; killed on drop.
pub struct WorkerProcess {
    pub child: Child,
    pub addr: String,
    pub log: PathBuf,
}

impl WorkerProcess {
    /// Start `llorch-candled --model MODEL --port P` plus `extra` args and wait for `/health`.
    pub fn start(bin: &Path, model: &Path, extra: &[&str]) -> WorkerProcess {
        let port = free_port();
        let log = std::env::temp_dir().join(format!("llorch-test-worker-{port}.log"));
        let logf = std::fs::File::create(&log).unwrap();
        let child = Command::new(bin)
            .arg("--model")
            .arg(model)
            .args(["--port", &port.to_string(), "--threads", "2"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(logf)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        let mut w = WorkerProcess {
            child,
            addr: format!("127.0.0.1:{port}"),
            log,
        };
        w.wait_ready(Duration::from_secs(60));
        w
    }

    /// Poll `/health` until it answers 200; panics with the log tail on exit or timeout.
    pub fn wait_ready(&mut self, timeout: Duration) {
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "worker exited ({status}) before ready:\n{}",
                    self.log_tail()
                );
            }
            if let Ok((200, _)) = http_get(&self.addr, "/health") {
                return;
            }
            if start.elapsed() > timeout {
                panic!("worker not ready after {timeout:?}:\n{}", self.log_tail());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Last lines of the worker's log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Base URL, e.g. `http://127.0.0.1:8123`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
