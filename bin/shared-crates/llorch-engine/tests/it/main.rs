//! Integration tests of the engine with real weights (SmolLM2, Gemma 3) and a tiny random model.
//! One test binary for the crate (each binary links the whole dependency tree).

mod batching;
mod constrained;
mod gemma3;
mod parity;
mod prompt_cache;
mod tiny_model;
mod tokenizer_parity;
