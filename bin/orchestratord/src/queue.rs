//! The bounded two-class task queue (pure state, no I/O) and the drain-rate estimate that
//! sizes `Retry-After` and `predicted_start_ms`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use llorch_wire::tasks::Priority;

use crate::config::QueuePolicy;

/// One waiting task.
#[derive(Debug, Clone)]
pub struct Entry {
    pub task_id: String,
    pub model: String,
    pub priority: Priority,
    /// When the task was first admitted (retries keep it).
    pub enqueued: Instant,
    /// Workers that already failed this task; placed elsewhere when possible.
    pub avoid: Vec<String>,
    /// Tasks with the same key likely share a prompt prefix (see `registry::affinity_key`).
    pub affinity: Option<u64>,
}

/// Result of [`TaskQueue::push`].
#[derive(Debug, PartialEq, Eq)]
pub enum Admit {
    /// Queued with this many tasks ahead.
    Accepted { position: u32 },
    /// Queued after evicting the oldest batch task (`drop-lru`).
    Evicted { position: u32, evicted: String },
    /// The class is full.
    Full,
}

/// Interactive and batch FIFOs with a per-class capacity and a batch starvation bound.
#[derive(Debug)]
pub struct TaskQueue {
    interactive: VecDeque<Entry>,
    batch: VecDeque<Entry>,
    capacity: usize,
    policy: QueuePolicy,
    starvation_bound: u32,
    /// Interactive dispatches in a row while batch tasks waited.
    streak: u32,
}

impl TaskQueue {
    /// An empty queue.
    pub fn new(capacity: u32, policy: QueuePolicy, starvation_bound: u32) -> Self {
        Self {
            interactive: VecDeque::new(),
            batch: VecDeque::new(),
            capacity: capacity as usize,
            policy,
            starvation_bound: starvation_bound.max(1),
            streak: 0,
        }
    }

    fn class(&mut self, p: Priority) -> &mut VecDeque<Entry> {
        match p {
            Priority::Interactive => &mut self.interactive,
            Priority::Batch => &mut self.batch,
        }
    }

    /// Admit a new task, applying the full-queue policy.
    pub fn push(&mut self, entry: Entry) -> Admit {
        let (id, prio) = (entry.task_id.clone(), entry.priority);
        let capacity = self.capacity;
        let policy = self.policy;
        let q = self.class(prio);
        let mut evicted = None;
        if q.len() >= capacity {
            if policy == QueuePolicy::DropLru && prio == Priority::Batch {
                evicted = q.pop_front().map(|e| e.task_id);
            } else {
                return Admit::Full;
            }
        }
        q.push_back(entry);
        let position = self.position(&id).unwrap_or(0);
        match evicted {
            Some(evicted) => Admit::Evicted { position, evicted },
            None => Admit::Accepted { position },
        }
    }

    /// Put a task back at the head of its class (a retry); capacity does not apply.
    pub fn push_front(&mut self, entry: Entry) {
        self.class(entry.priority).push_front(entry);
    }

    /// Remove a queued task; false when it is not queued.
    pub fn remove(&mut self, task_id: &str) -> bool {
        for q in [&mut self.interactive, &mut self.batch] {
            if let Some(i) = q.iter().position(|e| e.task_id == task_id) {
                q.remove(i);
                return true;
            }
        }
        false
    }

    /// Tasks waiting in one class.
    pub fn depth(&self, p: Priority) -> usize {
        match p {
            Priority::Interactive => self.interactive.len(),
            Priority::Batch => self.batch.len(),
        }
    }

    /// Tasks waiting in both classes.
    pub fn len(&self) -> usize {
        self.interactive.len() + self.batch.len()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Tasks ahead of `task_id` in dispatch order (interactive before batch).
    pub fn position(&self, task_id: &str) -> Option<u32> {
        self.interactive
            .iter()
            .chain(self.batch.iter())
            .position(|e| e.task_id == task_id)
            .map(|p| p as u32)
    }

    /// Every queued task with its position, in dispatch order.
    pub fn positions(&self) -> Vec<(String, u32)> {
        self.interactive
            .iter()
            .chain(self.batch.iter())
            .enumerate()
            .map(|(i, e)| (e.task_id.clone(), i as u32))
            .collect()
    }

    /// Queued tasks asking for `model`, with their positions, in dispatch order.
    pub fn of_model(&self, model: &str) -> Vec<(String, u32)> {
        self.interactive
            .iter()
            .chain(self.batch.iter())
            .enumerate()
            .filter(|(_, e)| e.model == model)
            .map(|(i, e)| (e.task_id.clone(), i as u32))
            .collect()
    }

    /// Take the first task that `place` can put on a worker: interactive first, unless
    /// `starvation_bound` interactive tasks went in a row while a batch task waited.
    /// `place` is asked at most once per model per call.
    pub fn select<W>(&mut self, mut place: impl FnMut(&Entry) -> Option<W>) -> Option<(Entry, W)> {
        let batch_first = self.streak >= self.starvation_bound && !self.batch.is_empty();
        let order = if batch_first {
            [Priority::Batch, Priority::Interactive]
        } else {
            [Priority::Interactive, Priority::Batch]
        };
        let mut unplaceable: Vec<String> = Vec::new();
        for prio in order {
            let q = self.class(prio);
            let mut found = None;
            for (i, e) in q.iter().enumerate() {
                if unplaceable.contains(&e.model) {
                    continue;
                }
                match place(e) {
                    Some(w) => {
                        found = Some((i, w));
                        break;
                    }
                    None => unplaceable.push(e.model.clone()),
                }
            }
            if let Some((i, w)) = found {
                let entry = q.remove(i).expect("index in range");
                self.streak = match prio {
                    Priority::Batch => 0,
                    Priority::Interactive if self.batch.is_empty() => 0,
                    Priority::Interactive => self.streak + 1,
                };
                return Some((entry, w));
            }
        }
        None
    }

    /// Remove and return tasks that waited longer than `max_wait`.
    pub fn take_expired(&mut self, now: Instant, max_wait: Duration) -> Vec<Entry> {
        let mut out = Vec::new();
        for q in [&mut self.interactive, &mut self.batch] {
            q.retain(|e| {
                let keep = now.duration_since(e.enqueued) <= max_wait;
                if !keep {
                    out.push(e.clone());
                }
                keep
            });
        }
        out
    }
}

/// Dispatch rate over the last [`DrainRate::WINDOW`] dispatches.
#[derive(Debug, Default)]
pub struct DrainRate {
    stamps: VecDeque<Instant>,
}

/// Backoff when nothing has been measured yet.
pub const DEFAULT_BACKOFF_MS: u64 = 1000;

impl DrainRate {
    /// Dispatches remembered.
    pub const WINDOW: usize = 64;

    /// Note one dispatch.
    pub fn record(&mut self, now: Instant) {
        if self.stamps.len() == Self::WINDOW {
            self.stamps.pop_front();
        }
        self.stamps.push_back(now);
    }

    /// Dispatches per second, counting the time since the oldest remembered one up to `now`
    /// (so a stalled queue shows a falling rate). `None` before two dispatches.
    pub fn per_sec(&self, now: Instant) -> Option<f64> {
        if self.stamps.len() < 2 {
            return None;
        }
        let span = now
            .duration_since(*self.stamps.front()?)
            .as_secs_f64()
            .max(1e-3);
        Some(self.stamps.len() as f64 / span)
    }

    /// Expected ms until `n` more tasks leave the queue.
    pub fn eta_ms(&self, now: Instant, n: u32) -> u64 {
        match self.per_sec(now) {
            Some(r) => (n as f64 * 1000.0 / r).round() as u64,
            None => n as u64 * DEFAULT_BACKOFF_MS,
        }
    }

    /// Suggested client backoff after a 429: the expected time for one queue slot to free,
    /// clamped to 100 ms..60 s.
    pub fn backoff_ms(&self, now: Instant) -> u64 {
        self.eta_ms(now, 1).clamp(100, 60_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(id: &str, p: Priority) -> Entry {
        Entry {
            task_id: id.into(),
            model: "m".into(),
            priority: p,
            enqueued: Instant::now(),
            avoid: vec![],
            affinity: None,
        }
    }

    fn take_all(q: &mut TaskQueue) -> Vec<String> {
        std::iter::from_fn(|| q.select(|_| Some(())).map(|(e, ())| e.task_id)).collect()
    }

    #[test]
    fn interactive_first_with_starvation_bound() {
        let mut q = TaskQueue::new(100, QueuePolicy::Reject, 2);
        for i in 0..2 {
            q.push(e(&format!("b{i}"), Priority::Batch));
        }
        for i in 0..5 {
            q.push(e(&format!("i{i}"), Priority::Interactive));
        }
        assert_eq!(take_all(&mut q), ["i0", "i1", "b0", "i2", "i3", "b1", "i4"]);
    }

    #[test]
    fn reject_and_drop_lru() {
        let mut q = TaskQueue::new(2, QueuePolicy::Reject, 4);
        assert_eq!(
            q.push(e("a", Priority::Batch)),
            Admit::Accepted { position: 0 }
        );
        assert_eq!(
            q.push(e("b", Priority::Batch)),
            Admit::Accepted { position: 1 }
        );
        assert_eq!(q.push(e("c", Priority::Batch)), Admit::Full);
        assert_eq!(
            q.push(e("x", Priority::Interactive)),
            Admit::Accepted { position: 0 }
        );

        let mut q = TaskQueue::new(1, QueuePolicy::DropLru, 4);
        q.push(e("i", Priority::Interactive));
        q.push(e("a", Priority::Batch));
        assert_eq!(
            q.push(e("b", Priority::Batch)),
            Admit::Evicted {
                position: 1,
                evicted: "a".into()
            }
        );
        assert_eq!(
            q.push(e("j", Priority::Interactive)),
            Admit::Full,
            "interactive tasks are never evicted"
        );
    }

    #[test]
    fn unplaceable_models_do_not_block_others() {
        let mut q = TaskQueue::new(10, QueuePolicy::Reject, 4);
        q.push(Entry {
            model: "big".into(),
            ..e("a", Priority::Interactive)
        });
        q.push(e("b", Priority::Interactive));
        q.push(Entry {
            model: "big".into(),
            ..e("c", Priority::Interactive)
        });
        let mut asked = Vec::new();
        let got = q.select(|en| {
            asked.push(en.task_id.clone());
            (en.model == "m").then_some(())
        });
        assert_eq!(got.unwrap().0.task_id, "b");
        assert_eq!(asked, ["a", "b"]);
        assert_eq!(q.positions(), [("a".to_string(), 0), ("c".to_string(), 1)]);
    }

    #[test]
    fn remove_retry_and_expiry() {
        let mut q = TaskQueue::new(10, QueuePolicy::Reject, 4);
        q.push(e("a", Priority::Interactive));
        q.push(e("b", Priority::Interactive));
        assert!(q.remove("a"));
        assert!(!q.remove("a"));
        q.push_front(e("r", Priority::Interactive));
        assert_eq!(q.position("r"), Some(0));
        let later = Instant::now() + Duration::from_secs(10);
        assert_eq!(q.take_expired(later, Duration::from_secs(5)).len(), 2);
        assert!(q.is_empty());
    }

    #[test]
    fn drain_rate_sizes_backoff() {
        let mut d = DrainRate::default();
        let t0 = Instant::now();
        assert_eq!(d.backoff_ms(t0), DEFAULT_BACKOFF_MS);
        for i in 0..10 {
            d.record(t0 + Duration::from_millis(100 * i));
        }
        let now = t0 + Duration::from_millis(1000);
        assert_eq!(d.per_sec(now).map(|r| r.round()), Some(10.0));
        assert_eq!(d.backoff_ms(now), 100);
        assert_eq!(d.eta_ms(now, 5), 500);
        // Nothing dispatched for a long time: the suggested wait grows.
        assert!(d.backoff_ms(t0 + Duration::from_secs(20)) > 1000);
    }
}
