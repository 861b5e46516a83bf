//! Token sampling from logits: repetition penalty, temperature, top-k, top-p, min-p, seeded RNG;
//! and log-probabilities of the model's raw distribution.

use llorch_wire::{SamplingParams, TokenLogprob, TopLogprob};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Per-sequence sampler state.
pub struct Sampler {
    params: SamplingParams,
    seed: u64,
    rng: StdRng,
    /// Scratch: (logit, id) candidates.
    cand: Vec<(f32, u32)>,
}

impl Sampler {
    /// A sampler; `params.seed == None` picks a random seed (reported via [`Sampler::seed`]).
    pub fn new(params: &SamplingParams) -> Self {
        let seed = params.seed.unwrap_or_else(|| rand::rng().random());
        Self {
            params: params.clone(),
            seed,
            rng: StdRng::seed_from_u64(seed),
            cand: Vec::new(),
        }
    }

    /// The effective seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Pick the next token. `history` is every token so far (prompt + output), used by the
    /// repetition penalty. `logits` is modified in place.
    pub fn sample(&mut self, logits: &mut [f32], history: &[u32]) -> u32 {
        let p = &self.params;
        if p.repetition_penalty != 1.0 {
            let mut seen = history.to_vec();
            seen.sort_unstable();
            seen.dedup();
            for id in seen {
                if let Some(l) = logits.get_mut(id as usize) {
                    *l = if *l > 0.0 {
                        *l / p.repetition_penalty
                    } else {
                        *l * p.repetition_penalty
                    };
                }
            }
        }
        if p.temperature == 0.0 {
            return argmax(logits);
        }
        let t = p.temperature;
        self.cand.clear();
        self.cand
            .extend(logits.iter().enumerate().map(|(i, &l)| (l / t, i as u32)));
        let cand = &mut self.cand;
        if p.top_k > 0 && (p.top_k as usize) < cand.len() {
            let k = p.top_k as usize;
            cand.select_nth_unstable_by(k - 1, |a, b| b.0.total_cmp(&a.0));
            cand.truncate(k);
        }
        let filter_sorted = p.top_p < 1.0 || p.min_p > 0.0;
        if filter_sorted {
            cand.sort_unstable_by(|a, b| b.0.total_cmp(&a.0));
        }
        // softmax over the candidates
        let max = cand.iter().map(|c| c.0).fold(f32::NEG_INFINITY, f32::max);
        let mut probs: Vec<f32> = cand.iter().map(|c| (c.0 - max).exp()).collect();
        let sum: f32 = probs.iter().sum();
        probs.iter_mut().for_each(|x| *x /= sum);
        let mut keep = probs.len();
        if p.min_p > 0.0 && !probs.is_empty() {
            let floor = probs[0] * p.min_p;
            keep = keep.min(
                probs
                    .iter()
                    .position(|&x| x < floor)
                    .unwrap_or(probs.len())
                    .max(1),
            );
        }
        if p.top_p < 1.0 {
            let mut acc = 0.0;
            for (i, &x) in probs.iter().enumerate().take(keep) {
                acc += x;
                if acc >= p.top_p {
                    keep = i + 1;
                    break;
                }
            }
        }
        let total: f32 = probs[..keep].iter().sum();
        let mut r = self.rng.random::<f32>() * total;
        for (i, &x) in probs[..keep].iter().enumerate() {
            r -= x;
            if r <= 0.0 {
                return cand[i].1;
            }
        }
        cand[keep - 1].1
    }
}

/// Index of the largest logit (first one on ties).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    let mut best_v = f32::NEG_INFINITY;
    for (i, &v) in logits.iter().enumerate() {
        if v > best_v {
            best_v = v;
            best = i;
        }
    }
    best as u32
}

/// Log-probability of `id` and the `top_n` most likely tokens under softmax(`logits`).
pub fn logprobs(logits: &[f32], id: u32, top_n: usize) -> TokenLogprob {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let lse = max as f64
        + logits
            .iter()
            .map(|&l| ((l - max) as f64).exp())
            .sum::<f64>()
            .ln();
    let lp = |i: usize| (logits[i] as f64 - lse) as f32;
    let mut top = Vec::new();
    if top_n > 0 {
        let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
        let n = top_n.min(idx.len());
        idx.select_nth_unstable_by(n - 1, |&a, &b| {
            logits[b as usize].total_cmp(&logits[a as usize])
        });
        idx.truncate(n);
        idx.sort_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]));
        top = idx
            .into_iter()
            .map(|i| TopLogprob {
                id: i,
                logprob: lp(i as usize),
                bytes: Vec::new(),
            })
            .collect();
    }
    TokenLogprob {
        id,
        logprob: lp(id as usize),
        bytes: Vec::new(),
        top,
    }
}

/// `lp` with the raw bytes of its token and of each alternative, from `tok`.
pub fn with_bytes(mut lp: TokenLogprob, tok: &crate::tokenizer::Tokenizer) -> TokenLogprob {
    lp.bytes = tok.token_bytes(lp.id).to_vec();
    for t in &mut lp.top {
        t.bytes = tok.token_bytes(t.id).to_vec();
    }
    lp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_is_argmax_and_seed_is_deterministic() {
        let logits = vec![0.1, 3.0, 2.9, -1.0];
        let mut s = Sampler::new(&SamplingParams::greedy());
        assert_eq!(s.sample(&mut logits.clone(), &[]), 1);
        let params = SamplingParams {
            temperature: 1.0,
            seed: Some(42),
            ..Default::default()
        };
        let run = || {
            let mut s = Sampler::new(&params);
            (0..20)
                .map(|_| s.sample(&mut logits.clone(), &[]))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(), run());
    }

    #[test]
    fn filters_restrict_the_support() {
        let logits = vec![5.0, 4.0, 0.0, -3.0];
        let params = SamplingParams {
            temperature: 1.0,
            top_k: 2,
            seed: Some(1),
            ..Default::default()
        };
        let mut s = Sampler::new(&params);
        for _ in 0..200 {
            assert!(s.sample(&mut logits.clone(), &[]) < 2);
        }
        let params = SamplingParams {
            temperature: 1.0,
            min_p: 0.5,
            seed: Some(1),
            ..Default::default()
        };
        let mut s = Sampler::new(&params);
        for _ in 0..200 {
            assert!(s.sample(&mut logits.clone(), &[]) < 2); // p1/p0 = e^-1 < 0.5 excluded? no: 0.37 < 0.5
        }
        let params = SamplingParams {
            temperature: 1.0,
            top_p: 0.5,
            seed: Some(1),
            ..Default::default()
        };
        let mut s = Sampler::new(&params);
        for _ in 0..200 {
            assert_eq!(s.sample(&mut logits.clone(), &[]), 0);
        }
    }

    #[test]
    fn repetition_penalty_demotes_seen_tokens() {
        let mut logits = vec![2.0, 1.9];
        let params = SamplingParams {
            temperature: 0.0,
            repetition_penalty: 1.5,
            ..Default::default()
        };
        let mut s = Sampler::new(&params);
        assert_eq!(s.sample(&mut logits, &[0]), 1);
    }

    #[test]
    fn logprobs_are_normalised() {
        let lp = logprobs(&[0.0, 0.0], 1, 2);
        assert!((lp.logprob - (0.5f32).ln()).abs() < 1e-6);
        assert_eq!(lp.top.len(), 2);
    }
}
