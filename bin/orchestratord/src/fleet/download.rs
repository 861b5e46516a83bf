//! A model download on a pool with visible progress: while `models download ID` runs, the
//! pool's progress file is polled (`models progress ID`, every [`POLL`]) and every poll that
//! moved is announced to the tasks queued for the model (`queued`, phase `downloading`, with
//! `bytes_done`/`bytes_total`) and kept for `GET /v2/pools/{name}` (`downloads`).

use std::sync::Arc;
use std::time::Duration;

use llorch_catalog::DownloadProgress;

use super::reconcile::{announce, quick};
use super::transport::{PoolCallError, PoolTransport};
use crate::state::Orchestrator;

/// How often the progress of a download in flight is asked for.
pub const POLL: Duration = Duration::from_millis(500);

/// Run `models download model` on `pool` and report its progress until it ends.
pub(super) async fn download(
    orch: &Arc<Orchestrator>,
    t: &PoolTransport,
    pool: &str,
    model: &str,
    timeout: Duration,
) -> Result<(), PoolCallError> {
    let args = vec!["models".to_string(), "download".into(), model.to_string()];
    let call = t.call::<serde_json::Value>(&args, timeout);
    tokio::pin!(call);
    let progress_args = vec!["models".to_string(), "progress".into(), model.to_string()];
    let mut last: Option<(u64, u64)> = None;
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let result = loop {
        tokio::select! {
            r = &mut call => break r.map(|_| ()),
            _ = tick.tick() => {
                // No progress file yet (resolving the files) or a transient failure: ask again.
                let Ok((p, _)) = t.call::<DownloadProgress>(&progress_args, quick(orch)).await
                else {
                    continue;
                };
                let now = (p.bytes_done, p.bytes_total);
                if last != Some(now) {
                    last = Some(now);
                    set(orch, pool, model, Some(p));
                    announce(orch, model, "downloading", pool, Some(now));
                }
            }
        }
    };
    set(orch, pool, model, None);
    result
}

/// Record (or clear) the progress of `model`'s download on `pool`.
fn set(orch: &Orchestrator, pool: &str, model: &str, p: Option<DownloadProgress>) {
    let mut st = orch.fleet.state();
    if let Some(ps) = st.pools.get_mut(pool) {
        match p {
            Some(p) => {
                ps.downloads.insert(model.to_string(), p);
            }
            None => {
                ps.downloads.remove(model);
            }
        }
    }
}
