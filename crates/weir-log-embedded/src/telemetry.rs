//! What the log reports about itself, one typed event per occurrence.

use std::io;

use crate::{frame::FrameError, journal::EntryError};

/// Recovery dropped the tail of a partition file: a torn or corrupt write that was never
/// acknowledged, or damage to the disk.
pub(crate) struct TailTruncated<'a> {
    pub(crate) topic: &'a str,
    pub(crate) partition: u32,
    /// The offset the next append gets, i.e. the first offset that was dropped (if any).
    pub(crate) offset: u64,
    pub(crate) position: u64,
    pub(crate) bytes_dropped: u64,
    pub(crate) reason: &'a FrameError,
}

impl TailTruncated<'_> {
    pub(crate) fn emit(&self) {
        tracing::warn!(
            topic = self.topic,
            partition = self.partition,
            offset = self.offset,
            position = self.position,
            bytes_dropped = self.bytes_dropped,
            reason = %self.reason,
            "truncated an incomplete or corrupt tail of a partition file"
        );
    }
}

/// A partition was opened and its segments recovered.
pub(crate) struct PartitionRecovered<'a> {
    pub(crate) topic: &'a str,
    pub(crate) partition: u32,
    pub(crate) end_offset: u64,
    pub(crate) segments: usize,
    pub(crate) indexed_batches: usize,
}

impl PartitionRecovered<'_> {
    pub(crate) fn emit(&self) {
        tracing::debug!(
            topic = self.topic,
            partition = self.partition,
            end_offset = self.end_offset,
            segments = self.segments,
            indexed_batches = self.indexed_batches,
            "recovered partition"
        );
    }
}

/// A write or fsync failed; the partition refuses writes from now on.
pub(crate) struct PartitionPoisoned<'a> {
    pub(crate) topic: &'a str,
    pub(crate) partition: u32,
    pub(crate) error: &'a io::Error,
    /// Whether the file could be cut back to its last good length.
    pub(crate) rolled_back: bool,
}

impl PartitionPoisoned<'_> {
    pub(crate) fn emit(&self) {
        tracing::error!(
            topic = self.topic,
            partition = self.partition,
            error = %self.error,
            rolled_back = self.rolled_back,
            "partition refuses writes after a disk error; fix the disk, then restart the node"
        );
    }
}

/// A directory entry under the data directory was not recognised and is left alone.
pub(crate) struct EntryIgnored<'a> {
    pub(crate) path: &'a std::path::Path,
    pub(crate) reason: &'a str,
}

impl EntryIgnored<'_> {
    pub(crate) fn emit(&self) {
        tracing::warn!(path = %self.path.display(), reason = self.reason, "ignored an entry of the data directory");
    }
}

/// Open removed the directory of a topic whose creation did not finish (it had no
/// `topic.json` and its partitions no records).
pub(crate) struct UnfinishedTopicRemoved<'a> {
    pub(crate) path: &'a std::path::Path,
}

impl UnfinishedTopicRemoved<'_> {
    pub(crate) fn emit(&self) {
        tracing::info!(path = %self.path.display(), "removed what an unfinished topic creation left");
    }
}

/// At open, a consumer group's committed offset lay past its partition's recovered end
/// (records a crash took back under fsync `Interval` or `Never`) and was lowered to it.
pub(crate) struct GroupOffsetClamped<'a> {
    pub(crate) group: &'a str,
    pub(crate) topic: &'a str,
    pub(crate) partition: u32,
    pub(crate) was: u64,
    pub(crate) now: u64,
}

impl GroupOffsetClamped<'_> {
    pub(crate) fn emit(&self) {
        tracing::warn!(
            group = self.group,
            topic = self.topic,
            partition = self.partition,
            was = self.was,
            now = self.now,
            "lowered a committed offset past the end of its partition, whose last records a crash took back; the group reads the records appended at those offsets next"
        );
    }
}

/// A write failed for lack of space; the group was cut back and refused, nothing was
/// acknowledged, and the partition keeps accepting writes.
pub(crate) struct DiskFull<'a> {
    pub(crate) topic: &'a str,
    pub(crate) partition: u32,
    pub(crate) bytes: usize,
}

impl DiskFull<'_> {
    pub(crate) fn emit(&self) {
        tracing::error!(
            topic = self.topic,
            partition = self.partition,
            bytes = self.bytes,
            "disk full: refused a group of appends; free space, then retry"
        );
    }
}

/// The active segment was closed and a new one started.
pub(crate) struct SegmentRolled<'a> {
    pub(crate) topic: &'a str,
    pub(crate) partition: u32,
    pub(crate) base_offset: u64,
}

impl SegmentRolled<'_> {
    pub(crate) fn emit(&self) {
        tracing::debug!(
            topic = self.topic,
            partition = self.partition,
            base_offset = self.base_offset,
            "rolled to a new segment"
        );
    }
}

/// Retention deleted a closed segment.
pub(crate) struct SegmentDeleted<'a> {
    pub(crate) topic: &'a str,
    pub(crate) partition: u32,
    pub(crate) base_offset: u64,
    pub(crate) bytes: u64,
}

impl SegmentDeleted<'_> {
    pub(crate) fn emit(&self) {
        tracing::info!(
            topic = self.topic,
            partition = self.partition,
            base_offset = self.base_offset,
            bytes = self.bytes,
            "deleted a segment past retention"
        );
    }
}

/// Compaction rewrote a closed segment.
pub(crate) struct SegmentCompacted<'a> {
    pub(crate) topic: &'a str,
    pub(crate) partition: u32,
    pub(crate) base_offset: u64,
    pub(crate) records_removed: u64,
}

impl SegmentCompacted<'_> {
    pub(crate) fn emit(&self) {
        tracing::info!(
            topic = self.topic,
            partition = self.partition,
            base_offset = self.base_offset,
            records_removed = self.records_removed,
            "compacted a segment"
        );
    }
}

/// A transaction's outputs and commit are durable.
pub(crate) struct TransactionCommitted<'a> {
    pub(crate) producer: &'a str,
    pub(crate) sequence: u64,
    pub(crate) batches: usize,
    pub(crate) records: usize,
}

impl TransactionCommitted<'_> {
    pub(crate) fn emit(&self) {
        tracing::debug!(
            producer = self.producer,
            sequence = self.sequence,
            batches = self.batches,
            records = self.records,
            "committed a transaction"
        );
    }
}

/// A transaction left pending by a crash or a failed append was completed.
pub(crate) struct TransactionRecovered<'a> {
    pub(crate) producer: &'a str,
    pub(crate) sequence: u64,
    /// Batches already stored, found by their tag.
    pub(crate) batches_found: usize,
    pub(crate) batches_appended: usize,
    /// Completed by `Log::open` rather than by the producer's next call.
    pub(crate) at_open: bool,
}

impl TransactionRecovered<'_> {
    pub(crate) fn emit(&self) {
        tracing::info!(
            producer = self.producer,
            sequence = self.sequence,
            batches_found = self.batches_found,
            batches_appended = self.batches_appended,
            at_open = self.at_open,
            "completed a pending transaction"
        );
    }
}

/// Recovery dropped the tail of a journal file: an intent whose write was torn (never
/// acknowledged) or damage to the disk.
pub(crate) struct JournalTailTruncated<'a> {
    pub(crate) path: &'a std::path::Path,
    pub(crate) position: u64,
    pub(crate) bytes_dropped: u64,
    pub(crate) reason: &'a EntryError,
}

impl JournalTailTruncated<'_> {
    pub(crate) fn emit(&self) {
        tracing::warn!(
            path = %self.path.display(),
            position = self.position,
            bytes_dropped = self.bytes_dropped,
            reason = %self.reason,
            "truncated an incomplete or corrupt tail of the transaction journal"
        );
    }
}

/// A journal write or fsync failed; every transaction is refused from now on.
pub(crate) struct JournalPoisoned<'a> {
    pub(crate) error: &'a io::Error,
}

impl JournalPoisoned<'_> {
    pub(crate) fn emit(&self) {
        tracing::error!(
            error = %self.error,
            "the transaction journal refuses writes after a disk error; fix the disk, then restart the node"
        );
    }
}

/// A journal write failed for lack of space; it was cut back and its intents refused.
pub(crate) struct JournalDiskFull {
    pub(crate) bytes: usize,
}

impl JournalDiskFull {
    pub(crate) fn emit(&self) {
        tracing::error!(
            bytes = self.bytes,
            "disk full: refused a group of transaction intents; free space, then retry"
        );
    }
}

/// The journal moved on to a new file.
pub(crate) struct JournalRotated {
    pub(crate) generation: u64,
    /// Intents not yet done, copied into the new file.
    pub(crate) carried: usize,
}

impl JournalRotated {
    pub(crate) fn emit(&self) {
        tracing::debug!(
            generation = self.generation,
            carried = self.carried,
            "started a new transaction journal file"
        );
    }
}

/// The journal could not start a new file and keeps writing the current one.
pub(crate) struct JournalRotationFailed<'a> {
    pub(crate) path: &'a std::path::Path,
    pub(crate) error: &'a io::Error,
}

impl JournalRotationFailed<'_> {
    pub(crate) fn emit(&self) {
        tracing::warn!(
            path = %self.path.display(),
            error = %self.error,
            "could not start a new transaction journal file; the current one keeps growing"
        );
    }
}

/// Writing the group files after a journal rotation failed; the old journal files stay
/// until a later checkpoint or the next open.
pub(crate) struct CheckpointFailed<'a> {
    pub(crate) error: &'a str,
}

impl CheckpointFailed<'_> {
    pub(crate) fn emit(&self) {
        tracing::warn!(
            error = self.error,
            "could not checkpoint the consumer-group offsets; old transaction journal files stay until the next try"
        );
    }
}

/// Writing the group files when the log closed failed; the next open finds the commits
/// in the journal and in the frames that carry them.
pub(crate) struct CloseCheckpointFailed<'a> {
    pub(crate) error: &'a str,
}

impl CloseCheckpointFailed<'_> {
    pub(crate) fn emit(&self) {
        tracing::warn!(
            error = self.error,
            "could not checkpoint the consumer-group offsets at close; the next open recovers them"
        );
    }
}

/// A one-frame transaction whose call was cancelled failed to be written: it counts for
/// nothing, and whoever sent it no longer waits for the answer.
pub(crate) struct CancelledTransactionFailed<'a> {
    pub(crate) producer: &'a str,
    pub(crate) error: &'a str,
}

impl CancelledTransactionFailed<'_> {
    pub(crate) fn emit(&self) {
        tracing::warn!(
            producer = self.producer,
            error = self.error,
            "a transaction whose call was cancelled was not written"
        );
    }
}

/// Open found a write-ahead file's tail cut short or damaged and replayed what came
/// before it: the tail was never acknowledged (a torn write), or the disk damaged it.
pub(crate) struct WalTailIgnored<'a> {
    pub(crate) path: &'a std::path::Path,
    pub(crate) position: u64,
    pub(crate) bytes: u64,
    pub(crate) reason: &'a str,
}

impl WalTailIgnored<'_> {
    pub(crate) fn emit(&self) {
        tracing::warn!(
            path = %self.path.display(),
            position = self.position,
            bytes = self.bytes,
            reason = self.reason,
            "ignored an incomplete or corrupt tail of a write-ahead file"
        );
    }
}

/// Open replayed the write-ahead files a crash left into the segments.
pub(crate) struct WalReplayed {
    pub(crate) files: usize,
    pub(crate) entries: usize,
}

impl WalReplayed {
    pub(crate) fn emit(&self) {
        tracing::info!(
            files = self.files,
            entries = self.entries,
            "replayed the write-ahead files into the partitions' segments"
        );
    }
}

/// A write or fsync of the write-ahead file failed: its group failed; unless it was cut
/// back for lack of space, every later append under `fsync always` fails too.
pub(crate) struct WalWriteFailed<'a> {
    pub(crate) error: &'a io::Error,
    pub(crate) cut_back: bool,
}

impl WalWriteFailed<'_> {
    pub(crate) fn emit(&self) {
        if self.error.kind() == io::ErrorKind::StorageFull && self.cut_back {
            tracing::error!(error = %self.error, "disk full: refused a group of appends; free space, then retry");
        } else {
            tracing::error!(
                error = %self.error,
                "the write-ahead file refuses writes after a disk error; fix the disk, then restart the node"
            );
        }
    }
}

/// A write-ahead file could not be checkpointed; it stays until the next open replays it.
pub(crate) struct WalCheckpointFailed<'a> {
    pub(crate) path: &'a std::path::Path,
    pub(crate) error: &'a io::Error,
}

impl WalCheckpointFailed<'_> {
    pub(crate) fn emit(&self) {
        tracing::warn!(
            path = %self.path.display(),
            error = %self.error,
            "could not checkpoint a write-ahead file; it stays until the next open replays it"
        );
    }
}

/// The log's metric families, named and described here (see [`describe_metrics`]).
pub(crate) const APPEND_DURATION: &str = "weir_log_append_duration_seconds";
pub(crate) const FSYNC_DURATION: &str = "weir_log_fsync_duration_seconds";
pub(crate) const WAL_FSYNC_DURATION: &str = "weir_log_wal_fsync_duration_seconds";

/// Describe the embedded log's families to the installed recorder; [`crate::Log::open`]
/// does, so they are described whenever the embedded log runs.
pub fn describe_metrics() {
    metrics::describe_histogram!(
        APPEND_DURATION,
        metrics::Unit::Seconds,
        "time from an append's arrival at its partition's writer queue to its acknowledgement (fsynced under fsync always), by topic; a transaction's batches included"
    );
    metrics::describe_histogram!(
        FSYNC_DURATION,
        metrics::Unit::Seconds,
        "time one fdatasync of a partition's active segment took, or its wait for the write-ahead file's (one per group commit), by topic"
    );
    metrics::describe_histogram!(
        WAL_FSYNC_DURATION,
        metrics::Unit::Seconds,
        "time one fdatasync of the write-ahead file took; each makes the groups of every partition queued before it durable"
    );
}

/// The write-ahead file's fdatasync histogram.
pub(crate) fn wal_fsync_histogram() -> metrics::Histogram {
    metrics::histogram!(WAL_FSYNC_DURATION)
}

/// A partition's histograms, made when it opens (one series per topic: its partitions
/// share them).
pub(crate) struct PartitionMetrics {
    pub(crate) append: metrics::Histogram,
    pub(crate) fsync: metrics::Histogram,
}

impl PartitionMetrics {
    pub(crate) fn new(topic: &str) -> PartitionMetrics {
        PartitionMetrics {
            append: metrics::histogram!(APPEND_DURATION, "topic" => topic.to_owned()),
            fsync: metrics::histogram!(FSYNC_DURATION, "topic" => topic.to_owned()),
        }
    }
}
