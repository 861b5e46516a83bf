//! The command line of `llorch`.

use std::path::PathBuf;

use clap::{ArgAction, Args, Parser, Subcommand};

/// llorch: operate llama-orch pools from one machine.
///
/// `llorch pool ...` runs `llorch-pool` on a host through the system `ssh` (your ~/.ssh/config
/// applies), or locally when no host is chosen. `llorch infer` streams a completion straight from
/// a worker.
#[derive(Debug, Parser)]
#[command(
    name = "llorch",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    /// Config file [default: $LLORCH_CONFIG, else $XDG_CONFIG_HOME/llorch/config.toml]
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// ssh connect timeout in seconds [default: config connect_timeout_s, else 10]
    #[arg(long, global = true, value_name = "SECS")]
    pub connect_timeout: Option<u64>,

    /// Log more (-v debug, -vv trace); RUST_LOG takes precedence
    #[arg(short, long, global = true, action = ArgAction::Count)]
    pub verbose: u8,

    #[command(flatten)]
    pub log: llorch_http::logging::LogArgs,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run llorch-pool on a host (models, workers, backends, status) or manage its checkout
    ///
    /// Everything after `llorch pool` is forwarded to llorch-pool verbatim, except `--host H`,
    /// which may appear anywhere before the first `--`. That `--` is dropped and what follows
    /// goes to llorch-pool untouched. `worker spawn`'s bind address is `--bind ADDR`.
    /// llorch's own options go before the pool action.
    ///
    /// Host: --host, else $LLORCH_REMOTE_HOST, else the config's default_host, else this
    /// machine (`--host local` forces this machine). A host is a profile name from
    /// `llorch hosts` or any ssh destination. The remote exit code becomes llorch's exit
    /// code; 255 means ssh itself failed (the error line names the host and the cause).
    ///
    /// Examples:
    ///   llorch pool models list --host mac --json
    ///   llorch pool worker spawn cpu --model smollm2-135m --host workstation
    ///   llorch pool models --help --host mac     (llorch-pool's own help, from that host)
    #[command(verbatim_doc_comment)]
    Pool(PoolArgs),
    /// Manage host profiles and probe hosts
    #[command(subcommand)]
    Hosts(HostsCommand),
    /// Stream a completion from a worker (POST /execute) or through orchestratord (/v2/tasks)
    ///
    /// Tokens go to stdout as they arrive; a summary (tokens, TTFT, tok/s) goes to stderr.
    /// An `error` event or a rejected job exits 1. Ctrl-C cancels the job (worker: POST /cancel;
    /// orchestrator: POST /v2/tasks/{id}/cancel) and exits 130.
    Infer(InferArgs),
    /// Tasks on orchestratord: submit | status | cancel | list
    Tasks(TasksArgs),
    /// The fleet orchestratord manages: pools, deployments, workers; drain | undrain a pool
    Fleet(FleetArgs),
    /// Tenants on orchestratord (admin token): create | list | show | set (weight and limits)
    Tenants(crate::commands::tenancy::TenantsArgs),
    /// API keys of tenants (admin token): create (shown once) | list | revoke
    Keys(crate::commands::tenancy::KeysArgs),
    /// Tokens and tasks by tenant, model, day and user (GET /v2/usage)
    Usage(crate::commands::tenancy::UsageArgs),
}

/// Where orchestratord is and how to print (shared by its commands).
#[derive(Debug, Args)]
pub struct OrchConn {
    /// orchestratord base URL (token: $LLORCH_API_TOKEN)
    #[arg(
        long,
        global = true,
        value_name = "URL",
        env = "LLORCH_ORCHESTRATOR_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub orchestrator: String,
    /// Print JSON (the API's own bodies)
    #[arg(long, global = true)]
    pub json: bool,
}

/// `llorch fleet ...`.
#[derive(Debug, Args)]
pub struct FleetArgs {
    #[command(flatten)]
    pub conn: OrchConn,
    #[command(subcommand)]
    pub action: FleetAction,
}

/// `llorch fleet` actions.
#[derive(Debug, Subcommand)]
pub enum FleetAction {
    /// Pools (reachability, memory, workers) and deployments (state, replicas, restarts, errors)
    Status,
    /// No new tasks or workers on a pool; its workers stop once their tasks finish
    Drain {
        /// Pool name
        pool: String,
    },
    /// Use a drained pool again
    Undrain {
        /// Pool name
        pool: String,
    },
}

/// `llorch pool [--host H] ARGS...`.
#[derive(Debug, Args)]
pub struct PoolArgs {
    /// Host profile or ssh destination ([user@]host); `local` = this machine
    #[arg(long, global = true, value_name = "HOST")]
    pub host: Option<String>,

    #[command(subcommand)]
    pub command: PoolCommand,
}

#[derive(Debug, Subcommand)]
pub enum PoolCommand {
    /// Models: catalog | list | info | register | unregister | rm | verify | download | import
    Models(PassThrough),
    /// Workers: spawn | list | stop | stop-all | logs | cleanup
    Worker(PassThrough),
    /// Backends the host can run: list
    Backends(PassThrough),
    /// Host summary: backends, models, workers
    Status(PassThrough),
    /// The host's llama-orch checkout: pull | status | build (needs `repo` in the profile)
    Git(GitArgs),
    /// Any other llorch-pool command, forwarded as given
    #[command(external_subcommand)]
    Other(Vec<String>),
}

/// Arguments forwarded to llorch-pool (`--help` shows llorch-pool's own help).
#[derive(Debug, Args)]
#[command(disable_help_flag = true)]
pub struct PassThrough {
    /// Arguments for llorch-pool, passed through verbatim
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "ARGS"
    )]
    pub args: Vec<String>,
}

#[derive(Debug, Args)]
pub struct GitArgs {
    #[command(subcommand)]
    pub action: GitAction,
}

#[derive(Debug, Subcommand)]
pub enum GitAction {
    /// git pull --ff-only, then update submodules
    Pull,
    /// git status (extra arguments are passed to git)
    Status {
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "GIT_ARGS"
        )]
        args: Vec<String>,
    },
    /// cargo build --release of llorch-candled, llorch-pool, orchestratord and llorch
    ///
    /// Backend features come from --features, else the profile's `features`, else detection on
    /// the host (Darwin: metal; nvcc present: cuda; otherwise CPU only).
    Build {
        /// Worker backend features, e.g. cuda or metal (comma-separated or repeated)
        #[arg(long, value_delimiter = ',', value_name = "FEATURE")]
        features: Vec<String>,
        /// Extra cargo arguments
        #[arg(last = true, value_name = "CARGO_ARGS")]
        cargo_args: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum HostsCommand {
    /// Add or replace a host profile
    Add(Box<HostAddArgs>),
    /// List host profiles
    List {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Remove a host profile
    Rm {
        /// Profile name
        name: String,
    },
    /// Probe hosts over ssh: latency, llorch-pool version and status, checkout, cargo
    Check {
        /// Profile names or ssh destinations [default: every profile]
        names: Vec<String>,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
}

/// `llorch hosts add NAME TARGET [options]`
#[derive(Debug, Args)]
pub struct HostAddArgs {
    /// Profile name (letters, digits, '.', '_', '-')
    pub name: String,
    /// ssh destination: host, user@host or an alias from ~/.ssh/config
    pub target: String,
    /// ssh port
    #[arg(long)]
    pub port: Option<u16>,
    /// ssh user
    #[arg(long)]
    pub user: Option<String>,
    /// Private key file
    #[arg(long, value_name = "PATH")]
    pub identity: Option<String>,
    /// Remote llorch-pool binary [default: <repo>/target/release/llorch-pool, else PATH]
    #[arg(long, value_name = "PATH")]
    pub pool_bin: Option<String>,
    /// Remote llama-orch checkout (for `pool git`), e.g. ~/Projects/llama-orch
    #[arg(long, value_name = "PATH")]
    pub repo: Option<String>,
    /// Worker backend features for `pool git build` (cuda, metal)
    #[arg(long = "feature", value_delimiter = ',', value_name = "FEATURE")]
    pub features: Vec<String>,
    /// Environment for remote commands, KEY=VALUE (repeatable), e.g. LLORCH_HOME=~/pool
    #[arg(long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Extra ssh option Name=value (repeatable), e.g. StrictHostKeyChecking=accept-new
    #[arg(long = "ssh-option", value_name = "OPTION")]
    pub ssh_options: Vec<String>,
    /// ssh client config file (ssh -F)
    #[arg(long, value_name = "PATH")]
    pub ssh_config: Option<String>,
    /// Make this the default host
    #[arg(long)]
    pub default: bool,
}

/// `llorch infer`: one job on one worker, or one task through orchestratord.
#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("target").required(true).args(["worker", "orchestrator"]))]
pub struct InferArgs {
    /// Worker address: HOST:PORT or http://HOST:PORT
    #[arg(long, value_name = "HOST:PORT")]
    pub worker: Option<String>,
    /// The worker's API token (with --worker; `llorch pool worker token ID --host H` prints
    /// the token of a pool-spawned worker)
    #[arg(
        long,
        env = "LLORCH_WORKER_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub worker_token: Option<String>,
    /// orchestratord base URL, e.g. http://127.0.0.1:8080 (token: $LLORCH_API_TOKEN)
    #[arg(long, value_name = "URL")]
    pub orchestrator: Option<String>,
    /// Model id or alias (with --orchestrator) [default: the only model it serves]
    #[arg(long, requires = "orchestrator")]
    pub model: Option<String>,
    #[command(flatten)]
    pub gen: GenArgs,
    /// Job id (task id with --orchestrator) [default: llorch-<uuid>]
    #[arg(long)]
    pub job_id: Option<String>,
    /// Print every event as one JSON line on stdout instead of the text
    #[arg(long)]
    pub json: bool,
}

/// What to generate and how to sample (shared by `infer` and `tasks submit`).
#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("input").required(true).args(["prompt", "messages"]))]
pub struct GenArgs {
    /// Raw prompt text
    #[arg(long, short = 'p')]
    pub prompt: Option<String>,
    /// Chat message ROLE:TEXT, repeatable and kept in order (rendered with the model's template)
    #[arg(long = "message", short = 'm', value_name = "ROLE:TEXT")]
    pub messages: Vec<String>,
    /// Most tokens to generate [worker default: 256]
    #[arg(long)]
    pub max_tokens: Option<u32>,
    /// Sampling temperature, 0 = greedy [worker default: 1.0]
    #[arg(long)]
    pub temperature: Option<f32>,
    /// Nucleus sampling mass (0 < p <= 1)
    #[arg(long)]
    pub top_p: Option<f32>,
    /// Keep the k most likely tokens (0 = off)
    #[arg(long)]
    pub top_k: Option<u32>,
    /// Drop tokens below min_p x p(top token)
    #[arg(long)]
    pub min_p: Option<f32>,
    /// Penalty for repeated tokens (1.0 = off)
    #[arg(long)]
    pub repetition_penalty: Option<f32>,
    /// Sampler seed
    #[arg(long)]
    pub seed: Option<u64>,
    /// Stop string (repeatable)
    #[arg(long = "stop", value_name = "TEXT")]
    pub stop: Vec<String>,
}

/// `llorch tasks [--orchestrator URL] ACTION`.
#[derive(Debug, Args)]
pub struct TasksArgs {
    #[command(flatten)]
    pub conn: OrchConn,
    #[command(subcommand)]
    pub action: TasksAction,
}

#[derive(Debug, Subcommand)]
pub enum TasksAction {
    /// Submit a task (POST /v2/tasks); prints its id (stdout) and queue position (stderr)
    Submit(Box<SubmitArgs>),
    /// A task's state, worker, timings and usage
    Status {
        /// Task id
        id: String,
    },
    /// Cancel a task (idempotent; a running task stops on its worker)
    Cancel {
        /// Task id
        id: String,
    },
    /// The most recent tasks, newest first
    List {
        /// Only tasks in this state: queued, running, completed, failed, cancelled
        #[arg(long)]
        state: Option<String>,
        /// How many (1..=1000)
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
}

/// `llorch tasks submit`.
#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// Model id or alias [default: the only model the orchestrator serves]
    #[arg(long)]
    pub model: Option<String>,
    #[command(flatten)]
    pub gen: GenArgs,
    /// interactive (default) or batch
    #[arg(long, value_parser = ["interactive", "batch"])]
    pub priority: Option<String>,
    /// Task id ([A-Za-z0-9._:-], at most 128) [default: generated]
    #[arg(long)]
    pub task_id: Option<String>,
    /// Session tag, recorded with the task
    #[arg(long)]
    pub session_id: Option<String>,
    /// The task must end within this many ms of submission
    #[arg(long)]
    pub deadline_ms: Option<u64>,
}

#[cfg(test)]
mod doc_tests {
    use clap::Parser;

    /// Every `llorch ...` example in the READMEs parses (a renamed flag breaks this test).
    #[test]
    fn readme_commands_parse() {
        let docs = [
            ("README.md", include_str!("../../../README.md")),
            (
                "bin/pool-ctl/README.md",
                include_str!("../../pool-ctl/README.md"),
            ),
        ];
        let mut n = 0;
        for (file, text) in docs {
            for argv in llorch_testkit::doc_commands(text, "llorch") {
                if let Err(e) = super::Cli::try_parse_from(&argv) {
                    panic!("{file}: `{}` does not parse:\n{e}", argv.join(" "));
                }
                n += 1;
            }
        }
        assert!(n >= 5, "found only {n} llorch commands in the READMEs");
    }

    /// Every flag of the synopsis in `.specs/llorch-cli.md` exists.
    #[test]
    fn spec_synopsis_names_real_flags() {
        use clap::CommandFactory;
        let spec = include_str!("../../../.specs/llorch-cli.md");
        let flags = llorch_testkit::doc_flags(spec, "llorch");
        assert!(!flags.is_empty());
        fn longs(cmd: &clap::Command, out: &mut Vec<String>) {
            out.extend(
                cmd.get_arguments()
                    .filter_map(|a| a.get_long().map(String::from)),
            );
            for sub in cmd.get_subcommands() {
                longs(sub, out);
            }
        }
        let mut known = Vec::new();
        longs(&super::Cli::command(), &mut known);
        for f in flags {
            assert!(
                known
                    .iter()
                    .any(|k| Some(k.as_str()) == f.strip_prefix("--")),
                "{f} is in the spec's synopsis but no command has it"
            );
        }
    }
}
