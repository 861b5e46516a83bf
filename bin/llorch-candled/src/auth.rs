//! Bearer-token authentication of the worker's routes (`--api-token` / `LLORCH_WORKER_TOKEN`)
//! and the rule that a non-loopback bind needs a token.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use llorch_wire::{ErrorCode, ErrorEnvelope};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Routes answered without a token: the liveness/readiness probe.
const OPEN_PATHS: &[&str] = &["/health"];

/// Shortest token accepted: a guessable token is no protection.
pub const MIN_TOKEN_LEN: usize = 16;

/// The tokens any of which a request may present; empty = no authentication.
#[derive(Clone, Default)]
pub struct ApiTokens(Vec<String>);

impl std::fmt::Debug for ApiTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiTokens({} tokens)", self.0.len())
    }
}

impl ApiTokens {
    /// Tokens from the command line (empty strings dropped); each must be at least
    /// [`MIN_TOKEN_LEN`] characters.
    pub fn new(tokens: &[String]) -> anyhow::Result<Self> {
        let tokens: Vec<String> = tokens
            .iter()
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .collect();
        if let Some(i) = tokens.iter().position(|t| t.len() < MIN_TOKEN_LEN) {
            anyhow::bail!(
                "--api-token: token {} is {} characters long; use at least {MIN_TOKEN_LEN} characters (e.g. `openssl rand -hex 32`)",
                i + 1,
                tokens[i].len()
            );
        }
        Ok(Self(tokens))
    }

    /// Whether requests must carry a token.
    pub fn required(&self) -> bool {
        !self.0.is_empty()
    }

    /// The token this worker hands to the orchestrator at registration (the first one).
    pub fn first(&self) -> Option<&str> {
        self.0.first().map(String::as_str)
    }

    /// Whether `presented` equals one of the tokens, in time independent of where they differ
    /// (both sides are hashed first, then compared in constant time; every token is checked).
    pub fn matches(&self, presented: &str) -> bool {
        let p = Sha256::digest(presented.as_bytes());
        self.0.iter().fold(0u8, |ok, t| {
            ok | Sha256::digest(t.as_bytes()).ct_eq(&p).unwrap_u8()
        }) == 1
    }
}

/// Whether `host` (the `--host` value) is a loopback address or `localhost`.
pub fn is_loopback(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost") || h.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Refuse to serve a non-loopback address without a token: anyone on the network could run
/// and cancel jobs.
pub fn check_bind(host: &str, tokens: &ApiTokens) -> anyhow::Result<()> {
    if !is_loopback(host) && !tokens.required() {
        anyhow::bail!(
            "refusing to listen on {host} without an API token: anyone who can reach it could run and cancel jobs; \
             set --api-token or LLORCH_WORKER_TOKEN (or bind 127.0.0.1)"
        );
    }
    Ok(())
}

/// Middleware: every route except [`OPEN_PATHS`] needs `Authorization: Bearer <token>` when
/// tokens are configured; otherwise 401 `UNAUTHORIZED` with `WWW-Authenticate: Bearer`.
/// Neither the presented nor the expected token is ever logged.
pub async fn require_token(
    State(tokens): State<Arc<ApiTokens>>,
    req: Request,
    next: Next,
) -> Response {
    if !tokens.required() || OPEN_PATHS.contains(&req.uri().path()) {
        return next.run(req).await;
    }
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    let message = match presented {
        Some(t) if tokens.matches(t) => return next.run(req).await,
        Some(_) => "the worker API token is not valid",
        None => "missing worker API token: send Authorization: Bearer <LLORCH_WORKER_TOKEN>",
    };
    tracing::warn!(path = %req.uri().path(), "request without a valid worker token rejected");
    let mut resp = crate::routes::error(ErrorEnvelope::new(ErrorCode::Unauthorized, message));
    resp.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_and_bind_rule() {
        let t =
            ApiTokens::new(&["alpha-token-0123456".into(), "beta-token-01234567".into()]).unwrap();
        assert!(t.matches("beta-token-01234567"));
        assert!(!t.matches("beta-token-0123456"));
        assert!(!t.matches(""));
        assert_eq!(t.first(), Some("alpha-token-0123456"));
        assert!(!format!("{t:?}").contains("alpha"));
        assert!(ApiTokens::new(&["short".into()]).is_err());
        assert!(!ApiTokens::new(&[String::new()]).unwrap().required());
        let none = ApiTokens::default();
        for h in ["127.0.0.1", "localhost", "::1", "[::1]", "127.0.0.2"] {
            assert!(check_bind(h, &none).is_ok(), "{h}");
        }
        for h in ["0.0.0.0", "192.168.1.5", "::", "mac.home.arpa"] {
            let e = check_bind(h, &none).unwrap_err().to_string();
            assert!(e.contains("LLORCH_WORKER_TOKEN"), "{e}");
            assert!(check_bind(h, &t).is_ok());
        }
    }
}
