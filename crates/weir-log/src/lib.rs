//! weir's log interface: the [`EventLog`] trait every backend implements (the embedded
//! log in `weir-log-embedded`; NATS JetStream and Kafka later), the records and topic
//! specs it speaks, the [`Guarantees`] each backend declares, [`PartitionReader`]s, and an
//! [`Error`] whose [`ErrorKind`] a caller can act on. The engine and the gateway depend
//! on this crate only; `weir serve --backend` picks the implementation.
//!
//! **API Boundary:** what every implementation promises, and the engine relies on:
//!
//! 1. **Acknowledgement.** `append`, `append_to` and `commit_transaction` resolve `Ok`
//!    only once their records are as safe as the backend's [`Guarantees::acknowledged`]
//!    says for the topic, and a record is visible to readers no earlier than that.
//! 2. **Order and positions.** Within a partition offsets strictly increase in append
//!    order. Offsets may skip (compaction, other backends' markers): use each record's.
//!    The records of one call are atomic as [`Guarantees::atomicity`] says.
//! 3. **Keys.** Records with equal keys go to the same partition for as long as the
//!    topic's partition count is unchanged ([`partition_for_key`] on every backend that
//!    chooses partitions itself).
//! 4. **Reads.** A read returns records at or after its position, from the first stored
//!    one if that is later, never a record that failed its integrity check. A
//!    [`PartitionReader`] reports the range it jumped over ([`ReadBatch::skipped`]);
//!    nothing is skipped silently.
//! 5. **Group offsets and owners.** `commit_offset` is durable when it returns and
//!    `committed_offset` returns the last committed value, across restarts. `claim` hands
//!    out a generation above every earlier one for a group's partition; a commit whose
//!    generation is older than the newest claim is refused with [`ErrorKind::Fenced`] and
//!    changes nothing.
//! 6. **Conditional appends.** An [`Expect`] that does not hold refuses the whole call with
//!    [`ErrorKind::Conflict`] and writes nothing; a backend checks what its
//!    [`Guarantees::conditional_appends`] declares atomically with the write, and refuses
//!    the rest with [`ErrorKind::Invalid`].
//! 7. **Transactions.** `commit_transaction` resolves `Ok` once every record and the
//!    group commit are durable. What a crash mid-way leaves is
//!    [`Guarantees::transactions`]. A failed call may be sent again, unchanged; when it
//!    carries a commit, a backend never stores the records of the first attempt and the
//!    retry both (the embedded log completes the first one instead), so exactly-once
//!    backends stay exactly-once under retries.
//! 8. **Errors.** Failures come back as [`Error`] with a kind; an implementation never
//!    acknowledges what it cannot promise.
//!
//! Every method is async and safe to call from the runtime: a backend moves its own
//! blocking work (disk IO, fsyncs) off it.

mod deploys;
mod error;
mod guarantees;
mod members;
mod partitioner;
mod reader;
mod record;
mod topic;
mod transaction;

use std::sync::Arc;

use async_trait::async_trait;

pub use crate::{
    deploys::{RecordWatch, SharedDeploys},
    error::{Error, ErrorKind, Result},
    guarantees::{
        Acknowledgement, Atomicity, ConditionalAppends, Deduplication, Guarantees,
        TransactionGuarantee,
    },
    members::{Member, Membership},
    partitioner::{partition_for_key, stable_hash},
    reader::{PartitionReader, ReadBatch, Skipped},
    record::{Record, RecordPosition, StoredRecord},
    topic::{Durability, RetentionReport, TopicCreated, TopicInfo, TopicSpec},
    transaction::{Expect, GroupCommit, Transaction},
};

/// The longest topic or group name, as in Kafka.
pub const MAX_NAME_LEN: usize = 249;

/// Checks a topic or group name against Kafka's rules; `Err` holds the reason.
pub fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("it is empty");
    }
    if name.len() > MAX_NAME_LEN {
        return Err("it is longer than 249 characters");
    }
    if name == "." || name == ".." {
        return Err("\".\" and \"..\" are reserved");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err("it has a character other than a-z, A-Z, 0-9, '.', '_' and '-'");
    }
    Ok(())
}

/// The checks every broker backend makes of a topic to create: its name (Kafka's rules),
/// at least one partition, and no backend setting (`backend` names the backend, which
/// takes none).
pub fn check_new_topic(backend: &str, name: &str, spec: &TopicSpec) -> Result<()> {
    check_name(name).map_err(|reason| {
        Error::invalid(format!(
            "invalid topic name \"{name}\": {reason}; use 1 to 249 characters of a-z, A-Z, 0-9, '.', '_' and '-', other than \".\" and \"..\""
        ))
    })?;
    if let Some(setting) = spec.backend.keys().next() {
        return Err(Error::invalid(format!(
            "the {backend} backend has no topic setting \"{setting}\" (it takes none)"
        )));
    }
    if spec.partitions == 0 {
        return Err(Error::invalid(format!(
            "topic \"{name}\" needs at least one partition"
        )));
    }
    Ok(())
}

/// The log a node runs on, behind the interface every backend implements.
pub type SharedLog = Arc<dyn EventLog>;

/// Where a partition starts and ends now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Offsets {
    /// The first offset still stored.
    pub start: u64,
    /// The next offset to be assigned.
    pub end: u64,
}

/// An event log the engine can run on. See the crate docs for what it promises.
#[async_trait]
pub trait EventLog: Send + Sync + 'static {
    /// Which backend this is (`embedded`, `nats`, `kafka`), for status and benchmarks.
    fn backend(&self) -> &'static str;
    /// What this backend promises for a topic with `spec`.
    fn guarantees(&self, spec: &TopicSpec) -> Guarantees;
    /// The register of the nodes sharing this log, on a backend several nodes can share;
    /// none on one only a single process opens (the embedded log).
    fn membership(&self) -> Option<Arc<dyn Membership>> {
        None
    }
    /// Where a fleet sharing this log keeps its deploys, so one sent to any node reaches
    /// them all; none on a log only one process opens.
    fn deploys(&self) -> Option<Arc<dyn SharedDeploys>> {
        None
    }
    /// Creates a topic, or replaces an existing one's settings (same partition count;
    /// another count fails with [`ErrorKind::Exists`]).
    async fn create_topic(&self, name: &str, spec: &TopicSpec) -> Result<TopicCreated>;
    async fn topic(&self, name: &str) -> Result<Option<TopicInfo>>;
    /// All topics, sorted by name.
    async fn topics(&self) -> Result<Vec<TopicInfo>>;
    /// Appends, partitioning by key (round robin without one); positions in input order.
    async fn append(&self, topic: &str, records: Vec<Record>) -> Result<Vec<RecordPosition>>;
    /// Appends like [`EventLog::append`], all or nothing across partitions where the
    /// backend declares [`Guarantees::atomic_batches`]: after a crash, every record of the
    /// call is there or none is. This default is `append` (atomic per partition only).
    async fn append_atomic(
        &self,
        topic: &str,
        records: Vec<Record>,
    ) -> Result<Vec<RecordPosition>> {
        self.append(topic, records).await
    }
    /// Appends into one partition, if `expect` holds there.
    async fn append_to(
        &self,
        topic: &str,
        partition: u32,
        records: Vec<Record>,
        expect: Expect,
    ) -> Result<Vec<RecordPosition>>;
    /// Up to `max_records` records at or after `from_offset` (from the first stored one if
    /// that is later). For one-off range reads; consumers use [`EventLog::reader`].
    async fn read(
        &self,
        topic: &str,
        partition: u32,
        from_offset: u64,
        max_records: usize,
    ) -> Result<Vec<StoredRecord>>;
    /// A reader of one partition positioned at `from_offset`.
    async fn reader(
        &self,
        topic: &str,
        partition: u32,
        from_offset: u64,
    ) -> Result<Box<dyn PartitionReader>>;
    async fn offsets(&self, topic: &str, partition: u32) -> Result<Offsets>;
    /// The first offset whose record was appended at or after `timestamp_ms`; the end
    /// offset if there is none.
    async fn offset_for_time(&self, topic: &str, partition: u32, timestamp_ms: i64) -> Result<u64>;
    /// Takes ownership of a group's partition: returns a generation above every one
    /// claimed before (durably), so commits of older owners are fenced from now on.
    async fn claim(&self, group: &str, topic: &str, partition: u32) -> Result<u64>;
    /// The newest generation claimed for a group's partition (0 if none).
    async fn generation(&self, group: &str, topic: &str, partition: u32) -> Result<u64>;
    /// Durably records the group's position, unless a newer generation was claimed.
    async fn commit_offset(&self, commit: GroupCommit) -> Result<()>;
    /// The offset last committed by `group` for a partition, if any.
    async fn committed_offset(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
    ) -> Result<Option<u64>>;
    /// Applies retention and compaction, where the backend leaves that to weir.
    async fn enforce_retention(&self) -> Result<RetentionReport>;
    /// Appends a transaction's records and commits its group offset; resolves once both
    /// are durable.
    ///
    /// This default is **at-least-once**: it appends each topic's records in turn, then
    /// commits the offset, so a crash between the two, or a failure part-way, leaves
    /// outputs without the commit and the caller repeats them. An owner fenced before
    /// the call writes nothing (one fenced while the records are appended has them
    /// stored, and its commit refused). A backend with transactions overrides it.
    async fn commit_transaction(&self, txn: Transaction) -> Result<()> {
        if let Some(commit) = &txn.commit {
            let current = self
                .generation(&commit.group, &commit.topic, commit.partition)
                .await?;
            commit.check_owner(current)?;
        }
        for (topic, records) in txn.appends {
            if !records.is_empty() {
                self.append(&topic, records).await?;
            }
        }
        if let Some(commit) = txn.commit {
            self.commit_offset(commit).await?;
        }
        Ok(())
    }
}

/// Where a consumer keeps its progress in a partition: in the log's consumer groups
/// ([`GroupTarget`]: pipelines, subscribers), or in the consumer's own store, committed in
/// the same store transaction as the data it produced (views).
#[async_trait]
pub trait CommitTarget: Send + Sync {
    /// The next offset to process, if any was committed.
    async fn load(&self, topic: &str, partition: u32) -> Result<Option<u64>>;
    /// Durably records that everything below `next_offset` is processed.
    async fn commit(&self, topic: &str, partition: u32, next_offset: u64) -> Result<()>;
}

/// Progress kept in a consumer group of the log, committed with the owner's generation.
pub struct GroupTarget {
    pub log: SharedLog,
    pub group: String,
    /// From [`EventLog::claim`]; a commit after a newer claim is fenced.
    pub generation: u64,
}

#[async_trait]
impl CommitTarget for GroupTarget {
    async fn load(&self, topic: &str, partition: u32) -> Result<Option<u64>> {
        self.log
            .committed_offset(&self.group, topic, partition)
            .await
    }

    async fn commit(&self, topic: &str, partition: u32, next_offset: u64) -> Result<()> {
        self.log
            .commit_offset(GroupCommit {
                group: self.group.clone(),
                topic: topic.to_owned(),
                partition,
                next_offset,
                generation: self.generation,
            })
            .await
    }
}
