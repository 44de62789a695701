//! The embedded log as a member of the log family: [`weir_log::EventLog`] for [`Log`],
//! the conversion of the neutral [`TopicSpec`] to and from [`TopicConfig`], and the
//! guarantees it declares.
//!
//! Blocking work (fsyncs of topic and group files, reads that may miss the page cache,
//! retention) runs on tokio's blocking pool, so every method is safe on the runtime.
//! Appends and transactions already wait on the partitions' writer threads.

use async_trait::async_trait;
use weir_log::{
    Acknowledgement, Atomicity, ConditionalAppends, Deduplication, Durability, Expect, GroupCommit,
    Guarantees, Offsets, PartitionReader, Record, RecordPosition, RetentionReport, StoredRecord,
    TopicCreated, TopicInfo, TopicSpec, Transaction, TransactionGuarantee,
};

use crate::{Error, FsyncPolicy, Log, TopicConfig, reader::EmbeddedReader};

/// The embedded log's own topic settings in [`TopicSpec::backend`].
pub const SEGMENT_BYTES: &str = "segment_bytes";

impl TopicConfig {
    /// The embedded configuration for a neutral spec: the spec's settings, plus the
    /// embedded log's own (`segment_bytes`) from [`TopicSpec::backend`]. An unknown
    /// setting or a wrong type is [`Error::InvalidTopicConfig`].
    pub fn from_spec(name: &str, spec: &TopicSpec) -> Result<TopicConfig, Error> {
        let mut config = TopicConfig {
            partitions: spec.partitions,
            fsync: match spec.durability {
                Durability::Always => FsyncPolicy::Always,
                Durability::Interval { ms } => FsyncPolicy::Interval { ms },
                Durability::Never => FsyncPolicy::Never,
            },
            retention_ms: spec.retention_ms,
            retention_bytes: spec.retention_bytes,
            compaction: spec.compaction,
            ..TopicConfig::default()
        };
        for (key, value) in &spec.backend {
            match key.as_str() {
                SEGMENT_BYTES => {
                    config.segment_bytes =
                        value.as_u64().ok_or_else(|| Error::InvalidTopicConfig {
                            topic: name.to_owned(),
                            reason: format!(
                                "segment_bytes must be a whole number of bytes, not {value}"
                            ),
                        })?;
                }
                other => {
                    return Err(Error::InvalidTopicConfig {
                        topic: name.to_owned(),
                        reason: format!(
                            "the embedded log has no setting \"{other}\" (it knows {SEGMENT_BYTES})"
                        ),
                    });
                }
            }
        }
        Ok(config)
    }

    /// The neutral spec of this configuration, with the embedded log's own settings.
    pub fn to_spec(&self) -> TopicSpec {
        TopicSpec {
            partitions: self.partitions,
            durability: match self.fsync {
                FsyncPolicy::Always => Durability::Always,
                FsyncPolicy::Interval { ms } => Durability::Interval { ms },
                FsyncPolicy::Never => Durability::Never,
            },
            retention_ms: self.retention_ms,
            retention_bytes: self.retention_bytes,
            compaction: self.compaction,
            backend: Default::default(),
        }
        .with_backend_setting(SEGMENT_BYTES, self.segment_bytes)
    }
}

impl crate::TopicInfo {
    fn to_neutral(&self) -> TopicInfo {
        TopicInfo {
            name: self.name.clone(),
            partitions: self.partitions,
            end_offsets: self.end_offsets.clone(),
            start_offsets: self.start_offsets.clone(),
            config: self.config.to_spec(),
        }
    }
}

/// What the embedded log promises for a topic of `spec`.
pub fn guarantees(spec: &TopicSpec) -> Guarantees {
    Guarantees {
        acknowledged: match spec.durability {
            Durability::Always => Acknowledgement::Fsynced,
            Durability::Interval { ms } => Acknowledgement::PeriodicSync { ms },
            Durability::Never => Acknowledgement::Written,
        },
        atomicity: Atomicity::CallPerPartition,
        atomic_batches: true,
        deduplication: Deduplication::None,
        transactions: TransactionGuarantee::ExactlyOnce,
        conditional_appends: ConditionalAppends {
            partition_end: true,
            key_last: false,
        },
        fenced_commits: true,
    }
}

/// Runs blocking work of the log on the blocking pool.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> weir_log::Result<T> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => Ok(result?),
        Err(e) => Err(weir_log::Error::new(
            weir_log::ErrorKind::Unavailable,
            format!("the embedded log's work did not finish ({e}); try again"),
        )),
    }
}

#[async_trait]
impl weir_log::EventLog for Log {
    fn backend(&self) -> &'static str {
        "embedded"
    }

    fn guarantees(&self, spec: &TopicSpec) -> Guarantees {
        guarantees(spec)
    }

    async fn create_topic(&self, name: &str, spec: &TopicSpec) -> weir_log::Result<TopicCreated> {
        let config = TopicConfig::from_spec(name, spec)?;
        let (log, name) = (self.clone(), name.to_owned());
        let created = blocking(move || log.create_topic(&name, &config)).await?;
        Ok(if created {
            TopicCreated::Created
        } else {
            TopicCreated::Updated
        })
    }

    async fn topic(&self, name: &str) -> weir_log::Result<Option<TopicInfo>> {
        Ok(Log::topic(self, name).map(|t| t.to_neutral()))
    }

    async fn topics(&self) -> weir_log::Result<Vec<TopicInfo>> {
        Ok(Log::topics(self).iter().map(|t| t.to_neutral()).collect())
    }

    async fn append(
        &self,
        topic: &str,
        records: Vec<Record>,
    ) -> weir_log::Result<Vec<RecordPosition>> {
        Ok(Log::append(self, topic, records).await?)
    }

    async fn append_atomic(
        &self,
        topic: &str,
        records: Vec<Record>,
    ) -> weir_log::Result<Vec<RecordPosition>> {
        Ok(Log::append_atomic(self, topic, records).await?)
    }

    async fn append_to(
        &self,
        topic: &str,
        partition: u32,
        records: Vec<Record>,
        expect: Expect,
    ) -> weir_log::Result<Vec<RecordPosition>> {
        let expect_end = match expect {
            Expect::Any => None,
            Expect::End(end) => Some(end),
            Expect::KeyLast { .. } => {
                return Err(Error::Unsupported {
                    what: "check a key's last offset on append",
                    instead: "expect the partition's end offset instead (Expect::End)",
                }
                .into());
            }
        };
        Ok(self
            .append_to_expecting(topic, partition, records, expect_end)
            .await?)
    }

    async fn read(
        &self,
        topic: &str,
        partition: u32,
        from_offset: u64,
        max_records: usize,
    ) -> weir_log::Result<Vec<StoredRecord>> {
        let (log, topic) = (self.clone(), topic.to_owned());
        blocking(move || log.read(&topic, partition, from_offset, max_records)).await
    }

    async fn reader(
        &self,
        topic: &str,
        partition: u32,
        from_offset: u64,
    ) -> weir_log::Result<Box<dyn PartitionReader>> {
        let partition_ref = self.get_partition(topic, partition)?;
        Ok(Box::new(EmbeddedReader::new(
            topic,
            partition,
            partition_ref,
            from_offset,
        )))
    }

    async fn offsets(&self, topic: &str, partition: u32) -> weir_log::Result<Offsets> {
        let partition = self.get_partition(topic, partition)?;
        Ok(Offsets {
            start: partition.start_offset(),
            end: partition.end_offset(),
        })
    }

    async fn offset_for_time(
        &self,
        topic: &str,
        partition: u32,
        timestamp_ms: i64,
    ) -> weir_log::Result<u64> {
        let (log, topic) = (self.clone(), topic.to_owned());
        blocking(move || log.offset_for_time(&topic, partition, timestamp_ms)).await
    }

    async fn claim(&self, group: &str, topic: &str, partition: u32) -> weir_log::Result<u64> {
        let (log, group, topic) = (self.clone(), group.to_owned(), topic.to_owned());
        blocking(move || log.claim(&group, &topic, partition)).await
    }

    async fn generation(&self, group: &str, topic: &str, partition: u32) -> weir_log::Result<u64> {
        Ok(Log::generation(self, group, topic, partition)?)
    }

    async fn commit_offset(&self, commit: GroupCommit) -> weir_log::Result<()> {
        let log = self.clone();
        blocking(move || {
            log.commit_group(
                &commit.group,
                &commit.topic,
                commit.partition,
                commit.next_offset,
                commit.generation,
            )
        })
        .await
    }

    async fn committed_offset(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
    ) -> weir_log::Result<Option<u64>> {
        Ok(Log::committed_offset(self, group, topic, partition)?)
    }

    async fn enforce_retention(&self) -> weir_log::Result<RetentionReport> {
        let log = self.clone();
        blocking(move || log.enforce_retention()).await
    }

    async fn commit_transaction(&self, txn: Transaction) -> weir_log::Result<()> {
        Ok(Log::commit_transaction(self, txn).await?)
    }
}

/// Opens the embedded log in `dir` (see [`Log::open`]) as the log a node runs on, off
/// the runtime: an open recovers every partition and may read and write a lot.
pub async fn open_shared(
    dir: &std::path::Path,
    opts: crate::LogOptions,
) -> weir_log::Result<weir_log::SharedLog> {
    let dir = dir.to_owned();
    let log = blocking(move || Log::open(&dir, opts)).await?;
    Ok(std::sync::Arc::new(log))
}
