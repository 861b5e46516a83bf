//! Test harness: a real `orchestratord` process, `fault-worker` processes, an SSE reader.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use llorch_client::SseParser;
use llorch_testkit::{free_port, http_get};
use serde_json::{json, Value};

/// A running orchestratord; killed on drop.
pub struct Orchd {
    pub child: Child,
    pub port: u16,
    pub base: String,
    pub db: PathBuf,
    pub log: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    _dir: Option<tempfile::TempDir>,
}

impl Orchd {
    /// Start with a fresh database and `args`.
    pub fn start(args: &[&str]) -> Orchd {
        Self::start_env(args, &[])
    }

    /// Start with extra environment variables.
    pub fn start_env(args: &[&str], env: &[(&str, &str)]) -> Orchd {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("orchd.sqlite");
        let mut o = Self::spawn(
            &db,
            args.iter().map(|s| s.to_string()).collect(),
            env_vec(env),
            free_port(),
        );
        o._dir = Some(dir);
        o
    }

    fn spawn(db: &Path, args: Vec<String>, env: Vec<(String, String)>, port: u16) -> Orchd {
        let log = std::env::temp_dir().join(format!("orchd-test-{port}.log"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_orchestratord"));
        cmd.args(["--bind", &format!("127.0.0.1:{port}"), "--db"])
            .arg(db)
            .args(&args)
            .env_remove("LLORCH_API_TOKEN")
            .env("RUST_LOG", "orchestratord=debug")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        for (k, v) in &env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn orchestratord");
        let mut o = Orchd {
            child,
            port,
            base: format!("http://127.0.0.1:{port}"),
            db: db.to_path_buf(),
            log,
            args,
            env,
            _dir: None,
        };
        o.wait_ready();
        o
    }

    fn wait_ready(&mut self) {
        let start = Instant::now();
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("orchestratord exited ({st}):\n{}", self.log_text());
            }
            if let Ok((200, _)) = http_get(&format!("127.0.0.1:{}", self.port), "/health") {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "orchestratord not up:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kill (SIGKILL) and start again on the same port and database.
    pub fn restart_hard(mut self) -> Orchd {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let dir = self._dir.take();
        let mut o = Self::spawn(&self.db, self.args.clone(), self.env.clone(), self.port);
        o._dir = dir;
        o
    }

    /// The process's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `base` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

impl Drop for Orchd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn env_vec(env: &[(&str, &str)]) -> Vec<(String, String)> {
    env.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The `fault-worker` binary (llorch-candled's routes over a fault-injecting backend), built by
/// the same `cargo test --workspace` / `cargo build --workspace --bins` as these tests.
fn fault_worker_bin() -> PathBuf {
    let bin = llorch_testkit::bin_dir().join("fault-worker");
    assert!(
        bin.is_file(),
        "{} not built: run `cargo build --release --workspace --bins`",
        bin.display()
    );
    bin
}

/// A `fault-worker` process; killed on drop.
pub struct FaultWorker {
    pub child: Child,
    pub port: u16,
}

impl FaultWorker {
    /// Start `fault-worker --mode MODE --worker-id ID` plus `extra`, and wait for `/health`.
    pub fn start(mode: &str, id: &str, extra: &[&str]) -> FaultWorker {
        let port = free_port();
        let child = Command::new(fault_worker_bin())
            .args([
                "--mode",
                mode,
                "--port",
                &port.to_string(),
                "--worker-id",
                id,
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn fault-worker");
        let start = Instant::now();
        while !matches!(
            http_get(&format!("127.0.0.1:{port}"), "/health"),
            Ok((200, _))
        ) {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "fault-worker not up"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        FaultWorker { child, port }
    }

    /// Base URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for FaultWorker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The model name fault workers serve by default.
pub const FAULT_MODEL: &str = "SmolLM2-135M-Instruct.Q4_1";

/// An HTTP client with a sane timeout.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
}

/// Register a worker through the API.
pub async fn register(o: &Orchd, id: &str, url: &str, model: &str, slots: u32, ctx: u32) {
    let body = json!({"worker_id": id, "url": url, "model": model, "backend": "cpu",
        "slots_total": slots, "context_length": ctx});
    let r = client()
        .post(o.url("/v2/workers/register"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
}

/// POST /v2/tasks: (status, headers, JSON body).
pub async fn submit(o: &Orchd, body: Value) -> (u16, reqwest::header::HeaderMap, Value) {
    let r = client()
        .post(o.url("/v2/tasks"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let (status, headers) = (r.status().as_u16(), r.headers().clone());
    (status, headers, r.json().await.unwrap_or(Value::Null))
}

/// Submit and expect 202; returns the task id.
pub async fn submit_ok(o: &Orchd, body: Value) -> String {
    let (status, _, v) = submit(o, body).await;
    assert_eq!(status, 202, "{v}");
    v["task_id"].as_str().unwrap().to_string()
}

/// GET JSON.
pub async fn get_json(url: &str) -> (u16, Value) {
    let r = client().get(url).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// The Prometheus text at `base` + `/metrics` (orchestratord's or a worker's), with a bearer
/// token when given.
pub async fn scrape(base: &str, token: Option<&str>) -> String {
    let mut r = client().get(format!("{base}/metrics"));
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    r.send().await.unwrap().text().await.unwrap()
}

/// The sum over the series of `family` (exact name) whose line contains `labels` ("" for all).
pub fn metric_sum(text: &str, family: &str, labels: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(family)
                .is_some_and(|rest| rest.starts_with(['{', ' ']))
                && l.contains(labels)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// One received SSE event.
#[derive(Debug, Clone)]
pub struct Ev {
    pub id: Option<u64>,
    pub kind: String,
    pub data: Value,
    pub at: Instant,
}

/// An open SSE stream of a task.
pub struct EventStream {
    body: futures::stream::BoxStream<'static, reqwest::Result<axum::body::Bytes>>,
    parser: SseParser,
    pending: std::collections::VecDeque<Ev>,
}

impl EventStream {
    /// Open `GET /v2/tasks/{id}/events`, optionally resuming after `last`.
    pub async fn open(o: &Orchd, task_id: &str, last: Option<u64>) -> EventStream {
        Self::open_at(&o.base, task_id, last).await
    }

    /// [`EventStream::open`] on the orchestratord at `base` (e.g. from a spawned task).
    pub async fn open_at(base: &str, task_id: &str, last: Option<u64>) -> EventStream {
        // No total timeout: streams may run long; `next` bounds the wait per event instead.
        let sse_client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let mut rb = sse_client.get(format!("{base}/v2/tasks/{task_id}/events"));
        if let Some(l) = last {
            rb = rb.header("Last-Event-ID", l.to_string());
        }
        let r = rb.send().await.unwrap();
        assert_eq!(r.status(), 200);
        EventStream {
            body: r.bytes_stream().boxed(),
            parser: SseParser::new(),
            pending: Default::default(),
        }
    }

    /// Next event, or `None` when the stream ended.
    pub async fn next(&mut self) -> Option<Ev> {
        loop {
            if let Some(ev) = self.pending.pop_front() {
                return Some(ev);
            }
            let chunk = tokio::time::timeout(Duration::from_secs(60), self.body.next())
                .await
                .expect("event within 60 s")?;
            let chunk = chunk.ok()?;
            for e in self.parser.push(&chunk) {
                let data: Value = serde_json::from_str(&e.data).unwrap();
                self.pending.push_back(Ev {
                    id: e.id.and_then(|i| i.parse().ok()),
                    kind: e.event,
                    data,
                    at: Instant::now(),
                });
            }
        }
    }

    /// Every remaining event until the stream ends.
    pub async fn rest(&mut self) -> Vec<Ev> {
        let mut out = Vec::new();
        while let Some(ev) = self.next().await {
            out.push(ev);
        }
        out
    }
}

/// All events of a task, from the start to the end of the stream.
pub async fn all_events(o: &Orchd, task_id: &str) -> Vec<Ev> {
    EventStream::open(o, task_id, None).await.rest().await
}

/// Assert exactly one terminal event, last; return it.
pub fn single_terminal(evs: &[Ev]) -> &Ev {
    let terminals: Vec<&Ev> = evs
        .iter()
        .filter(|e| e.kind == "end" || e.kind == "error")
        .collect();
    assert_eq!(terminals.len(), 1, "exactly one terminal event: {evs:#?}");
    let last = evs.last().unwrap();
    assert!(
        last.kind == "end" || last.kind == "error",
        "terminal event comes last"
    );
    last
}

/// Concatenated token texts and ids.
pub fn tokens(evs: &[Ev]) -> (String, Vec<u64>) {
    let toks: Vec<&Ev> = evs.iter().filter(|e| e.kind == "token").collect();
    (
        toks.iter().map(|e| e.data["t"].as_str().unwrap()).collect(),
        toks.iter()
            .map(|e| e.data["id"].as_u64().unwrap())
            .collect(),
    )
}

/// Poll `GET /v2/tasks/{id}` until `pred` holds (10 s max).
pub async fn wait_task(o: &Orchd, id: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let (_, v) = get_json(&o.url(&format!("/v2/tasks/{id}"))).await;
        if pred(&v) {
            return v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "task {id} never matched; last: {v}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
