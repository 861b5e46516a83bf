//! Limits of the HTTP server: request body and head size, idle (keep-alive) connections,
//! concurrent connections, SSE streams per task. Flags `--max-body-bytes` etc. (environment
//! `LLORCH_ORCH_MAX_BODY_BYTES` …) or the config file's `[limits]` table; `.specs/orchestratord.md`
//! "Limits" documents each one and its answer.

use serde::Deserialize;

/// The limits' flags (flattened into [`crate::config::Args`]).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct LimitArgs {
    /// Largest request body in bytes (default 8388608); larger: 413 PAYLOAD_TOO_LARGE.
    #[arg(long, env = "LLORCH_ORCH_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Largest request line + headers in bytes (default 65536); larger: 431.
    #[arg(long, env = "LLORCH_ORCH_MAX_HEADER_BYTES")]
    pub max_header_bytes: Option<usize>,
    /// Open SSE streams per task (default 16); one more: 429 TOO_MANY_SUBSCRIBERS.
    #[arg(long, env = "LLORCH_ORCH_MAX_SUBSCRIBERS_PER_TASK")]
    pub max_subscribers_per_task: Option<u32>,
    /// A connection without a complete request head for this long is closed: idle keep-alive
    /// connections and clients that send headers too slowly (default 30000).
    #[arg(long, env = "LLORCH_ORCH_IDLE_TIMEOUT_MS")]
    pub idle_timeout_ms: Option<u64>,
    /// Client connections served at once (default 1024); more wait in the listen backlog.
    #[arg(long, env = "LLORCH_ORCH_MAX_CONNECTIONS")]
    pub max_connections: Option<u32>,
}

/// The config file's `[limits]` table: the flags' names with `_`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsFile {
    pub max_body_bytes: Option<usize>,
    pub max_header_bytes: Option<usize>,
    pub max_subscribers_per_task: Option<u32>,
    pub idle_timeout_ms: Option<u64>,
    pub max_connections: Option<u32>,
}

/// Validated limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest request body (bytes).
    pub max_body_bytes: usize,
    /// Largest request head: request line and headers (bytes).
    pub max_header_bytes: usize,
    /// Open SSE streams per task (subscribers and observers together).
    pub max_subscribers_per_task: u32,
    /// Longest wait for a complete request head on an open connection (ms).
    pub idle_timeout_ms: u64,
    /// Client connections served at once.
    pub max_connections: u32,
}

/// Hyper's smallest read buffer: a head limit below it cannot be enforced.
pub const MIN_HEADER_BYTES: usize = 8192;

impl Default for Limits {
    fn default() -> Self {
        Self {
            // a 1M-character prompt in UTF-8, plus JSON
            max_body_bytes: 8 << 20,
            max_header_bytes: 64 << 10,
            max_subscribers_per_task: 16,
            idle_timeout_ms: 30_000,
            max_connections: 1024,
        }
    }
}

impl Limits {
    /// Flags over the file's `[limits]` over the defaults.
    pub fn merge(args: &LimitArgs, file: Option<LimitsFile>) -> Limits {
        let f = file.unwrap_or_default();
        let d = Limits::default();
        Limits {
            max_body_bytes: args
                .max_body_bytes
                .or(f.max_body_bytes)
                .unwrap_or(d.max_body_bytes),
            max_header_bytes: args
                .max_header_bytes
                .or(f.max_header_bytes)
                .unwrap_or(d.max_header_bytes),
            max_subscribers_per_task: args
                .max_subscribers_per_task
                .or(f.max_subscribers_per_task)
                .unwrap_or(d.max_subscribers_per_task),
            idle_timeout_ms: args
                .idle_timeout_ms
                .or(f.idle_timeout_ms)
                .unwrap_or(d.idle_timeout_ms),
            max_connections: args
                .max_connections
                .or(f.max_connections)
                .unwrap_or(d.max_connections),
        }
    }

    /// Ranges; the message names the setting and its range.
    pub fn validate(&self) -> Result<(), String> {
        if !(1024..=1 << 30).contains(&self.max_body_bytes) {
            return Err("max_body_bytes must be between 1024 and 1073741824".into());
        }
        if !(MIN_HEADER_BYTES..=16 << 20).contains(&self.max_header_bytes) {
            return Err(format!(
                "max_header_bytes must be between {MIN_HEADER_BYTES} and 16777216"
            ));
        }
        if !(1..=10_000).contains(&self.max_subscribers_per_task) {
            return Err("max_subscribers_per_task must be between 1 and 10000".into());
        }
        if !(100..=3_600_000).contains(&self.idle_timeout_ms) {
            return Err("idle_timeout_ms must be between 100 and 3600000".into());
        }
        if !(4..=1_000_000).contains(&self.max_connections) {
            return Err("max_connections must be between 4 and 1000000".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_beat_the_file_and_ranges_are_checked() {
        let file: LimitsFile =
            toml::from_str("max_body_bytes = 4096\nmax_connections = 8\n").unwrap();
        let args = LimitArgs {
            max_connections: Some(16),
            ..Default::default()
        };
        let l = Limits::merge(&args, Some(file));
        assert_eq!((l.max_body_bytes, l.max_connections), (4096, 16));
        assert_eq!(l.idle_timeout_ms, 30_000);
        assert!(l.validate().is_ok());
        let small = Limits {
            max_header_bytes: 100,
            ..Limits::default()
        };
        assert!(small.validate().unwrap_err().contains("max_header_bytes"));
        assert!(toml::from_str::<LimitsFile>("max_body = 1").is_err());
    }
}
