//! Golden fixtures: every file in `tests/golden/` is a JSON array of one wire type's messages as
//! they travel. Each is parsed into the type and written back; the result must equal the file,
//! so a renamed field, a changed tag or default, or a field that stops being skipped when empty
//! fails here before it reaches a client. `LLORCH_UPDATE_GOLDEN=1` rewrites the files from the
//! types (review the diff: it is a wire change).

use std::path::PathBuf;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use llorch_wire::registry::{WorkerHeartbeat, WorkerRegistration};
use llorch_wire::tasks::{TaskEvent, TaskRequest};
use llorch_wire::{ErrorEnvelope, ExecuteRequest, WorkerEvent, WorkerHealth};

fn golden<T: DeserializeOwned + Serialize>(file: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    let fixture: Vec<Value> = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
    let written: Vec<Value> = fixture
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let typed: T = serde_json::from_value(v.clone())
                .unwrap_or_else(|e| panic!("{file}[{i}] does not parse as the wire type: {e}"));
            // through text, as on the wire (an f32 stays 0.7, not its f64 widening)
            let text = serde_json::to_string(&typed).expect("serializes");
            serde_json::from_str(&text).expect("json")
        })
        .collect();
    if std::env::var_os("LLORCH_UPDATE_GOLDEN").is_some() {
        let mut out = serde_json::to_string_pretty(&written).expect("json");
        out.push('\n');
        std::fs::write(&path, out).expect("write golden file");
        return;
    }
    for (i, (want, got)) in fixture.iter().zip(&written).enumerate() {
        assert_eq!(
            got, want,
            "{file}[{i}]: the type writes a different message than the fixture \
             (LLORCH_UPDATE_GOLDEN=1 rewrites it, if the wire change is intended)"
        );
    }
}

#[test]
fn execute_requests() {
    golden::<ExecuteRequest>("execute_request.json");
}

#[test]
fn worker_events() {
    golden::<WorkerEvent>("worker_events.json");
}

#[test]
fn task_requests() {
    golden::<TaskRequest>("task_request.json");
}

#[test]
fn task_events() {
    golden::<TaskEvent>("task_events.json");
}

#[test]
fn error_envelopes() {
    golden::<ErrorEnvelope>("error_envelope.json");
}

#[test]
fn worker_registrations() {
    golden::<WorkerRegistration>("registration.json");
}

#[test]
fn worker_heartbeats() {
    golden::<WorkerHeartbeat>("heartbeat.json");
}

#[test]
fn worker_health() {
    golden::<WorkerHealth>("worker_health.json");
}

#[test]
fn a_renamed_field_is_caught() {
    // The check itself must be able to fail: a fixture with a field the type does not write.
    let v: Value = serde_json::json!({"worker_id": "w", "url": "http://h", "model": "m",
        "backend": "cpu", "slots_total": 1, "context_length": 8, "slots": 3});
    let typed: WorkerRegistration = serde_json::from_value(v.clone()).unwrap();
    assert_ne!(serde_json::to_value(typed).unwrap(), v);
}
