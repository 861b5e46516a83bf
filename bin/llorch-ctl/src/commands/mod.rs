//! One module per top-level command.

pub mod fleet;
pub mod git;
pub mod hosts;
pub mod infer;
pub mod infer_orch;
pub mod pool;
pub mod tasks;
pub mod tenancy;

use std::path::PathBuf;

use crate::config::{self, Config};
use crate::error::CliError;

/// What every command needs: the loaded config and the global flags.
#[derive(Debug)]
pub struct Context {
    pub config_path: PathBuf,
    pub config: Config,
    pub connect_timeout: Option<u64>,
}

impl Context {
    /// Load the config named by `--config` / `LLORCH_CONFIG` / XDG.
    pub fn load(
        flag: Option<&std::path::Path>,
        connect_timeout: Option<u64>,
    ) -> Result<Self, CliError> {
        let config_path = config::config_path(flag);
        let config = config::load(&config_path)?;
        Ok(Self {
            config_path,
            config,
            connect_timeout,
        })
    }
}
