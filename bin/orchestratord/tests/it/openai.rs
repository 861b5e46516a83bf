//! The OpenAI-compatible routes against the real orchestratord binary: the chunk sequence and
//! error shapes with `fault-worker` (fast, deterministic tokens), then acceptance with a real
//! `llorch-candled` + SmolLM2 (greedy parity with `/v2/tasks`, usage, disconnect → cancel on the
//! worker). The official `openai` Python package is exercised by `tests/python/test_openai.py`.

use crate::common;

use std::time::{Duration, Instant};

use common::*;
use futures::StreamExt;
use llorch_testkit::{require_bin, require_smollm2, WorkerProcess};
use serde_json::{json, Value};

/// Real workers share 2 cores: those tests run one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// POST JSON; (status, headers, body text).
async fn post(o: &Orchd, path: &str, body: Value) -> (u16, reqwest::header::HeaderMap, String) {
    let r = client().post(o.url(path)).json(&body).send().await.unwrap();
    let (status, headers) = (r.status().as_u16(), r.headers().clone());
    (status, headers, r.text().await.unwrap())
}

/// The `data:` payloads of a finished SSE body.
fn data_lines(body: &str) -> Vec<String> {
    body.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(str::to_string)
        .collect()
}

/// The chunks of a finished SSE body that ends with `data: [DONE]`.
fn sse_chunks(body: &str) -> Vec<Value> {
    let data = data_lines(body);
    assert_eq!(data.last().unwrap(), "[DONE]", "{body}");
    data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

/// Assert OpenAI's error shape; return `error`.
fn openai_error(body: &str) -> Value {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    let err = v["error"].clone();
    let mut keys: Vec<&str> = err
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    keys.sort();
    assert_eq!(keys, ["code", "message", "param", "type"], "{body}");
    err
}

async fn fault_stack(args: &[&str], delay_ms: &str) -> (Orchd, FaultWorker) {
    let o = Orchd::start(args);
    let w = FaultWorker::start(
        "slow",
        "fw-1",
        &[
            "--orchestrator-url",
            &o.base,
            "--model",
            "fault-model",
            "--token-delay-ms",
            delay_ms,
        ],
    );
    let start = Instant::now();
    while get_json(&o.url("/v2/workers/fw-1")).await.1["status"] != "ready" {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "never registered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (o, w)
}

fn chat(model: &str, max_tokens: u32, stream: bool) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "Name three colors."}],
        "max_tokens": max_tokens, "temperature": 0, "stream": stream})
}

#[tokio::test(flavor = "multi_thread")]
async fn models_and_error_shapes() {
    let o = Orchd::start(&[]);
    let (_, v) = get_json(&o.url("/v1/models")).await;
    assert_eq!(v, json!({"object": "list", "data": []}));
    drop(o);
    let (o, _w) = fault_stack(&[], "1").await;
    let (_, v) = get_json(&o.url("/v1/models")).await;
    assert_eq!(v["data"][0]["id"], "fault-model");
    assert_eq!(v["data"][0]["context_length"], 2048);
    assert_eq!(v["data"][0]["owned_by"], "llama-orch");
    assert_eq!(get_json(&o.url("/v1/models/fault-model")).await.0, 200);
    let r = client().get(o.url("/v1/models/nope")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(
        openai_error(&r.text().await.unwrap())["code"],
        "model_not_found"
    );

    let (status, _, body) = post(&o, "/v1/chat/completions", chat("nope", 4, false)).await;
    let err = openai_error(&body);
    assert_eq!((status, &err["code"]), (404, &json!("model_not_found")));
    assert!(err["message"].as_str().unwrap().contains("fault-model"));

    let cases = [
        (json!({"n": 9}), "n", "invalid_value"),
        (json!({"n": 0}), "n", "invalid_value"),
        (
            json!({"logprobs": true, "top_logprobs": 21}),
            "top_logprobs",
            "invalid_value",
        ),
        (json!({"temperature": 3}), "temperature", "invalid_value"),
        (
            json!({"tempreature": 1}),
            "tempreature",
            "unknown_parameter",
        ),
        (
            json!({"logit_bias": {"1": 5}}),
            "logit_bias",
            "unsupported_parameter",
        ),
        (
            json!({"tools": [{"type": "function", "function": {"name": "f"}}],
                   "tool_choice": {"type": "function", "function": {"name": "nope"}}}),
            "tool_choice",
            "invalid_value",
        ),
        (
            json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x",
                   "schema": {"type": "object", "properties": {"a": {"type": "integr"}}}}}}),
            "response_format.json_schema.schema#/properties/a/type",
            "invalid_value",
        ),
    ];
    for (extra, param, code) in cases {
        let mut body = chat("fault-model", 4, false);
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let (status, _, text) = post(&o, "/v1/chat/completions", body).await;
        let err = openai_error(&text);
        assert_eq!(status, 400, "{text}");
        assert_eq!(
            (err["param"].as_str(), err["code"].as_str()),
            (Some(param), Some(code))
        );
        assert_eq!(err["type"], "invalid_request_error");
    }
    // /v2/tasks compiles a constraint at admission: a bad one is a 400 naming where.
    let (status, _, text) = post(
        &o,
        "/v2/tasks",
        json!({"model": "fault-model", "prompt": "x",
               "constraint": {"json_schema": {"type": "array", "uniqueItems": true}}}),
    )
    .await;
    assert_eq!(status, 400, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        v["error"]["fields"][0]["field"],
        "constraint.json_schema#/uniqueItems"
    );
    let (status, _, text) = post(
        &o,
        "/v1/completions",
        json!({"model": "fault-model", "prompt": ["a", "b"]}),
    )
    .await;
    assert_eq!(
        (status, openai_error(&text)["param"].as_str()),
        (400, Some("prompt"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn chunks_usage_and_done() {
    let (o, _w) = fault_stack(&[], "1").await;
    let mut body = chat("fault-model", 3, true);
    body["stream_options"] = json!({"include_usage": true});
    let (status, headers, text) = post(&o, "/v1/chat/completions", body).await;
    assert_eq!(status, 200);
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let data = data_lines(&text);
    assert_eq!(data.last().unwrap(), "[DONE]", "{text}");
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let id = chunks[0]["id"].as_str().unwrap();
    assert!(id.starts_with("chatcmpl-"));
    assert!(chunks
        .iter()
        .all(|c| c["id"] == id && c["object"] == "chat.completion.chunk"));
    assert_eq!(
        chunks[0]["choices"][0]["delta"],
        json!({"role": "assistant", "content": ""})
    );
    let texts: Vec<&str> = chunks[1..4]
        .iter()
        .map(|c| c["choices"][0]["delta"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["tok0 ", "tok1 ", "tok2 "]);
    assert_eq!(chunks[4]["choices"][0]["finish_reason"], "length");
    assert_eq!(chunks[4]["choices"][0]["delta"], json!({}));
    assert_eq!(chunks[5]["choices"], json!([]));
    assert_eq!(
        chunks[5]["usage"],
        json!({"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4})
    );
    assert_eq!(chunks.len(), 6);
    let (_, task) = get_json(&o.url(&format!("/v2/tasks/{id}"))).await;
    assert_eq!(task["state"], "completed", "the id is the task id");

    let (_, _, text) = post(
        &o,
        "/v1/completions",
        json!({"model": "fault-model", "prompt": "x", "max_tokens": 2, "stream": true}),
    )
    .await;
    let data = data_lines(&text);
    assert_eq!(
        data.len(),
        4,
        "2 tokens, finish, [DONE]; no usage unless asked: {text}"
    );
    let last: Value = serde_json::from_str(&data[2]).unwrap();
    assert_eq!(last["object"], "text_completion");
    assert_eq!(last["choices"][0]["finish_reason"], "length");

    let (status, _, text) = post(
        &o,
        "/v1/completions",
        json!({"model": "fault-model", "prompt": "x", "max_tokens": 2}),
    )
    .await;
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(status, 200);
    assert_eq!(v["choices"][0]["text"], "tok0 tok1 ");
    assert_eq!(v["usage"]["completion_tokens"], 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn n_choices_are_tasks_streamed_interleaved_with_their_index() {
    let (o, _w) = fault_stack(&[], "5").await;
    let mut body = chat("fault-model", 3, true);
    body["n"] = json!(3);
    body["stream_options"] = json!({"include_usage": true});
    let (status, _, text) = post(&o, "/v1/chat/completions", body).await;
    assert_eq!(status, 200, "{text}");
    let chunks = sse_chunks(&text);
    for i in 0..3 {
        let mine: Vec<&Value> = chunks
            .iter()
            .filter_map(|c| c["choices"].get(0))
            .filter(|c| c["index"] == i)
            .collect();
        assert_eq!(mine[0]["delta"]["role"], "assistant", "{text}");
        let content: String = mine[1..]
            .iter()
            .filter_map(|c| c["delta"]["content"].as_str())
            .collect();
        assert_eq!(content, "tok0 tok1 tok2 ", "choice {i}: {text}");
        let finish: Vec<&Value> = mine.iter().map(|c| &c["finish_reason"]).collect();
        assert_eq!(finish.last().unwrap().as_str(), Some("length"));
        assert_eq!(mine.len(), 5, "role, 3 tokens, finish: {text}");
    }
    assert_eq!(
        chunks.last().unwrap()["usage"],
        json!({"prompt_tokens": 1, "completion_tokens": 9, "total_tokens": 10}),
        "the prompt counted once, completion tokens summed"
    );
    let id = chunks[0]["id"].as_str().unwrap();
    for task in [id.to_string(), format!("{id}.1"), format!("{id}.2")] {
        let (_, t) = get_json(&o.url(&format!("/v2/tasks/{task}"))).await;
        assert_eq!(t["state"], "completed", "{task}: {t}");
    }

    let mut body = json!({"model": "fault-model", "prompt": "x", "max_tokens": 2, "n": 2});
    let (_, _, text) = post(&o, "/v1/completions", body.clone()).await;
    let v: Value = serde_json::from_str(&text).unwrap();
    let choices = v["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 2, "{v}");
    for (i, c) in choices.iter().enumerate() {
        assert_eq!(
            (c["index"].as_u64(), c["text"].as_str()),
            (Some(i as u64), Some("tok0 tok1 "))
        );
    }
    assert_eq!(v["usage"]["completion_tokens"], 4);
    // One choice refused by admission cancels the choices already admitted.
    body["n"] = json!(8);
    body["max_tokens"] = json!(1000);
    let (o2, _w2) = fault_stack(&["--queue-capacity", "3"], "20").await;
    let (status, _, text) = post(&o2, "/v1/completions", body).await;
    assert_eq!(
        (status, openai_error(&text)["code"].as_str()),
        (429, Some("queue_full"))
    );
    wait_orchd_cancelled(&o2, 1.0).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn queue_full_is_429_with_retry_after_and_auth_uses_the_openai_shape() {
    let locked = Orchd::start(&["--api-token", "sesame"]);
    let r = client().get(locked.url("/v1/models")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    let err = openai_error(&r.text().await.unwrap());
    assert_eq!(
        (err["type"].as_str(), err["code"].as_str()),
        (Some("authentication_error"), Some("unauthorized"))
    );
    let r = client()
        .get(locked.url("/v1/models"))
        .bearer_auth("sesame")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let (o, _w) = fault_stack(&["--queue-capacity", "1"], "50").await;
    let send = |max: u32| {
        client()
            .post(o.url("/v1/chat/completions"))
            .json(&chat("fault-model", max, true))
            .send()
    };
    let running = send(200).await.unwrap();
    // The first task must leave the queue (capacity 1) before the second arrives.
    let start = Instant::now();
    while get_json(&o.url("/v2/tasks?state=running")).await.1["tasks"]
        .as_array()
        .is_none_or(|t| t.is_empty())
    {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "never dispatched"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let queued = send(200).await.unwrap();
    assert_eq!(
        (running.status().as_u16(), queued.status().as_u16()),
        (200, 200)
    );
    let r = send(1).await.unwrap();
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1);
    let err = openai_error(&r.text().await.unwrap());
    assert_eq!(
        (err["type"].as_str(), err["code"].as_str()),
        (Some("rate_limit_error"), Some("queue_full"))
    );
}

/// Poll the orchestrator's metrics until `orchd_tasks_finished_total{outcome="cancelled"}` is at
/// least `n`.
async fn wait_orchd_cancelled(o: &Orchd, n: f64) {
    let start = Instant::now();
    loop {
        let text = scrape(&o.url(""), None).await;
        let got = metric_sum(&text, "orchd_tasks_finished_total", "\"cancelled\"");
        if got >= n {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no task was cancelled"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_goes_away_cancels_its_task_at_once() {
    let (o, _w) = fault_stack(&[], "20").await;
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let r = impatient
        .post(o.url("/v1/chat/completions"))
        .json(&chat("fault-model", 1000, false))
        .send()
        .await;
    assert!(r.unwrap_err().is_timeout());
    wait_orchd_cancelled(&o, 1.0).await;
    let r = client()
        .post(o.url("/v1/completions"))
        .json(&json!({"model": "fault-model", "prompt": "x", "max_tokens": 1000, "stream": true}))
        .send()
        .await
        .unwrap();
    let mut body = r.bytes_stream();
    body.next().await.unwrap().unwrap();
    drop(body);
    wait_orchd_cancelled(&o, 2.0).await;
    let (_, list) = get_json(&o.url("/v2/tasks?state=cancelled")).await;
    assert_eq!(list["tasks"].as_array().unwrap().len(), 2, "{list}");
    let (status, body) = get_json(&o.url("/v2/tasks?state=bogus")).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (400, &json!("INVALID_REQUEST"))
    );
}

// ---- with a real worker -------------------------------------------------------------------

async fn real_stack(test: &str) -> Option<(Orchd, WorkerProcess)> {
    let bin = require_bin(test, "llorch-candled")?;
    let model = require_smollm2(test)?;
    let o = Orchd::start(&[]);
    let w = WorkerProcess::start(
        &bin,
        &model,
        &[
            "--orchestrator-url",
            &o.base,
            "--model-id",
            "smollm2-135m",
            "--max-queue",
            "0",
        ],
    );
    let start = Instant::now();
    loop {
        let (_, v) = get_json(&o.url("/v1/models")).await;
        if v["data"][0]["id"] == "smollm2-135m" {
            assert_eq!(v["data"][0]["context_length"], 8192, "{v}");
            return Some((o, w));
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "worker never registered:\n{}",
            w.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn worker_cancelled(url: &str) -> f64 {
    let text = scrape(url, None).await;
    metric_sum(&text, "worker_requests_total", "cancelled")
}

#[tokio::test(flavor = "multi_thread")]
async fn real_greedy_chat_equals_v2_and_disconnect_cancels_on_the_worker() {
    let _serial = SERIAL.lock().await;
    let Some((o, w)) = real_stack("openai_real").await else {
        return;
    };
    let mut body = chat("smollm2-135m", 16, true);
    body["stream_options"] = json!({"include_usage": true});
    let (_, _, text) = post(&o, "/v1/chat/completions", body).await;
    let data = data_lines(&text);
    assert_eq!(data.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let content: Vec<&str> = chunks[1..]
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    let usage = &chunks.last().unwrap()["usage"];

    let id = submit_ok(&o, json!({"model": "smollm2-135m", "messages": [{"role": "user", "content": "Name three colors."}],
        "max_tokens": 16, "temperature": 0})).await;
    let evs = all_events(&o, &id).await;
    let end = single_terminal(&evs);
    let (v2_text, v2_ids) = tokens(&evs);
    assert_eq!(content.concat(), v2_text, "greedy output equals /v2/tasks");
    assert_eq!(content.len(), v2_ids.len(), "one chunk per token");
    assert_eq!(usage["completion_tokens"], end.data["tokens_out"]);
    assert_eq!(usage["prompt_tokens"], end.data["tokens_in"]);
    assert_eq!(
        usage["completion_tokens"].as_u64().unwrap() as usize,
        content.len()
    );
    // The same conversation again reuses the worker's prompt cache (bit-exact, so the /v2 tokens
    // above equal the first answer's), and usage says how much of the prompt came from it.
    assert!(
        end.data["tokens_cached"].as_u64().unwrap_or(0) > 0,
        "{}",
        end.data
    );
    let (_, _, again) = post(&o, "/v1/chat/completions", chat("smollm2-135m", 16, false)).await;
    let again: Value = serde_json::from_str(&again).unwrap();
    let prompt_tokens = again["usage"]["prompt_tokens"].as_u64().unwrap();
    assert_eq!(
        again["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64(),
        Some(prompt_tokens - 1),
        "{again}"
    );
    assert_eq!(again["choices"][0]["message"]["content"], content.concat());

    let before = worker_cancelled(&w.url()).await;
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(1500))
        .build()
        .unwrap();
    // Greedy counting does not reach an end of sequence within the client's patience.
    let long = json!({"model": "smollm2-135m", "prompt": "1, 2, 3, 4, 5, 6,", "max_tokens": 2000,
        "temperature": 0});
    let r = impatient
        .post(o.url("/v1/completions"))
        .json(&long)
        .send()
        .await;
    assert!(r.unwrap_err().is_timeout());
    let start = Instant::now();
    while worker_cancelled(&w.url()).await < before + 1.0 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the worker never cancelled the job"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_orchd_cancelled(&o, 1.0).await;
}
