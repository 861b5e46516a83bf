//! Which machine a command runs on: `--host`, else `LLORCH_REMOTE_HOST`, else the config's
//! `default_host`, else this machine. A host is a profile name or a plain ssh destination.

use llorch_ssh::{quote, RemoteCommand, SshHost};

use crate::config::{self, Config, HostProfile};
use crate::error::CliError;

/// The value of `--host` that means "this machine".
pub const LOCAL: &str = "local";

/// Where a command runs.
#[derive(Debug, Clone)]
pub enum Place {
    /// Run the local `llorch-pool` directly.
    Local,
    /// Run over ssh.
    Remote(Box<Remote>),
}

/// A resolved remote host.
#[derive(Debug, Clone)]
pub struct Remote {
    /// The profile name, or the destination when no profile matched.
    pub name: String,
    pub profile: HostProfile,
    pub connect_timeout_s: u64,
}

impl Remote {
    /// `'mac' (vince@mac.home.arpa)` for messages.
    pub fn label(&self) -> String {
        let dest = self.profile.destination();
        if dest == self.name {
            format!("'{}'", self.name)
        } else {
            format!("'{}' ({dest})", self.name)
        }
    }

    /// The remote `llorch-pool` path, quoted for the remote shell.
    pub fn pool_bin_word(&self) -> String {
        match (&self.profile.pool_bin, &self.profile.repo) {
            (Some(bin), _) => quote::quote_path(bin),
            (None, Some(repo)) => quote::quote_path(&format!(
                "{}/target/release/llorch-pool",
                repo.trim_end_matches('/')
            )),
            (None, None) => "llorch-pool".to_string(),
        }
    }

    /// How ssh reaches this host (one connection per command).
    pub fn ssh(&self) -> SshHost {
        SshHost::new(
            &self.name,
            self.profile.ssh_destination(),
            self.connect_timeout_s,
        )
    }

    fn remote_command(&self) -> RemoteCommand {
        RemoteCommand {
            env: self.profile.env.clone(),
        }
    }

    /// The remote command line that runs `llorch-pool ARGS...`.
    pub fn pool_command(&self, args: &[String]) -> String {
        self.remote_command()
            .program_word(&self.pool_bin_word(), args)
    }

    /// The remote command line that runs a POSIX `sh` script with positional words (already
    /// quoted by the caller), independent of the login shell.
    pub fn script_command(&self, script: &str, words: &[String]) -> String {
        self.remote_command().script(script, words)
    }
}

/// Resolve a host value (possibly absent) to a place, using the environment and the config.
pub fn resolve(
    flag: Option<&str>,
    cfg: &Config,
    connect_timeout: Option<u64>,
) -> Result<Place, CliError> {
    let env = std::env::var("LLORCH_REMOTE_HOST")
        .ok()
        .filter(|v| !v.is_empty());
    let chosen = flag
        .map(str::to_string)
        .or(env)
        .or_else(|| cfg.default_host.clone());
    let Some(name) = chosen else {
        return Ok(Place::Local);
    };
    if name == LOCAL {
        return Ok(Place::Local);
    }
    resolve_remote(&name, cfg, connect_timeout).map(|r| Place::Remote(Box::new(r)))
}

/// Resolve a name that must be remote: a profile, else a plain ssh destination.
pub fn resolve_remote(
    name: &str,
    cfg: &Config,
    connect_timeout: Option<u64>,
) -> Result<Remote, CliError> {
    let profile = match cfg.hosts.get(name) {
        Some(p) => p.clone(),
        None => {
            config::validate_target(name).map_err(CliError::Usage)?;
            HostProfile::for_target(name)
        }
    };
    let connect_timeout_s = connect_timeout
        .or(cfg.connect_timeout_s)
        .unwrap_or(config::DEFAULT_CONNECT_TIMEOUT_S)
        .max(1);
    Ok(Remote {
        name: name.to_string(),
        profile,
        connect_timeout_s,
    })
}

/// Take every `--host H` / `--host=H` out of pass-through arguments, up to the first `--`, which
/// is dropped: what follows it is forwarded untouched (`... --host mac -- --host 0.0.0.0` gives
/// llorch-pool its own `--host`). Two different hosts are an error.
pub fn extract_host(args: &[String]) -> Result<(Vec<String>, Option<String>), CliError> {
    let mut rest = Vec::with_capacity(args.len());
    let mut host: Option<String> = None;
    let mut set = |v: String| -> Result<(), CliError> {
        match &host {
            Some(h) if *h != v => Err(CliError::Usage(format!(
                "--host given twice ('{h}' and '{v}')"
            ))),
            _ => {
                host = Some(v);
                Ok(())
            }
        }
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--" {
            rest.extend(it.by_ref().cloned());
            break;
        }
        if a == "--host" {
            let v = it
                .next()
                .ok_or_else(|| CliError::Usage("--host needs a value".into()))?;
            set(v.clone())?;
        } else if let Some(v) = a.strip_prefix("--host=") {
            set(v.to_string())?;
        } else {
            rest.push(a.clone());
        }
    }
    Ok((rest, host))
}

/// Merge a `--host` parsed by clap with one found in the pass-through arguments.
pub fn merge_host(
    parsed: Option<String>,
    found: Option<String>,
) -> Result<Option<String>, CliError> {
    match (parsed, found) {
        (Some(a), Some(b)) if a != b => Err(CliError::Usage(format!(
            "--host given twice ('{a}' and '{b}')"
        ))),
        (a, b) => Ok(a.or(b)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn host_is_found_anywhere_before_double_dash() {
        let (rest, h) = extract_host(&s(&[
            "models", "download", "qwen", "--host", "mac", "--json",
        ]))
        .unwrap();
        assert_eq!(rest, s(&["models", "download", "qwen", "--json"]));
        assert_eq!(h.as_deref(), Some("mac"));
        let (rest, h) =
            extract_host(&s(&["--host=ws", "spawn", "--", "--host", "x", "--"])).unwrap();
        assert_eq!(rest, s(&["spawn", "--host", "x", "--"]));
        assert_eq!(h.as_deref(), Some("ws"));
        assert!(extract_host(&s(&["--host", "a", "--host", "b"])).is_err());
        assert!(extract_host(&s(&["list", "--host"])).is_err());
        assert!(merge_host(Some("a".into()), Some("b".into())).is_err());
    }

    #[test]
    fn remote_commands_quote_everything() {
        let mut profile = HostProfile::for_target("h");
        profile.repo = Some("~/Projects/llama-orch".into());
        profile.env.insert("LLORCH_HOME".into(), "/tmp/a b".into());
        let r = Remote {
            name: "h".into(),
            profile,
            connect_timeout_s: 5,
        };
        assert_eq!(
            r.pool_command(&s(&["models", "info", "x; id"])),
            "exec env 'LLORCH_HOME=/tmp/a b' \"$HOME\"/Projects/llama-orch/target/release/llorch-pool models info 'x; id'"
        );
        let cfg = Config::default();
        assert!(resolve_remote("-oProxyCommand=x", &cfg, None).is_err());
    }
}
