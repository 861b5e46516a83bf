//! Serving [`crate::app`]: bind, register with the orchestrator and heartbeat, stop on
//! SIGTERM/SIGINT (finishing open streams), deregister.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use llorch_wire::tasks::{Secret, WorkerHeartbeat, WorkerRegistration};
use tokio::net::TcpListener;

use crate::config::{OrchestratorConfig, ServerConfig};
use crate::register::Registration;
use crate::routes::AppState;

/// Listen on `addr`.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (port in use? pick another with --port)"))
}

/// What this worker tells the orchestrator when it registers.
fn registration(o: &OrchestratorConfig, server: &ServerConfig, st: &AppState) -> Registration {
    let info = st.backend.info();
    Registration {
        orchestrator_url: o.url.clone(),
        token: o.token.clone(),
        body: WorkerRegistration {
            worker_id: server.worker_id.clone(),
            url: server.advertise_url.clone(),
            model: o.model_id.clone().unwrap_or_else(|| info.name.clone()),
            aliases: if o.model_id.is_some() {
                vec![info.name.clone()]
            } else {
                vec![]
            },
            backend: st.device.backend.to_string(),
            // jobs the backend batches together; queueing beyond that is the orchestrator's job
            slots_total: info.parallel,
            context_length: info.context_length,
            api_token: server.tokens.first().map(|t| Secret(t.to_string())),
        },
    }
}

fn heartbeat(st: &AppState) -> WorkerHeartbeat {
    let load = st.backend.load();
    WorkerHeartbeat {
        active_jobs: load.active,
        queued_jobs: load.queued,
        status: Some(
            if load.failure.is_some() {
                "failed"
            } else {
                "ready"
            }
            .into(),
        ),
        failure: load.failure,
    }
}

/// Serve `state` on `listener` until SIGTERM/SIGINT; registers when `server` names an
/// orchestrator.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    server: &ServerConfig,
) -> Result<()> {
    let app = crate::routes::app(state.clone());
    tracing::info!(
        addr = %server.bind, worker_id = %server.worker_id, auth = server.tokens.required(),
        ready_ms = format!("{:.0}", state.load_time_ms), "worker ready"
    );
    let http = reqwest::Client::new();
    let registration = server
        .orchestrator
        .as_ref()
        .map(|o| registration(o, server, &state));
    let reg_task = registration.clone().map(|r| {
        let st = state.clone();
        tokio::spawn(r.run(http.clone(), move || heartbeat(&st)))
    });
    // Events are small writes: without TCP_NODELAY a token written right after `started` waits
    // for the peer's delayed ACK (up to 40 ms on Linux) on a kept-alive connection.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(llorch_http::shutdown_signal())
        .await?;
    if let Some(t) = reg_task {
        t.abort();
    }
    if let Some(r) = registration {
        r.deregister(&http).await;
    }
    tracing::info!("worker stopped");
    Ok(())
}
