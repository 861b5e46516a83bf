//! The engine thread: owns the model, runs queued jobs one at a time, and lets other threads
//! submit, cancel and observe without ever blocking on inference.
//!
//! Admission is counted, not left to a channel's capacity: a job holds its slot from `submit`
//! until its terminal event is handed to the sink, and the slot is released *before* that event
//! goes out, so a client that sends its next request on `end` is never told the worker is busy.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex};

use llorch_wire::WorkerEvent;

use crate::generate::{run_job, EventSink, Job};
use crate::load::LoadedModel;

/// Why a job was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("worker queue is full ({0} jobs waiting)")]
    Busy(u32),
    #[error("a job with id `{0}` is already running or queued")]
    DuplicateJobId(String),
    #[error("engine thread has stopped")]
    Stopped,
}

struct Queued {
    job: Job,
    sink: Box<dyn EventSink>,
}

/// Counters shared between the engine thread and its observers.
#[derive(Default)]
pub struct EngineStatus {
    /// Jobs generating now (0 or 1).
    pub active: AtomicU32,
    /// Jobs admitted and waiting.
    pub queued: AtomicU32,
    /// Admitted jobs (running + waiting) with their cancel flags.
    jobs: Mutex<HashMap<String, Arc<AtomicBool>>>,
}

impl EngineStatus {
    fn release(&self, job_id: &str) {
        self.jobs.lock().unwrap().remove(job_id);
        self.active.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Forwards a job's events and frees its slot just before the terminal one.
struct SlotSink {
    inner: Box<dyn EventSink>,
    status: Arc<EngineStatus>,
    job_id: String,
    released: bool,
}

impl EventSink for SlotSink {
    fn send(&mut self, event: WorkerEvent) -> bool {
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

/// Handle to the engine thread; cheap to clone.
#[derive(Clone)]
pub struct Engine {
    tx: Sender<Queued>,
    status: Arc<EngineStatus>,
    model: Arc<LoadedModel>,
    queue_capacity: u32,
}

impl Engine {
    /// Start the engine thread for `model`, accepting up to `queue_capacity` waiting jobs
    /// besides the running one.
    pub fn start(model: Arc<LoadedModel>, queue_capacity: u32) -> Engine {
        let (tx, rx) = channel::<Queued>();
        let status = Arc::new(EngineStatus::default());
        let st = status.clone();
        let m = model.clone();
        std::thread::Builder::new()
            .name("llorch-engine".into())
            .spawn(move || {
                for Queued { job, sink } in rx {
                    st.queued.fetch_sub(1, Ordering::SeqCst);
                    st.active.fetch_add(1, Ordering::SeqCst);
                    let mut sink = SlotSink {
                        inner: sink,
                        status: st.clone(),
                        job_id: job.job_id.clone(),
                        released: false,
                    };
                    run_job(&m, job, &mut sink);
                }
            })
            .expect("spawn engine thread");
        Engine {
            tx,
            status,
            model,
            queue_capacity,
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
        self.queue_capacity + 1
    }

    /// Queue a job; its events go to `sink`. Never blocks.
    pub fn submit(&self, job: Job, sink: Box<dyn EventSink>) -> Result<(), SubmitError> {
        {
            let mut jobs = self.status.jobs.lock().unwrap();
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
            self.status.jobs.lock().unwrap().remove(&id);
            return Err(SubmitError::Stopped);
        }
        Ok(())
    }

    /// Ask a running or queued job to stop; false when the id is unknown. The job ends with
    /// `stop_reason: cancelled` at its next decode step.
    pub fn cancel(&self, job_id: &str) -> bool {
        match self.status.jobs.lock().unwrap().get(job_id) {
            Some(flag) => {
                flag.store(true, Ordering::SeqCst);
                true
            }
            None => false,
        }
    }
}
