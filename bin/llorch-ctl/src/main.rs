//! `llorch`: the operator CLI of llama-orch. See `.specs/llorch-cli.md`.

#![forbid(unsafe_code)]

mod cli;
mod commands;
mod config;
mod error;
mod host;
mod orchestrator;
mod ssh;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};
use crate::commands::Context;
use crate::error::CliResult;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(&cli);
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("llorch: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn run(cli: Cli) -> CliResult {
    let ctx = || Context::load(cli.config.as_deref(), cli.connect_timeout);
    match cli.command {
        Command::Infer(args) => commands::infer::run(args),
        Command::Tasks(args) => commands::tasks::run(args),
        Command::Fleet(args) => commands::fleet::run(args),
        Command::Tenants(args) => commands::tenancy::tenants(args),
        Command::Keys(args) => commands::tenancy::keys(args),
        Command::Usage(args) => commands::tenancy::usage(args),
        Command::Pool(args) => commands::pool::run(args, &ctx()?),
        Command::Hosts(cmd) => commands::hosts::run(cmd, &ctx()?),
    }
}

/// Logs go to stderr; `RUST_LOG` wins over `-v`.
fn init_tracing(cli: &Cli) {
    let default = match cli.verbose {
        0 => "warn",
        1 => "llorch=debug,info",
        _ => "trace",
    };
    llorch_http::logging::init(cli.log.log_format, default);
}
