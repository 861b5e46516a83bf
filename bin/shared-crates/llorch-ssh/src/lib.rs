//! Running commands (above all `llorch-pool`) on other hosts through the system `ssh`, shared by
//! the operator CLI (`llorch`) and orchestratord:
//!
//! - [`quote`]: POSIX shell quoting, so every value reaches the remote program as data;
//! - [`ssh`]: the ssh argv (never prompts, bounded connect time), blocking and async runners,
//!   and ssh's own failures turned into one [`SshError`] naming the host and the cause;
//! - [`control`]: one persistent connection per host (OpenSSH `ControlMaster`), so a probe
//!   costs a round trip instead of a handshake.

pub mod control;
pub mod quote;
pub mod ssh;

use std::collections::BTreeMap;
use std::path::PathBuf;

pub use ssh::{run_captured, run_captured_async, run_streaming, ssh_args, Captured};

/// Default ssh connect timeout in seconds.
pub const DEFAULT_CONNECT_TIMEOUT_S: u64 = 10;

/// ssh's exit status for its own failures.
pub const SSH_FAILED: i32 = 255;

/// Why ssh could not run a remote command.
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    /// ssh exited 255 and said why: unreachable, refused, auth, host key...
    #[error("host {host}: {cause}")]
    Unreachable {
        /// The host as [`SshHost::label`] prints it.
        host: String,
        /// One line: the cause in words, with ssh's most telling line in brackets.
        cause: String,
    },
    /// The `ssh` program itself could not be started.
    #[error("host {host}: cannot run ssh: {source}")]
    Spawn {
        /// The host as [`SshHost::label`] prints it.
        host: String,
        /// Why the process could not start.
        #[source]
        source: std::io::Error,
    },
    /// The command ran longer than the caller allowed (async runner only).
    #[error("host {host}: no answer within {secs} s")]
    Timeout {
        /// The host as [`SshHost::label`] prints it.
        host: String,
        /// The limit.
        secs: u64,
    },
}

impl SshError {
    /// Stable code for APIs and metrics: `SSH_UNREACHABLE`, `SSH_SPAWN`, `SSH_TIMEOUT`.
    pub fn code(&self) -> &'static str {
        match self {
            SshError::Unreachable { .. } => "SSH_UNREACHABLE",
            SshError::Spawn { .. } => "SSH_SPAWN",
            SshError::Timeout { .. } => "SSH_TIMEOUT",
        }
    }
}

/// How ssh reaches a host: destination plus client options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Destination {
    /// ssh destination: a host name, `user@host`, or an alias from `~/.ssh/config`.
    pub target: String,
    /// Login name (`-l`).
    pub user: Option<String>,
    /// Port (`-p`).
    pub port: Option<u16>,
    /// Private key file (`-i`, with `IdentitiesOnly=yes`); a leading `~/` is the local home.
    pub identity: Option<String>,
    /// ssh client config file (`-F`), e.g. `/dev/null` to ignore `~/.ssh/config`.
    pub ssh_config: Option<String>,
    /// Extra `-o Name=value` options.
    pub ssh_options: Vec<String>,
}

impl Destination {
    /// A destination with no extra options.
    pub fn new(target: &str) -> Self {
        Self {
            target: target.to_string(),
            ..Self::default()
        }
    }

    /// `user@target:port` as ssh will use it (for messages).
    pub fn display(&self) -> String {
        let mut s = String::new();
        if let Some(u) = &self.user {
            s.push_str(u);
            s.push('@');
        }
        s.push_str(&self.target);
        if let Some(p) = self.port {
            s.push_str(&format!(":{p}"));
        }
        s
    }

    /// Reject values that would change the meaning of the ssh command line.
    pub fn validate(&self) -> Result<(), String> {
        validate_target(&self.target)?;
        if let Some(user) = &self.user {
            if user.is_empty()
                || user.starts_with('-')
                || user
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || c == '@')
            {
                return Err(format!("invalid ssh user {user:?}"));
            }
        }
        for o in &self.ssh_options {
            if !o.contains('=') || o.starts_with('-') {
                return Err(format!("ssh option {o:?} must look like Name=value"));
            }
        }
        Ok(())
    }
}

/// An ssh destination must not look like an option nor contain blanks or control characters.
pub fn validate_target(target: &str) -> Result<(), String> {
    if target.is_empty()
        || target.starts_with('-')
        || target.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(format!("invalid ssh destination {target:?}"));
    }
    Ok(())
}

/// Environment variable names allowed in remote `env` assignments.
pub fn valid_env_name(key: &str) -> bool {
    let mut chars = key.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A remote host: its name (for messages), how to reach it, and how to run commands there.
#[derive(Debug, Clone)]
pub struct SshHost {
    /// A profile or pool name, or the destination when there is none.
    pub name: String,
    /// How ssh reaches it.
    pub dest: Destination,
    /// ssh `ConnectTimeout` in seconds.
    pub connect_timeout_s: u64,
    /// Control socket for a persistent connection (see [`control`]); `None` = one connection
    /// per command.
    pub control_path: Option<PathBuf>,
}

impl SshHost {
    /// A host reached with a fresh connection per command.
    pub fn new(name: &str, dest: Destination, connect_timeout_s: u64) -> Self {
        Self {
            name: name.to_string(),
            dest,
            connect_timeout_s: connect_timeout_s.max(1),
            control_path: None,
        }
    }

    /// `'mac' (vince@mac.home.arpa)` for messages.
    pub fn label(&self) -> String {
        let dest = self.dest.display();
        if dest == self.name {
            format!("'{}'", self.name)
        } else {
            format!("'{}' ({dest})", self.name)
        }
    }
}

/// How to run a program on the remote side: environment assignments first (`exec env K=V`),
/// then the program. Builds the one string ssh hands to the remote login shell.
#[derive(Debug, Clone, Default)]
pub struct RemoteCommand {
    /// Environment for the remote program; a value starting with `~/` is under the remote home.
    pub env: BTreeMap<String, String>,
}

impl RemoteCommand {
    /// `exec env K=V ...` (or just `exec`).
    pub fn exec_prefix(&self) -> String {
        let mut s = String::from("exec");
        if !self.env.is_empty() {
            s.push_str(" env");
            for (k, v) in &self.env {
                s.push(' ');
                s.push_str(&quote::quote_assignment(k, v));
            }
        }
        s
    }

    /// The command line that runs `program ARGS...`; `program` is a path (`~/` = remote home).
    pub fn program(&self, program: &str, args: &[String]) -> String {
        self.program_word(&quote::quote_path(program), args)
    }

    /// Like [`RemoteCommand::program`] with the program word already quoted.
    pub fn program_word(&self, program_word: &str, args: &[String]) -> String {
        let mut s = format!("{} {program_word}", self.exec_prefix());
        if !args.is_empty() {
            s.push(' ');
            s.push_str(&quote::join(args));
        }
        s
    }

    /// The command line that runs a POSIX `sh` script with positional words (already quoted by
    /// the caller), independent of the login shell.
    pub fn script(&self, script: &str, words: &[String]) -> String {
        let mut s = format!(
            "{} sh -c {} llorch",
            self.exec_prefix(),
            quote::quote(script)
        );
        for w in words {
            s.push(' ');
            s.push_str(w);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_quote_everything() {
        let mut rc = RemoteCommand::default();
        rc.env.insert("LLORCH_HOME".into(), "/tmp/a b".into());
        assert_eq!(
            rc.program(
                "~/p/llorch-pool",
                &["models".into(), "info".into(), "x; id".into()]
            ),
            "exec env 'LLORCH_HOME=/tmp/a b' \"$HOME\"/p/llorch-pool models info 'x; id'"
        );
        assert!(validate_target("-oProxyCommand=x").is_err());
        assert!(!valid_env_name("A-B") && valid_env_name("_A1"));
        let mut d = Destination::new("h");
        d.ssh_options.push("-oX".into());
        assert!(d.validate().is_err());
    }
}
