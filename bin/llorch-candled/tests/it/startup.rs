//! Start-up failures: every one is a clear message naming the file and the reason, and a
//! non-zero exit, never a panic.

use std::process::Command;

fn run_worker(model: &std::path::Path, extra: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_llorch-candled"))
        .arg("--model")
        .arg(model)
        .args(["--port", &llorch_testkit::free_port().to_string()])
        .args(extra)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_clean_failure(code: i32, stderr: &str, needles: &[&str]) {
    assert_eq!(code, 1, "exit code; stderr:\n{stderr}");
    assert!(!stderr.contains("panicked"), "panic:\n{stderr}");
    for n in needles {
        assert!(stderr.contains(n), "stderr lacks {n:?}:\n{stderr}");
    }
}

#[test]
fn missing_and_corrupt_models_fail_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.gguf");
    let (code, err) = run_worker(&missing, &[]);
    assert_clean_failure(code, &err, &["nope.gguf", "cannot open model"]);

    let garbage = dir.path().join("garbage.gguf");
    std::fs::write(&garbage, b"this is not a gguf file at all").unwrap();
    let (code, err) = run_worker(&garbage, &[]);
    assert_clean_failure(code, &err, &["garbage.gguf", "not a valid GGUF file"]);
}

#[test]
fn truncated_gguf_fails_clearly() {
    let Some(model) = llorch_testkit::require_smollm2("truncated_gguf_fails_clearly") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cut = dir.path().join("cut.gguf");
    let bytes = std::fs::read(&model).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let (code, err) = run_worker(&cut, &[]);
    assert_clean_failure(code, &err, &["cut.gguf", "truncated"]);
    // as on a developer machine: candle attaches backtraces to its errors, none may show
    for (dir_name, bytes) in [
        ("cut-header", &bytes[..4096]),
        ("cut-half", &bytes[..bytes.len() / 2]),
    ] {
        let path = dir.path().join(format!("{dir_name}.gguf"));
        std::fs::write(&path, bytes).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_llorch-candled"))
            .arg("--model")
            .arg(&path)
            .args(["--port", &llorch_testkit::free_port().to_string()])
            .env("RUST_BACKTRACE", "1")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        let error_lines: Vec<&str> = err.lines().filter(|l| l.contains("error")).collect();
        assert_eq!(error_lines.len(), 1, "one error line:\n{err}");
        assert!(
            !err.lines().any(|l| {
                let t = l.trim_start();
                t.len() < l.len()
                    && (t.starts_with("at ")
                        || t.split_once(": ")
                            .is_some_and(|(n, _)| n.bytes().all(|b| b.is_ascii_digit())))
            }),
            "backtrace frames on stderr:\n{err}"
        );
    }
}

#[test]
fn a_network_bind_without_a_token_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("any.gguf");
    for host in ["0.0.0.0", "192.0.2.1"] {
        let (code, err) = run_worker(&model, &["--host", host]);
        assert_clean_failure(code, &err, &["refusing to listen", "LLORCH_WORKER_TOKEN"]);
    }
    let (code, err) = run_worker(&model, &["--api-token", "short"]);
    assert_clean_failure(code, &err, &["at least 16 characters"]);
}

/// A minimal GGUF v3 file with one tensor of the given ggml type id.
fn tiny_gguf(arch: &str, ggml_type: u32) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(b"GGUF");
    b.extend_from_slice(&3u32.to_le_bytes());
    b.extend_from_slice(&1u64.to_le_bytes()); // tensors
    b.extend_from_slice(&1u64.to_le_bytes()); // kv
    let s = |b: &mut Vec<u8>, x: &str| {
        b.extend_from_slice(&(x.len() as u64).to_le_bytes());
        b.extend_from_slice(x.as_bytes());
    };
    s(&mut b, "general.architecture");
    b.extend_from_slice(&8u32.to_le_bytes()); // string
    s(&mut b, arch);
    s(&mut b, "token_embd.weight");
    b.extend_from_slice(&2u32.to_le_bytes());
    b.extend_from_slice(&256u64.to_le_bytes());
    b.extend_from_slice(&4u64.to_le_bytes());
    b.extend_from_slice(&ggml_type.to_le_bytes());
    b.extend_from_slice(&0u64.to_le_bytes());
    while b.len() % 32 != 0 {
        b.push(0);
    }
    b.extend(std::iter::repeat_n(0u8, 256 * 4 * 4));
    b
}

#[test]
fn unsupported_quantization_and_architecture_fail_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let iq = dir.path().join("iq2.gguf");
    std::fs::write(&iq, tiny_gguf("llama", 16)).unwrap(); // 16 = IQ2_XXS
    let (code, err) = run_worker(&iq, &[]);
    assert_clean_failure(code, &err, &["iq2.gguf", "quantization type"]);

    let arch = dir.path().join("mamba.gguf");
    std::fs::write(&arch, tiny_gguf("mamba", 0)).unwrap();
    let (code, err) = run_worker(&arch, &[]);
    assert_clean_failure(
        code,
        &err,
        &["mamba.gguf", "unsupported architecture `mamba`"],
    );
}

#[test]
fn port_in_use_and_missing_backend_fail_clearly() {
    let Some(model) =
        llorch_testkit::require_smollm2("port_in_use_and_missing_backend_fail_clearly")
    else {
        return;
    };
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_llorch-candled"))
        .arg("--model")
        .arg(&model)
        .args(["--port", &port])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_clean_failure(
        out.status.code().unwrap_or(-1),
        &err,
        &["cannot listen", &port],
    );
    if !cfg!(feature = "cuda") {
        let (code, err) = run_worker(&model, &["--backend", "cuda"]);
        assert_clean_failure(code, &err, &["--features cuda"]);
    }
}

/// Fuzz-style (bounded to 200 cases or 30 s, seeded): the first 2 MB of the real SmolLM2
/// GGUF (header, metadata, tokenizer arrays) with random bytes flipped, random 8-byte fields
/// set to huge counts, or cut at random: the worker always exits 1 with one message, never a
/// panic, an abort or an out-of-memory kill.
#[test]
fn mutated_gguf_headers_fail_cleanly() {
    let Some(model) = llorch_testkit::require_smollm2("mutated_gguf_headers_fail_cleanly") else {
        return;
    };
    let mut file = std::fs::File::open(&model).unwrap();
    let mut head = vec![0u8; 2 << 20];
    std::io::Read::read_exact(&mut file, &mut head).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fuzz.gguf");
    let mut rng = llorch_testkit::FuzzRng::new(2026);
    let start = std::time::Instant::now();
    let mut cases = 0;
    while cases < 200 && start.elapsed() < std::time::Duration::from_secs(30) {
        let mut bytes = head.clone();
        let what = match rng.below(3) {
            0 => {
                for _ in 0..1 + rng.below(8) {
                    let i = rng.below(64 << 10);
                    bytes[i] = rng.next_u64() as u8;
                }
                "flipped bytes"
            }
            1 => {
                let i = rng.below((64 << 10) - 8);
                let v = *rng.pick(&[u64::MAX, 1 << 40, 1 << 32, u32::MAX as u64, 0]);
                bytes[i..i + 8].copy_from_slice(&v.to_le_bytes());
                "a huge field"
            }
            _ => {
                bytes.truncate(rng.below(bytes.len()));
                "cut"
            }
        };
        std::fs::write(&path, &bytes).unwrap();
        let (code, err) = run_worker(&path, &[]);
        assert_eq!(code, 1, "case {cases} ({what}): {err}");
        assert!(!err.contains("panicked"), "case {cases} ({what}): {err}");
        assert!(err.contains("error:"), "case {cases} ({what}): {err}");
        cases += 1;
    }
    eprintln!("mutated_gguf_headers_fail_cleanly: {cases} cases");
}

/// A configuration that cannot fit refuses before the model load, naming the numbers and a
/// configuration that fits; that configuration then starts, and `/health` reports its memory.
#[test]
fn a_worker_that_would_not_fit_refuses_with_the_numbers() {
    let test = "a_worker_that_would_not_fit_refuses_with_the_numbers";
    let Some(model) = llorch_testkit::require_smollm2(test) else {
        return;
    };
    let cap = ["--max-memory-mb", "260", "--prompt-cache-mb", "0"];
    let mut args = vec!["--ctx-size", "8192", "--parallel", "16"];
    args.extend_from_slice(&cap);
    let started = std::time::Instant::now();
    let (code, err) = run_worker(&model, &args);
    assert_clean_failure(
        code,
        &err,
        &[
            "INSUFFICIENT_VRAM",
            "--max-memory-mb allows 272.6 MB",
            "ctx 8192 x parallel 16",
            "--ctx-size",
        ],
    );
    assert!(
        !err.contains("model loaded"),
        "refused after the load:\n{err}"
    );
    eprintln!("refused in {:?}", started.elapsed());
    // the advice: the largest --ctx-size that fits at --parallel 16
    let ctx: String = err
        .split("use --ctx-size ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .unwrap_or_else(|| panic!("no --ctx-size advice:\n{err}"))
        .to_string();
    assert!(ctx.parse::<u32>().unwrap() < 8192, "{ctx}");
    let mut fits = vec!["--ctx-size", ctx.as_str(), "--parallel", "16"];
    fits.extend_from_slice(&cap);
    let w = llorch_testkit::WorkerProcess::start(
        std::path::Path::new(env!("CARGO_BIN_EXE_llorch-candled")),
        &model,
        &fits,
    );
    let (status, body) = llorch_testkit::http_get(&w.addr, "/health").unwrap();
    assert_eq!(status, 200, "{body}");
    let h: llorch_wire::WorkerHealth = serde_json::from_str(&body).unwrap();
    let m = h.memory.expect("memory in /health");
    let weights = std::fs::metadata(&model).unwrap().len();
    assert_eq!(m.source, "rss");
    assert!(
        m.used_bytes > weights,
        "RSS {} <= weights {weights}",
        m.used_bytes
    );
    assert!(
        m.estimate_bytes <= 260 << 20 && m.estimate_bytes >= m.used_bytes,
        "{m:?}"
    );
    eprintln!(
        "memory: estimate {} B, RSS after load {} B ({:.0}%)",
        m.estimate_bytes,
        m.used_bytes,
        100.0 * m.used_bytes as f64 / m.estimate_bytes as f64
    );
    let (_, metrics) = llorch_testkit::http_get(&w.addr, "/metrics").unwrap();
    let vram: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("worker_vram_bytes "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no worker_vram_bytes:\n{metrics}"));
    assert!(vram > weights as f64, "{vram}");
}

/// Every flag of the synopsis in `.specs/worker.md` is one `--help` lists.
#[test]
fn spec_synopsis_names_real_flags() {
    let out = Command::new(env!("CARGO_BIN_EXE_llorch-candled"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    let words: Vec<&str> = help
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .collect();
    let flags = llorch_testkit::doc_flags(
        include_str!("../../../../.specs/worker.md"),
        "llorch-candled",
    );
    assert!(flags.len() >= 15, "{flags:?}");
    for f in flags {
        assert!(
            words.contains(&f.as_str()),
            "{f} is in the spec's synopsis but not in --help"
        );
    }
}
