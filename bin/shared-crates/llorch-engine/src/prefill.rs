//! A prompt's prefill: fed to the model chunk by chunk, alone or as one segment of a forward
//! pass shared with other jobs' decode steps (see the engine's scheduler).

use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Result;
use llorch_wire::TokenLogprob;

use crate::load::LoadedModel;
use crate::model::{KvCache, Logits};
use crate::sampler::{logprobs, with_bytes};

/// Prompt tokens per forward pass during prefill (bounds activation memory).
pub const PREFILL_CHUNK: usize = 512;

/// Most logits (floats) one prefill chunk may return when every position's logits are kept for
/// `prompt_logprobs`: 16 Mi floats = 64 MiB, so a 262k-word vocabulary (Gemma) prefills 64
/// positions at a time instead of holding 512 × 262k floats (0.5 GiB, twice over).
const ALL_LOGITS_BUDGET: usize = 16 << 20;

/// Prefill `ids` into `cache` and return the logits of the last position (and, when
/// `prompt_top` is set, the log-probability of every prompt token after the first).
pub fn prefill(
    lm: &LoadedModel,
    ids: &[u32],
    cache: &mut KvCache,
    prompt_top: Option<usize>,
    cancel: &AtomicBool,
) -> Result<Option<(Vec<f32>, Vec<TokenLogprob>)>> {
    let mut p = Prefill::new(prompt_top);
    while !p.done(ids) {
        if cancel.load(Ordering::Relaxed) {
            return Ok(None);
        }
        p.advance(lm, ids, cache, PREFILL_CHUNK)?;
    }
    Ok(Some((p.last, p.plp)))
}

/// A prompt's prefill in progress: fed chunk by chunk, so a scheduler can interleave it with
/// other jobs' decode steps.
pub struct Prefill {
    pub(crate) next: usize,
    pub(crate) prompt_top: Option<usize>,
    pub(crate) plp: Vec<TokenLogprob>,
    pub(crate) last: Vec<f32>,
}

impl Prefill {
    /// Nothing fed yet; with `prompt_top`, every prompt token's log-probability is collected.
    pub fn new(prompt_top: Option<usize>) -> Self {
        Self::resume(prompt_top, 0)
    }

    /// The first `next` tokens are already in the cache (reused from an earlier sequence).
    pub fn resume(prompt_top: Option<usize>, next: usize) -> Self {
        Self {
            next,
            prompt_top,
            plp: Vec::new(),
            last: Vec::new(),
        }
    }

    /// Whether all of `ids` has been fed.
    pub fn done(&self, ids: &[u32]) -> bool {
        self.next >= ids.len()
    }

    /// Feed up to `max` more tokens of `ids` (fewer when every position's logits are kept: at
    /// most [`ALL_LOGITS_BUDGET`] floats per pass).
    pub fn advance(
        &mut self,
        lm: &LoadedModel,
        ids: &[u32],
        cache: &mut KvCache,
        max: usize,
    ) -> Result<()> {
        let (n, mode) = self.plan(lm, ids, max);
        let rows = lm
            .model
            .forward(&ids[self.next..self.next + n], cache, mode)?
            .to_vec2::<f32>()?;
        self.absorb(lm, ids, n, rows);
        Ok(())
    }

    /// How many of the next tokens of `ids` to feed (at most `max`), and which logits they need.
    pub(crate) fn plan(&self, lm: &LoadedModel, ids: &[u32], max: usize) -> (usize, Logits) {
        let (mode, cap) = match self.prompt_top {
            Some(_) => (
                Logits::All,
                (ALL_LOGITS_BUDGET / lm.model.cfg.vocab_size.max(1)).clamp(16, PREFILL_CHUNK),
            ),
            None => (Logits::Last, PREFILL_CHUNK),
        };
        (max.min(cap).max(1).min(ids.len() - self.next), mode)
    }

    /// Take the logits of the `n` tokens [`plan`](Prefill::plan) chose, after they went
    /// through the model.
    pub(crate) fn absorb(&mut self, lm: &LoadedModel, ids: &[u32], n: usize, rows: Vec<Vec<f32>>) {
        if let Some(top) = self.prompt_top {
            for (r, row) in rows.iter().enumerate() {
                if let Some(&next) = ids.get(self.next + r + 1) {
                    self.plp
                        .push(with_bytes(logprobs(row, next, top), &lm.tokenizer));
                }
            }
        }
        self.last = rows.into_iter().last().unwrap_or_default();
        self.next += n;
    }
}
