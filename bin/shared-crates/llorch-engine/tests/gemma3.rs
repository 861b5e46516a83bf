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
    let text = "The lighthouse keeper kept a logbook for forty years. Every evening he wrote down the weather, the ships that passed, the colour of the sea and the birds that rested on the railing. When the light was finally automated, the logbook went to the town museum, where children now read it aloud on rainy afternoons.";
    for file in [llorch_testkit::SMOLLM2_FILE, llorch_testkit::GEMMA3_FILE] {
        let path = llorch_testkit::require_model("explore", file).unwrap();
        let lm = load(&path, &LoadOptions::default()).unwrap();
        let ids = lm.tokenizer.encode(text, true).unwrap();
        let mut cache = lm.model.new_cache(ids.len()).unwrap();
        let logits = lm
            .model
            .forward(&ids, &mut cache, Logits::All)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        let mut nll = 0.0;
        for i in 0..ids.len() - 1 {
            nll -= llorch_engine::sampler::logprobs(&logits[i], ids[i + 1], 0).logprob as f64;
        }
        eprintln!(
            "{file}: {} tokens, mean NLL {:.3}",
            ids.len(),
            nll / (ids.len() - 1) as f64
        );
        let p = lm
            .tokenizer
            .encode("The capital of France is", true)
            .unwrap();
        let out = greedy(&lm, &p, 20);
        eprintln!("  raw: {:?}", lm.tokenizer.decode(&out, false));
    }
}
