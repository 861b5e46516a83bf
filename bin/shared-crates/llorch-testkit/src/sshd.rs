//! A throwaway OpenSSH server on a loopback port, running as the current user with its own
//! host key, user key, `authorized_keys` and `known_hosts` (the llorch and fleet tests reach
//! "remote" pools through it). `scripts/ci-sshd.sh` does the same from the shell.

use std::io::Read;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{free_port, repo_root, skip_or_fail};

pub const SSHD: &str = "/usr/sbin/sshd";

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

    /// The ssh options that reach this server: `(port, user, identity file, -o options)`;
    /// `-F /dev/null` is expected as the client config.
    pub fn client_options(&self) -> Vec<String> {
        vec![
            format!("UserKnownHostsFile={}", self.path("known_hosts").display()),
            "StrictHostKeyChecking=yes".into(),
            "GlobalKnownHostsFile=/dev/null".into(),
        ]
    }

    /// Stop the server (the listener and every session it forked, so existing connections
    /// drop too). [`Sshd::restart`] brings it back on the same port.
    pub fn stop(&mut self) {
        // sshd forks one process per connection: kill those before the listener, while they
        // are still its descendants, so open connections drop too. The users' shells are left
        // alone: they see their connection close and exit through their own cleanup (a shell
        // killed mid-startup can leave rc-file locks behind, e.g. pyenv's rehash lock).
        for p in descendants(self.child.id()) {
            let comm = std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default();
            if comm.trim() == "sshd" || comm.trim().starts_with("sshd-") {
                let _ = Command::new("kill").args(["-9", &p.to_string()]).status();
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Start again on the same port, keys and config after [`Sshd::stop`].
    pub fn restart(&mut self) {
        let log = std::fs::File::create(self.path("sshd.log")).unwrap();
        let mut child = Command::new(SSHD)
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(self.path("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {SSHD}: {e}"));
        wait_banner(&mut child, self.port).unwrap_or_else(|e| panic!("sshd restart: {e}"));
        self.child = child;
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
        self.stop();
    }
}

/// Every descendant of `pid` (children first found, then theirs), from `/proc/*/stat`.
fn descendants(pid: u32) -> Vec<u32> {
    let mut parent_of = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
            // `pid (comm) state ppid ...`; comm may contain spaces and parentheses.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u32>().ok());
            if let Some(pp) = ppid {
                parent_of.push((p, pp));
            }
        }
    }
    let mut out = Vec::new();
    let mut frontier = vec![pid];
    while let Some(cur) = frontier.pop() {
        for &(p, pp) in &parent_of {
            if pp == cur && !out.contains(&p) {
                out.push(p);
                frontier.push(p);
            }
        }
    }
    out
}
