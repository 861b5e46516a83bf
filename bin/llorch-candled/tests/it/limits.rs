//! The worker's limits and hostile input (`.specs/worker.md` "Limits"): a chat template file
//! that loops, recurses, explodes or raises fails that request only, with a 400 naming why; a
//! body over `--max-body-bytes` gets 413 `PAYLOAD_TOO_LARGE`; random bodies on every route never get a 5xx or take
//! the worker down.

use std::time::{Duration, Instant};

use llorch_testkit::WorkerProcess;
use serde_json::{json, Value};

/// A template that misbehaves on request: the first message's content picks how.
const TEMPLATE: &str = "{% macro r(n) %}{{ r(n + 1) }}{% endmacro %}\
{% if messages[0]['content'] == 'loop' %}{% for a in range(100000) %}{% for b in range(100000) %}.{% endfor %}{% endfor %}\
{% elif messages[0]['content'] == 'recurse' %}{{ r(0) }}\
{% elif messages[0]['content'] == 'big' %}{% for a in range(1000) %}{{ 'x' * 1000000 }}{% endfor %}\
{% elif messages[0]['content'] == 'raise' %}{{ raise_exception('only polite questions') }}\
{% else %}{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}<|im_start|>assistant\n{% endif %}";

/// POST `path` declaring a `len`-byte JSON body without sending it; (status line and headers,
/// body) of the answer, read until the server closes.
fn declared_only(addr: &str, path: &str, len: usize) -> (String, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
         content-length: {len}\r\n\r\n"
    )
    .unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (head.to_string(), body.to_string())
}

fn chat(content: &str) -> Value {
    json!({"messages": [{"role": "user", "content": content}], "max_tokens": 2})
}

#[test]
fn hostile_templates_bodies_and_sizes_fail_one_request_only() {
    let test = "hostile_templates_bodies_and_sizes_fail_one_request_only";
    let Some(model) = llorch_testkit::require_smollm2(test) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let template = dir.path().join("hostile.jinja");
    std::fs::write(&template, TEMPLATE).unwrap();
    let w = WorkerProcess::start(
        std::path::Path::new(env!("CARGO_BIN_EXE_llorch-candled")),
        &model,
        &[
            "--chat-template",
            template.to_str().unwrap(),
            "--max-body-bytes",
            "2097152",
        ],
    );
    let base = w.url();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let c = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .unwrap();
        let post = |path: &str, body: Vec<u8>| {
            c.post(format!("{base}{path}"))
                .header("content-type", "application/json")
                .body(body)
                .send()
        };
        for (what, needle) in [
            ("loop", "instructions"),
            ("recurse", "recursion"),
            ("big", "MiB"),
            ("raise", "only polite questions"),
        ] {
            let start = Instant::now();
            let r = post("/execute", chat(what).to_string().into_bytes())
                .await
                .unwrap();
            assert_eq!(r.status(), 400, "{what}");
            let v: Value = r.json().await.unwrap();
            assert_eq!(v["error"]["code"], "INVALID_REQUEST", "{what}: {v}");
            let msg = v["error"]["message"].as_str().unwrap();
            assert!(msg.contains(needle), "{what}: {msg}");
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "{what}: {:?}",
                start.elapsed()
            );
        }
        // the same template serves ordinary conversations
        let r = post("/execute", chat("Hi").to_string().into_bytes())
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.text().await.unwrap().contains("event: end"));
        // over --max-body-bytes: the envelope naming the limit, answered from the declared
        // length before any body is read, and the connection is not reused. (Raw TCP: a client
        // that insists on writing 3 MB first may see the closed socket before the answer.)
        let (head, body) = declared_only(w.addr.as_str(), "/execute", 3 << 20);
        assert!(head.starts_with("HTTP/1.1 413"), "{head}");
        assert!(
            head.to_ascii_lowercase().contains("connection: close"),
            "{head}"
        );
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["error"]["code"], "PAYLOAD_TOO_LARGE", "{v}");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains("2097152") && msg.contains("--max-body-bytes"),
            "{msg}"
        );
        // random bodies on every route: a 4xx at worst, never a 5xx
        let mut rng = llorch_testkit::FuzzRng::new(59);
        let mut sent = 0;
        for path in ["/execute", "/cancel", "/tokenize", "/detokenize", "/nope"] {
            for _ in 0..40 {
                let mut v = rng.json(3);
                if rng.below(2) == 0 {
                    v = json!({"prompt": "Hi", "max_tokens": 1});
                    v[*rng.pick(&["temperature", "stop", "ids", "text", "messages", "seed"])] =
                        rng.json(2);
                }
                if v.is_object() {
                    v["max_tokens"] = json!(1);
                }
                let mut body = v.to_string().into_bytes();
                if rng.below(4) == 0 {
                    body.truncate(rng.below(body.len() + 1));
                }
                let r = post(path, body.clone()).await.unwrap();
                let status = r.status().as_u16();
                let _ = r.bytes().await;
                assert!(
                    status < 500,
                    "{path} {status} for {}",
                    String::from_utf8_lossy(&body)
                );
                sent += 1;
            }
        }
        let r = c.get(format!("{base}/health")).send().await.unwrap();
        let h: Value = r.json().await.unwrap();
        assert_eq!(h["status"], "ready", "{h}");
        eprintln!("{test}: {sent} random requests");
    });
}
