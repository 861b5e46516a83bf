//! Turning a validated `/execute` body into an engine [`Job`]: chat rendering, tokenization,
//! the context-length check, the constraint. Every failure is an error envelope naming the
//! field and the limit.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use llorch_engine::{Job, LoadedModel};
use llorch_wire::{ErrorCode, ErrorEnvelope, ExecuteRequest, FieldError};

/// Tokenize and check a request that passed [`ExecuteRequest::validate`]. Runs on a blocking
/// thread (tokenizing a long prompt takes time).
pub fn prepare(lm: &LoadedModel, req: ExecuteRequest) -> Result<Job, ErrorEnvelope> {
    let ids = prompt_ids(lm, &req)?;
    let chat = req.gen.messages.is_some();
    let max_tokens = req.max_tokens_or_default();
    let ctx = lm.info.context_length;
    if ids.len() + max_tokens as usize > ctx {
        let msg = format!(
            "prompt ({} tokens) + max_tokens ({max_tokens}) = {} exceeds this worker's context of {ctx} tokens",
            ids.len(),
            ids.len() + max_tokens as usize
        );
        let mut env = ErrorEnvelope::new(ErrorCode::ContextLengthExceeded, msg.clone());
        env.error.fields.push(FieldError::new(
            "max_tokens",
            format!("prompt_tokens + max_tokens <= {ctx}"),
            msg,
        ));
        return Err(env);
    }
    // A constraint compiles here, before any compute: a bad schema is a 400 naming where.
    let guide = match &req.gen.constraint {
        Some(c) => Some(
            lm.compile_constraint(c)
                .map_err(|e| ErrorEnvelope::invalid(vec![e.to_field_error()]))?,
        ),
        None => None,
    };
    Ok(Job {
        job_id: req
            .job_id
            .unwrap_or_else(|| format!("job-{}", uuid::Uuid::new_v4())),
        prompt_ids: ids,
        max_tokens,
        sampling: req.gen.sampling,
        turn_stops: if chat {
            lm.chat.turn_stops().to_vec()
        } else {
            Vec::new()
        },
        trim_reply_start: chat && !lm.chat.turn_stops().is_empty(),
        stop: req.gen.stop,
        logprobs: req.gen.logprobs,
        prompt_logprobs: req.prompt_logprobs,
        guide,
        cancel: Arc::new(AtomicBool::new(false)),
        enqueued_at: Instant::now(),
    })
}

/// The prompt as token ids, from whichever of prompt / messages / prompt_ids was given.
pub fn prompt_ids(lm: &LoadedModel, req: &ExecuteRequest) -> Result<Vec<u32>, ErrorEnvelope> {
    let invalid = |field: &str, msg: String| {
        ErrorEnvelope::invalid(vec![FieldError::new(field, "valid", msg)])
    };
    if let Some(ids) = &req.gen.prompt_ids {
        let vocab = lm.info.vocab_size as u32;
        if let Some(bad) = ids.iter().find(|&&id| id >= vocab) {
            return Err(invalid(
                "prompt_ids",
                format!("prompt_ids contains {bad}, outside the vocabulary (0..{vocab})"),
            ));
        }
        return Ok(ids.clone());
    }
    let text = match (&req.gen.prompt, &req.gen.messages) {
        (Some(p), _) => p.clone(),
        (None, Some(m)) => lm
            .chat
            .render_chat(m, req.gen.tools.as_ref(), true)
            .map_err(|e| invalid("messages", format!("chat template failed: {e:#}")))?,
        (None, None) => {
            return Err(invalid(
                "prompt",
                "give one of prompt, messages or prompt_ids".into(),
            ))
        }
    };
    lm.tokenizer
        .encode(&text, add_bos_for(lm, &text))
        .map_err(|e| invalid("prompt", format!("cannot tokenize prompt: {e:#}")))
}

/// Whether encoding `text` should add the model's special prefix (BOS): not when the text (e.g.
/// a chat template that writes `{{ bos_token }}` itself) already starts with it, so BOS is
/// never doubled.
pub fn add_bos_for(lm: &LoadedModel, text: &str) -> bool {
    !lm.tokenizer
        .bos_token()
        .is_some_and(|b| !b.is_empty() && text.starts_with(b))
}
