//! Batch frames: the unit in which records are written, checksummed and made durable.
//!
//! Pure encoding and decoding over byte buffers; the file handling is in `partition`.
//!
//! # Format (version 1)
//!
//! All integers are little endian.
//!
//! ```text
//! frame  = magic:u8 body_len:u32 crc:u32 body
//! body   = base_offset:u64 record_count:u32 record{record_count}
//! record = timestamp_ms:i64 key_len:u32 key:[u8; key_len] value_len:u32 value:[u8; value_len]
//! ```
//!
//! - `magic` is [`MAGIC`]; it doubles as the format version, so a later format picks
//!   another value.
//! - `body_len` is the length of `body` in bytes, so a frame takes `HEADER_LEN + body_len`.
//! - `crc` is the CRC32C (Castagnoli) of `body`.
//! - `key_len == u32::MAX` means the record has no key, which differs from an empty key.
//!
//! # Invariants
//!
//! - A frame holds at least one record, and its records fill `body` exactly.
//! - Record `i` of a frame has offset `base_offset + i`.
//! - A frame that fails any check here is treated as never written; see `partition` for
//!   what recovery does with it.

use bytes::{Buf, Bytes};

use crate::Record;

/// First byte of every version 1 frame.
pub(crate) const MAGIC: u8 = 0xB1;
/// `magic`, `body_len` and `crc`.
pub(crate) const HEADER_LEN: usize = 1 + 4 + 4;
/// `base_offset` and `record_count`.
const BODY_HEADER_LEN: usize = 8 + 4;
/// `timestamp_ms`, `key_len` and `value_len`.
const RECORD_HEADER_LEN: usize = 8 + 4 + 4;
const NO_KEY: u32 = u32::MAX;
/// Keeps every length below [`NO_KEY`] so it fits a `u32` field unambiguously.
const MAX_FIELD_LEN: usize = NO_KEY as usize - 1;

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
    #[error("base offset {found} where {expected} was expected")]
    NonContiguous { expected: u64, found: u64 },
}

/// Why a batch may not be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LimitError {
    /// Key plus value of record `index` take `size` bytes.
    Record { index: usize, size: usize },
    /// The frame would take `size` bytes.
    Batch { size: usize },
}

/// Checks `records` against the limits and returns the length of their frame.
pub(crate) fn check_limits(
    records: &[Record],
    max_record_bytes: usize,
    max_batch_bytes: usize,
) -> Result<usize, LimitError> {
    let max_record_bytes = max_record_bytes.min(MAX_FIELD_LEN);
    let mut body_len = BODY_HEADER_LEN;
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

/// Encodes `records` as one frame; records without a timestamp get `now_ms`.
///
/// `records` must be non-empty and have passed [`check_limits`], which keeps every length
/// cast below within `u32`.
pub(crate) fn encode_batch(base_offset: u64, records: &[Record], now_ms: i64) -> Vec<u8> {
    debug_assert!(!records.is_empty());
    let mut buf = Vec::with_capacity(
        HEADER_LEN
            + BODY_HEADER_LEN
            + records
                .iter()
                .map(|r| RECORD_HEADER_LEN + r.key.as_ref().map_or(0, Bytes::len) + r.value.len())
                .sum::<usize>(),
    );
    buf.push(MAGIC);
    buf.extend_from_slice(&[0; 8]); // body_len and crc, filled in below
    buf.extend_from_slice(&base_offset.to_le_bytes());
    buf.extend_from_slice(&(records.len() as u32).to_le_bytes());
    for record in records {
        buf.extend_from_slice(&record.timestamp_ms.unwrap_or(now_ms).to_le_bytes());
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
    let body_len = (buf.len() - HEADER_LEN) as u32;
    let crc = crc32c::crc32c(&buf[HEADER_LEN..]);
    buf[1..5].copy_from_slice(&body_len.to_le_bytes());
    buf[5..9].copy_from_slice(&crc.to_le_bytes());
    buf
}

/// The fixed-size start of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FrameHeader {
    pub(crate) body_len: u32,
    crc: u32,
}

impl FrameHeader {
    pub(crate) fn frame_len(&self) -> u64 {
        HEADER_LEN as u64 + u64::from(self.body_len)
    }
}

/// A decoded frame.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Batch {
    pub(crate) base_offset: u64,
    pub(crate) records: Vec<DecodedRecord>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DecodedRecord {
    pub(crate) timestamp_ms: i64,
    pub(crate) key: Option<Bytes>,
    pub(crate) value: Bytes,
}

/// Decodes the first [`HEADER_LEN`] bytes of `buf`.
pub(crate) fn decode_header(buf: &[u8]) -> Result<FrameHeader, FrameError> {
    let Some(header) = buf.get(..HEADER_LEN) else {
        return Err(FrameError::Short);
    };
    let mut header = header;
    let magic = header.get_u8();
    if magic != MAGIC {
        return Err(FrameError::BadMagic(magic));
    }
    let body_len = header.get_u32_le();
    let crc = header.get_u32_le();
    if (body_len as usize) < BODY_HEADER_LEN {
        return Err(FrameError::Malformed("body shorter than its own header"));
    }
    Ok(FrameHeader { body_len, crc })
}

/// Verifies and decodes the body that follows `header`. Records share `body`'s memory.
pub(crate) fn decode_body(header: &FrameHeader, body: Bytes) -> Result<Batch, FrameError> {
    if body.len() != header.body_len as usize {
        return Err(FrameError::Short);
    }
    if crc32c::crc32c(&body) != header.crc {
        return Err(FrameError::BadChecksum);
    }
    let mut cursor = Cursor(body);
    let base_offset = cursor.u64()?;
    let record_count = cursor.u32()?;
    if record_count == 0 {
        return Err(FrameError::Malformed("batch without records"));
    }
    if base_offset.checked_add(u64::from(record_count)).is_none() {
        return Err(FrameError::Malformed("offsets overflow"));
    }
    // The count is not trusted for allocation until the records are read.
    let capacity = (record_count as usize).min(cursor.0.len() / RECORD_HEADER_LEN);
    let mut records = Vec::with_capacity(capacity);
    for _ in 0..record_count {
        let timestamp_ms = cursor.i64()?;
        let key = match cursor.u32()? {
            NO_KEY => None,
            len => Some(cursor.bytes(len)?),
        };
        let value_len = cursor.u32()?;
        let value = cursor.bytes(value_len)?;
        records.push(DecodedRecord {
            timestamp_ms,
            key,
            value,
        });
    }
    if !cursor.0.is_empty() {
        return Err(FrameError::Malformed("bytes after the last record"));
    }
    Ok(Batch {
        base_offset,
        records,
    })
}

/// Decodes a whole frame, header included.
pub(crate) fn decode_frame(mut frame: Bytes) -> Result<Batch, FrameError> {
    let header = decode_header(&frame)?;
    let body = frame.split_off(HEADER_LEN);
    decode_body(&header, body)
}

/// Bounds-checked reads; `Bytes`' own getters panic when short.
struct Cursor(Bytes);

impl Cursor {
    fn need(&self, len: usize) -> Result<(), FrameError> {
        if self.0.len() < len {
            return Err(FrameError::Malformed(
                "record runs past the end of the batch",
            ));
        }
        Ok(())
    }

    fn u32(&mut self) -> Result<u32, FrameError> {
        self.need(4)?;
        Ok(self.0.get_u32_le())
    }

    fn u64(&mut self) -> Result<u64, FrameError> {
        self.need(8)?;
        Ok(self.0.get_u64_le())
    }

    fn i64(&mut self) -> Result<i64, FrameError> {
        self.need(8)?;
        Ok(self.0.get_i64_le())
    }

    fn bytes(&mut self, len: u32) -> Result<Bytes, FrameError> {
        let len = len as usize;
        self.need(len)?;
        Ok(self.0.split_to(len))
    }
}

#[cfg(test)]
mod tests;
