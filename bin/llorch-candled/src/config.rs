//! The worker's configuration, validated from the command line ([`Args`]) before anything slow
//! runs: the API tokens, the bind address (a [`SocketAddr`]; IPv6 literals with or without
//! brackets), the compute threads.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use anyhow::{Context, Result};
use llorch_engine::chat_choice::ChatTemplateChoice;
use llorch_engine::model::Kernels;

use crate::auth::ApiTokens;
use crate::cli::{Args, Compute, WeightMode};

/// Everything the HTTP server needs: where to listen, who may call, how to register.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub bind: SocketAddr,
    pub tokens: ApiTokens,
    /// Reported in `/health` and to the orchestrator.
    pub worker_id: String,
    /// URL the orchestrator uses to reach this worker.
    pub advertise_url: String,
    /// Register with this orchestrator once ready (None: stand-alone).
    pub orchestrator: Option<OrchestratorConfig>,
    /// Largest request body (413 `PAYLOAD_TOO_LARGE` above it).
    pub max_body_bytes: usize,
}

/// The worker's default request body limit: 16 MiB, above orchestratord's 8 MiB default.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 16 << 20;

/// Registration with orchestratord.
#[derive(Debug, Clone)]
pub struct OrchestratorConfig {
    pub url: String,
    /// Bearer token for the orchestrator's API.
    pub token: Option<String>,
    /// Model id to register under (default: the model's name, see [`crate::BackendInfo`]).
    pub model_id: Option<String>,
}

impl ServerConfig {
    /// Validate where and how to listen: a non-loopback `host` needs a token (checked before the
    /// name is resolved); `worker_id` defaults to `worker-PORT`, `advertise_url` to
    /// `http://HOST:PORT` (an IPv6 address in brackets).
    pub fn new(
        host: &str,
        port: u16,
        tokens: ApiTokens,
        worker_id: Option<String>,
        advertise_url: Option<String>,
        orchestrator: Option<OrchestratorConfig>,
    ) -> Result<ServerConfig> {
        crate::auth::check_bind(host, &tokens)?;
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let literal = bare.parse::<IpAddr>().ok();
        let bind = match literal {
            Some(ip) => SocketAddr::new(ip, port),
            None => (bare, port)
                .to_socket_addrs()
                .with_context(|| format!("--host {host}: cannot resolve the name"))?
                .next()
                .with_context(|| format!("--host {host}: the name has no address"))?,
        };
        let advertise_url = advertise_url.unwrap_or_else(|| match literal {
            Some(_) => format!("http://{bind}"),
            None => format!("http://{bare}:{port}"),
        });
        Ok(ServerConfig {
            bind,
            tokens,
            worker_id: worker_id.unwrap_or_else(|| format!("worker-{port}")),
            advertise_url,
            orchestrator,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES as usize,
        })
    }
}

/// The real worker's configuration: the server's, the model, compute and engine settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub model: PathBuf,
    pub compute: Compute,
    /// GPU index for cuda/metal.
    pub device: usize,
    /// Compute threads (at least 1).
    pub threads: usize,
    pub ctx_size: Option<usize>,
    pub parallel: u32,
    pub max_queue: u32,
    pub prompt_cache_mb: usize,
    pub max_memory_mb: Option<u64>,
    pub weights: WeightMode,
    /// `native` or `generic` (the GPU code path, on any device).
    pub kernels: Kernels,
    pub chat_template: ChatTemplateChoice,
}

impl Config {
    /// Validate the command line; fails fast (before the model load) on a bad token, a
    /// network bind without one, or a host that does not resolve.
    pub fn from_args(args: Args) -> Result<Config> {
        let tokens = ApiTokens::new(&args.api_token)?;
        let orchestrator = args.orchestrator_url.map(|url| OrchestratorConfig {
            url,
            token: args.orchestrator_token,
            model_id: args.model_id,
        });
        let mut server = ServerConfig::new(
            &args.host,
            args.port,
            tokens,
            args.worker_id,
            args.advertise_url,
            orchestrator,
        )?;
        server.max_body_bytes = usize::try_from(args.max_body_bytes).unwrap_or(usize::MAX);
        let threads = args
            .threads
            .unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(1)
            })
            .max(1);
        Ok(Config {
            server,
            model: args
                .model
                .ok_or_else(|| anyhow::anyhow!("--model is required"))?,
            compute: args.backend,
            device: args.device,
            threads,
            ctx_size: args.ctx_size,
            parallel: args.parallel,
            max_queue: args.max_queue,
            prompt_cache_mb: args.prompt_cache_mb,
            max_memory_mb: args.max_memory_mb,
            weights: args.weights,
            kernels: args.kernels,
            chat_template: args.chat_template,
        })
    }

    /// `cpu`, or e.g. `cuda:0`.
    pub fn device_name(&self) -> String {
        match self.compute {
            Compute::Cpu => "cpu".to_string(),
            c => format!("{}:{}", c.as_str(), self.device),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn config(extra: &[&str]) -> Result<Config> {
        let mut v = vec!["llorch-candled", "--model", "m.gguf"];
        v.extend_from_slice(extra);
        Config::from_args(Args::parse_from(v))
    }

    #[test]
    fn bind_addresses_and_defaults() {
        let c = config(&["--port", "9001"]).unwrap();
        assert_eq!(c.server.bind, "127.0.0.1:9001".parse().unwrap());
        assert_eq!(c.server.worker_id, "worker-9001");
        assert_eq!(c.server.advertise_url, "http://127.0.0.1:9001");
        assert!(c.threads >= 1);
        for host in ["::1", "[::1]"] {
            let c = config(&["--host", host, "--port", "9002", "--threads", "0"]).unwrap();
            assert_eq!(c.server.bind, "[::1]:9002".parse().unwrap(), "{host}");
            assert_eq!(c.server.advertise_url, "http://[::1]:9002");
            assert_eq!(c.threads, 1);
        }
        let c = config(&["--host", "localhost", "--port", "9003"]).unwrap();
        assert!(c.server.bind.ip().is_loopback());
        assert_eq!(c.server.advertise_url, "http://localhost:9003");
        let c = config(&["--advertise-url", "http://w1:8001", "--worker-id", "w1"]).unwrap();
        assert_eq!(
            (c.server.advertise_url.as_str(), c.server.worker_id.as_str()),
            ("http://w1:8001", "w1")
        );
    }

    #[test]
    fn refusals_name_the_flag() {
        let e = config(&["--host", "::"]).unwrap_err().to_string();
        assert!(e.contains("refusing to listen"), "{e}");
        let e = config(&["--api-token", "short"]).unwrap_err().to_string();
        assert!(e.contains("at least 16 characters"), "{e}");
        let token = "a-token-of-sufficient-length";
        let c = config(&["--host", "::", "--api-token", token]).unwrap();
        assert!(c.server.bind.ip().is_unspecified() && c.server.tokens.required());
    }
}
