//! One dispatch attempt: call the worker's `/execute`, relay every event as it arrives, and
//! decide what a failure means. Before the first token a failure is retried elsewhere (the
//! client never sees it); after it, the task ends with `WORKER_LOST` and the tokens so far.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use llorch_client::{ClientError, WorkerClient};
use llorch_wire::tasks::TaskEvent;
use llorch_wire::{ErrorCode, WorkerEvent};
use tokio::sync::oneshot;

use crate::state::{error_event, Orchestrator};
use crate::task::{ms_since, Task};

/// Where an attempt runs.
#[derive(Debug, Clone)]
pub struct Target {
    pub worker_id: String,
    pub url: String,
    /// The worker's API token (from its registration), sent on `/execute` and `/cancel`.
    pub token: Option<llorch_wire::tasks::Secret>,
}

/// How an attempt ended.
#[derive(Debug)]
enum Outcome {
    /// The task has its terminal event (from the worker, or from a cancel/deadline).
    Done,
    /// Failed before the first token; may run again elsewhere.
    Retry {
        code: ErrorCode,
        message: String,
        worker_suspect: bool,
    },
}

/// Metrics frames go out at most this often.
const METRICS_EVERY: Duration = Duration::from_secs(1);
/// Longest wait for a worker's `/cancel`.
const CANCEL_TIMEOUT: Duration = Duration::from_secs(2);

/// Run one attempt of `task` on `target`, then release the slot and retry or settle.
pub async fn run(orch: Arc<Orchestrator>, task: Arc<Task>, target: Target, dispatched: Instant) {
    let outcome = match task.begin_attempt(&target.worker_id) {
        Some((attempt, abort)) => {
            orch.persist(&task);
            relay(&orch, &task, &target, attempt, abort, dispatched).await
        }
        None => Outcome::Done,
    };
    orch.release_slot(&target.worker_id, &task.tenant);
    let Outcome::Retry {
        code,
        message,
        worker_suspect,
    } = outcome
    else {
        return;
    };
    let wid = target.worker_id.as_str();
    orch.metrics
        .tasks_dispatched_total
        .inc(&[("worker_id", wid), ("outcome", "failure")]);
    orch.metrics
        .tasks_retried_total
        .inc(&[("reason", code.as_str())]);
    if worker_suspect {
        orch.mark_unhealthy(wid, &message);
    }
    let attempts = task.attempts();
    tracing::warn!(task_id = %task.id, worker_id = wid, attempts, %code, %message, "attempt failed before the first token");
    if attempts >= orch.cfg.max_attempts {
        let msg = format!(
            "no worker completed the task after {attempts} attempts; last error: {message}"
        );
        orch.finish(&task, error_event(&task, code, msg, 0));
        return;
    }
    if !task.retry_later(wid) {
        return;
    }
    let backoff = orch
        .cfg
        .retry_backoff_ms
        .saturating_mul(1 << (attempts - 1).min(10));
    tokio::time::sleep(Duration::from_millis(backoff)).await;
    orch.requeue(&task);
}

fn cancel_on_worker(client: &WorkerClient, job_id: &str) {
    let (client, job_id) = (client.clone(), job_id.to_string());
    tokio::spawn(async move {
        let _ = tokio::time::timeout(CANCEL_TIMEOUT, client.cancel(&job_id)).await;
    });
}

fn retry(code: ErrorCode, message: String, worker_suspect: bool) -> Outcome {
    Outcome::Retry {
        code,
        message,
        worker_suspect,
    }
}

/// Classify a failed `/execute` call.
fn connect_failure(orch: &Orchestrator, task: &Arc<Task>, err: ClientError) -> Outcome {
    match err {
        ClientError::Unreachable { .. } => retry(ErrorCode::WorkerLost, err.to_string(), true),
        ClientError::Protocol(m) => retry(ErrorCode::Internal, m, true),
        ClientError::Api {
            status, envelope, ..
        } => {
            let e = envelope.error;
            if e.code == ErrorCode::EngineFailed {
                // the worker is up but cannot generate: no more tasks there
                retry(e.code, e.message, true)
            } else if status == 503 || e.retriable {
                retry(e.code, e.message, false)
            } else {
                // The request itself is wrong for this worker (e.g. context too long): final.
                orch.finish(task, error_event(task, e.code, e.message, 0));
                Outcome::Done
            }
        }
    }
}

struct Progress {
    sent: u32,
    first_token_at: Option<Instant>,
    last_token_at: Instant,
    last_metrics_at: Instant,
    started: Option<(u64, u32)>,
    /// Prompt tokens the worker reused from its prompt cache.
    tokens_cached: u32,
}

async fn relay(
    orch: &Arc<Orchestrator>,
    task: &Arc<Task>,
    target: &Target,
    attempt: u32,
    mut abort: oneshot::Receiver<()>,
    dispatched: Instant,
) -> Outcome {
    let client = WorkerClient::with_client(&target.url, orch.http.clone())
        .with_token(target.token.as_ref().map(|t| t.expose().to_string()));
    // a task queued again after a crash may still have a job of the same attempt number there
    let job_id = match task.event_base / crate::durable::EVENT_ID_STRIDE {
        0 => format!("{}.{attempt}", task.id),
        restarts => format!("{}.r{restarts}.{attempt}", task.id),
    };
    let req = task.request.to_execute(job_id.clone());
    let stall = Duration::from_millis(orch.cfg.stall_timeout_ms);
    let headers = [("x-correlation-id", task.correlation_id.as_str())];
    let connect = tokio::time::timeout(stall, client.execute_with_headers(&req, &headers));
    let stream = tokio::select! {
        _ = &mut abort => { cancel_on_worker(&client, &job_id); return Outcome::Done; }
        r = connect => r,
    };
    let mut stream = match stream {
        Err(_) => {
            return retry(
                ErrorCode::WorkerLost,
                format!("no answer within {stall:?}"),
                true,
            )
        }
        Ok(Err(e)) => return connect_failure(orch, task, e),
        Ok(Ok(s)) => Box::pin(s),
    };
    let wid = target.worker_id.as_str();
    orch.metrics
        .tasks_dispatched_total
        .inc(&[("worker_id", wid), ("outcome", "success")]);
    let queue_time_ms = dispatched.duration_since(task.created).as_secs_f64() * 1000.0;
    let now = Instant::now();
    let mut p = Progress {
        sent: 0,
        first_token_at: None,
        last_token_at: now,
        last_metrics_at: now,
        started: None,
        tokens_cached: 0,
    };
    loop {
        let next = tokio::select! {
            biased;
            _ = &mut abort => { cancel_on_worker(&client, &job_id); return Outcome::Done; }
            n = tokio::time::timeout(stall, stream.next()) => n,
        };
        let ev = match next {
            Ok(Some(Ok(ev))) => ev,
            Err(_) => {
                cancel_on_worker(&client, &job_id);
                return lost(
                    orch,
                    task,
                    wid,
                    p.sent,
                    format!("worker {wid} sent nothing for {stall:?}"),
                );
            }
            Ok(Some(Err(e))) => {
                return lost(
                    orch,
                    task,
                    wid,
                    p.sent,
                    format!("worker {wid} stream broke: {e}"),
                )
            }
            Ok(None) => {
                return lost(
                    orch,
                    task,
                    wid,
                    p.sent,
                    format!("worker {wid} closed the stream"),
                )
            }
        };
        match ev {
            WorkerEvent::Started {
                seed,
                tokens_in,
                tokens_cached,
                ..
            } => {
                p.started = Some((seed, tokens_in));
                p.tokens_cached = tokens_cached;
            }
            WorkerEvent::Token { i, id, t, logprob } => {
                if p.sent == 0 {
                    mark_sent(orch, task).await;
                }
                on_token(orch, task, wid, attempt, queue_time_ms, &mut p);
                if !task.push(&TaskEvent::Token { i, id, t, logprob }) {
                    cancel_on_worker(&client, &job_id);
                    return Outcome::Done;
                }
                p.sent += 1;
                orch.tenancy.charge(&task.tenant, 1);
                maybe_metrics(orch, task, &mut p);
            }
            WorkerEvent::End {
                stop_reason,
                stop_sequence_matched,
                tokens_in,
                tokens_out,
                seed,
                prefill_time_ms,
                decode_time_ms,
                decode_tokens_per_sec,
                ..
            } => {
                if p.sent == 0 {
                    mark_sent(orch, task).await;
                    p.started.get_or_insert((seed, tokens_in));
                    on_token(orch, task, wid, attempt, queue_time_ms, &mut p);
                }
                let ev = TaskEvent::End {
                    task_id: task.id.clone(),
                    stop_reason,
                    stop_sequence_matched,
                    tokens_in,
                    tokens_out,
                    tokens_cached: p.tokens_cached,
                    worker_id: Some(wid.to_string()),
                    seed: Some(seed),
                    attempts: attempt,
                    queue_time_ms,
                    ttft_ms: p
                        .first_token_at
                        .filter(|_| p.sent > 0)
                        .map(|t| t.duration_since(task.created).as_secs_f64() * 1000.0),
                    e2e_ms: ms_since(task.created),
                    prefill_time_ms: Some(prefill_time_ms),
                    decode_time_ms: Some(decode_time_ms),
                    decode_tokens_per_sec: Some(decode_tokens_per_sec),
                };
                orch.finish(task, ev);
                return Outcome::Done;
            }
            WorkerEvent::Error {
                code,
                message,
                retriable,
                ..
            } => {
                if p.sent == 0 && retriable && code != ErrorCode::Cancelled {
                    return retry(code, message, false);
                }
                orch.finish(task, error_event(task, code, message, p.sent));
                return Outcome::Done;
            }
        }
    }
}

/// The task's first event is about to reach its clients: from now on a restart must not run it
/// again, so that is committed first (see `durable`).
async fn mark_sent(orch: &Orchestrator, task: &Task) {
    if orch.cfg.persist_requests {
        let committed = orch.store.pending_token_sent(&task.id);
        let _ = tokio::time::timeout(Duration::from_secs(5), committed).await;
    }
}

/// The stream broke: retry if nothing was sent, else end with `WORKER_LOST`.
fn lost(orch: &Orchestrator, task: &Arc<Task>, wid: &str, sent: u32, message: String) -> Outcome {
    if sent == 0 {
        return retry(ErrorCode::WorkerLost, message, true);
    }
    orch.mark_unhealthy(wid, &message);
    let msg = format!("{message} after {sent} tokens");
    orch.finish(task, error_event(task, ErrorCode::WorkerLost, msg, sent));
    Outcome::Done
}

/// Token timing; the first token (or a token-less end) also sends `started`, so a failed
/// attempt before it stays invisible.
fn on_token(
    orch: &Orchestrator,
    task: &Task,
    wid: &str,
    attempt: u32,
    queue_time_ms: f64,
    p: &mut Progress,
) {
    let now = Instant::now();
    let model = task.request.model.as_str();
    if p.first_token_at.is_some() {
        orch.metrics.inter_token_ms.observe(
            &[("model", model)],
            (now - p.last_token_at).as_secs_f64() * 1000.0,
        );
        p.last_token_at = now;
        return;
    }
    p.first_token_at = Some(now);
    p.last_token_at = now;
    p.last_metrics_at = now;
    let ttft_ms = now.duration_since(task.created).as_secs_f64() * 1000.0;
    let (seed, tokens_in) = p.started.unwrap_or_default();
    task.set_started(tokens_in, queue_time_ms, ttft_ms);
    orch.tenancy.charge(&task.tenant, tokens_in.into());
    orch.metrics
        .queue_time_ms
        .observe(&[("model", model)], queue_time_ms);
    orch.metrics.ttft_ms.observe(&[("model", model)], ttft_ms);
    task.push(&TaskEvent::Started {
        task_id: task.id.clone(),
        worker_id: wid.to_string(),
        model: task.request.model.clone(),
        attempt,
        queue_time_ms,
        tokens_in,
        seed,
    });
}

fn maybe_metrics(orch: &Orchestrator, task: &Task, p: &mut Progress) {
    orch.metrics
        .tokens_out_total
        .inc(&[("model", task.request.model.as_str())]);
    let now = Instant::now();
    if now.duration_since(p.last_metrics_at) < METRICS_EVERY {
        return;
    }
    p.last_metrics_at = now;
    let elapsed = p
        .first_token_at
        .map_or(0.0, |t| now.duration_since(t).as_secs_f64());
    task.push(&TaskEvent::Metrics {
        task_id: task.id.clone(),
        tokens_out: p.sent,
        elapsed_ms: elapsed * 1000.0,
        tokens_per_sec: if elapsed > 0.0 {
            p.sent as f64 / elapsed
        } else {
            0.0
        },
    });
}
