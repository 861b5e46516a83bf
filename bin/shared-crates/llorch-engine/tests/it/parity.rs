//! Parity with llama.cpp on SmolLM2-135M Q4_1 (`fixtures/smollm2-greedy.json`), following the
//! fixture's `parity_rule`: exact free-running greedy prefix, and teacher-forced log-probabilities
//! within tolerance. Run for the GGUF path and for the same weights exported to safetensors.

use std::path::Path;

use llorch_engine::generate::teacher_force;
use llorch_engine::{load, LoadOptions, LoadedModel};

use crate::ids;

/// Free-running greedy generation of `n` tokens (stops at a stop id).
fn greedy(lm: &LoadedModel, prompt: &[u32], n: usize) -> Vec<u32> {
    llorch_engine::generate::greedy(lm, prompt, n).unwrap()
}

/// Check every fixture case; returns a report line per case.
pub(crate) fn check_parity(lm: &LoadedModel, label: &str) {
    let fx = llorch_testkit::smollm2_fixture();
    let mut failures = Vec::new();
    for case in fx["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let prompt = ids(&case["prompt_ids"]);
        let reference = ids(&case["greedy_ids"]);
        let must = case["must_match_prefix"].as_u64().unwrap() as usize;
        // (1) free-running greedy prefix
        let got = greedy(lm, &prompt, reference.len());
        let matched = got
            .iter()
            .zip(&reference)
            .take_while(|(a, b)| a == b)
            .count();
        if matched < must {
            failures.push(format!(
                "{name}: greedy prefix {matched} < required {must} (got {:?})",
                &got[..got.len().min(12)]
            ));
        }
        // (2) teacher forcing
        let steps = case["steps"].as_array().unwrap();
        let lps = teacher_force(lm, &prompt, &reference, 2).unwrap();
        let mut sum = 0.0f64;
        let mut worst = 0.0f64;
        for (i, (step, lp)) in steps.iter().zip(&lps).enumerate() {
            let ref_lp = step["logprob"].as_f64().unwrap();
            let d = (lp.logprob as f64 - ref_lp).abs();
            sum += d;
            worst = worst.max(d);
            if d > 0.6 {
                failures.push(format!("{name} step {i}: |Δlogprob| {d:.3} > 0.6"));
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
        if mean > 0.10 {
            failures.push(format!("{name}: mean |Δlogprob| {mean:.3} > 0.10"));
        }
        eprintln!("[{label}] {name}: greedy prefix {matched}/{} (must {must}), mean |Δ| {mean:.4}, max |Δ| {worst:.4}", reference.len());
    }
    assert!(
        failures.is_empty(),
        "[{label}] parity failures:\n{}",
        failures.join("\n")
    );
}

#[test]
fn gguf_matches_llama_cpp() {
    let Some(path) = llorch_testkit::require_smollm2("gguf_matches_llama_cpp") else {
        return;
    };
    let lm = load(&path, &LoadOptions::default()).unwrap();
    // An instruction-tuned model keeps its own template: the probe finds `<|im_end|>` learned.
    let chat = &lm.info.chat_template;
    assert_eq!(chat.name, "model", "{chat:?}");
    let probe = chat.probe.as_ref().expect("the probe ran");
    assert_eq!(probe.token, "<|im_end|>");
    assert!(probe.logprob > -5.0, "{probe:?}");
    check_parity(&lm, "gguf");
}

#[test]
fn gguf_matches_llama_cpp_with_stored_weight_types() {
    let Some(path) =
        llorch_testkit::require_smollm2("gguf_matches_llama_cpp_with_stored_weight_types")
    else {
        return;
    };
    let opts = LoadOptions {
        requant: llorch_engine::model::Requant::Off,
        ..Default::default()
    };
    let lm = load(&path, &opts).unwrap();
    check_parity(&lm, "gguf-q4_1");
}

#[test]
fn safetensors_export_matches_llama_cpp() {
    let Some(path) = llorch_testkit::require_smollm2("safetensors_export_matches_llama_cpp") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    llorch_engine::export::gguf_to_safetensors(&path, dir.path()).unwrap();
    for f in ["config.json", "tokenizer.json", "model.safetensors"] {
        assert!(Path::new(&dir.path().join(f)).is_file(), "{f} written");
    }
    // Exact weights (F32, as exported). The CPU default converts safetensors matrices to Q8_0
    // for speed, which costs precision: measured mean |Δ| up to 0.107 nats on chat-primes.
    let opts = LoadOptions {
        requant: llorch_engine::model::Requant::Off,
        ..Default::default()
    };
    let lm = load(dir.path(), &opts).unwrap();
    assert_eq!(lm.info.format, "safetensors");
    check_parity(&lm, "safetensors");
}
