//! Tool calling for `/v1/chat/completions`, done here in the translation layer: the tools go to
//! the worker's chat template, the call is decoded under a constraint the worker enforces, and
//! the output is parsed back into `message.tool_calls`.
//!
//! - Rendering (the task's `tools`, [`ChatTools`]): a chat template that uses a `tools` variable
//!   gets the request's tools as given; for any other template the worker uses the documented
//!   system-prompt rendering made here (`.specs/openai.md`): a system message (the request's own
//!   first system message, extended) lists each function as one JSON line
//!   `{"name", "description", "parameters"}` and says how to call: answer with only a JSON list
//!   `[{"name": ..., "arguments": {...}}]`.
//! - Constraint: the list's schema (`items`: one `anyOf` branch per allowed function, `name` a
//!   `const`, `arguments` the function's `parameters`; `maxItems: 1` without parallel calls).
//!   `required` and a named function (then exactly one call): only the list; `auto`: the list or plain text not starting
//!   with `[`, `{` or whitespace (Lark grammar); `none`: no tools rendered, no constraint.
//! - Conversation: an assistant message's `tool_calls` are rendered as that same JSON list, and a
//!   `tool` message as a user message `Result of tool call <id>: <content>`.

use llorch_wire::tools::{ChatTools, FunctionCall, Tool, ToolCall, ToolChoice};
use llorch_wire::{Constraint, FieldError};
use serde_json::{json, Value};

/// Most calls one answer may hold with `parallel_tool_calls`.
pub const MAX_PARALLEL_CALLS: u32 = 8;

/// How the answer is to be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolMode {
    /// Text or calls (decided by the first character: `[` starts calls).
    Auto,
    /// Only calls.
    Required,
}

/// A request's tools, checked: the constraint to decode under and what the template gets.
#[derive(Debug, Clone)]
pub struct ToolPlan {
    pub mode: ToolMode,
    pub constraint: Constraint,
    pub chat: ChatTools,
}

fn bad(field: impl Into<String>, code: &str, msg: impl Into<String>) -> FieldError {
    FieldError::new(field, code, msg)
}

/// Check `tools` / `tool_choice` / `parallel_tool_calls`; `None` when no tool can be called.
pub fn plan(
    tools: Option<&[Tool]>,
    choice: Option<&ToolChoice>,
    parallel: Option<bool>,
    errors: &mut Vec<FieldError>,
) -> Option<ToolPlan> {
    let tools = tools.unwrap_or_default();
    let before = errors.len();
    let mut names: Vec<&str> = Vec::new();
    for (i, t) in tools.iter().enumerate() {
        let f = &t.function;
        if t.kind != "function" {
            errors.push(bad(
                format!("tools[{i}].type"),
                "unsupported_value",
                format!("tools[{i}].type must be \"function\", got {:?}", t.kind),
            ));
        }
        let valid = !f.name.is_empty()
            && f.name.len() <= 64
            && f.name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !valid {
            errors.push(bad(
                format!("tools[{i}].function.name"),
                "pattern([A-Za-z0-9_-]{1,64})",
                format!("tools[{i}].function.name must be 1 to 64 of A-Z a-z 0-9 _ -"),
            ));
        } else if names.contains(&f.name.as_str()) {
            errors.push(bad(
                format!("tools[{i}].function.name"),
                "unique",
                format!("two tools are named {:?}", f.name),
            ));
        }
        names.push(&f.name);
        if let Some(p) = &f.parameters {
            let field = format!("tools[{i}].function.parameters");
            if let Err(e) = llorch_constraint::check(&Constraint::JsonSchema(p.clone())) {
                errors.push(e.renamed(&field).to_field_error());
            }
        }
    }
    let mode = match choice {
        None => (!tools.is_empty()).then_some((ToolMode::Auto, None)),
        Some(ToolChoice::Mode(m)) => match m.as_str() {
            "none" => None,
            "auto" => (!tools.is_empty()).then_some((ToolMode::Auto, None)),
            "required" if tools.is_empty() => {
                errors.push(bad(
                    "tool_choice",
                    "invalid_value",
                    "tool_choice \"required\" needs at least one tool in tools",
                ));
                None
            }
            "required" => Some((ToolMode::Required, None)),
            other => {
                errors.push(bad(
                    "tool_choice",
                    "invalid_value",
                    format!(
                        "tool_choice must be none, auto, required or a function, got {other:?}"
                    ),
                ));
                None
            }
        },
        Some(ToolChoice::Named(n)) => {
            if n.kind != "function" || !names.contains(&n.function.name.as_str()) {
                errors.push(bad(
                    "tool_choice",
                    "invalid_value",
                    format!(
                        "tool_choice names function {:?}, which is not in tools (tools: {})",
                        n.function.name,
                        names.join(", ")
                    ),
                ));
                None
            } else {
                Some((ToolMode::Required, Some(n.function.name.as_str())))
            }
        }
    };
    let (mode, only) = mode?;
    if errors.len() > before {
        return None;
    }
    let allowed: Vec<&Tool> = tools
        .iter()
        .filter(|t| only.is_none_or(|n| n == t.function.name))
        .collect();
    // A named function is called exactly once.
    let calls = calls_schema(&allowed, parallel.unwrap_or(true) && only.is_none());
    let constraint = match mode {
        ToolMode::Required => Constraint::JsonSchema(calls),
        ToolMode::Auto => llorch_constraint::json_or_text(&calls),
    };
    Some(ToolPlan {
        mode,
        constraint,
        chat: ChatTools {
            tools: tools
                .iter()
                .map(|t| serde_json::to_value(t).expect("tools serialize"))
                .collect(),
            system: system_text(tools, mode, only),
        },
    })
}

/// The schema of an answer made of calls to `tools`.
fn calls_schema(tools: &[&Tool], parallel: bool) -> Value {
    let one: Vec<Value> = tools
        .iter()
        .map(|t| {
            let args = t
                .function
                .parameters
                .clone()
                .unwrap_or_else(|| json!({"type": "object"}));
            json!({"type": "object",
                   "properties": {"name": {"const": t.function.name}, "arguments": args},
                   "required": ["name", "arguments"], "additionalProperties": false})
        })
        .collect();
    let max = if parallel { MAX_PARALLEL_CALLS } else { 1 };
    json!({"type": "array", "items": {"anyOf": one}, "minItems": 1, "maxItems": max})
}

fn system_text(tools: &[Tool], mode: ToolMode, only: Option<&str>) -> String {
    let mut s = String::from(
        "You can call these functions (one JSON line each, with the JSON schema of its arguments):\n",
    );
    for t in tools {
        let f = &t.function;
        let line = json!({"name": f.name, "description": f.description.clone().unwrap_or_default(),
                          "parameters": f.parameters.clone().unwrap_or_else(|| json!({"type": "object"}))});
        s.push_str(&line.to_string());
        s.push('\n');
    }
    s.push_str(match (mode, only) {
        (ToolMode::Auto, _) => "To call functions, answer with only a JSON list of calls: [{\"name\": \"<function name>\", \"arguments\": {<arguments>}}]. Otherwise answer normally.",
        (ToolMode::Required, None) => "Answer with only a JSON list of function calls: [{\"name\": \"<function name>\", \"arguments\": {<arguments>}}].",
        (ToolMode::Required, Some(_)) => "Call the function: answer with only [{\"name\": \"<function name>\", \"arguments\": {<arguments>}}].",
    });
    if let (ToolMode::Required, Some(n)) = (mode, only) {
        s.push_str(&format!(" The function to call is {n}."));
    }
    s
}

/// An earlier assistant turn's calls as the text the model would have written.
pub fn calls_text(calls: &[ToolCall]) -> String {
    let list: Vec<Value> = calls
        .iter()
        .map(|c| {
            let args = serde_json::from_str::<Value>(&c.function.arguments)
                .unwrap_or_else(|_| Value::String(c.function.arguments.clone()));
            json!({"name": c.function.name, "arguments": args})
        })
        .collect();
    Value::Array(list).to_string()
}

/// The answer's calls, when `text` is a complete list of calls; ids are `call_<24 hex>`.
pub fn parse_calls(text: &str) -> Option<Vec<ToolCall>> {
    let Value::Array(list) = serde_json::from_str::<Value>(text.trim()).ok()? else {
        return None;
    };
    if list.is_empty() {
        return None;
    }
    list.into_iter()
        .map(|c| {
            let name = c.get("name")?.as_str()?.to_string();
            let args = c.get("arguments")?;
            let id = uuid::Uuid::new_v4().simple().to_string();
            Some(ToolCall {
                id: format!("call_{}", &id[..24]),
                kind: "function".into(),
                function: FunctionCall {
                    name,
                    arguments: args.to_string(),
                },
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use llorch_wire::tools::{FunctionDef, FunctionName, NamedToolChoice};

    fn tool(name: &str, params: Value) -> Tool {
        Tool {
            kind: "function".into(),
            function: FunctionDef {
                name: name.into(),
                description: Some("d".into()),
                parameters: Some(params),
                strict: None,
            },
        }
    }

    #[test]
    fn plans_and_errors() {
        let tools = [tool(
            "get_weather",
            json!({"type": "object", "properties": {"city": {"type": "string"}}}),
        )];
        let mut errors = Vec::new();
        let p = plan(Some(&tools), None, None, &mut errors).unwrap();
        assert_eq!(p.mode, ToolMode::Auto);
        assert!(matches!(p.constraint, Constraint::Lark(_)));
        llorch_constraint::check(&p.constraint).unwrap();
        let named = ToolChoice::Named(NamedToolChoice {
            kind: "function".into(),
            function: FunctionName {
                name: "get_weather".into(),
            },
        });
        let p = plan(Some(&tools), Some(&named), Some(false), &mut errors).unwrap();
        assert_eq!(p.mode, ToolMode::Required);
        let Constraint::JsonSchema(s) = &p.constraint else {
            panic!()
        };
        assert_eq!(s["maxItems"], 1);
        assert!(p.chat.system.contains("get_weather"));
        assert_eq!(p.chat.tools[0]["function"]["name"], "get_weather");
        assert!(errors.is_empty());
        assert!(plan(
            Some(&tools),
            Some(&ToolChoice::Mode("none".into())),
            None,
            &mut errors
        )
        .is_none());
        let unknown = ToolChoice::Named(NamedToolChoice {
            kind: "function".into(),
            function: FunctionName {
                name: "nope".into(),
            },
        });
        assert!(plan(Some(&tools), Some(&unknown), None, &mut errors).is_none());
        let bad_schema = [tool(
            "f",
            json!({"type": "object", "properties": {"a": {"type": "strng"}}}),
        )];
        assert!(plan(Some(&bad_schema), None, None, &mut errors).is_none());
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "tool_choice",
                "tools[0].function.parameters#/properties/a/type"
            ]
        );
    }

    #[test]
    fn calls_round_trip() {
        let calls = parse_calls(r#"[{"name": "f", "arguments": {"a": 1}}]"#).unwrap();
        assert_eq!(calls[0].function.name, "f");
        assert_eq!(calls[0].function.arguments, r#"{"a":1}"#);
        assert!(calls[0].id.starts_with("call_") && calls[0].id.len() == 29);
        assert_eq!(calls_text(&calls), r#"[{"name":"f","arguments":{"a":1}}]"#);
        assert!(parse_calls("hello").is_none() && parse_calls("[]").is_none());
    }
}
