//! Cursor readers: a reader holds its position in one partition (and, on a network
//! backend, its consumer), reads from it, waits at the end and seeks.

use async_trait::async_trait;
use serde::Serialize;

use crate::{Result, StoredRecord};

/// A range of offsets a reader passed over because they were no longer stored (retention
/// deleted them before the reader got there): `from` up to, not including, `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Skipped {
    pub from: u64,
    pub to: u64,
}

/// What one [`PartitionReader::read`] returned.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ReadBatch {
    /// Records at or after the position the read started at, in offset order. Offsets may
    /// skip (compaction, transaction markers): use each record's.
    pub records: Vec<StoredRecord>,
    /// Set when the read started below the partition's first stored offset: the range it
    /// jumped over. Never silent: a consumer reports it (log, status, a counter).
    pub skipped: Option<Skipped>,
}

/// A position in one partition that reads forward. Not shared: one consumer owns it.
#[async_trait]
pub trait PartitionReader: Send + Sync {
    fn topic(&self) -> &str;
    fn partition(&self) -> u32;
    /// The offset the next read starts at: just past the last record handed out.
    fn position(&self) -> u64;
    /// Moves the position; the next read starts at `offset` (or at the partition's first
    /// stored offset, reporting the skip, if `offset` is below it).
    fn seek(&mut self, offset: u64);
    /// Up to `max_records` records at or after the position, moving the position past
    /// them; empty at the end of the partition.
    async fn read(&mut self, max_records: usize) -> Result<ReadBatch>;
    /// Resolves once a record at or after the position is readable (at once if one is).
    async fn wait(&mut self) -> Result<()>;
}
