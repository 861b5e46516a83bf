//! Registration with orchestratord: announce after ready, heartbeat, deregister on shutdown.
//! Bodies are the wire types of `llorch_wire::tasks`.

use std::time::Duration;

use llorch_wire::tasks::{self, WorkerHeartbeat, WorkerRegistered, WorkerRegistration};

/// Where to register and what to say.
#[derive(Debug, Clone)]
pub struct Registration {
    pub orchestrator_url: String,
    pub token: Option<String>,
    pub body: WorkerRegistration,
}

impl Registration {
    fn base(&self) -> &str {
        self.orchestrator_url.trim_end_matches('/')
    }

    fn auth(&self, rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        }
    }

    async fn register(&self, http: &reqwest::Client) -> Result<Duration, String> {
        let resp = self
            .auth(http.post(format!("{}{}", self.base(), tasks::REGISTER_PATH)))
            .json(&self.body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("HTTP {}", resp.status()));
        }
        let ack: WorkerRegistered = resp.json().await.map_err(|e| e.to_string())?;
        Ok(Duration::from_millis(
            ack.heartbeat_interval_ms.clamp(100, 60_000),
        ))
    }

    /// Register (retrying with backoff until the orchestrator answers), then heartbeat at the
    /// interval it asks for, with the engine's load; re-register when it forgets us.
    pub async fn run(self, http: reqwest::Client, load: impl Fn() -> WorkerHeartbeat) {
        let mut delay = Duration::from_millis(200);
        let mut interval = loop {
            match self.register(&http).await {
                Ok(i) => {
                    tracing::info!(orchestrator = %self.orchestrator_url, "registered with orchestrator");
                    break i;
                }
                Err(e) => tracing::warn!(error = %e, "registration failed; retrying"),
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        };
        loop {
            tokio::time::sleep(interval).await;
            let url = format!(
                "{}{}",
                self.base(),
                tasks::heartbeat_path(&self.body.worker_id)
            );
            match self.auth(http.post(url)).json(&load()).send().await {
                Ok(r) if r.status().as_u16() == 404 => {
                    tracing::info!("orchestrator forgot this worker; registering again");
                    if let Ok(i) = self.register(&http).await {
                        interval = i;
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e, "heartbeat failed"),
            }
        }
    }

    /// Best-effort deregistration on shutdown.
    pub async fn deregister(&self, http: &reqwest::Client) {
        let url = format!(
            "{}{}",
            self.base(),
            tasks::worker_path(&self.body.worker_id)
        );
        let _ =
            tokio::time::timeout(Duration::from_secs(2), self.auth(http.delete(url)).send()).await;
    }
}
