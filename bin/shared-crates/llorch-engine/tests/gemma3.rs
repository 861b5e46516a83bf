//! Gemma 3 270M (Q4_K_M GGUF) through the engine: a coherent greedy chat answer that ends at
//! `<end_of_turn>`, confident log-probabilities, sliding-window attention that agrees between
//! prefill and decode, and rotary tables sized to the served context.
//!
//! Skips locally (fails under CI=true) without the model: `scripts/fetch-test-model.sh gemma3`.

use std::sync::atomic::AtomicBool;
use std::time::Instant;

use llorch_engine::generate::{prefill, teacher_force};
use llorch_engine::model::Logits;
use llorch_engine::sampler::argmax;
use llorch_engine::{load, LoadOptions, LoadedModel};
use llorch_wire::ChatMessage;

fn gemma(test: &str) -> Option<LoadedModel> {
    let path = llorch_testkit::require_model(test, llorch_testkit::GEMMA3_FILE)?;
    let t0 = Instant::now();
    let lm = load(&path, &LoadOptions::default()).unwrap();
    eprintln!(
        "{test}: loaded in {:.0} ms",
        t0.elapsed().as_secs_f64() * 1e3
    );
    Some(lm)
}

/// Greedy generation of at most `n` tokens; the stop id, if reached, is the last element.
fn greedy(lm: &LoadedModel, prompt: &[u32], n: usize) -> Vec<u32> {
    let mut cache = lm.model.new_cache(prompt.len() + n).unwrap();
    let never = AtomicBool::new(false);
    let (mut logits, _) = prefill(lm, prompt, &mut cache, None, &never)
        .unwrap()
        .unwrap();
    let mut out = Vec::new();
    for _ in 0..n {
        let id = argmax(&logits);
        out.push(id);
        if lm.tokenizer.stop_ids().contains(&id) {
            break;
        }
        logits = lm
            .model
            .forward(&[id], &mut cache, Logits::Last)
            .unwrap()
            .squeeze(0)
            .unwrap()
            .to_vec1()
            .unwrap();
    }
    out
}

fn chat_ids(lm: &LoadedModel, user: &str) -> Vec<u32> {
    let text = lm
        .chat
        .render(
            &[ChatMessage {
                role: "user".into(),
                content: user.into(),
            }],
            true,
        )
        .unwrap();
    lm.tokenizer.encode(&text, true).unwrap()
}

#[test]
fn explore() {
    let Some(lm) = gemma("explore") else { return };
    for q in [
        "Write a short poem about the sea.",
        "Hello! Who are you?",
        "What is 2 + 2?",
        "Name three colors.",
    ] {
        let prompt = chat_ids(&lm, q);
        let out = greedy(&lm, &prompt, 40);
        eprintln!("Q {q:?}\nA {:?}", lm.tokenizer.decode(&out, false));
    }
}
