//! Pipelines: `/v1/pipelines`, `/v1/pipelines/{name}` and their re-drives.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// A pipeline: what it connects, its state, counters since the node started, and lag.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Pipeline {
    pub name: String,
    pub function: String,
    /// The function version it runs now.
    pub version: String,
    /// The consumer group it reads as.
    pub group: String,
    pub from: Vec<String>,
    pub to: Vec<String>,
    pub dead_letter: String,
    pub ordering: Ordering,
    pub concurrency: u32,
    /// How long a partition waits for a fuller batch before it handles fewer events, in
    /// milliseconds (`linger_ms`; 0: it never waits).
    pub linger_ms: u64,
    #[serde(flatten)]
    pub state: PipelineState,
    /// Events handled (outputs committed) since the node started.
    pub processed: u64,
    /// Batches committed since the node started; the events handled (processed,
    /// filtered and dead-lettered) over it is how many a commit carries on average.
    pub batches: u64,
    /// Events the filter kept from the function since the node started.
    pub filtered: u64,
    /// Events sent to the dead-letter topic since the node started.
    pub dead_lettered: u64,
    /// Calls tried again after a retryable failure since the node started.
    pub retries: u64,
    /// Source events retention deleted before the pipeline read them, since the node
    /// started.
    pub skipped: u64,
    /// Events in the source partitions not yet committed by the group.
    pub lag: u64,
    pub partitions: Vec<PipelinePartition>,
}

impl From<weir_engine::PipelineStatus> for Pipeline {
    fn from(p: weir_engine::PipelineStatus) -> Pipeline {
        Pipeline {
            name: p.name,
            function: p.function,
            version: p.version,
            group: p.group,
            from: p.from,
            to: p.to,
            dead_letter: p.dead_letter,
            ordering: p.ordering.into(),
            concurrency: p.concurrency,
            linger_ms: p.linger_ms,
            state: p.state.into(),
            processed: p.processed,
            batches: p.batches,
            filtered: p.filtered,
            dead_lettered: p.dead_lettered,
            retries: p.retries,
            skipped: p.skipped,
            lag: p.lag,
            partitions: p.partitions.into_iter().map(Into::into).collect(),
        }
    }
}

/// Which events of a pipeline are handled one after another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Ordering {
    /// Events with the same key in order.
    Key,
    /// Each partition in order.
    Partition,
    /// No order.
    None,
}

impl From<weir_engine::Ordering> for Ordering {
    fn from(o: weir_engine::Ordering) -> Ordering {
        match o {
            weir_engine::Ordering::Key => Ordering::Key,
            weir_engine::Ordering::Partition => Ordering::Partition,
            weir_engine::Ordering::None => Ordering::None,
        }
    }
}

/// `"state": "running"`, or `"stalled"` with the partition whose commit the log refuses
/// and the error it is retrying.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum PipelineState {
    Running,
    Stalled {
        topic: String,
        partition: u32,
        error: String,
    },
}

impl From<weir_engine::PipelineState> for PipelineState {
    fn from(s: weir_engine::PipelineState) -> PipelineState {
        match s {
            weir_engine::PipelineState::Running => PipelineState::Running,
            weir_engine::PipelineState::Stalled {
                topic,
                partition,
                error,
            } => PipelineState::Stalled {
                topic,
                partition,
                error,
            },
        }
    }
}

/// One source partition of a pipeline.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PipelinePartition {
    pub topic: String,
    pub partition: u32,
    /// The next offset the pipeline will handle (its group's committed offset).
    pub committed: u64,
    pub end_offset: u64,
    /// Events not yet handled: from the committed offset (or the first event still
    /// stored) to the end, counted in messages.
    pub lag: u64,
    /// On a fleet, the member that owns the partition in this node's view; absent on the
    /// embedded log.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Whether the node answering runs the partition now.
    pub running_here: bool,
}

impl From<weir_engine::PipelinePartitionStatus> for PipelinePartition {
    fn from(p: weir_engine::PipelinePartitionStatus) -> PipelinePartition {
        PipelinePartition {
            topic: p.topic,
            partition: p.partition,
            committed: p.committed,
            end_offset: p.end_offset,
            lag: p.lag,
            owner: p.owner,
            running_here: p.running_here,
        }
    }
}

/// `POST /v1/pipelines/{name}/redrive`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RedriveQuery {
    /// Re-drive at most this many dead letters.
    pub limit: Option<u64>,
}

/// What a re-drive did.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RedriveReport {
    pub pipeline: String,
    pub dead_letter: String,
    /// Events sent back to their source topics.
    pub redriven: u64,
    /// Dead letters passed over: another pipeline's, or not re-drivable.
    pub skipped: u64,
    /// Events re-driven per source topic.
    pub topics: BTreeMap<String, u64>,
}

impl From<weir_engine::RedriveReport> for RedriveReport {
    fn from(r: weir_engine::RedriveReport) -> RedriveReport {
        RedriveReport {
            pipeline: r.pipeline,
            dead_letter: r.dead_letter,
            redriven: r.redriven,
            skipped: r.skipped,
            topics: r.topics,
        }
    }
}

/// What a re-drive of a sink's dead letters did.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SinkRedriveReport {
    pub sink: String,
    pub dead_letter: String,
    /// Dead letters the destination took this time.
    pub delivered: u64,
    /// Dead letters it refused again (passed; they stay in the dead-letter topic).
    pub refused: u64,
    /// Dead letters passed over: another sink's or a pipeline's, or not CloudEvents.
    pub skipped: u64,
    /// Why the re-drive stopped early: the destination could not take an event now. What
    /// came before is committed; the next re-drive starts there.
    pub stopped: Option<String>,
}

impl From<weir_engine::SinkRedriveReport> for SinkRedriveReport {
    fn from(r: weir_engine::SinkRedriveReport) -> SinkRedriveReport {
        SinkRedriveReport {
            sink: r.sink,
            dead_letter: r.dead_letter,
            delivered: r.delivered,
            refused: r.refused,
            skipped: r.skipped,
            stopped: r.stopped,
        }
    }
}
