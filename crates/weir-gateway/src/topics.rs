//! `/v1/topics`: topics, publishing CloudEvents, reading them back and following them
//! live over Server-Sent Events.

use std::convert::Infallible;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use weir_engine::{StartFrom, TopicCreated};

use crate::api::topics::{
    CloudEvent, CloudEventBatch, Published, PutTopic, ReadQuery, StreamQuery, Topic,
};
use crate::auth::Caller;
use crate::{AppState, PROBLEM_CONTENT_TYPE, Problem};

/// `GET /v1/topics`.
#[utoipa::path(
    get,
    path = "/v1/topics",
    operation_id = "list_topics",
    tag = "topics",
    summary = "List topics",
    description = "Every topic, sorted by name, with its partitions, start and end offsets, and settings.",
    responses(
        (status = 200, description = "the topics", body = Vec<Topic>),
        (status = 503, description = "the log is unavailable", body = Problem, content_type = PROBLEM_CONTENT_TYPE),
    )
)]
pub(crate) async fn list(State(state): State<AppState>) -> Result<Json<Vec<Topic>>, Problem> {
    let topics = state.node.topics().await?;
    Ok(Json(topics.into_iter().map(Topic::from).collect()))
}

/// `PUT /v1/topics/{topic}`.
#[utoipa::path(
    put,
    path = "/v1/topics/{topic}",
    operation_id = "put_topic",
    tag = "topics",
    summary = "Create or update a topic",
    description = "An existing topic keeps what the body does not mention. The settings have the bounds weir.toml gives them; an existing topic's `fsync` is lowered only with `\"lower_durability\": true`.",
    params(("topic" = String, Path, description = "the topic's name")),
    request_body(content = PutTopic, description = "optional: an empty body creates a topic with the defaults"),
    responses(
        (status = 201, description = "created", body = Topic),
        (status = 200, description = "updated", body = Topic),
        (status = 400, description = "a bad name, a setting out of bounds or one the backend does not know", body = Problem, content_type = PROBLEM_CONTENT_TYPE),
        (status = 409, description = "the topic exists with another partition count (`topic-exists`), or its durability would be lowered (`durability-lowered`)", body = Problem, content_type = PROBLEM_CONTENT_TYPE),
        (status = 503, description = "the log is unavailable", body = Problem, content_type = PROBLEM_CONTENT_TYPE),
    )
)]
pub(crate) async fn put(
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
        durability: put.fsync.map(Into::into),
        retention_ms: put.retention_ms,
        retention_bytes: put.retention_bytes,
        segment_bytes: put.segment_bytes,
        compaction: put.compaction,
        lower_durability: put.lower_durability,
    };
    let (created, info) = state.node.put_topic(&topic, update).await?;
    let status = match created {
        TopicCreated::Created => StatusCode::CREATED,
        TopicCreated::Updated => StatusCode::OK,
    };
    Ok((status, Json(info.map(Topic::from))).into_response())
}

/// `POST /v1/topics/{topic}/events`.
#[utoipa::path(
    post,
    path = "/v1/topics/{topic}/events",
    operation_id = "publish_events",
    tag = "topics",
    summary = "Publish events",
    description = "Structured mode (`application/cloudevents+json`), batch mode (`application/cloudevents-batch+json`, all or nothing) or binary mode (`ce-*` headers, the body is `data` and `Content-Type` its `datacontenttype`). Answers `202` only once every event is durable; a rejected request writes nothing. W3C `traceparent`/`tracestate` headers become the events' trace context.",
    params(("topic" = String, Path, description = "the topic's name")),
    request_body(content(
        (CloudEvent = "application/cloudevents+json"),
        (CloudEventBatch = "application/cloudevents-batch+json"),
        ("*/*"),
    )),
    responses(
        (status = 202, description = "durable: where each event was stored, in request order", body = Published),
        (status = 400, description = "an invalid event or JSON (`attribute` and `index` say which)", body = Problem, content_type = PROBLEM_CONTENT_TYPE),
        (status = 404, description = "unknown topic", body = Problem, content_type = PROBLEM_CONTENT_TYPE),
        (status = 413, description = "the body or an event is over the size limit", body = Problem, content_type = PROBLEM_CONTENT_TYPE),
        (status = 415, description = "not a CloudEvent", body = Problem, content_type = PROBLEM_CONTENT_TYPE),
        (status = 503, description = "shutting down, or the log is unavailable or refuses writes after a disk error", body = Problem, content_type = PROBLEM_CONTENT_TYPE),
        (status = 507, description = "disk full; nothing was written", body = Problem, content_type = PROBLEM_CONTENT_TYPE),
    )
)]
pub(crate) async fn publish(
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
    let published = Published {
        topic,
        offsets: positions.into_iter().map(Into::into).collect(),
    };
    Ok((StatusCode::ACCEPTED, Json(published)).into_response())
}

/// `GET /v1/topics/{topic}/events`: events of one partition as a CloudEvents batch, at
/// most `limit` and at most `max_bytes` (but at least the first event there is).
/// `Weir-Next-Offset` says where the next read starts.
#[utoipa::path(
    get,
    path = "/v1/topics/{topic}/events",
    operation_id = "read_events",
    tag = "topics",
    summary = "Read events",
    description = "A range of one partition as a CloudEvents batch: at most `limit` events and at most `max_bytes` bytes (default and most 4 MiB), except that the first event there is always comes, however large. `Weir-Next-Offset` is where the next read starts: the offset after the last event returned, or `offset` when none was.",
    params(("topic" = String, Path, description = "the topic's name"), ReadQuery),
    responses(
        (status = 200, description = "the events, oldest first", body = CloudEventBatch, content_type = "application/cloudevents-batch+json",
            headers(("weir-next-offset" = u64, description = "where the next read starts"))),
        (status = 400, description = "a bad query", body = Problem, content_type = PROBLEM_CONTENT_TYPE),
        (status = 404, description = "unknown topic or partition", body = Problem, content_type = PROBLEM_CONTENT_TYPE),
    )
)]
pub(crate) async fn read(
    State(state): State<AppState>,
    Path(topic): Path<String>,
    query: Result<Query<ReadQuery>, QueryRejection>,
) -> Result<Response, Problem> {
    let Query(query) = query.map_err(|e| Problem::bad_request("bad-query", e.body_text()))?;
    let limit = query
        .limit
        .unwrap_or(100)
        .clamp(1, state.options.max_read_limit);
    let max_bytes = query
        .max_bytes
        .unwrap_or(state.options.max_read_bytes)
        .min(state.options.max_read_bytes);
    let read = state
        .node
        .read_bounded(&topic, query.partition, query.offset, limit, max_bytes)
        .await?;
    let next = read.events.last().map_or(query.offset, |e| e.offset + 1);
    let upcasting = state.node.upcasting().filter(|_| query.upcast);
    let off_workers = read.bytes > weir_engine::READ_INLINE_BYTES || upcasting.is_some();
    let events = read.events;
    let encode = move || {
        let events: Vec<_> = events
            .into_iter()
            .map(|e| upcast_or_as_written(upcasting.as_ref(), e.event))
            .collect();
        weir_cloudevents::http::encode_batch(&events)
    };
    let (mut headers, body) = if off_workers {
        // Megabytes of JSON, or events to upcast (an upcaster may be a function): on the
        // blocking pool, off the async workers.
        tokio::task::spawn_blocking(encode)
            .await
            .map_err(|e| Problem::from(weir_engine::Error::Task(e.to_string())))?
    } else {
        encode()
    };
    headers.insert("weir-next-offset", HeaderValue::from(next));
    Ok((headers, body).into_response())
}

/// `earliest`, `latest`, an offset, `time:MILLIS` or an RFC 3339 time.
pub(crate) fn parse_start(from: &str) -> Result<StartFrom, Problem> {
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

/// `GET /v1/topics/{topic}/stream`: follow a topic live. Each SSE message is one event in
/// the structured JSON format; its SSE `id` is `partition/offset`.
#[utoipa::path(
    get,
    path = "/v1/topics/{topic}/stream",
    operation_id = "stream_topic",
    tag = "topics",
    summary = "Follow a topic live",
    description = "Server-Sent Events: each message's `data` is one event in the structured JSON format and its `id` is `partition/offset`; a failure is a message of event `error`. With `group`, the connection is a member of that consumer group. The stream ends when the node shuts down.",
    params(("topic" = String, Path, description = "the topic's name"), StreamQuery),
    responses(
        (status = 200, description = "the event stream", body = String, content_type = "text/event-stream"),
        (status = 400, description = "a bad position or query", body = Problem, content_type = PROBLEM_CONTENT_TYPE),
        (status = 404, description = "unknown topic", body = Problem, content_type = PROBLEM_CONTENT_TYPE),
        (status = 409, description = "the group belongs to a pipeline or follows another topic", body = Problem, content_type = PROBLEM_CONTENT_TYPE),
    )
)]
pub(crate) async fn stream(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(topic): Path<String>,
    query: Result<Query<StreamQuery>, QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, Problem> {
    let Query(query) = query.map_err(|e| Problem::bad_request("bad-query", e.body_text()))?;
    // Held for as long as the stream lives.
    let permit = state.subscriptions.acquire(&caller.key)?;
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
    // Ends at once when the server shuts down, whatever is still queued for the client.
    let events = events.take_until(state.stopping.clone().cancelled_owned());
    let (node, upcast) = (state.node.clone(), query.upcast);
    let messages = events.then(move |item| {
        // The permit lives in the closure, as long as the stream.
        let _held = &permit;
        // The upcasters as they are now, per event: a stream outlives deploys.
        let upcasting = node.upcasting().filter(|_| upcast);
        async move {
            Ok(match item {
                Ok(logged) => {
                    let id = format!("{}/{}", logged.partition, logged.offset);
                    let event = match upcasting {
                        // An upcaster may be a function: off the async workers.
                        Some(upcasting) if upcasting.may_upcast(&logged.event) => {
                            let event = logged.event;
                            let fallback = event.clone();
                            tokio::task::spawn_blocking(move || {
                                upcast_or_as_written(Some(&upcasting), event)
                            })
                            .await
                            .unwrap_or_else(|e| {
                                tracing::warn!(error = %e, "upcasting a streamed event failed; it is sent as written");
                                fallback
                            })
                        }
                        _ => logged.event,
                    };
                    SseEvent::default()
                        .id(id)
                        .data(String::from_utf8_lossy(&event.to_json_vec()))
                }
                Err(e) => SseEvent::default().event("error").data(e.to_string()),
            })
        }
    });
    Ok(Sse::new(messages).keep_alive(KeepAlive::default()))
}

/// `event` upcast to its type's latest schema version when `upcasting` (asked for, and
/// the app has upcasters) can; as written otherwise, its `dataschema` still naming the
/// version it was written in.
fn upcast_or_as_written(
    upcasting: Option<&weir_engine::Upcasting>,
    event: weir_cloudevents::CloudEvent,
) -> weir_cloudevents::CloudEvent {
    match upcasting {
        None => event,
        Some(upcasting) => upcasting.upcast(&event).ok().flatten().unwrap_or(event),
    }
}
