//! `~/.config/llorch/config.toml`: the default host, the ssh timeout, and host profiles.
//!
//! Reading is typed (serde); `hosts add`/`rm` edit the document in place so the operator's
//! comments and layout survive, and write it atomically (temp file + rename).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::CliError;

/// Default ssh connect timeout in seconds.
pub const DEFAULT_CONNECT_TIMEOUT_S: u64 = 10;

/// The whole config file.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Host used when `--host` and `LLORCH_REMOTE_HOST` are absent.
    pub default_host: Option<String>,
    /// ssh `ConnectTimeout` in seconds.
    pub connect_timeout_s: Option<u64>,
    /// The local `llorch-pool` (default: next to `llorch`, else on `PATH`).
    pub local_pool_bin: Option<String>,
    /// Host profiles by name.
    #[serde(default)]
    pub hosts: BTreeMap<String, HostProfile>,
}

/// How to reach one host and run `llorch-pool` there.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HostProfile {
    /// ssh destination: a host name, `user@host`, or an alias from `~/.ssh/config`.
    pub target: String,
    pub user: Option<String>,
    pub port: Option<u16>,
    /// Private key file (`-i`, with `IdentitiesOnly=yes`).
    pub identity: Option<String>,
    /// Remote `llorch-pool` binary (default: `<repo>/target/release/llorch-pool`, else `PATH`).
    pub pool_bin: Option<String>,
    /// Remote llama-orch checkout, for `pool git ...` (a leading `~/` is the remote home).
    pub repo: Option<String>,
    /// Backend features for `pool git build` (`cuda`, `metal`); empty = detect on the host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub features: Vec<String>,
    /// ssh client config file (`-F`), e.g. `/dev/null` to ignore `~/.ssh/config`.
    pub ssh_config: Option<String>,
    /// Extra `-o` options, e.g. `StrictHostKeyChecking=accept-new`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ssh_options: Vec<String>,
    /// Environment for remote commands, e.g. `LLORCH_HOME`, `PATH`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
}

impl HostProfile {
    /// A profile with only an ssh destination.
    pub fn for_target(target: &str) -> Self {
        Self {
            target: target.to_string(),
            ..Self::default()
        }
    }

    /// The ssh part of the profile.
    pub fn ssh_destination(&self) -> llorch_ssh::Destination {
        llorch_ssh::Destination {
            target: self.target.clone(),
            user: self.user.clone(),
            port: self.port,
            identity: self.identity.clone(),
            ssh_config: self.ssh_config.clone(),
            ssh_options: self.ssh_options.clone(),
        }
    }

    /// Reject values that would change the meaning of the ssh or env command line.
    pub fn validate(&self) -> Result<(), String> {
        self.ssh_destination().validate()?;
        for key in self.env.keys() {
            if !llorch_ssh::valid_env_name(key) {
                return Err(format!("invalid environment variable name {key:?}"));
            }
        }
        for f in &self.features {
            if f.is_empty()
                || !f
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(format!("invalid feature name {f:?}"));
            }
        }
        Ok(())
    }

    /// `user@target:port` as ssh will use it (for messages).
    pub fn destination(&self) -> String {
        self.ssh_destination().display()
    }
}

pub use llorch_ssh::validate_target;

/// Profile names: letters, digits, `.`, `_`, `-`; `local` is reserved (it means "this machine").
pub fn validate_profile_name(name: &str) -> Result<(), String> {
    if name == "local" {
        return Err("'local' is reserved: it means this machine".into());
    }
    if name.is_empty()
        || name.starts_with('-')
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    {
        return Err(format!(
            "invalid host profile name {name:?} (use letters, digits, '.', '_', '-')"
        ));
    }
    Ok(())
}

/// Where the config lives: `--config`, else `LLORCH_CONFIG`, else `$XDG_CONFIG_HOME/llorch/config.toml`,
/// else `~/.config/llorch/config.toml`.
pub fn config_path(flag: Option<&Path>) -> PathBuf {
    if let Some(p) = flag {
        return p.to_path_buf();
    }
    if let Some(p) = std::env::var_os("LLORCH_CONFIG").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".config")
        });
    base.join("llorch").join("config.toml")
}

fn config_error(path: &Path, message: impl Into<String>) -> CliError {
    CliError::Config {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Load the config; a missing file is an empty config.
pub fn load(path: &Path) -> Result<Config, CliError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Config::default()),
        Err(e) => return Err(config_error(path, e.to_string())),
    };
    let cfg: Config =
        toml::from_str(&text).map_err(|e| config_error(path, e.message().to_string()))?;
    for (name, profile) in &cfg.hosts {
        profile
            .validate()
            .map_err(|m| config_error(path, format!("hosts.{name}: {m}")))?;
    }
    Ok(cfg)
}

fn read_document(path: &Path) -> Result<toml_edit::DocumentMut, CliError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(config_error(path, e.to_string())),
    };
    text.parse()
        .map_err(|e: toml_edit::TomlError| config_error(path, e.message().to_string()))
}

fn write_document(path: &Path, doc: &toml_edit::DocumentMut) -> Result<(), CliError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| config_error(path, format!("create {}: {e}", dir.display())))?;
    }
    let tmp = path.with_extension(format!("toml.tmp-{}", std::process::id()));
    std::fs::write(&tmp, doc.to_string())
        .map_err(|e| config_error(path, format!("write {}: {e}", tmp.display())))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        config_error(path, format!("replace: {e}"))
    })
}

/// Insert or replace `[hosts.<name>]`; optionally make it the default host.
pub fn upsert_host(
    path: &Path,
    name: &str,
    profile: &HostProfile,
    make_default: bool,
) -> Result<(), CliError> {
    let mut doc = read_document(path)?;
    let rendered = toml::to_string(profile).map_err(|e| config_error(path, e.to_string()))?;
    let table: toml_edit::DocumentMut = rendered
        .parse()
        .map_err(|e: toml_edit::TomlError| config_error(path, e.to_string()))?;
    let hosts = doc
        .entry("hosts")
        .or_insert_with(|| {
            let mut t = toml_edit::Table::new();
            t.set_implicit(true);
            toml_edit::Item::Table(t)
        })
        .as_table_mut()
        .ok_or_else(|| config_error(path, "`hosts` is not a table"))?;
    hosts.insert(name, toml_edit::Item::Table(table.as_table().clone()));
    if make_default {
        doc["default_host"] = toml_edit::value(name);
    }
    write_document(path, &doc)
}

/// Remove `[hosts.<name>]` (and `default_host` if it named it). Returns whether it existed.
pub fn remove_host(path: &Path, name: &str) -> Result<bool, CliError> {
    let mut doc = read_document(path)?;
    let removed = doc
        .get_mut("hosts")
        .and_then(|h| h.as_table_mut())
        .and_then(|h| h.remove(name))
        .is_some();
    if doc.get("default_host").and_then(|v| v.as_str()) == Some(name) {
        doc.remove("default_host");
    }
    if removed {
        write_document(path, &doc)?;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_keep_comments_and_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/config.toml");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "# my hosts\nconnect_timeout_s = 5 # short\n").unwrap();
        let mut p = HostProfile::for_target("mac.home.arpa");
        p.user = Some("vince".into());
        p.env.insert("LLORCH_HOME".into(), "~/pool".into());
        p.features = vec!["metal".into()];
        upsert_host(&path, "mac", &p, true).unwrap();
        upsert_host(&path, "ws", &HostProfile::for_target("ws"), false).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("# my hosts") && text.contains("# short"),
            "{text}"
        );
        let cfg = load(&path).unwrap();
        assert_eq!(cfg.default_host.as_deref(), Some("mac"));
        assert_eq!(cfg.connect_timeout_s, Some(5));
        assert_eq!(cfg.hosts["mac"], p);
        assert!(remove_host(&path, "mac").unwrap());
        assert!(!remove_host(&path, "mac").unwrap());
        let cfg = load(&path).unwrap();
        assert_eq!(cfg.default_host, None);
        assert_eq!(cfg.hosts.keys().collect::<Vec<_>>(), ["ws"]);
    }

    /// Fuzz-style (bounded: 1000 seeded cases): a config file with random edits loads or is
    /// refused with a message naming the file, never a panic; `hosts add` on it either edits
    /// it or refuses, and what it writes loads again.
    #[test]
    fn damaged_config_files_load_or_are_refused() {
        let full = "# hosts\ndefault_host = \"mac\"\nconnect_timeout_s = 5\n\n[hosts.mac]\n\
            target = \"mac.home.arpa\"\nuser = \"vince\"\nport = 22\nrepo = \"~/llama-orch\"\n\
            features = [\"metal\"]\nssh_options = [\"StrictHostKeyChecking=accept-new\"]\n\
            [hosts.mac.env]\nLLORCH_HOME = \"~/pool\"\n";
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, full).unwrap();
        assert_eq!(load(&path).unwrap().hosts.len(), 1);
        let mut rng = llorch_testkit::FuzzRng::new(47);
        let (mut loaded, mut refused) = (0, 0);
        for case in 0..1000 {
            let text = rng.mutate_text(full);
            std::fs::write(&path, &text).unwrap();
            match load(&path) {
                Ok(_) => loaded += 1,
                Err(e) => {
                    assert!(e.to_string().contains("config.toml"), "case {case}: {e}");
                    refused += 1;
                }
            }
            if upsert_host(&path, "ws", &HostProfile::for_target("ws"), false).is_ok() {
                if let Ok(cfg) = load(&path) {
                    assert!(cfg.hosts.contains_key("ws"), "case {case}: {text}");
                }
            }
        }
        eprintln!("damaged_config_files_load_or_are_refused: {loaded} loaded, {refused} refused");
        assert!(
            loaded > 0 && refused > 0,
            "{loaded} loaded, {refused} refused"
        );
    }

    #[test]
    fn bad_values_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[hosts.x]\ntarget = \"-oProxyCommand=sh\"\n").unwrap();
        let err = load(&path).unwrap_err().to_string();
        assert!(
            err.contains("hosts.x") && err.contains("invalid ssh destination"),
            "{err}"
        );
        std::fs::write(&path, "[hosts.x]\ntarget = \"h\"\nbogus = 1\n").unwrap();
        assert!(load(&path).unwrap_err().to_string().contains("bogus"));
        assert!(validate_profile_name("local").is_err());
        assert!(validate_profile_name("mac.home").is_ok());
        let mut p = HostProfile::for_target("h");
        p.env.insert("A=B".into(), "x".into());
        assert!(p.validate().is_err());
    }
}
