//! The seam between the worker's HTTP layer and what generates tokens. The routes
//! ([`crate::app`]) know only this trait; the candle engine implements it
//! ([`crate::candle::CandleBackend`]), and so does the fault-injection backend the
//! orchestrator's failure tests run behind the same routes ([`crate::fault::FaultBackend`]).

use llorch_wire::{
    ChatTemplateReport, DetokenizeRequest, DetokenizeResponse, ErrorEnvelope, ExecuteRequest,
    TokenizeRequest, TokenizeResponse, WorkerEvent,
};

/// Where a job's events go, in order, ending with one terminal event (`end` or `error`).
/// Returns false once nobody listens any more: the job may stop.
pub type EventSink = Box<dyn FnMut(WorkerEvent) -> bool + Send>;

/// What a backend serves, fixed at start: reported by `/health` and at registration. Fields mean
/// what [`llorch_wire::WorkerHealth`]'s of the same names mean (`name` and `path` are its `model`
/// and `model_path`).
#[derive(Debug, Clone, PartialEq)]
pub struct BackendInfo {
    pub name: String,
    pub path: String,
    pub format: String,
    pub architecture: String,
    pub quantization: String,
    pub runtime_quantization: String,
    pub context_length: u32,
    pub vocab_size: u32,
    pub parallel: u32,
    pub slots_total: u32,
    pub simd: Vec<String>,
    pub chat_template: Option<ChatTemplateReport>,
}

/// A backend's load now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Load {
    /// Jobs generating.
    pub active: u32,
    /// Jobs waiting for a slot.
    pub queued: u32,
    /// Most jobs one decode step has served so far.
    pub peak_batch: u32,
    /// Why the backend can no longer generate (it must be restarted); None while healthy.
    pub failure: Option<String>,
}

/// A token generator the worker's routes serve. Methods that may block (tokenizing a long
/// prompt) are called on a blocking thread by the HTTP layer.
pub trait Backend: Send + Sync + 'static {
    /// What is served.
    fn info(&self) -> &BackendInfo;

    /// Jobs running and waiting, and whether the backend has failed.
    fn load(&self) -> Load;

    /// Prepare a job (tokenize, check it against the model) and queue it; its events go to
    /// `events`. `req` has passed [`ExecuteRequest::validate`]. Returns the job id, or the
    /// error envelope to answer with (nothing ran). May block.
    fn submit(&self, req: ExecuteRequest, events: EventSink) -> Result<String, ErrorEnvelope>;

    /// Ask a running or queued job to stop (it ends with `stop_reason: cancelled`); false
    /// when the id is unknown.
    fn cancel(&self, job_id: &str) -> bool;

    /// Token ids of a text or of rendered chat messages. May block.
    fn tokenize(&self, req: TokenizeRequest) -> Result<TokenizeResponse, ErrorEnvelope>;

    /// Text of token ids.
    fn detokenize(&self, req: DetokenizeRequest) -> Result<DetokenizeResponse, ErrorEnvelope>;
}
