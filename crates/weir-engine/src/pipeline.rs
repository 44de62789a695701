//! A pipeline: read a topic's partitions in its consumer group, call the function on each
//! event, append the outputs, commit the offset.
//!
//! **Architecture Invariant:** a pipeline commits a source offset only after every output
//! of every event before it is durable in the log. A graceful stop finishes the current
//! batch first, so a stop and restart neither loses nor repeats an output. After a crash
//! between the output append and the offset commit the batch runs again (at-least-once);
//! output ids derived from input positions stay the same, so duplicates are detectable.
//!
//! **Architecture Invariant:** the function's active version is looked up once at the
//! start of each batch (from the [`Registry`]) and the whole batch runs on it, in this
//! pipeline's own [`InstancePool`] for that activation. A deploy during a batch takes
//! effect at the next one: the batch in flight finishes and commits on the old version,
//! so no event is lost or handled by both, and each partition switches once.
//!
//! A failed call (trap, deadline, memory, fatal or retryable error, invalid output)
//! parks the partition at the failing event: its offset is not committed, nothing after
//! it runs, and `weir status` shows why. Deploying or rolling back the function resumes
//! it: the failed event is tried again on the newly active version. Retries and the
//! dead-letter topic replace parking in the pipelines step.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use weir_log::Record;

use crate::SharedLog;
use crate::registry::Registry;
use weir_manifest::{PipelineSpec, StartPosition};
use weir_wasm::InstancePool;

use crate::routing::{InputPosition, complete_outputs};
use crate::{Result, decode_event, encode_event};

/// Events read and handled per round.
const BATCH: usize = 256;

/// Whether a pipeline runs.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum PipelineState {
    Running,
    /// Stopped at an event that failed; it stays parked until a deploy or rollback
    /// activates another version of the function (or the node restarts), then resumes at
    /// that event.
    Parked {
        topic: String,
        partition: u32,
        offset: u64,
        error: String,
    },
}

/// A pipeline as `weir status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PipelineStatus {
    pub name: String,
    pub function: String,
    pub version: String,
    pub group: String,
    pub from: Vec<String>,
    pub to: Vec<String>,
    #[serde(flatten)]
    pub state: PipelineState,
    /// Events handled since the node started.
    pub processed: u64,
    /// Events in the source partitions not yet committed by the group.
    pub lag: u64,
}

pub(crate) struct Pipeline {
    name: String,
    group: String,
    from: Vec<String>,
    to: Vec<String>,
    start: StartPosition,
    /// The function's name; its active version comes from `registry` at every batch.
    function: String,
    registry: Arc<Registry>,
    /// This pipeline's own warm instances of the function's active version, with the
    /// registry generation they belong to.
    instances: Mutex<Option<(u64, InstancePool)>>,
    state: Mutex<PipelineState>,
    processed: AtomicU64,
}

impl Pipeline {
    pub(crate) fn new(name: &str, spec: &PipelineSpec, registry: Arc<Registry>) -> Pipeline {
        Pipeline {
            name: name.to_owned(),
            group: spec.group.clone(),
            from: spec.from.clone(),
            to: spec.to.clone(),
            start: spec.start,
            function: spec.function.clone(),
            registry,
            instances: Mutex::new(None),
            state: Mutex::new(PipelineState::Running),
            processed: AtomicU64::new(0),
        }
    }

    /// Start one task per source partition.
    pub(crate) fn spawn(
        self: &Arc<Self>,
        log: &SharedLog,
        tasks: &TaskTracker,
        cancel: &CancellationToken,
    ) -> Result<()> {
        for topic in &self.from {
            let info = log
                .topic(topic)
                .ok_or_else(|| weir_log::Error::UnknownTopic {
                    topic: topic.clone(),
                })?;
            for partition in 0..info.partitions {
                let (this, log, topic, cancel) =
                    (self.clone(), log.clone(), topic.clone(), cancel.clone());
                tasks.spawn(async move {
                    if let Err(e) = this.run_partition(&log, &topic, partition, &cancel).await {
                        this.park(&topic, partition, None, e.to_string());
                    }
                });
            }
        }
        tracing::info!(pipeline = %self.name, group = %self.group, function = %self.function, version = %self.version(), "pipeline started");
        Ok(())
    }

    /// The pool of the function's active version, made when the version changed since
    /// the last batch. Older pools are dropped once the batches using them are done.
    fn instances_for_batch(&self) -> Result<(u64, InstancePool)> {
        let (generation, function) =
            self.registry
                .active(&self.function)
                .ok_or_else(|| crate::Error::UnknownFunction {
                    function: self.function.clone(),
                    declared: Vec::new(),
                })?;
        let mut current = self
            .instances
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match &*current {
            Some((g, pool)) if *g == generation => Ok((generation, pool.clone())),
            _ => {
                let pool = function.instances();
                if current.is_some() {
                    tracing::info!(pipeline = %self.name, function = %self.function, version = function.version(), "pipeline switched to a new function version");
                }
                *current = Some((generation, pool.clone()));
                Ok((generation, pool))
            }
        }
    }

    /// Wait until the function's active generation is not `generation`: true, or false if
    /// the node stops first.
    async fn new_version_since(&self, generation: u64, cancel: &CancellationToken) -> bool {
        let mut activations = self.registry.activations();
        loop {
            if self
                .registry
                .active(&self.function)
                .is_some_and(|(g, _)| g != generation)
            {
                return true;
            }
            tokio::select! {
                _ = cancel.cancelled() => return false,
                changed = activations.changed() => if changed.is_err() { return false },
            }
        }
    }

    /// Leave the parked state a partition put the pipeline in.
    fn resume(&self, topic: &str, partition: u32) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if matches!(&*state, PipelineState::Parked { topic: t, partition: p, .. } if t == topic && *p == partition)
        {
            *state = PipelineState::Running;
            tracing::info!(pipeline = %self.name, topic, partition, version = %self.version(), "pipeline resumed on a new function version");
        }
    }

    /// The function's active version.
    fn version(&self) -> String {
        self.registry
            .active(&self.function)
            .map(|(_, f)| f.version().to_owned())
            .unwrap_or_default()
    }

    pub(crate) fn status(&self, log: &SharedLog) -> PipelineStatus {
        let mut lag = 0;
        for topic in &self.from {
            if let Some(info) = log.topic(topic) {
                for (partition, end) in info.end_offsets.iter().enumerate() {
                    let committed = log
                        .committed_offset(&self.group, topic, partition as u32)
                        .ok()
                        .flatten()
                        .unwrap_or(0);
                    lag += end.saturating_sub(committed);
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
            state: self
                .state
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
            processed: self.processed.load(Ordering::Relaxed),
            lag,
        }
    }

    fn park(&self, topic: &str, partition: u32, offset: Option<u64>, error: String) {
        tracing::error!(
            pipeline = %self.name,
            function = %self.function,
            version = %self.version(),
            topic,
            partition,
            offset,
            error = %error,
            "pipeline parked: the event is kept and nothing after it runs until the function is fixed"
        );
        *self.state.lock().unwrap_or_else(PoisonError::into_inner) = PipelineState::Parked {
            topic: topic.to_owned(),
            partition,
            offset: offset.unwrap_or(0),
            error,
        };
    }

    async fn run_partition(
        self: &Arc<Self>,
        log: &SharedLog,
        topic: &str,
        partition: u32,
        cancel: &CancellationToken,
    ) -> Result<()> {
        let mut next = match log.committed_offset(&self.group, topic, partition)? {
            Some(offset) => offset,
            None => {
                let start = match self.start {
                    StartPosition::Earliest => 0,
                    StartPosition::Latest => log.end_offset(topic, partition)?,
                };
                // Remember where a new group starts, so "latest" means the same after a restart.
                let (l, g, t) = (log.clone(), self.group.clone(), topic.to_owned());
                crate::blocking(move || Ok(l.commit_offset(&g, &t, partition, start)?)).await?;
                start
            }
        };
        loop {
            if cancel.is_cancelled() {
                return Ok(());
            }
            let records = log.read(topic, partition, next, BATCH)?;
            if records.is_empty() {
                tokio::select! {
                    _ = cancel.cancelled() => return Ok(()),
                    r = log.wait_for(topic, partition, next) => r?,
                }
                continue;
            }

            let this = self.clone();
            let topic_owned = topic.to_owned();
            let (generation, instances) = self.instances_for_batch()?;
            let round =
                crate::blocking(move || Ok(this.handle_batch(&instances, &topic_owned, records)))
                    .await?;

            for (target, events) in round.outputs {
                log.append(&target, events).await?;
            }
            if round.handled_to > next {
                next = round.handled_to;
                let (l, g, t) = (log.clone(), self.group.clone(), topic.to_owned());
                crate::blocking(move || Ok(l.commit_offset(&g, &t, partition, next)?)).await?;
            }
            if let Some((offset, error)) = round.failure {
                self.park(topic, partition, Some(offset), error);
                // Parked until a deploy or rollback activates another version; then the
                // failed event is tried again on it.
                if !self.new_version_since(generation, cancel).await {
                    return Ok(());
                }
                self.resume(topic, partition);
            }
        }
    }

    /// Call the function on each record in order until one fails. Blocking.
    fn handle_batch(
        &self,
        instances: &InstancePool,
        topic: &str,
        records: Vec<weir_log::StoredRecord>,
    ) -> Round {
        let mut round = Round {
            outputs: BTreeMap::new(),
            handled_to: records.first().map_or(0, |r| r.offset),
            failure: None,
        };
        for record in records {
            let offset = record.offset;
            // A failure of any kind parks the partition; its message says which.
            let result = decode_event(topic, record)
                .map_err(|e| e.to_string())
                .and_then(|input| {
                    let outputs = instances.call(&input.event).map_err(|e| e.to_string())?;
                    let pos = InputPosition {
                        pipeline: &self.name,
                        topic,
                        partition: input.partition,
                        offset,
                    };
                    complete_outputs(pos, &self.to, &input.event, outputs)
                        .map_err(|reason| instances.function().invalid(reason).to_string())
                });
            match result {
                Ok(outputs) => {
                    for (target, event) in outputs {
                        round
                            .outputs
                            .entry(target)
                            .or_default()
                            .push(encode_event(&event));
                    }
                    round.handled_to = offset + 1;
                    self.processed.fetch_add(1, Ordering::Relaxed);
                }
                Err(message) => {
                    round.failure = Some((offset, message));
                    break;
                }
            }
        }
        round
    }
}

/// The result of one batch: outputs grouped by topic, the offset to commit, and the
/// event that failed, if one did.
struct Round {
    outputs: BTreeMap<String, Vec<Record>>,
    handled_to: u64,
    failure: Option<(u64, String)>,
}
