//! The OpenAPI 3.1 document served at `/v2/openapi.json` (the contract of `.specs/orchestratord.md`).

use llorch_wire::tasks::API_VERSION;
use serde_json::{json, Value};

fn schema(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn json_body(description: &str, name: &str) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": schema(name) } } })
}

fn error(description: &str) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": schema("ErrorEnvelope") } } })
}

fn name_param() -> Value {
    json!([{ "name": "name", "in": "path", "required": true, "description": "pool name", "schema": { "type": "string" } }])
}

fn id_param(what: &str) -> Value {
    json!([{ "name": "id", "in": "path", "required": true, "description": what, "schema": { "type": "string" } }])
}

fn paths() -> Value {
    json!({
        "/v2/tasks": { "post": {
            "summary": "Submit a task",
            "requestBody": { "required": true, "content": { "application/json": { "schema": schema("TaskRequest") } } },
            "responses": {
                "202": { "description": "Admitted", "headers": { "Location": { "schema": { "type": "string" } } },
                         "content": { "application/json": { "schema": schema("TaskAccepted") } } },
                "400": error("INVALID_REQUEST (every bad field listed) or CONTEXT_LENGTH_EXCEEDED"),
                "401": error("UNAUTHORIZED"),
                "404": error("MODEL_NOT_FOUND (the message names the available models)"),
                "403": error("FORBIDDEN (model or priority outside the tenant's limits) or POLICY_REJECTED (the policy script refused it)"),
                "429": { "description": "QUEUE_FULL, RATE_LIMITED or QUOTA_EXCEEDED (tenant limits: .specs/tenancy.md)", "headers": {
                    "Retry-After": { "description": "seconds", "schema": { "type": "integer" } },
                    "X-Backoff-Ms": { "description": "milliseconds, from the measured drain rate", "schema": { "type": "integer" } } },
                    "content": { "application/json": { "schema": schema("ErrorEnvelope") } } },
                "503": error("SHUTTING_DOWN")
            } },
            "get": {
            "summary": "The most recent tasks (also of earlier runs), newest first",
            "parameters": [
                { "name": "state", "in": "query", "schema": { "type": "string", "enum": ["queued", "running", "completed", "failed", "cancelled"] } },
                { "name": "limit", "in": "query", "schema": { "type": "integer", "minimum": 1, "maximum": 1000, "default": 50 } } ],
            "responses": { "200": { "description": "TaskList", "content": { "application/json": { "schema":
                { "type": "object", "required": ["tasks"], "properties": { "tasks": { "type": "array", "items": schema("TaskStatus") } } } } } },
                "400": error("INVALID_REQUEST (unknown state)") } } },
        "/v2/tasks/{id}": { "get": {
            "summary": "Task state, timings and usage (also for tasks of earlier runs)",
            "parameters": id_param("task id"),
            "responses": { "200": json_body("Status", "TaskStatus"), "404": error("NOT_FOUND") } } },
        "/v2/tasks/{id}/events": { "get": {
            "summary": "SSE stream of the task's events",
            "description": "Each event has `event: <type>`, `id: <n>` (1-based per task) and `data: <TaskEvent JSON>`. \
                Send `Last-Event-ID` (or `?last_event_id=`) to resume after an event. Exactly one terminal event \
                (`end` or `error`) ends the stream; a finished task replays it. When the last client disconnects \
                from an unfinished task and none reconnects within the grace period, the task is cancelled.",
            "parameters": [
                { "name": "id", "in": "path", "required": true, "schema": { "type": "string" } },
                { "name": "Last-Event-ID", "in": "header", "schema": { "type": "integer" } },
                { "name": "last_event_id", "in": "query", "schema": { "type": "integer" } },
                { "name": "observe", "in": "query", "description": "watch without subscribing: neither keeps the task alive nor cancels it by leaving",
                  "schema": { "type": "boolean", "default": false } } ],
            "responses": { "200": { "description": "text/event-stream of TaskEvent",
                "content": { "text/event-stream": { "schema": schema("TaskEvent") } } }, "404": error("NOT_FOUND") } } },
        "/v2/tasks/{id}/cancel": { "post": {
            "summary": "Cancel (idempotent): queued tasks leave the queue, running ones stop on their worker",
            "parameters": id_param("task id"),
            "responses": { "204": { "description": "Cancelled or already finished" }, "404": error("NOT_FOUND") } } },
        "/v2/workers": { "get": { "summary": "Known workers", "responses": { "200": { "description": "Workers",
            "content": { "application/json": { "schema": schema("WorkerList") } } } } } },
        "/v2/workers/register": { "post": {
            "summary": "A worker announces itself (idempotent)",
            "requestBody": { "required": true, "content": { "application/json": { "schema": schema("WorkerRegistration") } } },
            "responses": { "200": { "description": "Registered", "content": { "application/json": { "schema": schema("WorkerRegistered") } } },
                           "400": error("INVALID_REQUEST") } } },
        "/v2/workers/{id}/heartbeat": { "post": {
            "summary": "A worker's sign of life; 404 means register again",
            "parameters": id_param("worker id"),
            "requestBody": { "required": false, "content": { "application/json": { "schema": schema("WorkerHeartbeat") } } },
            "responses": { "200": { "description": "Noted", "content": { "application/json": { "schema": schema("WorkerHeartbeatAck") } } },
                           "404": error("NOT_FOUND") } } },
        "/v2/workers/{id}": {
            "get": { "summary": "One worker", "parameters": id_param("worker id"), "responses": {
                "200": { "description": "Worker", "content": { "application/json": { "schema": schema("WorkerInfo") } } },
                "404": error("NOT_FOUND") } },
            "delete": { "summary": "Deregister (worker shutdown)", "parameters": id_param("worker id"), "responses": {
                "204": { "description": "Removed" }, "404": error("NOT_FOUND") } } },
        "/v2/workers/{id}/drain": { "post": {
            "summary": "No new tasks on the worker; running ones finish (a fleet worker then stops)",
            "parameters": id_param("worker id"),
            "responses": { "200": { "description": "Worker", "content": { "application/json": { "schema": schema("WorkerInfo") } } },
                           "404": error("NOT_FOUND") } } },
        "/v2/workers/{id}/undrain": { "post": {
            "summary": "Give the worker tasks again", "parameters": id_param("worker id"),
            "responses": { "200": { "description": "Worker", "content": { "application/json": { "schema": schema("WorkerInfo") } } },
                           "404": error("NOT_FOUND") } } },
        "/v2/pools": { "get": { "summary": "Every pool and deployment of the fleet", "responses": {
            "200": { "description": "Fleet", "content": { "application/json": { "schema": { "type": "object" } } } } } } },
        "/v2/pools/{name}": { "get": { "summary": "One pool", "parameters": name_param(), "responses": {
            "200": { "description": "Pool", "content": { "application/json": { "schema": { "type": "object" } } } },
            "404": error("NOT_FOUND") } } },
        "/v2/pools/{name}/drain": { "post": { "summary": "No new tasks or workers on the pool; its workers stop once idle",
            "parameters": name_param(), "responses": {
            "200": { "description": "Pool", "content": { "application/json": { "schema": { "type": "object" } } } },
            "404": error("NOT_FOUND") } } },
        "/v2/pools/{name}/undrain": { "post": { "summary": "Use the pool again", "parameters": name_param(), "responses": {
            "200": { "description": "Pool", "content": { "application/json": { "schema": { "type": "object" } } } },
            "404": error("NOT_FOUND") } } },
        "/v2/meta/capabilities": { "get": { "summary": "Models served and admission settings", "responses": {
            "200": { "description": "Capabilities", "content": { "application/json": { "schema": schema("Capabilities") } } } } } },
        "/v2/openapi.json": { "get": { "summary": "This document (no auth)", "responses": { "200": { "description": "OpenAPI" } } } },
        "/health": { "get": { "summary": "Liveness (no auth)", "responses": {
            "200": { "description": "Alive", "content": { "application/json": { "schema": schema("OrchestratorHealth") } } } } } },
        "/ready": { "get": { "summary": "Readiness (no auth): 503 until a worker is ready", "responses": {
            "200": { "description": "Ready" }, "503": { "description": "No ready worker, or shutting down" } } } },
        "/metrics": { "get": { "summary": "Prometheus metrics (orchd_*)", "responses": { "200": { "description": "text/plain" } } } }
    })
}

fn obj(required: &[&str], props: Value) -> Value {
    json!({ "type": "object", "required": required, "properties": props })
}

fn schemas() -> Value {
    let s = |t: &str| json!({ "type": t });
    let codes: Vec<&str> = llorch_wire::ErrorCode::ALL
        .iter()
        .map(|c| c.as_str())
        .collect();
    let error_code = json!({ "type": "string", "enum": codes });
    let stop_reason =
        json!({ "type": "string", "enum": ["eos", "stop_sequence", "max_tokens", "cancelled"] });
    let priority =
        json!({ "type": "string", "enum": ["interactive", "batch"], "default": "interactive" });
    let event = |ty: &str, required: &[&str], props: Value| {
        let mut p = props;
        p["type"] = json!({ "const": ty });
        let mut req = vec!["type"];
        req.extend_from_slice(required);
        obj(&req, p)
    };
    json!({
        "TaskRequest": {
            "type": "object", "required": ["model"], "additionalProperties": false,
            "description": "Exactly one of prompt, messages, prompt_ids. Sampling fields as the worker's /execute.",
            "properties": {
                "model": s("string"), "task_id": { "type": "string", "pattern": "^[A-Za-z0-9._:-]{1,128}$" },
                "session_id": s("string"), "priority": priority, "deadline_ms": { "type": "integer", "minimum": 1 },
                "prompt": s("string"),
                "messages": { "type": "array", "items": obj(&["role", "content"], json!({ "role": s("string"), "content": s("string") })) },
                "prompt_ids": { "type": "array", "items": { "type": "integer", "minimum": 0 } },
                "max_tokens": { "type": "integer", "minimum": 1, "maximum": 32768, "default": 256 },
                "temperature": { "type": "number", "minimum": 0, "maximum": 2, "default": 1 },
                "top_p": { "type": "number", "exclusiveMinimum": 0, "maximum": 1, "default": 1 },
                "top_k": { "type": "integer", "minimum": 0, "default": 0 },
                "min_p": { "type": "number", "minimum": 0, "maximum": 1, "default": 0 },
                "repetition_penalty": { "type": "number", "exclusiveMinimum": 0, "maximum": 2, "default": 1 },
                "seed": { "type": "integer", "minimum": 0 },
                "stop": { "type": "array", "maxItems": 8, "items": s("string") },
                "logprobs": { "type": "integer", "minimum": 0, "maximum": 20 },
                "tools": { "description": "With messages: functions for a chat template that reads `tools`; \
                    other templates get `system` in the system prompt",
                    "type": "object", "required": ["tools", "system"], "properties": {
                    "tools": { "type": "array", "items": s("object") }, "system": s("string") } },
                "constraint": { "description": "Constrained decoding: the output matches this (400 when it does not compile)",
                    "oneOf": [ obj(&["json_schema"], json!({ "json_schema": s("object") })),
                        obj(&["json_object"], json!({ "json_object": { "const": true } })),
                        obj(&["regex"], json!({ "regex": s("string") })),
                        obj(&["lark"], json!({ "lark": s("string") })) ] } } },
        "TaskAccepted": obj(&["task_id", "queue_position", "predicted_start_ms", "events_url", "status_url"], json!({
            "task_id": s("string"), "queue_position": s("integer"), "predicted_start_ms": s("integer"),
            "events_url": s("string"), "status_url": s("string") })),
        "TaskStatus": obj(&["task_id", "model", "priority", "state", "attempts", "created_at_ms", "timings", "usage"], json!({
            "task_id": s("string"), "model": s("string"), "priority": priority, "session_id": s("string"),
            "state": { "type": "string", "enum": ["queued", "running", "completed", "failed", "cancelled"] },
            "queue_position": s("integer"), "worker_id": s("string"), "attempts": s("integer"),
            "created_at_ms": s("integer"), "finished_at_ms": s("integer"),
            "timings": obj(&[], json!({ "queue_time_ms": s("number"), "ttft_ms": s("number"), "e2e_ms": s("number"),
                "prefill_time_ms": s("number"), "decode_time_ms": s("number") })),
            "usage": obj(&["tokens_in", "tokens_out"], json!({ "tokens_in": s("integer"), "tokens_out": s("integer") })),
            "stop_reason": stop_reason, "error": obj(&["code", "message"], json!({ "code": error_code, "message": s("string") })) })),
        "TaskEvent": { "oneOf": [
            event("queued", &["task_id", "queue_position", "predicted_start_ms"], json!({ "task_id": s("string"),
                "queue_position": s("integer"), "predicted_start_ms": s("integer") })),
            event("started", &["task_id", "worker_id", "model", "attempt", "queue_time_ms", "tokens_in", "seed"], json!({
                "task_id": s("string"), "worker_id": s("string"), "model": s("string"), "attempt": s("integer"),
                "queue_time_ms": s("number"), "tokens_in": s("integer"), "seed": s("integer") })),
            event("token", &["i", "id", "t"], json!({ "i": s("integer"), "id": s("integer"), "t": s("string"), "logprob": s("object") })),
            event("metrics", &["task_id", "tokens_out", "elapsed_ms", "tokens_per_sec"], json!({ "task_id": s("string"),
                "tokens_out": s("integer"), "elapsed_ms": s("number"), "tokens_per_sec": s("number") })),
            event("end", &["task_id", "stop_reason", "tokens_in", "tokens_out", "attempts", "queue_time_ms", "e2e_ms"], json!({
                "task_id": s("string"), "stop_reason": stop_reason, "stop_sequence_matched": s("string"),
                "tokens_in": s("integer"), "tokens_out": s("integer"), "tokens_cached": s("integer"), "worker_id": s("string"), "seed": s("integer"),
                "attempts": s("integer"), "queue_time_ms": s("number"), "ttft_ms": s("number"), "e2e_ms": s("number"),
                "prefill_time_ms": s("number"), "decode_time_ms": s("number"), "decode_tokens_per_sec": s("number") })),
            event("error", &["task_id", "code", "message", "retriable", "tokens_out"], json!({ "task_id": s("string"),
                "code": error_code, "message": s("string"), "retriable": s("boolean"), "tokens_out": s("integer"),
                "worker_id": s("string") })) ] },
        "ErrorEnvelope": obj(&["error"], json!({ "error": obj(&["code", "message", "retriable"], json!({
            "code": error_code, "message": s("string"), "retriable": s("boolean"), "retry_after_ms": s("integer"),
            "fields": { "type": "array", "items": obj(&["field", "constraint", "message"], json!({ "field": s("string"),
                "constraint": s("string"), "message": s("string"), "value": {} })) } })) })),
        "WorkerRegistration": obj(&["worker_id", "url", "model", "backend", "slots_total", "context_length"], json!({
            "worker_id": { "type": "string", "pattern": "^[A-Za-z0-9._:-]{1,128}$" }, "url": s("string"),
            "model": s("string"), "aliases": { "type": "array", "items": s("string") }, "backend": s("string"),
            "slots_total": { "type": "integer", "minimum": 1, "maximum": 1024 }, "context_length": { "type": "integer", "minimum": 1 } })),
        "WorkerRegistered": obj(&["worker_id", "heartbeat_interval_ms", "heartbeat_timeout_ms"], json!({
            "worker_id": s("string"), "heartbeat_interval_ms": s("integer"), "heartbeat_timeout_ms": s("integer") })),
        "WorkerHeartbeat": obj(&[], json!({ "active_jobs": s("integer"), "queued_jobs": s("integer") })),
        "WorkerHeartbeatAck": obj(&["worker_id", "heartbeat_interval_ms"], json!({ "worker_id": s("string"),
            "heartbeat_interval_ms": s("integer") })),
        "WorkerInfo": obj(&["worker_id", "url", "model", "backend", "slots_total", "slots_busy", "context_length",
            "status", "source", "last_seen_ms"], json!({ "worker_id": s("string"), "url": s("string"), "model": s("string"),
            "aliases": { "type": "array", "items": s("string") }, "backend": s("string"), "slots_total": s("integer"),
            "slots_busy": s("integer"), "context_length": s("integer"),
            "status": { "type": "string", "enum": ["ready", "unhealthy"] },
            "source": { "type": "string", "enum": ["registered", "static"] }, "last_seen_ms": s("integer") })),
        "WorkerList": obj(&["workers"], json!({ "workers": { "type": "array", "items": schema("WorkerInfo") } })),
        "Capabilities": obj(&["api_version", "models", "priorities", "queue_capacity", "queue_policy", "placement",
            "max_tokens", "auth_required"], json!({ "api_version": s("string"),
            "models": { "type": "array", "items": obj(&["model", "context_length", "workers_ready", "slots_total"], json!({
                "model": s("string"), "aliases": { "type": "array", "items": s("string") }, "context_length": s("integer"),
                "workers_ready": s("integer"), "slots_total": s("integer") })) },
            "priorities": { "type": "array", "items": priority }, "queue_capacity": s("integer"),
            "queue_policy": { "type": "string", "enum": ["reject", "drop-lru"] },
            "placement": { "type": "string", "enum": ["least-loaded", "round-robin"] },
            "max_tokens": s("integer"), "auth_required": s("boolean") })),
        "OrchestratorHealth": obj(&["status", "workers_ready", "workers_total", "queue_depth", "tasks_running", "version"], json!({
            "status": s("string"), "workers_ready": s("integer"), "workers_total": s("integer"),
            "queue_depth": s("integer"), "tasks_running": s("integer"), "version": s("string") }))
    })
}

/// The whole document: `/v2` and the OpenAI-compatible `/v1`.
pub fn document() -> Value {
    let mut paths = paths();
    if let (Some(d), Value::Object(s)) = (paths.as_object_mut(), crate::tenancy::openapi::paths()) {
        d.extend(s);
    }
    let mut schemas = schemas();
    for (dst, src) in [
        (&mut paths, crate::openai::openapi::paths()),
        (&mut schemas, crate::openai::openapi::schemas()),
    ] {
        if let (Some(d), Value::Object(s)) = (dst.as_object_mut(), src) {
            d.extend(s);
        }
    }
    if let (Some(d), Value::Object(s)) = (paths.as_object_mut(), crate::dashboard::openapi_paths())
    {
        d.extend(s);
    }
    json!({
        "openapi": "3.1.0",
        "info": { "title": "llama-orch orchestratord", "version": API_VERSION,
            "description": "Admission, bounded priority queue, scheduling across workers and SSE relay. \
                Every response carries X-Correlation-Id. With an API token configured, every route except \
                /health, /ready and /v2/openapi.json needs `Authorization: Bearer <token>`." },
        "components": {
            "schemas": schemas,
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } } },
        "security": [{ "bearer": [] }],
        "paths": paths
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reference_resolves() {
        let doc = document();
        let text = doc.to_string();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        for part in text.split("#/components/schemas/").skip(1) {
            let name: String = part
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric())
                .collect();
            assert!(schemas.contains_key(&name), "dangling $ref {name}");
        }
        assert_eq!(doc["info"]["version"], API_VERSION);
        assert!(doc["paths"]["/v2/tasks"]["post"]["responses"]["429"].is_object());
        assert!(doc["paths"]["/v1/chat/completions"]["post"]["responses"]["429"].is_object());
        assert!(
            doc["components"]["schemas"]["ChatCompletionRequest"]["properties"]["user"].is_object()
        );
    }
}
