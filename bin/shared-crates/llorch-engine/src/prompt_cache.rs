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

/// Finished sequences, most recent first.
pub struct PromptCache {
    entries: VecDeque<Entry>,
    capacity: usize,
}

struct Entry {
    /// The tokens whose keys and values `cache` holds.
    tokens: Vec<u32>,
    cache: KvCache,
}

impl PromptCache {
    /// Keep at most `capacity` sequences (0 disables the cache).
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: VecDeque::with_capacity(capacity),
            capacity,
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

    /// Keep a finished sequence; the oldest goes when the cache is full, and kept sequences
    /// that are a prefix of this one (it knows everything they know) go at once.
    pub fn insert(&mut self, seq: Sequence) {
        if self.capacity == 0 {
            return;
        }
        let mut tokens = seq.tokens;
        tokens.truncate(seq.cache.len());
        if tokens.len() < MIN_REUSE {
            return;
        }
        self.entries.retain(|e| !tokens.starts_with(&e.tokens));
        self.entries.push_front(Entry {
            tokens,
            cache: seq.cache,
        });
        self.entries.truncate(self.capacity);
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
