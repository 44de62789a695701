//! Cursor readers: a consumer of its own per reader, assigned to one partition (no
//! Kafka group membership: positions are weir's, committed through the control topic).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};
use weir_log::{
    Error, ErrorKind, Offsets, PartitionReader, ReadBatch, Result, Skipped, StoredRecord,
};

use crate::{Inner, unavailable};

/// A consumer assigned to one partition at a position, reporting the end of the
/// partition (`enable.partition.eof`), so a read at the end returns at once.
pub(crate) fn assigned_consumer(
    inner: &Inner,
    kafka_topic: &str,
    partition: u32,
    from: u64,
) -> Result<StreamConsumer> {
    let consumer: StreamConsumer = inner
        .options
        .client_config()
        .set("group.id", "weir-reader")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", inner.options.fetch_wait_ms.to_string())
        .create()
        .map_err(|e| unavailable("cannot start a Kafka consumer".into(), e))?;
    assign(&consumer, kafka_topic, partition, from)?;
    Ok(consumer)
}

fn assign(consumer: &StreamConsumer, kafka_topic: &str, partition: u32, from: u64) -> Result<()> {
    let mut list = TopicPartitionList::new();
    list.add_partition_offset(kafka_topic, partition as i32, Offset::Offset(from as i64))
        .and_then(|()| consumer.assign(&list))
        .map_err(|e| unavailable(format!("cannot read {kafka_topic}/{partition}"), e))
}

fn stored(message: &BorrowedMessage<'_>) -> StoredRecord {
    StoredRecord {
        partition: message.partition() as u32,
        offset: message.offset() as u64,
        timestamp_ms: message.timestamp().to_millis().unwrap_or(0),
        key: message.key().map(Bytes::copy_from_slice),
        value: Bytes::copy_from_slice(message.payload().unwrap_or_default()),
    }
}

/// What one receive gave.
pub(crate) enum Received {
    Record(StoredRecord),
    End,
}

/// The next record of `kafka_topic`'s `partition`, or the end (a record of another
/// partition, left from a consumer's earlier assignment, is passed over).
pub(crate) async fn receive(
    consumer: &StreamConsumer,
    kafka_topic: &str,
    partition: u32,
    what: &str,
) -> Result<Received> {
    loop {
        match consumer.recv().await {
            Ok(message)
                if message.topic() != kafka_topic || message.partition() != partition as i32 => {}
            Ok(message) => return Ok(Received::Record(stored(&message))),
            Err(KafkaError::PartitionEOF(p)) if p == partition as i32 => return Ok(Received::End),
            Err(KafkaError::PartitionEOF(_)) => {}
            // A lost connection is reported as a consumer error while librdkafka
            // reconnects on its own: waited through. A read bounds it with the log's
            // timeout (past it, the brokers did not answer: `Unavailable`); a wait goes on
            // until a record arrives or its caller stops waiting.
            Err(KafkaError::MessageConsumption(
                RDKafkaErrorCode::AllBrokersDown | RDKafkaErrorCode::BrokerTransportFailure,
            )) => {}
            Err(e) => return Err(unavailable(format!("cannot read {what}"), e)),
        }
    }
}

impl Drop for KafkaReader {
    /// The consumer is dropped on a thread of its own: closing a librdkafka consumer
    /// waits for its threads to stop (50-60 ms against tansu), which must not hold the
    /// caller, often a runtime worker. One whose assignment has not started yet is
    /// dropped a moment later: librdkafka 2.12 aborts the process when an assignment
    /// stops before it started (`rd_kafka_assignment_partition_stopped`, seen when a
    /// subscriber is dropped right after it was made).
    fn drop(&mut self) {
        if let Some(consumer) = self.consumer.take() {
            let_go(consumer, self.started);
        }
    }
}

/// Drops a consumer off the caller's thread: at once if its assignment has `started`,
/// else a second later (see `Drop for KafkaReader`).
pub(crate) fn let_go(consumer: StreamConsumer, started: bool) {
    match started {
        true => close(consumer),
        false => retire(consumer),
    }
}

/// Drops a consumer off the caller's thread (see `Drop for KafkaReader`).
fn close(consumer: StreamConsumer) {
    let spawned = std::thread::Builder::new()
        .name("weir-kafka-close".into())
        .spawn(move || drop(consumer));
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "could not start a thread to close a Kafka consumer");
    }
}

/// Drops a consumer whose assignment may not have started, a second later, off the
/// caller's thread (see `Drop for KafkaReader`).
pub(crate) fn retire(consumer: StreamConsumer) {
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(1));
        drop(consumer);
    });
}

pub(crate) struct KafkaReader {
    inner: Arc<Inner>,
    topic: String,
    kafka_topic: String,
    partition: u32,
    position: u64,
    consumer: Option<StreamConsumer>,
    /// Records received (by `wait`) and not yet handed out.
    pending: VecDeque<StoredRecord>,
    /// The consumer said it reached the end and has given nothing since.
    at_end: bool,
    /// Kept for a read where it stood (see `continue_at`), not reassigned: an end its
    /// consumer reports may be one it queued before records were appended since.
    continued: bool,
    /// The partition's end when the position was last checked (see `check_start`).
    checked_end: u64,
    /// Whether the position was checked against the partition's start since the last
    /// seek (so a position below it is reported as skipped, even when nothing follows).
    checked: bool,
    /// A seek that could not reassign the consumer: the next read fails with it.
    broken: Option<Error>,
    /// Whether the consumer gave anything (a record or the end) since it was assigned:
    /// librdkafka (2.12) aborts the process when an assignment is replaced before its
    /// fetcher started, so a seek before then makes a new consumer instead.
    started: bool,
}

impl KafkaReader {
    pub(crate) fn new(
        inner: Arc<Inner>,
        topic: &str,
        partition: u32,
        from: u64,
    ) -> Result<KafkaReader> {
        let kafka_topic = inner.options.kafka_topic(topic);
        let consumer = assigned_consumer(&inner, &kafka_topic, partition, from)?;
        Ok(KafkaReader {
            inner,
            topic: topic.to_owned(),
            kafka_topic,
            partition,
            position: from,
            consumer: Some(consumer),
            pending: VecDeque::new(),
            at_end: false,
            continued: false,
            checked_end: 0,
            checked: false,
            broken: None,
            started: false,
        })
    }

    fn consumer(&self) -> &StreamConsumer {
        self.consumer
            .as_ref()
            .expect("a reader has its consumer until it is dropped")
    }

    /// Points the consumer at `offset`: reassigned once its fetcher started, else a
    /// new consumer (see `started`).
    fn reposition(&mut self, offset: u64) -> Result<()> {
        if self.started {
            assign(self.consumer(), &self.kafka_topic, self.partition, offset)?;
        } else {
            let fresh = assigned_consumer(&self.inner, &self.kafka_topic, self.partition, offset)?;
            if let Some(old) = self.consumer.replace(fresh) {
                retire(old);
            }
        }
        self.started = false;
        self.continued = false;
        Ok(())
    }

    /// Readies a kept reader for a read from `offset`. Where it stands already (the next
    /// page of a reader paging forward) it keeps its consumer's assignment and what that
    /// fetched ahead (a seek reassigns the consumer and waits for a first fetch, about
    /// ten times a page's read from what was fetched ahead), and only checks the
    /// partition's start and end again, as a seek would. An end the consumer then
    /// reports below the end that check found may have been queued before the records
    /// appended since: the reader is reassigned once and reads on. Elsewhere, a seek.
    pub(crate) fn continue_at(&mut self, offset: u64) {
        if offset == self.position && self.pending.is_empty() && self.broken.is_none() {
            self.at_end = false;
            self.checked = false;
            self.continued = true;
        } else {
            self.seek(offset);
        }
    }

    fn what(&self) -> String {
        format!("{}/{}", self.topic, self.partition)
    }

    /// The skip, when the position is below the partition's first stored offset (moving
    /// the position and the consumer to it); notes a position at or past the end, where
    /// a read has nothing to wait for (a broker may not say so for a position past it).
    async fn check_start(&mut self) -> Result<Option<Skipped>> {
        let Offsets { start, end } = self.inner.watermarks(&self.topic, self.partition).await?;
        self.at_end = self.position.max(start) >= end;
        self.checked_end = end;
        if self.position >= start {
            return Ok(None);
        }
        let skipped = Skipped {
            from: self.position,
            to: start,
        };
        self.position = start;
        self.pending.retain(|r| r.offset >= start);
        Ok(Some(skipped))
    }

    /// Takes one received record, noting a skip over deleted records before it.
    async fn take(
        &mut self,
        record: StoredRecord,
        skipped: &mut Option<Skipped>,
        out: &mut Vec<StoredRecord>,
    ) -> Result<()> {
        if record.offset < self.position {
            return Ok(());
        }
        if record.offset > self.position && skipped.is_none() {
            // A gap: compaction or transaction markers, or retention deleted records the
            // reader had not read yet, which it must report.
            let start = self
                .inner
                .watermarks(&self.topic, self.partition)
                .await?
                .start;
            if start > self.position {
                *skipped = Some(Skipped {
                    from: self.position,
                    to: start.min(record.offset),
                });
            }
        }
        self.position = record.offset + 1;
        out.push(record);
        Ok(())
    }
}

#[async_trait]
impl PartitionReader for KafkaReader {
    fn topic(&self) -> &str {
        &self.topic
    }

    fn partition(&self) -> u32 {
        self.partition
    }

    fn position(&self) -> u64 {
        self.position
    }

    fn seek(&mut self, offset: u64) {
        self.position = offset;
        self.pending.clear();
        self.at_end = false;
        self.checked = false;
        self.broken = self.reposition(offset).err();
    }

    async fn read(&mut self, max_records: usize) -> Result<ReadBatch> {
        if let Some(e) = self.broken.take() {
            tracing::debug!(error = %e, "repositioning after a failed seek");
            self.reposition(self.position)?;
        }
        let mut skipped = None;
        if !self.checked {
            skipped = self.check_start().await?;
            if skipped.is_some() {
                self.reposition(self.position)?;
            }
            self.checked = true;
        }
        let mut records = Vec::new();
        while records.len() < max_records {
            let Some(record) = self.pending.pop_front() else {
                break;
            };
            self.take(record, &mut skipped, &mut records).await?;
        }
        let what = self.what();
        let timeout = self.inner.options.timeout;
        while records.len() < max_records {
            let received = if self.at_end {
                // At the end: only what has arrived since.
                match tokio::time::timeout(
                    Duration::ZERO,
                    receive(self.consumer(), &self.kafka_topic, self.partition, &what),
                )
                .await
                {
                    Ok(received) => received?,
                    Err(_) => break,
                }
            } else {
                tokio::time::timeout(
                    timeout,
                    receive(self.consumer(), &self.kafka_topic, self.partition, &what),
                )
                .await
                .map_err(|_| {
                    Error::new(
                        ErrorKind::Unavailable,
                        format!("cannot read {what}: no answer from the brokers in {timeout:?}"),
                    )
                })??
            };
            match received {
                Received::Record(record) => {
                    self.started = true;
                    self.at_end = false;
                    self.take(record, &mut skipped, &mut records).await?;
                }
                Received::End if self.continued && self.position < self.checked_end => {
                    // Perhaps queued before the records the check saw: reassigned, which
                    // drops what the consumer queued, and read on.
                    self.started = true;
                    self.reposition(self.position)?;
                }
                Received::End => {
                    self.started = true;
                    self.at_end = true;
                    break;
                }
            }
        }
        Ok(ReadBatch { records, skipped })
    }

    async fn wait(&mut self) -> Result<()> {
        let what = self.what();
        while self.pending.is_empty() {
            match receive(self.consumer(), &self.kafka_topic, self.partition, &what).await? {
                Received::Record(record) => {
                    self.started = true;
                    self.at_end = false;
                    if record.offset >= self.position {
                        self.pending.push_back(record);
                    }
                }
                Received::End => {
                    self.started = true;
                    self.at_end = true;
                }
            }
        }
        Ok(())
    }
}

/// The first offset from which a partition's newest records take at most `limit` bytes
/// (keys and values), reading back from the end a chunk at a time.
pub(crate) async fn first_within(
    inner: Arc<Inner>,
    topic: &str,
    partition: u32,
    offsets: Offsets,
    limit: u64,
) -> Result<u64> {
    const CHUNK: u64 = 256;
    let mut total = 0u64;
    let mut high = offsets.end;
    let mut reader = KafkaReader::new(inner, topic, partition, offsets.start)?;
    while high > offsets.start {
        let low = high.saturating_sub(CHUNK).max(offsets.start);
        reader.seek(low);
        let mut chunk = Vec::new();
        while reader.position() < high {
            let read = reader.read(CHUNK as usize).await?;
            if read.records.is_empty() {
                break;
            }
            chunk.extend(read.records.into_iter().filter(|r| r.offset < high));
        }
        for record in chunk.iter().rev() {
            total += (record.value.len() + record.key.as_ref().map_or(0, Bytes::len)) as u64;
            if total > limit {
                return Ok(record.offset + 1);
            }
        }
        high = low;
    }
    Ok(offsets.start)
}
