//! `/v1/pipelines`: each pipeline's state and per-partition lag, and re-driving its
//! dead letters.

use axum::Json;
use axum::extract::{Path, Query, State};
use serde::Deserialize;

use crate::{AppState, Problem};

/// `GET /v1/pipelines`: every pipeline's state, counters and lag per source partition.
pub(crate) async fn list(
    State(state): State<AppState>,
) -> Result<Json<Vec<weir_engine::PipelineStatus>>, Problem> {
    Ok(Json(state.node.status().await?.pipelines))
}

/// `GET /v1/pipelines/{name}`.
pub(crate) async fn get(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<weir_engine::PipelineStatus>, Problem> {
    let status = state.node.status().await?;
    let running: Vec<String> = status.pipelines.iter().map(|p| p.name.clone()).collect();
    status
        .pipelines
        .into_iter()
        .find(|p| p.name == name)
        .map(Json)
        .ok_or_else(|| {
            weir_engine::Error::UnknownPipeline {
                pipeline: name,
                declared: running,
            }
            .into()
        })
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RedriveQuery {
    limit: Option<u64>,
}

/// `POST /v1/pipelines/{name}/redrive[?limit=N]`: send the pipeline's dead letters back
/// to their source topics.
#[tracing::instrument(skip_all, fields(pipeline = %name))]
pub(crate) async fn redrive(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<RedriveQuery>,
) -> Result<Json<weir_engine::RedriveReport>, Problem> {
    Ok(Json(state.node.redrive(&name, query.limit).await?))
}
