//! The error envelope every llama-orch HTTP API returns for a non-2xx answer, and the stable
//! error codes used there and in SSE `error` events.

use serde::{Deserialize, Serialize};

/// Stable, machine-readable error codes. Serialized as `SCREAMING_SNAKE_CASE` strings; new codes
/// may be added, existing ones never change meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// The request body is malformed or a field is out of range (HTTP 400).
    InvalidRequest,
    /// Prompt tokens + `max_tokens` exceed the model's context window (HTTP 400).
    ContextLengthExceeded,
    /// The worker's queue is full (HTTP 503, with `Retry-After`).
    WorkerBusy,
    /// The admission queue is full (HTTP 429, with `Retry-After`).
    QueueFull,
    /// An unknown job, task, worker or model, or an unknown route (HTTP 404).
    NotFound,
    /// The route exists but not with this HTTP method (HTTP 405).
    MethodNotAllowed,
    /// Unknown model id (HTTP 404).
    ModelNotFound,
    /// Missing or wrong API key (HTTP 401).
    Unauthorized,
    /// The key is valid but may not do this: an admin route with a tenant key, a model or
    /// priority class outside the tenant's limits (HTTP 403).
    Forbidden,
    /// The orchestrator's policy script refused the task; the message is the script's
    /// (HTTP 403).
    PolicyRejected,
    /// A tenant's rate limit (requests or tokens per minute, queued tasks) is reached (HTTP 429,
    /// with `Retry-After`).
    RateLimited,
    /// A tenant's daily token quota is used up (HTTP 429, `Retry-After` until it resets).
    QuotaExceeded,
    /// The model could not be loaded.
    ModelLoadFailed,
    /// The forward pass or sampling failed.
    InferenceFailed,
    /// The worker serving the job disappeared after tokens were sent.
    WorkerLost,
    /// The job or task passed its deadline.
    DeadlineExceeded,
    /// The task was evicted from the queue by the `drop-lru` policy.
    Evicted,
    /// The job was cancelled.
    Cancelled,
    /// The server is shutting down.
    ShuttingDown,
    /// The worker's engine thread has died (HTTP 503): the worker cannot generate until it is
    /// restarted; its `/health` says `failed` and why.
    EngineFailed,
    /// No pool has memory for a worker of the model, even after stopping idle workers; the
    /// message names what was needed and what each pool had (HTTP 503).
    NoCapacity,
    /// The device ran out of memory while running this job (a GPU allocation failed): the job
    /// ends, the worker stays up and serves the next one (HTTP 503, retriable elsewhere).
    VramOom,
    /// The request body is larger than the server's limit; the message names the limit and
    /// the setting that raises it (HTTP 413).
    PayloadTooLarge,
    /// The task already has as many open event streams as the limit allows; the message names
    /// the limit (HTTP 429, with `Retry-After`).
    TooManySubscribers,
    /// Anything else.
    Internal,
}

impl ErrorCode {
    /// The HTTP status that goes with this code when it is the answer to a request.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::InvalidRequest | ErrorCode::ContextLengthExceeded => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Forbidden | ErrorCode::PolicyRejected => 403,
            ErrorCode::NotFound | ErrorCode::ModelNotFound => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::QueueFull
            | ErrorCode::RateLimited
            | ErrorCode::QuotaExceeded
            | ErrorCode::TooManySubscribers => 429,
            ErrorCode::Cancelled => 499,
            ErrorCode::WorkerBusy
            | ErrorCode::ShuttingDown
            | ErrorCode::EngineFailed
            | ErrorCode::NoCapacity
            | ErrorCode::VramOom => 503,
            ErrorCode::DeadlineExceeded => 504,
            ErrorCode::ModelLoadFailed
            | ErrorCode::InferenceFailed
            | ErrorCode::WorkerLost
            | ErrorCode::Evicted
            | ErrorCode::Internal => 500,
        }
    }

    /// Whether the same request may succeed if sent again later.
    pub fn retriable(self) -> bool {
        matches!(
            self,
            ErrorCode::WorkerBusy
                | ErrorCode::QueueFull
                | ErrorCode::RateLimited
                | ErrorCode::QuotaExceeded
                | ErrorCode::TooManySubscribers
                | ErrorCode::WorkerLost
                | ErrorCode::Evicted
                | ErrorCode::ShuttingDown
                | ErrorCode::EngineFailed
                | ErrorCode::NoCapacity
                | ErrorCode::VramOom
                | ErrorCode::Internal
        )
    }

    /// Every code, in declaration order (the OpenAPI documents' enum is built from it).
    pub const ALL: &[ErrorCode] = &[
        ErrorCode::InvalidRequest,
        ErrorCode::ContextLengthExceeded,
        ErrorCode::WorkerBusy,
        ErrorCode::QueueFull,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::ModelNotFound,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::PolicyRejected,
        ErrorCode::RateLimited,
        ErrorCode::QuotaExceeded,
        ErrorCode::ModelLoadFailed,
        ErrorCode::InferenceFailed,
        ErrorCode::WorkerLost,
        ErrorCode::DeadlineExceeded,
        ErrorCode::Evicted,
        ErrorCode::Cancelled,
        ErrorCode::ShuttingDown,
        ErrorCode::EngineFailed,
        ErrorCode::NoCapacity,
        ErrorCode::VramOom,
        ErrorCode::PayloadTooLarge,
        ErrorCode::TooManySubscribers,
        ErrorCode::Internal,
    ];

    /// The wire spelling, e.g. `"INVALID_REQUEST"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "INVALID_REQUEST",
            ErrorCode::ContextLengthExceeded => "CONTEXT_LENGTH_EXCEEDED",
            ErrorCode::WorkerBusy => "WORKER_BUSY",
            ErrorCode::QueueFull => "QUEUE_FULL",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            ErrorCode::ModelNotFound => "MODEL_NOT_FOUND",
            ErrorCode::Unauthorized => "UNAUTHORIZED",
            ErrorCode::Forbidden => "FORBIDDEN",
            ErrorCode::PolicyRejected => "POLICY_REJECTED",
            ErrorCode::RateLimited => "RATE_LIMITED",
            ErrorCode::QuotaExceeded => "QUOTA_EXCEEDED",
            ErrorCode::ModelLoadFailed => "MODEL_LOAD_FAILED",
            ErrorCode::InferenceFailed => "INFERENCE_FAILED",
            ErrorCode::WorkerLost => "WORKER_LOST",
            ErrorCode::DeadlineExceeded => "DEADLINE_EXCEEDED",
            ErrorCode::Evicted => "EVICTED",
            ErrorCode::Cancelled => "CANCELLED",
            ErrorCode::ShuttingDown => "SHUTTING_DOWN",
            ErrorCode::EngineFailed => "ENGINE_FAILED",
            ErrorCode::NoCapacity => "NO_CAPACITY",
            ErrorCode::VramOom => "VRAM_OOM",
            ErrorCode::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            ErrorCode::TooManySubscribers => "TOO_MANY_SUBSCRIBERS",
            ErrorCode::Internal => "INTERNAL",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `text` as one human message: the frames of a Rust backtrace (candle attaches one to its
/// errors when `RUST_BACKTRACE` is set: `   3: name` and `      at file:line` lines, after a
/// `Stack backtrace:` header or not) are removed, and what remains is joined with `: ` where
/// the error chain put line breaks. Messages in error envelopes and on stderr go through this.
pub fn human_message(text: &str) -> String {
    let is_frame = |line: &str| {
        let t = line.trim_start();
        if t.len() == line.len() {
            return false;
        }
        t.starts_with("at ")
            || t.split_once(": ")
                .is_some_and(|(num, _)| !num.is_empty() && num.bytes().all(|b| b.is_ascii_digit()))
    };
    let mut parts: Vec<&str> = Vec::new();
    for line in text.lines() {
        let t = line.trim();
        if t.is_empty() || is_frame(line) || t == "Stack backtrace:" || t == "Backtrace:" {
            continue;
        }
        if parts.last() != Some(&t) {
            parts.push(t);
        }
    }
    parts.join(": ")
}

/// One invalid field: which one, which rule it broke, and a sentence for humans.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldError {
    /// JSON path of the field, e.g. `temperature` or `stop[2]`.
    pub field: String,
    /// The rule, e.g. `range(0.0..=2.0)`, `required`, `max_count(4)`.
    pub constraint: String,
    /// Human-readable explanation naming the field and the limit.
    pub message: String,
    /// The offending value, when it is short enough to echo (boxed: keeps `Result<_,
    /// FieldError>` small now that JSON objects keep their key order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Box<serde_json::Value>>,
}

impl FieldError {
    /// A field error with no echoed value.
    pub fn new(
        field: impl Into<String>,
        constraint: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            field: field.into(),
            constraint: constraint.into(),
            message: message.into(),
            value: None,
        }
    }

    /// Attach the offending value.
    pub fn with_value(mut self, value: impl Serialize) -> Self {
        self.value = serde_json::to_value(value).ok().map(Box::new);
        self
    }
}

/// Body of every error response: `{"error": {...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorEnvelope {
    pub error: ErrorBody,
}

/// The error itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
    pub retriable: bool,
    /// Every invalid field, for `INVALID_REQUEST`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<FieldError>,
    /// Suggested wait before retrying, for busy/full answers (also sent as `Retry-After`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

impl ErrorEnvelope {
    /// An envelope with the code's default retriability.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            error: ErrorBody {
                code,
                message: message.into(),
                retriable: code.retriable(),
                fields: Vec::new(),
                retry_after_ms: None,
            },
        }
    }

    /// `INVALID_REQUEST` listing every bad field; the message joins their messages.
    pub fn invalid(fields: Vec<FieldError>) -> Self {
        let message = fields
            .iter()
            .map(|f| f.message.as_str())
            .collect::<Vec<_>>()
            .join("; ");
        let mut env = Self::new(ErrorCode::InvalidRequest, message);
        env.error.fields = fields;
        env
    }
}

#[cfg(test)]
mod tests {
    /// `ALL` lists every variant: the match below does not compile without an arm for a new
    /// variant, and its position must be inside `ALL` and hold that variant.
    #[test]
    fn all_lists_every_code_once() {
        fn position(c: ErrorCode) -> usize {
            match c {
                ErrorCode::InvalidRequest => 0,
                ErrorCode::ContextLengthExceeded => 1,
                ErrorCode::WorkerBusy => 2,
                ErrorCode::QueueFull => 3,
                ErrorCode::NotFound => 4,
                ErrorCode::MethodNotAllowed => 5,
                ErrorCode::ModelNotFound => 6,
                ErrorCode::Unauthorized => 7,
                ErrorCode::Forbidden => 8,
                ErrorCode::PolicyRejected => 9,
                ErrorCode::RateLimited => 10,
                ErrorCode::QuotaExceeded => 11,
                ErrorCode::ModelLoadFailed => 12,
                ErrorCode::InferenceFailed => 13,
                ErrorCode::WorkerLost => 14,
                ErrorCode::DeadlineExceeded => 15,
                ErrorCode::Evicted => 16,
                ErrorCode::Cancelled => 17,
                ErrorCode::ShuttingDown => 18,
                ErrorCode::EngineFailed => 19,
                ErrorCode::NoCapacity => 20,
                ErrorCode::VramOom => 21,
                ErrorCode::PayloadTooLarge => 22,
                ErrorCode::TooManySubscribers => 23,
                ErrorCode::Internal => 24,
            }
        }
        for (i, c) in ErrorCode::ALL.iter().enumerate() {
            assert_eq!(position(*c), i, "{c}");
            let json = serde_json::to_string(c).unwrap();
            assert_eq!(json, format!("\"{}\"", c.as_str()));
        }
        assert_eq!(ErrorCode::ALL.len(), 25);
    }

    use super::*;

    #[test]
    fn backtraces_are_not_part_of_messages() {
        let text = "cannot load x.gguf: file is truncated\n   0: candle_core::error::Error::bt\n             at /src/error.rs:264:25\n  23: main\n";
        assert_eq!(human_message(text), "cannot load x.gguf: file is truncated");
        assert_eq!(human_message("a\nb: 2"), "a: b: 2");
        assert_eq!(human_message("plain"), "plain");
    }
}
