//! Batch frames: the unit in which records are written, checksummed and made durable.
//!
//! Pure encoding and decoding over byte buffers; the file handling is in `segment` and
//! `partition`. `round_trip` checks the decoders against the encoder, for the property
//! tests and the fuzz targets.
//!
//! # Format (versions 2, 3 and 4)
//!
//! All integers are little endian.
//!
//! ```text
//! frame     = magic:u8 body_len:u32 crc:u32 body
//! body      = base_offset:u64 record_count:u32 max_timestamp_ms:i64 [tag [commit]]
//!             record{record_count}
//! tag       = producer_id:u64 sequence:u64                       (versions 3 and 4)
//! commit    = group_len:u16 group:[u8; group_len] topic_len:u16 topic:[u8; topic_len]
//!             partition:u32 next_offset:u64                       (version 4 only)
//! record    = offset_delta:u32 timestamp_ms:i64 key_len:u32 key:[u8; key_len]
//!             value_len:u32 value:[u8; value_len]
//! ```
//!
//! - `magic` is the format version: [`MAGIC`] (`0xB2`) for a plain batch, [`MAGIC_TAGGED`]
//!   (`0xB3`) for a batch written by a transaction, whose body header also carries the
//!   transaction's tag, and [`MAGIC_COMMIT`] (`0xB4`) for the one batch of a transaction
//!   whose outputs all go to one partition, which also carries the transaction's group
//!   commit (UTF-8 names). All three are written and read side by side: ordinary appends
//!   write version 2, transactions version 3, or version 4 for a single batch with a
//!   commit. Version 1 (`0xB1`) had no timestamps in the header and no offset deltas; it is
//!   refused, not read.
//! - `body_len` is the length of `body` in bytes, so a frame takes `HEADER_LEN + body_len`.
//! - `crc` is the CRC32C (Castagnoli) of `magic` followed by `body`. Frames written before
//!   the checksum covered `magic` carry the CRC32C of `body` alone, which is still accepted
//!   on reading. Covering `magic` matters because `0xB2` and `0xB3` are one bit apart: a
//!   version 2 frame whose records happen to parse as a version 3 body (the first record's
//!   header taken for a tag) would otherwise pass its checksum after that one flip and
//!   decode into other records. A frame written with the old checksum keeps that
//!   weakness; one written with the new one fails both checks after any one-bit flip of
//!   its header (the two checksums of a body differ by a value that depends only on the
//!   magic byte and the length, never zero and, for bodies up to 20 MB, never one bit).
//! - A record's offset is `base_offset + offset_delta`. Batches written by an append have
//!   deltas `0, 1, 2, …`; batches rewritten by compaction keep the surviving records'
//!   original offsets, so their deltas may skip.
//! - `max_timestamp_ms` is the largest `timestamp_ms` of the batch's records.
//! - `key_len == u32::MAX` means the record has no key, which differs from an empty key.
//! - `tag` names the transaction that wrote the batch (see `journal`): `producer_id` is a
//!   hash of the producer's name, `sequence` the transaction's sequence number, which is
//!   unique in the whole log. Recovery looks for it to tell whether a transaction's batch
//!   landed. Compaction rewrites surviving records as version 2 frames, dropping the tag;
//!   it never touches a segment that may hold a batch of an unfinished transaction.
//! - `commit` is durable exactly when its batch is: the frame is the transaction's only
//!   write (see `transaction`). Recovery re-applies the commits of the frames it scans;
//!   compaction rewrites surviving records as version 2 frames, dropping the commit too,
//!   and only ever touches closed segments, whose commits the group files already hold
//!   (see `partition`).
//!
//! # Invariants (checked by every decode)
//!
//! - A frame holds at least one record, and its records fill `body` exactly.
//! - Offset deltas strictly increase, and `base_offset + last delta` is at most
//!   [`LAST_OFFSET`] (`u64::MAX - 1`), computed without wrapping: a record at `u64::MAX`
//!   would leave its partition no end offset, so a frame that holds one (or whose offsets
//!   wrap) is refused as corrupt. The writer never assigns such an offset (see `partition`).
//! - `max_timestamp_ms` equals the maximum of the records' timestamps.
//! - A frame that fails any check here is treated as never written; see `partition` for
//!   what recovery does with it.

use bytes::Bytes;

use crate::{Record, journal::IntentCommit};

/// First byte of every version 2 frame (a plain batch).
pub(crate) const MAGIC: u8 = 0xB2;
/// First byte of every version 3 frame (a batch tagged by a transaction).
pub(crate) const MAGIC_TAGGED: u8 = 0xB3;
/// First byte of every version 4 frame (a transaction's only batch, with its group commit).
pub(crate) const MAGIC_COMMIT: u8 = 0xB4;
/// First byte of a version 1 frame, which this version refuses to read.
pub(crate) const MAGIC_V1: u8 = 0xB1;
/// `magic`, `body_len` and `crc`.
pub(crate) const HEADER_LEN: usize = 1 + 4 + 4;
/// `base_offset`, `record_count` and `max_timestamp_ms`.
const BODY_HEADER_LEN: usize = 8 + 4 + 8;
/// `producer_id` and `sequence`, after the version 2 body header in a version 3 frame.
const TAG_LEN: usize = 8 + 8;
/// `group_len`, `topic_len`, `partition` and `next_offset` of a version 4 frame's commit.
const COMMIT_FIXED_LEN: usize = 2 + 2 + 4 + 8;
/// Longest group or topic name a version 4 frame can carry.
pub(crate) const MAX_COMMIT_NAME_LEN: usize = u16::MAX as usize;
/// `offset_delta`, `timestamp_ms`, `key_len` and `value_len`.
const RECORD_HEADER_LEN: usize = 4 + 8 + 4 + 4;
const NO_KEY: u32 = u32::MAX;
/// Keeps every length below [`NO_KEY`] so it fits a `u32` field unambiguously.
pub(crate) const MAX_FIELD_LEN: usize = NO_KEY as usize - 1;
/// The highest offset a record may have: one below `u64::MAX`, so that a partition's end
/// offset, one past its last record, always fits in a `u64`.
pub(crate) const LAST_OFFSET: u64 = u64::MAX - 1;

/// Why a frame was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FrameError {
    #[error("frame is cut short")]
    Short,
    #[error("bad magic byte {0:#04x}")]
    BadMagic(u8),
    #[error("checksum mismatch")]
    BadChecksum,
    #[error("malformed frame: {0}")]
    Malformed(&'static str),
    #[error("base offset {found} where at least {expected} was expected")]
    NonContiguous { expected: u64, found: u64 },
}

/// Which transaction wrote a batch; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct FrameTag {
    pub(crate) producer_id: u64,
    pub(crate) sequence: u64,
}

/// What a frame says about the transaction that wrote it: its tag and, in a version 4
/// frame, its group commit.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stamp<'a> {
    pub(crate) tag: FrameTag,
    pub(crate) commit: Option<&'a IntentCommit>,
}

/// The length of a body header: with no stamp, a tag only, or a tag and a commit.
fn body_header_len(stamp: Option<Stamp<'_>>) -> usize {
    let names = stamp
        .and_then(|s| s.commit)
        .map_or(0, |c| c.group.len() + c.topic.len());
    Version::of(stamp).min_body_header_len() + names
}

/// The frame format versions this module reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    /// 2: a plain batch.
    Plain,
    /// 3: a transaction's batch, with its tag.
    Tagged,
    /// 4: a transaction's only batch, with its tag and group commit.
    Committed,
}

impl Version {
    /// The version a frame with `stamp` is written in.
    fn of(stamp: Option<Stamp<'_>>) -> Version {
        match stamp {
            None => Version::Plain,
            Some(Stamp { commit: None, .. }) => Version::Tagged,
            Some(Stamp {
                commit: Some(_), ..
            }) => Version::Committed,
        }
    }

    fn magic(self) -> u8 {
        match self {
            Version::Plain => MAGIC,
            Version::Tagged => MAGIC_TAGGED,
            Version::Committed => MAGIC_COMMIT,
        }
    }

    fn from_magic(magic: u8) -> Option<Version> {
        [Version::Plain, Version::Tagged, Version::Committed]
            .into_iter()
            .find(|v| v.magic() == magic)
    }

    /// The checksum a frame of this version is written with: the CRC32C of its magic byte
    /// followed by `body`, so that a bit flip turning one version's magic byte into
    /// another's fails the checksum.
    fn checksum(self, body: &[u8]) -> u32 {
        crc32c::crc32c_append(crc32c::crc32c(&[self.magic()]), body)
    }

    /// The shortest body header this version can have.
    fn min_body_header_len(self) -> usize {
        match self {
            Version::Plain => BODY_HEADER_LEN,
            Version::Tagged => BODY_HEADER_LEN + TAG_LEN,
            Version::Committed => BODY_HEADER_LEN + TAG_LEN + COMMIT_FIXED_LEN,
        }
    }
}

/// Why a batch may not be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LimitError {
    /// Key plus value of record `index` take `size` bytes.
    Record { index: usize, size: usize },
    /// The frame would take `size` bytes.
    Batch { size: usize },
}

/// The encoded size of one record with this key and value.
fn record_len(key: Option<&[u8]>, value: &[u8]) -> usize {
    RECORD_HEADER_LEN + key.map_or(0, <[u8]>::len) + value.len()
}

/// Checks `records` against the limits and returns the length of their frame, tagged or
/// not.
pub(crate) fn check_limits(
    records: &[Record],
    max_record_bytes: usize,
    max_batch_bytes: usize,
    tagged: bool,
) -> Result<usize, LimitError> {
    let max_record_bytes = max_record_bytes.min(MAX_FIELD_LEN);
    let mut body_len = if tagged {
        Version::Tagged
    } else {
        Version::Plain
    }
    .min_body_header_len();
    for (index, record) in records.iter().enumerate() {
        let size = record.key.as_ref().map_or(0, Bytes::len) + record.value.len();
        if size > max_record_bytes {
            return Err(LimitError::Record { index, size });
        }
        body_len = body_len.saturating_add(RECORD_HEADER_LEN + size);
    }
    let size = HEADER_LEN.saturating_add(body_len);
    if body_len > MAX_FIELD_LEN || size > max_batch_bytes {
        return Err(LimitError::Batch { size });
    }
    Ok(size)
}

/// The length of the frame [`encode_records_into`] makes of `records` with `stamp`.
pub(crate) fn frame_len(records: &[Record], stamp: Option<Stamp<'_>>) -> usize {
    HEADER_LEN
        + body_header_len(stamp)
        + records
            .iter()
            .map(|r| record_len(r.key.as_deref(), &r.value))
            .sum::<usize>()
}

/// One record to encode, with its offset relative to the batch's base offset.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RecordRef<'a> {
    pub(crate) offset_delta: u32,
    pub(crate) timestamp_ms: i64,
    pub(crate) key: Option<&'a [u8]>,
    pub(crate) value: &'a [u8],
}

/// Appends one frame of `records` to `buf`: version 4 if `stamp` has a commit, 3 if it
/// has only a tag, else version 2. `records` must be non-empty, with strictly increasing
/// deltas, and within the limits of [`check_limits`]; a commit's names at most
/// [`MAX_COMMIT_NAME_LEN`] bytes each. The caller keeps `base_offset` plus the last delta
/// at most [`LAST_OFFSET`]: the decoder refuses a frame that goes further.
pub(crate) fn encode_into<'a>(
    buf: &mut Vec<u8>,
    base_offset: u64,
    stamp: Option<Stamp<'_>>,
    records: impl IntoIterator<Item = RecordRef<'a>>,
) {
    let start = buf.len();
    buf.push(Version::of(stamp).magic());
    buf.extend_from_slice(&[0; 8]); // body_len and crc, filled in below
    buf.extend_from_slice(&base_offset.to_le_bytes());
    let count_at = buf.len();
    buf.extend_from_slice(&[0; 4 + 8]); // record_count and max_timestamp_ms
    if let Some(Stamp { tag, commit }) = stamp {
        buf.extend_from_slice(&tag.producer_id.to_le_bytes());
        buf.extend_from_slice(&tag.sequence.to_le_bytes());
        if let Some(commit) = commit {
            for name in [&commit.group, &commit.topic] {
                debug_assert!(name.len() <= MAX_COMMIT_NAME_LEN);
                buf.extend_from_slice(&(name.len() as u16).to_le_bytes());
                buf.extend_from_slice(name.as_bytes());
            }
            buf.extend_from_slice(&commit.partition.to_le_bytes());
            buf.extend_from_slice(&commit.next_offset.to_le_bytes());
        }
    }
    let mut count = 0u32;
    let mut max_timestamp = i64::MIN;
    for record in records {
        count += 1;
        max_timestamp = max_timestamp.max(record.timestamp_ms);
        buf.extend_from_slice(&record.offset_delta.to_le_bytes());
        buf.extend_from_slice(&record.timestamp_ms.to_le_bytes());
        match record.key {
            Some(key) => {
                buf.extend_from_slice(&(key.len() as u32).to_le_bytes());
                buf.extend_from_slice(key);
            }
            None => buf.extend_from_slice(&NO_KEY.to_le_bytes()),
        }
        buf.extend_from_slice(&(record.value.len() as u32).to_le_bytes());
        buf.extend_from_slice(record.value);
    }
    debug_assert!(count > 0);
    buf[count_at..count_at + 4].copy_from_slice(&count.to_le_bytes());
    buf[count_at + 4..count_at + 12].copy_from_slice(&max_timestamp.to_le_bytes());
    let body_len = (buf.len() - start - HEADER_LEN) as u32;
    let crc = Version::of(stamp).checksum(&buf[start + HEADER_LEN..]);
    buf[start + 1..start + 5].copy_from_slice(&body_len.to_le_bytes());
    buf[start + 5..start + 9].copy_from_slice(&crc.to_le_bytes());
}

/// Appends `records` as one frame with dense offsets from `base_offset`, stamped if
/// `stamp` is given; records without a timestamp get `now_ms`. Returns the batch's max
/// timestamp.
pub(crate) fn encode_records_into(
    buf: &mut Vec<u8>,
    base_offset: u64,
    stamp: Option<Stamp<'_>>,
    records: &[Record],
    now_ms: i64,
) -> i64 {
    encode_into(
        buf,
        base_offset,
        stamp,
        records.iter().enumerate().map(|(i, r)| RecordRef {
            offset_delta: i as u32,
            timestamp_ms: r.timestamp_ms.unwrap_or(now_ms),
            key: r.key.as_deref(),
            value: &r.value,
        }),
    );
    records
        .iter()
        .map(|r| r.timestamp_ms.unwrap_or(now_ms))
        .max()
        .unwrap_or(i64::MIN)
}

/// Encodes `records` as one frame; records without a timestamp get `now_ms`.
#[cfg(test)]
pub(crate) fn encode_batch(base_offset: u64, records: &[Record], now_ms: i64) -> Vec<u8> {
    let mut buf = Vec::with_capacity(frame_len(records, None));
    encode_records_into(&mut buf, base_offset, None, records, now_ms);
    buf
}

/// Encodes `records` as one version 3 frame tagged with `tag`.
#[cfg(test)]
pub(crate) fn encode_tagged_batch(
    base_offset: u64,
    tag: FrameTag,
    records: &[Record],
    now_ms: i64,
) -> Vec<u8> {
    let stamp = Stamp { tag, commit: None };
    let mut buf = Vec::with_capacity(frame_len(records, Some(stamp)));
    encode_records_into(&mut buf, base_offset, Some(stamp), records, now_ms);
    buf
}

/// Encodes `records` as one version 4 frame tagged with `tag` and carrying `commit`.
#[cfg(test)]
pub(crate) fn encode_committed_batch(
    base_offset: u64,
    tag: FrameTag,
    commit: &IntentCommit,
    records: &[Record],
    now_ms: i64,
) -> Vec<u8> {
    let stamp = Stamp {
        tag,
        commit: Some(commit),
    };
    let mut buf = Vec::with_capacity(frame_len(records, Some(stamp)));
    encode_records_into(&mut buf, base_offset, Some(stamp), records, now_ms);
    buf
}

/// The fixed-size start of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FrameHeader {
    pub(crate) body_len: u32,
    crc: u32,
    version: Version,
}

impl FrameHeader {
    pub(crate) fn frame_len(&self) -> u64 {
        HEADER_LEN as u64 + u64::from(self.body_len)
    }

    /// Whether the header's checksum is that of its magic byte and `body`, or, for a frame
    /// written before the checksum covered the magic byte, of `body` alone.
    fn checksum_matches(&self, body: &[u8]) -> bool {
        self.version.checksum(body) == self.crc || crc32c::crc32c(body) == self.crc
    }
}

/// What a batch's header says about it, once verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BatchInfo {
    pub(crate) base_offset: u64,
    pub(crate) record_count: u32,
    pub(crate) max_timestamp_ms: i64,
    /// Offset of the batch's last record.
    pub(crate) last_offset: u64,
    /// The transaction that wrote the batch, for a version 3 or 4 frame.
    pub(crate) tag: Option<FrameTag>,
    /// Whether the frame carries a group commit (version 4); see [`verified_commit`].
    pub(crate) has_commit: bool,
}

/// A decoded record; key and value share the frame's memory.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DecodedRecord {
    pub(crate) offset: u64,
    pub(crate) timestamp_ms: i64,
    pub(crate) key: Option<Bytes>,
    pub(crate) value: Bytes,
}

/// A decoded frame.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Batch {
    pub(crate) info: BatchInfo,
    pub(crate) records: Vec<DecodedRecord>,
}

/// Decodes the first [`HEADER_LEN`] bytes of `buf`.
pub(crate) fn decode_header(buf: &[u8]) -> Result<FrameHeader, FrameError> {
    let Some(header) = buf.get(..HEADER_LEN) else {
        return Err(FrameError::Short);
    };
    let version = Version::from_magic(header[0]).ok_or(FrameError::BadMagic(header[0]))?;
    let body_len = u32_at(header, 1);
    let crc = u32_at(header, 5);
    if (body_len as usize) < version.min_body_header_len() + RECORD_HEADER_LEN {
        return Err(FrameError::Malformed("body shorter than one record"));
    }
    Ok(FrameHeader {
        body_len,
        crc,
        version,
    })
}

/// The little-endian `u32` at `at`; the caller has checked the length.
pub(crate) fn u32_at(buf: &[u8], at: usize) -> u32 {
    let mut bytes = [0; 4];
    bytes.copy_from_slice(&buf[at..at + 4]);
    u32::from_le_bytes(bytes)
}

/// The little-endian `u64` at `at`; the caller has checked the length.
pub(crate) fn u64_at(buf: &[u8], at: usize) -> u64 {
    let mut bytes = [0; 8];
    bytes.copy_from_slice(&buf[at..at + 8]);
    u64::from_le_bytes(bytes)
}

/// Verifies the body that follows `header` and hands each record to `each`, in order.
///
/// The checksum is verified before any record is handed out. If the body turns out to be
/// malformed after that (only a bug in the writer could do that), the records handed out
/// so far must be discarded along with the error.
pub(crate) fn decode_body(
    header: &FrameHeader,
    body: &Bytes,
    mut each: impl FnMut(DecodedRecord),
) -> Result<BatchInfo, FrameError> {
    if body.len() != header.body_len as usize {
        return Err(FrameError::Short);
    }
    if !header.checksum_matches(body) {
        return Err(FrameError::BadChecksum);
    }
    let buf: &[u8] = body;
    let mut at = header.version.min_body_header_len();
    if buf.len() < at {
        return Err(FrameError::Malformed("body shorter than its own header"));
    }
    let base_offset = u64_at(buf, 0);
    let record_count = u32_at(buf, 8);
    let max_timestamp_ms = u64_at(buf, 12) as i64;
    let tag = (header.version != Version::Plain).then(|| read_tag(buf));
    if header.version == Version::Committed {
        at = read_commit(buf)?.end;
    }
    if record_count == 0 {
        return Err(FrameError::Malformed("batch without records"));
    }
    let runs_past = FrameError::Malformed("record runs past the end of the batch");
    let mut previous_delta: Option<u32> = None;
    let mut seen_max = i64::MIN;
    let mut last_offset = base_offset;
    for _ in 0..record_count {
        if buf.len() - at < RECORD_HEADER_LEN {
            return Err(runs_past);
        }
        let delta = u32_at(buf, at);
        if previous_delta.is_some_and(|p| delta <= p) {
            return Err(FrameError::Malformed("offset deltas do not increase"));
        }
        previous_delta = Some(delta);
        let offset = base_offset
            .checked_add(u64::from(delta))
            .filter(|&offset| offset <= LAST_OFFSET)
            .ok_or(FrameError::Malformed("offsets reach u64::MAX"))?;
        last_offset = offset;
        let timestamp_ms = u64_at(buf, at + 4) as i64;
        seen_max = seen_max.max(timestamp_ms);
        let key_len = u32_at(buf, at + 12);
        at += 16;
        let key = if key_len == NO_KEY {
            None
        } else {
            let len = key_len as usize;
            if buf.len() - at < len + 4 {
                return Err(runs_past);
            }
            let key = body.slice(at..at + len);
            at += len;
            Some(key)
        };
        if buf.len() - at < 4 {
            return Err(runs_past);
        }
        let value_len = u32_at(buf, at) as usize;
        at += 4;
        if buf.len() - at < value_len {
            return Err(runs_past);
        }
        let value = body.slice(at..at + value_len);
        at += value_len;
        each(DecodedRecord {
            offset,
            timestamp_ms,
            key,
            value,
        });
    }
    if at != buf.len() {
        return Err(FrameError::Malformed("bytes after the last record"));
    }
    if seen_max != max_timestamp_ms {
        return Err(FrameError::Malformed(
            "max timestamp differs from the records'",
        ));
    }
    Ok(BatchInfo {
        base_offset,
        record_count,
        max_timestamp_ms,
        last_offset,
        tag,
        has_commit: header.version == Version::Committed,
    })
}

/// The tag of a version 3 or 4 body at least as long as its minimal header.
fn read_tag(body: &[u8]) -> FrameTag {
    FrameTag {
        producer_id: u64_at(body, BODY_HEADER_LEN),
        sequence: u64_at(body, BODY_HEADER_LEN + 8),
    }
}

/// A version 4 body's commit as it is stored.
struct RawCommit<'a> {
    group: &'a str,
    topic: &'a str,
    partition: u32,
    next_offset: u64,
    /// Position of the first record.
    end: usize,
}

/// Reads the commit of a version 4 body whose length is at least its minimal header's.
fn read_commit(buf: &[u8]) -> Result<RawCommit<'_>, FrameError> {
    const RUNS_PAST: FrameError = FrameError::Malformed("commit runs past the end of the batch");
    let mut at = BODY_HEADER_LEN + TAG_LEN;
    let mut names = ["", ""];
    for name in &mut names {
        let len = buf.get(at..at + 2).ok_or(RUNS_PAST)?;
        let len = usize::from(u16::from_le_bytes([len[0], len[1]]));
        at += 2;
        let bytes = buf.get(at..at + len).ok_or(RUNS_PAST)?;
        *name = std::str::from_utf8(bytes)
            .map_err(|_| FrameError::Malformed("commit name is not UTF-8"))?;
        at += len;
    }
    if buf.len() < at + 12 {
        return Err(RUNS_PAST);
    }
    Ok(RawCommit {
        group: names[0],
        topic: names[1],
        partition: u32_at(buf, at),
        next_offset: u64_at(buf, at + 4),
        end: at + 12,
    })
}

/// The group commit of a version 4 frame whose body [`decode_body`] has verified (its tag
/// is the batch's); `None` for other versions.
pub(crate) fn verified_commit(
    header: &FrameHeader,
    body: &[u8],
) -> Result<Option<IntentCommit>, FrameError> {
    if header.version != Version::Committed {
        return Ok(None);
    }
    if body.len() < header.version.min_body_header_len() {
        return Err(FrameError::Malformed("body shorter than its own header"));
    }
    let raw = read_commit(body)?;
    Ok(Some(IntentCommit {
        group: raw.group.to_owned(),
        topic: raw.topic.to_owned(),
        partition: raw.partition,
        next_offset: raw.next_offset,
    }))
}

/// The tag of a frame whose header is `header`, once the body's checksum is verified;
/// `None` for a version 2 frame. Cheaper than [`decode_body`] when only the tag matters.
pub(crate) fn verified_tag(
    header: &FrameHeader,
    body: &[u8],
) -> Result<Option<FrameTag>, FrameError> {
    if body.len() != header.body_len as usize {
        return Err(FrameError::Short);
    }
    if !header.checksum_matches(body) {
        return Err(FrameError::BadChecksum);
    }
    if header.version == Version::Plain {
        return Ok(None);
    }
    if body.len() < BODY_HEADER_LEN + TAG_LEN {
        return Err(FrameError::Malformed("body shorter than its own header"));
    }
    Ok(Some(read_tag(body)))
}

/// Decodes a whole frame, header included; `frame` must hold exactly one frame.
pub(crate) fn decode_frame(frame: Bytes) -> Result<Batch, FrameError> {
    let header = decode_header(&frame)?;
    if frame.len() as u64 != header.frame_len() {
        return Err(FrameError::Short);
    }
    let body = frame.slice(HEADER_LEN..);
    let mut records = Vec::new();
    let info = decode_body(&header, &body, |r| records.push(r))?;
    Ok(Batch { info, records })
}

/// Decodes back-to-back frames from the start of `buf`, stopping at the first bad one.
/// Returns the decoded batches and why it stopped early, if it did.
pub(crate) fn decode_frames(buf: &[u8]) -> (Vec<Batch>, Option<FrameError>) {
    let buf = Bytes::copy_from_slice(buf);
    let mut batches = Vec::new();
    let mut at = 0usize;
    while at < buf.len() {
        let header = match decode_header(&buf[at..]) {
            Ok(header) => header,
            Err(e) => return (batches, Some(e)),
        };
        let len = header.frame_len();
        if ((buf.len() - at) as u64) < len {
            return (batches, Some(FrameError::Short));
        }
        match decode_frame(buf.slice(at..at + len as usize)) {
            Ok(batch) => batches.push(batch),
            Err(e) => return (batches, Some(e)),
        }
        at += len as usize;
    }
    (batches, None)
}

pub(crate) mod round_trip;
#[cfg(test)]
mod tests;
