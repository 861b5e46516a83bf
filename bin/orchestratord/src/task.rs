//! One task: its request, state machine (queued → running → completed | failed | cancelled),
//! and append-only event log that SSE subscribers read from (with resume by event id).

use std::sync::{Arc, Mutex};
use std::time::Instant;

use llorch_wire::tasks::{
    TaskError, TaskEvent, TaskRequest, TaskState, TaskStatus, TaskTimings, TaskUsage,
};
use llorch_wire::StopReason;
use tokio::sync::{oneshot, watch};

/// An event as sent: its SSE name and JSON, serialized once for every subscriber.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub kind: &'static str,
    pub json: Arc<str>,
}

impl StoredEvent {
    /// Serialize an event.
    pub fn new(ev: &TaskEvent) -> Self {
        let json = serde_json::to_string(ev).expect("task events serialize");
        Self {
            kind: ev.kind(),
            json: json.into(),
        }
    }
}

#[derive(Debug)]
struct Inner {
    state: TaskState,
    events: Vec<StoredEvent>,
    terminal: bool,
    worker_id: Option<String>,
    attempts: u32,
    /// Workers that failed this task before its first token.
    avoid: Vec<String>,
    usage: TaskUsage,
    timings: TaskTimings,
    stop_reason: Option<StopReason>,
    error: Option<TaskError>,
    finished_at_ms: Option<u64>,
    last_position: Option<u32>,
    subscribers: u32,
    /// Bumped on every subscribe, so a disconnect timer can tell whether anyone came back.
    subscribe_generation: u64,
    /// Fired when the task ends while an attempt runs (cancel, deadline, disconnect).
    abort: Option<oneshot::Sender<()>>,
}

/// A submitted task. Shared between the HTTP handlers, the scheduler and its relay.
#[derive(Debug)]
pub struct Task {
    pub id: String,
    pub request: TaskRequest,
    pub correlation_id: String,
    pub created: Instant,
    pub created_at_ms: u64,
    pub deadline: Option<Instant>,
    /// SSE id of this process's first event minus one: 0, or above every id an earlier
    /// process gave when the task was queued again after a crash (see `durable`).
    pub event_base: usize,
    /// Who submitted it (`default` without a tenant key); see `tenancy`.
    pub tenant: Arc<str>,
    /// Workers or pools the policy hook allowed it (none: any); kept for retries.
    pub route: Option<Arc<crate::policy::Route>>,
    inner: Mutex<Inner>,
    len: watch::Sender<usize>,
    /// Open SSE streams (subscribers and observers), bounded by `max_subscribers_per_task`.
    streams: std::sync::atomic::AtomicU32,
}

/// Unix time in ms.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Milliseconds since `t`, as f64.
pub fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

impl Task {
    /// A new queued task.
    pub fn new(id: String, request: TaskRequest, correlation_id: String, created: Instant) -> Self {
        let deadline = request
            .deadline_ms
            .map(|ms| created + std::time::Duration::from_millis(ms));
        Self {
            id,
            request,
            correlation_id,
            created,
            created_at_ms: unix_ms(),
            deadline,
            event_base: 0,
            tenant: Arc::from(llorch_wire::tenancy::DEFAULT_TENANT),
            route: None,
            inner: Mutex::new(Inner {
                state: TaskState::Queued,
                events: Vec::new(),
                terminal: false,
                worker_id: None,
                attempts: 0,
                avoid: Vec::new(),
                usage: TaskUsage::default(),
                timings: TaskTimings::default(),
                stop_reason: None,
                error: None,
                finished_at_ms: None,
                last_position: None,
                subscribers: 0,
                subscribe_generation: 0,
                abort: None,
            }),
            len: watch::channel(0).0,
            streams: Default::default(),
        }
    }

    /// Number this process's events after `base` (a task queued again after a crash).
    pub fn with_event_base(mut self, base: usize) -> Self {
        self.event_base = base;
        self
    }

    /// The tenant that submitted it.
    pub fn with_tenant(mut self, tenant: Arc<str>) -> Self {
        self.tenant = tenant;
        self
    }

    /// The workers or pools the policy hook allowed it.
    pub fn with_route(mut self, route: Option<Arc<crate::policy::Route>>) -> Self {
        self.route = route;
        self
    }

    /// The index into this process's events after SSE id `last_event_id`.
    pub fn index_after(&self, last_event_id: usize) -> usize {
        last_event_id.saturating_sub(self.event_base)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Append a non-terminal event; false (and nothing appended) once the task has ended.
    pub fn push(&self, ev: &TaskEvent) -> bool {
        let mut g = self.lock();
        if g.terminal {
            return false;
        }
        if let TaskEvent::Token { .. } = ev {
            g.usage.tokens_out += 1;
        }
        g.events.push(StoredEvent::new(ev));
        let n = g.events.len();
        drop(g);
        self.len.send_replace(n);
        true
    }

    /// Append the terminal event and settle the state. Exactly one call wins; the others get
    /// false. A running attempt is told to stop.
    pub fn finish(&self, ev: &TaskEvent) -> bool {
        let mut g = self.lock();
        if g.terminal {
            return false;
        }
        g.terminal = true;
        g.finished_at_ms = Some(unix_ms());
        g.timings.e2e_ms = Some(ms_since(self.created));
        match ev {
            TaskEvent::End {
                stop_reason,
                tokens_in,
                tokens_out,
                prefill_time_ms,
                decode_time_ms,
                queue_time_ms,
                ttft_ms,
                ..
            } => {
                g.state = if *stop_reason == StopReason::Cancelled {
                    TaskState::Cancelled
                } else {
                    TaskState::Completed
                };
                g.stop_reason = Some(*stop_reason);
                g.usage = TaskUsage {
                    tokens_in: *tokens_in,
                    tokens_out: *tokens_out,
                };
                g.timings.prefill_time_ms = *prefill_time_ms;
                g.timings.decode_time_ms = *decode_time_ms;
                if g.worker_id.is_some() {
                    g.timings.queue_time_ms = Some(*queue_time_ms);
                    g.timings.ttft_ms = *ttft_ms;
                }
            }
            TaskEvent::Error { code, message, .. } => {
                g.state = TaskState::Failed;
                g.error = Some(TaskError {
                    code: *code,
                    message: message.clone(),
                });
            }
            _ => panic!("finish() takes a terminal event, got {}", ev.kind()),
        }
        g.events.push(StoredEvent::new(ev));
        let n = g.events.len();
        let abort = g.abort.take();
        drop(g);
        if let Some(a) = abort {
            let _ = a.send(());
        }
        self.len.send_replace(n);
        true
    }

    /// Whether the terminal event was appended.
    pub fn is_terminal(&self) -> bool {
        self.lock().terminal
    }

    /// Current state.
    pub fn state(&self) -> TaskState {
        self.lock().state
    }

    /// An attempt begins on `worker_id`; returns its number and the receiver that fires when the
    /// task ends from outside. `None` if the task already ended.
    pub fn begin_attempt(&self, worker_id: &str) -> Option<(u32, oneshot::Receiver<()>)> {
        let mut g = self.lock();
        if g.terminal {
            return None;
        }
        let (tx, rx) = oneshot::channel();
        g.abort = Some(tx);
        g.attempts += 1;
        g.state = TaskState::Running;
        g.worker_id = Some(worker_id.to_string());
        g.last_position = None;
        Some((g.attempts, rx))
    }

    /// The attempt on `worker_id` failed before any token: back to queued, avoiding that worker.
    pub fn retry_later(&self, worker_id: &str) -> bool {
        let mut g = self.lock();
        g.abort = None;
        if g.terminal {
            return false;
        }
        g.state = TaskState::Queued;
        if !g.avoid.iter().any(|w| w == worker_id) {
            g.avoid.push(worker_id.to_string());
        }
        true
    }

    /// Record the worker-reported timings of the running attempt.
    pub fn set_started(&self, tokens_in: u32, queue_time_ms: f64, ttft_ms: f64) {
        let mut g = self.lock();
        g.usage.tokens_in = tokens_in;
        g.timings.queue_time_ms = Some(queue_time_ms);
        g.timings.ttft_ms = Some(ttft_ms);
    }

    /// Workers to avoid on the next attempt.
    pub fn avoid(&self) -> Vec<String> {
        self.lock().avoid.clone()
    }

    /// Attempts so far.
    pub fn attempts(&self) -> u32 {
        self.lock().attempts
    }

    /// Tokens relayed so far.
    pub fn tokens_out(&self) -> u32 {
        self.lock().usage.tokens_out
    }

    /// The worker of the current/last attempt.
    pub fn worker_id(&self) -> Option<String> {
        self.lock().worker_id.clone()
    }

    /// Remember the position last announced; true when it changed.
    pub fn set_position(&self, position: u32) -> bool {
        let mut g = self.lock();
        if g.terminal || g.state != TaskState::Queued || g.last_position == Some(position) {
            return false;
        }
        g.last_position = Some(position);
        true
    }

    /// Events from index `from` on (0-based) and whether the last one is terminal.
    pub fn events_from(&self, from: usize) -> (Vec<StoredEvent>, bool) {
        let g = self.lock();
        let evs = g.events.get(from..).map(|s| s.to_vec()).unwrap_or_default();
        (evs, g.terminal)
    }

    /// Watch the number of events.
    pub fn watch_len(&self) -> watch::Receiver<usize> {
        self.len.subscribe()
    }

    /// Count one more open SSE stream, unless `max` are open already (then false).
    pub fn open_stream(&self, max: u32) -> bool {
        use std::sync::atomic::Ordering;
        self.streams
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok()
    }

    /// An SSE stream counted by [`Task::open_stream`] closed.
    pub fn close_stream(&self) {
        self.streams
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }

    /// An SSE client attached.
    pub fn subscribe(&self) {
        let mut g = self.lock();
        g.subscribers += 1;
        g.subscribe_generation += 1;
    }

    /// An SSE client left; returns the subscribe generation when it was the last one and the
    /// task still runs (the caller may start the disconnect grace timer).
    pub fn unsubscribe(&self) -> Option<u64> {
        let mut g = self.lock();
        g.subscribers = g.subscribers.saturating_sub(1);
        (g.subscribers == 0 && !g.terminal).then_some(g.subscribe_generation)
    }

    /// True when nobody subscribed since `generation` and nobody is attached.
    pub fn abandoned_since(&self, generation: u64) -> bool {
        let g = self.lock();
        g.subscribers == 0 && g.subscribe_generation == generation && !g.terminal
    }

    /// The terminal event with its SSE id, once there is one.
    pub fn terminal_event(&self) -> Option<(usize, StoredEvent)> {
        let g = self.lock();
        if !g.terminal {
            return None;
        }
        g.events
            .last()
            .map(|e| (self.event_base + g.events.len(), e.clone()))
    }

    /// The API view.
    pub fn status(&self, queue_position: Option<u32>) -> TaskStatus {
        let g = self.lock();
        TaskStatus {
            task_id: self.id.clone(),
            model: self.request.model.clone(),
            priority: self.request.priority,
            session_id: self.request.session_id.clone(),
            state: g.state,
            queue_position: if g.state == TaskState::Queued {
                queue_position
            } else {
                None
            },
            worker_id: g.worker_id.clone(),
            attempts: g.attempts,
            created_at_ms: self.created_at_ms,
            finished_at_ms: g.finished_at_ms,
            timings: g.timings.clone(),
            usage: g.usage.clone(),
            stop_reason: g.stop_reason,
            error: g.error.clone(),
            tenant: Some(self.tenant.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use llorch_wire::ErrorCode;

    fn task() -> Task {
        Task::new(
            "t1".into(),
            TaskRequest {
                model: "m".into(),
                ..Default::default()
            },
            "c".into(),
            Instant::now(),
        )
    }

    fn err(code: ErrorCode) -> TaskEvent {
        TaskEvent::Error {
            task_id: "t1".into(),
            code,
            message: "x".into(),
            retriable: false,
            tokens_out: 0,
            worker_id: None,
        }
    }

    #[test]
    fn exactly_one_terminal_event_and_nothing_after_it() {
        let t = task();
        let (_, mut abort) = t.begin_attempt("w1").unwrap();
        assert!(t.push(&TaskEvent::Token {
            i: 0,
            id: 1,
            t: "a".into(),
            logprob: None
        }));
        assert!(t.finish(&err(ErrorCode::DeadlineExceeded)));
        assert!(
            abort.try_recv().is_ok(),
            "the running attempt is told to stop"
        );
        assert!(!t.finish(&err(ErrorCode::Cancelled)));
        assert!(!t.push(&TaskEvent::Token {
            i: 1,
            id: 2,
            t: "b".into(),
            logprob: None
        }));
        let (evs, terminal) = t.events_from(0);
        assert!(terminal);
        assert_eq!(
            evs.iter().map(|e| e.kind).collect::<Vec<_>>(),
            ["token", "error"]
        );
        let st = t.status(None);
        assert_eq!(st.state, TaskState::Failed);
        assert_eq!(st.usage.tokens_out, 1);
        assert_eq!(st.error.unwrap().code, ErrorCode::DeadlineExceeded);
        assert!(t.begin_attempt("w2").is_none());
    }

    #[test]
    fn retry_and_subscriptions() {
        let t = task();
        t.begin_attempt("w1").unwrap();
        assert!(t.retry_later("w1"));
        assert_eq!(t.state(), TaskState::Queued);
        assert_eq!(t.avoid(), ["w1"]);
        assert!(t.set_position(3));
        assert!(!t.set_position(3));
        t.subscribe();
        let generation = t.unsubscribe().unwrap();
        assert!(t.abandoned_since(generation));
        t.subscribe();
        assert!(!t.abandoned_since(generation));
    }
}
