//! Typed errors of llorch-pool, their stable `kind` strings (used in `--json` error output) and
//! exit codes (0 ok, 1 runtime failure, 2 usage error).

use std::path::PathBuf;

use llorch_catalog::CatalogError;

/// Exit code of a runtime failure.
pub const EXIT_FAILURE: i32 = 1;
/// Exit code of a usage error (same as clap's).
pub const EXIT_USAGE: i32 = 2;

/// Everything a llorch-pool command can fail with.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("model `{0}` is not downloaded or imported on this host (run `llorch-pool models download {0}` or `models import`)")]
    NotDownloaded(String),
    #[error("model `{id}` has no Hugging Face repo to download from (it was imported from a local file)")]
    NoRepo { id: String },
    #[error("cannot reach {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error(
        "repository `{repo}` not found on {endpoint} (if it is private or gated, set HF_TOKEN)"
    )]
    RepoNotFound { repo: String, endpoint: String },
    #[error("revision `{revision}` not found in repository `{repo}`")]
    RevisionNotFound { repo: String, revision: String },
    #[error("file `{file}` not found in repository `{repo}` at revision `{revision}`")]
    EntryNotFound {
        repo: String,
        revision: String,
        file: String,
    },
    #[error("access to `{repo}` denied (HTTP {status}): {hint}")]
    AccessDenied {
        repo: String,
        status: u16,
        hint: String,
    },
    #[error("{url}: unexpected HTTP {status}")]
    HttpStatus { url: String, status: u16 },
    #[error("{url}: malformed hub response: {reason}")]
    BadHubResponse { url: String, reason: String },
    #[error("download of `{file}` failed after {attempts} attempt(s): {reason} (run the command again to resume)")]
    DownloadFailed {
        file: String,
        attempts: u32,
        reason: String,
    },
    #[error("checksum mismatch for `{file}`: expected {algo} {expected}, got {actual}; the file was deleted")]
    ChecksumMismatch {
        file: String,
        algo: &'static str,
        expected: String,
        actual: String,
    },
    #[error("`{file}` changed: expected sha256 {expected}, got {actual}")]
    VerifyFailed {
        file: String,
        expected: String,
        actual: String,
    },
    #[error("{path}: not a usable model: {reason}")]
    InvalidModel { path: PathBuf, reason: String },
    #[error("backend `{backend}` is not available on this host: {detail}")]
    BackendUnavailable { backend: String, detail: String },
    #[error("worker binary `llorch-candled` not found (looked in: {searched}); build it or pass --worker-bin / LLORCH_WORKER_BIN")]
    WorkerBinNotFound { searched: String },
    #[error("no worker `{0}` on this host (see `llorch-pool worker list`)")]
    WorkerNotFound(String),
    #[error("worker `{id}` already exists and is running (pid {pid})")]
    WorkerExists { id: String, pid: u32 },
    #[error("worker `{id}` failed to start: {reason}\n--- last lines of {log} ---\n{tail}")]
    WorkerFailed {
        id: String,
        reason: String,
        log: PathBuf,
        tail: String,
    },
    #[error("no download of `{0}` in flight on this host")]
    NoDownload(String),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Usage(String),
}

impl PoolError {
    /// Wrap an I/O error with the operation and path it concerns.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        PoolError::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// Stable snake_case kind for `--json` error output.
    pub fn kind(&self) -> &'static str {
        match self {
            PoolError::Catalog(e) => match e {
                CatalogError::Unreadable { .. } => "catalog_unreadable",
                CatalogError::UnsupportedVersion { .. } => "catalog_version",
                CatalogError::AlreadyExists(_) => "model_exists",
                CatalogError::NotFound(_) => "model_not_found",
                CatalogError::BuiltIn(_) => "model_builtin",
                CatalogError::InvalidId(_) => "invalid_id",
                CatalogError::Io { .. } => "io",
            },
            PoolError::NotDownloaded(_) => "model_not_downloaded",
            PoolError::NoRepo { .. } => "no_repo",
            PoolError::Unreachable { .. } => "hub_unreachable",
            PoolError::RepoNotFound { .. } => "repo_not_found",
            PoolError::RevisionNotFound { .. } => "revision_not_found",
            PoolError::EntryNotFound { .. } => "file_not_found",
            PoolError::AccessDenied { .. } => "access_denied",
            PoolError::HttpStatus { .. } | PoolError::BadHubResponse { .. } => "hub_error",
            PoolError::DownloadFailed { .. } => "download_failed",
            PoolError::ChecksumMismatch { .. } => "checksum_mismatch",
            PoolError::VerifyFailed { .. } => "verify_failed",
            PoolError::InvalidModel { .. } => "invalid_model",
            PoolError::BackendUnavailable { .. } => "backend_unavailable",
            PoolError::WorkerBinNotFound { .. } => "worker_bin_not_found",
            PoolError::WorkerNotFound(_) => "worker_not_found",
            PoolError::WorkerExists { .. } => "worker_exists",
            PoolError::WorkerFailed { .. } => "worker_failed",
            PoolError::NoDownload(_) => "no_download",
            PoolError::Io { .. } => "io",
            PoolError::Usage(_) => "usage",
        }
    }

    /// Process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            PoolError::Usage(_) | PoolError::Catalog(CatalogError::InvalidId(_)) => EXIT_USAGE,
            _ => EXIT_FAILURE,
        }
    }
}

/// Result alias of llorch-pool.
pub type Result<T, E = PoolError> = std::result::Result<T, E>;
