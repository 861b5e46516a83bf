//! Bearer tokens: reading `Authorization: Bearer`, comparing in constant time, the 401 answer,
//! and [`require_token`], the middleware of a daemon whose only callers are token holders
//! (the worker). Neither the presented nor an expected token is ever logged.

use std::net::IpAddr;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use llorch_wire::ErrorCode;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::ApiError;

/// Shortest token accepted: a guessable token is no protection.
pub const MIN_TOKEN_LEN: usize = 16;

/// The token of `Authorization: Bearer <token>` (trimmed), if the header has that form.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
}

/// Whether `presented` equals one of `tokens`, in time independent of where they differ (both
/// sides are hashed first, then compared in constant time; every token is checked).
pub fn token_matches(presented: &str, tokens: &[String]) -> bool {
    let p = Sha256::digest(presented.as_bytes());
    tokens.iter().fold(0u8, |ok, t| {
        ok | Sha256::digest(t.as_bytes()).ct_eq(&p).unwrap_u8()
    }) == 1
}

/// 401 `UNAUTHORIZED` with `WWW-Authenticate: Bearer`.
pub fn unauthorized(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::Unauthorized, message)
        .with_header(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))
}

/// The tokens any of which a request may present; empty = no authentication.
#[derive(Clone, Default)]
pub struct ApiTokens(Vec<String>);

impl std::fmt::Debug for ApiTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiTokens({} tokens)", self.0.len())
    }
}

impl ApiTokens {
    /// Tokens from the command line (blank ones dropped); each must be at least
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

    /// The first token (the one a worker hands to the orchestrator at registration).
    pub fn first(&self) -> Option<&str> {
        self.0.first().map(String::as_str)
    }

    /// Whether `presented` is one of the tokens (see [`token_matches`]).
    pub fn matches(&self, presented: &str) -> bool {
        token_matches(presented, &self.0)
    }
}

/// Whether `host` (a `--host` value) is a loopback address or `localhost`.
pub fn is_loopback(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost") || h.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// What [`require_token`] checks.
#[derive(Clone, Debug)]
pub struct TokenGate {
    pub tokens: ApiTokens,
    /// Paths answered without a token (probes).
    pub open_paths: &'static [&'static str],
    /// What to send, named in the 401 for a request without a token (e.g. the variable).
    pub hint: &'static str,
}

/// Middleware: every route except the gate's open paths needs `Authorization: Bearer <token>`
/// when tokens are configured; otherwise 401 `UNAUTHORIZED` with `WWW-Authenticate: Bearer`.
pub async fn require_token(
    State(gate): State<std::sync::Arc<TokenGate>>,
    req: Request,
    next: Next,
) -> Response {
    if !gate.tokens.required() || gate.open_paths.contains(&req.uri().path()) {
        return next.run(req).await;
    }
    let message = match bearer_token(req.headers()) {
        Some(t) if gate.tokens.matches(t) => return next.run(req).await,
        Some(_) => "the API token is not valid".to_string(),
        None => format!(
            "missing API token: send Authorization: Bearer <{}>",
            gate.hint
        ),
    };
    tracing::warn!(path = %req.uri().path(), "request without a valid token rejected");
    unauthorized(message).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare() {
        let t =
            ApiTokens::new(&["alpha-token-0123456".into(), "beta-token-01234567".into()]).unwrap();
        assert!(t.matches("beta-token-01234567"));
        assert!(!t.matches("beta-token-0123456"));
        assert!(!t.matches(""));
        assert_eq!(t.first(), Some("alpha-token-0123456"));
        assert!(!format!("{t:?}").contains("alpha"));
        assert!(ApiTokens::new(&["short".into()]).is_err());
        assert!(!ApiTokens::new(&[String::new()]).unwrap().required());
        for h in ["127.0.0.1", "localhost", "::1", "[::1]", "127.0.0.2"] {
            assert!(is_loopback(h), "{h}");
        }
        for h in ["0.0.0.0", "192.168.1.5", "::", "mac.home.arpa"] {
            assert!(!is_loopback(h), "{h}");
        }
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer  abc "),
        );
        assert_eq!(bearer_token(&h), Some("abc"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer_token(&h), None);
    }
}
