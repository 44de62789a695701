//! `/v1/pipelines`: each pipeline's state and per-partition lag, and re-driving its
//! dead letters.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};

use crate::api::pipelines::{Pipeline, RedriveQuery, RedriveReport, SinkRedriveReport};
use crate::{AppState, PROBLEM_CONTENT_TYPE, Problem};

/// `GET /v1/pipelines`: every pipeline's state, counters and lag per source partition.
#[utoipa::path(
    get,
    path = "/v1/pipelines",
    operation_id = "list_pipelines",
    tag = "pipelines",
    summary = "List pipelines",
    description = "Every pipeline's state, counters since the node started, and lag per source partition.",
    responses(
        (status = 200, description = "the pipelines", body = Vec<Pipeline>),
        (status = 503, description = "the log is unavailable", body = Problem, content_type = PROBLEM_CONTENT_TYPE),
    )
)]
pub(crate) async fn list(State(state): State<AppState>) -> Result<Json<Vec<Pipeline>>, Problem> {
    let pipelines = state.node.status().await?.pipelines;
    Ok(Json(pipelines.into_iter().map(Pipeline::from).collect()))
}

/// `GET /v1/pipelines/{name}`.
#[utoipa::path(
    get,
    path = "/v1/pipelines/{name}",
    operation_id = "get_pipeline",
    tag = "pipelines",
    summary = "A pipeline",
    params(("name" = String, Path, description = "the pipeline's name")),
    responses(
        (status = 200, description = "the pipeline", body = Pipeline),
        (status = 404, description = "unknown pipeline", body = Problem, content_type = PROBLEM_CONTENT_TYPE),
        (status = 503, description = "the log is unavailable", body = Problem, content_type = PROBLEM_CONTENT_TYPE),
    )
)]
pub(crate) async fn get(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Pipeline>, Problem> {
    let status = state.node.status().await?;
    let running: Vec<String> = status.pipelines.iter().map(|p| p.name.clone()).collect();
    status
        .pipelines
        .into_iter()
        .find(|p| p.name == name)
        .map(|p| Json(p.into()))
        .ok_or_else(|| {
            weir_engine::Error::UnknownPipeline {
                pipeline: name,
                declared: running,
            }
            .into()
        })
}

/// `POST /v1/pipelines/{name}/redrive[?limit=N]`: send the pipeline's dead letters back
/// to their source topics.
#[utoipa::path(
    post,
    path = "/v1/pipelines/{name}/redrive",
    operation_id = "redrive_pipeline",
    tag = "pipelines",
    summary = "Re-drive dead letters",
    description = "Sends the pipeline's dead letters back to the topics they were read from, with their `dlq*` attributes removed and their ids unchanged, exactly once.",
    params(("name" = String, Path, description = "the pipeline's name"), RedriveQuery),
    responses(
        (status = 200, description = "what was re-driven", body = RedriveReport),
        (status = 400, description = "a bad query", body = Problem, content_type = PROBLEM_CONTENT_TYPE),
        (status = 404, description = "unknown pipeline", body = Problem, content_type = PROBLEM_CONTENT_TYPE),
        (status = 503, description = "the log is unavailable, or the node is shutting down", body = Problem, content_type = PROBLEM_CONTENT_TYPE),
    )
)]
#[tracing::instrument(skip_all, fields(pipeline = %name))]
pub(crate) async fn redrive(
    State(state): State<AppState>,
    Path(name): Path<String>,
    query: Result<Query<RedriveQuery>, QueryRejection>,
) -> Result<Json<RedriveReport>, Problem> {
    let Query(query) = query.map_err(|e| Problem::bad_request("bad-query", e.body_text()))?;
    Ok(Json(state.node.redrive(&name, query.limit).await?.into()))
}

/// `POST /v1/sinks/{name}/redrive[?limit=N]`: deliver the sink's dead letters again.
#[utoipa::path(
    post,
    path = "/v1/sinks/{name}/redrive",
    operation_id = "redrive_sink",
    tag = "pipelines",
    summary = "Re-drive a sink's dead letters",
    description = "Delivers the sink's dead letters to its destination once more, with their `dlq*` attributes removed and their ids unchanged (the receiver's idempotency key). Stops at the first event the destination cannot take now (`stopped`); events it refuses again are counted and passed.",
    params(("name" = String, Path, description = "the sink's name"), RedriveQuery),
    responses(
        (status = 200, description = "what was re-driven", body = SinkRedriveReport),
        (status = 400, description = "a bad query", body = Problem, content_type = PROBLEM_CONTENT_TYPE),
        (status = 404, description = "unknown sink", body = Problem, content_type = PROBLEM_CONTENT_TYPE),
        (status = 503, description = "the log is unavailable, or the node is shutting down", body = Problem, content_type = PROBLEM_CONTENT_TYPE),
    )
)]
#[tracing::instrument(skip_all, fields(sink = %name))]
pub(crate) async fn redrive_sink(
    State(state): State<AppState>,
    Path(name): Path<String>,
    query: Result<Query<RedriveQuery>, QueryRejection>,
) -> Result<Json<SinkRedriveReport>, Problem> {
    let Query(query) = query.map_err(|e| Problem::bad_request("bad-query", e.body_text()))?;
    Ok(Json(
        state.node.redrive_sink(&name, query.limit).await?.into(),
    ))
}
