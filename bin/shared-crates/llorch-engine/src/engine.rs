//! The engine thread: owns the model, runs up to `parallel` jobs at once with continuous
//! batching, and lets other threads submit, cancel and observe without ever blocking on
//! inference.
//!
//! Each round the scheduler admits waiting jobs into free slots, lets every decoding job sample
//! and stream its next token, then runs ONE forward pass
//! ([`Transformer::forward_segments`](crate::model::Transformer::forward_segments)) over all
//! those tokens and, when a job is prefilling, the next 128-token chunk of its prompt: weights
//! are read once per round, so throughput grows with concurrency and a long prompt arriving
//! costs the running jobs one chunk per token at most, while each job's output stays what it
//! would be alone (same sampler, same seed; every row's arithmetic is independent of the others).
//! With nothing decoding, a prompt is prefilled alone in 512-token chunks.
//!
//! Admission is counted, not left to a channel's capacity: a job holds its slot from `submit`
//! until its terminal event is handed to the sink, and the slot is released *before* that event
//! goes out, so a client that sends its next request on `end` is never told the worker is busy.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender, TryRecvError};
use std::sync::{Arc, Mutex};

use rayon::prelude::*;

use crate::generate::{EventSink, Job, Running};
use crate::load::LoadedModel;
use crate::model::{Logits, Segment};
use crate::prompt_cache::PromptCache;
use crate::schedule::{self, Phase, Round};

/// Why a job was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("worker queue is full ({0} jobs waiting)")]
    Busy(u32),
    #[error("a job with id `{0}` is already running or queued")]
    DuplicateJobId(String),
    #[error("engine thread has stopped")]
    Stopped,
    /// The engine thread died (a panic); nothing can run until the worker restarts.
    #[error("engine failed: {0}")]
    Failed(String),
}

struct Queued {
    job: Job,
    sink: Box<dyn EventSink>,
}

/// Counters shared between the engine thread and its observers.
#[derive(Default)]
pub struct EngineStatus {
    /// Jobs generating now (at most `parallel`).
    pub active: AtomicU32,
    /// Jobs admitted and waiting.
    pub queued: AtomicU32,
    /// Most jobs one decode step has served so far.
    pub peak_batch: AtomicU32,
    /// Admitted jobs (running + waiting) with their cancel flags.
    jobs: Mutex<HashMap<String, Arc<AtomicBool>>>,
    /// Why the engine thread died, once it has.
    failure: Mutex<Option<String>>,
}

impl EngineStatus {
    fn release(&self, job_id: &str) {
        lock(&self.jobs).remove(job_id);
        self.active.fetch_sub(1, Ordering::SeqCst);
    }

    /// Why the engine thread died (a panic, or it stopped on its own); `None` while it runs.
    pub fn failure(&self) -> Option<String> {
        lock(&self.failure).clone()
    }
}

/// Lock, recovering the data from a poisoned mutex: every guarded value here stays consistent
/// across a panic (plain maps and options, changed in one statement).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The text of a panic payload.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// Forwards a job's events and frees its slot just before the terminal one.
struct SlotSink {
    inner: Box<dyn EventSink>,
    status: Arc<EngineStatus>,
    job_id: String,
    released: bool,
}

impl EventSink for SlotSink {
    fn send(&mut self, event: crate::events::EngineEvent) -> bool {
        if event.is_terminal() && !self.released {
            self.released = true;
            self.status.release(&self.job_id);
        }
        self.inner.send(event)
    }
}

impl Drop for SlotSink {
    fn drop(&mut self) {
        if !self.released {
            self.status.release(&self.job_id);
        }
    }
}

/// How the engine schedules.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Jobs that may wait for a free slot.
    pub queue_capacity: u32,
    /// Jobs that generate at once.
    pub parallel: u32,
    /// Memory for finished sequences' keys and values kept for prefix reuse (0: none).
    pub prompt_cache_bytes: usize,
    /// FAULT INJECTION for tests only: the engine thread panics when it admits job number
    /// `n + 1` (after `n` jobs were admitted). `None` in production.
    pub fault_panic_after_jobs: Option<u64>,
    /// FAULT INJECTION for tests only: a job whose id contains this text panics in its decode
    /// step. The engine survives: that job alone ends with `INFERENCE_FAILED`. `None` in
    /// production.
    pub fault_job_panic: Option<String>,
    /// FAULT INJECTION for tests only: a job whose id contains this text fails its decode step
    /// with the error a GPU allocation failure gives (`CUDA_ERROR_OUT_OF_MEMORY`); that job
    /// ends with `VRAM_OOM`, the engine goes on. `None` in production.
    pub fault_job_oom: Option<String>,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            queue_capacity: 16,
            parallel: 4,
            prompt_cache_bytes: 512 << 20,
            fault_panic_after_jobs: None,
            fault_job_panic: None,
            fault_job_oom: None,
        }
    }
}

/// Handle to the engine thread; cheap to clone.
#[derive(Clone)]
pub struct Engine {
    tx: Sender<Queued>,
    status: Arc<EngineStatus>,
    model: Arc<LoadedModel>,
    queue_capacity: u32,
    parallel: u32,
}

impl Engine {
    /// Start the engine thread for `model`: up to `parallel` jobs generate at once (at least
    /// one), and up to `queue_capacity` more wait for a free slot.
    pub fn start(model: Arc<LoadedModel>, queue_capacity: u32, parallel: u32) -> Engine {
        Self::with_options(
            model,
            EngineOptions {
                queue_capacity,
                parallel,
                ..EngineOptions::default()
            },
        )
    }

    /// Start the engine thread for `model` with every option.
    pub fn with_options(model: Arc<LoadedModel>, opts: EngineOptions) -> Engine {
        let (tx, rx) = channel::<Queued>();
        let status = Arc::new(EngineStatus::default());
        let parallel = opts.parallel.max(1);
        let st = status.clone();
        let m = model.clone();
        let fault = Faults {
            panic_after_jobs: opts.fault_panic_after_jobs,
            job_panic: opts.fault_job_panic.clone(),
            job_oom: opts.fault_job_oom.clone(),
        };
        std::thread::Builder::new()
            .name("llorch-engine".into())
            .spawn(move || {
                let mut cache = PromptCache::new(opts.prompt_cache_bytes);
                let run = std::panic::AssertUnwindSafe(|| {
                    schedule(&m, &rx, &st, parallel as usize, &mut cache, &fault)
                });
                // Unwinding dropped every job's sink: their streams end without a terminal
                // event, and the receiver is gone, so new submissions fail at once.
                let reason = match std::panic::catch_unwind(run) {
                    Ok(()) => return,
                    Err(p) => format!("engine thread panicked: {}", panic_message(&*p)),
                };
                tracing::error!(%reason, "engine failed; this worker must be restarted");
                *lock(&st.failure) = Some(reason);
                lock(&st.jobs).clear();
                st.active.store(0, Ordering::SeqCst);
                st.queued.store(0, Ordering::SeqCst);
            })
            .expect("spawn engine thread");
        Engine {
            tx,
            status,
            model,
            queue_capacity: opts.queue_capacity,
            parallel,
        }
    }

    /// The loaded model (tokenizer, chat template, info) for use outside the engine thread.
    pub fn model(&self) -> &Arc<LoadedModel> {
        &self.model
    }

    /// Jobs running and waiting.
    pub fn status(&self) -> &EngineStatus {
        &self.status
    }

    /// Running + queued jobs the engine holds at most.
    pub fn slots_total(&self) -> u32 {
        self.queue_capacity + self.parallel
    }

    /// Jobs that generate at once.
    pub fn parallel(&self) -> u32 {
        self.parallel
    }

    /// Queue a job; its events go to `sink`. Never blocks.
    pub fn submit(&self, job: Job, sink: Box<dyn EventSink>) -> Result<(), SubmitError> {
        if let Some(reason) = self.status.failure() {
            return Err(SubmitError::Failed(reason));
        }
        {
            let mut jobs = lock(&self.status.jobs);
            if jobs.contains_key(&job.job_id) {
                return Err(SubmitError::DuplicateJobId(job.job_id));
            }
            if jobs.len() as u32 >= self.slots_total() {
                return Err(SubmitError::Busy(self.status.queued.load(Ordering::SeqCst)));
            }
            jobs.insert(job.job_id.clone(), job.cancel.clone());
            self.status.queued.fetch_add(1, Ordering::SeqCst);
        }
        let id = job.job_id.clone();
        if self.tx.send(Queued { job, sink }).is_err() {
            self.status.queued.fetch_sub(1, Ordering::SeqCst);
            lock(&self.status.jobs).remove(&id);
            return Err(match self.status.failure() {
                Some(reason) => SubmitError::Failed(reason),
                None => SubmitError::Stopped,
            });
        }
        Ok(())
    }

    /// Ask a running or queued job to stop; false when the id is unknown. The job ends with
    /// `stop_reason: cancelled` at its next decode step.
    pub fn cancel(&self, job_id: &str) -> bool {
        match lock(&self.status.jobs).get(job_id) {
            Some(flag) => {
                flag.store(true, Ordering::SeqCst);
                true
            }
            None => false,
        }
    }
}

/// The engine thread's loop: admit, one prefill chunk, sample, one batched decode step; until
/// the engine handle is dropped and every running job has ended.
/// FAULT INJECTION settings (tests only), see [`EngineOptions`].
struct Faults {
    panic_after_jobs: Option<u64>,
    job_panic: Option<String>,
    job_oom: Option<String>,
}

/// Run one job's part of a round; a panic there becomes an error for that job alone (its
/// state is dropped, never reused), so one bad job cannot take the engine and every other job
/// down. Panics outside these parts still end the engine thread, reported by `/health`.
fn isolated<T>(f: impl FnOnce() -> T) -> Result<T, anyhow::Error> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .map_err(|p| anyhow::anyhow!("job panicked: {}", panic_message(&*p)))
}

fn schedule(
    lm: &LoadedModel,
    rx: &Receiver<Queued>,
    st: &Arc<EngineStatus>,
    parallel: usize,
    prompt_cache: &mut PromptCache,
    faults: &Faults,
) {
    let fault_panic_after_jobs = faults.panic_after_jobs;
    let mut admitted: u64 = 0;
    let mut running: Vec<Running<'_>> = Vec::with_capacity(parallel);
    let mut open = true;
    loop {
        // Admit: block only when nothing runs.
        while open && schedule::admit(running.len(), parallel) > 0 {
            let next = if running.is_empty() {
                rx.recv().map_err(|_| TryRecvError::Disconnected)
            } else {
                rx.try_recv()
            };
            let Queued { job, sink } = match next {
                Ok(q) => q,
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
            };
            st.queued.fetch_sub(1, Ordering::SeqCst);
            st.active.fetch_add(1, Ordering::SeqCst);
            if fault_panic_after_jobs.is_some_and(|n| admitted >= n) {
                panic!("fault injection: engine panic after {admitted} jobs");
            }
            admitted += 1;
            let sink = SlotSink {
                inner: sink,
                status: st.clone(),
                job_id: job.job_id.clone(),
                released: false,
            };
            let reuse = prompt_cache.lookup(&job.prompt_ids);
            if let Some(run) = Running::admit(lm, job, Box::new(sink), reuse) {
                running.push(run);
            }
        }
        match schedule::plan(&phases(&running)) {
            Round::Idle if open => continue,
            Round::Idle => return,
            // Nothing decodes: the oldest new job prefills alone, in big chunks.
            Round::Prefill { job, chunk } => {
                match isolated(|| running[job].prefill_step(chunk)) {
                    Ok(true) => {}
                    Ok(false) => {
                        running.remove(job);
                    }
                    Err(e) => {
                        running[job].fail(&e);
                        running.remove(job);
                    }
                }
                continue;
            }
            // Otherwise the oldest new job's next (short) chunk joins the decode step's forward
            // pass below (`round`).
            Round::Decode { .. } => {}
        }
        // Constrained jobs' token masks: computed side by side when several jobs need one, so
        // one job's grammar work does not add up with the others' (errors surface in `step`).
        let mut guided: Vec<&mut Running<'_>> = running
            .iter_mut()
            .filter(|r| !r.is_prefilling() && r.is_constrained())
            .collect();
        if guided.len() > 1 {
            // (a panic here is caught again by the job's own `step` below)
            guided.par_iter_mut().for_each(|r| {
                let _ = isolated(|| r.apply_mask());
            });
        }
        // Every decoding job samples and streams its next token; finished ones leave, their
        // keys and values kept for prompts that start the same way.
        let mut feed = Vec::with_capacity(running.len());
        let mut i = 0;
        while i < running.len() {
            if running[i].is_prefilling() {
                i += 1;
                continue;
            }
            let run = &mut running[i];
            let hit = |f: &Option<String>| f.as_deref().is_some_and(|f| run.job_id().contains(f));
            let (fault, oom) = (hit(&faults.job_panic), hit(&faults.job_oom));
            match isolated(|| {
                if fault {
                    panic!("fault injection: job panic");
                }
                run.step()
            })
            .and_then(|r| match oom {
                true => Err(anyhow::anyhow!(
                    "fault injection: DriverError(CUDA_ERROR_OUT_OF_MEMORY, \"out of memory\")"
                )),
                false => Ok(r),
            }) {
                Ok(Some(id)) => {
                    feed.push(id);
                    i += 1;
                }
                Ok(None) => prompt_cache.insert(running.remove(i).into_sequence()),
                Err(e) => {
                    running[i].fail(&e);
                    running.remove(i);
                }
            }
        }
        if feed.is_empty() {
            continue;
        }
        st.peak_batch
            .fetch_max(feed.len() as u32, Ordering::Relaxed);
        round(lm, &mut running, &feed);
    }
}

/// Each running job's phase, for the scheduling policy.
fn phases(running: &[Running<'_>]) -> Vec<Phase> {
    running
        .iter()
        .map(|r| match r.is_prefilling() {
            true => Phase::Prefilling,
            false => Phase::Decoding,
        })
        .collect()
}

/// One forward pass for the round: every decoding job's next token (`feed`, in their order in
/// `running`) and, when a job is prefilling, its next chunk. A failure (or panic) of the pass
/// fails the jobs in it (their caches may be half written); the engine goes on.
fn round(lm: &LoadedModel, running: &mut Vec<Running<'_>>, feed: &[u32]) {
    let pre = match schedule::plan(&phases(running)) {
        Round::Decode { prefill, .. } => prefill,
        _ => None,
    };
    let chunk = match pre {
        Some((i, max)) => match running[i].next_chunk(max) {
            Some(c) => Some((i, c)),
            None => {
                running.remove(i); // cancelled while waiting: its terminal event is sent
                return round(lm, running, feed);
            }
        },
        None => None,
    };
    let mut prefilling = None;
    let mut decoding = Vec::with_capacity(feed.len());
    for (j, r) in running.iter_mut().enumerate() {
        if chunk.as_ref().is_some_and(|(i, _)| *i == j) {
            prefilling = Some(r);
        } else if !r.is_prefilling() {
            decoding.push(r);
        }
    }
    let step = isolated(|| {
        let mut segs = Vec::with_capacity(decoding.len() + 1);
        if let (Some(r), Some((_, (ids, mode)))) = (prefilling.as_mut(), chunk.as_ref()) {
            segs.push(Segment {
                ids,
                cache: &mut r.seq.cache,
                logits: *mode,
            });
        }
        for (r, id) in decoding.iter_mut().zip(feed) {
            segs.push(Segment {
                ids: std::slice::from_ref(id),
                cache: &mut r.seq.cache,
                logits: Logits::Last,
            });
        }
        lm.model.forward_segments(&mut segs)
    });
    let rows = step.and_then(|s| s).and_then(|out| {
        out.iter()
            .map(|t| Ok(t.to_vec2::<f32>()?))
            .collect::<anyhow::Result<Vec<_>>>()
    });
    let mut ended_prefill = false;
    match rows {
        Ok(mut out) => {
            if let (Some(r), Some((_, (ids, _)))) = (prefilling, chunk.as_ref()) {
                ended_prefill = !r.absorb_chunk(ids.len(), out.remove(0));
            }
            for (run, mut rows) in decoding.into_iter().zip(out) {
                run.set_logits(rows.pop().unwrap_or_default());
            }
        }
        Err(e) => {
            if let Some(r) = prefilling {
                r.fail(&e); // (no longer prefilling: removed below with the decoding jobs)
            }
            for run in decoding {
                run.fail(&e);
            }
            running.retain(|r| r.is_prefilling());
            return;
        }
    }
    if let (true, Some((i, _))) = (ended_prefill, chunk) {
        running.remove(i);
    }
}
