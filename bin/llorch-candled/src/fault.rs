//! FAULT INJECTION (tests only): a [`Backend`] that misbehaves on purpose. The `fault-worker`
//! binary serves it behind the worker's real routes ([`crate::app`]), so the orchestrator's
//! failure tests (retries, lost and stalled workers, busy answers) exercise the real worker
//! HTTP code; the worker's own route tests use it as a scripted backend. It generates no text:
//! token `i` is `tok{i} ` with id `i`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use llorch_wire::{
    DetokenizeRequest, DetokenizeResponse, ErrorCode, ErrorEnvelope, ExecuteRequest, StopReason,
    TokenizeRequest, TokenizeResponse, WorkerEvent,
};

use crate::backend::{Backend, BackendInfo, EventSink, Load};

/// Exit status of a fault worker that dies on purpose.
pub const DIE_EXIT_CODE: i32 = 3;

/// The fault to inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FaultMode {
    /// The process exits as soon as an `/execute` request arrives.
    DieBeforeFirstToken,
    /// Sends `started` and `tokens` tokens, then the process exits.
    DieMidStream,
    /// Sends `started` and `tokens` tokens, then goes silent with the connection open.
    Stall,
    /// Streams up to `max_tokens` tokens, one per `token_delay`, then ends normally.
    Slow,
    /// Answers every `/execute` with 503 `WORKER_BUSY`.
    Busy,
}

/// What a [`FaultBackend`] does with each job.
#[derive(Debug, Clone, Copy)]
pub struct FaultScript {
    pub mode: FaultMode,
    /// Tokens sent before the fault (die-mid-stream, stall).
    pub tokens: u32,
    /// Pause before each token.
    pub token_delay: Duration,
}

type Jobs = Arc<Mutex<HashMap<String, Arc<AtomicBool>>>>;

/// A backend that plays a [`FaultScript`]; see the module docs.
pub struct FaultBackend {
    script: FaultScript,
    info: BackendInfo,
    /// Running jobs and their cancel flags.
    jobs: Jobs,
    runtime: tokio::runtime::Handle,
}

impl FaultBackend {
    /// A backend serving a pretend `model` with this context and number of slots. Must be
    /// called inside a tokio runtime: jobs play on it.
    pub fn new(script: FaultScript, model: &str, context_length: u32, slots: u32) -> Self {
        tracing::warn!(mode = ?script.mode, "FAULT INJECTION: this worker misbehaves on purpose");
        FaultBackend {
            script,
            info: BackendInfo {
                name: model.into(),
                path: String::new(),
                format: "none".into(),
                architecture: "fault".into(),
                quantization: "none".into(),
                runtime_quantization: "none".into(),
                context_length,
                vocab_size: 0,
                parallel: slots,
                slots_total: slots,
                simd: Vec::new(),
                chat_template: None,
            },
            jobs: Jobs::default(),
            runtime: tokio::runtime::Handle::current(),
        }
    }
}

fn lock(jobs: &Jobs) -> std::sync::MutexGuard<'_, HashMap<String, Arc<AtomicBool>>> {
    jobs.lock().unwrap_or_else(|e| e.into_inner())
}

fn die(when: &str) -> ! {
    tracing::warn!("FAULT INJECTION: exiting {when}");
    std::process::exit(DIE_EXIT_CODE)
}

/// One job's scripted events.
struct Play {
    script: FaultScript,
    model: String,
    job_id: String,
    /// Tokens before the fault or the end.
    n: u32,
    cancel: Arc<AtomicBool>,
    jobs: Jobs,
}

impl Play {
    fn end(&self, stop_reason: StopReason, tokens_out: u32) -> WorkerEvent {
        WorkerEvent::End {
            job_id: self.job_id.clone(),
            stop_reason,
            stop_sequence_matched: None,
            tokens_in: 1,
            tokens_out,
            seed: 0,
            queue_time_ms: 0.0,
            prefill_time_ms: 0.0,
            decode_time_ms: 0.0,
            prefill_tokens_per_sec: 0.0,
            decode_tokens_per_sec: 0.0,
        }
    }

    /// Forget the job (before its terminal event, as the engine frees a slot).
    fn release(&self) {
        let mut jobs = lock(&self.jobs);
        if jobs
            .get(&self.job_id)
            .is_some_and(|c| Arc::ptr_eq(c, &self.cancel))
        {
            jobs.remove(&self.job_id);
        }
    }

    async fn run(self, mut events: EventSink) {
        let delay = self.script.token_delay;
        let started = WorkerEvent::Started {
            job_id: self.job_id.clone(),
            model: self.model.clone(),
            started_at: String::new(),
            seed: 0,
            tokens_in: 1,
            tokens_cached: 0,
            queue_time_ms: 0.0,
            prompt_logprobs: None,
        };
        if !events(started) {
            return self.release();
        }
        for i in 0..self.n {
            tokio::time::sleep(delay).await;
            if self.cancel.load(Ordering::SeqCst) {
                self.release();
                events(self.end(StopReason::Cancelled, i));
                return;
            }
            let token = WorkerEvent::Token {
                i,
                id: i,
                t: format!("tok{i} "),
                logprob: None,
            };
            if !events(token) {
                return self.release();
            }
        }
        match self.script.mode {
            FaultMode::DieMidStream => {
                tokio::time::sleep(delay).await;
                die("mid-stream")
            }
            FaultMode::Stall => {
                // silent, connection open, until the client goes (the route then cancels)
                while !self.cancel.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                self.release();
            }
            _ => {
                self.release();
                events(self.end(StopReason::MaxTokens, self.n));
            }
        }
    }
}

impl Backend for FaultBackend {
    fn info(&self) -> &BackendInfo {
        &self.info
    }

    fn load(&self) -> Load {
        Load {
            active: lock(&self.jobs).len() as u32,
            ..Load::default()
        }
    }

    fn submit(&self, req: ExecuteRequest, events: EventSink) -> Result<String, ErrorEnvelope> {
        let n = match self.script.mode {
            FaultMode::DieBeforeFirstToken => die("before the first token"),
            FaultMode::Busy => {
                let mut env = ErrorEnvelope::new(
                    ErrorCode::WorkerBusy,
                    "fault injection: this worker is always busy",
                );
                env.error.retry_after_ms = Some(1000);
                return Err(env);
            }
            FaultMode::DieMidStream | FaultMode::Stall => self.script.tokens,
            FaultMode::Slow => req.max_tokens_or_default(),
        };
        let job_id = req
            .job_id
            .unwrap_or_else(|| format!("job-{}", uuid::Uuid::new_v4()));
        let cancel = Arc::new(AtomicBool::new(false));
        lock(&self.jobs).insert(job_id.clone(), cancel.clone());
        let play = Play {
            script: self.script,
            model: self.info.name.clone(),
            job_id: job_id.clone(),
            n,
            cancel,
            jobs: self.jobs.clone(),
        };
        self.runtime.spawn(play.run(events));
        Ok(job_id)
    }

    fn cancel(&self, job_id: &str) -> bool {
        match lock(&self.jobs).get(job_id) {
            Some(flag) => {
                flag.store(true, Ordering::SeqCst);
                true
            }
            None => false,
        }
    }

    fn tokenize(&self, _req: TokenizeRequest) -> Result<TokenizeResponse, ErrorEnvelope> {
        Err(no_tokenizer())
    }

    fn detokenize(&self, _req: DetokenizeRequest) -> Result<DetokenizeResponse, ErrorEnvelope> {
        Err(no_tokenizer())
    }
}

/// The fault backend has no tokenizer: the orchestrator then leaves the context check to the
/// worker, as with a worker it cannot reach.
fn no_tokenizer() -> ErrorEnvelope {
    ErrorEnvelope::new(
        ErrorCode::NotFound,
        "fault injection: this worker has no tokenizer",
    )
}
