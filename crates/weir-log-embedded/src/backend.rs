//! The interface between the engine and an event log. The embedded [`crate::Log`]
//! implements it; a NATS JetStream or Kafka backend implements the same trait, so the
//! engine, the gateway and the CLI do not change when the log does.
//!
//! **API Boundary:** what every implementation promises, and the engine relies on:
//!
//! 1. **Durable acknowledgement.** `append` resolves `Ok` only once the records are as
//!    durable as the topic's fsync policy says (for the default, on stable storage), and
//!    a record is visible to `read` and `wait_for` no earlier than that.
//! 2. **Order and positions.** Within a partition offsets strictly increase in append
//!    order; one `append` call's records bound for one partition are all-or-nothing.
//!    Offsets may skip (compaction, transactions in other backends): use each record's.
//! 3. **Keys.** Records with equal keys go to the same partition for as long as the
//!    topic's partition count is unchanged.
//! 4. **Reads.** `read` returns records at or after `from_offset` (from the first
//!    retained one if that is later), never a record that failed its integrity check.
//!    `wait_for` resolves once a record at or after `offset` is readable.
//! 5. **Group offsets.** `commit_offset` is durable when it returns; `committed_offset`
//!    returns the last committed value, across restarts.
//! 6. **Transactions.** `commit_transaction` resolves `Ok` only once every record of the
//!    [`Transaction`] is durable and its group commit too. Each backend says how it
//!    survives a crash mid-way: the trait's default (appends, then `commit_offset`) is
//!    at-least-once, a crash between the two repeats the outputs; the embedded log is
//!    exactly-once, all of it or (if its intent was not yet durable) none of it, and a
//!    transaction whose intent is durable completes later rather than abort
//!    ([`crate::Error::TransactionIncomplete`]: do not redo it). Outputs may become
//!    visible partition by partition before the call returns.
//! 7. **Errors.** Failures come back as [`crate::Error`]; an implementation never
//!    acknowledges what it cannot promise (the embedded log poisons a partition whose
//!    fsync failed).
//!
//! Blocking methods may block on IO: async callers run them on the blocking pool.

use futures::future::BoxFuture;

use crate::{
    Record, RecordPosition, Result, RetentionReport, StoredRecord, TopicConfig, TopicInfo,
    Transaction,
};

/// An event log the engine can run on. See the module docs for what it promises.
pub trait EventLog: Send + Sync + 'static {
    /// Which backend this is (`embedded`, `nats`, ...), for status and benchmarks.
    fn backend(&self) -> &'static str;
    /// Create a topic, or update an existing one's settings (same partition count).
    fn create_topic(&self, name: &str, config: &TopicConfig) -> Result<bool>;
    fn topic(&self, name: &str) -> Option<TopicInfo>;
    fn topics(&self) -> Vec<TopicInfo>;
    /// Append, partitioning by key (round robin without one); resolves once durable.
    fn append<'a>(
        &'a self,
        topic: &'a str,
        records: Vec<Record>,
    ) -> BoxFuture<'a, Result<Vec<RecordPosition>>>;
    /// Append into one partition; resolves once durable.
    fn append_to<'a>(
        &'a self,
        topic: &'a str,
        partition: u32,
        records: Vec<Record>,
    ) -> BoxFuture<'a, Result<Vec<RecordPosition>>>;
    fn read(
        &self,
        topic: &str,
        partition: u32,
        from_offset: u64,
        max_records: usize,
    ) -> Result<Vec<StoredRecord>>;
    fn start_offset(&self, topic: &str, partition: u32) -> Result<u64>;
    fn end_offset(&self, topic: &str, partition: u32) -> Result<u64>;
    fn offset_for_time(&self, topic: &str, partition: u32, timestamp_ms: i64) -> Result<u64>;
    /// Resolves once a record at or after `offset` is readable.
    fn wait_for<'a>(
        &'a self,
        topic: &'a str,
        partition: u32,
        offset: u64,
    ) -> BoxFuture<'a, Result<()>>;
    fn commit_offset(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
        next_offset: u64,
    ) -> Result<()>;
    fn committed_offset(&self, group: &str, topic: &str, partition: u32) -> Result<Option<u64>>;
    /// Apply retention and compaction, where the backend leaves that to weir.
    fn enforce_retention(&self) -> Result<RetentionReport>;
    /// Append a transaction's records and commit its group offset; resolves once both are
    /// durable.
    ///
    /// This default is **at-least-once**: it appends each topic's records in turn, then
    /// calls `commit_offset` (which blocks on its fsync), so a crash between the two, or a
    /// failure part-way, leaves outputs without the commit and the caller repeats them.
    /// The embedded log overrides it with an atomic, exactly-once version.
    fn commit_transaction<'a>(&'a self, txn: Transaction) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            for (topic, records) in txn.appends {
                if !records.is_empty() {
                    self.append(&topic, records).await?;
                }
            }
            if let Some(commit) = txn.commit {
                self.commit_offset(
                    &commit.group,
                    &commit.topic,
                    commit.partition,
                    commit.next_offset,
                )?;
            }
            Ok(())
        })
    }
}

impl EventLog for crate::Log {
    fn backend(&self) -> &'static str {
        "embedded"
    }
    fn create_topic(&self, name: &str, config: &TopicConfig) -> Result<bool> {
        crate::Log::create_topic(self, name, config)
    }
    fn topic(&self, name: &str) -> Option<TopicInfo> {
        crate::Log::topic(self, name)
    }
    fn topics(&self) -> Vec<TopicInfo> {
        crate::Log::topics(self)
    }
    fn append<'a>(
        &'a self,
        topic: &'a str,
        records: Vec<Record>,
    ) -> BoxFuture<'a, Result<Vec<RecordPosition>>> {
        Box::pin(crate::Log::append(self, topic, records))
    }
    fn append_to<'a>(
        &'a self,
        topic: &'a str,
        partition: u32,
        records: Vec<Record>,
    ) -> BoxFuture<'a, Result<Vec<RecordPosition>>> {
        Box::pin(crate::Log::append_to(self, topic, partition, records))
    }
    fn read(
        &self,
        topic: &str,
        partition: u32,
        from_offset: u64,
        max_records: usize,
    ) -> Result<Vec<StoredRecord>> {
        crate::Log::read(self, topic, partition, from_offset, max_records)
    }
    fn start_offset(&self, topic: &str, partition: u32) -> Result<u64> {
        crate::Log::start_offset(self, topic, partition)
    }
    fn end_offset(&self, topic: &str, partition: u32) -> Result<u64> {
        crate::Log::end_offset(self, topic, partition)
    }
    fn offset_for_time(&self, topic: &str, partition: u32, timestamp_ms: i64) -> Result<u64> {
        crate::Log::offset_for_time(self, topic, partition, timestamp_ms)
    }
    fn wait_for<'a>(
        &'a self,
        topic: &'a str,
        partition: u32,
        offset: u64,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(crate::Log::wait_for(self, topic, partition, offset))
    }
    fn commit_offset(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
        next_offset: u64,
    ) -> Result<()> {
        crate::Log::commit_offset(self, group, topic, partition, next_offset)
    }
    fn committed_offset(&self, group: &str, topic: &str, partition: u32) -> Result<Option<u64>> {
        crate::Log::committed_offset(self, group, topic, partition)
    }
    fn enforce_retention(&self) -> Result<RetentionReport> {
        crate::Log::enforce_retention(self)
    }
    fn commit_transaction<'a>(&'a self, txn: Transaction) -> BoxFuture<'a, Result<()>> {
        Box::pin(crate::Log::commit_transaction(self, txn))
    }
}
