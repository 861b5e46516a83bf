//! `llorch infer --orchestrator URL`: submit one task to orchestratord and stream its events.
//! Tokens go to stdout, the summary to stderr; Ctrl-C cancels the task and exits 130.

use std::io::Write;
use std::time::{Duration, Instant};

use futures::StreamExt;
use llorch_wire::tasks::TaskEvent;
use llorch_wire::{ExecuteRequest, StopReason};

use super::infer::finish_line_after;
use super::tasks::task_request;
use crate::error::{CliError, CliResult, EXIT_INTERRUPTED};
use crate::orchestrator::OrchClient;

/// How long to wait for the terminal event after asking for a cancel.
const CANCEL_GRACE: Duration = Duration::from_secs(3);

/// Submit `req` (its job id becomes the task id) and stream the task.
pub async fn run(url: &str, model: Option<String>, req: ExecuteRequest, json: bool) -> CliResult {
    let client = OrchClient::new(url);
    let model = client.pick_model(model).await?;
    let mut task = task_request(model, req.clone());
    task.task_id = req.job_id;
    let accepted = client.submit(&task).await?;
    let id = accepted.task_id;
    if accepted.queue_position > 0 && !json {
        eprintln!(
            "llorch: task {id} queued at position {} (start in about {} ms)",
            accepted.queue_position, accepted.predicted_start_ms
        );
    }
    let events = client.events(&id).await?;
    tokio::pin!(events);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let t0 = Instant::now();
    let mut first_token: Option<Duration> = None;
    let mut ends_with_newline = true;
    let mut cancel_deadline: Option<Instant> = None;
    let mut stdout = std::io::stdout();
    loop {
        let wait = cancel_deadline.map_or(Duration::MAX, |d| {
            d.saturating_duration_since(Instant::now())
        });
        let ev = tokio::select! {
            ev = events.next() => ev,
            _ = &mut ctrl_c, if cancel_deadline.is_none() => {
                finish_line_after(ends_with_newline, json);
                ends_with_newline = true;
                eprintln!("llorch: interrupted; cancelling task {id}");
                if let Err(e) = client.cancel(&id).await {
                    eprintln!("llorch: cancel failed: {e}");
                    return Ok(EXIT_INTERRUPTED);
                }
                cancel_deadline = Some(Instant::now() + CANCEL_GRACE);
                continue;
            }
            _ = tokio::time::sleep(wait) => return Ok(EXIT_INTERRUPTED),
        };
        let ev = match ev {
            Some(ev) => ev?,
            None => {
                return Err(CliError::Orchestrator {
                    url: client.base().to_string(),
                    message: "event stream ended without a terminal event".into(),
                })
            }
        };
        if json {
            let _ = writeln!(
                stdout,
                "{}",
                serde_json::to_string(&ev).expect("serializable")
            );
            let _ = stdout.flush();
        }
        match ev {
            TaskEvent::Token { t, .. } => {
                first_token.get_or_insert_with(|| t0.elapsed());
                if !json && !t.is_empty() && cancel_deadline.is_none() {
                    let _ = stdout.write_all(t.as_bytes());
                    let _ = stdout.flush();
                    ends_with_newline = t.ends_with('\n');
                }
            }
            end @ TaskEvent::End { .. } => {
                finish_line_after(ends_with_newline, json);
                eprintln!("{}", summary(&end, first_token, t0.elapsed()));
                let cancelled = matches!(
                    end,
                    TaskEvent::End {
                        stop_reason: StopReason::Cancelled,
                        ..
                    }
                );
                return Ok(if cancelled && cancel_deadline.is_some() {
                    EXIT_INTERRUPTED
                } else {
                    0
                });
            }
            TaskEvent::Error {
                task_id,
                code,
                message,
                retriable,
                tokens_out,
                ..
            } => {
                finish_line_after(ends_with_newline, json);
                return Err(CliError::Task {
                    task_id,
                    code: code.to_string(),
                    message,
                    retriable,
                    tokens_out,
                });
            }
            _ => {}
        }
    }
}

/// `--- 12 tokens in 0.54 s · TTFT 120 ms · 30.2 tok/s · prompt 37 tokens · queue 2 ms · stop eos · worker w · task t`
fn summary(end: &TaskEvent, first_token: Option<Duration>, wall: Duration) -> String {
    let TaskEvent::End {
        task_id,
        stop_reason,
        tokens_in,
        tokens_out,
        worker_id,
        queue_time_ms,
        decode_tokens_per_sec,
        ..
    } = end
    else {
        return String::new();
    };
    let ttft = first_token.map_or("-".into(), |d| {
        format!("{:.0} ms", d.as_secs_f64() * 1000.0)
    });
    let rate = decode_tokens_per_sec.map_or("-".into(), |r| format!("{r:.1}"));
    format!(
        "--- {tokens_out} tokens in {:.2} s · TTFT {ttft} · {rate} tok/s · prompt {tokens_in} tokens · queue {queue_time_ms:.0} ms · stop {} · worker {} · task {task_id}",
        wall.as_secs_f64(),
        stop_reason.as_str(),
        worker_id.as_deref().unwrap_or("-"),
    )
}
