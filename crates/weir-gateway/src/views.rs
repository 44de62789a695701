//! `/v1/views/{view}`: querying CQRS views.

use std::convert::Infallible;
use std::time::Duration;

use axum::Extension;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures::{Stream, StreamExt};
use weir_engine::{ViewFilter, ViewRequest};

use crate::api::views::ViewPage;
use crate::auth::Caller;
use crate::{AppState, PROBLEM_CONTENT_TYPE, Problem};

/// The longest a query waits for its consistency tokens.
const MAX_WAIT: Duration = Duration::from_secs(30);
/// How long a query waits for them unless it says.
const DEFAULT_WAIT: Duration = Duration::from_secs(5);

const OPS: [&str; 6] = ["eq", "lt", "lte", "gt", "gte", "prefix"];

/// The query string as a view request: `COLUMN=VALUE` or `COLUMN.OP=VALUE` filters,
/// `sort=[-]COLUMN`, `limit`, `page`, `consistency` (repeatable, or comma-separated) and
/// `wait_ms`.
fn request(params: Vec<(String, String)>) -> Result<ViewRequest, Problem> {
    let bad = |detail: String| Problem::bad_request("invalid-view-query", detail);
    let mut request = ViewRequest {
        wait: DEFAULT_WAIT,
        ..ViewRequest::default()
    };
    for (name, value) in params {
        match name.as_str() {
            "sort" => {
                if request.sort.is_some() {
                    return Err(bad("give sort once".into()));
                }
                request.sort = Some(match value.strip_prefix('-') {
                    Some(column) => (column.to_owned(), true),
                    None => (value, false),
                });
            }
            "limit" => {
                request.limit = Some(
                    value
                        .parse()
                        .map_err(|_| bad(format!("limit={value:?} is not a number of rows")))?,
                );
            }
            "page" => request.page = Some(value),
            "consistency" => request.consistency.extend(
                value
                    .split(',')
                    .filter(|t| !t.is_empty())
                    .map(str::to_owned),
            ),
            "wait_ms" => {
                let ms: u64 = value
                    .parse()
                    .map_err(|_| bad(format!("wait_ms={value:?} is not milliseconds")))?;
                request.wait = Duration::from_millis(ms).min(MAX_WAIT);
            }
            _ => {
                let (column, op) = match name.rsplit_once('.') {
                    Some((column, op)) if OPS.contains(&op) => (column, op),
                    _ => (name.as_str(), "eq"),
                };
                request.filters.push(ViewFilter {
                    column: column.to_owned(),
                    op: op.to_owned(),
                    value,
                });
            }
        }
    }
    Ok(request)
}

/// `GET /v1/views/{view}`.
#[utoipa::path(
    get,
    path = "/v1/views/{view}",
    operation_id = "query_view",
    tag = "views",
    summary = "Query a view",
    description = "Rows of a view, filtered on its indexed columns (the key's first column and `indexes`): `COLUMN=VALUE` (equality), or `COLUMN.gt`, `.gte`, `.lt`, `.lte` (ranges) and `.prefix` (text starting with VALUE); all filters must hold. `sort=COLUMN` or `sort=-COLUMN` (descending) on an indexed column, ties broken by the key; `limit` rows (default 100, at most 1000); `page` the `next_page` of the page before, with the same filters and sort. `consistency=TOKEN` (from a command's answer; `TOPIC:PARTITION:OFFSET`, repeatable) waits until the view has projected every event below OFFSET in that partition, at most `wait_ms` (default 5000, at most 30000), else `503 view-behind`.",
    params(
        ("view" = String, Path, description = "a view the app declares"),
    ),
    responses(
        (status = 200, description = "a page of rows", body = ViewPage),
        (status = 400, description = "a filter, sort, limit, page or token that does not fit the view", body = Problem, content_type = PROBLEM_CONTENT_TYPE),
        (status = 404, description = "no such view", body = Problem, content_type = PROBLEM_CONTENT_TYPE),
        (status = 503, description = "the view has not reached the consistency token in time (`view-behind`), or its store is unavailable", body = Problem, content_type = PROBLEM_CONTENT_TYPE),
    )
)]
pub(crate) async fn query(
    State(state): State<AppState>,
    Path(view): Path<String>,
    params: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<axum::Json<ViewPage>, Problem> {
    let Query(params) =
        params.map_err(|e| Problem::bad_request("invalid-view-query", e.body_text()))?;
    let page = state.node.view_query(&view, request(params)?).await?;
    Ok(axum::Json(page.into()))
}

/// `POST /v1/views/{view}/rebuild`.
#[utoipa::path(
    post,
    path = "/v1/views/{view}/rebuild",
    operation_id = "rebuild_view",
    tag = "views",
    summary = "Rebuild a view",
    description = "Projects the view's sources from their earliest events into a new table while the view keeps serving from its own, then, once the new table has caught up, swaps it in (rows, indexes and progress in one store transaction). Answers at once; `GET /v1/status` follows the rebuild (`views[].rebuild`). Admin operation `views`.",
    params(
        ("view" = String, Path, description = "a view the app declares"),
    ),
    responses(
        (status = 202, description = "the rebuild started", body = crate::api::views::RebuildStarted),
        (status = 404, description = "no such view", body = Problem, content_type = PROBLEM_CONTENT_TYPE),
        (status = 409, description = "a rebuild of the view is running (`rebuild-running`)", body = Problem, content_type = PROBLEM_CONTENT_TYPE),
    )
)]
pub(crate) async fn rebuild(
    State(state): State<AppState>,
    Path(view): Path<String>,
) -> Result<
    (
        axum::http::StatusCode,
        axum::Json<crate::api::views::RebuildStarted>,
    ),
    Problem,
> {
    state.node.rebuild_view(&view)?;
    Ok((
        axum::http::StatusCode::ACCEPTED,
        axum::Json(crate::api::views::RebuildStarted {
            view,
            rebuild: "running".to_owned(),
        }),
    ))
}

/// `GET /v1/views/{view}/stream`.
#[utoipa::path(
    get,
    path = "/v1/views/{view}/stream",
    operation_id = "stream_view",
    tag = "views",
    summary = "Follow a view's changes live",
    description = "Server-Sent Events, from now on: one message per row change the view applies, in order per source partition. Its event is `upsert` (the row's columns the change sets; the others keep their values) or `delete` (the key columns), its `data` the columns as a JSON object, and its `id` the consistency token of the view after the change's batch (`TOPIC:PARTITION:OFFSET`). A reader that falls more than 1,024 batches behind gets a message of event `error` and the stream ends: query the view, then follow it again. The stream ends when the node shuts down.",
    params(
        ("view" = String, Path, description = "a view the app declares"),
    ),
    responses(
        (status = 200, description = "the change stream", body = String, content_type = "text/event-stream"),
        (status = 404, description = "no such view", body = Problem, content_type = PROBLEM_CONTENT_TYPE),
        (status = 429, description = "too many live streams for this caller", body = Problem, content_type = PROBLEM_CONTENT_TYPE),
    )
)]
pub(crate) async fn stream(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(view): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, Problem> {
    // Held for as long as the stream lives.
    let permit = state.subscriptions.acquire(&caller.key)?;
    let changes = state
        .node
        .follow_view(&view)?
        .take_until(state.stopping.clone().cancelled_owned());
    let messages = changes.flat_map(move |item| {
        let _held = &permit;
        let messages: Vec<Result<SseEvent, Infallible>> = match item {
            Ok(batch) => batch
                .changes
                .iter()
                .map(|(op, row)| {
                    Ok(SseEvent::default()
                        .event(op)
                        .id(batch.token.clone())
                        .data(serde_json::Value::Object(row.clone()).to_string()))
                })
                .collect(),
            Err(e) => vec![Ok(SseEvent::default().event("error").data(e.to_string()))],
        };
        futures::stream::iter(messages)
    });
    Ok(Sse::new(messages).keep_alive(KeepAlive::default()))
}
