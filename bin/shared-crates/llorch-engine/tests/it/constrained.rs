//! Constrained decoding with the real SmolLM2 model: JSON schemas, `json_object`, regex and Lark
//! grammars; every answer parses and validates, alone and batched (four jobs sharing decode
//! steps give what they give alone), greedy and sampled; `max_tokens` cuts an answer off with
//! `stop_reason: max_tokens`; log-probabilities stay those of the raw distribution; cancel works.
//!
//! Skips locally (fails under CI=true) without the model: `scripts/fetch-test-model.sh`.

use std::sync::mpsc::{channel, Receiver};
use std::sync::Arc;
use std::time::Duration;

use llorch_engine::generate::{run_job, teacher_force};
use llorch_engine::EngineEvent;
use llorch_engine::{load, Engine, Job, LoadOptions, LoadedModel};
use llorch_wire::{ChatMessage, Constraint, SamplingParams, StopReason};
use serde_json::{json, Value};

/// A chat prompt asking for JSON, tokenized as the worker does for `messages`.
fn chat_ids(lm: &LoadedModel, question: &str) -> Vec<u32> {
    let msgs = [ChatMessage {
        role: "user".into(),
        content: question.into(),
    }];
    let text = lm.chat.render(&msgs, true).unwrap();
    lm.tokenizer.encode(&text, false).unwrap()
}

fn job(lm: &LoadedModel, id: &str, q: &str, c: &Constraint, max: u32, seed: Option<u64>) -> Job {
    let sampling = match seed {
        None => SamplingParams::greedy(),
        Some(s) => SamplingParams {
            temperature: 0.8,
            seed: Some(s),
            ..SamplingParams::default()
        },
    };
    let mut j = Job::new(id, chat_ids(lm, q), max, sampling);
    j.guide = Some(lm.compile_constraint(c).unwrap());
    j
}

/// Output text, token ids and the terminal event of one job's events.
fn outcome(events: &[EngineEvent]) -> (String, Vec<u32>, EngineEvent) {
    let mut text = String::new();
    let mut ids = Vec::new();
    for e in events {
        if let EngineEvent::Token { id, t, .. } = e {
            text.push_str(t);
            ids.push(*id);
        }
    }
    let last = events.last().expect("events").clone();
    assert!(last.is_terminal(), "{events:?}");
    (text, ids, last)
}

fn run_alone(lm: &LoadedModel, j: Job) -> Vec<EngineEvent> {
    let mut events = Vec::new();
    let mut sink = |e: EngineEvent| {
        events.push(e);
        true
    };
    run_job(lm, j, &mut sink);
    events
}

fn submit(engine: &Engine, j: Job) -> Receiver<EngineEvent> {
    let (tx, rx) = channel();
    engine
        .submit(j, Box::new(move |e: EngineEvent| tx.send(e).is_ok()))
        .unwrap();
    rx
}

fn collect(rx: Receiver<EngineEvent>) -> Vec<EngineEvent> {
    let mut events = Vec::new();
    while let Ok(e) = rx.recv_timeout(Duration::from_secs(300)) {
        let end = e.is_terminal();
        events.push(e);
        if end {
            break;
        }
    }
    events
}

/// A small JSON schema validator for the keywords these tests use.
fn validate(v: &Value, s: &Value, at: &str) -> Result<(), String> {
    let fail = |why: &str| Err(format!("{at}: {why} ({v})"));
    if let Some(e) = s.get("enum").and_then(Value::as_array) {
        if !e.contains(v) {
            return fail("not in enum");
        }
    }
    match s.get("type").and_then(Value::as_str) {
        Some("object") => {
            let Some(o) = v.as_object() else {
                return fail("not an object");
            };
            let props = s.get("properties").and_then(Value::as_object);
            for r in s
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if !o.contains_key(r.as_str().unwrap()) {
                    return fail(&format!("missing {r}"));
                }
            }
            for (k, x) in o {
                match props.and_then(|p| p.get(k)) {
                    Some(ps) => validate(x, ps, &format!("{at}/{k}"))?,
                    None if s.get("additionalProperties") == Some(&json!(false)) => {
                        return fail(&format!("extra key {k}"))
                    }
                    None => {}
                }
            }
        }
        Some("array") => {
            let Some(a) = v.as_array() else {
                return fail("not an array");
            };
            let n = a.len() as u64;
            if s.get("minItems")
                .and_then(Value::as_u64)
                .is_some_and(|m| n < m)
                || s.get("maxItems")
                    .and_then(Value::as_u64)
                    .is_some_and(|m| n > m)
            {
                return fail("item count");
            }
            if let Some(is) = s.get("items") {
                for (i, x) in a.iter().enumerate() {
                    validate(x, is, &format!("{at}/{i}"))?;
                }
            }
        }
        Some(t @ ("integer" | "number")) => {
            let Some(x) = v.as_f64() else {
                return fail("not a number");
            };
            if t == "integer" && !(v.is_i64() || v.is_u64()) {
                return fail("not an integer");
            }
            if s.get("minimum")
                .and_then(Value::as_f64)
                .is_some_and(|m| x < m)
                || s.get("maximum")
                    .and_then(Value::as_f64)
                    .is_some_and(|m| x > m)
            {
                return fail("out of bounds");
            }
        }
        Some("string") if !v.is_string() => return fail("not a string"),
        Some("boolean") if !v.is_boolean() => return fail("not a boolean"),
        _ => {}
    }
    Ok(())
}

fn schemas() -> Vec<(&'static str, Value)> {
    vec![
        (
            "Describe a cat as JSON with its name and age.",
            json!({"type":"object","properties":{"name":{"type":"string","maxLength":20},
                   "age":{"type":"integer","minimum":0,"maximum":30}},
                   "required":["name","age"],"additionalProperties":false}),
        ),
        (
            "List three colours as JSON.",
            json!({"type":"object","properties":{"colours":{"type":"array",
                   "items":{"type":"string","maxLength":12},"minItems":3,"maxItems":3}},
                   "required":["colours"],"additionalProperties":false}),
        ),
        (
            "Is the sky blue? Answer as JSON.",
            json!({"type":"object","properties":{"answer":{"enum":["yes","no"]},
                   "confidence":{"type":"number","minimum":0,"maximum":1}},
                   "required":["answer","confidence"],"additionalProperties":false}),
        ),
        (
            "Give a person with an address as JSON.",
            json!({"type":"object","properties":{
                   "person":{"type":"object","properties":{"name":{"type":"string","maxLength":24},
                     "address":{"type":"object","properties":{"city":{"type":"string","maxLength":24},
                       "zip":{"type":"string","pattern":"^[0-9]{5}$"}},
                       "required":["city","zip"],"additionalProperties":false}},
                     "required":["name","address"],"additionalProperties":false}},
                   "required":["person"],"additionalProperties":false}),
        ),
    ]
}

#[test]
fn constrained_answers_validate_alone_and_batched() {
    let Some(path) =
        llorch_testkit::require_smollm2("constrained_answers_validate_alone_and_batched")
    else {
        return;
    };
    let lm = Arc::new(load(&path, &LoadOptions::default()).unwrap());
    let cases = schemas();
    let jobs = |tag: &str| -> Vec<Job> {
        cases
            .iter()
            .enumerate()
            .map(|(i, (q, s))| {
                let seed = (i % 2 == 1).then_some(i as u64 + 1);
                let c = Constraint::JsonSchema(s.clone());
                job(&lm, &format!("{tag}-{i}"), q, &c, 96, seed)
            })
            .collect()
    };
    let alone: Vec<_> = jobs("a").into_iter().map(|j| run_alone(&lm, j)).collect();
    for ((_, schema), events) in cases.iter().zip(&alone) {
        let (text, _, end) = outcome(events);
        assert!(
            matches!(
                end,
                EngineEvent::End {
                    stop_reason: StopReason::Eos,
                    ..
                }
            ),
            "{text:?} {end:?}"
        );
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        validate(&v, schema, "").unwrap();
    }
    let engine = Engine::start(lm.clone(), 16, 4);
    let rxs: Vec<_> = jobs("b").into_iter().map(|j| submit(&engine, j)).collect();
    for (rx, solo) in rxs.into_iter().zip(&alone) {
        let batched = collect(rx);
        assert_eq!(
            outcome(&batched).1,
            outcome(solo).1,
            "a constrained job gives in a batch what it gives alone"
        );
    }
}

#[test]
fn json_object_regex_and_lark() {
    let Some(path) = llorch_testkit::require_smollm2("json_object_regex_and_lark") else {
        return;
    };
    let lm = load(&path, &LoadOptions::default()).unwrap();
    let c = Constraint::JsonObject(true);
    // Greedy, a 135M model may list the same array element until the token limit (the JSON so
    // far is valid, only unfinished); a repetition penalty keeps this test about the constraint.
    let mut o = job(
        &lm,
        "o",
        "Give a JSON object with a dog's name and age.",
        &c,
        128,
        None,
    );
    o.sampling.repetition_penalty = 1.3;
    let (text, _, _) = outcome(&run_alone(&lm, o));
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
    assert!(v.is_object(), "{text}");

    let c = Constraint::Regex(r"[0-9]{3}-[0-9]{4}".into());
    let (text, _, _) = outcome(&run_alone(
        &lm,
        job(&lm, "r", "Make up a phone number.", &c, 32, Some(3)),
    ));
    assert_eq!(text.len(), 8, "{text:?}");
    assert!(
        text.as_bytes()[3] == b'-' && text.replace('-', "").bytes().all(|b| b.is_ascii_digit()),
        "{text:?}"
    );

    let c = Constraint::Lark("start: (\"yes\" | \"no\") \".\"".into());
    let (text, _, _) = outcome(&run_alone(&lm, job(&lm, "l", "Is water wet?", &c, 8, None)));
    assert!(text == "yes." || text == "no.", "{text:?}");
}

#[test]
fn constrained_cut_off_logprobs_and_cancel() {
    let Some(path) = llorch_testkit::require_smollm2("constrained_cut_off_logprobs_and_cancel")
    else {
        return;
    };
    let lm = Arc::new(load(&path, &LoadOptions::default()).unwrap());
    let c = Constraint::JsonSchema(
        json!({"type":"object","properties":{"story":{"type":"string"}},"required":["story"]}),
    );
    // max_tokens cuts the answer off: incomplete JSON, stop_reason max_tokens.
    let mut j = job(&lm, "cut", "Tell a long story as JSON.", &c, 6, None);
    j.logprobs = Some(2);
    let prompt = j.prompt_ids.clone();
    let events = run_alone(&lm, j);
    let (text, ids, end) = outcome(&events);
    assert!(
        matches!(
            end,
            EngineEvent::End {
                stop_reason: StopReason::MaxTokens,
                tokens_out: 6,
                ..
            }
        ),
        "{end:?}"
    );
    assert!(text.starts_with("{\"story\": \""), "{text:?}");
    // The log-probabilities are of the model's raw distribution, not the masked one.
    let raw = teacher_force(&lm, &prompt, &ids, 2).unwrap();
    let got: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            EngineEvent::Token { logprob, .. } => logprob.clone(),
            _ => None,
        })
        .collect();
    assert_eq!(got.len(), raw.len());
    for (g, r) in got.iter().zip(&raw) {
        assert_eq!(g.id, r.id);
        assert!((g.logprob - r.logprob).abs() < 1e-4, "{g:?} vs {r:?}");
        assert_eq!(
            g.top.iter().map(|t| t.id).collect::<Vec<_>>(),
            r.top.iter().map(|t| t.id).collect::<Vec<_>>()
        );
    }
    // Cancel stops a constrained job like any other.
    let engine = Engine::start(lm.clone(), 4, 2);
    let j = job(
        &lm,
        "cancel-me",
        "Tell a long story as JSON.",
        &c,
        400,
        Some(5),
    );
    let cancel = j.cancel.clone();
    let rx = submit(&engine, j);
    let mut events = Vec::new();
    while let Ok(e) = rx.recv_timeout(Duration::from_secs(300)) {
        if matches!(e, EngineEvent::Token { i: 3, .. }) {
            cancel.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        let end = e.is_terminal();
        events.push(e);
        if end {
            break;
        }
    }
    let (_, _, end) = outcome(&events);
    assert!(
        matches!(
            end,
            EngineEvent::End {
                stop_reason: StopReason::Cancelled,
                ..
            }
        ),
        "{end:?}"
    );
}
