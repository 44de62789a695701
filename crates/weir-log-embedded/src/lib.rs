//! weir's embedded durable event log: named topics split into partitions, each an
//! append-only sequence of records with dense offsets, plus durable consumer-group offsets.
//!
//! The log stores opaque bytes (an optional key, a value, a timestamp) and does no network
//! IO. Under the default [`FsyncPolicy::Always`], [`Log::append`] resolves only once its
//! records are fsynced (concurrent appends to a partition share one fsync); after a crash
//! every acknowledged record is there and no record is half there.
//!
//! Offsets of a partition strictly increase. Appends assign them densely, but compaction
//! ([`TopicConfig::compaction`]) and retention remove records, so consumers must take each
//! record's own [`StoredRecord::offset`] rather than count records.
//!
//! [`Log::commit_transaction`] appends records to several topics and commits a consumer
//! group's offset as one [`Transaction`]: exactly once across crashes, through an intent
//! journal, or for outputs to one partition through one frame that carries the offset
//! (see `transaction` and `journal`).
//!
//! Every file operation goes through the [`io::Io`] the log was opened on: the real file
//! system for [`Log::open`], a simulated disk that power cuts can be tested on for
//! [`Log::open_with_io`] (see `io`).
//!
//! # Data directory
//!
//! ```text
//! <dir>/weir-log.lock                                   held (flock) while a Log is open
//! <dir>/topics/<topic>/topic.json                       see `topic`
//! <dir>/topics/<topic>/<partition>/…                    see `partition`, `segment`,
//!                                                       `index` and `frame`
//! <dir>/groups/<group>.json                             see `groups`
//! <dir>/transactions/<generation:020>.journal           see `journal`
//! <dir>/wal/<generation:020>.wal                         see `wal`
//! ```
//!
//! # Guarantees
//!
//! - The records of one append call that go to one partition are one batch: after a crash
//!   they are all there or none is. Batches of different partitions are independent.
//! - An append that fails may still have written batches to other partitions, and one
//!   whose future is dropped may still complete; callers that retry get at-least-once.
//! - A transaction is all or nothing across partitions, topics and its group commit: after
//!   a crash at any point and [`Log::open`], either every record of it is stored exactly
//!   once and its offset is committed, or (only if its intent, or its one frame, never
//!   became durable) none is and the old offset stands. Once its intent is durable it
//!   cannot abort; a failure leaves it pending until the producer's next call or the next
//!   open completes it ([`Error::TransactionIncomplete`]). Readers may see some of its
//!   partitions' records before others while it is being written.
//! - A commit of a group's offset, plain or transactional, wins over every commit to the
//!   same group and partition made before it, also when recovery re-applies transactions
//!   (see `groups`). A pipeline should still write its offsets only through its
//!   producer's transactions.
//! - A failed write or fsync poisons its partition until the process restarts
//!   ([`Error::Poisoned`]); one of the transaction journal refuses every transaction until
//!   then ([`Error::JournalPoisoned`]).

mod backend;
mod error;
mod frame;
mod fsutil;
mod groups;
mod index;
#[doc(hidden)]
pub mod io;
mod journal;
mod partition;
mod reader;
mod segment;
mod telemetry;
mod topic;
mod transaction;
mod wal;

use std::{
    collections::BTreeMap,
    fmt,
    fs::TryLockError,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, PoisonError, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use serde::Serialize;
use tracing::instrument;

pub use crate::backend::{SEGMENT_BYTES, guarantees, open_shared};
pub use crate::telemetry::describe_metrics;
use crate::{
    error::IoContext,
    frame::LimitError,
    groups::{Groups, validate_group_name},
    io::{Access, Io, IoFile, RealIo},
    journal::Journal,
    partition::Partition,
    topic::{Topic, validate_topic_name},
    transaction::Producers,
    wal::Wal,
};
pub use crate::{
    error::{Error, Result},
    topic::{FsyncPolicy, TopicConfig},
};
pub use weir_log::{
    GroupCommit, Record, RecordPosition, RetentionReport, StoredRecord, Transaction,
};

/// How many bytes of the segment file at `path` are whole frames from its start, for
/// tests: the active segment is longer on disk, by the zeros its writer fills ahead.
#[cfg(any(test, feature = "sim"))]
#[doc(hidden)]
pub fn segment_frames_len(io: &dyn Io, path: &Path) -> std::io::Result<u64> {
    let base = path
        .file_name()
        .and_then(|name| segment::parse_log_file_name(name.to_str()?))
        .ok_or_else(|| std::io::Error::other(format!("{} is not a segment", path.display())))?;
    let file = io.open(path, Access::Read)?;
    Ok(segment::scan(&*file, base, None)?.index.log_len)
}

const LOCK_FILE: &str = "weir-log.lock";
/// How many transaction producers [`Log::append_atomic`] spreads its calls over (each
/// runs one transaction at a time).
pub const ATOMIC_PRODUCERS: u64 = 16;
const TOPICS_DIR: &str = "topics";
const GROUPS_DIR: &str = "groups";

#[derive(Debug, Clone, Serialize)]
pub struct TopicInfo {
    pub name: String,
    pub partitions: u32,
    /// Per partition, the next offset to be assigned.
    pub end_offsets: Vec<u64>,
    /// Per partition, the first offset still stored; nothing below it can be read.
    pub start_offsets: Vec<u64>,
    pub config: TopicConfig,
}

#[derive(Debug, Clone)]
pub struct LogOptions {
    /// Largest key plus value of one record. Default 1 MiB.
    pub max_record_bytes: usize,
    /// Largest encoded batch (the records of one call for one partition). Default 8 MiB.
    pub max_batch_bytes: usize,
    /// Largest transaction, as its intent takes in the journal (about its keys and values
    /// plus 20 bytes a record). Default 64 MiB.
    pub max_transaction_bytes: usize,
    /// The transaction journal starts a new file once its current one passes this many
    /// bytes; an open after a crash reads up to about this much. Default 16 MiB.
    pub journal_file_bytes: u64,
    /// Most partitions one topic may have: [`Log::create_topic`] refuses more with
    /// [`Error::InvalidPartitionCount`]. Default 1024.
    pub max_partitions_per_topic: u32,
    /// Most partitions of all topics together: [`Log::create_topic`] refuses a topic that
    /// would take the log past it with [`Error::TooManyPartitions`]. An open partition
    /// holds two file descriptors (its active segment, for writing and for reading), one
    /// more per closed segment, and a writer thread once appended to. Default 4096, about
    /// 8,200 descriptors for the active segments: under half of a `ulimit -n` of 20,000,
    /// leaving the rest for closed segments, the journal and the node's sockets. Lower it
    /// (or raise `ulimit -n`) where the limit on open files is smaller.
    pub max_partitions: u32,
    /// Whether partitions under `FsyncPolicy::Always` make their small groups durable
    /// through the log's one write-ahead file (one fdatasync for what every partition
    /// wrote at about the same time) rather than each with its own. Default false: on the
    /// machine measured so far it cut the fdatasyncs at moderate load about sixfold but
    /// the CPU per event by only 3-8%, and it raised the tail latency (see
    /// docs/benchmarks.md). A log opened without it still replays what an earlier open
    /// left in the file. Opening with it marks the log's `topic.json` files version 3,
    /// which weir before it refuses.
    pub write_ahead: bool,
    /// The write-ahead file starts a new file once its current one passes this many
    /// bytes, and the old one goes once the segments it covers are fsynced; an open after
    /// a crash replays up to about this much (more while checkpoints lag). Default 64 MiB.
    pub write_ahead_file_bytes: u64,
    /// How long a partition's writer under `FsyncPolicy::Always` waits, from the first
    /// append of a small group (under 32 KiB), for more appends to share its write and
    /// fdatasync, when its last group took several appends and was done less than this
    /// long before (an idle partition's lone append is not held, nor an appender that
    /// waits for each acknowledgement). PostgreSQL's `commit_delay` (with
    /// `commit_siblings`): it trades latency for CPU at moderate load, where each
    /// partition otherwise fsyncs an event or two at a time. Default zero (no wait);
    /// capped at [`MAX_COMMIT_DELAY`].
    pub commit_delay: Duration,
}

/// The longest [`LogOptions::commit_delay`] (PostgreSQL's `commit_delay` stops there too).
pub const MAX_COMMIT_DELAY: Duration = Duration::from_millis(100);

impl Default for LogOptions {
    fn default() -> LogOptions {
        LogOptions {
            max_record_bytes: 1 << 20,
            max_batch_bytes: 8 << 20,
            max_transaction_bytes: 64 << 20,
            journal_file_bytes: 16 << 20,
            max_partitions_per_topic: 1024,
            max_partitions: 4096,
            write_ahead: false,
            write_ahead_file_bytes: 64 << 20,
            commit_delay: Duration::ZERO,
        }
    }
}

/// The log. Cheap to clone; clones share one open data directory.
///
/// [`Log::create_topic`] and [`Log::commit_offset`] block on fsync; from async code, call
/// them through `tokio::task::spawn_blocking`. Reads block only on page-cache reads.
#[derive(Clone)]
pub struct Log {
    inner: Arc<Inner>,
}

struct Inner {
    io: Arc<dyn Io>,
    dir: PathBuf,
    opts: LogOptions,
    topics: RwLock<BTreeMap<String, Arc<Topic>>>,
    /// Serialises topic creation without blocking lookups while files are made.
    create_lock: Mutex<()>,
    groups: Arc<Groups>,
    /// The next sequence number for a transaction or a group commit; see `journal`.
    next_sequence: Arc<AtomicU64>,
    journal: Journal,
    /// Set unless [`LogOptions::write_ahead`] is off.
    wal: Option<Arc<Wal>>,
    producers: Producers,
    /// Picks the producer of the next [`Log::append_atomic`] that spans partitions.
    next_atomic_producer: AtomicU64,
    /// Stops the next transaction part-way, for tests.
    #[cfg(test)]
    transaction_fault: Mutex<Option<transaction::TransactionFault>>,
    /// Holds the flock on `weir-log.lock` for as long as the log is open.
    _lock: Box<dyn IoFile>,
}

impl Drop for Inner {
    /// A clean close writes the group files once every partition's writer has stopped, so
    /// the offsets committed through frames (see `transaction`) are in the group files as
    /// those of journal transactions are after a checkpoint: damage a later open finds in
    /// a segment's tail then costs the same with either kind of transaction.
    fn drop(&mut self) {
        // Dropping the last handles to the partitions joins their writers.
        self.producers = Producers::default();
        self.topics
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        if let Err(error) = self.groups.checkpoint() {
            telemetry::CloseCheckpointFailed {
                error: &error.to_string(),
            }
            .emit();
        }
        // The partitions have closed, fsyncing their segments: the file's entries go.
        if let Some(wal) = &self.wal {
            wal.close();
        }
    }
}

impl fmt::Debug for Log {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Log")
            .field("dir", &self.inner.dir)
            .finish_non_exhaustive()
    }
}

/// Records of one append call bound for one partition, with their input positions.
struct PartitionBatch {
    partition: u32,
    input_indexes: Vec<usize>,
    records: Vec<Record>,
}

/// Splits an append call's records into one batch per partition (by key, round robin
/// without one), in partition order.
fn split_by_partition(topic: &Topic, records: Vec<Record>) -> Vec<PartitionBatch> {
    let mut by_partition: BTreeMap<u32, PartitionBatch> = BTreeMap::new();
    for (index, record) in records.into_iter().enumerate() {
        let partition = topic.choose_partition(record.key.as_deref());
        let batch = by_partition
            .entry(partition)
            .or_insert_with(|| PartitionBatch {
                partition,
                input_indexes: Vec::new(),
                records: Vec::new(),
            });
        batch.input_indexes.push(index);
        batch.records.push(record);
    }
    by_partition.into_values().collect()
}

impl Log {
    /// Opens the log in `dir`, creating it if needed, recovers every topic in it and
    /// completes every transaction a crash left unfinished (see [`Log::commit_transaction`]).
    /// Fails with [`Error::Locked`] while another `Log` has `dir` open, and with the
    /// append's error if such a transaction cannot be completed (a full disk, say): free
    /// space, then open again.
    #[instrument(skip_all, err, fields(dir = %dir.display()))]
    pub fn open(dir: &Path, opts: LogOptions) -> Result<Log> {
        Log::open_on(Arc::new(RealIo), dir, opts)
    }

    /// [`Log::open`] on another file system than the real one: a simulated disk in tests
    /// (see [`io`]).
    #[doc(hidden)]
    #[instrument(skip_all, err, fields(dir = %dir.display(), io = ?io))]
    pub fn open_with_io(io: Arc<dyn Io>, dir: &Path, opts: LogOptions) -> Result<Log> {
        Log::open_on(io, dir, opts)
    }

    fn open_on(io: Arc<dyn Io>, dir: &Path, opts: LogOptions) -> Result<Log> {
        telemetry::describe_metrics();
        fsutil::create_dir_all(&*io, dir)
            .context(|| format!("could not create {}", dir.display()))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = io
            .open(&lock_path, Access::Create)
            .context(|| format!("could not open {}", lock_path.display()))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(Error::Locked {
                    dir: dir.to_owned(),
                });
            }
            Err(TryLockError::Error(e)) => {
                return Err(Error::Io {
                    context: format!("could not lock {}", lock_path.display()),
                    source: e,
                });
            }
        }

        let topics_dir = dir.join(TOPICS_DIR);
        let groups_dir = dir.join(GROUPS_DIR);
        for sub in [&topics_dir, &groups_dir] {
            fsutil::create_dir(&*io, sub)
                .context(|| format!("could not create {}", sub.display()))?;
        }

        // Before the topics: opening a partition applies the commits its frames carry, and
        // scans what the write-ahead file's replay wrote to its segments.
        let groups = Arc::new(Groups::load(&io, &groups_dir)?);
        let generation = wal::replay(&*io, dir)?;
        let wal = match opts.write_ahead {
            true => Some(Wal::start(
                &io,
                dir,
                generation,
                opts.write_ahead_file_bytes,
            )?),
            false => None,
        };
        let mut topics = BTreeMap::new();
        let entries = io
            .read_dir(&topics_dir)
            .context(|| format!("could not list {}", topics_dir.display()))?;
        for name in entries {
            let path = topics_dir.join(&name);
            let Some(name) = name.to_str().filter(|n| topic::check_name(n).is_ok()) else {
                telemetry::EntryIgnored {
                    path: &path,
                    reason: "not a valid topic name",
                }
                .emit();
                continue;
            };
            if !fsutil::is_dir(&*io, &path) {
                continue;
            }
            match Topic::recover(&io, &path, name, &groups, wal.as_ref())? {
                Some(topic) => {
                    topic.set_commit_delay(opts.commit_delay);
                    topics.insert(name.to_owned(), Arc::new(topic));
                }
                None => match topic::remove_unfinished(&*io, &path) {
                    Ok(true) => telemetry::UnfinishedTopicRemoved { path: &path }.emit(),
                    Ok(false) => telemetry::EntryIgnored {
                        path: &path,
                        reason: "no topic.json, but its partitions hold records; restore its topic.json or move it away",
                    }
                    .emit(),
                    Err(error) => telemetry::EntryIgnored {
                        path: &path,
                        reason: &format!(
                            "topic creation did not finish, and removing what it left failed ({error})"
                        ),
                    }
                    .emit(),
                },
            }
        }

        let journal_dir = dir.join(journal::JOURNAL_DIR);
        let recovered = journal::recover(&*io, &journal_dir)?;
        let next_sequence = Arc::new(AtomicU64::new(
            groups.max_sequence().max(recovered.max_sequence) + 1,
        ));
        let journal = Journal::new(
            &io,
            &journal_dir,
            opts.journal_file_bytes,
            &recovered,
            Arc::clone(&groups),
            Arc::clone(&next_sequence),
        );
        let log = Log {
            inner: Arc::new(Inner {
                io,
                dir: dir.to_owned(),
                opts,
                topics: RwLock::new(topics),
                create_lock: Mutex::new(()),
                journal,
                wal,
                groups,
                next_sequence,
                producers: Producers::default(),
                next_atomic_producer: AtomicU64::new(0),
                #[cfg(test)]
                transaction_fault: Mutex::new(None),
                _lock: lock,
            }),
        };
        log.recover_transactions(&recovered)?;
        log.clamp_group_offsets();
        // The old journal files go only once the groups hold their commits durably; the
        // clamped offsets are written here too.
        log.inner.groups.checkpoint()?;
        log.inner.journal.replace_recovered_files(&recovered)?;
        Ok(log)
    }

    /// Creates a topic. `Ok(true)` if created; `Ok(false)` if it already exists with
    /// `config.partitions` partitions, in which case its other settings are replaced by
    /// `config` (durably); [`Error::TopicExists`] if it exists with another count. A new
    /// topic must stay within [`LogOptions::max_partitions_per_topic`] and
    /// [`LogOptions::max_partitions`]. A creation that fails leaves no trace of the topic.
    #[instrument(skip(self), err)]
    pub fn create_topic(&self, name: &str, config: &TopicConfig) -> Result<bool> {
        validate_topic_name(name)?;
        let opts = &self.inner.opts;
        config.validate(name, opts.max_partitions_per_topic)?;
        let _creating = self
            .inner
            .create_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(existing) = self.find_topic(name) {
            let count = existing.partition_count();
            if count == config.partitions {
                existing.update_config(config)?;
                return Ok(false);
            }
            return Err(Error::TopicExists {
                topic: name.to_owned(),
                existing: count,
                requested: config.partitions,
            });
        }
        let in_use: u64 = self
            .inner
            .topics
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .map(|t| u64::from(t.partition_count()))
            .sum();
        if in_use + u64::from(config.partitions) > u64::from(opts.max_partitions) {
            return Err(Error::TooManyPartitions {
                topic: name.to_owned(),
                partitions: config.partitions,
                in_use: u32::try_from(in_use).unwrap_or(u32::MAX),
                max: opts.max_partitions,
            });
        }
        let dir = self.inner.dir.join(TOPICS_DIR).join(name);
        let topic = Topic::create(
            &self.inner.io,
            &dir,
            name,
            config,
            &self.inner.groups,
            self.inner.wal.as_ref(),
        )?;
        topic.set_commit_delay(self.inner.opts.commit_delay);
        self.inner
            .topics
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.to_owned(), Arc::new(topic));
        Ok(true)
    }

    pub fn topic(&self, name: &str) -> Option<TopicInfo> {
        self.find_topic(name).map(|t| t.info())
    }

    /// All topics, sorted by name.
    pub fn topics(&self) -> Vec<TopicInfo> {
        let topics = self
            .inner
            .topics
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        topics.values().map(|t| t.info()).collect()
    }

    /// Appends records to a topic and resolves once the topic's [`FsyncPolicy`] allows:
    /// under `Always`, once they are fsynced.
    ///
    /// A record with a key goes to partition `(murmur2(key) & 0x7fffffff) % partitions`,
    /// Kafka's default, stable across runs and platforms; records without a key go round
    /// robin, one record at a time. The records of this call that land in one partition are
    /// written as one batch. Limits (and, for a compacted topic, that every record has a
    /// key: [`Error::KeyRequired`]) are checked for every batch before any is written.
    /// Returns positions in input order.
    #[instrument(skip_all, err, fields(topic = topic, records = records.len()))]
    pub async fn append(&self, topic: &str, records: Vec<Record>) -> Result<Vec<RecordPosition>> {
        let topic_ref = self.get_topic(topic)?;
        let batches = split_by_partition(&topic_ref, records);
        self.append_batches(topic, &topic_ref, batches, None).await
    }

    /// Appends records to a topic as [`Log::append`] does, but all or nothing across
    /// partitions: after a crash at any point, every record is there or none is. Records
    /// bound for one partition are one batch as with `append`; records spanning
    /// partitions go through a transaction (its intent fsynced in the journal first, so a
    /// second fsync in sequence: the cost is in docs/benchmarks.md). Such calls share
    /// [`ATOMIC_PRODUCERS`] producers, so that many run at once. If the call fails with
    /// [`Error::TransactionIncomplete`] its records will still be stored (by the
    /// producer's next call or the next open): a caller that sends them again may store
    /// them twice.
    #[instrument(skip_all, err, fields(topic = topic, records = records.len()))]
    pub async fn append_atomic(
        &self,
        topic: &str,
        records: Vec<Record>,
    ) -> Result<Vec<RecordPosition>> {
        let topic_ref = self.get_topic(topic)?;
        let batches = split_by_partition(&topic_ref, records);
        if batches.len() <= 1 {
            // One frame is atomic already.
            return self.append_batches(topic, &topic_ref, batches, None).await;
        }
        // The records in input order again, for the transaction (which partitions them
        // itself, as `append` does).
        let mut records: Vec<(usize, Record)> = batches
            .into_iter()
            .flat_map(|b| b.input_indexes.into_iter().zip(b.records))
            .collect();
        records.sort_unstable_by_key(|(index, _)| *index);
        let records: Vec<Record> = records.into_iter().map(|(_, record)| record).collect();
        let n = self
            .inner
            .next_atomic_producer
            .fetch_add(1, Ordering::Relaxed);
        let count = records.len();
        let txn = Transaction {
            producer: format!("weir/append/{}", n % ATOMIC_PRODUCERS),
            appends: vec![(topic.to_owned(), records)],
            commit: None,
        };
        let mut positions = vec![None; count];
        for (_, index, position) in self.transact(txn).await? {
            positions[index] = Some(position);
        }
        positions
            .into_iter()
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| Error::Io {
                context: format!(
                    "an atomic append to topic \"{topic}\" lost track of its positions"
                ),
                source: std::io::Error::other("a batch without a base offset"),
            })
    }

    /// Appends records to one partition of a topic, as one batch; see [`Log::append`].
    #[instrument(skip_all, err, fields(topic = topic, partition = partition, records = records.len()))]
    pub async fn append_to(
        &self,
        topic: &str,
        partition: u32,
        records: Vec<Record>,
    ) -> Result<Vec<RecordPosition>> {
        self.append_to_expecting(topic, partition, records, None)
            .await
    }

    /// [`Log::append_to`], written only if the partition's end offset is `expect_end`
    /// when its writer comes to the batch; [`Error::Conflict`] otherwise, and nothing is
    /// written. The check and the write are one step of the partition's writer.
    #[instrument(skip_all, err, fields(topic = topic, partition = partition, records = records.len()))]
    pub async fn append_to_expecting(
        &self,
        topic: &str,
        partition: u32,
        records: Vec<Record>,
        expect_end: Option<u64>,
    ) -> Result<Vec<RecordPosition>> {
        let topic_ref = self.get_topic(topic)?;
        topic_ref.partition(partition)?;
        let batch = PartitionBatch {
            partition,
            input_indexes: (0..records.len()).collect(),
            records,
        };
        self.append_batches(topic, &topic_ref, vec![batch], expect_end)
            .await
    }

    async fn append_batches(
        &self,
        topic_name: &str,
        topic: &Topic,
        batches: Vec<PartitionBatch>,
        expect_end: Option<u64>,
    ) -> Result<Vec<RecordPosition>> {
        // An empty conditional append still checks its condition (and writes nothing).
        let batches: Vec<_> = batches
            .into_iter()
            .filter(|b| !b.records.is_empty() || expect_end.is_some())
            .collect();
        let opts = &self.inner.opts;
        for batch in &batches {
            frame::check_limits(
                &batch.records,
                opts.max_record_bytes,
                opts.max_batch_bytes,
                false,
            )
            .map_err(|limit| match limit {
                LimitError::Record { index, size } => Error::RecordTooLarge {
                    topic: topic_name.to_owned(),
                    index: batch.input_indexes[index],
                    size,
                    max: opts.max_record_bytes,
                },
                LimitError::Batch { size } => Error::BatchTooLarge {
                    topic: topic_name.to_owned(),
                    partition: batch.partition,
                    records: batch.records.len(),
                    size,
                    max: opts.max_batch_bytes,
                },
            })?;
        }

        if topic.config().compaction
            && batches
                .iter()
                .any(|b| b.records.iter().any(|r| r.key.is_none()))
        {
            return Err(Error::KeyRequired {
                topic: topic_name.to_owned(),
            });
        }

        let now_ms = now_ms();
        let total = batches.iter().map(|b| b.records.len()).sum();
        // Queue every partition's batch first so their writes and fsyncs overlap.
        let mut pending = Vec::with_capacity(batches.len());
        for batch in batches {
            let partition = topic.partition(batch.partition)?;
            let reply =
                partition.enqueue_expecting(batch.records, now_ms, None, None, expect_end)?;
            pending.push((
                batch.partition,
                batch.input_indexes,
                reply,
                Arc::clone(partition),
            ));
        }

        let mut positions = vec![
            RecordPosition {
                partition: 0,
                offset: 0
            };
            total
        ];
        for (partition, input_indexes, reply, partition_ref) in pending {
            let base_offset = reply.await.map_err(|_| Error::Poisoned {
                topic: topic_name.to_owned(),
                partition,
            })??;
            drop(partition_ref);
            for (i, index) in input_indexes.into_iter().enumerate() {
                positions[index] = RecordPosition {
                    partition,
                    offset: base_offset + i as u64,
                };
            }
        }
        Ok(positions)
    }

    /// Up to `max_records` records of a partition with offsets at or above `from_offset`
    /// (from the start offset if `from_offset` is below it); empty if `from_offset` is at
    /// or past the end. Offsets may skip after compaction: use each record's `offset`.
    pub fn read(
        &self,
        topic: &str,
        partition: u32,
        from_offset: u64,
        max_records: usize,
    ) -> Result<Vec<StoredRecord>> {
        self.get_partition(topic, partition)?
            .read(from_offset, max_records)
    }

    /// The next offset to be assigned in a partition.
    pub fn end_offset(&self, topic: &str, partition: u32) -> Result<u64> {
        Ok(self.get_partition(topic, partition)?.end_offset())
    }

    /// The first offset still stored in a partition; retention moves it up.
    pub fn start_offset(&self, topic: &str, partition: u32) -> Result<u64> {
        Ok(self.get_partition(topic, partition)?.start_offset())
    }

    /// The first offset of a partition whose record has a timestamp at or after
    /// `timestamp_ms`, found through the time index; the end offset if there is none.
    pub fn offset_for_time(&self, topic: &str, partition: u32, timestamp_ms: i64) -> Result<u64> {
        self.get_partition(topic, partition)?
            .offset_for_time(timestamp_ms)
    }

    /// Deletes whole closed segments past each topic's `retention_ms` (judged by their
    /// newest record) or beyond its `retention_bytes`, and compacts the closed segments of
    /// compacted topics. Never touches a partition's active segment, nor a segment that
    /// may hold a batch of an unfinished transaction. Blocks on disk IO; the caller runs
    /// it periodically, from async code through `spawn_blocking`.
    #[instrument(skip_all, err)]
    pub fn enforce_retention(&self) -> Result<RetentionReport> {
        let topics: Vec<Arc<Topic>> = {
            let topics = self
                .inner
                .topics
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            topics.values().cloned().collect()
        };
        // Limits first, then the journal sync: a transaction not pinning a partition now
        // either has its `done` entry queued, which the sync makes durable (so recovery
        // will not look for its tags), or writes at or above the limit.
        let limits: Vec<Vec<u64>> = topics.iter().map(|t| t.retention_limits()).collect();
        self.inner.journal.sync()?;
        let now_ms = now_ms();
        let mut report = RetentionReport::default();
        for (topic, limits) in topics.iter().zip(&limits) {
            topic.enforce_retention(now_ms, limits, &mut report)?;
        }
        Ok(report)
    }

    /// How many times the partition's data was made durable since the log was opened
    /// (its segment fsynced, or a group of it in the write-ahead file); lets tests check
    /// that concurrent appends share fsyncs.
    #[doc(hidden)]
    pub fn fsync_count(&self, topic: &str, partition: u32) -> Result<u64> {
        Ok(self.get_partition(topic, partition)?.fsync_count())
    }

    /// How many times the write-ahead file was fsynced since the log was opened; lets
    /// tests check that partitions share them.
    #[doc(hidden)]
    pub fn write_ahead_sync_count(&self) -> u64 {
        self.inner.wal.as_ref().map_or(0, |wal| wal.sync_count())
    }

    /// Resolves once `end_offset(topic, partition) > offset`, that is once the record at
    /// `offset` can be read.
    pub async fn wait_for(&self, topic: &str, partition: u32, offset: u64) -> Result<()> {
        let partition_ref = self.get_partition(topic, partition)?;
        let mut end = partition_ref.subscribe();
        end.wait_for(|end| *end > offset)
            .await
            .map_err(|_| Error::Closed {
                topic: topic.to_owned(),
                partition,
                offset,
            })?;
        Ok(())
    }

    /// Durably records that `group` has processed `topic`/`partition` up to, not
    /// including, `next_offset`, as a committer that never claimed the partition
    /// (generation 0, fenced by any claim); see [`Log::commit_group`].
    pub fn commit_offset(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
        next_offset: u64,
    ) -> Result<()> {
        self.commit_group(group, topic, partition, next_offset, 0)
    }

    /// Durably records that `group` has processed `topic`/`partition` up to, not
    /// including, `next_offset`, unless a generation newer than `generation` was claimed
    /// ([`Error::Fenced`]).
    #[instrument(skip(self), err)]
    pub fn commit_group(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
        next_offset: u64,
        generation: u64,
    ) -> Result<()> {
        validate_group_name(group)?;
        let end_offset = self.get_partition(topic, partition)?.end_offset();
        if next_offset > end_offset {
            return Err(Error::OffsetOutOfRange {
                topic: topic.to_owned(),
                partition,
                offset: next_offset,
                end_offset,
            });
        }
        let sequence = self.inner.next_sequence.fetch_add(1, Ordering::SeqCst);
        self.inner
            .groups
            .commit(group, topic, partition, next_offset, sequence, generation)
    }

    /// Takes ownership of a group's partition: returns a generation above every one
    /// claimed before, once it is durable in the group's file. From then on a commit
    /// (plain or in a transaction) carrying an older generation fails with
    /// [`Error::Fenced`] and changes nothing.
    #[instrument(skip(self), err)]
    pub fn claim(&self, group: &str, topic: &str, partition: u32) -> Result<u64> {
        validate_group_name(group)?;
        self.get_partition(topic, partition)?;
        self.inner.groups.claim(group, topic, partition)
    }

    /// The newest generation claimed for a group's partition; 0 if none was.
    pub fn generation(&self, group: &str, topic: &str, partition: u32) -> Result<u64> {
        validate_group_name(group)?;
        self.get_partition(topic, partition)?;
        Ok(self.inner.groups.generation(group, topic, partition))
    }

    /// The offset last committed by `group` for a partition, if any.
    pub fn committed_offset(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
    ) -> Result<Option<u64>> {
        validate_group_name(group)?;
        self.get_partition(topic, partition)?;
        Ok(self.inner.groups.committed(group, topic, partition))
    }

    /// Lowers each committed offset past its partition's end offset to that end: under
    /// fsync `Interval` or `Never` a crash can take back records a group had committed.
    fn clamp_group_offsets(&self) {
        let topics = self
            .inner
            .topics
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        self.inner.groups.clamp_to_end(|topic, partition| {
            let partition = topics.get(topic)?.partition(partition).ok()?;
            Some(partition.end_offset())
        });
    }

    fn find_topic(&self, name: &str) -> Option<Arc<Topic>> {
        let topics = self
            .inner
            .topics
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        topics.get(name).cloned()
    }

    fn get_topic(&self, name: &str) -> Result<Arc<Topic>> {
        self.find_topic(name).ok_or_else(|| Error::UnknownTopic {
            topic: name.to_owned(),
        })
    }

    fn get_partition(&self, topic: &str, partition: u32) -> Result<Arc<Partition>> {
        Ok(Arc::clone(self.get_topic(topic)?.partition(partition)?))
    }
}

/// Runs every decoder of on-disk bytes (batch frames of every version, offset and time
/// index files, transaction journal entries) over untrusted input. Whatever the input, no
/// decoder may panic, and the frame decoders must agree: any frame they accept is exactly
/// what the encoder writes for the records they decoded from it (it panics otherwise). A
/// fuzz target calls it.
#[doc(hidden)]
pub fn fuzz_decode(bytes: &[u8]) {
    frame::round_trip::check_decoded(bytes);
    if let Ok(header) = frame::decode_header(bytes) {
        let body = bytes.get(frame::HEADER_LEN..).unwrap_or_default();
        let _ = frame::verified_tag(&header, body);
        let _ = frame::verified_commit(&header, body);
    }
    let _ = journal::decode_entries(&Bytes::copy_from_slice(bytes));
    let split = bytes
        .first()
        .map_or(0, |b| usize::from(*b))
        .min(bytes.len());
    let (index, time_index) = bytes.split_at(split);
    for log_len in [0, bytes.len() as u64, u64::MAX] {
        let _ = index::SegmentIndex::decode(0, bytes, bytes, log_len);
        let _ = index::SegmentIndex::decode(u64::MAX, index, time_index, log_len);
    }
}

/// Derives one frame's records, stamp and damage from `bytes`, encodes the frame with the
/// real encoder and panics unless every frame decoder gives back exactly what was encoded
/// and refuses every damaged copy (one bit flipped, or cut short); a fuzz target calls it.
#[doc(hidden)]
pub fn fuzz_roundtrip(bytes: &[u8]) {
    frame::round_trip::check_fuzz_input(bytes);
}

#[cfg(test)]
impl Log {
    /// The base offset of a partition's active segment.
    fn inner_active_base(&self, topic: &str, partition: u32) -> u64 {
        self.get_partition(topic, partition)
            .expect("partition")
            .active_base_offset()
    }

    /// Stops the next transaction part-way, as a crash would.
    fn inject_transaction_fault(&self, fault: transaction::TransactionFault) {
        *self
            .inner
            .transaction_fault
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(fault);
    }
}

/// Milliseconds since the Unix epoch; 0 for a clock set before it.
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests;
