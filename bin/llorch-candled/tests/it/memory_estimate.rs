//! The start-up memory estimate (`llorch_catalog::memory`, from each tensor's loaded size) against
//! what the CPU path really allocates: the loaded model's weights and rotary tables plus one KV
//! cache per slot, on the native path and on the device-generic path GPUs run. Within 10%.
//!
//! Skips locally (fails under CI=true) without the models: `scripts/fetch-test-model.sh all`.

use std::path::Path;

use llorch_catalog::memory::{self, MemoryEstimate};
use llorch_catalog::runtime::{self, WeightPath, WeightPolicy};
use llorch_engine::model::Kernels;
use llorch_engine::LoadOptions;

const CTX: usize = 2048;
const PARALLEL: u32 = 4;

/// (estimate, allocated) in bytes for `model` on `kernels`, printed.
fn estimate_and_allocated(model: &Path, kernels: Kernels) -> (u64, u64) {
    let generic = kernels == Kernels::Generic;
    let path = WeightPath::new("cpu", generic, WeightPolicy::Auto);
    let weights = runtime::model_runtime_bytes(model, path).unwrap();
    let shape = memory::model_shape(model).unwrap();
    let backend = if generic { "cuda" } else { "cpu" };
    let e = MemoryEstimate::new(
        weights,
        shape,
        backend,
        Some(CTX as u64),
        Some(PARALLEL),
        Some(0),
    );
    let opts = LoadOptions {
        max_context: Some(CTX),
        kernels,
        ..LoadOptions::default()
    };
    let lm = llorch_engine::load(model, &opts).unwrap();
    let model_bytes = lm.model.allocated_bytes() as u64;
    let caches: Vec<_> = (0..PARALLEL)
        .map(|_| lm.model.new_cache(CTX).unwrap())
        .collect();
    let cache_bytes: u64 = caches.iter().map(|c| c.allocated_bytes() as u64).sum();
    let estimate = e.weights_bytes + e.rope_bytes + e.kv_cache_bytes;
    let allocated = model_bytes + cache_bytes;
    eprintln!(
        "{} ({kernels}): estimate {estimate} B (weights+rope {} + KV {}), allocated {allocated} B \
         (model {model_bytes} + KV {cache_bytes}): {:+.1}%",
        model.file_name().unwrap().to_string_lossy(),
        e.weights_bytes + e.rope_bytes,
        e.kv_cache_bytes,
        (estimate as f64 - allocated as f64) / allocated as f64 * 100.0
    );
    (estimate, allocated)
}

fn assert_within_10_percent(model: &Path, kernels: Kernels) {
    let (estimate, allocated) = estimate_and_allocated(model, kernels);
    let err = (estimate as f64 - allocated as f64).abs() / allocated as f64;
    assert!(
        err <= 0.10,
        "{} ({kernels}): estimate {estimate} vs allocated {allocated} ({:.1}% off)",
        model.display(),
        err * 100.0
    );
}

#[test]
fn the_estimate_is_within_10_percent_of_what_smollm2_allocates() {
    let test = "the_estimate_is_within_10_percent_of_what_smollm2_allocates";
    let Some(model) = llorch_testkit::require_smollm2(test) else {
        return;
    };
    assert_within_10_percent(&model, Kernels::Native);
    assert_within_10_percent(&model, Kernels::Generic);
}

#[test]
fn the_estimate_is_within_10_percent_of_what_gemma3_allocates() {
    let test = "the_estimate_is_within_10_percent_of_what_gemma3_allocates";
    let Some(model) = llorch_testkit::require_model(test, llorch_testkit::GEMMA3_FILE) else {
        return;
    };
    assert_within_10_percent(&model, Kernels::Native);
    assert_within_10_percent(&model, Kernels::Generic);
}
