//! `/v1` request bodies → a [`TaskRequest`] plus the answer's [`Meta`]. Unknown keys are
//! rejected (as `/v2/tasks` does), OpenAI fields this server cannot honour are accepted only with
//! their neutral value, and every error names its field (`param`).

use llorch_wire::openai::{
    ChatCompletionRequest, CompletionRequest, GenerationFields, MessageContent, OpenAiMessage,
    PromptInput, ResponseFormat, MAX_N,
};
use llorch_wire::openai_logprobs::MAX_TOP_LOGPROBS;
use llorch_wire::tasks::{is_valid_id, TaskRequest};
use llorch_wire::{ChatMessage, Constraint, FieldError, Generation, SamplingParams};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::tools;
use super::{Kind, Meta};
use crate::error::ApiError;
use crate::task::unix_ms;

/// A parsed request: the task to admit (choice 0) and what its answer needs.
#[derive(Debug)]
pub struct Prepared {
    pub task: TaskRequest,
    pub meta: Meta,
    /// Choices asked for (`n`, 1..=8).
    pub n: u32,
}

impl Prepared {
    /// One task per choice: choice 0 is [`Prepared::task`]; choice `i` > 0 has the task id
    /// `<id>.<i>` and, when a seed was given, seed + `i` (so seeded choices differ).
    pub fn choices(&self) -> Vec<TaskRequest> {
        (0..self.n)
            .map(|i| {
                let mut t = self.task.clone();
                if i > 0 {
                    t.task_id = Some(format!("{}.{i}", self.meta.id));
                    t.gen.sampling.seed = t.gen.sampling.seed.map(|s| s.wrapping_add(i as u64));
                }
                t
            })
            .collect()
    }
}

/// A number of alternatives (`top_logprobs` / `logprobs`) within the worker's limit.
fn top_count(field: &str, v: u32, errors: &mut Vec<FieldError>) -> Option<u32> {
    if v <= MAX_TOP_LOGPROBS {
        return Some(v);
    }
    errors.push(
        FieldError::new(
            field,
            format!("range(0..={MAX_TOP_LOGPROBS})"),
            format!("{field} must be between 0 and {MAX_TOP_LOGPROBS}, got {v}"),
        )
        .with_value(v),
    );
    None
}

/// Parse `POST /v1/chat/completions`.
pub fn chat(body: &[u8]) -> Result<Prepared, ApiError> {
    let r: ChatCompletionRequest = typed(body, ChatCompletionRequest::FIELDS)?;
    let mut errors = Vec::new();
    let messages: Vec<ChatMessage> = r
        .messages
        .into_iter()
        .enumerate()
        .filter_map(|(i, m)| message(i, m).map_err(|e| errors.push(e)).ok())
        .collect();
    let mut task = base(r.model, &r.gen, "chatcmpl");
    task.gen.max_tokens = r.max_completion_tokens.or(r.gen.max_tokens);
    match r.response_format.map(response_format) {
        Some(Ok(c)) => task.gen.constraint = c,
        Some(Err(e)) => errors.push(e),
        None => {}
    }
    let tools = tools::plan(
        r.tools.as_deref(),
        r.tool_choice.as_ref(),
        r.parallel_tool_calls,
        &mut errors,
    );
    if let Some(t) = &tools {
        if task.gen.constraint.is_some() {
            errors.push(FieldError::new(
                "response_format",
                "unsupported_value",
                "response_format json_object/json_schema cannot be combined with tools (tool_choice none allows it)",
            ));
        }
        task.gen.tools = Some(t.chat.clone());
        task.gen.constraint = Some(t.constraint.clone());
    }
    task.gen.messages = Some(messages);
    let top = r
        .top_logprobs
        .and_then(|k| top_count("top_logprobs", k, &mut errors));
    if r.logprobs == Some(true) {
        task.gen.logprobs = Some(top.unwrap_or(0));
    } else if top.is_some_and(|k| k > 0) {
        errors.push(FieldError::new(
            "top_logprobs",
            "requires(logprobs)",
            "top_logprobs needs logprobs: true",
        ));
    }
    let mut p = finish(task, &r.gen, Kind::Chat, errors)?;
    p.meta.tools = tools.map(|t| t.mode);
    Ok(p)
}

/// `response_format` → the task's constraint; a schema that does not compile is a 400 naming
/// `response_format.json_schema.schema#<where>` and why.
fn response_format(f: ResponseFormat) -> Result<Option<Constraint>, FieldError> {
    let (c, field) = match f {
        ResponseFormat::Text => return Ok(None),
        ResponseFormat::JsonObject => (Constraint::JsonObject(true), "response_format"),
        ResponseFormat::JsonSchema { json_schema } => (
            Constraint::JsonSchema(json_schema.schema.unwrap_or_else(|| serde_json::json!({}))),
            "response_format.json_schema.schema",
        ),
    };
    let mut shape = Vec::new();
    c.validate_into(&mut shape);
    if let Some(e) = shape.into_iter().next() {
        return Err(FieldError::new(
            field,
            e.constraint,
            e.message.replace(c.field(), field),
        ));
    }
    match llorch_constraint::check(&c) {
        Ok(()) => Ok(Some(c)),
        Err(e) => Err(e.renamed(field).to_field_error()),
    }
}

/// Parse `POST /v1/completions`.
pub fn completion(body: &[u8]) -> Result<Prepared, ApiError> {
    let r: CompletionRequest = typed(body, CompletionRequest::FIELDS)?;
    let mut task = base(r.model, &r.gen, "cmpl");
    task.gen.max_tokens = r.gen.max_tokens;
    let mut errors = Vec::new();
    task.gen.logprobs = r
        .logprobs
        .and_then(|k| top_count("logprobs", k, &mut errors));
    let one = |n: usize| {
        (n == 1).then_some(()).ok_or_else(|| {
            FieldError::new(
                "prompt",
                "unsupported_value",
                format!("one prompt per request is supported, got {n}"),
            )
        })
    };
    match r.prompt {
        PromptInput::Text(p) => task.gen.prompt = Some(p),
        PromptInput::Ids(ids) => task.gen.prompt_ids = Some(ids),
        PromptInput::Texts(mut v) => match one(v.len()) {
            Ok(()) => task.gen.prompt = v.pop(),
            Err(e) => errors.push(e),
        },
        PromptInput::IdLists(mut v) => match one(v.len()) {
            Ok(()) => task.gen.prompt_ids = v.pop(),
            Err(e) => errors.push(e),
        },
    }
    finish(task, &r.gen, Kind::Completion, errors)
}

/// The task fields both endpoints share; the id is `<prefix>-<uuid>`.
fn base(model: String, g: &GenerationFields, prefix: &str) -> TaskRequest {
    TaskRequest {
        model,
        task_id: Some(format!("{prefix}-{}", uuid::Uuid::new_v4())),
        session_id: g.user.clone().filter(|u| is_valid_id(u)),
        gen: Generation {
            sampling: SamplingParams {
                temperature: g.temperature.unwrap_or(1.0),
                top_p: g.top_p.unwrap_or(1.0),
                top_k: g.top_k.unwrap_or(0),
                min_p: g.min_p.unwrap_or(0.0),
                repetition_penalty: g.repetition_penalty.unwrap_or(1.0),
                seed: g.seed,
            },
            stop: g.stop.clone().map(|s| s.into_vec()).unwrap_or_default(),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Validate the task (every problem at once) and build the answer's meta.
fn finish(
    task: TaskRequest,
    g: &GenerationFields,
    kind: Kind,
    mut errors: Vec<FieldError>,
) -> Result<Prepared, ApiError> {
    // A prompt that could not be converted would only add follow-on errors.
    let converted = errors.is_empty();
    let n = g.n.unwrap_or(1);
    if !(1..=MAX_N).contains(&n) {
        errors.push(
            FieldError::new(
                "n",
                format!("range(1..={MAX_N})"),
                format!("n must be between 1 and {MAX_N}, got {n}"),
            )
            .with_value(n),
        );
    }
    if converted {
        errors.extend(task.validate().err().unwrap_or_default());
    }
    if !errors.is_empty() {
        return Err(ApiError::invalid(errors));
    }
    let meta = Meta {
        kind,
        id: task.task_id.clone().expect("set by base()"),
        created: unix_ms() / 1000,
        model: task.model.clone(),
        stream: g.stream,
        include_usage: g.stream && g.stream_options.as_ref().is_some_and(|o| o.include_usage),
        tools: None,
        logprobs: task.gen.logprobs,
    };
    Ok(Prepared { task, meta, n })
}

/// One chat message; `developer` is rendered as `system`, content parts must be text.
fn message(i: usize, m: OpenAiMessage) -> Result<ChatMessage, FieldError> {
    let content = match m.content {
        None => String::new(),
        Some(MessageContent::Text(s)) => s,
        Some(MessageContent::Parts(parts)) => {
            let mut text = String::new();
            for (j, p) in parts.into_iter().enumerate() {
                match (p.kind.as_str(), p.text) {
                    ("text", Some(t)) => text.push_str(&t),
                    (kind, _) => {
                        return Err(FieldError::new(
                            format!("messages[{i}].content[{j}]"),
                            "unsupported_value",
                            format!("content parts of type {kind:?} are not supported (only text)"),
                        ))
                    }
                }
            }
            text
        }
    };
    let mut content = content;
    if let Some(calls) = m.tool_calls.as_deref().filter(|c| !c.is_empty()) {
        if !content.is_empty() {
            content.push('\n');
        }
        content.push_str(&tools::calls_text(calls));
    }
    let role = match m.role.as_str() {
        "developer" => "system".to_string(),
        "tool" => {
            let id = m.tool_call_id.as_deref().unwrap_or("?");
            content = format!("Result of tool call {id}: {content}");
            "user".to_string()
        }
        _ => m.role,
    };
    Ok(ChatMessage { role, content })
}

/// Check the keys, then deserialize.
fn typed<T: DeserializeOwned>(body: &[u8], own: &[&str]) -> Result<T, ApiError> {
    let invalid = |constraint: &str, message: String| {
        ApiError::invalid(vec![FieldError::new("body", constraint, message)])
    };
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| invalid("json", format!("the body is not valid JSON: {e}")))?;
    let Value::Object(obj) = &value else {
        return Err(invalid("object", "the body must be a JSON object".into()));
    };
    check_keys(obj, own)?;
    serde_json::from_value(value).map_err(|e| {
        let msg = e.to_string();
        // serde names a missing field as "missing field `x`": report it as that param.
        match msg
            .split('`')
            .nth(1)
            .filter(|_| msg.starts_with("missing field"))
        {
            Some(f) => ApiError::invalid(vec![FieldError::new(
                f,
                "required",
                format!("{f} is required"),
            )]),
            None => invalid("type", format!("invalid field value: {msg}")),
        }
    })
}

/// Unknown keys and non-neutral values of unsupported OpenAI fields, all at once.
fn check_keys(obj: &Map<String, Value>, own: &[&str]) -> Result<(), ApiError> {
    let mut errors = Vec::new();
    for (k, v) in obj {
        let k = k.as_str();
        if own.contains(&k)
            || GenerationFields::FIELDS.contains(&k)
            || GenerationFields::IGNORED.contains(&k)
        {
            continue;
        }
        if !GenerationFields::NEUTRAL_ONLY.contains(&k) {
            errors.push(FieldError::new(
                k,
                "unknown_field",
                format!("Unrecognized request argument supplied: {k}"),
            ));
        } else if !is_neutral(k, v) {
            errors.push(
                FieldError::new(
                    k,
                    "unsupported",
                    format!("{k} is not supported by llama-orch (only its neutral value, e.g. null, is accepted)"),
                )
                .with_value(v),
            );
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(errors))
    }
}

/// Whether `v` asks for nothing beyond plain generation.
fn is_neutral(key: &str, v: &Value) -> bool {
    match v {
        Value::Null | Value::Bool(false) => true,
        Value::Number(n) if key == "best_of" => n.as_u64() == Some(1),
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => {
            s.is_empty()
                || (matches!(key, "tool_choice" | "function_call")
                    && matches!(s.as_str(), "none" | "auto"))
        }
        Value::Array(a) => a.is_empty() || (key == "modalities" && a == &[Value::from("text")]),
        Value::Object(o) if key == "response_format" => {
            o.is_empty() || o.get("type").and_then(Value::as_str) == Some("text")
        }
        Value::Object(o) => o.is_empty(),
        Value::Bool(true) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(e: &ApiError) -> Vec<(&str, &str)> {
        e.envelope
            .error
            .fields
            .iter()
            .map(|f| (f.field.as_str(), f.constraint.as_str()))
            .collect()
    }

    #[test]
    fn chat_maps_to_a_task() {
        let p = chat(
            br#"{"model":"m","messages":[{"role":"developer","content":"be brief"},
            {"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}],
            "max_tokens":5,"max_completion_tokens":7,"temperature":0,"stop":"x","seed":3,
            "user":"alice","top_k":4,"presence_penalty":0,"tools":[],"store":true,
            "response_format":{"type":"text"},"stream":true,"stream_options":{"include_usage":true}}"#,
        )
        .unwrap();
        let m = p.task.gen.messages.as_ref().unwrap();
        assert_eq!(
            (m[0].role.as_str(), m[1].content.as_str()),
            ("system", "ab")
        );
        assert_eq!(p.task.gen.max_tokens, Some(7));
        assert_eq!(p.task.gen.sampling.temperature, 0.0);
        assert_eq!(p.task.gen.sampling.top_k, 4);
        assert_eq!(p.task.gen.stop, ["x"]);
        assert_eq!(p.task.session_id.as_deref(), Some("alice"));
        assert!(p.meta.id.starts_with("chatcmpl-"));
        assert_eq!(p.task.task_id.as_deref(), Some(p.meta.id.as_str()));
        assert!(p.meta.stream && p.meta.include_usage);
    }

    #[test]
    fn logprobs_and_n_map_to_tasks() {
        let p = chat(
            br#"{"model":"m","messages":[{"role":"user","content":"x"}],"logprobs":true,
            "top_logprobs":3,"n":3,"seed":10}"#,
        )
        .unwrap();
        assert_eq!(
            (p.task.gen.logprobs, p.meta.logprobs, p.n),
            (Some(3), Some(3), 3)
        );
        let tasks = p.choices();
        let ids: Vec<_> = tasks.iter().map(|t| t.task_id.clone().unwrap()).collect();
        assert_eq!(
            ids,
            [
                p.meta.id.clone(),
                format!("{}.1", p.meta.id),
                format!("{}.2", p.meta.id)
            ]
        );
        let seeds: Vec<_> = tasks.iter().map(|t| t.gen.sampling.seed).collect();
        assert_eq!(seeds, [Some(10), Some(11), Some(12)]);
        assert!(tasks.iter().all(|t| t.validate().is_ok()));
        let p =
            chat(br#"{"model":"m","messages":[{"role":"user","content":"x"}],"logprobs":true}"#)
                .unwrap();
        assert_eq!((p.task.gen.logprobs, p.n), (Some(0), 1));
        let p =
            chat(br#"{"model":"m","messages":[{"role":"user","content":"x"}],"logprobs":false}"#)
                .unwrap();
        assert_eq!(p.meta.logprobs, None);
        let p = completion(br#"{"model":"m","prompt":"x","logprobs":2,"n":8}"#).unwrap();
        assert_eq!((p.task.gen.logprobs, p.n), (Some(2), 8));
    }

    #[test]
    fn completion_prompts() {
        let p = completion(br#"{"model":"m","prompt":["hi"]}"#).unwrap();
        assert_eq!(p.task.gen.prompt.as_deref(), Some("hi"));
        assert!(p.meta.id.starts_with("cmpl-") && !p.meta.include_usage);
        let p = completion(br#"{"model":"m","prompt":[[1,2]]}"#).unwrap();
        assert_eq!(p.task.gen.prompt_ids, Some(vec![1, 2]));
        let e = completion(br#"{"model":"m","prompt":["a","b"]}"#).unwrap_err();
        assert_eq!(params(&e), [("prompt", "unsupported_value")]);
        // Completions serve no constraint: the neutral response_format/tools are accepted (as
        // clients send them), anything else is named.
        completion(br#"{"model":"m","prompt":"x","response_format":{"type":"text"},"tools":[],"tool_choice":"none"}"#)
            .unwrap();
        let e =
            completion(br#"{"model":"m","prompt":"x","response_format":{"type":"json_object"}}"#)
                .unwrap_err();
        assert_eq!(params(&e), [("response_format", "unsupported")]);
    }

    #[test]
    fn errors_name_the_field() {
        let e = chat(
            br#"{"model":"m","messages":[{"role":"user","content":"x"}],"n":9,"temperature":3}"#,
        )
        .unwrap_err();
        assert_eq!(
            params(&e),
            [("n", "range(1..=8)"), ("temperature", "range(0.0..=2.0)")]
        );
        let e =
            chat(br#"{"model":"m","messages":[{"role":"user","content":"x"}],"n":0}"#).unwrap_err();
        assert_eq!(params(&e), [("n", "range(1..=8)")]);
        let e = chat(br#"{"model":"m","messages":[],"tempreature":1,"frequency_penalty":1}"#)
            .unwrap_err();
        // In the order of the request's keys.
        assert_eq!(
            params(&e),
            [
                ("tempreature", "unknown_field"),
                ("frequency_penalty", "unsupported")
            ]
        );
        let msgs = r#""model":"m","messages":[{"role":"user","content":"x"}]"#;
        let e = chat(format!(r#"{{{msgs},"logprobs":true,"top_logprobs":21}}"#).as_bytes())
            .unwrap_err();
        assert_eq!(params(&e), [("top_logprobs", "range(0..=20)")]);
        let e = chat(format!(r#"{{{msgs},"top_logprobs":2}}"#).as_bytes()).unwrap_err();
        assert_eq!(params(&e), [("top_logprobs", "requires(logprobs)")]);
        let e = completion(br#"{"model":"m","prompt":"x","logprobs":21}"#).unwrap_err();
        assert_eq!(params(&e), [("logprobs", "range(0..=20)")]);
        let e = chat(br#"{"model":"m"}"#).unwrap_err();
        assert_eq!(params(&e), [("messages", "required")]);
        let e =
            chat(br#"{"model":"m","messages":[{"role":"user","content":[{"type":"image_url"}]}]}"#)
                .unwrap_err();
        assert_eq!(
            params(&e),
            [("messages[0].content[0]", "unsupported_value")]
        );
        assert!(chat(b"[]").is_err() && chat(b"{").is_err());
    }

    #[test]
    fn response_format_and_tools_become_constraints() {
        let p = chat(
            br#"{"model":"m","messages":[{"role":"user","content":"x"}],
            "response_format":{"type":"json_schema","json_schema":{"name":"n","strict":true,
            "schema":{"type":"object","properties":{"a":{"type":"integer"}}}}}}"#,
        )
        .unwrap();
        assert!(matches!(
            p.task.gen.constraint,
            Some(Constraint::JsonSchema(_))
        ));
        let p = chat(
            br#"{"model":"m","messages":[{"role":"user","content":"x"}],
            "response_format":{"type":"json_object"}}"#,
        )
        .unwrap();
        assert_eq!(p.task.gen.constraint, Some(Constraint::JsonObject(true)));
        let e = chat(
            br#"{"model":"m","messages":[{"role":"user","content":"x"}],
            "response_format":{"type":"json_schema","json_schema":{"name":"n",
            "schema":{"type":"object","properties":{"a":{"type":"integr"}}}}}}"#,
        )
        .unwrap_err();
        assert_eq!(
            params(&e),
            [(
                "response_format.json_schema.schema#/properties/a/type",
                "compiles"
            )]
        );
        let tools = r#""tools":[{"type":"function","function":{"name":"f",
            "parameters":{"type":"object","properties":{"a":{"type":"integer"}},"required":["a"]}}}]"#;
        let body = format!(
            r#"{{"model":"m","messages":[{{"role":"user","content":"x"}},
            {{"role":"assistant","content":null,"tool_calls":[{{"id":"call_1","type":"function",
            "function":{{"name":"f","arguments":"{{\"a\":1}}"}}}}]}},
            {{"role":"tool","tool_call_id":"call_1","content":"42"}}],{tools},"tool_choice":"required"}}"#
        );
        let p = chat(body.as_bytes()).unwrap();
        assert_eq!(p.meta.tools, Some(tools::ToolMode::Required));
        let m = p.task.gen.messages.as_ref().unwrap();
        assert!(p.task.gen.tools.as_ref().unwrap().system.contains("\"f\""));
        assert_eq!(m[1].content, r#"[{"name":"f","arguments":{"a":1}}]"#);
        assert_eq!(
            (m[2].role.as_str(), m[2].content.as_str()),
            ("user", "Result of tool call call_1: 42")
        );
        let body = format!(
            r#"{{"model":"m","messages":[{{"role":"user","content":"x"}}],{tools},
            "tool_choice":{{"type":"function","function":{{"name":"g"}}}}}}"#
        );
        assert_eq!(
            params(&chat(body.as_bytes()).unwrap_err()),
            [("tool_choice", "invalid_value")]
        );
    }
}
