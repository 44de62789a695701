//! weir's HTTP API over a [`weir_engine::Node`]: publish CloudEvents (structured, binary,
//! batch), read them back, follow a topic over Server-Sent Events, topics, the key-value
//! store (`kv.rs`), function versions and deploys (`functions.rs`), replays of a pipeline's
//! recorded events through function versions (`replay.rs`), status and health.
//! Every error is RFC 9457 `application/problem+json`.
//!
//! **Architecture Invariant:** `POST /v1/topics/{topic}/events` answers `202` only after
//! the log has made every event of the request durable; a request that fails validation
//! writes nothing.

mod functions;
mod kv;
mod pipelines;
mod problem;
mod replay;

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures::{Stream, StreamExt};
use serde::Deserialize;
use weir_engine::{Node, StartFrom};

pub use problem::{PROBLEM_CONTENT_TYPE, Problem};
pub use replay::NDJSON_CONTENT_TYPE;

/// Limits of the API.
#[derive(Debug, Clone)]
pub struct GatewayOptions {
    /// Largest request body accepted; larger ones get `413`.
    pub max_body_bytes: usize,
    /// Most events one `GET .../events` returns.
    pub max_read_limit: usize,
    /// Largest body of a deploy (`PUT /v1/functions/{name}`, `POST /v1/deploy`), a
    /// replay's candidate (`POST /v1/pipelines/{name}/replay`) or a key-value write (`PUT /v1/kv/...`, `POST /v1/kv/{ns}`); the store refuses values
    /// over 1 MiB itself.
    pub max_upload_bytes: usize,
}

impl Default for GatewayOptions {
    fn default() -> Self {
        GatewayOptions {
            max_body_bytes: 1 << 20,
            max_read_limit: 1000,
            max_upload_bytes: 64 << 20,
        }
    }
}

#[derive(Clone)]
struct AppState {
    node: Arc<Node>,
    options: GatewayOptions,
}

/// The API's routes.
pub fn router(node: Arc<Node>, options: GatewayOptions) -> Router {
    let body_limit = options.max_body_bytes;
    let upload_limit = DefaultBodyLimit::max(options.max_upload_bytes);
    Router::new()
        .route("/v1/topics", get(list_topics))
        .route("/v1/topics/{topic}", axum::routing::put(create_topic))
        .route("/v1/topics/{topic}/events", get(read_events).post(publish))
        .route("/v1/topics/{topic}/stream", get(stream))
        .route("/v1/groups/{group}", get(group_status))
        .route("/v1/groups/{group}/reset", axum::routing::post(reset_group))
        .route(
            "/v1/kv/{ns}",
            get(kv::list).post(kv::load).layer(upload_limit),
        )
        .route(
            "/v1/kv/{ns}/{key}",
            get(kv::get)
                .put(kv::put)
                .delete(kv::delete)
                .layer(upload_limit),
        )
        .route("/v1/functions", get(functions::list))
        .route(
            "/v1/functions/{name}",
            axum::routing::put(functions::deploy).layer(upload_limit),
        )
        .route(
            "/v1/functions/{name}/rollback",
            axum::routing::post(functions::rollback),
        )
        .route(
            "/v1/deploy",
            axum::routing::post(functions::deploy_app).layer(upload_limit),
        )
        .route("/v1/pipelines", get(pipelines::list))
        .route("/v1/pipelines/{name}", get(pipelines::get))
        .route(
            "/v1/pipelines/{name}/redrive",
            axum::routing::post(pipelines::redrive),
        )
        .route(
            "/v1/pipelines/{name}/replay",
            axum::routing::post(replay::replay).layer(upload_limit),
        )
        .route("/v1/status", get(status))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(AppState { node, options })
}

/// Serve the API on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    node: Arc<Node>,
    options: GatewayOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(node, options))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn not_found() -> Problem {
    Problem::not_found("no such route; see the README for weir's HTTP API")
}

async fn method_not_allowed() -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "Method not allowed",
        "this route does not take that method; see the README for weir's HTTP API",
    )
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.node.is_ready() {
        Json(serde_json::json!({ "status": "ready" })).into_response()
    } else {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "Not ready",
            "the node is shutting down",
        )
        .into_response()
    }
}

async fn status(State(state): State<AppState>) -> Result<Json<weir_engine::NodeStatus>, Problem> {
    Ok(Json(state.node.status().await?))
}

async fn list_topics(
    State(state): State<AppState>,
) -> Result<Json<Vec<weir_log::TopicInfo>>, Problem> {
    let topics = state
        .node
        .log()
        .topics()
        .await
        .map_err(weir_engine::Error::from)?;
    Ok(Json(topics))
}

/// The body of `PUT /v1/topics/{topic}`: every key is optional; an existing topic keeps
/// what the body does not say.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PutTopic {
    partitions: Option<u32>,
    fsync: Option<weir_log::Durability>,
    retention_ms: Option<u64>,
    retention_bytes: Option<u64>,
    segment_bytes: Option<u64>,
    compaction: Option<bool>,
    /// Lowering an existing topic's durability must be asked for by name.
    #[serde(default)]
    lower_durability: bool,
}

async fn create_topic(
    State(state): State<AppState>,
    Path(topic): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let body = body?;
    let put: PutTopic = if body.is_empty() {
        PutTopic::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            Problem::bad_request(
                "invalid-topic",
                format!("the body must be a JSON object with optional partitions, fsync, retention_ms, retention_bytes, segment_bytes, compaction, lower_durability: {e}"),
            )
        })?
    };
    let update = weir_engine::TopicUpdate {
        partitions: put.partitions,
        durability: put.fsync,
        retention_ms: put.retention_ms,
        retention_bytes: put.retention_bytes,
        segment_bytes: put.segment_bytes,
        compaction: put.compaction,
        lower_durability: put.lower_durability,
    };
    let (created, info) = state.node.put_topic(&topic, update).await?;
    let status = match created {
        weir_log::TopicCreated::Created => StatusCode::CREATED,
        weir_log::TopicCreated::Updated => StatusCode::OK,
    };
    Ok((status, Json(info)).into_response())
}

async fn publish(
    State(state): State<AppState>,
    Path(topic): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let body = body?;
    let mut events = weir_cloudevents::http::decode(&headers, &body)?;
    if let Some(traceparent) = headers.get("traceparent").and_then(|v| v.to_str().ok()) {
        let tracestate = headers.get("tracestate").and_then(|v| v.to_str().ok());
        weir_engine::routing::adopt_trace_context(&mut events, traceparent, tracestate);
    }
    // An empty batch is valid in a request (the JSON batch format says so): it stores
    // nothing, and still names an unknown topic.
    let positions = state.node.publish(&topic, &events).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "topic": topic, "offsets": positions })),
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadQuery {
    #[serde(default)]
    partition: u32,
    #[serde(default)]
    offset: u64,
    limit: Option<usize>,
}

/// Events of one partition as a CloudEvents batch. `Weir-Next-Offset` says where the next
/// read starts.
async fn read_events(
    State(state): State<AppState>,
    Path(topic): Path<String>,
    query: Result<Query<ReadQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Problem> {
    let Query(query) = query.map_err(|e| Problem::bad_request("bad-query", e.body_text()))?;
    let limit = query
        .limit
        .unwrap_or(100)
        .clamp(1, state.options.max_read_limit);
    let events = state
        .node
        .read(&topic, query.partition, query.offset, limit)
        .await?;
    let next = events.last().map_or(query.offset, |e| e.offset + 1);
    let events: Vec<_> = events.into_iter().map(|e| e.event).collect();
    let (mut headers, body) = weir_cloudevents::http::encode_batch(&events);
    headers.insert("weir-next-offset", HeaderValue::from(next));
    Ok((headers, body).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StreamQuery {
    from: Option<String>,
    /// Consume as a member of this consumer group.
    group: Option<String>,
}

/// `earliest`, `latest`, an offset, `time:MILLIS` or an RFC 3339 time.
fn parse_start(from: &str) -> Result<StartFrom, Problem> {
    let bad = || {
        Problem::bad_request(
            "bad-position",
            format!(
                "{from:?} is not a position; use earliest, latest, an offset, an RFC 3339 time or time:MILLISECONDS"
            ),
        )
    };
    Ok(match from {
        "earliest" => StartFrom::Earliest,
        "latest" => StartFrom::Latest,
        other => match other.strip_prefix("time:") {
            Some(ms) => StartFrom::Time(ms.parse().map_err(|_| bad())?),
            None if other.bytes().all(|b| b.is_ascii_digit()) => {
                StartFrom::Offset(other.parse().map_err(|_| bad())?)
            }
            None => {
                let time = time::OffsetDateTime::parse(
                    other,
                    &time::format_description::well_known::Rfc3339,
                )
                .map_err(|_| bad())?;
                StartFrom::Time((time.unix_timestamp_nanos() / 1_000_000) as i64)
            }
        },
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupQuery {
    topic: String,
}

async fn group_status(
    State(state): State<AppState>,
    Path(group): Path<String>,
    query: Result<Query<GroupQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<weir_engine::GroupStatus>, Problem> {
    let Query(query) = query.map_err(|e| {
        Problem::bad_request("bad-query", format!("{}; pass ?topic=NAME", e.body_text()))
    })?;
    Ok(Json(state.node.group_status(&group, &query.topic).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResetGroup {
    topic: String,
    /// `earliest`, `latest`, an offset, or an RFC 3339 time.
    to: serde_json::Value,
}

async fn reset_group(
    State(state): State<AppState>,
    Path(group): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<serde_json::Value>, Problem> {
    let body = body?;
    let reset: ResetGroup = serde_json::from_slice(&body).map_err(|e| {
        Problem::bad_request(
            "bad-body",
            format!(
                "the body must be {{\"topic\": NAME, \"to\": earliest|latest|OFFSET|TIME}}: {e}"
            ),
        )
    })?;
    let to = match &reset.to {
        serde_json::Value::Number(n) => n.as_u64().map(StartFrom::Offset).ok_or_else(|| {
            Problem::bad_request("bad-position", "an offset is a non-negative integer")
        })?,
        serde_json::Value::String(s) => parse_start(s)?,
        other => {
            return Err(Problem::bad_request(
                "bad-position",
                format!("`to` is {other}; use earliest, latest, an offset or an RFC 3339 time"),
            ));
        }
    };
    let offsets = state.node.reset_group(&group, &reset.topic, to).await?;
    Ok(Json(
        serde_json::json!({ "group": group, "topic": reset.topic, "offsets": offsets }),
    ))
}

/// Follow a topic live. Each SSE message is one event in the structured JSON format; its
/// SSE `id` is `partition/offset`.
async fn stream(
    State(state): State<AppState>,
    Path(topic): Path<String>,
    query: Result<Query<StreamQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, Problem> {
    let Query(query) = query.map_err(|e| Problem::bad_request("bad-query", e.body_text()))?;
    let from = match query.from.as_deref() {
        None => StartFrom::Latest,
        Some(from) => parse_start(from)?,
    };
    let events: std::pin::Pin<
        Box<dyn Stream<Item = weir_engine::Result<weir_engine::LoggedEvent>> + Send>,
    > = match &query.group {
        Some(group) => Box::pin(state.node.subscribe_group(group, &topic, from).await?),
        None => Box::pin(state.node.subscribe(&topic, from).await?),
    };
    let messages = events.map(|item| {
        Ok(match item {
            Ok(logged) => SseEvent::default()
                .id(format!("{}/{}", logged.partition, logged.offset))
                .data(String::from_utf8_lossy(&logged.event.to_json_vec())),
            Err(e) => SseEvent::default().event("error").data(e.to_string()),
        })
    });
    Ok(Sse::new(messages).keep_alive(KeepAlive::default()))
}

/// Whether a response is an RFC 9457 problem (`application/problem+json`).
pub fn is_problem(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == PROBLEM_CONTENT_TYPE.as_bytes())
}

#[cfg(test)]
mod tests;
