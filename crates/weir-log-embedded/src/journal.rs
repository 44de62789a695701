//! The transaction journal: the durable intents that make a transaction's outputs and its
//! group commit all-or-nothing across a crash, and the thread that writes them.
//!
//! A transaction (see `transaction`; all but one-partition transactions with a commit,
//! which are one frame carrying that commit) is written here first, records and all, and
//! fsynced;
//! only then are its batches appended to their partitions, each tagged with the
//! transaction's producer id and sequence (frame version 3, see `frame`), and its group
//! commit applied. Once the intent is durable the transaction never aborts: whatever
//! stopped it, the producer's next call or the next open finishes it, appending exactly
//! the batches that recovery cannot find by their tag.
//!
//! # On disk
//!
//! ```text
//! transactions/<generation:020>.journal    entries back to back
//! ```
//!
//! All integers are little endian.
//!
//! ```text
//! entry   = magic:u8 body_len:u32 crc:u32 body              magic 0xD7, crc = CRC32C(body)
//! body    = kind:u8 sequence:u64 payload
//! kind 0  = start   no payload; `sequence` is the lowest the log may still hand out
//! kind 1  = intent  producer_id:u64 producer_len:u8 producer:[u8] has_commit:u8 [commit]
//!                   batch_count:u32 batch{batch_count}
//! kind 2  = done    no payload; `sequence` is that of the intent it completes
//! commit  = group_len:u8 group topic_len:u8 topic partition:u32 next_offset:u64
//! batch   = topic_len:u8 topic partition:u32 end_offset:u64 record_count:u32
//!           record{record_count}
//! record  = timestamp_ms:i64 key_len:u32 key value_len:u32 value   (key_len u32::MAX: none)
//! ```
//!
//! - One journal for the whole log, not one per producer: concurrent transactions of
//!   different producers share the writer thread's group commit (one write and one
//!   `fdatasync` for every intent queued meanwhile), as appends to a partition do, and an
//!   open reads one bounded file set instead of a file per producer that ever ran.
//! - `sequence` numbers transactions and plain group commits alike, from one log-wide
//!   counter: unique in the whole log, so a frame tag `(producer_id, sequence)` names one
//!   transaction, and strictly increasing, per producer and across restarts (a new file
//!   starts with a `start` entry that carries the counter).
//! - `producer_id` is FNV-1a 64 of the producer's UTF-8 name, finished with the splitmix64
//!   mixer ([`producer_id`]). It only labels frames; uniqueness comes from `sequence`.
//! - An intent's `end_offset` is the partition's end offset when the intent was written,
//!   a lower bound for where its batch lands; the partition is pinned there (retention and
//!   compaction stay at or above it) until the transaction is done. Records carry the
//!   timestamps they were given or were stamped with when the intent was written, so a
//!   batch appended by recovery equals the one the call would have appended.
//! - `done` is written after the transaction's batches are acknowledged and its commit is
//!   applied, without an fsync of its own: the next intent's fsync, a retention pass (which
//!   syncs the journal before it deletes or compacts anything) or the close makes it
//!   durable. If a crash loses it, recovery looks for the batches by their tags instead.
//!
//! # Invariants
//!
//! - An intent is fsynced before any of its batches is queued to a partition, and a
//!   transaction's batches and commit happen only after that.
//! - A producer has at most one intent without a `done` (its calls are serialised), and
//!   only an intent without a `done` that is also its producer's last may be unfinished.
//! - A torn or corrupt entry, and everything after it, was never acknowledged: recovery
//!   truncates the file there.
//! - The writer starts a new file once the current one passes
//!   [`crate::LogOptions::journal_file_bytes`] (16 MiB by default): it writes
//!   a `start` entry and a copy of every intent not yet done to the new file, fsyncs it and
//!   the directory, and only then hands the older files to a checkpointer thread, which
//!   writes every dirty group file (see `groups`) and then deletes them. Every commit of an
//!   intent done before the switch was applied in memory before its `done` was queued, so
//!   that checkpoint holds it.
//! - Open reads every file in generation order, finishes each unfinished intent (scanning
//!   its partitions from `end_offset` for its tag and appending only the missing
//!   batches), applies the commit of every intent whose sequence is above the one stored
//!   for its group, topic and partition, checkpoints the groups, starts a new file and
//!   deletes the old ones.
//! - A failed write or fsync poisons the journal until the process restarts (every
//!   producer shares it), except a write that fails for lack of space and can be cut back:
//!   that group is refused with [`Error::JournalDiskFull`] and nothing of it is written.

use std::{
    collections::{BTreeMap, BTreeSet},
    io,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
        mpsc,
    },
    thread::JoinHandle,
};

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::{
    Error, Record, Result,
    error::IoContext,
    frame::u32_at,
    frame::u64_at,
    fsutil,
    groups::Groups,
    io::{Access, Io, IoFile},
    telemetry,
};

pub(crate) const JOURNAL_DIR: &str = "transactions";
const MAGIC: u8 = 0xD7;
/// `magic`, `body_len` and `crc`.
const HEADER_LEN: usize = 1 + 4 + 4;
const KIND_START: u8 = 0;
const KIND_INTENT: u8 = 1;
const KIND_DONE: u8 = 2;
const NO_KEY: u32 = u32::MAX;
/// Longest producer name, in bytes.
pub(crate) const MAX_PRODUCER_LEN: usize = 255;
/// Largest entry body; `body_len` is a `u32`.
pub(crate) const MAX_ENTRY_BYTES: usize = u32::MAX as usize - HEADER_LEN;
/// Most bytes one group takes from the queue.
const MAX_GROUP_BYTES: usize = 32 << 20;

/// The label of a producer's batches: FNV-1a 64 of its name, then splitmix64's mixer.
/// Part of the on-disk format: it must never change.
pub(crate) fn producer_id(name: &str) -> u64 {
    weir_log::stable_hash(name.bytes())
}

/// A group commit as the journal holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IntentCommit {
    pub(crate) group: String,
    pub(crate) topic: String,
    pub(crate) partition: u32,
    pub(crate) next_offset: u64,
}

/// One partition's batch of a transaction.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct IntentBatch {
    pub(crate) topic: String,
    pub(crate) partition: u32,
    /// The partition's end offset when the intent was written.
    pub(crate) end_offset: u64,
    /// Every record has its timestamp.
    pub(crate) records: Vec<Record>,
}

/// A transaction as the journal holds it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Intent {
    pub(crate) sequence: u64,
    pub(crate) producer: String,
    pub(crate) producer_id: u64,
    pub(crate) commit: Option<IntentCommit>,
    pub(crate) batches: Vec<IntentBatch>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Entry {
    Start { next_sequence: u64 },
    Intent(Intent),
    Done { sequence: u64 },
}

/// Why an entry was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum EntryError {
    #[error("entry is cut short")]
    Short,
    #[error("bad magic byte {0:#04x}")]
    BadMagic(u8),
    #[error("checksum mismatch")]
    BadChecksum,
    #[error("malformed entry: {0}")]
    Malformed(&'static str),
}

fn record_len(record: &Record) -> usize {
    8 + 4 + record.key.as_ref().map_or(0, Bytes::len) + 4 + record.value.len()
}

/// The encoded length of an intent's entry, header included.
pub(crate) fn intent_len(
    producer: &str,
    commit: Option<(&str, &str)>,
    batches: impl IntoIterator<Item = (usize, usize)>,
) -> usize {
    let mut len = HEADER_LEN + 1 + 8 + 8 + 1 + producer.len() + 1 + 4;
    if let Some((group, topic)) = commit {
        len += 1 + group.len() + 1 + topic.len() + 4 + 8;
    }
    for (topic_len, records_len) in batches {
        len = len.saturating_add(1 + topic_len + 4 + 8 + 4 + records_len);
    }
    len
}

/// The bytes of `records` in an intent, for [`intent_len`].
pub(crate) fn records_len(records: &[Record]) -> usize {
    records.iter().map(record_len).sum()
}

fn frame(kind: u8, sequence: u64, payload: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut buf = Vec::with_capacity(64);
    buf.push(MAGIC);
    buf.extend_from_slice(&[0; 8]); // body_len and crc, filled in below
    buf.push(kind);
    buf.extend_from_slice(&sequence.to_le_bytes());
    payload(&mut buf);
    let body_len = (buf.len() - HEADER_LEN) as u32;
    let crc = crc32c::crc32c(&buf[HEADER_LEN..]);
    buf[1..5].copy_from_slice(&body_len.to_le_bytes());
    buf[5..9].copy_from_slice(&crc.to_le_bytes());
    buf
}

fn put_name(buf: &mut Vec<u8>, name: &str) {
    // Names are checked to fit a u8 length before they get here.
    buf.push(name.len() as u8);
    buf.extend_from_slice(name.as_bytes());
}

pub(crate) fn encode_start(next_sequence: u64) -> Vec<u8> {
    frame(KIND_START, next_sequence, |_| {})
}

pub(crate) fn encode_done(sequence: u64) -> Vec<u8> {
    frame(KIND_DONE, sequence, |_| {})
}

/// Encodes an intent whose names, records and size were checked against the limits.
pub(crate) fn encode_intent(intent: &Intent) -> Vec<u8> {
    frame(KIND_INTENT, intent.sequence, |buf| {
        buf.reserve(
            intent
                .batches
                .iter()
                .map(|b| 32 + records_len(&b.records))
                .sum::<usize>()
                + 600,
        );
        buf.extend_from_slice(&intent.producer_id.to_le_bytes());
        put_name(buf, &intent.producer);
        match &intent.commit {
            Some(commit) => {
                buf.push(1);
                put_name(buf, &commit.group);
                put_name(buf, &commit.topic);
                buf.extend_from_slice(&commit.partition.to_le_bytes());
                buf.extend_from_slice(&commit.next_offset.to_le_bytes());
            }
            None => buf.push(0),
        }
        buf.extend_from_slice(&(intent.batches.len() as u32).to_le_bytes());
        for batch in &intent.batches {
            put_name(buf, &batch.topic);
            buf.extend_from_slice(&batch.partition.to_le_bytes());
            buf.extend_from_slice(&batch.end_offset.to_le_bytes());
            buf.extend_from_slice(&(batch.records.len() as u32).to_le_bytes());
            for record in &batch.records {
                buf.extend_from_slice(&record.timestamp_ms.unwrap_or(0).to_le_bytes());
                match &record.key {
                    Some(key) => {
                        buf.extend_from_slice(&(key.len() as u32).to_le_bytes());
                        buf.extend_from_slice(key);
                    }
                    None => buf.extend_from_slice(&NO_KEY.to_le_bytes()),
                }
                buf.extend_from_slice(&(record.value.len() as u32).to_le_bytes());
                buf.extend_from_slice(&record.value);
            }
        }
    })
}

/// Reads an entry body field by field; every read checks the length.
struct Reader {
    body: Bytes,
    at: usize,
}

impl Reader {
    fn take(&mut self, len: usize) -> Result<Bytes, EntryError> {
        if self.body.len() - self.at < len {
            return Err(EntryError::Malformed(
                "a field runs past the end of the entry",
            ));
        }
        let bytes = self.body.slice(self.at..self.at + len);
        self.at += len;
        Ok(bytes)
    }

    fn u8(&mut self) -> Result<u8, EntryError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, EntryError> {
        Ok(u32_at(&self.take(4)?, 0))
    }

    fn u64(&mut self) -> Result<u64, EntryError> {
        Ok(u64_at(&self.take(8)?, 0))
    }

    fn name(&mut self) -> Result<String, EntryError> {
        let len = usize::from(self.u8()?);
        String::from_utf8(self.take(len)?.to_vec())
            .map_err(|_| EntryError::Malformed("a name is not UTF-8"))
    }

    fn finished(&self) -> bool {
        self.at == self.body.len()
    }
}

fn decode_intent(sequence: u64, reader: &mut Reader) -> Result<Intent, EntryError> {
    let producer_id = reader.u64()?;
    let producer = reader.name()?;
    let commit = match reader.u8()? {
        0 => None,
        1 => Some(IntentCommit {
            group: reader.name()?,
            topic: reader.name()?,
            partition: reader.u32()?,
            next_offset: reader.u64()?,
        }),
        _ => return Err(EntryError::Malformed("bad commit flag")),
    };
    let batch_count = reader.u32()?;
    let mut batches = Vec::new();
    for _ in 0..batch_count {
        let topic = reader.name()?;
        let partition = reader.u32()?;
        let end_offset = reader.u64()?;
        let record_count = reader.u32()?;
        if record_count == 0 {
            return Err(EntryError::Malformed("a batch without records"));
        }
        let mut records = Vec::new();
        for _ in 0..record_count {
            let timestamp_ms = reader.u64()? as i64;
            let key = match reader.u32()? {
                NO_KEY => None,
                len => Some(reader.take(len as usize)?),
            };
            let value_len = reader.u32()? as usize;
            let value = reader.take(value_len)?;
            records.push(Record {
                key,
                value,
                timestamp_ms: Some(timestamp_ms),
            });
        }
        batches.push(IntentBatch {
            topic,
            partition,
            end_offset,
            records,
        });
    }
    Ok(Intent {
        sequence,
        producer,
        producer_id,
        commit,
        batches,
    })
}

/// Decodes one entry from the start of `buf`; returns it and its length.
pub(crate) fn decode_entry(buf: &Bytes) -> Result<(Entry, usize), EntryError> {
    let Some(header) = buf.get(..HEADER_LEN) else {
        return Err(EntryError::Short);
    };
    if header[0] != MAGIC {
        return Err(EntryError::BadMagic(header[0]));
    }
    let body_len = u32_at(header, 1) as usize;
    let crc = u32_at(header, 5);
    if buf.len() - HEADER_LEN < body_len {
        return Err(EntryError::Short);
    }
    let body = buf.slice(HEADER_LEN..HEADER_LEN + body_len);
    if crc32c::crc32c(&body) != crc {
        return Err(EntryError::BadChecksum);
    }
    let mut reader = Reader { body, at: 0 };
    let kind = reader.u8()?;
    let sequence = reader.u64()?;
    let entry = match kind {
        KIND_START => Entry::Start {
            next_sequence: sequence,
        },
        KIND_INTENT => Entry::Intent(decode_intent(sequence, &mut reader)?),
        KIND_DONE => Entry::Done { sequence },
        _ => return Err(EntryError::Malformed("unknown kind")),
    };
    if !reader.finished() {
        return Err(EntryError::Malformed("bytes after the last field"));
    }
    Ok((entry, HEADER_LEN + body_len))
}

/// Decodes entries from the start of `buf` until the end or the first bad one. Returns
/// them, the length of the good prefix, and why it stopped early, if it did.
pub(crate) fn decode_entries(buf: &Bytes) -> (Vec<Entry>, usize, Option<EntryError>) {
    let mut entries = Vec::new();
    let mut at = 0;
    while at < buf.len() {
        match decode_entry(&buf.slice(at..)) {
            Ok((entry, len)) => {
                entries.push(entry);
                at += len;
            }
            Err(e) => return (entries, at, Some(e)),
        }
    }
    (entries, at, None)
}

fn file_name(generation: u64) -> String {
    fsutil::generation_file_name(generation, "journal")
}

/// What the journal files held at open.
#[derive(Debug, Default)]
pub(crate) struct Recovered {
    /// Every intent, once each, by sequence.
    pub(crate) intents: BTreeMap<u64, Intent>,
    /// Sequences of intents with a `done`.
    pub(crate) done: BTreeSet<u64>,
    /// The highest sequence the files show as handed out.
    pub(crate) max_sequence: u64,
    files: Vec<PathBuf>,
    next_generation: u64,
}

impl Recovered {
    /// The intents that may be unfinished: each producer's last one, if it has no `done`.
    pub(crate) fn unfinished(&self) -> Vec<&Intent> {
        let mut last: BTreeMap<&str, &Intent> = BTreeMap::new();
        for intent in self.intents.values() {
            last.insert(&intent.producer, intent);
        }
        let mut unfinished: Vec<&Intent> = last
            .into_values()
            .filter(|i| !self.done.contains(&i.sequence))
            .collect();
        unfinished.sort_by_key(|i| i.sequence);
        unfinished
    }
}

/// Reads every journal file in `dir` (created if missing), truncating torn tails.
pub(crate) fn recover(io: &dyn Io, dir: &Path) -> Result<Recovered> {
    fsutil::create_dir(io, dir).context(|| format!("could not create {}", dir.display()))?;
    let generations = fsutil::list_generations(io, dir, "journal", "a transaction journal file")
        .context(|| format!("could not list {}", dir.display()))?;
    let mut recovered = Recovered {
        next_generation: generations.last().map_or(1, |g| g + 1),
        ..Recovered::default()
    };
    for generation in generations {
        let path = dir.join(file_name(generation));
        let bytes = Bytes::from(
            io.read(&path)
                .context(|| format!("could not read {}", path.display()))?,
        );
        let (entries, good_len, stopped_by) = decode_entries(&bytes);
        if let Some(reason) = stopped_by {
            telemetry::JournalTailTruncated {
                path: &path,
                position: good_len as u64,
                bytes_dropped: (bytes.len() - good_len) as u64,
                reason: &reason,
            }
            .emit();
            io.open(&path, Access::Write)
                .and_then(|f| {
                    f.set_len(good_len as u64)?;
                    f.sync_all()
                })
                .context(|| format!("could not truncate the torn tail of {}", path.display()))?;
        }
        for entry in entries {
            match entry {
                Entry::Start { next_sequence } => {
                    recovered.max_sequence =
                        recovered.max_sequence.max(next_sequence.saturating_sub(1));
                }
                Entry::Intent(intent) => {
                    recovered.max_sequence = recovered.max_sequence.max(intent.sequence);
                    recovered.intents.insert(intent.sequence, intent);
                }
                Entry::Done { sequence } => {
                    recovered.done.insert(sequence);
                }
            }
        }
        recovered.files.push(path);
    }
    Ok(recovered)
}

enum Request {
    Intent {
        sequence: u64,
        bytes: Arc<Vec<u8>>,
        reply: oneshot::Sender<Result<()>>,
    },
    Done {
        sequence: u64,
    },
    Sync {
        reply: oneshot::Sender<Result<()>>,
    },
}

impl Request {
    fn len(&self) -> usize {
        match self {
            Request::Intent { bytes, .. } => bytes.len(),
            Request::Done { .. } | Request::Sync { .. } => HEADER_LEN + 9,
        }
    }
}

/// The journal's current file and what the writer knows; owned by the writer thread.
struct WriterState {
    /// `None` until the first write creates file `generation`.
    file: Option<Box<dyn IoFile>>,
    path: PathBuf,
    generation: u64,
    len: u64,
    /// Written since the last fsync.
    dirty: bool,
    poisoned: bool,
    /// Intents written whose `done` is not: copied into the next file at a rotation.
    pending: BTreeMap<u64, Arc<Vec<u8>>>,
    /// The bytes of `pending`.
    pending_bytes: u64,
    /// `done` entries a full disk refused; written with the next group.
    unwritten_done: Vec<u64>,
    checkpointer: Option<Checkpointer>,
}

struct Checkpointer {
    files: mpsc::Sender<PathBuf>,
    thread: JoinHandle<()>,
}

struct WriterHandle {
    queue: mpsc::Sender<Request>,
    thread: JoinHandle<()>,
}

struct Shared {
    io: Arc<dyn Io>,
    dir: PathBuf,
    /// A file past this many bytes is replaced by a new one.
    rotate_bytes: u64,
    groups: Arc<Groups>,
    next_sequence: Arc<AtomicU64>,
    /// Makes the next write fail with this error, to test failure paths.
    #[cfg(test)]
    fail_next_write: Mutex<Option<io::ErrorKind>>,
}

/// The journal of a log: see the module docs.
pub(crate) struct Journal {
    shared: Arc<Shared>,
    /// The writer's state until its thread starts, at the first transaction.
    initial: Mutex<Option<WriterState>>,
    writer: Mutex<Option<WriterHandle>>,
}

/// Creates journal file `path` holding `start` durably.
fn create_file(io: &dyn Io, dir: &Path, path: &Path, start: &[u8]) -> io::Result<Box<dyn IoFile>> {
    let file = io.open(path, Access::CreateNew)?;
    file.write_all_at(start, 0)?;
    file.sync_data()?;
    io.sync_dir(dir)?;
    Ok(file)
}

impl Journal {
    /// The journal that continues after the files `recovered` was read from. Does no IO.
    pub(crate) fn new(
        io: &Arc<dyn Io>,
        dir: &Path,
        rotate_bytes: u64,
        recovered: &Recovered,
        groups: Arc<Groups>,
        next_sequence: Arc<AtomicU64>,
    ) -> Journal {
        let generation = recovered.next_generation;
        let state = WriterState {
            file: None,
            path: dir.join(file_name(generation)),
            generation,
            len: 0,
            dirty: false,
            poisoned: false,
            pending: BTreeMap::new(),
            pending_bytes: 0,
            unwritten_done: Vec::new(),
            checkpointer: None,
        };
        Journal {
            shared: Arc::new(Shared {
                io: Arc::clone(io),
                dir: dir.to_owned(),
                rotate_bytes,
                groups,
                next_sequence,
                #[cfg(test)]
                fail_next_write: Mutex::new(None),
            }),
            initial: Mutex::new(Some(state)),
            writer: Mutex::new(None),
        }
    }

    /// After recovery, once every unfinished intent is finished and the groups hold every
    /// commit of the old files durably: starts a new file (which keeps the sequence
    /// counter) and deletes the files `recovered` was read from.
    pub(crate) fn replace_recovered_files(&self, recovered: &Recovered) -> Result<()> {
        if recovered.files.is_empty() {
            return Ok(());
        }
        let mut initial = self.initial.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(state) = initial.as_mut().filter(|s| s.file.is_none()) else {
            return Ok(());
        };
        let dir = &self.shared.dir;
        let io = &*self.shared.io;
        let start = encode_start(self.shared.next_sequence.load(Ordering::SeqCst));
        let file = create_file(io, dir, &state.path, &start)
            .context(|| format!("could not start the journal file {}", state.path.display()))?;
        state.file = Some(file);
        state.len = start.len() as u64;
        for old in &recovered.files {
            io.remove_file(old)
                .context(|| format!("could not delete {}", old.display()))?;
        }
        io.sync_dir(dir)
            .context(|| format!("could not fsync {}", dir.display()))
    }

    /// Queues an intent; the receiver gets `Ok` once it is fsynced.
    pub(crate) fn write_intent(
        &self,
        sequence: u64,
        bytes: Arc<Vec<u8>>,
    ) -> Result<oneshot::Receiver<Result<()>>> {
        let (reply, receiver) = oneshot::channel();
        self.send(Request::Intent {
            sequence,
            bytes,
            reply,
        })?;
        Ok(receiver)
    }

    /// Queues the `done` of an intent, to be written without an fsync of its own.
    pub(crate) fn write_done(&self, sequence: u64) {
        // A poisoned journal refuses it; recovery then looks for the batches instead.
        let _ = self.send(Request::Done { sequence });
    }

    /// Makes everything queued so far durable. Blocks.
    pub(crate) fn sync(&self) -> Result<()> {
        if self
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_none()
        {
            return Ok(());
        }
        let (reply, receiver) = oneshot::channel();
        self.send(Request::Sync { reply })?;
        futures::executor::block_on(receiver).unwrap_or(Err(Error::JournalPoisoned))
    }

    fn send(&self, request: Request) -> Result<()> {
        let mut writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        if writer.is_none() {
            let Some(state) = self
                .initial
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take()
            else {
                return Err(Error::JournalPoisoned);
            };
            let (queue, requests) = mpsc::channel();
            let shared = Arc::clone(&self.shared);
            let thread = std::thread::Builder::new()
                .name("weir-log-journal".into())
                .stack_size(256 << 10)
                .spawn(move || shared.run_writer(state, &requests))
                .context(|| "could not start the transaction journal's writer".to_owned())?;
            *writer = Some(WriterHandle { queue, thread });
        }
        match writer.as_ref() {
            Some(handle) if handle.queue.send(request).is_ok() => Ok(()),
            _ => Err(Error::JournalPoisoned),
        }
    }

    #[cfg(test)]
    pub(crate) fn fail_next_write(&self, kind: io::ErrorKind) {
        *self
            .shared
            .fail_next_write
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(kind);
    }
}

impl Drop for Journal {
    /// Stops the writer after it has written and fsynced everything queued.
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

impl Shared {
    fn run_writer(&self, mut state: WriterState, requests: &mpsc::Receiver<Request>) {
        while let Ok(first) = requests.recv() {
            let mut bytes = first.len();
            let mut group = vec![first];
            while bytes < MAX_GROUP_BYTES
                && let Ok(request) = requests.try_recv()
            {
                bytes += request.len();
                group.push(request);
            }
            self.write_group(&mut state, group);
        }
        if !state.poisoned
            && state.dirty
            && let Some(file) = &state.file
            && let Err(error) = file.sync_data()
        {
            self.poison(&mut state, &error);
        }
        if let Some(Checkpointer { files, thread }) = state.checkpointer.take() {
            drop(files);
            let _ = thread.join();
        }
    }

    fn write_group(&self, state: &mut WriterState, group: Vec<Request>) {
        if state.poisoned {
            reply_all(group, || Error::JournalPoisoned);
            return;
        }
        if state.file.is_none() {
            let start = encode_start(self.next_sequence.load(Ordering::SeqCst));
            match create_file(&*self.io, &self.dir, &state.path, &start) {
                Ok(file) => {
                    state.file = Some(file);
                    state.len = start.len() as u64;
                }
                Err(error) => {
                    // Nothing was written; the next group tries again.
                    let _ = self.io.remove_file(&state.path);
                    let context = format!(
                        "could not create the transaction journal file {}",
                        state.path.display()
                    );
                    reply_all(group, || io_error(&context, &error));
                    return;
                }
            }
        } else if state.len >= self.rotate_bytes.max(2 * state.pending_bytes) {
            // The second bound keeps a few large stuck intents from being copied into a
            // new file at every group.
            self.rotate(state);
            if state.poisoned {
                reply_all(group, || Error::JournalPoisoned);
                return;
            }
        }
        let Some(file) = &state.file else {
            return;
        };
        // In queue order, so a `done` precedes the producer's next intent in the file.
        let mut dones = std::mem::take(&mut state.unwritten_done);
        let mut buf = Vec::new();
        for &sequence in &dones {
            buf.extend_from_slice(&encode_done(sequence));
        }
        let mut needs_sync = false;
        for request in &group {
            match request {
                Request::Intent { bytes, .. } => {
                    buf.extend_from_slice(bytes);
                    needs_sync = true;
                }
                Request::Done { sequence } => {
                    buf.extend_from_slice(&encode_done(*sequence));
                    dones.push(*sequence);
                }
                Request::Sync { .. } => needs_sync = true,
            }
        }
        needs_sync &= !buf.is_empty() || state.dirty;
        let carries_intent = group.iter().any(|r| matches!(r, Request::Intent { .. }));
        if let Err(error) = self.write_at(&**file, &buf, state.len, carries_intent) {
            let rolled_back = file.set_len(state.len).is_ok();
            if error.kind() == io::ErrorKind::StorageFull && rolled_back {
                telemetry::JournalDiskFull { bytes: buf.len() }.emit();
                state.unwritten_done = dones;
                reply_all(group, || Error::JournalDiskFull);
                return;
            }
            let context = self.poisoned_context("write", state);
            self.poison(state, &error);
            reply_all(group, || io_error(&context, &error));
            return;
        }
        state.len += buf.len() as u64;
        state.dirty |= !buf.is_empty();
        if needs_sync {
            if let Err(error) = file.sync_data() {
                let context = self.poisoned_context("fsync", state);
                self.poison(state, &error);
                reply_all(group, || io_error(&context, &error));
                return;
            }
            state.dirty = false;
        }
        for sequence in dones {
            if let Some(bytes) = state.pending.remove(&sequence) {
                state.pending_bytes -= bytes.len() as u64;
            }
        }
        for request in group {
            match request {
                Request::Intent {
                    sequence,
                    bytes,
                    reply,
                } => {
                    state.pending_bytes += bytes.len() as u64;
                    state.pending.insert(sequence, bytes);
                    let _ = reply.send(Ok(()));
                }
                Request::Sync { reply } => {
                    let _ = reply.send(Ok(()));
                }
                Request::Done { .. } => {}
            }
        }
    }

    /// `carries_intent`: whether `buf` holds an intent. Injected failures (tests) hit
    /// only such writes, so that a `done` written alone in between cannot take them.
    fn write_at(
        &self,
        file: &dyn IoFile,
        buf: &[u8],
        position: u64,
        carries_intent: bool,
    ) -> io::Result<()> {
        #[cfg(test)]
        if carries_intent
            && let Some(kind) = self
                .fail_next_write
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take()
        {
            // Half the bytes make it, as with a disk that fills up mid-write.
            let _ = file.write_all_at(&buf[..buf.len() / 2], position);
            return Err(io::Error::from(kind));
        }
        let _ = carries_intent;
        file.write_all_at(buf, position)
    }

    fn poisoned_context(&self, doing: &str, state: &WriterState) -> String {
        format!(
            "could not {doing} the transaction journal {}; transactions are refused until the disk is fixed and the node restarted",
            state.path.display()
        )
    }

    fn poison(&self, state: &mut WriterState, error: &io::Error) {
        state.poisoned = true;
        telemetry::JournalPoisoned { error }.emit();
    }

    /// Starts the next file with a copy of every intent not yet done, then hands the old
    /// file to the checkpointer. If the new file cannot be made, the current one stays in
    /// use.
    fn rotate(&self, state: &mut WriterState) {
        // The `done` entries in the old file become durable first: a retention pass syncs
        // only the current file before it deletes or compacts segments.
        if state.dirty
            && let Some(file) = &state.file
        {
            if let Err(error) = file.sync_data() {
                self.poison(state, &error);
                return;
            }
            state.dirty = false;
        }
        let generation = state.generation + 1;
        let path = self.dir.join(file_name(generation));
        let mut buf = encode_start(self.next_sequence.load(Ordering::SeqCst));
        for bytes in state.pending.values() {
            buf.extend_from_slice(bytes);
        }
        let file = match create_file(&*self.io, &self.dir, &path, &buf) {
            Ok(file) => file,
            Err(error) => {
                let _ = self.io.remove_file(&path);
                telemetry::JournalRotationFailed {
                    path: &path,
                    error: &error,
                }
                .emit();
                return;
            }
        };
        let old = std::mem::replace(&mut state.path, path);
        state.file = Some(file);
        state.generation = generation;
        state.len = buf.len() as u64;
        telemetry::JournalRotated {
            generation,
            carried: state.pending.len(),
        }
        .emit();
        if state.checkpointer.is_none() {
            let (files, queue) = mpsc::channel();
            let groups = Arc::clone(&self.groups);
            let io = Arc::clone(&self.io);
            let dir = self.dir.clone();
            let spawned = std::thread::Builder::new()
                .name("weir-log-checkpoint".into())
                .stack_size(256 << 10)
                .spawn(move || run_checkpointer(&*io, &dir, &groups, &queue));
            match spawned {
                Ok(thread) => state.checkpointer = Some(Checkpointer { files, thread }),
                Err(error) => {
                    // The old file stays until the next open deletes it.
                    telemetry::CheckpointFailed {
                        error: &error.to_string(),
                    }
                    .emit();
                    return;
                }
            }
        }
        if let Some(checkpointer) = &state.checkpointer {
            let _ = checkpointer.files.send(old);
        }
    }
}

/// Deletes superseded journal files once a checkpoint of the groups followed them.
fn run_checkpointer(io: &dyn Io, dir: &Path, groups: &Groups, queue: &mpsc::Receiver<PathBuf>) {
    let mut waiting: Vec<PathBuf> = Vec::new();
    while let Ok(path) = queue.recv() {
        waiting.push(path);
        while let Ok(path) = queue.try_recv() {
            waiting.push(path);
        }
        if let Err(error) = groups.checkpoint() {
            telemetry::CheckpointFailed {
                error: &error.to_string(),
            }
            .emit();
            continue;
        }
        waiting.sort();
        for path in waiting.drain(..) {
            if let Err(error) = io.remove_file(&path)
                && error.kind() != io::ErrorKind::NotFound
            {
                telemetry::CheckpointFailed {
                    error: &format!("could not delete {}: {error}", path.display()),
                }
                .emit();
            }
        }
        let _ = io.sync_dir(dir);
    }
}

/// An IO error for each of several callers; `io::Error` is not `Clone`.
fn io_error(context: &str, error: &io::Error) -> Error {
    Error::Io {
        context: context.to_owned(),
        source: io::Error::new(error.kind(), error.to_string()),
    }
}

fn reply_all(group: Vec<Request>, error: impl Fn() -> Error) {
    for request in group {
        match request {
            Request::Intent { reply, .. } | Request::Sync { reply } => {
                let _ = reply.send(Err(error()));
            }
            Request::Done { .. } => {}
        }
    }
}

#[cfg(test)]
mod tests;
