//! The embedded log's cursor reader: a position in one partition, held with the
//! partition itself, so a read neither looks the topic up again nor rebuilds state.
//!
//! A read of the active segment (a consumer at the tail: pipelines, subscribers) runs in
//! place: its pages were written lately and are in the page cache. A read of closed
//! segments (a consumer behind, a replay) goes to the blocking pool, where a page-cache
//! miss may wait on the disk. Sending every read to the pool cost memory: records
//! allocated on many pool threads and freed on the runtime's kept each thread's
//! allocator heap in use (a node's RSS under a backlog grew 13-34 MiB instead of 3-15 MiB,
//! `weir-cli`'s `a_slow_function_slows_its_pipeline_and_memory_stays_flat`). Waits follow
//! the partition's published end offset. A read that starts below the
//! partition's first stored offset reports the range it jumped over.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::watch;
use weir_log::{PartitionReader, ReadBatch, Skipped};

use crate::{Error, partition::Partition};

pub(crate) struct EmbeddedReader {
    topic: String,
    partition_id: u32,
    partition: Arc<Partition>,
    position: u64,
    end: watch::Receiver<u64>,
}

impl EmbeddedReader {
    pub(crate) fn new(
        topic: &str,
        partition_id: u32,
        partition: Arc<Partition>,
        position: u64,
    ) -> EmbeddedReader {
        EmbeddedReader {
            topic: topic.to_owned(),
            partition_id,
            end: partition.subscribe(),
            partition,
            position,
        }
    }
}

/// The range a read from `position` jumped over, given the partition's first stored
/// offset after the read and the first record it returned (or the end it found).
pub(crate) fn skipped(position: u64, start_after: u64, first_returned: u64) -> Option<Skipped> {
    let to = start_after.min(first_returned);
    (position < to).then_some(Skipped { from: position, to })
}

#[async_trait]
impl PartitionReader for EmbeddedReader {
    fn topic(&self) -> &str {
        &self.topic
    }

    fn partition(&self) -> u32 {
        self.partition_id
    }

    fn position(&self) -> u64 {
        self.position
    }

    fn seek(&mut self, offset: u64) {
        self.position = offset;
    }

    async fn read(&mut self, max_records: usize) -> weir_log::Result<ReadBatch> {
        let (partition, position) = (Arc::clone(&self.partition), self.position);
        let read = move || {
            let records = partition.read(position, max_records)?;
            // After the read: retention that ran meanwhile shows in it.
            Ok::<_, Error>((records, partition.start_offset(), partition.end_offset()))
        };
        let (records, start_after, end) = if self.partition.is_tail(position) {
            read()?
        } else {
            tokio::task::spawn_blocking(read).await.map_err(|e| {
                weir_log::Error::new(
                    weir_log::ErrorKind::Unavailable,
                    format!(
                        "a read of partition {} of topic \"{}\" did not finish ({e}); read again",
                        self.partition_id, self.topic
                    ),
                )
            })??
        };
        let first = records.first().map_or(end, |r| r.offset);
        let skipped = skipped(position, start_after, first);
        if let Some(last) = records.last() {
            self.position = last.offset + 1;
        } else if let Some(skipped) = skipped {
            self.position = skipped.to;
        }
        Ok(ReadBatch { records, skipped })
    }

    async fn wait(&mut self) -> weir_log::Result<()> {
        let position = self.position;
        self.end
            .wait_for(|end| *end > position)
            .await
            .map_err(|_| Error::Closed {
                topic: self.topic.clone(),
                partition: self.partition_id,
                offset: position,
            })?;
        Ok(())
    }
}
