//! Accepted work survives a crash. Each admitted task's request is kept in the SQLite table
//! `pending` (committed before `202 Accepted` is answered) until the task ends; the row notes
//! when the first event reached the client (`token_sent`, committed before it is relayed). At
//! start, tasks a killed process left queued, or running with nothing sent yet, are queued
//! again in their admission order; running tasks that had sent tokens end with `WORKER_LOST`.
//! `persist_requests = false` keeps prompts off the disk: such tasks then fail at restart with
//! `SHUTTING_DOWN`, as they did before this module existed.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use llorch_wire::tasks::{TaskEvent, TaskRequest};
use rusqlite::{params, Connection};

use crate::queue::{Admit, Entry};
use crate::state::Orchestrator;
use crate::task::Task;

/// The SSE event ids of a task resumed after its `n`-th restart start after
/// `n × EVENT_ID_STRIDE`, above any id the previous process can have given (a task has at most
/// 32768 tokens plus a few hundred other events), so `Last-Event-ID` never skips a new event.
pub const EVENT_ID_STRIDE: usize = 1_000_000;

/// The `pending` table (migration 2).
pub const MIGRATION: &str = "CREATE TABLE pending (
        task_id TEXT PRIMARY KEY,
        seq INTEGER NOT NULL,
        request TEXT NOT NULL,
        correlation_id TEXT NOT NULL,
        restarts INTEGER NOT NULL DEFAULT 0,
        token_sent INTEGER NOT NULL DEFAULT 0
    );";

/// A task to queue again at start.
#[derive(Debug, Clone)]
pub struct PendingRow {
    pub task_id: String,
    pub request: TaskRequest,
    pub correlation_id: String,
    /// Restarts this task has gone through, this one included.
    pub restarts: u32,
    /// The submitting tenant (column added by the tenancy migration; absent: `default`).
    pub tenant: Option<String>,
}

/// A write to the `pending` table.
#[derive(Debug)]
pub enum PendingOp {
    /// A task was admitted (its request, serialized).
    Put {
        task_id: String,
        request: String,
        correlation_id: String,
        tenant: String,
    },
    /// The task's first event is about to reach its clients.
    TokenSent(String),
    /// The task ended.
    Delete(String),
}

/// Apply one write (inside the writer's transaction).
pub fn apply(conn: &Connection, op: &PendingOp) -> rusqlite::Result<()> {
    match op {
        PendingOp::Put {
            task_id,
            request,
            correlation_id,
            tenant,
        } => conn.execute(
            "INSERT OR REPLACE INTO pending (task_id, seq, request, correlation_id, tenant)
             VALUES (?1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM pending), ?2, ?3, ?4)",
            params![task_id, request, correlation_id, tenant],
        ),
        PendingOp::TokenSent(id) => conn.execute(
            "UPDATE pending SET token_sent = 1 WHERE task_id = ?1",
            params![id],
        ),
        PendingOp::Delete(id) => {
            conn.execute("DELETE FROM pending WHERE task_id = ?1", params![id])
        }
    }
    .map(|_| ())
}

/// What a restart does with the unfinished tasks of the previous process.
#[derive(Debug, Default)]
pub struct Recovery {
    /// Tasks queued again (in admission order).
    pub resume: Vec<PendingRow>,
    /// Running tasks that had sent tokens: they end with `WORKER_LOST`.
    pub lost: HashSet<String>,
}

/// Read the `pending` table against the task states and decide; rows of tasks not resumed are
/// deleted, resumed ones count one more restart.
pub fn recover(conn: &mut Connection) -> rusqlite::Result<Recovery> {
    type Row = (
        String,
        String,
        String,
        u32,
        bool,
        Option<String>,
        Option<String>,
    );
    let rows: Vec<Row> = {
        let mut st = conn.prepare(
            "SELECT p.task_id, p.request, p.correlation_id, p.restarts, p.token_sent, t.state,
             p.tenant FROM pending p LEFT JOIN tasks t ON t.task_id = p.task_id ORDER BY p.seq",
        )?;
        let it = st.query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get::<_, i64>(3)? as u32,
                r.get::<_, i64>(4)? != 0,
                r.get(5)?,
                r.get(6)?,
            ))
        })?;
        it.collect::<rusqlite::Result<_>>()?
    };
    let mut out = Recovery::default();
    let tx = conn.transaction()?;
    for (task_id, request, correlation_id, restarts, token_sent, state, tenant) in rows {
        let unfinished = matches!(state.as_deref(), Some("queued" | "running"));
        let request = serde_json::from_str::<TaskRequest>(&request).ok();
        match request {
            Some(request) if unfinished && !token_sent => {
                tx.execute(
                    "UPDATE pending SET restarts = restarts + 1 WHERE task_id = ?1",
                    params![task_id],
                )?;
                out.resume.push(PendingRow {
                    task_id,
                    request,
                    correlation_id,
                    restarts: restarts + 1,
                    tenant,
                });
            }
            _ => {
                if unfinished && token_sent {
                    out.lost.insert(task_id.clone());
                }
                tx.execute("DELETE FROM pending WHERE task_id = ?1", params![task_id])?;
            }
        }
    }
    tx.commit()?;
    Ok(out)
}

/// Queue the tasks the store recovered, in their admission order; returns how many.
pub fn resume(orch: &Arc<Orchestrator>) -> usize {
    let rows = orch.store.take_resumable();
    let n = rows.len();
    for row in rows {
        let base = row.restarts as usize * EVENT_ID_STRIDE;
        let tenant = orch.tenancy.name(
            row.tenant
                .as_deref()
                .unwrap_or(llorch_wire::tenancy::DEFAULT_TENANT),
        );
        let task = Arc::new(
            Task::new(
                row.task_id.clone(),
                row.request,
                row.correlation_id,
                Instant::now(),
            )
            .with_event_base(base)
            .with_tenant(tenant),
        );
        if !orch.insert_task(task.clone(), false) {
            continue;
        }
        let entry = Entry {
            task_id: task.id.clone(),
            model: task.request.model.clone(),
            priority: task.request.priority,
            enqueued: task.created,
            avoid: Vec::new(),
            affinity: Some(crate::registry::affinity_key(&task.request)),
            tenant: task.tenant.clone(),
            share: orch.tenancy.share(&task.tenant),
            route: task.route.clone(),
        };
        let admit = orch.core().queue.push(entry);
        let position = match admit {
            Admit::Accepted { position } | Admit::Evicted { position, .. } => position,
            Admit::Full => {
                let msg = "orchestratord restarted and its queue is now too small for this task; submit it again";
                let ev = crate::state::error_event(
                    &task,
                    llorch_wire::ErrorCode::QueueFull,
                    msg.into(),
                    0,
                );
                orch.finish(&task, ev);
                continue;
            }
        };
        if let Admit::Evicted { evicted, .. } = admit {
            if let Some(old) = orch.task(&evicted) {
                orch.end_task(&old, crate::state::EndCause::Evicted);
            }
        }
        task.set_position(position);
        task.push(&TaskEvent::Queued {
            phase: None,
            pool: None,
            bytes_done: None,
            bytes_total: None,
            task_id: task.id.clone(),
            queue_position: position,
            predicted_start_ms: 0,
        });
        orch.persist(&task);
        if let Some(deadline) = task.deadline {
            crate::admission::spawn_deadline(Arc::downgrade(orch), Arc::downgrade(&task), deadline);
        }
        tracing::info!(task_id = %task.id, restarts = row.restarts, position,
            "task queued again after a restart");
    }
    if n > 0 {
        orch.wake.notify_one();
        // models served on demand: the reconciler places workers for the queued tasks
        orch.fleet.wake.notify_one();
    }
    n
}
