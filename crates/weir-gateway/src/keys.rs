//! `/v1/auth/keys`: API keys made, listed and revoked over HTTP (the `keys` admin
//! operation), as `weir auth key` does against a data directory.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;

use crate::api::auth::{ApiKey, CreateKey, CreatedKey};
use crate::{AppState, PROBLEM_CONTENT_TYPE, Problem};

/// The node's key store, or a problem saying there is none.
fn store(state: &AppState) -> Result<std::sync::Arc<weir_auth::ApiKeyStore>, Problem> {
    state.keys.clone().ok_or_else(|| {
        Problem::not_found(
            "this node keeps no API keys (it was started without a data directory for them)",
        )
    })
}

fn store_error(e: weir_auth::Error) -> Problem {
    match e {
        weir_auth::Error::NoSuchKey(_) => Problem::not_found(e.to_string()),
        weir_auth::Error::Invalid(_) => Problem::bad_request("invalid-key-request", e.to_string()),
        other => {
            tracing::error!(error = %other, "the API key store failed");
            Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal error",
                other.to_string(),
            )
        }
    }
}

/// `POST /v1/auth/keys`.
#[utoipa::path(
    post,
    path = "/v1/auth/keys",
    operation_id = "create_api_key",
    tag = "auth",
    summary = "Create an API key",
    description = "A new key for a principal, with roles declared under `[auth.roles]` (or `admin`). The key is in this answer only; the node keeps its hash.",
    request_body = CreateKey,
    responses(
        (status = 201, description = "created", body = CreatedKey),
        (status = 400, description = "a bad body, or a role that is not declared", body = Problem, content_type = PROBLEM_CONTENT_TYPE),
    )
)]
pub(crate) async fn create(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<CreatedKey>), Problem> {
    let body = body?;
    let request: CreateKey = serde_json::from_slice(&body).map_err(|e| {
        Problem::bad_request(
            "bad-body",
            format!("the body must be {{\"principal\": \"…\", \"roles\": [\"…\"], \"expires_in_secs\": 86400}}: {e}"),
        )
    })?;
    if let Some(auth) = state.auth.get() {
        for role in &request.roles {
            if role != weir_manifest::ADMIN_ROLE && !auth.spec().roles.contains_key(role) {
                return Err(Problem::bad_request(
                    "unknown-role",
                    format!(
                        "role {role:?} is not declared under [auth.roles] (nor is it \"admin\")"
                    ),
                ));
            }
        }
    }
    let expires_at = request.expires_in_secs.map(|secs| {
        time::OffsetDateTime::now_utc() + time::Duration::seconds(secs.min(i64::MAX as u64) as i64)
    });
    let keys = store(&state)?;
    let (info, key) = tokio::task::spawn_blocking(move || {
        keys.create(&request.principal, request.roles, expires_at)
    })
    .await
    .map_err(|e| store_error(weir_auth::Error::Invalid(e.to_string())))?
    .map_err(store_error)?;
    tracing::info!(id = %info.id, principal = %info.principal, "API key created");
    Ok((
        StatusCode::CREATED,
        Json(CreatedKey {
            key,
            info: info.into(),
        }),
    ))
}

/// `GET /v1/auth/keys`.
#[utoipa::path(
    get,
    path = "/v1/auth/keys",
    operation_id = "list_api_keys",
    tag = "auth",
    summary = "List API keys",
    description = "Every key, oldest first, revoked ones included; never a key's secret.",
    responses((status = 200, description = "the keys", body = Vec<ApiKey>))
)]
pub(crate) async fn list(State(state): State<AppState>) -> Result<Json<Vec<ApiKey>>, Problem> {
    let keys = store(&state)?;
    let list = tokio::task::spawn_blocking(move || keys.list())
        .await
        .map_err(|e| store_error(weir_auth::Error::Invalid(e.to_string())))?
        .map_err(store_error)?;
    Ok(Json(list.into_iter().map(ApiKey::from).collect()))
}

/// `DELETE /v1/auth/keys/{id}`.
#[utoipa::path(
    delete,
    path = "/v1/auth/keys/{id}",
    operation_id = "revoke_api_key",
    tag = "auth",
    summary = "Revoke an API key",
    description = "The key stops working at once. Revoking a revoked key changes nothing.",
    params(("id" = String, Path, description = "the key's id")),
    responses(
        (status = 200, description = "revoked", body = ApiKey),
        (status = 404, description = "no key has this id", body = Problem, content_type = PROBLEM_CONTENT_TYPE),
    )
)]
pub(crate) async fn revoke(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ApiKey>, Problem> {
    let keys = store(&state)?;
    let info = tokio::task::spawn_blocking(move || keys.revoke(&id))
        .await
        .map_err(|e| store_error(weir_auth::Error::Invalid(e.to_string())))?
        .map_err(store_error)?;
    tracing::info!(id = %info.id, principal = %info.principal, "API key revoked");
    Ok(Json(info.into()))
}
