//! What the engine reports about a job, in its own terms: `Started` once the prompt is in, a
//! `Token` per generated token, then exactly one terminal event, `End` or `Failed`. The worker
//! maps these to its wire events (`llorch_wire::WorkerEvent`) and error codes; the engine knows
//! nothing of HTTP or of the wire's error taxonomy.

use llorch_wire::{StopReason, TokenLogprob};

/// Why a job's forward pass failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The device ran out of memory (CUDA's `CUDA_ERROR_OUT_OF_MEMORY`, Metal's and candle's
    /// "out of memory"): another worker, or this one later, may have the room.
    OutOfMemory,
    /// Anything else (a kernel error, a panic in the job's part of a round).
    Inference,
}

/// One event of a job.
#[derive(Debug, Clone, PartialEq)]
pub enum EngineEvent {
    /// The prompt is in the cache; generation starts.
    Started {
        job_id: String,
        model: String,
        /// RFC 3339 UTC.
        started_at: String,
        /// The seed sampling uses (the requested one, or the one drawn).
        seed: u64,
        tokens_in: u32,
        /// Prompt tokens whose keys and values came from the prompt cache.
        tokens_cached: u32,
        queue_time_ms: f64,
        /// Per prompt token, when asked for.
        prompt_logprobs: Option<Vec<TokenLogprob>>,
    },
    /// One generated token: its index, id and text (possibly empty while a UTF-8 character is
    /// incomplete).
    Token {
        i: u32,
        id: u32,
        t: String,
        logprob: Option<TokenLogprob>,
    },
    /// The job ended normally.
    End {
        job_id: String,
        stop_reason: StopReason,
        stop_sequence_matched: Option<String>,
        tokens_in: u32,
        tokens_out: u32,
        seed: u64,
        queue_time_ms: f64,
        prefill_time_ms: f64,
        decode_time_ms: f64,
        prefill_tokens_per_sec: f64,
        decode_tokens_per_sec: f64,
    },
    /// The job's forward pass failed after `tokens_out` tokens.
    Failed {
        job_id: String,
        failure: Failure,
        message: String,
        tokens_out: u32,
    },
}

impl EngineEvent {
    /// `End` or `Failed`: the job's last event.
    pub fn is_terminal(&self) -> bool {
        matches!(self, EngineEvent::End { .. } | EngineEvent::Failed { .. })
    }
}
