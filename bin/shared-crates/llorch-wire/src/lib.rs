//! Wire types of llama-orch: the one definition of every JSON body and SSE event that crosses a
//! process boundary (client ↔ orchestratord ↔ worker, llorch ↔ llorch-pool `--json`).
//!
//! This crate is serde-only on purpose: every binary depends on it, none of its types carry
//! behaviour beyond validation helpers. The contracts are written out in `.specs/`.

#![forbid(unsafe_code)]

pub mod constraint;
pub mod error;
pub mod execute;
pub mod openai;
pub mod openai_logprobs;
pub mod registry;
pub mod routes;
pub mod secret;
pub mod tasks;
pub mod tenancy;
pub mod tools;
pub mod worker;

pub use error::{human_message, ErrorBody, ErrorCode, ErrorEnvelope, FieldError};
pub use execute::{
    ChatMessage, Constraint, ExecuteRequest, Generation, SamplingParams, StopReason, TokenLogprob,
    TopLogprob, WorkerEvent, LIMITS,
};
pub use worker::{
    CancelRequest, CancelResponse, ChatTemplateReport, DetokenizeRequest, DetokenizeResponse,
    TokenizeRequest, TokenizeResponse, WorkerHealth, WorkerMemory, WorkerState,
};
