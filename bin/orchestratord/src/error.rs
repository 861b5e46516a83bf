//! `ApiError`: an HTTP status plus the shared error envelope (and headers such as
//! `Retry-After`); defined once in llorch-http for both daemons.

pub use llorch_http::ApiError;
