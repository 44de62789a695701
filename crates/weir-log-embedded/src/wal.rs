//! The write-ahead file: group commit across partitions, with
//! [`crate::LogOptions::write_ahead`] (off by default; docs/benchmarks.md says why). Under
//! `FsyncPolicy::Always` every partition's small groups become durable through one file,
//! so what several partitions write at about the same time costs one `fdatasync`, not
//! one per partition (fdatasync is per file).
//!
//! # On disk
//!
//! ```text
//! wal/<generation:020>.wal
//!
//! file   = header entry*
//! header = "weir-wal" version:u32                 (little-endian; version 1)
//! entry  = body_len:u32 crc:u32 body              crc = CRC32C of body
//! body   = topic_len:u16 topic partition:u32 segment_base:u64 position:u64 bytes
//! ```
//!
//! An entry says: these `bytes` (whole frames, see `frame`) were written at `position` of
//! the segment `topics/<topic>/<partition>/<segment_base:020>.log`.
//!
//! # Invariants
//!
//! - Under `Always` a partition's writer writes a group's frames to its active segment
//!   without an fsync, then appends the same bytes as one entry here, and makes the group
//!   visible and acknowledges it only once the entry is fsynced. So, as before, nothing is
//!   readable or acknowledged before it is durable: it is durable once its entry is. A
//!   group over 32 KiB fsyncs its segment instead, which makes everything before it in
//!   the segment durable too.
//! - Group commit, with no thread and no timer of its own: an appender queues its entry;
//!   whichever appender then finds no write under way writes everything queued with one
//!   positional write and one `fdatasync`, and wakes the others; entries queued meanwhile
//!   go in the next write.
//! - A partition whose unsynced bytes are not all here (written under another policy
//!   before a switch to `Always`) fsyncs its segment instead; so is a transaction's batch
//!   written under another policy. A segment's bytes are therefore durable up to some
//!   point and, after it, each group is in an entry here, in order: replaying the entries
//!   restores every acknowledged frame.
//! - A file rolls once it holds `LogOptions::write_ahead_file_bytes`: the next file is
//!   created (its header and directory entry fsynced) before an entry goes to it, and
//!   the old one is checkpointed by a thread: the segment each partition it has entries
//!   of wrote them to is fsynced (a rolled segment was fsynced by its roll) through a
//!   file opened under the partition's lock but synced without it (the kernel reports a
//!   failed write-back once to each open file, so neither fsync can take the other's),
//!   and only then is the old file removed and the directory fsynced. A failed checkpoint keeps the file; so does any
//!   poisoned partition (after a failed fsync a later one may succeed for data the kernel
//!   dropped), until the next open.
//! - Open replays every file, oldest first, before any partition opens: each entry's
//!   bytes are written at its position of its segment, which is then fdatasynced, unless
//!   the segment has a later one in its partition (a roll fsyncs a segment before it
//!   creates the next one's file, so the entry is there already, and the segment may have
//!   been compacted since; a partition whose roll failed for lack of space, which may
//!   leave that file behind, fsyncs its own groups until a roll succeeds) or is missing
//!   (deleted by retention; replay never creates a file). Writing the same bytes again is
//!   harmless, so replaying after a crash during a replay is too. Replay stops at the
//!   first torn or corrupt entry of a file: it was never acknowledged (or the disk damaged
//!   it). Then the replayed files are removed, durably, and a new file is started; the
//!   partitions' recovery scans then see the replayed frames.
//! - A clean close checkpoints the current file once the partitions have closed (they
//!   fsync their segments), so a closed log has no entries left.
//! - A failed write or fsync of the file poisons it: every later append fails, and the
//!   partitions that appended poison themselves, until the process restarts. A write that
//!   fails for lack of space is cut back instead, durably (fsynced, so no entry of it can
//!   come back and be replayed over what later takes its positions), and its group fails
//!   with [`crate::Error::DiskFull`] (each partition cuts its segment back too, durably);
//!   if the cut-back fails, the file is poisoned.
//! - Format: a log opened with the file is version 3 of `topic.json` (see `topic`),
//!   written before anything reaches the file, which weir before it refuses to open
//!   rather than miss the acknowledged frames only this file holds after a crash. A file
//!   with another header is refused.

use std::{
    collections::HashMap,
    io,
    path::{Path, PathBuf},
    sync::{
        Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError, Weak,
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc,
    },
    thread::JoinHandle,
    time::Instant,
};

use crate::{
    error::IoContext,
    fsutil,
    io::{Access, Io, IoFile},
    segment, telemetry, topic,
};

pub(crate) const WAL_DIR: &str = "wal";
const MAGIC: &[u8; 8] = b"weir-wal";
const VERSION: u32 = 1;
const HEADER_LEN: usize = 12;
/// `body_len` and `crc`.
const ENTRY_HEADER_LEN: usize = 8;

/// What a partition does for a checkpoint of the write-ahead file.
pub(crate) trait SegmentSync: Send + Sync {
    /// Makes everything written to the segment based at `base` durable through the
    /// partition's own file, under its writer's lock; fails if the partition is poisoned.
    fn sync_segment(&self, base: u64) -> io::Result<()>;
}

/// The partitions and segments a file holds entries of, one each.
type Touched = HashMap<(usize, u64), Weak<dyn SegmentSync>>;

pub(crate) struct Wal {
    io: Arc<dyn Io>,
    dir: PathBuf,
    file_bytes: u64,
    queue: Mutex<Queue>,
    written: Condvar,
    writer: Mutex<Writer>,
    /// Set once a partition poisoned itself: no file is removed from then on.
    keep_files: Arc<AtomicBool>,
    syncs: AtomicU64,
    checkpointer: Mutex<Option<(mpsc::Sender<Checkpoint>, JoinHandle<()>)>>,
    fsync_metric: metrics::Histogram,
}

#[derive(Default)]
struct Queue {
    /// Entries queued for the next write.
    buf: Vec<u8>,
    /// How many entries `buf` holds.
    entries: usize,
    touched: Touched,
    /// The group the queued entries belong to; its result wakes their appenders.
    pending: Option<Arc<Group>>,
    writing: bool,
    /// Why the file refuses appends, once a write or fsync of it failed.
    poisoned: Option<String>,
}

#[derive(Default)]
struct Group {
    result: OnceLock<Result<(), (io::ErrorKind, String)>>,
}

struct Writer {
    file: Option<Box<dyn IoFile>>,
    generation: u64,
    len: u64,
    touched: Touched,
}

struct Checkpoint {
    path: PathBuf,
    touched: Touched,
}

fn file_name(generation: u64) -> String {
    fsutil::generation_file_name(generation, "wal")
}

fn header() -> [u8; HEADER_LEN] {
    let mut header = [0u8; HEADER_LEN];
    header[..8].copy_from_slice(MAGIC);
    header[8..].copy_from_slice(&VERSION.to_le_bytes());
    header
}

/// Appends one entry to `buf`.
pub(crate) fn encode_entry(
    buf: &mut Vec<u8>,
    topic: &str,
    partition: u32,
    segment_base: u64,
    position: u64,
    bytes: &[u8],
) {
    let start = buf.len();
    buf.extend_from_slice(&[0u8; ENTRY_HEADER_LEN]);
    buf.extend_from_slice(&(topic.len() as u16).to_le_bytes());
    buf.extend_from_slice(topic.as_bytes());
    buf.extend_from_slice(&partition.to_le_bytes());
    buf.extend_from_slice(&segment_base.to_le_bytes());
    buf.extend_from_slice(&position.to_le_bytes());
    buf.extend_from_slice(bytes);
    let body = start + ENTRY_HEADER_LEN;
    let crc = crc32c::crc32c(&buf[body..]);
    let body_len = (buf.len() - body) as u32;
    buf[start..start + 4].copy_from_slice(&body_len.to_le_bytes());
    buf[start + 4..body].copy_from_slice(&crc.to_le_bytes());
}

/// One decoded entry.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Entry<'a> {
    pub(crate) topic: &'a str,
    pub(crate) partition: u32,
    pub(crate) segment_base: u64,
    pub(crate) position: u64,
    pub(crate) bytes: &'a [u8],
}

/// The entries of a file's contents after its header, up to the first that is cut short
/// or corrupt; with the position where decoding stopped and why, if before the end.
pub(crate) fn decode_entries(buf: &[u8]) -> (Vec<Entry<'_>>, usize, Option<&'static str>) {
    let mut entries = Vec::new();
    let mut at = 0;
    while at < buf.len() {
        let rest = &buf[at..];
        if rest.len() < ENTRY_HEADER_LEN {
            return (entries, at, Some("cut short"));
        }
        let body_len = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes"));
        let Some(body) = rest.get(ENTRY_HEADER_LEN..ENTRY_HEADER_LEN + body_len) else {
            return (entries, at, Some("cut short"));
        };
        if crc32c::crc32c(body) != crc {
            return (entries, at, Some("bad checksum"));
        }
        let Some(entry) = decode_body(body) else {
            return (entries, at, Some("malformed"));
        };
        entries.push(entry);
        at += ENTRY_HEADER_LEN + body_len;
    }
    (entries, at, None)
}

fn decode_body(body: &[u8]) -> Option<Entry<'_>> {
    let topic_len = u16::from_le_bytes(body.get(..2)?.try_into().ok()?) as usize;
    let topic = std::str::from_utf8(body.get(2..2 + topic_len)?).ok()?;
    let rest = body.get(2 + topic_len..)?;
    let partition = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?);
    let segment_base = u64::from_le_bytes(rest.get(4..12)?.try_into().ok()?);
    let position = u64::from_le_bytes(rest.get(12..20)?.try_into().ok()?);
    Some(Entry {
        topic,
        partition,
        segment_base,
        position,
        bytes: rest.get(20..)?,
    })
}

/// Replays every write-ahead file of the log in `dir` into the segments (see the module
/// docs), makes what it wrote durable and removes the files. Returns the generation for
/// the next file.
pub(crate) fn replay(io: &dyn Io, dir: &Path) -> crate::Result<u64> {
    let wal_dir = dir.join(WAL_DIR);
    fsutil::create_dir(io, &wal_dir)
        .context(|| format!("could not create {}", wal_dir.display()))?;
    let generations = fsutil::list_generations(io, &wal_dir, "wal", "a write-ahead file")
        .context(|| format!("could not list {}", wal_dir.display()))?;
    let mut segments: HashMap<PathBuf, Option<Box<dyn IoFile>>> = HashMap::new();
    let mut latest_bases: HashMap<PathBuf, Option<u64>> = HashMap::new();
    let mut replayed = 0usize;
    for (i, &generation) in generations.iter().enumerate() {
        let path = wal_dir.join(file_name(generation));
        let contents = io
            .read(&path)
            .context(|| format!("could not read {}", path.display()))?;
        let last = i + 1 == generations.len();
        if contents.len() < HEADER_LEN || contents[..8] != MAGIC[..] {
            // Only the newest file can have been cut short while it was being created.
            if last {
                continue;
            }
            return Err(crate::Error::Corrupt {
                what: path.display().to_string(),
                reason: "not a write-ahead file: its header is missing".into(),
            });
        }
        let version = u32::from_le_bytes(contents[8..12].try_into().expect("4 bytes"));
        if version != VERSION {
            return Err(crate::Error::Corrupt {
                what: path.display().to_string(),
                reason: format!(
                    "write-ahead file version {version}, which this version of weir does not read"
                ),
            });
        }
        let (entries, stopped_at, reason) = decode_entries(&contents[HEADER_LEN..]);
        if let Some(reason) = reason {
            telemetry::WalTailIgnored {
                path: &path,
                position: (HEADER_LEN + stopped_at) as u64,
                bytes: (contents.len() - HEADER_LEN - stopped_at) as u64,
                reason,
            }
            .emit();
        }
        for entry in entries {
            if topic::check_name(entry.topic).is_err() {
                telemetry::EntryIgnored {
                    path: &path,
                    reason: "an entry names no valid topic",
                }
                .emit();
                continue;
            }
            let partition_dir = dir
                .join(crate::TOPICS_DIR)
                .join(entry.topic)
                .join(entry.partition.to_string());
            let latest = match latest_bases.get(&partition_dir) {
                Some(latest) => *latest,
                None => {
                    let latest = latest_segment(io, &partition_dir)
                        .context(|| format!("could not list {}", partition_dir.display()))?;
                    latest_bases.insert(partition_dir.clone(), latest);
                    latest
                }
            };
            if latest.is_none_or(|latest| entry.segment_base < latest) {
                continue;
            }
            let segment_path = partition_dir.join(segment::log_file_name(entry.segment_base));
            let file = match segments.entry(segment_path.clone()) {
                std::collections::hash_map::Entry::Occupied(slot) => slot.into_mut(),
                std::collections::hash_map::Entry::Vacant(slot) => {
                    slot.insert(match io.open(&segment_path, Access::Write) {
                        Ok(file) => Some(file),
                        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                        Err(e) => {
                            return Err(crate::Error::Io {
                                context: format!("could not open {}", segment_path.display()),
                                source: e,
                            });
                        }
                    })
                }
            };
            if let Some(file) = file {
                file.write_all_at(entry.bytes, entry.position)
                    .context(|| format!("could not replay into {}", segment_path.display()))?;
                replayed += 1;
            }
        }
    }
    for (path, file) in &segments {
        if let Some(file) = file {
            file.sync_data()
                .context(|| format!("could not fsync {}", path.display()))?;
        }
    }
    for &generation in &generations {
        let path = wal_dir.join(file_name(generation));
        io.remove_file(&path)
            .context(|| format!("could not remove {}", path.display()))?;
    }
    if !generations.is_empty() {
        io.sync_dir(&wal_dir)
            .context(|| format!("could not fsync {}", wal_dir.display()))?;
        telemetry::WalReplayed {
            files: generations.len(),
            entries: replayed,
        }
        .emit();
    }
    Ok(generations.last().map_or(0, |g| g + 1))
}

/// The base offset of the latest segment in `partition_dir`, if it exists and has one.
fn latest_segment(io: &dyn Io, partition_dir: &Path) -> io::Result<Option<u64>> {
    let names = match io.read_dir(partition_dir) {
        Ok(names) => names,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    Ok(names
        .iter()
        .filter_map(|name| name.to_str().and_then(segment::parse_log_file_name))
        .max())
}

/// Creates the file of `generation`, its header and directory entry durable.
fn create_file(io: &dyn Io, wal_dir: &Path, generation: u64) -> io::Result<Box<dyn IoFile>> {
    let path = wal_dir.join(file_name(generation));
    let file = io.open(&path, Access::CreateNew)?;
    let created = file
        .write_all_at(&header(), 0)
        .and_then(|()| file.sync_data())
        .and_then(|()| io.sync_dir(wal_dir));
    if let Err(error) = created {
        drop(file);
        let _ = io.remove_file(&path);
        return Err(error);
    }
    Ok(file)
}

impl Wal {
    /// Starts the write-ahead file of the log in `dir` at `generation` (from [`replay`]).
    pub(crate) fn start(
        io: &Arc<dyn Io>,
        dir: &Path,
        generation: u64,
        file_bytes: u64,
    ) -> crate::Result<Arc<Wal>> {
        let wal_dir = dir.join(WAL_DIR);
        let file = create_file(&**io, &wal_dir, generation).context(|| {
            format!(
                "could not create {}",
                wal_dir.join(file_name(generation)).display()
            )
        })?;
        let keep_files = Arc::new(AtomicBool::new(false));
        let (sender, receiver) = mpsc::channel::<Checkpoint>();
        let thread = {
            let (io, dir, keep_files) = (Arc::clone(io), wal_dir.clone(), Arc::clone(&keep_files));
            std::thread::Builder::new()
                .name("weir-log-wal".into())
                .spawn(move || {
                    for checkpoint in receiver {
                        run_checkpoint(&*io, &dir, &keep_files, checkpoint);
                    }
                })
                .context(|| "could not start the write-ahead file's checkpointer".to_owned())?
        };
        Ok(Arc::new(Wal {
            io: Arc::clone(io),
            dir: wal_dir,
            file_bytes,
            queue: Mutex::new(Queue::default()),
            written: Condvar::new(),
            writer: Mutex::new(Writer {
                file: Some(file),
                generation,
                len: HEADER_LEN as u64,
                touched: HashMap::new(),
            }),
            keep_files,
            syncs: AtomicU64::new(0),
            checkpointer: Mutex::new(Some((sender, thread))),
            fsync_metric: telemetry::wal_fsync_histogram(),
        }))
    }

    /// How many times the file was fdatasynced.
    pub(crate) fn sync_count(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }

    /// Holds the file's writer, as a slow fsync would, to test group commit.
    #[cfg(test)]
    pub(crate) fn hold_writer(&self) -> MutexGuard<'_, impl Sized> {
        self.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How many entries wait for the next write.
    #[cfg(test)]
    pub(crate) fn queued(&self) -> usize {
        self.lock_queue().entries
    }

    /// Whether an appender leads a write.
    #[cfg(test)]
    pub(crate) fn writing(&self) -> bool {
        self.lock_queue().writing
    }

    /// From now on no file is removed: a partition poisoned itself.
    pub(crate) fn keep_files(&self) {
        self.keep_files.store(true, Ordering::SeqCst);
    }

    fn lock_queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends an entry for `bytes`, written at `position` of `partition`'s segment based
    /// at `segment_base`, and returns once it is durable, with the error of its write
    /// otherwise (`StorageFull` if it was cut back for lack of space).
    pub(crate) fn append(
        &self,
        owner: &Weak<dyn SegmentSync>,
        topic: &str,
        partition: u32,
        segment_base: u64,
        position: u64,
        bytes: &[u8],
    ) -> io::Result<()> {
        let mut queue = self.lock_queue();
        if let Some(reason) = &queue.poisoned {
            return Err(io::Error::other(reason.clone()));
        }
        encode_entry(
            &mut queue.buf,
            topic,
            partition,
            segment_base,
            position,
            bytes,
        );
        queue.entries += 1;
        queue
            .touched
            .entry((owner.as_ptr() as *const () as usize, segment_base))
            .or_insert_with(|| owner.clone());
        let group = Arc::clone(queue.pending.get_or_insert_with(Arc::default));
        loop {
            if let Some(result) = group.result.get() {
                return result
                    .clone()
                    .map_err(|(kind, message)| io::Error::new(kind, message));
            }
            if queue.writing {
                queue = self
                    .written
                    .wait(queue)
                    .unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            // Lead: write everything queued, this entry included.
            queue.writing = true;
            let buf = std::mem::take(&mut queue.buf);
            queue.entries = 0;
            let touched = std::mem::take(&mut queue.touched);
            let leading = queue.pending.take().unwrap_or_default();
            let poisoned = queue.poisoned.clone();
            drop(queue);
            let result = match poisoned {
                // Queued before a write failed: refused like every later append.
                Some(reason) => Err((io::ErrorKind::Other, reason)),
                None => std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    self.write(&buf, touched)
                }))
                .unwrap_or_else(|_| {
                    Err((
                        io::ErrorKind::Other,
                        "writing the write-ahead file panicked".to_owned(),
                    ))
                }),
            };
            queue = self.lock_queue();
            if let Err((kind, message)) = &result
                && *kind != io::ErrorKind::StorageFull
            {
                queue.poisoned.get_or_insert_with(|| message.clone());
            }
            let _ = leading.result.set(result);
            queue.writing = false;
            // Reuse the buffer's allocation for the next group.
            if queue.buf.is_empty() {
                let mut buf = buf;
                buf.clear();
                queue.buf = buf;
            }
            self.written.notify_all();
        }
    }

    /// Writes and fsyncs `buf`, rolling to the next file first if it would take the
    /// current one past its size.
    fn write(&self, buf: &[u8], touched: Touched) -> Result<(), (io::ErrorKind, String)> {
        let mut writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        if writer.file.is_none() {
            return Err((io::ErrorKind::Other, "the log is closed".into()));
        }
        if writer.len > HEADER_LEN as u64 && writer.len + buf.len() as u64 > self.file_bytes {
            self.roll(&mut writer)?;
        }
        let Writer {
            file: Some(file),
            len,
            touched: file_touched,
            ..
        } = &mut *writer
        else {
            return Err((io::ErrorKind::Other, "the log is closed".into()));
        };
        if let Err(error) = file.write_all_at(buf, *len) {
            let cut_back = file.set_len(*len).and_then(|()| file.sync_data()).is_ok();
            let kind = match (error.kind(), cut_back) {
                (io::ErrorKind::StorageFull, true) => io::ErrorKind::StorageFull,
                _ => io::ErrorKind::Other,
            };
            telemetry::WalWriteFailed {
                error: &error,
                cut_back,
            }
            .emit();
            return Err((
                kind,
                format!("could not write the write-ahead file: {error}"),
            ));
        }
        let started = Instant::now();
        if let Err(error) = file.sync_data() {
            telemetry::WalWriteFailed {
                error: &error,
                cut_back: false,
            }
            .emit();
            return Err((
                io::ErrorKind::Other,
                format!("could not fsync the write-ahead file: {error}"),
            ));
        }
        self.fsync_metric.record(started.elapsed());
        self.syncs.fetch_add(1, Ordering::Relaxed);
        *len += buf.len() as u64;
        file_touched.extend(touched);
        Ok(())
    }

    /// Starts the next file and hands the current one to the checkpointer.
    fn roll(&self, writer: &mut Writer) -> Result<(), (io::ErrorKind, String)> {
        let generation = writer.generation + 1;
        let next = create_file(&*self.io, &self.dir, generation).map_err(|error| {
            let kind = match error.kind() {
                io::ErrorKind::StorageFull => io::ErrorKind::StorageFull,
                _ => io::ErrorKind::Other,
            };
            (
                kind,
                format!("could not start the next write-ahead file: {error}"),
            )
        })?;
        let checkpoint = Checkpoint {
            path: self.dir.join(file_name(writer.generation)),
            touched: std::mem::take(&mut writer.touched),
        };
        writer.file = Some(next);
        writer.generation = generation;
        writer.len = HEADER_LEN as u64;
        if let Some((sender, _)) = &*self
            .checkpointer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
        {
            let _ = sender.send(checkpoint);
        }
        Ok(())
    }

    /// At close, once the partitions have closed: waits for the checkpoints under way,
    /// then checkpoints the current file, so a closed log has no entries left.
    pub(crate) fn close(&self) {
        let handle = self
            .checkpointer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some((sender, thread)) = handle {
            drop(sender);
            let _ = thread.join();
        }
        let checkpoint = {
            let mut writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
            // From here on appends fail: a partition that outlived the log (a reader
            // holds it) gets an error, and poisons itself, which keeps the file.
            if writer.file.take().is_none() {
                return;
            }
            Checkpoint {
                path: self.dir.join(file_name(writer.generation)),
                touched: std::mem::take(&mut writer.touched),
            }
        };
        // Without the writer's lock: a partition's writer may hold its own lock and wait
        // for it, while the checkpoint waits for the partition's.
        run_checkpoint(&*self.io, &self.dir, &self.keep_files, checkpoint);
    }
}

/// Makes every segment `checkpoint`'s file has entries of durable, then removes the file
/// unless a segment could not be or a partition poisoned itself.
fn run_checkpoint(io: &dyn Io, wal_dir: &Path, keep_files: &AtomicBool, checkpoint: Checkpoint) {
    let mut failed = None;
    for ((_, base), owner) in &checkpoint.touched {
        // A partition that is gone closed, and closing fsyncs (or poisons, which the flag
        // below sees).
        if let Some(owner) = owner.upgrade()
            && let Err(error) = owner.sync_segment(*base)
        {
            failed = Some(error);
        }
    }
    if let Some(error) = &failed {
        telemetry::WalCheckpointFailed {
            path: &checkpoint.path,
            error,
        }
        .emit();
        return;
    }
    if keep_files.load(Ordering::SeqCst) {
        return;
    }
    let removed = io
        .remove_file(&checkpoint.path)
        .and_then(|()| io.sync_dir(wal_dir));
    if let Err(error) = removed {
        telemetry::WalCheckpointFailed {
            path: &checkpoint.path,
            error: &error,
        }
        .emit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_decoding_stops_at_a_damaged_one() {
        let mut buf = Vec::new();
        encode_entry(&mut buf, "orders", 3, 1024, 77, b"frames");
        encode_entry(&mut buf, "t", 0, 0, 0, b"");
        let whole = buf.len();
        encode_entry(&mut buf, "x", 1, 2, 3, b"torn");
        let (entries, at, reason) = decode_entries(&buf);
        assert_eq!(entries.len(), 3);
        assert_eq!(
            entries[0],
            Entry {
                topic: "orders",
                partition: 3,
                segment_base: 1024,
                position: 77,
                bytes: b"frames",
            }
        );
        assert_eq!((at, reason), (buf.len(), None));

        // Cut short, then with a flipped bit: decoding stops before the last entry.
        for damaged in [buf[..buf.len() - 1].to_vec(), {
            let mut b = buf.clone();
            let last = b.len() - 1;
            b[last] ^= 1;
            b
        }] {
            let (entries, at, reason) = decode_entries(&damaged);
            assert_eq!(entries.len(), 2);
            assert_eq!(at, whole);
            assert!(reason.is_some());
        }
    }
}
