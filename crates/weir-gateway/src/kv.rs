//! `/v1/kv`: the app's key-value namespaces over HTTP. Only namespaces the app declares
//! are reachable; others get `404` naming the declared ones.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::{AppState, Problem};

/// Most keys one page lists.
const MAX_PAGE: usize = 1000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    cursor: Option<u64>,
    limit: Option<usize>,
}

/// `GET /v1/kv/{ns}?cursor=&limit=`: a page of keys, `{"keys": [...], "cursor": N|null}`.
pub(crate) async fn list(
    State(state): State<AppState>,
    Path(namespace): Path<String>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<weir_kv::KeyPage>, Problem> {
    let Query(query) = query.map_err(|e| {
        Problem::bad_request(
            "bad-query",
            format!("{}; use ?cursor=N&limit=N", e.body_text()),
        )
    })?;
    let limit = query.limit.unwrap_or(100).clamp(1, MAX_PAGE);
    Ok(Json(
        state.node.kv_list(&namespace, query.cursor, limit).await?,
    ))
}

/// `POST /v1/kv/{ns}`: write every key of a JSON object body, overwriting, all or
/// nothing.
pub(crate) async fn load(
    State(state): State<AppState>,
    Path(namespace): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<serde_json::Value>, Problem> {
    let body = body?;
    let written = state.node.kv_load(&namespace, body.to_vec()).await?;
    Ok(Json(
        serde_json::json!({ "namespace": namespace, "written": written }),
    ))
}

/// `GET /v1/kv/{ns}/{key}`: the value's bytes; `application/json` when they parse as
/// JSON, else `application/octet-stream`.
pub(crate) async fn get(
    State(state): State<AppState>,
    Path((namespace, key)): Path<(String, String)>,
) -> Result<Response, Problem> {
    let Some(value) = state.node.kv_get(&namespace, &key).await? else {
        return Err(Problem::new(
            StatusCode::NOT_FOUND,
            "unknown-key",
            "Unknown key",
            format!(
                "namespace {namespace:?} has no key {key:?}; list its keys with GET /v1/kv/{namespace}"
            ),
        ));
    };
    let content_type = if serde_json::from_slice::<serde::de::IgnoredAny>(&value).is_ok() {
        "application/json"
    } else {
        "application/octet-stream"
    };
    let mut response = value.into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    Ok(response)
}

/// `PUT /v1/kv/{ns}/{key}`: the body is the value; `204` once durable.
pub(crate) async fn put(
    State(state): State<AppState>,
    Path((namespace, key)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, Problem> {
    let body = body?;
    state.node.kv_set(&namespace, &key, body.to_vec()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /v1/kv/{ns}/{key}`: `204` once durable, whether or not the key was there.
pub(crate) async fn delete(
    State(state): State<AppState>,
    Path((namespace, key)): Path<(String, String)>,
) -> Result<StatusCode, Problem> {
    state.node.kv_delete(&namespace, &key).await?;
    Ok(StatusCode::NO_CONTENT)
}
