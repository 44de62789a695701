//! The frame codec checked against itself: records in, one frame out of the real encoder,
//! the same records (offsets, keys, values, timestamps, tag and commit) back out of every
//! decoder, and no damaged copy of the frame (one bit flipped, or cut short) decoded at all.
//!
//! Used by the property tests in `frame::tests` with specs proptest generates, and by the
//! `roundtrip` fuzz target through `fuzz_roundtrip`, which derives a spec from raw bytes
//! with [`check_fuzz_input`]. The other way round, [`check_decoded`] (run by
//! `fuzz_decode`, so by the `decode` fuzz target) checks that whatever bytes the decoders
//! accept are exactly what the encoder writes for what they decoded. Every check panics
//! on failure, so a fuzzer reports it.

use bytes::Bytes;

use super::{
    Batch, BatchInfo, DecodedRecord, FrameError, FrameTag, HEADER_LEN, LAST_OFFSET,
    MAX_COMMIT_NAME_LEN, RecordRef, Stamp, check_limits, decode_frame, decode_frames,
    decode_header, encode_into, encode_records_into, frame_len, verified_commit, verified_tag,
};
use crate::{Record, journal::IntentCommit};

/// One frame to encode: its records, how they are numbered, and how it is stamped.
#[derive(Debug, Clone)]
pub(crate) struct Spec {
    pub(crate) base_offset: u64,
    /// A tag makes a version 3 frame; a tag with a commit a version 4 one.
    pub(crate) stamp: Option<(FrameTag, Option<IntentCommit>)>,
    /// The time given to records without a timestamp.
    pub(crate) now_ms: i64,
    /// At least one; a spec without records checks nothing.
    pub(crate) records: Vec<Record>,
    /// `None`: dense offsets from `base_offset`, encoded as an append does
    /// ([`encode_records_into`]). `Some(gaps)`: offsets skipping `gaps[i]` before record
    /// `i` (missing gaps are 0), encoded as compaction does ([`encode_into`]); records
    /// whose delta would not fit a `u32` are left out.
    pub(crate) gaps: Option<Vec<u32>>,
}

impl Spec {
    /// The offset delta of each record to encode: fewer than the records only if the gaps
    /// run past `u32::MAX`.
    fn deltas(&self) -> Vec<u32> {
        let Some(gaps) = &self.gaps else {
            return (0..self.records.len()).map(|i| i as u32).collect();
        };
        let mut deltas = Vec::with_capacity(self.records.len());
        let mut next = Some(0u32);
        for i in 0..self.records.len() {
            let gap = gaps.get(i).copied().unwrap_or(0);
            let Some(delta) = next.and_then(|n| n.checked_add(gap)) else {
                break;
            };
            deltas.push(delta);
            next = delta.checked_add(1);
        }
        deltas
    }
}

/// Encodes `spec` and panics unless every decoder gives back exactly what was encoded, or
/// refuses the frame because its offsets reach `u64::MAX`; and unless every copy of the
/// frame with one bit flipped (each bit of the fixed header, and bit `b % bits` for each
/// `b` of `flips`) or cut short is refused.
pub(crate) fn check(spec: &Spec, flips: impl IntoIterator<Item = usize>) {
    let deltas = spec.deltas();
    let records = &spec.records[..deltas.len()];
    if records.is_empty() {
        return;
    }
    let stamp = spec.stamp.as_ref().map(|(tag, commit)| Stamp {
        tag: *tag,
        commit: commit.as_ref(),
    });
    if let Some(commit) = stamp.and_then(|s| s.commit) {
        assert!(
            commit.group.len() <= MAX_COMMIT_NAME_LEN && commit.topic.len() <= MAX_COMMIT_NAME_LEN,
            "a spec's commit names must fit the frame"
        );
    }
    let timestamp = |r: &Record| r.timestamp_ms.unwrap_or(spec.now_ms);
    let max_timestamp_ms = records.iter().map(timestamp).max().unwrap_or(i64::MIN);

    let mut frame = Vec::new();
    if spec.gaps.is_none() {
        let returned =
            encode_records_into(&mut frame, spec.base_offset, stamp, records, spec.now_ms);
        assert_eq!(
            returned, max_timestamp_ms,
            "encode_records_into's max timestamp"
        );
        assert_eq!(frame.len(), frame_len(records, stamp), "frame_len");
        if stamp.is_none_or(|s| s.commit.is_none()) {
            let limits = check_limits(records, usize::MAX, usize::MAX, stamp.is_some());
            assert_eq!(limits, Ok(frame.len()), "check_limits");
        }
    } else {
        let refs = records
            .iter()
            .zip(&deltas)
            .map(|(r, &offset_delta)| RecordRef {
                offset_delta,
                timestamp_ms: timestamp(r),
                key: r.key.as_deref(),
                value: &r.value,
            });
        encode_into(&mut frame, spec.base_offset, stamp, refs);
    }

    let offsets: Option<Vec<u64>> = deltas
        .iter()
        .map(|&d| {
            spec.base_offset
                .checked_add(u64::from(d))
                .filter(|&o| o <= LAST_OFFSET)
        })
        .collect();
    let frame = Bytes::from(frame);
    match offsets {
        Some(offsets) => {
            let expected = Batch {
                info: BatchInfo {
                    base_offset: spec.base_offset,
                    record_count: records.len() as u32,
                    max_timestamp_ms,
                    last_offset: *offsets.last().expect("records"),
                    tag: stamp.map(|s| s.tag),
                    has_commit: stamp.is_some_and(|s| s.commit.is_some()),
                },
                records: records
                    .iter()
                    .zip(offsets)
                    .map(|(r, offset)| DecodedRecord {
                        offset,
                        timestamp_ms: timestamp(r),
                        key: r.key.clone(),
                        value: r.value.clone(),
                    })
                    .collect(),
            };
            assert_eq!(
                decode_frame(frame.clone()),
                Ok(expected.clone()),
                "decode_frame"
            );
            assert_eq!(
                decode_frames(&frame),
                (vec![expected], None),
                "decode_frames"
            );
            let header = decode_header(&frame).expect("the frame's header decodes");
            let body = &frame[HEADER_LEN..];
            assert_eq!(
                verified_tag(&header, body),
                Ok(stamp.map(|s| s.tag)),
                "verified_tag"
            );
            let commit = stamp.and_then(|s| s.commit).cloned();
            assert_eq!(
                verified_commit(&header, body),
                Ok(commit),
                "verified_commit"
            );
        }
        None => {
            let refused = FrameError::Malformed("offsets reach u64::MAX");
            assert_eq!(
                decode_frame(frame.clone()),
                Err(refused.clone()),
                "decode_frame"
            );
            assert_eq!(
                decode_frames(&frame),
                (Vec::new(), Some(refused)),
                "decode_frames"
            );
        }
    }

    let bits = frame.len() * 8;
    for bit in (0..HEADER_LEN * 8).chain(flips.into_iter().map(|b| b % bits)) {
        let mut flipped = frame.to_vec();
        flipped[bit / 8] ^= 1 << (bit % 8);
        let decoded = decode_frame(Bytes::copy_from_slice(&flipped));
        assert!(
            decoded.is_err(),
            "flipping bit {} of byte {} went unnoticed: {decoded:?}",
            bit % 8,
            bit / 8
        );
        let (batches, _) = decode_frames(&flipped);
        assert!(
            batches.is_empty(),
            "flipping bit {} of byte {} went unnoticed by decode_frames: {batches:?}",
            bit % 8,
            bit / 8
        );
    }
    for len in 0..frame.len() {
        let cut = frame.slice(..len);
        assert!(
            decode_frame(cut).is_err(),
            "a cut to {len} bytes went unnoticed"
        );
    }
    for len in [0, 1, HEADER_LEN, frame.len() / 2, frame.len() - 1] {
        let (batches, stopped) = decode_frames(&frame[..len.min(frame.len() - 1)]);
        assert!(
            batches.is_empty() && (len == 0 || stopped.is_some()),
            "a cut to {len} bytes went unnoticed by decode_frames: {batches:?}"
        );
    }
}

/// Panics unless the frame decoders agree about `bytes`, whatever they are: each frame
/// [`decode_frames`] accepts is byte for byte what the encoder writes for the records, tag
/// and commit decoded from it (its checksum in either accepted form), [`verified_tag`] and
/// [`verified_commit`] say the same of it, and [`decode_frame`] accepts `bytes` exactly
/// when they are one such frame, decoding it the same way.
pub(crate) fn check_decoded(bytes: &[u8]) {
    let (batches, stopped) = decode_frames(bytes);
    let mut at = 0;
    for batch in &batches {
        let header = decode_header(&bytes[at..]).expect("a decoded frame's header decodes");
        let end = at + header.frame_len() as usize;
        let body = &bytes[at + HEADER_LEN..end];
        assert_eq!(
            verified_tag(&header, body),
            Ok(batch.info.tag),
            "verified_tag"
        );
        let commit = verified_commit(&header, body).expect("a decoded frame's commit");
        assert_eq!(commit.is_some(), batch.info.has_commit, "verified_commit");
        let stamp = batch.info.tag.map(|tag| Stamp {
            tag,
            commit: commit.as_ref(),
        });
        let base_offset = batch.info.base_offset;
        let mut encoded = Vec::new();
        encode_into(
            &mut encoded,
            base_offset,
            stamp,
            batch.records.iter().map(|r| RecordRef {
                offset_delta: u32::try_from(r.offset - base_offset).expect("a u32 delta"),
                timestamp_ms: r.timestamp_ms,
                key: r.key.as_deref(),
                value: &r.value,
            }),
        );
        // All but the checksum, which an old frame has in its old form.
        assert_eq!(encoded[..5], bytes[at..at + 5], "a decoded frame's header");
        assert_eq!(encoded[9..], bytes[at + 9..end], "a decoded frame's body");
        at = end;
    }
    assert_eq!(
        stopped.is_none(),
        at == bytes.len(),
        "decode_frames stopped at {at}"
    );
    match decode_frame(Bytes::copy_from_slice(bytes)) {
        Ok(batch) => assert_eq!((batches, stopped), (vec![batch], None), "decode_frame"),
        Err(error) => assert!(
            batches.len() != 1 || stopped.is_some(),
            "decode_frame refused ({error}) the one frame decode_frames accepted"
        ),
    }
}

/// Derives a [`Spec`] and bits to flip from arbitrary bytes and [`check`]s it. Any input
/// makes some spec, so a fuzzer's mutations all exercise the codec.
pub(crate) fn check_fuzz_input(bytes: &[u8]) {
    let mut input = Input(bytes);
    let flags = input.byte();
    let base_offset = if flags & 0x10 != 0 {
        // Near the end more often than chance would put it.
        u64::MAX - u64::from(input.byte())
    } else {
        input.u64()
    };
    let now_ms = input.u64() as i64;
    let stamp = match flags & 0b11 {
        0 => None,
        version => {
            let tag = FrameTag {
                producer_id: input.u64(),
                sequence: input.u64(),
            };
            let commit = (version >= 2).then(|| {
                let group = input.text();
                let topic = input.text();
                IntentCommit {
                    group,
                    topic,
                    partition: input.u64() as u32,
                    next_offset: input.u64(),
                }
            });
            Some((tag, commit))
        }
    };
    let flips: Vec<usize> = (0..4).map(|_| usize::from(input.u16())).collect();
    let sparse = flags & 0x04 != 0;
    let mut records = Vec::new();
    let mut gaps = Vec::new();
    while !input.0.is_empty() && records.len() < 64 {
        let record_flags = input.byte();
        gaps.push(match record_flags & 0b11 {
            0 => 0,
            1 => u32::from(input.byte()),
            _ => input.u64() as u32,
        });
        let timestamp_ms = (record_flags & 0x04 != 0).then(|| input.u64() as i64);
        let key = (record_flags & 0x08 != 0).then(|| {
            let len = usize::from(input.byte());
            Bytes::copy_from_slice(input.take(len))
        });
        let len = if record_flags & 0x10 != 0 {
            usize::from(input.u16())
        } else {
            usize::from(input.byte())
        };
        let value = Bytes::copy_from_slice(input.take(len));
        records.push(Record {
            key,
            value,
            timestamp_ms,
        });
    }
    if records.is_empty() {
        records.push(Record::new(Bytes::new()));
    }
    let spec = Spec {
        base_offset,
        stamp,
        now_ms,
        records,
        gaps: sparse.then_some(gaps),
    };
    check(&spec, flips);
}

/// Fuzz bytes read from the front; reads past the end give zeros.
struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn take(&mut self, len: usize) -> &'a [u8] {
        let (taken, rest) = self.0.split_at(len.min(self.0.len()));
        self.0 = rest;
        taken
    }

    fn byte(&mut self) -> u8 {
        self.take(1).first().copied().unwrap_or(0)
    }

    fn u16(&mut self) -> u16 {
        let mut bytes = [0; 2];
        let taken = self.take(2);
        bytes[..taken.len()].copy_from_slice(taken);
        u16::from_le_bytes(bytes)
    }

    fn u64(&mut self) -> u64 {
        let mut bytes = [0; 8];
        let taken = self.take(8);
        bytes[..taken.len()].copy_from_slice(taken);
        u64::from_le_bytes(bytes)
    }

    /// A name of up to 255 bytes of input, made UTF-8.
    fn text(&mut self) -> String {
        let len = usize::from(self.byte());
        String::from_utf8_lossy(self.take(len)).into_owned()
    }
}
