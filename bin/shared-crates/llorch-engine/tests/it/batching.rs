//! Continuous batching with the real SmolLM2 model: jobs that run together (one batched decode
//! step for all of them, joining and leaving at different steps, new prompts prefilled in chunks
//! between steps) produce exactly the tokens they produce alone, greedy and seeded sampling
//! alike; a cancelled job leaves the others untouched.
//!
//! Skips locally (fails under CI=true) without the model: `scripts/fetch-test-model.sh`.

use std::sync::mpsc::{channel, Receiver};
use std::sync::Arc;
use std::time::Instant;

use llorch_engine::generate::run_job;
use llorch_engine::model::Kernels;
use llorch_engine::EngineEvent;
use llorch_engine::{Engine, Job, LoadedModel};
use llorch_wire::{SamplingParams, StopReason};

fn job(id: &str, lm: &LoadedModel, prompt: &str, max_tokens: u32, seed: Option<u64>) -> Job {
    let sampling = match seed {
        None => SamplingParams::greedy(),
        Some(s) => SamplingParams {
            temperature: 0.9,
            top_p: 0.95,
            seed: Some(s),
            ..SamplingParams::default()
        },
    };
    Job::new(
        id,
        lm.tokenizer.encode(prompt, true).unwrap(),
        max_tokens,
        sampling,
    )
}

/// Token ids and the terminal event of one job's events.
fn outcome(events: &[EngineEvent]) -> (Vec<u32>, &EngineEvent) {
    let ids = events
        .iter()
        .filter_map(|e| match e {
            EngineEvent::Token { id, .. } => Some(*id),
            _ => None,
        })
        .collect();
    let terminal: Vec<_> = events.iter().filter(|e| e.is_terminal()).collect();
    assert_eq!(terminal.len(), 1, "exactly one terminal event: {events:?}");
    assert!(events.last().unwrap().is_terminal(), "terminal event last");
    (ids, terminal[0])
}

fn submit(engine: &Engine, j: Job) -> Receiver<EngineEvent> {
    let (tx, rx) = channel();
    engine
        .submit(j, Box::new(move |e: EngineEvent| tx.send(e).is_ok()))
        .unwrap();
    rx
}

/// A job for the batching checks: prompt, max_tokens, sampling seed (None: greedy).
pub(crate) type Prompt = (&'static str, u32, Option<u64>);

pub(crate) const PROMPTS: [Prompt; 6] = [
    ("The quick brown fox", 24, None),
    ("Once upon a time, in a small village,", 40, None),
    ("1, 2, 3, 4, 5,", 8, None),
    ("The capital of France is", 32, Some(7)),
    ("def fibonacci(n):", 20, None),
    ("Water boils at", 3, Some(11)),
];

#[test]
fn batched_jobs_generate_what_they_generate_alone() {
    let test = "batched_jobs_generate_what_they_generate_alone";
    if let Some(lm) = crate::smollm2(test, Kernels::Native) {
        check_batched_jobs_match_solo(lm, &PROMPTS, 4);
    }
}

/// 6 jobs through 4 slots produce each job's solo tokens, stop reason and seed.
/// Jobs submitted at once to an engine with 4 slots (the rest wait, then join as earlier jobs
/// finish) produce exactly the tokens, stop reason and seed they produce alone, and at least
/// `min_peak` of them shared a decode step.
pub(crate) fn check_batched_jobs_match_solo(
    lm: Arc<LoadedModel>,
    prompts: &[Prompt],
    min_peak: u32,
) {
    let alone: Vec<Vec<EngineEvent>> = prompts
        .iter()
        .enumerate()
        .map(|(i, &(p, n, seed))| {
            let mut events = Vec::new();
            let mut sink = |e: EngineEvent| {
                events.push(e);
                true
            };
            run_job(&lm, job(&format!("a{i}"), &lm, p, n, seed), &mut sink);
            events
        })
        .collect();

    let engine = Engine::start(lm.clone(), 8, 4);
    let streams: Vec<_> = prompts
        .iter()
        .enumerate()
        .map(|(i, &(p, n, seed))| submit(&engine, job(&format!("b{i}"), &lm, p, n, seed)))
        .collect();
    for (i, rx) in streams.into_iter().enumerate() {
        let events: Vec<_> = rx.iter().collect();
        let (want, want_end) = outcome(&alone[i]);
        let (got, got_end) = outcome(&events);
        assert_eq!(
            got, want,
            "job {i} ({:?}): batched tokens differ",
            prompts[i].0
        );
        match (want_end, got_end) {
            (
                EngineEvent::End {
                    stop_reason: a,
                    seed: sa,
                    ..
                },
                EngineEvent::End {
                    stop_reason: b,
                    seed: sb,
                    ..
                },
            ) => {
                assert_eq!(a, b, "job {i}: stop reason");
                if prompts[i].2.is_some() {
                    assert_eq!(sa, sb, "job {i}: the requested seed is reported");
                }
            }
            other => panic!("job {i}: unexpected terminal events {other:?}"),
        }
    }
    let st = engine.status();
    let peak = st.peak_batch.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        peak >= min_peak,
        "the jobs really ran together: peak batch {peak}"
    );
    let idle = (0..200).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(5));
        st.active.load(std::sync::atomic::Ordering::SeqCst) == 0
    });
    assert!(idle, "every slot is released");
}

#[test]
fn cancelling_one_batched_job_leaves_the_others_alone() {
    let test = "cancelling_one_batched_job_leaves_the_others_alone";
    if let Some(lm) = crate::smollm2(test, Kernels::Native) {
        check_cancel_isolation(lm);
    }
}

/// A job cancelled after 5 tokens stops within a few steps; the job beside it is unaffected.
pub(crate) fn check_cancel_isolation(lm: Arc<LoadedModel>) {
    let mut events = Vec::new();
    let mut sink = |e: EngineEvent| {
        events.push(e);
        true
    };
    run_job(&lm, job("solo", &lm, PROMPTS[1].0, 40, None), &mut sink);
    let (want, _) = outcome(&events);

    let engine = Engine::start(lm.clone(), 0, 2);
    let long = job("long", &lm, "1, 2, 3, 4, 5, 6, 7, 8,", 400, None);
    let cancel = long.cancel.clone();
    let rx_long = submit(&engine, long);
    let rx_other = submit(&engine, job("other", &lm, PROMPTS[1].0, 40, None));
    let mut seen = 0;
    let long_events: Vec<_> = rx_long
        .iter()
        .inspect(|e| {
            if matches!(e, EngineEvent::Token { .. }) {
                seen += 1;
                if seen == 5 {
                    engine.cancel("long");
                }
            }
        })
        .collect();
    assert!(cancel.load(std::sync::atomic::Ordering::SeqCst));
    let (ids, end) = outcome(&long_events);
    assert!(
        matches!(
            end,
            EngineEvent::End {
                stop_reason: StopReason::Cancelled,
                ..
            }
        ),
        "{end:?}"
    );
    assert!(
        ids.len() < 20,
        "stopped within a few steps: {} tokens",
        ids.len()
    );
    let other: Vec<_> = rx_other.iter().collect();
    assert_eq!(outcome(&other).0, want, "the other job is unaffected");
}

/// A long prompt arriving while another job decodes is prefilled in short chunks between that
/// job's decode steps: the running job keeps streaming instead of stalling for the whole
/// prefill, and both jobs end normally.
#[test]
fn a_long_prompt_does_not_stall_running_jobs() {
    let test = "a_long_prompt_does_not_stall_running_jobs";
    if let Some(lm) = crate::smollm2(test, Kernels::Native) {
        check_long_prompt_chunks(lm);
    }
}

/// A ~1500-token prompt is prefilled in chunks between three running jobs' decode steps: each
/// job's longest pause is at most a quarter of the prefill (printed), and the chunked prompt's
/// tokens equal a whole prefill's.
pub(crate) fn check_long_prompt_chunks(lm: Arc<LoadedModel>) {
    const RUNNING: usize = 3;
    let engine = Engine::start(lm.clone(), 0, RUNNING as u32 + 1);
    let receivers: Vec<_> = (0..RUNNING)
        .map(|i| {
            let (tx, rx) = channel();
            let prompt = format!("{}, {}, {}, {},", i + 1, i + 2, i + 3, i + 4);
            let decoding = job(&format!("decoding-{i}"), &lm, &prompt, 200, None);
            engine
                .submit(
                    decoding,
                    Box::new(move |e: EngineEvent| tx.send((e, Instant::now())).is_ok()),
                )
                .unwrap();
            rx
        })
        .collect();
    // wait until all of them stream, then send ~1500 prompt tokens
    let mut events: Vec<Vec<_>> = receivers
        .iter()
        .map(|rx| vec![rx.recv().unwrap(), rx.recv().unwrap()])
        .collect();
    let long_text = "The harbour master counted the boats again. ".repeat(150);
    let long = job("long", &lm, &long_text, 4, None);
    assert!(long.prompt_ids.len() > 1000, "{}", long.prompt_ids.len());
    let (tx_long, rx_long) = channel();
    engine
        .submit(
            long,
            Box::new(move |e: EngineEvent| tx_long.send((e, Instant::now())).is_ok()),
        )
        .unwrap();
    let timed_long: Vec<_> = rx_long.iter().collect();
    for (ev, rx) in events.iter_mut().zip(&receivers) {
        ev.extend(rx.iter());
    }
    let long_started = timed_long[0].1;
    for ev in &events {
        assert!(
            ev.last().unwrap().1 > long_started,
            "a running job ended before the long prompt's prefill did"
        );
    }
    let long_events: Vec<_> = timed_long.into_iter().map(|(e, _)| e).collect();
    let (_, end) = outcome(&long_events);
    let EngineEvent::End {
        prefill_time_ms, ..
    } = end
    else {
        panic!("long job: {end:?}")
    };
    for (i, ev) in events.into_iter().enumerate() {
        let worst = ev
            .windows(2)
            .filter(|w| matches!(w[1].0, EngineEvent::Token { .. }))
            .map(|w| (w[1].1 - w[0].1).as_secs_f64() * 1e3)
            .fold(0.0, f64::max);
        eprintln!(
            "running job {i}: longest pause {worst:.0} ms, the long prompt's prefill \
             {prefill_time_ms:.0} ms ({:.2} of it)",
            worst / prefill_time_ms
        );
        assert!(
            worst <= prefill_time_ms / 4.0,
            "running job {i}'s longest pause ({worst:.0} ms) must be at most a quarter of the \
             long prompt's prefill ({prefill_time_ms:.0} ms)"
        );
        let plain: Vec<_> = ev.into_iter().map(|(e, _)| e).collect();
        assert_eq!(outcome(&plain).0.len(), 200);
    }
    // prefilled in 128-token chunks between decode steps, yet the same as one whole prefill
    let mut solo = Vec::new();
    let mut sink = |e: EngineEvent| {
        solo.push(e);
        true
    };
    run_job(&lm, job("solo", &lm, &long_text, 4, None), &mut sink);
    assert_eq!(outcome(&long_events).0, outcome(&solo).0);
}
