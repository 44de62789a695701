//! `/v1/groups`: consumer groups' positions, and resetting them.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{OriginalUri, Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use weir_engine::StartFrom;

use crate::api::groups::{GroupQuery, GroupReset, GroupStatus, ResetGroup};
use crate::api::topics::Position;
use crate::topics::parse_start;
use crate::{AppState, PROBLEM_CONTENT_TYPE, Problem, forward};

/// `GET /v1/groups/{group}?topic=T`.
#[utoipa::path(
    get,
    path = "/v1/groups/{group}",
    operation_id = "get_group",
    tag = "groups",
    summary = "A consumer group's position",
    description = "The group's committed offset, end and lag in each partition of the topic, and its live members.",
    params(("group" = String, Path, description = "the group's name"), GroupQuery),
    responses(
        (status = 200, description = "the group's position", body = GroupStatus),
        (status = 400, description = "no `topic`, or a bad group name", body = Problem, content_type = PROBLEM_CONTENT_TYPE),
        (status = 404, description = "unknown topic", body = Problem, content_type = PROBLEM_CONTENT_TYPE),
    )
)]
pub(crate) async fn status(
    State(state): State<AppState>,
    Path(group): Path<String>,
    query: Result<Query<GroupQuery>, QueryRejection>,
) -> Result<Json<GroupStatus>, Problem> {
    let Query(query) = query.map_err(|e| {
        Problem::bad_request("bad-query", format!("{}; pass ?topic=NAME", e.body_text()))
    })?;
    Ok(Json(
        state.node.group_status(&group, &query.topic).await?.into(),
    ))
}

/// `POST /v1/groups/{group}/reset`.
#[utoipa::path(
    post,
    path = "/v1/groups/{group}/reset",
    operation_id = "reset_group",
    tag = "groups",
    summary = "Reset a consumer group",
    description = "Moves the group's position in every partition of the topic. A pipeline's group is reset while the pipeline runs; a subscribers' group only while it has no members.",
    params(("group" = String, Path, description = "the group's name")),
    request_body = ResetGroup,
    responses(
        (status = 200, description = "the group's new position", body = GroupReset),
        (status = 400, description = "a bad body or position", body = Problem, content_type = PROBLEM_CONTENT_TYPE),
        (status = 404, description = "unknown topic", body = Problem, content_type = PROBLEM_CONTENT_TYPE),
        (status = 409, description = "the group has members, or is a pipeline's that does not read the topic", body = Problem, content_type = PROBLEM_CONTENT_TYPE),
    )
)]
pub(crate) async fn reset(
    State(state): State<AppState>,
    Path(group): Path<String>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<GroupReset>, Problem> {
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
    let partitions = reset.partitions.as_deref();
    // On a fleet each partition's reset is applied by the member running it: the others'
    // partitions go to them first (a forwarded reset is applied where it lands).
    let elsewhere = if forward::was_forwarded(&headers) {
        Vec::new()
    } else {
        state
            .node
            .reset_elsewhere(&group, &reset.topic, partitions)
            .await?
    };
    let mut offsets: Vec<Position> = Vec::new();
    let mut theirs = Vec::new();
    let me = state.node.member_id().unwrap_or_default();
    for (member, parts) in elsewhere {
        if member.url.is_empty() {
            return Err(partial(
                &offsets,
                format!(
                    "member {} runs partitions {parts:?} but gives no address to reach it (start it with --advertise-url)",
                    member.id
                ),
            ));
        }
        let body = serde_json::json!({"topic": reset.topic, "to": reset.to, "partitions": parts});
        let answer = forward::send(
            &member,
            &me,
            Method::POST,
            uri.path(),
            &headers,
            Bytes::from(body.to_string()),
        )
        .await;
        let reset_there = match answer {
            Ok(answer) if answer.status().is_success() => answer.json::<GroupReset>().await.ok(),
            Ok(answer) => {
                let status = answer.status();
                let detail = answer.text().await.unwrap_or_default();
                return Err(partial(
                    &offsets,
                    format!("member {} answered {status}: {detail}", member.id),
                ));
            }
            Err(e) => {
                return Err(partial(
                    &offsets,
                    format!("member {} did not answer: {e}", member.id),
                ));
            }
        };
        let Some(reset_there) = reset_there else {
            return Err(partial(
                &offsets,
                format!("member {} gave an answer weir cannot read", member.id),
            ));
        };
        offsets.extend(reset_there.offsets);
        theirs.extend(parts);
    }
    let here: Option<Vec<u32>> = match (partitions, theirs.is_empty()) {
        (None, true) => None,
        (Some(ps), _) => Some(ps.iter().copied().filter(|p| !theirs.contains(p)).collect()),
        (None, false) => {
            let all = state.node.topic_info(&reset.topic).await?.partitions;
            Some((0..all).filter(|p| !theirs.contains(p)).collect())
        }
    };
    if here.as_ref().is_none_or(|h| !h.is_empty()) {
        let mine = state
            .node
            .reset_group_partitions(&group, &reset.topic, to, here.as_deref())
            .await
            .map_err(|e| {
                if offsets.is_empty() {
                    Problem::from(e)
                } else {
                    partial(&offsets, Problem::from(e).detail)
                }
            })?;
        offsets.extend(mine.into_iter().map(Position::from));
    }
    offsets.sort_by_key(|p| p.partition);
    Ok(Json(GroupReset {
        group,
        topic: reset.topic,
        offsets,
    }))
}

/// A fleet-wide reset that stopped part-way: which partitions moved, and why the rest
/// did not.
fn partial(done: &[Position], why: String) -> Problem {
    let moved: Vec<u32> = done.iter().map(|p| p.partition).collect();
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "reset-incomplete",
        "Service unavailable",
        format!("the reset moved partitions {moved:?} only: {why}; send it again to finish it"),
    )
}
