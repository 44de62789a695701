//! `weir replay`: run a range of recorded events through a version of a pipeline's
//! function (or two versions, to compare them) and report what they make of it, without
//! publishing anything. The comparison itself is pure and lives in `diff.rs`; this module
//! is the shell that resolves the range, loads the versions and reads the log.
//!
//! **API Boundary:** a replay has no side effects on the node: it appends nothing,
//! commits no offset, neither joins nor moves any consumer group, and never uses a
//! pipeline's instances (the pipeline keeps running meanwhile). Each version runs on
//! instances of its own whose `wasi:keyvalue` store reads through to the node's store but
//! keeps the function's writes and deletes in memory for this replay
//! ([`crate::keyvalue::OverlayKeyValue`], one per version, so neither sees the other's
//! writes). A candidate component is compiled like a deploy, with the function's current
//! settings, but neither activated nor recorded in its history. Outgoing HTTP is made as
//! the function's grants allow: a function whose HTTP calls have side effects is not side
//! effect free under replay.
//!
//! The range is, per source partition of the pipeline's `from` topics, `from` (default:
//! the first retained offset) up to `to` exclusive (default: the end offset when the replay
//! starts, so a replay of a live topic ends). Events are read in batches and compared one
//! input at a time; only counts and the first examples are kept.

pub mod diff;

use std::sync::Arc;

use serde::Serialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use weir_cloudevents::CloudEvent;
use weir_log::StoredRecord;
use weir_manifest::PipelineSpec;
use weir_wasm::{Function, InstancePool};

use crate::codec::decode_event;
use crate::consumer::PartitionConsumer;
use crate::keyvalue::{HostKeyValue, OverlayKeyValue};
use crate::routing::{InputPosition, complete_outputs};
use crate::{Error, Node, Result, SharedLog, blocking};
use diff::{ComparedOutput, DiffCounts, DiffExample, InputRef, Outcome, Tally, VersionCounts};

/// Events read per round.
const BATCH: usize = 256;
/// Examples a report holds unless asked otherwise.
pub const DEFAULT_EXAMPLES: usize = 5;
/// The most examples a report holds.
pub const MAX_EXAMPLES: usize = 1000;

/// One end of a replay's range, in every source partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayBound {
    Offset(u64),
    /// The first event appended at or after this time (milliseconds since the Unix epoch),
    /// as the log's `offset_for_time` finds it.
    Time(i64),
}

/// What to replay.
#[derive(Debug, Clone, Default)]
pub struct ReplayRequest {
    pub pipeline: String,
    /// Only this partition of the source topics; all by default.
    pub partition: Option<u32>,
    /// Where to start (inclusive); the first retained event by default.
    pub from: Option<ReplayBound>,
    /// Where to stop (exclusive); the end of each partition when the replay starts by
    /// default.
    pub to: Option<ReplayBound>,
    /// Version A: a kept version of the pipeline's function; the active one by default.
    pub version: Option<String>,
    /// Version B: a component to compare A with.
    pub candidate: Option<Vec<u8>>,
    /// Examples to keep (capped at [`MAX_EXAMPLES`]).
    pub examples: usize,
    /// Which shape of the events the versions see, when the app has upcasters.
    pub schemas: ReplaySchemas,
}

/// Which shape of the recorded events a replay hands the function: upcast to their
/// type's latest schema version as the pipeline does (the default), as written, or both
/// (version A on the events as written, B, the same version, on them upcast).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplaySchemas {
    #[default]
    Upcast,
    AsWritten,
    Compare,
}

impl ReplaySchemas {
    pub const NAMES: [&'static str; 3] = ["upcast", "as_written", "compare"];

    pub fn as_str(self) -> &'static str {
        match self {
            ReplaySchemas::Upcast => "upcast",
            ReplaySchemas::AsWritten => "as_written",
            ReplaySchemas::Compare => "compare",
        }
    }

    /// From its name, one of [`ReplaySchemas::NAMES`].
    pub fn parse(name: &str) -> Option<ReplaySchemas> {
        [
            ReplaySchemas::Upcast,
            ReplaySchemas::AsWritten,
            ReplaySchemas::Compare,
        ]
        .into_iter()
        .find(|s| s.as_str() == name)
    }
}

/// How far a replay is, in offsets of its range.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ReplayProgress {
    pub done: u64,
    pub total: u64,
}

/// The part of one source partition a replay reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReplayRange {
    pub topic: String,
    pub partition: u32,
    pub from: u64,
    /// Exclusive.
    pub to: u64,
}

/// Where a replayed version came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VersionSource {
    /// The function's active version.
    Active,
    /// A kept version named by `--version`.
    Kept,
    /// The component sent with the request.
    Candidate,
}

/// What one version made of the range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VersionReport {
    pub version: String,
    pub source: VersionSource,
    pub outputs: u64,
    pub errors: u64,
}

/// The outcome of a replay.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReplayReport {
    pub pipeline: String,
    pub function: String,
    pub ranges: Vec<ReplayRange>,
    /// Events read and run.
    pub inputs: u64,
    pub a: VersionReport,
    /// None when only version A ran.
    pub b: Option<VersionReport>,
    /// None when only version A ran.
    pub diff: Option<DiffCounts>,
    /// The events' shape each version saw.
    pub schemas: ReplaySchemas,
    /// The first differences (with B) or errors (A alone), in input order.
    pub examples: Vec<DiffExample>,
}

/// One version with the instances a replay runs it on.
struct Runner {
    version: String,
    source: VersionSource,
    instances: InstancePool,
}

impl Runner {
    /// Instances of `function` of their own, with a key-value overlay over `store`.
    fn new(
        function: &Function,
        source: VersionSource,
        store: &Arc<dyn weir_wasm::KeyValueStore>,
    ) -> Runner {
        let overlay: Arc<dyn weir_wasm::KeyValueStore> =
            Arc::new(OverlayKeyValue::new(store.clone()));
        Runner {
            version: function.version().to_owned(),
            source,
            instances: function.with_keyvalue(Some(overlay)).instances(),
        }
    }

    fn report(&self, counts: VersionCounts) -> VersionReport {
        VersionReport {
            version: self.version.clone(),
            source: self.source,
            outputs: counts.outputs,
            errors: counts.errors,
        }
    }
}

/// A replay ready to run: the pipeline, versions and range are checked, the versions
/// loaded. Made by [`Node::replay`]; [`Replay::run`] runs it.
pub struct Replay {
    log: SharedLog,
    pipeline: String,
    function: String,
    spec: PipelineSpec,
    ranges: Vec<ReplayRange>,
    a: Runner,
    b: Option<Runner>,
    schemas: ReplaySchemas,
    /// The upcasters as they were when the replay was prepared; none without upcasters.
    upcasting: Option<crate::schemas::Upcasting>,
    examples: usize,
    progress: watch::Sender<ReplayProgress>,
    cancel: CancellationToken,
    node_cancel: CancellationToken,
}

impl std::fmt::Debug for Replay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replay")
            .field("pipeline", &self.pipeline)
            .field("ranges", &self.ranges)
            .finish_non_exhaustive()
    }
}

impl Node {
    /// Prepare a replay of `request.pipeline`: check the range, load version A (the active
    /// or a kept version) and compile the candidate B, if any, with the function's current
    /// settings. Errors here (unknown pipeline or version, a candidate that does not load,
    /// a bad range) come before anything runs.
    #[tracing::instrument(skip_all, err, fields(pipeline = %request.pipeline))]
    pub async fn replay(&self, request: ReplayRequest) -> Result<Replay> {
        if self.cancel.is_cancelled() {
            return Err(Error::ShuttingDown);
        }
        check_bounds(request.from, request.to).map_err(|reason| Error::InvalidReplay { reason })?;
        if request.schemas == ReplaySchemas::Compare && request.candidate.is_some() {
            return Err(Error::InvalidReplay {
                reason: "schemas \"compare\" runs one version twice, on the events as written and upcast; send no candidate".to_owned(),
            });
        }
        let spec = self.pipeline_spec(&request.pipeline)?;
        let function = spec.function.clone();

        let (registry, name, version, candidate) = (
            self.registry.clone(),
            function.clone(),
            request.version.clone(),
            request.candidate,
        );
        let compare = request.schemas == ReplaySchemas::Compare;
        let (a, b) = blocking(move || {
            let settings = registry
                .spec(&name)
                .ok_or_else(|| registry.unknown(&name))?;
            let a = match &version {
                None => {
                    let (_, active) = registry
                        .active(&name)
                        .ok_or_else(|| registry.unknown(&name))?;
                    (active, VersionSource::Active)
                }
                Some(version) => (registry.kept_version(&name, version)?, VersionSource::Kept),
            };
            let b = match candidate {
                Some(wasm) => Some((
                    registry.compile_candidate(&name, &settings, &wasm)?,
                    VersionSource::Candidate,
                )),
                // Compare: version A again, on the events upcast.
                None if compare => Some(a.clone()),
                None => None,
            };
            Ok((a, b))
        })
        .await?;

        let ranges = self
            .replay_ranges(&spec, request.partition, request.from, request.to)
            .await?;
        let store: Arc<dyn weir_wasm::KeyValueStore> = Arc::new(HostKeyValue(self.kv.clone()));
        let total = ranges.iter().map(|r| r.to - r.from).sum();
        tracing::info!(pipeline = %request.pipeline, function = %function, a = a.0.version(), b = ?b.as_ref().map(|b| b.0.version()), total, schemas = ?request.schemas, "replay prepared");
        Ok(Replay {
            log: self.log.clone(),
            pipeline: request.pipeline,
            function,
            spec,
            ranges,
            a: Runner::new(&a.0, a.1, &store),
            b: b.map(|b| Runner::new(&b.0, b.1, &store)),
            schemas: request.schemas,
            upcasting: self.schemas.upcasting(),
            examples: request.examples.min(MAX_EXAMPLES),
            progress: watch::Sender::new(ReplayProgress { done: 0, total }),
            cancel: self.cancel.child_token(),
            node_cancel: self.cancel.clone(),
        })
    }

    /// The running app's declaration of pipeline `name`.
    fn pipeline_spec(&self, name: &str) -> Result<PipelineSpec> {
        let manifest = self
            .manifest
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let pipelines = manifest.as_ref().map(|m| &m.pipelines);
        pipelines
            .and_then(|p| p.get(name))
            .cloned()
            .ok_or_else(|| Error::UnknownPipeline {
                pipeline: name.to_owned(),
                declared: pipelines
                    .map(|p| p.keys().cloned().collect())
                    .unwrap_or_default(),
            })
    }

    /// The range in each source partition (only `partition`, if given).
    async fn replay_ranges(
        &self,
        spec: &PipelineSpec,
        partition: Option<u32>,
        from: Option<ReplayBound>,
        to: Option<ReplayBound>,
    ) -> Result<Vec<ReplayRange>> {
        let mut ranges = Vec::new();
        let mut most_partitions = 0;
        for topic in &spec.from {
            let info = self.topic_info(topic).await?;
            most_partitions = most_partitions.max(info.partitions);
            let partitions = match partition {
                Some(p) if p < info.partitions => p..p + 1,
                Some(_) => continue,
                None => 0..info.partitions,
            };
            for p in partitions {
                let weir_log::Offsets { start: first, end } = self.log.offsets(topic, p).await?;
                let stop = match to {
                    Some(bound) => self.offset_of(topic, p, bound).await?.max(first).min(end),
                    None => end,
                };
                let start = match from {
                    Some(bound) => self.offset_of(topic, p, bound).await?.max(first).min(stop),
                    None => first.min(stop),
                };
                ranges.push(ReplayRange {
                    topic: topic.clone(),
                    partition: p,
                    from: start,
                    to: stop,
                });
            }
        }
        match (partition, ranges.is_empty()) {
            (Some(p), true) => {
                Err(
                    weir_log::Error::unknown_partition(&spec.from.join(", "), p, most_partitions)
                        .into(),
                )
            }
            _ => Ok(ranges),
        }
    }

    /// The offset a replay bound means in one partition.
    async fn offset_of(&self, topic: &str, partition: u32, bound: ReplayBound) -> Result<u64> {
        Ok(match bound {
            ReplayBound::Offset(offset) => offset,
            ReplayBound::Time(ms) => self.log.offset_for_time(topic, partition, ms).await?,
        })
    }
}

/// A range whose ends are of one kind and in the wrong order is refused; the rest is
/// clamped to what each partition holds.
pub(crate) fn check_bounds(
    from: Option<ReplayBound>,
    to: Option<ReplayBound>,
) -> Result<(), String> {
    match (from, to) {
        (Some(ReplayBound::Offset(f)), Some(ReplayBound::Offset(t))) if f > t => Err(format!(
            "the range starts at offset {f}, after its end {t}; pass a from-offset at or below the to-offset"
        )),
        (Some(ReplayBound::Time(f)), Some(ReplayBound::Time(t))) if f > t => Err(format!(
            "the range starts at {f} ms, after its end {t} ms; pass a from-time at or before the to-time"
        )),
        _ => Ok(()),
    }
}

/// Whether the pipeline hands `event` to its function: its attribute filter, the same
/// check the pipeline makes, so a replay runs exactly the events the pipeline would.
fn pipeline_accepts(spec: &PipelineSpec, event: &CloudEvent) -> bool {
    crate::routing::filter_accepts(spec.filter.as_ref(), event)
}

impl Replay {
    /// Events (offsets) in the range.
    pub fn total(&self) -> u64 {
        self.progress.borrow().total
    }

    /// Progress, updated after every batch.
    pub fn progress(&self) -> watch::Receiver<ReplayProgress> {
        self.progress.subscribe()
    }

    /// Cancelling it stops the replay at the next event (also done when the node shuts
    /// down).
    pub fn cancel_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Run the range through the version(s) and report. Nothing is published or
    /// committed; see the module's API boundary.
    #[tracing::instrument(skip_all, err, fields(pipeline = %self.pipeline))]
    pub async fn run(self) -> Result<ReplayReport> {
        let this = Arc::new(self);
        let mut tally = Tally::new(this.b.is_some(), this.examples);
        let mut finished = 0;
        for index in 0..this.ranges.len() {
            let range = &this.ranges[index];
            let name = format!("replay of pipeline {:?}", this.pipeline);
            let mut consumer = PartitionConsumer::open_at(
                &this.log,
                &range.topic,
                range.partition,
                name,
                range.from,
            )
            .await?
            .until(range.to);
            while !consumer.is_done() {
                if this.cancel.is_cancelled() {
                    return Err(this.cancelled());
                }
                let records = consumer.poll(BATCH).await?;
                if records.is_empty() {
                    break;
                }
                let runner = this.clone();
                let (t, reached) =
                    blocking(move || runner.run_batch(index, records, tally)).await?;
                tally = t;
                consumer.seek(reached);
                this.progress
                    .send_modify(|p| p.done = finished + (reached - range.from));
            }
            finished += range.to - range.from;
            // The range's last offsets may hold no records (offsets skip).
            this.progress.send_modify(|p| p.done = finished);
        }
        if this.cancel.is_cancelled() {
            return Err(this.cancelled());
        }
        let report = ReplayReport {
            pipeline: this.pipeline.clone(),
            function: this.function.clone(),
            ranges: this.ranges.clone(),
            inputs: tally.inputs,
            a: this.a.report(tally.a),
            b: this
                .b
                .as_ref()
                .zip(tally.b)
                .map(|(b, counts)| b.report(counts)),
            diff: tally.diff,
            schemas: this.schemas,
            examples: tally.examples,
        };
        tracing::info!(pipeline = %report.pipeline, inputs = report.inputs, diff = ?report.diff, "replay done");
        Ok(report)
    }

    fn cancelled(&self) -> Error {
        if self.node_cancel.is_cancelled() {
            Error::ShuttingDown
        } else {
            Error::ReplayCancelled
        }
    }

    /// Run `records`, read from range `index` (one batch, stopping early if cancelled),
    /// and return the totals and where the next batch starts. Blocking.
    fn run_batch(
        &self,
        index: usize,
        records: Vec<StoredRecord>,
        mut tally: Tally,
    ) -> Result<(Tally, u64)> {
        let range = &self.ranges[index];
        // Nothing left below the end (retention may have removed it): the range is done.
        let mut reached = range.to;
        for record in records {
            if record.offset >= range.to {
                break;
            }
            if self.cancel.is_cancelled() {
                return Ok((tally, record.offset));
            }
            reached = record.offset + 1;
            let offset = record.offset;
            let mut input = InputRef {
                topic: range.topic.clone(),
                partition: range.partition,
                offset,
                id: String::new(),
            };
            let event = match decode_event(&range.topic, record) {
                Ok(logged) => logged.event,
                Err(e) => {
                    // The pipeline would stop here too: an error for every version.
                    let failed: Outcome = Err(e.to_string());
                    tally.add(&input, &failed, self.b.as_ref().map(|_| &failed));
                    continue;
                }
            };
            if !pipeline_accepts(&self.spec, &event) {
                continue;
            }
            input.id = event.id.clone();
            let position = InputPosition {
                pipeline: &self.pipeline,
                topic: &range.topic,
                partition: range.partition,
                offset,
            };
            let upcast = match (&self.upcasting, self.schemas) {
                (Some(u), ReplaySchemas::Upcast | ReplaySchemas::Compare) => {
                    u.upcast(&event).map_err(|e| e.reason).transpose()
                }
                _ => None,
            };
            let written = Ok(event);
            let upcast = upcast.as_ref().unwrap_or(&written);
            let (for_a, for_b) = match self.schemas {
                ReplaySchemas::Upcast => (upcast, upcast),
                ReplaySchemas::AsWritten => (&written, &written),
                ReplaySchemas::Compare => (&written, upcast),
            };
            let a = self.outcome_of(&self.a, position, for_a);
            let b = self.b.as_ref().map(|b| self.outcome_of(b, position, for_b));
            tally.add(&input, &a, b.as_ref());
        }
        Ok((tally, reached))
    }

    /// [`Replay::outcome`] on an event, or the error of one that could not be upcast.
    fn outcome_of(
        &self,
        runner: &Runner,
        position: InputPosition<'_>,
        event: &std::result::Result<CloudEvent, String>,
    ) -> Outcome {
        match event {
            Ok(event) => self.outcome(runner, position, event),
            Err(reason) => Err(format!("the event cannot be upcast: {reason}")),
        }
    }

    /// Run one version on one input and complete its outputs as the pipeline does, so
    /// derived ids and trace context are the same for every version.
    fn outcome(&self, runner: &Runner, position: InputPosition<'_>, event: &CloudEvent) -> Outcome {
        let outputs = runner.instances.call(event).map_err(|e| e.to_string())?;
        let completed = complete_outputs(position, &self.spec.to, event, outputs)
            .map_err(|reason| runner.instances.function().invalid(reason).to_string())?;
        Ok(completed
            .into_iter()
            .map(|(topic, event)| ComparedOutput {
                topic,
                event: event.to_json_value(),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests;
