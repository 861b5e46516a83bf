//! Tenants, API keys, audit entries and usage reports: the bodies of orchestratord's
//! `/v2/admin/*` and `/v2/usage` routes (contract: `.specs/tenancy.md`).

use serde::{Deserialize, Serialize};

use crate::tasks::Priority;
use crate::FieldError;

/// The tenant of requests that carry no tenant key (admin token, or no auth configured).
pub const DEFAULT_TENANT: &str = "default";
/// Longest tenant name.
pub const MAX_TENANT_LEN: usize = 64;
/// Highest fair-share weight.
pub const MAX_WEIGHT: u32 = 1000;

/// Whether `name` is a usable tenant name: 1..=64 chars of `[a-z0-9._-]`, not `other` (the
/// metrics label of tenants beyond the label cap).
pub fn is_valid_tenant(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_TENANT_LEN
        && name != "other"
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        })
}

/// A tenant's limits; every one is optional (absent: unlimited).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantLimits {
    /// Models (ids or aliases, as requested) the tenant may use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models: Option<Vec<String>>,
    /// Highest priority class: `batch` forbids `interactive` tasks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_priority: Option<Priority>,
    /// Tasks running at once; more wait in the queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_running: Option<u32>,
    /// Tasks waiting in the queue; more are refused (`RATE_LIMITED`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_queued: Option<u32>,
    /// Submissions per minute (token bucket of this size, refilled evenly).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_minute: Option<u32>,
    /// Prompt + generated tokens per minute (token bucket; a task may overdraw it, later
    /// submissions wait until it is positive again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_minute: Option<u64>,
    /// Prompt + generated tokens per UTC day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_day: Option<u64>,
}

impl TenantLimits {
    /// Check ranges; returns every problem.
    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut errs = Vec::new();
        let positive = |name: &str, v: Option<u64>, errs: &mut Vec<FieldError>| {
            if v == Some(0) {
                errs.push(FieldError::new(
                    name,
                    "minimum",
                    format!("{name} must be at least 1 (leave it out for no limit)"),
                ));
            }
        };
        positive("max_running", self.max_running.map(u64::from), &mut errs);
        positive("max_queued", self.max_queued.map(u64::from), &mut errs);
        positive(
            "requests_per_minute",
            self.requests_per_minute.map(u64::from),
            &mut errs,
        );
        positive("tokens_per_minute", self.tokens_per_minute, &mut errs);
        positive("tokens_per_day", self.tokens_per_day, &mut errs);
        if let Some(models) = &self.models {
            if models.iter().any(|m| m.trim().is_empty()) {
                errs.push(FieldError::new(
                    "models",
                    "non_empty",
                    "models must not contain an empty name",
                ));
            }
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs)
        }
    }
}

/// Body of `POST /v2/admin/tenants` and `PUT /v2/admin/tenants/{name}` (where `name` comes
/// from the path).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantSpec {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Fair-share weight within a priority class, 1..=1000 (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    #[serde(default)]
    pub limits: TenantLimits,
}

/// A tenant as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenant {
    pub name: String,
    pub weight: u32,
    pub limits: TenantLimits,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
}

/// `GET /v2/admin/tenants`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantList {
    pub tenants: Vec<Tenant>,
}

/// Body of `POST /v2/admin/keys`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyCreate {
    pub tenant: String,
    /// Free text shown in listings (at most 128 chars).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// The key stops working this many seconds after creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in_s: Option<u64>,
}

/// A key without its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyInfo {
    /// Public id (also the key's prefix); audit entries and listings name keys by it.
    pub key_id: String,
    pub tenant: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    pub created_at_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at_ms: Option<u64>,
}

/// Answer of `POST /v2/admin/keys`: the only time the key itself is shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyCreated {
    /// Send as `Authorization: Bearer <key>`; only its hash is stored.
    pub key: String,
    #[serde(flatten)]
    pub info: KeyInfo,
}

/// `GET /v2/admin/keys`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyList {
    pub keys: Vec<KeyInfo>,
}

/// One audit log entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub id: u64,
    pub at_ms: u64,
    /// `tenant_created`, `tenant_updated`, `key_created`, `key_revoked`.
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// Who did it: `admin-token` or `open` (no auth configured).
    pub actor: String,
    /// The client's address as the orchestrator saw it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// What changed (e.g. the new tenant spec).
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub detail: serde_json::Value,
}

/// `GET /v2/admin/audit`: newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditList {
    pub entries: Vec<AuditEntry>,
}

/// Usage of one tenant, model, UTC day and OpenAI `user` (session id; empty when absent).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageRow {
    pub tenant: String,
    pub model: String,
    /// `YYYY-MM-DD` (UTC).
    pub day: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user: String,
    /// Tasks that ended (any outcome).
    pub tasks: u64,
    pub tokens_in: u64,
    pub tokens_out: u64,
    /// Prompt tokens served from a worker's prompt cache (part of `tokens_in`).
    pub tokens_cached: u64,
}

/// `GET /v2/usage?tenant=&from=&to=`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageReport {
    /// First day included (`YYYY-MM-DD`).
    pub from: String,
    /// Last day included.
    pub to: String,
    pub rows: Vec<UsageRow>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_names_and_limits() {
        assert!(is_valid_tenant("team-a.ml_2"));
        for bad in ["", "Team", "a b", "other", &"x".repeat(65)] {
            assert!(!is_valid_tenant(bad), "{bad:?}");
        }
        let l: TenantLimits =
            serde_json::from_str(r#"{"tokens_per_day":0,"max_priority":"batch"}"#).unwrap();
        assert_eq!(l.validate().unwrap_err()[0].field, "tokens_per_day");
        assert!(serde_json::from_str::<TenantLimits>(r#"{"rpm":3}"#).is_err());
    }
}
