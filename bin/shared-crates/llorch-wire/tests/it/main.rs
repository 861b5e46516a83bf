//! llorch-wire's integration tests (one binary): golden JSON fixtures that pin the wire format.

mod golden;
