//! `llorch tenants create|list|show|set`, `llorch keys create|list|revoke` and `llorch usage`
//! over orchestratord's admin API (`/v2/admin/*`, `/v2/usage`; `.specs/tenancy.md`). The token
//! is `$LLORCH_API_TOKEN`: an admin token, or a tenant key for `usage`.

use clap::{Args, Subcommand};
use llorch_wire::tasks::Priority;
use llorch_wire::tenancy::{
    KeyCreate, KeyCreated, KeyInfo, KeyList, Tenant, TenantLimits, TenantList, TenantSpec,
    UsageReport,
};
use reqwest::Method;
use serde::Serialize;

use super::fleet::align;
use super::infer::runtime;
use crate::cli::OrchConn;
use crate::error::{CliError, CliResult};
use crate::orchestrator::OrchClient;

/// `llorch tenants ...`.
#[derive(Debug, Args)]
pub struct TenantsArgs {
    #[command(flatten)]
    pub conn: OrchConn,
    #[command(subcommand)]
    pub action: TenantsAction,
}

/// `llorch tenants` actions.
#[derive(Debug, Subcommand)]
pub enum TenantsAction {
    /// Create a tenant (limits left out are unlimited)
    Create {
        /// Tenant name: 1-64 chars of a-z 0-9 . _ -
        name: String,
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// Every tenant with its weight and limits
    List,
    /// One tenant
    Show {
        /// Tenant name
        name: String,
    },
    /// Change a tenant's weight or limits (others stay); `--clear LIMIT` removes one
    Set {
        /// Tenant name
        name: String,
        #[command(flatten)]
        limits: LimitArgs,
        /// Remove a limit: models, max-priority, max-running, max-queued, rpm, tpm,
        /// tokens-per-day (repeatable)
        #[arg(long, value_name = "LIMIT")]
        clear: Vec<String>,
    },
}

/// A tenant's weight and limits as flags.
#[derive(Debug, Args)]
pub struct LimitArgs {
    /// Fair-share weight within a priority class, 1-1000 [default: 1]
    #[arg(long)]
    pub weight: Option<u32>,
    /// Models the tenant may use (comma-separated)
    #[arg(long, value_delimiter = ',', value_name = "MODEL")]
    pub models: Option<Vec<String>>,
    /// Highest priority class: interactive or batch
    #[arg(long, value_name = "CLASS")]
    pub max_priority: Option<String>,
    /// Tasks running at once (more wait in the queue)
    #[arg(long)]
    pub max_running: Option<u32>,
    /// Tasks waiting in the queue (more are refused with RATE_LIMITED)
    #[arg(long)]
    pub max_queued: Option<u32>,
    /// Submissions per minute
    #[arg(long = "rpm", value_name = "N")]
    pub requests_per_minute: Option<u32>,
    /// Prompt + generated tokens per minute
    #[arg(long = "tpm", value_name = "N")]
    pub tokens_per_minute: Option<u64>,
    /// Prompt + generated tokens per UTC day (quota)
    #[arg(long, value_name = "N")]
    pub tokens_per_day: Option<u64>,
}

/// `llorch keys ...`.
#[derive(Debug, Args)]
pub struct KeysArgs {
    #[command(flatten)]
    pub conn: OrchConn,
    #[command(subcommand)]
    pub action: KeysAction,
}

/// `llorch keys` actions.
#[derive(Debug, Subcommand)]
pub enum KeysAction {
    /// Create a key for a tenant; the key goes to stdout, this once (only its hash is kept)
    Create {
        /// Tenant name
        tenant: String,
        /// Free text shown in listings
        #[arg(long)]
        label: Option<String>,
        /// Expire after this long: seconds, or with a unit (90d, 12h, 30m, 45s)
        #[arg(long, value_name = "DURATION")]
        expires_in: Option<String>,
    },
    /// Keys by id, tenant, label, creation, expiry and revocation (never the keys)
    List {
        /// Only this tenant's keys
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Revoke a key by id; it is refused from the next request on
    Revoke {
        /// Key id (the 12 hex digits after `llk_`)
        key_id: String,
    },
}

/// `llorch usage`.
#[derive(Debug, Args)]
pub struct UsageArgs {
    #[command(flatten)]
    pub conn: OrchConn,
    /// Only this tenant (a tenant key sees its own only)
    #[arg(long)]
    pub tenant: Option<String>,
    /// First UTC day, YYYY-MM-DD [default: 29 days ago]
    #[arg(long)]
    pub from: Option<String>,
    /// Last UTC day, YYYY-MM-DD [default: today]
    #[arg(long)]
    pub to: Option<String>,
}

fn print_json<T: Serialize>(v: &T) {
    println!("{}", serde_json::to_string_pretty(v).expect("serializable"));
}

/// Seconds in `90d`, `12h`, `30m`, `45s` or `3600`.
pub fn parse_duration(s: &str) -> Result<u64, CliError> {
    let s = s.trim();
    let (num, unit) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&s[..i], c),
        _ => (s, 's'),
    };
    let mult = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => 0,
    };
    match num.parse::<u64>() {
        Ok(n) if mult > 0 && n > 0 => Ok(n * mult),
        _ => Err(CliError::Usage(format!(
            "--expires-in {s:?}: use seconds or a number with d, h, m or s (e.g. 90d)"
        ))),
    }
}

fn priority(s: &str) -> Result<Priority, CliError> {
    match s {
        "interactive" => Ok(Priority::Interactive),
        "batch" => Ok(Priority::Batch),
        _ => Err(CliError::Usage(format!(
            "--max-priority {s:?}: use interactive or batch"
        ))),
    }
}

impl LimitArgs {
    /// Apply the given flags over `l`.
    fn apply(&self, l: &mut TenantLimits) -> Result<(), CliError> {
        if let Some(m) = &self.models {
            l.models = Some(m.clone());
        }
        if let Some(p) = &self.max_priority {
            l.max_priority = Some(priority(p)?);
        }
        l.max_running = self.max_running.or(l.max_running);
        l.max_queued = self.max_queued.or(l.max_queued);
        l.requests_per_minute = self.requests_per_minute.or(l.requests_per_minute);
        l.tokens_per_minute = self.tokens_per_minute.or(l.tokens_per_minute);
        l.tokens_per_day = self.tokens_per_day.or(l.tokens_per_day);
        Ok(())
    }
}

fn clear(l: &mut TenantLimits, names: &[String]) -> Result<(), CliError> {
    for n in names {
        match n.as_str() {
            "models" => l.models = None,
            "max-priority" => l.max_priority = None,
            "max-running" => l.max_running = None,
            "max-queued" => l.max_queued = None,
            "rpm" => l.requests_per_minute = None,
            "tpm" => l.tokens_per_minute = None,
            "tokens-per-day" => l.tokens_per_day = None,
            other => {
                return Err(CliError::Usage(format!(
                    "--clear {other:?}: use models, max-priority, max-running, max-queued, rpm, \
                     tpm or tokens-per-day"
                )))
            }
        }
    }
    Ok(())
}

fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map_or("-".into(), ToString::to_string)
}

/// Tenants as a table.
pub fn tenants_table(ts: &[Tenant]) -> String {
    let mut rows = vec![[
        "TENANT", "WEIGHT", "MODELS", "MAX PRIO", "RUNNING", "QUEUED", "RPM", "TPM", "PER DAY",
    ]
    .map(String::from)
    .to_vec()];
    for t in ts {
        let l = &t.limits;
        rows.push(vec![
            t.name.clone(),
            t.weight.to_string(),
            l.models.as_ref().map_or("-".into(), |m| m.join(",")),
            l.max_priority.map_or("-".into(), |p| p.as_str().into()),
            opt(&l.max_running),
            opt(&l.max_queued),
            opt(&l.requests_per_minute),
            opt(&l.tokens_per_minute),
            opt(&l.tokens_per_day),
        ]);
    }
    align(&rows)
}

fn keys_table(ks: &[KeyInfo]) -> String {
    let mut rows = vec![
        ["KEY ID", "TENANT", "LABEL", "CREATED", "EXPIRES", "REVOKED"]
            .map(String::from)
            .to_vec(),
    ];
    let t = |ms: Option<u64>| ms.map_or("-".into(), |v| format!("{}", v / 1000));
    for k in ks {
        rows.push(vec![
            k.key_id.clone(),
            k.tenant.clone(),
            opt(&k.label),
            t(Some(k.created_at_ms)),
            t(k.expires_at_ms),
            t(k.revoked_at_ms),
        ]);
    }
    align(&rows)
}

/// Usage rows as a table with a total line.
pub fn usage_table(r: &UsageReport) -> String {
    let mut rows = vec![[
        "DAY", "TENANT", "MODEL", "USER", "TASKS", "IN", "OUT", "CACHED",
    ]
    .map(String::from)
    .to_vec()];
    let mut total = [0u64; 4];
    for u in &r.rows {
        for (t, v) in total
            .iter_mut()
            .zip([u.tasks, u.tokens_in, u.tokens_out, u.tokens_cached])
        {
            *t += v;
        }
        rows.push(vec![
            u.day.clone(),
            u.tenant.clone(),
            u.model.clone(),
            if u.user.is_empty() {
                "-".into()
            } else {
                u.user.clone()
            },
            u.tasks.to_string(),
            u.tokens_in.to_string(),
            u.tokens_out.to_string(),
            u.tokens_cached.to_string(),
        ]);
    }
    let mut last = vec![
        format!("{}..{}", r.from, r.to),
        "total".into(),
        "".into(),
        "".into(),
    ];
    last.extend(total.iter().map(u64::to_string));
    rows.push(last);
    align(&rows)
}

/// Run `llorch tenants ...`.
pub fn tenants(a: TenantsArgs) -> CliResult {
    runtime()?.block_on(async move {
        let c = OrchClient::new(&a.conn.orchestrator);
        let one = match a.action {
            TenantsAction::List => {
                let list: TenantList = c.get_json("/v2/admin/tenants", &[]).await?;
                if a.conn.json {
                    print_json(&list);
                } else {
                    print!("{}", tenants_table(&list.tenants));
                }
                return Ok(0);
            }
            TenantsAction::Show { name } => {
                c.get_json::<Tenant>(&format!("/v2/admin/tenants/{name}"), &[])
                    .await?
            }
            TenantsAction::Create { name, limits } => {
                let mut spec = TenantSpec {
                    name,
                    weight: limits.weight,
                    limits: TenantLimits::default(),
                };
                limits.apply(&mut spec.limits)?;
                c.send_json(Method::POST, "/v2/admin/tenants", Some(&spec))
                    .await?
            }
            TenantsAction::Set {
                name,
                limits,
                clear: names,
            } => {
                let path = format!("/v2/admin/tenants/{name}");
                let cur: Tenant = c.get_json(&path, &[]).await?;
                let mut spec = TenantSpec {
                    name: String::new(),
                    weight: Some(limits.weight.unwrap_or(cur.weight)),
                    limits: cur.limits,
                };
                limits.apply(&mut spec.limits)?;
                clear(&mut spec.limits, &names)?;
                c.send_json(Method::PUT, &path, Some(&spec)).await?
            }
        };
        if a.conn.json {
            print_json(&one);
        } else {
            print!("{}", tenants_table(std::slice::from_ref(&one)));
        }
        Ok(0)
    })
}

/// Run `llorch keys ...`.
pub fn keys(a: KeysArgs) -> CliResult {
    runtime()?.block_on(async move {
        let c = OrchClient::new(&a.conn.orchestrator);
        match a.action {
            KeysAction::Create {
                tenant,
                label,
                expires_in,
            } => {
                let req = KeyCreate {
                    tenant,
                    label,
                    expires_in_s: expires_in.as_deref().map(parse_duration).transpose()?,
                };
                let k: KeyCreated = c
                    .send_json(Method::POST, "/v2/admin/keys", Some(&req))
                    .await?;
                if a.conn.json {
                    print_json(&k);
                } else {
                    println!("{}", k.key);
                    eprintln!(
                        "llorch: key {} for tenant {}: shown this once, only its hash is stored",
                        k.info.key_id, k.info.tenant
                    );
                }
            }
            KeysAction::List { tenant } => {
                let q: Vec<(&str, String)> = tenant.map(|t| ("tenant", t)).into_iter().collect();
                let list: KeyList = c.get_json("/v2/admin/keys", &q).await?;
                if a.conn.json {
                    print_json(&list);
                } else {
                    print!("{}", keys_table(&list.keys));
                }
            }
            KeysAction::Revoke { key_id } => {
                let k: KeyInfo = c
                    .send_json::<(), _>(
                        Method::POST,
                        &format!("/v2/admin/keys/{key_id}/revoke"),
                        None,
                    )
                    .await?;
                if a.conn.json {
                    print_json(&k);
                } else {
                    eprintln!("llorch: revoked key {} of tenant {}", k.key_id, k.tenant);
                }
            }
        }
        Ok(0)
    })
}

/// Run `llorch usage`.
pub fn usage(a: UsageArgs) -> CliResult {
    runtime()?.block_on(async move {
        let c = OrchClient::new(&a.conn.orchestrator);
        let q: Vec<(&str, String)> = [("tenant", a.tenant), ("from", a.from), ("to", a.to)]
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .collect();
        let r: UsageReport = c.get_json("/v2/usage", &q).await?;
        if a.conn.json {
            print_json(&r);
        } else {
            print!("{}", usage_table(&r));
        }
        Ok(0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use llorch_wire::tenancy::UsageRow;

    #[test]
    fn durations_limits_and_tables() {
        assert_eq!(parse_duration("90d").unwrap(), 90 * 86_400);
        assert_eq!(parse_duration("3600").unwrap(), 3600);
        assert_eq!(parse_duration("30m").unwrap(), 1800);
        assert!(parse_duration("5y").is_err() && parse_duration("0").is_err());
        let mut l = TenantLimits {
            tokens_per_day: Some(9),
            ..Default::default()
        };
        LimitArgs {
            weight: None,
            models: Some(vec!["a".into()]),
            max_priority: Some("batch".into()),
            max_running: None,
            max_queued: Some(3),
            requests_per_minute: None,
            tokens_per_minute: None,
            tokens_per_day: None,
        }
        .apply(&mut l)
        .unwrap();
        assert_eq!(l.max_priority, Some(Priority::Batch));
        assert_eq!((l.max_queued, l.tokens_per_day), (Some(3), Some(9)));
        clear(&mut l, &["tokens-per-day".into()]).unwrap();
        assert_eq!(l.tokens_per_day, None);
        assert!(clear(&mut l, &["bogus".into()]).is_err());
        let r = UsageReport {
            from: "2026-12-01".into(),
            to: "2026-12-05".into(),
            rows: vec![
                UsageRow {
                    tenant: "a".into(),
                    model: "m".into(),
                    day: "2026-12-05".into(),
                    tasks: 2,
                    tokens_in: 10,
                    tokens_out: 5,
                    ..Default::default()
                },
                UsageRow {
                    tenant: "b".into(),
                    model: "m".into(),
                    day: "2026-12-05".into(),
                    user: "alice".into(),
                    tasks: 1,
                    tokens_in: 1,
                    tokens_out: 1,
                    ..Default::default()
                },
            ],
        };
        let t = usage_table(&r);
        assert!(t.contains("alice"), "{t}");
        let total = t.lines().last().unwrap();
        assert!(
            total.contains("total") && total.contains(" 3 ") && total.contains("11"),
            "{total}"
        );
    }
}
