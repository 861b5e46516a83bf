//! The worker over real HTTP: a real `llorch-candled` process with the real SmolLM2 model.

use std::time::{Duration, Instant};

use futures::StreamExt;
use llorch_client::WorkerClient;
use llorch_testkit::WorkerProcess;
use llorch_wire::{
    ChatMessage, ErrorEnvelope, ExecuteRequest, SamplingParams, StopReason, WorkerEvent,
};

mod constrained;
mod generic;
mod reliability;

/// A prompt SmolLM2 continues for hundreds of tokens without an end-of-sequence.
const COUNTING: &str = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,";

fn start(test: &str) -> Option<WorkerProcess> {
    let model = llorch_testkit::require_smollm2(test)?;
    Some(WorkerProcess::start(
        std::path::Path::new(env!("CARGO_BIN_EXE_llorch-candled")),
        &model,
        &[],
    ))
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Collect a whole stream: (events, arrival time of each event).
async fn collect(client: &WorkerClient, req: &ExecuteRequest) -> Vec<(WorkerEvent, Instant)> {
    let mut s = Box::pin(client.execute(req).await.expect("execute accepted"));
    let mut out = Vec::new();
    while let Some(ev) = s.next().await {
        out.push((ev.expect("event"), Instant::now()));
    }
    out
}

fn greedy_req(prompt: &str, max_tokens: u32) -> ExecuteRequest {
    ExecuteRequest {
        gen: llorch_wire::Generation {
            prompt: Some(prompt.into()),
            max_tokens: Some(max_tokens),
            sampling: SamplingParams::greedy(),
            ..Default::default()
        },
        ..Default::default()
    }
}

#[test]
fn streams_tokens_as_they_are_generated_and_matches_fixture() {
    let Some(w) = start("streams_tokens_as_they_are_generated_and_matches_fixture") else {
        return;
    };
    let client = WorkerClient::new(&w.url());
    let fx = llorch_testkit::smollm2_fixture();
    let case = &fx["cases"][2]; // raw-fox
    let events = rt().block_on(collect(
        &client,
        &greedy_req(case["text"].as_str().unwrap(), 32),
    ));
    let kinds: Vec<&str> = events.iter().map(|(e, _)| e.kind()).collect();
    assert_eq!(kinds.first(), Some(&"started"));
    assert_eq!(
        kinds
            .iter()
            .filter(|k| **k == "end" || **k == "error")
            .count(),
        1,
        "exactly one terminal event"
    );
    assert!(events.last().unwrap().0.is_terminal());
    let ids: Vec<u32> = events
        .iter()
        .filter_map(|(e, _)| {
            if let WorkerEvent::Token { id, .. } = e {
                Some(*id)
            } else {
                None
            }
        })
        .collect();
    let reference: Vec<u32> = case["greedy_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    let must = case["must_match_prefix"].as_u64().unwrap() as usize;
    assert_eq!(
        ids[..must.min(32)],
        reference[..must.min(32)],
        "greedy tokens over HTTP equal llama.cpp's"
    );
    // really streamed: the first token arrives well before the end event
    let first_tok = events
        .iter()
        .find(|(e, _)| matches!(e, WorkerEvent::Token { .. }))
        .unwrap()
        .1;
    let end = events.last().unwrap().1;
    assert!(
        end - first_tok > Duration::from_millis(20),
        "first token {:?} before end",
        end - first_tok
    );
    if let WorkerEvent::End {
        tokens_out,
        stop_reason,
        decode_tokens_per_sec,
        ..
    } = &events.last().unwrap().0
    {
        assert_eq!(*tokens_out as usize, ids.len());
        assert!(matches!(
            stop_reason,
            StopReason::MaxTokens | StopReason::Eos
        ));
        assert!(*decode_tokens_per_sec > 0.0);
    } else {
        panic!("no end event");
    }
}

#[test]
fn chat_messages_render_with_the_models_template() {
    let Some(w) = start("chat_messages_render_with_the_models_template") else {
        return;
    };
    let client = WorkerClient::new(&w.url());
    let fx = llorch_testkit::smollm2_fixture();
    let case = &fx["cases"][0];
    let messages: Vec<ChatMessage> = serde_json::from_value(case["messages"].clone()).unwrap();
    let req = llorch_wire::TokenizeRequest {
        messages: Some(messages.clone()),
        add_special_tokens: true,
        ..Default::default()
    };
    let tok = rt().block_on(client.tokenize(&req)).unwrap();
    assert_eq!(tok.rendered.as_deref(), case["text"].as_str());
    let want: Vec<u32> = case["prompt_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    assert_eq!(tok.ids, want);
    let req = ExecuteRequest {
        gen: llorch_wire::Generation {
            messages: Some(messages),
            max_tokens: Some(8),
            sampling: SamplingParams::greedy(),
            ..Default::default()
        },
        ..Default::default()
    };
    let events = rt().block_on(collect(&client, &req));
    let WorkerEvent::Started { tokens_in, .. } = &events[0].0 else {
        panic!("started first")
    };
    assert_eq!(*tokens_in as usize, want.len());
}

#[test]
fn cancel_and_disconnect_stop_a_long_generation() {
    let Some(w) = start("cancel_and_disconnect_stop_a_long_generation") else {
        return;
    };
    let client = WorkerClient::new(&w.url());
    let rt = rt();
    // 1. POST /cancel
    let mut req = greedy_req(COUNTING, 500);
    req.job_id = Some("long-1".into());
    let events = rt.block_on(async {
        let mut s = Box::pin(client.execute(&req).await.unwrap());
        let mut out = Vec::new();
        let mut tokens = 0;
        while let Some(ev) = s.next().await {
            let ev = ev.unwrap();
            if matches!(ev, WorkerEvent::Token { .. }) {
                tokens += 1;
                if tokens == 3 {
                    assert!(client.cancel("long-1").await.unwrap());
                }
            }
            out.push(ev);
        }
        out
    });
    let WorkerEvent::End {
        stop_reason,
        tokens_out,
        ..
    } = events.last().unwrap()
    else {
        panic!("end event")
    };
    assert_eq!(*stop_reason, StopReason::Cancelled);
    assert!(*tokens_out < 20, "cancel stopped after {tokens_out} tokens");
    // 2. disconnect: drop the stream after a few tokens
    rt.block_on(async {
        let mut s = Box::pin(client.execute(&greedy_req(COUNTING, 500)).await.unwrap());
        for _ in 0..4 {
            s.next().await;
        }
    });
    // the worker must be idle again quickly, and count the job as cancelled
    let t = Instant::now();
    loop {
        let h = rt.block_on(client.health()).unwrap();
        if h.active_jobs == 0 {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "job still running after disconnect"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (_, metrics) = llorch_testkit::http_get(&w.addr, "/metrics").unwrap();
    assert!(
        metrics.contains("worker_requests_total{outcome=\"cancelled\"} 2"),
        "{metrics}"
    );
    // 3. unknown job → 404
    assert!(!rt.block_on(client.cancel("no-such-job")).unwrap());
}

#[test]
fn health_answers_during_generation() {
    let Some(w) = start("health_answers_during_generation") else {
        return;
    };
    let client = WorkerClient::new(&w.url());
    let rt = rt();
    rt.block_on(async {
        let mut s = Box::pin(client.execute(&greedy_req(COUNTING, 200)).await.unwrap());
        s.next().await; // started
        s.next().await; // first token
        let t = Instant::now();
        let h = client.health().await.unwrap();
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "health took {:?}",
            t.elapsed()
        );
        assert_eq!(h.state, llorch_wire::WorkerState::Busy);
        assert_eq!(h.architecture, "llama");
        assert!(h.context_length >= 2048);
        assert_eq!(h.vocab_size, 49152);
        assert!(!h.simd.is_empty() || !cfg!(target_arch = "x86_64"));
    });
}

/// Three requests at once share the worker's decode steps (its default `--parallel 4`): their
/// streams overlap, each stream carries exactly what the request gets alone, and the batch
/// metric shows they ran together.
#[test]
fn concurrent_requests_run_together_with_their_solo_output() {
    let Some(w) = start("concurrent_requests_run_together_with_their_solo_output") else {
        return;
    };
    let client = WorkerClient::new(&w.url());
    let prompts = [
        "The quick brown fox",
        "Once upon a time,",
        "def fibonacci(n):",
    ];
    let ids = |events: &[(WorkerEvent, Instant)]| -> Vec<u32> {
        events
            .iter()
            .filter_map(|(e, _)| match e {
                WorkerEvent::Token { id, .. } => Some(*id),
                _ => None,
            })
            .collect()
    };
    let rt = rt();
    let solo: Vec<Vec<u32>> = prompts
        .iter()
        .map(|p| ids(&rt.block_on(collect(&client, &greedy_req(p, 32)))))
        .collect();
    let reqs: Vec<_> = prompts.iter().map(|p| greedy_req(p, 32)).collect();
    let together = rt.block_on(futures::future::join_all(
        reqs.iter().map(|r| collect(&client, r)),
    ));
    for (i, events) in together.iter().enumerate() {
        assert_eq!(
            ids(events),
            solo[i],
            "request {i}: output differs from solo"
        );
    }
    let first_token = |events: &[(WorkerEvent, Instant)]| {
        events
            .iter()
            .find(|(e, _)| matches!(e, WorkerEvent::Token { .. }))
            .map(|(_, t)| *t)
            .unwrap()
    };
    let last_first_token = together.iter().map(|e| first_token(e)).max().unwrap();
    let first_end = together.iter().map(|e| e.last().unwrap().1).min().unwrap();
    assert!(
        last_first_token < first_end,
        "every stream had started generating before any ended"
    );
    let (status, metrics) = llorch_testkit::http_get(&w.addr, "/metrics").unwrap();
    assert_eq!(status, 200);
    let peak: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("worker_batch_size_peak "))
        .expect("worker_batch_size_peak in /metrics")
        .trim()
        .parse()
        .unwrap();
    assert!(
        peak >= 2.0,
        "decode steps served several requests: peak {peak}"
    );
}

/// The first event leaves the worker as soon as the prompt is prefilled, and on a kept-alive
/// connection it must arrive then too: without TCP_NODELAY it waited behind the response head
/// for the client's delayed ACK (~40 ms on Linux), which the orchestrator's relay paid on
/// every request.
#[test]
fn events_are_not_held_back_on_a_kept_alive_connection() {
    let Some(w) = start("events_are_not_held_back_on_a_kept_alive_connection") else {
        return;
    };
    let client = WorkerClient::new(&w.url());
    let rt = rt();
    let mut extra = Vec::new();
    for _ in 0..8 {
        let t0 = Instant::now();
        let events = rt.block_on(collect(&client, &greedy_req("The quick brown fox", 2)));
        let Some((
            WorkerEvent::End {
                prefill_time_ms,
                queue_time_ms,
                ..
            },
            _,
        )) = events.last()
        else {
            panic!("no end event")
        };
        let started = (events[0].1 - t0).as_secs_f64() * 1e3;
        extra.push(started - prefill_time_ms - queue_time_ms);
    }
    // measured: ~1 ms each with TCP_NODELAY; without it every other request waited 23-26 ms
    let held = extra[1..].iter().filter(|&&ms| ms > 15.0).count();
    assert!(
        held <= 1,
        "ms from request to `started` beyond queue + prefill, on a reused connection: {extra:?}"
    );
}

fn post_raw(addr: &str, path: &str, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).unwrap();
    let status = buf.split_whitespace().nth(1).unwrap().parse().unwrap();
    (
        status,
        buf.split_once("\r\n\r\n")
            .map(|x| x.1.to_string())
            .unwrap_or_default(),
    )
}

#[test]
fn bad_requests_get_typed_errors_and_the_worker_keeps_serving() {
    let Some(w) = start("bad_requests_get_typed_errors_and_the_worker_keeps_serving") else {
        return;
    };
    let cases: &[(&str, u16, &str, &[&str])] = &[
        ("{not json", 400, "INVALID_REQUEST", &["body"]),
        (r#"{"max_tokens":5}"#, 400, "INVALID_REQUEST", &["prompt"]),
        (
            r#"{"prompt":"hi","temperature":-1}"#,
            400,
            "INVALID_REQUEST",
            &["temperature"],
        ),
        (
            r#"{"prompt":"hi","top_p":2}"#,
            400,
            "INVALID_REQUEST",
            &["top_p"],
        ),
        (
            r#"{"prompt":"hi","max_tokens":0}"#,
            400,
            "INVALID_REQUEST",
            &["max_tokens"],
        ),
        (
            r#"{"prompt":"hi","max_tokens":0,"temperature":-1,"top_p":2}"#,
            400,
            "INVALID_REQUEST",
            &["max_tokens", "temperature", "top_p"],
        ),
        (
            r#"{"prompt":"hi","max_tokens":9000}"#,
            400,
            "CONTEXT_LENGTH_EXCEEDED",
            &["max_tokens"],
        ),
        (
            r#"{"prompt_ids":[1,999999]}"#,
            400,
            "INVALID_REQUEST",
            &["prompt_ids"],
        ),
    ];
    for (body, status, code, fields) in cases {
        let (s, resp) = post_raw(&w.addr, "/execute", body);
        assert_eq!(s, *status, "{body} -> {resp}");
        let env: ErrorEnvelope =
            serde_json::from_str(&resp).unwrap_or_else(|e| panic!("{body}: {e}: {resp}"));
        assert_eq!(env.error.code.as_str(), *code, "{body}");
        let got: Vec<&str> = env.error.fields.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(&got, fields, "{body}: {resp}");
        assert!(env.error.fields.iter().all(|f| !f.message.is_empty()));
    }
    // a prompt longer than the context
    let long = "word ".repeat(9000);
    let (s, resp) = post_raw(
        &w.addr,
        "/execute",
        &serde_json::json!({"prompt": long, "max_tokens": 10}).to_string(),
    );
    assert_eq!(s, 400);
    assert!(resp.contains("CONTEXT_LENGTH_EXCEEDED"), "{resp}");
    // still serving
    let client = WorkerClient::new(&w.url());
    let events = rt().block_on(collect(&client, &greedy_req("Hello", 4)));
    assert!(matches!(events.last().unwrap().0, WorkerEvent::End { .. }));
}

#[test]
fn stop_strings_are_never_streamed_and_seeds_reproduce() {
    let Some(w) = start("stop_strings_are_never_streamed_and_seeds_reproduce") else {
        return;
    };
    let client = WorkerClient::new(&w.url());
    let rt = rt();
    let text_of = |events: &[(WorkerEvent, Instant)]| -> String {
        events
            .iter()
            .filter_map(|(e, _)| {
                if let WorkerEvent::Token { t, .. } = e {
                    Some(t.as_str())
                } else {
                    None
                }
            })
            .collect()
    };
    // greedy output for the fox prompt starts with " jumps over the lazy dog"
    let full = text_of(&rt.block_on(collect(&client, &greedy_req("The quick brown fox", 12))));
    let stop = full.split_whitespace().nth(2).unwrap().to_string();
    let mut req = greedy_req("The quick brown fox", 12);
    req.gen.stop = vec![stop.clone()];
    let events = rt.block_on(collect(&client, &req));
    let text = text_of(&events);
    assert!(
        !text.contains(&stop),
        "stop text {stop:?} leaked into {text:?}"
    );
    assert!(full.starts_with(&text), "{text:?} is a prefix of {full:?}");
    let WorkerEvent::End {
        stop_reason,
        stop_sequence_matched,
        ..
    } = &events.last().unwrap().0
    else {
        panic!()
    };
    assert_eq!(*stop_reason, StopReason::StopSequence);
    assert_eq!(stop_sequence_matched.as_deref(), Some(stop.as_str()));
    // sampling with a seed is reproducible and the seed is echoed
    let sampled = |seed| {
        let mut r = greedy_req("Once upon a time", 16);
        r.gen.sampling = SamplingParams {
            temperature: 0.9,
            top_p: 0.95,
            top_k: 40,
            min_p: 0.02,
            repetition_penalty: 1.1,
            seed: Some(seed),
        };
        rt.block_on(collect(&client, &r))
    };
    let (a, b) = (sampled(7), sampled(7));
    assert_eq!(text_of(&a), text_of(&b));
    let WorkerEvent::End { seed, .. } = &a.last().unwrap().0 else {
        panic!()
    };
    assert_eq!(*seed, 7);
}

#[test]
fn logprobs_and_prompt_logprobs_over_http() {
    let Some(w) = start("logprobs_and_prompt_logprobs_over_http") else {
        return;
    };
    let client = WorkerClient::new(&w.url());
    let mut req = greedy_req("The quick brown fox", 3);
    req.gen.logprobs = Some(3);
    req.prompt_logprobs = Some(2);
    let events = rt().block_on(collect(&client, &req));
    let WorkerEvent::Started {
        prompt_logprobs: Some(plp),
        tokens_in,
        ..
    } = &events[0].0
    else {
        panic!("started with prompt_logprobs")
    };
    assert_eq!(plp.len(), *tokens_in as usize - 1);
    assert!(plp.iter().all(|p| p.logprob <= 0.0 && p.top.len() == 2));
    for (e, _) in &events {
        if let WorkerEvent::Token {
            id,
            logprob: Some(lp),
            ..
        } = e
        {
            assert_eq!(lp.id, *id);
            assert_eq!(lp.top.len(), 3);
            assert_eq!(lp.top[0].id, *id, "greedy token is the top-1");
        }
    }
}
