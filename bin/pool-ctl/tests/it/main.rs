//! Integration tests of llorch-pool: catalog, downloads from a local hub-layout server, workers.
//! One test binary for the crate (each binary links the whole dependency tree).

mod catalog;
mod download;
mod gpus;
mod support;
mod workers;
