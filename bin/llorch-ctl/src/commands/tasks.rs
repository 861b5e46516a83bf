//! `llorch tasks submit|status|cancel|list` against orchestratord's `/v2/tasks`.

use llorch_wire::tasks::{Priority, TaskRequest, TaskStatus};
use llorch_wire::ExecuteRequest;

use super::infer::{generation, runtime};
use crate::cli::{SubmitArgs, TasksAction, TasksArgs};
use crate::error::{CliError, CliResult};
use crate::orchestrator::OrchClient;

/// The task for `model` with the generation fields of `gen`.
pub fn task_request(model: String, gen: ExecuteRequest) -> TaskRequest {
    TaskRequest {
        model,
        gen: gen.gen,
        ..Default::default()
    }
}

/// Run `llorch tasks ...`.
pub fn run(a: TasksArgs) -> CliResult {
    runtime()?.block_on(run_async(a))
}

fn print_json<T: serde::Serialize>(v: &T) {
    println!("{}", serde_json::to_string_pretty(v).expect("serializable"));
}

async fn run_async(a: TasksArgs) -> CliResult {
    let c = OrchClient::new(&a.conn.orchestrator);
    match a.action {
        TasksAction::Submit(s) => submit(&c, *s, a.conn.json).await,
        TasksAction::Status { id } => {
            let st = c.status(&id).await?;
            if a.conn.json {
                print_json(&st);
            } else {
                print!("{}", describe(&st));
            }
            Ok(0)
        }
        TasksAction::Cancel { id } => {
            c.cancel(&id).await?;
            if a.conn.json {
                print_json(&serde_json::json!({"task_id": id, "cancelled": true}));
            } else {
                eprintln!("llorch: cancelled task {id}");
            }
            Ok(0)
        }
        TasksAction::List { state, limit } => {
            let list = c.list(state.as_deref(), limit).await?;
            if a.conn.json {
                print_json(&list);
            } else {
                print!("{}", table(&list.tasks));
            }
            Ok(0)
        }
    }
}

async fn submit(c: &OrchClient, s: SubmitArgs, json: bool) -> CliResult {
    let gen = generation(&s.gen)?;
    let mut req = task_request(c.pick_model(s.model).await?, gen);
    req.task_id = s.task_id;
    req.session_id = s.session_id;
    req.deadline_ms = s.deadline_ms;
    if s.priority.as_deref() == Some("batch") {
        req.priority = Priority::Batch;
    }
    req.validate().map_err(|errs| {
        let msgs: Vec<&str> = errs.iter().map(|e| e.message.as_str()).collect();
        CliError::Usage(msgs.join("; "))
    })?;
    let acc = c.submit(&req).await?;
    if json {
        print_json(&acc);
    } else {
        println!("{}", acc.task_id);
        eprintln!(
            "llorch: queued at position {} (start in about {} ms); events: curl -N {}{}",
            acc.queue_position,
            acc.predicted_start_ms,
            c.base(),
            acc.events_url
        );
    }
    Ok(0)
}

fn ms(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.0} ms"))
}

/// A task's status as aligned `key  value` lines.
fn describe(st: &TaskStatus) -> String {
    let mut state = st.state.as_str().to_string();
    if let Some(p) = st.queue_position {
        state.push_str(&format!(" (position {p})"));
    }
    if let Some(r) = st.stop_reason {
        state.push_str(&format!(" (stop {})", r.as_str()));
    }
    let mut lines = vec![
        ("task", st.task_id.clone()),
        ("state", state),
        ("model", format!("{} ({})", st.model, st.priority.as_str())),
        (
            "worker",
            format!(
                "{} (attempts {})",
                st.worker_id.as_deref().unwrap_or("-"),
                st.attempts
            ),
        ),
        (
            "tokens",
            format!("in {}, out {}", st.usage.tokens_in, st.usage.tokens_out),
        ),
        (
            "timings",
            format!(
                "queue {} · TTFT {} · e2e {}",
                ms(st.timings.queue_time_ms),
                ms(st.timings.ttft_ms),
                ms(st.timings.e2e_ms)
            ),
        ),
    ];
    if let Some(e) = &st.error {
        lines.push(("error", format!("{}: {}", e.code, e.message)));
    }
    lines
        .into_iter()
        .map(|(k, v)| format!("{k:<8} {v}\n"))
        .collect()
}

/// Tasks as a table, newest first.
fn table(tasks: &[TaskStatus]) -> String {
    let now = unix_ms();
    let rows: Vec<[String; 6]> = tasks
        .iter()
        .map(|t| {
            [
                t.task_id.clone(),
                t.state.as_str().into(),
                t.model.clone(),
                t.worker_id.clone().unwrap_or_else(|| "-".into()),
                t.usage.tokens_out.to_string(),
                format!("{}s", now.saturating_sub(t.created_at_ms) / 1000),
            ]
        })
        .collect();
    let head = ["TASK", "STATE", "MODEL", "WORKER", "OUT", "AGE"];
    let mut w = head.map(str::len);
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.len());
        }
    }
    std::iter::once(head.map(String::from))
        .chain(rows)
        .map(|r| {
            let cells: Vec<String> = r
                .iter()
                .enumerate()
                .map(|(i, c)| format!("{c:<width$}", width = w[i]))
                .collect();
            format!("{}\n", cells.join("  ").trim_end())
        })
        .collect()
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
