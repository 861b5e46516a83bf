//! Registration with orchestratord: announce after ready, heartbeat, deregister on shutdown.

use std::time::Duration;

use serde_json::json;

/// What the orchestrator needs to route to this worker.
#[derive(Debug, Clone)]
pub struct Registration {
    pub orchestrator_url: String,
    pub worker_id: String,
    pub url: String,
    pub model: String,
    pub backend: String,
    pub slots_total: u32,
    pub context_length: u32,
}

impl Registration {
    fn base(&self) -> String {
        self.orchestrator_url.trim_end_matches('/').to_string()
    }

    /// Register, retrying with backoff until the orchestrator answers; then heartbeat forever.
    pub async fn run(self, http: reqwest::Client) {
        let body = json!({
            "worker_id": self.worker_id, "url": self.url, "model": self.model,
            "backend": self.backend, "slots_total": self.slots_total, "context_length": self.context_length,
        });
        let mut delay = Duration::from_millis(200);
        loop {
            match http
                .post(format!("{}/v2/workers/register", self.base()))
                .json(&body)
                .send()
                .await
            {
                Ok(r) if r.status().is_success() => {
                    tracing::info!(orchestrator = %self.orchestrator_url, "registered with orchestrator");
                    break;
                }
                Ok(r) => {
                    tracing::warn!(status = %r.status(), "orchestrator refused registration; retrying")
                }
                Err(e) => tracing::warn!(error = %e, "orchestrator unreachable; retrying"),
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
        loop {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let url = format!("{}/v2/workers/{}/heartbeat", self.base(), self.worker_id);
            match http.post(url).json(&body).send().await {
                Ok(r) if r.status().as_u16() == 404 => {
                    // the orchestrator forgot us (restart without state): register again
                    let _ = http
                        .post(format!("{}/v2/workers/register", self.base()))
                        .json(&body)
                        .send()
                        .await;
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e, "heartbeat failed"),
            }
        }
    }

    /// Best-effort deregistration on shutdown.
    pub async fn deregister(&self, http: &reqwest::Client) {
        let url = format!("{}/v2/workers/{}", self.base(), self.worker_id);
        let _ = tokio::time::timeout(Duration::from_secs(2), http.delete(url).send()).await;
    }
}
