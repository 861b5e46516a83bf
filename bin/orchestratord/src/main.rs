//! `orchestratord`: parse flags/env/file into a config, then serve.

#![forbid(unsafe_code)]

use clap::Parser;
use orchestratord::config::{Args, Config};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    llorch_http::logging::init(args.log.log_format, "info");
    let cfg = match Config::from_args(args) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("orchestratord: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    match orchestratord::run(cfg).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("orchestratord: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
