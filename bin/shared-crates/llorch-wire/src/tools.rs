//! OpenAI tool calling on the wire (`/v1/chat/completions`): the request's `tools` and
//! `tool_choice`, the assistant's `tool_calls` (in answers and in the conversation sent back),
//! and the streamed tool-call deltas. Contract: `.specs/openai.md`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One tool the model may call: `{"type": "function", "function": {...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tool {
    /// Only `function`.
    #[serde(rename = "type")]
    pub kind: String,
    pub function: FunctionDef,
}

/// A function's name, description and the JSON schema of its arguments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionDef {
    /// `[A-Za-z0-9_-]{1,64}`, unique among the request's tools.
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// JSON schema of the arguments object; absent means any object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
    /// Accepted; arguments are always decoded under the schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

/// `tool_choice`: `"none"`, `"auto"`, `"required"`, or one named function.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ToolChoice {
    Mode(String),
    Named(NamedToolChoice),
}

/// `{"type": "function", "function": {"name": ...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NamedToolChoice {
    #[serde(rename = "type")]
    pub kind: String,
    pub function: FunctionName,
}

/// A function named by `tool_choice`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionName {
    pub name: String,
}

/// One call the assistant made: `{"id", "type": "function", "function": {name, arguments}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub function: FunctionCall,
}

/// The function called and its arguments as a JSON text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionCall {
    pub name: String,
    /// The arguments object serialized as JSON.
    pub arguments: String,
}

/// A streamed piece of a tool call (`choices[].delta.tool_calls[]`). llama-orch sends each call
/// whole in one delta: `index`, `id`, `type`, `function.name` and all of `function.arguments`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCallDelta {
    pub index: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    pub function: FunctionCallDelta,
}

/// The function part of a [`ToolCallDelta`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FunctionCallDelta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<String>,
}

impl ToolCall {
    /// This call as one complete stream delta at `index`.
    pub fn to_delta(&self, index: u32) -> ToolCallDelta {
        ToolCallDelta {
            index,
            id: Some(self.id.clone()),
            kind: Some(self.kind.clone()),
            function: FunctionCallDelta {
                name: Some(self.function.name.clone()),
                arguments: Some(self.function.arguments.clone()),
            },
        }
    }
}

/// Functions offered to a chat (`tools` of a task or `/execute`). A chat template that uses a
/// `tools` variable renders them itself: it gets `tools` as given (OpenAI's `tools` entries,
/// `{"type": "function", "function": {name, description, parameters}}`). Any other template
/// gets `system` (the documented system-prompt rendering, `.specs/openai.md`) appended to the
/// conversation's first system message, or put first as a system message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatTools {
    pub tools: Vec<serde_json::Value>,
    pub system: String,
}
