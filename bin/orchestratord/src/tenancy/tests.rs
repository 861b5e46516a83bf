//! Tenancy decisions on an injected clock.

use std::sync::Arc;

use llorch_wire::tasks::Priority;
use llorch_wire::tenancy::{KeyCreate, TenantLimits, TenantSpec};
use llorch_wire::ErrorCode;

use super::limits::{ManualClock, DAY_MS};
use super::Tenancy;

const NOON: u64 = 20_000 * DAY_MS + DAY_MS / 2;

fn setup(limits: TenantLimits) -> (Tenancy, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::at(NOON));
    let t = Tenancy::new(clock.clone());
    let spec = TenantSpec {
        name: "acme".into(),
        weight: Some(3),
        limits,
    };
    let (tenant, created) = t.put_tenant(spec, true).unwrap();
    assert!(created);
    assert_eq!(tenant.weight, 3);
    (t, clock)
}

fn header(e: &crate::error::ApiError, name: &str) -> String {
    e.headers
        .iter()
        .find(|(k, _)| k.as_str() == name)
        .map(|(_, v)| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

#[test]
fn requests_per_minute_refuse_with_retry_after_then_admit() {
    let (t, clock) = setup(TenantLimits {
        requests_per_minute: Some(2),
        ..Default::default()
    });
    t.admit("acme", "m", Priority::Interactive).unwrap();
    t.admit("acme", "m", Priority::Interactive).unwrap();
    let e = t.admit("acme", "m", Priority::Interactive).unwrap_err();
    assert_eq!(e.code(), ErrorCode::RateLimited);
    assert_eq!(e.status, 429);
    assert!(e.envelope.error.message.contains("requests_per_minute = 2"));
    assert_eq!(e.envelope.error.retry_after_ms, Some(30_000));
    assert_eq!(header(&e, "retry-after"), "30");
    clock.advance(30_000);
    t.admit("acme", "m", Priority::Interactive).unwrap();
    // the default tenant has no limits
    for _ in 0..100 {
        t.admit("default", "m", Priority::Interactive).unwrap();
    }
}

#[test]
fn tokens_per_minute_count_reported_tokens() {
    let (t, clock) = setup(TenantLimits {
        tokens_per_minute: Some(600),
        ..Default::default()
    });
    t.admit("acme", "m", Priority::Batch).unwrap();
    t.charge("acme", 500);
    t.charge("acme", 400);
    let e = t.admit("acme", "m", Priority::Batch).unwrap_err();
    assert_eq!(e.code(), ErrorCode::RateLimited);
    assert!(e.envelope.error.message.contains("tokens_per_minute = 600"));
    let wait = e.envelope.error.retry_after_ms.unwrap();
    assert_eq!(wait, 30_001);
    assert_eq!(header(&e, "retry-after"), "31");
    clock.advance(wait - 2);
    assert!(t.admit("acme", "m", Priority::Batch).is_err());
    clock.advance(2);
    t.admit("acme", "m", Priority::Batch).unwrap();
}

#[test]
fn daily_quota_resets_at_midnight() {
    let (t, clock) = setup(TenantLimits {
        tokens_per_day: Some(1000),
        ..Default::default()
    });
    t.charge("acme", 1000);
    let e = t.admit("acme", "m", Priority::Interactive).unwrap_err();
    assert_eq!(e.code(), ErrorCode::QuotaExceeded);
    assert!(e.envelope.error.message.contains("tokens_per_day = 1000"));
    assert_eq!(e.envelope.error.retry_after_ms, Some(DAY_MS / 2));
    assert_eq!(header(&e, "retry-after"), "43200");
    clock.advance(DAY_MS / 2 - 1);
    assert!(t.admit("acme", "m", Priority::Interactive).is_err());
    clock.advance(1);
    t.admit("acme", "m", Priority::Interactive).unwrap();
}

#[test]
fn models_and_priority_are_scoped() {
    let (t, _) = setup(TenantLimits {
        models: Some(vec!["small".into()]),
        max_priority: Some(Priority::Batch),
        max_running: Some(2),
        max_queued: Some(5),
        ..Default::default()
    });
    let e = t.admit("acme", "big", Priority::Batch).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Forbidden);
    assert!(e.envelope.error.message.contains("models"), "{e:?}");
    let e = t.admit("acme", "small", Priority::Interactive).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Forbidden);
    assert!(e.envelope.error.message.contains("max_priority"));
    let ok = t.admit("acme", "small", Priority::Batch).unwrap();
    assert_eq!(ok.share.weight, 3);
    assert_eq!(ok.share.max_running, Some(2));
    assert_eq!(ok.max_queued, Some(5));
    let e = t.admit("nobody", "small", Priority::Batch).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Forbidden);
}

#[test]
fn keys_revoke_and_expire_at_once() {
    let (t, clock) = setup(TenantLimits::default());
    let (k, _) = t
        .create_key(KeyCreate {
            tenant: "acme".into(),
            label: Some("ci".into()),
            expires_in_s: Some(60),
        })
        .unwrap();
    let (tenant, id) = t.authenticate(&k.key).unwrap();
    assert_eq!((&*tenant, id.as_str()), ("acme", k.info.key_id.as_str()));
    // the same key with its last character changed
    let mut forged = k.key.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == 'x' { 'y' } else { 'x' });
    assert!(t.authenticate(&forged).is_err());
    clock.advance(60_000);
    assert_eq!(t.authenticate(&k.key), Err("the API key has expired"));

    let (k2, _) = t
        .create_key(KeyCreate {
            tenant: "acme".into(),
            ..Default::default()
        })
        .unwrap();
    assert!(t.authenticate(&k2.key).is_ok());
    t.revoke_key(&k2.info.key_id).unwrap();
    assert_eq!(t.authenticate(&k2.key), Err("the API key was revoked"));
    let listed = format!("{:?}", t.keys(Some("acme")));
    assert!(!listed.contains(&k2.key) && !listed.contains(&k.key));
    assert!(t
        .create_key(KeyCreate {
            tenant: "ghost".into(),
            ..Default::default()
        })
        .is_err());
}

#[test]
fn tenant_specs_are_validated_and_updated() {
    let (t, _) = setup(TenantLimits::default());
    let bad = TenantSpec {
        name: "Bad Name".into(),
        weight: Some(0),
        limits: TenantLimits {
            max_queued: Some(0),
            ..Default::default()
        },
    };
    let e = t.put_tenant(bad, false).unwrap_err();
    let fields: Vec<&str> = e
        .envelope
        .error
        .fields
        .iter()
        .map(|f| f.field.as_str())
        .collect();
    assert_eq!(fields, ["name", "weight", "limits.max_queued"]);
    let again = TenantSpec {
        name: "acme".into(),
        ..Default::default()
    };
    assert!(
        t.put_tenant(again.clone(), true).is_err(),
        "create refuses an existing tenant"
    );
    let (updated, created) = t.put_tenant(again, false).unwrap();
    assert!(!created);
    assert_eq!(updated.weight, 3, "an absent weight keeps the old one");
    assert_eq!(t.tenants().len(), 2, "acme and default");
    for i in 0..super::MAX_TENANT_LABELS + 5 {
        t.label(&format!("t{i}"));
    }
    assert_eq!(t.label("t0"), "t0");
    assert_eq!(t.label("late"), "other");
}
