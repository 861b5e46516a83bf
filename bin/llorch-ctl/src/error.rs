//! The errors llorch reports (one line each) and the exit codes they map to.

use std::path::PathBuf;

/// Exit code for a usage error (same as clap's).
pub const EXIT_USAGE: u8 = 2;
/// Exit code when ssh could not reach or log into a host (the code ssh itself uses).
pub const EXIT_SSH: u8 = 255;
/// Exit code after Ctrl-C (128 + SIGINT).
pub const EXIT_INTERRUPTED: u8 = 130;

/// Everything that makes llorch fail on its own (a remote command's failure is not an error:
/// its exit code is passed through).
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// ssh could not run the command: unreachable, refused, auth, host key, no `ssh`...
    #[error(transparent)]
    Ssh(#[from] llorch_ssh::SshError),
    /// The config file is unreadable, malformed or could not be written.
    #[error("config {}: {message}", .path.display())]
    Config { path: PathBuf, message: String },
    /// A bad command line that clap could not catch.
    #[error("{0}")]
    Usage(String),
    /// The local `llorch-pool` could not be started.
    #[error("cannot run local llorch-pool ({}): {source}", .path.display())]
    LocalPool {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The worker could not be reached or refused the job.
    #[error("worker {worker}: {message}")]
    Worker { worker: String, message: String },
    /// The worker sent an `error` event.
    #[error("job {job_id} failed on worker {worker} after {tokens_out} tokens: {code}: {message}{}",
        if *.retriable { " (retriable)" } else { "" })]
    Job {
        worker: String,
        job_id: String,
        code: String,
        message: String,
        retriable: bool,
        tokens_out: u32,
    },
    /// orchestratord could not be reached or refused the request.
    #[error("orchestrator {url}: {message}")]
    Orchestrator { url: String, message: String },
    /// The task ended with an `error` event.
    #[error("task {task_id} failed after {tokens_out} tokens: {code}: {message}{}",
        if *.retriable { " (retriable)" } else { "" })]
    Task {
        task_id: String,
        code: String,
        message: String,
        retriable: bool,
        tokens_out: u32,
    },
    /// A local resource (runtime, helper program) failed.
    #[error("{0}")]
    Local(String),
    /// One or more hosts failed `hosts check`; the report was already printed.
    #[error("{0}")]
    CheckFailed(String),
}

impl CliError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Ssh(_) => EXIT_SSH,
            CliError::Usage(_) => EXIT_USAGE,
            _ => 1,
        }
    }
}

pub use llorch_ssh::ssh::exit_code_of;

/// Result of a command: the exit code to return, or an error to print.
pub type CliResult = Result<u8, CliError>;
