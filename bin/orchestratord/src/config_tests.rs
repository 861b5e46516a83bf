//! Unit tests of the configuration: merging flags and file, validation, damaged files.

use super::*;

#[test]
fn flags_beat_file_beat_defaults() {
    let file: FileConfig = toml::from_str(
        "queue_capacity = 7\nplacement = \"round-robin\"\n[[workers]]\nurl = \"http://a:1\"\n",
    )
    .unwrap();
    let args = Args {
        queue_capacity: Some(9),
        ..Default::default()
    };
    let cfg = Config::merge(args, file).unwrap();
    assert_eq!(cfg.queue_capacity, 9);
    assert_eq!(cfg.placement, Placement::RoundRobin);
    assert_eq!(cfg.queue_policy, QueuePolicy::Reject);
    assert_eq!(
        cfg.workers,
        vec![StaticWorker {
            url: "http://a:1".into(),
            api_token: None,
            pool: None,
        }]
    );
    assert_eq!(cfg.heartbeat_timeout_ms, 15000);
}

#[test]
fn public_bind_needs_a_token() {
    let args = Args {
        bind: Some("0.0.0.0:8080".parse().unwrap()),
        ..Default::default()
    };
    let err = Config::merge(args, FileConfig::default()).unwrap_err();
    assert!(err.to_string().contains("LLORCH_API_TOKEN"), "{err}");
    let args = Args {
        bind: Some("0.0.0.0:8080".parse().unwrap()),
        api_token: Some("secret-token".into()),
        ..Default::default()
    };
    assert!(Config::merge(args, FileConfig::default()).is_ok());
}

#[test]
fn unknown_file_keys_and_bad_ranges_are_rejected() {
    assert!(toml::from_str::<FileConfig>("queue_capacty = 3").is_err());
    let args = Args {
        queue_capacity: Some(0),
        ..Default::default()
    };
    assert!(Config::merge(args, FileConfig::default()).is_err());
}

/// A config file using every section.
const FULL: &str = r#"bind = "127.0.0.1:8080"
api_tokens = ["tok-0123456789abcdef"]
queue_capacity = 50
queue_policy = "drop-lru"
placement = "round-robin"
max_attempts = 3
heartbeat_interval_ms = 1000
persist_requests = true

[limits]
max_body_bytes = 65536
max_connections = 64
idle_timeout_ms = 5000

[[workers]]
url = "http://127.0.0.1:8001"
api_token = "tok-0123456789abcdef"

[[pools]]
name = "mac"
ssh = "mac.home.arpa"
max_memory_bytes = 8000000000

[[models]]
id = "smollm2-135m"
min_replicas = 1
max_replicas = 2
backend = "cpu"
pools = ["mac"]

[fleet]
probe_interval_ms = 2000
"#;

/// Fuzz-style (bounded: 2000 seeded cases): the full config file with random edits (cut,
/// doubled lines, stray syntax, huge and negative numbers) parses and validates, or is
/// refused with a message; never a panic.
#[test]
fn damaged_config_files_load_or_are_refused() {
    let file: FileConfig = toml::from_str(FULL).unwrap();
    Config::merge(Args::default(), file).unwrap();
    let mut rng = llorch_testkit::FuzzRng::new(43);
    let (mut loaded, mut refused) = (0, 0);
    for case in 0..2000 {
        let text = rng.mutate_text(FULL);
        let result = toml::from_str::<FileConfig>(&text)
            .map_err(|e| e.to_string())
            .and_then(|f| Config::merge(Args::default(), f).map_err(|e| e.to_string()));
        match result {
            Ok(_) => loaded += 1,
            Err(e) => {
                assert!(!e.is_empty(), "case {case}: {text}");
                refused += 1;
            }
        }
    }
    eprintln!("damaged_config_files_load_or_are_refused: {loaded} loaded, {refused} refused");
    assert!(
        loaded > 0 && refused > 0,
        "{loaded} loaded, {refused} refused"
    );
}

/// Every flag of the synopsis in `.specs/orchestratord.md` exists.
#[test]
fn spec_synopsis_names_real_flags() {
    use clap::CommandFactory;
    let spec = include_str!("../../../.specs/orchestratord.md");
    let flags = llorch_testkit::doc_flags(spec, "orchestratord");
    assert!(flags.len() >= 20, "{flags:?}");
    let cmd = Args::command();
    for f in flags {
        assert!(
            cmd.get_arguments()
                .any(|a| a.get_long() == f.strip_prefix("--")),
            "{f} is in the spec's synopsis but not a flag"
        );
    }
}

#[test]
fn policy_section_flag_and_limits() {
    let file: FileConfig = toml::from_str(
        "[[workers]]\nurl = \"http://a:1\"\npool = \"gpu-box\"\n[policy]\nscript = \"p.rhai\"\ntimeout_ms = 20\n",
    )
    .unwrap();
    let cfg = Config::merge(Args::default(), file).unwrap();
    assert_eq!(cfg.workers[0].pool.as_deref(), Some("gpu-box"));
    assert_eq!(cfg.policy.script, Some(PathBuf::from("p.rhai")));
    assert_eq!(
        (cfg.policy.max_operations, cfg.policy.timeout_ms),
        (100_000, 20)
    );
    let args = Args {
        policy: Some("flag.rhai".into()),
        ..Default::default()
    };
    let file: FileConfig = toml::from_str("[policy]\nscript = \"p.rhai\"\n").unwrap();
    let cfg = Config::merge(args, file).unwrap();
    assert_eq!(cfg.policy.script, Some(PathBuf::from("flag.rhai")));
    let file: FileConfig = toml::from_str("[policy]\ntimeout_ms = 0\n").unwrap();
    let err = Config::merge(Args::default(), file).unwrap_err();
    assert!(err.to_string().contains("policy.timeout_ms"), "{err}");
    assert!(toml::from_str::<FileConfig>("[policy]\nscrpt = \"x\"\n").is_err());
}

#[test]
fn static_workers_may_carry_their_token() {
    let file: FileConfig = toml::from_str(
        "persist_requests = false\n[[workers]]\nurl = \"http://a:1\"\napi_token = \"tok-0123456789abcdef\"\n",
    )
    .unwrap();
    let cfg = Config::merge(Args::default(), file).unwrap();
    assert!(!cfg.persist_requests);
    let t = cfg.workers[0].api_token.as_ref().unwrap();
    assert_eq!(t.expose(), "tok-0123456789abcdef");
    assert!(!format!("{cfg:?}").contains("tok-0123"));
}
