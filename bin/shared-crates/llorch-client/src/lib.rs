//! Clients for llama-orch HTTP services.
//!
//! - [`sse`]: an incremental Server-Sent-Events parser (works on any byte stream).
//! - [`worker`]: typed client for a worker's `/execute`, `/cancel`, `/health`, `/tokenize`.

#![forbid(unsafe_code)]

pub mod sse;
pub mod worker;

pub use sse::{SseEvent, SseParser};
pub use worker::{ClientError, WorkerClient};
