//! Multi-tenancy: tenants with optional limits and a fair-share weight, API keys per tenant
//! (hashes in SQLite, checked in memory so a revocation holds from the next request), admission
//! checks with `Retry-After`, token metering per tenant, model, day and OpenAI `user`.
//! Contract: `.specs/tenancy.md`. Requests without a tenant key belong to [`DEFAULT_TENANT`].

pub mod auth;
pub mod db;
pub mod keys;
pub mod limits;
pub mod meter;
pub mod openapi;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use llorch_wire::tasks::Priority;
use llorch_wire::tenancy::{
    is_valid_tenant, KeyCreate, KeyCreated, KeyInfo, Tenant, TenantSpec, DEFAULT_TENANT, MAX_WEIGHT,
};
use llorch_wire::{ErrorCode, FieldError};

pub use auth::Caller;
use db::KeyRow;
use limits::{Bucket, Clock, DayCount};

use crate::error::ApiError;
use crate::queue::Share;
use crate::store::Store;

/// Tenants that get their own Prometheus label; the rest share `other`.
pub const MAX_TENANT_LABELS: usize = 100;
/// Longest key label.
const MAX_LABEL_LEN: usize = 128;

/// A tenant with its live limiter state.
#[derive(Debug)]
struct TenantState {
    spec: Tenant,
    name: Arc<str>,
    rpm: Option<Bucket>,
    tpm: Option<Bucket>,
    today: DayCount,
}

impl TenantState {
    fn new(spec: Tenant, used_today: u64, now: u64) -> Self {
        let mut t = Self {
            name: Arc::from(spec.name.as_str()),
            spec,
            rpm: None,
            tpm: None,
            today: DayCount::new(used_today, now),
        };
        t.rebuild(now);
        t
    }

    /// Buckets for the current limits (a bucket whose limit did not change keeps its level).
    fn rebuild(&mut self, now: u64) {
        let l = &self.spec.limits;
        let rpm = l.requests_per_minute.map(u64::from);
        if self.rpm.as_ref().map(Bucket::rate) != rpm {
            self.rpm = rpm.map(|n| Bucket::per_minute(n, now));
        }
        if self.tpm.as_ref().map(Bucket::rate) != l.tokens_per_minute {
            self.tpm = l.tokens_per_minute.map(|n| Bucket::per_minute(n, now));
        }
    }
}

#[derive(Debug, Default)]
struct Registry {
    tenants: HashMap<String, TenantState>,
    keys: HashMap<String, KeyRow>,
}

/// What admission learns about a tenant that may submit.
#[derive(Debug, Clone)]
pub struct Admitted {
    pub tenant: Arc<str>,
    pub share: Share,
    pub max_queued: Option<u32>,
}

/// Tenants, keys and limiter state, shared by every request.
#[derive(Debug)]
pub struct Tenancy {
    reg: Mutex<Registry>,
    clock: Arc<dyn Clock>,
    labels: Mutex<HashSet<String>>,
}

fn default_tenant() -> Tenant {
    Tenant {
        name: DEFAULT_TENANT.into(),
        weight: 1,
        limits: Default::default(),
        created_at_ms: 0,
        updated_at_ms: 0,
    }
}

fn retry(code: ErrorCode, message: String, ms: u64) -> ApiError {
    ApiError::retry_later(code, message, ms)
}

impl Tenancy {
    /// Empty (only the default tenant), on `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        let now = clock.now_ms();
        let mut reg = Registry::default();
        reg.tenants.insert(
            DEFAULT_TENANT.into(),
            TenantState::new(default_tenant(), 0, now),
        );
        Self {
            reg: Mutex::new(reg),
            clock,
            labels: Mutex::new(HashSet::new()),
        }
    }

    /// Tenants, keys and today's usage from the database.
    pub fn load(store: &Store, clock: Arc<dyn Clock>) -> Self {
        let me = Self::new(clock);
        let now = me.now();
        let today = limits::day_string(now);
        let loaded = store.read(|c| Ok((db::tenants(c)?, db::keys(c)?, db::tokens_on(c, &today)?)));
        match loaded {
            Ok((tenants, keys, used)) => {
                let used: HashMap<String, u64> = used.into_iter().collect();
                let mut reg = me.lock();
                for t in tenants {
                    let u = used.get(&t.name).copied().unwrap_or(0);
                    reg.tenants
                        .insert(t.name.clone(), TenantState::new(t, u, now));
                }
                if let Some(d) = reg.tenants.get_mut(DEFAULT_TENANT) {
                    d.today = DayCount::new(used.get(DEFAULT_TENANT).copied().unwrap_or(0), now);
                }
                for k in keys {
                    reg.keys.insert(k.info.key_id.clone(), k);
                }
            }
            // fail closed: no tenant key is accepted until the database reads again
            Err(e) => {
                tracing::error!(error = %e, "cannot read tenants and keys; tenant keys are refused")
            }
        }
        me
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        self.reg.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The tenancy clock (unix ms).
    pub fn now(&self) -> u64 {
        self.clock.now_ms()
    }

    /// The tenant and key id of a presented tenant key, or why it is refused.
    pub fn authenticate(&self, key: &str) -> Result<(Arc<str>, String), &'static str> {
        let id = keys::key_id(key).ok_or("the API key is not valid")?;
        let now = self.now();
        let reg = self.lock();
        let row = reg.keys.get(id).ok_or("the API key is not valid")?;
        if !keys::matches(key, &row.hash) {
            return Err("the API key is not valid");
        }
        if row.info.revoked_at_ms.is_some() {
            return Err("the API key was revoked");
        }
        if row.info.expires_at_ms.is_some_and(|at| at <= now) {
            return Err("the API key has expired");
        }
        let tenant = reg
            .tenants
            .get(&row.info.tenant)
            .map(|t| t.name.clone())
            .ok_or("the API key's tenant no longer exists")?;
        Ok((tenant, row.info.key_id.clone()))
    }

    /// The scheduling terms of `tenant` (defaults for an unknown one).
    pub fn share(&self, tenant: &str) -> Share {
        self.lock()
            .tenants
            .get(tenant)
            .map_or_else(Share::default, |t| Share {
                weight: t.spec.weight,
                max_running: t.spec.limits.max_running,
            })
    }

    /// Check `tenant`'s limits for a new task; on success one request is counted.
    pub fn admit(
        &self,
        tenant: &str,
        model: &str,
        priority: Priority,
    ) -> Result<Admitted, ApiError> {
        let now = self.now();
        let mut reg = self.lock();
        let Some(t) = reg.tenants.get_mut(tenant) else {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                format!("tenant {tenant:?} no longer exists"),
            ));
        };
        let l = t.spec.limits.clone();
        if let Some(models) = &l.models {
            if !models.iter().any(|m| m == model) {
                return Err(ApiError::new(
                    ErrorCode::Forbidden,
                    format!(
                        "tenant {tenant:?} may not use model {model:?} (limit models: {})",
                        models.join(", ")
                    ),
                ));
            }
        }
        if l.max_priority == Some(Priority::Batch) && priority == Priority::Interactive {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                format!(
                    "tenant {tenant:?} may submit batch tasks only (limit max_priority = batch); \
                     send \"priority\": \"batch\""
                ),
            ));
        }
        if let Some(quota) = l.tokens_per_day {
            if let Err(ms) = t.today.check(quota, now) {
                return Err(retry(
                    ErrorCode::QuotaExceeded,
                    format!(
                        "tenant {tenant:?} used its daily quota (tokens_per_day = {quota}, used {}); \
                         it resets at 00:00 UTC, in {} s",
                        t.today.used(now),
                        limits::retry_after_secs(ms)
                    ),
                    ms,
                ));
            }
        }
        if let (Some(b), Some(n)) = (t.tpm.as_mut(), l.tokens_per_minute) {
            if let Err(ms) = b.positive(now) {
                return Err(retry(
                    ErrorCode::RateLimited,
                    format!(
                        "tenant {tenant:?} is over its token rate (tokens_per_minute = {n}); \
                         retry in {ms} ms"
                    ),
                    ms,
                ));
            }
        }
        if let (Some(b), Some(n)) = (t.rpm.as_mut(), l.requests_per_minute) {
            if let Err(ms) = b.take(1, now) {
                return Err(retry(
                    ErrorCode::RateLimited,
                    format!(
                        "tenant {tenant:?} is over its request rate (requests_per_minute = {n}); \
                         retry in {ms} ms"
                    ),
                    ms,
                ));
            }
        }
        Ok(Admitted {
            tenant: t.name.clone(),
            share: Share {
                weight: t.spec.weight,
                max_running: l.max_running,
            },
            max_queued: l.max_queued,
        })
    }

    /// Count `tokens` (prompt or generated) against `tenant`'s token rate and daily quota.
    pub fn charge(&self, tenant: &str, tokens: u64) {
        if tokens == 0 {
            return;
        }
        let now = self.now();
        if let Some(t) = self.lock().tenants.get_mut(tenant) {
            if let Some(b) = t.tpm.as_mut() {
                b.charge(tokens, now);
            }
            t.today.add(tokens, now);
        }
    }

    /// The interned name of `tenant` (a fresh one when unknown).
    pub fn name(&self, tenant: &str) -> Arc<str> {
        self.lock()
            .tenants
            .get(tenant)
            .map_or_else(|| Arc::from(tenant), |t| t.name.clone())
    }

    /// `tenant`, or `other` beyond the first [`MAX_TENANT_LABELS`] tenants seen: a bounded
    /// Prometheus label.
    pub fn label(&self, tenant: &str) -> String {
        let mut seen = self.labels.lock().unwrap_or_else(|p| p.into_inner());
        if seen.contains(tenant) {
            return tenant.to_string();
        }
        if seen.len() < MAX_TENANT_LABELS {
            seen.insert(tenant.to_string());
            return tenant.to_string();
        }
        "other".into()
    }

    /// Every tenant, by name.
    pub fn tenants(&self) -> Vec<Tenant> {
        let mut v: Vec<Tenant> = self
            .lock()
            .tenants
            .values()
            .map(|t| t.spec.clone())
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// One tenant.
    pub fn tenant(&self, name: &str) -> Option<Tenant> {
        self.lock().tenants.get(name).map(|t| t.spec.clone())
    }

    /// Create (`create_only`) or create-or-replace a tenant; returns it and whether it is new.
    pub fn put_tenant(
        &self,
        spec: TenantSpec,
        create_only: bool,
    ) -> Result<(Tenant, bool), ApiError> {
        let mut errs = Vec::new();
        if !is_valid_tenant(&spec.name) {
            errs.push(FieldError::new(
                "name",
                "pattern",
                format!(
                    "tenant name {:?} must be 1-64 chars of a-z 0-9 . _ - (and not \"other\")",
                    spec.name
                ),
            ));
        }
        if spec.weight.is_some_and(|w| !(1..=MAX_WEIGHT).contains(&w)) {
            errs.push(FieldError::new(
                "weight",
                "range",
                format!("weight must be between 1 and {MAX_WEIGHT}"),
            ));
        }
        if let Err(mut e) = spec.limits.validate() {
            for f in &mut e {
                f.field = format!("limits.{}", f.field);
            }
            errs.extend(e);
        }
        if !errs.is_empty() {
            return Err(ApiError::invalid(errs));
        }
        let now = self.now();
        let mut reg = self.lock();
        if let Some(t) = reg.tenants.get_mut(&spec.name) {
            if create_only && spec.name != DEFAULT_TENANT {
                return Err(ApiError::invalid(vec![FieldError::new(
                    "name",
                    "unique",
                    format!(
                        "tenant {:?} exists; change it with PUT /v2/admin/tenants/{}",
                        spec.name, spec.name
                    ),
                )]));
            }
            t.spec.weight = spec.weight.unwrap_or(t.spec.weight);
            t.spec.limits = spec.limits;
            t.spec.updated_at_ms = now;
            t.rebuild(now);
            return Ok((t.spec.clone(), false));
        }
        let tenant = Tenant {
            name: spec.name.clone(),
            weight: spec.weight.unwrap_or(1),
            limits: spec.limits,
            created_at_ms: now,
            updated_at_ms: now,
        };
        reg.tenants
            .insert(spec.name, TenantState::new(tenant.clone(), 0, now));
        Ok((tenant, true))
    }

    /// Create a key; the answer holds the key itself, the row only its hash.
    pub fn create_key(&self, req: KeyCreate) -> Result<(KeyCreated, KeyRow), ApiError> {
        if req
            .label
            .as_ref()
            .is_some_and(|l| l.chars().count() > MAX_LABEL_LEN)
        {
            return Err(ApiError::invalid(vec![FieldError::new(
                "label",
                "max_length",
                format!("label is longer than {MAX_LABEL_LEN} characters"),
            )]));
        }
        let now = self.now();
        let mut reg = self.lock();
        if !reg.tenants.contains_key(&req.tenant) {
            return Err(ApiError::not_found("tenant", &req.tenant));
        }
        let (key, key_id) = keys::generate();
        let info = KeyInfo {
            key_id,
            tenant: req.tenant,
            label: req.label,
            created_at_ms: now,
            expires_at_ms: req
                .expires_in_s
                .map(|s| now.saturating_add(s.saturating_mul(1000))),
            revoked_at_ms: None,
        };
        let row = KeyRow {
            hash: keys::hash(&key),
            info: info.clone(),
        };
        reg.keys.insert(info.key_id.clone(), row.clone());
        Ok((KeyCreated { key, info }, row))
    }

    /// Revoke a key (idempotent: the first revocation time stays).
    pub fn revoke_key(&self, key_id: &str) -> Result<KeyRow, ApiError> {
        let now = self.now();
        let mut reg = self.lock();
        let row = reg
            .keys
            .get_mut(key_id)
            .ok_or_else(|| ApiError::not_found("key", key_id))?;
        row.info.revoked_at_ms.get_or_insert(now);
        Ok(row.clone())
    }

    /// Keys (without secrets), optionally of one tenant, oldest first.
    pub fn keys(&self, tenant: Option<&str>) -> Vec<KeyInfo> {
        let mut v: Vec<KeyInfo> = self
            .lock()
            .keys
            .values()
            .filter(|k| tenant.is_none_or(|t| k.info.tenant == t))
            .map(|k| k.info.clone())
            .collect();
        v.sort_by(|a, b| (a.created_at_ms, &a.key_id).cmp(&(b.created_at_ms, &b.key_id)));
        v
    }
}

#[cfg(test)]
mod tests;
