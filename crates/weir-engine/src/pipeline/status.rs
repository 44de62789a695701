//! A pipeline as `weir status` shows it.

use std::sync::PoisonError;
use std::sync::atomic::Ordering as AtomicOrdering;

use weir_manifest::Ordering;

use super::Pipeline;
use crate::SharedLog;

/// Whether a pipeline runs.
#[derive(Debug, Clone, PartialEq)]
pub enum PipelineState {
    Running,
    /// A partition could not commit its batch (the log refused the write, e.g. a full
    /// disk); it is tried again with backoff and nothing is skipped.
    Stalled {
        topic: String,
        partition: u32,
        error: String,
    },
}

/// One source partition of a pipeline as `weir status` shows it.
#[derive(Debug, Clone)]
pub struct PipelinePartitionStatus {
    pub topic: String,
    pub partition: u32,
    /// The next offset the pipeline will handle (its group's committed offset).
    pub committed: u64,
    pub end_offset: u64,
    /// Events from the committed offset (or the first one still stored, if retention
    /// deleted past it) to the end: messages, not an offset difference.
    pub lag: u64,
    /// On a fleet, the member this node's view gives the partition to.
    pub owner: Option<String>,
    /// Whether this node runs the partition now.
    pub running_here: bool,
}

/// A pipeline as `weir status` shows it.
#[derive(Debug, Clone)]
pub struct PipelineStatus {
    pub name: String,
    pub function: String,
    pub version: String,
    pub group: String,
    pub from: Vec<String>,
    pub to: Vec<String>,
    pub dead_letter: String,
    pub ordering: Ordering,
    pub concurrency: u32,
    /// How long a partition waits for a fuller batch, in milliseconds (`linger_ms`).
    pub linger_ms: u64,
    pub state: PipelineState,
    /// Events handled (outputs committed) since the node started.
    pub processed: u64,
    /// Batches committed since the node started: the events handled (processed,
    /// filtered and dead-lettered) over it is how many a commit carries on average.
    pub batches: u64,
    /// Events the filter kept from the function since the node started.
    pub filtered: u64,
    /// Events sent to the dead-letter topic since the node started.
    pub dead_lettered: u64,
    /// Calls tried again after a retryable failure since the node started.
    pub retries: u64,
    /// Source events never handled because retention deleted them before the pipeline
    /// read them, since the node started (each such range is also logged as a warning).
    pub skipped: u64,
    /// Events in the source partitions not yet committed by the group.
    pub lag: u64,
    pub partitions: Vec<PipelinePartitionStatus>,
}

impl Pipeline {
    pub(super) fn set_state(&self, state: PipelineState) {
        *self.state.lock().unwrap_or_else(PoisonError::into_inner) = state;
    }

    /// Events committed since the node started: handled, filtered or dead-lettered.
    pub(crate) fn committed_events(&self) -> u64 {
        self.processed.load(AtomicOrdering::Relaxed)
            + self.filtered.load(AtomicOrdering::Relaxed)
            + self.dead_lettered.load(AtomicOrdering::Relaxed)
    }

    pub(crate) async fn status(&self, log: &SharedLog) -> PipelineStatus {
        let positions = self
            .positions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let (units, names) = self
            .units
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mut owners = units.owners(&names);
        let mut partitions = Vec::new();
        for topic in &self.from {
            if let Ok(Some(info)) = log.topic(topic).await {
                for (partition, end) in info.end_offsets.iter().enumerate() {
                    let start = info.start_offsets.get(partition).copied().unwrap_or(0);
                    let partition = partition as u32;
                    let running = positions.get(&(topic.clone(), partition));
                    let committed = match running {
                        Some(next) => *next,
                        None => log
                            .committed_offset(&self.group, topic, partition)
                            .await
                            .ok()
                            .flatten()
                            .unwrap_or(0),
                    };
                    let lag = end.saturating_sub(committed.max(start));
                    partitions.push(PipelinePartitionStatus {
                        topic: topic.clone(),
                        partition,
                        committed,
                        end_offset: *end,
                        lag,
                        owner: owners.remove(&self.unit(topic, partition)),
                        running_here: running.is_some(),
                    });
                    crate::telemetry::record_lag(&self.group, topic, partition, lag);
                }
            }
        }
        PipelineStatus {
            name: self.name.clone(),
            function: self.function.clone(),
            version: self.version(),
            group: self.group.clone(),
            from: self.from.clone(),
            to: self.to.clone(),
            dead_letter: self.dead_letter.clone(),
            ordering: self.ordering,
            concurrency: self.concurrency,
            linger_ms: self.linger.as_millis() as u64,
            state: self
                .state
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
            processed: self.processed.load(AtomicOrdering::Relaxed),
            batches: self.batches.load(AtomicOrdering::Relaxed),
            filtered: self.filtered.load(AtomicOrdering::Relaxed),
            dead_lettered: self.dead_lettered.load(AtomicOrdering::Relaxed),
            retries: self.retries.load(AtomicOrdering::Relaxed),
            skipped: self.skipped.load(AtomicOrdering::Relaxed),
            lag: partitions.iter().map(|p| p.lag).sum(),
            partitions,
        }
    }
}
