//! Readers of one partition's stream: an ordered consumer (ephemeral, flow-controlled,
//! made again by the client when it misses a message) from the reader's position; and
//! offsets by time, found by a binary search of direct gets.

use std::collections::VecDeque;
use std::sync::Arc;

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
    position: u64,
    consumer: Option<SyncWrapper<pull::Ordered>>,
    /// Whether the server holds records after the last one this reader received (from
    /// the stream's state when the consumer was made, then each message's pending count).
    more: bool,
    /// A record `wait` received and `read` has not handed out.
    waiting: VecDeque<StoredRecord>,
    skipped: Option<Skipped>,
}

impl NatsReader {
    pub(crate) fn new(inner: Arc<Inner>, topic: &str, partition: u32, position: u64) -> NatsReader {
        NatsReader {
            inner,
            topic: topic.to_owned(),
            partition,
            position,
            consumer: None,
            more: false,
            waiting: VecDeque::new(),
            skipped: None,
        }
    }

    /// The consumer from the position, made at the first read after a seek; notes the
    /// range below the stream's first record it passes over.
    async fn consumer(&mut self) -> Result<&mut pull::Ordered> {
        if self.consumer.is_none() {
            let name = self.inner.names.stream(&self.topic, self.partition);
            let stream = self
                .inner
                .js
                .get_stream(&name)
                .await
                .map_err(|e| unavailable(format!("cannot read stream {name}"), e))?;
            let state = stream.cached_info().state.clone();
            let offsets = offsets_of(&state);
            if self.position < offsets.start {
                self.skipped = Some(Skipped {
                    from: self.position,
                    to: offsets.start,
                });
                self.position = offsets.start;
            }
            self.more = offsets.end > self.position && state.messages > 0;
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

    fn record(&mut self, message: async_nats::jetstream::Message) -> Result<StoredRecord> {
        let info = message
            .info()
            .map_err(|e| Error::new(ErrorKind::Failed, format!("a message without info: {e}")))?;
        self.more = info.pending > 0;
        stored_record(
            self.partition,
            info.stream_sequence,
            message.subject.as_str(),
            message.headers.as_ref(),
            info.published,
            message.payload.clone(),
        )
    }

    /// The next message: waiting for it (bounded by the client's timeout) when `block`,
    /// else only one already received.
    async fn next(&mut self, block: bool) -> Result<Option<StoredRecord>> {
        let timeout = self.inner.options.timeout;
        let name = self.inner.names.stream(&self.topic, self.partition);
        let consumer = self.consumer().await?;
        let next = if block {
            match tokio::time::timeout(timeout, consumer.next()).await {
                Ok(next) => next,
                Err(_) => {
                    return Err(Error::new(
                        ErrorKind::Unavailable,
                        format!(
                            "no message from {name} within {timeout:?}, though the server holds more"
                        ),
                    ));
                }
            }
        } else {
            match consumer.next().now_or_never() {
                Some(next) => next,
                None => return Ok(None),
            }
        };
        match next {
            Some(Ok(message)) => self.record(message).map(Some),
            Some(Err(e)) => {
                self.consumer = None;
                Err(unavailable(format!("cannot read from {name}"), e))
            }
            None => {
                self.consumer = None;
                Err(Error::new(
                    ErrorKind::Unavailable,
                    format!("the consumer of {name} ended"),
                ))
            }
        }
    }
}

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
        self.consumer().await?;
        let mut records = Vec::new();
        while records.len() < max_records {
            let record = match self.waiting.pop_front() {
                Some(record) => Some(record),
                None => {
                    let block = self.more;
                    self.next(block).await?
                }
            };
            let Some(record) = record else { break };
            self.position = record.offset + 1;
            records.push(record);
        }
        Ok(ReadBatch {
            records,
            skipped: self.skipped.take(),
        })
    }

    async fn wait(&mut self) -> Result<()> {
        self.consumer().await?;
        if !self.waiting.is_empty() || self.more {
            return Ok(());
        }
        let name = self.inner.names.stream(&self.topic, self.partition);
        let consumer = self.consumer().await?;
        match consumer.next().await {
            Some(Ok(message)) => {
                let record = self.record(message)?;
                self.waiting.push_back(record);
                Ok(())
            }
            Some(Err(e)) => {
                self.consumer = None;
                Err(unavailable(format!("cannot read from {name}"), e))
            }
            None => {
                self.consumer = None;
                Err(Error::new(
                    ErrorKind::Unavailable,
                    format!("the consumer of {name} ended"),
                ))
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
    let stream = inner
        .js
        .get_stream(&name)
        .await
        .map_err(|e| unavailable(format!("cannot read stream {name}"), e))?;
    let state = stream.cached_info().state.clone();
    let offsets = offsets_of(&state);
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
