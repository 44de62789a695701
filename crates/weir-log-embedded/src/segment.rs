//! One segment of a partition: a `.log` file of batch frames, its indexes, and the reads
//! and scans over it.
//!
//! # On disk
//!
//! ```text
//! <partition dir>/<base offset:020>.log         frames back to back (see `frame`)
//! <partition dir>/<base offset:020>.index       sparse offset index (see `index`)
//! <partition dir>/<base offset:020>.timeindex   time index (see `index`)
//! ```
//!
//! # Invariants
//!
//! - The file name is the segment's base offset: every record in it has an offset at or
//!   above it and below the next segment's base offset.
//! - Batches in a segment have increasing offsets: each batch's base offset is above the
//!   previous batch's last offset. Appended batches are dense; compacted ones may skip.
//! - Readers read only the first `visible_len` bytes of a segment, which always ends at a
//!   frame boundary and covers only batches that the fsync policy allows them to see.
//! - Every read re-verifies the checksum of each frame it decodes.

use std::{
    io,
    ops::ControlFlow,
    path::{Path, PathBuf},
    sync::{
        PoisonError, RwLock,
        atomic::{AtomicU64, Ordering},
    },
};

use bytes::Bytes;

use crate::{
    StoredRecord,
    frame::{self, DecodedRecord, FrameError, FrameHeader, FrameTag},
    fsutil,
    index::SegmentIndex,
    io::{Access, Io, IoFile},
    journal::IntentCommit,
};

/// How much of a segment one positional read fetches.
const READ_CHUNK: usize = 512 << 10;

pub(crate) fn log_file_name(base_offset: u64) -> String {
    format!("{base_offset:020}.log")
}

pub(crate) fn index_file_name(base_offset: u64) -> String {
    format!("{base_offset:020}.index")
}

pub(crate) fn time_index_file_name(base_offset: u64) -> String {
    format!("{base_offset:020}.timeindex")
}

/// The base offset named by a segment file name such as `00000000000000000042.log`.
pub(crate) fn parse_log_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".log")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

pub(crate) struct Segment {
    pub(crate) base_offset: u64,
    pub(crate) path: PathBuf,
    /// Shared by all readers; positional reads need no seek and no lock.
    file: Box<dyn IoFile>,
    visible_len: AtomicU64,
    index: RwLock<SegmentIndex>,
}

/// Where a frame walk stopped early.
#[derive(Debug)]
pub(crate) enum WalkError {
    Io(io::Error),
    Frame { position: u64, error: FrameError },
}

impl From<io::Error> for WalkError {
    fn from(e: io::Error) -> Self {
        WalkError::Io(e)
    }
}

impl Segment {
    /// A segment whose first `index.log_len` bytes are whole, checked batches.
    pub(crate) fn new(
        io: &dyn Io,
        base_offset: u64,
        path: PathBuf,
        index: SegmentIndex,
    ) -> io::Result<Segment> {
        let file = io.open(&path, Access::Read)?;
        Ok(Segment {
            base_offset,
            path,
            file,
            visible_len: AtomicU64::new(index.log_len),
            index: RwLock::new(index),
        })
    }

    pub(crate) fn visible_len(&self) -> u64 {
        self.visible_len.load(Ordering::Acquire)
    }

    pub(crate) fn index(&self) -> SegmentIndex {
        self.index
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn next_offset(&self) -> u64 {
        self.index
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .next_offset
    }

    pub(crate) fn max_timestamp_ms(&self) -> i64 {
        self.index
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .max_timestamp_ms
    }

    /// Makes batches the writer has written (and fsynced, if the policy says so) visible
    /// to readers: each is `(position, base offset, last offset, max timestamp, length)`.
    pub(crate) fn publish_batches(
        &self,
        batches: impl IntoIterator<Item = (u64, u64, u64, i64, u64)>,
    ) {
        let mut index = self.index.write().unwrap_or_else(PoisonError::into_inner);
        for (position, base_offset, last_offset, max_timestamp_ms, frame_len) in batches {
            index.add_batch(
                position,
                base_offset,
                last_offset,
                max_timestamp_ms,
                frame_len,
            );
        }
        self.visible_len.store(index.log_len, Ordering::Release);
    }

    pub(crate) fn scan_start_for_time(&self, timestamp_ms: i64) -> u64 {
        self.index
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .scan_start_for_time(timestamp_ms)
    }

    /// Visits the visible records with offsets at or above `from_offset`, in order, until
    /// `visit` breaks.
    pub(crate) fn visit_records(
        &self,
        from_offset: u64,
        mut visit: impl FnMut(DecodedRecord) -> ControlFlow<()>,
    ) -> Result<(), WalkError> {
        let end = self.visible_len();
        let start = self
            .index
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .position_for(from_offset)
            .min(end);
        let mut flow = ControlFlow::Continue(());
        walk_frames(&*self.file, start, end, |_, header, body| {
            frame::decode_body(header, body, |record| {
                if flow.is_continue() && record.offset >= from_offset {
                    flow = visit(record);
                }
            })?;
            Ok(flow)
        })
    }

    /// Whether a visible batch that ends at or after `from_offset` is tagged `tag`.
    pub(crate) fn contains_tag(&self, from_offset: u64, tag: FrameTag) -> Result<bool, WalkError> {
        let end = self.visible_len();
        let start = self
            .index
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .position_for(from_offset)
            .min(end);
        let mut found = false;
        walk_frames(&*self.file, start, end, |_, header, body| {
            // The walk starts at the indexed batch before `from_offset`: an older batch
            // there with the same tag is not the one asked about.
            let batch = frame::decode_body(header, body, |_| {})?;
            found = batch.last_offset >= from_offset && batch.tag == Some(tag);
            Ok(if found {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            })
        })?;
        Ok(found)
    }

    /// Appends up to `max` records from `from_offset` on to `out`.
    pub(crate) fn read_into(
        &self,
        partition: u32,
        from_offset: u64,
        max: usize,
        out: &mut Vec<StoredRecord>,
    ) -> Result<(), WalkError> {
        if out.len() >= max {
            return Ok(());
        }
        self.visit_records(from_offset, |r| {
            out.push(StoredRecord {
                partition,
                offset: r.offset,
                timestamp_ms: r.timestamp_ms,
                key: r.key,
                value: r.value,
            });
            if out.len() >= max {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
    }
}

/// Reads frames of `file` from `start` (a frame boundary) up to `end` in large chunks and
/// hands each to `visit` with its position, until `visit` breaks or fails.
pub(crate) fn walk_frames(
    file: &dyn IoFile,
    start: u64,
    end: u64,
    mut visit: impl FnMut(u64, &FrameHeader, &Bytes) -> Result<ControlFlow<()>, FrameError>,
) -> Result<(), WalkError> {
    let mut position = start;
    let mut need = 0usize;
    while position < end {
        let want = (end - position).min(READ_CHUNK.max(need) as u64) as usize;
        let mut buf = vec![0; want];
        file.read_exact_at(&mut buf, position)?;
        let buf = Bytes::from(buf);
        let mut at = 0usize;
        need = 0;
        while at < buf.len() {
            let frame_position = position + at as u64;
            let rest = &buf[at..];
            let header = match frame::decode_header(rest) {
                Ok(header) => header,
                Err(FrameError::Short) if frame_position + (frame::HEADER_LEN as u64) <= end => {
                    need = frame::HEADER_LEN;
                    break;
                }
                Err(error) => {
                    return Err(WalkError::Frame {
                        position: frame_position,
                        error,
                    });
                }
            };
            let frame_len = header.frame_len();
            if frame_position + frame_len > end {
                return Err(WalkError::Frame {
                    position: frame_position,
                    error: FrameError::Short,
                });
            }
            if (rest.len() as u64) < frame_len {
                need = frame_len as usize;
                break;
            }
            let body = buf.slice(at + frame::HEADER_LEN..at + frame_len as usize);
            let flow = visit(frame_position, &header, &body).map_err(|error| WalkError::Frame {
                position: frame_position,
                error,
            })?;
            at += frame_len as usize;
            if flow.is_break() {
                return Ok(());
            }
        }
        position += at as u64;
    }
    Ok(())
}

/// What a scan of a segment file found.
#[derive(Debug)]
pub(crate) struct Scan {
    /// Index of the whole, valid batches from the start; `log_len` is their length.
    pub(crate) index: SegmentIndex,
    pub(crate) file_len: u64,
    /// Why the scan stopped before the end of the file, if it did.
    pub(crate) stopped_by: Option<FrameError>,
    /// The group commits the valid version 4 frames carry, with their sequences, in order.
    pub(crate) commits: Vec<(u64, IntentCommit)>,
}

/// Reads every frame of a segment, checking each, until the end or the first bad frame.
/// A batch must start above the previous one's last offset and, if `limit` is given,
/// end below it (the next segment's base offset). IO errors are returned, never taken
/// for corruption, so a failing read cannot cost data.
pub(crate) fn scan(file: &dyn IoFile, base_offset: u64, limit: Option<u64>) -> io::Result<Scan> {
    let file_len = file.size()?;
    let mut index = SegmentIndex::new(base_offset);
    let mut commits = Vec::new();
    let walked = walk_frames(file, 0, file_len, |position, header, body| {
        let info = frame::decode_body(header, body, |_| {})?;
        let commit = if info.has_commit {
            frame::verified_commit(header, body)?
        } else {
            None
        };
        if info.base_offset < index.next_offset {
            return Err(FrameError::NonContiguous {
                expected: index.next_offset,
                found: info.base_offset,
            });
        }
        if limit.is_some_and(|limit| info.last_offset >= limit) {
            return Err(FrameError::Malformed("offsets reach into the next segment"));
        }
        index.add_batch(
            position,
            info.base_offset,
            info.last_offset,
            info.max_timestamp_ms,
            header.frame_len(),
        );
        // A version 4 frame always has its tag.
        if let (Some(commit), Some(tag)) = (commit, info.tag) {
            commits.push((tag.sequence, commit));
        }
        Ok(ControlFlow::Continue(()))
    });
    let stopped_by = match walked {
        Ok(()) => None,
        Err(WalkError::Io(e)) => return Err(e),
        Err(WalkError::Frame { error, .. }) => Some(error),
    };
    Ok(Scan {
        index,
        file_len,
        stopped_by,
        commits,
    })
}

/// Writes both index files of a closed segment durably.
pub(crate) fn write_index_files(io: &dyn Io, dir: &Path, index: &SegmentIndex) -> io::Result<()> {
    fsutil::write_atomically(
        io,
        &dir.join(index_file_name(index.base_offset)),
        &index.encode_index(),
    )?;
    fsutil::write_atomically(
        io,
        &dir.join(time_index_file_name(index.base_offset)),
        &index.encode_time_index(),
    )
}

/// Loads the index files of a closed segment whose log has `log_len` bytes; `None` if
/// they are missing, stale or damaged, in which case the caller rebuilds them by scanning.
pub(crate) fn load_index_files(
    io: &dyn Io,
    dir: &Path,
    base_offset: u64,
    log_len: u64,
) -> Option<SegmentIndex> {
    let index = io.read(&dir.join(index_file_name(base_offset))).ok()?;
    let time_index = io.read(&dir.join(time_index_file_name(base_offset))).ok()?;
    SegmentIndex::decode(base_offset, &index, &time_index, log_len).ok()
}

/// Removes a segment's files; a missing file is not an error.
pub(crate) fn remove_files(io: &dyn Io, dir: &Path, base_offset: u64) -> io::Result<()> {
    for name in [
        log_file_name(base_offset),
        index_file_name(base_offset),
        time_index_file_name(base_offset),
    ] {
        match io.remove_file(&dir.join(name)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
