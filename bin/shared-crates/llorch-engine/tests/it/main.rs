//! Integration tests of the engine with real weights (SmolLM2, Gemma 3) and a tiny random model.
//! One test binary for the crate (each binary links the whole dependency tree).

use std::sync::Arc;

use llorch_engine::model::Kernels;
use llorch_engine::{load, LoadOptions, LoadedModel};

mod arch_fixtures;
mod batching;
mod constrained;
mod gemma3;
mod generic_path;
mod parity;
mod prompt_cache;
mod tiny_model;
mod tokenizer_parity;

/// SmolLM2 on the given compute path (on the device `LLORCH_TEST_DEVICE` names), or `None` (a printed skip; a failure under `CI=true`)
/// without the model.
pub(crate) fn smollm2(test: &str, kernels: Kernels) -> Option<Arc<LoadedModel>> {
    let path = llorch_testkit::require_smollm2(test)?;
    let opts = LoadOptions {
        device: gemma3::device(),
        kernels,
        ..Default::default()
    };
    Some(Arc::new(load(&path, &opts).unwrap()))
}

/// Token ids from a fixture's JSON array.
pub(crate) fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}
