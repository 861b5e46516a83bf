//! The OpenAI-compatible API orchestratord serves under `/v1`: `POST /v1/chat/completions`,
//! `POST /v1/completions` (streaming chunks or one answer), `GET /v1/models`, and OpenAI's error
//! shape. Contract: `.specs/openai.md`.

use serde::{Deserialize, Serialize};

use crate::execute::StopReason;
use crate::openai_logprobs::{ChatLogprobs, CompletionLogprobs};
use crate::tools::{Tool, ToolCall, ToolCallDelta, ToolChoice};

/// `owned_by` of every model in `GET /v1/models`.
pub const OWNED_BY: &str = "llama-orch";

/// Most choices one request may ask for (`n`).
pub const MAX_N: u32 = 8;

/// The last SSE `data:` of a stream.
pub const DONE: &str = "[DONE]";

/// `stop`: one string or a list of strings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StopSequences {
    One(String),
    Many(Vec<String>),
}

impl StopSequences {
    /// The stop strings as a list.
    pub fn into_vec(self) -> Vec<String> {
        match self {
            StopSequences::One(s) => vec![s],
            StopSequences::Many(v) => v,
        }
    }
}

/// One part of a message's content; only `{"type": "text", "text": ...}` is served.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// A message's content: a string or a list of parts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MessageContent {
    Text(String),
    Parts(Vec<ContentPart>),
}

/// One chat message. Other keys OpenAI defines on messages are ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpenAiMessage {
    /// `system`, `developer` (rendered as `system`), `user`, `assistant`, `tool`.
    pub role: String,
    /// `null` counts as empty.
    #[serde(default)]
    pub content: Option<MessageContent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The calls an earlier assistant turn made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    /// On a `tool` message: the call whose result this is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

/// `stream_options`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StreamOptions {
    /// Send a last chunk with `usage` (and `choices: []`) before `[DONE]`.
    #[serde(default)]
    pub include_usage: bool,
}

/// Generation fields shared by both requests (flattened into each).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GenerationFields {
    /// Most tokens to generate (default 256, as `/v2/tasks`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// 0.0..=2.0, default 1.0; 0 is greedy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<StopSequences>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Choices to generate, 1..=[`MAX_N`] (default 1), in parallel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<u32>,
    /// Becomes the task's `session_id` when it fits `[A-Za-z0-9._:-]{1,128}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default)]
    pub stream: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    /// Extensions (the worker's sampling fields).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_p: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repetition_penalty: Option<f32>,
}

impl GenerationFields {
    /// Keys of [`GenerationFields`].
    pub const FIELDS: &'static [&'static str] = &[
        "max_tokens",
        "temperature",
        "top_p",
        "stop",
        "seed",
        "n",
        "user",
        "stream",
        "stream_options",
        "top_k",
        "min_p",
        "repetition_penalty",
    ];
    /// OpenAI fields accepted and ignored (they change nothing here).
    pub const IGNORED: &'static [&'static str] = &[
        "metadata",
        "store",
        "service_tier",
        "prompt_cache_key",
        "safety_identifier",
        "reasoning_effort",
        "verbosity",
    ];
    /// OpenAI fields accepted only with their neutral value (`null`, `false`, `0`, empty,
    /// `best_of` 1, `response_format` `{"type":"text"}`, `tool_choice` `none`/`auto`,
    /// `modalities` `["text"]`); anything else is `unsupported_parameter`. A route that serves
    /// one of them (chat: `response_format`, `tools`, `tool_choice`, `logprobs`, `top_logprobs`;
    /// completions: `logprobs`) lists it among its own fields, which are checked first.
    pub const NEUTRAL_ONLY: &'static [&'static str] = &[
        "response_format",
        "tools",
        "tool_choice",
        "frequency_penalty",
        "presence_penalty",
        "logit_bias",
        "logprobs",
        "top_logprobs",
        "functions",
        "function_call",
        "modalities",
        "audio",
        "prediction",
        "web_search_options",
        "echo",
        "best_of",
        "suffix",
    ];
}

/// `response_format` of a chat completion: plain text, any JSON object, or JSON valid under a
/// schema. Both JSON kinds are enforced by constrained decoding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ResponseFormat {
    Text,
    JsonObject,
    JsonSchema { json_schema: JsonSchemaFormat },
}

/// `response_format.json_schema`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JsonSchemaFormat {
    /// The schema's name (`[A-Za-z0-9_-]{1,64}` in OpenAI's API; not checked here).
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The JSON schema; absent means any JSON value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<serde_json::Value>,
    /// Accepted; the schema is always enforced (constrained decoding), strict or not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

/// Body of `POST /v1/chat/completions`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletionRequest {
    pub model: String,
    pub messages: Vec<OpenAiMessage>,
    /// Wins over `max_tokens` when both are given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<u32>,
    /// Plain text (default), `json_object` or `json_schema`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_format: Option<ResponseFormat>,
    /// Functions the model may call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Tool>>,
    /// `none`, `auto` (default with tools), `required`, or a named function.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoice>,
    /// Whether one answer may hold several calls (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel_tool_calls: Option<bool>,
    /// Return each generated token's log-probability (`choices[].logprobs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<bool>,
    /// With `logprobs`: also the most likely tokens at each position, 0..=20.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_logprobs: Option<u32>,
    #[serde(flatten)]
    pub gen: GenerationFields,
}

impl ChatCompletionRequest {
    /// Keys besides [`GenerationFields::FIELDS`].
    pub const FIELDS: &'static [&'static str] = &[
        "model",
        "messages",
        "max_completion_tokens",
        "response_format",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "logprobs",
        "top_logprobs",
    ];
}

/// `prompt` of `POST /v1/completions`: text or token ids, one prompt per request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PromptInput {
    Text(String),
    Ids(Vec<u32>),
    Texts(Vec<String>),
    IdLists(Vec<Vec<u32>>),
}

/// Body of `POST /v1/completions`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompletionRequest {
    pub model: String,
    pub prompt: PromptInput,
    /// Return each generated token's log-probability and this many alternatives (0..=20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<u32>,
    #[serde(flatten)]
    pub gen: GenerationFields,
}

impl CompletionRequest {
    /// Keys besides [`GenerationFields::FIELDS`].
    pub const FIELDS: &'static [&'static str] = &["model", "prompt", "logprobs"];
}

/// Why a choice ended. The worker's `eos` and `stop_sequence` are `stop`, `max_tokens` is
/// `length`; a task cancelled while the client still waits (e.g. `POST /v2/tasks/{id}/cancel`)
/// ends with `cancelled`, a value outside OpenAI's list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    Stop,
    Length,
    Cancelled,
    /// The answer is `tool_calls`.
    ToolCalls,
}

impl From<StopReason> for FinishReason {
    fn from(r: StopReason) -> Self {
        match r {
            StopReason::Eos | StopReason::StopSequence => FinishReason::Stop,
            StopReason::MaxTokens => FinishReason::Length,
            StopReason::Cancelled => FinishReason::Cancelled,
        }
    }
}

/// Token counts, from the worker's own counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub total_tokens: u32,
    /// Present when part of the prompt came from the worker's prompt cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens_details: Option<PromptTokensDetails>,
}

/// Breakdown of `prompt_tokens`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromptTokensDetails {
    /// Prompt tokens whose keys and values were reused instead of computed.
    pub cached_tokens: u32,
}

impl Usage {
    /// Usage of `prompt` in and `completion` out.
    pub fn new(prompt: u32, completion: u32) -> Self {
        Self {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: prompt + completion,
            prompt_tokens_details: None,
        }
    }

    /// With `cached` of the prompt tokens taken from the prompt cache (details only when > 0).
    pub fn with_cached(mut self, cached: u32) -> Self {
        self.prompt_tokens_details = (cached > 0).then_some(PromptTokensDetails {
            cached_tokens: cached,
        });
        self
    }
}

/// The assistant's answer in a non-streaming chat completion: text, or (`content: null`) calls.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AssistantMessage {
    pub role: String,
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
}

/// One choice of a [`ChatCompletion`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatChoice {
    pub index: u32,
    pub message: AssistantMessage,
    /// With `logprobs: true`: every generated token's log-probability; else `null`.
    pub logprobs: Option<ChatLogprobs>,
    pub finish_reason: FinishReason,
}

/// Answer of a non-streaming `POST /v1/chat/completions`. `id` is `chatcmpl-<uuid>`, which is
/// also the task id under `/v2/tasks`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletion {
    pub id: String,
    /// `chat.completion`.
    pub object: String,
    /// Unix seconds.
    pub created: u64,
    pub model: String,
    pub choices: Vec<ChatChoice>,
    pub usage: Usage,
}

/// What a chunk adds: the role (first chunk) and/or text.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatDelta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCallDelta>>,
}

/// One choice of a [`ChatCompletionChunk`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatChunkChoice {
    pub index: u32,
    pub delta: ChatDelta,
    /// With `logprobs: true`: the log-probabilities of the tokens this chunk adds.
    pub logprobs: Option<ChatLogprobs>,
    pub finish_reason: Option<FinishReason>,
}

/// One SSE `data:` of a streaming chat completion: the role first, then one chunk per generated
/// token, a chunk with `finish_reason`, a `usage` chunk (`choices: []`) when asked, `[DONE]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletionChunk {
    pub id: String,
    /// `chat.completion.chunk`.
    pub object: String,
    pub created: u64,
    pub model: String,
    pub choices: Vec<ChatChunkChoice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

/// One choice of a [`Completion`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompletionChoice {
    pub text: String,
    pub index: u32,
    /// With `logprobs: N`: the tokens' log-probabilities (of this chunk's tokens when streamed).
    pub logprobs: Option<CompletionLogprobs>,
    /// `null` on streamed chunks until the last one.
    pub finish_reason: Option<FinishReason>,
}

/// Answer of `POST /v1/completions`, and (streaming) each of its chunks; `id` is `cmpl-<uuid>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Completion {
    pub id: String,
    /// `text_completion`.
    pub object: String,
    pub created: u64,
    pub model: String,
    pub choices: Vec<CompletionChoice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

/// One entry of `GET /v1/models`: a model some ready worker serves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Model {
    pub id: String,
    /// `model`.
    pub object: String,
    /// Unix seconds (when this orchestratord started).
    pub created: u64,
    pub owned_by: String,
    /// Smallest context window among its workers (prompt + output tokens).
    pub context_length: u32,
    /// Other names requests may use for it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// What requests for it may ask for beyond plain text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<ModelCapabilities>,
}

/// The `/v1` features a model is served with (the same for every model: they are done by
/// constrained decoding and the orchestrator, not by the model).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCapabilities {
    /// `response_format.type` values: `text`, `json_object`, `json_schema`.
    pub response_formats: Vec<String>,
    /// `tool_choice` values: `none`, `auto`, `required`, `function` (a named function).
    pub tool_choices: Vec<String>,
    /// `logprobs` is served.
    pub logprobs: bool,
    /// Largest `top_logprobs` (chat) / `logprobs` (completions).
    pub max_top_logprobs: u32,
    /// Largest `n`.
    pub max_n: u32,
}

impl Default for ModelCapabilities {
    fn default() -> Self {
        let v = |l: &[&str]| l.iter().map(|s| s.to_string()).collect();
        Self {
            response_formats: v(&["text", "json_object", "json_schema"]),
            tool_choices: v(&["none", "auto", "required", "function"]),
            logprobs: true,
            max_top_logprobs: crate::openai_logprobs::MAX_TOP_LOGPROBS,
            max_n: MAX_N,
        }
    }
}

/// `GET /v1/models`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelList {
    /// `list`.
    pub object: String,
    pub data: Vec<Model>,
}

/// OpenAI's error body, for every non-2xx answer under `/v1` and for a failure mid-stream
/// (`data: {"error": ...}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpenAiError {
    pub error: OpenAiErrorBody,
}

/// The error itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpenAiErrorBody {
    pub message: String,
    /// `invalid_request_error`, `authentication_error`, `rate_limit_error`, `server_error`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The request field at fault, if one is.
    pub param: Option<String>,
    /// e.g. `model_not_found`, `context_length_exceeded`, `queue_full`, `unknown_parameter`.
    pub code: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_accept_openai_spellings() {
        let r: ChatCompletionRequest = serde_json::from_str(
            r#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"hi"}]},
                {"role":"assistant","content":null}],"stop":"x","seed":3,"stream":true,
                "stream_options":{"include_usage":true},"temperature":0}"#,
        )
        .unwrap();
        assert_eq!(r.gen.stop.unwrap().into_vec(), ["x"]);
        assert!(r.gen.stream && r.gen.stream_options.unwrap().include_usage);
        assert_eq!(r.messages[1].content, None);
        let c: CompletionRequest =
            serde_json::from_str(r#"{"model":"m","prompt":[1,2,3],"stop":["a","b"]}"#).unwrap();
        assert_eq!(c.prompt, PromptInput::Ids(vec![1, 2, 3]));
        let c: CompletionRequest =
            serde_json::from_str(r#"{"model":"m","prompt":["one"]}"#).unwrap();
        assert_eq!(c.prompt, PromptInput::Texts(vec!["one".into()]));
    }

    #[test]
    fn finish_reasons_and_nulls() {
        let f = |r| serde_json::to_value(FinishReason::from(r)).unwrap();
        assert_eq!(f(StopReason::Eos), "stop");
        assert_eq!(f(StopReason::StopSequence), "stop");
        assert_eq!(f(StopReason::MaxTokens), "length");
        assert_eq!(f(StopReason::Cancelled), "cancelled");
        let e = OpenAiError {
            error: OpenAiErrorBody {
                message: "m".into(),
                kind: "invalid_request_error".into(),
                param: None,
                code: None,
            },
        };
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"error":{"message":"m","type":"invalid_request_error","param":null,"code":null}}"#
        );
    }
}
