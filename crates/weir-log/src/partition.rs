//! One partition: an append-only file of batch frames, its in-memory index, its writer and
//! the watch that wakes tail followers.
//!
//! # On disk
//!
//! `topics/<topic>/<partition>/00000000000000000000.log` holds the partition's frames (see
//! `frame`) back to back, nothing before, between or after them. The file name is the
//! offset of its first record, zero-padded to 20 digits, so that later versions can split
//! a partition into segments named the same way.
//!
//! # Invariants
//!
//! - The first frame has base offset 0 (the file name); each next frame starts where the
//!   previous one's offsets end. Offsets are dense: no gaps, no repeats.
//! - A batch is written with one positional write at the end of the file and fsynced
//!   before it enters the index, wakes waiters or is acknowledged. Readers only see
//!   indexed batches, so they never see a record that is not durable.
//! - On open the file is scanned from the start. At the first frame that is cut short,
//!   has a bad magic byte, a bad checksum, a malformed body or a base offset that does not
//!   continue the previous frame, the file is truncated: that frame was never
//!   acknowledged (a torn write), or the disk damaged it. Every frame before it is kept.
//! - A failed write or fsync poisons the partition: it refuses writes until the process
//!   restarts, because after a failed fsync the kernel may have dropped the dirty pages
//!   and a retry could report success for data that is not on disk.
//! - Every read re-verifies the checksum of the frames it returns.

use std::{
    fs::{File, OpenOptions},
    io::{BufReader, Read},
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
    sync::{Mutex, MutexGuard, PoisonError, RwLock},
};

use bytes::Bytes;
use tokio::sync::watch;

use crate::{
    Error, Record, Result, StoredRecord,
    error::IoContext,
    frame::{self, FrameError},
    fsutil, telemetry,
};

/// Offset of the first record of the only segment, for now.
const BASE_OFFSET: u64 = 0;

/// The file name of the segment whose first record has `base_offset`.
pub(crate) fn segment_file_name(base_offset: u64) -> String {
    format!("{base_offset:020}.log")
}

/// Whether to make a missing partition file or to insist on finding one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpenMode {
    Create,
    Recover,
}

pub(crate) struct Partition {
    topic: String,
    id: u32,
    path: PathBuf,
    writer: Mutex<Writer>,
    index: RwLock<Vec<IndexEntry>>,
    /// Shared by all readers; positional reads need no seek and no lock.
    reader: File,
    /// The end offset, for tail followers.
    end: watch::Sender<u64>,
}

struct Writer {
    file: File,
    /// Bytes of whole, fsynced frames; the next frame goes here.
    len: u64,
    next_offset: u64,
    poisoned: bool,
}

/// Where one batch lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct IndexEntry {
    base_offset: u64,
    record_count: u32,
    position: u64,
    len: u64,
}

impl IndexEntry {
    fn end_offset(&self) -> u64 {
        self.base_offset + u64::from(self.record_count)
    }
}

impl Partition {
    /// Opens the partition stored in `dir`, truncating a torn or corrupt tail.
    pub(crate) fn open(topic: &str, id: u32, dir: &Path, mode: OpenMode) -> Result<Partition> {
        let path = dir.join(segment_file_name(BASE_OFFSET));
        let what = || format!("partition {id} of topic \"{topic}\" ({})", path.display());
        if mode == OpenMode::Create {
            fsutil::create_dir(dir).context(|| format!("could not create {}", dir.display()))?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(mode == OpenMode::Create)
            .open(&path)
            .context(|| format!("could not open {}", what()))?;
        if mode == OpenMode::Create {
            fsutil::sync_dir(dir).context(|| format!("could not fsync {}", dir.display()))?;
        }

        let scan =
            scan_frames(&file, BASE_OFFSET).context(|| format!("could not read {}", what()))?;
        if let Some(reason) = &scan.stopped_by {
            telemetry::TailTruncated {
                topic,
                partition: id,
                offset: scan.next_offset,
                position: scan.valid_len,
                bytes_dropped: scan.file_len - scan.valid_len,
                reason,
            }
            .emit();
            file.set_len(scan.valid_len)
                .and_then(|()| file.sync_all())
                .context(|| format!("could not truncate the corrupt tail of {}", what()))?;
        }
        let reader = File::open(&path).context(|| format!("could not open {}", what()))?;
        telemetry::PartitionRecovered {
            topic,
            partition: id,
            end_offset: scan.next_offset,
            batches: scan.index.len(),
        }
        .emit();

        Ok(Partition {
            topic: topic.to_owned(),
            id,
            path,
            writer: Mutex::new(Writer {
                file,
                len: scan.valid_len,
                next_offset: scan.next_offset,
                poisoned: false,
            }),
            index: RwLock::new(scan.index),
            reader,
            end: watch::Sender::new(scan.next_offset),
        })
    }

    /// The next offset to be assigned.
    pub(crate) fn end_offset(&self) -> u64 {
        *self.end.borrow()
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.end.subscribe()
    }

    /// Writes `records` as one frame, fsyncs it and returns its base offset.
    ///
    /// `records` must be non-empty and within [`frame::check_limits`].
    pub(crate) fn append_batch(&self, records: &[Record], now_ms: i64) -> Result<u64> {
        let mut writer = self.lock_writer()?;
        if writer.poisoned {
            return Err(self.poisoned());
        }
        let base_offset = writer.next_offset;
        let frame = frame::encode_batch(base_offset, records, now_ms);
        let position = writer.len;
        let written = writer
            .file
            .write_all_at(&frame, position)
            .and_then(|()| writer.file.sync_data());
        if let Err(error) = written {
            writer.poisoned = true;
            // Best effort: keep the file parseable for the restart.
            let rolled_back = writer
                .file
                .set_len(position)
                .and_then(|()| writer.file.sync_all())
                .is_ok();
            telemetry::PartitionPoisoned {
                topic: &self.topic,
                partition: self.id,
                error: &error,
                rolled_back,
            }
            .emit();
            return Err(Error::Io {
                context: format!(
                    "could not write a batch to partition {} of topic \"{}\" ({}); the partition refuses writes until the disk is fixed and the node restarted",
                    self.id,
                    self.topic,
                    self.path.display()
                ),
                source: error,
            });
        }

        let entry = IndexEntry {
            base_offset,
            record_count: records.len() as u32,
            position,
            len: frame.len() as u64,
        };
        writer.len += entry.len;
        writer.next_offset = entry.end_offset();
        self.index
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .push(entry);
        self.end.send_replace(writer.next_offset);
        Ok(base_offset)
    }

    /// Up to `max_records` records from `from_offset` on; empty at or past the end.
    pub(crate) fn read(&self, from_offset: u64, max_records: usize) -> Result<Vec<StoredRecord>> {
        let (batches, available) = {
            let index = self.index.read().unwrap_or_else(PoisonError::into_inner);
            let first = index.partition_point(|e| e.end_offset() <= from_offset);
            let mut batches = Vec::new();
            let mut available = 0usize;
            for entry in &index[first..] {
                if available >= max_records {
                    break;
                }
                batches.push(*entry);
                let skipped = from_offset.saturating_sub(entry.base_offset);
                available += (u64::from(entry.record_count) - skipped) as usize;
            }
            (batches, available.min(max_records))
        };

        let mut records = Vec::with_capacity(available);
        for entry in batches {
            let batch = self.read_batch(&entry)?;
            let skip = from_offset.saturating_sub(entry.base_offset) as usize;
            let wanted = available - records.len();
            records.extend(
                batch
                    .records
                    .into_iter()
                    .enumerate()
                    .skip(skip)
                    .take(wanted)
                    .map(|(i, r)| StoredRecord {
                        partition: self.id,
                        offset: entry.base_offset + i as u64,
                        timestamp_ms: r.timestamp_ms,
                        key: r.key,
                        value: r.value,
                    }),
            );
        }
        Ok(records)
    }

    fn read_batch(&self, entry: &IndexEntry) -> Result<frame::Batch> {
        let what = || {
            format!(
                "batch at offset {} of partition {} of topic \"{}\" ({} at byte {})",
                entry.base_offset,
                self.id,
                self.topic,
                self.path.display(),
                entry.position
            )
        };
        let mut buf = vec![0; entry.len as usize];
        self.reader
            .read_exact_at(&mut buf, entry.position)
            .context(|| format!("could not read the {}", what()))?;
        let batch = frame::decode_frame(Bytes::from(buf))
            .and_then(|batch| {
                let records = batch.records.len() as u64;
                if batch.base_offset == entry.base_offset
                    && records == u64::from(entry.record_count)
                {
                    Ok(batch)
                } else {
                    Err(FrameError::Malformed("batch differs from the index"))
                }
            })
            .map_err(|reason| Error::Corrupt {
                what: format!("the {}", what()),
                reason: reason.to_string(),
            })?;
        Ok(batch)
    }

    fn lock_writer(&self) -> Result<MutexGuard<'_, Writer>> {
        // A panic while writing leaves the file in an unknown state: treat it like a
        // failed write.
        self.writer.lock().map_err(|_| self.poisoned())
    }

    fn poisoned(&self) -> Error {
        Error::Poisoned {
            topic: self.topic.clone(),
            partition: self.id,
        }
    }
}

/// What a scan of a partition file found.
struct Scan {
    index: Vec<IndexEntry>,
    /// Bytes of whole, valid, contiguous frames from the start.
    valid_len: u64,
    next_offset: u64,
    file_len: u64,
    /// Why the scan stopped before the end of the file, if it did.
    stopped_by: Option<FrameError>,
}

/// Reads the frames of `file` from the start until the end or the first bad frame.
/// IO errors are returned, never taken for corruption, so a failing read cannot cost
/// data.
fn scan_frames(file: &File, base_offset: u64) -> std::io::Result<Scan> {
    let file_len = file.metadata()?.len();
    let mut reader = BufReader::with_capacity(1 << 16, file);
    let mut scan = Scan {
        index: Vec::new(),
        valid_len: 0,
        next_offset: base_offset,
        file_len,
        stopped_by: None,
    };
    let mut header = [0; frame::HEADER_LEN];
    while scan.valid_len < file_len {
        let remaining = file_len - scan.valid_len;
        if remaining < frame::HEADER_LEN as u64 {
            scan.stopped_by = Some(FrameError::Short);
            break;
        }
        reader.read_exact(&mut header)?;
        let header = match frame::decode_header(&header) {
            Ok(header) => header,
            Err(reason) => {
                scan.stopped_by = Some(reason);
                break;
            }
        };
        let frame_len = header.frame_len();
        if frame_len > remaining {
            scan.stopped_by = Some(FrameError::Short);
            break;
        }
        let mut body = vec![0; header.body_len as usize];
        reader.read_exact(&mut body)?;
        let batch = match frame::decode_body(&header, Bytes::from(body)) {
            Ok(batch) if batch.base_offset == scan.next_offset => batch,
            Ok(batch) => {
                scan.stopped_by = Some(FrameError::NonContiguous {
                    expected: scan.next_offset,
                    found: batch.base_offset,
                });
                break;
            }
            Err(reason) => {
                scan.stopped_by = Some(reason);
                break;
            }
        };
        let entry = IndexEntry {
            base_offset: batch.base_offset,
            record_count: batch.records.len() as u32,
            position: scan.valid_len,
            len: frame_len,
        };
        scan.index.push(entry);
        scan.valid_len += frame_len;
        scan.next_offset = entry.end_offset();
    }
    Ok(scan)
}

#[cfg(test)]
mod tests;
