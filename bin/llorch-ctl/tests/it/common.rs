//! Test harness: a real OpenSSH server on a loopback port with throwaway keys, and helpers to
//! run the built `llorch` against it with a private config file.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The `llorch` binary under test.
pub fn llorch_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_llorch"))
}

/// The shared throwaway sshd (`llorch_testkit::sshd`) plus llorch helpers.
pub struct Sshd(pub llorch_testkit::sshd::Sshd);

impl std::ops::Deref for Sshd {
    type Target = llorch_testkit::sshd::Sshd;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Sshd {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Sshd {
    /// Start sshd on a free loopback port, or skip-or-fail when sshd is unavailable.
    pub fn start(test: &str) -> Option<Sshd> {
        llorch_testkit::sshd::Sshd::start(test).map(Sshd)
    }

    /// The llorch config file this harness uses.
    pub fn config(&self) -> PathBuf {
        self.path("llorch.toml")
    }

    /// `llorch hosts add NAME 127.0.0.1 ...` with this server's port, key and known_hosts,
    /// plus `extra` options (e.g. `--pool-bin`, `--env`).
    pub fn add_host(&self, name: &str, extra: &[&str]) {
        let port = self.port.to_string();
        let identity = self.path("id_ed25519");
        let known = format!("UserKnownHostsFile={}", self.path("known_hosts").display());
        let mut args: Vec<String> = [
            "hosts",
            "add",
            name,
            "127.0.0.1",
            "--port",
            &port,
            "--user",
            &self.user,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if !extra.contains(&"--identity") {
            args.extend(["--identity".into(), identity.display().to_string()]);
        }
        args.extend(["--ssh-config".into(), "/dev/null".into()]);
        if !extra.iter().any(|e| e.starts_with("UserKnownHostsFile=")) {
            args.extend(["--ssh-option".into(), known]);
        }
        args.extend(["--ssh-option".into(), "StrictHostKeyChecking=yes".into()]);
        args.extend([
            "--ssh-option".into(),
            "GlobalKnownHostsFile=/dev/null".into(),
        ]);
        args.extend(extra.iter().map(|s| s.to_string()));
        let out = self
            .llorch(&args.iter().map(String::as_str).collect::<Vec<_>>())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "hosts add: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A `llorch` command using this harness's config and no ambient host settings.
    pub fn llorch(&self, args: &[&str]) -> Command {
        llorch_with_config(&self.config(), args)
    }
}

/// `llorch ARGS` with `LLORCH_CONFIG` set and `LLORCH_REMOTE_HOST` cleared.
pub fn llorch_with_config(config: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(llorch_bin());
    cmd.args(args)
        .env("LLORCH_CONFIG", config)
        .env_remove("LLORCH_REMOTE_HOST")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    cmd
}

/// Output with both streams as text, for assertions.
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

pub fn run(mut cmd: Command) -> Run {
    let start = Instant::now();
    let out: Output = cmd.output().expect("run llorch");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        elapsed: start.elapsed(),
    }
}

/// Write an executable shell script.
pub fn write_script(path: &Path, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}
