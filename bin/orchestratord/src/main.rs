//! `orchestratord`: parse flags/env/file into a config, then serve.

use clap::Parser;
use orchestratord::config::{Args, Config};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "orchestratord=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cfg = match Config::from_args(Args::parse()) {
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
