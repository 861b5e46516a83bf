//! A small client of orchestratord's `/v2` API: submit, status, cancel, list, capabilities and
//! a task's SSE events. Sends `Authorization: Bearer $LLORCH_API_TOKEN` when that is set.

use std::collections::VecDeque;

use futures::{Stream, StreamExt};
use llorch_client::SseParser;
use llorch_wire::tasks::{
    Capabilities, TaskAccepted, TaskEvent, TaskList, TaskRequest, TaskStatus,
};
use llorch_wire::ErrorEnvelope;
use serde::de::DeserializeOwned;

use crate::commands::infer::error_chain;
use crate::error::CliError;

/// An orchestratord at one base URL.
#[derive(Debug, Clone)]
pub struct OrchClient {
    base: String,
    http: reqwest::Client,
    token: Option<String>,
}

impl OrchClient {
    /// `url` may lack the scheme (`host:port`).
    pub fn new(url: &str) -> Self {
        let url = url.trim_end_matches('/');
        let base = if url.contains("://") {
            url.to_string()
        } else {
            format!("http://{url}")
        };
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(5))
            .build()
            .expect("HTTP client");
        let token = std::env::var("LLORCH_API_TOKEN")
            .ok()
            .filter(|t| !t.trim().is_empty());
        Self { base, http, token }
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn error(&self, message: impl Into<String>) -> CliError {
        CliError::Orchestrator {
            url: self.base.clone(),
            message: message.into(),
        }
    }

    async fn send(&self, rb: reqwest::RequestBuilder) -> Result<reqwest::Response, CliError> {
        let rb = match &self.token {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        };
        let resp = rb
            .send()
            .await
            .map_err(|e| self.error(format!("unreachable: {}", error_chain(&e))))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap_or_default();
        Err(match serde_json::from_str::<ErrorEnvelope>(&body) {
            Ok(env) => self.error(format!(
                "HTTP {status}: {}: {}{}",
                env.error.code,
                env.error.message,
                env.error
                    .retry_after_ms
                    .map(|ms| format!(" (retry in {ms} ms)"))
                    .unwrap_or_default()
            )),
            Err(_) => self.error(format!("HTTP {status}: {}", body.trim())),
        })
    }

    async fn json<T: DeserializeOwned>(&self, rb: reqwest::RequestBuilder) -> Result<T, CliError> {
        self.send(rb)
            .await?
            .json()
            .await
            .map_err(|e| self.error(format!("unexpected answer: {e}")))
    }

    /// `GET path?query` as JSON.
    pub async fn get_json<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<T, CliError> {
        let url = format!("{}{path}", self.base);
        self.json(self.http.get(url).query(query)).await
    }

    /// `method path` with a JSON body (`POST`, `PUT`), answered with JSON.
    pub async fn send_json<B: serde::Serialize, T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, CliError> {
        let url = format!("{}{path}", self.base);
        let mut rb = self.http.request(method, url);
        if let Some(b) = body {
            rb = rb.json(b);
        }
        self.json(rb).await
    }

    /// `POST /v2/tasks`.
    pub async fn submit(&self, req: &TaskRequest) -> Result<TaskAccepted, CliError> {
        let url = format!("{}/v2/tasks", self.base);
        self.json(self.http.post(url).json(req)).await
    }

    /// `GET /v2/tasks/{id}`.
    pub async fn status(&self, id: &str) -> Result<TaskStatus, CliError> {
        let url = format!("{}/v2/tasks/{id}", self.base);
        self.json(self.http.get(url)).await
    }

    /// `POST /v2/tasks/{id}/cancel`.
    pub async fn cancel(&self, id: &str) -> Result<(), CliError> {
        let url = format!("{}/v2/tasks/{id}/cancel", self.base);
        self.send(self.http.post(url)).await.map(|_| ())
    }

    /// `GET /v2/tasks?state=&limit=`.
    pub async fn list(&self, state: Option<&str>, limit: u32) -> Result<TaskList, CliError> {
        let mut q = vec![("limit", limit.to_string())];
        if let Some(s) = state {
            q.push(("state", s.to_string()));
        }
        let url = format!("{}/v2/tasks", self.base);
        self.json(self.http.get(url).query(&q)).await
    }

    /// `GET /v2/meta/capabilities`.
    /// `GET /v2/pools` as JSON.
    pub async fn pools(&self) -> Result<serde_json::Value, CliError> {
        self.json(self.http.get(format!("{}/v2/pools", self.base)))
            .await
    }

    /// `POST /v2/pools/{name}/drain` (or `undrain`).
    pub async fn drain(&self, pool: &str, drain: bool) -> Result<serde_json::Value, CliError> {
        let verb = if drain { "drain" } else { "undrain" };
        self.json(
            self.http
                .post(format!("{}/v2/pools/{pool}/{verb}", self.base)),
        )
        .await
    }

    /// `GET /v2/meta/capabilities`.
    pub async fn capabilities(&self) -> Result<Capabilities, CliError> {
        let url = format!("{}/v2/meta/capabilities", self.base);
        self.json(self.http.get(url)).await
    }

    /// The model to use: `model`, else the only one served (a usage error names the choices).
    pub async fn pick_model(&self, model: Option<String>) -> Result<String, CliError> {
        if let Some(m) = model {
            return Ok(m);
        }
        let models: Vec<String> = self
            .capabilities()
            .await?
            .models
            .into_iter()
            .filter(|m| m.workers_ready > 0)
            .map(|m| m.model)
            .collect();
        match models.as_slice() {
            [one] => Ok(one.clone()),
            [] => Err(CliError::Usage(format!(
                "{} serves no model yet (no ready worker); start one with --orchestrator-url {}",
                self.base, self.base
            ))),
            many => Err(CliError::Usage(format!(
                "--model is required: {} serves {}",
                self.base,
                many.join(", ")
            ))),
        }
    }

    /// `GET /v2/tasks/{id}/events`: the task's events until (and with) the terminal one.
    pub async fn events(
        &self,
        id: &str,
    ) -> Result<impl Stream<Item = Result<TaskEvent, CliError>>, CliError> {
        let url = format!("{}/v2/tasks/{id}/events", self.base);
        let resp = self.send(self.http.get(url)).await?;
        let me = self.clone();
        let state = (
            resp.bytes_stream().boxed(),
            SseParser::new(),
            VecDeque::new(),
            false,
        );
        Ok(futures::stream::unfold(
            state,
            move |(mut body, mut parser, mut pending, done)| {
                let me = me.clone();
                async move {
                    loop {
                        if let Some(ev) = pending.pop_front() {
                            let end = matches!(ev, TaskEvent::End { .. } | TaskEvent::Error { .. });
                            return Some((Ok(ev), (body, parser, pending, end)));
                        }
                        if done {
                            return None;
                        }
                        let err = match body.next().await {
                            Some(Ok(chunk)) => {
                                for e in parser.push(&chunk) {
                                    match serde_json::from_str::<TaskEvent>(&e.data) {
                                        Ok(ev) => pending.push_back(ev),
                                        Err(err) => {
                                            tracing::debug!(%err, data = %e.data, "skipped an event")
                                        }
                                    }
                                }
                                continue;
                            }
                            Some(Err(e)) => format!("event stream broke: {}", error_chain(&e)),
                            None => "event stream ended without a terminal event".to_string(),
                        };
                        return Some((Err(me.error(err)), (body, parser, pending, true)));
                    }
                }
            },
        ))
    }
}
