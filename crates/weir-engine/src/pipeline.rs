//! A pipeline: read a topic's partitions in its consumer group, call the function on each
//! event (filtered, in parallel where the ordering allows, retried with backoff), and
//! commit the outputs, the dead letters and the new offset as one transaction.
//!
//! **Architecture Invariant:** each source partition has one task that commits each batch
//! with one `EventLog::commit_transaction` (producer `pipeline/<name>/<topic>/<partition>`):
//! the batch's outputs, its dead letters and the group's offset past the batch. The task
//! calls the function on a full batch while the previous batch's transaction is being
//! written (two batches at most; a partial batch waits for that commit, so the events
//! arriving meanwhile are taken with it, and then, with `linger_ms`, waits up to that long
//! for more), and a batch's commit starts only after the
//! previous one succeeded, so commits follow the log's order; a reset, an idle wait and
//! the end of the task first finish the commit in flight. On the embedded log that is
//! atomic, so a crash at any point neither loses nor repeats an output (exactly-once
//! inside weir); on a backend without transactions it is at-least-once with stable output
//! ids. The group's offsets of a pipeline partition are written only through that
//! producer (the start position and resets too), so recovery never sees an older commit
//! than the last one.
//!
//! **Architecture Invariant:** ordering. `partition`: a partition's events are called one
//! after another. `key`: events with equal keys (`partitionkey`, else `subject`) go to the
//! same lane and are called in order; lanes run in parallel. `none`: events are spread
//! over lanes regardless of key. A batch is committed only when every lane is done, so
//! the log's order of outputs per key is the input order. At most `concurrency` calls
//! run at once across the whole pipeline (its call threads, see `weir_wasm::CallThreads`).
//!
//! **Architecture Invariant:** no event is dropped and none blocks a partition forever.
//! A retryable failure (the function's own `retryable` error, or no free instance slot)
//! is tried again after an exponential backoff with jitter, up to `retry.max_attempts`
//! calls (the wait is on the runtime: a lane's run on a call thread hands back the
//! events left, and the pool thread is free while it waits); any other failure (trap, deadline, memory, fuel, stack, output limit, denied
//! capability, fatal error, invalid output) and an exhausted retry send the event, with
//! `dlq*` attributes, to the dead-letter topic in the same transaction as the outputs.
//! A failing log write (full disk, poisoned partition) is retried with backoff and shows
//! as `stalled` in the status; the batch is not committed until it succeeds.
//!
//! **Architecture Invariant:** the function's active version is looked up once at the
//! start of each batch (from the [`Registry`]) and the whole batch runs on it, in this
//! pipeline's own [`InstancePool`] for that activation. A deploy during a batch takes
//! effect at the next one: the batch in flight finishes and commits on the old version,
//! so no event is lost or handled by both, and each partition switches once.
//!
//! A transaction the log refuses for what it holds (a record or batch too large, a keyless
//! record for a compacted topic) is committed event by event instead, and an event whose
//! own outputs are refused is dead-lettered (`output_rejected`), so a partition never
//! stalls on it. Any other failure of the partition task (a failing read) stalls it and it
//! starts again from its committed offset after a backoff.
//!
//! Backpressure: a partition task reads the next batch only after the one before the
//! previous is committed, so a slow function (or a slow disk) slows its reader and memory
//! stays bounded by two batches of `BATCH` events and their outputs (each call's at most
//! `limits.max_output_bytes`) per source partition; the lag shows in the status.
//!
//! Rooms: this file has the partition tasks (start through the
//! [`crate::consumer::PartitionConsumer`], read, call, commit, round after round);
//! `lanes.rs` calls the function in lanes with retries, `commit.rs` writes a batch's
//! transaction, `reset.rs` applies resets of the group, `status.rs` is what `weir status`
//! shows.

mod commit;
mod lanes;
mod reset;
mod status;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use weir_cloudevents::CloudEvent;
use weir_log::StoredRecord;
use weir_manifest::{Ordering, PipelineFilter, PipelineSpec, RetrySpec, StartPosition};
use weir_wasm::InstancePool;

use crate::consumer::{GroupTransactions, PartitionConsumer, Progress, Woken};
use crate::error::ErrorClass;
use crate::fleet::Units;
use crate::registry::{ActivePool, Registry};
use crate::routing::filter_accepts;

/// The wait after `attempt` failed attempts under `retry`: the policy's backoff, varied
/// by its jitter (pipelines' calls, sinks' deliveries).
pub(crate) fn jittered_backoff(retry: &RetrySpec, attempt: u32) -> Duration {
    let base = retry.backoff_ms(attempt) as f64;
    let jitter = retry.jitter.clamp(0.0, 1.0);
    let factor = 1.0 - jitter + 2.0 * jitter * fastrand::f64();
    let ms = (base * factor).min(retry.max_backoff_ms as f64);
    Duration::from_micros((ms * 1000.0) as u64)
}
use crate::{Result, SharedLog, StartFrom};
use commit::{Committing, finish};
pub use status::{PipelinePartitionStatus, PipelineState, PipelineStatus};

/// Events read and handled per round.
const BATCH: usize = 256;
/// Longest wait between tries of a failing log write.
const MAX_STALL_BACKOFF: Duration = Duration::from_secs(5);

pub(crate) struct Pipeline {
    name: String,
    group: String,
    from: Vec<String>,
    to: Vec<String>,
    dead_letter: String,
    start: StartPosition,
    ordering: Ordering,
    concurrency: u32,
    /// How long a partition waits for a fuller batch (`linger_ms`).
    linger: Duration,
    filter: Option<PipelineFilter>,
    retry: RetrySpec,
    /// The function's name; its active version comes from `registry` at every batch.
    function: String,
    registry: Arc<Registry>,
    /// The node's event schemas: each output is checked against its type's before it is
    /// committed, and one that fails dead-letters the input.
    schemas: Arc<crate::schemas::Schemas>,
    /// This pipeline's own warm instances of the function's active version.
    instances: ActivePool,
    /// The threads its lanes run on: at most `concurrency` at once, across partitions.
    runners: Arc<weir_wasm::CallThreads>,
    state: Mutex<PipelineState>,
    /// Per source partition, the next offset to handle.
    positions: Mutex<BTreeMap<(String, u32), u64>>,
    /// Resets asked for and not yet applied by their partition's task.
    resets: Mutex<BTreeMap<(String, u32), StartFrom>>,
    /// The offset each partition's last applied reset moved it to.
    reset_to: Mutex<BTreeMap<(String, u32), u64>>,
    reset_applied: Notify,
    reset_requested: Notify,
    processed: AtomicU64,
    /// Batches committed (one each, also when the log refused it whole and it was
    /// committed event by event).
    batches: AtomicU64,
    filtered: AtomicU64,
    dead_lettered: AtomicU64,
    retries: AtomicU64,
    skipped: AtomicU64,
    metrics: crate::telemetry::PipelineMetrics,
    /// Who runs this pipeline's partitions, and their unit names (in partition order).
    units: Mutex<(Units, Arc<[String]>)>,
}

impl Pipeline {
    pub(crate) fn new(
        name: &str,
        spec: &PipelineSpec,
        registry: Arc<Registry>,
        schemas: Arc<crate::schemas::Schemas>,
    ) -> Pipeline {
        Pipeline {
            name: name.to_owned(),
            group: spec.group.clone(),
            from: spec.from.clone(),
            to: spec.to.clone(),
            dead_letter: spec.dead_letter.clone(),
            start: spec.start,
            ordering: spec.ordering,
            concurrency: spec.concurrency.max(1),
            linger: Duration::from_millis(spec.linger_ms.into()),
            filter: spec.filter.clone(),
            retry: spec.retry,
            function: spec.function.clone(),
            instances: ActivePool::new(registry.clone(), &spec.function),
            registry,
            schemas,
            runners: weir_wasm::CallThreads::calls(spec.concurrency.max(1) as usize),
            state: Mutex::new(PipelineState::Running),
            positions: Mutex::new(BTreeMap::new()),
            resets: Mutex::new(BTreeMap::new()),
            reset_to: Mutex::new(BTreeMap::new()),
            reset_applied: Notify::new(),
            reset_requested: Notify::new(),
            processed: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            filtered: AtomicU64::new(0),
            dead_lettered: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            metrics: crate::telemetry::PipelineMetrics::new(
                name,
                spec.to.iter().chain([&spec.dead_letter]),
            ),
            units: Mutex::new((Units::default(), Arc::from(Vec::new()))),
        }
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn group(&self) -> &str {
        &self.group
    }

    pub(crate) fn sources(&self) -> &[String] {
        &self.from
    }

    pub(crate) fn dead_letter_topic(&self) -> &str {
        &self.dead_letter
    }

    /// Whether the pipeline's filter lets `event` reach the function.
    pub(crate) fn accepts(&self, event: &CloudEvent) -> bool {
        filter_accepts(self.filter.as_ref(), event)
    }

    /// Start one task per source partition. On a fleet each partition is a unit
    /// (`group/GROUP/TOPIC/PARTITION`) that runs only while this node owns it.
    pub(crate) async fn spawn(
        self: &Arc<Self>,
        log: &SharedLog,
        units: &Units,
        tasks: &TaskTracker,
        cancel: &CancellationToken,
    ) -> Result<()> {
        let mut partitions = Vec::new();
        for topic in &self.from {
            let info = crate::consumer::topic_info(log, topic).await?;
            partitions.extend((0..info.partitions).map(|p| (topic.clone(), p)));
        }
        let names: Arc<[String]> = partitions
            .iter()
            .map(|(topic, p)| self.unit(topic, *p))
            .collect();
        *self.units.lock().unwrap_or_else(PoisonError::into_inner) = (units.clone(), names.clone());
        for (index, (topic, partition)) in partitions.into_iter().enumerate() {
            let (this, log, units, names, cancel) = (
                self.clone(),
                log.clone(),
                units.clone(),
                names.clone(),
                cancel.clone(),
            );
            tasks.spawn(async move {
                this.drive_partition(&log, &units, &names, index, &topic, partition, &cancel)
                    .await
            });
        }
        tracing::info!(pipeline = %self.name, group = %self.group, function = %self.function, version = %self.version(), ordering = self.ordering.as_str(), concurrency = self.concurrency, linger_ms = self.linger.as_millis() as u64, "pipeline started");
        Ok(())
    }

    /// Runs one partition while this node owns it, until `cancel`. A failure of the log (a
    /// read, a wait) or of the task itself stalls the partition, which starts again from
    /// its committed offset after a backoff; on a fleet, a fence (another node claimed
    /// it) waits for this node's view to change first.
    #[allow(clippy::too_many_arguments)]
    async fn drive_partition(
        self: &Arc<Self>,
        log: &SharedLog,
        units: &Units,
        names: &[String],
        index: usize,
        topic: &str,
        partition: u32,
        cancel: &CancellationToken,
    ) {
        let mut wait = Duration::from_millis(100);
        loop {
            let Some(lease) = units.acquire(names, index, cancel).await else {
                return;
            };
            let ran = self
                .run_partition(log, topic, partition, cancel, lease.released())
                .await;
            self.positions
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&(topic.to_owned(), partition));
            match ran {
                _ if cancel.is_cancelled() => return,
                Ok(()) => {
                    tracing::info!(pipeline = %self.name, topic, partition, "partition handed over: the fleet gave it to another node");
                    wait = Duration::from_millis(100);
                    continue;
                }
                Err(e) if units.is_fleet() && e.class() == ErrorClass::Fenced => {
                    tracing::info!(pipeline = %self.name, topic, partition, "partition taken by another node of the fleet; this one stopped");
                    units.after_fenced(cancel).await;
                    continue;
                }
                Err(e) => {
                    tracing::error!(pipeline = %self.name, topic, partition, error = %e, "pipeline partition failed; starting it again from its committed offset");
                    self.set_state(PipelineState::Stalled {
                        topic: topic.to_owned(),
                        partition,
                        error: e.to_string(),
                    });
                }
            }
            drop(lease);
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            wait = (wait * 2).min(MAX_STALL_BACKOFF);
        }
    }

    /// The partition runs again: a `stalled` state it caused is over.
    pub(crate) fn recovered(&self, topic: &str, partition: u32) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if matches!(&*state, PipelineState::Stalled { topic: t, partition: p, .. } if t == topic && *p == partition)
        {
            *state = PipelineState::Running;
        }
    }

    /// The fleet's name for one of this pipeline's partitions.
    pub(crate) fn unit(&self, topic: &str, partition: u32) -> String {
        format!("group/{}/{topic}/{partition}", self.group)
    }

    /// The pool of the function's active version, made when the version changed since
    /// the last batch. Older pools are dropped once the batches using them are done.
    fn instances_for_batch(&self) -> Result<InstancePool> {
        let (pool, switched) = self.instances.get_noting_switch()?;
        if let Some(version) = switched {
            tracing::info!(pipeline = %self.name, function = %self.function, version, "pipeline switched to a new function version");
        }
        Ok(pool)
    }

    /// The function's active version.
    fn version(&self) -> String {
        self.registry
            .active(&self.function)
            .map(|(_, f)| f.version().to_owned())
            .unwrap_or_default()
    }

    async fn run_partition(
        self: &Arc<Self>,
        log: &SharedLog,
        topic: &str,
        partition: u32,
        cancel: &CancellationToken,
        released: &CancellationToken,
    ) -> Result<()> {
        // This task owns the group's partition from here on: opening claims it, so
        // whoever owned it before can no longer commit (its generation is older). A new
        // group's start is committed at once, so "latest" means the same after a restart.
        let progress = Progress::Transactions {
            group: self.group.clone(),
            producer: self.producer(topic, partition),
        };
        let start = match self.start {
            StartPosition::Earliest => StartFrom::Earliest,
            StartPosition::Latest => StartFrom::Latest,
        };
        let name = format!("pipeline {:?}", self.name);
        let mut consumer =
            PartitionConsumer::open(log, topic, partition, name, progress, start, cancel).await?;
        let commits = consumer.transactions()?;
        self.positions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert((topic.to_owned(), partition), consumer.position());
        let mut committing = None;
        let rounds = self
            .run_rounds(
                log,
                &mut consumer,
                &commits,
                &mut committing,
                cancel,
                released,
            )
            .await;
        // However the rounds ended, the batch being committed is finished first, so that a
        // restart from the committed offset neither repeats nor skips it.
        let finished = finish(committing).await;
        rounds.and(finished)
    }

    /// Read, call and commit batch after batch from the consumer's position. A batch's
    /// commit runs while the next batch is called (`committing`), and is finished before
    /// that batch is committed, so commits stay in log order.
    async fn run_rounds<'a>(
        self: &'a Arc<Self>,
        log: &'a SharedLog,
        consumer: &mut PartitionConsumer,
        commits: &'a GroupTransactions,
        committing: &mut Option<Committing<'a>>,
        cancel: &'a CancellationToken,
        released: &CancellationToken,
    ) -> Result<()> {
        let (topic, partition) = (commits.topic.as_str(), commits.partition);
        loop {
            // Stopping and a handover both end at a batch boundary: the batch called
            // last is committed (`run_partition` finishes it) and nothing after it starts.
            if cancel.is_cancelled() || released.is_cancelled() {
                return Ok(());
            }
            if self.reset_pending(topic, partition) {
                // A reset moves the group past whatever is being committed: that first.
                finish(committing.take()).await?;
                if let Some(reset) = self.take_reset(log, commits, cancel).await? {
                    consumer.seek(reset);
                }
            }
            let mut records = self.poll(consumer, BATCH).await?;
            if records.len() < BATCH && committing.is_some() {
                // Not a full batch: the events arriving while the previous batch commits
                // would otherwise wait for a commit of their own. Take them all at once
                // after it, as a partition without a backlog always did.
                finish(committing.take()).await?;
                let more = self.poll(consumer, BATCH - records.len()).await?;
                records.extend(more);
            }
            if !records.is_empty()
                && records.len() < BATCH
                && !self.linger.is_zero()
                && !self
                    .linger(consumer, &mut records, cancel, released)
                    .await?
            {
                // Stopped or handed over while it lingered: nothing of what it read is
                // called or committed; it is read again from the committed offset.
                return Ok(());
            }
            // A read short of a full batch (an empty one too) finished the commit above.
            let Some(last) = records.last().map(|r| r.offset) else {
                // Caught up with everything committed: whatever stalled the partition
                // (a read or a commit that failed) is behind it, though no batch came since.
                self.recovered(topic, partition);
                let interrupt = async {
                    tokio::select! {
                        _ = self.reset_requested.notified() => {}
                        _ = released.cancelled() => {}
                    }
                };
                match consumer.wait(cancel, interrupt).await? {
                    Woken::Cancelled => return Ok(()),
                    Woken::Records | Woken::Interrupted => continue,
                }
            };

            let offsets: Vec<u64> = records.iter().map(|r| r.offset).collect();
            let instances = self.instances_for_batch()?;
            let (handled, previous) = tokio::join!(
                self.handle_batch(&instances, topic, partition, records, cancel),
                finish(committing.take()),
            );
            previous?;
            let Some((outcomes, steps)) = handled? else {
                // Stopped mid-batch: nothing of it is committed, it runs again after a restart.
                return Ok(());
            };
            let batch = self.batch_outputs(offsets, outcomes, steps);
            let version = instances.function().version().to_owned();
            *committing = Some(Box::pin(self.commit_batch(
                log,
                commits,
                version,
                batch,
                last + 1,
                cancel,
            )));
        }
    }

    /// Waits up to the pipeline's `linger` for `records` to grow to a full batch, taking
    /// what arrives meanwhile. It ends early on a full batch or a reset asked for (the
    /// records read are this round's batch), and on a stop or a handover, which it
    /// reports as `false`: the caller then leaves the records unhandled.
    async fn linger(
        &self,
        consumer: &mut PartitionConsumer,
        records: &mut Vec<StoredRecord>,
        cancel: &CancellationToken,
        released: &CancellationToken,
    ) -> Result<bool> {
        let deadline = tokio::time::Instant::now() + self.linger;
        let (topic, partition) = (consumer.topic().to_owned(), consumer.partition());
        while records.len() < BATCH && tokio::time::Instant::now() < deadline {
            if cancel.is_cancelled() || released.is_cancelled() {
                return Ok(false);
            }
            // Enabled before the check, so a reset asked for after it still wakes this.
            let reset = self.reset_requested.notified();
            tokio::pin!(reset);
            reset.as_mut().enable();
            if self.reset_pending(&topic, partition) {
                break;
            }
            let interrupt = async {
                tokio::select! {
                    _ = tokio::time::sleep_until(deadline) => {}
                    _ = reset => {}
                    _ = released.cancelled() => {}
                }
            };
            match consumer.wait(cancel, interrupt).await? {
                Woken::Records => {
                    let more = self.poll(consumer, BATCH - records.len()).await?;
                    records.extend(more);
                }
                Woken::Cancelled => return Ok(false),
                Woken::Interrupted => {}
            }
        }
        Ok(!cancel.is_cancelled() && !released.is_cancelled())
    }

    /// Up to `max` records from the consumer, counting what retention deleted before the
    /// pipeline got to it (the consumer logs each such range).
    async fn poll(
        &self,
        consumer: &mut PartitionConsumer,
        max: usize,
    ) -> Result<Vec<StoredRecord>> {
        let before = consumer.skipped();
        let records = consumer.poll(max).await?;
        self.skipped
            .fetch_add(consumer.skipped() - before, AtomicOrdering::Relaxed);
        Ok(records)
    }
}

pub(crate) fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
