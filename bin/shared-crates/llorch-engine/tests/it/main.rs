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

/// Check a llama.cpp parity fixture (`cases` with `prompt_ids`, `greedy_ids`,
/// `must_match_prefix` and teacher-forced `steps`): each case's free-running greedy prefix, then
/// each step's log-probability within `step_tol` (and the top-1 token where llama.cpp's margin is
/// at least 0.5 nats) and their mean within `mean_tol`. Prints a line per case; fails listing
/// every miss.
pub(crate) fn check_fixture(
    lm: &LoadedModel,
    fx: &serde_json::Value,
    label: &str,
    step_tol: f64,
    mean_tol: f64,
) {
    use llorch_engine::generate::{greedy, teacher_force};
    let mut failures = Vec::new();
    for case in fx["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let prompt = ids(&case["prompt_ids"]);
        let reference = ids(&case["greedy_ids"]);
        let must = case["must_match_prefix"].as_u64().unwrap() as usize;
        let got = greedy(lm, &prompt, reference.len()).unwrap();
        let text = lm.tokenizer.decode(&got, false);
        let matched = got
            .iter()
            .zip(&reference)
            .take_while(|(a, b)| a == b)
            .count();
        if matched < must {
            failures.push(format!(
                "{name}: greedy prefix {matched} < required {must} (got {text:?})"
            ));
        }
        let lps = teacher_force(lm, &prompt, &reference, 2).unwrap();
        let (mut sum, mut worst) = (0.0f64, 0.0f64);
        let steps = case["steps"].as_array().unwrap();
        for (i, (step, lp)) in steps.iter().zip(&lps).enumerate() {
            let d = (lp.logprob as f64 - step["logprob"].as_f64().unwrap()).abs();
            sum += d;
            worst = worst.max(d);
            if d > step_tol {
                failures.push(format!("{name} step {i}: |Δlogprob| {d:.3} > {step_tol}"));
            }
            let top = step["top"].as_array().unwrap();
            let gap = top[0][1].as_f64().unwrap() - top[1][1].as_f64().unwrap();
            if gap >= 0.5 && lp.top[0].id != reference[i] {
                failures.push(format!(
                    "{name} step {i}: top-1 {} != reference {} (gap {gap:.2})",
                    lp.top[0].id, reference[i]
                ));
            }
        }
        let mean = sum / lps.len() as f64;
        if mean > mean_tol {
            failures.push(format!("{name}: mean |Δlogprob| {mean:.3} > {mean_tol}"));
        }
        eprintln!(
            "[{label}] {name}: greedy prefix {matched}/{} (must {must}), mean |Δ| {mean:.4}, max |Δ| {worst:.4}: {text:?}",
            reference.len()
        );
    }
    assert!(
        failures.is_empty(),
        "[{label}] parity failures:\n{}",
        failures.join("\n")
    );
}
