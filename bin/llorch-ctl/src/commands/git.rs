//! `llorch pool git pull|status|build`: maintain a host that runs llama-orch from a checkout.
//!
//! Each action is a small POSIX `sh` script run with `sh -c` (whatever the login shell is);
//! every value reaches it as a positional argument, never spliced into the script.

use std::process::Command;

use super::Context;
use crate::cli::{GitAction, GitArgs};
use crate::error::{CliError, CliResult};
use crate::host::{self, Place, Remote};
use crate::ssh;
use llorch_ssh::quote;

/// `$1` = checkout. Fast-forward only: a diverged checkout is reported, never merged.
const PULL: &str = r#"cd "$1" || exit 1
git pull --ff-only || exit $?
if [ -f .gitmodules ]; then git submodule update --init --recursive || exit $?; fi
git log -1 --format='now at %h %s'"#;

/// `$1` = checkout, then git status arguments.
const STATUS: &str = r#"cd "$1" || exit 1
shift
exec git status "$@""#;

/// `$1` = checkout, `$2` = comma-separated features or `auto`, then extra cargo arguments.
const BUILD: &str = r#"cd "$1" || exit 1
feats="$2"
shift 2
[ -d "$HOME/.cargo/bin" ] && PATH="$HOME/.cargo/bin:$PATH"
[ -d /usr/local/cuda/bin ] && PATH="$PATH:/usr/local/cuda/bin"
if [ "$feats" = auto ]; then
  feats=""
  [ "$(uname -s)" = Darwin ] && feats=metal
  if [ -z "$feats" ] && command -v nvcc >/dev/null 2>&1; then feats=cuda; fi
fi
command -v cargo >/dev/null 2>&1 || { echo "cargo not found on this host (install rustup)" >&2; exit 127; }
list=""
for f in $(printf '%s' "$feats" | tr ',' ' '); do list="$list${list:+,}llorch-candled/$f"; done
if [ -n "$list" ]; then set -- --features "$list" "$@"; fi
set -- cargo build --release -p llorch-candled -p pool-ctl -p orchestratord -p llorch-ctl "$@"
echo "+ $* (backend features: ${feats:-cpu only})" >&2
exec "$@""#;

/// Run a `pool git` action on the chosen host (or on the current directory with `--host local`).
pub fn run(host_flag: Option<String>, args: GitArgs, ctx: &Context) -> CliResult {
    let (script, extra, features) = match args.action {
        GitAction::Pull => (PULL, Vec::new(), None),
        GitAction::Status { args } => {
            let (rest, found) = host::extract_host(&args)?;
            return run_script(host::merge_host(host_flag, found)?, STATUS, rest, None, ctx);
        }
        GitAction::Build {
            features,
            cargo_args,
        } => {
            if let Some(bad) = features.iter().find(|f| {
                f.is_empty()
                    || !f
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            }) {
                return Err(CliError::Usage(format!("invalid feature name {bad:?}")));
            }
            (BUILD, cargo_args, Some(features))
        }
    };
    run_script(host_flag, script, extra, features, ctx)
}

fn run_script(
    host_flag: Option<String>,
    script: &str,
    extra: Vec<String>,
    features: Option<Vec<String>>,
    ctx: &Context,
) -> CliResult {
    match host::resolve(host_flag.as_deref(), &ctx.config, ctx.connect_timeout)? {
        Place::Local => {
            let mut cmd = Command::new("sh");
            cmd.arg("-c").arg(script).arg("llorch").arg(".");
            if let Some(f) = features {
                cmd.arg(feature_word(&f, &[]));
            }
            let status = cmd
                .args(&extra)
                .status()
                .map_err(|e| CliError::Local(format!("cannot run sh: {e}")))?;
            Ok(crate::error::exit_code_of(status))
        }
        Place::Remote(remote) => {
            let repo = remote_repo(&remote)?;
            let mut words = vec![quote::quote_path(&repo)];
            if let Some(f) = features {
                words.push(quote::quote(&feature_word(&f, &remote.profile.features)).into_owned());
            }
            words.extend(extra.iter().map(|a| quote::quote(a).into_owned()));
            ssh::run_streaming(&remote, &remote.script_command(script, &words))
        }
    }
}

fn remote_repo(remote: &Remote) -> Result<String, CliError> {
    remote.profile.repo.clone().ok_or_else(|| {
        CliError::Usage(format!(
            "host {} has no `repo` in its profile; add one with `llorch hosts add {} {} --repo ~/Projects/llama-orch`",
            remote.label(),
            remote.name,
            remote.profile.target
        ))
    })
}

/// Features from the flag, else the profile, else `auto` (detect on the host).
fn feature_word(flag: &[String], profile: &[String]) -> String {
    let chosen = if flag.is_empty() { profile } else { flag };
    if chosen.is_empty() {
        "auto".to_string()
    } else {
        chosen.join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_prefer_flag_then_profile_then_auto() {
        assert_eq!(feature_word(&["cuda".into()], &["metal".into()]), "cuda");
        assert_eq!(feature_word(&[], &["metal".into()]), "metal");
        assert_eq!(feature_word(&[], &[]), "auto");
    }

    #[test]
    fn build_script_is_valid_sh() {
        for s in [PULL, STATUS, BUILD] {
            let st = Command::new("sh")
                .arg("-n")
                .arg("-c")
                .arg(s)
                .status()
                .unwrap();
            assert!(st.success());
        }
    }
}
