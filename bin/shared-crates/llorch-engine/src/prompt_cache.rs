//! The prompt cache: the keys and values of recently finished sequences, kept so that a new
//! prompt that starts the same way (an agent's fixed system prompt, a chat that grows by one
//! turn per request) copies that part instead of computing it again.
//!
//! Reuse is exact in what it attends to: a position's keys and values depend only on the tokens
//! up to it, so a cached prefix holds what prefill would compute (to float rounding: the prefix
//! was computed in other chunk shapes).

use std::collections::VecDeque;

use crate::generate::Sequence;
use crate::model::KvCache;

/// Shortest shared prefix worth reusing (shorter ones are cheaper to recompute than to look up).
pub const MIN_REUSE: usize = 16;

/// Finished sequences, most recent first, within a memory budget.
pub struct PromptCache {
    entries: VecDeque<Entry>,
    max_bytes: usize,
}

struct Entry {
    /// The tokens whose keys and values `cache` holds.
    tokens: Vec<u32>,
    cache: KvCache,
    /// Memory those keys and values take.
    bytes: usize,
}

impl PromptCache {
    /// Keep sequences whose keys and values take at most `max_bytes` together (0 disables the
    /// cache).
    pub fn new(max_bytes: usize) -> Self {
        Self {
            entries: VecDeque::new(),
            max_bytes,
        }
    }

    /// The kept sequence sharing the longest prefix with `prompt`, and that length: at least
    /// [`MIN_REUSE`], and at most `prompt.len() - 1` (the last prompt token is always run, for
    /// the logits of the first generated one).
    pub fn lookup(&self, prompt: &[u32]) -> Option<(&KvCache, usize)> {
        let limit = prompt.len().saturating_sub(1);
        self.entries
            .iter()
            .map(|e| {
                let n = e
                    .tokens
                    .iter()
                    .zip(prompt)
                    .take_while(|(a, b)| a == b)
                    .count();
                (&e.cache, n.min(limit))
            })
            .filter(|&(_, n)| n >= MIN_REUSE)
            .max_by_key(|&(_, n)| n)
    }

    /// Keep a finished sequence; the oldest go while the budget is exceeded, and kept sequences
    /// that are a prefix of this one (it knows everything they know) go at once.
    pub fn insert(&mut self, seq: Sequence) {
        let mut tokens = seq.tokens;
        tokens.truncate(seq.cache.len());
        let bytes = tokens.len() * seq.cache.bytes_per_position();
        if tokens.len() < MIN_REUSE || bytes > self.max_bytes {
            return;
        }
        self.entries.retain(|e| !tokens.starts_with(&e.tokens));
        self.entries.push_front(Entry {
            tokens,
            cache: seq.cache,
            bytes,
        });
        while self.bytes() > self.max_bytes {
            self.entries.pop_back();
        }
    }

    /// Memory the kept keys and values take.
    pub fn bytes(&self) -> usize {
        self.entries.iter().map(|e| e.bytes).sum()
    }

    /// Sequences kept now.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampler::Sampler;
    use crate::stop::StopMatcher;
    use candle_core::Device;

    /// A finished sequence whose cache holds `tokens` (1 layer, 1 head of 4, F16: 16 bytes each).
    fn seq(tokens: Vec<u32>) -> Sequence {
        let mut cache = KvCache::new(
            1,
            1,
            4,
            tokens.len() + 4,
            &Device::Cpu,
            candle_core::DType::F16,
        )
        .unwrap();
        cache.advance(tokens.len());
        Sequence {
            prompt_len: tokens.len(),
            tokens,
            cache,
            sampler: Sampler::new(&Default::default()),
            stop: StopMatcher::new(&[]),
        }
    }

    #[test]
    fn longest_prefix_wins_within_the_memory_budget() {
        let a: Vec<u32> = (0..20).collect();
        let mut b = a.clone();
        b[18] = 99; // shares 18 tokens with `a`
        let c: Vec<u32> = (100..120).collect();
        assert_eq!(seq(a.clone()).cache.bytes_per_position(), 16);
        let mut pc = PromptCache::new(2 * 20 * 16); // room for two 20-token sequences
        pc.insert(seq(a.clone()));
        pc.insert(seq((0..10).collect())); // too short to be worth keeping
        assert_eq!(pc.len(), 1);
        let mut query = a.clone();
        query.push(7);
        assert_eq!(pc.lookup(&query).map(|(_, n)| n), Some(20));
        assert_eq!(
            pc.lookup(&a).map(|(_, n)| n),
            Some(19),
            "the last prompt token is run"
        );
        pc.insert(seq(b.clone()));
        pc.insert(seq(c.clone()));
        assert_eq!(pc.len(), 2, "the oldest went");
        assert_eq!(pc.bytes(), 2 * 20 * 16);
        assert_eq!(
            pc.lookup(&query).map(|(_, n)| n),
            Some(18),
            "only b's 18 shared tokens"
        );
        assert!(pc.lookup(&[5; 30]).is_none());
        // a sequence extending a kept one replaces it
        let mut longer = c.clone();
        longer.push(1);
        pc.insert(seq(longer));
        assert_eq!(
            pc.len(),
            1,
            "c replaced by its extension; b no longer fits beside it"
        );
        assert_eq!(pc.lookup(&c).map(|(_, n)| n), Some(19));
        assert!(PromptCache::new(0).lookup(&a).is_none());
    }
}
