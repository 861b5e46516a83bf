//! The `/v1` (OpenAI-compatible) part of the OpenAPI document served at `/v2/openapi.json`
//! (the contract of `.specs/openai.md`).

use serde_json::{json, Value};

fn schema(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn error(description: &str) -> Value {
    json!({ "description": description,
            "content": { "application/json": { "schema": schema("OpenAIError") } } })
}

/// A generation: one JSON body, or with `stream: true` an SSE stream of chunks ending with
/// `data: [DONE]`.
fn generation(summary: &str, request: &str, response: &str, chunk: &str) -> Value {
    json!({ "post": {
        "summary": summary,
        "requestBody": { "required": true,
            "content": { "application/json": { "schema": schema(request) } } },
        "responses": {
            "200": { "description": "The answer; with `stream: true` server-sent events: one `data:` \
                chunk per token, a chunk with `finish_reason`, a usage chunk when \
                `stream_options.include_usage`, then `data: [DONE]`",
                "content": {
                    "application/json": { "schema": schema(response) },
                    "text/event-stream": { "schema": schema(chunk) } } },
            "400": error("invalid_request_error (`param` names the field) or unsupported_parameter"),
            "401": error("invalid_api_key"),
            "404": error("model_not_found (the message names the models served)"),
            "429": { "description": "The queue is full; retry after `Retry-After` seconds",
                "headers": { "Retry-After": { "schema": { "type": "integer" } } },
                "content": { "application/json": { "schema": schema("OpenAIError") } } },
            "503": error("shutting down")
        } } })
}

/// `/v1` paths.
pub fn paths() -> Value {
    json!({
        "/v1/models": { "get": {
            "summary": "Models served by ready workers (ids and aliases)",
            "responses": { "200": { "description": "List",
                "content": { "application/json": { "schema": schema("ModelList") } } } } } },
        "/v1/chat/completions": generation("Chat completion, through the same queue and scheduler as /v2/tasks",
            "ChatCompletionRequest", "ChatCompletion", "ChatCompletionChunk"),
        "/v1/completions": generation("Text completion, through the same queue and scheduler as /v2/tasks",
            "CompletionRequest", "Completion", "CompletionChunk"),
    })
}

/// `/v1` schemas.
pub fn schemas() -> Value {
    let s = |t: &str| json!({ "type": t });
    let obj = |required: &[&str], props: Value| json!({ "type": "object", "required": required, "properties": props });
    let generation_fields = json!({
        "max_tokens": { "type": "integer", "minimum": 1 },
        "temperature": { "type": "number", "minimum": 0, "maximum": 2, "default": 1 },
        "top_p": { "type": "number", "exclusiveMinimum": 0, "maximum": 1, "default": 1 },
        "top_k": { "type": "integer", "minimum": 0 },
        "min_p": { "type": "number", "minimum": 0, "maximum": 1 },
        "repetition_penalty": { "type": "number", "exclusiveMinimum": 0, "maximum": 2 },
        "stop": { "oneOf": [s("string"), { "type": "array", "maxItems": 8, "items": s("string") }] },
        "seed": { "type": "integer", "minimum": 0 },
        "n": { "type": "integer", "const": 1 },
        "user": { "type": "string", "description": "Becomes the task's session_id: requests of one user \
            are placed where their prompt prefix is cached" },
        "stream": { "type": "boolean", "default": false },
        "stream_options": obj(&[], json!({ "include_usage": s("boolean") })),
    });
    let with = |mut extra: Value| {
        for (k, v) in generation_fields.as_object().unwrap() {
            extra[k] = v.clone();
        }
        extra
    };
    let usage = obj(
        &["prompt_tokens", "completion_tokens", "total_tokens"],
        json!({
        "prompt_tokens": s("integer"), "completion_tokens": s("integer"), "total_tokens": s("integer"),
        "prompt_tokens_details": obj(&["cached_tokens"], json!({ "cached_tokens": {
            "type": "integer", "description": "Prompt tokens served from the worker's prompt cache" } })) }),
    );
    let finish = json!({ "type": ["string", "null"], "enum": ["stop", "length", "cancelled", "tool_calls", null] });
    let tool_call = obj(
        &["id", "type", "function"],
        json!({ "id": s("string"), "type": { "const": "function" },
        "function": obj(&["name", "arguments"], json!({ "name": s("string"), "arguments": s("string") })) }),
    );
    let tool_call_delta = obj(
        &["index"],
        json!({ "index": s("integer"), "id": s("string"),
        "type": { "const": "function" },
        "function": obj(&[], json!({ "name": s("string"), "arguments": s("string") })) }),
    );
    let message = obj(
        &["role", "content"],
        json!({ "role": s("string"), "content": {
        "oneOf": [s("string"), { "type": "array", "items": obj(&["type", "text"],
            json!({ "type": { "const": "text" }, "text": s("string") })) }] } }),
    );
    json!({
        "ChatCompletionRequest": obj(&["model", "messages"], with(json!({
            "model": s("string"),
            "messages": { "type": "array", "minItems": 1, "items": message },
            "max_completion_tokens": { "type": "integer", "minimum": 1 },
            "response_format": { "oneOf": [
                obj(&["type"], json!({ "type": { "enum": ["text", "json_object"] } })),
                obj(&["type", "json_schema"], json!({ "type": { "const": "json_schema" },
                    "json_schema": obj(&["name"], json!({ "name": s("string"),
                        "description": s("string"), "schema": s("object"), "strict": s("boolean") })) })) ],
                "description": "JSON answers enforced by constrained decoding" },
            "tools": { "type": "array", "items": obj(&["type", "function"], json!({
                "type": { "const": "function" },
                "function": obj(&["name"], json!({ "name": { "type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$" },
                    "description": s("string"), "parameters": s("object"), "strict": s("boolean") })) })) },
            "tool_choice": { "oneOf": [ { "enum": ["none", "auto", "required"] },
                obj(&["type", "function"], json!({ "type": { "const": "function" },
                    "function": obj(&["name"], json!({ "name": s("string") })) })) ] },
            "parallel_tool_calls": { "type": "boolean", "default": true } }))),
        "CompletionRequest": obj(&["model", "prompt"], with(json!({
            "model": s("string"),
            "prompt": { "oneOf": [s("string"), { "type": "array", "items": { "type": "integer" } },
                { "type": "array", "maxItems": 1, "items": s("string") }] } }))),
        "ChatCompletion": obj(&["id", "object", "created", "model", "choices", "usage"], json!({
            "id": s("string"), "object": { "const": "chat.completion" }, "created": s("integer"),
            "model": s("string"), "usage": usage,
            "choices": { "type": "array", "items": obj(&["index", "message", "finish_reason"], json!({
                "index": s("integer"), "finish_reason": finish,
                "message": obj(&["role", "content"], json!({ "role": { "const": "assistant" },
                    "content": { "type": ["string", "null"] },
                    "tool_calls": { "type": "array", "items": tool_call } })) })) } })),
        "ChatCompletionChunk": obj(&["id", "object", "created", "model", "choices"], json!({
            "id": s("string"), "object": { "const": "chat.completion.chunk" }, "created": s("integer"),
            "model": s("string"), "usage": usage,
            "choices": { "type": "array", "items": obj(&["index", "delta"], json!({
                "index": s("integer"), "finish_reason": finish,
                "delta": obj(&[], json!({ "role": s("string"), "content": s("string"),
                    "tool_calls": { "type": "array", "items": tool_call_delta } })) })) } })),
        "Completion": obj(&["id", "object", "created", "model", "choices", "usage"], json!({
            "id": s("string"), "object": { "const": "text_completion" }, "created": s("integer"),
            "model": s("string"), "usage": usage,
            "choices": { "type": "array", "items": obj(&["index", "text", "finish_reason"], json!({
                "index": s("integer"), "text": s("string"), "finish_reason": finish })) } })),
        "CompletionChunk": { "$ref": "#/components/schemas/Completion" },
        "ModelList": obj(&["object", "data"], json!({ "object": { "const": "list" },
            "data": { "type": "array", "items": obj(&["id", "object", "owned_by"], json!({
                "id": s("string"), "object": { "const": "model" }, "created": s("integer"),
                "owned_by": s("string"), "context_length": s("integer"),
                "aliases": { "type": "array", "items": s("string") } })) } })),
        "OpenAIError": obj(&["error"], json!({ "error": obj(&["message", "type"], json!({
            "message": s("string"), "type": s("string"), "param": { "type": ["string", "null"] },
            "code": { "type": ["string", "null"] } })) })),
    })
}
