//! Long-running jobs: a route with `topic` and `job = true` answers `202` with a job URL
//! once the request's event is durable (`routes.rs`); the work is the one pipeline that
//! reads the topic; `GET /v1/jobs/{id}` reports the job.
//!
//! A job's id is the `correlationid` the route gives its request (a fresh UUIDv7, never
//! the sender's delivery id, which others may know). Its status is weir's own view,
//! `weir-jobs` (a table of the node's SQLite view store, projected like any view, so it
//! survives restarts and is exactly-once): its sources are the job topics, and the `to`
//! topics and dead-letter topic of the pipelines that read them. A row per event: a
//! request (an event of a job topic whose `source` is `/routes/R` for a job route R of
//! that topic and which carries a `correlationid`; other events of the topic are not
//! jobs), each output (the pipeline gives every output its input's `correlationid`), and
//! each dead letter (the input unchanged, so its `correlationid` too). Rows are keyed by
//! the event's position, so projecting an event again changes nothing.
//!
//! **Invariant:** a job is reported `succeeded` only when its results are in the view:
//! the view is brought up to the log's ends before it is read, and a job without outputs
//! (the function returned none) is `succeeded` only once the pipeline's group committed
//! past its latest request, after which the view is brought to the ends again: the
//! pipeline commits outputs and offset together (or outputs first, at-least-once
//! backends), so an output the commit covers is below those ends.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::PoisonError;
use std::time::Duration;

use serde::Serialize;
use weir_cloudevents::ExtensionValue;
use weir_manifest::{Manifest, RouteSpec, ViewColumnType, ViewSpec, ViewStoreSpec};
use weir_views::{Row, RowChange, Value};

use crate::codec::LoggedEvent;
use crate::routing::{CORRELATION_ID, dead_letter};
use crate::views::{MAX_LIMIT, ViewFilter, ViewRequest};
use crate::{Error, Node, Result};

/// How long a status request waits for the jobs view to reach the log's ends.
const CATCH_UP: Duration = Duration::from_secs(5);

const REQUEST: &str = "request";
const RESULT: &str = "result";
const FAILED: &str = "failed";

/// The `weir-jobs` view's projection: which topic plays which part.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct JobsProjection {
    /// A job topic and the job routes appending to it.
    requests: BTreeMap<String, Vec<String>>,
    /// The `to` topics of the pipelines doing jobs' work.
    outputs: BTreeSet<String>,
    /// Their dead-letter topics.
    dead_letters: BTreeSet<String>,
}

/// The jobs view of `manifest`, if it has job routes.
pub(crate) fn jobs_view(manifest: &Manifest) -> Option<(ViewSpec, JobsProjection)> {
    let mut projection = JobsProjection::default();
    for (name, route) in &manifest.routes {
        let (Some(topic), Some((_, pipeline))) = (&route.topic, manifest.job_pipeline(route))
        else {
            continue;
        };
        projection
            .requests
            .entry(topic.clone())
            .or_default()
            .push(name.clone());
        projection.outputs.extend(pipeline.to.iter().cloned());
        projection.dead_letters.insert(pipeline.dead_letter.clone());
    }
    if projection.requests.is_empty() {
        return None;
    }
    let sources: BTreeSet<String> = projection
        .requests
        .keys()
        .chain(&projection.outputs)
        .chain(&projection.dead_letters)
        .cloned()
        .collect();
    use ViewColumnType::{Integer, Json, Text};
    let columns = [
        ("key", Text),
        ("job", Text),
        ("kind", Text),
        ("route", Text),
        ("topic", Text),
        ("partition", Integer),
        ("offset", Integer),
        ("time", Text),
        ("appended", Integer),
        ("event", Json),
    ];
    let spec = ViewSpec {
        function: String::new(),
        sources: sources.into_iter().collect(),
        columns: columns
            .into_iter()
            .map(|(name, ty)| (name.to_owned(), ty))
            .collect(),
        key: vec!["key".to_owned()],
        indexes: vec!["job".to_owned()],
        store: ViewStoreSpec::Sqlite,
    };
    Some((spec, projection))
}

impl JobsProjection {
    /// The rows `logged` makes: none for an output without a `correlationid`.
    pub(crate) fn project(&self, logged: &LoggedEvent) -> Vec<RowChange> {
        let event = &logged.event;
        let correlation = match event.extensions.get(CORRELATION_ID) {
            Some(ExtensionValue::String(id)) => Some(id.as_str()),
            _ => None,
        };
        let mut rows = Vec::new();
        // A request: appended by a job route of the topic (its source says which), with
        // the job's id as its correlationid.
        let route = self.requests.get(&logged.topic).and_then(|routes| {
            let named = event.source.strip_prefix("/routes/")?;
            routes.iter().find(|r| *r == named)
        });
        if let (Some(route), Some(job)) = (route, correlation) {
            rows.push(row(job, REQUEST, route, logged, false));
        }
        if self.outputs.contains(&logged.topic)
            && let Some(job) = correlation
        {
            rows.push(row(job, RESULT, "", logged, true));
        }
        if self.dead_letters.contains(&logged.topic)
            && let Some(job) = correlation
        {
            rows.push(row(job, FAILED, "", logged, true));
        }
        rows
    }
}

fn row(job: &str, kind: &str, route: &str, logged: &LoggedEvent, event: bool) -> RowChange {
    let time = jiff::Timestamp::from_millisecond(logged.timestamp_ms)
        .map(|t| Value::Text(t.to_string()))
        .unwrap_or(Value::Null);
    let event = if event {
        Value::Json(logged.event.to_json_value().to_string())
    } else {
        Value::Null
    };
    let row: Row = [
        (
            "key",
            Value::Text(format!(
                "{kind}/{}/{}/{}",
                logged.topic, logged.partition, logged.offset
            )),
        ),
        ("job", Value::Text(job.to_owned())),
        ("kind", Value::Text(kind.to_owned())),
        ("route", Value::Text(route.to_owned())),
        ("topic", Value::Text(logged.topic.clone())),
        ("partition", Value::Integer(i64::from(logged.partition))),
        ("offset", Value::Integer(logged.offset as i64)),
        ("time", time),
        ("appended", Value::Integer(logged.timestamp_ms)),
        ("event", event),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value))
    .collect();
    RowChange::Upsert(row)
}

/// Where a job's request is stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobRequest {
    /// The job route that accepted it.
    pub route: String,
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
    /// When the log appended it (RFC 3339).
    pub accepted_at: Option<String>,
}

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Stored; its pipeline has not finished it.
    Accepted,
    /// Its pipeline finished it: `results` holds what the function returned.
    Succeeded,
    /// Its pipeline dead-lettered it: `error` says why.
    Failed,
}

/// Why a job failed: the dead letter of its request.
#[derive(Debug, Clone, Serialize)]
pub struct JobError {
    /// `dlqreason`: `trap`, `deadline`, `retries_exhausted`, ...
    pub reason: Option<String>,
    /// `dlqerror`.
    pub message: Option<String>,
    /// The dead letter itself (the request with its `dlq*` attributes).
    pub dead_letter: serde_json::Value,
}

/// A job, as `GET /v1/jobs/{id}` reports it.
#[derive(Debug, Clone, Serialize)]
pub struct JobStatus {
    pub id: String,
    pub route: String,
    pub status: JobState,
    /// Its request, and any repeat of it (a redelivered webhook).
    pub requests: Vec<JobRequest>,
    /// The events the pipeline's function returned for it, in log order per topic.
    pub results: Vec<serde_json::Value>,
    pub error: Option<JobError>,
}

type ViewRow = serde_json::Map<String, serde_json::Value>;

fn text<'a>(row: &'a ViewRow, column: &str) -> &'a str {
    row.get(column).and_then(|v| v.as_str()).unwrap_or_default()
}

fn number(row: &ViewRow, column: &str) -> u64 {
    row.get(column).and_then(|v| v.as_u64()).unwrap_or_default()
}

fn extension(event: &serde_json::Value, name: &str) -> Option<String> {
    event.get(name).map(|v| match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    })
}

impl JobStatus {
    /// The job the rows of `id` describe, if any row is a request of it; `processed`: a
    /// request its pipeline committed past (it counts only if it is still the latest).
    fn of(id: &str, mut rows: Vec<ViewRow>, processed: Option<&JobRequest>) -> Result<JobStatus> {
        rows.sort_by_key(|row| number(row, "appended"));
        let rows = &rows;
        let by_kind = |kind: &'static str| rows.iter().filter(move |r| text(r, "kind") == kind);
        let requests: Vec<JobRequest> = by_kind(REQUEST)
            .map(|row| JobRequest {
                route: text(row, "route").to_owned(),
                topic: text(row, "topic").to_owned(),
                partition: number(row, "partition") as u32,
                offset: number(row, "offset"),
                accepted_at: row.get("time").and_then(|t| t.as_str()).map(str::to_owned),
            })
            .collect();
        let Some(latest) = requests.last().cloned() else {
            return Err(Error::UnknownJob { id: id.to_owned() });
        };
        // Each output once (a redelivery or an at-least-once retry may repeat one).
        let mut seen = BTreeSet::new();
        let results: Vec<serde_json::Value> = by_kind(RESULT)
            .filter_map(|row| row.get("event").cloned())
            .filter(|event| seen.insert(event.get("id").cloned().unwrap_or_default().to_string()))
            .collect();
        // The dead letter of the latest request, if it was dead-lettered: a re-driven job
        // is a request again, and reported by how that one ends.
        let is_latest = |event: &serde_json::Value| {
            let of = |name: &str| extension(event, name).unwrap_or_default();
            of(dead_letter::TOPIC) == latest.topic
                && of(dead_letter::PARTITION) == latest.partition.to_string()
                && of(dead_letter::OFFSET) == latest.offset.to_string()
        };
        let error = by_kind(FAILED)
            .filter_map(|row| row.get("event").cloned())
            .rfind(is_latest)
            .map(|event| JobError {
                reason: extension(&event, dead_letter::REASON),
                message: extension(&event, dead_letter::ERROR),
                dead_letter: event,
            });
        let status = match (&error, results.is_empty()) {
            (_, false) => JobState::Succeeded,
            (Some(_), true) => JobState::Failed,
            (None, true) if processed == Some(&latest) => JobState::Succeeded,
            (None, true) => JobState::Accepted,
        };
        Ok(JobStatus {
            id: id.to_owned(),
            route: latest.route,
            status,
            requests,
            results,
            error: error.filter(|_| status == JobState::Failed),
        })
    }
}

impl Node {
    /// Job `id`: accepted, succeeded with its results, or failed with why.
    pub async fn job(&self, id: &str) -> Result<JobStatus> {
        let job = JobStatus::of(id, self.job_rows(id).await?, None)?;
        if job.status != JobState::Accepted {
            return Ok(job);
        }
        // Finished without outputs? Its pipeline committed past its latest request.
        let group = {
            let manifest = self.manifest.lock().unwrap_or_else(PoisonError::into_inner);
            manifest.as_ref().and_then(|m| {
                let route = m.routes.get(&job.route)?;
                m.job_pipeline(route).map(|(_, p)| p.group.clone())
            })
        };
        let (Some(group), Some(latest)) = (group, job.requests.last()) else {
            return Ok(job);
        };
        let committed = self
            .log
            .committed_offset(&group, &latest.topic, latest.partition)
            .await?;
        if committed.is_none_or(|next| next <= latest.offset) {
            return Ok(job);
        }
        // What the commit covered is in the log now: read the view again at its ends (a
        // newer request, a re-drive that came meanwhile, is reported by its own state).
        JobStatus::of(id, self.job_rows(id).await?, Some(latest))
    }

    /// The jobs view's rows of job `id`, once the view has projected what the log holds.
    async fn job_rows(&self, id: &str) -> Result<Vec<ViewRow>> {
        let unknown = || Error::UnknownJob { id: id.to_owned() };
        let sources = self
            .views
            .sources(RouteSpec::JOBS_VIEW)
            .ok_or_else(unknown)?;
        let mut consistency = Vec::with_capacity(sources.len());
        for (topic, partition) in sources {
            let end = self.log.offsets(&topic, partition).await?.end;
            consistency.push(format!("{topic}:{partition}:{end}"));
        }
        let page = self
            .views
            .query(
                RouteSpec::JOBS_VIEW,
                ViewRequest {
                    filters: vec![ViewFilter {
                        column: "job".to_owned(),
                        op: "eq".to_owned(),
                        value: id.to_owned(),
                    }],
                    sort: None,
                    limit: Some(MAX_LIMIT),
                    page: None,
                    consistency,
                    wait: CATCH_UP,
                },
            )
            .await?;
        Ok(page.rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(
        kind: &str,
        partition: u64,
        offset: u64,
        appended: u64,
        event: serde_json::Value,
    ) -> ViewRow {
        let serde_json::Value::Object(row) = serde_json::json!({
            "key": format!("{kind}/t/{partition}/{offset}"),
            "job": "j",
            "kind": kind,
            "route": if kind == REQUEST { "r" } else { "" },
            "topic": if kind == REQUEST { "work" } else { "other" },
            "partition": partition,
            "offset": offset,
            "appended": appended,
            "event": event,
        }) else {
            unreachable!()
        };
        row
    }

    fn dead_letter(partition: u64, offset: u64) -> serde_json::Value {
        serde_json::json!({"id": "in", "dlqtopic": "work", "dlqpartition": partition,
            "dlqoffset": offset, "dlqreason": "fatal", "dlqerror": "poison"})
    }

    #[test]
    fn a_job_is_reported_by_how_its_latest_request_ended() {
        let request = row(REQUEST, 1, 7, 10, serde_json::Value::Null);
        let failed = row(FAILED, 0, 0, 20, dead_letter(1, 7));
        let state = |rows: Vec<ViewRow>, processed: Option<&JobRequest>| {
            JobStatus::of("j", rows, processed).unwrap().status
        };
        let first = JobStatus::of("j", vec![request.clone()], None)
            .unwrap()
            .requests[0]
            .clone();
        assert_eq!(state(vec![request.clone()], None), JobState::Accepted);
        assert_eq!(
            state(vec![request.clone()], Some(&first)),
            JobState::Succeeded,
            "done, no outputs"
        );
        let job = JobStatus::of("j", vec![failed.clone(), request.clone()], None).unwrap();
        assert_eq!(job.status, JobState::Failed);
        let error = job.error.unwrap();
        assert_eq!(
            (error.reason.as_deref(), error.message.as_deref()),
            (Some("fatal"), Some("poison"))
        );
        // Re-driven: a new request of the same job, not yet done; then done without outputs.
        let again = row(REQUEST, 0, 3, 30, serde_json::Value::Null);
        let rows = vec![again.clone(), failed.clone(), request.clone()];
        let job = JobStatus::of("j", rows.clone(), None).unwrap();
        assert_eq!((job.status, job.requests.len()), (JobState::Accepted, 2));
        assert_eq!(job.requests[1].offset, 3, "the latest last");
        assert!(job.error.is_none());
        let latest = job.requests[1].clone();
        assert_eq!(
            state(rows.clone(), Some(&first)),
            JobState::Accepted,
            "a commit past the first request says nothing of the re-driven one"
        );
        assert_eq!(state(rows, Some(&latest)), JobState::Succeeded);
        // Outputs, one of them repeated by an at-least-once retry: each once.
        let output = serde_json::json!({"id": "out-1"});
        let rows = vec![
            request.clone(),
            row(RESULT, 0, 1, 11, output.clone()),
            row(RESULT, 0, 2, 12, output.clone()),
            row(RESULT, 0, 3, 13, serde_json::json!({"id": "out-2"})),
        ];
        let job = JobStatus::of("j", rows, None).unwrap();
        assert_eq!(job.status, JobState::Succeeded);
        assert_eq!(job.results.len(), 2);
        // Rows of no request: no such job.
        assert!(matches!(
            JobStatus::of("j", vec![failed], None),
            Err(Error::UnknownJob { .. })
        ));
    }
}
