//! Helpers shared by the integration tests: running `llorch-pool` with an isolated home and
//! Hugging Face cache, tiny valid model files, and the local hub server.
#![allow(dead_code)]

pub use llorch_testkit::hub;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// An isolated environment: pool home + HF home in a temp dir.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub endpoint: Option<String>,
}

impl Env {
    pub fn new() -> Env {
        Env {
            dir: tempfile::tempdir().unwrap(),
            endpoint: None,
        }
    }

    pub fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    pub fn hf_home(&self) -> PathBuf {
        self.dir.path().join("hf")
    }

    /// `llorch-pool` with this environment (no inherited HF or XDG settings).
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_llorch-pool"));
        for v in [
            "HF_TOKEN",
            "HUGGING_FACE_HUB_TOKEN",
            "HF_HUB_CACHE",
            "HUGGINGFACE_HUB_CACHE",
            "HF_TOKEN_PATH",
            "XDG_DATA_HOME",
            "LLORCH_WORKER_BIN",
            "LLORCH_WORKER_TOKEN",
        ] {
            c.env_remove(v);
        }
        c.env("LLORCH_HOME", self.home())
            .env("HF_HOME", self.hf_home())
            .env("NO_COLOR", "1");
        match &self.endpoint {
            Some(e) => c.env("HF_ENDPOINT", e),
            None => c.env("HF_ENDPOINT", "http://127.0.0.1:9"),
        };
        c
    }

    /// Run with `args`; returns the output (never panics on failure).
    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().unwrap()
    }

    /// Run, assert success, return stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "llorch-pool {args:?} failed:\n{}",
            text(&out)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Run with `--json`, assert success, parse stdout.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.push("--json");
        serde_json::from_str(&self.ok(&a)).unwrap()
    }
}

/// stdout + stderr for assertion messages.
pub fn text(out: &Output) -> String {
    format!(
        "status {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A small valid GGUF v3 file: `general.architecture = llama` and one f32 tensor of `elems`.
pub fn tiny_gguf(elems: u64) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(b"GGUF");
    b.extend_from_slice(&3u32.to_le_bytes());
    b.extend_from_slice(&1u64.to_le_bytes()); // tensors
    b.extend_from_slice(&1u64.to_le_bytes()); // metadata entries
    let s = |b: &mut Vec<u8>, v: &str| {
        b.extend_from_slice(&(v.len() as u64).to_le_bytes());
        b.extend_from_slice(v.as_bytes());
    };
    s(&mut b, "general.architecture");
    b.extend_from_slice(&8u32.to_le_bytes()); // string
    s(&mut b, "llama");
    s(&mut b, "w");
    b.extend_from_slice(&1u32.to_le_bytes()); // dims
    b.extend_from_slice(&elems.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes()); // f32
    b.extend_from_slice(&0u64.to_le_bytes()); // offset
    while b.len() % 32 != 0 {
        b.push(0);
    }
    for i in 0..elems {
        b.extend_from_slice(&(i as f32).to_le_bytes());
    }
    b
}

/// A minimal safetensors file with one f32 tensor of `elems`.
pub fn tiny_safetensors(elems: usize) -> Vec<u8> {
    let header = format!(
        r#"{{"w":{{"dtype":"F32","shape":[{elems}],"data_offsets":[0,{}]}}}}"#,
        elems * 4
    );
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(header.as_bytes());
    b.extend(std::iter::repeat_n(0u8, elems * 4));
    b
}

/// Files under `dir` whose name ends with `suffix`, recursively.
pub fn find_files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(find_files(&p, suffix));
            } else if p.to_string_lossy().ends_with(suffix) {
                out.push(p);
            }
        }
    }
    out
}
