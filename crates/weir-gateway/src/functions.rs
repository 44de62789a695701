//! `/v1/functions` and `/v1/deploy`: function versions, hot deploys and rollbacks.

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use base64::Engine as _;
use serde::Deserialize;

use crate::{AppState, Problem};

/// `GET /v1/functions`: each function's active version, kept versions and history.
pub(crate) async fn list(State(state): State<AppState>) -> Json<Vec<weir_engine::FunctionInfo>> {
    Json(state.node.functions())
}

/// `PUT /v1/functions/{name}`: the body is the new component (`application/wasm`).
pub(crate) async fn deploy(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<weir_engine::Deployed>, Problem> {
    let body = body?;
    if body.is_empty() {
        return Err(Problem::bad_request(
            "invalid-function",
            "the body is empty; send the function's .wasm component as the body",
        ));
    }
    Ok(Json(
        state.node.deploy_function(&name, body.to_vec()).await?,
    ))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Rollback {
    version: Option<String>,
}

/// `POST /v1/functions/{name}/rollback`: optional body `{"version": "..."}`; by default
/// the version active before the current one.
pub(crate) async fn rollback(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<weir_engine::Deployed>, Problem> {
    let body = body?;
    let rollback: Rollback = if body.iter().all(u8::is_ascii_whitespace) {
        Rollback::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            Problem::bad_request(
                "bad-body",
                format!("the body must be empty or {{\"version\": \"<version>\"}}: {e}"),
            )
        })?
    };
    Ok(Json(
        state
            .node
            .rollback_function(&name, rollback.version)
            .await?,
    ))
}

/// The body of `POST /v1/deploy`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeployApp {
    /// The text of `weir.toml`.
    manifest: String,
    /// Each declared function's component, base64.
    #[serde(default)]
    functions: BTreeMap<String, String>,
}

/// `POST /v1/deploy`: a new version of the app, applied without a restart.
pub(crate) async fn deploy_app(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<weir_engine::AppDeployed>, Problem> {
    let body = body?;
    let request: DeployApp = serde_json::from_slice(&body).map_err(|e| {
        Problem::bad_request(
            "bad-body",
            format!(
                "the body must be {{\"manifest\": \"<weir.toml>\", \"functions\": {{\"<name>\": \"<base64 wasm>\"}}}}: {e}"
            ),
        )
    })?;
    let mut components = BTreeMap::new();
    for (name, encoded) in request.functions {
        let wasm = base64::engine::general_purpose::STANDARD
            .decode(encoded.as_bytes())
            .map_err(|e| {
                Problem::bad_request(
                    "bad-body",
                    format!(
                        "functions.{name} is not base64: {e}; send the .wasm file base64-encoded"
                    ),
                )
            })?;
        components.insert(name, wasm);
    }
    Ok(Json(
        state.node.deploy_app(&request.manifest, components).await?,
    ))
}
