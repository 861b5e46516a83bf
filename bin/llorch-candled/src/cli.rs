//! Command-line interface of the worker.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};

/// Compute backend (`--backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Compute {
    Cpu,
    Cuda,
    Metal,
}

impl Compute {
    /// The `--backend` spelling, also reported by `/health` and at registration.
    pub fn as_str(self) -> &'static str {
        match self {
            Compute::Cpu => "cpu",
            Compute::Cuda => "cuda",
            Compute::Metal => "metal",
        }
    }
}

/// A device spelled `cpu`, `cuda`, `cuda:N`, `metal` or `metal:N` (no index: 0), as
/// `llorch-bench --device` and the engine tests' `LLORCH_TEST_DEVICE` take it: the worker's
/// `--backend` and `--device N` in one word. Open it with [`crate::candle::device`].
pub fn parse_device_spec(spec: &str) -> Result<(Compute, usize), String> {
    let (kind, index) = match spec.split_once(':') {
        Some((k, i)) => (k, Some(i)),
        None => (spec, None),
    };
    let compute = Compute::from_str(kind, true)
        .map_err(|_| format!("unknown device `{spec}` (cpu, cuda:N or metal:N)"))?;
    let index = match index {
        None => 0,
        Some(i) => i
            .parse()
            .map_err(|_| format!("device `{spec}`: `{i}` is not a device index"))?,
    };
    if compute == Compute::Cpu && index != 0 {
        return Err(format!("device `{spec}`: the CPU has no index"));
    }
    Ok((compute, index))
}

/// How weights are run on the CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum WeightMode {
    Auto,
    #[value(name = "q8_0")]
    Q8_0,
    Stored,
}

impl WeightMode {
    /// The engine's policy.
    pub fn requant(self) -> llorch_engine::model::Requant {
        use llorch_engine::model::Requant;
        match self {
            WeightMode::Auto => Requant::Auto,
            WeightMode::Q8_0 => Requant::Q8_0,
            WeightMode::Stored => Requant::Off,
        }
    }

    /// The same policy, as the shared memory estimate names it.
    pub fn policy(self) -> llorch_catalog::runtime::WeightPolicy {
        use llorch_catalog::runtime::WeightPolicy;
        match self {
            WeightMode::Auto => WeightPolicy::Auto,
            WeightMode::Q8_0 => WeightPolicy::Q8_0,
            WeightMode::Stored => WeightPolicy::Stored,
        }
    }
}

/// llama-orch worker: loads ONE model (GGUF file or safetensors directory) and streams tokens
/// over HTTP/SSE (`POST /execute`). The model is loaded before the port is bound, so a worker
/// that answers `GET /health` is ready.
#[derive(Debug, Parser)]
#[command(name = "llorch-candled", version, about, long_about = None)]
pub struct Args {
    /// Model to serve: a .gguf file, or a directory with config.json, tokenizer.json and *.safetensors.
    #[arg(long, env = "LLORCH_MODEL", required_unless_present = "print_backends")]
    pub model: Option<PathBuf>,

    /// Print the compute backends this binary was built with, as JSON
    /// (`{"backends": ["cpu", "cuda"]}`), and exit. `llorch-pool status` asks this so that
    /// placement never picks a GPU backend the worker cannot run.
    #[arg(long)]
    pub print_backends: bool,

    /// TCP port to listen on.
    #[arg(long, default_value_t = 8001)]
    pub port: u16,

    /// Address to bind; loopback unless you say otherwise. A non-loopback address needs
    /// `--api-token`.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,

    /// Bearer token(s) every route but /health requires (comma-separated for several, e.g.
    /// during a rotation; at least 16 characters each). The first is given to the orchestrator
    /// at registration. Prefer the environment variable: arguments are visible to `ps`.
    #[arg(
        long,
        env = "LLORCH_WORKER_TOKEN",
        hide_env_values = true,
        value_delimiter = ',',
        value_name = "TOKEN[,TOKEN]"
    )]
    pub api_token: Vec<String>,

    /// Worker id reported in /health and to the orchestrator (default: worker-<port>).
    #[arg(long)]
    pub worker_id: Option<String>,

    /// Compute backend (cuda and metal need a build with that cargo feature).
    #[arg(long, value_enum, default_value_t = Compute::Cpu)]
    pub backend: Compute,

    /// GPU index for cuda/metal.
    #[arg(long, default_value_t = 0, alias = "gpu")]
    pub device: usize,

    /// Compute threads (default: available cores).
    #[arg(long)]
    pub threads: Option<usize>,

    /// Largest context (prompt + output tokens) to serve; default: the model's, capped at 8192.
    #[arg(long)]
    pub ctx_size: Option<usize>,

    /// Requests that generate at once (continuous batching: one decode step serves them all).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub parallel: u32,

    /// Memory (MiB) for the prompt cache: finished requests' keys and values, kept so a new
    /// prompt that starts the same way (a fixed system prompt, a growing chat) skips that part
    /// of its prefill; the oldest go first; 0 disables.
    #[arg(long, default_value_t = 512, value_name = "MIB")]
    pub prompt_cache_mb: usize,

    /// Refuse to start (INSUFFICIENT_VRAM, naming what to change) when the memory estimate
    /// (weights + KV cache for --ctx-size x --parallel + prompt cache + overhead) exceeds this
    /// many MiB. GPU workers also refuse when the estimate exceeds the device's free memory.
    #[arg(long, value_name = "MIB")]
    pub max_memory_mb: Option<u64>,

    /// Largest request body in bytes; a larger one gets 413 PAYLOAD_TOO_LARGE. The default
    /// (16 MiB) is above orchestratord's own default limit (8 MiB), so whatever the
    /// orchestrator admits reaches the worker.
    #[arg(long, env = "LLORCH_WORKER_MAX_BODY_BYTES", default_value_t = crate::config::DEFAULT_MAX_BODY_BYTES, value_parser = clap::value_parser!(u64).range(1024..))]
    pub max_body_bytes: u64,

    /// Requests that may wait for a free slot; beyond that /execute answers 503 WORKER_BUSY.
    #[arg(long, default_value_t = 16)]
    pub max_queue: u32,

    /// CPU weight handling: `auto` runs Q4_1, Q5_0, Q8_0, Q4_K, Q5_K and Q6_K as stored on the
    /// engine's own AVX2 kernels and converts Q5_1/F16 to Q8_0; `q8_0` converts Q4_1 and Q5_0
    /// too (less exact); `stored` runs every weight as stored with candle's kernels.
    #[arg(long, value_enum, default_value_t = WeightMode::Auto)]
    pub weights: WeightMode,

    /// Compute path: `native` (default) runs the engine's own CPU kernels; `generic` runs, on
    /// any device, exactly the code CUDA and Metal run (candle's matmuls on the stored weight
    /// types, candle's attention, an F32 KV cache). On the CPU `generic` is a test and
    /// debugging aid for the GPU path: slower, and its numbers differ within the GPU tolerance.
    #[arg(
        long,
        env = "LLORCH_KERNELS",
        default_value = "native",
        value_name = "native|generic"
    )]
    pub kernels: llorch_engine::model::Kernels,

    /// Chat template for `messages`: `auto` uses the model's own (or its family's built-in one)
    /// unless a load-time probe finds the model never learned its end-of-turn token (a base
    /// model), then `transcript`; `model` skips the probe; `chatml`, `gemma`, `transcript`
    /// force a built-in one; or the path of a Jinja file.
    #[arg(
        long,
        default_value = "auto",
        value_name = "auto|model|chatml|gemma|transcript|FILE"
    )]
    pub chat_template: llorch_engine::chat_choice::ChatTemplateChoice,

    /// Register with this orchestratord once ready, heartbeat, and deregister on shutdown.
    #[arg(long, env = "LLORCH_ORCHESTRATOR_URL")]
    pub orchestrator_url: Option<String>,

    /// Bearer token for the orchestrator's API (when it requires one).
    #[arg(long, env = "LLORCH_API_TOKEN", hide_env_values = true)]
    pub orchestrator_token: Option<String>,

    /// Model id to register under (default: the model file's name).
    #[arg(long)]
    pub model_id: Option<String>,

    /// URL the orchestrator should use to reach this worker (default: http://HOST:PORT).
    #[arg(long)]
    pub advertise_url: Option<String>,

    #[command(flatten)]
    pub log: llorch_http::logging::LogArgs,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_specs_parse_as_backend_and_index() {
        assert_eq!(parse_device_spec("cpu"), Ok((Compute::Cpu, 0)));
        assert_eq!(parse_device_spec("cuda"), Ok((Compute::Cuda, 0)));
        assert_eq!(parse_device_spec("cuda:3"), Ok((Compute::Cuda, 3)));
        assert_eq!(parse_device_spec("metal:0"), Ok((Compute::Metal, 0)));
        assert!(parse_device_spec("tpu:0")
            .unwrap_err()
            .contains("unknown device"));
        assert!(parse_device_spec("cuda:x")
            .unwrap_err()
            .contains("not a device index"));
        assert!(parse_device_spec("cpu:1").is_err());
    }
}
