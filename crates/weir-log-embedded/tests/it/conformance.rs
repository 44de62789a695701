//! The log family's conformance suite (`weir-log-conformance`) against the embedded log,
//! and against the embedded log with the interface's default, at-least-once
//! `commit_transaction` (a backend that declares less runs the same suite and is held to
//! what it declares).

use std::time::{Duration, Instant};

use async_trait::async_trait;
use weir_log::{
    EventLog, Expect, GroupCommit, Guarantees, Offsets, PartitionReader, Record, RecordPosition,
    RetentionReport, SharedLog, StoredRecord, TopicCreated, TopicInfo, TopicSpec,
    TransactionGuarantee,
};
use weir_log_conformance::Harness;

/// The embedded log in a temporary directory of its own.
pub struct Embedded {
    dir: tempfile::TempDir,
}

pub fn embedded() -> Embedded {
    Embedded {
        dir: tempfile::tempdir().expect("tempdir"),
    }
}

#[async_trait]
impl Harness for Embedded {
    async fn open(&self) -> SharedLog {
        // A child process forked by the crash tests holds the lock for a moment; see
        // `open_log`.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match weir_log_embedded::open_shared(self.dir.path(), Default::default()).await {
                Err(e) if e.code() == "locked" && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                result => return result.expect("open the embedded log"),
            }
        }
    }

    fn retention_spec(&self, partitions: u32) -> TopicSpec {
        TopicSpec {
            retention_bytes: Some(1),
            ..TopicSpec::with_partitions(partitions)
        }
        .with_backend_setting(weir_log_embedded::SEGMENT_BYTES, 4096)
    }
}

mod embedded {
    weir_log_conformance::conformance_tests!(super::embedded());
}

/// The embedded log, but with the trait's default `commit_transaction`.
pub struct DefaultTransactions(SharedLog);

pub struct WithDefaultTransactions(Embedded);

#[async_trait]
impl Harness for WithDefaultTransactions {
    async fn open(&self) -> SharedLog {
        std::sync::Arc::new(DefaultTransactions(self.0.open().await))
    }

    fn retention_spec(&self, partitions: u32) -> TopicSpec {
        self.0.retention_spec(partitions)
    }
}

#[async_trait]
impl EventLog for DefaultTransactions {
    fn backend(&self) -> &'static str {
        "embedded-without-transactions"
    }
    fn guarantees(&self, spec: &TopicSpec) -> Guarantees {
        Guarantees {
            transactions: TransactionGuarantee::AtLeastOnce,
            atomic_batches: false,
            ..self.0.guarantees(spec)
        }
    }
    async fn create_topic(&self, name: &str, spec: &TopicSpec) -> weir_log::Result<TopicCreated> {
        self.0.create_topic(name, spec).await
    }
    async fn topic(&self, name: &str) -> weir_log::Result<Option<TopicInfo>> {
        self.0.topic(name).await
    }
    async fn topics(&self) -> weir_log::Result<Vec<TopicInfo>> {
        self.0.topics().await
    }
    async fn append(
        &self,
        topic: &str,
        records: Vec<Record>,
    ) -> weir_log::Result<Vec<RecordPosition>> {
        self.0.append(topic, records).await
    }
    async fn append_to(
        &self,
        topic: &str,
        partition: u32,
        records: Vec<Record>,
        expect: Expect,
    ) -> weir_log::Result<Vec<RecordPosition>> {
        self.0.append_to(topic, partition, records, expect).await
    }
    async fn read(
        &self,
        topic: &str,
        partition: u32,
        from_offset: u64,
        max_records: usize,
    ) -> weir_log::Result<Vec<StoredRecord>> {
        self.0
            .read(topic, partition, from_offset, max_records)
            .await
    }
    async fn reader(
        &self,
        topic: &str,
        partition: u32,
        from_offset: u64,
    ) -> weir_log::Result<Box<dyn PartitionReader>> {
        self.0.reader(topic, partition, from_offset).await
    }
    async fn offsets(&self, topic: &str, partition: u32) -> weir_log::Result<Offsets> {
        self.0.offsets(topic, partition).await
    }
    async fn offset_for_time(
        &self,
        topic: &str,
        partition: u32,
        timestamp_ms: i64,
    ) -> weir_log::Result<u64> {
        self.0.offset_for_time(topic, partition, timestamp_ms).await
    }
    async fn claim(&self, group: &str, topic: &str, partition: u32) -> weir_log::Result<u64> {
        self.0.claim(group, topic, partition).await
    }
    async fn generation(&self, group: &str, topic: &str, partition: u32) -> weir_log::Result<u64> {
        self.0.generation(group, topic, partition).await
    }
    async fn commit_offset(&self, commit: GroupCommit) -> weir_log::Result<()> {
        self.0.commit_offset(commit).await
    }
    async fn committed_offset(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
    ) -> weir_log::Result<Option<u64>> {
        self.0.committed_offset(group, topic, partition).await
    }
    async fn enforce_retention(&self) -> weir_log::Result<RetentionReport> {
        self.0.enforce_retention().await
    }
}

mod default_transactions {
    weir_log_conformance::conformance_tests!(super::WithDefaultTransactions(super::embedded()));
}
