//! Long-running jobs: `GET /v1/jobs/{id}`.

use serde::Serialize;
use utoipa::ToSchema;

/// Where a job is.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Stored; its pipeline has not finished it.
    Accepted,
    /// Its pipeline finished it: `results` holds what the function returned.
    Succeeded,
    /// Its pipeline dead-lettered it: `error` says why.
    Failed,
}

/// Where a job's request is stored.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct JobRequest {
    /// The job route that accepted it.
    pub route: String,
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
    /// When the log appended it (RFC 3339).
    pub accepted_at: Option<String>,
}

/// Why a job failed.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct JobError {
    /// The dead letter's `dlqreason`: `trap`, `deadline`, `retries_exhausted`, ...
    pub reason: Option<String>,
    /// Its `dlqerror`.
    pub message: Option<String>,
    /// The dead letter: the request with its `dlq*` attributes.
    #[schema(value_type = Object)]
    pub dead_letter: serde_json::Value,
}

/// A long-running job accepted by a job route (`[routes.NAME] job = true`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Job {
    /// The job's id: its request's event id (and `correlationid`).
    pub id: String,
    /// The route that accepted it.
    pub route: String,
    pub status: JobState,
    /// Its request, and any repeat of it (a redelivered webhook).
    pub requests: Vec<JobRequest>,
    /// The CloudEvents the pipeline's function returned for it (structured JSON).
    #[schema(value_type = Vec<Object>)]
    pub results: Vec<serde_json::Value>,
    pub error: Option<JobError>,
}

impl From<weir_engine::JobStatus> for Job {
    fn from(job: weir_engine::JobStatus) -> Job {
        Job {
            id: job.id,
            route: job.route,
            status: match job.status {
                weir_engine::JobState::Accepted => JobState::Accepted,
                weir_engine::JobState::Succeeded => JobState::Succeeded,
                weir_engine::JobState::Failed => JobState::Failed,
            },
            requests: job
                .requests
                .into_iter()
                .map(|r| JobRequest {
                    route: r.route,
                    topic: r.topic,
                    partition: r.partition,
                    offset: r.offset,
                    accepted_at: r.accepted_at,
                })
                .collect(),
            results: job.results,
            error: job.error.map(|e| JobError {
                reason: e.reason,
                message: e.message,
                dead_letter: e.dead_letter,
            }),
        }
    }
}
