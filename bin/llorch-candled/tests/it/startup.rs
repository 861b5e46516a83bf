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
