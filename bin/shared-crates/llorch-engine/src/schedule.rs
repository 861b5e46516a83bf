//! The engine's scheduling policy, as pure functions of the running jobs' phases: how many
//! queued jobs to admit, and what one round of the engine loop does (a prefill alone, or one
//! forward pass with every decoding job's token plus a prefilling job's short chunk). The engine
//! thread (`engine::schedule`) carries the plans out; the tests here pin the policy without a
//! model.

use crate::prefill::PREFILL_CHUNK;

/// Prompt tokens a new job's prefill may add to a decode pass: bounds the pause a long prompt
/// causes the jobs that are generating (SmolLM2 on 2 cores: ~0.3 s).
pub const INTERLEAVED_PREFILL_CHUNK: usize = 128;
const _: () = assert!(INTERLEAVED_PREFILL_CHUNK < PREFILL_CHUNK);

/// Where a running job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Its prompt is not fully in the cache yet.
    Prefilling,
    /// It samples a token each round.
    Decoding,
}

/// Queued jobs to take now: as many as there are free slots.
pub fn admit(running: usize, parallel: usize) -> usize {
    parallel.saturating_sub(running)
}

/// What one round does; job numbers index the running jobs, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Round {
    /// Nothing runs.
    Idle,
    /// Nothing decodes: the oldest prefilling job feeds up to `chunk` prompt tokens alone.
    Prefill { job: usize, chunk: usize },
    /// Every decoding job samples its next token; the tokens go through one forward pass,
    /// joined by up to `chunk` prompt tokens of the oldest prefilling job, if any.
    Decode {
        jobs: Vec<usize>,
        prefill: Option<(usize, usize)>,
    },
}

/// The round for jobs in these phases.
pub fn plan(phases: &[Phase]) -> Round {
    let decoding: Vec<usize> = (0..phases.len())
        .filter(|&i| phases[i] == Phase::Decoding)
        .collect();
    let prefilling = phases.iter().position(|p| *p == Phase::Prefilling);
    match (decoding.is_empty(), prefilling) {
        (true, None) => Round::Idle,
        (true, Some(job)) => Round::Prefill {
            job,
            chunk: PREFILL_CHUNK,
        },
        (false, prefill) => Round::Decode {
            jobs: decoding,
            prefill: prefill.map(|j| (j, INTERLEAVED_PREFILL_CHUNK)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Phase::{Decoding as D, Prefilling as P};

    #[test]
    fn admits_up_to_the_free_slots() {
        assert_eq!(admit(0, 4), 4);
        assert_eq!(admit(3, 4), 1);
        assert_eq!(admit(4, 4), 0);
        assert_eq!(admit(5, 4), 0);
    }

    #[test]
    fn a_new_prompt_prefills_alone_in_big_chunks_when_nothing_decodes() {
        assert_eq!(plan(&[]), Round::Idle);
        assert_eq!(
            plan(&[P, P]),
            Round::Prefill {
                job: 0,
                chunk: PREFILL_CHUNK
            }
        );
    }

    #[test]
    fn decoding_jobs_share_one_pass_with_the_oldest_prompts_short_chunk() {
        assert_eq!(
            plan(&[D, P, D, P]),
            Round::Decode {
                jobs: vec![0, 2],
                prefill: Some((1, INTERLEAVED_PREFILL_CHUNK))
            }
        );
        assert_eq!(
            plan(&[D, D]),
            Round::Decode {
                jobs: vec![0, 1],
                prefill: None
            }
        );
    }
}
