//! `llorch pool ...`: forward to `llorch-pool` on the chosen host, or run it here.

use std::path::PathBuf;
use std::process::Command;

use super::Context;
use crate::cli::{PoolArgs, PoolCommand};
use crate::error::{exit_code_of, CliError, CliResult};
use crate::host::{self, Place};
use crate::ssh;

/// Run a `pool` subcommand.
pub fn run(args: PoolArgs, ctx: &Context) -> CliResult {
    let mut argv: Vec<String> = match args.command {
        PoolCommand::Git(git) => return super::git::run(args.host, git, ctx),
        PoolCommand::Models(p) => prepend("models", p.args),
        PoolCommand::Worker(p) => prepend("worker", p.args),
        PoolCommand::Backends(p) => prepend("backends", p.args),
        PoolCommand::Status(p) => prepend("status", p.args),
        PoolCommand::Other(v) => v,
    };
    let (rest, found) = host::extract_host(&argv)?;
    argv = rest;
    let chosen = host::merge_host(args.host, found)?;
    match host::resolve(chosen.as_deref(), &ctx.config, ctx.connect_timeout)? {
        Place::Local => run_local(&argv, ctx),
        Place::Remote(remote) => ssh::run_streaming(&remote, &remote.pool_command(&argv)),
    }
}

fn prepend(first: &str, rest: Vec<String>) -> Vec<String> {
    let mut v = Vec::with_capacity(rest.len() + 1);
    v.push(first.to_string());
    v.extend(rest);
    v
}

/// The local `llorch-pool`: the config's `local_pool_bin`, else next to this binary, else `PATH`.
pub fn local_pool_bin(ctx: &Context) -> PathBuf {
    if let Some(p) = &ctx.config.local_pool_bin {
        return PathBuf::from(p);
    }
    if let Some(sibling) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("llorch-pool")))
        .filter(|p| p.is_file())
    {
        return sibling;
    }
    PathBuf::from("llorch-pool")
}

fn run_local(argv: &[String], ctx: &Context) -> CliResult {
    let bin = local_pool_bin(ctx);
    tracing::debug!(bin = %bin.display(), ?argv, "local llorch-pool");
    let status = Command::new(&bin)
        .args(argv)
        .status()
        .map_err(|source| CliError::LocalPool {
            path: bin.clone(),
            source,
        })?;
    Ok(exit_code_of(status))
}
