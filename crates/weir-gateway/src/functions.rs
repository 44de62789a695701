//! `/v1/functions` and `/v1/deploy`: function versions, hot deploys and rollbacks.

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use base64::Engine as _;

use crate::api::functions::{AppDeployed, DeployApp, Deployed, Function, Rollback};
use crate::auth::{AuthSource, Caller};
use crate::{AppState, PROBLEM_CONTENT_TYPE, Problem};

/// `GET /v1/functions`: each function's active version, kept versions and history.
#[utoipa::path(
    get,
    path = "/v1/functions",
    operation_id = "list_functions",
    tag = "functions",
    summary = "List functions",
    description = "Each function's active version, the versions kept for rollback (newest first) and its deployment history.",
    responses((status = 200, description = "the functions", body = Vec<Function>))
)]
pub(crate) async fn list(State(state): State<AppState>) -> Json<Vec<Function>> {
    Json(state.node.functions().into_iter().map(Into::into).collect())
}

/// `PUT /v1/functions/{name}`: the body is the new component (`application/wasm`).
#[utoipa::path(
    put,
    path = "/v1/functions/{name}",
    operation_id = "deploy_function",
    tag = "functions",
    summary = "Deploy a function version",
    description = "A new component for a declared function, run with its current settings. It is compiled first; pipelines switch to it at their next batch.",
    params(("name" = String, Path, description = "a function the app declares")),
    request_body(content = [u8], content_type = "application/wasm", description = "the component (`.wasm`)"),
    responses(
        (status = 200, description = "live", body = Deployed),
        (status = 400, description = "an empty body", body = Problem, content_type = PROBLEM_CONTENT_TYPE),
        (status = 404, description = "a function the app does not declare", body = Problem, content_type = PROBLEM_CONTENT_TYPE),
        (status = 413, description = "a body over the upload limit", body = Problem, content_type = PROBLEM_CONTENT_TYPE),
        (status = 422, description = "a module that does not compile or fit the world; the active version keeps serving", body = Problem, content_type = PROBLEM_CONTENT_TYPE),
    )
)]
pub(crate) async fn deploy(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Deployed>, Problem> {
    let body = body?;
    if body.is_empty() {
        return Err(Problem::bad_request(
            "invalid-function",
            "the body is empty; send the function's .wasm component as the body",
        ));
    }
    Ok(Json(
        state
            .node
            .deploy_function(&name, body.to_vec())
            .await?
            .into(),
    ))
}

/// `POST /v1/functions/{name}/rollback`: optional body `{"version": "..."}`; by default
/// the version active before the current one.
#[utoipa::path(
    post,
    path = "/v1/functions/{name}/rollback",
    operation_id = "rollback_function",
    tag = "functions",
    summary = "Roll a function back",
    params(("name" = String, Path, description = "a function the app declares")),
    request_body(content = Rollback, description = "optional: by default the version active before the current one"),
    responses(
        (status = 200, description = "live", body = Deployed),
        (status = 400, description = "a bad body", body = Problem, content_type = PROBLEM_CONTENT_TYPE),
        (status = 404, description = "a function the app does not declare, or a version not kept", body = Problem, content_type = PROBLEM_CONTENT_TYPE),
        (status = 409, description = "no earlier version", body = Problem, content_type = PROBLEM_CONTENT_TYPE),
    )
)]
pub(crate) async fn rollback(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Deployed>, Problem> {
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
            .await?
            .into(),
    ))
}

/// `POST /v1/deploy`: a new version of the app, applied without a restart.
#[utoipa::path(
    post,
    path = "/v1/deploy",
    operation_id = "deploy_app",
    tag = "functions",
    summary = "Deploy the app",
    description = "What `weir deploy` sends: a new manifest and components, applied without a restart. New topics, topic settings, new and changed functions (all compiled before any is swapped in), function settings, new pipelines and key-value namespaces; other changes need a restart.",
    request_body = DeployApp,
    responses(
        (status = 200, description = "applied", body = AppDeployed),
        (status = 400, description = "a bad body or an invalid manifest", body = Problem, content_type = PROBLEM_CONTENT_TYPE),
        (status = 403, description = "a change of [auth] by a principal without the admin role", body = Problem, content_type = PROBLEM_CONTENT_TYPE),
        (status = 409, description = "a change that needs a restart", body = Problem, content_type = PROBLEM_CONTENT_TYPE),
        (status = 413, description = "a body over the upload limit", body = Problem, content_type = PROBLEM_CONTENT_TYPE),
        (status = 422, description = "a function that does not compile; nothing changed", body = Problem, content_type = PROBLEM_CONTENT_TYPE),
    )
)]
pub(crate) async fn deploy_app(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<AppDeployed>, Problem> {
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
    let _one = state.deploying.lock().await;
    let next_auth = next_authenticator(&state, &caller, &request.manifest).await?;
    let deployed = match request.schemas {
        Some(schemas) => {
            state
                .node
                .deploy_app_with_schemas(&request.manifest, components, schemas)
                .await?
        }
        None => state.node.deploy_app(&request.manifest, components).await?,
    };
    if let Some(authenticator) = next_auth {
        state.auth.set(authenticator);
        tracing::warn!(principal = ?caller.principal.as_ref().map(|p| &p.name), "[auth] changed by a deploy");
    }
    Ok(Json(deployed.into()))
}

/// The authenticator a deploy of `manifest` puts in place, if it changes `[auth]`; checked
/// and built before anything is deployed, so a deploy either changes both or neither.
async fn next_authenticator(
    state: &AppState,
    caller: &Caller,
    manifest: &str,
) -> Result<Option<weir_auth::Authenticator>, Problem> {
    let next = state.node.parse_app(manifest)?.auth;
    let current = state.auth.get();
    let next = match (next, &current) {
        // Auth from `weir serve` flags stays unless the manifest brings its own.
        (None, Some(_)) if state.auth.source() == AuthSource::Flags => return Ok(None),
        (None, Some(_)) => {
            return Err(Problem::new(
                StatusCode::CONFLICT,
                "restart-required",
                "Restart required",
                "the manifest has no [auth]: a deploy cannot open the API; restart the node with the new weir.toml to do that",
            ));
        }
        (None, None) => return Ok(None),
        (Some(next), Some(current)) if &next == current.spec() => return Ok(None),
        (Some(next), _) => next,
    };
    if !caller.may_change_auth() {
        return Err(Problem::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "Forbidden",
            format!(
                "principal {:?} may not change the node's auth settings; it needs the built-in \"admin\" role (deploy the app without changing [auth], or ask an admin)",
                caller
                    .principal
                    .as_ref()
                    .map(|p| p.name.as_str())
                    .unwrap_or_default()
            ),
        ));
    }
    let keys = state.keys.clone().ok_or_else(|| {
        Problem::new(
            StatusCode::CONFLICT,
            "restart-required",
            "Restart required",
            "this node has no API key store; restart it with [auth] in weir.toml",
        )
    })?;
    weir_auth::Authenticator::new(next, keys)
        .await
        .map(Some)
        .map_err(|e| Problem::bad_request("invalid-auth", format!("[auth] cannot be used: {e}")))
}
