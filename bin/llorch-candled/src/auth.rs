//! The worker's tokens (`--api-token` / `LLORCH_WORKER_TOKEN`, checked by llorch-http's
//! `require_token`) and the rule that a non-loopback bind needs a token.

pub use llorch_http::auth::{is_loopback, ApiTokens, MIN_TOKEN_LEN};

/// Routes answered without a token: the liveness/readiness probe.
pub const OPEN_PATHS: &[&str] = &[llorch_wire::routes::worker::HEALTH];

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_rule() {
        let t =
            ApiTokens::new(&["alpha-token-0123456".into(), "beta-token-01234567".into()]).unwrap();
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
