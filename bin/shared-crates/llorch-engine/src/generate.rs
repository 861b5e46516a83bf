//! Running one job: prefill, decode loop, stop conditions, streamed events.
//!
//! Per-sequence state ([`Sequence`]: tokens, KV cache, sampler, stop matcher) is kept apart from
//! the shared weights, so a batching scheduler can drive many sequences over one model.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use llorch_wire::{ErrorCode, SamplingParams, StopReason, TokenLogprob, WorkerEvent};

use crate::load::LoadedModel;
use crate::model::{KvCache, Logits};
use crate::sampler::{logprobs, Sampler};
use crate::stop::{StopCheck, StopMatcher};
use crate::tokenizer::StreamDecoder;

/// A validated, tokenized job.
#[derive(Debug, Clone)]
pub struct Job {
    pub job_id: String,
    pub prompt_ids: Vec<u32>,
    pub max_tokens: u32,
    pub sampling: SamplingParams,
    pub stop: Vec<String>,
    /// Text that ends the assistant's turn under the chat template used to render the prompt
    /// (transcript templates); reaching it ends the job as at end-of-turn (`eos`).
    pub turn_stops: Vec<String>,
    /// Drop spaces at the start of the reply (the prompt ended with `Role:`).
    pub trim_reply_start: bool,
    pub logprobs: Option<u32>,
    pub prompt_logprobs: Option<u32>,
    pub cancel: Arc<AtomicBool>,
    pub enqueued_at: Instant,
}

/// Where a job's events go. `send` returns false when nobody listens any more (client gone),
/// which cancels the job.
pub trait EventSink: Send {
    fn send(&mut self, event: WorkerEvent) -> bool;
}

impl<F: FnMut(WorkerEvent) -> bool + Send> EventSink for F {
    fn send(&mut self, event: WorkerEvent) -> bool {
        self(event)
    }
}

/// Prompt tokens per forward pass during prefill (bounds activation memory).
const PREFILL_CHUNK: usize = 512;

/// Most logits (floats) one prefill chunk may return when every position's logits are kept for
/// `prompt_logprobs`: 16 Mi floats = 64 MiB, so a 262k-word vocabulary (Gemma) prefills 64
/// positions at a time instead of holding 512 × 262k floats (0.5 GiB, twice over).
const ALL_LOGITS_BUDGET: usize = 16 << 20;

/// The state of one sequence being generated.
pub struct Sequence {
    pub tokens: Vec<u32>,
    pub prompt_len: usize,
    pub cache: KvCache,
    pub sampler: Sampler,
    pub stop: StopMatcher,
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1e3
}

/// Prefill `ids` into `cache` and return the logits of the last position (and, when
/// `prompt_top` is set, the log-probability of every prompt token after the first).
pub fn prefill(
    lm: &LoadedModel,
    ids: &[u32],
    cache: &mut KvCache,
    prompt_top: Option<usize>,
    cancel: &AtomicBool,
) -> Result<Option<(Vec<f32>, Vec<TokenLogprob>)>> {
    let mut last = Vec::new();
    let mut plp = Vec::new();
    let (mode, chunk_len) = match prompt_top {
        Some(_) => (
            Logits::All,
            (ALL_LOGITS_BUDGET / lm.model.cfg.vocab_size.max(1)).clamp(16, PREFILL_CHUNK),
        ),
        None => (Logits::Last, PREFILL_CHUNK),
    };
    for (ci, chunk) in ids.chunks(chunk_len).enumerate() {
        if cancel.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let logits = lm.model.forward(chunk, cache, mode)?;
        let rows = logits.to_vec2::<f32>()?;
        if let Some(top) = prompt_top {
            let base = ci * chunk_len;
            for (r, row) in rows.iter().enumerate() {
                if let Some(&next) = ids.get(base + r + 1) {
                    plp.push(logprobs(row, next, top));
                }
            }
        }
        last = rows.into_iter().last().unwrap_or_default();
    }
    Ok(Some((last, plp)))
}

/// Run `job` to completion on the calling thread, sending exactly one terminal event.
pub fn run_job(lm: &LoadedModel, job: Job, sink: &mut dyn EventSink) {
    let job_id = job.job_id.clone();
    let mut tokens_out = 0u32;
    if let Err(e) = run_inner(lm, job, sink, &mut tokens_out) {
        tracing::error!(job_id, error = %e, "inference failed");
        sink.send(WorkerEvent::Error {
            job_id,
            code: ErrorCode::InferenceFailed,
            message: format!("{e:#}"),
            retriable: false,
            tokens_out,
        });
    }
}

fn run_inner(
    lm: &LoadedModel,
    job: Job,
    sink: &mut dyn EventSink,
    tokens_out: &mut u32,
) -> Result<()> {
    let queue_time_ms = ms(job.enqueued_at);
    let n_prompt = job.prompt_ids.len();
    let capacity = n_prompt + job.max_tokens as usize;
    let mut seq = Sequence {
        tokens: job.prompt_ids.clone(),
        prompt_len: n_prompt,
        cache: lm.model.new_cache(capacity)?,
        sampler: Sampler::new(&job.sampling),
        stop: StopMatcher::for_turn(&job.stop, &job.turn_stops, job.trim_reply_start),
    };
    let seed = seq.sampler.seed();
    let end = |reason: StopReason,
               matched: Option<String>,
               out: u32,
               prefill_ms: f64,
               decode_ms: f64,
               decode_steps: u32| {
        WorkerEvent::End {
            job_id: job.job_id.clone(),
            stop_reason: reason,
            stop_sequence_matched: matched,
            tokens_in: n_prompt as u32,
            tokens_out: out,
            seed,
            queue_time_ms,
            prefill_time_ms: prefill_ms,
            decode_time_ms: decode_ms,
            prefill_tokens_per_sec: if prefill_ms > 0.0 {
                n_prompt as f64 / prefill_ms * 1e3
            } else {
                0.0
            },
            decode_tokens_per_sec: if decode_ms > 0.0 {
                decode_steps as f64 / decode_ms * 1e3
            } else {
                0.0
            },
        }
    };
    let t0 = Instant::now();
    let prompt_top = job.prompt_logprobs.map(|n| n as usize);
    let Some((mut logits, plp)) =
        prefill(lm, &job.prompt_ids, &mut seq.cache, prompt_top, &job.cancel)?
    else {
        sink.send(end(StopReason::Cancelled, None, 0, ms(t0), 0.0, 0));
        return Ok(());
    };
    let prefill_ms = ms(t0);
    let started = WorkerEvent::Started {
        job_id: job.job_id.clone(),
        model: lm.info.name.clone(),
        started_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        seed,
        tokens_in: n_prompt as u32,
        queue_time_ms,
        prompt_logprobs: prompt_top.map(|_| plp),
    };
    if !sink.send(started) {
        return Ok(());
    }
    let stop_ids = lm.tokenizer.stop_ids();
    let mut decoder = StreamDecoder::new(&lm.tokenizer, true);
    let t_decode = Instant::now();
    let mut decode_steps = 0u32;
    let top_n = job.logprobs.map(|n| n as usize);
    loop {
        let lp_source = top_n.map(|_| logits.clone());
        let id = seq.sampler.sample(&mut logits, &seq.tokens);
        if stop_ids.contains(&id) {
            let rest = decoder.finish() + &seq.stop.finish();
            if !rest.is_empty() {
                // flush held text with the last token's index; no extra token event for EOS
                sink.send(WorkerEvent::Token {
                    i: tokens_out.saturating_sub(1),
                    id,
                    t: rest,
                    logprob: None,
                });
            }
            sink.send(end(
                StopReason::Eos,
                None,
                *tokens_out,
                prefill_ms,
                ms(t_decode),
                decode_steps,
            ));
            return Ok(());
        }
        seq.tokens.push(id);
        let piece = decoder.push(id);
        let logprob = match (&lp_source, top_n) {
            (Some(src), Some(n)) => Some(logprobs(src, id, n)),
            _ => None,
        };
        let i = *tokens_out;
        *tokens_out += 1;
        match seq.stop.push(&piece) {
            check @ (StopCheck::Matched { .. } | StopCheck::EndOfTurn { .. }) => {
                let (release, reason, matched) = match check {
                    StopCheck::Matched { release, stop } => {
                        (release, StopReason::StopSequence, Some(stop))
                    }
                    StopCheck::EndOfTurn { release } => (release, StopReason::Eos, None),
                    StopCheck::Continue(_) => unreachable!(),
                };
                sink.send(WorkerEvent::Token {
                    i,
                    id,
                    t: release,
                    logprob,
                });
                sink.send(end(
                    reason,
                    matched,
                    *tokens_out,
                    prefill_ms,
                    ms(t_decode),
                    decode_steps,
                ));
                return Ok(());
            }
            StopCheck::Continue(text) => {
                let last = *tokens_out >= job.max_tokens;
                let text = if last {
                    text + &decoder.finish() + &seq.stop.finish()
                } else {
                    text
                };
                if !sink.send(WorkerEvent::Token {
                    i,
                    id,
                    t: text,
                    logprob,
                }) {
                    job.cancel.store(true, Ordering::Relaxed);
                }
                if last {
                    sink.send(end(
                        StopReason::MaxTokens,
                        None,
                        *tokens_out,
                        prefill_ms,
                        ms(t_decode),
                        decode_steps,
                    ));
                    return Ok(());
                }
            }
        }
        if job.cancel.load(Ordering::Relaxed) {
            sink.send(end(
                StopReason::Cancelled,
                None,
                *tokens_out,
                prefill_ms,
                ms(t_decode),
                decode_steps,
            ));
            return Ok(());
        }
        let l = lm.model.forward(&[id], &mut seq.cache, Logits::Last)?;
        logits = l.squeeze(0)?.to_vec1::<f32>()?;
        decode_steps += 1;
    }
}

/// Teacher forcing: feed `prompt`, then `forced` one token at a time; return the log-prob entry
/// (with `top_n` alternatives) of each forced token. Used for parity checks and scoring.
pub fn teacher_force(
    lm: &LoadedModel,
    prompt: &[u32],
    forced: &[u32],
    top_n: usize,
) -> Result<Vec<TokenLogprob>> {
    let mut cache = lm.model.new_cache(prompt.len() + forced.len())?;
    let never = AtomicBool::new(false);
    let (mut logits, _) = prefill(lm, prompt, &mut cache, None, &never)?.expect("not cancelled");
    let mut out = Vec::with_capacity(forced.len());
    for &id in forced {
        out.push(logprobs(&logits, id, top_n));
        logits = lm
            .model
            .forward(&[id], &mut cache, Logits::Last)?
            .squeeze(0)?
            .to_vec1::<f32>()?;
    }
    Ok(out)
}
