//! `/v1/schemas`: event schemas (JSON Schema, draft 2020-12) by CloudEvents type and
//! version, registered with their type's compatibility checked.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::api::schemas::{SchemaRegistered, SchemaType};
use crate::{AppState, PROBLEM_CONTENT_TYPE, Problem};

/// The media type of a schema document.
const SCHEMA_CONTENT_TYPE: &str = "application/schema+json";

/// `GET /v1/schemas`.
#[utoipa::path(
    get,
    path = "/v1/schemas",
    operation_id = "list_schemas",
    tag = "schemas",
    summary = "List event types with schemas",
    description = "Every event type with a registered schema, sorted by type, with its versions and compatibility mode.",
    responses((status = 200, description = "the event types", body = Vec<SchemaType>))
)]
pub(crate) async fn list(State(state): State<AppState>) -> Json<Vec<SchemaType>> {
    let registry = state.node.schemas();
    Json(
        registry
            .subjects()
            .filter(|(_, s)| !s.versions().is_empty())
            .map(|(ty, s)| SchemaType::from_subject(ty, s))
            .collect(),
    )
}

/// `GET /v1/schemas/{type}`.
#[utoipa::path(
    get,
    path = "/v1/schemas/{type}",
    operation_id = "get_schema_type",
    tag = "schemas",
    summary = "An event type's schemas",
    params(("type" = String, Path, description = "the CloudEvents type")),
    responses(
        (status = 200, description = "its versions and compatibility mode", body = SchemaType),
        (status = 404, description = "no schema is registered for this type", body = Problem, content_type = PROBLEM_CONTENT_TYPE),
    )
)]
pub(crate) async fn get_type(
    State(state): State<AppState>,
    Path(ty): Path<String>,
) -> Result<Json<SchemaType>, Problem> {
    let registry = state.node.schemas();
    match registry.subject(&ty).filter(|s| !s.versions().is_empty()) {
        Some(subject) => Ok(Json(SchemaType::from_subject(&ty, subject))),
        None => Err(unknown_type(&ty)),
    }
}

fn unknown_type(ty: &str) -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        "unknown-schema",
        "Unknown schema",
        format!(
            "no schema is registered for event type {ty:?}; register one with PUT /v1/schemas/{{type}}/1 or [schemas] in weir.toml"
        ),
    )
}

/// `GET /v1/schemas/{type}/{version}`.
#[utoipa::path(
    get,
    path = "/v1/schemas/{type}/{version}",
    operation_id = "get_schema",
    tag = "schemas",
    summary = "A schema",
    description = "The JSON Schema document of one version of an event type, as registered: what an event's `dataschema` names. `latest` names the newest version.",
    params(
        ("type" = String, Path, description = "the CloudEvents type"),
        ("version" = String, Path, description = "a version number, from 1, or `latest`"),
    ),
    responses(
        (status = 200, description = "the schema", body = Object, content_type = "application/schema+json"),
        (status = 404, description = "no such type or version", body = Problem, content_type = PROBLEM_CONTENT_TYPE),
    )
)]
pub(crate) async fn get(
    State(state): State<AppState>,
    Path((ty, version)): Path<(String, String)>,
) -> Result<Response, Problem> {
    let registry = state.node.schemas();
    let subject = registry
        .subject(&ty)
        .filter(|s| !s.versions().is_empty())
        .ok_or_else(|| unknown_type(&ty))?;
    let schema = match version.as_str() {
        "latest" => subject.latest(),
        v => v.parse::<u32>().ok().and_then(|v| subject.get(v)),
    }
    .ok_or_else(|| {
        Problem::new(
            StatusCode::NOT_FOUND,
            "unknown-schema",
            "Unknown schema",
            match subject.versions().len() {
                1 => format!("event type {ty:?} has no version {version:?}; it has version 1, or ask for latest"),
                n => format!("event type {ty:?} has no version {version:?}; it has versions 1 to {n}, or ask for latest"),
            },
        )
    })?;
    let body = serde_json::to_vec(schema.document().as_ref()).unwrap_or_default();
    let mut response = (StatusCode::OK, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(SCHEMA_CONTENT_TYPE),
    );
    Ok(response)
}

/// `PUT /v1/schemas/{type}/{version}`.
#[utoipa::path(
    put,
    path = "/v1/schemas/{type}/{version}",
    operation_id = "put_schema",
    tag = "schemas",
    summary = "Register a schema",
    description = "Registers the body, a JSON Schema (draft 2020-12), as a version of an event type. Versions count from 1 and are registered in order; a registered version never changes (the same document again is a no-op, `200`). A new version must keep the type's compatibility mode (`backward` unless weir.toml's `[schemas.TYPE]` says otherwise) with the earlier ones: a refusal lists each breaking change with its JSON pointer in `errors`. From then on, events of the type published to any topic must match their schema: the version their `dataschema` names, else the latest.",
    params(
        ("type" = String, Path, description = "the CloudEvents type"),
        ("version" = u32, Path, description = "the version, from 1; the next one for a new schema"),
    ),
    request_body(content = Object, description = "the JSON Schema", content_type = "application/schema+json"),
    responses(
        (status = 201, description = "registered", body = SchemaRegistered),
        (status = 200, description = "the same schema already was this version", body = SchemaRegistered),
        (status = 400, description = "the body is not JSON", body = Problem, content_type = PROBLEM_CONTENT_TYPE),
        (status = 409, description = "the version is taken by another schema (`schema-version-taken`), is not the next one (`schema-version-gap`), or breaks the type's compatibility (`incompatible-schema`, the changes in `errors`)", body = Problem, content_type = PROBLEM_CONTENT_TYPE),
        (status = 422, description = "not a valid draft 2020-12 schema, or a bad type name (`invalid-schema`)", body = Problem, content_type = PROBLEM_CONTENT_TYPE),
        (status = 503, description = "the log is unavailable", body = Problem, content_type = PROBLEM_CONTENT_TYPE),
    )
)]
pub(crate) async fn put(
    State(state): State<AppState>,
    Path((ty, version)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let body = body?;
    let version: u32 = version.parse().map_err(|_| {
        Problem::bad_request(
            "invalid-schema-version",
            format!("{version:?} is not a version number; versions count from 1"),
        )
    })?;
    let document: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
        Problem::bad_request(
            "invalid-json",
            format!("the body must be a JSON Schema document: {e}"),
        )
    })?;
    let created = state.node.register_schema(&ty, version, document).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let answer = SchemaRegistered {
        dataschema: weir_engine::schema_route(&ty, version),
        ty,
        version,
        created,
    };
    Ok((status, Json(answer)).into_response())
}

/// `GET /v1/asyncapi`.
#[utoipa::path(
    get,
    path = "/v1/asyncapi",
    operation_id = "get_asyncapi",
    tag = "schemas",
    summary = "The app's AsyncAPI document",
    description = "The AsyncAPI 3.0 document of what the node runs now: a channel per topic (and per source subscription, sink and inbound-webhook route), the operations of clients, pipelines, sources, sinks, routes, schedules, entities and views, a message per registered schema version (the JSON Schema as its payload, the CloudEvents attributes as its headers), and the front door's security schemes. The node's server is the host this request named.",
    responses(
        (status = 200, description = "the AsyncAPI document", body = Object, content_type = "application/json"),
        (status = 503, description = "the log is unavailable", body = Problem, content_type = PROBLEM_CONTENT_TYPE),
    )
)]
pub(crate) async fn asyncapi(
    State(state): State<AppState>,
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
) -> Result<Json<serde_json::Value>, Problem> {
    let server = weir_engine::AsyncApiServer {
        host: request_host(&uri, &headers),
        tls: state.options.tls.is_some(),
    };
    let security = state.auth.get().map(|auth| weir_engine::AsyncApiSecurity {
        api_keys: auth.spec().api_keys,
        jwt: auth.spec().jwt.is_some(),
    });
    Ok(Json(state.node.asyncapi(&server, security).await?))
}

/// The host (and port) a request was sent to: its URI's authority (HTTP/2), else its
/// `Host` header; `localhost` when neither is a plain `host[:port]`.
fn request_host(uri: &axum::http::Uri, headers: &axum::http::HeaderMap) -> String {
    let host = uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| {
            headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
        })
        .filter(|h| {
            !h.is_empty()
                && h.len() <= 255
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]_".contains(&b))
        });
    host.unwrap_or_else(|| "localhost".to_owned())
}
