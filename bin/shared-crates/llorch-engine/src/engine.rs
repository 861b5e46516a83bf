//! The engine thread: owns the model, runs queued jobs one at a time, and lets other threads
//! submit, cancel and observe without ever blocking on inference.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

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
    pub active: AtomicU32,
    pub queued: AtomicU32,
    jobs: Mutex<HashMap<String, Arc<AtomicBool>>>,
}

/// Handle to the engine thread; cheap to clone.
#[derive(Clone)]
pub struct Engine {
    tx: SyncSender<Queued>,
    status: Arc<EngineStatus>,
    model: Arc<LoadedModel>,
    queue_capacity: u32,
}

impl Engine {
    /// Start the engine thread for `model`, accepting up to `queue_capacity` waiting jobs
    /// besides the running one.
    pub fn start(model: Arc<LoadedModel>, queue_capacity: u32) -> Engine {
        let (tx, rx) = sync_channel::<Queued>(queue_capacity as usize);
        let status = Arc::new(EngineStatus::default());
        let st = status.clone();
        let m = model.clone();
        std::thread::Builder::new()
            .name("llorch-engine".into())
            .spawn(move || {
                for Queued { job, mut sink } in rx {
                    st.queued.fetch_sub(1, Ordering::SeqCst);
                    st.active.fetch_add(1, Ordering::SeqCst);
                    let id = job.job_id.clone();
                    run_job(&m, job, sink.as_mut());
                    st.jobs.lock().unwrap().remove(&id);
                    st.active.fetch_sub(1, Ordering::SeqCst);
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
            jobs.insert(job.job_id.clone(), job.cancel.clone());
        }
        let id = job.job_id.clone();
        self.status.queued.fetch_add(1, Ordering::SeqCst);
        match self.tx.try_send(Queued { job, sink }) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.status.queued.fetch_sub(1, Ordering::SeqCst);
                self.status.jobs.lock().unwrap().remove(&id);
                match e {
                    TrySendError::Full(_) => {
                        Err(SubmitError::Busy(self.status.queued.load(Ordering::SeqCst)))
                    }
                    TrySendError::Disconnected(_) => Err(SubmitError::Stopped),
                }
            }
        }
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
