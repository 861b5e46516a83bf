//! Usage metering: every task that ends adds its tokens (in, out, cached) and one task to the
//! row of its tenant, model, UTC day and OpenAI `user` (the task's session id), persisted through
//! the store's writer; Prometheus counters per tenant (bounded label set).

use llorch_wire::tasks::TaskEvent;
use llorch_wire::tenancy::UsageRow;
use llorch_wire::StopReason;

use super::{db, limits};
use crate::state::Orchestrator;
use crate::task::Task;

/// Record a task's usage as it ends with `ev` (its terminal event).
pub fn record(orch: &Orchestrator, task: &Task, ev: &TaskEvent) {
    let (tokens_in, tokens_out, tokens_cached, outcome) = match ev {
        TaskEvent::End {
            tokens_in,
            tokens_out,
            tokens_cached,
            stop_reason,
            ..
        } => (
            *tokens_in,
            *tokens_out,
            *tokens_cached,
            if *stop_reason == StopReason::Cancelled {
                "cancelled"
            } else {
                "completed"
            },
        ),
        TaskEvent::Error {
            tokens_out, code, ..
        } => (
            task.status(None).usage.tokens_in,
            *tokens_out,
            0,
            code.as_str(),
        ),
        _ => return,
    };
    let row = UsageRow {
        tenant: task.tenant.to_string(),
        model: task.request.model.clone(),
        day: limits::day_string(orch.tenancy.now()),
        user: task.request.session_id.clone().unwrap_or_default(),
        tasks: 1,
        tokens_in: tokens_in.into(),
        tokens_out: tokens_out.into(),
        tokens_cached: tokens_cached.into(),
    };
    orch.store.exec(Box::new(move |c| db::add_usage(c, &row)));
    let label = orch.tenancy.label(&task.tenant);
    let label = label.as_str();
    let m = &orch.metrics;
    m.tenant_tasks_total
        .inc(&[("tenant", label), ("outcome", outcome)]);
    for (kind, n) in [
        ("in", tokens_in),
        ("out", tokens_out),
        ("cached", tokens_cached),
    ] {
        m.tenant_tokens_total
            .add(&[("tenant", label), ("kind", kind)], f64::from(n));
    }
}

/// Count a refused submission of `tenant`.
pub fn rejected(orch: &Orchestrator, tenant: &str, reason: &str) {
    let label = orch.tenancy.label(tenant);
    orch.metrics
        .tenant_rejected_total
        .inc(&[("tenant", label.as_str()), ("reason", reason)]);
}
