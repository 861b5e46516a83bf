//! The sandbox and the fallbacks: runaway scripts are stopped (operations, wall time, sizes),
//! errors and bad answers fall back and are counted, reloads pick up changes and refuse broken
//! versions, syntax errors name the file and line; the maps scripts see.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use llorch_wire::tasks::Priority;

use super::*;
use crate::config::PolicyConfig;

/// 2026-12-05 (a Saturday) 23:30 UTC.
const SAT_2330: u64 = 1_796_513_400_000;

fn input() -> AdmitInput<'static> {
    AdmitInput {
        model: "m",
        priority: Priority::Interactive,
        tenant: "acme",
        key_id: Some("0123456789ab"),
        admin: false,
        session: Some("alice"),
        prompt_tokens: 12,
        max_tokens: 34,
        deadline_ms: None,
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Fixture {
    fn new(text: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.rhai");
        std::fs::write(&path, text).unwrap();
        Self { _dir: dir, path }
    }

    fn cfg(&self, max_operations: u64, timeout_ms: u64) -> PolicyConfig {
        PolicyConfig {
            script: Some(self.path.clone()),
            max_operations,
            timeout_ms,
        }
    }

    fn load(&self) -> Policy {
        Policy::load(&self.cfg(100_000, 50)).unwrap()
    }
}

fn errors(m: &Metrics, hook: &str, kind: &str) -> f64 {
    m.policy_errors_total
        .value(&[("hook", hook), ("kind", kind)])
}

#[test]
fn scripts_see_the_task_the_tenant_and_utc_time() {
    let f = Fixture::new(
        r#"fn admit(task, tenant) {
            #{ reject: `${task.model}|${task.priority}|${task.prompt_tokens}|${task.max_tokens}|${task.session}|${task.hour}:${task.minute}|${task.weekday}|${tenant.name}|${tenant.key_id}|${tenant.admin}|${task.deadline_ms}` }
        }"#,
    );
    let p = f.load().with_now_ms(SAT_2330);
    let d = p.admit(&Metrics::default(), &input());
    assert_eq!(
        d.reject.as_deref(),
        Some("m|interactive|12|34|alice|23:30|sat|acme|0123456789ab|false|")
    );
}

#[test]
fn answers_change_priority_and_route() {
    let f = Fixture::new(
        r#"fn admit(task, tenant) { #{ priority: "batch", pools: ["gpu-box"], workers: ["w1", "w2"] } }"#,
    );
    let d = f.load().admit(&Metrics::default(), &input());
    assert_eq!(d.reject, None);
    assert_eq!(d.priority, Some(Priority::Batch));
    let r = d.route.unwrap();
    assert!(r.allows("w1", "gpu-box") && r.allows("w2", "gpu-box"));
    assert!(!r.allows("w3", "gpu-box") && !r.allows("w1", "cpu-box"));
    assert_ne!(r.key, 0);
    assert_eq!(r.key, Route::new(r.pools.clone(), r.workers.clone()).key);
}

#[test]
fn an_infinite_loop_is_stopped_by_the_operation_limit_and_falls_back() {
    let f = Fixture::new("fn admit(task, tenant) { loop { } }");
    let m = Metrics::default();
    let t0 = Instant::now();
    let d = f.load().admit(&m, &input());
    assert_eq!(d, Decision::default());
    assert_eq!(errors(&m, "admit", "operations"), 1.0);
    assert!(t0.elapsed() < Duration::from_secs(10));
}

#[test]
fn an_infinite_loop_is_stopped_by_the_time_limit_and_falls_back() {
    let f = Fixture::new("fn admit(task, tenant) { let i = 0; loop { i += 1; } }");
    let m = Metrics::default();
    let p = Policy::load(&f.cfg(100_000_000, 30)).unwrap();
    let t0 = Instant::now();
    assert_eq!(p.admit(&m, &input()), Decision::default());
    let took = t0.elapsed();
    assert_eq!(errors(&m, "admit", "timeout"), 1.0);
    assert!(took >= Duration::from_millis(30), "{took:?}");
    assert!(took < Duration::from_secs(10), "{took:?}");
    // the deadline belongs to one call: the next call gets its own
    assert_eq!(p.admit(&m, &input()), Decision::default());
    assert_eq!(errors(&m, "admit", "timeout"), 2.0);
}

#[test]
fn raising_growing_and_recursing_scripts_fall_back_and_are_counted() {
    let m = Metrics::default();
    for (script, kind) in [
        (r#"fn admit(task, tenant) { throw "no" }"#, "runtime"),
        ("fn admit(task, tenant) { task.nothing.more }", "runtime"),
        (
            r#"fn admit(task, tenant) { let s = "xxxxxxxx"; loop { s += s; } }"#,
            "limit",
        ),
        (
            "fn deeper(n) { deeper(n + 1) } fn admit(task, tenant) { deeper(0) }",
            "limit",
        ),
        (r#"fn admit(task, tenant) { #{ rejct: "typo" } }"#, "return"),
        (
            r#"fn admit(task, tenant) { #{ priority: "urgent" } }"#,
            "return",
        ),
        (r#"fn admit(task, tenant) { "no map" }"#, "return"),
    ] {
        let before = errors(&m, "admit", kind);
        let d = Fixture::new(script).load().admit(&m, &input());
        assert_eq!(d, Decision::default(), "{script}");
        assert_eq!(errors(&m, "admit", kind), before + 1.0, "{script}");
    }
    assert_eq!(m.policy_calls_total.value(&[("hook", "admit")]), 7.0);
}

#[test]
fn no_eval_no_modules_and_hooks_need_their_parameters() {
    for script in [
        r#"fn admit(task, tenant) { eval("40 + 2") }"#,
        r#"import "other" as o; fn admit(task, tenant) { () }"#,
    ] {
        let f = Fixture::new(script);
        match Policy::load(&f.cfg(100_000, 50)) {
            Err(e) => assert!(e.to_string().contains("policy.rhai"), "{e}"),
            Ok(p) => {
                let m = Metrics::default();
                assert_eq!(p.admit(&m, &input()), Decision::default());
                assert_eq!(errors(&m, "admit", "runtime"), 1.0, "{script}");
            }
        }
    }
    let e = Policy::load(&Fixture::new("fn place(workers) { [] }").cfg(1000, 50)).unwrap_err();
    assert!(e.to_string().contains("place(task, workers)"), "{e}");
}

#[test]
fn a_syntax_error_names_the_file_and_line() {
    let f = Fixture::new("fn admit(task, tenant) {\n    let x = ;\n}\n");
    let e = Policy::load(&f.cfg(100_000, 50)).unwrap_err().to_string();
    assert!(e.contains(&format!("{}:2:", f.path.display())), "{e}");
    let missing = PolicyConfig {
        script: Some(f.path.with_file_name("absent.rhai")),
        ..f.cfg(1, 1)
    };
    assert!(Policy::load(&missing)
        .unwrap_err()
        .to_string()
        .contains("absent.rhai"));
}

#[test]
fn reload_picks_up_changes_and_keeps_the_old_version_when_broken() {
    let f = Fixture::new(r#"fn admit(task, tenant) { #{ reject: "v1" } }"#);
    let p = f.load();
    let m = Metrics::default();
    let reject = |p: &Policy| p.admit(&Metrics::default(), &input()).reject;
    assert_eq!(p.reload_if_changed(&m), None);
    std::fs::write(&f.path, r#"fn admit(task, tenant) { #{ reject: "v2" } }"#).unwrap();
    assert_eq!(p.reload_if_changed(&m), Some(true));
    assert_eq!(reject(&p).as_deref(), Some("v2"));
    assert_eq!(m.policy_reloads_total.value(&[]), 1.0);
    std::fs::write(&f.path, "fn admit(task, tenant) { #{ reject: ").unwrap();
    assert_eq!(p.reload_if_changed(&m), Some(false));
    assert_eq!(p.reload_if_changed(&m), Some(false));
    assert_eq!(reject(&p).as_deref(), Some("v2"));
    // counted (and logged) once per broken version
    assert_eq!(errors(&m, "reload", "compile"), 1.0);
    std::fs::write(&f.path, "fn place(task, workers) { () }").unwrap();
    assert_eq!(p.reload_if_changed(&m), Some(true));
    assert_eq!(reject(&p), None);
    assert!(p.places());
}

#[test]
fn place_answers_are_checked() {
    let n = |v: Vec<Dynamic>| Dynamic::from_array(v);
    assert_eq!(convert::scores(Dynamic::UNIT, 2), Ok(None));
    assert_eq!(
        convert::scores(n(vec![Dynamic::from_int(1), Dynamic::from_float(2.5)]), 2),
        Ok(Some(vec![1.0, 2.5]))
    );
    assert!(convert::scores(n(vec![Dynamic::from_int(1)]), 2).is_err());
    assert!(convert::scores(n(vec![Dynamic::from_float(f64::NAN)]), 1).is_err());
    assert!(convert::scores(Dynamic::from_int(3), 1).is_err());
}
