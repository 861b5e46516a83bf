//! `llorch hosts add|list|rm|check`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use super::Context;
use crate::cli::{HostAddArgs, HostsCommand};
use crate::config::{self, HostProfile};
use crate::error::{CliError, CliResult};
use crate::host::{self, Remote};
use crate::ssh;
use llorch_ssh::quote;

/// Run a `hosts` subcommand.
pub fn run(cmd: HostsCommand, ctx: &Context) -> CliResult {
    match cmd {
        HostsCommand::Add(args) => add(*args, ctx),
        HostsCommand::List { json } => list(json, ctx),
        HostsCommand::Rm { name } => {
            if !config::remove_host(&ctx.config_path, &name)? {
                return Err(CliError::Usage(format!(
                    "no host profile '{name}' in {}",
                    ctx.config_path.display()
                )));
            }
            eprintln!("removed host '{name}'");
            Ok(0)
        }
        HostsCommand::Check { names, json } => check(names, json, ctx),
    }
}

fn add(a: HostAddArgs, ctx: &Context) -> CliResult {
    config::validate_profile_name(&a.name).map_err(CliError::Usage)?;
    let mut env = BTreeMap::new();
    for kv in &a.env {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| CliError::Usage(format!("--env {kv:?}: expected KEY=VALUE")))?;
        env.insert(k.to_string(), v.to_string());
    }
    let profile = HostProfile {
        target: a.target,
        user: a.user,
        port: a.port,
        identity: a.identity,
        pool_bin: a.pool_bin,
        repo: a.repo,
        features: a.features,
        ssh_config: a.ssh_config,
        ssh_options: a.ssh_options,
        env,
    };
    profile.validate().map_err(CliError::Usage)?;
    let replaced = ctx.config.hosts.contains_key(&a.name);
    config::upsert_host(&ctx.config_path, &a.name, &profile, a.default)?;
    eprintln!(
        "{} host '{}' ({}) in {}",
        if replaced { "updated" } else { "added" },
        a.name,
        profile.destination(),
        ctx.config_path.display()
    );
    Ok(0)
}

fn list(json: bool, ctx: &Context) -> CliResult {
    let cfg = &ctx.config;
    if json {
        let v = serde_json::json!({ "default_host": cfg.default_host, "hosts": cfg.hosts });
        println!(
            "{}",
            serde_json::to_string_pretty(&v).expect("serializable")
        );
        return Ok(0);
    }
    if cfg.hosts.is_empty() {
        eprintln!(
            "no host profiles in {}; add one with `llorch hosts add NAME TARGET`",
            ctx.config_path.display()
        );
        return Ok(0);
    }
    let width = cfg.hosts.keys().map(String::len).max().unwrap_or(4).max(4);
    println!("{:<width$}  {:<32}  POOL", "HOST", "DESTINATION");
    for (name, p) in &cfg.hosts {
        let mark = if cfg.default_host.as_deref() == Some(name.as_str()) {
            " (default)"
        } else {
            ""
        };
        let pool = p
            .pool_bin
            .clone()
            .or_else(|| {
                p.repo
                    .as_ref()
                    .map(|r| format!("{r}/target/release/llorch-pool"))
            })
            .unwrap_or_else(|| "llorch-pool (PATH)".into());
        println!("{:<width$}  {:<32}  {pool}{mark}", name, p.destination());
    }
    Ok(0)
}

/// What `hosts check` found on one host.
#[derive(Debug, Default, Serialize)]
pub struct CheckReport {
    pub host: String,
    pub destination: String,
    pub reachable: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Time of one ssh round trip (connect, authenticate, run `exit 0`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool_bin: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool_version: Option<String>,
    /// `llorch-pool status --json`, when it succeeded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool_status: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub git_head: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cargo: Option<String>,
    /// What is absent or broken; empty when the host is ready.
    pub missing: Vec<String>,
}

/// `$1` = llorch-pool, `$2` = checkout or empty. Prints `key=value` lines, then the status output.
const PROBE: &str = r#"pool="$1"; repo="$2"
echo "os=$(uname -sm 2>/dev/null)"
if [ -n "$repo" ]; then
  if [ -d "$repo" ]; then echo "repo=present"; echo "git_head=$(cd "$repo" && git rev-parse --short HEAD 2>/dev/null)"; else echo "repo=missing"; fi
  [ -d "$HOME/.cargo/bin" ] && PATH="$HOME/.cargo/bin:$PATH"
  echo "cargo=$(command -v cargo 2>/dev/null)"
fi
p=$(command -v "$pool" 2>/dev/null) || p=""
echo "pool_bin=$p"
[ -n "$p" ] || exit 0
echo "pool_version=$("$p" --version 2>/dev/null | head -n 1)"
out=$("$p" status --json 2>&1); rc=$?
echo "status_rc=$rc"
echo "--- status"
printf '%s\n' "$out""#;

fn check(names: Vec<String>, json: bool, ctx: &Context) -> CliResult {
    let names: Vec<String> = if names.is_empty() {
        ctx.config.hosts.keys().cloned().collect()
    } else {
        names
    };
    if names.is_empty() {
        return Err(CliError::Usage(format!(
            "no host profiles in {}; add one with `llorch hosts add NAME TARGET`",
            ctx.config_path.display()
        )));
    }
    let mut remotes = Vec::new();
    for n in &names {
        remotes.push(host::resolve_remote(n, &ctx.config, ctx.connect_timeout)?);
    }
    let reports: Vec<CheckReport> = std::thread::scope(|s| {
        let handles: Vec<_> = remotes.iter().map(|r| s.spawn(move || probe(r))).collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("probe thread"))
            .collect()
    });
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&reports).expect("serializable")
        );
    } else {
        for r in &reports {
            print_report(r);
        }
    }
    let bad = reports.iter().filter(|r| !r.missing.is_empty()).count();
    if bad > 0 {
        return Err(CliError::CheckFailed(format!(
            "{bad} of {} hosts not ready",
            reports.len()
        )));
    }
    Ok(0)
}

/// Probe one host: a bare round trip for latency, then the probe script.
pub fn probe(remote: &Remote) -> CheckReport {
    let mut rep = CheckReport {
        host: remote.name.clone(),
        destination: remote.profile.destination(),
        ..Default::default()
    };
    match ssh::run_captured(remote, "exit 0") {
        Ok(c) if c.code == 0 => rep.latency_ms = Some(ms(c.elapsed)),
        Ok(c) => {
            rep.error = Some(format!("`exit 0` returned {}: {}", c.code, c.stderr.trim()));
            rep.missing.push("ssh".into());
            return rep;
        }
        Err(e) => {
            rep.error = Some(e.to_string());
            rep.missing.push("ssh".into());
            return rep;
        }
    }
    rep.reachable = true;
    let repo = remote
        .profile
        .repo
        .as_deref()
        .map(quote::quote_path)
        .unwrap_or_else(|| "''".into());
    let words = vec![remote.pool_bin_word(), repo];
    let out = match ssh::run_captured(remote, &remote.script_command(PROBE, &words)) {
        Ok(c) => c,
        Err(e) => {
            rep.error = Some(e.to_string());
            rep.missing.push("probe".into());
            return rep;
        }
    };
    apply_probe_output(&mut rep, &out.stdout, remote.profile.repo.clone());
    rep
}

fn apply_probe_output(rep: &mut CheckReport, stdout: &str, repo: Option<String>) {
    let (head, status_out) = stdout.split_once("--- status\n").unwrap_or((stdout, ""));
    let kv: BTreeMap<&str, &str> = head.lines().filter_map(|l| l.split_once('=')).collect();
    let nonempty = |k: &str| {
        kv.get(k)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    };
    rep.os = nonempty("os");
    rep.pool_bin = nonempty("pool_bin");
    rep.pool_version = nonempty("pool_version");
    if let Some(repo) = repo {
        if kv.get("repo") == Some(&"present") {
            rep.repo = Some(repo);
            rep.git_head = nonempty("git_head");
        } else {
            rep.missing.push(format!("repo {repo}"));
        }
        rep.cargo = nonempty("cargo");
        if rep.cargo.is_none() {
            rep.missing.push("cargo".into());
        }
    }
    if rep.pool_bin.is_none() {
        rep.missing.push("llorch-pool".into());
        return;
    }
    let rc = kv
        .get("status_rc")
        .and_then(|v| v.trim().parse::<i32>().ok())
        .unwrap_or(-1);
    let status_out = status_out.trim();
    if rc == 0 {
        rep.pool_status = serde_json::from_str(status_out).ok();
        if rep.pool_status.is_none() {
            rep.missing
                .push("llorch-pool status --json (not JSON)".into());
        }
    } else {
        let first = status_out.lines().next().unwrap_or("").trim();
        rep.missing
            .push(format!("llorch-pool status (exit {rc}: {first})"));
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 10_000.0).round() / 10.0
}

fn print_report(r: &CheckReport) {
    let state = if !r.reachable {
        "UNREACHABLE".to_string()
    } else if r.missing.is_empty() {
        "ready".to_string()
    } else {
        "NOT READY".to_string()
    };
    println!("{} ({}): {state}", r.host, r.destination);
    let row = |k: &str, v: &str| println!("  {k:<12} {v}");
    if let Some(e) = &r.error {
        row("error", e);
    }
    if let Some(l) = r.latency_ms {
        row("ssh", &format!("{l} ms round trip"));
    }
    if let Some(os) = &r.os {
        row("system", os);
    }
    if r.reachable {
        match (&r.pool_bin, &r.pool_version) {
            (Some(b), Some(v)) => row("llorch-pool", &format!("{v} ({b})")),
            (Some(b), None) => row("llorch-pool", b),
            _ => row("llorch-pool", "not found"),
        }
        if r.pool_status.is_some() {
            row("status", "ok");
        }
    }
    if let Some(repo) = &r.repo {
        row(
            "repo",
            &format!("{repo} @ {}", r.git_head.as_deref().unwrap_or("?")),
        );
    }
    if let Some(c) = &r.cargo {
        row("cargo", c);
    }
    if !r.missing.is_empty() {
        row("missing", &r.missing.join(", "));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_output_is_parsed() {
        let mut r = CheckReport::default();
        let out = "os=Linux x86_64\nrepo=present\ngit_head=abc123\ncargo=\npool_bin=/x/llorch-pool\npool_version=llorch-pool 0.1.0\nstatus_rc=0\n--- status\n{\"host\":\"h\"}\n";
        apply_probe_output(&mut r, out, Some("~/r".into()));
        assert_eq!(r.os.as_deref(), Some("Linux x86_64"));
        assert_eq!(r.git_head.as_deref(), Some("abc123"));
        assert_eq!(r.pool_status, Some(serde_json::json!({"host": "h"})));
        assert_eq!(r.missing, ["cargo"]);
        let mut r = CheckReport::default();
        apply_probe_output(&mut r, "os=Linux\npool_bin=\n", None);
        assert_eq!(r.missing, ["llorch-pool"]);
    }

    #[test]
    fn probe_script_is_valid_sh() {
        let st = std::process::Command::new("sh")
            .arg("-n")
            .arg("-c")
            .arg(PROBE)
            .status()
            .unwrap();
        assert!(st.success());
    }
}
