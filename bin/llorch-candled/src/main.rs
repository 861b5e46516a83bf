//! llorch-candled: the llama-orch worker daemon. Loads one model and serves it over HTTP/SSE.

mod auth;
mod cli;
mod memory;
mod metrics;
mod prepare;
mod register;
mod server;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Args::parse();
    cli::init_tracing();
    match server::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // one message: candle's errors carry a backtrace when RUST_BACKTRACE is set
            let msg = llorch_wire::human_message(&format!("{e:#}"));
            eprintln!("llorch-candled: error: {msg}");
            ExitCode::FAILURE
        }
    }
}
