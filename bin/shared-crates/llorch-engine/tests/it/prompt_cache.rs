//! The prompt cache with the real SmolLM2 model: a prompt that starts like a finished request's
//! sequence reuses those keys and values (`started.tokens_cached`), only the rest is prefilled,
//! and the output is what a full prefill gives. Prompt log-probabilities never use the cache.
//!
//! Skips locally (fails under CI=true) without the model: `scripts/fetch-test-model.sh`.

use std::sync::mpsc::channel;
use std::sync::Arc;

use llorch_engine::model::Kernels;
use llorch_engine::EngineEvent;
use llorch_engine::{Engine, EngineOptions, Job, LoadedModel};
use llorch_wire::SamplingParams;

const SYSTEM: &str = "You are a careful assistant for a harbour office. You answer questions \
about boats, tides, moorings and the weather in short, plain sentences. When you do not know \
something, you say so and suggest whom to ask.";

fn job(id: &str, lm: &LoadedModel, text: &str, prompt_logprobs: Option<u32>) -> Job {
    let ids = lm.tokenizer.encode(text, true).unwrap();
    Job {
        prompt_logprobs,
        ..Job::new(id, ids, 24, SamplingParams::greedy())
    }
}

/// (tokens_cached, generated ids) of one job.
fn run(engine: &Engine, j: Job) -> (u32, Vec<u32>) {
    let (tx, rx) = channel();
    engine
        .submit(j, Box::new(move |e: EngineEvent| tx.send(e).is_ok()))
        .unwrap();
    let mut cached = None;
    let mut ids = Vec::new();
    for e in rx.iter() {
        match e {
            EngineEvent::Started { tokens_cached, .. } => cached = Some(tokens_cached),
            EngineEvent::Token { id, .. } => ids.push(id),
            EngineEvent::Failed { message, .. } => panic!("{message}"),
            EngineEvent::End { .. } => {}
        }
    }
    (cached.expect("started event"), ids)
}

#[test]
fn shared_prefixes_are_reused_and_change_nothing() {
    let test = "shared_prefixes_are_reused_and_change_nothing";
    if let Some(lm) = crate::smollm2(test, Kernels::Native) {
        check_prompt_cache(lm);
    }
}

/// Reused prefixes are reported in `tokens_cached` and give the output of a full prefill.
pub(crate) fn check_prompt_cache(lm: Arc<LoadedModel>) {
    let cached = Engine::with_options(lm.clone(), EngineOptions::default());
    let uncached = Engine::with_options(
        lm.clone(),
        EngineOptions {
            prompt_cache_bytes: 0,
            ..EngineOptions::default()
        },
    );
    let first = format!("{SYSTEM}\nQuestion: When is high tide today?\nAnswer:");
    let second = format!("{SYSTEM}\nQuestion: Where can I moor a small sailing boat?\nAnswer:");
    let n_first = lm.tokenizer.encode(&first, true).unwrap().len() as u32;
    let n_system = lm.tokenizer.encode(SYSTEM, true).unwrap().len() as u32;

    let (c, a) = run(&cached, job("a", &lm, &first, None));
    assert_eq!(c, 0, "nothing cached yet");
    // the same prompt again: all but its last token come from the cache
    let (c, b) = run(&cached, job("b", &lm, &first, None));
    assert_eq!(c, n_first - 1);
    assert_eq!(b, a, "same prompt, same greedy output");
    // another question after the same system prompt: the system prompt is reused
    let (c, d) = run(&cached, job("d", &lm, &second, None));
    assert!(
        c >= n_system - 1 && c < n_first,
        "tokens_cached {c}, system prompt {n_system}"
    );
    let (c0, d0) = run(&uncached, job("d0", &lm, &second, None));
    assert_eq!(c0, 0);
    assert_eq!(d, d0, "reused prefix, same output as a full prefill");
    // prompt log-probabilities need every position's logits: never from the cache
    let (c, _) = run(&cached, job("e", &lm, &first, Some(1)));
    assert_eq!(c, 0);
}
