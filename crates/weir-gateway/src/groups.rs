//! `/v1/groups`: consumer groups' positions, and resetting them.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use weir_engine::StartFrom;

use crate::api::groups::{GroupQuery, GroupReset, GroupStatus, ResetGroup};
use crate::topics::parse_start;
use crate::{AppState, PROBLEM_CONTENT_TYPE, Problem};

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
    let offsets = state.node.reset_group(&group, &reset.topic, to).await?;
    Ok(Json(GroupReset {
        group,
        topic: reset.topic,
        offsets: offsets.into_iter().map(Into::into).collect(),
    }))
}
