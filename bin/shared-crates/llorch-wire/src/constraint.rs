//! Constrained decoding on the wire: the `constraint` field of a [`Generation`](crate::Generation)
//! (worker `/execute`, orchestrator `/v2/tasks`). Compiling it is `llorch-constraint`'s job; the
//! checks here need no compiler.

use serde::{Deserialize, Serialize};

use crate::error::FieldError;

/// What a constrained generation's output must match. JSON: `{"json_schema": {...}}`,
/// `{"json_object": true}`, `{"regex": "..."}` or `{"lark": "..."}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Constraint {
    /// A JSON value valid under this JSON schema (draft 2020-12 subset, see `.specs/worker.md`).
    JsonSchema(serde_json::Value),
    /// Any JSON object (`true`; `false` is rejected as meaningless).
    JsonObject(bool),
    /// Text fully matching this regular expression (Rust `regex` syntax, anchored both ends).
    Regex(String),
    /// Text derived from this Lark grammar's `start` rule (llguidance's Lark dialect).
    Lark(String),
}

/// Most bytes of a constraint's source (schema JSON, regex or grammar text).
pub const MAX_CONSTRAINT_BYTES: usize = 256 * 1024;

impl Constraint {
    /// The field path of this constraint's source, e.g. `constraint.json_schema`.
    pub fn field(&self) -> &'static str {
        match self {
            Constraint::JsonSchema(_) => "constraint.json_schema",
            Constraint::JsonObject(_) => "constraint.json_object",
            Constraint::Regex(_) => "constraint.regex",
            Constraint::Lark(_) => "constraint.lark",
        }
    }

    /// Shape checks that need no compiler: size, non-empty source, `json_object: true`.
    /// Whether the schema, regex or grammar compiles is checked by `llorch-constraint`.
    pub fn validate_into(&self, errors: &mut Vec<FieldError>) {
        let len = match self {
            Constraint::JsonSchema(v) => {
                if !v.is_object() && !v.is_boolean() {
                    errors.push(FieldError::new(
                        self.field(),
                        "schema",
                        "constraint.json_schema must be a JSON schema object",
                    ));
                }
                serde_json::to_string(v).map_or(0, |s| s.len())
            }
            Constraint::JsonObject(b) => {
                if !b {
                    errors.push(FieldError::new(
                        self.field(),
                        "value(true)",
                        "constraint.json_object must be true (leave the constraint out instead)",
                    ));
                }
                0
            }
            Constraint::Regex(s) | Constraint::Lark(s) => {
                if s.is_empty() {
                    errors.push(FieldError::new(
                        self.field(),
                        "non_empty",
                        format!("{} must not be empty", self.field()),
                    ));
                }
                s.len()
            }
        };
        if len > MAX_CONSTRAINT_BYTES {
            errors.push(FieldError::new(
                self.field(),
                format!("max_bytes({MAX_CONSTRAINT_BYTES})"),
                format!(
                    "{} may be at most {MAX_CONSTRAINT_BYTES} bytes, got {len}",
                    self.field()
                ),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constraint_json_forms() {
        for (text, c) in [
            (
                r#"{"json_schema":{"type":"object"}}"#,
                Constraint::JsonSchema(serde_json::json!({"type": "object"})),
            ),
            (r#"{"json_object":true}"#, Constraint::JsonObject(true)),
            (r#"{"regex":"[0-9]+"}"#, Constraint::Regex("[0-9]+".into())),
            (
                r#"{"lark":"start: \"a\""}"#,
                Constraint::Lark("start: \"a\"".into()),
            ),
        ] {
            assert_eq!(serde_json::from_str::<Constraint>(text).unwrap(), c);
            assert_eq!(serde_json::to_string(&c).unwrap(), text);
        }
        assert!(serde_json::from_str::<Constraint>(r#"{"grammar":"x"}"#).is_err());
        let mut errors = Vec::new();
        Constraint::JsonObject(false).validate_into(&mut errors);
        Constraint::Regex(String::new()).validate_into(&mut errors);
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["constraint.json_object", "constraint.regex"]);
    }
}
