//! The candle engine as a [`Backend`]: opening the compute device, and the adapter from the
//! worker's routes to [`llorch_engine::Engine`] (job preparation, admission errors as
//! envelopes, tokenization).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use llorch_engine::{Engine, EngineEvent, EngineOptions, Failure, LoadedModel, SubmitError};
use llorch_wire::{
    ChatTemplateReport, DetokenizeRequest, DetokenizeResponse, ErrorCode, ErrorEnvelope,
    ExecuteRequest, FieldError, TokenizeRequest, TokenizeResponse, WorkerEvent,
};

use crate::backend::{Backend, BackendInfo, EventSink, Load};
use crate::cli::Compute;

/// Open the compute device; cuda and metal need a build with that cargo feature.
pub fn device(compute: Compute, index: usize) -> Result<candle_core::Device> {
    match compute {
        Compute::Cpu => Ok(candle_core::Device::Cpu),
        Compute::Cuda => {
            if !candle_core::utils::cuda_is_available() {
                bail!("--backend cuda: this llorch-candled was built without the `cuda` feature (rebuild with `--features cuda`)");
            }
            candle_core::Device::new_cuda(index)
                .with_context(|| format!("cannot open CUDA device {index}"))
        }
        Compute::Metal => {
            if !candle_core::utils::metal_is_available() {
                bail!("--backend metal: this llorch-candled was built without the `metal` feature (rebuild with `--features metal`)");
            }
            candle_core::Device::new_metal(index)
                .with_context(|| format!("cannot open Metal device {index}"))
        }
    }
}

/// FAULT INJECTION (tests only): `LLORCH_FAULT_ENGINE_PANIC_AFTER_JOBS=N` makes the engine
/// thread panic when it admits job N+1, to test that a dead engine is reported.
const FAULT_ENGINE_PANIC_ENV: &str = "LLORCH_FAULT_ENGINE_PANIC_AFTER_JOBS";
/// FAULT INJECTION (tests only): `LLORCH_FAULT_JOB_PANIC=TEXT` makes a job whose id contains
/// TEXT panic in its decode step, to test that one job's panic fails that job only.
const FAULT_JOB_PANIC_ENV: &str = "LLORCH_FAULT_JOB_PANIC";
/// FAULT INJECTION (tests only): `LLORCH_FAULT_JOB_OOM=TEXT` makes a job whose id contains TEXT
/// fail its decode step with a device out-of-memory error, to test `VRAM_OOM`.
const FAULT_JOB_OOM_ENV: &str = "LLORCH_FAULT_JOB_OOM";

/// Engine options from the worker's settings and the fault-injection variables.
pub fn engine_options(max_queue: u32, parallel: u32, prompt_cache_mb: usize) -> EngineOptions {
    EngineOptions {
        queue_capacity: max_queue,
        parallel,
        prompt_cache_bytes: prompt_cache_mb << 20,
        fault_panic_after_jobs: std::env::var(FAULT_ENGINE_PANIC_ENV)
            .ok()
            .and_then(|v| v.parse().ok())
            .inspect(|n| tracing::warn!("FAULT INJECTION: {FAULT_ENGINE_PANIC_ENV}={n}")),
        fault_job_panic: std::env::var(FAULT_JOB_PANIC_ENV)
            .ok()
            .inspect(|t| tracing::warn!("FAULT INJECTION: {FAULT_JOB_PANIC_ENV}={t}")),
        fault_job_oom: std::env::var(FAULT_JOB_OOM_ENV)
            .ok()
            .inspect(|t| tracing::warn!("FAULT INJECTION: {FAULT_JOB_OOM_ENV}={t}")),
    }
}

/// The candle engine behind the worker's routes.
pub struct CandleBackend {
    engine: Engine,
    info: BackendInfo,
}

impl CandleBackend {
    /// Start the engine thread over a loaded model.
    pub fn new(lm: LoadedModel, opts: EngineOptions) -> CandleBackend {
        let engine = Engine::with_options(Arc::new(lm), opts);
        let lm = engine.model();
        let m = &lm.info;
        let info = BackendInfo {
            name: m.name.clone(),
            path: m.path.display().to_string(),
            format: m.format.into(),
            architecture: m.architecture.into(),
            quantization: m.quantization.clone(),
            runtime_quantization: m.runtime_quantization.clone(),
            context_length: m.context_length as u32,
            vocab_size: m.vocab_size as u32,
            parallel: engine.parallel(),
            slots_total: engine.slots_total(),
            simd: llorch_engine::simd_features(),
            chat_template: Some(ChatTemplateReport {
                name: m.chat_template.name.clone(),
                reason: m.chat_template.reason.clone(),
                turn_stops: lm.chat.turn_stops().to_vec(),
                end_of_turn_token: m.chat_template.probe.as_ref().map(|p| p.token.clone()),
                end_of_turn_logprob: m.chat_template.probe.as_ref().map(|p| p.logprob),
            }),
        };
        CandleBackend { engine, info }
    }
}

/// The envelope for a job the engine did not accept.
fn rejection(e: SubmitError) -> ErrorEnvelope {
    match e {
        SubmitError::Busy(q) => {
            let mut env = ErrorEnvelope::new(
                ErrorCode::WorkerBusy,
                format!("worker is busy: {q} jobs already waiting"),
            );
            env.error.retry_after_ms = Some(1000);
            env
        }
        SubmitError::DuplicateJobId(id) => ErrorEnvelope::invalid(vec![FieldError::new(
            "job_id",
            "unique",
            format!("job_id `{id}` is already running or queued on this worker"),
        )]),
        SubmitError::Stopped => {
            ErrorEnvelope::new(ErrorCode::ShuttingDown, "worker is shutting down")
        }
        SubmitError::Failed(reason) => ErrorEnvelope::new(
            ErrorCode::EngineFailed,
            format!("this worker's engine has failed and it must be restarted: {reason}"),
        ),
    }
}

impl Backend for CandleBackend {
    fn info(&self) -> &BackendInfo {
        &self.info
    }

    fn load(&self) -> Load {
        let s = self.engine.status();
        Load {
            active: s.active.load(Ordering::SeqCst),
            queued: s.queued.load(Ordering::SeqCst),
            peak_batch: s.peak_batch.load(Ordering::SeqCst),
            failure: s.failure(),
        }
    }

    fn submit(&self, req: ExecuteRequest, events: EventSink) -> Result<String, ErrorEnvelope> {
        let job = crate::prepare::prepare(self.engine.model(), req)?;
        let job_id = job.job_id.clone();
        let mut events = events;
        self.engine
            .submit(job, Box::new(move |ev| events(to_wire(ev))))
            .map_err(rejection)?;
        Ok(job_id)
    }

    fn cancel(&self, job_id: &str) -> bool {
        self.engine.cancel(job_id)
    }

    fn tokenize(&self, req: TokenizeRequest) -> Result<TokenizeResponse, ErrorEnvelope> {
        let lm = self.engine.model();
        let invalid = |m: String| ErrorEnvelope::invalid(vec![FieldError::new("text", "valid", m)]);
        let (text, rendered) = match (req.text, req.messages) {
            (Some(t), None) => (t, None),
            (None, Some(m)) => {
                let r = lm
                    .chat
                    .render(&m, true)
                    .map_err(|e| invalid(format!("chat template failed: {e:#}")))?;
                (r.clone(), Some(r))
            }
            _ => return Err(invalid("give exactly one of text or messages".into())),
        };
        let ids = lm
            .tokenizer
            .encode(
                &text,
                req.add_special_tokens && crate::prepare::add_bos_for(lm, &text),
            )
            .map_err(|e| invalid(format!("{e:#}")))?;
        let pieces = req.with_pieces.then(|| {
            ids.iter()
                .map(|&i| lm.tokenizer.piece(i).unwrap_or_default().to_string())
                .collect()
        });
        Ok(TokenizeResponse {
            count: ids.len(),
            ids,
            pieces,
            rendered,
        })
    }

    fn detokenize(&self, req: DetokenizeRequest) -> Result<DetokenizeResponse, ErrorEnvelope> {
        let vocab = self.info.vocab_size;
        if let Some(bad) = req.ids.iter().find(|&&i| i >= vocab) {
            return Err(ErrorEnvelope::invalid(vec![FieldError::new(
                "ids",
                format!("range(0..{vocab})"),
                format!("ids contains {bad}, outside the vocabulary (0..{vocab})"),
            )]));
        }
        let text = self
            .engine
            .model()
            .tokenizer
            .decode(&req.ids, req.skip_special_tokens);
        Ok(DetokenizeResponse { text })
    }
}

/// The wire form of an engine event: a device out-of-memory is `VRAM_OOM` (retriable: another
/// worker, or this one later, may have the room), any other failure `INFERENCE_FAILED`.
pub fn to_wire(ev: EngineEvent) -> WorkerEvent {
    match ev {
        EngineEvent::Started {
            job_id,
            model,
            started_at,
            seed,
            tokens_in,
            tokens_cached,
            queue_time_ms,
            prompt_logprobs,
        } => WorkerEvent::Started {
            job_id,
            model,
            started_at,
            seed,
            tokens_in,
            queue_time_ms,
            tokens_cached,
            prompt_logprobs,
        },
        EngineEvent::Token { i, id, t, logprob } => WorkerEvent::Token { i, id, t, logprob },
        EngineEvent::End {
            job_id,
            stop_reason,
            stop_sequence_matched,
            tokens_in,
            tokens_out,
            seed,
            queue_time_ms,
            prefill_time_ms,
            decode_time_ms,
            prefill_tokens_per_sec,
            decode_tokens_per_sec,
        } => WorkerEvent::End {
            job_id,
            stop_reason,
            stop_sequence_matched,
            tokens_in,
            tokens_out,
            seed,
            queue_time_ms,
            prefill_time_ms,
            decode_time_ms,
            prefill_tokens_per_sec,
            decode_tokens_per_sec,
        },
        EngineEvent::Failed {
            job_id,
            failure,
            message,
            tokens_out,
        } => {
            let code = match failure {
                Failure::OutOfMemory => ErrorCode::VramOom,
                Failure::Inference => ErrorCode::InferenceFailed,
            };
            WorkerEvent::Error {
                job_id,
                code,
                message,
                retriable: code.retriable(),
                tokens_out,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_map_to_their_wire_codes() {
        let failed = |failure| EngineEvent::Failed {
            job_id: "j".into(),
            failure,
            message: "m".into(),
            tokens_out: 3,
        };
        for (failure, code, retriable) in [
            (Failure::OutOfMemory, ErrorCode::VramOom, true),
            (Failure::Inference, ErrorCode::InferenceFailed, false),
        ] {
            match to_wire(failed(failure)) {
                WorkerEvent::Error {
                    code: c,
                    retriable: r,
                    tokens_out: 3,
                    ..
                } => assert_eq!((c, r), (code, retriable)),
                other => panic!("{other:?}"),
            }
        }
    }
}
