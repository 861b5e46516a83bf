//! llorch-candled: the llama-orch worker daemon. Loads one model and serves it over HTTP/SSE.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use llorch_candled::{cli, start, Config};

fn main() -> ExitCode {
    let args = cli::Args::parse();
    if args.print_backends {
        let backends = llorch_candled::compiled_backends();
        println!("{}", serde_json::json!({ "backends": backends }));
        return ExitCode::SUCCESS;
    }
    llorch_http::logging::init(args.log.log_format, "info");
    match Config::from_args(args).and_then(start::run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // one message: candle's errors carry a backtrace when RUST_BACKTRACE is set
            let msg = llorch_wire::human_message(&format!("{e:#}"));
            eprintln!("llorch-candled: error: {msg}");
            ExitCode::FAILURE
        }
    }
}
