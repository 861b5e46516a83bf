//! Admission: parse and validate `POST /v2/tasks`, check the model and its context window,
//! then enqueue (or answer 429 with a backoff sized from the measured drain rate).

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use llorch_client::WorkerClient;
use llorch_wire::tasks::{TaskAccepted, TaskEvent, TaskRequest};
use llorch_wire::{ErrorCode, FieldError, TokenizeRequest};

use crate::error::ApiError;
use crate::queue::{Admit, Entry};
use crate::state::{EndCause, Orchestrator};
use crate::task::Task;
use crate::tenancy::Caller;

/// Template overhead assumed per chat message, and once per prompt (system prompt, markers).
const TOKENS_PER_MESSAGE: usize = 16;
const TEMPLATE_TOKENS: usize = 128;
/// Longest wait for a worker's `/tokenize` during admission.
const TOKENIZE_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait for an admitted task's request to be committed to the database.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(5);

/// Parse the body into a [`TaskRequest`], rejecting unknown keys and invalid values.
pub fn parse(body: &[u8]) -> Result<TaskRequest, ApiError> {
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::invalid(vec![FieldError::new(
            "body",
            "json",
            format!("body is not valid JSON: {e}"),
        )])
    })?;
    let Some(obj) = value.as_object() else {
        return Err(ApiError::invalid(vec![FieldError::new(
            "body",
            "object",
            "body must be a JSON object",
        )]));
    };
    let unknown: Vec<FieldError> = obj
        .keys()
        .filter(|k| !TaskRequest::FIELDS.contains(&k.as_str()))
        .map(|k| FieldError::new(k.clone(), "unknown_field", format!("unknown field {k:?}")))
        .collect();
    if !unknown.is_empty() {
        return Err(ApiError::invalid(unknown));
    }
    let req: TaskRequest = serde_json::from_value(value).map_err(|e| {
        ApiError::invalid(vec![FieldError::new(
            "body",
            "type",
            format!("invalid field value: {e}"),
        )])
    })?;
    req.validate().map_err(ApiError::invalid)?;
    check_constraint(&req)?;
    Ok(req)
}

/// A constraint must compile (schema, regex or grammar) before the task is queued: 400 naming
/// where and why, never a task that fails on its worker.
pub fn check_constraint(req: &TaskRequest) -> Result<(), ApiError> {
    match &req.gen.constraint {
        Some(c) => {
            llorch_constraint::check(c).map_err(|e| ApiError::invalid(vec![e.to_field_error()]))
        }
        None => Ok(()),
    }
}

/// Upper bound on the prompt's tokens without tokenizing (each token covers at least a byte).
fn prompt_tokens_upper_bound(req: &TaskRequest) -> usize {
    if let Some(ids) = &req.gen.prompt_ids {
        return ids.len();
    }
    if let Some(p) = &req.gen.prompt {
        return p.len() + 2;
    }
    let msgs = req.gen.messages.as_deref().unwrap_or_default();
    // Tools: the template renders them, or their system-prompt text (the larger of the two).
    let tools = req.gen.tools.as_ref().map_or(0, |t| {
        let json: usize = t.tools.iter().map(|v| v.to_string().len()).sum();
        json.max(t.system.len()) + TOKENS_PER_MESSAGE
    });
    msgs.iter()
        .map(|m| m.role.len() + m.content.len() + TOKENS_PER_MESSAGE)
        .sum::<usize>()
        + tools
        + TEMPLATE_TOKENS
}

fn too_long(model: &str, prompt: usize, max_new: u32, ctx: u32) -> ApiError {
    ApiError::new(
        ErrorCode::ContextLengthExceeded,
        format!(
            "prompt ({prompt} tokens) + max_tokens ({max_new}) exceed the context window of model {model:?} \
             ({ctx} tokens)"
        ),
    )
}

/// Reject prompts that cannot fit the model's context. Cheap bound first; a worker's
/// `/tokenize` only for prompts near the limit. If no worker can tokenize, the worker decides.
async fn check_context(
    orch: &Orchestrator,
    req: &TaskRequest,
    ctx: u32,
    urls: Vec<(String, Option<String>)>,
) -> Result<(), ApiError> {
    // the worker's default, so admission and the worker agree on what fits
    let max_new = req.gen.max_tokens_or_default();
    if max_new >= ctx {
        return Err(too_long(&req.model, 1, max_new, ctx));
    }
    let upper = prompt_tokens_upper_bound(req);
    if upper + max_new as usize <= ctx as usize {
        return Ok(());
    }
    if req.gen.prompt_ids.is_some() {
        return Err(too_long(&req.model, upper, max_new, ctx));
    }
    let treq = TokenizeRequest {
        text: req.gen.prompt.clone(),
        messages: req.gen.messages.clone(),
        add_special_tokens: true,
        with_pieces: false,
    };
    for (url, token) in urls {
        let client = WorkerClient::with_client(&url, orch.http.clone()).with_token(token);
        if let Ok(Ok(resp)) = tokio::time::timeout(TOKENIZE_TIMEOUT, client.tokenize(&treq)).await {
            if resp.count + max_new as usize > ctx as usize {
                return Err(too_long(&req.model, resp.count, max_new, ctx));
            }
            return Ok(());
        }
    }
    Ok(())
}

/// Admit a task: validate, enqueue, announce `queued`. Counts the outcome in the metrics.
pub async fn submit(
    orch: &Arc<Orchestrator>,
    body: &[u8],
    correlation_id: &str,
    caller: &Caller,
) -> Result<TaskAccepted, ApiError> {
    submit_task(orch, parse(body), correlation_id, caller)
        .await
        .map(|(accepted, _)| accepted)
}

/// Admit a request parsed (and validated) elsewhere, e.g. by the OpenAI routes; a parse error
/// is counted as a rejection. Returns the task too, so the caller can follow its events.
pub async fn submit_task(
    orch: &Arc<Orchestrator>,
    req: Result<TaskRequest, ApiError>,
    correlation_id: &str,
    caller: &Caller,
) -> Result<(TaskAccepted, Arc<Task>), ApiError> {
    let t0 = Instant::now();
    let result = match req {
        Ok(req) => admit(orch, req, correlation_id, caller).await,
        Err(e) => Err(e),
    };
    let m = &orch.metrics;
    match &result {
        Ok(_) => m.tasks_enqueued_total.inc(&[("outcome", "accepted")]),
        Err(e) => {
            m.tasks_enqueued_total.inc(&[("outcome", "rejected")]);
            m.tasks_rejected_total.inc(&[("reason", e.code().as_str())]);
            crate::tenancy::meter::rejected(orch, &caller.tenant, e.code().as_str());
        }
    }
    m.admission_latency_ms
        .observe(&[], t0.elapsed().as_secs_f64() * 1000.0);
    result
}

async fn admit(
    orch: &Arc<Orchestrator>,
    mut req: TaskRequest,
    correlation_id: &str,
    caller: &Caller,
) -> Result<(TaskAccepted, Arc<Task>), ApiError> {
    if orch.is_shutting_down() {
        return Err(ApiError::new(
            ErrorCode::ShuttingDown,
            "orchestratord is shutting down",
        ));
    }
    let created = Instant::now();
    if let Some(why) = orch.fleet.refusal(&req.model) {
        return Err(ApiError::new(ErrorCode::ModelLoadFailed, why));
    }
    let deployed = orch.fleet.deployment(&req.model).cloned();
    let (ctx, urls) = {
        let core = orch.core();
        let reg = &core.registry;
        if !reg.knows_model(&req.model) && deployed.is_none() {
            let mut names: Vec<String> = reg.models().into_iter().map(|m| m.model).collect();
            names.extend(orch.fleet.deployments.iter().map(|d| d.id.clone()));
            names.sort();
            names.dedup();
            let available = if names.is_empty() {
                "none (no worker registered)".into()
            } else {
                names.join(", ")
            };
            return Err(ApiError::new(
                ErrorCode::ModelNotFound,
                format!(
                    "model {:?} is not served here; available models: {available}",
                    req.model
                ),
            ));
        }
        let deployed_ctx = deployed
            .as_ref()
            .and_then(|d| d.ctx_size)
            .map_or(u32::MAX, |c| u32::try_from(c).unwrap_or(u32::MAX));
        (
            reg.context_length(&req.model).unwrap_or(deployed_ctx),
            reg.ready_urls(&req.model),
        )
    };
    // the policy runs before the tenant's limits, which then hold for the class it chose
    let route = apply_policy(orch, &mut req, caller)?;
    let tenant = orch
        .tenancy
        .admit(&caller.tenant, &req.model, req.priority)?;
    check_context(orch, &req, ctx, urls).await?;

    let client_id = req.task_id.is_some();
    let id = req
        .task_id
        .clone()
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let task = Arc::new(
        Task::new(id.clone(), req, correlation_id.to_string(), created)
            .with_tenant(tenant.tenant.clone())
            .with_route(route.clone()),
    );
    if !orch.insert_task(task.clone(), client_id) {
        return Err(ApiError::invalid(vec![FieldError::new(
            "task_id",
            "unique",
            format!("task_id {id:?} is already used; pick another or leave it out"),
        )]));
    }
    let entry = Entry {
        task_id: id.clone(),
        model: task.request.model.clone(),
        priority: task.request.priority,
        enqueued: created,
        avoid: Vec::new(),
        affinity: Some(crate::registry::affinity_key(&task.request)),
        tenant: tenant.tenant.clone(),
        share: tenant.share,
        route,
    };
    let (admit, predicted, backoff) = {
        let mut core = orch.core();
        let now = Instant::now();
        if let Some(max) = tenant.max_queued {
            let queued = core.queue.tenant_depth(&tenant.tenant);
            if queued >= max as usize {
                let backoff = core.drain.backoff_ms(now);
                drop(core);
                orch.forget_task(&id);
                return Err(ApiError::retry_later(
                    ErrorCode::RateLimited,
                    format!(
                        "tenant {:?} has {queued} tasks queued (limit max_queued = {max}); \
                         retry in {backoff} ms",
                        tenant.tenant
                    ),
                    backoff,
                ));
            }
        }
        let admit = core.queue.push(entry);
        let position = match &admit {
            Admit::Accepted { position } | Admit::Evicted { position, .. } => *position,
            Admit::Full => 0,
        };
        let predicted = if position == 0 && core.registry.can_place(&task.request.model) {
            0
        } else {
            core.drain.eta_ms(now, position + 1)
        };
        (admit, predicted, core.drain.backoff_ms(now))
    };
    let position = match admit {
        Admit::Full => {
            orch.forget_task(&id);
            let class = task.request.priority.as_str();
            return Err(ApiError::queue_full(
                format!(
                    "the {class} queue is full ({} tasks); retry in {backoff} ms",
                    orch.cfg.queue_capacity
                ),
                backoff,
            ));
        }
        Admit::Evicted { position, evicted } => {
            if let Some(old) = orch.task(&evicted) {
                orch.end_task(&old, EndCause::Evicted);
                orch.metrics.tasks_evicted_total.inc(&[]);
            }
            position
        }
        Admit::Accepted { position } => position,
    };
    // sent before anything can end the task, so its deletion is always written after it
    let durable = orch.cfg.persist_requests.then(|| {
        orch.store
            .put_pending(&id, &task.request, correlation_id, &task.tenant)
    });
    task.set_position(position);
    task.push(&TaskEvent::Queued {
        phase: None,
        pool: None,
        bytes_done: None,
        bytes_total: None,
        task_id: id.clone(),
        queue_position: position,
        predicted_start_ms: predicted,
    });
    orch.persist(&task);
    if let Some(deadline) = task.deadline {
        spawn_deadline(Arc::downgrade(orch), Arc::downgrade(&task), deadline);
    }
    orch.wake.notify_one();
    if let Some(committed) = durable {
        // accepted means kept: answer only once the request is in the database (committed to
        // its WAL: it survives a crash of this process, not a power loss)
        if !matches!(
            tokio::time::timeout(COMMIT_TIMEOUT, committed).await,
            Ok(Ok(()))
        ) {
            tracing::warn!(task_id = %id, "could not store the task's request; it will not survive a restart");
        }
    }
    if deployed.is_some() {
        // On-demand start: the reconciler sees the queued task and places a worker.
        orch.fleet.wake.notify_one();
    }
    tracing::info!(task_id = %id, %correlation_id, model = %task.request.model,
        tenant = %task.tenant, priority = task.request.priority.as_str(), position, "task admitted");
    let accepted = TaskAccepted {
        events_url: format!("/v2/tasks/{id}/events"),
        status_url: format!("/v2/tasks/{id}"),
        task_id: id,
        queue_position: position,
        predicted_start_ms: predicted,
    };
    Ok((accepted, task))
}

/// Ask the policy hook (if any): a rejection is 403 `POLICY_REJECTED`; a new priority is
/// applied to `req`; the route (allowed workers or pools) is returned for placement.
fn apply_policy(
    orch: &Orchestrator,
    req: &mut TaskRequest,
    caller: &Caller,
) -> Result<Option<Arc<crate::policy::Route>>, ApiError> {
    let Some(policy) = &orch.policy else {
        return Ok(None);
    };
    let input = crate::policy::AdmitInput {
        model: &req.model,
        priority: req.priority,
        tenant: &caller.tenant,
        key_id: caller.key_id.as_deref(),
        admin: caller.admin,
        session: req.session_id.as_deref(),
        prompt_tokens: prompt_tokens_upper_bound(req),
        max_tokens: req.gen.max_tokens_or_default(),
        deadline_ms: req.deadline_ms,
    };
    let d = policy.admit(&orch.metrics, &input);
    if let Some(message) = d.reject {
        return Err(ApiError::new(
            ErrorCode::PolicyRejected,
            format!("refused by policy: {message}"),
        ));
    }
    if let Some(p) = d.priority {
        req.priority = p;
    }
    Ok(d.route)
}

/// End the task with `DEADLINE_EXCEEDED` when its deadline passes (no-op if it ended before).
pub(crate) fn spawn_deadline(orch: Weak<Orchestrator>, task: Weak<Task>, deadline: Instant) {
    tokio::spawn(async move {
        tokio::time::sleep_until(deadline.into()).await;
        if let (Some(orch), Some(task)) = (orch.upgrade(), task.upgrade()) {
            orch.end_task(&task, EndCause::Deadline);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_lists_unknown_and_invalid_fields() {
        let e = parse(br#"{"model":"m","prompt":"x","temprature":1}"#).unwrap_err();
        assert_eq!(e.envelope.error.fields[0].field, "temprature");
        let e = parse(br#"{"model":"m","prompt":"x","temperature":9,"top_p":0}"#).unwrap_err();
        let fields: Vec<_> = e
            .envelope
            .error
            .fields
            .iter()
            .map(|f| f.field.as_str())
            .collect();
        assert_eq!(fields, ["temperature", "top_p"]);
        assert_eq!(e.status, 400);
        assert!(parse(b"[1]").is_err());
        assert!(parse(br#"{"model":"m","prompt":"x","priority":"urgent"}"#).is_err());
    }

    #[test]
    fn token_upper_bounds() {
        let req = TaskRequest {
            gen: llorch_wire::Generation {
                prompt: Some("abcd".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        assert_eq!(prompt_tokens_upper_bound(&req), 6);
        let req = TaskRequest {
            gen: llorch_wire::Generation {
                prompt_ids: Some(vec![1, 2, 3]),
                ..Default::default()
            },
            ..Default::default()
        };
        assert_eq!(prompt_tokens_upper_bound(&req), 3);
    }

    /// Fuzz-style (bounded, seeded): random values in every field of `/v2/tasks`, the OpenAI
    /// requests and the worker's `ExecuteRequest` are rejected or accepted, never a panic, and
    /// a rejection names a field.
    #[test]
    fn random_request_bodies_never_panic() {
        let mut rng = llorch_testkit::FuzzRng::new(7);
        let fields = [
            "model",
            "prompt",
            "messages",
            "prompt_ids",
            "max_tokens",
            "max_completion_tokens",
            "temperature",
            "top_p",
            "top_k",
            "min_p",
            "repetition_penalty",
            "seed",
            "stop",
            "logprobs",
            "prompt_logprobs",
            "priority",
            "task_id",
            "session_id",
            "deadline_ms",
            "stream",
            "n",
            "user",
            "stream_options",
            "job_id",
        ];
        let (mut accepted, mut rejected) = (0, 0);
        for _ in 0..3000 {
            let mut body = serde_json::json!({"model": "m", "prompt": "hi"});
            for _ in 0..rng.below(5) {
                let key = *rng.pick(&fields);
                body[key] = rng.json(2);
            }
            if rng.below(10) == 0 {
                body = rng.json(3);
            }
            let bytes = serde_json::to_vec(&body).unwrap();
            match parse(&bytes) {
                Ok(_) => accepted += 1,
                Err(e) => {
                    assert_eq!(e.status, 400, "{body}");
                    rejected += 1;
                }
            }
            let _ = crate::openai::request::chat(&bytes);
            let _ = crate::openai::request::completion(&bytes);
            if let Ok(r) = serde_json::from_slice::<llorch_wire::ExecuteRequest>(&bytes) {
                let _ = r.validate();
            }
            let _ = parse(&bytes[..rng.below(bytes.len() + 1)]);
        }
        assert!(
            accepted > 0 && rejected > 0,
            "{accepted} accepted, {rejected} rejected"
        );
    }
}
