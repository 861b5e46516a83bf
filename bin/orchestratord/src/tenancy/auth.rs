//! Who is calling: an admin (an `--api-token`, or anyone when no token is configured) or a
//! tenant (a tenant key). Tenant keys reach only the task, OpenAI, capabilities and usage
//! routes; everything else needs an admin.

use std::net::SocketAddr;
use std::sync::Arc;

use llorch_wire::tenancy::DEFAULT_TENANT;
use llorch_wire::ErrorCode;

use super::keys;
use crate::error::ApiError;
use crate::state::Orchestrator;

/// The authenticated caller of a request (a request extension set by the auth middleware).
#[derive(Debug, Clone)]
pub struct Caller {
    /// The tenant tasks are submitted for (`default` without a tenant key).
    pub tenant: Arc<str>,
    /// The tenant key used, by id.
    pub key_id: Option<String>,
    /// May use admin routes and see every tenant's tasks.
    pub admin: bool,
    /// `admin-token`, `open` (no token configured) or `tenant-key`.
    pub actor: &'static str,
    /// The client's address.
    pub source: Option<SocketAddr>,
}

impl Caller {
    /// A caller of the default tenant.
    pub fn anonymous(admin: bool, actor: &'static str, source: Option<SocketAddr>) -> Self {
        Self {
            tenant: Arc::from(DEFAULT_TENANT),
            key_id: None,
            admin,
            actor,
            source,
        }
    }

    /// Whether this caller may see a task of `tenant` (a task without one is the default
    /// tenant's).
    pub fn may_see(&self, tenant: Option<&str>) -> bool {
        self.admin || tenant.unwrap_or(DEFAULT_TENANT) == &*self.tenant
    }

    /// The tenant a tenant caller is restricted to (`None` for admins).
    pub fn only_tenant(&self) -> Option<&str> {
        (!self.admin).then_some(&*self.tenant)
    }
}

/// Routes a tenant key may use.
pub fn tenant_may_use(path: &str) -> bool {
    path == "/v2/tasks"
        || path.starts_with("/v2/tasks/")
        || path.starts_with("/v1/")
        || path == "/v2/meta/capabilities"
        || path == "/v2/usage"
}

/// Authenticate a request to `path` that presented `bearer` (if any).
pub fn authenticate(
    orch: &Orchestrator,
    path: &str,
    bearer: Option<&str>,
    source: Option<SocketAddr>,
) -> Result<Caller, ApiError> {
    let tokens = &orch.cfg.api_tokens;
    if let Some(t) = bearer {
        if !tokens.is_empty() && crate::http::token_matches(t, tokens) {
            return Ok(Caller::anonymous(true, "admin-token", source));
        }
        if keys::looks_like_key(t) {
            let (tenant, key_id) = orch
                .tenancy
                .authenticate(t)
                .map_err(llorch_http::auth::unauthorized)?;
            if !tenant_may_use(path) {
                return Err(ApiError::new(
                    ErrorCode::Forbidden,
                    format!("{path} needs an admin token; tenant keys may use /v2/tasks, /v1, /v2/meta/capabilities and /v2/usage"),
                ));
            }
            return Ok(Caller {
                tenant,
                key_id: Some(key_id),
                admin: false,
                actor: "tenant-key",
                source,
            });
        }
    }
    if tokens.is_empty() {
        return Ok(Caller::anonymous(true, "open", source));
    }
    Err(llorch_http::auth::unauthorized(match bearer {
        Some(_) => "the API token is not valid",
        None => "missing API token: send Authorization: Bearer <LLORCH_API_TOKEN or tenant key>",
    }))
}
