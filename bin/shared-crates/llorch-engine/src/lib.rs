//! llorch-engine: everything between a model file and a stream of tokens, with no HTTP types.
//!
//! - [`tokenizer`]: tokenizers built from GGUF metadata or `tokenizer.json`, UTF-8-safe streaming
//!   detokenization.
//! - [`chat`]: the model's own Jinja chat template, rendered with minijinja.

pub mod chat;
pub mod tokenizer;
