//! The accept loop: hyper's HTTP/1 server with the configured limits (request head size, idle
//! timeout), at most `max_connections` client connections at once (more wait in the listen
//! backlog), and graceful shutdown. `axum::serve` has no setting for any of these.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tower::Service;

use crate::limits::Limits;

/// Resolves once `stop` is true (never, if its sender is gone without saying so).
async fn stopped(mut stop: watch::Receiver<bool>) {
    if stop.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Serve `app` on `listener` until `stop` turns true, then let open connections finish their
/// responses (the caller bounds how long that may take) and return.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    stop: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections as usize));
    // Every connection holds a receiver; `closed()` resolves once all are gone.
    let (open_tx, open_rx) = watch::channel(());
    let idle = Duration::from_millis(limits.idle_timeout_ms);
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            () = stopped(stop.clone()) => break,
        };
        let (tcp, addr) = tokio::select! {
            r = listener.accept() => match r {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = stopped(stop.clone()) => break,
        };
        // Events are small writes: without TCP_NODELAY a token written right after `started`
        // waits for the peer's delayed ACK on a kept-alive connection.
        let _ = tcp.set_nodelay(true);
        let router = app.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo::<SocketAddr>(addr));
            router.clone().call(req)
        });
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(idle)
            .max_buf_size(limits.max_header_bytes)
            .keep_alive(true);
        let (stop, open) = (stop.clone(), open_rx.clone());
        tokio::spawn(async move {
            let (_permit, _open) = (permit, open);
            let conn = http.serve_connection(TokioIo::new(tcp), service);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::trace!(%addr, error = %e, "connection ended");
                    }
                }
                () = stopped(stop) => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    drop(listener);
    drop(open_rx);
    open_tx.closed().await;
}
