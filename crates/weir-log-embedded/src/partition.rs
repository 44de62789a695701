//! One partition: a directory of segments, the writer thread that group-commits appends to
//! the active one, recovery on open, and retention and compaction of closed segments.
//!
//! # On disk
//!
//! ```text
//! topics/<topic>/<partition>/<base offset:020>.log        see `segment` and `frame`
//! topics/<topic>/<partition>/<base offset:020>.index      see `index`
//! topics/<topic>/<partition>/<base offset:020>.timeindex  see `index`
//! topics/<topic>/<partition>/recovery-point.json          {"version":1,"offset":N}
//! ```
//!
//! The segment with the highest base offset is the *active* one; all appends go to its
//! end. The others are *closed*: never written again except whole by compaction.
//!
//! # Invariants
//!
//! - One writer thread per partition owns the active segment. Appends are queued to it;
//!   it takes everything queued, encodes one frame per append call into one buffer,
//!   writes it with one positional write per segment, and then, under
//!   [`FsyncPolicy::Always`], does one `fdatasync` for the whole group before it makes the
//!   group visible to readers (the segment's visible length and the partition's end
//!   offset) and acknowledges it. Readers therefore never see a record that a crash could
//!   take back. Under `Interval` and `Never` a group is visible and acknowledged once
//!   written; `Interval { ms }` fsyncs at most `ms` after the first unsynced write, `Never`
//!   leaves it to the OS. Closing the log fsyncs whatever is unsynced.
//! - The writer zero-fills the active segment ahead of its writes (as much again as it
//!   holds, 64 KiB to 1 MiB at a time, up to `segment_bytes`), so the file may be
//!   longer than its frames, with zeros after them. Those zeros are the first bad magic
//!   byte that open's scan stops at, as at a torn tail, and open cuts them off quietly
//!   (a tail with anything but zeros is reported). A roll cuts the closed segment back to
//!   its frames before its fsync, and a clean close does the same to the active one, so
//!   closed segments and a cleanly closed log look as an older weir wrote them: the
//!   on-disk format is unchanged, and an older weir reads the zeros a crash leaves as a
//!   torn tail. A failed allocation only means the segment grows as it is written.
//! - The active segment rolls before a batch would take it past `segment_bytes` (a batch
//!   larger than that gets a segment of its own). A roll fsyncs the segment whatever the
//!   policy, checkpoints the consumer groups (see below), writes and fsyncs its index
//!   files, creates the next segment (named after the next offset) and fsyncs the
//!   directory, records the new base offset in `recovery-point.json`, and only then
//!   writes to the next segment. If a step after the fsync fails, the next segment's file
//!   is removed again, durably (the directory fsynced), and the active segment stays
//!   active: later batches that still fit go to it at offsets from the removed file's
//!   name on, and that file, back after a power cut, would be taken for the next segment
//!   and cut them off. For lack of space (`ENOSPC`)
//!   the appends waiting for the roll fail with [`Error::DiskFull`] and the partition
//!   keeps working, any other failure poisons it.
//! - `recovery-point.json` holds the base offset of the active segment as of the last
//!   roll, recovery or clean close: every segment below it is fsynced, intact and has
//!   index files. On open those segments are trusted if their index files check out
//!   against the `.log` length (else they are rebuilt by a scan); the active segment and
//!   any closed segment at or after the recovery point (left by a crash mid-roll) are
//!   scanned frame by frame, and fdatasynced: after a process crash what the scan
//!   accepts may be only in the page cache, and readers must not see it before it is
//!   durable.
//! - A scan stops at the first frame that is cut short, has a bad magic byte, a bad
//!   checksum, a malformed body, an offset at or below the previous batch's, or an offset
//!   reaching into the next segment; the segment is truncated there. That frame was never
//!   acknowledged (a torn write), or the disk damaged it. Frames before it and later
//!   segments are kept, so a damaged closed segment leaves an offset gap, never a lost
//!   fsynced batch elsewhere.
//! - A failed write or fsync poisons the partition: it refuses writes until the process
//!   restarts, because after a failed fsync the kernel may have dropped the dirty pages
//!   and a retry could report success for data that is not on disk. The one exception is
//!   a write that fails for lack of space (`ENOSPC`): the segment is cut back to its
//!   length before the group, the group fails with [`Error::DiskFull`] and nothing is
//!   acknowledged; only if that truncation fails is the partition poisoned.
//! - Offsets increase strictly and appends assign them densely. Compaction removes
//!   records but keeps the offsets of those it keeps, so reads may skip offsets; the
//!   partition's start offset is the base offset of its first segment.
//! - No record gets an offset above `u64::MAX - 1` (`frame::LAST_OFFSET`), so the end
//!   offset always fits in a `u64`: the writer computes each batch's offsets with checked
//!   arithmetic and refuses a batch that would go further with
//!   [`Error::OffsetsExhausted`] (nothing written, the partition not poisoned), and a scan
//!   cuts off a frame that holds such an offset like any other corrupt frame.
//! - A transaction's batch (a tagged frame, see `frame` and `journal`) is fsynced before it
//!   is acknowledged and made visible, whatever the fsync policy: the journal forgets a
//!   transaction once it is done, so its batches must not be lost after that.
//! - A frame that carries a group commit (version 4, a one-partition transaction, see
//!   `transaction`) has its commit applied to the groups right after its fsync, before it
//!   is visible or acknowledged, and never if its write or fsync failed. A commit that only
//!   such a frame holds is always in a segment open scans (the active one, or one from the
//!   recovery point on), and open applies the commits of every frame it scans: the groups
//!   are checkpointed before a segment is closed (at a roll, before anything else can
//!   delete or compact it) and before open moves the recovery point.
//! - Retention deletes whole closed segments from the oldest on, never the active one,
//!   and fsyncs the directory after each, so a crash leaves a suffix of the partition
//!   even on a file system that does not keep directory operations in order.
//!   Compaction rewrites a closed segment into `<name>.log.compacting`, fsyncs it, renames
//!   it over the segment, fsyncs the directory and then rewrites the index files.
//!   Leftover `.compacting` and `.tmp` files are deleted on open.
//! - Neither touches a segment holding offsets at or above the lowest end offset pinned
//!   by an unfinished transaction (`pin_end`, `retention_limit`): recovery finds such a
//!   transaction's batches by their tags, which deleting or compacting (which drops tags)
//!   the segment would hide.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    io,
    ops::ControlFlow,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, PoisonError, RwLock, Weak,
        atomic::{AtomicU64, Ordering},
        mpsc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, watch};

use crate::{
    Error, FsyncPolicy, Record, Result, RetentionReport, StoredRecord,
    error::IoContext,
    frame::{self, DecodedRecord, FrameError, FrameTag, RecordRef, Stamp},
    fsutil,
    groups::{Groups, validate_group_name},
    index::SegmentIndex,
    io::{Access, Io, IoFile},
    journal::IntentCommit,
    segment::{self, Segment, WalkError},
    telemetry,
    wal::{SegmentSync, Wal},
};

const RECOVERY_POINT_FILE: &str = "recovery-point.json";
const RECOVERY_POINT_VERSION: u32 = 1;
/// Most bytes one group takes from the queue, so one slow group cannot grow without bound.
const MAX_GROUP_BYTES: usize = 16 << 20;
/// Largest group made durable through the write-ahead file; a larger one fsyncs its
/// segment, which makes everything before it durable too. Group commit across partitions
/// pays off for the many small groups of moderate load; a large group (a backlog being
/// drained) amortises its own fsync, and writing it twice costs more than it saves.
const MAX_WAL_GROUP_BYTES: usize = 32 << 10;
/// Largest batch compaction writes.
const COMPACTED_BATCH_BYTES: usize = 1 << 20;
/// How far ahead of its writes the active segment is zero-filled (up to `segment_bytes`),
/// so that a group's `fdatasync` writes its data and not also the file's new size and
/// blocks (docs/benchmarks.md, tenth session: a fifth fewer context switches per event at
/// a moderate rate): as much as the segment holds already, at least the first and at most
/// the second. Small steps: each is written to disk by the next group's fdatasync, which
/// takes that much longer, and a log of many quiet partitions keeps little unused.
pub(crate) const ALLOCATE_AHEAD: (u64, u64) = (64 << 10, 1 << 20);

/// Whether to make a missing partition directory or to insist on finding one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpenMode {
    Create,
    Recover,
}

/// What the writer needs from the topic's configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Settings {
    pub(crate) fsync: FsyncPolicy,
    pub(crate) segment_bytes: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct RecoveryPoint {
    version: u32,
    offset: u64,
}

pub(crate) struct Partition {
    shared: Arc<Shared>,
    writer: Mutex<Option<WriterHandle>>,
}

struct WriterHandle {
    queue: mpsc::Sender<AppendRequest>,
    thread: JoinHandle<()>,
}

struct AppendRequest {
    records: Vec<Record>,
    now_ms: i64,
    /// Set for a transaction's batch: written as a tagged frame and fsynced before it is
    /// acknowledged, whatever the fsync policy.
    tag: Option<FrameTag>,
    /// Set (with `tag`) for a transaction's only batch: its group commit, written in the
    /// frame (version 4) and applied to the groups once the frame is durable.
    commit: Option<IntentCommit>,
    /// Written only if the partition's end offset is this when the writer comes to it;
    /// refused with [`Error::Conflict`] otherwise.
    expect_end: Option<u64>,
    reply: oneshot::Sender<Result<u64>>,
    /// When it was queued: its acknowledgement records the append's latency.
    queued: Instant,
}

impl AppendRequest {
    fn stamp(&self) -> Option<Stamp<'_>> {
        self.tag.map(|tag| Stamp {
            tag,
            commit: self.commit.as_ref(),
        })
    }
}

/// A batch written to the active segment but maybe not yet visible.
struct WrittenBatch {
    position: u64,
    base_offset: u64,
    last_offset: u64,
    max_timestamp_ms: i64,
    frame_len: u64,
}

pub(crate) struct Shared {
    io: Arc<dyn Io>,
    topic: String,
    id: u32,
    dir: PathBuf,
    /// Every segment by base offset; the last is the active one.
    segments: RwLock<BTreeMap<u64, Arc<Segment>>>,
    state: Mutex<WriterState>,
    settings: RwLock<Settings>,
    /// `LogOptions::commit_delay` in microseconds.
    commit_delay_us: AtomicU64,
    /// Groups whose first append waited for the commit delay.
    delayed_groups: AtomicU64,
    fsyncs: AtomicU64,
    /// The end offset readers may see, for tail followers.
    end: watch::Sender<u64>,
    /// Serialises retention and compaction of this partition.
    maintenance: Mutex<()>,
    /// End offsets recorded by unfinished transactions (with a count each): retention and
    /// compaction leave every segment at or after the lowest alone, so the tag recovery
    /// looks for is never rewritten or deleted under a transaction.
    transaction_pins: Mutex<BTreeMap<u64, usize>>,
    /// `weir_log_append_duration_seconds` and `weir_log_fsync_duration_seconds`.
    metrics: telemetry::PartitionMetrics,
    /// The log's consumer groups: a version 4 frame's commit is applied to them once the
    /// frame is durable, and they are checkpointed before the recovery point moves past
    /// a segment, so the commits of segments open does not scan are in the group files.
    groups: Arc<Groups>,
    /// The log's write-ahead file, through which groups become durable under `Always`
    /// (see `wal`), with this partition as its checkpoints see it.
    wal: Option<(Arc<Wal>, Weak<dyn SegmentSync>)>,
}

pub(crate) struct WriterState {
    /// The active segment, opened for writing.
    file: Box<dyn IoFile>,
    active: Arc<Segment>,
    /// Bytes of whole frames written to the active segment.
    len: u64,
    /// The active segment's length on disk as far as the writer knows: `len`, or more
    /// once it is zero-filled ahead. What lies between `len` and it is zeros.
    allocated: u64,
    /// Zero-filling ahead failed (no room, or a write failed): not tried again until the
    /// next segment.
    allocation_failed: bool,
    next_offset: u64,
    poisoned: bool,
    /// Written but not yet fsynced.
    dirty: bool,
    /// Some of what is written but not fsynced is not in the write-ahead file: the next
    /// group that must be durable fsyncs the segment itself.
    uncovered: bool,
    /// A roll failed for lack of space, maybe leaving the next segment's file (empty) or
    /// the recovery point past the active segment after a power cut: the write-ahead
    /// file's replay skips the entries of a segment with a later one, so until a roll
    /// succeeds the active segment fsyncs its own groups.
    own_fsyncs: bool,
    last_sync: Instant,
    /// Makes the next write fail with this error, to test failure paths.
    #[cfg(test)]
    fail_next_write: Option<io::ErrorKind>,
    /// Makes the next roll fail with this error once it has created the next segment's
    /// file, to test failure paths.
    #[cfg(test)]
    fail_next_roll: Option<io::ErrorKind>,
}

/// Why a roll failed.
enum RollError {
    /// The active segment's fsync failed: what it holds may not be durable.
    Sync(io::Error),
    /// Starting the next segment failed; the active segment stays active and nothing of
    /// the next one is left.
    Start(io::Error),
}

impl Partition {
    /// Opens the partition stored in `dir`, recovering its segments and applying the group
    /// commits their version 4 frames carry to `groups`.
    // The log's shared parts (groups, write-ahead file) are two of them.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn open(
        io: &Arc<dyn Io>,
        topic: &str,
        id: u32,
        dir: &Path,
        mode: OpenMode,
        settings: Settings,
        groups: &Arc<Groups>,
        wal: Option<&Arc<Wal>>,
    ) -> Result<Partition> {
        let what = || format!("partition {id} of topic \"{topic}\" ({})", dir.display());
        if mode == OpenMode::Create {
            fsutil::create_dir(&**io, dir)
                .context(|| format!("could not create {}", dir.display()))?;
        }
        let mut bases =
            list_segments(&**io, dir).context(|| format!("could not list {}", what()))?;
        if bases.is_empty() {
            let path = dir.join(segment::log_file_name(0));
            let access = match mode {
                OpenMode::Create => Access::Create,
                OpenMode::Recover => Access::Write,
            };
            io.open(&path, access)
                .and_then(|_| io.sync_dir(dir))
                .context(|| format!("could not open {}", what()))?;
            bases.push(0);
        } else if mode == OpenMode::Create {
            // Left by a creation a crash interrupted: their entries may not be durable yet.
            io.sync_dir(dir)
                .context(|| format!("could not fsync {}", dir.display()))?;
        }
        let recovery_point = read_recovery_point(&**io, dir);

        let mut segments = BTreeMap::new();
        let mut active = None;
        let mut batches = 0usize;
        for (i, &base) in bases.iter().enumerate() {
            let next_base = bases.get(i + 1).copied();
            let path = dir.join(segment::log_file_name(base));
            let seg_what = || format!("segment {} of {}", path.display(), what());
            let file = io
                .open(&path, Access::ReadWrite)
                .context(|| format!("could not open {}", seg_what()))?;
            let log_len = file
                .size()
                .context(|| format!("could not stat {}", seg_what()))?;
            let trusted = match next_base {
                Some(next) if next <= recovery_point => {
                    segment::load_index_files(&**io, dir, base, log_len)
                }
                _ => None,
            };
            let index = match trusted {
                Some(index) => index,
                None => {
                    let scan = segment::scan(&*file, base, next_base)
                        .context(|| format!("could not read {}", seg_what()))?;
                    if let Some(reason) = &scan.stopped_by {
                        if scan.index.log_len == 0
                            && *reason == FrameError::BadMagic(frame::MAGIC_V1)
                            && is_whole_v1_frame(&*file)
                        {
                            return Err(Error::Corrupt {
                                what: seg_what(),
                                reason: "it was written by weir-log format version 1, which this version does not read".into(),
                            });
                        }
                        // Zeros only, in a segment that was active at the last roll or
                        // clean close: what the writer zero-filled ahead and never wrote.
                        // A segment closed before that ends with its last frame.
                        let allocated_ahead = (next_base.is_none() || base >= recovery_point)
                            && is_zeros(&*file, scan.index.log_len, scan.file_len);
                        if !allocated_ahead {
                            telemetry::TailTruncated {
                                topic,
                                partition: id,
                                offset: scan.index.next_offset,
                                position: scan.index.log_len,
                                bytes_dropped: scan.file_len - scan.index.log_len,
                                reason,
                            }
                            .emit();
                        }
                        file.set_len(scan.index.log_len)
                            .and_then(|()| file.sync_all())
                            .context(|| format!("could not truncate the tail of {}", seg_what()))?;
                    } else {
                        // A process that crashed before its fsync left these frames in the
                        // page cache only: they become durable before anyone reads them, or
                        // a power cut could take back records readers saw and give their
                        // offsets to others.
                        file.sync_data()
                            .context(|| format!("could not fsync {}", seg_what()))?;
                    }
                    for (sequence, commit) in &scan.commits {
                        // Written only with a valid name; the name becomes a file name.
                        if validate_group_name(&commit.group).is_err() {
                            telemetry::EntryIgnored {
                                path: &path,
                                reason: "a frame's group commit names no valid consumer group",
                            }
                            .emit();
                            continue;
                        }
                        groups.apply(commit, *sequence);
                    }
                    if next_base.is_some() {
                        segment::write_index_files(&**io, dir, &scan.index)
                            .context(|| format!("could not write the indexes of {}", seg_what()))?;
                    }
                    scan.index
                }
            };
            batches += index.offsets.len();
            let segment = Arc::new(
                Segment::new(&**io, base, path.clone(), index)
                    .context(|| format!("could not open {}", seg_what()))?,
            );
            segments.insert(base, Arc::clone(&segment));
            if next_base.is_none() {
                active = Some((file, segment));
            }
        }
        let Some((file, active)) = active else {
            return Err(Error::Corrupt {
                what: what(),
                reason: "no segment".into(),
            });
        };
        if recovery_point != active.base_offset {
            // The segments the recovery point leaves behind are not scanned again: their
            // commits must be in the group files first.
            groups.checkpoint()?;
            write_recovery_point(&**io, dir, active.base_offset)
                .context(|| format!("could not write the recovery point of {}", what()))?;
        }
        let len = active.visible_len();
        let next_offset = active.next_offset();
        telemetry::PartitionRecovered {
            topic,
            partition: id,
            end_offset: next_offset,
            segments: segments.len(),
            indexed_batches: batches,
        }
        .emit();

        Ok(Partition {
            shared: Arc::new_cyclic(|me: &Weak<Shared>| Shared {
                io: Arc::clone(io),
                topic: topic.to_owned(),
                id,
                dir: dir.to_owned(),
                segments: RwLock::new(segments),
                state: Mutex::new(WriterState {
                    file,
                    active,
                    len,
                    allocated: len,
                    allocation_failed: false,
                    next_offset,
                    poisoned: false,
                    dirty: false,
                    uncovered: false,
                    own_fsyncs: false,
                    last_sync: Instant::now(),
                    #[cfg(test)]
                    fail_next_write: None,
                    #[cfg(test)]
                    fail_next_roll: None,
                }),
                settings: RwLock::new(settings),
                commit_delay_us: AtomicU64::new(0),
                delayed_groups: AtomicU64::new(0),
                fsyncs: AtomicU64::new(0),
                end: watch::Sender::new(next_offset),
                maintenance: Mutex::new(()),
                transaction_pins: Mutex::new(BTreeMap::new()),
                metrics: telemetry::PartitionMetrics::new(topic),
                groups: Arc::clone(groups),
                wal: wal.map(|wal| {
                    let me: Weak<dyn SegmentSync> = me.clone();
                    (Arc::clone(wal), me)
                }),
            }),
            writer: Mutex::new(None),
        })
    }

    /// The next offset to be assigned, as far as readers can see.
    pub(crate) fn end_offset(&self) -> u64 {
        *self.shared.end.borrow()
    }

    /// The first offset still stored (records below it were deleted by retention).
    pub(crate) fn start_offset(&self) -> u64 {
        self.shared.start_offset()
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.shared.end.subscribe()
    }

    pub(crate) fn fsync_count(&self) -> u64 {
        self.shared.fsyncs.load(Ordering::Relaxed)
    }

    pub(crate) fn set_settings(&self, settings: Settings) {
        *self
            .shared
            .settings
            .write()
            .unwrap_or_else(PoisonError::into_inner) = settings;
    }

    /// Sets how long the writer waits to gather a small group (see
    /// `LogOptions::commit_delay`, which the topic caps at `MAX_COMMIT_DELAY` before it
    /// comes here), for the groups it starts from now on.
    pub(crate) fn set_commit_delay(&self, delay: Duration) {
        let us = u64::try_from(delay.as_micros()).unwrap_or(u64::MAX);
        self.shared.commit_delay_us.store(us, Ordering::Relaxed);
    }

    #[cfg(test)]
    pub(crate) fn commit_delay(&self) -> Duration {
        Duration::from_micros(self.shared.commit_delay_us.load(Ordering::Relaxed))
    }

    /// Groups whose writer waited for the commit delay before writing them.
    #[cfg(test)]
    pub(crate) fn delayed_groups(&self) -> u64 {
        self.shared.delayed_groups.load(Ordering::Relaxed)
    }

    /// Queues `records` (non-empty, within the limits) as one batch; the receiver gets the
    /// batch's base offset once the fsync policy allows acknowledging it. A batch with a
    /// `tag` is a transaction's: it is written as a tagged frame and acknowledged only once
    /// fsynced, whatever the policy. A `commit` (given only with a `tag`) is written in the
    /// frame and applied to the groups once it is durable, before the acknowledgement.
    pub(crate) fn enqueue(
        &self,
        records: Vec<Record>,
        now_ms: i64,
        tag: Option<FrameTag>,
        commit: Option<IntentCommit>,
    ) -> Result<oneshot::Receiver<Result<u64>>> {
        self.enqueue_expecting(records, now_ms, tag, commit, None)
    }

    /// [`Partition::enqueue`], written only if the partition's end offset is `expect_end`
    /// when the writer comes to it (checked on the writer thread, so no other append can
    /// come between the check and the write).
    pub(crate) fn enqueue_expecting(
        &self,
        records: Vec<Record>,
        now_ms: i64,
        tag: Option<FrameTag>,
        commit: Option<IntentCommit>,
        expect_end: Option<u64>,
    ) -> Result<oneshot::Receiver<Result<u64>>> {
        debug_assert!(commit.is_none() || tag.is_some());
        let (reply, receiver) = oneshot::channel();
        let mut writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        if writer.is_none() {
            let (queue, requests) = mpsc::channel();
            let shared = Arc::clone(&self.shared);
            let thread = std::thread::Builder::new()
                .name(format!("weir-log-{}-{}", self.shared.topic, self.shared.id))
                .stack_size(256 << 10)
                .spawn(move || shared.run_writer(&requests))
                .context(|| {
                    format!(
                        "could not start the writer of partition {} of topic \"{}\"",
                        self.shared.id, self.shared.topic
                    )
                })?;
            *writer = Some(WriterHandle { queue, thread });
        }
        let request = AppendRequest {
            records,
            now_ms,
            tag,
            commit,
            expect_end,
            reply,
            queued: Instant::now(),
        };
        if let Some(handle) = writer.as_ref()
            && handle.queue.send(request).is_ok()
        {
            return Ok(receiver);
        }
        Err(self.shared.poisoned())
    }

    /// Appends `records` as one batch and returns its base offset once acknowledged.
    #[cfg(test)]
    pub(crate) async fn append(&self, records: Vec<Record>, now_ms: i64) -> Result<u64> {
        let receiver = self.enqueue(records, now_ms, None, None)?;
        receiver.await.map_err(|_| self.shared.poisoned())?
    }

    /// Up to `max_records` records with offsets at or above `from_offset` (or the start
    /// offset, if later); empty at or past the end. Offsets may skip after compaction.
    pub(crate) fn read(&self, from_offset: u64, max_records: usize) -> Result<Vec<StoredRecord>> {
        let end = self.end_offset();
        if max_records == 0 || from_offset >= end {
            return Ok(Vec::new());
        }
        let mut records =
            Vec::with_capacity(max_records.min((end - from_offset) as usize).min(1 << 16));
        let mut next = self.shared.segment_for(from_offset);
        while let Some(segment) = next {
            segment
                .read_into(self.shared.id, from_offset, max_records, &mut records)
                .map_err(|e| self.shared.walk_error(&segment, e))?;
            if records.len() >= max_records {
                break;
            }
            next = self.shared.segment_after(segment.base_offset);
        }
        Ok(records)
    }

    /// The first offset whose record has a timestamp at or after `timestamp_ms`, or the
    /// end offset if there is none.
    pub(crate) fn offset_for_time(&self, timestamp_ms: i64) -> Result<u64> {
        let end = self.end_offset();
        let mut next = self.shared.segment_for(0);
        while let Some(segment) = next {
            if segment.max_timestamp_ms() >= timestamp_ms {
                let start = segment.scan_start_for_time(timestamp_ms);
                let mut found = None;
                segment
                    .visit_records(start, |r| {
                        if r.timestamp_ms >= timestamp_ms && r.offset < end {
                            found = Some(r.offset);
                            ControlFlow::Break(())
                        } else {
                            ControlFlow::Continue(())
                        }
                    })
                    .map_err(|e| self.shared.walk_error(&segment, e))?;
                if let Some(offset) = found {
                    return Ok(offset);
                }
            }
            next = self.shared.segment_after(segment.base_offset);
        }
        Ok(end)
    }

    /// Deletes closed segments past the retention limits and compacts closed segments if
    /// `compaction` is set; touches only segments whose records all lie below `limit`
    /// (from [`Partition::retention_limit`]).
    pub(crate) fn enforce_retention(
        &self,
        retention_ms: Option<u64>,
        retention_bytes: Option<u64>,
        compaction: bool,
        now_ms: i64,
        limit: u64,
        report: &mut RetentionReport,
    ) -> Result<()> {
        self.shared
            .delete_old_segments(retention_ms, retention_bytes, now_ms, limit, report)?;
        if compaction {
            self.shared.compact(limit, report)?;
        }
        Ok(())
    }

    /// Records that a transaction may write a batch at or after the current end offset,
    /// and returns that offset; see [`Partition::retention_limit`]. Undone by
    /// [`Partition::unpin`] with the returned offset.
    pub(crate) fn pin_end(&self) -> u64 {
        let mut pins = self
            .shared
            .transaction_pins
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let end = self.end_offset();
        *pins.entry(end).or_default() += 1;
        end
    }

    /// Records that a transaction may write a batch at or after `offset` (at recovery,
    /// where the offset comes from the journal).
    pub(crate) fn pin(&self, offset: u64) {
        let mut pins = self
            .shared
            .transaction_pins
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *pins.entry(offset).or_default() += 1;
    }

    pub(crate) fn unpin(&self, offset: u64) {
        let mut pins = self
            .shared
            .transaction_pins
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = pins.get_mut(&offset) {
            *count -= 1;
            if *count == 0 {
                pins.remove(&offset);
            }
        }
    }

    /// The offset below which retention and compaction may work right now: the end offset,
    /// or the lowest offset pinned by an unfinished transaction. Read under the pins' lock,
    /// so a transaction that pins later pins at or above it.
    pub(crate) fn retention_limit(&self) -> u64 {
        let pins = self
            .shared
            .transaction_pins
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let end = self.end_offset();
        pins.keys().next().map_or(end, |&lowest| lowest.min(end))
    }

    /// Whether a batch tagged `tag` is stored at or after `from_offset` (from the start
    /// offset if that is later). Checks every frame's checksum on the way.
    pub(crate) fn contains_tag(&self, from_offset: u64, tag: FrameTag) -> Result<bool> {
        let mut next = self.shared.segment_for(from_offset);
        while let Some(segment) = next {
            if segment
                .contains_tag(from_offset, tag)
                .map_err(|e| self.shared.walk_error(&segment, e))?
            {
                return Ok(true);
            }
            next = self.shared.segment_after(segment.base_offset);
        }
        Ok(false)
    }

    #[cfg(test)]
    fn lock_state(&self) -> std::sync::MutexGuard<'_, WriterState> {
        self.shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    #[cfg(test)]
    fn active_path(&self) -> PathBuf {
        self.lock_state().active.path.clone()
    }

    /// Whether `offset` lies in the active segment (or past it): the pages a read of it
    /// touches were written lately, so they are in the page cache.
    pub(crate) fn is_tail(&self, offset: u64) -> bool {
        let segments = self
            .shared
            .segments
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        segments
            .last_key_value()
            .is_none_or(|(base, _)| offset >= *base)
    }

    #[cfg(test)]
    pub(crate) fn active_base_offset(&self) -> u64 {
        self.lock_state().active.base_offset
    }

    /// Makes the writer's next write fail with `kind`.
    #[cfg(test)]
    pub(crate) fn fail_next_write(&self, kind: io::ErrorKind) {
        self.lock_state().fail_next_write = Some(kind);
    }

    /// Blocks the writer until the guard is dropped, as a slow fsync would.
    #[cfg(test)]
    pub(crate) fn hold_writer(&self) -> std::sync::MutexGuard<'_, WriterState> {
        self.lock_state()
    }

    #[cfg(test)]
    fn active_path_locked(&self, state: &WriterState) -> PathBuf {
        state.active.path.clone()
    }
}

impl Drop for Partition {
    /// Stops the writer after it has written, fsynced and acknowledged everything queued.
    fn drop(&mut self) {
        let handle = self
            .writer
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(WriterHandle { queue, thread }) = handle {
            drop(queue);
            let _ = thread.join();
        }
    }
}

impl SegmentSync for Shared {
    fn sync_segment(&self, base: u64) -> io::Result<()> {
        let file = {
            let state = self.lock_state_io()?;
            if state.poisoned {
                return Err(io::Error::other(self.poisoned().to_string()));
            }
            // A segment below the active one was fsynced by its roll.
            if state.active.base_offset != base || !state.dirty {
                return Ok(());
            }
            // A file of its own, opened under the lock: the kernel reports a failed
            // write-back once to each open file, so this fsync cannot take the report the
            // writer's own fsync needs (nor the other way round), and a failure the
            // writer was told of before poisoned the partition, checked above and below.
            self.io.open(&state.active.path, Access::Write)?
        };
        // Without the writer's lock, which an fsync of much data would hold up appends
        // for.
        let synced = file.sync_data();
        let mut state = self.lock_state_io()?;
        if state.poisoned {
            return Err(io::Error::other(self.poisoned().to_string()));
        }
        if let Err(error) = synced {
            self.poison(&mut state, &error, false);
            return Err(error);
        }
        Ok(())
    }
}

impl Shared {
    fn lock_state_io(&self) -> io::Result<std::sync::MutexGuard<'_, WriterState>> {
        self.state
            .lock()
            .map_err(|_| io::Error::other(self.poisoned().to_string()))
    }

    fn poisoned(&self) -> Error {
        Error::Poisoned {
            topic: self.topic.clone(),
            partition: self.id,
        }
    }

    fn start_offset(&self) -> u64 {
        let segments = self.segments.read().unwrap_or_else(PoisonError::into_inner);
        segments.keys().next().copied().unwrap_or(0)
    }

    /// The segment that holds `offset`, or the first one if `offset` is below the start.
    fn segment_for(&self, offset: u64) -> Option<Arc<Segment>> {
        let segments = self.segments.read().unwrap_or_else(PoisonError::into_inner);
        segments
            .range(..=offset)
            .next_back()
            .or_else(|| segments.iter().next())
            .map(|(_, s)| Arc::clone(s))
    }

    fn segment_after(&self, base_offset: u64) -> Option<Arc<Segment>> {
        let segments = self.segments.read().unwrap_or_else(PoisonError::into_inner);
        segments
            .range(base_offset.saturating_add(1)..)
            .next()
            .map(|(_, s)| Arc::clone(s))
    }

    fn snapshot(&self) -> Vec<Arc<Segment>> {
        let segments = self.segments.read().unwrap_or_else(PoisonError::into_inner);
        segments.values().cloned().collect()
    }

    fn walk_error(&self, segment: &Segment, error: WalkError) -> Error {
        let what = format!(
            "segment {} of partition {} of topic \"{}\"",
            segment.path.display(),
            self.id,
            self.topic
        );
        match error {
            WalkError::Io(source) => Error::Io {
                context: format!("could not read {what}"),
                source,
            },
            WalkError::Frame { position, error } => Error::Corrupt {
                what: format!("the batch at byte {position} of {what}"),
                reason: error.to_string(),
            },
        }
    }

    fn io_error(&self, doing: &str, source: io::Error) -> Error {
        Error::Io {
            context: format!(
                "could not {doing} partition {} of topic \"{}\" ({}); the partition refuses writes until the disk is fixed and the node restarted",
                self.id,
                self.topic,
                self.dir.display()
            ),
            source,
        }
    }

    /// The writer thread: takes groups of appends off the queue until it is closed.
    fn run_writer(&self, requests: &mpsc::Receiver<AppendRequest>) {
        // When the last group was done (written, or refused), and how many appends it took.
        let mut last_group: Option<(Instant, usize)> = None;
        loop {
            let first = match self.sync_wait() {
                Some(wait) => match requests.recv_timeout(wait) {
                    Ok(request) => request,
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        self.sync_if_due();
                        continue;
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                },
                None => match requests.recv() {
                    Ok(request) => request,
                    Err(_) => break,
                },
            };
            self.wait_for_company(&first, last_group);
            let taken = self.write_group(first, requests);
            last_group = Some((Instant::now(), taken));
        }
        self.close();
    }

    /// The commit delay (`LogOptions::commit_delay`): holds a small group's first append
    /// until `delay` after it was queued, so that appends queued meanwhile share its write
    /// and fdatasync, if the partition's last group (done at `last_group`, with the count
    /// of appends it took) took more than one append and was done less than `delay`
    /// before this one was queued. Several appenders are then writing to a busy
    /// partition, so others are likely within the wait, as PostgreSQL's `commit_delay`
    /// waits only with `commit_siblings` others active. An idle partition's lone append
    /// is not held, nor is an appender that waits for each acknowledgement before its
    /// next append (a pipeline's commits, a client publishing one event at a time): its
    /// groups are of one append, and holding them would gather nothing. Only under
    /// `Always`, where every group pays an fdatasync (under the other policies only a
    /// transaction's batches do, and those are not held). A group whose first append is
    /// 32 KiB or more has company enough.
    ///
    /// The writer sleeps rather than waits on the queue, so the appends that come
    /// meanwhile wake nobody; `write_group` takes them all.
    fn wait_for_company(&self, first: &AppendRequest, last_group: Option<(Instant, usize)>) {
        let delay = Duration::from_micros(self.commit_delay_us.load(Ordering::Relaxed));
        let busy = last_group.is_some_and(|(done, taken)| {
            taken > 1 && first.queued.saturating_duration_since(done) < delay
        });
        if !busy
            || self.settings().fsync != FsyncPolicy::Always
            || frame::frame_len(&first.records, first.stamp()) >= MAX_WAL_GROUP_BYTES
        {
            return;
        }
        let left = (first.queued + delay).saturating_duration_since(Instant::now());
        if !left.is_zero() {
            self.delayed_groups.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(left);
        }
    }

    /// How long the writer may wait for appends before an interval fsync is due.
    fn sync_wait(&self) -> Option<Duration> {
        let state = self.state.lock().ok()?;
        // What the write-ahead file holds needs no fsync of the segment until its
        // checkpoint.
        if !state.dirty || !state.uncovered || state.poisoned {
            return None;
        }
        match self.settings().fsync {
            FsyncPolicy::Interval { ms } => {
                Some(Duration::from_millis(ms).saturating_sub(state.last_sync.elapsed()))
            }
            FsyncPolicy::Always => Some(Duration::ZERO),
            FsyncPolicy::Never => None,
        }
    }

    fn settings(&self) -> Settings {
        *self.settings.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn sync_if_due(&self) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        if state.dirty
            && !state.poisoned
            && let Err(error) = self.sync(&mut state)
        {
            self.poison(&mut state, &error, false);
        }
    }

    fn sync(&self, state: &mut WriterState) -> io::Result<()> {
        let started = Instant::now();
        state.file.sync_data()?;
        self.metrics.fsync.record(started.elapsed());
        self.fsyncs.fetch_add(1, Ordering::Relaxed);
        state.dirty = false;
        state.uncovered = false;
        state.last_sync = Instant::now();
        Ok(())
    }

    fn poison(&self, state: &mut WriterState, error: &io::Error, rolled_back: bool) {
        state.poisoned = true;
        // Set before the lock is let go: a checkpoint must not take a later fsync's
        // success for this partition's data (see `wal`).
        if let Some((wal, _)) = &self.wal {
            wal.keep_files();
        }
        telemetry::PartitionPoisoned {
            topic: &self.topic,
            partition: self.id,
            error,
            rolled_back,
        }
        .emit();
    }

    /// On close: fsync what is unsynced and move the recovery point up.
    fn close(&self) {
        let Ok(mut state) = self.state.lock() else {
            // A writer panicked: what it wrote may be only in the write-ahead file.
            if let Some((wal, _)) = &self.wal {
                wal.keep_files();
            }
            return;
        };
        if state.poisoned {
            return;
        }
        // A closed log's segments end where their frames do, as an older weir wrote them.
        if let Err(error) = state.trim() {
            tracing::warn!(topic = self.topic, partition = self.id, %error, "could not cut the allocated tail off the active segment on close");
        }
        if state.dirty
            && let Err(error) = self.sync(&mut state)
        {
            self.poison(&mut state, &error, false);
            return;
        }
        if let Err(error) = write_recovery_point(&*self.io, &self.dir, state.active.base_offset) {
            tracing::warn!(topic = self.topic, partition = self.id, %error, "could not write the recovery point on close");
        }
    }

    /// Writes `first` and everything queued behind it as one group; returns how many
    /// appends it took off the queue (written or refused).
    fn write_group(&self, first: AppendRequest, requests: &mpsc::Receiver<AppendRequest>) -> usize {
        let mut taken = 1;
        let mut state = match self.state.lock() {
            Ok(state) => state,
            Err(_) => {
                let _ = first.reply.send(Err(self.poisoned()));
                return taken;
            }
        };
        // Taken only now, under the lock: appends that queued while the previous group
        // was being fsynced join this one.
        let mut queue = VecDeque::from([first]);
        let mut queued_bytes = 0usize;
        while queued_bytes < MAX_GROUP_BYTES
            && let Ok(request) = requests.try_recv()
        {
            queued_bytes += frame::frame_len(&request.records, request.stamp());
            taken += 1;
            queue.push_back(request);
        }
        let settings = self.settings();
        let mut buf = Vec::with_capacity(queued_bytes.min(MAX_GROUP_BYTES) + 4096);
        while !queue.is_empty() {
            if state.poisoned {
                for request in queue.drain(..) {
                    let _ = request.reply.send(Err(self.poisoned()));
                }
                return taken;
            }
            buf.clear();
            let mut written = Vec::new();
            let mut replies = Vec::new();
            let mut commits = Vec::new();
            let mut start_len = state.len;
            let (mut len, mut next_offset) = (state.len, state.next_offset);
            let mut must_sync = false;
            while let Some(request) = queue.pop_front() {
                if let Some(expected) = request.expect_end
                    && expected != next_offset
                {
                    let _ = request.reply.send(Err(Error::Conflict {
                        topic: self.topic.clone(),
                        partition: self.id,
                        expected,
                        end: next_offset,
                    }));
                    continue;
                }
                let count = request.records.len() as u64;
                // One past the batch's last offset, which must itself fit in a u64.
                let Some(offset_after) = next_offset.checked_add(count) else {
                    let _ = request.reply.send(Err(Error::OffsetsExhausted {
                        topic: self.topic.clone(),
                        partition: self.id,
                        next_offset,
                        records: request.records.len(),
                    }));
                    continue;
                };
                let frame_len = frame::frame_len(&request.records, request.stamp()) as u64;
                if len > 0 && len + frame_len > settings.segment_bytes {
                    if !replies.is_empty() {
                        queue.push_front(request);
                        break;
                    }
                    match self.roll(&mut state) {
                        Ok(()) => {}
                        // Nothing is written yet and the active segment stays as it was.
                        Err(RollError::Start(error))
                            if error.kind() == io::ErrorKind::StorageFull =>
                        {
                            state.own_fsyncs = true;
                            telemetry::DiskFull {
                                topic: &self.topic,
                                partition: self.id,
                                bytes: frame_len as usize,
                            }
                            .emit();
                            let _ = request.reply.send(Err(self.disk_full()));
                            for request in queue.drain(..) {
                                let _ = request.reply.send(Err(self.disk_full()));
                            }
                            return taken;
                        }
                        Err(RollError::Sync(error) | RollError::Start(error)) => {
                            self.poison(&mut state, &error, false);
                            let _ = request
                                .reply
                                .send(Err(self.io_error("roll a segment of", error)));
                            break;
                        }
                    }
                    (start_len, len, next_offset) = (state.len, state.len, state.next_offset);
                }
                must_sync |= request.tag.is_some();
                let max_timestamp_ms = frame::encode_records_into(
                    &mut buf,
                    next_offset,
                    request.stamp(),
                    &request.records,
                    request.now_ms,
                );
                if let (Some(tag), Some(commit)) = (request.tag, request.commit) {
                    commits.push((tag.sequence, commit));
                }
                written.push(WrittenBatch {
                    position: len,
                    base_offset: next_offset,
                    last_offset: offset_after - 1,
                    max_timestamp_ms,
                    frame_len,
                });
                replies.push((request.reply, next_offset, request.queued));
                len += frame_len;
                next_offset = offset_after;
            }
            if replies.is_empty() {
                continue;
            }

            state.allocate_ahead(len, settings.segment_bytes);
            if let Err(error) = state.write_at(&buf, start_len) {
                // Durably with the write-ahead file, through which the next group becomes
                // durable with no fsync of the segment: else the refused group's bytes
                // could be back after a power cut, after the next group's.
                let rolled_back = state.cut_back(start_len).is_ok()
                    && (self.wal.is_none() || self.sync(&mut state).is_ok());
                if error.kind() == io::ErrorKind::StorageFull && rolled_back {
                    telemetry::DiskFull {
                        topic: &self.topic,
                        partition: self.id,
                        bytes: buf.len(),
                    }
                    .emit();
                    self.refuse_for_lack_of_space(replies, queue);
                    return taken;
                }
                self.poison(&mut state, &error, rolled_back);
                let error = self.io_error("write a batch to", error);
                let message = error.to_string();
                let mut first_error = Some(error);
                for (reply, _, _) in replies {
                    let error = first_error.take().unwrap_or_else(|| Error::Io {
                        context: message.clone(),
                        source: io::Error::other("the group's write failed"),
                    });
                    let _ = reply.send(Err(error));
                }
                continue;
            }
            let always = settings.fsync == FsyncPolicy::Always;
            let sync_now = must_sync
                || match settings.fsync {
                    FsyncPolicy::Always => true,
                    FsyncPolicy::Interval { ms } => {
                        state.last_sync.elapsed() >= Duration::from_millis(ms)
                    }
                    FsyncPolicy::Never => false,
                };
            // Through the write-ahead file if the group is small and everything unsynced
            // before it is in the file (see `wal`); else the segment's own fsync.
            let through_wal = match &self.wal {
                Some((wal, me))
                    if sync_now
                        && always
                        && buf.len() <= MAX_WAL_GROUP_BYTES
                        && !state.own_fsyncs
                        && !(state.dirty && state.uncovered) =>
                {
                    Some((wal, me))
                }
                _ => None,
            };
            if let Some((wal, me)) = through_wal {
                let waited = Instant::now();
                let base = state.active.base_offset;
                if let Err(error) = wal.append(me, &self.topic, self.id, base, start_len, &buf) {
                    // Cut back for lack of space: nothing of the group is durable, so cut
                    // the segment back too, durably (the next group takes the same
                    // positions and a replay writes only its own bytes there), and it
                    // keeps working.
                    let cut_back = error.kind() == io::ErrorKind::StorageFull
                        && state.cut_back(start_len).is_ok()
                        && self.sync(&mut state).is_ok();
                    if cut_back {
                        self.refuse_for_lack_of_space(replies, queue);
                        return taken;
                    }
                    self.poison(&mut state, &error, false);
                    let error = self.io_error("make durable a group of", error);
                    self.fail_group(replies, &error, "the write-ahead file failed");
                    continue;
                }
                self.metrics.fsync.record(waited.elapsed());
                self.fsyncs.fetch_add(1, Ordering::Relaxed);
                state.len = len;
                state.next_offset = next_offset;
                state.dirty = true;
            } else {
                state.len = len;
                state.next_offset = next_offset;
                state.dirty = true;
                state.uncovered = true;
                if sync_now && let Err(error) = self.sync(&mut state) {
                    self.poison(&mut state, &error, false);
                    let error = self.io_error("fsync", error);
                    self.fail_group(replies, &error, "fdatasync failed");
                    continue;
                }
            }
            // Durable now: the commits count from here on, before anyone sees the outputs.
            for (sequence, commit) in commits {
                self.groups.apply(&commit, sequence);
            }
            state.active.publish_batches(written.iter().map(|b| {
                (
                    b.position,
                    b.base_offset,
                    b.last_offset,
                    b.max_timestamp_ms,
                    b.frame_len,
                )
            }));
            self.end.send_replace(next_offset);
            for (reply, base_offset, queued) in replies {
                self.metrics.append.record(queued.elapsed());
                let _ = reply.send(Ok(base_offset));
            }
        }
        taken
    }

    /// Answers every append of a group whose durability step failed with `error`.
    fn fail_group(
        &self,
        replies: Vec<(oneshot::Sender<Result<u64>>, u64, Instant)>,
        error: &Error,
        cause: &str,
    ) {
        let context = error.to_string();
        for (reply, _, _) in replies {
            let _ = reply.send(Err(Error::Io {
                context: context.clone(),
                source: io::Error::other(cause.to_owned()),
            }));
        }
    }

    /// Answers a group that a full disk refused, and everything queued behind it.
    fn refuse_for_lack_of_space(
        &self,
        replies: Vec<(oneshot::Sender<Result<u64>>, u64, Instant)>,
        queue: VecDeque<AppendRequest>,
    ) {
        for (reply, _, _) in replies {
            let _ = reply.send(Err(self.disk_full()));
        }
        for request in queue {
            let _ = request.reply.send(Err(self.disk_full()));
        }
    }

    fn disk_full(&self) -> Error {
        Error::DiskFull {
            topic: self.topic.clone(),
            partition: self.id,
        }
    }

    /// Closes the active segment and starts the next one; see the module docs. Every step
    /// that can fail comes before the writer and readers see the next segment; if one
    /// does, the next segment's file is removed again and the active one stays active.
    fn roll(&self, state: &mut WriterState) -> Result<(), RollError> {
        // A closed segment is exactly its frames: its index files are checked against its
        // length at open (a rescan makes up for it if this fails).
        if let Err(error) = state.trim() {
            tracing::warn!(topic = self.topic, partition = self.id, %error, "could not cut the allocated tail off a segment it closes");
        }
        self.sync(state).map_err(RollError::Sync)?;
        let base = state.next_offset;
        let path = self.dir.join(segment::log_file_name(base));
        let (file, segment) = match self.start_segment(state, base, &path) {
            Ok(started) => started,
            Err(error) => {
                // Else the empty file would be taken for the active segment at open. The
                // next roll reuses it if this fails too.
                let empty = self
                    .io
                    .metadata(&path)
                    .is_ok_and(|m| !m.is_dir && m.len == 0);
                if empty && self.io.remove_file(&path).is_ok() {
                    let _ = self.io.sync_dir(&self.dir);
                }
                return Err(RollError::Start(error));
            }
        };
        self.segments
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(base, Arc::clone(&segment));
        state.file = file;
        state.active = segment;
        state.len = 0;
        state.allocated = 0;
        state.allocation_failed = false;
        state.own_fsyncs = false;
        telemetry::SegmentRolled {
            topic: &self.topic,
            partition: self.id,
            base_offset: base,
        }
        .emit();
        Ok(())
    }

    /// The steps of a roll that can fail, none of which changes what the writer or readers
    /// see: returns the next segment, at `base` in `path`, for writing and for reading.
    fn start_segment(
        &self,
        state: &mut WriterState,
        base: u64,
        path: &Path,
    ) -> io::Result<(Box<dyn IoFile>, Arc<Segment>)> {
        // Once closed, the segment may go to retention or compaction (which drops frames'
        // commits) and open no longer scans it: the commits its frames carry must be in the
        // group files first. Every one of them was applied when its frame was fsynced.
        self.groups.checkpoint().map_err(checkpoint_io_error)?;
        segment::write_index_files(&*self.io, &self.dir, &state.active.index())?;
        // The writer only writes, truncates and syncs this handle; readers open their own.
        let file = self.io.open(path, Access::Create)?;
        // An empty file is what an earlier roll that failed could not remove.
        if file.size()? != 0 {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists already and is not empty", path.display()),
            ));
        }
        #[cfg(test)]
        if let Some(kind) = state.fail_next_roll.take() {
            return Err(io::Error::from(kind));
        }
        self.io.sync_dir(&self.dir)?;
        let segment = Arc::new(Segment::new(
            &*self.io,
            base,
            path.to_owned(),
            SegmentIndex::new(base),
        )?);
        // The segments below `base` are fsynced and have their index files: the recovery
        // point may move before the next segment takes a write.
        write_recovery_point(&*self.io, &self.dir, base)?;
        Ok((file, segment))
    }

    fn delete_old_segments(
        &self,
        retention_ms: Option<u64>,
        retention_bytes: Option<u64>,
        now_ms: i64,
        limit: u64,
        report: &mut RetentionReport,
    ) -> Result<()> {
        if retention_ms.is_none() && retention_bytes.is_none() {
            return Ok(());
        }
        let _maintenance = self
            .maintenance
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let segments = self.snapshot();
        let closed = closed_below(&segments, limit);
        let mut doomed = 0usize;
        if let Some(ms) = retention_ms {
            let cutoff = now_ms.saturating_sub(i64::try_from(ms).unwrap_or(i64::MAX));
            doomed = closed
                .iter()
                .take_while(|s| s.max_timestamp_ms() < cutoff)
                .count();
        }
        if let Some(limit) = retention_bytes {
            // Kafka's rule: drop the oldest closed segment while what stays is still at
            // least `limit` bytes.
            let mut total: u64 = segments[doomed..].iter().map(|s| s.visible_len()).sum();
            for segment in &closed[doomed..] {
                let len = segment.visible_len();
                if total - len < limit {
                    break;
                }
                total -= len;
                doomed += 1;
            }
        }
        if doomed == 0 {
            return Ok(());
        }
        {
            let mut map = self
                .segments
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            for segment in &closed[..doomed] {
                map.remove(&segment.base_offset);
            }
        }
        for segment in &closed[..doomed] {
            let bytes = segment.visible_len();
            // One segment at a time, oldest first, each deletion durable before the next:
            // a crash then leaves a suffix of the partition, never a hole in it.
            segment::remove_files(&*self.io, &self.dir, segment.base_offset)
                .and_then(|()| self.io.sync_dir(&self.dir))
                .context(|| format!("could not delete segment {}", segment.path.display()))?;
            report.segments_deleted += 1;
            report.bytes_deleted += bytes;
            telemetry::SegmentDeleted {
                topic: &self.topic,
                partition: self.id,
                base_offset: segment.base_offset,
                bytes,
            }
            .emit();
        }
        Ok(())
    }

    /// Rewrites closed segments below `limit` keeping, per key, only the latest record of
    /// the partition unless that is a tombstone (an empty value). Records without a key
    /// are kept. Rewritten batches are untagged (version 2).
    fn compact(&self, limit: u64, report: &mut RetentionReport) -> Result<()> {
        let _maintenance = self
            .maintenance
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let segments = self.snapshot();
        let closed = closed_below(&segments, limit);
        if closed.is_empty() {
            return Ok(());
        }
        let mut latest: HashMap<Bytes, u64> = HashMap::new();
        for segment in &segments {
            segment
                .visit_records(0, |r| {
                    if let Some(key) = r.key {
                        match latest.get_mut(key.as_ref()) {
                            Some(offset) => *offset = r.offset,
                            // A copy, so the map does not pin whole read buffers.
                            None => {
                                latest.insert(Bytes::copy_from_slice(&key), r.offset);
                            }
                        }
                    }
                    ControlFlow::Continue(())
                })
                .map_err(|e| self.walk_error(segment, e))?;
        }
        for segment in closed {
            let mut kept = Vec::new();
            let mut removed = 0u64;
            segment
                .visit_records(0, |r| {
                    let keep = match &r.key {
                        None => true,
                        Some(key) => {
                            latest.get(key.as_ref()) == Some(&r.offset) && !r.value.is_empty()
                        }
                    };
                    if keep {
                        kept.push(r);
                    } else {
                        removed += 1;
                    }
                    ControlFlow::Continue(())
                })
                .map_err(|e| self.walk_error(segment, e))?;
            if removed == 0 {
                continue;
            }
            let rewritten = self
                .rewrite_segment(segment, &kept)
                .context(|| format!("could not compact segment {}", segment.path.display()))?;
            self.segments
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(segment.base_offset, Arc::new(rewritten));
            report.segments_compacted += 1;
            report.records_removed += removed;
            telemetry::SegmentCompacted {
                topic: &self.topic,
                partition: self.id,
                base_offset: segment.base_offset,
                records_removed: removed,
            }
            .emit();
        }
        Ok(())
    }

    fn rewrite_segment(&self, segment: &Segment, kept: &[DecodedRecord]) -> io::Result<Segment> {
        let base = segment.base_offset;
        let mut index = SegmentIndex::new(base);
        let mut buf = Vec::new();
        let mut rest = kept;
        while let Some(first) = rest.first() {
            let mut bytes = 0usize;
            let count = rest
                .iter()
                .take_while(|r| {
                    bytes += r.key.as_ref().map_or(0, Bytes::len) + r.value.len() + 20;
                    (bytes <= COMPACTED_BATCH_BYTES || r.offset == first.offset)
                        && r.offset - first.offset <= u64::from(u32::MAX)
                })
                .count();
            let (batch, tail) = rest.split_at(count);
            rest = tail;
            let position = buf.len() as u64;
            frame::encode_into(
                &mut buf,
                first.offset,
                None,
                batch.iter().map(|r| RecordRef {
                    offset_delta: (r.offset - first.offset) as u32,
                    timestamp_ms: r.timestamp_ms,
                    key: r.key.as_deref(),
                    value: &r.value,
                }),
            );
            let max_timestamp_ms = batch
                .iter()
                .map(|r| r.timestamp_ms)
                .max()
                .unwrap_or(i64::MIN);
            let last_offset = batch.last().map_or(first.offset, |r| r.offset);
            index.add_batch(
                position,
                first.offset,
                last_offset,
                max_timestamp_ms,
                buf.len() as u64 - position,
            );
        }
        let mut tmp_name = segment::log_file_name(base);
        tmp_name.push_str(".compacting");
        let tmp = self.dir.join(tmp_name);
        {
            let file = self.io.open(&tmp, Access::Truncate)?;
            file.write_all_at(&buf, 0)?;
            file.sync_all()?;
        }
        self.io.rename(&tmp, &segment.path)?;
        self.io.sync_dir(&self.dir)?;
        segment::write_index_files(&*self.io, &self.dir, &index)?;
        Segment::new(&*self.io, base, segment.path.clone(), index)
    }
}

impl WriterState {
    /// Zero-fills the active segment ahead, once a group is to be written up to `end`; a
    /// failure only means the segment grows as it is written.
    fn allocate_ahead(&mut self, end: u64, segment_bytes: u64) {
        if end <= self.allocated || self.allocation_failed {
            return;
        }
        let ahead = self.len.clamp(ALLOCATE_AHEAD.0, ALLOCATE_AHEAD.1);
        let target = end.max(self.len.saturating_add(ahead).min(segment_bytes));
        match self.file.allocate(self.allocated.max(self.len), target) {
            Ok(()) => self.allocated = target,
            Err(error) => {
                self.allocation_failed = true;
                // Zeros that failed part way may have grown the file all the same.
                if let Ok(size) = self.file.size() {
                    self.allocated = self.allocated.max(size);
                }
                tracing::debug!(path = %self.active.path.display(), %error, "could not zero-fill a segment ahead of its writes");
            }
        }
    }

    /// Cuts the active segment back to `len` bytes (a group that failed for lack of
    /// space), its zeros too.
    fn cut_back(&mut self, len: u64) -> io::Result<()> {
        self.file.set_len(len)?;
        self.allocated = len;
        Ok(())
    }

    /// Drops the zeros past the frames, so the file ends where they do; made durable by
    /// the next sync.
    fn trim(&mut self) -> io::Result<()> {
        // After a failed fill the file may be longer than the writer could tell.
        let longer =
            self.allocated > self.len || (self.allocation_failed && self.file.size()? > self.len);
        if longer {
            self.cut_back(self.len)?;
            self.dirty = true;
        }
        Ok(())
    }

    fn write_at(&mut self, buf: &[u8], position: u64) -> io::Result<()> {
        #[cfg(test)]
        if let Some(kind) = self.fail_next_write.take() {
            // Half the bytes make it, as with a disk that fills up mid-write.
            let _ = self.file.write_all_at(&buf[..buf.len() / 2], position);
            return Err(io::Error::from(kind));
        }
        self.file.write_all_at(buf, position)
    }
}

/// A failed checkpoint as an IO error of the same kind, so a full disk is still told apart.
fn checkpoint_io_error(error: Error) -> io::Error {
    match error {
        Error::Io { context, source } => {
            io::Error::new(source.kind(), format!("{context}: {source}"))
        }
        other => io::Error::other(other),
    }
}

/// The closed segments of `segments` (sorted, the last one active) whose records all lie
/// below `limit`: a prefix, as each segment's records lie below the next one's base.
fn closed_below(segments: &[Arc<Segment>], limit: u64) -> &[Arc<Segment>] {
    let eligible = segments
        .windows(2)
        .take_while(|pair| pair[1].base_offset <= limit)
        .count();
    &segments[..eligible]
}

/// Base offsets of the segments in `dir`, sorted; deletes leftovers of interrupted
/// compactions and atomic writes.
fn list_segments(io: &dyn Io, dir: &Path) -> io::Result<Vec<u64>> {
    let mut bases = Vec::new();
    for name in io.read_dir(dir)? {
        let Some(name) = name.to_str() else {
            continue;
        };
        if let Some(base) = segment::parse_log_file_name(name) {
            bases.push(base);
        } else if name.ends_with(".compacting") || name.ends_with(".tmp") {
            io.remove_file(&dir.join(name))?;
        }
    }
    bases.sort_unstable();
    Ok(bases)
}

/// The recovery point, or 0 (trust nothing) if it is missing or unreadable.
fn read_recovery_point(io: &dyn Io, dir: &Path) -> u64 {
    io.read(&dir.join(RECOVERY_POINT_FILE))
        .ok()
        .and_then(|bytes| serde_json::from_slice::<RecoveryPoint>(&bytes).ok())
        .filter(|point| point.version == RECOVERY_POINT_VERSION)
        .map_or(0, |point| point.offset)
}

fn write_recovery_point(io: &dyn Io, dir: &Path, offset: u64) -> io::Result<()> {
    let contents = serde_json::to_vec(&RecoveryPoint {
        version: RECOVERY_POINT_VERSION,
        offset,
    })
    .map_err(io::Error::from)?;
    fsutil::write_atomically(io, &dir.join(RECOVERY_POINT_FILE), &contents)
}

#[cfg(test)]
mod tests;

/// Whether the bytes of `file` from `from` to `to` are all zeros; not if they cannot be
/// read, so the caller reports the tail it cuts.
pub(crate) fn is_zeros(file: &dyn IoFile, from: u64, to: u64) -> bool {
    let mut buf = vec![0u8; 64 << 10];
    let mut position = from;
    while position < to {
        let n = (to - position).min(buf.len() as u64) as usize;
        if file.read_exact_at(&mut buf[..n], position).is_err() || buf[..n].iter().any(|&b| b != 0)
        {
            return false;
        }
        position += n as u64;
    }
    true
}

/// Whether `file` starts with what an old weir wrote (a version 1 frame), to refuse,
/// rather than a newer first frame whose magic byte a bit flip turned into `0xB1` (0xB3
/// is one bit away), which is a corrupt tail to cut: the latter decodes as a version 2 or
/// tagged frame once its magic byte is put back.
fn is_whole_v1_frame(file: &dyn IoFile) -> bool {
    let mut header = [0u8; frame::HEADER_LEN];
    if file.read_exact_at(&mut header, 0).is_err() {
        return true;
    }
    let body_len = u32::from_le_bytes([header[1], header[2], header[3], header[4]]) as usize;
    if body_len > 64 << 20 {
        return true;
    }
    let mut bytes = vec![0u8; frame::HEADER_LEN + body_len];
    if file.read_exact_at(&mut bytes, 0).is_err() {
        return true;
    }
    ![frame::MAGIC, frame::MAGIC_TAGGED]
        .into_iter()
        .any(|magic| {
            bytes[0] = magic;
            frame::decode_frame(Bytes::copy_from_slice(&bytes)).is_ok()
        })
}
