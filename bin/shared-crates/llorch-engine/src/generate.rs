//! Running one job: prefill, decode loop, stop conditions, streamed events.
//!
//! Per-sequence state ([`Sequence`]: tokens, KV cache, sampler, stop matcher) is kept apart from
//! the shared weights, so a batching scheduler can drive many sequences over one model.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use llorch_wire::{SamplingParams, StopReason, TokenLogprob};

use crate::events::{EngineEvent, Failure};

use crate::load::LoadedModel;
use crate::model::{KvCache, Logits};
pub use crate::prefill::{prefill, Prefill, PREFILL_CHUNK};
use crate::sampler::{logprobs, with_bytes, Sampler};
use crate::stop::{StopCheck, StopMatcher};
use crate::tokenizer::StreamDecoder;
use llorch_constraint::Guide;

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
    /// Constrained decoding: only tokens this guide allows are sampled (compiled from the
    /// request's constraint by [`LoadedModel::compile_constraint`]).
    pub guide: Option<Guide>,
    pub cancel: Arc<AtomicBool>,
    pub enqueued_at: Instant,
}

impl Job {
    /// A job with no stop strings, log-probabilities or chat-turn handling, enqueued now.
    pub fn new(
        job_id: impl Into<String>,
        prompt_ids: Vec<u32>,
        max_tokens: u32,
        sampling: SamplingParams,
    ) -> Job {
        Job {
            job_id: job_id.into(),
            prompt_ids,
            max_tokens,
            sampling,
            stop: Vec::new(),
            turn_stops: Vec::new(),
            trim_reply_start: false,
            logprobs: None,
            prompt_logprobs: None,
            guide: None,
            cancel: Arc::new(AtomicBool::new(false)),
            enqueued_at: Instant::now(),
        }
    }
}

/// Where a job's events go. `send` returns false when nobody listens any more (client gone),
/// which cancels the job.
pub trait EventSink: Send {
    fn send(&mut self, event: EngineEvent) -> bool;
}

impl<F: FnMut(EngineEvent) -> bool + Send> EventSink for F {
    fn send(&mut self, event: EngineEvent) -> bool {
        self(event)
    }
}

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

/// Run `job` to completion on the calling thread, sending exactly one terminal event.
pub fn run_job(lm: &LoadedModel, job: Job, sink: &mut dyn EventSink) {
    let Some(mut run) = Running::start(lm, job, Box::new(|ev| sink.send(ev))) else {
        return;
    };
    while let Some(id) = run.step() {
        let next = lm
            .model
            .forward(&[id], &mut run.seq.cache, Logits::Last)
            .and_then(|l| Ok(l.squeeze(0)?.to_vec1::<f32>()?));
        match next {
            Ok(logits) => run.set_logits(logits),
            Err(e) => return run.fail(&e),
        }
    }
}

/// One job between its prefill and its terminal event: the sequence, its stream decoder and
/// the logits of its next position. [`run_job`] drives one; the engine's scheduler drives many,
/// feeding [`step`](Running::step)'s tokens through one batched forward pass.
pub struct Running<'a> {
    lm: &'a LoadedModel,
    job_id: String,
    cancel: Arc<AtomicBool>,
    max_tokens: u32,
    top_n: Option<usize>,
    /// The sequence (its KV cache is what a batched forward pass appends to).
    pub seq: Sequence,
    decoder: StreamDecoder<'a>,
    logits: Vec<f32>,
    /// The constraint's state; `masked` once `logits` has had its mask applied (`raw` then
    /// keeps the unmasked logits when log-probabilities are wanted).
    guide: Option<Guide>,
    masked: bool,
    raw: Option<Vec<f32>>,
    tokens_out: u32,
    seed: u64,
    n_prompt: usize,
    queue_time_ms: f64,
    /// Leading prompt tokens taken from the prompt cache.
    tokens_cached: usize,
    /// The prompt's prefill while it runs, and when it began.
    prefill: Option<(Prefill, Instant)>,
    prefill_ms: f64,
    t_decode: Instant,
    decode_steps: u32,
    sink: Box<dyn EventSink + 'a>,
}

impl<'a> Running<'a> {
    /// Prefill the prompt and send `started`. `None` when the job already ended (cancelled
    /// during prefill, failed, or nobody listens): its terminal event has been sent.
    pub fn start(lm: &'a LoadedModel, job: Job, sink: Box<dyn EventSink + 'a>) -> Option<Self> {
        let mut run = Self::admit(lm, job, sink, None)?;
        while run.is_prefilling() {
            if !run.prefill_step(PREFILL_CHUNK) {
                return None;
            }
        }
        Some(run)
    }

    /// Take the job in without running anything yet: [`prefill_step`](Running::prefill_step)
    /// feeds its prompt. With `reuse = (cache, n)`, the first `n` prompt tokens' keys and values
    /// are copied from `cache` (an earlier sequence that began with the same `n` tokens) and
    /// only the rest is prefilled. `None` when it could not even start (its `error` event sent).
    pub fn admit(
        lm: &'a LoadedModel,
        job: Job,
        mut sink: Box<dyn EventSink + 'a>,
        reuse: Option<(&KvCache, usize)>,
    ) -> Option<Self> {
        let n_prompt = job.prompt_ids.len();
        let reused = reuse.filter(|&(_, n)| n < n_prompt && job.prompt_logprobs.is_none());
        let cache = lm
            .model
            .new_cache(n_prompt + job.max_tokens as usize)
            .and_then(|mut c| {
                if let Some((src, n)) = reused {
                    c.copy_prefix(src, n)?;
                }
                Ok(c)
            });
        let cache = match cache {
            Ok(c) => c,
            Err(e) => {
                sink.send(failure_event(&job.job_id, &e, 0));
                return None;
            }
        };
        let seq = Sequence {
            tokens: job.prompt_ids,
            prompt_len: n_prompt,
            cache,
            sampler: Sampler::new(&job.sampling),
            stop: StopMatcher::for_turn(&job.stop, &job.turn_stops, job.trim_reply_start),
        };
        let prompt_top = job.prompt_logprobs.map(|n| n as usize);
        Some(Running {
            lm,
            job_id: job.job_id,
            cancel: job.cancel,
            max_tokens: job.max_tokens,
            top_n: job.logprobs.map(|n| n as usize),
            seed: seq.sampler.seed(),
            seq,
            decoder: StreamDecoder::new(&lm.tokenizer, true),
            logits: Vec::new(),
            guide: job.guide,
            masked: false,
            raw: None,
            tokens_out: 0,
            n_prompt,
            queue_time_ms: ms(job.enqueued_at),
            tokens_cached: reused.map_or(0, |(_, n)| n),
            prefill: Some((
                Prefill::resume(prompt_top, reused.map_or(0, |(_, n)| n)),
                Instant::now(),
            )),
            prefill_ms: 0.0,
            t_decode: Instant::now(),
            decode_steps: 0,
            sink,
        })
    }

    /// The finished job's sequence (for the prompt cache: its tokens and their keys and values).
    pub fn into_sequence(self) -> Sequence {
        self.seq
    }

    /// Whether the prompt is still being fed.
    pub fn is_prefilling(&self) -> bool {
        self.prefill.is_some()
    }

    /// Feed up to `max` more prompt tokens; once the whole prompt is in, send `started`. Returns
    /// false when the job has ended (cancelled, failed, or nobody listens).
    pub fn prefill_step(&mut self, max: usize) -> bool {
        let Some((mut p, t0)) = self.prefill.take() else {
            return true;
        };
        if self.cancel.load(Ordering::Relaxed) {
            self.prefill_ms = ms(t0);
            self.end::<()>(StopReason::Cancelled, None);
            return false;
        }
        let prompt = &self.seq.tokens[..self.seq.prompt_len];
        if let Err(e) = p.advance(self.lm, prompt, &mut self.seq.cache, max) {
            self.fail(&e);
            return false;
        }
        self.after_chunk(p, t0)
    }

    /// Keep prefilling, or, with the whole prompt in, send `started`.
    fn after_chunk(&mut self, p: Prefill, t0: Instant) -> bool {
        let prompt = &self.seq.tokens[..self.seq.prompt_len];
        if !p.done(prompt) {
            self.prefill = Some((p, t0));
            return true;
        }
        self.prefill_ms = ms(t0);
        self.logits = p.last;
        let started = EngineEvent::Started {
            job_id: self.job_id.clone(),
            model: self.lm.info.name.clone(),
            started_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            seed: self.seed,
            tokens_in: self.n_prompt as u32,
            queue_time_ms: self.queue_time_ms,
            tokens_cached: self.tokens_cached as u32,
            prompt_logprobs: p.prompt_top.map(|_| p.plp),
        };
        self.t_decode = Instant::now();
        self.sink.send(started)
    }

    /// The next prompt chunk (at most `max` tokens) and the logits it needs, for a forward pass
    /// shared with other jobs ([`Transformer::forward_segments`](crate::model::Transformer::forward_segments));
    /// hand the result to [`absorb_chunk`](Running::absorb_chunk). `None` when the job is not
    /// prefilling, or has just ended (cancelled: its terminal event sent).
    pub fn next_chunk(&mut self, max: usize) -> Option<(Vec<u32>, Logits)> {
        let (p, t0) = self.prefill.as_ref()?;
        if self.cancel.load(Ordering::Relaxed) {
            self.prefill_ms = ms(*t0);
            self.prefill = None;
            return self.end(StopReason::Cancelled, None);
        }
        let prompt = &self.seq.tokens[..self.seq.prompt_len];
        let (n, mode) = p.plan(self.lm, prompt, max);
        Some((prompt[p.next..p.next + n].to_vec(), mode))
    }

    /// The logits (rows) of the chunk [`next_chunk`](Running::next_chunk) gave, its `n` tokens
    /// now in the cache; once the whole prompt is in, send `started`. Returns false when the
    /// job has ended (nobody listens).
    pub fn absorb_chunk(&mut self, n: usize, rows: Vec<Vec<f32>>) -> bool {
        let Some((mut p, t0)) = self.prefill.take() else {
            return true;
        };
        p.absorb(self.lm, &self.seq.tokens[..self.seq.prompt_len], n, rows);
        self.after_chunk(p, t0)
    }

    /// Sample the next token from the current logits and stream it. Returns the token to feed
    /// to the model next, or `None` when the job has ended (its terminal event sent).
    pub fn step(&mut self) -> Option<u32> {
        if let Err(e) = self.apply_mask() {
            self.fail(&e);
            return None;
        }
        let lp_source = match self.raw.take() {
            Some(raw) => Some(raw),
            None => self.top_n.map(|_| self.logits.clone()),
        };
        self.masked = false;
        let id = self.seq.sampler.sample(&mut self.logits, &self.seq.tokens);
        let stop = self.lm.tokenizer.stop_ids().contains(&id);
        // An end token (allowed only where the output may end) ends the job: nothing to commit.
        if let Some(g) = self.guide.as_mut().filter(|_| !stop) {
            if let Err(e) = g.commit(id) {
                self.fail(&anyhow::anyhow!(e));
                return None;
            }
        }
        if stop {
            let rest = self.decoder.finish() + &self.seq.stop.finish();
            if !rest.is_empty() {
                // flush held text with the last token's index; no extra token event for EOS
                self.sink.send(EngineEvent::Token {
                    i: self.tokens_out.saturating_sub(1),
                    id,
                    t: rest,
                    logprob: None,
                });
            }
            return self.end(StopReason::Eos, None);
        }
        self.seq.tokens.push(id);
        let piece = self.decoder.push(id);
        let logprob = match (&lp_source, self.top_n) {
            (Some(src), Some(n)) => Some(with_bytes(logprobs(src, id, n), &self.lm.tokenizer)),
            _ => None,
        };
        let i = self.tokens_out;
        self.tokens_out += 1;
        let (t, ended) = match self.seq.stop.push(&piece) {
            StopCheck::Matched { release, stop } => {
                (release, Some((StopReason::StopSequence, Some(stop))))
            }
            StopCheck::EndOfTurn { release } => (release, Some((StopReason::Eos, None))),
            StopCheck::Continue(text) if self.tokens_out >= self.max_tokens => (
                text + &self.decoder.cut() + &self.seq.stop.finish(),
                Some((StopReason::MaxTokens, None)),
            ),
            StopCheck::Continue(text) => (text, None),
        };
        if !self.sink.send(EngineEvent::Token { i, id, t, logprob }) {
            self.cancel.store(true, Ordering::Relaxed);
        }
        if let Some((reason, matched)) = ended {
            return self.end(reason, matched);
        }
        if self.cancel.load(Ordering::Relaxed) {
            return self.end(StopReason::Cancelled, None);
        }
        Some(id)
    }

    /// Whether this job decodes under a constraint.
    pub fn is_constrained(&self) -> bool {
        self.guide.is_some()
    }

    /// Under a constraint, ban every token of the current logits that may not come next (once
    /// per position; [`step`](Running::step) does it when the scheduler has not). Log-probabilities
    /// stay those of the raw distribution.
    pub fn apply_mask(&mut self) -> Result<()> {
        let Some(g) = &mut self.guide else {
            return Ok(());
        };
        if self.masked {
            return Ok(());
        }
        if self.top_n.is_some() {
            self.raw = Some(self.logits.clone());
        }
        g.mask(&mut self.logits)?;
        self.masked = true;
        Ok(())
    }

    /// The logits after the token [`step`](Running::step) returned was fed to the model.
    pub fn set_logits(&mut self, logits: Vec<f32>) {
        self.logits = logits;
        self.decode_steps += 1;
    }

    /// The job's id.
    pub fn job_id(&self) -> &str {
        &self.job_id
    }

    /// End the job with an `error` event (the forward pass failed): `VRAM_OOM` when the device
    /// ran out of memory, else `INFERENCE_FAILED`.
    pub fn fail(&mut self, e: &anyhow::Error) {
        self.prefill = None;
        self.sink
            .send(failure_event(&self.job_id, e, self.tokens_out));
    }

    /// Send the `end` event; always `None`, for `return self.end(..)`.
    fn end<T>(&mut self, reason: StopReason, matched: Option<String>) -> Option<T> {
        let decode_ms = if self.tokens_out > 0 || self.decode_steps > 0 {
            ms(self.t_decode)
        } else {
            0.0
        };
        let per_sec = |n: f64, t: f64| if t > 0.0 { n / t * 1e3 } else { 0.0 };
        self.sink.send(EngineEvent::End {
            job_id: self.job_id.clone(),
            stop_reason: reason,
            stop_sequence_matched: matched,
            tokens_in: self.n_prompt as u32,
            tokens_out: self.tokens_out,
            seed: self.seed,
            queue_time_ms: self.queue_time_ms,
            prefill_time_ms: self.prefill_ms,
            decode_time_ms: decode_ms,
            prefill_tokens_per_sec: per_sec(self.n_prompt as f64, self.prefill_ms),
            decode_tokens_per_sec: per_sec(self.decode_steps as f64, decode_ms),
        });
        None
    }
}

/// Free-running greedy generation of at most `n` tokens after `prompt`; a stop id, if reached,
/// is included. For parity checks against reference engines.
pub fn greedy(lm: &LoadedModel, prompt: &[u32], n: usize) -> Result<Vec<u32>> {
    let mut cache = lm.model.new_cache(prompt.len() + n)?;
    let never = AtomicBool::new(false);
    let (mut logits, _) = prefill(lm, prompt, &mut cache, None, &never)?.expect("not cancelled");
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let id = crate::sampler::argmax(&logits);
        out.push(id);
        if lm.tokenizer.stop_ids().contains(&id) {
            break;
        }
        logits = lm
            .model
            .forward(&[id], &mut cache, Logits::Last)?
            .squeeze(0)?
            .to_vec1::<f32>()?;
    }
    Ok(out)
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
        out.push(with_bytes(logprobs(&logits, id, top_n), &lm.tokenizer));
        logits = lm
            .model
            .forward(&[id], &mut cache, Logits::Last)?
            .squeeze(0)?
            .to_vec1::<f32>()?;
    }
    Ok(out)
}

/// The `Failed` event of a job whose forward pass (or cache allocation) failed, logged: an
/// out-of-memory of the device is [`Failure::OutOfMemory`], anything else
/// [`Failure::Inference`].
pub fn failure_event(job_id: &str, e: &anyhow::Error, tokens_out: u32) -> EngineEvent {
    let message = llorch_wire::human_message(&format!("{e:#}"));
    let failure = if is_out_of_memory(&message) {
        Failure::OutOfMemory
    } else {
        Failure::Inference
    };
    tracing::error!(job_id, ?failure, error = %message, "inference failed");
    EngineEvent::Failed {
        job_id: job_id.to_string(),
        failure,
        message,
        tokens_out,
    }
}

/// Whether an error message says the device ran out of memory.
fn is_out_of_memory(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    [
        "out of memory",
        "out_of_memory",
        "outofmemory",
        "insufficient memory",
    ]
    .iter()
    .any(|p| m.contains(p))
}

#[cfg(test)]
mod failure_tests {
    use super::*;

    #[test]
    fn device_out_of_memory_is_its_own_failure() {
        for text in [
            "DriverError(CUDA_ERROR_OUT_OF_MEMORY, \"out of memory\")",
            "Metal error: Insufficient Memory (00000008:kIOGPUCommandBufferCallbackErrorOutOfMemory)",
        ] {
            match failure_event("j", &anyhow::anyhow!(text.to_string()), 3) {
                EngineEvent::Failed { failure, tokens_out, .. } => {
                    assert_eq!((failure, tokens_out), (Failure::OutOfMemory, 3), "{text}");
                }
                other => panic!("{other:?}"),
            }
        }
        match failure_event("j", &anyhow::anyhow!("shape mismatch in matmul"), 0) {
            EngineEvent::Failed { failure, .. } => assert_eq!(failure, Failure::Inference),
            other => panic!("{other:?}"),
        }
    }
}
