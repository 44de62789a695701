//! The partition consumer: reading one partition of a topic from a position, the one loop
//! every reader of the log goes through (pipelines, subscriptions, consumer groups,
//! re-drives, replays; view projections, sinks and sources next).
//!
//! A [`PartitionConsumer`] resolves where it starts (its progress's committed position,
//! else a [`StartFrom`]), reads through the log's cursor ([`weir_log::PartitionReader`]),
//! waits for records (ending on cancellation or when its caller stops listening), stops at
//! the end of a fixed range if it has one, and reports every gap: a range retention
//! deleted before it was read is logged with the consumer's name and counted, never
//! passed over silently. Its [`Progress`] says where the consumer's position is kept:
//! nowhere (a plain subscription, a replay, a member of a group of subscribers, whose
//! group keeps the shared position), or in a log group it commits to in the transactions
//! that carry its outputs (pipelines, re-drives), after claiming the partition so that an
//! older owner's commits are fenced. A consumer that keeps its position in a store of its
//! own (a view, committing in the same store transaction as its rows) adds a variant
//! holding a `weir_log::CommitTarget`.
//!
//! **Architecture Invariant:** a consumer hands out records in offset order, each once,
//! from its start; it never moves past a record it has not handed out except through a
//! gap it reports (`skipped`) or a `seek` its owner asked for.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use weir_log::{GroupCommit, PartitionReader, Record, StoredRecord, Transaction};

use crate::{Error, Result, SharedLog};

/// Where a subscription starts in each partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartFrom {
    Earliest,
    Latest,
    /// The same offset in every partition (clamped to each partition's end).
    Offset(u64),
    /// In each partition, the first event appended at or after this time (milliseconds
    /// since the Unix epoch).
    Time(i64),
}

/// Where a consumer's position is kept.
#[derive(Clone)]
pub(crate) enum Progress {
    /// Nowhere: the consumer starts where it is told (a plain subscription, a replay).
    None,
    /// In the log's group `group`, committed in the consumer's transactions of `producer`
    /// ([`PartitionConsumer::transactions`]) together with what it produced. Opening
    /// claims the group's partition: whoever held it before is fenced.
    Transactions { group: String, producer: String },
}

/// What ended a [`PartitionConsumer::wait`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Woken {
    /// A record is readable at the position.
    Records,
    /// The cancellation token fired.
    Cancelled,
    /// The caller's own signal fired (a reset asked for, a subscriber gone).
    Interrupted,
}

/// One partition read from a position; see the module docs.
pub(crate) struct PartitionConsumer {
    log: SharedLog,
    reader: Box<dyn PartitionReader>,
    /// Who reads, for the logs (`pipeline "orders"`).
    name: String,
    progress: Progress,
    /// The ownership generation claimed for `Progress::Transactions`.
    generation: u64,
    /// Reading stops before this offset (a fixed range); none follows the partition.
    until: Option<u64>,
    /// Offsets retention deleted before this consumer read them.
    skipped: u64,
    /// Events read from the topic (`weir_topic_events_out_total`).
    read: metrics::Counter,
}

impl PartitionConsumer {
    /// A consumer of `topic`'s `partition` named `name` (for the logs). It starts at the
    /// position its progress holds, else at `from`; a new `Progress::Transactions`
    /// consumer commits that start at once, so `latest` means the same after a restart.
    pub(crate) async fn open(
        log: &SharedLog,
        topic: &str,
        partition: u32,
        name: impl Into<String>,
        progress: Progress,
        from: StartFrom,
        cancel: &CancellationToken,
    ) -> Result<PartitionConsumer> {
        let mut generation = 0;
        let committed = match &progress {
            Progress::None => None,
            Progress::Transactions { group, .. } => {
                generation = log.claim(group, topic, partition).await?;
                log.committed_offset(group, topic, partition).await?
            }
        };
        let start = match committed {
            Some(offset) => offset,
            None => resolve_start(log, topic, partition, from).await?,
        };
        let consumer = PartitionConsumer {
            log: log.clone(),
            reader: log.reader(topic, partition, start).await?,
            name: name.into(),
            progress,
            generation,
            until: None,
            skipped: 0,
            read: crate::telemetry::events_out(topic),
        };
        if committed.is_none() && matches!(consumer.progress, Progress::Transactions { .. }) {
            consumer.commit(start, cancel).await?;
        }
        Ok(consumer)
    }

    /// A consumer starting exactly at `offset` that keeps no position (a member of a
    /// group of subscribers, whose position the group keeps; a range being replayed).
    pub(crate) async fn open_at(
        log: &SharedLog,
        topic: &str,
        partition: u32,
        name: impl Into<String>,
        offset: u64,
    ) -> Result<PartitionConsumer> {
        Ok(PartitionConsumer {
            log: log.clone(),
            reader: log.reader(topic, partition, offset).await?,
            name: name.into(),
            progress: Progress::None,
            generation: 0,
            until: None,
            skipped: 0,
            read: crate::telemetry::events_out(topic),
        })
    }

    /// Stop reading before `offset`: the consumer reads a fixed range.
    pub(crate) fn until(mut self, offset: u64) -> PartitionConsumer {
        self.until = Some(offset);
        self
    }

    pub(crate) fn topic(&self) -> &str {
        self.reader.topic()
    }

    pub(crate) fn partition(&self) -> u32 {
        self.reader.partition()
    }

    /// The next offset to hand out.
    pub(crate) fn position(&self) -> u64 {
        self.reader.position()
    }

    /// Offsets retention deleted before the consumer read them, since it was opened.
    pub(crate) fn skipped(&self) -> u64 {
        self.skipped
    }

    /// Whether a consumer of a fixed range has read all of it.
    pub(crate) fn is_done(&self) -> bool {
        self.until.is_some_and(|until| self.position() >= until)
    }

    /// Read from `offset` next (a reset, or records handed back unread).
    pub(crate) fn seek(&mut self, offset: u64) {
        self.reader.seek(offset);
    }

    /// Up to `max` records from the position, without waiting: empty at the end of the
    /// partition (or of the range). A gap retention made is logged and counted.
    pub(crate) async fn poll(&mut self, max: usize) -> Result<Vec<StoredRecord>> {
        let max = match self.until {
            Some(until) if self.position() >= until => return Ok(Vec::new()),
            // Offsets may skip, so a range of n offsets holds at most n records.
            Some(until) => max.min(usize::try_from(until - self.position()).unwrap_or(max)),
            None => max,
        };
        let read = self.reader.read(max).await?;
        if let Some(skipped) = read.skipped {
            self.skipped += skipped.to - skipped.from;
            tracing::warn!(
                consumer = %self.name,
                topic = self.reader.topic(),
                partition = self.reader.partition(),
                from = skipped.from,
                to = skipped.to,
                "retention deleted these offsets before they were read; they were not handled"
            );
        }
        let mut records = read.records;
        if let Some(until) = self.until
            && records.last().is_some_and(|r| r.offset >= until)
        {
            records.retain(|r| r.offset < until);
            self.reader.seek(until);
        }
        self.read.increment(records.len() as u64);
        Ok(records)
    }

    /// Wait until a record is readable, `cancel` fires or `interrupt` resolves.
    pub(crate) async fn wait(
        &mut self,
        cancel: &CancellationToken,
        interrupt: impl Future<Output = ()>,
    ) -> Result<Woken> {
        tokio::select! {
            _ = cancel.cancelled() => Ok(Woken::Cancelled),
            _ = interrupt => Ok(Woken::Interrupted),
            r = self.reader.wait() => r.map(|()| Woken::Records).map_err(Error::from),
        }
    }

    /// The next records, waiting for some while there are none; `None` once `cancel`
    /// fires or `interrupt` resolves first, or a fixed range is done.
    pub(crate) async fn next_batch(
        &mut self,
        max: usize,
        cancel: &CancellationToken,
        interrupt: impl Future<Output = ()>,
    ) -> Result<Option<Vec<StoredRecord>>> {
        tokio::pin!(interrupt);
        loop {
            if cancel.is_cancelled() || self.is_done() {
                return Ok(None);
            }
            let records = self.poll(max).await?;
            if !records.is_empty() {
                return Ok(Some(records));
            }
            if self.until.is_some() {
                // A fixed range ends where the partition ends now.
                return Ok(None);
            }
            match self.wait(cancel, interrupt.as_mut()).await? {
                Woken::Records => {}
                Woken::Cancelled | Woken::Interrupted => return Ok(None),
            }
        }
    }

    /// Commit that everything below `next` is handled, where the consumer keeps its
    /// position (a `Progress::Transactions` consumer commits a transaction without records).
    pub(crate) async fn commit(&self, next: u64, cancel: &CancellationToken) -> Result<()> {
        match &self.progress {
            Progress::None => Ok(()),
            Progress::Transactions { .. } => {
                let txn = self.transactions()?.transaction(Vec::new(), next);
                commit_until_done(&self.log, txn, cancel).await
            }
        }
    }

    /// How a `Progress::Transactions` consumer commits: owned, so a commit can run while
    /// the consumer reads on.
    pub(crate) fn transactions(&self) -> Result<GroupTransactions> {
        let Progress::Transactions { group, producer } = &self.progress else {
            return Err(Error::Task(format!(
                "consumer {} keeps no group to commit in a transaction",
                self.name
            )));
        };
        Ok(GroupTransactions {
            producer: producer.clone(),
            group: group.clone(),
            topic: self.topic().to_owned(),
            partition: self.partition(),
            generation: self.generation,
        })
    }
}

/// The commits of a consumer whose position is a log group's, made in transactions with
/// what it produced.
#[derive(Debug, Clone)]
pub(crate) struct GroupTransactions {
    pub(crate) producer: String,
    pub(crate) group: String,
    pub(crate) topic: String,
    pub(crate) partition: u32,
    /// The ownership generation the consumer claimed: a newer claim fences these commits.
    pub(crate) generation: u64,
}

impl GroupTransactions {
    /// The transaction that appends `appends` and moves the group to `next`.
    pub(crate) fn transaction(
        &self,
        appends: Vec<(String, Vec<Record>)>,
        next: u64,
    ) -> Transaction {
        Transaction {
            producer: self.producer.clone(),
            appends,
            commit: Some(GroupCommit {
                group: self.group.clone(),
                topic: self.topic.clone(),
                partition: self.partition,
                next_offset: next,
                generation: self.generation,
            }),
        }
    }
}

/// A topic that must exist.
pub(crate) async fn topic_info(log: &SharedLog, topic: &str) -> Result<weir_log::TopicInfo> {
    log.topic(topic)
        .await?
        .ok_or_else(|| weir_log::Error::unknown_topic(topic).into())
}

/// The offset `from` means in one partition of `log`: a given offset is kept within the
/// retained range, a time finds the first event at or after it.
pub(crate) async fn resolve_start(
    log: &SharedLog,
    topic: &str,
    partition: u32,
    from: StartFrom,
) -> Result<u64> {
    let weir_log::Offsets { start, end } = log.offsets(topic, partition).await?;
    Ok(match from {
        StartFrom::Earliest => start,
        StartFrom::Latest => end,
        StartFrom::Offset(o) => o.clamp(start, end),
        StartFrom::Time(ms) => log.offset_for_time(topic, partition, ms).await?.min(end),
    })
}

/// Commits `txn`, sending it again, unchanged, while the log cannot take it now
/// ([`weir_log::ErrorKind::Unavailable`]: a sent-again transaction is never stored twice,
/// see the `weir-log` crate docs), with backoff. Any other error is returned: nothing of
/// the transaction counts then, or (a disk error) the log refuses writes anyway.
pub(crate) async fn commit_until_done(
    log: &SharedLog,
    txn: Transaction,
    cancel: &CancellationToken,
) -> Result<()> {
    let mut wait = Duration::from_millis(50);
    loop {
        match log.commit_transaction(txn.clone()).await {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == weir_log::ErrorKind::Unavailable => {
                tracing::warn!(producer = %txn.producer, error = %e, "the log cannot take the transaction now; sending it again");
                tokio::select! {
                    _ = cancel.cancelled() => return Err(Error::ShuttingDown),
                    _ = tokio::time::sleep(wait) => {}
                }
                wait = (wait * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e.into()),
        }
    }
}
