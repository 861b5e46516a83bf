//! orchestratord: admits tasks, queues them in two bounded priority classes, places them on
//! registered workers and relays each worker's token stream to clients over SSE.
//!
//! Layout: `admission` (validate + enqueue), `queue` and `registry` (pure state),
//! `scheduler` (placement loop + upkeep), `relay` (one attempt on a worker), `state` (shared
//! state, ending tasks), `store` (SQLite), `http` (routes), `serve` and `limits` (the accept loop
//! and its limits), `openai` (the `/v1` OpenAI-compatible
//! API over the same admission), `dashboard` (the web page and its live stream), `config`,
//! `metrics`, `openapi`, `policy` (the optional Rhai policy hook).

#![forbid(unsafe_code)]

pub mod admission;
pub mod config;
pub mod dashboard;
pub mod durable;
pub mod error;
pub mod fleet;
pub mod http;
pub mod limits;
pub mod metrics;
pub mod openai;
pub mod openapi;
pub mod policy;
pub mod queue;
pub mod registry;
pub mod relay;
pub mod scheduler;
pub mod serve;
pub mod state;
pub mod store;
pub mod task;
pub mod tenancy;
pub mod workers;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::config::Config;
use crate::state::Orchestrator;
use crate::store::Store;

/// How long shutdown waits for open streams to close.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Open the state, bind, and serve until SIGINT/SIGTERM.
pub async fn run(cfg: Config) -> anyhow::Result<()> {
    // a policy script that does not compile stops the start, naming the file and line
    let policy = match &cfg.policy.script {
        Some(_) => Some(policy::Policy::load(&cfg.policy)?),
        None => None,
    };
    let (store, failed) = Store::open(&cfg.db)?;
    if failed > 0 {
        tracing::warn!(
            tasks = failed,
            "tasks left unfinished by the previous run were marked failed"
        );
    }
    let listener = tokio::net::TcpListener::bind(cfg.bind)
        .await
        .with_context(|| format!("cannot bind {}", cfg.bind))?;
    let addr = listener.local_addr()?;
    let orch = Orchestrator::new(cfg, store, policy);
    let restored = workers::restore(&orch);
    let resumed = durable::resume(&orch);
    if resumed > 0 {
        tracing::warn!(
            tasks = resumed,
            "tasks the previous run accepted and had not started are queued again"
        );
    }
    tokio::spawn(scheduler::run(orch.clone()));
    tokio::spawn(scheduler::maintenance(orch.clone()));
    if let Some(p) = &orch.policy {
        tracing::info!(path = %p.path().display(), "policy script loaded");
        tokio::spawn(policy::watch(orch.clone()));
    }
    if orch.fleet.enabled() {
        tokio::spawn(fleet::reconcile::run(orch.clone()));
    }
    tracing::info!(%addr, restored_workers = restored, db = %orch.cfg.db.display(),
        auth = !orch.cfg.api_tokens.is_empty(), "orchestratord listening");
    let app = http::router(orch.clone());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(shutdown_signal(orch.clone(), stop_tx));
    let server = serve::serve(listener, app, orch.cfg.limits.clone(), stop_rx.clone());
    let mut deadline_rx = stop_rx;
    let deadline = async move {
        let _ = deadline_rx.wait_for(|stop| *stop).await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        () = server => {}
        _ = deadline => tracing::warn!("streams still open after the shutdown grace period; exiting"),
    }
    orch.fleet.shutdown();
    orch.store.close();
    Ok(())
}

/// On SIGINT or SIGTERM: end every unfinished task, then tell the server to stop.
async fn shutdown_signal(orch: Arc<Orchestrator>, stop: tokio::sync::watch::Sender<bool>) {
    llorch_http::shutdown_signal().await;
    orch.begin_shutdown();
    orch.wake.notify_one();
    let _ = stop.send(true);
}
