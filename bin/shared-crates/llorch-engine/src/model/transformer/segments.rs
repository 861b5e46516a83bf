//! One forward pass over several sequences' new tokens at once: a prefill chunk of one job and
//! the next token of every decoding job go through the projections and the MLP together (each
//! weight is read once per round), while attention runs per sequence against its own cache.

use anyhow::{Context, Result};
use candle_core::Tensor;

use super::{KvCache, Logits, Transformer};

/// One sequence's part of a forward pass: its new tokens, appended to its cache at the cache's
/// next positions, and which of their logits to return.
pub struct Segment<'a> {
    /// The new tokens (at least one).
    pub ids: &'a [u32],
    /// The sequence's cache; the tokens go in at `cache.len()..`.
    pub cache: &'a mut KvCache,
    /// The last position's logits, or every position's.
    pub logits: Logits,
}

impl Transformer {
    /// Run every segment's tokens through the model in one pass. Returns, per segment, F32
    /// logits `(1, vocab)` for [`Logits::Last`] or `(ids.len(), vocab)` for [`Logits::All`].
    /// Each row's arithmetic does not depend on the other rows, so a sequence gets the same
    /// logits whether it runs alone or with others.
    ///
    /// On the CPU kernels the whole pass runs on a rayon worker: every operation's parallel
    /// loop then starts on a thread that is already awake, instead of the caller handing each
    /// one to the pool and sleeping until it is done (two thread wake-ups per matmul, tens of
    /// microseconds each on a VM: a third of a decode step on small models).
    pub fn forward_segments(&self, segs: &mut [Segment<'_>]) -> Result<Vec<Tensor>> {
        if self.native && rayon::current_thread_index().is_none() {
            return rayon::scope(|_| self.forward_segments_here(segs));
        }
        self.forward_segments_here(segs)
    }

    /// [`Transformer::forward_segments`] on the calling thread.
    fn forward_segments_here(&self, segs: &mut [Segment<'_>]) -> Result<Vec<Tensor>> {
        anyhow::ensure!(!segs.is_empty(), "forward pass without a sequence");
        let mut spans = Vec::with_capacity(segs.len());
        let mut ids = Vec::new();
        for s in segs.iter() {
            let (pos, n) = (s.cache.len(), s.ids.len());
            anyhow::ensure!(n > 0, "forward pass over an empty segment");
            anyhow::ensure!(
                pos + n <= s.cache.capacity(),
                "KV cache full: {pos} + {n} > {}",
                s.cache.capacity()
            );
            spans.push((ids.len(), n));
            ids.extend_from_slice(s.ids);
        }
        // The CPU attention kernel applies causality and the window itself; the device-generic
        // path needs additive masks for segments of several tokens.
        let masks = segs
            .iter()
            .map(|s| {
                let (pos, n) = (s.cache.len(), s.ids.len());
                if n == 1 || self.native {
                    return Ok((None, None));
                }
                let local = match self.cfg.sliding_window {
                    Some(w) => Some(self.mask(n, pos, Some(w))?),
                    None => None,
                };
                Ok((Some(self.mask(n, pos, None)?), local))
            })
            .collect::<Result<Vec<_>>>()?;
        let mut x = self.embed(&ids)?; // (rows, d)
        for (li, layer) in self.layers.iter().enumerate() {
            let h = self.rms(&x, &layer.attn_norm)?;
            let (q, k, v) = self.qkv(layer, &h)?;
            let mut rows = Vec::with_capacity(segs.len());
            for ((s, &(off, n)), (global, local)) in segs.iter_mut().zip(&spans).zip(&masks) {
                let mask = if layer.local { local } else { global };
                let pos = s.cache.len();
                rows.push(self.attend(
                    li,
                    layer,
                    (
                        q.narrow(0, off, n)?,
                        k.narrow(0, off, n)?,
                        v.narrow(0, off, n)?,
                    ),
                    pos,
                    s.cache,
                    mask.as_ref(),
                )?);
            }
            let out = match rows.len() {
                1 => rows.pop().expect("one row block"),
                _ => Tensor::cat(&rows, 0)?,
            };
            let a = layer
                .o
                .forward(&out)
                .context("attention output projection")?;
            x = self.residual_and_mlp(layer, x, a)?;
        }
        for (s, &(_, n)) in segs.iter_mut().zip(&spans) {
            s.cache.advance(n);
        }
        // Only the rows whose logits are wanted go through the output projection.
        let mut pick = Vec::with_capacity(ids.len());
        let mut counts = Vec::with_capacity(segs.len());
        for (s, &(off, n)) in segs.iter().zip(&spans) {
            let wanted = match s.logits {
                Logits::Last => off + n - 1..off + n,
                Logits::All => off..off + n,
            };
            counts.push(wanted.len());
            pick.extend(wanted.map(|r| r as u32));
        }
        let x = if pick.len() == ids.len() {
            x
        } else {
            x.index_select(&Tensor::new(pick.as_slice(), x.device())?, 0)?
        };
        let logits = self.logits(&x)?;
        let mut out = Vec::with_capacity(counts.len());
        let mut row = 0;
        for c in counts {
            out.push(logits.narrow(0, row, c)?);
            row += c;
        }
        Ok(out)
    }
}
