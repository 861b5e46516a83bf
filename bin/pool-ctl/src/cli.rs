//! Command-line interface of `llorch-pool` (clap derive).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Per-host manager of llama-orch: model catalog, verified downloads, worker processes.
///
/// State lives in the pool home (default `$XDG_DATA_HOME/llorch`); downloads go to the standard
/// Hugging Face cache (`HF_HUB_CACHE`/`HF_HOME`), honouring `HF_ENDPOINT` and `HF_TOKEN`.
/// Exit codes: 0 ok, 1 runtime failure, 2 usage error. Logging: `RUST_LOG` (default `warn`).
#[derive(Debug, Parser)]
#[command(name = "llorch-pool", version, propagate_version = true)]
pub struct Cli {
    /// Pool home directory (catalog, worker records, logs).
    #[arg(long, global = true, env = "LLORCH_HOME", value_name = "DIR")]
    pub home: Option<PathBuf>,
    /// Print machine-readable JSON on stdout (shapes documented in `.specs/pool-ctl.md`).
    #[arg(long, global = true)]
    pub json: bool,
    /// No progress bars or informational messages on stderr.
    #[arg(long, short, global = true)]
    pub quiet: bool,
    #[command(flatten)]
    pub log: llorch_http::logging::LogArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Model catalog: known models, downloads, imports.
    #[command(subcommand)]
    Models(ModelsCmd),
    /// Worker processes (`llorch-candled`) on this host.
    #[command(subcommand)]
    Worker(WorkerCmd),
    /// Compute backends of this host.
    #[command(subcommand)]
    Backends(BackendsCmd),
    /// Host, backends, models on disk and workers in one report.
    Status,
}

/// `models ...`
#[derive(Debug, Subcommand)]
pub enum ModelsCmd {
    /// Every known model (built-in and registered), with download state.
    Catalog,
    /// Models whose files are on this host, with size and path.
    List,
    /// Everything about one model.
    Info {
        /// Model id.
        id: String,
    },
    /// Add a model from the Hugging Face hub to the catalog.
    ///
    /// Example: llorch-pool models register qwen-1.5b --repo Qwen/Qwen2.5-1.5B-Instruct-GGUF
    /// --file qwen2.5-1.5b-instruct-q4_k_m.gguf --architecture qwen2
    Register(RegisterArgs),
    /// Remove a registered model from the catalog (its files stay; see `rm`).
    Unregister {
        /// Model id.
        id: String,
    },
    /// Delete a downloaded model's files from the cache (imported files are left in place).
    Rm {
        /// Model id.
        id: String,
    },
    /// Memory one worker of the model needs (weights + KV cache + prompt cache + overhead) and
    /// whether it fits on each device of this host.
    Fit(FitArgs),
    /// Re-hash a model's files and compare with the recorded sha256.
    Verify {
        /// Model id.
        id: String,
    },
    /// Progress of a `models download ID` in flight on this host (bytes done and total);
    /// fails with `no_download` when none runs.
    Progress {
        /// Model id.
        id: String,
    },
    /// Download a model into the Hugging Face cache: resumable, sha256-verified.
    Download {
        /// Model id.
        id: String,
        /// Extra attempts after a dropped connection; each resumes where the last stopped.
        #[arg(long, default_value_t = 5)]
        retries: u32,
        /// Seconds to wait before the first retry (doubled each time).
        #[arg(long, default_value_t = 1.0, value_name = "SECS")]
        retry_delay: f64,
    },
    /// Register a local GGUF file or safetensors directory (validated by reading its metadata).
    ///
    /// A file whose sha256 matches a catalog entry becomes that entry's local copy.
    Import {
        /// `.gguf` file, or directory with `*.safetensors`, `config.json` and `tokenizer.json`.
        path: PathBuf,
        /// Catalog id (default: the matching catalog entry, else derived from the file name).
        #[arg(long)]
        id: Option<String>,
        /// Human-readable name (default: from the metadata).
        #[arg(long)]
        name: Option<String>,
    },
}

/// Arguments of `models fit`.
#[derive(Debug, Args)]
pub struct FitArgs {
    /// Model id.
    pub id: String,
    /// Backend whose devices are checked.
    #[arg(long, value_enum, default_value_t = Backend::Cpu)]
    pub backend: Backend,
    /// Context length per sequence [default: the model's, at most 8192, as the worker does].
    #[arg(long, value_name = "N")]
    pub ctx: Option<u64>,
    /// Sequences generated at once (the worker's --parallel) [default: 4].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=64))]
    pub parallel: Option<u32>,
    /// The worker's prompt cache budget in MiB [default: 512, the worker's default].
    #[arg(long, value_name = "MIB")]
    pub prompt_cache_mb: Option<u64>,
}

/// Weight format for `models register`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    Gguf,
    Safetensors,
}

/// Arguments of `models register`.
#[derive(Debug, Args)]
pub struct RegisterArgs {
    /// Catalog id: a-z, 0-9, `.`, `_`, `-`.
    pub id: String,
    /// Hugging Face repo, `org/name`.
    #[arg(long)]
    pub repo: String,
    /// File to fetch (exact repo path or glob such as `*.safetensors`); repeatable.
    #[arg(long = "file", required = true, value_name = "FILE")]
    pub files: Vec<String>,
    /// Branch, tag or commit.
    #[arg(long, default_value = "main")]
    pub revision: String,
    /// Weight format (default: from the file extension).
    #[arg(long, value_enum)]
    pub format: Option<FormatArg>,
    /// Architecture, e.g. llama, qwen2, phi3, mistral.
    #[arg(long, default_value = "unknown")]
    pub architecture: String,
    /// Human-readable name (default: the repo name).
    #[arg(long)]
    pub name: Option<String>,
    /// Expected sha256 of the single weights file.
    #[arg(long)]
    pub sha256: Option<String>,
    /// Approximate total size in bytes.
    #[arg(long, default_value_t = 0)]
    pub size: u64,
}

/// Compute backend of a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    Cpu,
    Cuda,
    Metal,
}

impl Backend {
    /// `cpu`, `cuda` or `metal`.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Cpu => "cpu",
            Backend::Cuda => "cuda",
            Backend::Metal => "metal",
        }
    }
}

/// `worker ...`
#[derive(Debug, Subcommand)]
pub enum WorkerCmd {
    /// Start a worker and wait until it answers `/health` with status `ready`.
    Spawn(Box<SpawnArgs>),
    /// Recorded workers with liveness, memory and uptime.
    List,
    /// Stop a worker: SIGTERM, then SIGKILL after the grace period; removes its record.
    Stop {
        /// Worker id.
        id: String,
        /// Seconds to wait after SIGTERM before SIGKILL.
        #[arg(long, default_value_t = 10.0, value_name = "SECS")]
        grace: f64,
    },
    /// Stop every recorded worker (in parallel) and remove their records.
    StopAll {
        /// Seconds to wait after SIGTERM before SIGKILL.
        #[arg(long, default_value_t = 10.0, value_name = "SECS")]
        grace: f64,
    },
    /// Print a worker's log.
    Logs {
        /// Worker id.
        id: String,
        /// Keep printing new lines until the worker exits (or Ctrl-C).
        #[arg(long, short)]
        follow: bool,
        /// Print only the last N lines first.
        #[arg(long, short = 'n', value_name = "N")]
        lines: Option<usize>,
    },
    /// Drop the records (and logs) of workers that are no longer running.
    Cleanup,
    /// Print a worker's API token (for `llorch infer --worker-token`).
    Token {
        /// Worker id.
        id: String,
    },
}

/// Arguments of `worker spawn`.
#[derive(Debug, Args)]
pub struct SpawnArgs {
    /// Compute backend; refused when this host lacks it.
    #[arg(value_enum)]
    pub backend: Backend,
    /// Catalog id of a downloaded or imported model.
    #[arg(long)]
    pub model: String,
    /// GPU index for cuda/metal.
    #[arg(long, value_name = "N")]
    pub gpu: Option<u32>,
    /// Port to listen on (default: the first free port from 8001).
    #[arg(long, value_name = "P")]
    pub port: Option<u16>,
    /// Address the worker binds (use 0.0.0.0 to serve other machines). Named `--bind` so it
    /// never clashes with `llorch pool ... --host H`, which picks the machine.
    #[arg(long = "bind", default_value = "127.0.0.1", value_name = "ADDR")]
    pub bind: String,
    /// Compute threads of the worker.
    #[arg(long, value_name = "N")]
    pub threads: Option<u32>,
    /// Requests the worker generates at once (its `--parallel`; default 4).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=64))]
    pub parallel: Option<u32>,
    /// Largest context per sequence (the worker's `--ctx-size`).
    #[arg(long, value_name = "N")]
    pub ctx_size: Option<u64>,
    /// Prompt cache budget in MiB (the worker's `--prompt-cache-mb`).
    #[arg(long, value_name = "MIB")]
    pub prompt_cache_mb: Option<u64>,
    /// Chat template (the worker's `--chat-template`: auto, model, chatml, gemma, transcript
    /// or a .jinja path).
    #[arg(long, value_name = "NAME|FILE")]
    pub chat_template: Option<String>,
    /// Orchestrator the worker registers with.
    #[arg(long, value_name = "URL")]
    pub orchestrator_url: Option<String>,
    /// API token the worker requires on every route but /health (its `LLORCH_WORKER_TOKEN`).
    /// Default: a random one when `--bind` is not a loopback address, none on loopback.
    /// Stored in the worker record (mode 0600); `worker token ID` prints it.
    #[arg(
        long,
        env = "LLORCH_WORKER_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub api_token: Option<String>,
    /// Worker id (default: `<model>-<backend>-<port>`).
    #[arg(long)]
    pub id: Option<String>,
    /// Worker binary (default: `llorch-candled` next to llorch-pool, then on PATH).
    #[arg(long, env = "LLORCH_WORKER_BIN", value_name = "PATH")]
    pub worker_bin: Option<PathBuf>,
    /// Seconds to wait for readiness (default: 60 + 60 per GB of model).
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<f64>,
}

/// `backends ...`
#[derive(Debug, Subcommand)]
pub enum BackendsCmd {
    /// cpu (always), cuda (NVIDIA device present), metal (macOS).
    List,
}

#[cfg(test)]
mod doc_tests {
    use clap::Parser;

    /// Every `llorch-pool ...` example in the READMEs, and every `llorch pool ...` one as the
    /// remote llorch-pool receives it (without `--host H`), parses.
    #[test]
    fn readme_commands_parse() {
        let docs = [
            ("README.md", include_str!("../../../README.md")),
            ("bin/pool-ctl/README.md", include_str!("../README.md")),
        ];
        let mut n = 0;
        for (file, text) in docs {
            let direct = llorch_testkit::doc_commands(text, "llorch-pool");
            let remote = llorch_testkit::doc_commands(text, "llorch")
                .into_iter()
                .filter(|a| a.get(1).map(String::as_str) == Some("pool"))
                .filter(|a| a.get(2).map(String::as_str) != Some("git"))
                .map(|a| {
                    let mut out = vec!["llorch-pool".to_string()];
                    let mut it = a.into_iter().skip(2);
                    while let Some(w) = it.next() {
                        if w == "--host" {
                            it.next();
                        } else if !w.starts_with("--host=") {
                            out.push(w);
                        }
                    }
                    out
                });
            for argv in direct.into_iter().chain(remote) {
                if let Err(e) = super::Cli::try_parse_from(&argv) {
                    panic!("{file}: `{}` does not parse:\n{e}", argv.join(" "));
                }
                n += 1;
            }
        }
        assert!(
            n >= 10,
            "found only {n} llorch-pool commands in the READMEs"
        );
    }
}
