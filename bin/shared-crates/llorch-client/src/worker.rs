//! Typed client for one worker (`llorch-candled`).

use futures::stream::{Stream, StreamExt};
use llorch_wire::routes::worker as routes;
use llorch_wire::{
    CancelRequest, ErrorEnvelope, ExecuteRequest, TokenizeRequest, TokenizeResponse, WorkerEvent,
    WorkerHealth,
};

use crate::sse::SseParser;

/// Why a call to a worker failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Connection refused, reset, timed out, or the body broke off.
    #[error("worker {url} unreachable: {source}")]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// The worker answered with an error envelope.
    #[error("worker answered {status}: {} ({})", .envelope.error.message, .envelope.error.code)]
    Api {
        status: u16,
        envelope: ErrorEnvelope,
        retry_after_s: Option<u64>,
    },
    /// The worker answered something that is not our protocol.
    #[error("unexpected answer from worker: {0}")]
    Protocol(String),
}

/// Client for one worker base URL (e.g. `http://127.0.0.1:8001`).
#[derive(Clone)]
pub struct WorkerClient {
    base: String,
    http: reqwest::Client,
    /// Bearer token for workers started with `--api-token`.
    token: Option<String>,
}

impl std::fmt::Debug for WorkerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerClient")
            .field("base", &self.base)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .finish()
    }
}

impl WorkerClient {
    /// A client for `base` (scheme optional: `127.0.0.1:8001` becomes `http://127.0.0.1:8001`).
    pub fn new(base: &str) -> Self {
        Self::with_client(base, reqwest::Client::new())
    }

    /// Share a `reqwest::Client` (connection pool) across workers.
    pub fn with_client(base: &str, http: reqwest::Client) -> Self {
        let base = if base.contains("://") {
            base.to_string()
        } else {
            format!("http://{base}")
        };
        Self {
            base: base.trim_end_matches('/').to_string(),
            http,
            token: None,
        }
    }

    /// Send `Authorization: Bearer <token>` on every call (workers with `--api-token`).
    pub fn with_token(mut self, token: Option<String>) -> Self {
        self.token = token.filter(|t| !t.is_empty());
        self
    }

    fn post(&self, path: &str) -> reqwest::RequestBuilder {
        let rb = self.http.post(format!("{}{path}", self.base));
        match &self.token {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        }
    }

    /// The base URL.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn unreachable(&self, source: reqwest::Error) -> ClientError {
        ClientError::Unreachable {
            url: self.base.clone(),
            source,
        }
    }

    async fn check(&self, resp: reqwest::Response) -> Result<reqwest::Response, ClientError> {
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let retry_after_s = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let body = resp.text().await.map_err(|e| self.unreachable(e))?;
        match serde_json::from_str::<ErrorEnvelope>(&body) {
            Ok(envelope) => Err(ClientError::Api {
                status: status.as_u16(),
                envelope,
                retry_after_s,
            }),
            Err(_) => Err(ClientError::Protocol(format!("HTTP {status}: {body}"))),
        }
    }

    /// `GET /health`.
    pub async fn health(&self) -> Result<WorkerHealth, ClientError> {
        let resp = self
            .http
            .get(format!("{}{}", self.base, routes::HEALTH))
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        let resp = self.check(resp).await?;
        resp.json()
            .await
            .map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// `POST /tokenize`.
    pub async fn tokenize(&self, req: &TokenizeRequest) -> Result<TokenizeResponse, ClientError> {
        let resp = self
            .post(routes::TOKENIZE)
            .json(req)
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        let resp = self.check(resp).await?;
        resp.json()
            .await
            .map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// `POST /cancel`; `Ok(false)` when the worker does not know the job (404).
    pub async fn cancel(&self, job_id: &str) -> Result<bool, ClientError> {
        let resp = self
            .post(routes::CANCEL)
            .json(&CancelRequest {
                job_id: job_id.to_string(),
            })
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        if resp.status().as_u16() == 404 {
            return Ok(false);
        }
        self.check(resp).await?;
        Ok(true)
    }

    /// `POST /execute` with extra headers (e.g. `X-Correlation-Id`); yields events as they arrive.
    /// The stream ends after the terminal event; a connection that breaks before it yields
    /// `Err(Unreachable)` (the caller decides whether that is `WORKER_LOST`). Dropping the stream
    /// closes the connection, which cancels the job on the worker.
    pub async fn execute_with_headers(
        &self,
        req: &ExecuteRequest,
        headers: &[(&str, &str)],
    ) -> Result<impl Stream<Item = Result<WorkerEvent, ClientError>> + Send + 'static, ClientError>
    {
        let mut rb = self.post(routes::EXECUTE).json(req);
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        let resp = rb.send().await.map_err(|e| self.unreachable(e))?;
        let resp = self.check(resp).await?;
        let url = self.base.clone();
        let bytes = resp.bytes_stream();
        let state = (
            bytes,
            SseParser::new(),
            std::collections::VecDeque::<WorkerEvent>::new(),
            false,
        );
        Ok(futures::stream::unfold(
            state,
            move |(mut bytes, mut parser, mut pending, done)| {
                let url = url.clone();
                async move {
                    loop {
                        if let Some(ev) = pending.pop_front() {
                            let terminal = ev.is_terminal();
                            if terminal {
                                pending.clear();
                            }
                            return Some((Ok(ev), (bytes, parser, pending, terminal)));
                        }
                        if done {
                            return None;
                        }
                        match bytes.next().await {
                            Some(Ok(chunk)) => {
                                for sse in parser.push(&chunk) {
                                    match serde_json::from_str::<WorkerEvent>(&sse.data) {
                                        Ok(ev) => pending.push_back(ev),
                                        Err(e) => {
                                            let err = ClientError::Protocol(format!(
                                                "bad event {:?}: {e}",
                                                sse.data
                                            ));
                                            return Some((
                                                Err(err),
                                                (bytes, parser, pending, true),
                                            ));
                                        }
                                    }
                                }
                            }
                            Some(Err(e)) => {
                                let err = ClientError::Unreachable { url, source: e };
                                return Some((Err(err), (bytes, parser, pending, true)));
                            }
                            None => {
                                let err = ClientError::Protocol(
                                    "stream ended without a terminal event".into(),
                                );
                                return Some((Err(err), (bytes, parser, pending, true)));
                            }
                        }
                    }
                }
            },
        ))
    }

    /// `POST /execute`; see [`WorkerClient::execute_with_headers`].
    pub async fn execute(
        &self,
        req: &ExecuteRequest,
    ) -> Result<impl Stream<Item = Result<WorkerEvent, ClientError>> + Send + 'static, ClientError>
    {
        self.execute_with_headers(req, &[]).await
    }
}
