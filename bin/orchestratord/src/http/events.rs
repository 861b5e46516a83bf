//! `GET /v2/tasks/{id}/events`: the task's SSE stream. Every event has an id (1-based, per
//! task); `Last-Event-ID` resumes after it without duplicates; a finished task replays its
//! terminal event. When the last client leaves a running task and none returns within the
//! grace period, the task is cancelled. An observer (`?observe=true`, e.g. the dashboard) is
//! not a client in that sense: it neither keeps the task alive nor cancels it by leaving.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::stream::{self, Stream, StreamExt};
use llorch_wire::ErrorCode;
use serde::Deserialize;
use tokio::sync::watch;

use crate::error::ApiError;
use crate::state::{EndCause, Orchestrator};
use crate::task::{StoredEvent, Task};
use crate::tenancy::Caller;

/// Reconnect delay suggested to clients (SSE `retry:`).
const RETRY: Duration = Duration::from_millis(1000);

/// `?last_event_id=N`, for clients that cannot set the header; `?observe=true` watches
/// without subscribing.
#[derive(Debug, Deserialize)]
pub struct EventsQuery {
    last_event_id: Option<usize>,
    #[serde(default)]
    observe: bool,
}

/// Detaches an SSE client from its task when the response body is dropped.
struct Subscription {
    orch: Arc<Orchestrator>,
    task: Arc<Task>,
    /// An observer: not counted as a subscriber.
    observer: bool,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.task.close_stream();
        if self.observer {
            return;
        }
        let Some(generation) = self.task.unsubscribe() else {
            return;
        };
        let grace = Duration::from_millis(self.orch.cfg.disconnect_grace_ms);
        let (orch, task) = (self.orch.clone(), self.task.clone());
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                tokio::time::sleep(grace).await;
                if task.abandoned_since(generation) {
                    tracing::info!(task_id = %task.id, "client gone; cancelling the task");
                    orch.end_task(&task, EndCause::Disconnected);
                }
            });
        }
    }
}

struct Cursor {
    sub: Subscription,
    /// Index of the next event to send.
    next: usize,
    /// SSE id of event index 0, minus one.
    base: usize,
    len: watch::Receiver<usize>,
    first: bool,
    done: bool,
}

fn sse_event(e: &StoredEvent, id: usize, first: bool) -> Event {
    let ev = Event::default()
        .event(e.kind)
        .id(id.to_string())
        .data(&*e.json);
    if first {
        ev.retry(RETRY)
    } else {
        ev
    }
}

fn live(
    orch: Arc<Orchestrator>,
    task: Arc<Task>,
    from: usize,
    observer: bool,
) -> impl Stream<Item = Result<Event, Infallible>> {
    if !observer {
        task.subscribe();
    }
    let len = task.watch_len();
    let base = task.event_base;
    let cursor = Cursor {
        sub: Subscription {
            orch,
            task,
            observer,
        },
        next: from,
        base,
        len,
        first: true,
        done: false,
    };
    stream::unfold(cursor, |mut c| async move {
        loop {
            if c.done {
                return None;
            }
            let (evs, terminal) = c.sub.task.events_from(c.next);
            if !evs.is_empty() {
                let start = c.next;
                c.next += evs.len();
                let first = std::mem::replace(&mut c.first, false);
                let out: Vec<Result<Event, Infallible>> = evs
                    .iter()
                    .enumerate()
                    .map(|(k, e)| Ok(sse_event(e, c.base + start + k + 1, first && k == 0)))
                    .collect();
                c.done = terminal;
                return Some((stream::iter(out), c));
            }
            if terminal || c.len.changed().await.is_err() {
                return None;
            }
        }
    })
    .flatten()
}

fn sse<S: Stream<Item = Result<Event, Infallible>> + Send + 'static>(s: S) -> Response {
    let mut resp = Sse::new(s).keep_alive(KeepAlive::default()).into_response();
    resp.headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    resp
}

/// Stream a task's events from after `Last-Event-ID` (header or query).
pub async fn stream(
    State(orch): State<Arc<Orchestrator>>,
    Path(id): Path<String>,
    Query(q): Query<EventsQuery>,
    axum::Extension(caller): axum::Extension<Caller>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let last = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok())
        .or(q.last_event_id)
        .unwrap_or(0);
    if let Some(task) = orch.task(&id).filter(|t| caller.may_see(Some(&*t.tenant))) {
        let max = orch.cfg.limits.max_subscribers_per_task;
        if !task.open_stream(max) {
            return Err(ApiError::retry_later(
                ErrorCode::TooManySubscribers,
                format!(
                    "task {id:?} already has {max} open event streams \
                     (max_subscribers_per_task; --max-subscribers-per-task)"
                ),
                1000,
            ));
        }
        let from = task.index_after(last);
        return Ok(sse(live(orch, task, from, q.observe)));
    }
    // Gone from memory: only the terminal event remains, in the history.
    let row = orch
        .store
        .task(&id)
        .ok()
        .flatten()
        .filter(|row| caller.may_see(row.status.tenant.as_deref()))
        .ok_or_else(|| ApiError::not_found("task", &id))?;
    let replay: Vec<Result<Event, Infallible>> = match row.terminal {
        Some((ev_id, json)) if ev_id as usize > last => {
            let ty = serde_json::from_str::<serde_json::Value>(&json)
                .ok()
                .and_then(|v| v.get("type").cloned());
            let kind = if ty.as_ref().and_then(|t| t.as_str()) == Some("end") {
                "end"
            } else {
                "error"
            };
            let e = StoredEvent {
                kind,
                json: json.into(),
            };
            vec![Ok(sse_event(&e, ev_id as usize, true))]
        }
        _ => Vec::new(),
    };
    Ok(sse(stream::iter(replay)))
}
