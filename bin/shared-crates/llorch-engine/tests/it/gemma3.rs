//! Gemma 3 270M (Q4_K_M GGUF) through the engine, against llama.cpp's reference outputs in
//! `fixtures/gemma3-greedy.json` (written by `scripts/gemma3-fixture.py`): token ids, greedy
//! tokens and log-probabilities, including a 560-token prompt that crosses the 512-token sliding
//! window; prefill and decode agree across the window; rotary tables follow the served context.
//!
//! Skips locally (fails under CI=true) without the model: `scripts/fetch-test-model.sh gemma3`.
//! `LLORCH_TEST_DEVICE=cuda:0` (or `metal:0`) runs it on a GPU build (`--features cuda`).

use std::sync::OnceLock;
use std::time::Instant;

use candle_core::Device;
use llorch_engine::chat::ChatTemplate;
use llorch_engine::chat_choice::UNTRAINED_LOGPROB;
use llorch_engine::model::Logits;
use llorch_engine::sampler::argmax;
use llorch_engine::{load, LoadOptions, LoadedModel};
use llorch_wire::ChatMessage;
use serde_json::Value;

use crate::ids;

/// `<end_of_turn>` and `<eos>` in Gemma 3's vocabulary.
const END_OF_TURN: u32 = 106;
const EOS: u32 = 1;

/// The device named by `LLORCH_TEST_DEVICE` (`cpu`, `cuda:N`, `metal:N`; default `cpu`).
pub(crate) fn device() -> Device {
    let spec = std::env::var("LLORCH_TEST_DEVICE").unwrap_or_else(|_| "cpu".into());
    let (kind, n) = spec.split_once(':').unwrap_or((spec.as_str(), "0"));
    let n: usize = n.parse().expect("LLORCH_TEST_DEVICE index");
    match kind {
        "cpu" => Device::Cpu,
        "cuda" => Device::new_cuda(n).expect("CUDA device (build with --features cuda)"),
        "metal" => Device::new_metal(n).expect("Metal device (build with --features metal)"),
        other => panic!("LLORCH_TEST_DEVICE: unknown device kind `{other}`"),
    }
}

fn load_with(test: &str, max_context: Option<usize>) -> Option<(LoadedModel, f64)> {
    let path = llorch_testkit::require_model(test, llorch_testkit::GEMMA3_FILE)?;
    let t0 = Instant::now();
    let lm = load(
        &path,
        &LoadOptions {
            device: device(),
            max_context,
            ..Default::default()
        },
    )
    .unwrap();
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    eprintln!("{test}: loaded in {ms:.0} ms");
    Some((lm, ms))
}

/// Gemma 3 on the given compute path (the device from `LLORCH_TEST_DEVICE`).
pub(crate) fn gemma_with(
    test: &str,
    kernels: llorch_engine::model::Kernels,
) -> Option<LoadedModel> {
    let path = llorch_testkit::require_model(test, llorch_testkit::GEMMA3_FILE)?;
    let opts = LoadOptions {
        device: device(),
        kernels,
        ..Default::default()
    };
    Some(load(&path, &opts).unwrap())
}

/// The model with default options, loaded once for the tests that only read it.
fn gemma(test: &str) -> Option<&'static LoadedModel> {
    static MODEL: OnceLock<Option<LoadedModel>> = OnceLock::new();
    MODEL
        .get_or_init(|| load_with(test, None).map(|(lm, _)| lm))
        .as_ref()
}

fn fixture() -> Value {
    let path = llorch_testkit::fixture("gemma3-greedy.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn last_logits(
    lm: &LoadedModel,
    cache: &mut llorch_engine::model::KvCache,
    ids: &[u32],
) -> Vec<f32> {
    lm.model
        .forward(ids, cache, Logits::Last)
        .unwrap()
        .squeeze(0)
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// Free-running greedy generation of at most `n` tokens; a stop id, if reached, is included.
fn greedy(lm: &LoadedModel, prompt: &[u32], n: usize) -> Vec<u32> {
    llorch_engine::generate::greedy(lm, prompt, n).unwrap()
}

#[test]
fn tokenizer_and_template_match_llama_cpp() {
    let Some(lm) = gemma("tokenizer_and_template_match_llama_cpp") else {
        return;
    };
    assert_eq!(
        (lm.info.architecture, lm.info.tokenizer_kind),
        ("gemma3", "gguf-spm")
    );
    for case in fixture()["cases"].as_array().unwrap() {
        let got = lm
            .tokenizer
            .encode(case["text"].as_str().unwrap(), true)
            .unwrap();
        assert_eq!(got, ids(&case["prompt_ids"]), "case {}", case["name"]);
    }
    // The GGUF has no chat template: Gemma's turn format renders as llama.cpp's, and BOS comes
    // from the tokenizer.
    let user = ChatMessage {
        role: "user".into(),
        content: "What is the capital of France?".into(),
    };
    let text = ChatTemplate::gemma().render(&[user], true).unwrap();
    let chat_case = &fixture()["cases"][0];
    assert_eq!(text, chat_case["text"].as_str().unwrap());
    assert_eq!(
        lm.tokenizer.encode(&text, true).unwrap(),
        ids(&chat_case["prompt_ids"])
    );
    let stops = lm.tokenizer.stop_ids();
    assert!(
        stops.contains(&END_OF_TURN) && stops.contains(&EOS),
        "stop ids {stops:?}"
    );
}

#[test]
fn greedy_tokens_and_logprobs_match_llama_cpp() {
    if let Some(lm) = gemma("greedy_tokens_and_logprobs_match_llama_cpp") {
        check_parity(lm);
    }
}

/// Greedy prefixes and teacher-forced log-probabilities against the fixture's tolerance.
pub(crate) fn check_parity(lm: &LoadedModel) {
    // The fixture's tolerance: its per-step bound (1.0) is looser than SmolLM2's 0.6 because
    // Gemma's activations sit far from zero, so 8-bit activation rounding moves low-probability
    // steps more (this engine differs from itself by up to 0.57 nats on top-10 tokens between
    // whole and chunked prefill; 0.71 was seen against llama.cpp).
    let fx = fixture();
    let step_tol = fx["tolerance"]["step"].as_f64().unwrap();
    let mean_tol = fx["tolerance"]["mean"].as_f64().unwrap();
    crate::check_fixture(lm, &fx, "gemma3", step_tol, mean_tol);
}

/// This file is the pretrained google/gemma-3-270m (the package's upstream card says so): it never
/// learned `<end_of_turn>`, which the load-time probe sees, so chat goes through the transcript
/// template, and greedy answers there are on topic and end at the next dialogue line.
#[test]
fn base_model_chat_is_served_as_a_transcript() {
    let Some(lm) = gemma("base_model_chat_is_served_as_a_transcript") else {
        return;
    };
    let chat = &lm.info.chat_template;
    assert_eq!(chat.name, "transcript", "{chat:?}");
    let probe = chat.probe.as_ref().expect("the probe ran");
    assert_eq!(probe.token, "<end_of_turn>");
    assert!(probe.logprob < UNTRAINED_LOGPROB, "{probe:?}");
    for (question, expect) in [
        ("What is the capital of France?", "Paris"),
        ("What is 2+2?", "4"),
    ] {
        let msg = ChatMessage {
            role: "user".into(),
            content: question.into(),
        };
        let text = lm.chat.render(&[msg], true).unwrap();
        assert!(
            text.ends_with(&format!("User: {question}\nAssistant:")),
            "{text:?}"
        );
        let ids = lm.tokenizer.encode(&text, true).unwrap();
        let answer = lm.tokenizer.decode(&greedy(lm, &ids, 16), false);
        let reply = answer.split("\nUser:").next().unwrap().trim();
        assert!(reply.contains(expect), "{question:?} -> {answer:?}");
        assert!(
            answer.contains("\nUser:"),
            "the turn ends within 16 tokens: {answer:?}"
        );
    }
}

#[test]
fn answers_raw_questions_and_recalls_past_the_sliding_window() {
    if let Some(lm) = gemma("answers_raw_questions_and_recalls_past_the_sliding_window") {
        check_recall_past_the_window(lm);
    }
}

/// A raw question is answered; a fact ~540 tokens back (past the 512 window) is recalled.
pub(crate) fn check_recall_past_the_window(lm: &LoadedModel) {
    let p = lm
        .tokenizer
        .encode("Q: What is the capital of France?\nA:", true)
        .unwrap();
    // llama.cpp answers " Paris", this engine " The capital of France is Paris." (a near-tie).
    let answer = lm.tokenizer.decode(&greedy(lm, &p, 8), false);
    assert!(answer.contains("Paris"), "{answer:?}");
    // The fact sits ~540 tokens back: only the global layers can still see it.
    let long = &fixture()["cases"][4];
    assert_eq!(long["name"], "long-window");
    let prompt = ids(&long["prompt_ids"]);
    assert!(prompt.len() > lm.model.cfg.sliding_window.unwrap() + 32);
    let answer = lm.tokenizer.decode(&greedy(lm, &prompt, 5), false);
    assert!(answer.starts_with(" 6 o'clock"), "{answer:?}");
}

#[test]
fn prefill_in_chunks_and_decode_agree_across_the_window() {
    if let Some(lm) = gemma("prefill_in_chunks_and_decode_agree_across_the_window") {
        check_chunks_across_the_window(lm);
    }
}

/// Whole prefill vs chunks that straddle the window's edge plus decode steps: same argmax,
/// logits within rounding noise.
pub(crate) fn check_chunks_across_the_window(lm: &LoadedModel) {
    let prompt = ids(&fixture()["cases"][4]["prompt_ids"]);
    let n = prompt.len();
    let mut whole = lm.model.new_cache(n).unwrap();
    let reference = last_logits(lm, &mut whole, &prompt);
    // Chunks that start before and after the window's edge, then single-token decode steps.
    let mut cache = lm.model.new_cache(n).unwrap();
    let mut logits = Vec::new();
    for chunk in [&prompt[..200], &prompt[200..530], &prompt[530..n - 8]] {
        logits = last_logits(lm, &mut cache, chunk);
    }
    for &id in &prompt[n - 8..] {
        logits = last_logits(lm, &mut cache, &[id]);
    }
    let max_diff = reference
        .iter()
        .zip(&logits)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    eprintln!("max |Δlogit| whole vs chunked+decode: {max_diff:.5}");
    assert_eq!(argmax(&reference), argmax(&logits));
    // Rounding noise gives ~1.0 here; a decode step that ignores the window, or a prefill mask
    // without it, gave 4.7 and 5.1 when tried.
    assert!(max_diff < 2.5, "max |Δlogit| {max_diff}");
}

#[test]
fn rotary_tables_follow_the_served_context() {
    let Some((lm, ms)) = load_with("rotary_tables_follow_the_served_context", Some(1024)) else {
        return;
    };
    assert_eq!(
        (
            lm.info.trained_context,
            lm.info.context_length,
            lm.model.max_context
        ),
        (32768, 1024, 1024)
    );
    // Stock candle takes ~9 s here (RoPE tables for 131072 positions per layer); the budget of
    // 2 s is enforced by scripts/test_all_models.sh on a release build, this bound allows for
    // parallel tests on 2 cores.
    assert!(ms < 10_000.0, "load took {ms:.0} ms");
    let mut cache = lm.model.new_cache(4096).unwrap();
    assert_eq!(
        cache.capacity(),
        1024,
        "a cache never outgrows the served context"
    );
    let ids: Vec<u32> = (0..1025).map(|i| 1000 + i % 500).collect();
    assert!(
        lm.model.forward(&ids, &mut cache, Logits::Last).is_err(),
        "1025 positions exceed the context"
    );
}
