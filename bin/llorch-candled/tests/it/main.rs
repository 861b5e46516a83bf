//! Integration tests of the llorch-candled worker binary (real model; skipped locally when absent).
//! One test binary for the crate (each binary links the whole dependency tree).

mod base_model_chat;
mod http_api;
mod limits;
mod startup;
