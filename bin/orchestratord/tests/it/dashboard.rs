//! The dashboard's HTTP surface on a real orchestratord: the embedded page (content types,
//! CSP, ETag revalidation, public even with a token) and the live stream (auth, snapshot,
//! ticks that follow the registry). The page itself is driven in a real browser by
//! scripts/test-dashboard.sh.

use std::time::Duration;

use futures::StreamExt;
use llorch_client::SseParser;
use serde_json::Value;

use crate::common::{client, Orchd};

const TOKEN: &str = "dashboard-it-token-0123456789";

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Read `(event, data)` pairs from the dashboard stream until `done` accepts one.
async fn stream_until(
    o: &Orchd,
    mut done: impl FnMut(&str, &Value) -> bool,
) -> Vec<(String, Value)> {
    let r = client()
        .get(o.url("/v2/dashboard/stream"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let mut body = r.bytes_stream();
    let mut parser = SseParser::new();
    let mut seen = Vec::new();
    loop {
        let chunk = tokio::time::timeout(Duration::from_secs(30), body.next())
            .await
            .expect("a dashboard event within 30 s")
            .expect("the stream stays open")
            .unwrap();
        for e in parser.push(&chunk) {
            let data: Value = serde_json::from_str(&e.data).unwrap();
            let stop = done(&e.event, &data);
            seen.push((e.event, data));
            if stop {
                return seen;
            }
        }
    }
}

#[tokio::test]
async fn the_page_is_embedded_with_strict_headers_and_revalidates() {
    let o = Orchd::start(&[]);
    let c = no_redirects();
    let root = c.get(o.url("/")).send().await.unwrap();
    assert!(root.status().is_redirection(), "{}", root.status());
    assert_eq!(root.headers()["location"], "/ui");

    let page = c.get(o.url("/ui")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let h = page.headers().clone();
    assert_eq!(h["content-type"], "text/html; charset=utf-8");
    let csp = h["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'self'"));
    assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"));
    assert_eq!(h["cache-control"], "no-cache");
    assert_eq!(h["x-content-type-options"], "nosniff");
    let html = page.text().await.unwrap();
    assert!(html.contains("src=\"/ui/app.js\""));

    let etag = h["etag"].clone();
    let again = c
        .get(o.url("/ui"))
        .header("if-none-match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);

    let js = c.get(o.url("/ui/app.js")).send().await.unwrap();
    assert_eq!(js.status(), 200);
    assert!(js.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/javascript"));
    let missing = c.get(o.url("/ui/nope.js")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
}

#[tokio::test]
async fn with_a_token_the_page_is_public_and_the_data_is_not() {
    let o = Orchd::start_env(&[], &[("LLORCH_API_TOKEN", TOKEN)]);
    let c = no_redirects();
    assert_eq!(c.get(o.url("/ui")).send().await.unwrap().status(), 200);
    assert_eq!(
        c.get(o.url("/ui/app.js")).send().await.unwrap().status(),
        200
    );
    let boot: Value = c
        .get(o.url("/ui/boot.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(boot["auth_required"], true);
    let denied = c.get(o.url("/v2/dashboard/stream")).send().await.unwrap();
    assert_eq!(denied.status(), 401);
    let wrong = c
        .get(o.url("/v2/dashboard/stream"))
        .bearer_auth("not-the-token-000000000")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    // A path under /ui that is no page file is not public.
    assert_eq!(
        c.get(o.url("/ui/nope.js")).send().await.unwrap().status(),
        401
    );
}

#[tokio::test]
async fn the_stream_sends_history_then_ticks_that_follow_the_registry() {
    let o = Orchd::start_env(&[], &[("LLORCH_API_TOKEN", TOKEN)]);
    let first = stream_until(&o, |ev, _| ev == "snapshot").await;
    let snap = &first[0].1;
    assert_eq!(first[0].0, "snapshot");
    assert_eq!(snap["sample_every_ms"], 2000);
    assert!(snap["history"].is_array());

    let reg = serde_json::json!({"worker_id": "dash-w1", "url": "http://127.0.0.1:9", "model": "m",
        "backend": "cpu", "slots_total": 2, "context_length": 4096});
    let r = client()
        .post(o.url("/v2/workers/register"))
        .bearer_auth(TOKEN)
        .json(&reg)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = stream_until(&o, |ev, d| {
        ev == "tick" && d["workers"].as_array().is_some_and(|w| !w.is_empty())
    })
    .await;
    let tick = &seen.last().unwrap().1;
    let w = &tick["workers"][0];
    assert_eq!(w["worker_id"], "dash-w1");
    assert_eq!(w["model"], "m");
    assert_eq!(w["draining"], false);
    assert_eq!(w["tokens_per_sec"], 0.0);
    let s = &tick["sample"];
    assert_eq!(
        (s["workers_total"].as_u64(), s["slots_total"].as_u64()),
        (Some(1), Some(2))
    );
    assert_eq!(s["queue_interactive"], 0);
    assert!(tick["fleet"].is_null());
    assert!(tick["tasks_key"].is_u64());

    let r = client()
        .post(o.url("/v2/workers/dash-w1/drain"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    stream_until(&o, |ev, d| {
        ev == "tick" && d["workers"][0]["draining"] == true
    })
    .await;
    // The snapshot of a new stream now carries the history so far.
    let again = stream_until(&o, |ev, _| ev == "snapshot").await;
    assert!(!again[0].1["history"].as_array().unwrap().is_empty());
    assert_eq!(again[0].1["tick"]["workers"][0]["worker_id"], "dash-w1");
}
