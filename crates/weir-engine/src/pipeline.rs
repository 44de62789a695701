//! A pipeline: read a topic's partitions in its consumer group, call the function on each
//! event (filtered, in parallel where the ordering allows, retried with backoff), and
//! commit the outputs, the dead letters and the new offset as one transaction.
//!
//! **Architecture Invariant:** each source partition has one task that commits each batch
//! with one `EventLog::commit_transaction` (producer `pipeline/<name>/<topic>/<partition>`):
//! the batch's outputs, its dead letters and the group's offset past the batch. The task
//! calls the function on a full batch while the previous batch's transaction is being
//! written (two batches at most; a partial batch waits for that commit, so the events
//! arriving meanwhile are taken with it), and a batch's commit starts only after the
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
//! run at once across the whole pipeline (a semaphore).
//!
//! **Architecture Invariant:** no event is dropped and none blocks a partition forever.
//! A retryable failure (the function's own `retryable` error, or no free instance slot)
//! is tried again after an exponential backoff with jitter, up to `retry.max_attempts`
//! calls; any other failure (trap, deadline, memory, fuel, stack, output limit, denied
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

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use weir_cloudevents::CloudEvent;
use weir_log::{ErrorKind, GroupCommit, Record, StoredRecord, Transaction};
use weir_manifest::{Ordering, PipelineFilter, PipelineSpec, RetrySpec, StartPosition};
use weir_wasm::InstancePool;

use crate::registry::Registry;
use crate::routing::{
    DeadLetterCause, InputPosition, complete_outputs, dead_letter_event, event_key, filter_accepts,
    undecodable_event,
};
use crate::{Result, SharedLog, StartFrom, encode_event};

/// Events read and handled per round.
const BATCH: usize = 256;
/// Longest wait between tries of a failing log write.
const MAX_STALL_BACKOFF: Duration = Duration::from_secs(5);

/// Whether a pipeline runs.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
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
#[derive(Debug, Clone, Serialize)]
pub struct PipelinePartitionStatus {
    pub topic: String,
    pub partition: u32,
    /// The next offset the pipeline will handle (its group's committed offset).
    pub committed: u64,
    pub end_offset: u64,
    pub lag: u64,
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
    pub dead_letter: String,
    pub ordering: Ordering,
    pub concurrency: u32,
    #[serde(flatten)]
    pub state: PipelineState,
    /// Events handled (outputs committed) since the node started.
    pub processed: u64,
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

pub(crate) struct Pipeline {
    name: String,
    group: String,
    from: Vec<String>,
    to: Vec<String>,
    dead_letter: String,
    start: StartPosition,
    ordering: Ordering,
    concurrency: u32,
    filter: Option<PipelineFilter>,
    retry: RetrySpec,
    /// The function's name; its active version comes from `registry` at every batch.
    function: String,
    registry: Arc<Registry>,
    /// This pipeline's own warm instances of the function's active version, with the
    /// registry generation they belong to.
    instances: Mutex<Option<(u64, InstancePool)>>,
    /// Calls running at once, across partitions.
    permits: Arc<Semaphore>,
    state: Mutex<PipelineState>,
    /// Per source partition, the next offset to handle.
    positions: Mutex<BTreeMap<(String, u32), u64>>,
    /// Per source partition, the generation its task claimed the group's partition with;
    /// its commits carry it, so a newer owner fences them.
    generations: Mutex<BTreeMap<(String, u32), u64>>,
    /// Resets asked for and not yet applied by their partition's task.
    resets: Mutex<BTreeMap<(String, u32), StartFrom>>,
    /// The offset each partition's last applied reset moved it to.
    reset_to: Mutex<BTreeMap<(String, u32), u64>>,
    reset_applied: Notify,
    reset_requested: Notify,
    processed: AtomicU64,
    filtered: AtomicU64,
    dead_lettered: AtomicU64,
    retries: AtomicU64,
    skipped: AtomicU64,
}

/// What became of one event of a batch.
enum Outcome {
    /// The function ran; these are its completed outputs.
    Outputs(Vec<(String, CloudEvent)>),
    /// The filter kept it from the function.
    Filtered,
    /// It goes to the dead-letter topic as this event.
    DeadLetter(Box<CloudEvent>),
}

/// How a commit ended when it did not fail.
enum Committed {
    Done,
    /// The log refused the transaction as it is (see [`is_rejection`]): nothing of it was
    /// written, and sending it again would fail the same way.
    Rejected(weir_log::Error),
}

/// Whether the log refused a transaction for what it holds (too large, a record without
/// the key a compacted topic needs, an output topic that does not exist), so that only a
/// different transaction can succeed.
fn is_rejection(e: &weir_log::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::TooLarge | ErrorKind::Invalid | ErrorKind::NotFound
    )
}

/// A handled batch's records, ready to commit.
struct BatchOutputs {
    /// Every record, by target topic, in input order.
    appends: Vec<(String, Vec<Record>)>,
    /// Per input offset, its records: what is committed if the log refuses the whole.
    per_event: Vec<(u64, Vec<(String, Record)>)>,
    processed: u64,
    filtered: u64,
    dead: u64,
}

/// The commit of a partition's previous batch, running while the next one is called.
type Committing<'a> = Pin<Box<dyn Future<Output = Result<()>> + Send + 'a>>;

/// Wait for a batch's commit, if one is running.
async fn finish(committing: Option<Committing<'_>>) -> Result<()> {
    match committing {
        Some(commit) => commit.await,
        None => Ok(()),
    }
}

/// An event of a batch on its way to a lane.
struct Work {
    index: usize,
    offset: u64,
    event: CloudEvent,
}

impl Pipeline {
    pub(crate) fn new(name: &str, spec: &PipelineSpec, registry: Arc<Registry>) -> Pipeline {
        Pipeline {
            name: name.to_owned(),
            group: spec.group.clone(),
            from: spec.from.clone(),
            to: spec.to.clone(),
            dead_letter: spec.dead_letter.clone(),
            start: spec.start,
            ordering: spec.ordering,
            concurrency: spec.concurrency.max(1),
            filter: spec.filter.clone(),
            retry: spec.retry,
            function: spec.function.clone(),
            registry,
            instances: Mutex::new(None),
            permits: Arc::new(Semaphore::new(spec.concurrency.max(1) as usize)),
            state: Mutex::new(PipelineState::Running),
            positions: Mutex::new(BTreeMap::new()),
            generations: Mutex::new(BTreeMap::new()),
            resets: Mutex::new(BTreeMap::new()),
            reset_to: Mutex::new(BTreeMap::new()),
            reset_applied: Notify::new(),
            reset_requested: Notify::new(),
            processed: AtomicU64::new(0),
            filtered: AtomicU64::new(0),
            dead_lettered: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
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

    /// Start one task per source partition.
    pub(crate) async fn spawn(
        self: &Arc<Self>,
        log: &SharedLog,
        tasks: &TaskTracker,
        cancel: &CancellationToken,
    ) -> Result<()> {
        for topic in &self.from {
            let info = crate::topic_info(log, topic).await?;
            for partition in 0..info.partitions {
                let (this, log, topic, cancel) =
                    (self.clone(), log.clone(), topic.clone(), cancel.clone());
                tasks.spawn(async move {
                    // A failure of the log (a read, a wait) or of the task itself stalls the
                    // partition, which starts again from its committed offset after a backoff.
                    let mut wait = Duration::from_millis(100);
                    loop {
                        match this.run_partition(&log, &topic, partition, &cancel).await {
                            Ok(()) => return,
                            Err(_) if cancel.is_cancelled() => return,
                            Err(e) => {
                                tracing::error!(pipeline = %this.name, topic, partition, error = %e, "pipeline partition failed; starting it again from its committed offset");
                                this.set_state(PipelineState::Stalled {
                                    topic: topic.clone(),
                                    partition,
                                    error: e.to_string(),
                                });
                            }
                        }
                        tokio::select! {
                            _ = cancel.cancelled() => return,
                            _ = tokio::time::sleep(wait) => {}
                        }
                        wait = (wait * 2).min(MAX_STALL_BACKOFF);
                    }
                });
            }
        }
        tracing::info!(pipeline = %self.name, group = %self.group, function = %self.function, version = %self.version(), ordering = self.ordering.as_str(), concurrency = self.concurrency, "pipeline started");
        Ok(())
    }

    /// The pool of the function's active version, made when the version changed since
    /// the last batch. Older pools are dropped once the batches using them are done.
    fn instances_for_batch(&self) -> Result<InstancePool> {
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
            Some((g, pool)) if *g == generation => Ok(pool.clone()),
            _ => {
                let pool = function.instances();
                if current.is_some() {
                    tracing::info!(pipeline = %self.name, function = %self.function, version = function.version(), "pipeline switched to a new function version");
                }
                *current = Some((generation, pool.clone()));
                Ok(pool)
            }
        }
    }

    /// The function's active version.
    fn version(&self) -> String {
        self.registry
            .active(&self.function)
            .map(|(_, f)| f.version().to_owned())
            .unwrap_or_default()
    }

    fn set_state(&self, state: PipelineState) {
        *self.state.lock().unwrap_or_else(PoisonError::into_inner) = state;
    }

    pub(crate) async fn status(&self, log: &SharedLog) -> PipelineStatus {
        let positions = self
            .positions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mut partitions = Vec::new();
        for topic in &self.from {
            if let Ok(Some(info)) = log.topic(topic).await {
                for (partition, end) in info.end_offsets.iter().enumerate() {
                    let partition = partition as u32;
                    let committed = match positions.get(&(topic.clone(), partition)) {
                        Some(next) => *next,
                        None => log
                            .committed_offset(&self.group, topic, partition)
                            .await
                            .ok()
                            .flatten()
                            .unwrap_or(0),
                    };
                    partitions.push(PipelinePartitionStatus {
                        topic: topic.clone(),
                        partition,
                        committed,
                        end_offset: *end,
                        lag: end.saturating_sub(committed),
                    });
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
            state: self
                .state
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
            processed: self.processed.load(AtomicOrdering::Relaxed),
            filtered: self.filtered.load(AtomicOrdering::Relaxed),
            dead_lettered: self.dead_lettered.load(AtomicOrdering::Relaxed),
            retries: self.retries.load(AtomicOrdering::Relaxed),
            skipped: self.skipped.load(AtomicOrdering::Relaxed),
            lag: partitions.iter().map(|p| p.lag).sum(),
            partitions,
        }
    }

    /// Ask each partition task of `topic` (or only `partition`) to move the group to
    /// `to`, and wait until they did (each between two batches, through its own
    /// transaction). Returns the new positions.
    pub(crate) async fn reset(
        &self,
        log: &SharedLog,
        topic: &str,
        partition: Option<u32>,
        to: StartFrom,
        cancel: &CancellationToken,
    ) -> Result<Vec<weir_log::RecordPosition>> {
        let info = crate::topic_info(log, topic).await?;
        let targets: Vec<u32> = match partition {
            Some(p) if p < info.partitions => vec![p],
            Some(p) => {
                return Err(weir_log::Error::unknown_partition(topic, p, info.partitions).into());
            }
            None => (0..info.partitions).collect(),
        };
        {
            let mut resets = self.resets.lock().unwrap_or_else(PoisonError::into_inner);
            for p in &targets {
                resets.insert((topic.to_owned(), *p), to);
            }
        }
        self.reset_requested.notify_waiters();
        loop {
            let applied = self.reset_applied.notified();
            tokio::pin!(applied);
            applied.as_mut().enable();
            let pending = {
                let resets = self.resets.lock().unwrap_or_else(PoisonError::into_inner);
                targets
                    .iter()
                    .any(|p| resets.contains_key(&(topic.to_owned(), *p)))
            };
            if !pending {
                break;
            }
            // A task waiting for events wakes on `reset_requested`; a busy one applies the
            // reset after its batch.
            self.reset_requested.notify_waiters();
            tokio::select! {
                _ = cancel.cancelled() => return Err(crate::Error::ShuttingDown),
                _ = applied => {}
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
        let applied = self.reset_to.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(targets
            .into_iter()
            .map(|p| weir_log::RecordPosition {
                partition: p,
                offset: applied.get(&(topic.to_owned(), p)).copied().unwrap_or(0),
            })
            .collect())
    }

    /// The transaction producer of one source partition. Topic names can be long, so a
    /// name over the log's 255-byte limit carries a hash of the topic instead.
    fn producer(&self, topic: &str, partition: u32) -> String {
        let name = format!("pipeline/{}/{topic}/{partition}", self.name);
        if name.len() <= 255 {
            return name;
        }
        let hash = fnv1a(topic.as_bytes());
        format!("pipeline/{}/#{hash:016x}/{partition}", self.name)
    }

    /// Commit `appends` and the group's move to `next` as one transaction, trying again
    /// with backoff while the log refuses it. Fails only when the node stops first.
    async fn commit(
        &self,
        log: &SharedLog,
        topic: &str,
        partition: u32,
        appends: Vec<(String, Vec<Record>)>,
        next: u64,
        cancel: &CancellationToken,
    ) -> Result<Committed> {
        let generation = self
            .generations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&(topic.to_owned(), partition))
            .copied()
            .unwrap_or(0);
        let txn = Transaction {
            producer: self.producer(topic, partition),
            appends,
            commit: Some(GroupCommit {
                group: self.group.clone(),
                topic: topic.to_owned(),
                partition,
                next_offset: next,
                generation,
            }),
        };
        let mut wait = Duration::from_millis(50);
        loop {
            // Sent again unchanged after a failure: the log never stores it twice (an
            // exactly-once backend completes the first try instead; see weir-log).
            match log.commit_transaction(txn.clone()).await {
                Ok(()) => break,
                Err(e) if is_rejection(&e) && !txn.appends.is_empty() => {
                    return Ok(Committed::Rejected(e));
                }
                // Another owner took the partition: this task must not commit again.
                Err(e) if e.kind() == ErrorKind::Fenced => return Err(e.into()),
                Err(e) => {
                    tracing::error!(pipeline = %self.name, topic, partition, error = %e, "pipeline could not commit its batch; trying again");
                    self.set_state(PipelineState::Stalled {
                        topic: topic.to_owned(),
                        partition,
                        error: e.to_string(),
                    });
                    tokio::select! {
                        _ = cancel.cancelled() => return Err(crate::Error::ShuttingDown),
                        _ = tokio::time::sleep(wait) => {}
                    }
                    wait = (wait * 2).min(MAX_STALL_BACKOFF);
                }
            }
        }
        {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            if matches!(&*state, PipelineState::Stalled { topic: t, partition: p, .. } if t == topic && *p == partition)
            {
                *state = PipelineState::Running;
            }
        }
        self.positions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert((topic.to_owned(), partition), next);
        Ok(Committed::Done)
    }

    /// Commit a batch the log refused as a whole (too large, a record too large, a key a
    /// compacted topic needs): event by event, and an event whose own outputs the log
    /// refuses becomes a dead letter (`output_rejected`), without its data if even that
    /// is refused. Returns how many events were dead-lettered here.
    #[allow(clippy::too_many_arguments)]
    async fn commit_one_by_one(
        &self,
        log: &SharedLog,
        topic: &str,
        partition: u32,
        version: &str,
        per_event: Vec<(u64, Vec<(String, Record)>)>,
        refused: weir_log::Error,
        cancel: &CancellationToken,
    ) -> Result<u64> {
        tracing::warn!(pipeline = %self.name, topic, partition, error = %refused, "the log refused the batch; committing it event by event");
        let mut dead = 0;
        for (offset, records) in per_event {
            let mut appends: BTreeMap<String, Vec<Record>> = BTreeMap::new();
            for (target, record) in records {
                appends.entry(target).or_default().push(record);
            }
            let appends: Vec<_> = appends.into_iter().collect();
            let refusal = match self
                .commit(log, topic, partition, appends, offset + 1, cancel)
                .await?
            {
                Committed::Done => continue,
                Committed::Rejected(e) => e,
            };
            let stored = log.read(topic, partition, offset, 1).await?;
            let pos = self.position(topic, partition, offset);
            let cause = DeadLetterCause {
                function: &self.function,
                version,
                reason: "output_rejected",
                error: &format!("the log refused the event's outputs: {refusal}"),
                attempts: 1,
                time: now_rfc3339(),
            };
            let input = match stored.into_iter().find(|r| r.offset == offset) {
                Some(r) => CloudEvent::from_json_slice(&r.value)
                    .unwrap_or_else(|_| undecodable_event(pos, r.value)),
                None => undecodable_event(pos, bytes::Bytes::new()),
            };
            let mut letter = dead_letter_event(pos, input, &cause);
            for attempt in 0..2 {
                let appends = vec![(self.dead_letter.clone(), vec![encode_event(&letter)])];
                match self
                    .commit(log, topic, partition, appends, offset + 1, cancel)
                    .await?
                {
                    Committed::Done => {
                        dead += 1;
                        break;
                    }
                    Committed::Rejected(e) if attempt == 0 => {
                        tracing::warn!(pipeline = %self.name, topic, partition, offset, error = %e, "the dead letter was refused too; sending it without its data");
                        letter.data = None;
                        letter.datacontenttype = None;
                    }
                    Committed::Rejected(e) => {
                        // Nothing more weir can drop: stall, visibly, rather than lose it.
                        return Err(e.into());
                    }
                }
            }
        }
        Ok(dead)
    }

    /// Apply a reset asked for this partition, if any: returns the new next offset.
    async fn take_reset(
        &self,
        log: &SharedLog,
        topic: &str,
        partition: u32,
        cancel: &CancellationToken,
    ) -> Result<Option<u64>> {
        let key = (topic.to_owned(), partition);
        let to = self
            .resets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
            .copied();
        let Some(to) = to else {
            return Ok(None);
        };
        let next = crate::resolve_start(log, topic, partition, to).await?;
        self.commit(log, topic, partition, Vec::new(), next, cancel)
            .await?;
        {
            // Record the result first, then take the request away, unless another reset
            // of this partition came in meanwhile: that one is applied next round.
            self.reset_to
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(key.clone(), next);
            let mut resets = self.resets.lock().unwrap_or_else(PoisonError::into_inner);
            if resets.get(&key) == Some(&to) {
                resets.remove(&key);
            }
        }
        self.reset_applied.notify_waiters();
        tracing::info!(pipeline = %self.name, group = %self.group, topic, partition, next, "pipeline group reset");
        Ok(Some(next))
    }

    async fn run_partition(
        self: &Arc<Self>,
        log: &SharedLog,
        topic: &str,
        partition: u32,
        cancel: &CancellationToken,
    ) -> Result<()> {
        // This task owns the group's partition from here on; whoever owned it before can
        // no longer commit (its generation is older).
        let generation = log.claim(&self.group, topic, partition).await?;
        self.generations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert((topic.to_owned(), partition), generation);
        let next = match log.committed_offset(&self.group, topic, partition).await? {
            Some(offset) => offset,
            None => {
                let start = match self.start {
                    StartPosition::Earliest => StartFrom::Earliest,
                    StartPosition::Latest => StartFrom::Latest,
                };
                let start = crate::resolve_start(log, topic, partition, start).await?;
                // Remember where a new group starts, so "latest" means the same after a restart.
                self.commit(log, topic, partition, Vec::new(), start, cancel)
                    .await?;
                start
            }
        };
        self.positions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert((topic.to_owned(), partition), next);
        let mut committing = None;
        let rounds = self
            .run_rounds(log, topic, partition, next, &mut committing, cancel)
            .await;
        // However the rounds ended, the batch being committed is finished first, so that a
        // restart from the committed offset neither repeats nor skips it.
        let finished = finish(committing).await;
        rounds.and(finished)
    }

    /// Read, call and commit batch after batch from `next`. A batch's commit runs while
    /// the next batch is called (`committing`), and is finished before that batch is
    /// committed, so commits stay in log order.
    async fn run_rounds<'a>(
        self: &'a Arc<Self>,
        log: &'a SharedLog,
        topic: &'a str,
        partition: u32,
        next: u64,
        committing: &mut Option<Committing<'a>>,
        cancel: &'a CancellationToken,
    ) -> Result<()> {
        let mut reader = log.reader(topic, partition, next).await?;
        loop {
            if cancel.is_cancelled() {
                return Ok(());
            }
            if self.reset_pending(topic, partition) {
                // A reset moves the group past whatever is being committed: that first.
                finish(committing.take()).await?;
                if let Some(reset) = self.take_reset(log, topic, partition, cancel).await? {
                    reader.seek(reset);
                }
            }
            let mut records = self.read(&mut *reader, BATCH).await?;
            if records.len() < BATCH && committing.is_some() {
                // Not a full batch: the events arriving while the previous batch commits
                // would otherwise wait for a commit of their own. Take them all at once
                // after it, as a partition without a backlog always did.
                finish(committing.take()).await?;
                let more = self.read(&mut *reader, BATCH - records.len()).await?;
                records.extend(more);
            }
            // A read short of a full batch (an empty one too) finished the commit above.
            let Some(last) = records.last().map(|r| r.offset) else {
                let requested = self.reset_requested.notified();
                tokio::select! {
                    _ = cancel.cancelled() => return Ok(()),
                    _ = requested => {}
                    r = reader.wait() => r?,
                }
                continue;
            };

            let offsets: Vec<u64> = records.iter().map(|r| r.offset).collect();
            let instances = self.instances_for_batch()?;
            let (handled, previous) = tokio::join!(
                self.handle_batch(&instances, topic, partition, records, cancel),
                finish(committing.take()),
            );
            previous?;
            let Some(outcomes) = handled? else {
                // Stopped mid-batch: nothing of it is committed, it runs again after a restart.
                return Ok(());
            };
            let batch = self.batch_outputs(offsets, outcomes);
            let version = instances.function().version().to_owned();
            *committing = Some(Box::pin(self.commit_batch(
                log,
                topic,
                partition,
                version,
                batch,
                last + 1,
                cancel,
            )));
        }
    }

    /// Up to `max` records from the reader; a range that retention deleted before the
    /// pipeline got to it is counted and logged, never passed over silently.
    async fn read(
        &self,
        reader: &mut dyn weir_log::PartitionReader,
        max: usize,
    ) -> Result<Vec<StoredRecord>> {
        let read = reader.read(max).await?;
        if let Some(skipped) = read.skipped {
            self.skipped
                .fetch_add(skipped.to - skipped.from, AtomicOrdering::Relaxed);
            tracing::warn!(pipeline = %self.name, group = %self.group, topic = reader.topic(), partition = reader.partition(), from = skipped.from, to = skipped.to, "retention deleted source events before the pipeline read them; they were not handled");
        }
        Ok(read.records)
    }

    /// Whether a reset of this partition waits to be applied.
    fn reset_pending(&self, topic: &str, partition: u32) -> bool {
        self.resets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(&(topic.to_owned(), partition))
    }

    /// A batch's outcomes as the records to append, per target topic and per event.
    fn batch_outputs(&self, offsets: Vec<u64>, outcomes: Vec<Outcome>) -> BatchOutputs {
        let mut appends: BTreeMap<String, Vec<Record>> = BTreeMap::new();
        let mut batch = BatchOutputs {
            appends: Vec::new(),
            per_event: Vec::with_capacity(outcomes.len()),
            processed: 0,
            filtered: 0,
            dead: 0,
        };
        for (offset, outcome) in offsets.into_iter().zip(outcomes) {
            let records: Vec<(String, Record)> = match outcome {
                Outcome::Outputs(outputs) => {
                    batch.processed += 1;
                    outputs
                        .into_iter()
                        .map(|(target, event)| (target, encode_event(&event)))
                        .collect()
                }
                Outcome::Filtered => {
                    batch.filtered += 1;
                    Vec::new()
                }
                Outcome::DeadLetter(event) => {
                    batch.dead += 1;
                    vec![(self.dead_letter.clone(), encode_event(&event))]
                }
            };
            for (target, record) in &records {
                match appends.get_mut(target) {
                    Some(records) => records.push(record.clone()),
                    None => {
                        appends.insert(target.clone(), vec![record.clone()]);
                    }
                }
            }
            batch.per_event.push((offset, records));
        }
        batch.appends = appends.into_iter().collect();
        batch
    }

    /// Commit a handled batch and the group's move to `next`, event by event if the log
    /// refuses it whole, and count it.
    #[allow(clippy::too_many_arguments)]
    async fn commit_batch(
        &self,
        log: &SharedLog,
        topic: &str,
        partition: u32,
        version: String,
        batch: BatchOutputs,
        next: u64,
        cancel: &CancellationToken,
    ) -> Result<()> {
        let mut dead = batch.dead;
        let committed = self
            .commit(log, topic, partition, batch.appends, next, cancel)
            .await?;
        if let Committed::Rejected(refused) = committed {
            dead += self
                .commit_one_by_one(
                    log,
                    topic,
                    partition,
                    &version,
                    batch.per_event,
                    refused,
                    cancel,
                )
                .await?;
        }
        self.processed
            .fetch_add(batch.processed, AtomicOrdering::Relaxed);
        self.filtered
            .fetch_add(batch.filtered, AtomicOrdering::Relaxed);
        self.dead_lettered.fetch_add(dead, AtomicOrdering::Relaxed);
        Ok(())
    }

    /// Decode, filter and call the function on a batch's events, in lanes as the
    /// ordering allows. `None` if the node stopped before the batch was done.
    async fn handle_batch(
        self: &Arc<Self>,
        instances: &InstancePool,
        topic: &str,
        partition: u32,
        records: Vec<StoredRecord>,
        cancel: &CancellationToken,
    ) -> Result<Option<Vec<Outcome>>> {
        let mut outcomes: Vec<Option<Outcome>> = Vec::with_capacity(records.len());
        let lanes_wanted = match self.ordering {
            Ordering::Partition => 1,
            Ordering::Key | Ordering::None => self.concurrency as usize,
        };
        let mut lanes: Vec<Vec<Work>> = (0..lanes_wanted).map(|_| Vec::new()).collect();
        let mut spread = 0usize;
        for (index, record) in records.into_iter().enumerate() {
            let offset = record.offset;
            let pos = self.position(topic, partition, offset);
            match CloudEvent::from_json_slice(&record.value) {
                Err(e) => {
                    let cause = DeadLetterCause {
                        function: &self.function,
                        version: instances.function().version(),
                        reason: "undecodable",
                        error: &format!("stored record is not a CloudEvent: {e}"),
                        attempts: 0,
                        time: now_rfc3339(),
                    };
                    let event = undecodable_event(pos, record.value);
                    outcomes.push(Some(Outcome::DeadLetter(Box::new(dead_letter_event(
                        pos, event, &cause,
                    )))));
                }
                Ok(event) if !self.accepts(&event) => outcomes.push(Some(Outcome::Filtered)),
                Ok(event) => {
                    let lane = match self.ordering {
                        Ordering::Partition => 0,
                        Ordering::Key => match event_key(&event) {
                            Some(key) => lane_of(&key, lanes_wanted),
                            None => {
                                spread += 1;
                                spread % lanes_wanted
                            }
                        },
                        Ordering::None => {
                            spread += 1;
                            spread % lanes_wanted
                        }
                    };
                    lanes[lane].push(Work {
                        index,
                        offset,
                        event,
                    });
                    outcomes.push(None);
                }
            }
        }

        let mut running = Vec::new();
        for lane in lanes.into_iter().filter(|l| !l.is_empty()) {
            let permit = self
                .permits
                .clone()
                .acquire_owned()
                .await
                .map_err(|e| crate::Error::Task(e.to_string()))?;
            let (this, instances, topic, cancel) = (
                self.clone(),
                instances.clone(),
                topic.to_owned(),
                cancel.clone(),
            );
            running.push(tokio::task::spawn_blocking(move || {
                let _permit = permit;
                this.run_lane(&instances, &topic, partition, lane, &cancel)
            }));
        }
        // Wait for every lane, even after one gave up, so no call runs on after the batch.
        let mut stopped = false;
        for lane in running {
            match lane.await.map_err(|e| crate::Error::Task(e.to_string()))? {
                Some(done) => {
                    for (index, outcome) in done {
                        outcomes[index] = Some(outcome);
                    }
                }
                None => stopped = true,
            }
        }
        if stopped {
            return Ok(None);
        }
        Ok(Some(
            outcomes
                .into_iter()
                .map(|o| o.expect("every event of the batch has an outcome"))
                .collect(),
        ))
    }

    fn position<'a>(&'a self, topic: &'a str, partition: u32, offset: u64) -> InputPosition<'a> {
        InputPosition {
            pipeline: &self.name,
            topic,
            partition,
            offset,
        }
    }

    /// Call the function on a lane's events in order, retrying retryable failures.
    /// Blocking. `None` if the node stopped during a retry's wait.
    fn run_lane(
        &self,
        instances: &InstancePool,
        topic: &str,
        partition: u32,
        lane: Vec<Work>,
        cancel: &CancellationToken,
    ) -> Option<Vec<(usize, Outcome)>> {
        let function = instances.function();
        let mut done = Vec::with_capacity(lane.len());
        for work in lane {
            let pos = self.position(topic, partition, work.offset);
            let mut attempt = 1;
            let outcome = loop {
                // At debug level: a served node logs at info, where formatting a span's
                // fields for every event cost a quarter of the pipeline's CPU.
                let span = tracing::debug_span!(
                    "function_call",
                    pipeline = %self.name,
                    function = %self.function,
                    version = function.version(),
                    topic,
                    partition,
                    offset = work.offset,
                    event_id = %work.event.id,
                    trace_id = trace_id(&work.event).unwrap_or_default(),
                    attempt,
                );
                let result = span.in_scope(|| instances.call(&work.event));
                let failure = match result {
                    Ok(outputs) => match complete_outputs(pos, &self.to, &work.event, outputs) {
                        Ok(outputs) => break Outcome::Outputs(outputs),
                        Err(reason) => function.invalid(reason),
                    },
                    Err(e) => e,
                };
                let retry = failure.is_retryable() && attempt < self.retry.max_attempts;
                if retry {
                    self.retries.fetch_add(1, AtomicOrdering::Relaxed);
                    let wait = self.backoff(attempt);
                    tracing::warn!(pipeline = %self.name, function = %self.function, version = function.version(), topic, partition, offset = work.offset, event_id = %work.event.id, attempt, error = %failure, wait_ms = wait.as_millis() as u64, "call failed; trying again");
                    if wait_or_cancel(wait, cancel) {
                        return None;
                    }
                    attempt += 1;
                    continue;
                }
                let reason = if failure.is_retryable() {
                    "retries_exhausted"
                } else {
                    failure.kind()
                };
                tracing::warn!(pipeline = %self.name, function = %self.function, version = function.version(), topic, partition, offset = work.offset, event_id = %work.event.id, trace_id = trace_id(&work.event).unwrap_or_default(), error = %failure, reason, attempts = attempt, dead_letter = %self.dead_letter, "event dead-lettered");
                let cause = DeadLetterCause {
                    function: &self.function,
                    version: function.version(),
                    reason,
                    error: &failure.to_string(),
                    attempts: attempt,
                    time: now_rfc3339(),
                };
                break Outcome::DeadLetter(Box::new(dead_letter_event(
                    pos,
                    work.event.clone(),
                    &cause,
                )));
            };
            done.push((work.index, outcome));
        }
        Some(done)
    }

    /// The wait after `attempt` failed calls: the policy's backoff, varied by jitter.
    fn backoff(&self, attempt: u32) -> Duration {
        let base = self.retry.backoff_ms(attempt) as f64;
        let jitter = self.retry.jitter.clamp(0.0, 1.0);
        let factor = 1.0 - jitter + 2.0 * jitter * fastrand::f64();
        let ms = (base * factor).min(self.retry.max_backoff_ms as f64);
        Duration::from_micros((ms * 1000.0) as u64)
    }
}

/// Sleep `wait` on this (blocking) thread, waking early if the node stops: true if it did.
fn wait_or_cancel(wait: Duration, cancel: &CancellationToken) -> bool {
    let deadline = std::time::Instant::now() + wait;
    loop {
        if cancel.is_cancelled() {
            return true;
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return false;
        }
        std::thread::sleep(left.min(Duration::from_millis(20)));
    }
}

/// Which of `lanes` lanes the events with `key` go to: always the same one.
fn lane_of(key: &[u8], lanes: usize) -> usize {
    (fnv1a(key) % lanes as u64) as usize
}

/// FNV-1a: stable across runs and cheap on short keys.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// The trace id of the event's W3C `traceparent` (`00-<trace id>-<span id>-<flags>`).
fn trace_id(event: &CloudEvent) -> Option<&str> {
    match event.extensions.get("traceparent") {
        Some(weir_cloudevents::ExtensionValue::String(tp)) => tp.split('-').nth(1),
        _ => None,
    }
}

pub(crate) fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
