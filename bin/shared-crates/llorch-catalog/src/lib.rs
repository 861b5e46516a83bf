//! State of one `llorch-pool` host: the versioned model catalog, the built-in model entries,
//! worker records, and the serde shapes that `llorch-pool ... --json` prints.
//!
//! Everything here is plain data plus file handling (locking, atomic replace), the host
//! inventory ([`machine`]) and the worker memory estimate ([`memory`]) that `llorch-pool` and
//! the worker share; downloading and process control live in `pool-ctl`. `llorch` and `orchestratord` can
//! depend on this crate to parse the pool's `--json` output (documented in `.specs/pool-ctl.md`).

pub mod builtin;
pub mod error;
pub mod gguf;
pub mod home;
pub mod machine;
pub mod memory;
pub mod model;
pub mod runtime;
pub mod store;
pub mod views;
pub mod workers;

pub use builtin::builtin_models;
pub use error::CatalogError;
pub use home::PoolHome;
pub use model::{LocalFile, LocalModel, ModelFormat, ModelSource, ModelSpec};
pub use store::{Catalog, CatalogStore, CATALOG_VERSION};
pub use views::{
    BackendView, DeviceFit, DownloadProgress, ErrorView, FitView, GpuView, MachineView, ModelView,
    StatusView, WorkerView,
};
pub use workers::{WorkerRecord, WorkerStore};

/// Seconds since the Unix epoch (0 if the clock is before 1970).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
