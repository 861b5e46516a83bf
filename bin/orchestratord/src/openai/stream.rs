//! The streamed OpenAI answer: SSE chunks as the choices' tasks produce tokens (role chunks
//! first for chat, one chunk per generated token tagged with its choice's `index`, chunks of
//! the choices interleaved as they arrive, a `finish_reason` chunk per choice, a `usage` chunk
//! when asked once every choice ended, then `[DONE]`).

use std::convert::Infallible;

use axum::http::HeaderValue;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::stream::{self, BoxStream, StreamExt};
use llorch_wire::openai::{FinishReason, DONE};
use llorch_wire::tasks::TaskEvent;

use super::answer::{json, usage, Counts, Entries};
use super::error::body;
use super::follow::Follower;
use super::tools::ToolMode;
use super::{Kind, Meta};
use crate::error::ApiError;

/// One choice's state while streaming.
struct Choice {
    /// With tools: text (and its log-probabilities) held back until it is known to be a plain
    /// answer, or, for calls, until the end, when the whole list is sent as tool-call deltas.
    held: Option<(String, Entries)>,
    /// Characters released so far (completions `text_offset`).
    chars: u32,
    counts: Option<Counts>,
}

/// The answer's state: its meta and every choice.
struct Answer {
    meta: Meta,
    choices: Vec<Choice>,
}

impl Answer {
    /// The chunks for event `ev` of choice `i`, and whether the answer is over.
    fn on(&mut self, i: usize, ev: TaskEvent) -> (Vec<String>, bool) {
        let meta = &self.meta;
        let c = &mut self.choices[i];
        let index = i as u32;
        match ev {
            TaskEvent::Token { t, logprob, .. } => {
                let entries: Entries = logprob.map(|lp| (lp, c.chars)).into_iter().collect();
                c.chars += t.chars().count() as u32;
                let Some((buf, held)) = c.held.as_mut() else {
                    return (
                        vec![meta.chunk(index, false, Some(t), &entries, None)],
                        false,
                    );
                };
                buf.push_str(&t);
                held.extend(entries);
                // `auto`: a first character other than `[` is a plain answer.
                let start = buf.trim_start().chars().next();
                if meta.tools == Some(ToolMode::Auto) && start.is_some_and(|ch| ch != '[') {
                    let (text, entries) = c.held.take().expect("held");
                    return (
                        vec![meta.chunk(index, false, Some(text), &entries, None)],
                        false,
                    );
                }
                (Vec::new(), false)
            }
            ev @ TaskEvent::End { .. } => {
                let (stop_reason, counts) = Counts::of_end(&ev).expect("an end event");
                let mut out = Vec::new();
                let mut finish = FinishReason::from(stop_reason);
                if let Some((text, entries)) = c.held.take() {
                    match meta.calls_in(&text, stop_reason) {
                        Some(calls) => {
                            out.push(meta.calls_chunk(index, &calls, &entries));
                            finish = FinishReason::ToolCalls;
                        }
                        None if !text.is_empty() => {
                            out.push(meta.chunk(index, false, Some(text), &entries, None))
                        }
                        None => {}
                    }
                }
                out.push(meta.chunk(index, false, None, &[], Some(finish)));
                c.counts = Some(counts);
                let counts: Option<Vec<Counts>> = self.choices.iter().map(|c| c.counts).collect();
                let Some(counts) = counts else {
                    return (out, false);
                };
                if meta.include_usage {
                    out.push(meta.usage_chunk(usage(&counts)));
                }
                out.push(DONE.into());
                (out, true)
            }
            TaskEvent::Error { code, message, .. } => {
                let err = json(&body(&ApiError::new(code, message)));
                (vec![err, DONE.into()], true)
            }
            _ => (Vec::new(), false),
        }
    }
}

/// One follower's events, tagged with its choice index.
fn events(i: usize, f: Follower) -> BoxStream<'static, (usize, TaskEvent)> {
    stream::unfold(f, move |mut f| async move {
        f.next().await.map(|ev| ((i, ev), f))
    })
    .boxed()
}

/// The SSE answer of `followers` (one per choice, in index order).
pub fn stream(followers: Vec<Follower>, meta: Meta) -> Response {
    let data = |s: String| Ok::<_, Infallible>(Event::default().data(s));
    let n = followers.len();
    let head: Vec<String> = match meta.kind {
        Kind::Chat => (0..n as u32)
            .map(|i| meta.chunk(i, true, Some(String::new()), &[], None))
            .collect(),
        Kind::Completion => Vec::new(),
    };
    let held = meta.tools.map(|_| (String::new(), Entries::new()));
    let answer = Answer {
        choices: (0..n)
            .map(|_| Choice {
                held: held.clone(),
                chars: 0,
                counts: None,
            })
            .collect(),
        meta,
    };
    let merged = stream::select_all(followers.into_iter().enumerate().map(|(i, f)| events(i, f)));
    // Dropping `merged` (answer over, or the client gone) drops the followers: choices still
    // running are cancelled.
    let chunks = stream::unfold(Some((merged, answer)), |state| async move {
        let (mut merged, mut answer) = state?;
        match merged.next().await {
            Some((i, ev)) => {
                let (out, over) = answer.on(i, ev);
                Some((out, (!over).then_some((merged, answer))))
            }
            None => {
                let err = ApiError::new(
                    llorch_wire::ErrorCode::Internal,
                    "a task's event log ended without a terminal event",
                );
                Some((vec![json(&body(&err)), DONE.into()], None))
            }
        }
    })
    .flat_map(stream::iter);
    let events = stream::iter(head).chain(chunks).map(data);
    let mut resp = Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response();
    resp.headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    resp
}
