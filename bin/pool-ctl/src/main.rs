//! `llorch-pool`: per-host CLI of llama-orch. Manages the model catalog (built-in entries,
//! registrations, verified resumable downloads into the Hugging Face cache, imports of local
//! files) and the `llorch-candled` worker processes of this host. Contract: `.specs/pool-ctl.md`.

mod acquire;
mod backends;
mod cli;
mod download;
mod error;
mod fit;
mod hub;
mod inspect;
mod models;
mod output;
mod procs;
mod progress;
mod spawn;
mod worker;

use clap::Parser;
use llorch_catalog::{CatalogStore, PoolHome, WorkerStore};
use serde::Serialize;

use crate::cli::{BackendsCmd, Cli, Command};
use crate::error::PoolError;

/// What every command needs: where state lives and how to print.
pub struct Ctx {
    pub home: PoolHome,
    pub store: CatalogStore,
    pub workers: WorkerStore,
    pub json: bool,
    pub quiet: bool,
}

impl Ctx {
    /// An informational message on stderr (silent with `--quiet` or `--json`).
    pub fn info(&self, msg: &str) {
        if !self.quiet && !self.json {
            eprintln!("{msg}");
        }
    }

    /// The result of a command: `value` as JSON with `--json`, else `msg` on stdout.
    pub fn done<T: Serialize>(&self, value: &T, msg: &str) {
        if self.json {
            output::print_json(value);
        } else {
            println!("{msg}");
        }
    }
}

fn main() {
    let cli = Cli::parse();
    llorch_http::logging::init(cli.log.log_format, "warn");
    let json = cli.json;
    if let Err(e) = run(cli) {
        report(&e, json);
        std::process::exit(e.exit_code());
    }
}

fn run(cli: Cli) -> Result<(), PoolError> {
    let home = PoolHome::resolve(cli.home);
    let ctx = Ctx {
        store: CatalogStore::new(home.catalog_path(), home.catalog_lock_path()),
        workers: WorkerStore::new(home.workers_dir()),
        home,
        json: cli.json,
        quiet: cli.quiet,
    };
    match cli.command {
        Command::Models(cmd) => models::run(&ctx, cmd),
        Command::Worker(cmd) => worker::run(&ctx, cmd),
        Command::Backends(BackendsCmd::List) => backends::list(&ctx),
        Command::Status => backends::status(&ctx),
    }
}

/// Print an error: always on stderr; with `--json` also as an `ErrorView` on stdout.
fn report(e: &PoolError, json: bool) {
    eprintln!("error: {e}");
    if json {
        let view = llorch_catalog::ErrorView {
            error: llorch_catalog::views::ErrorDetail {
                kind: e.kind().to_string(),
                message: e.to_string(),
            },
        };
        output::print_json(&view);
    }
}
