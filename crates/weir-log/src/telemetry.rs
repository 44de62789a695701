//! What the log reports about itself, one typed event per occurrence.

use std::io;

use crate::frame::FrameError;

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

/// A partition was opened and its index rebuilt.
pub(crate) struct PartitionRecovered<'a> {
    pub(crate) topic: &'a str,
    pub(crate) partition: u32,
    pub(crate) end_offset: u64,
    pub(crate) batches: usize,
}

impl PartitionRecovered<'_> {
    pub(crate) fn emit(&self) {
        tracing::debug!(
            topic = self.topic,
            partition = self.partition,
            end_offset = self.end_offset,
            batches = self.batches,
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
