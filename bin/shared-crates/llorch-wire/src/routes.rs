//! Every HTTP route of llama-orch, written once: the daemons' routers and `llorch-client`
//! use these constants, and tests check that each router serves exactly these and that the
//! OpenAPI document describes them. Paths use axum's `{param}` syntax.

/// The worker's routes (llorch-candled, fault-worker).
pub mod worker {
    pub const EXECUTE: &str = "/execute";
    pub const CANCEL: &str = "/cancel";
    pub const HEALTH: &str = "/health";
    pub const METRICS: &str = "/metrics";
    pub const TOKENIZE: &str = "/tokenize";
    pub const DETOKENIZE: &str = "/detokenize";

    /// Every worker route with its methods.
    pub const ALL: &[(&str, &[&str])] = &[
        (EXECUTE, &["POST"]),
        (CANCEL, &["POST"]),
        (HEALTH, &["GET"]),
        (METRICS, &["GET"]),
        (TOKENIZE, &["POST"]),
        (DETOKENIZE, &["POST"]),
    ];
}

/// The orchestrator's routes (orchestratord).
pub mod orchestrator {
    pub const TASKS: &str = "/v2/tasks";
    pub const TASK: &str = "/v2/tasks/{id}";
    pub const TASK_EVENTS: &str = "/v2/tasks/{id}/events";
    pub const TASK_CANCEL: &str = "/v2/tasks/{id}/cancel";
    pub const WORKERS: &str = "/v2/workers";
    pub const WORKER_REGISTER: &str = "/v2/workers/register";
    pub const WORKER: &str = "/v2/workers/{id}";
    pub const WORKER_HEARTBEAT: &str = "/v2/workers/{id}/heartbeat";
    pub const WORKER_DRAIN: &str = "/v2/workers/{id}/drain";
    pub const WORKER_UNDRAIN: &str = "/v2/workers/{id}/undrain";
    pub const POOLS: &str = "/v2/pools";
    pub const POOL: &str = "/v2/pools/{name}";
    pub const POOL_DRAIN: &str = "/v2/pools/{name}/drain";
    pub const POOL_UNDRAIN: &str = "/v2/pools/{name}/undrain";
    pub const CAPABILITIES: &str = "/v2/meta/capabilities";
    pub const OPENAPI: &str = "/v2/openapi.json";
    pub const HEALTH: &str = "/health";
    pub const READY: &str = "/ready";
    pub const METRICS: &str = "/metrics";
    pub const ADMIN_TENANTS: &str = "/v2/admin/tenants";
    pub const ADMIN_TENANT: &str = "/v2/admin/tenants/{name}";
    pub const ADMIN_KEYS: &str = "/v2/admin/keys";
    pub const ADMIN_KEY: &str = "/v2/admin/keys/{id}";
    pub const ADMIN_KEY_REVOKE: &str = "/v2/admin/keys/{id}/revoke";
    pub const ADMIN_AUDIT: &str = "/v2/admin/audit";
    pub const USAGE: &str = "/v2/usage";
    pub const DASHBOARD_STREAM: &str = "/v2/dashboard/stream";
    pub const OPENAI_CHAT: &str = "/v1/chat/completions";
    pub const OPENAI_COMPLETIONS: &str = "/v1/completions";
    pub const OPENAI_MODELS: &str = "/v1/models";
    pub const OPENAI_MODEL: &str = "/v1/models/{*id}";

    /// Every API route with its methods (the dashboard's page files under `/ui` are not API
    /// routes and not listed).
    pub const ALL: &[(&str, &[&str])] = &[
        (TASKS, &["GET", "POST"]),
        (TASK, &["GET"]),
        (TASK_EVENTS, &["GET"]),
        (TASK_CANCEL, &["POST"]),
        (WORKERS, &["GET"]),
        (WORKER_REGISTER, &["POST"]),
        (WORKER, &["GET", "DELETE"]),
        (WORKER_HEARTBEAT, &["POST"]),
        (WORKER_DRAIN, &["POST"]),
        (WORKER_UNDRAIN, &["POST"]),
        (POOLS, &["GET"]),
        (POOL, &["GET"]),
        (POOL_DRAIN, &["POST"]),
        (POOL_UNDRAIN, &["POST"]),
        (CAPABILITIES, &["GET"]),
        (OPENAPI, &["GET"]),
        (HEALTH, &["GET"]),
        (READY, &["GET"]),
        (METRICS, &["GET"]),
        (ADMIN_TENANTS, &["GET", "POST"]),
        (ADMIN_TENANT, &["GET", "PUT"]),
        (ADMIN_KEYS, &["GET", "POST"]),
        (ADMIN_KEY, &["DELETE"]),
        (ADMIN_KEY_REVOKE, &["POST"]),
        (ADMIN_AUDIT, &["GET"]),
        (USAGE, &["GET"]),
        (DASHBOARD_STREAM, &["GET"]),
        (OPENAI_CHAT, &["POST"]),
        (OPENAI_COMPLETIONS, &["POST"]),
        (OPENAI_MODELS, &["GET"]),
        (OPENAI_MODEL, &["GET"]),
    ];
}

/// `template` with each `{param}` (or `{*param}`) replaced by the next of `args`.
pub fn fill(template: &str, args: &[&str]) -> String {
    let mut out = String::with_capacity(template.len());
    let mut args = args.iter();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = rest[open..].find('}').map_or(rest.len(), |c| open + c + 1);
        out.push_str(args.next().copied().unwrap_or(""));
        rest = &rest[close..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_replaces_params_in_order() {
        assert_eq!(
            fill(orchestrator::TASK_CANCEL, &["t-1"]),
            "/v2/tasks/t-1/cancel"
        );
        assert_eq!(fill(orchestrator::OPENAI_MODEL, &["a/b"]), "/v1/models/a/b");
        assert_eq!(fill(worker::EXECUTE, &[]), "/execute");
    }
}
