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
        "/v1/models/{id}": { "get": {
            "summary": "One served model, by id or alias",
            "parameters": [{ "name": "id", "in": "path", "required": true, "schema": { "type": "string" } }],
            "responses": { "200": { "description": "The model",
                "content": { "application/json": { "schema": schema("Model") } } },
                "404": error("model_not_found") } } },
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
        "n": { "type": "integer", "minimum": 1, "maximum": 8, "default": 1,
            "description": "Choices generated in parallel (one task per choice, ids `<id>.<i>`); \
            with a seed, choice i uses seed + i" },
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
    let top = |extra: Value| {
        let mut p = json!({ "token": s("string"), "logprob": s("number"),
            "bytes": { "type": ["array", "null"], "items": s("integer") } });
        p.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        obj(&["token", "logprob", "bytes"], p)
    };
    let chat_logprobs = json!({ "type": ["object", "null"], "required": ["content"], "properties": {
        "content": { "type": "array", "items": top(json!({
            "top_logprobs": { "type": "array", "items": top(json!({})) } })) },
        "refusal": { "type": "null" } } });
    let completion_logprobs = json!({ "type": ["object", "null"], "properties": {
        "tokens": { "type": "array", "items": s("string") },
        "token_logprobs": { "type": "array", "items": s("number") },
        "top_logprobs": { "type": "array", "items": { "type": "object",
            "additionalProperties": s("number") } },
        "text_offset": { "type": "array", "items": s("integer") } } });
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
            "parallel_tool_calls": { "type": "boolean", "default": true },
            "logprobs": { "type": "boolean", "default": false,
                "description": "Each generated token's log-probability (the model's raw distribution)" },
            "top_logprobs": { "type": "integer", "minimum": 0, "maximum": 20,
                "description": "With logprobs: the most likely tokens at each position" } }))),
        "CompletionRequest": obj(&["model", "prompt"], with(json!({
            "model": s("string"),
            "prompt": { "oneOf": [s("string"), { "type": "array", "items": { "type": "integer" } },
                { "type": "array", "maxItems": 1, "items": s("string") }] },
            "logprobs": { "type": "integer", "minimum": 0, "maximum": 20,
                "description": "Each generated token's log-probability and this many alternatives" } }))),
        "ChatCompletion": obj(&["id", "object", "created", "model", "choices", "usage"], json!({
            "id": s("string"), "object": { "const": "chat.completion" }, "created": s("integer"),
            "model": s("string"), "usage": usage,
            "choices": { "type": "array", "items": obj(&["index", "message", "finish_reason"], json!({
                "index": s("integer"), "finish_reason": finish, "logprobs": chat_logprobs.clone(),
                "message": obj(&["role", "content"], json!({ "role": { "const": "assistant" },
                    "content": { "type": ["string", "null"] },
                    "tool_calls": { "type": "array", "items": tool_call } })) })) } })),
        "ChatCompletionChunk": obj(&["id", "object", "created", "model", "choices"], json!({
            "id": s("string"), "object": { "const": "chat.completion.chunk" }, "created": s("integer"),
            "model": s("string"), "usage": usage,
            "choices": { "type": "array", "items": obj(&["index", "delta"], json!({
                "index": s("integer"), "finish_reason": finish, "logprobs": chat_logprobs,
                "delta": obj(&[], json!({ "role": s("string"), "content": s("string"),
                    "tool_calls": { "type": "array", "items": tool_call_delta } })) })) } })),
        "Completion": obj(&["id", "object", "created", "model", "choices", "usage"], json!({
            "id": s("string"), "object": { "const": "text_completion" }, "created": s("integer"),
            "model": s("string"), "usage": usage,
            "choices": { "type": "array", "items": obj(&["index", "text", "finish_reason"], json!({
                "index": s("integer"), "text": s("string"), "finish_reason": finish,
                "logprobs": completion_logprobs })) } })),
        "CompletionChunk": { "$ref": "#/components/schemas/Completion" },
        "ModelList": obj(&["object", "data"], json!({ "object": { "const": "list" },
            "data": { "type": "array", "items": schema("Model") } })),
        "Model": obj(&["id", "object", "owned_by"], json!({
            "id": s("string"), "object": { "const": "model" }, "created": s("integer"),
            "owned_by": s("string"), "context_length": s("integer"),
            "aliases": { "type": "array", "items": s("string") },
            "capabilities": obj(&[], json!({
                "response_formats": { "type": "array", "items": s("string") },
                "tool_choices": { "type": "array", "items": s("string") },
                "logprobs": s("boolean"), "max_top_logprobs": s("integer"),
                "max_n": s("integer") })) })),
        "OpenAIError": obj(&["error"], json!({ "error": obj(&["message", "type"], json!({
            "message": s("string"), "type": s("string"), "param": { "type": ["string", "null"] },
            "code": { "type": ["string", "null"] } })) })),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use llorch_wire::openai::{
        ChatCompletionRequest, CompletionRequest, GenerationFields, Model, ModelCapabilities,
    };

    fn props(v: &Value) -> Vec<String> {
        v["properties"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect()
    }

    /// Every `$ref` in `v` names a schema in `schemas`.
    fn refs_resolve(v: &Value, schemas: &Value) {
        match v {
            Value::Object(o) => {
                if let Some(Value::String(r)) = o.get("$ref") {
                    let name = r.trim_start_matches("#/components/schemas/");
                    assert!(schemas.get(name).is_some(), "dangling {r}");
                }
                o.values().for_each(|x| refs_resolve(x, schemas));
            }
            Value::Array(a) => a.iter().for_each(|x| refs_resolve(x, schemas)),
            _ => {}
        }
    }

    #[test]
    fn every_served_field_is_documented() {
        let s = schemas();
        let chat = props(&s["ChatCompletionRequest"]);
        let completion = props(&s["CompletionRequest"]);
        for f in ChatCompletionRequest::FIELDS
            .iter()
            .chain(GenerationFields::FIELDS)
        {
            assert!(chat.iter().any(|p| p == f), "chat {f}");
        }
        for f in CompletionRequest::FIELDS
            .iter()
            .chain(GenerationFields::FIELDS)
        {
            assert!(completion.iter().any(|p| p == f), "completion {f}");
        }
        let model = Model {
            id: "m".into(),
            object: "model".into(),
            created: 0,
            owned_by: "o".into(),
            context_length: 1,
            aliases: vec!["a".into()],
            capabilities: Some(ModelCapabilities::default()),
        };
        let model = serde_json::to_value(model).unwrap();
        let documented = props(&s["Model"]);
        for k in model.as_object().unwrap().keys() {
            assert!(documented.contains(k), "Model.{k}");
        }
        for k in model["capabilities"].as_object().unwrap().keys() {
            assert!(
                props(&s["Model"]["properties"]["capabilities"]).contains(k),
                "{k}"
            );
        }
        refs_resolve(&paths(), &s);
        refs_resolve(&s, &s);
    }
}
