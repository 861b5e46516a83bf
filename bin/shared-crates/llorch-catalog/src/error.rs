//! Errors of catalog and worker-record handling.

use std::path::PathBuf;

/// What can go wrong reading or changing the pool's state files.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The catalog exists but cannot be parsed; it is left untouched.
    #[error("catalog {path} is unreadable ({reason}); it was not modified: fix or move it away")]
    Unreadable { path: PathBuf, reason: String },
    /// The catalog was written by a newer llorch-pool.
    #[error("catalog {path} has version {found}, this llorch-pool supports up to {supported}; it was not modified")]
    UnsupportedVersion {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    /// A model id that is already in the catalog.
    #[error("model `{0}` already exists in the catalog")]
    AlreadyExists(String),
    /// A model id that is not in the catalog.
    #[error("model `{0}` is not in the catalog (see `llorch-pool models catalog`)")]
    NotFound(String),
    /// A built-in entry cannot be removed.
    #[error("model `{0}` is a built-in catalog entry and cannot be unregistered (use `models rm` to free its files)")]
    BuiltIn(String),
    /// An invalid model id.
    #[error("invalid model id `{0}`: use 1-64 characters from a-z, 0-9, `.`, `_`, `-`, starting with a letter or digit")]
    InvalidId(String),
    /// Filesystem failure on a state file.
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

impl CatalogError {
    /// Wrap an I/O error with the operation and path it concerns.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        CatalogError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}
