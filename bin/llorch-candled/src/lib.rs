//! llorch-candled as a library: the worker's HTTP layer ([`app`]) over a [`Backend`], the
//! candle engine as one ([`candle::CandleBackend`]), the validated [`Config`], and
//! [`serve`]. The `llorch-candled` binary is [`Config::from_args`] then [`start::run`]; the
//! `fault-worker` binary serves [`fault::FaultBackend`] behind the same routes.
#![forbid(unsafe_code)]

pub mod auth;
pub mod backend;
pub mod candle;
pub mod cli;
pub mod config;
pub mod fault;
pub mod memory;
pub mod metrics;
mod prepare;
pub mod register;
pub mod routes;
pub mod serve;
pub mod start;

pub use backend::{Backend, BackendInfo, EventSink, Load};
pub use config::{Config, OrchestratorConfig, ServerConfig};
pub use routes::{app, AppState, DeviceReport};
pub use serve::serve;

/// The compute backends compiled into this build: `cpu`, then `cuda` and `metal` when built
/// with those cargo features (`--print-backends`).
pub fn compiled_backends() -> Vec<&'static str> {
    let mut b = vec!["cpu"];
    if cfg!(feature = "cuda") {
        b.push("cuda");
    }
    if cfg!(feature = "metal") {
        b.push("metal");
    }
    b
}
