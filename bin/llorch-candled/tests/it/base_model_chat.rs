//! Chat with a base model over real HTTP: the Gemma 3 270M file we can obtain is the pretrained
//! google/gemma-3-270m, which never learned `<end_of_turn>`. The worker's load-time probe sees
//! that and serves `messages` as a plain transcript; the reply streams without the turn marker
//! or a leading space and ends as at end-of-turn. `--chat-template` overrides the choice.

use futures::StreamExt;
use llorch_client::WorkerClient;
use llorch_testkit::WorkerProcess;
use llorch_wire::{ChatMessage, ExecuteRequest, SamplingParams, StopReason, WorkerEvent};

fn start(test: &str, extra: &[&str]) -> Option<WorkerProcess> {
    let model = llorch_testkit::require_model(test, llorch_testkit::GEMMA3_FILE)?;
    Some(WorkerProcess::start(
        std::path::Path::new(env!("CARGO_BIN_EXE_llorch-candled")),
        &model,
        extra,
    ))
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn health(w: &WorkerProcess) -> llorch_wire::WorkerHealth {
    rt().block_on(WorkerClient::new(&w.url()).health()).unwrap()
}

/// Greedy chat: the streamed text and the end event's stop reason and matched stop string.
fn chat(w: &WorkerProcess, question: &str) -> (String, StopReason, Option<String>) {
    let req = ExecuteRequest {
        gen: llorch_wire::Generation {
            messages: Some(vec![ChatMessage {
                role: "user".into(),
                content: question.into(),
            }]),
            max_tokens: Some(48),
            sampling: SamplingParams::greedy(),
            ..Default::default()
        },
        ..Default::default()
    };
    let client = WorkerClient::new(&w.url());
    rt().block_on(async {
        let mut s = Box::pin(client.execute(&req).await.expect("execute accepted"));
        let mut text = String::new();
        while let Some(ev) = s.next().await {
            match ev.expect("event") {
                WorkerEvent::Token { t, .. } => text.push_str(&t),
                WorkerEvent::End {
                    stop_reason,
                    stop_sequence_matched,
                    ..
                } => return (text, stop_reason, stop_sequence_matched),
                WorkerEvent::Error { message, .. } => panic!("error event: {message}"),
                WorkerEvent::Started { .. } => {}
            }
        }
        panic!("stream ended without an end event: {text:?}")
    })
}

#[test]
fn base_model_answers_chat_through_the_transcript_template() {
    let Some(w) = start(
        "base_model_answers_chat_through_the_transcript_template",
        &[],
    ) else {
        return;
    };
    let report = health(&w)
        .chat_template
        .expect("health reports the chat template");
    assert_eq!(report.name, "transcript", "{report:?}");
    assert!(report.reason.starts_with("base model"), "{report:?}");
    assert_eq!(report.end_of_turn_token.as_deref(), Some("<end_of_turn>"));
    assert!(report.end_of_turn_logprob.unwrap() < -10.0, "{report:?}");
    assert!(report.turn_stops.contains(&"\nUser:".to_string()));

    let (text, reason, matched) = chat(&w, "What is the capital of France?");
    assert!(text.contains("Paris"), "{text:?}");
    assert!(
        !text.starts_with(' ') && !text.contains("User:"),
        "{text:?}"
    );
    assert_eq!((reason, matched), (StopReason::Eos, None), "{text:?}");
}

#[test]
fn chat_template_flag_overrides_the_probe() {
    let Some(w) = start(
        "chat_template_flag_overrides_the_probe",
        &["--chat-template", "gemma"],
    ) else {
        return;
    };
    let report = health(&w)
        .chat_template
        .expect("health reports the chat template");
    assert_eq!(
        (report.name.as_str(), report.reason.as_str()),
        ("gemma", "--chat-template")
    );
    assert!(report.end_of_turn_logprob.is_none() && report.turn_stops.is_empty());
    // The model's own (untrained) turn format: the question comes back, the turn never ends.
    let (text, reason, _) = chat(&w, "What is the capital of France?");
    assert!(
        text.starts_with("What is the capital of France?"),
        "{text:?}"
    );
    assert_eq!(reason, StopReason::MaxTokens);
}
