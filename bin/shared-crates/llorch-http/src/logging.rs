//! Logging of every llama-orch binary: to stderr, `RUST_LOG` filters (over the binary's own
//! default level), `--log-format text` (the default; colour only on a terminal without
//! `NO_COLOR`) or `json` (one JSON object a line, for log collectors).

use std::io::IsTerminal;

/// `--log-format`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// The `--log-format` argument, for a binary's `#[command(flatten)]`.
#[derive(Debug, Clone, Copy, Default, clap::Args)]
pub struct LogArgs {
    /// Log line format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true, env = "LLORCH_LOG_FORMAT")]
    pub log_format: LogFormat,
}

/// Install the global subscriber; `default_filter` applies when `RUST_LOG` is unset. A second
/// call (tests, a library user) leaves the first one in place.
pub fn init(format: LogFormat, default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => {
            let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            builder.with_ansi(ansi).try_init()
        }
        LogFormat::Json => builder.json().with_current_span(false).try_init(),
    };
}
