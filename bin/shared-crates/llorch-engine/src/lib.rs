//! llorch-engine: everything between a model file and a stream of tokens, with no HTTP types.
//!
//! - [`load`]: open a GGUF file or safetensors directory (validated, clear errors).
//! - [`model`]: the transformer forward pass with per-sequence KV caches.
//! - [`tokenizer`]: tokenizers built from GGUF metadata or `tokenizer.json`, UTF-8-safe streaming
//!   detokenization.
//! - [`chat`]: the model's own Jinja chat template, rendered with minijinja.
//! - [`chat_choice`]: which template a model is served with, and the probe that spots base models.
//! - [`sampler`], [`stop`], [`generate`]: sampling, stop strings, the generation loop.
//! - [`engine`]: the engine thread: continuous batching, bounded queue, cancellation.
//! - [`prompt_cache`]: finished sequences' keys and values, reused by prompts with that prefix.
//! - [`export`]: write a GGUF model out as a safetensors directory.

pub mod chat;
pub mod chat_choice;
pub mod engine;
pub mod events;
pub mod export;
pub mod generate;
pub mod load;
pub mod model;
pub mod prefill;
pub mod prompt_cache;
pub mod sampler;
pub mod schedule;
pub mod stop;
pub mod tiny;
pub mod tokenizer;

pub use engine::{Engine, EngineOptions, SubmitError};
pub use events::{EngineEvent, Failure};
pub use generate::{EventSink, Job};
pub use load::{load, LoadOptions, LoadedModel, ModelInfo};

/// CPU SIMD features this build was compiled with (candle picks kernels at compile time).
pub fn simd_features() -> Vec<String> {
    let mut f = Vec::new();
    macro_rules! feat {
        ($($name:literal),*) => {$( if cfg!(target_feature = $name) { f.push($name.to_string()); } )*};
    }
    feat!(
        "sse4.2",
        "avx",
        "avx2",
        "fma",
        "f16c",
        "avx512f",
        "avx512bw",
        "avx512vnni",
        "neon"
    );
    f
}
