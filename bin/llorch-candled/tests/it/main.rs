//! Integration tests of the llorch-candled worker: the binary with a real model (skipped locally
//! when absent), and its routes in process over a scripted backend (no model).
//! One test binary for the crate (each binary links the whole dependency tree).

mod base_model_chat;
mod http_api;
mod limits;
mod memory_estimate;
mod routes;
mod startup;
