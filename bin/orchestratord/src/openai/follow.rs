//! Follow one task's events as its client. The HTTP request cannot reconnect, so when it goes
//! away (the response future or body is dropped before the terminal event) the task is
//! cancelled at once, unless another client (a `/v2` SSE subscriber) is still attached.

use std::collections::VecDeque;
use std::sync::Arc;

use llorch_wire::tasks::TaskEvent;
use tokio::sync::watch;

use crate::state::{EndCause, Orchestrator};
use crate::task::Task;

/// A client attached to a task, reading its events in order.
pub struct Follower {
    orch: Arc<Orchestrator>,
    task: Arc<Task>,
    next: usize,
    len: watch::Receiver<usize>,
    pending: VecDeque<TaskEvent>,
    done: bool,
}

impl Follower {
    /// Attach to `task` (counts as a subscriber).
    pub fn attach(orch: Arc<Orchestrator>, task: Arc<Task>) -> Self {
        task.subscribe();
        let len = task.watch_len();
        Self {
            orch,
            task,
            next: 0,
            len,
            pending: VecDeque::new(),
            done: false,
        }
    }

    /// The next event; `None` after the terminal one.
    pub async fn next(&mut self) -> Option<TaskEvent> {
        loop {
            if let Some(ev) = self.pending.pop_front() {
                return Some(ev);
            }
            if self.done {
                return None;
            }
            let (evs, terminal) = self.task.events_from(self.next);
            self.next += evs.len();
            self.done = terminal;
            let fresh = !evs.is_empty();
            self.pending.extend(
                evs.iter()
                    .filter_map(|e| serde_json::from_str::<TaskEvent>(&e.json).ok()),
            );
            if !fresh && !terminal && self.len.changed().await.is_err() {
                return None;
            }
        }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        if self.task.unsubscribe().is_some() {
            tracing::info!(task_id = %self.task.id, "OpenAI client gone; cancelling the task");
            self.orch.end_task(&self.task, EndCause::Disconnected);
        }
    }
}
