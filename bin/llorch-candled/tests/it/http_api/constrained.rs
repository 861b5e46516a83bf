//! Constrained decoding over HTTP: the `constraint` field shapes the answer; a bad one is a 400
//! naming where, before any compute.

use super::*;

#[test]
fn constraint_shapes_the_answer_and_a_bad_one_is_a_400_naming_where() {
    let Some(w) = start("constraint_shapes_the_answer_and_a_bad_one_is_a_400_naming_where") else {
        return;
    };
    let client = WorkerClient::new(&w.url());
    let schema = serde_json::json!({"type": "object", "properties": {
        "colour": {"enum": ["red", "green", "blue"]},
        "count": {"type": "integer", "minimum": 1, "maximum": 9}},
        "required": ["colour", "count"], "additionalProperties": false});
    let mut req = greedy_req("", 64);
    req.gen.prompt = None;
    req.gen.messages = Some(vec![ChatMessage {
        role: "user".into(),
        content: "Pick a colour and a count, as JSON.".into(),
    }]);
    req.gen.constraint = Some(llorch_wire::Constraint::JsonSchema(schema));
    let events = rt().block_on(collect(&client, &req));
    let text: String = events
        .iter()
        .filter_map(|(e, _)| match e {
            WorkerEvent::Token { t, .. } => Some(t.as_str()),
            _ => None,
        })
        .collect();
    assert!(
        matches!(
            &events.last().unwrap().0,
            WorkerEvent::End {
                stop_reason: StopReason::Eos,
                ..
            }
        ),
        "{events:?}"
    );
    let v: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
    assert!(
        ["red", "green", "blue"].contains(&v["colour"].as_str().unwrap()),
        "{v}"
    );
    assert!((1..=9).contains(&v["count"].as_i64().unwrap()), "{v}");

    req.gen.constraint = Some(llorch_wire::Constraint::JsonSchema(serde_json::json!(
        {"type": "object", "properties": {"a": {"type": "strng"}}}
    )));
    let err = rt().block_on(client.execute(&req)).err().expect("400");
    let llorch_client::ClientError::Api {
        status, envelope, ..
    } = err
    else {
        panic!("{err}");
    };
    assert_eq!(status, 400);
    assert_eq!(
        envelope.error.fields[0].field,
        "constraint.json_schema#/properties/a/type"
    );
}
