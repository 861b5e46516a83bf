//! Integration tests of orchestratord with real processes: the orchestratord binary, real
//! `llorch-candled` workers with SmolLM2 (skipped locally until built; required under CI), and
//! the `fault-worker` binary for failure injection.

mod api;
mod common;
mod crash;
mod dashboard;
mod faults;
mod fleet;
mod limits;
mod openai;
mod policy;
mod real;
mod reliability;
mod routes;
mod soak;
mod state;
mod tenancy;
