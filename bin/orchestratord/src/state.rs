//! The orchestrator's shared state and the operations every route and background loop uses:
//! task table, queue + registry (one lock, so a scheduling decision is atomic), ending tasks
//! for every cause with exactly one terminal event, persistence and metrics on the way.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use llorch_wire::tasks::{TaskEvent, TaskState};
use llorch_wire::{ErrorCode, StopReason};
use tokio::sync::Notify;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::queue::{DrainRate, Entry, TaskQueue};
use crate::registry::Registry;
use crate::store::{Store, TaskRow};
use crate::task::{ms_since, Task};

/// Queue, registry and drain rate: everything a scheduling decision reads and writes.
#[derive(Debug)]
pub struct Core {
    pub queue: TaskQueue,
    pub registry: Registry,
    pub drain: DrainRate,
    /// Attempts running on workers.
    pub running: u32,
    /// A task left the queue other than by dispatch; positions need announcing.
    pub positions_dirty: bool,
}

#[derive(Debug, Default)]
struct TaskTable {
    live: HashMap<String, Arc<Task>>,
    /// Finished task ids, oldest first; beyond the configured count they leave memory.
    finished: VecDeque<String>,
}

/// Why a task ends without its worker ending it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndCause {
    /// `POST /v2/tasks/{id}/cancel`.
    Cancelled,
    /// The last SSE client left and none came back within the grace period.
    Disconnected,
    /// `deadline_ms` passed.
    Deadline,
    /// It waited longer than `max_queue_wait_ms`.
    QueueWait,
    /// Evicted by `drop-lru`.
    Evicted,
    /// The orchestrator is stopping.
    Shutdown,
}

/// The orchestrator.
#[derive(Debug)]
pub struct Orchestrator {
    pub cfg: Config,
    core: Mutex<Core>,
    tasks: Mutex<TaskTable>,
    pub store: Store,
    pub metrics: Metrics,
    /// Shared connection pool to every worker.
    pub http: reqwest::Client,
    /// Wakes the scheduler (new task, free slot, new worker).
    pub wake: Notify,
    shutting_down: AtomicBool,
    pub started: Instant,
    /// Pools and deployments (empty without `[[pools]]`).
    pub fleet: crate::fleet::Fleet,
    /// Tenants, keys and their limits.
    pub tenancy: crate::tenancy::Tenancy,
    /// The policy hook's script, when one is configured.
    pub policy: Option<crate::policy::Policy>,
}

impl Orchestrator {
    /// State over an opened store, with the policy script (if any) already loaded.
    pub fn new(cfg: Config, store: Store, policy: Option<crate::policy::Policy>) -> Arc<Self> {
        let core = Core {
            queue: TaskQueue::new(
                cfg.queue_capacity,
                cfg.queue_policy,
                cfg.batch_starvation_bound,
            ),
            registry: Registry::new(cfg.placement),
            drain: DrainRate::default(),
            running: 0,
            positions_dirty: false,
        };
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .expect("HTTP client");
        let fleet =
            crate::fleet::Fleet::new(cfg.pools.clone(), cfg.models.clone(), cfg.fleet.clone());
        let tenancy =
            crate::tenancy::Tenancy::load(&store, Arc::new(crate::tenancy::limits::SystemClock));
        Arc::new(Self {
            fleet,
            tenancy,
            policy,
            cfg,
            core: Mutex::new(core),
            tasks: Mutex::new(TaskTable::default()),
            store,
            metrics: Metrics::default(),
            http,
            wake: Notify::new(),
            shutting_down: AtomicBool::new(false),
            started: Instant::now(),
        })
    }

    /// Lock queue + registry.
    pub fn core(&self) -> MutexGuard<'_, Core> {
        self.core.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn table(&self) -> MutexGuard<'_, TaskTable> {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A task still in memory.
    pub fn task(&self, id: &str) -> Option<Arc<Task>> {
        self.table().live.get(id).cloned()
    }

    /// Add a new task; false when the id is taken (in memory, or in the history when
    /// `check_history`: client-chosen ids).
    pub fn insert_task(&self, task: Arc<Task>, check_history: bool) -> bool {
        let mut t = self.table();
        if t.live.contains_key(&task.id)
            || (check_history && matches!(self.store.task(&task.id), Ok(Some(_))))
        {
            return false;
        }
        t.live.insert(task.id.clone(), task);
        true
    }

    /// Drop a task that was never admitted.
    pub fn forget_task(&self, id: &str) {
        self.table().live.remove(id);
    }

    /// Every live, unfinished task.
    pub fn unfinished(&self) -> Vec<Arc<Task>> {
        self.table()
            .live
            .values()
            .filter(|t| !t.is_terminal())
            .cloned()
            .collect()
    }

    /// Whether shutdown began.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// Write the task's status (and terminal event) to the history.
    pub fn persist(&self, task: &Task) {
        let position = if task.state() == TaskState::Queued {
            self.core().queue.position(&task.id)
        } else {
            None
        };
        let terminal = task
            .terminal_event()
            .map(|(id, ev)| (id as u64, ev.json.to_string()));
        self.store.put_task(TaskRow {
            status: task.status(position),
            terminal,
        });
    }

    /// Append `ev` as the task's terminal event, with metrics and persistence. False when the
    /// task had already ended (the event is dropped).
    pub fn finish(&self, task: &Arc<Task>, ev: TaskEvent) -> bool {
        if !task.finish(&ev) {
            return false;
        }
        let model = task.request.model.as_str();
        let outcome = match &ev {
            TaskEvent::End {
                stop_reason: StopReason::Cancelled,
                ..
            } => "cancelled".to_string(),
            TaskEvent::End { .. } => "completed".to_string(),
            TaskEvent::Error { code, .. } => code.as_str().to_string(),
            _ => "other".to_string(),
        };
        self.metrics
            .tasks_finished_total
            .inc(&[("model", model), ("outcome", &outcome)]);
        self.metrics
            .e2e_ms
            .observe(&[("model", model)], ms_since(task.created));
        tracing::info!(task_id = %task.id, correlation_id = %task.correlation_id, %outcome,
            tokens_out = task.tokens_out(), e2e_ms = ms_since(task.created) as u64, "task finished");
        self.persist(task);
        self.store.delete_pending(&task.id);
        crate::tenancy::meter::record(self, task, &ev);
        let mut t = self.table();
        t.finished.push_back(task.id.clone());
        while t.finished.len() > self.cfg.finished_tasks_in_memory {
            if let Some(old) = t.finished.pop_front() {
                t.live.remove(&old);
            }
        }
        true
    }

    /// End a task for `cause`: leave the queue if queued, stop its worker if running (the
    /// relay sees the abort), append the terminal event. False if it had already ended.
    pub fn end_task(&self, task: &Arc<Task>, cause: EndCause) -> bool {
        if task.is_terminal() {
            return false;
        }
        let was_queued = {
            let mut core = self.core();
            let removed = core.queue.remove(&task.id);
            core.positions_dirty |= removed;
            removed
        };
        if was_queued {
            self.wake.notify_one();
        }
        let st = task.status(None);
        let (code, message) = match cause {
            EndCause::Cancelled | EndCause::Disconnected => {
                let ev = TaskEvent::End {
                    task_id: task.id.clone(),
                    stop_reason: StopReason::Cancelled,
                    stop_sequence_matched: None,
                    tokens_in: st.usage.tokens_in,
                    tokens_out: st.usage.tokens_out,
                    tokens_cached: 0,
                    worker_id: st.worker_id.clone(),
                    seed: None,
                    attempts: st.attempts,
                    queue_time_ms: st
                        .timings
                        .queue_time_ms
                        .unwrap_or_else(|| ms_since(task.created)),
                    ttft_ms: st.timings.ttft_ms,
                    e2e_ms: ms_since(task.created),
                    prefill_time_ms: None,
                    decode_time_ms: None,
                    decode_tokens_per_sec: None,
                };
                let ended = self.finish(task, ev);
                if ended {
                    tracing::info!(task_id = %task.id, ?cause, was_queued, "task cancelled");
                }
                return ended;
            }
            EndCause::Deadline => (
                ErrorCode::DeadlineExceeded,
                format!(
                    "deadline of {} ms passed",
                    task.request.deadline_ms.unwrap_or_default()
                ),
            ),
            EndCause::QueueWait => (
                ErrorCode::DeadlineExceeded,
                format!(
                    "waited {} ms in the queue and no worker serving model {:?} took it",
                    self.cfg.max_queue_wait_ms, task.request.model
                ),
            ),
            EndCause::Evicted => (
                ErrorCode::Evicted,
                "evicted from the full batch queue by a newer task (policy drop-lru)".to_string(),
            ),
            EndCause::Shutdown => (
                ErrorCode::ShuttingDown,
                "orchestratord is shutting down; submit again".to_string(),
            ),
        };
        self.finish(task, error_event(task, code, message, st.usage.tokens_out))
    }

    /// Put a task that failed before its first token back at the head of its queue class.
    pub fn requeue(&self, task: &Arc<Task>) {
        if task.is_terminal() {
            return;
        }
        let entry = Entry {
            task_id: task.id.clone(),
            model: task.request.model.clone(),
            priority: task.request.priority,
            enqueued: task.created,
            avoid: task.avoid(),
            affinity: Some(crate::registry::affinity_key(&task.request)),
            tenant: task.tenant.clone(),
            share: self.tenancy.share(&task.tenant),
            route: task.route.clone(),
        };
        self.core().queue.push_front(entry);
        self.persist(task);
        self.wake.notify_one();
    }

    /// An attempt of `tenant` on `worker_id` ended: give its slot back and wake the scheduler.
    pub fn release_slot(&self, worker_id: &str, tenant: &str) {
        let mut core = self.core();
        core.registry.release(worker_id);
        core.queue.finished(tenant);
        core.running = core.running.saturating_sub(1);
        drop(core);
        self.wake.notify_one();
    }

    /// Stop placing tasks on a worker until it shows life again.
    pub fn mark_unhealthy(&self, worker_id: &str, why: &str) {
        if self.core().registry.mark_unhealthy(worker_id) {
            tracing::warn!(%worker_id, why, "worker marked unhealthy");
        }
    }

    /// Refuse new tasks and end every unfinished one (their workers are told to stop).
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        for task in self.unfinished() {
            self.end_task(&task, EndCause::Shutdown);
        }
    }
}

/// An `error` terminal event for `task`.
pub fn error_event(task: &Task, code: ErrorCode, message: String, tokens_out: u32) -> TaskEvent {
    TaskEvent::Error {
        task_id: task.id.clone(),
        code,
        message,
        retriable: code.retriable(),
        tokens_out,
        worker_id: task.worker_id(),
    }
}
