//! The bounded two-class task queue (pure state, no I/O) and the drain-rate estimate that
//! sizes `Retry-After` and `predicted_start_ms`.
//!
//! Fair share: within a class every tenant has its own FIFO lane, and dispatch takes lanes in
//! weighted round-robin (start-time fair queueing): a lane's `pass` grows by `STRIDE / weight`
//! per dispatch, the lane with the lowest pass goes next (ties: the lane active longest), and a
//! lane that becomes active starts at the class's virtual time, so idle tenants bank no credit.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use llorch_wire::tasks::Priority;

use crate::config::QueuePolicy;

/// Pass increment of a weight-1 lane per dispatch.
const STRIDE: u64 = 1_000_000;

/// A tenant's scheduling terms, carried by each of its entries (the newest entry's win).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Share {
    /// Fair-share weight (1..=1000).
    pub weight: u32,
    /// Tasks of the tenant running at once; its lane waits while it has this many.
    pub max_running: Option<u32>,
}

impl Default for Share {
    fn default() -> Self {
        Self {
            weight: 1,
            max_running: None,
        }
    }
}

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
    /// The submitting tenant and its terms.
    pub tenant: Arc<str>,
    pub share: Share,
    /// Workers or pools the policy hook allowed it (none: any).
    pub route: Option<Arc<crate::policy::Route>>,
}

/// Result of [`TaskQueue::push`].
#[derive(Debug, PartialEq, Eq)]
pub enum Admit {
    /// Queued with this many tasks ahead.
    Accepted { position: u32 },
    /// Queued after evicting the oldest batch task of the tenant with the most (`drop-lru`).
    Evicted { position: u32, evicted: String },
    /// The class is full.
    Full,
}

/// One tenant's FIFO within a class.
#[derive(Debug)]
struct Lane {
    entries: VecDeque<Entry>,
    pass: u64,
    /// Activation sequence number: the tie-break between equal passes.
    order: u64,
    share: Share,
}

impl Lane {
    fn stride(&self) -> u64 {
        STRIDE / u64::from(self.share.weight.clamp(1, 1000))
    }
}

/// One priority class: a lane per tenant with waiting tasks.
#[derive(Debug, Default)]
struct Class {
    lanes: HashMap<Arc<str>, Lane>,
    vtime: u64,
    seq: u64,
    len: usize,
}

impl Class {
    fn lane(&mut self, tenant: &Arc<str>, share: Share) -> &mut Lane {
        let (vtime, seq) = (self.vtime, self.seq);
        let lane = self.lanes.entry(tenant.clone()).or_insert_with(|| Lane {
            entries: VecDeque::new(),
            pass: vtime,
            order: seq,
            share,
        });
        lane.share = share;
        if lane.order == seq {
            self.seq += 1;
        }
        lane
    }

    fn push_back(&mut self, e: Entry) {
        let (t, share) = (e.tenant.clone(), e.share);
        self.lane(&t, share).entries.push_back(e);
        self.len += 1;
    }

    fn push_front(&mut self, e: Entry) {
        let (t, share) = (e.tenant.clone(), e.share);
        self.lane(&t, share).entries.push_front(e);
        self.len += 1;
    }

    fn drop_if_empty(&mut self, tenant: &str) {
        if self.lanes.get(tenant).is_some_and(|l| l.entries.is_empty()) {
            self.lanes.remove(tenant);
        }
    }

    /// Lanes in dispatch order (lowest pass, then longest active).
    fn order(&self) -> Vec<&Arc<str>> {
        let mut v: Vec<(&Arc<str>, &Lane)> = self.lanes.iter().collect();
        v.sort_by_key(|(_, l)| (l.pass, l.order));
        v.into_iter().map(|(t, _)| t).collect()
    }

    /// Every entry with its projected dispatch tag (pass after its lane's earlier entries).
    fn tagged(&self) -> impl Iterator<Item = ((u64, u64, usize), &Entry)> {
        self.lanes.values().flat_map(|l| {
            let stride = l.stride();
            l.entries
                .iter()
                .enumerate()
                .map(move |(k, e)| ((l.pass + k as u64 * stride, l.order, k), e))
        })
    }

    /// Entries in projected dispatch order.
    fn projected(&self) -> Vec<&Entry> {
        let mut v: Vec<_> = self.tagged().collect();
        v.sort_by_key(|(tag, _)| *tag);
        v.into_iter().map(|(_, e)| e).collect()
    }

    /// Position of `task_id` within the class, without sorting.
    fn position(&self, task_id: &str) -> Option<usize> {
        let tag = self.tagged().find(|(_, e)| e.task_id == task_id)?.0;
        Some(self.rank(tag))
    }

    /// Entries projected before `tag`.
    fn rank(&self, tag: (u64, u64, usize)) -> usize {
        self.tagged().filter(|(t, _)| *t < tag).count()
    }

    /// Position of the last entry of `tenant`'s lane (one just pushed).
    fn position_of_last(&self, tenant: &str) -> usize {
        self.lanes.get(tenant).map_or(0, |l| {
            let k = l.entries.len().saturating_sub(1);
            self.rank((l.pass + k as u64 * l.stride(), l.order, k))
        })
    }

    fn remove(&mut self, task_id: &str) -> Option<Entry> {
        let (tenant, i) = self.lanes.iter().find_map(|(t, l)| {
            l.entries
                .iter()
                .position(|e| e.task_id == task_id)
                .map(|i| (t.clone(), i))
        })?;
        let e = self.lanes.get_mut(&tenant)?.entries.remove(i)?;
        self.len -= 1;
        self.drop_if_empty(&tenant);
        Some(e)
    }
}

/// Interactive and batch classes with a per-class capacity, a batch starvation bound and
/// weighted round-robin between tenants within each class.
#[derive(Debug)]
pub struct TaskQueue {
    interactive: Class,
    batch: Class,
    capacity: usize,
    policy: QueuePolicy,
    starvation_bound: u32,
    /// Interactive dispatches in a row while batch tasks waited.
    streak: u32,
    /// Tasks running per tenant (taken by [`TaskQueue::select`], given back by
    /// [`TaskQueue::finished`]).
    running: HashMap<Arc<str>, u32>,
}

impl TaskQueue {
    /// An empty queue.
    pub fn new(capacity: u32, policy: QueuePolicy, starvation_bound: u32) -> Self {
        Self {
            interactive: Class::default(),
            batch: Class::default(),
            capacity: capacity as usize,
            policy,
            starvation_bound: starvation_bound.max(1),
            streak: 0,
            running: HashMap::new(),
        }
    }

    fn class(&mut self, p: Priority) -> &mut Class {
        match p {
            Priority::Interactive => &mut self.interactive,
            Priority::Batch => &mut self.batch,
        }
    }

    fn classes(&self) -> [&Class; 2] {
        [&self.interactive, &self.batch]
    }

    /// Admit a new task, applying the full-queue policy.
    pub fn push(&mut self, entry: Entry) -> Admit {
        let prio = entry.priority;
        let capacity = self.capacity;
        let policy = self.policy;
        let q = self.class(prio);
        let mut evicted = None;
        if q.len >= capacity {
            if policy == QueuePolicy::DropLru && prio == Priority::Batch {
                let biggest = q
                    .lanes
                    .values()
                    .max_by_key(|l| (l.entries.len(), std::cmp::Reverse(l.order)))
                    .and_then(|l| l.entries.front())
                    .map(|e| e.task_id.clone());
                evicted = biggest.and_then(|id| q.remove(&id)).map(|e| e.task_id);
            } else {
                return Admit::Full;
            }
        }
        let tenant = entry.tenant.clone();
        q.push_back(entry);
        let mut position = q.position_of_last(&tenant);
        if prio == Priority::Batch {
            position += self.interactive.len;
        }
        let position = position as u32;
        match evicted {
            Some(evicted) => Admit::Evicted { position, evicted },
            None => Admit::Accepted { position },
        }
    }

    /// Put a task back at the head of its tenant's lane (a retry); capacity does not apply.
    pub fn push_front(&mut self, entry: Entry) {
        self.class(entry.priority).push_front(entry);
    }

    /// Remove a queued task; false when it is not queued.
    pub fn remove(&mut self, task_id: &str) -> bool {
        self.interactive.remove(task_id).is_some() || self.batch.remove(task_id).is_some()
    }

    /// Tasks waiting in one class.
    pub fn depth(&self, p: Priority) -> usize {
        match p {
            Priority::Interactive => self.interactive.len,
            Priority::Batch => self.batch.len,
        }
    }

    /// Tasks waiting in both classes.
    pub fn len(&self) -> usize {
        self.interactive.len + self.batch.len
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Tasks of `tenant` waiting in both classes.
    pub fn tenant_depth(&self, tenant: &str) -> usize {
        self.classes()
            .iter()
            .filter_map(|c| c.lanes.get(tenant))
            .map(|l| l.entries.len())
            .sum()
    }

    /// Tasks of `tenant` running now.
    pub fn tenant_running(&self, tenant: &str) -> u32 {
        self.running.get(tenant).copied().unwrap_or(0)
    }

    /// A task of `tenant` stopped running (its attempt ended).
    pub fn finished(&mut self, tenant: &str) {
        if let Some(n) = self.running.get_mut(tenant) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.running.remove(tenant);
            }
        }
    }

    /// Tasks ahead of `task_id` in projected dispatch order (interactive before batch).
    pub fn position(&self, task_id: &str) -> Option<u32> {
        if let Some(p) = self.interactive.position(task_id) {
            return Some(p as u32);
        }
        self.batch
            .position(task_id)
            .map(|p| (p + self.interactive.len) as u32)
    }

    /// Every queued task with its position, in projected dispatch order.
    pub fn positions(&self) -> Vec<(String, u32)> {
        self.interactive
            .projected()
            .into_iter()
            .chain(self.batch.projected())
            .enumerate()
            .map(|(i, e)| (e.task_id.clone(), i as u32))
            .collect()
    }

    /// Queued tasks asking for `model`, with their positions, in projected dispatch order.
    pub fn of_model(&self, model: &str) -> Vec<(String, u32)> {
        self.interactive
            .projected()
            .into_iter()
            .chain(self.batch.projected())
            .enumerate()
            .filter(|(_, e)| e.model == model)
            .map(|(i, e)| (e.task_id.clone(), i as u32))
            .collect()
    }

    /// Take the first task that `place` can put on a worker: interactive first, unless
    /// `starvation_bound` interactive tasks went in a row while a batch task waited; within a
    /// class, lanes in fair-share order, FIFO within a lane, skipping tenants at their
    /// `max_running`. `place` is asked at most once per model (and policy route) per call.
    pub fn select<W>(&mut self, mut place: impl FnMut(&Entry) -> Option<W>) -> Option<(Entry, W)> {
        let batch_first = self.streak >= self.starvation_bound && self.batch.len > 0;
        let order = if batch_first {
            [Priority::Batch, Priority::Interactive]
        } else {
            [Priority::Interactive, Priority::Batch]
        };
        let mut unplaceable: Vec<(String, u64)> = Vec::new();
        for prio in order {
            let running = &self.running;
            let q = match prio {
                Priority::Interactive => &mut self.interactive,
                Priority::Batch => &mut self.batch,
            };
            let mut found = None;
            // the lowest lane first without sorting (the common case: it can go); the rest
            // sorted only when it cannot
            let first = q
                .lanes
                .iter()
                .min_by_key(|(_, l)| (l.pass, l.order))
                .map(|(t, _)| t);
            let rest = std::iter::once_with(|| q.order())
                .flatten()
                .filter(|t| Some(*t) != first);
            'lanes: for tenant in first.into_iter().chain(rest) {
                let lane = &q.lanes[tenant];
                let busy = running.get(tenant).copied().unwrap_or(0);
                if lane.share.max_running.is_some_and(|max| busy >= max) {
                    continue;
                }
                for (i, e) in lane.entries.iter().enumerate() {
                    let route = e.route.as_ref().map_or(0, |r| r.key);
                    if unplaceable
                        .iter()
                        .any(|(m, r)| *m == e.model && *r == route)
                    {
                        continue;
                    }
                    match place(e) {
                        Some(w) => {
                            found = Some((tenant.clone(), i, w));
                            break 'lanes;
                        }
                        None => unplaceable.push((e.model.clone(), route)),
                    }
                }
            }
            if let Some((tenant, i, w)) = found {
                let lane = q.lanes.get_mut(&tenant).expect("lane exists");
                let entry = lane.entries.remove(i).expect("index in range");
                // a lane that waited behind a limit restarts at the virtual time: no burst
                let start = lane.pass.max(q.vtime);
                q.vtime = start;
                lane.pass = start + lane.stride();
                q.len -= 1;
                q.drop_if_empty(&tenant);
                *self.running.entry(tenant).or_insert(0) += 1;
                self.streak = match prio {
                    Priority::Batch => 0,
                    Priority::Interactive if self.batch.len == 0 => 0,
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
            for lane in q.lanes.values_mut() {
                lane.entries.retain(|e| {
                    let keep = now.duration_since(e.enqueued) <= max_wait;
                    if !keep {
                        out.push(e.clone());
                    }
                    keep
                });
            }
            q.lanes.retain(|_, l| !l.entries.is_empty());
            q.len = q.lanes.values().map(|l| l.entries.len()).sum();
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
#[path = "queue_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "queue_fair_tests.rs"]
mod fair_tests;
