//! `/v1/entities/{type}/{id}`: commands to event-sourced entities, their state (also as of
//! a version or a time) and their journal.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{OriginalUri, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::value::RawValue;

use crate::api::entities::{CommandResult, EntityState, EventsQuery, StateQuery};
use crate::{AppState, PROBLEM_CONTENT_TYPE, Problem, forward};

/// On a fleet, the answer of the member that owns entity `id`'s journal partition, when
/// that is another one and this request was not forwarded already; none to handle it
/// here.
async fn from_owner(
    state: &AppState,
    (ty, id): (&str, &str),
    method: Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Bytes,
) -> Option<Response> {
    if forward::was_forwarded(headers) {
        return None;
    }
    let owner = state.node.entity_owner(ty, id)?;
    let me = state.node.member_id().unwrap_or_default();
    forward::to_owner(&owner, &me, method, uri, headers, body).await
}

/// The state as JSON: the entity's own bytes when they are JSON (the SDKs' convention),
/// else a JSON string of their base64.
fn state_json(state: Option<Vec<u8>>) -> Option<Box<RawValue>> {
    let bytes = state?;
    if serde_json::from_slice::<&RawValue>(&bytes).is_ok()
        && let Ok(text) = String::from_utf8(bytes.clone())
        && let Ok(raw) = RawValue::from_string(text)
    {
        return Some(raw);
    }
    let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
    RawValue::from_string(serde_json::Value::String(encoded).to_string()).ok()
}

fn etag(version: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\"")).unwrap_or(HeaderValue::from_static("\"0\""))
}

/// `If-Match: "N"` (or `N`): the version the command expects.
fn if_match(headers: &HeaderMap) -> Result<Option<u64>, Problem> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or_default().trim();
    let text = text.strip_prefix("W/").unwrap_or(text).trim_matches('"');
    text.parse().map(Some).map_err(|_| {
        Problem::bad_request(
            "bad-if-match",
            format!("If-Match is {text:?}; send the entity's version as returned in its ETag, e.g. If-Match: \"3\""),
        )
    })
}

fn rfc3339(ms: i64) -> Option<String> {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()?
        .format(&time::format_description::well_known::Rfc3339)
        .ok()
}

/// `POST /v1/entities/{type}/{id}/commands/{name}`.
#[utoipa::path(
    post,
    path = "/v1/entities/{type}/{id}/commands/{name}",
    operation_id = "send_command",
    tag = "entities",
    summary = "Send a command to an entity",
    description = "The body (JSON, or empty) goes to the entity function's `handle` with the entity's current state. Accepted: its events are durable in the type's journal before the answer, which carries them, the new state and version (also the `ETag`) and a consistency token. Rejected: nothing is written (`422`). With `If-Match: \"N\"` the command runs only if the entity is at version N (`409` otherwise). Commands to one entity run one at a time; commands to different entities share fsyncs.",
    params(
        ("type" = String, Path, description = "an entity type the app declares"),
        ("id" = String, Path, description = "the entity's id: 1 to 256 bytes, no '/' or whitespace"),
        ("name" = String, Path, description = "the command: a-z, 0-9 and '-'"),
        ("If-Match" = Option<String>, Header, description = "the version the entity must be at, as its ETag gives it"),
    ),
    request_body(content = Object, description = "the command's data (JSON), or nothing", content_type = "application/json"),
    responses(
        (status = 200, description = "accepted: its events are durable", body = CommandResult,
            headers(("ETag" = String, description = "the entity's new version, quoted"))),
        (status = 400, description = "a bad id, command name or If-Match", body = Problem, content_type = PROBLEM_CONTENT_TYPE),
        (status = 404, description = "an entity type the app does not declare", body = Problem, content_type = PROBLEM_CONTENT_TYPE),
        (status = 409, description = "the entity is not at the If-Match version", body = Problem, content_type = PROBLEM_CONTENT_TYPE),
        (status = 422, description = "the entity rejected the command, or its function failed on it: nothing was written", body = Problem, content_type = PROBLEM_CONTENT_TYPE),
        (status = 503, description = "the function or the log is unavailable: nothing was written", body = Problem, content_type = PROBLEM_CONTENT_TYPE),
    )
)]
pub(crate) async fn command(
    State(state): State<AppState>,
    Path((ty, id, name)): Path<(String, String, String)>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let body = body?;
    let forwarded = from_owner(
        &state,
        (&ty, &id),
        Method::POST,
        &uri,
        &headers,
        body.clone(),
    );
    if let Some(answer) = forwarded.await {
        return Ok(answer);
    }
    let expected = if_match(&headers)?;
    let outcome = state
        .node
        .entity_command(&ty, &id, &name, body.to_vec(), expected)
        .await?;
    let events = outcome
        .events
        .iter()
        .filter_map(|e| RawValue::from_string(String::from_utf8(e.event.to_json_vec()).ok()?).ok())
        .collect();
    let result = CommandResult {
        entity_type: ty,
        id,
        version: outcome.version,
        state: state_json(outcome.state),
        events,
        consistency_token: outcome.token.to_string(),
    };
    Ok(([(header::ETAG, etag(outcome.version))], axum::Json(result)).into_response())
}

/// `GET /v1/entities/{type}/{id}`.
#[utoipa::path(
    get,
    path = "/v1/entities/{type}/{id}",
    operation_id = "get_entity",
    tag = "entities",
    summary = "An entity's state",
    description = "The latest state (read after every command the node acknowledged), or with `?version=N` the state after its first N events, or with `?at=TIME` the state after the last of its events the log appended at or before TIME. Past states are rebuilt by folding the journal with the entity's `apply`.",
    params(
        ("type" = String, Path, description = "an entity type the app declares"),
        ("id" = String, Path, description = "the entity's id"),
        StateQuery,
    ),
    responses(
        (status = 200, description = "the state", body = EntityState,
            headers(("ETag" = String, description = "the state's version, quoted"))),
        (status = 400, description = "a bad id or query", body = Problem, content_type = PROBLEM_CONTENT_TYPE),
        (status = 404, description = "no such entity type, or the entity has no events (at that point)", body = Problem, content_type = PROBLEM_CONTENT_TYPE),
    )
)]
pub(crate) async fn get(
    State(state): State<AppState>,
    Path((ty, id)): Path<(String, String)>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    query: Result<Query<StateQuery>, QueryRejection>,
) -> Result<Response, Problem> {
    let forwarded = from_owner(
        &state,
        (&ty, &id),
        Method::GET,
        &uri,
        &headers,
        Bytes::new(),
    );
    if let Some(answer) = forwarded.await {
        return Ok(answer);
    }
    let Query(query) = query.map_err(|e| {
        Problem::bad_request(
            "bad-query",
            format!("{}; use ?version=N or ?at=TIME", e.body_text()),
        )
    })?;
    let at = match (query.version, query.at) {
        (Some(_), Some(_)) => {
            return Err(Problem::bad_request(
                "bad-query",
                "give ?version or ?at, not both",
            ));
        }
        (Some(v), None) => weir_engine::StateAt::Version(v),
        (None, Some(at)) => weir_engine::StateAt::Time(parse_time(&at)?),
        (None, None) => weir_engine::StateAt::Latest,
    };
    let found = state.node.entity_state(&ty, &id, at).await?;
    let body = EntityState {
        entity_type: ty,
        id,
        version: found.version,
        state: state_json(found.state),
        timestamp: found.timestamp_ms.and_then(rfc3339),
    };
    Ok(([(header::ETAG, etag(found.version))], axum::Json(body)).into_response())
}

/// RFC 3339, or milliseconds since the Unix epoch.
fn parse_time(at: &str) -> Result<i64, Problem> {
    if let Ok(ms) = at.parse::<i64>() {
        return Ok(ms);
    }
    time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339)
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
        .map_err(|_| {
            Problem::bad_request(
                "bad-query",
                format!("at={at:?} is not a time; use RFC 3339 (2026-12-03T10:00:00Z) or milliseconds since the Unix epoch"),
            )
        })
}

/// `GET /v1/entities/{type}/{id}/events`.
#[utoipa::path(
    get,
    path = "/v1/entities/{type}/{id}/events",
    operation_id = "entity_events",
    tag = "entities",
    summary = "An entity's journal",
    description = "The entity's events from version `from`, oldest first, as a CloudEvents batch; `weir-next-version` says where the next page starts.",
    params(
        ("type" = String, Path, description = "an entity type the app declares"),
        ("id" = String, Path, description = "the entity's id"),
        EventsQuery,
    ),
    responses(
        (status = 200, description = "the events, oldest first", body = crate::api::topics::CloudEventBatch, content_type = "application/cloudevents-batch+json",
            headers(("weir-next-version" = u64, description = "the version the next page starts at"))),
        (status = 400, description = "a bad id or query", body = Problem, content_type = PROBLEM_CONTENT_TYPE),
        (status = 404, description = "no such entity type, or the entity has no events", body = Problem, content_type = PROBLEM_CONTENT_TYPE),
    )
)]
pub(crate) async fn events(
    State(state): State<AppState>,
    Path((ty, id)): Path<(String, String)>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Response, Problem> {
    let forwarded = from_owner(
        &state,
        (&ty, &id),
        Method::GET,
        &uri,
        &headers,
        Bytes::new(),
    );
    if let Some(answer) = forwarded.await {
        return Ok(answer);
    }
    let Query(query) = query.map_err(|e| {
        Problem::bad_request(
            "bad-query",
            format!("{}; use ?from=VERSION&limit=N", e.body_text()),
        )
    })?;
    let from = query.from.unwrap_or(1).max(1);
    let limit = query.limit.unwrap_or(100);
    let events = state.node.entity_events(&ty, &id, from, limit).await?;
    let next = from + events.len() as u64;
    let events: Vec<_> = events.into_iter().map(|e| e.event).collect();
    let (mut headers, body) = weir_cloudevents::http::encode_batch(&events);
    headers.insert("weir-next-version", HeaderValue::from(next));
    Ok((headers, body).into_response())
}
