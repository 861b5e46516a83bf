//! Admin routes (`/v2/admin/*`: tenants, keys, audit log; admin token only) and `/v2/usage`
//! (admins: every tenant; a tenant key: its own). Changes are written through to SQLite, with an
//! audit entry, before they are answered.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use llorch_wire::routes::orchestrator as r;
use llorch_wire::tenancy::{
    AuditEntry, AuditList, KeyCreate, KeyList, TenantList, TenantSpec, UsageReport,
};
use llorch_wire::{ErrorCode, FieldError};
use serde::Deserialize;

use super::parse_json;
use crate::error::ApiError;
use crate::state::Orchestrator;
use crate::tenancy::limits::{self, DAY_MS};
use crate::tenancy::{db, Caller};

/// Longest wait for a change to be committed.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(5);
/// Days `GET /v2/usage` covers without `from`.
const DEFAULT_USAGE_DAYS: u64 = 30;

/// The admin and usage routes.
pub fn routes() -> Router<Arc<Orchestrator>> {
    Router::new()
        .route(r::ADMIN_TENANTS, post(create_tenant).get(list_tenants))
        .route(r::ADMIN_TENANT, get(show_tenant).put(put_tenant))
        .route(r::ADMIN_KEYS, post(create_key).get(list_keys))
        .route(r::ADMIN_KEY, axum::routing::delete(revoke_key))
        .route(r::ADMIN_KEY_REVOKE, post(revoke_key))
        .route(r::ADMIN_AUDIT, get(audit))
        .route(r::USAGE, get(usage))
}

fn admin_only(caller: &Caller) -> Result<(), ApiError> {
    if caller.admin {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::Forbidden,
            "admin routes need an admin token",
        ))
    }
}

fn db_error(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(ErrorCode::Internal, format!("state database: {e}"))
}

/// Queue `entry` and wait until it and every write before it are committed.
async fn commit(
    orch: &Orchestrator,
    caller: &Caller,
    mut entry: AuditEntry,
) -> Result<(), ApiError> {
    entry.at_ms = orch.tenancy.now();
    entry.actor = caller.actor.to_string();
    entry.source = caller.source.map(|s| s.to_string());
    tracing::info!(action = %entry.action, tenant = ?entry.tenant, key_id = ?entry.key_id,
        actor = %entry.actor, source = ?entry.source, "admin change");
    orch.store.exec(Box::new(move |c| db::put_audit(c, &entry)));
    match tokio::time::timeout(COMMIT_TIMEOUT, orch.store.committed()).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(db_error("the change could not be committed")),
    }
}

fn audit_entry(
    action: &str,
    tenant: &str,
    key_id: Option<&str>,
    detail: serde_json::Value,
) -> AuditEntry {
    AuditEntry {
        id: 0,
        at_ms: 0,
        action: action.into(),
        tenant: Some(tenant.into()),
        key_id: key_id.map(Into::into),
        actor: String::new(),
        source: None,
        detail,
    }
}

async fn save_tenant(
    orch: &Orchestrator,
    caller: &Caller,
    spec: TenantSpec,
    create_only: bool,
) -> Result<Response, ApiError> {
    let (tenant, created) = orch.tenancy.put_tenant(spec, create_only)?;
    let row = tenant.clone();
    orch.store.exec(Box::new(move |c| db::put_tenant(c, &row)));
    let action = if created {
        "tenant_created"
    } else {
        "tenant_updated"
    };
    let detail = serde_json::json!({"weight": tenant.weight, "limits": tenant.limits});
    commit(
        orch,
        caller,
        audit_entry(action, &tenant.name, None, detail),
    )
    .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(tenant)).into_response())
}

/// `POST /v2/admin/tenants`: 201 with the tenant; 400 when it exists.
async fn create_tenant(
    State(orch): State<Arc<Orchestrator>>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Result<Response, ApiError> {
    admin_only(&caller)?;
    let spec: TenantSpec = parse_json(&body)?;
    save_tenant(&orch, &caller, spec, true).await
}

/// `PUT /v2/admin/tenants/{name}`: create or replace its weight and limits.
async fn put_tenant(
    State(orch): State<Arc<Orchestrator>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    admin_only(&caller)?;
    let mut spec: TenantSpec = parse_json(&body)?;
    if !spec.name.is_empty() && spec.name != name {
        return Err(ApiError::invalid(vec![FieldError::new(
            "name",
            "matches_path",
            format!("name {:?} differs from the path's {name:?}", spec.name),
        )]));
    }
    spec.name = name;
    save_tenant(&orch, &caller, spec, false).await
}

/// `GET /v2/admin/tenants`.
async fn list_tenants(
    State(orch): State<Arc<Orchestrator>>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<TenantList>, ApiError> {
    admin_only(&caller)?;
    Ok(Json(TenantList {
        tenants: orch.tenancy.tenants(),
    }))
}

/// `GET /v2/admin/tenants/{name}`.
async fn show_tenant(
    State(orch): State<Arc<Orchestrator>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    admin_only(&caller)?;
    let t = orch
        .tenancy
        .tenant(&name)
        .ok_or_else(|| ApiError::not_found("tenant", &name))?;
    Ok(Json(t).into_response())
}

/// `POST /v2/admin/keys`: 201 with the key, shown this once.
async fn create_key(
    State(orch): State<Arc<Orchestrator>>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Result<Response, ApiError> {
    admin_only(&caller)?;
    let req: KeyCreate = parse_json(&body)?;
    let (created, row) = orch.tenancy.create_key(req)?;
    let key_id = row.info.key_id.clone();
    orch.store.exec(Box::new(move |c| db::put_key(c, &row)));
    let detail = serde_json::json!({"label": created.info.label, "expires_at_ms": created.info.expires_at_ms});
    let entry = audit_entry("key_created", &created.info.tenant, Some(&key_id), detail);
    if let Err(e) = commit(&orch, &caller, entry).await {
        // not stored: it must not work either
        let _ = orch.tenancy.revoke_key(&key_id);
        return Err(e);
    }
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

/// Query of `GET /v2/admin/keys` and `/v2/admin/audit`.
#[derive(Debug, Deserialize)]
struct TenantQuery {
    tenant: Option<String>,
    limit: Option<u32>,
}

/// `GET /v2/admin/keys[?tenant=]`: ids, labels, times; never the keys.
async fn list_keys(
    State(orch): State<Arc<Orchestrator>>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<TenantQuery>,
) -> Result<Json<KeyList>, ApiError> {
    admin_only(&caller)?;
    Ok(Json(KeyList {
        keys: orch.tenancy.keys(q.tenant.as_deref()),
    }))
}

/// `POST /v2/admin/keys/{id}/revoke` (or `DELETE /v2/admin/keys/{id}`): the key stops working
/// with the next request.
async fn revoke_key(
    State(orch): State<Arc<Orchestrator>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    admin_only(&caller)?;
    let row = orch.tenancy.revoke_key(&id)?;
    let info = row.info.clone();
    orch.store.exec(Box::new(move |c| db::put_key(c, &row)));
    let entry = audit_entry(
        "key_revoked",
        &info.tenant,
        Some(&info.key_id),
        serde_json::Value::Null,
    );
    commit(&orch, &caller, entry).await?;
    Ok(Json(info).into_response())
}

/// `GET /v2/admin/audit[?tenant=&limit=]`: newest first (default 100, at most 10000).
async fn audit(
    State(orch): State<Arc<Orchestrator>>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<TenantQuery>,
) -> Result<Json<AuditList>, ApiError> {
    admin_only(&caller)?;
    let limit = q.limit.unwrap_or(100).clamp(1, 10_000);
    let entries = orch
        .store
        .read(|c| db::audit(c, q.tenant.as_deref(), limit))
        .map_err(db_error)?;
    Ok(Json(AuditList { entries }))
}

/// Query of `GET /v2/usage`.
#[derive(Debug, Deserialize)]
struct UsageQuery {
    tenant: Option<String>,
    from: Option<String>,
    to: Option<String>,
}

/// `GET /v2/usage[?tenant=&from=YYYY-MM-DD&to=YYYY-MM-DD]`: per tenant, model, day and user
/// (default: the last 30 days). A tenant key sees its own tenant only.
async fn usage(
    State(orch): State<Arc<Orchestrator>>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<UsageQuery>,
) -> Result<Json<UsageReport>, ApiError> {
    let now = orch.tenancy.now();
    let to = q.to.unwrap_or_else(|| limits::day_string(now));
    let from = q.from.unwrap_or_else(|| {
        limits::day_string(now.saturating_sub((DEFAULT_USAGE_DAYS - 1) * DAY_MS))
    });
    let mut bad = Vec::new();
    for (field, v) in [("from", &from), ("to", &to)] {
        if !limits::is_day(v) {
            bad.push(FieldError::new(
                field,
                "date",
                format!("{field} must be a UTC date YYYY-MM-DD; got {v:?}"),
            ));
        }
    }
    if !bad.is_empty() {
        return Err(ApiError::invalid(bad));
    }
    let tenant = match (caller.only_tenant(), q.tenant) {
        (Some(own), Some(asked)) if asked != own => {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                format!("a tenant key sees its own usage only (tenant {own:?})"),
            ))
        }
        (Some(own), _) => Some(own.to_string()),
        (None, asked) => asked,
    };
    // usage of tasks that just ended is still on its way to the database
    let _ = tokio::time::timeout(COMMIT_TIMEOUT, orch.store.committed()).await;
    let rows = orch
        .store
        .read(|c| db::usage(c, tenant.as_deref(), &from, &to))
        .map_err(db_error)?;
    Ok(Json(UsageReport { from, to, rows }))
}
