//! Integration tests of the llorch CLI: real sshd on loopback, real pools, workers and orchestratord.
//! One test binary for the crate (each binary links the whole dependency tree).

mod common;
mod git_remote;
mod infer;
mod pool_e2e;
mod ssh_transport;
mod tasks;
