//! Running a command on a host through the system `ssh` (so `~/.ssh/config`, agents and
//! ProxyJump keep working).
//!
//! ssh never prompts (`BatchMode=yes`), gives up after the connect timeout, and gets no stdin.
//! Remote stdout is inherited byte for byte (so `--json` stays parseable); remote stderr is
//! forwarded live, except lines that look like ssh's own complaints: those are held back, and if
//! ssh then exits 255 they become one error line naming the host and the cause.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{SshError, SshHost, SSH_FAILED};

/// Exit code reported when the remote command was killed by a signal we cannot name.
const EXIT_INTERRUPTED: i32 = 130;

/// Output of a remote command run with [`run_captured`] or [`run_captured_async`].
#[derive(Debug)]
pub struct Captured {
    /// The remote command's exit code (never 255 from ssh itself: that is an [`SshError`]).
    pub code: i32,
    /// Everything it printed on stdout.
    pub stdout: String,
    /// Everything it printed on stderr.
    pub stderr: String,
    /// Wall time of the whole ssh run.
    pub elapsed: Duration,
}

/// The arguments after `ssh` for running `remote_cmd` on `remote`.
pub fn ssh_args(remote: &SshHost, remote_cmd: &str) -> Vec<String> {
    let mut a = option_args(remote);
    a.push("--".into());
    a.push(remote.dest.target.clone());
    a.push(remote_cmd.to_string());
    a
}

/// Every ssh option for `remote` (no destination, no command).
pub fn option_args(remote: &SshHost) -> Vec<String> {
    let p = &remote.dest;
    let mut a: Vec<String> = Vec::new();
    if let Some(cfg) = &p.ssh_config {
        a.extend(["-F".into(), cfg.clone()]);
    }
    a.extend(["-T".into(), "-o".into(), "BatchMode=yes".into()]);
    a.extend([
        "-o".into(),
        format!("ConnectTimeout={}", remote.connect_timeout_s),
    ]);
    a.extend([
        "-o".into(),
        "ServerAliveInterval=15".into(),
        "-o".into(),
        "ServerAliveCountMax=3".into(),
    ]);
    a.extend(["-o".into(), "LogLevel=ERROR".into()]);
    if let Some(port) = p.port {
        a.extend(["-p".into(), port.to_string()]);
    }
    if let Some(user) = &p.user {
        a.extend(["-l".into(), user.clone()]);
    }
    if let Some(id) = &p.identity {
        a.extend([
            "-i".into(),
            expand_local_tilde(id),
            "-o".into(),
            "IdentitiesOnly=yes".into(),
        ]);
    }
    for o in &p.ssh_options {
        a.extend(["-o".into(), o.clone()]);
    }
    if let Some(path) = &remote.control_path {
        // Use the master when it runs; otherwise connect directly (never become one here:
        // a master started by a client whose output we capture would hold the pipes open).
        a.extend([
            "-o".into(),
            "ControlMaster=no".into(),
            "-o".into(),
            format!("ControlPath={}", path.display()),
        ]);
    }
    a
}

/// A child's exit status as an exit code (128 + signal when it was killed).
pub fn exit_code_of(status: std::process::ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => c.clamp(0, 255) as u8,
        (None, Some(sig)) => (128 + sig).clamp(0, 255) as u8,
        (None, None) => 1,
    }
}

fn expand_local_tilde(path: &str) -> String {
    match (path.strip_prefix("~/"), std::env::var("HOME")) {
        (Some(rest), Ok(home)) => format!("{home}/{rest}"),
        _ => path.to_string(),
    }
}

fn ssh_command(remote: &SshHost, remote_cmd: &str) -> Command {
    let args = ssh_args(remote, remote_cmd);
    tracing::debug!(host = %remote.name, ?args, "ssh");
    let mut cmd = Command::new("ssh");
    cmd.args(args).stdin(Stdio::null());
    cmd
}

/// Run with stdout inherited and stderr filtered; returns the remote exit code.
pub fn run_streaming(remote: &SshHost, remote_cmd: &str) -> Result<u8, SshError> {
    let mut child = ssh_command(remote, remote_cmd)
        .stdout(Stdio::inherit())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| SshError::Spawn {
            host: remote.label(),
            source,
        })?;
    let stderr = child.stderr.take().expect("piped stderr");
    let forwarder = std::thread::spawn(move || forward_stderr(stderr));
    let status = child.wait().map_err(|source| SshError::Spawn {
        host: remote.label(),
        source,
    })?;
    let held = forwarder.join().unwrap_or_default();
    let Some(code) = status.code() else {
        flush_lines(&held);
        return Ok(exit_code_of(status));
    };
    if code == SSH_FAILED && !held.is_empty() {
        return Err(SshError::Unreachable {
            host: remote.label(),
            cause: classify(&held, remote),
        });
    }
    flush_lines(&held);
    Ok(code.clamp(0, 255) as u8)
}

/// Run and collect stdout/stderr (for probes); ssh failures become [`SshError::Unreachable`].
pub fn run_captured(remote: &SshHost, remote_cmd: &str) -> Result<Captured, SshError> {
    let start = Instant::now();
    let out = ssh_command(remote, remote_cmd)
        .output()
        .map_err(|source| SshError::Spawn {
            host: remote.label(),
            source,
        })?;
    captured(remote, out, start.elapsed())
}

/// [`run_captured`] for async callers, bounded by `timeout` (ssh is killed past it).
pub async fn run_captured_async(
    remote: &SshHost,
    remote_cmd: &str,
    timeout: Duration,
) -> Result<Captured, SshError> {
    let start = Instant::now();
    let mut cmd = tokio::process::Command::from(ssh_command(remote, remote_cmd));
    cmd.kill_on_drop(true);
    let out = match tokio::time::timeout(timeout, cmd.output()).await {
        Ok(r) => r.map_err(|source| SshError::Spawn {
            host: remote.label(),
            source,
        })?,
        Err(_) => {
            return Err(SshError::Timeout {
                host: remote.label(),
                secs: timeout.as_secs(),
            })
        }
    };
    captured(remote, out, start.elapsed())
}

fn captured(
    remote: &SshHost,
    out: std::process::Output,
    elapsed: Duration,
) -> Result<Captured, SshError> {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let code = out.status.code().unwrap_or(EXIT_INTERRUPTED);
    if code == SSH_FAILED {
        let held: Vec<String> = stderr
            .lines()
            .filter(|l| is_ssh_line(l))
            .map(str::to_string)
            .collect();
        if !held.is_empty() {
            return Err(SshError::Unreachable {
                host: remote.label(),
                cause: classify(&held, remote),
            });
        }
    }
    Ok(Captured {
        code,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr,
        elapsed,
    })
}

/// Copy stderr through as it comes (lines end at `\n` or `\r`, so progress bars stay live);
/// return the lines that look like ssh's own messages, held back.
fn forward_stderr(mut src: impl Read) -> Vec<String> {
    let mut held = Vec::new();
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = [0u8; 8192];
    let mut out = std::io::stderr();
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        pending.extend_from_slice(&buf[..n]);
        while let Some(end) = line_end(&pending) {
            let line: Vec<u8> = pending.drain(..end).collect();
            let text = String::from_utf8_lossy(&line);
            if is_ssh_line(text.trim_end()) {
                held.push(text.trim_end().to_string());
            } else {
                let _ = out.write_all(&line);
                let _ = out.flush();
            }
        }
    }
    if !pending.is_empty() {
        let text = String::from_utf8_lossy(&pending);
        if is_ssh_line(text.trim_end()) {
            held.push(text.trim_end().to_string());
        } else {
            let _ = out.write_all(&pending);
        }
    }
    held
}

/// Length of the first complete line (terminator included): `\n`, `\r\n` or a lone `\r`.
/// A trailing `\r` waits for the next byte, which may be its `\n`.
fn line_end(buf: &[u8]) -> Option<usize> {
    let pos = buf.iter().position(|&b| b == b'\n' || b == b'\r')?;
    if buf[pos] == b'\n' {
        return Some(pos + 1);
    }
    match buf.get(pos + 1) {
        Some(b'\n') => Some(pos + 2),
        Some(_) => Some(pos + 1),
        None => None,
    }
}

fn flush_lines(lines: &[String]) {
    for l in lines {
        eprintln!("{l}");
    }
}

/// Line beginnings of OpenSSH's own diagnostics (with `LogLevel=ERROR`).
const SSH_PREFIXES: &[&str] = &[
    "ssh: ",
    "ssh_",
    "kex_",
    "Permission denied",
    "Host key verification failed",
    "Connection closed by",
    "Connection reset by",
    "Connection timed out",
    "Connection to ",
    "Timeout, server",
    "Received disconnect",
    "Disconnected from",
    "banner exchange",
    "Bad owner or permissions",
    "Bad configuration option",
    "command-line line",
    "no such identity",
    "Load key",
    "@@@",
    "IT IS POSSIBLE",
    "Someone could be",
    "The fingerprint for",
    "Please contact",
    "Add correct host key",
    "Offending ",
    "Host key for ",
    "No ED25519 host key",
    "No RSA host key",
    "No ECDSA host key",
    "Unable to negotiate",
    "Bad port",
    "Bad stdio forwarding",
    "client_loop:",
];

/// Fragments of OpenSSH diagnostics that start with a variable part (`user@host: ...`).
const SSH_FRAGMENTS: &[&str] = &[": Permission denied (", "closed by remote host."];

/// Whether a stderr line looks like one of OpenSSH's own diagnostics.
pub fn is_ssh_line(line: &str) -> bool {
    SSH_PREFIXES.iter().any(|p| line.starts_with(p))
        || SSH_FRAGMENTS.iter().any(|f| line.contains(f))
}

/// Turn ssh's messages into one cause, keeping ssh's own most telling line.
pub fn classify(lines: &[String], remote: &SshHost) -> String {
    let t = remote.connect_timeout_s;
    let rules: &[(&str, String)] = &[
        ("Could not resolve hostname", "cannot resolve the host name".to_string()),
        ("Connection refused", "connection refused (no sshd listening on that port?)".to_string()),
        ("banner exchange", format!("no SSH greeting within the {t} s connect timeout")),
        ("timed out", format!("connection timed out (connect timeout {t} s)")),
        ("No route to host", "no route to host".to_string()),
        ("Network is unreachable", "network is unreachable".to_string()),
        (
            "Permission denied",
            "authentication failed (BatchMode: no password prompts; check user, identity and authorized_keys)".to_string(),
        ),
        (
            "Host key verification failed",
            "host key unknown or changed (run `ssh` once to accept it, or add ssh option StrictHostKeyChecking=accept-new)"
                .to_string(),
        ),
        ("Timeout, server", "connection lost: server stopped answering".to_string()),
        ("closed by remote host", "connection closed by the remote host".to_string()),
        ("Connection closed by", "connection closed during the SSH handshake".to_string()),
        ("Connection reset by", "connection reset during the SSH handshake".to_string()),
        ("kex_exchange_identification", "connection closed during the SSH handshake".to_string()),
        ("Unable to negotiate", "no common SSH algorithms".to_string()),
    ];
    for (needle, cause) in rules {
        if let Some(line) = lines.iter().find(|l| l.contains(needle)) {
            return format!("{cause} [{line}]");
        }
    }
    let last = lines.last().map(String::as_str).unwrap_or("ssh failed");
    format!("ssh failed: {last}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Destination;

    fn remote() -> SshHost {
        let mut p = Destination::new("mac.home.arpa");
        p.port = Some(2222);
        p.user = Some("vince".into());
        p.identity = Some("/k".into());
        p.ssh_options = vec!["StrictHostKeyChecking=accept-new".into()];
        SshHost::new("mac", p, 7)
    }

    #[test]
    fn argv_has_batch_mode_timeout_and_ends_with_destination() {
        let a = ssh_args(&remote(), "exec llorch-pool status");
        let joined = a.join(" ");
        assert!(
            joined.contains("-o BatchMode=yes") && joined.contains("-o ConnectTimeout=7"),
            "{joined}"
        );
        assert!(joined.contains(
            "-p 2222 -l vince -i /k -o IdentitiesOnly=yes -o StrictHostKeyChecking=accept-new"
        ));
        assert_eq!(
            &a[a.len() - 3..],
            ["--", "mac.home.arpa", "exec llorch-pool status"]
        );
    }

    #[test]
    fn ssh_messages_become_one_cause() {
        let r = remote();
        let c = classify(
            &["ssh: connect to host 127.0.0.1 port 9: Connection refused".into()],
            &r,
        );
        assert!(c.starts_with("connection refused"), "{c}");
        assert!(is_ssh_line("vince@h: Permission denied (publickey)."));
        let c = classify(&["vince@h: Permission denied (publickey).".into()], &r);
        assert!(c.starts_with("authentication failed"), "{c}");
        let c = classify(&["Connection timed out during banner exchange".into()], &r);
        assert!(c.contains("7 s"), "{c}");
        assert!(is_ssh_line(
            "ssh: Could not resolve hostname x: Name or service not known"
        ));
        assert!(!is_ssh_line("error: model 'x' not found"));
    }

    #[test]
    fn stderr_forwarding_holds_only_ssh_lines() {
        let input = b"progress 10%\rprogress 20%\rssh: connect to host x port 1: Connection refused\r\nplain error\n".to_vec();
        let held = forward_stderr(&input[..]);
        assert_eq!(held, ["ssh: connect to host x port 1: Connection refused"]);
    }
}
