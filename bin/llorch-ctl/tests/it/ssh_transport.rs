//! `llorch pool` over a real sshd: arguments arrive verbatim, nothing is executed, exit codes
//! pass through, output streams live, and ssh failures give one clear line.
//!
//! The remote "pool" here is a tiny script that prints the arguments it received (NUL-separated),
//! so the transport is checked byte for byte; `pool_e2e.rs` runs the real llorch-pool.

use crate::common;

use std::io::Read;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{run, write_script, Sshd};

const ARGV_SCRIPT: &str = r#"case "$2" in
  --exit) echo "failing with $3 as asked" >&2; exit "$3" ;;
  --slow) echo first; sleep 2; echo second; exit 0 ;;
esac
for a in "$@"; do printf '%s\0' "$a"; done"#;

/// sshd plus a profile `argv` whose llorch-pool is the argument printer.
fn with_argv_host(test: &str) -> Option<Sshd> {
    let sshd = Sshd::start(test)?;
    let script = sshd.path("argv.sh");
    write_script(&script, ARGV_SCRIPT);
    sshd.add_host("argv", &["--pool-bin", script.to_str().unwrap()]);
    Some(sshd)
}

#[test]
fn hostile_arguments_arrive_verbatim_and_nothing_runs() {
    let Some(sshd) = with_argv_host("hostile_arguments_arrive_verbatim_and_nothing_runs") else {
        return;
    };
    let d = sshd.dir.path().display().to_string();
    let evil = vec![
        format!("'; touch {d}/pwned1 #"),
        format!("$(touch {d}/pwned2)"),
        format!("`touch {d}/pwned3`"),
        format!("x; touch {d}/pwned4"),
        format!("x\ntouch {d}/pwned5"),
        format!("x && touch {d}/pwned6 || touch {d}/pwned6"),
        "a b\tc  d".to_string(),
        "*".into(),
        "~".into(),
        "$HOME".into(),
        "\"dq\" \\ 'sq'".into(),
        String::new(),
        "-rf".into(),
        "ünïcødé 🙂".into(),
    ];
    let mut args = vec!["pool", "models", "info"];
    args.extend(evil.iter().map(String::as_str));
    args.extend(["--host", "argv"]);
    let r = run(sshd.llorch(&args));
    assert_eq!(r.code, Some(0), "stderr: {}", r.stderr);
    let got: Vec<&str> = r.stdout.split_terminator('\0').collect();
    let mut want = vec!["models", "info"];
    want.extend(evil.iter().map(String::as_str));
    assert_eq!(got, want);
    for i in 1..=6 {
        assert!(
            !sshd.path(&format!("pwned{i}")).exists(),
            "pwned{i} was created: injection!"
        );
    }
}

#[test]
fn host_flag_works_anywhere_and_from_env_and_default() {
    let Some(sshd) = with_argv_host("host_flag_works_anywhere_and_from_env_and_default") else {
        return;
    };
    for args in [
        vec!["pool", "--host", "argv", "worker", "list", "--json"],
        vec!["pool", "worker", "--host", "argv", "list", "--json"],
        vec!["pool", "worker", "list", "--host=argv", "--json"],
    ] {
        let r = run(sshd.llorch(&args));
        assert_eq!(r.code, Some(0), "{args:?}: {}", r.stderr);
        assert_eq!(r.stdout, "worker\0list\0--json\0", "{args:?}");
    }
    // After the first `--` (dropped), `--host` belongs to llorch-pool (e.g. `worker spawn --host ADDR`).
    let r = run(sshd.llorch(&[
        "pool", "worker", "spawn", "--host", "argv", "--", "--host", "0.0.0.0", "--",
    ]));
    assert_eq!(
        r.stdout,
        ["worker", "spawn", "--host", "0.0.0.0", "--", ""].join("\0")
    );
    let mut cmd = sshd.llorch(&["pool", "status", "--json"]);
    cmd.env("LLORCH_REMOTE_HOST", "argv");
    let r = run(cmd);
    assert_eq!(
        (r.code, r.stdout.as_str()),
        (Some(0), "status\0--json\0"),
        "{}",
        r.stderr
    );
    // `--default` makes it the config's default host; `--host local` overrides it.
    sshd.add_host(
        "argv",
        &[
            "--pool-bin",
            sshd.path("argv.sh").to_str().unwrap(),
            "--default",
        ],
    );
    let r = run(sshd.llorch(&["pool", "backends", "list"]));
    assert_eq!(r.stdout, "backends\0list\0", "{}", r.stderr);
    let local = sshd.path("local.sh");
    write_script(&local, "echo \"local: $*\"");
    let cfg = std::fs::read_to_string(sshd.config()).unwrap();
    std::fs::write(
        sshd.config(),
        format!("local_pool_bin = {:?}\n{cfg}", local.display().to_string()),
    )
    .unwrap();
    let r = run(sshd.llorch(&["pool", "backends", "list", "--host", "local"]));
    assert_eq!(r.stdout, "local: backends list\n", "{}", r.stderr);
}

#[test]
fn remote_exit_code_becomes_ours() {
    let Some(sshd) = with_argv_host("remote_exit_code_becomes_ours") else {
        return;
    };
    for code in [1, 42, 255] {
        let r = run(sshd.llorch(&[
            "pool",
            "models",
            "--exit",
            &code.to_string(),
            "--host",
            "argv",
        ]));
        assert_eq!(r.code, Some(code), "{}", r.stderr);
        assert!(
            r.stderr.contains(&format!("failing with {code} as asked")),
            "{}",
            r.stderr
        );
        assert!(
            !r.stderr.contains("llorch: host"),
            "a remote 255 is not an ssh failure: {}",
            r.stderr
        );
    }
}

#[test]
fn output_streams_while_the_remote_command_runs() {
    let Some(sshd) = with_argv_host("output_streams_while_the_remote_command_runs") else {
        return;
    };
    let start = Instant::now();
    let mut child = sshd
        .llorch(&["pool", "models", "--slow", "--host", "argv"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut buf = [0u8; 6];
    out.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"first\n");
    assert!(
        child.try_wait().unwrap().is_none(),
        "first line must arrive before the command ends"
    );
    let first_at = start.elapsed();
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "second\n");
    assert!(child.wait().unwrap().success());
    assert!(
        start.elapsed() - first_at >= Duration::from_millis(1500),
        "second line came 2 s later"
    );
}

fn assert_one_line_error(r: &common::Run, host: &str, cause: &str) {
    assert_eq!(r.code, Some(255), "stderr: {}", r.stderr);
    let lines: Vec<&str> = r.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line expected: {:?}", r.stderr);
    assert!(
        lines[0].starts_with(&format!("llorch: host '{host}'")),
        "{}",
        lines[0]
    );
    assert!(lines[0].contains(cause), "{:?} lacks {cause:?}", lines[0]);
}

#[test]
fn closed_port_fails_fast_with_one_line() {
    let Some(sshd) = Sshd::start("closed_port_fails_fast_with_one_line") else {
        return;
    };
    let port = "1"; // tcpmux: nothing listens there on loopback
    sshd.add_host("closed", &[]);
    let cfg = std::fs::read_to_string(sshd.config()).unwrap();
    std::fs::write(
        sshd.config(),
        cfg.replace(&format!("port = {}", sshd.port), &format!("port = {port}")),
    )
    .unwrap();
    let r = run(sshd.llorch(&[
        "--connect-timeout",
        "3",
        "pool",
        "status",
        "--host",
        "closed",
    ]));
    assert_one_line_error(&r, "closed", "connection refused");
    assert!(r.elapsed < Duration::from_secs(10), "took {:?}", r.elapsed);
}

#[test]
fn silent_server_fails_within_the_connect_timeout() {
    let Some(sshd) = Sshd::start("silent_server_fails_within_the_connect_timeout") else {
        return;
    };
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let _hold = std::thread::spawn(move || {
        let mut conns = Vec::new();
        for c in listener.incoming() {
            conns.push(c);
        }
    });
    sshd.add_host("silent", &[]);
    let cfg = std::fs::read_to_string(sshd.config()).unwrap();
    std::fs::write(
        sshd.config(),
        cfg.replace(&format!("port = {}", sshd.port), &format!("port = {port}")),
    )
    .unwrap();
    let r = run(sshd.llorch(&[
        "pool",
        "--connect-timeout",
        "2",
        "status",
        "--host",
        "silent",
    ]));
    let elapsed = r.elapsed;
    assert_one_line_error(&r, "silent", "2 s");
    assert!(
        elapsed >= Duration::from_millis(1500) && elapsed < Duration::from_secs(20),
        "took {elapsed:?}"
    );
}

#[test]
fn auth_and_host_key_failures_are_named() {
    let Some(sshd) = with_argv_host("auth_and_host_key_failures_are_named") else {
        return;
    };
    let stranger = sshd.path("id_stranger");
    sshd.add_host("stranger", &["--identity", stranger.to_str().unwrap()]);
    let r = run(sshd.llorch(&["pool", "status", "--host", "stranger"]));
    assert_one_line_error(&r, "stranger", "authentication failed");

    let empty = sshd.path("empty_known_hosts");
    std::fs::write(&empty, "").unwrap();
    sshd.add_host(
        "unknown-key",
        &[
            "--ssh-option",
            &format!("UserKnownHostsFile={}", empty.display()),
        ],
    );
    let r = run(sshd.llorch(&["pool", "status", "--host", "unknown-key"]));
    assert_one_line_error(&r, "unknown-key", "host key unknown or changed");
}

#[test]
fn hosts_list_rm_and_check_report_missing_pieces() {
    let Some(sshd) = with_argv_host("hosts_list_rm_and_check_report_missing_pieces") else {
        return;
    };
    sshd.add_host(
        "nopool",
        &[
            "--pool-bin",
            "/nonexistent/llorch-pool",
            "--repo",
            "~/no/such/checkout",
        ],
    );
    let r = run(sshd.llorch(&["hosts", "list"]));
    assert!(
        r.stdout.contains("argv") && r.stdout.contains("nopool"),
        "{}",
        r.stdout
    );
    let r = run(sshd.llorch(&["hosts", "list", "--json"]));
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["hosts"]["nopool"]["pool_bin"], "/nonexistent/llorch-pool");

    let r = run(sshd.llorch(&["hosts", "check", "nopool", "--json"]));
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let rep = &v[0];
    assert_eq!(rep["reachable"], true);
    assert!(rep["latency_ms"].as_f64().unwrap() > 0.0);
    let missing: Vec<&str> = rep["missing"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    assert!(
        missing.contains(&"llorch-pool") && missing.iter().any(|m| m.starts_with("repo ")),
        "{missing:?}"
    );
    let r = run(sshd.llorch(&["hosts", "check", "nopool"]));
    assert!(
        r.stdout.contains("NOT READY") && r.stdout.contains("ms round trip"),
        "{}",
        r.stdout
    );
    assert!(r.stderr.contains("1 of 1 hosts not ready"), "{}", r.stderr);

    let r = run(sshd.llorch(&["hosts", "rm", "nopool"]));
    assert_eq!(r.code, Some(0));
    let r = run(sshd.llorch(&["hosts", "rm", "nopool"]));
    assert_eq!(r.code, Some(2), "removing twice is a usage error");
}
