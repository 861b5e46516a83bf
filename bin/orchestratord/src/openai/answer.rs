//! A task's events as OpenAI answers: SSE chunks (role first for chat, one chunk per generated
//! token, a `finish_reason` chunk, a `usage` chunk when asked, `[DONE]`) or one JSON body.

use std::convert::Infallible;

use axum::http::HeaderValue;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::stream::{self, StreamExt};
use llorch_wire::openai::{
    AssistantMessage, ChatChoice, ChatChunkChoice, ChatCompletion, ChatCompletionChunk, ChatDelta,
    Completion, CompletionChoice, FinishReason, Usage, DONE,
};
use llorch_wire::tasks::TaskEvent;
use llorch_wire::tools::ToolCall;
use llorch_wire::{ErrorCode, StopReason};

use super::error::{body, OaiError};
use super::follow::Follower;
use super::tools::{parse_calls, ToolMode};
use super::{Kind, Meta};
use crate::error::ApiError;

impl Meta {
    fn chat_chunk(&self, choices: Vec<ChatChunkChoice>, usage: Option<Usage>) -> String {
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

    /// One chunk with `text` (and the role, for the first chat chunk) or `finish_reason`.
    fn chunk(&self, role: bool, text: Option<String>, finish: Option<FinishReason>) -> String {
        match self.kind {
            Kind::Chat => self.chat_chunk(
                vec![ChatChunkChoice {
                    index: 0,
                    delta: ChatDelta {
                        role: role.then(|| "assistant".into()),
                        content: text,
                        tool_calls: None,
                    },
                    logprobs: None,
                    finish_reason: finish,
                }],
                None,
            ),
            Kind::Completion => json(&self.completion(
                vec![CompletionChoice {
                    text: text.unwrap_or_default(),
                    index: 0,
                    logprobs: None,
                    finish_reason: finish,
                }],
                None,
            )),
        }
    }

    /// One chat chunk carrying every call, each whole.
    fn calls_chunk(&self, calls: &[ToolCall]) -> String {
        let deltas = calls
            .iter()
            .enumerate()
            .map(|(i, c)| c.to_delta(i as u32))
            .collect();
        self.chat_chunk(
            vec![ChatChunkChoice {
                index: 0,
                delta: ChatDelta {
                    tool_calls: Some(deltas),
                    ..ChatDelta::default()
                },
                logprobs: None,
                finish_reason: None,
            }],
            None,
        )
    }

    /// With tools, the answer's calls: a complete list of calls that ended the turn.
    fn calls_in(&self, text: &str, reason: StopReason) -> Option<Vec<ToolCall>> {
        self.tools?;
        (reason == StopReason::Eos)
            .then(|| parse_calls(text))
            .flatten()
    }

    /// The last chunk before `[DONE]` when `stream_options.include_usage`: no choices, usage.
    fn usage_chunk(&self, usage: Usage) -> String {
        match self.kind {
            Kind::Chat => self.chat_chunk(Vec::new(), Some(usage)),
            Kind::Completion => json(&self.completion(Vec::new(), Some(usage))),
        }
    }

    /// The non-streaming answer.
    fn full(&self, text: String, reason: StopReason, usage: Usage) -> Response {
        let calls = self.calls_in(&text, reason);
        let finish = match calls {
            Some(_) => FinishReason::ToolCalls,
            None => reason.into(),
        };
        match self.kind {
            Kind::Chat => Json(ChatCompletion {
                id: self.id.clone(),
                object: "chat.completion".into(),
                created: self.created,
                model: self.model.clone(),
                choices: vec![ChatChoice {
                    index: 0,
                    message: AssistantMessage {
                        role: "assistant".into(),
                        content: calls.is_none().then_some(text),
                        tool_calls: calls,
                    },
                    logprobs: None,
                    finish_reason: finish,
                }],
                usage,
            })
            .into_response(),
            Kind::Completion => Json(self.completion(
                vec![CompletionChoice {
                    text,
                    index: 0,
                    logprobs: None,
                    finish_reason: Some(finish),
                }],
                Some(usage),
            ))
            .into_response(),
        }
    }
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("OpenAI bodies serialize")
}

/// Wait for the terminal event and answer with one body (or the task's error).
pub async fn collect(mut f: Follower, meta: Meta) -> Result<Response, OaiError> {
    let mut text = String::new();
    while let Some(ev) = f.next().await {
        match ev {
            TaskEvent::Token { t, .. } => text.push_str(&t),
            TaskEvent::End {
                stop_reason,
                tokens_in,
                tokens_out,
                tokens_cached,
                ..
            } => {
                let usage = Usage::new(tokens_in, tokens_out).with_cached(tokens_cached);
                return Ok(meta.full(text, stop_reason, usage));
            }
            TaskEvent::Error { code, message, .. } => {
                return Err(OaiError(ApiError::new(code, message)))
            }
            _ => {}
        }
    }
    Err(OaiError(ApiError::new(
        ErrorCode::Internal,
        "the task's event log ended without a terminal event",
    )))
}

enum Phase {
    Start,
    Run,
    Done,
}

/// The SSE answer: chunks as the task's tokens arrive.
pub fn stream(f: Follower, meta: Meta) -> Response {
    let data = |s: String| Ok::<_, Infallible>(Event::default().data(s));
    // With tools, text is held back until it is known to be a plain answer (or, for calls,
    // until the end, when the whole list is sent as tool-call deltas).
    let held = meta.tools.map(|_| String::new());
    let events = stream::unfold(
        (f, meta, Phase::Start, held),
        move |(mut f, meta, phase, mut held)| async move {
            let (out, next) = match phase {
                Phase::Done => return None,
                Phase::Start => match meta.kind {
                    Kind::Chat => (
                        vec![data(meta.chunk(true, Some(String::new()), None))],
                        Phase::Run,
                    ),
                    Kind::Completion => (Vec::new(), Phase::Run),
                },
                Phase::Run => match f.next().await? {
                    TaskEvent::Token { t, .. } => match held.as_mut() {
                        None => (vec![data(meta.chunk(false, Some(t), None))], Phase::Run),
                        Some(buf) => {
                            buf.push_str(&t);
                            // `auto`: a first character other than `[` is a plain answer.
                            let start = buf.trim_start().chars().next();
                            if meta.tools == Some(ToolMode::Auto) && start.is_some_and(|c| c != '[')
                            {
                                let text = held.take();
                                (vec![data(meta.chunk(false, text, None))], Phase::Run)
                            } else {
                                (Vec::new(), Phase::Run)
                            }
                        }
                    },
                    TaskEvent::End {
                        stop_reason,
                        tokens_in,
                        tokens_out,
                        tokens_cached,
                        ..
                    } => {
                        let mut out = Vec::new();
                        let mut finish = FinishReason::from(stop_reason);
                        if let Some(text) = held.take() {
                            match meta.calls_in(&text, stop_reason) {
                                Some(calls) => {
                                    out.push(data(meta.calls_chunk(&calls)));
                                    finish = FinishReason::ToolCalls;
                                }
                                None if !text.is_empty() => {
                                    out.push(data(meta.chunk(false, Some(text), None)))
                                }
                                None => {}
                            }
                        }
                        out.push(data(meta.chunk(false, None, Some(finish))));
                        if meta.include_usage {
                            let usage =
                                Usage::new(tokens_in, tokens_out).with_cached(tokens_cached);
                            out.push(data(meta.usage_chunk(usage)));
                        }
                        out.push(data(DONE.into()));
                        (out, Phase::Done)
                    }
                    TaskEvent::Error { code, message, .. } => {
                        let err = json(&body(&ApiError::new(code, message)));
                        (vec![data(err), data(DONE.into())], Phase::Done)
                    }
                    _ => (Vec::new(), Phase::Run),
                },
            };
            Some((stream::iter(out), (f, meta, next, held)))
        },
    )
    .flatten();
    let mut resp = Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response();
    resp.headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    resp
}
