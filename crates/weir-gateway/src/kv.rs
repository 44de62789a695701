//! `/v1/kv`: the app's key-value namespaces over HTTP. Only namespaces the app declares
//! are reachable; others get `404` naming the declared ones.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::api::kv::{KeyPage, ListQuery, Loaded};
use crate::{AppState, PROBLEM_CONTENT_TYPE, Problem};

/// Most keys one page lists.
const MAX_PAGE: usize = 1000;

/// `GET /v1/kv/{ns}?cursor=&limit=`: a page of keys, `{"keys": [...], "cursor": N|null}`.
#[utoipa::path(
    get,
    path = "/v1/kv/{ns}",
    operation_id = "list_keys",
    tag = "kv",
    summary = "List a namespace's keys",
    description = "A page of a declared namespace's keys, in key order.",
    params(("ns" = String, Path, description = "a namespace the app declares"), ListQuery),
    responses(
        (status = 200, description = "a page of keys", body = KeyPage),
        (status = 400, description = "a bad query", body = Problem, content_type = PROBLEM_CONTENT_TYPE),
        (status = 404, description = "a namespace the app does not declare", body = Problem, content_type = PROBLEM_CONTENT_TYPE),
    )
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    Path(namespace): Path<String>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<KeyPage>, Problem> {
    let Query(query) = query.map_err(|e| {
        Problem::bad_request(
            "bad-query",
            format!("{}; use ?cursor=N&limit=N", e.body_text()),
        )
    })?;
    let limit = query.limit.unwrap_or(100).clamp(1, MAX_PAGE);
    Ok(Json(
        state
            .node
            .kv_list(&namespace, query.cursor, limit)
            .await?
            .into(),
    ))
}

/// `POST /v1/kv/{ns}`: write every key of a JSON object body, overwriting, all or
/// nothing.
#[utoipa::path(
    post,
    path = "/v1/kv/{ns}",
    operation_id = "load_keys",
    tag = "kv",
    summary = "Write many keys",
    description = "Writes every key of a JSON object, overwriting, in one transaction: all or nothing.",
    params(("ns" = String, Path, description = "a namespace the app declares")),
    request_body(content = std::collections::BTreeMap<String, serde_json::Value>, description = "`{\"key\": value, ...}`"),
    responses(
        (status = 200, description = "written, durably", body = Loaded),
        (status = 400, description = "not a JSON object, or an invalid key", body = Problem, content_type = PROBLEM_CONTENT_TYPE),
        (status = 404, description = "a namespace the app does not declare", body = Problem, content_type = PROBLEM_CONTENT_TYPE),
        (status = 413, description = "a value over 1 MiB", body = Problem, content_type = PROBLEM_CONTENT_TYPE),
    )
)]
pub(crate) async fn load(
    State(state): State<AppState>,
    Path(namespace): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Loaded>, Problem> {
    let body = body?;
    let written = state.node.kv_load(&namespace, body.to_vec()).await?;
    Ok(Json(Loaded { namespace, written }))
}

/// `GET /v1/kv/{ns}/{key}`: the value's bytes; `application/json` when they parse as
/// JSON, else `application/octet-stream`.
#[utoipa::path(
    get,
    path = "/v1/kv/{ns}/{key}",
    operation_id = "get_key",
    tag = "kv",
    summary = "Read a key",
    params(
        ("ns" = String, Path, description = "a namespace the app declares"),
        ("key" = String, Path, description = "the key, percent-encoded"),
    ),
    responses(
        (status = 200, description = "the value's bytes: `application/json` when they parse as JSON", content(
            (serde_json::Value = "application/json"),
            ([u8] = "application/octet-stream"),
        )),
        (status = 404, description = "a namespace the app does not declare, or no such key", body = Problem, content_type = PROBLEM_CONTENT_TYPE),
    )
)]
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
#[utoipa::path(
    put,
    path = "/v1/kv/{ns}/{key}",
    operation_id = "put_key",
    tag = "kv",
    summary = "Write a key",
    params(
        ("ns" = String, Path, description = "a namespace the app declares"),
        ("key" = String, Path, description = "the key (1 to 1024 bytes of UTF-8), percent-encoded"),
    ),
    request_body(content = [u8], content_type = "application/octet-stream", description = "the value's bytes"),
    responses(
        (status = 204, description = "written, durably"),
        (status = 400, description = "an invalid key", body = Problem, content_type = PROBLEM_CONTENT_TYPE),
        (status = 404, description = "a namespace the app does not declare", body = Problem, content_type = PROBLEM_CONTENT_TYPE),
        (status = 413, description = "a value over 1 MiB", body = Problem, content_type = PROBLEM_CONTENT_TYPE),
    )
)]
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
#[utoipa::path(
    delete,
    path = "/v1/kv/{ns}/{key}",
    operation_id = "delete_key",
    tag = "kv",
    summary = "Delete a key",
    params(
        ("ns" = String, Path, description = "a namespace the app declares"),
        ("key" = String, Path, description = "the key, percent-encoded"),
    ),
    responses(
        (status = 204, description = "gone, durably, whether or not it was there"),
        (status = 400, description = "an invalid key", body = Problem, content_type = PROBLEM_CONTENT_TYPE),
        (status = 404, description = "a namespace the app does not declare", body = Problem, content_type = PROBLEM_CONTENT_TYPE),
    )
)]
pub(crate) async fn delete(
    State(state): State<AppState>,
    Path((namespace, key)): Path<(String, String)>,
) -> Result<StatusCode, Problem> {
    state.node.kv_delete(&namespace, &key).await?;
    Ok(StatusCode::NO_CONTENT)
}
