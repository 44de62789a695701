//! `POST /v1/pipelines/{name}/replay`: run recorded events through a function version
//! (and a candidate component sent as the body) without publishing anything, streaming
//! progress and then the report as NDJSON.
//!
//! Problems found before the replay starts (unknown pipeline or version, a candidate that
//! does not load, a bad range) are problem+json with their status; once the `200`
//! stream has begun, a failure is its last line, `{"error": <problem>}`.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::sync::mpsc;
use weir_engine::replay::DEFAULT_EXAMPLES;
use weir_engine::{ReplayBound, ReplayRequest};

use crate::api::replay::{ReplayLine, ReplayQuery};
use crate::{AppState, PROBLEM_CONTENT_TYPE, Problem};

pub const NDJSON_CONTENT_TYPE: &str = "application/x-ndjson";

/// Progress lines are sent at most this often.
const PROGRESS_EVERY: Duration = Duration::from_millis(100);

/// One end of the range from its two spellings.
fn bound(
    end: &str,
    offset: Option<u64>,
    time: Option<&str>,
) -> Result<Option<ReplayBound>, Problem> {
    match (offset, time) {
        (Some(_), Some(_)) => Err(Problem::bad_request(
            "invalid-replay",
            format!("pass {end}_offset or {end}_time, not both"),
        )),
        (Some(offset), None) => Ok(Some(ReplayBound::Offset(offset))),
        (None, Some(time)) => {
            let parsed =
                time::OffsetDateTime::parse(time, &time::format_description::well_known::Rfc3339)
                    .map_err(|e| {
                        Problem::bad_request(
                            "invalid-replay",
                            format!("{end}_time {time:?} is not an RFC 3339 time ({e}); write it like 2026-11-22T09:00:00Z"),
                        )
                    })?;
            Ok(Some(ReplayBound::Time(
                (parsed.unix_timestamp_nanos() / 1_000_000) as i64,
            )))
        }
        (None, None) => Ok(None),
    }
}

fn line(line: ReplayLine) -> Bytes {
    let mut bytes = serde_json::to_vec(&line).unwrap_or_default();
    bytes.push(b'\n');
    Bytes::from(bytes)
}

fn progress_line(p: weir_engine::ReplayProgress) -> Bytes {
    line(ReplayLine::Progress(p.into()))
}

/// `POST /v1/pipelines/{name}/replay?partition=&from_offset=|from_time=&to_offset=|to_time=&version=&examples=`
/// with an optional `application/wasm` body: the candidate version B.
#[utoipa::path(
    post,
    path = "/v1/pipelines/{name}/replay",
    operation_id = "replay_pipeline",
    tag = "pipelines",
    summary = "Replay recorded events through function versions",
    description = "What `weir replay` sends. Runs the pipeline's recorded events through version A (the active one, or `version`) and, when the body is a component, through it as version B, and compares their outputs. It has no side effects but the functions' outgoing HTTP. The answer is streamed as NDJSON: `{\"progress\": ...}` lines (at most ~10 a second), then one `{\"report\": ...}` line, or `{\"error\": <problem>}` if it fails midway.",
    params(("name" = String, Path, description = "the pipeline's name"), ReplayQuery),
    request_body(content = [u8], content_type = "application/wasm", description = "optional: a candidate component, version B"),
    responses(
        (status = 200, description = "NDJSON lines, each a `ReplayLine`", body = ReplayLine, content_type = "application/x-ndjson"),
        (status = 400, description = "a bad range or query", body = Problem, content_type = PROBLEM_CONTENT_TYPE),
        (status = 404, description = "unknown pipeline, version or partition", body = Problem, content_type = PROBLEM_CONTENT_TYPE),
        (status = 413, description = "a body over the upload limit", body = Problem, content_type = PROBLEM_CONTENT_TYPE),
        (status = 415, description = "a body that is not `application/wasm`", body = Problem, content_type = PROBLEM_CONTENT_TYPE),
        (status = 422, description = "a candidate that does not compile or fit the world", body = Problem, content_type = PROBLEM_CONTENT_TYPE),
    )
)]
pub(crate) async fn replay(
    State(state): State<AppState>,
    Path(pipeline): Path<String>,
    headers: HeaderMap,
    query: Result<Query<ReplayQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let Query(query) = query.map_err(|e| {
        Problem::bad_request(
            "bad-query",
            format!(
                "{}; the parameters are partition, from_offset or from_time, to_offset or to_time, version, examples, schemas",
                e.body_text()
            ),
        )
    })?;
    let from = bound("from", query.from_offset, query.from_time.as_deref())?;
    let to = bound("to", query.to_offset, query.to_time.as_deref())?;
    let schemas = match query.schemas.as_deref() {
        None => weir_engine::ReplaySchemas::default(),
        Some(name) => weir_engine::ReplaySchemas::parse(name).ok_or_else(|| {
            Problem::bad_request(
                "bad-query",
                format!(
                    "schemas={name:?} is not one of {}",
                    weir_engine::ReplaySchemas::NAMES.join(", ")
                ),
            )
        })?,
    };
    let body = body?;
    let candidate = if body.is_empty() {
        None
    } else {
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/wasm");
        if !matches!(
            content_type.split(';').next().map(str::trim),
            Some("application/wasm" | "application/octet-stream")
        ) {
            return Err(Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
                format!(
                    "the body is the candidate component; send it as application/wasm, not {content_type}"
                ),
            ));
        }
        Some(body.to_vec())
    };
    let replay = state
        .node
        .replay(ReplayRequest {
            pipeline,
            partition: query.partition,
            from,
            to,
            version: query.version,
            candidate,
            examples: query.examples.unwrap_or(DEFAULT_EXAMPLES),
            schemas,
        })
        .await?;

    let (tx, mut rx) = mpsc::channel::<Bytes>(16);
    let progress = replay.progress();
    let cancel = replay.cancel_token();
    tokio::spawn(async move {
        // However this task ends (done, or the client went away), the replay stops.
        let _stop = cancel.drop_guard();
        let mut run = tokio::spawn(replay.run());
        // The replay's sender is gone once it finished, so compare values rather than
        // asking the channel what changed.
        let mut sent = *progress.borrow();
        if tx.send(progress_line(sent)).await.is_err() {
            return;
        }
        let mut tick = tokio::time::interval(PROGRESS_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                result = &mut run => {
                    let last = *progress.borrow();
                    if last != sent {
                        let _ = tx.send(progress_line(last)).await;
                    }
                    let report = match result {
                        Ok(Ok(report)) => ReplayLine::Report(report.into()),
                        Ok(Err(e)) => ReplayLine::Error(Problem::from(e)),
                        Err(e) => ReplayLine::Error(Problem::from(weir_engine::Error::Task(
                            e.to_string(),
                        ))),
                    };
                    let _ = tx.send(line(report)).await;
                    return;
                }
                _ = tick.tick() => {
                    let now = *progress.borrow();
                    if now != sent {
                        sent = now;
                        if tx.send(progress_line(now)).await.is_err() {
                            return;
                        }
                    }
                }
                _ = tx.closed() => return,
            }
        }
    });
    let lines =
        futures::stream::poll_fn(move |cx| rx.poll_recv(cx).map(|b| b.map(Ok::<_, Infallible>)));
    let mut response = Body::from_stream(lines).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(NDJSON_CONTENT_TYPE),
    );
    Ok(response)
}
