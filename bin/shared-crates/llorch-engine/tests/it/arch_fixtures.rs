//! Every architecture against llama.cpp without a download: the tiny random-weight models of
//! `llorch_engine::tiny` (Llama with Q4_K, Llama 3 RoPE factors with Q8_0, Qwen2 biases with Q5_K,
//! Phi-3 fused projections with Q6_K, Gemma 3 with its norms, tied embeddings, GELU and a 128-token sliding
//! window crossed by the long prompt, in Q5_0, Mistral with grouped-query attention in Q4_1, its
//! safetensors export declared `mistral` with a `sliding_window`) are written again here, checked byte-identical to the file
//! llama.cpp evaluated, and run on both compute paths (native kernels and the device-generic GPU
//! path). `fixtures/arch-*.json` (from `scripts/arch-fixtures.py`) hold llama.cpp's
//! log-probabilities at every position of a short and a 629-token prompt.
//!
//! Each prompt is checked twice: decoding from its first token (every position a single-token
//! step) and after a prefill of all but its last 8 tokens. Per position: the log-probability of
//! the prompt's next token within the tolerance below, and the same top-1 token wherever llama.cpp's
//! top-2 gap is at least 0.5.

use std::path::Path;

use llorch_engine::generate::teacher_force;
use llorch_engine::model::Kernels;
use llorch_engine::tiny::{write_gguf, TinyArch};
use llorch_engine::{load, LoadOptions};
use serde_json::Value;

use crate::ids;

/// Largest |Δ logprob| at one position, and the largest mean over a run. Random weights give
/// sharp distributions (next-token log-probabilities down to about -40), so a small relative
/// error is a large absolute one: the bound is absolute plus 2% of the reference's magnitude.
const STEP_ABS: f64 = 0.5;
const STEP_REL: f64 = 0.02;
const MEAN: f64 = 0.10;

fn fnv1a64(path: &Path) -> String {
    let mut h: u64 = 0xCBF29CE484222325;
    for b in std::fs::read(path).unwrap() {
        h = (h ^ b as u64).wrapping_mul(0x100000001B3);
    }
    format!("{h:016x}")
}

/// The GGUF as written.
fn check(arch: TinyArch) {
    check_as(arch, false);
}

/// The same weights exported to a safetensors directory (F32, HF names and layout) and loaded
/// through the safetensors path, against the same llama.cpp reference.
fn check_safetensors(arch: TinyArch) {
    check_as(arch, true);
}

fn check_as(arch: TinyArch, safetensors: bool) {
    let format = if safetensors { "safetensors" } else { "gguf" };
    let test = format!("arch_fixtures::{}::{format}", arch.name());
    let Some(tokenizer) = llorch_testkit::require_smollm2(&test) else {
        return;
    };
    let fx_path = llorch_testkit::fixture(&format!("arch-{}.json", arch.name()));
    let fx: Value = serde_json::from_str(&std::fs::read_to_string(&fx_path).unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join(format!("{}.gguf", arch.name()));
    write_gguf(arch, &tokenizer, &model).unwrap();
    assert_eq!(
        (fnv1a64(&model), std::fs::metadata(&model).unwrap().len()),
        (
            fx["model_fnv1a64"].as_str().unwrap().to_string(),
            fx["model_bytes"].as_u64().unwrap()
        ),
        "{test}: the tiny model's bytes changed since the fixture was written; \
         regenerate it with scripts/arch-fixtures.py"
    );
    let model = if safetensors {
        let out = dir.path().join(format!("{}-safetensors", arch.name()));
        llorch_engine::export::gguf_to_safetensors(&model, &out).unwrap();
        if arch == TinyArch::Mistral {
            // a window wider than the prompts: the window code runs, llama.cpp's reference holds
            declare_mistral(&out, Some(4096));
        }
        out
    } else {
        model
    };
    let mut failures = Vec::new();
    for kernels in [Kernels::Native, Kernels::Generic] {
        let opts = LoadOptions {
            kernels,
            ..Default::default()
        };
        let lm = load(&model, &opts).unwrap();
        for case in fx["cases"].as_array().unwrap() {
            let name = case["name"].as_str().unwrap();
            let prompt = ids(&case["prompt_ids"]);
            let text = case["text"].as_str().unwrap();
            if kernels == Kernels::Native {
                let ours = lm.tokenizer.encode(text, false).unwrap();
                assert_eq!(ours, prompt, "{test} {name}: tokenization differs");
            }
            let steps = case["steps"].as_array().unwrap();
            for split in [1, prompt.len().saturating_sub(8).max(1)] {
                let got = teacher_force(&lm, &prompt[..split], &prompt[split..], 2).unwrap();
                let (mut sum, mut worst) = (0.0f64, 0.0f64);
                for (j, lp) in got.iter().enumerate() {
                    let step = &steps[split - 1 + j];
                    let want = step["next_logprob"].as_f64().unwrap();
                    let d = (lp.logprob as f64 - want).abs();
                    let bound = STEP_ABS + STEP_REL * want.abs();
                    sum += d;
                    worst = worst.max(d);
                    let label = format!(
                        "{test} {kernels:?} {name} split {split} pos {}",
                        split - 1 + j
                    );
                    if d > bound {
                        failures.push(format!(
                            "{label}: logprob {} vs llama.cpp {want} (|Δ| {d:.3} > {bound:.3})",
                            lp.logprob
                        ));
                    }
                    let top = step["top"].as_array().unwrap();
                    let gap = top[0][1].as_f64().unwrap() - top[1][1].as_f64().unwrap();
                    let want_top = top[0][0].as_u64().unwrap() as u32;
                    if gap >= 0.5 && lp.top[0].id != want_top {
                        failures.push(format!(
                            "{label}: top-1 {} vs llama.cpp {want_top} (gap {gap:.2})",
                            lp.top[0].id
                        ));
                    }
                }
                let mean = sum / got.len().max(1) as f64;
                if mean > MEAN {
                    failures.push(format!(
                        "{test} {kernels:?} {name} split {split}: mean |Δ| {mean:.3} > {MEAN}"
                    ));
                }
                eprintln!(
                    "{test} {kernels:?} {name} split {split}: {} positions, mean |Δ| {mean:.4}, max |Δ| {worst:.4}",
                    got.len()
                );
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures[..failures.len().min(20)].join("\n")
    );
}

/// Rewrite an exported llama directory's `config.json` as Mistral's, with `sliding_window`.
fn declare_mistral(dir: &Path, window: Option<usize>) {
    let path = dir.join("config.json");
    let mut cfg: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    cfg["model_type"] = "mistral".into();
    cfg["architectures"] = serde_json::json!(["MistralForCausalLM"]);
    cfg["sliding_window"] = serde_json::json!(window);
    std::fs::write(&path, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
}

#[test]
fn llama_q4_k_matches_llama_cpp() {
    check(TinyArch::Llama);
}

#[test]
fn llama3_rope_factors_q8_0_match_llama_cpp() {
    check(TinyArch::Llama3Rope);
}

#[test]
fn qwen2_biases_q5_k_match_llama_cpp() {
    check(TinyArch::Qwen2);
}

#[test]
fn phi3_fused_projections_q6_k_match_llama_cpp() {
    check(TinyArch::Phi3);
}

#[test]
fn gemma3_sliding_window_norms_q5_0_match_llama_cpp() {
    check(TinyArch::Gemma3);
}

#[test]
fn llama_safetensors_directory_matches_llama_cpp() {
    check_safetensors(TinyArch::Llama);
}

/// Llama 3's RoPE factors as `config.json`'s `rope_scaling` (the exporter derives it from the
/// GGUF's divisor table), through the safetensors loader's own computation of the divisors.
#[test]
fn llama3_rope_scaling_safetensors_directory_matches_llama_cpp() {
    check_safetensors(TinyArch::Llama3Rope);
}

#[test]
fn qwen2_safetensors_directory_matches_llama_cpp() {
    check_safetensors(TinyArch::Qwen2);
}

#[test]
fn phi3_safetensors_directory_matches_llama_cpp() {
    check_safetensors(TinyArch::Phi3);
}

#[test]
fn mistral_gqa_q4_1_matches_llama_cpp() {
    check(TinyArch::Mistral);
}

#[test]
fn mistral_safetensors_directory_matches_llama_cpp() {
    check_safetensors(TinyArch::Mistral);
}

/// Mistral's `sliding_window` is honoured in every layer (as transformers does; llama.cpp has no
/// window for Mistral GGUFs, so this is checked against the model without one): positions that
/// see no more than the window give the same log-probabilities bit for bit, later ones differ.
#[test]
fn mistral_sliding_window_hides_what_lies_before_it() {
    const WINDOW: usize = 48;
    let Some(tokenizer) = llorch_testkit::require_smollm2("mistral_sliding_window") else {
        return;
    };
    let fx_path = llorch_testkit::fixture("arch-mistral-q4_1.json");
    let fx: Value = serde_json::from_str(&std::fs::read_to_string(&fx_path).unwrap()).unwrap();
    let long = fx["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "long")
        .unwrap();
    let prompt = ids(&long["prompt_ids"]);
    assert!(prompt.len() > 4 * WINDOW);
    let dir = tempfile::tempdir().unwrap();
    let gguf = dir.path().join("mistral.gguf");
    write_gguf(TinyArch::Mistral, &tokenizer, &gguf).unwrap();
    let run = |window: Option<usize>, kernels: Kernels| {
        let out = dir.path().join(format!("st-{window:?}-{kernels:?}"));
        llorch_engine::export::gguf_to_safetensors(&gguf, &out).unwrap();
        declare_mistral(&out, window);
        let opts = LoadOptions {
            kernels,
            ..Default::default()
        };
        let lm = load(&out, &opts).unwrap();
        assert_eq!(lm.model.cfg.sliding_window, window);
        teacher_force(&lm, &prompt[..1], &prompt[1..], 1).unwrap()
    };
    for kernels in [Kernels::Native, Kernels::Generic] {
        let (full, windowed) = (run(None, kernels), run(Some(WINDOW), kernels));
        // entry j predicts position j + 1 after seeing positions 0..=j
        for j in 0..WINDOW {
            assert_eq!(
                full[j].logprob, windowed[j].logprob,
                "{kernels:?}: position {j} sees less than the window"
            );
        }
        let later: Vec<f32> = (WINDOW..full.len())
            .map(|j| (full[j].logprob - windowed[j].logprob).abs())
            .collect();
        let moved = later.iter().filter(|d| **d > 1e-3).count();
        assert!(
            moved > later.len() / 2,
            "{kernels:?}: only {moved} of {} positions past the window changed",
            later.len()
        );
    }
}
