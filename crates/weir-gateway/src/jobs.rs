//! `GET /v1/jobs/{id}`: a long-running job a job route accepted.
//!
//! Who may read a job is decided here, not by the front door: the callers of the route
//! that accepted it (`Action::Invoke`), or anyone for a public route's job. An unknown id
//! is answered `404` only to an authenticated caller, so the answer does not tell an
//! anonymous one which ids exist.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use weir_auth::Action;

use crate::api::jobs::Job;
use crate::{AppState, PROBLEM_CONTENT_TYPE, Problem, auth};

#[utoipa::path(
    get,
    path = "/v1/jobs/{id}",
    operation_id = "get_job",
    tag = "jobs",
    summary = "A long-running job",
    description = "Where a job a job route (`[routes.NAME] job = true`) accepted is: `accepted` (stored; its pipeline has not finished it; the answer carries `Retry-After`), `succeeded` with the events the pipeline's function returned for it, or `failed` with its dead letter. The callers of the route may read its jobs; a public route's jobs need no credential.",
    params(("id" = String, Path, description = "the job's id, from the route's `202` answer")),
    responses(
        (status = 200, description = "the job", body = Job),
        (status = 401, description = "no valid credential", body = Problem, content_type = PROBLEM_CONTENT_TYPE),
        (status = 403, description = "the caller may not call the job's route", body = Problem, content_type = PROBLEM_CONTENT_TYPE),
        (status = 404, description = "no such job", body = Problem, content_type = PROBLEM_CONTENT_TYPE),
        (status = 503, description = "the jobs view is behind the log, or the log is unavailable", body = Problem, content_type = PROBLEM_CONTENT_TYPE),
    )
)]
#[tracing::instrument(skip_all, fields(job = %id))]
pub(crate) async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let authenticator = state.auth.get();
    // A credential sent is checked (once) before anything is looked up; an anonymous
    // caller is asked for one only where the job needs it.
    let mut principal = match authenticator.as_deref() {
        Some(auth) if headers.contains_key(header::AUTHORIZATION) => {
            Some(auth::principal(auth, &headers)?)
        }
        _ => None,
    };
    let job = match state.node.job(&id).await {
        Err(unknown @ weir_engine::Error::UnknownJob { .. }) => {
            // Only to an authenticated caller: an anonymous one learns no ids.
            if let Some(auth) = authenticator.as_deref()
                && principal.is_none()
            {
                auth::principal(auth, &headers)?;
            }
            return Err(unknown.into());
        }
        job => job?,
    };
    if let Some(auth) = authenticator.as_deref() {
        // Every route that appended a request of the job must admit the caller.
        let routes: std::collections::BTreeSet<&str> =
            job.requests.iter().map(|r| r.route.as_str()).collect();
        for route in routes {
            if state.node.route_spec(route).is_some_and(|r| r.public) {
                continue;
            }
            if principal.is_none() {
                principal = Some(auth::principal(auth, &headers)?);
            }
            if let Some(caller) = &principal {
                auth::permit(auth, caller, Action::Invoke(route))?;
            }
        }
    }
    let job = Job::from(job);
    let pending = matches!(job.status, crate::api::jobs::JobState::Accepted);
    let mut response = Json(job).into_response();
    if pending {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    Ok(response)
}
