//! The worker registry (pure state): who serves which model, health, slot accounting, and
//! placement (least-loaded or round-robin, deterministic tie-break by worker id).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use llorch_wire::tasks::{
    ModelCapability, WorkerInfo, WorkerRegistration, WorkerSource, WorkerStatus,
};

use crate::config::Placement;

/// One known worker.
#[derive(Debug, Clone)]
pub struct WorkerEntry {
    pub reg: WorkerRegistration,
    pub source: WorkerSource,
    pub status: WorkerStatus,
    /// Tasks the orchestrator runs on it now.
    pub busy: u32,
    /// Draining (its pool or itself): running tasks finish, no new ones come.
    pub draining: bool,
    /// When a task last started or ended on it (for least-recently-used eviction).
    pub last_busy: Option<Instant>,
    pub last_seen: Instant,
    /// Unix ms of `last_seen`.
    pub last_seen_ms: u64,
    /// Why the worker said it cannot serve (its engine died); cleared when it says `ready`.
    pub failure: Option<String>,
}

impl WorkerEntry {
    /// Whether tasks naming `model` may run here.
    pub fn serves(&self, model: &str) -> bool {
        self.reg.model == model || self.reg.aliases.iter().any(|a| a == model)
    }

    /// The token the worker gave at registration, for its `/execute`, `/cancel`, `/tokenize`.
    pub fn token(&self) -> Option<String> {
        self.reg.api_token.as_ref().map(|t| t.expose().to_string())
    }

    fn has_free_slot(&self) -> bool {
        self.status == WorkerStatus::Ready && !self.draining && self.busy < self.reg.slots_total
    }

    /// The API view.
    pub fn info(&self) -> WorkerInfo {
        WorkerInfo {
            worker_id: self.reg.worker_id.clone(),
            url: self.reg.url.clone(),
            model: self.reg.model.clone(),
            aliases: self.reg.aliases.clone(),
            backend: self.reg.backend.clone(),
            slots_total: self.reg.slots_total,
            slots_busy: self.busy,
            context_length: self.reg.context_length,
            status: self.status,
            source: self.source,
            last_seen_ms: self.last_seen_ms,
            failure: self.failure.clone(),
        }
    }
}

/// All workers, keyed (and so ordered) by worker id.
#[derive(Debug)]
pub struct Registry {
    workers: BTreeMap<String, WorkerEntry>,
    placement: Placement,
    rr_last: Option<String>,
    /// The worker that last ran a task of each affinity key (its prompt cache may hold it).
    affinity: HashMap<u64, String>,
}

/// Affinity keys remembered at most; past that the map starts over.
const MAX_AFFINITY_KEYS: usize = 65_536;

/// Key under which tasks likely share a prompt prefix: the session id when the client gives one
/// (OpenAI `user`), else the start of the prompt (the first message, typically the system
/// prompt, or the first 2 KiB of text / 512 token ids).
pub fn affinity_key(req: &llorch_wire::tasks::TaskRequest) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    req.model.hash(&mut h);
    if let Some(s) = &req.session_id {
        ("session", s).hash(&mut h);
    } else if let Some(m) = req.gen.messages.as_ref().and_then(|m| m.first()) {
        let text = &m.content[..floor_char_boundary(&m.content, 2048)];
        ("messages", &m.role, text).hash(&mut h);
    } else if let Some(p) = &req.gen.prompt {
        ("prompt", &p[..floor_char_boundary(p, 2048)]).hash(&mut h);
    } else if let Some(ids) = &req.gen.prompt_ids {
        ("ids", &ids[..ids.len().min(512)]).hash(&mut h);
    }
    h.finish()
}

/// The largest char boundary of `s` at or below `max`.
fn floor_char_boundary(s: &str, max: usize) -> usize {
    let mut i = max.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

impl Registry {
    /// An empty registry.
    pub fn new(placement: Placement) -> Self {
        Self {
            workers: BTreeMap::new(),
            placement,
            rr_last: None,
            affinity: HashMap::new(),
        }
    }

    /// Add or replace a worker (its busy count survives a re-registration).
    pub fn upsert(
        &mut self,
        reg: WorkerRegistration,
        source: WorkerSource,
        status: WorkerStatus,
        seen_ms: u64,
    ) {
        let old = self.workers.get(&reg.worker_id);
        let busy = old.map_or(0, |w| w.busy);
        let draining = old.is_some_and(|w| w.draining);
        let last_busy = old.and_then(|w| w.last_busy);
        let entry = WorkerEntry {
            reg,
            source,
            status,
            busy,
            draining,
            last_busy,
            last_seen: Instant::now(),
            last_seen_ms: seen_ms,
            failure: None,
        };
        self.workers.insert(entry.reg.worker_id.clone(), entry);
    }

    /// Start or stop draining a worker; false for an unknown id.
    pub fn set_draining(&mut self, id: &str, draining: bool) -> bool {
        match self.workers.get_mut(id) {
            Some(w) => {
                w.draining = draining;
                true
            }
            None => false,
        }
    }

    /// Forget a worker.
    pub fn remove(&mut self, id: &str) -> Option<WorkerEntry> {
        self.workers.remove(id)
    }

    /// Record a sign of life; the worker becomes ready. False for an unknown id.
    pub fn touch(&mut self, id: &str, seen_ms: u64) -> bool {
        match self.workers.get_mut(id) {
            Some(w) => {
                w.last_seen = Instant::now();
                w.last_seen_ms = seen_ms;
                w.status = WorkerStatus::Ready;
                w.failure = None;
                true
            }
            None => false,
        }
    }

    /// The worker is alive but says it cannot serve (`reason`): no tasks go to it until it
    /// says `ready` again. True if it was ready or had another reason.
    pub fn fail(&mut self, id: &str, reason: &str, seen_ms: u64) -> bool {
        match self.workers.get_mut(id) {
            Some(w) => {
                w.last_seen = Instant::now();
                w.last_seen_ms = seen_ms;
                let changed =
                    w.status == WorkerStatus::Ready || w.failure.as_deref() != Some(reason);
                w.status = WorkerStatus::Unhealthy;
                w.failure = Some(reason.to_string());
                changed
            }
            None => false,
        }
    }

    /// Stop placing tasks on a worker until it shows life again. True if it was ready.
    pub fn mark_unhealthy(&mut self, id: &str) -> bool {
        match self.workers.get_mut(id) {
            Some(w) if w.status == WorkerStatus::Ready => {
                w.status = WorkerStatus::Unhealthy;
                true
            }
            _ => false,
        }
    }

    /// Mark registered workers silent for longer than `timeout` unhealthy; returns their ids.
    pub fn expire(&mut self, now: Instant, timeout: Duration) -> Vec<String> {
        let mut out = Vec::new();
        for w in self.workers.values_mut() {
            if w.source == WorkerSource::Registered
                && w.status == WorkerStatus::Ready
                && now.duration_since(w.last_seen) > timeout
            {
                w.status = WorkerStatus::Unhealthy;
                out.push(w.reg.worker_id.clone());
            }
        }
        out
    }

    /// One worker.
    pub fn get(&self, id: &str) -> Option<&WorkerEntry> {
        self.workers.get(id)
    }

    /// Every worker, in id order.
    pub fn iter(&self) -> impl Iterator<Item = &WorkerEntry> {
        self.workers.values()
    }

    /// Whether any worker (healthy or not) serves `model`.
    pub fn knows_model(&self, model: &str) -> bool {
        self.workers.values().any(|w| w.serves(model))
    }

    /// Smallest context window among the workers serving `model`.
    pub fn context_length(&self, model: &str) -> Option<u32> {
        self.workers
            .values()
            .filter(|w| w.serves(model))
            .map(|w| w.reg.context_length)
            .min()
    }

    /// Ready workers serving `model` (URL and API token), in id order (for tokenization at
    /// admission).
    pub fn ready_urls(&self, model: &str) -> Vec<(String, Option<String>)> {
        self.workers
            .values()
            .filter(|w| w.status == WorkerStatus::Ready && w.serves(model))
            .map(|w| (w.reg.url.clone(), w.token()))
            .collect()
    }

    /// Per-model summary, grouped by each worker's primary model id.
    pub fn models(&self) -> Vec<ModelCapability> {
        let mut by_model: BTreeMap<String, ModelCapability> = BTreeMap::new();
        for w in self.workers.values() {
            let m = by_model
                .entry(w.reg.model.clone())
                .or_insert_with(|| ModelCapability {
                    model: w.reg.model.clone(),
                    aliases: Vec::new(),
                    context_length: w.reg.context_length,
                    workers_ready: 0,
                    slots_total: 0,
                });
            for a in &w.reg.aliases {
                if !m.aliases.contains(a) {
                    m.aliases.push(a.clone());
                }
            }
            m.context_length = m.context_length.min(w.reg.context_length);
            if w.status == WorkerStatus::Ready {
                m.workers_ready += 1;
                m.slots_total += w.reg.slots_total;
            }
        }
        by_model.into_values().collect()
    }

    /// Whether any ready worker has a free slot.
    pub fn any_free_slot(&self) -> bool {
        self.workers.values().any(WorkerEntry::has_free_slot)
    }

    /// Whether some ready worker serving `model` has a free slot now.
    pub fn can_place(&self, model: &str) -> bool {
        self.workers
            .values()
            .any(|w| w.has_free_slot() && w.serves(model))
    }

    /// Choose a ready worker with a free slot serving `model`, preferring ones not in `avoid`.
    /// Least-loaded placement breaks ties in favour of the worker that last ran a task with the
    /// same `affinity` key (its prompt cache likely holds the shared prefix); load always
    /// comes first. Does not take the slot; call [`Registry::acquire`].
    pub fn pick(&mut self, model: &str, avoid: &[String], affinity: Option<u64>) -> Option<String> {
        self.pick_steered(model, avoid, affinity, &|_| true, &mut |_| None)
    }

    /// [`Registry::pick`] with the policy hook's terms: only workers `allowed` accepts are
    /// candidates, and `score` may rank the candidates (given in id order; one number each,
    /// highest wins, ties go to the built-in order; `None` keeps the built-in order).
    pub fn pick_steered(
        &mut self,
        model: &str,
        avoid: &[String],
        affinity: Option<u64>,
        allowed: &dyn Fn(&WorkerEntry) -> bool,
        score: &mut dyn FnMut(&[&WorkerEntry]) -> Option<Vec<f64>>,
    ) -> Option<String> {
        let affine = affinity.and_then(|k| self.affinity.get(&k)).cloned();
        let free: Vec<&WorkerEntry> = self
            .workers
            .values()
            .filter(|w| w.has_free_slot() && w.serves(model) && allowed(w))
            .collect();
        let fresh: Vec<&WorkerEntry> = free
            .iter()
            .copied()
            .filter(|w| !avoid.contains(&w.reg.worker_id))
            .collect();
        let candidates = if fresh.is_empty() { free } else { fresh };
        // the built-in preference, best first
        let mut order: Vec<usize> = (0..candidates.len()).collect();
        match self.placement {
            // Compare busy/slots as fractions without floats: a.busy * b.slots vs b.busy * a.slots.
            Placement::LeastLoaded => order.sort_by(|&i, &j| {
                let (a, b) = (candidates[i], candidates[j]);
                let la = a.busy as u64 * b.reg.slots_total as u64;
                let lb = b.busy as u64 * a.reg.slots_total as u64;
                let warm = |w: &WorkerEntry| affine.as_deref() != Some(w.reg.worker_id.as_str());
                la.cmp(&lb)
                    .then(warm(a).cmp(&warm(b)))
                    .then(a.busy.cmp(&b.busy))
                    .then(a.reg.worker_id.cmp(&b.reg.worker_id))
            }),
            // the next worker after the last one chosen, in id order, then from the start
            Placement::RoundRobin => {
                let after = self.rr_last.as_deref();
                order.sort_by_key(|&i| {
                    after.is_none_or(|last| candidates[i].reg.worker_id.as_str() <= last)
                });
            }
        }
        let mut best = *order.first()?;
        if let Some(scores) = score(&candidates).filter(|s| s.len() == candidates.len()) {
            for &i in &order {
                if scores[i] > scores[best] {
                    best = i;
                }
            }
        }
        let id = candidates[best].reg.worker_id.clone();
        if self.placement == Placement::RoundRobin {
            self.rr_last = Some(id.clone());
        }
        if let Some(k) = affinity {
            if self.affinity.len() >= MAX_AFFINITY_KEYS {
                self.affinity.clear();
            }
            self.affinity.insert(k, id.clone());
        }
        Some(id)
    }

    /// Take one slot on a worker.
    pub fn acquire(&mut self, id: &str) {
        if let Some(w) = self.workers.get_mut(id) {
            w.busy += 1;
            w.last_busy = Some(Instant::now());
        }
    }

    /// Give a slot back.
    pub fn release(&mut self, id: &str) {
        if let Some(w) = self.workers.get_mut(id) {
            w.busy = w.busy.saturating_sub(1);
            w.last_busy = Some(Instant::now());
        }
    }

    /// (ready, total) worker counts.
    pub fn counts(&self) -> (u32, u32) {
        let ready = self
            .workers
            .values()
            .filter(|w| w.status == WorkerStatus::Ready)
            .count();
        (ready as u32, self.workers.len() as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(id: &str, model: &str, slots: u32) -> WorkerRegistration {
        WorkerRegistration {
            worker_id: id.into(),
            url: format!("http://{id}"),
            model: model.into(),
            aliases: vec![format!("{model}-alias")],
            backend: "cpu".into(),
            slots_total: slots,
            context_length: 2048,
            api_token: None,
        }
    }

    fn registry(p: Placement) -> Registry {
        let mut r = Registry::new(p);
        for (id, slots) in [("w2", 2), ("w1", 2), ("w3", 1)] {
            r.upsert(
                reg(id, "m", slots),
                WorkerSource::Registered,
                WorkerStatus::Ready,
                0,
            );
        }
        r
    }

    fn take(r: &mut Registry, avoid: &[String]) -> Option<String> {
        let id = r.pick("m", avoid, None)?;
        r.acquire(&id);
        Some(id)
    }

    #[test]
    fn affinity_breaks_ties_but_never_beats_load() {
        let mut r = registry(Placement::LeastLoaded);
        let (a, b) = (Some(1), Some(2));
        // key b's first task lands on w2 because w1 is busier
        r.acquire("w1");
        assert_eq!(r.pick("m", &[], b).as_deref(), Some("w2"));
        r.release("w1");
        // all idle: key b goes back to w2 (its cache), anything else to w1 (id order)
        assert_eq!(r.pick("m", &[], b).as_deref(), Some("w2"));
        assert_eq!(r.pick("m", &[], a).as_deref(), Some("w1"));
        assert_eq!(r.pick("m", &[], None).as_deref(), Some("w1"));
        // a busier affine worker loses to an idle one
        r.acquire("w2");
        assert_eq!(r.pick("m", &[], b).as_deref(), Some("w1"));
    }

    #[test]
    fn affinity_keys_follow_session_or_prompt_start() {
        use llorch_wire::tasks::TaskRequest;
        use llorch_wire::ChatMessage;
        let msg = |c: &str| ChatMessage {
            role: "system".into(),
            content: c.into(),
        };
        let chat = |sys: &str, q: &str| TaskRequest {
            model: "m".into(),
            gen: llorch_wire::Generation {
                messages: Some(vec![msg(sys), msg(q)]),
                ..Default::default()
            },
            ..Default::default()
        };
        let k = affinity_key(&chat("Be brief.", "Hi"));
        assert_eq!(k, affinity_key(&chat("Be brief.", "Another question")));
        assert_ne!(k, affinity_key(&chat("Be verbose.", "Hi")));
        let session = |s: &str, sys: &str| TaskRequest {
            session_id: Some(s.into()),
            ..chat(sys, "q")
        };
        assert_eq!(
            affinity_key(&session("s1", "x")),
            affinity_key(&session("s1", "y"))
        );
        assert_ne!(
            affinity_key(&session("s1", "x")),
            affinity_key(&session("s2", "x"))
        );
        let long = "é".repeat(3000); // the 2 KiB cut lands inside a character: no panic
        assert_eq!(
            affinity_key(&chat(&long, "a")),
            affinity_key(&chat(&long, "b"))
        );
    }

    #[test]
    fn least_loaded_with_id_tie_break() {
        let mut r = registry(Placement::LeastLoaded);
        let order: Vec<_> = std::iter::from_fn(|| take(&mut r, &[])).collect();
        assert_eq!(order, ["w1", "w2", "w3", "w1", "w2"]);
        r.release("w2");
        assert_eq!(r.pick("m", &[], None).as_deref(), Some("w2"));
    }

    #[test]
    fn policy_filters_and_scores_with_builtin_ties() {
        let mut r = registry(Placement::LeastLoaded);
        let not_w1 = |w: &WorkerEntry| w.reg.worker_id != "w1";
        let got = r.pick_steered("m", &[], None, &not_w1, &mut |_| None);
        assert_eq!(got.as_deref(), Some("w2"));
        // scores come in id order (w1, w2, w3): the highest wins, even against load
        r.acquire("w3");
        let mut seen = Vec::new();
        let got = r.pick_steered("m", &[], None, &|_| true, &mut |c| {
            seen = c.iter().map(|w| w.reg.worker_id.clone()).collect();
            Some(vec![0.0, 1.0])
        });
        assert_eq!(seen, ["w1", "w2"]); // w3 is full: not a candidate
        assert_eq!(got.as_deref(), Some("w2"));
        // a tie goes to the built-in order (w1: least loaded, then id); a wrong length is ignored
        r.acquire("w2");
        let got = r.pick_steered("m", &[], None, &|_| true, &mut |_| Some(vec![1.0, 1.0]));
        assert_eq!(got.as_deref(), Some("w1"));
        let got = r.pick_steered("m", &[], None, &|_| true, &mut |_| Some(vec![1.0]));
        assert_eq!(got.as_deref(), Some("w1"));
        assert_eq!(
            r.pick_steered("m", &[], None, &|_| false, &mut |_| None),
            None
        );
    }

    #[test]
    fn round_robin_cycles_in_id_order() {
        let mut r = registry(Placement::RoundRobin);
        let first: Vec<_> = (0..4).filter_map(|_| take(&mut r, &[])).collect();
        assert_eq!(first, ["w1", "w2", "w3", "w1"]);
    }

    #[test]
    fn avoid_unhealthy_and_models() {
        let mut r = registry(Placement::LeastLoaded);
        assert_eq!(r.pick("m", &["w1".into()], None).as_deref(), Some("w2"));
        assert_eq!(r.pick("m-alias", &[], None).as_deref(), Some("w1"));
        assert_eq!(r.pick("other", &[], None), None);
        assert!(r.mark_unhealthy("w1"));
        assert_eq!(r.pick("m", &[], None).as_deref(), Some("w2"));
        // Every fresh worker full: fall back to an avoided one rather than wait forever.
        r.mark_unhealthy("w2");
        r.mark_unhealthy("w3");
        assert_eq!(r.pick("m", &[], None), None);
        r.touch("w3", 1);
        assert_eq!(r.pick("m", &["w3".into()], None).as_deref(), Some("w3"));
        assert_eq!(r.counts(), (1, 3));
    }

    #[test]
    fn heartbeat_expiry_only_for_registered_workers() {
        let mut r = registry(Placement::LeastLoaded);
        r.upsert(
            reg("s1", "m", 1),
            WorkerSource::Static,
            WorkerStatus::Ready,
            0,
        );
        let later = Instant::now() + Duration::from_secs(60);
        let mut gone = r.expire(later, Duration::from_secs(15));
        gone.sort();
        assert_eq!(gone, ["w1", "w2", "w3"]);
        assert_eq!(r.counts(), (1, 4));
        let caps = r.models();
        assert_eq!(caps.len(), 1);
        assert_eq!((caps[0].workers_ready, caps[0].slots_total), (1, 1));
    }
}
