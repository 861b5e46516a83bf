//! The device-generic path — the code CUDA and Metal run: candle's quantized matmuls on the
//! stored weight types, unfused projections, candle's masked softmax attention, an F32 KV cache —
//! run on the CPU (`Kernels::Generic`), so CI exercises it without a GPU. The same checks as the
//! native path's tests, on the same models and fixtures; where the two paths may differ the
//! tolerance is the one `.specs/worker.md` ("The GPU path") states.
//!
//! Skips locally (fails under CI=true) without the models: `scripts/fetch-test-model.sh all`.

use candle_core::DType;
use llorch_engine::model::Kernels;
use llorch_engine::LoadedModel;

fn assert_generic(lm: &LoadedModel) {
    assert!(!lm.model.is_native(), "the generic path runs");
    assert_eq!(lm.info.kernels, Kernels::Generic);
    assert_eq!(lm.model.kv_dtype(), DType::F32, "an F32 cache, as on a GPU");
    assert_eq!(
        lm.info.runtime_quantization, lm.info.quantization,
        "weights run as stored"
    );
}

#[test]
fn generic_path_matches_llama_cpp() {
    let Some(lm) = crate::smollm2("generic_path_matches_llama_cpp", Kernels::Generic) else {
        return;
    };
    assert_generic(&lm);
    crate::parity::check_parity(&lm, "generic");
}

#[test]
fn generic_path_batches_chunks_caches_and_cancels() {
    let test = "generic_path_batches_chunks_caches_and_cancels";
    let Some(lm) = crate::smollm2(test, Kernels::Generic) else {
        return;
    };
    crate::batching::check_batched_jobs_match_solo(lm.clone(), &crate::batching::PROMPTS, 4);
    crate::batching::check_cancel_isolation(lm.clone());
    crate::batching::check_long_prompt_chunks(lm.clone());
    crate::prompt_cache::check_prompt_cache(lm);
}

#[test]
fn generic_path_runs_gemma3_across_the_sliding_window() {
    let test = "generic_path_runs_gemma3_across_the_sliding_window";
    let Some(lm) = crate::gemma3::gemma_with(test, Kernels::Generic) else {
        return;
    };
    assert_generic(&lm);
    crate::gemma3::check_parity(&lm);
    crate::gemma3::check_recall_past_the_window(&lm);
    crate::gemma3::check_chunks_across_the_window(&lm);
}
