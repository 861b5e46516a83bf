//! `llorch infer`: one job on one worker. Tokens go to stdout as they arrive, the summary to
//! stderr; Ctrl-C asks the worker to cancel the job (`POST /cancel`) and exits 130.

use std::io::Write;
use std::time::{Duration, Instant};

use futures::StreamExt;
use llorch_client::{ClientError, WorkerClient};
use llorch_wire::{ChatMessage, ExecuteRequest, WorkerEvent};

use crate::cli::{GenArgs, InferArgs};
use crate::error::{CliError, CliResult, EXIT_INTERRUPTED};

/// How long to wait for the worker to confirm a cancel before exiting anyway.
const CANCEL_GRACE: Duration = Duration::from_secs(3);

/// Build the request from the flags; `Usage` errors name every bad field.
pub fn build_request(a: &InferArgs) -> Result<ExecuteRequest, CliError> {
    let mut req = generation(&a.gen)?;
    req.job_id = Some(
        a.job_id
            .clone()
            .unwrap_or_else(|| format!("llorch-{}", uuid::Uuid::new_v4())),
    );
    Ok(req)
}

/// The generation fields of the flags (no job id); `Usage` errors name every bad field.
pub fn generation(a: &GenArgs) -> Result<ExecuteRequest, CliError> {
    let mut req = ExecuteRequest {
        gen: llorch_wire::Generation {
            prompt: a.prompt.clone(),
            max_tokens: a.max_tokens,
            stop: a.stop.clone(),
            ..Default::default()
        },
        ..Default::default()
    };
    if !a.messages.is_empty() {
        let mut msgs = Vec::with_capacity(a.messages.len());
        for m in &a.messages {
            let (role, content) = m.split_once(':').ok_or_else(|| {
                CliError::Usage(format!(
                    "--message {m:?}: expected ROLE:TEXT, e.g. user:Hello"
                ))
            })?;
            msgs.push(ChatMessage {
                role: role.trim().to_string(),
                content: content.to_string(),
            });
        }
        req.gen.messages = Some(msgs);
    }
    let s = &mut req.gen.sampling;
    if let Some(v) = a.temperature {
        s.temperature = v;
    }
    if let Some(v) = a.top_p {
        s.top_p = v;
    }
    if let Some(v) = a.top_k {
        s.top_k = v;
    }
    if let Some(v) = a.min_p {
        s.min_p = v;
    }
    if let Some(v) = a.repetition_penalty {
        s.repetition_penalty = v;
    }
    s.seed = a.seed;
    req.validate().map_err(|errs| {
        CliError::Usage(
            errs.iter()
                .map(|e| e.message.as_str())
                .collect::<Vec<_>>()
                .join("; "),
        )
    })?;
    Ok(req)
}

/// Run `llorch infer`.
pub fn run(a: InferArgs) -> CliResult {
    let req = build_request(&a)?;
    let rt = runtime()?;
    match (&a.worker, &a.orchestrator) {
        (Some(worker), _) => {
            let client = WorkerClient::new(worker).with_token(a.worker_token.clone());
            rt.block_on(stream_job(client, req, a.json))
        }
        (None, Some(url)) => rt.block_on(super::infer_orch::run(url, a.model.clone(), req, a.json)),
        (None, None) => Err(CliError::Usage(
            "give --worker HOST:PORT or --orchestrator URL".into(),
        )),
    }
}

/// A single-threaded runtime for one command.
pub fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Local(format!("cannot start the async runtime: {e}")))
}

/// Client-side timings and the worker's final numbers.
#[derive(Debug, Default)]
struct Tally {
    tokens: u32,
    first_token: Option<Duration>,
    started: Option<Instant>,
    ends_with_newline: bool,
}

async fn stream_job(client: WorkerClient, req: ExecuteRequest, json: bool) -> CliResult {
    let job_id = req.job_id.clone().expect("job id set");
    let worker_label = client.base_url().to_string();
    let mut tally = Tally {
        started: Some(Instant::now()),
        ends_with_newline: true,
        ..Default::default()
    };
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);

    let stream = tokio::select! {
        r = client.execute(&req) => r.map_err(|e| worker_error(&worker_label, e))?,
        _ = &mut ctrl_c => {
            cancel(&client, &job_id).await;
            return Ok(EXIT_INTERRUPTED);
        }
    };
    tokio::pin!(stream);
    let mut stdout = std::io::stdout();
    loop {
        let next = tokio::select! {
            ev = stream.next() => ev,
            _ = &mut ctrl_c => {
                finish_line(&tally, json);
                cancel(&client, &job_id).await;
                drain_after_cancel(&mut stream, &mut tally, json).await;
                return Ok(EXIT_INTERRUPTED);
            }
        };
        let Some(ev) = next else {
            return Err(CliError::Worker {
                worker: worker_label,
                message: "stream ended without a terminal event".into(),
            });
        };
        let ev = ev.map_err(|e| worker_error(&worker_label, e))?;
        if let Some(code) = handle_event(&ev, &mut tally, json, &mut stdout, &worker_label)? {
            return Ok(code);
        }
    }
}

/// Print one event; `Some(exit code)` once the job is over.
fn handle_event(
    ev: &WorkerEvent,
    tally: &mut Tally,
    json: bool,
    out: &mut impl Write,
    worker: &str,
) -> Result<Option<u8>, CliError> {
    if json {
        let _ = writeln!(out, "{}", serde_json::to_string(ev).expect("serializable"));
        let _ = out.flush();
    }
    match ev {
        WorkerEvent::Started { .. } => Ok(None),
        WorkerEvent::Token { t, .. } => {
            tally.tokens += 1;
            if tally.first_token.is_none() {
                tally.first_token = tally.started.map(|s| s.elapsed());
            }
            if !json && !t.is_empty() {
                let _ = out.write_all(t.as_bytes());
                let _ = out.flush();
                tally.ends_with_newline = t.ends_with('\n');
            }
            Ok(None)
        }
        WorkerEvent::End { .. } => {
            finish_line(tally, json);
            eprintln!("{}", summary(ev, tally));
            Ok(Some(0))
        }
        WorkerEvent::Error {
            job_id,
            code,
            message,
            retriable,
            tokens_out,
        } => {
            finish_line(tally, json);
            Err(CliError::Job {
                worker: worker.to_string(),
                job_id: job_id.clone(),
                code: code.to_string(),
                message: message.clone(),
                retriable: *retriable,
                tokens_out: *tokens_out,
            })
        }
    }
}

/// Close the streamed text with a newline so the summary starts on its own line.
pub fn finish_line_after(ends_with_newline: bool, json: bool) {
    if !json && !ends_with_newline {
        let mut out = std::io::stdout();
        let _ = out.write_all(b"\n");
        let _ = out.flush();
    }
}

fn finish_line(tally: &Tally, json: bool) {
    finish_line_after(tally.ends_with_newline, json);
}

/// `--- 42 tokens · TTFT 85 ms · 33.1 tok/s · prompt 12 tokens · stop eos · seed 7 · job ...`
fn summary(end: &WorkerEvent, tally: &Tally) -> String {
    let WorkerEvent::End {
        job_id,
        stop_reason,
        tokens_in,
        tokens_out,
        seed,
        decode_tokens_per_sec,
        prefill_time_ms,
        ..
    } = end
    else {
        return String::new();
    };
    let ttft = tally
        .first_token
        .map(|d| format!("{:.0} ms", d.as_secs_f64() * 1000.0))
        .unwrap_or_else(|| "-".into());
    let wall = tally
        .started
        .map(|s| s.elapsed().as_secs_f64())
        .unwrap_or(0.0);
    format!(
        "--- {tokens_out} tokens in {wall:.2} s · TTFT {ttft} · {decode_tokens_per_sec:.1} tok/s · prompt {tokens_in} tokens ({prefill_time_ms:.0} ms) · stop {} · seed {seed} · job {job_id}",
        stop_reason.as_str()
    )
}

async fn cancel(client: &WorkerClient, job_id: &str) {
    eprintln!("llorch: interrupted; cancelling job {job_id}");
    match tokio::time::timeout(CANCEL_GRACE, client.cancel(job_id)).await {
        Ok(Ok(true)) => {}
        Ok(Ok(false)) => {
            eprintln!("llorch: worker no longer knows job {job_id} (already finished?)")
        }
        Ok(Err(e)) => eprintln!("llorch: cancel failed: {e}"),
        Err(_) => eprintln!(
            "llorch: cancel not confirmed within {} s",
            CANCEL_GRACE.as_secs()
        ),
    }
}

/// After a cancel, read briefly for the terminal event so the summary can say how it ended.
async fn drain_after_cancel<S>(stream: &mut std::pin::Pin<&mut S>, tally: &mut Tally, json: bool)
where
    S: futures::Stream<Item = Result<WorkerEvent, ClientError>>,
{
    let deadline = tokio::time::sleep(CANCEL_GRACE);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            ev = stream.next() => match ev {
                Some(Ok(ev @ WorkerEvent::End { .. })) => {
                    if json {
                        println!("{}", serde_json::to_string(&ev).expect("serializable"));
                    }
                    eprintln!("{}", summary(&ev, tally));
                    return;
                }
                Some(Ok(WorkerEvent::Error { code, message, .. })) => {
                    eprintln!("llorch: job ended: {code}: {message}");
                    return;
                }
                Some(Ok(WorkerEvent::Token { .. })) => tally.tokens += 1,
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return,
            },
            _ = &mut deadline => return,
        }
    }
}

fn worker_error(worker: &str, e: ClientError) -> CliError {
    let message = match e {
        ClientError::Unreachable { source, .. } => format!("unreachable: {}", error_chain(&source)),
        ClientError::Api {
            status, envelope, ..
        } => {
            let mut m = format!(
                "rejected the job (HTTP {status}): {}: {}",
                envelope.error.code, envelope.error.message
            );
            if envelope.error.retriable {
                m.push_str(" (retriable)");
            }
            m
        }
        ClientError::Protocol(p) => format!("protocol error: {p}"),
    };
    CliError::Worker {
        worker: worker.to_string(),
        message,
    }
}

/// `a: b: c` from an error and its sources (reqwest hides the useful part in the chain).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parse(args: &[&str]) -> InferArgs {
        let mut v = vec!["llorch", "infer"];
        v.extend_from_slice(args);
        match crate::cli::Cli::try_parse_from(v).unwrap().command {
            crate::cli::Command::Infer(a) => a,
            _ => unreachable!(),
        }
    }

    #[test]
    fn messages_and_sampling_map_to_the_wire() {
        let a = parse(&[
            "--worker",
            "h:1",
            "-m",
            "system:Be: brief",
            "-m",
            "user:Hi",
            "--temperature",
            "0",
            "--seed",
            "3",
            "--stop",
            "\n",
        ]);
        let r = build_request(&a).unwrap();
        let m = r.gen.messages.unwrap();
        assert_eq!(
            (m[0].role.as_str(), m[0].content.as_str()),
            ("system", "Be: brief")
        );
        assert_eq!(r.gen.sampling.temperature, 0.0);
        assert_eq!(r.gen.sampling.seed, Some(3));
        assert_eq!(r.gen.stop, ["\n"]);
        assert!(r.job_id.unwrap().starts_with("llorch-"));
    }

    #[test]
    fn bad_values_are_usage_errors() {
        let a = parse(&[
            "--worker",
            "h:1",
            "--prompt",
            "x",
            "--temperature",
            "9",
            "--top-p",
            "0",
        ]);
        let e = build_request(&a).unwrap_err();
        assert!(
            matches!(e, CliError::Usage(ref m) if m.contains("temperature") && m.contains("top_p")),
            "{e}"
        );
        let a = parse(&["--worker", "h:1", "-m", "no-colon"]);
        assert!(build_request(&a).is_err());
        assert!(crate::cli::Cli::try_parse_from(["llorch", "infer", "--worker", "h:1"]).is_err());
        assert!(crate::cli::Cli::try_parse_from([
            "llorch", "infer", "--worker", "h:1", "-p", "a", "-m", "u:b"
        ])
        .is_err());
    }
}
