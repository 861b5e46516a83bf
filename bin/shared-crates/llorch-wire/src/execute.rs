//! `POST /execute` on a worker: the request, its sampling parameters, and the SSE events of the
//! answer. orchestratord forwards the same fields, so these are also the task's generation fields.

use serde::{Deserialize, Serialize};

pub use crate::constraint::{Constraint, MAX_CONSTRAINT_BYTES};
use crate::error::FieldError;
pub use crate::tools::ChatTools;

/// Limits enforced by [`ExecuteRequest::validate`]. Published in `.specs/` and in `/health`.
pub struct Limits {
    pub max_prompt_chars: usize,
    pub max_prompt_ids: usize,
    pub max_messages: usize,
    pub max_tokens: u32,
    pub max_stop: usize,
    pub max_stop_bytes: usize,
    pub max_logprobs: u32,
    pub max_job_id_len: usize,
}

/// The limits every worker enforces (a model's context may be the tighter bound).
pub const LIMITS: Limits = Limits {
    max_prompt_chars: 1_000_000,
    max_prompt_ids: 1_000_000,
    max_messages: 1024,
    max_tokens: 32_768,
    max_stop: 8,
    max_stop_bytes: 256,
    max_logprobs: 20,
    max_job_id_len: 256,
};

/// One chat message; rendered with the model's own chat template.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

/// Sampling fields. Defaults: temperature 1.0, everything else off; `temperature: 0` is greedy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SamplingParams {
    /// 0.0 = greedy (argmax); range 0.0..=2.0.
    pub temperature: f32,
    /// Nucleus sampling mass, 0.0 < top_p <= 1.0 (1.0 = off).
    pub top_p: f32,
    /// Keep the k most likely tokens (0 = off).
    pub top_k: u32,
    /// Drop tokens below `min_p` × p(top token), 0.0..=1.0 (0 = off).
    pub min_p: f32,
    /// Penalty for tokens already in the prompt or output, 0.0 < r <= 2.0 (1.0 = off).
    pub repetition_penalty: f32,
    /// Seed of the sampler; when absent the worker picks one and reports it in `started`/`end`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            seed: None,
        }
    }
}

impl SamplingParams {
    /// Greedy decoding (temperature 0).
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            ..Self::default()
        }
    }

    /// Append an error for every out-of-range field.
    pub fn validate_into(&self, errors: &mut Vec<FieldError>) {
        let t = self.temperature;
        if !(0.0..=2.0).contains(&t) || t.is_nan() {
            errors.push(
                FieldError::new(
                    "temperature",
                    "range(0.0..=2.0)",
                    format!("temperature must be between 0.0 and 2.0, got {t}"),
                )
                .with_value(t),
            );
        }
        let p = self.top_p;
        if !(p > 0.0 && p <= 1.0) {
            errors.push(
                FieldError::new(
                    "top_p",
                    "range(0.0<..=1.0)",
                    format!("top_p must be greater than 0.0 and at most 1.0, got {p}"),
                )
                .with_value(p),
            );
        }
        let m = self.min_p;
        if !(0.0..=1.0).contains(&m) || m.is_nan() {
            errors.push(
                FieldError::new(
                    "min_p",
                    "range(0.0..=1.0)",
                    format!("min_p must be between 0.0 and 1.0, got {m}"),
                )
                .with_value(m),
            );
        }
        let r = self.repetition_penalty;
        if !(r > 0.0 && r <= 2.0) {
            errors.push(
                FieldError::new(
                    "repetition_penalty",
                    "range(0.0<..=2.0)",
                    format!("repetition_penalty must be greater than 0.0 and at most 2.0, got {r}"),
                )
                .with_value(r),
            );
        }
    }
}

/// What to generate: the prompt (exactly one of `prompt`, `messages`, `prompt_ids`), how long,
/// how to sample, where to stop, which log-probabilities to return. The worker's `/execute` and
/// the orchestrator's `/v2/tasks` both carry it (flattened: its fields sit at the top level).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Generation {
    /// Raw prompt text; special tokens written in it (e.g. `<|im_start|>`) are parsed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// Chat messages, rendered with the model's chat template (generation prompt appended).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages: Option<Vec<ChatMessage>>,
    /// The prompt as token ids, used as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_ids: Option<Vec<u32>>,
    /// Most tokens to generate; default 256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    #[serde(flatten)]
    pub sampling: SamplingParams,
    /// Stop strings: generation ends when the output contains one; its text is never streamed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stop: Vec<String>,
    /// Return the top-N log-probabilities with each generated token (0..=20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<u32>,
    /// Constrained decoding: the output must match this JSON schema, JSON object, regex or
    /// grammar (tokens that cannot continue a match are never sampled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub constraint: Option<Constraint>,
    /// Functions offered to the model (with `messages`): passed to a chat template that uses a
    /// `tools` variable, else rendered as a system prompt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<ChatTools>,
}

/// Body of `POST /execute`: a [`Generation`] plus the job id and prompt log-probabilities.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExecuteRequest {
    /// Caller's id for the job (used by `/cancel`); generated when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    #[serde(flatten)]
    pub gen: Generation,
    /// Return the top-N log-probabilities for every prompt token given its prefix (0..=20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_logprobs: Option<u32>,
}

/// Default `max_tokens` when the request leaves it out.
pub const DEFAULT_MAX_TOKENS: u32 = 256;

impl Generation {
    /// `max_tokens` with its default applied.
    pub fn max_tokens_or_default(&self) -> u32 {
        self.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS)
    }

    /// Append an error for every field outside [`LIMITS`].
    pub fn validate_into(&self, errors: &mut Vec<FieldError>) {
        let given = [
            self.prompt.is_some(),
            self.messages.is_some(),
            self.prompt_ids.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        match given {
            0 => errors.push(FieldError::new(
                "prompt",
                "required",
                "one of prompt, messages or prompt_ids is required",
            )),
            1 => {}
            _ => errors.push(FieldError::new(
                "prompt",
                "exclusive",
                "give only one of prompt, messages or prompt_ids",
            )),
        }
        if let Some(p) = &self.prompt {
            let n = p.chars().count();
            if n == 0 || n > LIMITS.max_prompt_chars {
                errors.push(FieldError::new(
                    "prompt",
                    format!("length(1..={})", LIMITS.max_prompt_chars),
                    format!(
                        "prompt must be 1 to {} characters, got {n}",
                        LIMITS.max_prompt_chars
                    ),
                ));
            }
        }
        if let Some(m) = &self.messages {
            if m.is_empty() || m.len() > LIMITS.max_messages {
                errors.push(FieldError::new(
                    "messages",
                    format!("count(1..={})", LIMITS.max_messages),
                    format!(
                        "messages must hold 1 to {} messages, got {}",
                        LIMITS.max_messages,
                        m.len()
                    ),
                ));
            }
            for (i, msg) in m.iter().enumerate() {
                if msg.role.is_empty() {
                    errors.push(FieldError::new(
                        format!("messages[{i}].role"),
                        "non_empty",
                        format!("messages[{i}].role must not be empty"),
                    ));
                }
            }
        }
        if let Some(ids) = &self.prompt_ids {
            if ids.is_empty() || ids.len() > LIMITS.max_prompt_ids {
                errors.push(FieldError::new(
                    "prompt_ids",
                    format!("count(1..={})", LIMITS.max_prompt_ids),
                    format!(
                        "prompt_ids must hold 1 to {} ids, got {}",
                        LIMITS.max_prompt_ids,
                        ids.len()
                    ),
                ));
            }
        }
        if let Some(mt) = self.max_tokens {
            if mt == 0 || mt > LIMITS.max_tokens {
                errors.push(
                    FieldError::new(
                        "max_tokens",
                        format!("range(1..={})", LIMITS.max_tokens),
                        format!(
                            "max_tokens must be between 1 and {}, got {mt}",
                            LIMITS.max_tokens
                        ),
                    )
                    .with_value(mt),
                );
            }
        }
        self.sampling.validate_into(errors);
        if self.stop.len() > LIMITS.max_stop {
            errors.push(FieldError::new(
                "stop",
                format!("max_count({})", LIMITS.max_stop),
                format!(
                    "stop may hold at most {} strings, got {}",
                    LIMITS.max_stop,
                    self.stop.len()
                ),
            ));
        }
        for (i, s) in self.stop.iter().enumerate() {
            if s.is_empty() || s.len() > LIMITS.max_stop_bytes {
                errors.push(FieldError::new(
                    format!("stop[{i}]"),
                    format!("length(1..={})", LIMITS.max_stop_bytes),
                    format!(
                        "stop[{i}] must be 1 to {} bytes long",
                        LIMITS.max_stop_bytes
                    ),
                ));
            }
        }
        check_logprobs("logprobs", self.logprobs, errors);
        if self.tools.is_some() && self.messages.is_none() {
            errors.push(FieldError::new(
                "tools",
                "requires(messages)",
                "tools are rendered by the chat template: give messages, not a prompt",
            ));
        }
        if let Some(c) = &self.constraint {
            c.validate_into(errors);
        }
    }
}

impl ExecuteRequest {
    /// `max_tokens` with its default applied.
    pub fn max_tokens_or_default(&self) -> u32 {
        self.gen.max_tokens_or_default()
    }

    /// Check every field against [`LIMITS`]; returns all problems at once.
    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut errors = Vec::new();
        if let Some(id) = &self.job_id {
            if id.is_empty() || id.len() > LIMITS.max_job_id_len {
                errors.push(FieldError::new(
                    "job_id",
                    format!("length(1..={})", LIMITS.max_job_id_len),
                    format!("job_id must be 1 to {} bytes long", LIMITS.max_job_id_len),
                ));
            }
        }
        self.gen.validate_into(&mut errors);
        check_logprobs("prompt_logprobs", self.prompt_logprobs, &mut errors);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

/// `logprobs` / `prompt_logprobs`: at most [`Limits::max_logprobs`].
fn check_logprobs(name: &str, v: Option<u32>, errors: &mut Vec<FieldError>) {
    if let Some(n) = v {
        if n > LIMITS.max_logprobs {
            errors.push(
                FieldError::new(
                    name,
                    format!("range(0..={})", LIMITS.max_logprobs),
                    format!(
                        "{name} must be between 0 and {}, got {n}",
                        LIMITS.max_logprobs
                    ),
                )
                .with_value(n),
            );
        }
    }
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// The model produced an end-of-sequence or end-of-turn token.
    Eos,
    /// The output matched one of the request's `stop` strings.
    StopSequence,
    /// `max_tokens` tokens were generated.
    MaxTokens,
    /// The job was cancelled (`/cancel` or client disconnect).
    Cancelled,
}

impl StopReason {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::Eos => "eos",
            StopReason::StopSequence => "stop_sequence",
            StopReason::MaxTokens => "max_tokens",
            StopReason::Cancelled => "cancelled",
        }
    }
}

/// One alternative token and its log-probability.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopLogprob {
    pub id: u32,
    pub logprob: f32,
    /// The token's raw bytes (its text; special tokens: their literal text). Empty only for
    /// tokens without text.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bytes: Vec<u8>,
}

/// Log-probability of one (prompt or generated) token under the model, with the top-N alternatives.
/// Log-probabilities are of the model's raw distribution (before temperature and filters).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenLogprob {
    pub id: u32,
    pub logprob: f32,
    /// The token's raw bytes, as in [`TopLogprob::bytes`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bytes: Vec<u8>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub top: Vec<TopLogprob>,
}

/// One SSE event of a worker's `/execute` stream. Sent as `event: <type>` plus `data: <json>`;
/// the JSON carries the same `type`. Order: `started`, `token`*, then exactly one of `end`/`error`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WorkerEvent {
    /// The job left the queue and prefill is done.
    Started {
        job_id: String,
        model: String,
        /// RFC 3339 timestamp.
        started_at: String,
        /// The seed actually used.
        seed: u64,
        tokens_in: u32,
        /// Time spent queued on the worker before this job ran.
        queue_time_ms: f64,
        /// Leading prompt tokens whose keys and values were reused from an earlier request with
        /// the same prefix (the worker's prompt cache) instead of being computed again.
        #[serde(default, skip_serializing_if = "is_zero")]
        tokens_cached: u32,
        /// Present when the request asked for `prompt_logprobs`: one entry per prompt token
        /// from the second on (the first has no prefix to predict it).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        prompt_logprobs: Option<Vec<TokenLogprob>>,
    },
    /// One generated token. `t` is the text it completes (may be empty while a multi-byte
    /// character or a possible stop string is pending); concatenating every `t` gives the output.
    Token {
        /// 0-based index of the generated token.
        i: u32,
        /// Token id.
        id: u32,
        /// Text released with this token.
        t: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        logprob: Option<TokenLogprob>,
    },
    /// Normal end of the job.
    End {
        job_id: String,
        stop_reason: StopReason,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stop_sequence_matched: Option<String>,
        tokens_in: u32,
        tokens_out: u32,
        seed: u64,
        queue_time_ms: f64,
        prefill_time_ms: f64,
        decode_time_ms: f64,
        /// Prompt tokens per second of prefill.
        prefill_tokens_per_sec: f64,
        /// Generated tokens per second after the first token.
        decode_tokens_per_sec: f64,
    },
    /// The job failed; no further events follow.
    Error {
        job_id: String,
        code: crate::error::ErrorCode,
        message: String,
        retriable: bool,
        tokens_out: u32,
    },
}

impl WorkerEvent {
    /// The `type` tag (also the SSE `event:` name).
    pub fn kind(&self) -> &'static str {
        match self {
            WorkerEvent::Started { .. } => "started",
            WorkerEvent::Token { .. } => "token",
            WorkerEvent::End { .. } => "end",
            WorkerEvent::Error { .. } => "error",
        }
    }

    /// `end` or `error`.
    pub fn is_terminal(&self) -> bool {
        matches!(self, WorkerEvent::End { .. } | WorkerEvent::Error { .. })
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_collects_every_bad_field() {
        let req = ExecuteRequest {
            gen: Generation {
                max_tokens: Some(0),
                sampling: SamplingParams {
                    temperature: -1.0,
                    top_p: 2.0,
                    ..Default::default()
                },
                ..Default::default()
            },
            prompt_logprobs: Some(21),
            ..Default::default()
        };
        let errs = req.validate().unwrap_err();
        let fields: Vec<_> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "prompt",
                "max_tokens",
                "temperature",
                "top_p",
                "prompt_logprobs"
            ]
        );
        assert!(errs[2].message.contains("between 0.0 and 2.0"));
    }

    #[test]
    fn sampling_fields_are_flat_and_defaulted() {
        let req: ExecuteRequest =
            serde_json::from_str(r#"{"prompt":"hi","temperature":0,"seed":7}"#).unwrap();
        assert_eq!(req.gen.prompt.as_deref(), Some("hi"));
        assert_eq!(req.gen.sampling.temperature, 0.0);
        assert_eq!(req.gen.sampling.top_p, 1.0);
        assert_eq!(req.gen.sampling.seed, Some(7));
        assert!(req.validate().is_ok());
        // flattened both ways: the JSON has no `gen` or `sampling` object
        let back = serde_json::to_value(&req).unwrap();
        assert_eq!(back["prompt"], "hi");
        assert_eq!(back["seed"], 7);
        assert!(back.get("gen").is_none() && back.get("sampling").is_none());
    }

    #[test]
    fn events_are_type_tagged_snake_case() {
        let ev = WorkerEvent::Token {
            i: 0,
            id: 5,
            t: "a".into(),
            logprob: None,
        };
        assert_eq!(
            serde_json::to_string(&ev).unwrap(),
            r#"{"type":"token","i":0,"id":5,"t":"a"}"#
        );
        let s = serde_json::to_value(StopReason::StopSequence).unwrap();
        assert_eq!(s, "stop_sequence");
    }
}
