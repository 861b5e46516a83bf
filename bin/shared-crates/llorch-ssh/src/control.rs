//! One persistent connection per host with OpenSSH connection sharing (`ControlMaster`).
//!
//! A master is started explicitly (`ssh -f -N -o ControlMaster=yes -o ControlPersist=N`) with
//! its stderr in a file, never as a side effect of a command whose output is captured (a
//! background master would hold the capture pipes open). Commands then pass
//! `ControlMaster=no -o ControlPath=...` ([`crate::ssh::option_args`]): they ride the master
//! when it runs and fall back to a fresh connection when it does not. Sockets live in a private
//! directory (mode 0700) that [`ControlDir`] removes on drop.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::ssh::{classify, is_ssh_line, option_args};
use crate::{SshError, SshHost};

/// A private directory for control sockets, removed (with its masters told to exit) on drop.
#[derive(Debug)]
pub struct ControlDir {
    path: PathBuf,
}

impl ControlDir {
    /// Create `$XDG_RUNTIME_DIR/llorch-ssh-<pid>-<n>` (else under the temp dir), mode 0700.
    pub fn create() -> std::io::Result<ControlDir> {
        use std::os::unix::fs::DirBuilderExt;
        let base = std::env::var_os("XDG_RUNTIME_DIR")
            .map(PathBuf::from)
            .filter(|p| p.is_dir())
            .unwrap_or_else(std::env::temp_dir);
        remove_stale(&base);
        let pid = std::process::id();
        let mut last = None;
        for n in 0..100u32 {
            let path = base.join(format!("llorch-ssh-{pid}-{n}"));
            match std::fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => return Ok(ControlDir { path }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| std::io::Error::other("no free control directory name")))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A short socket path for host `name` (unix socket paths are limited to ~100 bytes).
    pub fn socket_for(&self, name: &str) -> PathBuf {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        name.hash(&mut h);
        self.path.join(format!("{:016x}", h.finish()))
    }
}

impl Drop for ControlDir {
    fn drop(&mut self) {
        if let Ok(rd) = std::fs::read_dir(&self.path) {
            for e in rd.flatten() {
                let p = e.path();
                if p.extension().is_none() {
                    // A socket: ask its master to exit (best effort, bounded by ssh itself).
                    let _ = std::process::Command::new("ssh")
                        .args(["-o", &format!("ControlPath={}", p.display())])
                        .args(["-O", "exit", "llorch-control"])
                        .stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status();
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Remove `llorch-ssh-<pid>-<n>` directories left by processes that no longer run (killed
/// before they could clean up; their masters exit on their own after `ControlPersist`).
fn remove_stale(base: &Path) {
    let Ok(rd) = std::fs::read_dir(base) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("llorch-ssh-"))
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<i32>().ok())
        else {
            continue;
        };
        if pid > 0 && !pid_alive(pid) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

fn pid_alive(pid: i32) -> bool {
    // SAFETY: kill with signal 0 only checks whether the process exists; pid > 0.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// The argv after `ssh` that starts a background master for `host` (persisting `persist` idle).
fn master_args(host: &SshHost, socket: &Path, persist: Duration) -> Vec<String> {
    let plain = SshHost {
        control_path: None,
        ..host.clone()
    };
    let mut a = option_args(&plain);
    a.extend([
        "-o".into(),
        "ControlMaster=yes".into(),
        "-o".into(),
        format!("ControlPath={}", socket.display()),
        "-o".into(),
        format!("ControlPersist={}", persist.as_secs().max(1)),
        "-f".into(),
        "-N".into(),
        "--".into(),
        host.dest.target.clone(),
    ]);
    a
}

/// Whether the master behind `host.control_path` answers (`ssh -O check`).
pub async fn master_alive(host: &SshHost) -> bool {
    let Some(socket) = &host.control_path else {
        return false;
    };
    if !socket.exists() {
        return false;
    }
    let mut cmd = tokio::process::Command::new("ssh");
    cmd.args(["-o", &format!("ControlPath={}", socket.display())])
        .args(["-O", "check", "--", &host.dest.target])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    matches!(
        tokio::time::timeout(Duration::from_secs(5), cmd.status()).await,
        Ok(Ok(s)) if s.success()
    )
}

/// Make sure a master runs for `host` (no-op without a control path). Returns true when this
/// call started one. ssh failures (unreachable, auth) come back as [`SshError::Unreachable`].
pub async fn ensure_master(host: &SshHost, persist: Duration) -> Result<bool, SshError> {
    let Some(socket) = &host.control_path else {
        return Ok(false);
    };
    if master_alive(host).await {
        return Ok(false);
    }
    let _ = std::fs::remove_file(socket);
    let err_path = socket.with_extension("err");
    let err_file = std::fs::File::create(&err_path).map_err(|source| SshError::Spawn {
        host: host.label(),
        source,
    })?;
    let mut cmd = tokio::process::Command::new("ssh");
    cmd.args(master_args(host, socket, persist))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err_file)
        .kill_on_drop(true);
    let limit = Duration::from_secs(host.connect_timeout_s + 5);
    let status = match tokio::time::timeout(limit, cmd.status()).await {
        Ok(r) => r.map_err(|source| SshError::Spawn {
            host: host.label(),
            source,
        })?,
        Err(_) => {
            return Err(SshError::Timeout {
                host: host.label(),
                secs: limit.as_secs(),
            })
        }
    };
    let text = std::fs::read_to_string(&err_path).unwrap_or_default();
    if status.success() {
        tracing::debug!(host = %host.name, socket = %socket.display(), "ssh master started");
        return Ok(true);
    }
    let held: Vec<String> = text
        .lines()
        .filter(|l| is_ssh_line(l))
        .map(str::to_string)
        .collect();
    let cause = if held.is_empty() {
        format!(
            "ssh master exited with {status}: {}",
            text.lines().last().unwrap_or("no message")
        )
    } else {
        classify(&held, host)
    };
    Err(SshError::Unreachable {
        host: host.label(),
        cause,
    })
}

/// Ask the master of `host` to exit (best effort).
pub async fn stop_master(host: &SshHost) {
    let Some(socket) = &host.control_path else {
        return;
    };
    let mut cmd = tokio::process::Command::new("ssh");
    cmd.args(["-o", &format!("ControlPath={}", socket.display())])
        .args(["-O", "exit", "--", &host.dest.target])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), cmd.status()).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Destination;

    #[test]
    fn master_argv_and_private_dir() {
        let dir = ControlDir::create().unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        let mut host = SshHost::new("pool a", Destination::new("h"), 3);
        host.control_path = Some(dir.socket_for("pool a"));
        let a = master_args(
            &host,
            host.control_path.as_ref().unwrap(),
            Duration::from_secs(60),
        );
        let joined = a.join(" ");
        assert!(joined.contains("ControlMaster=yes") && joined.contains("ControlPersist=60"));
        assert!(!joined.contains("ControlMaster=no"), "{joined}");
        assert_eq!(&a[a.len() - 4..], ["-f", "-N", "--", "h"]);
        let cmd = crate::ssh_args(&host, "true").join(" ");
        assert!(cmd.contains("ControlMaster=no"), "{cmd}");
        let p = dir.path().to_path_buf();
        drop(dir);
        assert!(!p.exists());
        // A directory of a process that is gone is removed by the next create().
        let base = p.parent().unwrap().to_path_buf();
        let stale = base.join(format!("llorch-ssh-{}-7", i32::MAX - 1));
        std::fs::create_dir_all(&stale).unwrap();
        let d2 = ControlDir::create().unwrap();
        assert!(!stale.exists());
        drop(d2);
    }
}
