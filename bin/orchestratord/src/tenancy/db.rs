//! Tenancy tables (migration 3): tenants, API keys (hashes only), the audit log and daily usage;
//! plus the tenant of each pending task (`durable`). Writes go through the store's writer thread.

use llorch_wire::tenancy::{AuditEntry, KeyInfo, Tenant, TenantLimits, UsageRow};
use rusqlite::{params, Connection};

/// Migration 3.
pub const MIGRATION: &str = "CREATE TABLE tenants (
        name TEXT PRIMARY KEY,
        weight INTEGER NOT NULL,
        limits TEXT NOT NULL,
        created_at_ms INTEGER NOT NULL,
        updated_at_ms INTEGER NOT NULL
    );
    CREATE TABLE api_keys (
        key_id TEXT PRIMARY KEY,
        hash TEXT NOT NULL,
        tenant TEXT NOT NULL,
        label TEXT,
        created_at_ms INTEGER NOT NULL,
        expires_at_ms INTEGER,
        revoked_at_ms INTEGER
    );
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at_ms INTEGER NOT NULL,
        action TEXT NOT NULL,
        tenant TEXT,
        key_id TEXT,
        actor TEXT NOT NULL,
        source TEXT,
        detail TEXT
    );
    CREATE TABLE usage (
        tenant TEXT NOT NULL,
        model TEXT NOT NULL,
        day TEXT NOT NULL,
        oai_user TEXT NOT NULL DEFAULT '',
        tasks INTEGER NOT NULL DEFAULT 0,
        tokens_in INTEGER NOT NULL DEFAULT 0,
        tokens_out INTEGER NOT NULL DEFAULT 0,
        tokens_cached INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (tenant, model, day, oai_user)
    );
    CREATE INDEX usage_day ON usage(day);
    ALTER TABLE pending ADD COLUMN tenant TEXT;";

/// A stored key: what listings show, plus its hash.
#[derive(Debug, Clone)]
pub struct KeyRow {
    pub info: KeyInfo,
    pub hash: String,
}

fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("serializable")
}

/// Insert or replace a tenant.
pub fn put_tenant(conn: &Connection, t: &Tenant) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT OR REPLACE INTO tenants (name, weight, limits, created_at_ms, updated_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            t.name,
            t.weight,
            to_json(&t.limits),
            t.created_at_ms as i64,
            t.updated_at_ms as i64
        ],
    )
    .map(|_| ())
}

/// Insert or replace a key.
pub fn put_key(conn: &Connection, k: &KeyRow) -> rusqlite::Result<()> {
    let i = &k.info;
    conn.execute(
        "INSERT OR REPLACE INTO api_keys (key_id, hash, tenant, label, created_at_ms, expires_at_ms,
         revoked_at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            i.key_id,
            k.hash,
            i.tenant,
            i.label,
            i.created_at_ms as i64,
            i.expires_at_ms.map(|v| v as i64),
            i.revoked_at_ms.map(|v| v as i64)
        ],
    )
    .map(|_| ())
}

/// Append an audit entry (its `id` is assigned here).
pub fn put_audit(conn: &Connection, e: &AuditEntry) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO audit (at_ms, action, tenant, key_id, actor, source, detail)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            e.at_ms as i64,
            e.action,
            e.tenant,
            e.key_id,
            e.actor,
            e.source,
            (!e.detail.is_null()).then(|| e.detail.to_string())
        ],
    )
    .map(|_| ())
}

/// Add one task's usage to its row.
pub fn add_usage(conn: &Connection, u: &UsageRow) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO usage (tenant, model, day, oai_user, tasks, tokens_in, tokens_out, tokens_cached)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT(tenant, model, day, oai_user) DO UPDATE SET tasks = tasks + ?5,
         tokens_in = tokens_in + ?6, tokens_out = tokens_out + ?7, tokens_cached = tokens_cached + ?8",
        params![
            u.tenant,
            u.model,
            u.day,
            u.user,
            u.tasks as i64,
            u.tokens_in as i64,
            u.tokens_out as i64,
            u.tokens_cached as i64
        ],
    )
    .map(|_| ())
}

/// Every tenant.
pub fn tenants(conn: &Connection) -> rusqlite::Result<Vec<Tenant>> {
    let mut st = conn.prepare(
        "SELECT name, weight, limits, created_at_ms, updated_at_ms FROM tenants ORDER BY name",
    )?;
    let rows = st.query_map([], |r| {
        let limits: String = r.get(2)?;
        Ok(Tenant {
            name: r.get(0)?,
            weight: r.get(1)?,
            limits: serde_json::from_str::<TenantLimits>(&limits).unwrap_or_default(),
            created_at_ms: r.get::<_, i64>(3)? as u64,
            updated_at_ms: r.get::<_, i64>(4)? as u64,
        })
    })?;
    rows.collect()
}

/// Every key.
pub fn keys(conn: &Connection) -> rusqlite::Result<Vec<KeyRow>> {
    let mut st = conn.prepare(
        "SELECT key_id, hash, tenant, label, created_at_ms, expires_at_ms, revoked_at_ms
         FROM api_keys ORDER BY created_at_ms, key_id",
    )?;
    let rows = st.query_map([], |r| {
        Ok(KeyRow {
            hash: r.get(1)?,
            info: KeyInfo {
                key_id: r.get(0)?,
                tenant: r.get(2)?,
                label: r.get(3)?,
                created_at_ms: r.get::<_, i64>(4)? as u64,
                expires_at_ms: r.get::<_, Option<i64>>(5)?.map(|v| v as u64),
                revoked_at_ms: r.get::<_, Option<i64>>(6)?.map(|v| v as u64),
            },
        })
    })?;
    rows.collect()
}

/// Tokens (in + out) each tenant used on `day`.
pub fn tokens_on(conn: &Connection, day: &str) -> rusqlite::Result<Vec<(String, u64)>> {
    let mut st = conn.prepare(
        "SELECT tenant, SUM(tokens_in + tokens_out) FROM usage WHERE day = ?1 GROUP BY tenant",
    )?;
    let rows = st.query_map(params![day], |r| {
        Ok((r.get(0)?, r.get::<_, i64>(1)?.max(0) as u64))
    })?;
    rows.collect()
}

/// Audit entries, newest first: at most `limit`, optionally only of `tenant`.
pub fn audit(
    conn: &Connection,
    tenant: Option<&str>,
    limit: u32,
) -> rusqlite::Result<Vec<AuditEntry>> {
    let mut st = conn.prepare(
        "SELECT id, at_ms, action, tenant, key_id, actor, source, detail FROM audit
         WHERE ?1 IS NULL OR tenant = ?1 ORDER BY id DESC LIMIT ?2",
    )?;
    let rows = st.query_map(params![tenant, limit], |r| {
        let detail: Option<String> = r.get(7)?;
        Ok(AuditEntry {
            id: r.get::<_, i64>(0)? as u64,
            at_ms: r.get::<_, i64>(1)? as u64,
            action: r.get(2)?,
            tenant: r.get(3)?,
            key_id: r.get(4)?,
            actor: r.get(5)?,
            source: r.get(6)?,
            detail: detail
                .and_then(|d| serde_json::from_str(&d).ok())
                .unwrap_or_default(),
        })
    })?;
    rows.collect()
}

/// Usage rows of days `from..=to` (`YYYY-MM-DD`), optionally of one tenant.
pub fn usage(
    conn: &Connection,
    tenant: Option<&str>,
    from: &str,
    to: &str,
) -> rusqlite::Result<Vec<UsageRow>> {
    let mut st = conn.prepare(
        "SELECT tenant, model, day, oai_user, tasks, tokens_in, tokens_out, tokens_cached FROM usage
         WHERE (?1 IS NULL OR tenant = ?1) AND day >= ?2 AND day <= ?3
         ORDER BY day, tenant, model, oai_user",
    )?;
    let rows = st.query_map(params![tenant, from, to], |r| {
        Ok(UsageRow {
            tenant: r.get(0)?,
            model: r.get(1)?,
            day: r.get(2)?,
            user: r.get(3)?,
            tasks: r.get::<_, i64>(4)? as u64,
            tokens_in: r.get::<_, i64>(5)? as u64,
            tokens_out: r.get::<_, i64>(6)? as u64,
            tokens_cached: r.get::<_, i64>(7)? as u64,
        })
    })?;
    rows.collect()
}
