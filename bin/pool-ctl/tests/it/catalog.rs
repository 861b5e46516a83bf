//! Catalog behaviour through the real binary: concurrent registers, unreadable catalogs,
//! import validation, exit codes.

use crate::support;

use std::process::Stdio;

use support::{text, tiny_gguf, tiny_safetensors, Env};

#[test]
fn concurrent_registers_all_land() {
    let env = Env::new();
    let children: Vec<_> = (0..8)
        .map(|i| {
            env.cmd()
                .args([
                    "models",
                    "register",
                    &format!("m{i}"),
                    "--repo",
                    &format!("org/m{i}"),
                    "--file",
                    "m.gguf",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", text(&out));
    }
    let cat = env.json(&["models", "catalog"]);
    let ids: Vec<&str> = cat["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    for i in 0..8 {
        assert!(
            ids.contains(&format!("m{i}").as_str()),
            "m{i} missing from {ids:?}"
        );
    }
    let file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(env.home().join("catalog.json")).unwrap())
            .unwrap();
    assert_eq!(file["version"], 1);
    assert_eq!(file["models"].as_array().unwrap().len(), 8);
}

#[test]
fn unreadable_catalog_is_reported_and_never_overwritten() {
    let env = Env::new();
    std::fs::create_dir_all(env.home()).unwrap();
    let path = env.home().join("catalog.json");
    std::fs::write(&path, "{ this is not json").unwrap();
    let out = env.run(&[
        "models", "register", "a", "--repo", "org/a", "--file", "a.gguf", "--json",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(err["error"]["kind"], "catalog_unreadable");
    assert!(String::from_utf8_lossy(&out.stderr).contains("was not modified"));
    assert_eq!(env.run(&["models", "catalog"]).status.code(), Some(1));
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "{ this is not json"
    );
}

#[test]
fn register_unregister_and_usage_errors() {
    let env = Env::new();
    env.ok(&[
        "models",
        "register",
        "q",
        "--repo",
        "Qwen/Q-GGUF",
        "--file",
        "q.gguf",
        "--sha256",
        &"a".repeat(64),
    ]);
    let info = env.json(&["models", "info", "q"]);
    assert_eq!(info["format"], "gguf");
    assert_eq!(info["builtin"], false);
    // Duplicate ids (user or built-in) are runtime errors; bad input is a usage error (2).
    assert_eq!(
        env.run(&["models", "register", "q", "--repo", "o/q", "--file", "q.gguf"])
            .status
            .code(),
        Some(1)
    );
    assert_eq!(
        env.run(&[
            "models",
            "register",
            "tinyllama",
            "--repo",
            "o/q",
            "--file",
            "q.gguf"
        ])
        .status
        .code(),
        Some(1)
    );
    assert_eq!(
        env.run(&["models", "register", "Bad Id", "--repo", "o/q", "--file", "q.gguf"])
            .status
            .code(),
        Some(2)
    );
    assert_eq!(
        env.run(&["models", "register", "z", "--repo", "noslash", "--file", "q.gguf"])
            .status
            .code(),
        Some(2)
    );
    assert_eq!(
        env.run(&["models", "register", "z", "--repo", "o/z"])
            .status
            .code(),
        Some(2)
    );
    assert_eq!(
        env.run(&["models", "unregister", "tinyllama"])
            .status
            .code(),
        Some(1)
    );
    env.ok(&["models", "unregister", "q"]);
    let out = env.run(&["models", "info", "q", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("model_not_found"));
}

#[test]
fn builtin_entries_are_listed() {
    let env = Env::new();
    let cat = env.json(&["models", "catalog"]);
    let ids: Vec<&str> = cat["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    for id in ["qwen-0.5b", "tinyllama", "phi3", "mistral", "smollm2-135m"] {
        assert!(ids.contains(&id), "{id} missing");
    }
    let smol = env.json(&["models", "info", "smollm2-135m"]);
    assert_eq!(smol["sha256"], llorch_catalog::builtin::SMOLLM2_SHA256);
    assert_eq!(smol["files"][0], "SmolLM2-135M-Instruct.Q4_1.gguf");
    assert_eq!(
        env.json(&["models", "list"])["models"],
        serde_json::json!([])
    );
}

#[test]
fn import_validates_gguf_and_safetensors() {
    let env = Env::new();
    let dir = env.dir.path();
    let good = dir.join("My-Model.Q8_0.gguf");
    std::fs::write(&good, tiny_gguf(64)).unwrap();
    let v = env.json(&["models", "import", good.to_str().unwrap()]);
    assert_eq!(v["id"], "my-model.q8_0");
    assert_eq!(v["architecture"], "llama");
    assert_eq!(v["local"]["source"], "import");
    assert_eq!(env.json(&["models", "verify", "my-model.q8_0"])["ok"], true);

    // Truncated GGUF: tensors reach past the end of the file.
    let mut short = tiny_gguf(64);
    short.truncate(short.len() - 10);
    let bad = dir.join("short.gguf");
    std::fs::write(&bad, short).unwrap();
    let out = env.run(&["models", "import", bad.to_str().unwrap(), "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("invalid_model"));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("truncated"),
        "{}",
        text(&out)
    );

    let junk = dir.join("junk.bin");
    std::fs::write(&junk, b"hello world").unwrap();
    let out = env.run(&["models", "import", junk.to_str().unwrap()]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a GGUF file"),
        "{}",
        text(&out)
    );

    let st = dir.join("st-model");
    std::fs::create_dir(&st).unwrap();
    std::fs::write(st.join("model.safetensors"), tiny_safetensors(16)).unwrap();
    std::fs::write(
        st.join("config.json"),
        r#"{"architectures":["Qwen2ForCausalLM"]}"#,
    )
    .unwrap();
    let out = env.run(&["models", "import", st.to_str().unwrap()]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("tokenizer.json is missing"),
        "{}",
        text(&out)
    );
    std::fs::write(st.join("tokenizer.json"), "{}").unwrap();
    let v = env.json(&["models", "import", st.to_str().unwrap(), "--id", "st"]);
    assert_eq!(v["format"], "safetensors");
    assert_eq!(v["architecture"], "qwen2");

    // Changing an imported file is caught by verify; rm leaves imported files in place.
    std::fs::write(&good, tiny_gguf(65)).unwrap();
    let out = env.run(&["models", "verify", "my-model.q8_0"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    env.ok(&["models", "rm", "my-model.q8_0"]);
    assert!(good.exists());
}

#[test]
fn import_of_the_test_model_matches_the_builtin_entry() {
    let Some(model) =
        llorch_testkit::require_smollm2("import_of_the_test_model_matches_the_builtin_entry")
    else {
        return;
    };
    let env = Env::new();
    let v = env.json(&["models", "import", model.to_str().unwrap()]);
    assert_eq!(v["id"], "smollm2-135m");
    assert_eq!(v["builtin"], true);
    assert_eq!(v["local"]["context_length"], 8192);
    // A different file under the built-in id is refused (its sha256 is pinned).
    let other = env.dir.path().join("other.gguf");
    std::fs::write(&other, tiny_gguf(8)).unwrap();
    let out = env.run(&[
        "models",
        "import",
        other.to_str().unwrap(),
        "--id",
        "smollm2-135m",
    ]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("differs from catalog entry"),
        "{}",
        text(&out)
    );
    // As a new user on a developer machine: RUST_BACKTRACE=1 and a file cut short. The error
    // is one human message, in `error.message` and on stderr, never backtrace frames.
    let bytes = std::fs::read(&model).unwrap();
    for (name, len) in [
        ("cut-header.gguf", 4096),
        ("cut-half.gguf", bytes.len() / 2),
    ] {
        let cut = env.dir.path().join(name);
        std::fs::write(&cut, &bytes[..len]).unwrap();
        let out = env
            .cmd()
            .args(["--json", "models", "import", cut.to_str().unwrap()])
            .env("RUST_BACKTRACE", "1")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(!msg.contains('\n'), "one line: {msg:?}");
        assert!(msg.contains(name), "{msg}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    }
}

#[test]
fn fit_estimates_weights_kv_cache_and_overhead_and_status_reports_the_machine() {
    let Some(model) = llorch_testkit::require_smollm2(
        "fit_estimates_weights_kv_cache_and_overhead_and_status_reports_the_machine",
    ) else {
        return;
    };
    let env = Env::new();
    env.json(&["models", "import", model.to_str().unwrap()]);
    let v = env.json(&[
        "models",
        "fit",
        "smollm2-135m",
        "--ctx",
        "2048",
        "--parallel",
        "4",
    ]);
    // SmolLM2-135M: 30 layers, 3 KV heads of 64 (from the GGUF header), F16 cache.
    assert_eq!(
        (
            v["layers"].as_u64(),
            v["kv_heads"].as_u64(),
            v["head_dim"].as_u64()
        ),
        (Some(30), Some(3), Some(64)),
        "{v}"
    );
    assert_eq!(v["kv_cache_bytes"], 2 * 30 * 3 * 64 * 2048 * 4 * 2);
    // The loaded size: Q4_1 blocks run unpacked on the engine's kernels (24 bytes per 32
    // weights, 20 in the file), F32 norms; within a third of the file either way.
    let size = std::fs::metadata(&model).unwrap().len();
    let weights = v["weights_bytes"].as_u64().unwrap();
    assert!(
        weights * 3 > size * 2 && weights * 3 < size * 4,
        "{weights} vs file {size}"
    );
    assert_eq!(v["rope_bytes"], 2048 * 64 * 4, "{v}");
    let total = weights
        + v["rope_bytes"].as_u64().unwrap()
        + v["kv_cache_bytes"].as_u64().unwrap()
        + v["prompt_cache_bytes"].as_u64().unwrap()
        + v["overhead_bytes"].as_u64().unwrap();
    assert_eq!(v["total_bytes"], total);
    assert_eq!(v["present"], true);
    assert_eq!(v["devices"][0]["device"], "cpu");
    assert!(v["devices"][0]["mem_total_bytes"].as_u64().unwrap() > 0);
    // Defaults: the model's context (8192) and 4 sequences; human output names every term.
    let d = env.json(&["models", "fit", "smollm2-135m"]);
    assert_eq!(
        (d["ctx"].as_u64(), d["parallel"].as_u64()),
        (Some(8192), Some(4))
    );
    let human = env.ok(&["models", "fit", "smollm2-135m", "--ctx", "2048"]);
    assert!(
        human.contains("kv cache") && human.contains("30 layers"),
        "{human}"
    );
    let out = env.run(&["models", "fit", "nope", "--json"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("model_not_found"));

    let st = env.json(&["status"]);
    let m = &st["machine"];
    assert!(m["cpu_cores"].as_u64().unwrap() >= 1, "{st}");
    assert!(m["mem_total_bytes"].as_u64().unwrap() >= m["mem_available_bytes"].as_u64().unwrap());
    assert!(m["gpus"].is_array());
    assert_eq!(st["models"][0]["id"], "smollm2-135m");
}
