//! The per-segment indexes: a sparse offset index (relative offset → file position) and a
//! time index (max timestamp before a batch → relative offset), built batch by batch as
//! the segment grows, and their file encodings.
//!
//! Pure data and byte encodings; `segment` reads and writes the files.
//!
//! # On disk (closed segments only)
//!
//! All integers are little endian. `<base>.index`:
//!
//! ```text
//! index   = entry{count} log_len:u64 next_offset:u64 max_timestamp_ms:i64 count:u32
//!           crc:u32 magic:u32
//! entry   = relative_offset:u32 position:u32
//! ```
//!
//! `<base>.timeindex`:
//!
//! ```text
//! timeindex = tentry{count} log_len:u64 count:u32 crc:u32 magic:u32
//! tentry    = max_timestamp_before_ms:i64 relative_offset:u32
//! ```
//!
//! - `crc` is the CRC32C of everything before it; `magic` is [`INDEX_MAGIC`] or
//!   [`TIME_INDEX_MAGIC`].
//! - `log_len` is the length of the `.log` file the index describes; an index whose
//!   `log_len` differs from the file's length is stale and is rebuilt by scanning.
//! - `next_offset` is one past the segment's last record (its base offset if empty);
//!   `max_timestamp_ms` the largest record timestamp (`i64::MIN` if empty).
//!
//! # Invariants
//!
//! - An entry points at the start of a batch: `relative_offset` is the batch's base offset
//!   minus the segment's base offset, `position` its byte position in the `.log` file.
//! - The first batch of a segment always has an entry; after that a batch gets one when it
//!   starts at least [`INDEX_INTERVAL_BYTES`] after the previous entry. Both columns
//!   strictly increase, and positions stay below `log_len`.
//! - A time entry is written with every offset entry; `max_timestamp_before_ms` is the
//!   largest timestamp of the records *before* that batch in the segment (`i64::MIN` for
//!   the first), so it never decreases, and every record before the entry's batch is
//!   older than it.
//! - Index files are written (temporary file, fsync, rename, fsync of the directory) only
//!   when a segment is closed or compacted; the active segment's index lives in memory
//!   and is rebuilt by the scan on open. Files that fail any check here are rebuilt.

use crate::frame::{u32_at, u64_at};

/// Bytes of log between two index entries.
pub(crate) const INDEX_INTERVAL_BYTES: u64 = 4096;
pub(crate) const INDEX_MAGIC: u32 = u32::from_le_bytes(*b"WIX2");
pub(crate) const TIME_INDEX_MAGIC: u32 = u32::from_le_bytes(*b"WTI2");
const ENTRY_LEN: usize = 8;
const TIME_ENTRY_LEN: usize = 12;
const INDEX_TRAILER_LEN: usize = 8 + 8 + 8 + 4 + 4 + 4;
const TIME_TRAILER_LEN: usize = 8 + 4 + 4 + 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OffsetEntry {
    pub(crate) relative_offset: u32,
    pub(crate) position: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimeEntry {
    pub(crate) max_timestamp_before_ms: i64,
    pub(crate) relative_offset: u32,
}

/// Why an index file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum IndexError {
    #[error("index file is cut short or too long")]
    Length,
    #[error("bad index magic")]
    BadMagic,
    #[error("index checksum mismatch")]
    BadChecksum,
    #[error("index describes a log of {expected} bytes, the file has {found}")]
    Stale { expected: u64, found: u64 },
    #[error("malformed index: {0}")]
    Malformed(&'static str),
}

/// Everything known about one segment's contents without reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SegmentIndex {
    pub(crate) base_offset: u64,
    pub(crate) offsets: Vec<OffsetEntry>,
    pub(crate) times: Vec<TimeEntry>,
    /// One past the last record; `base_offset` when empty.
    pub(crate) next_offset: u64,
    /// Largest record timestamp; `i64::MIN` when empty.
    pub(crate) max_timestamp_ms: i64,
    /// Bytes of whole batches.
    pub(crate) log_len: u64,
}

impl SegmentIndex {
    pub(crate) fn new(base_offset: u64) -> SegmentIndex {
        SegmentIndex {
            base_offset,
            offsets: Vec::new(),
            times: Vec::new(),
            next_offset: base_offset,
            max_timestamp_ms: i64::MIN,
            log_len: 0,
        }
    }

    /// Accounts for a batch appended at `position` (which must be `log_len`).
    pub(crate) fn add_batch(
        &mut self,
        position: u64,
        base_offset: u64,
        last_offset: u64,
        max_timestamp_ms: i64,
        frame_len: u64,
    ) {
        debug_assert_eq!(position, self.log_len);
        let due = self
            .offsets
            .last()
            .is_none_or(|last| position >= u64::from(last.position) + INDEX_INTERVAL_BYTES);
        let relative = base_offset
            .checked_sub(self.base_offset)
            .and_then(|r| u32::try_from(r).ok());
        let position32 = u32::try_from(position).ok();
        // A batch whose position or offset does not fit gets no entry; lookups then
        // start from an earlier entry, which is slower but still right.
        if let (true, Some(relative_offset), Some(position)) = (due, relative, position32)
            && self
                .offsets
                .last()
                .is_none_or(|last| last.relative_offset < relative_offset)
        {
            self.offsets.push(OffsetEntry {
                relative_offset,
                position,
            });
            self.times.push(TimeEntry {
                max_timestamp_before_ms: self.max_timestamp_ms,
                relative_offset,
            });
        }
        self.next_offset = last_offset + 1;
        self.max_timestamp_ms = self.max_timestamp_ms.max(max_timestamp_ms);
        self.log_len = position + frame_len;
    }

    /// The position of the last indexed batch that starts at or before `offset`, where a
    /// scan for `offset` can begin.
    pub(crate) fn position_for(&self, offset: u64) -> u64 {
        let relative = offset.saturating_sub(self.base_offset);
        let after = self
            .offsets
            .partition_point(|e| u64::from(e.relative_offset) <= relative);
        match after {
            0 => 0,
            n => u64::from(self.offsets[n - 1].position),
        }
    }

    /// An offset from which a scan finds the first record with a timestamp at or after
    /// `timestamp_ms`: every record before it is older.
    pub(crate) fn scan_start_for_time(&self, timestamp_ms: i64) -> u64 {
        let after = self
            .times
            .partition_point(|e| e.max_timestamp_before_ms < timestamp_ms);
        match after {
            0 => self.base_offset,
            n => self.base_offset + u64::from(self.times[n - 1].relative_offset),
        }
    }

    pub(crate) fn encode_index(&self) -> Vec<u8> {
        let mut buf = Vec::with_capacity(self.offsets.len() * ENTRY_LEN + INDEX_TRAILER_LEN);
        for entry in &self.offsets {
            buf.extend_from_slice(&entry.relative_offset.to_le_bytes());
            buf.extend_from_slice(&entry.position.to_le_bytes());
        }
        buf.extend_from_slice(&self.log_len.to_le_bytes());
        buf.extend_from_slice(&self.next_offset.to_le_bytes());
        buf.extend_from_slice(&self.max_timestamp_ms.to_le_bytes());
        buf.extend_from_slice(&(self.offsets.len() as u32).to_le_bytes());
        let crc = crc32c::crc32c(&buf);
        buf.extend_from_slice(&crc.to_le_bytes());
        buf.extend_from_slice(&INDEX_MAGIC.to_le_bytes());
        buf
    }

    pub(crate) fn encode_time_index(&self) -> Vec<u8> {
        let mut buf = Vec::with_capacity(self.times.len() * TIME_ENTRY_LEN + TIME_TRAILER_LEN);
        for entry in &self.times {
            buf.extend_from_slice(&entry.max_timestamp_before_ms.to_le_bytes());
            buf.extend_from_slice(&entry.relative_offset.to_le_bytes());
        }
        buf.extend_from_slice(&self.log_len.to_le_bytes());
        buf.extend_from_slice(&(self.times.len() as u32).to_le_bytes());
        let crc = crc32c::crc32c(&buf);
        buf.extend_from_slice(&crc.to_le_bytes());
        buf.extend_from_slice(&TIME_INDEX_MAGIC.to_le_bytes());
        buf
    }

    /// Decodes and checks both index files of the segment at `base_offset` whose `.log`
    /// file has `log_len` bytes.
    pub(crate) fn decode(
        base_offset: u64,
        index: &[u8],
        time_index: &[u8],
        log_len: u64,
    ) -> Result<SegmentIndex, IndexError> {
        let (entries, trailer) = split_trailer(index, INDEX_TRAILER_LEN, INDEX_MAGIC)?;
        let indexed_len = u64_at(trailer, 0);
        if indexed_len != log_len {
            return Err(IndexError::Stale {
                expected: indexed_len,
                found: log_len,
            });
        }
        let next_offset = u64_at(trailer, 8);
        let max_timestamp_ms = u64_at(trailer, 16) as i64;
        let count = u32_at(trailer, 24) as usize;
        if entries.len() != count.checked_mul(ENTRY_LEN).ok_or(IndexError::Length)? {
            return Err(IndexError::Length);
        }
        let offsets: Vec<OffsetEntry> = entries
            .chunks_exact(ENTRY_LEN)
            .map(|e| OffsetEntry {
                relative_offset: u32_at(e, 0),
                position: u32_at(e, 4),
            })
            .collect();
        if offsets
            .windows(2)
            .any(|w| w[0].relative_offset >= w[1].relative_offset || w[0].position >= w[1].position)
        {
            return Err(IndexError::Malformed("entries do not increase"));
        }
        if offsets
            .last()
            .is_some_and(|e| u64::from(e.position) >= log_len)
        {
            return Err(IndexError::Malformed("entry points past the log"));
        }
        if next_offset < base_offset
            || offsets.last().is_some_and(|e| {
                base_offset
                    .checked_add(u64::from(e.relative_offset))
                    .is_none_or(|o| o >= next_offset)
            })
        {
            return Err(IndexError::Malformed("next offset before the last entry"));
        }
        if (log_len == 0) != offsets.is_empty() || (log_len == 0) != (next_offset == base_offset) {
            return Err(IndexError::Malformed("entries do not match the log length"));
        }

        let (entries, trailer) = split_trailer(time_index, TIME_TRAILER_LEN, TIME_INDEX_MAGIC)?;
        let indexed_len = u64_at(trailer, 0);
        if indexed_len != log_len {
            return Err(IndexError::Stale {
                expected: indexed_len,
                found: log_len,
            });
        }
        let count = u32_at(trailer, 8) as usize;
        if entries.len()
            != count
                .checked_mul(TIME_ENTRY_LEN)
                .ok_or(IndexError::Length)?
        {
            return Err(IndexError::Length);
        }
        let times: Vec<TimeEntry> = entries
            .chunks_exact(TIME_ENTRY_LEN)
            .map(|e| TimeEntry {
                max_timestamp_before_ms: u64_at(e, 0) as i64,
                relative_offset: u32_at(e, 8),
            })
            .collect();
        if times.windows(2).any(|w| {
            w[0].max_timestamp_before_ms > w[1].max_timestamp_before_ms
                || w[0].relative_offset >= w[1].relative_offset
        }) {
            return Err(IndexError::Malformed("time entries do not increase"));
        }
        if times
            .last()
            .is_some_and(|e| e.max_timestamp_before_ms > max_timestamp_ms)
        {
            return Err(IndexError::Malformed("time entry after the max timestamp"));
        }
        Ok(SegmentIndex {
            base_offset,
            offsets,
            times,
            next_offset,
            max_timestamp_ms,
            log_len,
        })
    }
}

/// Checks length, checksum and magic; returns the entries and the trailer before its
/// checksum and magic.
fn split_trailer(buf: &[u8], trailer_len: usize, magic: u32) -> Result<(&[u8], &[u8]), IndexError> {
    if buf.len() < trailer_len {
        return Err(IndexError::Length);
    }
    let (covered, tail) = buf.split_at(buf.len() - 8);
    if u32_at(tail, 4) != magic {
        return Err(IndexError::BadMagic);
    }
    if crc32c::crc32c(covered) != u32_at(tail, 0) {
        return Err(IndexError::BadChecksum);
    }
    Ok(covered.split_at(covered.len() - (trailer_len - 8)))
}

#[cfg(test)]
mod tests;
