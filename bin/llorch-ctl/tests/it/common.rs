//! Test harness: a real OpenSSH server on a loopback port with throwaway keys, and helpers to
//! run the built `llorch` against it with a private config file.
#![allow(dead_code)]

use std::io::Read;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use llorch_testkit::{free_port, repo_root, skip_or_fail};

pub const SSHD: &str = "/usr/sbin/sshd";

/// The `llorch` binary under test.
pub fn llorch_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_llorch"))
}

fn run_ok(cmd: &mut Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn openssh_present() -> bool {
    let runs = |prog: &str, arg: &str| {
        Command::new(prog)
            .arg(arg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    };
    Path::new(SSHD).is_file() && runs("ssh", "-V") && runs("ssh-keygen", "-?")
}

/// Make sure sshd, ssh and ssh-keygen exist: run `scripts/ci-sshd.sh install` when one is
/// missing. `None` (after skip-or-fail) when they are still missing.
pub fn ensure_sshd(test: &str) -> Option<()> {
    if openssh_present() {
        return Some(());
    }
    let script = repo_root().join("scripts/ci-sshd.sh");
    let out = Command::new("bash").arg(&script).arg("install").output();
    if openssh_present() {
        return Some(());
    }
    let why = match out {
        Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_string(),
        Err(e) => e.to_string(),
    };
    skip_or_fail(
        test,
        &format!("OpenSSH ({SSHD}, ssh, ssh-keygen) missing and `scripts/ci-sshd.sh install` failed: {why}"),
    )
}

/// A running throwaway sshd; killed on drop.
pub struct Sshd {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub user: String,
    child: Child,
}

impl Sshd {
    /// Start sshd on a free loopback port, or skip-or-fail when sshd is unavailable.
    pub fn start(test: &str) -> Option<Sshd> {
        ensure_sshd(test)?;
        let dir = tempfile::Builder::new()
            .prefix("llorch-sshd-")
            .tempdir()
            .unwrap();
        let d = dir.path();
        for (name, comment) in [
            ("host_ed25519", "test-host"),
            ("id_ed25519", "test-user"),
            ("id_stranger", "stranger"),
        ] {
            run_ok(
                Command::new("ssh-keygen")
                    .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
                    .arg(d.join(name)),
                "ssh-keygen",
            );
        }
        std::fs::copy(d.join("id_ed25519.pub"), d.join("authorized_keys")).unwrap();
        let user = String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout)
            .unwrap()
            .trim()
            .to_string();
        let uid = String::from_utf8(Command::new("id").arg("-u").output().unwrap().stdout)
            .unwrap()
            .trim()
            .to_string();
        if uid == "0" {
            std::fs::create_dir_all("/run/sshd").unwrap();
        }
        let host_pub = std::fs::read_to_string(d.join("host_ed25519.pub")).unwrap();
        let key: Vec<&str> = host_pub.split_whitespace().take(2).collect();
        let mut last_log = String::new();
        // A free port can be taken by another test before sshd binds it: try a few.
        for _ in 0..3 {
            let port = free_port();
            let known = format!("[127.0.0.1]:{port} {}\n", key.join(" "));
            std::fs::write(d.join("known_hosts"), known).unwrap();
            std::fs::write(d.join("sshd_config"), sshd_config(d, port, &user)).unwrap();
            let log = std::fs::File::create(d.join("sshd.log")).unwrap();
            let mut child = Command::new(SSHD)
                .arg("-D")
                .arg("-e")
                .arg("-f")
                .arg(d.join("sshd_config"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("start {SSHD}: {e}"));
            match wait_banner(&mut child, port) {
                Ok(()) => {
                    return Some(Sshd {
                        dir,
                        port,
                        user,
                        child,
                    })
                }
                Err(why) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let log = std::fs::read_to_string(d.join("sshd.log")).unwrap_or_default();
                    last_log = format!("{why}\n{log}");
                }
            }
        }
        panic!("sshd did not start: {last_log}");
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path("sshd.log")).unwrap_or_default()
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

fn sshd_config(d: &Path, port: u16, user: &str) -> String {
    let d = d.display();
    format!(
        "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_ed25519\nPidFile {d}/sshd.pid\n\
         AuthorizedKeysFile {d}/authorized_keys\nAllowUsers {user}\nPubkeyAuthentication yes\n\
         PasswordAuthentication no\nKbdInteractiveAuthentication no\n\
         PermitRootLogin prohibit-password\nUsePAM no\nStrictModes no\nPrintMotd no\nLogLevel VERBOSE\n"
    )
}

/// Wait for the `SSH-` greeting; `Err` when sshd exits or stays silent.
fn wait_banner(child: &mut Child, port: u16) -> Result<(), String> {
    let start = Instant::now();
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            return Err(format!("sshd exited ({st})"));
        }
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let mut buf = [0u8; 4];
            if s.read_exact(&mut buf).is_ok() && &buf == b"SSH-" {
                return Ok(());
            }
        }
        if start.elapsed() > Duration::from_secs(15) {
            return Err("sshd not answering after 15 s".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
