//! SQLite state (WAL, versioned migrations): the worker registry and the task history.
//! Writes go through one writer thread that batches them into transactions, so request
//! handlers never wait for the disk; reads use their own connection.

use std::path::Path;
use std::sync::mpsc;
use std::sync::Mutex;
use std::thread::JoinHandle;

use llorch_wire::tasks::{TaskEvent, TaskState, TaskStatus, WorkerRegistration, WorkerSource};
use llorch_wire::ErrorCode;
use rusqlite::{params, Connection, OptionalExtension};

use crate::durable::{PendingOp, PendingRow, Recovery};

/// Schema versions, applied in order; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &[
    "CREATE TABLE workers (
        worker_id TEXT PRIMARY KEY,
        registration TEXT NOT NULL,
        source TEXT NOT NULL,
        registered_at_ms INTEGER NOT NULL,
        last_seen_ms INTEGER NOT NULL
    );
    CREATE TABLE tasks (
        task_id TEXT PRIMARY KEY,
        model TEXT NOT NULL,
        state TEXT NOT NULL,
        created_at_ms INTEGER NOT NULL,
        finished_at_ms INTEGER,
        status TEXT NOT NULL,
        terminal_event_id INTEGER,
        terminal_event TEXT
    );
    CREATE INDEX tasks_state ON tasks(state);
    CREATE INDEX tasks_finished ON tasks(finished_at_ms);",
    crate::durable::MIGRATION,
    crate::tenancy::db::MIGRATION,
];

/// A task row: its status, and its terminal event with the SSE id once it ended.
#[derive(Debug, Clone)]
pub struct TaskRow {
    pub status: TaskStatus,
    pub terminal: Option<(u64, String)>,
}

/// A persisted worker.
#[derive(Debug, Clone)]
pub struct WorkerRow {
    pub reg: WorkerRegistration,
    pub source: WorkerSource,
    pub last_seen_ms: u64,
}

enum Op {
    PutWorker(WorkerRow),
    DeleteWorker(String),
    TouchWorker(String, u64),
    PutTask(Box<TaskRow>),
    Prune(u64),
    Flush(mpsc::SyncSender<()>),
    Pending(PendingOp),
    /// Answered once the batch holding it (and every earlier write) is committed.
    Committed(tokio::sync::oneshot::Sender<()>),
    /// A write of another module (tenancy, usage).
    Exec(WriteFn),
}

/// A write run on the writer thread, inside its transaction.
pub type WriteFn = Box<dyn Fn(&Connection) -> rusqlite::Result<()> + Send>;

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state database {path}: {source}")]
    Sqlite {
        path: String,
        source: rusqlite::Error,
    },
    #[error(
        "cannot create state database {path} readable by its owner only (mode 0600): {source}"
    )]
    Mode {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot create directory for state database {path}: {source}")]
    Dir {
        path: String,
        source: std::io::Error,
    },
}

/// Handle to the database.
pub struct Store {
    tx: Mutex<Option<mpsc::Sender<Op>>>,
    /// Tasks of the previous process to queue again (taken once, at start).
    resumable: Mutex<Vec<PendingRow>>,
    read: Mutex<Connection>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store")
    }
}

/// Create the database file readable by its owner only (it holds prompts of queued tasks and
/// workers' API tokens); SQLite gives its `-wal` and `-shm` files the same mode.
fn restrict_to_owner(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

fn open_conn(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(conn)
}

fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let done: usize = conn.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))? as usize;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(done) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}

/// Mark tasks a previous process left queued or running as failed, with a terminal event,
/// except those `recovery` queues again; running ones that had sent tokens get `WORKER_LOST`.
fn fail_unfinished(
    conn: &mut Connection,
    now_ms: u64,
    recovery: &Recovery,
) -> rusqlite::Result<usize> {
    let resumed: std::collections::HashSet<&str> =
        recovery.resume.iter().map(|r| r.task_id.as_str()).collect();
    let rows: Vec<(String, String)> = {
        let mut st =
            conn.prepare("SELECT task_id, status FROM tasks WHERE state IN ('queued', 'running')")?;
        let it = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        it.collect::<rusqlite::Result<_>>()?
    };
    let tx = conn.transaction()?;
    let mut failed = 0;
    for (id, status_json) in &rows {
        if resumed.contains(id.as_str()) {
            continue;
        }
        let Ok(mut status) = serde_json::from_str::<TaskStatus>(status_json) else {
            continue;
        };
        failed += 1;
        let (code, message) = if recovery.lost.contains(id) {
            (
                ErrorCode::WorkerLost,
                "orchestratord stopped while the task was streaming; it cannot continue the stream"
                    .to_string(),
            )
        } else {
            (
                ErrorCode::ShuttingDown,
                format!(
                    "orchestratord stopped while the task was {}; submit it again",
                    status.state.as_str()
                ),
            )
        };
        let ev = TaskEvent::Error {
            task_id: id.clone(),
            code,
            message: message.clone(),
            retriable: code.retriable(),
            tokens_out: status.usage.tokens_out,
            worker_id: status.worker_id.clone(),
        };
        status.state = TaskState::Failed;
        status.queue_position = None;
        status.finished_at_ms = Some(now_ms);
        status.error = Some(llorch_wire::tasks::TaskError { code, message });
        // The old event count is unknown; a high id keeps Last-Event-ID resumes from skipping it.
        let ev_id = 1_000_000_000u64;
        tx.execute(
            "UPDATE tasks SET state = 'failed', finished_at_ms = ?2, status = ?3, terminal_event_id = ?4,
             terminal_event = ?5 WHERE task_id = ?1",
            params![id, now_ms as i64, to_json(&status), ev_id as i64, to_json(&ev)],
        )?;
    }
    tx.commit()?;
    Ok(failed)
}

fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("serializable")
}

fn apply(conn: &Connection, op: &Op) -> rusqlite::Result<()> {
    match op {
        Op::PutWorker(w) => {
            conn.execute(
                "INSERT INTO workers (worker_id, registration, source, registered_at_ms, last_seen_ms)
                 VALUES (?1, ?2, ?3, ?4, ?4)
                 ON CONFLICT(worker_id) DO UPDATE SET registration = ?2, source = ?3, last_seen_ms = ?4",
                params![w.reg.worker_id, to_json(&w.reg), to_json(&w.source), w.last_seen_ms as i64],
            )?;
        }
        Op::DeleteWorker(id) => {
            conn.execute("DELETE FROM workers WHERE worker_id = ?1", params![id])?;
        }
        Op::TouchWorker(id, ms) => {
            conn.execute(
                "UPDATE workers SET last_seen_ms = ?2 WHERE worker_id = ?1",
                params![id, *ms as i64],
            )?;
        }
        Op::PutTask(row) => {
            let s = &row.status;
            conn.execute(
                "INSERT OR REPLACE INTO tasks (task_id, model, state, created_at_ms, finished_at_ms, status,
                 terminal_event_id, terminal_event) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    s.task_id,
                    s.model,
                    s.state.as_str(),
                    s.created_at_ms as i64,
                    s.finished_at_ms.map(|v| v as i64),
                    to_json(s),
                    row.terminal.as_ref().map(|(id, _)| *id as i64),
                    row.terminal.as_ref().map(|(_, j)| j.as_str()),
                ],
            )?;
        }
        Op::Prune(before_ms) => {
            conn.execute(
                "DELETE FROM tasks WHERE finished_at_ms IS NOT NULL AND finished_at_ms < ?1",
                params![*before_ms as i64],
            )?;
        }
        Op::Pending(p) => crate::durable::apply(conn, p)?,
        Op::Exec(f) => f(conn)?,
        Op::Flush(_) | Op::Committed(_) => {}
    }
    Ok(())
}

fn writer_loop(mut conn: Connection, rx: mpsc::Receiver<Op>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < 512 {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let result = conn.transaction().and_then(|tx| {
            for op in &batch {
                apply(&tx, op)?;
            }
            tx.commit()
        });
        let ok = result.is_ok();
        if let Err(e) = result {
            tracing::error!(error = %e, ops = batch.len(), "state database write failed");
        }
        for op in batch {
            match op {
                Op::Flush(done) => {
                    let _ = done.send(());
                }
                // dropped unanswered when the commit failed: the waiter sees an error
                Op::Committed(done) if ok => {
                    let _ = done.send(());
                }
                _ => {}
            }
        }
    }
}

impl Store {
    /// Open (creating and migrating) the database; returns the store and how many unfinished
    /// tasks of a previous run were marked failed.
    pub fn open(path: &Path) -> Result<(Store, usize), StoreError> {
        let shown = path.display().to_string();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
                path: shown.clone(),
                source,
            })?;
        }
        let sq = |source| StoreError::Sqlite {
            path: shown.clone(),
            source,
        };
        restrict_to_owner(path).map_err(|source| StoreError::Mode {
            path: shown.clone(),
            source,
        })?;
        let mut conn = open_conn(path).map_err(sq)?;
        migrate(&mut conn).map_err(sq)?;
        let recovery = crate::durable::recover(&mut conn).map_err(sq)?;
        let failed = fail_unfinished(&mut conn, crate::task::unix_ms(), &recovery).map_err(sq)?;
        let read = open_conn(path).map_err(sq)?;
        let (tx, rx) = mpsc::channel();
        let writer = std::thread::Builder::new()
            .name("orchd-store".into())
            .spawn(move || writer_loop(conn, rx))
            .expect("spawn store writer");
        let store = Store {
            tx: Mutex::new(Some(tx)),
            resumable: Mutex::new(recovery.resume),
            read: Mutex::new(read),
            writer: Mutex::new(Some(writer)),
        };
        Ok((store, failed))
    }

    fn send(&self, op: Op) {
        if let Some(tx) = self.tx.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            let _ = tx.send(op);
        }
    }

    /// Insert or update a worker.
    pub fn put_worker(&self, row: WorkerRow) {
        self.send(Op::PutWorker(row));
    }

    /// Remove a worker.
    pub fn delete_worker(&self, id: &str) {
        self.send(Op::DeleteWorker(id.to_string()));
    }

    /// Record a heartbeat.
    pub fn touch_worker(&self, id: &str, ms: u64) {
        self.send(Op::TouchWorker(id.to_string(), ms));
    }

    /// Insert or update a task.
    pub fn put_task(&self, row: TaskRow) {
        self.send(Op::PutTask(Box::new(row)));
    }

    /// Keep an admitted task's request until it ends; the receiver answers once committed.
    pub fn put_pending(
        &self,
        task_id: &str,
        request: &llorch_wire::tasks::TaskRequest,
        correlation_id: &str,
        tenant: &str,
    ) -> tokio::sync::oneshot::Receiver<()> {
        self.send(Op::Pending(PendingOp::Put {
            task_id: task_id.to_string(),
            request: to_json(request),
            correlation_id: correlation_id.to_string(),
            tenant: tenant.to_string(),
        }));
        self.committed()
    }

    /// Note that the task's first event goes to its clients; the receiver answers once
    /// committed (from then on a restart cannot run it again).
    pub fn pending_token_sent(&self, task_id: &str) -> tokio::sync::oneshot::Receiver<()> {
        self.send(Op::Pending(PendingOp::TokenSent(task_id.to_string())));
        self.committed()
    }

    /// The task ended: forget its request.
    pub fn delete_pending(&self, task_id: &str) {
        self.send(Op::Pending(PendingOp::Delete(task_id.to_string())));
    }

    /// Queue a write of another module; it commits with the next batch.
    pub fn exec(&self, f: WriteFn) {
        self.send(Op::Exec(f));
    }

    /// Run a read on the read connection.
    pub fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        f(&self.read.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Answers once every write sent so far is committed (dropped unanswered if the commit fails).
    pub fn committed(&self) -> tokio::sync::oneshot::Receiver<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send(Op::Committed(tx));
        rx
    }

    /// The tasks of the previous process to queue again (once; empty afterwards).
    pub fn take_resumable(&self) -> Vec<PendingRow> {
        std::mem::take(&mut *self.resumable.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Delete tasks that finished before `before_ms`.
    pub fn prune(&self, before_ms: u64) {
        self.send(Op::Prune(before_ms));
    }

    /// Wait until every write sent so far is committed.
    pub fn flush(&self) {
        let (done_tx, done_rx) = mpsc::sync_channel(1);
        self.send(Op::Flush(done_tx));
        let _ = done_rx.recv_timeout(std::time::Duration::from_secs(10));
    }

    /// Flush, then stop the writer thread.
    pub fn close(&self) {
        self.flush();
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(h) = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = h.join();
        }
    }

    /// Every persisted worker.
    pub fn workers(&self) -> rusqlite::Result<Vec<WorkerRow>> {
        let conn = self.read.lock().unwrap_or_else(|p| p.into_inner());
        let mut st = conn
            .prepare("SELECT registration, source, last_seen_ms FROM workers ORDER BY worker_id")?;
        let rows = st.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (reg, source, seen) = row?;
            if let (Ok(reg), Ok(source)) =
                (serde_json::from_str(&reg), serde_json::from_str(&source))
            {
                out.push(WorkerRow {
                    reg,
                    source,
                    last_seen_ms: seen as u64,
                });
            }
        }
        Ok(out)
    }

    /// The `limit` most recent tasks of the history (optionally in one state), newest first.
    pub fn recent_tasks(
        &self,
        state: Option<TaskState>,
        limit: u32,
    ) -> rusqlite::Result<Vec<TaskStatus>> {
        let conn = self.read.lock().unwrap_or_else(|p| p.into_inner());
        let mut st = conn.prepare(
            "SELECT status FROM tasks WHERE ?1 IS NULL OR state = ?1 \
             ORDER BY created_at_ms DESC, task_id LIMIT ?2",
        )?;
        let rows = st.query_map(params![state.map(|s| s.as_str()), limit], |r| {
            r.get::<_, String>(0)
        })?;
        let mut out = Vec::new();
        for row in rows {
            if let Ok(status) = serde_json::from_str(&row?) {
                out.push(status);
            }
        }
        Ok(out)
    }

    /// One task of the history.
    pub fn task(&self, id: &str) -> rusqlite::Result<Option<TaskRow>> {
        let conn = self.read.lock().unwrap_or_else(|p| p.into_inner());
        let row = conn
            .query_row(
                "SELECT status, terminal_event_id, terminal_event FROM tasks WHERE task_id = ?1",
                params![id],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, Option<i64>>(1)?,
                        r.get::<_, Option<String>>(2)?,
                    ))
                },
            )
            .optional()?;
        Ok(row.and_then(|(status, ev_id, ev)| {
            let status = serde_json::from_str(&status).ok()?;
            Some(TaskRow {
                status,
                terminal: ev_id.zip(ev).map(|(i, e)| (i as u64, e)),
            })
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use llorch_wire::tasks::{Priority, TaskTimings, TaskUsage};

    fn status(id: &str, state: TaskState) -> TaskStatus {
        TaskStatus {
            task_id: id.into(),
            model: "m".into(),
            priority: Priority::Interactive,
            session_id: None,
            state,
            queue_position: None,
            worker_id: Some("w1".into()),
            attempts: 1,
            created_at_ms: 1,
            finished_at_ms: None,
            timings: TaskTimings::default(),
            usage: TaskUsage {
                tokens_in: 3,
                tokens_out: 2,
            },
            stop_reason: None,
            error: None,
            tenant: None,
        }
    }

    #[test]
    fn history_and_registry_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("state.sqlite");
        let (store, failed) = Store::open(&path).unwrap();
        assert_eq!(failed, 0);
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "prompts and tokens: owner only");
        }
        let reg = WorkerRegistration {
            worker_id: "w1".into(),
            url: "http://x".into(),
            model: "m".into(),
            aliases: vec![],
            backend: "cpu".into(),
            slots_total: 1,
            context_length: 8,
            api_token: None,
        };
        store.put_worker(WorkerRow {
            reg,
            source: WorkerSource::Registered,
            last_seen_ms: 5,
        });
        store.put_task(TaskRow {
            status: status("running", TaskState::Running),
            terminal: None,
        });
        let mut done = status("done", TaskState::Completed);
        done.finished_at_ms = Some(10);
        store.put_task(TaskRow {
            status: done,
            terminal: Some((7, "{\"type\":\"end\"}".into())),
        });
        store.close();

        let (store, failed) = Store::open(&path).unwrap();
        assert_eq!(failed, 1);
        assert_eq!(store.workers().unwrap().len(), 1);
        let old = store.task("running").unwrap().unwrap();
        assert_eq!(old.status.state, TaskState::Failed);
        assert_eq!(old.status.error.unwrap().code, ErrorCode::ShuttingDown);
        assert!(old.terminal.unwrap().1.contains("\"tokens_out\":2"));
        assert_eq!(store.task("done").unwrap().unwrap().terminal.unwrap().0, 7);
        assert!(store.task("nope").unwrap().is_none());
        let failed = store.recent_tasks(Some(TaskState::Failed), 10).unwrap();
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].task_id, "running");
        assert_eq!(store.recent_tasks(None, 1).unwrap().len(), 1);
        store.prune(11);
        store.flush();
        assert!(store.task("done").unwrap().is_none());
        store.close();
    }
}
