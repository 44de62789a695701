//! Readers of one partition's stream: an ordered consumer (ephemeral, flow-controlled,
//! made again by the client when it misses a message) from the reader's position; and
//! offsets by time, found by a binary search of direct gets.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use async_trait::async_trait;
use futures::{FutureExt, StreamExt};
use sync_wrapper::SyncWrapper;
use weir_log::{Error, ErrorKind, PartitionReader, ReadBatch, Result, Skipped, StoredRecord};

use crate::{Inner, offsets_of, stored_record, unavailable};

pub(crate) struct NatsReader {
    inner: Arc<Inner>,
    topic: String,
    partition: u32,
    /// Compaction makes gaps in a partition's offsets; otherwise a gap is retention.
    compacted: bool,
    position: u64,
    consumer: Option<SyncWrapper<pull::Ordered>>,
    /// Whether the server holds records after the last one this reader received (from
    /// the stream's state when the consumer was made, then each message's pending count).
    more: bool,
    /// Records received and not handed out yet (by `wait`, or held back by a read that
    /// met a second gap).
    waiting: VecDeque<StoredRecord>,
    skipped: Option<Skipped>,
}

/// How long a read waits for a record the server said it holds before it asks the
/// stream where it ends (retention may have deleted it meanwhile).
const RECHECK: Duration = Duration::from_millis(500);

impl NatsReader {
    pub(crate) fn new(
        inner: Arc<Inner>,
        topic: &str,
        partition: u32,
        compacted: bool,
        position: u64,
    ) -> NatsReader {
        NatsReader {
            inner,
            topic: topic.to_owned(),
            partition,
            compacted,
            position,
            consumer: None,
            more: false,
            waiting: VecDeque::new(),
            skipped: None,
        }
    }

    fn stream_name(&self) -> String {
        self.inner.names.stream(&self.topic, self.partition)
    }

    /// The consumer from the position, made at the first read after a seek (or after the
    /// last one failed); notes the range below the stream's first record it passes over.
    async fn consumer(&mut self) -> Result<&mut pull::Ordered> {
        if self.consumer.is_none() {
            let name = self.stream_name();
            let stream = self.inner.stream(&self.topic, self.partition).await?;
            let offsets = offsets_of(&stream.cached_info().state);
            self.inner
                .note_end(&self.topic, self.partition, offsets.end);
            if self.position < offsets.start {
                self.note_skipped(offsets.start);
                self.position = offsets.start;
            }
            self.more = offsets.end > self.position;
            let consumer = stream
                .create_consumer(pull::OrderedConfig {
                    deliver_policy: DeliverPolicy::ByStartSequence {
                        start_sequence: self.position + 1,
                    },
                    ..Default::default()
                })
                .await
                .map_err(|e| unavailable(format!("cannot make a consumer of {name}"), e))?
                .messages()
                .await
                .map_err(|e| unavailable(format!("cannot read from {name}"), e))?;
            self.consumer = Some(SyncWrapper::new(consumer));
        }
        Ok(self.consumer.as_mut().expect("made above").get_mut())
    }

    /// Notes that the offsets from the position up to `to` were deleted before this
    /// reader got there.
    fn note_skipped(&mut self, to: u64) {
        let from = self.skipped.map_or(self.position, |s| s.from);
        self.skipped = Some(Skipped { from, to });
    }

    /// A message of the consumer as a record; `None` for one below the position: the
    /// client made its consumer again after an outage, from the stream's start when it
    /// had delivered nothing yet, so the reader drops it and makes its own again from
    /// the position.
    fn accept(&mut self, polled: Option<ConsumerItem>) -> Result<Option<StoredRecord>> {
        let name = self.stream_name();
        let message = match polled {
            Some(Ok(message)) => message,
            Some(Err(e)) => {
                self.consumer = None;
                return Err(unavailable(format!("cannot read from {name}"), e));
            }
            None => {
                self.consumer = None;
                return Err(Error::new(
                    ErrorKind::Unavailable,
                    format!("the consumer of {name} ended"),
                ));
            }
        };
        let info = message
            .info()
            .map_err(|e| Error::new(ErrorKind::Failed, format!("a message without info: {e}")))?;
        self.more = info.pending > 0;
        let record = stored_record(
            self.partition,
            info.stream_sequence,
            message.subject.as_str(),
            message.headers.as_ref(),
            info.published,
            message.payload.clone(),
        )?;
        if record.offset < self.position {
            self.consumer = None;
            return Ok(None);
        }
        self.inner
            .note_end(&self.topic, self.partition, record.offset + 1);
        Ok(Some(record))
    }

    /// The next record at or after the position: waiting for it while the server says
    /// it holds more (bounded by the client's timeout), else only one already received.
    async fn next(&mut self) -> Result<Option<StoredRecord>> {
        let timeout = self.inner.options.timeout;
        let mut waited = Duration::ZERO;
        loop {
            let more = self.more;
            let consumer = self.consumer().await?;
            let polled = if more {
                match tokio::time::timeout(RECHECK, consumer.next()).await {
                    Ok(polled) => polled,
                    Err(_) => {
                        // Nothing came: does the stream still hold something after the
                        // position?
                        let offsets =
                            offsets_of(&self.inner.state(&self.topic, self.partition).await?);
                        if offsets.end <= self.position {
                            self.more = false;
                            return Ok(None);
                        }
                        waited += RECHECK;
                        if waited >= timeout {
                            self.consumer = None;
                            return Err(Error::new(
                                ErrorKind::Unavailable,
                                format!(
                                    "no message from {} within {timeout:?}, though it holds offsets up to {}",
                                    self.stream_name(),
                                    offsets.end
                                ),
                            ));
                        }
                        continue;
                    }
                }
            } else {
                match consumer.next().now_or_never() {
                    Some(polled) => polled,
                    None => return Ok(None),
                }
            };
            if let Some(record) = self.accept(polled)? {
                return Ok(Some(record));
            }
        }
    }
}

type ConsumerItem = std::result::Result<
    async_nats::jetstream::Message,
    async_nats::jetstream::consumer::pull::OrderedError,
>;

#[async_trait]
impl PartitionReader for NatsReader {
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
        self.consumer = None;
        self.waiting.clear();
        self.more = false;
    }

    async fn read(&mut self, max_records: usize) -> Result<ReadBatch> {
        if let Err(e) = self.consumer().await
            && self.waiting.is_empty()
        {
            return Err(e);
        }
        let mut records = Vec::new();
        while records.len() < max_records {
            let next = match self.waiting.pop_front() {
                Some(record) => Ok(Some(record)),
                None => self.next().await,
            };
            let record = match next {
                Ok(Some(record)) => record,
                Ok(None) => break,
                // What was read is handed out; the failure shows at the next read.
                Err(e) if records.is_empty() => return Err(e),
                Err(_) => break,
            };
            if record.offset > self.position && !self.compacted {
                // Retention deleted what lies between, after the consumer was made. A
                // batch reports one range: a second waits for the next read.
                if !records.is_empty() {
                    self.waiting.push_front(record);
                    break;
                }
                self.note_skipped(record.offset);
            }
            self.position = record.offset + 1;
            records.push(record);
        }
        Ok(ReadBatch {
            records,
            skipped: self.skipped.take(),
        })
    }

    async fn wait(&mut self) -> Result<()> {
        loop {
            self.consumer().await?;
            if !self.waiting.is_empty() || self.more {
                return Ok(());
            }
            let polled = self.consumer().await?.next().await;
            if let Some(record) = self.accept(polled)? {
                self.waiting.push_back(record);
                return Ok(());
            }
        }
    }
}

/// The first offset whose record's time is at or after `timestamp_ms`: a binary search
/// over the stream's sequences (direct gets of the first message at or after each probe),
/// exact where records' times increase with their offsets, as appends stamped at append
/// time do.
pub(crate) async fn offset_for_time(
    inner: &Inner,
    topic: &str,
    partition: u32,
    timestamp_ms: i64,
) -> Result<u64> {
    let name = inner.names.stream(topic, partition);
    let stream = inner.stream(topic, partition).await?;
    let offsets = offsets_of(&stream.cached_info().state);
    let subjects = inner.names.stream_subjects(topic, partition);
    // The first record at or after a sequence, as (its sequence, its time).
    let at_or_after = async |sequence: u64| -> Result<Option<(u64, i64)>> {
        match stream
            .direct_get_builder()
            .sequence(sequence)
            .next_by_subject(subjects.clone())
            .send()
            .await
        {
            Ok(message) => {
                let record = stored_record(
                    partition,
                    message.sequence,
                    message.subject.as_str(),
                    Some(&message.headers),
                    message.time,
                    message.payload,
                )?;
                Ok(Some((message.sequence, record.timestamp_ms)))
            }
            Err(e) if e.kind() == async_nats::jetstream::stream::DirectGetErrorKind::NotFound => {
                Ok(None)
            }
            Err(e) => Err(unavailable(format!("cannot read {name}"), e)),
        }
    };
    // Sequences lo..hi; the answer is the first whose record is at or after the time.
    let (mut lo, mut hi) = (offsets.start + 1, offsets.end + 1);
    let mut found = offsets.end;
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        match at_or_after(mid).await? {
            Some((sequence, time)) if time >= timestamp_ms => {
                found = sequence - 1;
                hi = mid;
            }
            Some((sequence, _)) => lo = sequence + 1,
            None => hi = mid,
        }
    }
    Ok(found)
}
