//! Tenants and keys through the real daemon: admin routes need the admin token, tenant keys
//! reach only task routes and see only their own tasks, revoked/expired keys are refused at
//! once, keys never appear in logs or later responses; limits answer 429 with a `Retry-After`
//! that works when honoured; weighted fair share lets small tenants through a flood; a
//! restart keeps the tenant of re-queued tasks. The worker is the fault-injection worker.

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{json, Value};

use crate::common::*;

pub(crate) const ADMIN: &str = "admin-token-for-tenancy-tests";

/// `method path` with `token` and an optional JSON body: (status, headers, body).
pub(crate) async fn call(
    o: &Orchd,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut rb = client().request(method, o.url(path));
    if let Some(t) = token {
        rb = rb.bearer_auth(t);
    }
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    let r = rb.send().await.unwrap();
    let (s, h) = (r.status().as_u16(), r.headers().clone());
    (s, h, r.json().await.unwrap_or(Value::Null))
}

pub(crate) async fn post(
    o: &Orchd,
    path: &str,
    token: &str,
    body: Value,
) -> (u16, reqwest::header::HeaderMap, Value) {
    call(o, reqwest::Method::POST, path, Some(token), Some(body)).await
}

pub(crate) async fn get(o: &Orchd, path: &str, token: &str) -> (u16, Value) {
    let (s, _, v) = call(o, reqwest::Method::GET, path, Some(token), None).await;
    (s, v)
}

pub(crate) async fn tenant(o: &Orchd, name: &str, weight: u32, limits: Value) {
    let (s, _, v) = post(
        o,
        "/v2/admin/tenants",
        ADMIN,
        json!({"name": name, "weight": weight, "limits": limits}),
    )
    .await;
    assert_eq!(s, 201, "{v}");
}

pub(crate) async fn key(o: &Orchd, tenant: &str, extra: Value) -> (String, String) {
    let mut body = json!({"tenant": tenant, "label": "test"});
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    let (s, _, v) = post(o, "/v2/admin/keys", ADMIN, body).await;
    assert_eq!(s, 201, "{v}");
    (
        v["key"].as_str().unwrap().into(),
        v["key_id"].as_str().unwrap().into(),
    )
}

async fn start(worker: &[&str], orchd: &[&str]) -> (Orchd, FaultWorker) {
    let w = FaultWorker::start("slow", "fw", worker);
    // registered by hand, without heartbeats: keep it healthy for the whole test
    let mut args = vec!["--api-token", ADMIN, "--heartbeat-timeout-ms", "600000"];
    args.extend_from_slice(orchd);
    let o = Orchd::start(&args);
    let body = json!({"worker_id": "fw", "url": w.url(), "model": FAULT_MODEL, "backend": "cpu",
        "slots_total": 1, "context_length": 2048});
    let (s, _, v) = post(&o, "/v2/workers/register", ADMIN, body).await;
    assert_eq!(s, 200, "{v}");
    (o, w)
}

fn task(max_tokens: u32, priority: &str) -> Value {
    json!({"model": FAULT_MODEL, "prompt": "hi", "max_tokens": max_tokens, "priority": priority})
}

pub(crate) async fn wait_done(o: &Orchd, id: &str, token: &str) -> Value {
    let t0 = Instant::now();
    loop {
        let (_, v) = get(o, &format!("/v2/tasks/{id}"), token).await;
        if v["finished_at_ms"].is_u64() {
            return v;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "task {id} not done: {v}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_scoped_revocable_and_never_shown_again() {
    let (o, _w) = start(&["--token-delay-ms", "1"], &[]).await;
    tenant(&o, "acme", 1, json!({})).await;
    tenant(&o, "rival", 1, json!({})).await;
    let (k, kid) = key(&o, "acme", json!({})).await;
    let (rival, _) = key(&o, "rival", json!({})).await;
    assert!(k.starts_with("llk_") && k.contains(&kid));

    let (s, _, acc) = post(&o, "/v2/tasks", &k, task(3, "interactive")).await;
    assert_eq!(s, 202, "{acc}");
    let id = acc["task_id"].as_str().unwrap().to_string();
    let st = wait_done(&o, &id, &k).await;
    assert_eq!(st["tenant"], "acme");
    // the OpenAI `user` is metered as a sub-label of the tenant
    let chat = json!({"model": FAULT_MODEL, "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 2, "user": "alice"});
    let (s, _, v) = post(&o, "/v1/chat/completions", &k, chat).await;
    assert_eq!(s, 200, "{v}");
    // (the usage row is written just after the answer's last event: poll briefly)
    let t0 = Instant::now();
    let usage = loop {
        let (_, usage) = get(&o, "/v2/usage", &k).await;
        let rows = usage["rows"].as_array().unwrap();
        if rows
            .iter()
            .any(|r| r["user"] == "alice" && r["tokens_out"] == 2)
        {
            break usage;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "{usage}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let rows = usage["rows"].as_array().unwrap();
    assert!(rows.iter().all(|r| r["tenant"] == "acme"), "{usage}");
    // another tenant cannot see it, an admin can
    assert_eq!(get(&o, &format!("/v2/tasks/{id}"), &rival).await.0, 404);
    assert_eq!(get(&o, &format!("/v2/tasks/{id}"), ADMIN).await.0, 200);
    let (_, list) = get(&o, "/v2/tasks", &rival).await;
    assert!(
        list["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["tenant"] == "rival"),
        "{list}"
    );
    // tenant keys never reach admin or worker routes
    for path in [
        "/v2/admin/tenants",
        "/v2/admin/keys",
        "/v2/workers",
        "/metrics",
    ] {
        let (s, v) = get(&o, path, &k).await;
        assert_eq!(s, 403, "{path}: {v}");
        assert_eq!(v["error"]["code"], "FORBIDDEN");
    }
    let (s, _, _) = call(&o, reqwest::Method::GET, "/v2/tasks", None, None).await;
    assert_eq!(s, 401);

    // revoked: refused on the very next request
    let (s, _, v) = post(
        &o,
        &format!("/v2/admin/keys/{kid}/revoke"),
        ADMIN,
        json!({}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = get(&o, "/v2/tasks", &k).await;
    assert_eq!(s, 401);
    assert!(
        v["error"]["message"].as_str().unwrap().contains("revoked"),
        "{v}"
    );
    // expired: refused once its time is up
    let (short, _) = key(&o, "acme", json!({"expires_in_s": 1})).await;
    assert_eq!(get(&o, "/v2/tasks", &short).await.0, 200);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (s, v) = get(&o, "/v2/tasks", &short).await;
    assert_eq!(s, 401);
    assert!(
        v["error"]["message"].as_str().unwrap().contains("expired"),
        "{v}"
    );

    // audit: who, when, from where; key ids, never keys
    let (s, audit) = get(&o, "/v2/admin/audit", ADMIN).await;
    assert_eq!(s, 200);
    let entries = audit["entries"].as_array().unwrap();
    let revoked = entries
        .iter()
        .find(|e| e["action"] == "key_revoked")
        .unwrap();
    assert_eq!(revoked["key_id"], kid.as_str());
    assert_eq!(revoked["actor"], "admin-token");
    assert!(
        revoked["source"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:"),
        "{revoked}"
    );
    assert!(entries
        .iter()
        .any(|e| e["action"] == "tenant_created" && e["tenant"] == "rival"));
    let (_, keys) = get(&o, "/v2/admin/keys?tenant=acme", ADMIN).await;
    assert_eq!(keys["keys"].as_array().unwrap().len(), 2);
    for text in [
        audit.to_string(),
        keys.to_string(),
        list.to_string(),
        o.log_text(),
    ] {
        for secret in [&k, &short, &rival] {
            assert!(!text.contains(secret.as_str()), "a key leaked: {text}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_answer_429_with_a_retry_after_that_works() {
    let (o, _w) = start(&["--token-delay-ms", "1"], &[]).await;
    tenant(
        &o,
        "tpm",
        1,
        json!({"tokens_per_minute": 600, "max_priority": "batch"}),
    )
    .await;
    tenant(&o, "quota", 1, json!({"tokens_per_day": 10})).await;
    tenant(&o, "rpm", 1, json!({"requests_per_minute": 1})).await;
    let (tpm, _) = key(&o, "tpm", json!({})).await;
    let (quota, _) = key(&o, "quota", json!({})).await;
    let (rpm, _) = key(&o, "rpm", json!({})).await;

    // tokens per minute: one 701-token task overdraws the 600-token bucket (refilled at 10/s)
    let (s, _, v) = post(&o, "/v2/tasks", &tpm, task(700, "batch")).await;
    assert_eq!(s, 202, "{v}");
    let st = wait_done(&o, v["task_id"].as_str().unwrap(), &tpm).await;
    assert_eq!(st["usage"]["tokens_out"], 700, "{st}");
    let (s, h, v) = post(&o, "/v2/tasks", &tpm, task(5, "batch")).await;
    assert_eq!(s, 429, "{v}");
    assert_eq!(v["error"]["code"], "RATE_LIMITED");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("tokens_per_minute = 600"));
    let secs: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(
        (1..=11).contains(&secs),
        "a debt of at most 101 tokens at 10/s: {secs}"
    );
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let (s, _, v) = post(&o, "/v2/tasks", &tpm, task(5, "batch")).await;
    assert_eq!(s, 202, "Retry-After honoured: {v}");

    // daily quota: refused until the next UTC midnight
    let (s, _, v) = post(&o, "/v2/tasks", &quota, task(20, "batch")).await;
    assert_eq!(s, 202, "{v}");
    wait_done(&o, v["task_id"].as_str().unwrap(), &quota).await;
    let (s, h, v) = post(&o, "/v2/tasks", &quota, task(1, "batch")).await;
    assert_eq!(s, 429, "{v}");
    assert_eq!(v["error"]["code"], "QUOTA_EXCEEDED");
    let secs: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let to_midnight = (now_ms / 86_400_000 + 1) * 86_400_000 - now_ms;
    assert!(
        secs.abs_diff(to_midnight / 1000) <= 5,
        "{secs} vs {to_midnight} ms"
    );

    // priority scope; requests per minute, and the OpenAI shape on /v1
    let (s, _, v) = post(&o, "/v2/tasks", &tpm, task(1, "interactive")).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (403, Some("FORBIDDEN")),
        "{v}"
    );
    assert_eq!(post(&o, "/v2/tasks", &rpm, task(1, "batch")).await.0, 202);
    let chat = json!({"model": FAULT_MODEL, "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 1, "user": "alice"});
    let (s, h, v) = post(&o, "/v1/chat/completions", &rpm, chat).await;
    assert_eq!(s, 429, "{v}");
    assert_eq!(v["error"]["type"], "rate_limit_error");
    assert_eq!(v["error"]["code"], "rate_limited");
    assert!(h.contains_key("retry-after"));

    // usage is metered per tenant; a tenant key sees only its own
    let (s, u) = get(&o, "/v2/usage", &tpm).await;
    assert_eq!(s, 200, "{u}");
    let rows = u["rows"].as_array().unwrap();
    assert!(rows.iter().all(|r| r["tenant"] == "tpm"), "{u}");
    let out: u64 = rows.iter().map(|r| r["tokens_out"].as_u64().unwrap()).sum();
    assert!(out >= 700, "{u}");
    assert_eq!(get(&o, "/v2/usage?tenant=quota", &tpm).await.0, 403);
    let (_, all) = get(&o, "/v2/usage", ADMIN).await;
    assert!(
        all["rows"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["tenant"] == "quota"),
        "{all}"
    );
    let metrics = scrape(&o.url(""), Some(ADMIN)).await;
    assert!(
        metrics.contains(
            "orchd_tenant_tokens_total{component=\"orchestratord\",tenant=\"tpm\",kind=\"out\"}"
        ),
        "{metrics}"
    );
    assert!(metrics.contains("orchd_tenant_rejected_total{component=\"orchestratord\",tenant=\"quota\",reason=\"QUOTA_EXCEEDED\"} 1"));
}

/// One tenant floods 200 batch tasks, then two tenants submit 10 each. With equal weights the
/// small tenants get a third of the dispatches each from then on, so their 20 tasks finish
/// while at most 10 (+ the one running, + slack for submission spread) flood tasks finish;
/// FIFO would run the whole flood first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fair_share_lets_small_tenants_through_a_flood() {
    let (o, _w) = start(&["--token-delay-ms", "30"], &["--queue-capacity", "300"]).await;
    let mut keys = Vec::new();
    for name in ["flood", "small-a", "small-b"] {
        tenant(&o, name, 1, json!({})).await;
        keys.push(key(&o, name, json!({})).await.0);
    }
    let flood_key = keys[0].clone();
    let flood: Vec<String> = futures::stream::iter(0..200)
        .map(|_| {
            let (o, k) = (&o, flood_key.clone());
            async move {
                let (s, _, v) = post(o, "/v2/tasks", &k, task(1, "batch")).await;
                assert_eq!(s, 202, "{v}");
                v["task_id"].as_str().unwrap().to_string()
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let (_, health) = get(&o, "/health", ADMIN).await;
    let waiting = health["queue_depth"].as_u64().unwrap();
    assert!(waiting >= 100, "the flood must still be queued: {health}");
    let t0 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let small: Vec<String> = futures::future::join_all((0..20).map(|i| {
        let (o, k) = (&o, keys[1 + i % 2].clone());
        async move {
            let (s, _, v) = post(o, "/v2/tasks", &k, task(1, "batch")).await;
            assert_eq!(s, 202, "{v}");
            v["task_id"].as_str().unwrap().to_string()
        }
    }))
    .await;
    let mut last_small = 0;
    for id in &small {
        let st = wait_done(&o, id, ADMIN).await;
        assert_eq!(st["state"], "completed", "{st}");
        last_small = last_small.max(st["finished_at_ms"].as_u64().unwrap());
    }
    let mut flood_meanwhile = 0;
    for id in &flood {
        let (_, st) = get(&o, &format!("/v2/tasks/{id}"), ADMIN).await;
        if let Some(f) = st["finished_at_ms"].as_u64() {
            if f > t0 && f <= last_small {
                flood_meanwhile += 1;
            }
        }
    }
    assert!(
        flood_meanwhile <= 15,
        "{flood_meanwhile} flood tasks finished while the 20 small ones went (fair share: about 10)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_tenants_keys_and_the_tenant_of_queued_tasks() {
    let o = Orchd::start(&["--api-token", ADMIN]);
    let body = json!({"worker_id": "gone", "url": "http://127.0.0.1:9", "model": FAULT_MODEL,
        "backend": "cpu", "slots_total": 1, "context_length": 2048});
    assert_eq!(post(&o, "/v2/workers/register", ADMIN, body).await.0, 200);
    // drain it so the task stays queued
    assert_eq!(
        post(&o, "/v2/workers/gone/drain", ADMIN, json!({})).await.0,
        200
    );
    tenant(&o, "acme", 2, json!({"max_queued": 5})).await;
    let (k, _) = key(&o, "acme", json!({})).await;
    let (s, _, v) = post(&o, "/v2/tasks", &k, task(1, "batch")).await;
    assert_eq!(s, 202, "{v}");
    let id = v["task_id"].as_str().unwrap().to_string();
    let o = o.restart_hard();
    let (s, st) = get(&o, &format!("/v2/tasks/{id}"), &k).await;
    assert_eq!(s, 200, "the key still works and sees its task: {st}");
    assert_eq!(st["tenant"], "acme");
    assert_eq!(st["state"], "queued");
    let (_, t) = get(&o, "/v2/admin/tenants/acme", ADMIN).await;
    assert_eq!(t["weight"], 2);
    assert_eq!(t["limits"]["max_queued"], 5);
}
