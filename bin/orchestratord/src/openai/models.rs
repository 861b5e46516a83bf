//! `GET /v1/models` and `GET /v1/models/{id}`: the models ready workers serve, with their
//! context length and the `/v1` features requests may use (`capabilities`).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::Json;
use llorch_wire::openai::{Model, ModelCapabilities, ModelList, OWNED_BY};
use llorch_wire::ErrorCode;

use super::OaiError;
use crate::error::ApiError;
use crate::state::Orchestrator;
use crate::task::unix_ms;

fn served(orch: &Orchestrator) -> Vec<Model> {
    let created = (unix_ms() / 1000).saturating_sub(orch.started.elapsed().as_secs());
    orch.core()
        .registry
        .models()
        .into_iter()
        .filter(|m| m.workers_ready > 0)
        .map(|m| Model {
            id: m.model,
            object: "model".into(),
            created,
            owned_by: OWNED_BY.into(),
            context_length: m.context_length,
            aliases: m.aliases,
            capabilities: Some(ModelCapabilities::default()),
        })
        .collect()
}

/// Every model with at least one ready worker.
pub async fn list(State(orch): State<Arc<Orchestrator>>) -> Json<ModelList> {
    Json(ModelList {
        object: "list".into(),
        data: served(&orch),
    })
}

/// One model, by id or alias; 404 `model_not_found` when no ready worker serves it.
pub async fn show(
    State(orch): State<Arc<Orchestrator>>,
    Path(id): Path<String>,
) -> Result<Json<Model>, OaiError> {
    served(&orch)
        .into_iter()
        .find(|m| m.id == id || m.aliases.contains(&id))
        .map(Json)
        .ok_or_else(|| {
            OaiError(ApiError::new(
                ErrorCode::ModelNotFound,
                format!("model {id:?} is not served by any ready worker"),
            ))
        })
}
