//! The tasks' events (one task per choice) as one OpenAI JSON answer, and the chunk builders
//! the streamed answer ([`super::stream`]) shares.

use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::future::try_join_all;
use llorch_wire::openai::{
    AssistantMessage, ChatChoice, ChatChunkChoice, ChatCompletion, ChatCompletionChunk, ChatDelta,
    Completion, CompletionChoice, FinishReason, Usage,
};
use llorch_wire::openai_logprobs::{ChatLogprobs, CompletionLogprobs};
use llorch_wire::tasks::TaskEvent;
use llorch_wire::tools::ToolCall;
use llorch_wire::{ErrorCode, StopReason, TokenLogprob};

use super::error::OaiError;
use super::follow::Follower;
use super::tools::parse_calls;
use super::{Kind, Meta};
use crate::error::ApiError;

/// Log-probability entries with the answer's length in characters before each token (the
/// completions `text_offset`).
pub type Entries = Vec<(TokenLogprob, u32)>;

/// A choice's token counts from its `end` event.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counts {
    pub tokens_in: u32,
    pub tokens_out: u32,
    pub tokens_cached: u32,
}

impl Counts {
    /// The stop reason and counts of an `end` event (`None` for any other event).
    pub fn of_end(ev: &TaskEvent) -> Option<(StopReason, Counts)> {
        match *ev {
            TaskEvent::End {
                stop_reason,
                tokens_in,
                tokens_out,
                tokens_cached,
                ..
            } => Some((
                stop_reason,
                Counts {
                    tokens_in,
                    tokens_out,
                    tokens_cached,
                },
            )),
            _ => None,
        }
    }
}

/// The answer's usage: the prompt counted once (the smallest cached part among the choices),
/// completion tokens summed over the choices.
pub fn usage(counts: &[Counts]) -> Usage {
    let prompt = counts.first().map_or(0, |c| c.tokens_in);
    let out = counts.iter().map(|c| c.tokens_out).sum();
    let cached = counts.iter().map(|c| c.tokens_cached).min().unwrap_or(0);
    Usage::new(prompt, out).with_cached(cached)
}

impl Meta {
    pub(super) fn chat_chunk(&self, choices: Vec<ChatChunkChoice>, usage: Option<Usage>) -> String {
        json(&ChatCompletionChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk".into(),
            created: self.created,
            model: self.model.clone(),
            choices,
            usage,
        })
    }

    fn completion(&self, choices: Vec<CompletionChoice>, usage: Option<Usage>) -> Completion {
        Completion {
            id: self.id.clone(),
            object: "text_completion".into(),
            created: self.created,
            model: self.model.clone(),
            choices,
            usage,
        }
    }

    /// Chat `logprobs` of `entries` (`None` when not asked for or empty).
    fn chat_logprobs(&self, entries: &[(TokenLogprob, u32)]) -> Option<ChatLogprobs> {
        (self.logprobs.is_some() && !entries.is_empty())
            .then(|| ChatLogprobs::from_worker(entries.iter().map(|(lp, _)| lp)))
    }

    /// Completions `logprobs` of `entries` (`None` when not asked for or empty).
    fn completion_logprobs(&self, entries: &[(TokenLogprob, u32)]) -> Option<CompletionLogprobs> {
        (self.logprobs.is_some() && !entries.is_empty())
            .then(|| CompletionLogprobs::from_worker(entries.iter().map(|(lp, o)| (lp, *o))))
    }

    /// One chunk of choice `index` with `text` (and the role, for the first chat chunk) and
    /// the log-probabilities of its tokens, or `finish_reason`.
    pub(super) fn chunk(
        &self,
        index: u32,
        role: bool,
        text: Option<String>,
        entries: &[(TokenLogprob, u32)],
        finish: Option<FinishReason>,
    ) -> String {
        match self.kind {
            Kind::Chat => self.chat_chunk(
                vec![ChatChunkChoice {
                    index,
                    delta: ChatDelta {
                        role: role.then(|| "assistant".into()),
                        content: text,
                        tool_calls: None,
                    },
                    logprobs: self.chat_logprobs(entries),
                    finish_reason: finish,
                }],
                None,
            ),
            Kind::Completion => json(&self.completion(
                vec![CompletionChoice {
                    text: text.unwrap_or_default(),
                    index,
                    logprobs: self.completion_logprobs(entries),
                    finish_reason: finish,
                }],
                None,
            )),
        }
    }

    /// One chat chunk of choice `index` carrying every call, each whole.
    pub(super) fn calls_chunk(
        &self,
        index: u32,
        calls: &[ToolCall],
        entries: &[(TokenLogprob, u32)],
    ) -> String {
        let deltas = calls
            .iter()
            .enumerate()
            .map(|(i, c)| c.to_delta(i as u32))
            .collect();
        self.chat_chunk(
            vec![ChatChunkChoice {
                index,
                delta: ChatDelta {
                    tool_calls: Some(deltas),
                    ..ChatDelta::default()
                },
                logprobs: self.chat_logprobs(entries),
                finish_reason: None,
            }],
            None,
        )
    }

    /// With tools, the answer's calls: a complete list of calls that ended the turn.
    pub(super) fn calls_in(&self, text: &str, reason: StopReason) -> Option<Vec<ToolCall>> {
        self.tools?;
        (reason == StopReason::Eos)
            .then(|| parse_calls(text))
            .flatten()
    }

    /// The last chunk before `[DONE]` when `stream_options.include_usage`: no choices, usage.
    pub(super) fn usage_chunk(&self, usage: Usage) -> String {
        match self.kind {
            Kind::Chat => self.chat_chunk(Vec::new(), Some(usage)),
            Kind::Completion => json(&self.completion(Vec::new(), Some(usage))),
        }
    }

    /// The non-streaming answer, choices in index order.
    fn full(&self, done: Vec<Done>) -> Response {
        let counts: Vec<Counts> = done.iter().map(|d| d.counts).collect();
        let usage = usage(&counts);
        match self.kind {
            Kind::Chat => {
                let choices = done
                    .into_iter()
                    .enumerate()
                    .map(|(i, d)| {
                        let calls = self.calls_in(&d.text, d.reason);
                        ChatChoice {
                            index: i as u32,
                            finish_reason: match calls {
                                Some(_) => FinishReason::ToolCalls,
                                None => d.reason.into(),
                            },
                            message: AssistantMessage {
                                role: "assistant".into(),
                                content: calls.is_none().then_some(d.text),
                                tool_calls: calls,
                            },
                            logprobs: self.chat_logprobs(&d.entries),
                        }
                    })
                    .collect();
                Json(ChatCompletion {
                    id: self.id.clone(),
                    object: "chat.completion".into(),
                    created: self.created,
                    model: self.model.clone(),
                    choices,
                    usage,
                })
                .into_response()
            }
            Kind::Completion => {
                let choices = done
                    .into_iter()
                    .enumerate()
                    .map(|(i, d)| CompletionChoice {
                        index: i as u32,
                        logprobs: self.completion_logprobs(&d.entries),
                        text: d.text,
                        finish_reason: Some(d.reason.into()),
                    })
                    .collect();
                Json(self.completion(choices, Some(usage))).into_response()
            }
        }
    }
}

pub(super) fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("OpenAI bodies serialize")
}

/// One finished choice.
struct Done {
    text: String,
    entries: Entries,
    reason: StopReason,
    counts: Counts,
}

/// One choice's text, log-probabilities and end (or its task's error).
async fn collect_one(mut f: Follower) -> Result<Done, OaiError> {
    let (mut text, mut entries, mut chars) = (String::new(), Entries::new(), 0u32);
    while let Some(ev) = f.next().await {
        match ev {
            TaskEvent::Token { t, logprob, .. } => {
                if let Some(lp) = logprob {
                    entries.push((lp, chars));
                }
                chars += t.chars().count() as u32;
                text.push_str(&t);
            }
            TaskEvent::Error { code, message, .. } => {
                return Err(OaiError(ApiError::new(code, message)))
            }
            ev => {
                if let Some((reason, counts)) = Counts::of_end(&ev) {
                    return Ok(Done {
                        text,
                        entries,
                        reason,
                        counts,
                    });
                }
            }
        }
    }
    Err(OaiError(ApiError::new(
        ErrorCode::Internal,
        "the task's event log ended without a terminal event",
    )))
}

/// Wait for every choice's terminal event and answer with one body. The first failed choice
/// answers with its error (the others are then cancelled, their followers dropped).
pub async fn collect(followers: Vec<Follower>, meta: Meta) -> Result<Response, OaiError> {
    let done = try_join_all(followers.into_iter().map(collect_one)).await?;
    Ok(meta.full(done))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_counts_the_prompt_once() {
        let c = |tokens_out, tokens_cached| Counts {
            tokens_in: 10,
            tokens_out,
            tokens_cached,
        };
        let u = usage(&[c(4, 8), c(5, 0), c(6, 8)]);
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, u.total_tokens),
            (10, 15, 25)
        );
        assert_eq!(u.prompt_tokens_details, None);
        let u = usage(&[c(4, 8), c(5, 9)]);
        assert_eq!(u.prompt_tokens_details.unwrap().cached_tokens, 8);
    }
}
