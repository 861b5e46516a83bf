//! llorch-http: the HTTP glue both daemons (orchestratord and llorch-candled) share, written
//! once: an error envelope as a response ([`ApiError`]), JSON bodies with field errors
//! ([`parse_json`]), correlation ids ([`correlation`]), the request body limit
//! ([`body_limit`]), bearer tokens ([`auth`]), envelope answers for unknown routes and wrong
//! methods ([`fallback`]), the shutdown signal ([`shutdown_signal`]) and logging ([`logging`]).
#![forbid(unsafe_code)]

pub mod auth;
pub mod correlation;
pub mod error;
pub mod fallback;
pub mod limits;
pub mod logging;
mod shutdown;

pub use auth::{bearer_token, token_matches, ApiTokens};
pub use correlation::{CorrelationId, CORRELATION_HEADER};
pub use error::{error_response, parse_json, ApiError, Shape};
pub use limits::{body_limit, BodyLimit};
pub use logging::LogFormat;
pub use shutdown::shutdown_signal;
