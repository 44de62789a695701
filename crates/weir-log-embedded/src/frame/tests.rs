use std::path::Path;

use bytes::Bytes;

use super::*;

fn records() -> Vec<Record> {
    vec![
        Record::new("first").with_key("k").with_timestamp(7),
        Record::new("").with_key(""),
        Record::new("third"),
    ]
}

#[test]
fn round_trip_keeps_keys_values_and_timestamps() {
    let frame = encode_batch(42, &records(), 1000);
    assert_eq!(
        Ok(frame.len()),
        check_limits(&records(), 1 << 20, 1 << 20, false)
    );

    let batch = decode_frame(Bytes::from(frame)).expect("valid frame");
    assert_eq!(batch.info.base_offset, 42);
    let got: Vec<_> = batch
        .records
        .iter()
        .map(|r| (r.timestamp_ms, r.key.clone(), r.value.clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            (7, Some(Bytes::from("k")), Bytes::from("first")),
            (1000, Some(Bytes::new()), Bytes::new()),
            (1000, None, Bytes::from("third")),
        ]
    );
}

#[test]
fn every_flipped_bit_is_detected() {
    let frame = encode_batch(0, &records(), 1000);
    for byte in 0..frame.len() {
        for bit in 0..8 {
            let mut corrupt = frame.clone();
            corrupt[byte] ^= 1 << bit;
            assert!(
                decode_frame(Bytes::from(corrupt)).is_err(),
                "flip of bit {bit} in byte {byte} went unnoticed"
            );
        }
    }
}

#[test]
fn every_truncation_is_detected() {
    let frame = encode_batch(0, &records(), 1000);
    for len in 0..frame.len() {
        assert!(decode_frame(Bytes::copy_from_slice(&frame[..len])).is_err());
    }
}

#[test]
fn limits_name_the_offending_record_or_the_batch() {
    let records = vec![Record::new("ok"), Record::new("too long").with_key("k")];
    assert_eq!(
        check_limits(&records, 8, 1 << 20, false),
        Err(LimitError::Record { index: 1, size: 9 })
    );
    let size = check_limits(&records, 9, 1 << 20, false).expect("fits");
    assert_eq!(
        check_limits(&records, 9, size - 1, false),
        Err(LimitError::Batch { size })
    );
}

const TAG: FrameTag = FrameTag {
    producer_id: 0x0123_4567_89ab_cdef,
    sequence: 42,
};

#[test]
fn a_tagged_frame_round_trips_with_its_tag() {
    let frame = encode_tagged_batch(7, TAG, &records(), 1000);
    assert_eq!(frame[0], MAGIC_TAGGED);
    assert_eq!(
        Ok(frame.len()),
        check_limits(&records(), 1 << 20, 1 << 20, true)
    );
    assert_eq!(frame.len(), encode_batch(7, &records(), 1000).len() + 16);

    let batch = decode_frame(Bytes::from(frame.clone())).expect("valid frame");
    assert_eq!(batch.info.tag, Some(TAG));
    assert_eq!((batch.info.base_offset, batch.info.last_offset), (7, 9));
    let plain = decode_frame(Bytes::from(encode_batch(7, &records(), 1000))).expect("valid");
    assert_eq!(plain.info.tag, None);
    assert_eq!(batch.records, plain.records, "the tag changes no record");

    let header = decode_header(&frame).expect("header");
    assert_eq!(verified_tag(&header, &frame[HEADER_LEN..]), Ok(Some(TAG)));
    let mut corrupt = frame.clone();
    *corrupt.last_mut().expect("bytes") ^= 1;
    assert_eq!(
        verified_tag(&header, &corrupt[HEADER_LEN..]),
        Err(FrameError::BadChecksum)
    );
}

/// Asserts that every single flipped bit and every truncation of `frame` fails to decode.
fn assert_every_flip_and_cut_is_detected(frame: &[u8]) {
    for byte in 0..frame.len() {
        for bit in 0..8 {
            let mut corrupt = frame.to_vec();
            corrupt[byte] ^= 1 << bit;
            assert!(
                decode_frame(Bytes::from(corrupt)).is_err(),
                "flip of bit {bit} in byte {byte} went unnoticed"
            );
        }
    }
    for len in 0..frame.len() {
        assert!(decode_frame(Bytes::copy_from_slice(&frame[..len])).is_err());
    }
}

#[test]
fn every_flipped_bit_or_truncation_of_a_tagged_frame_is_detected() {
    // Flipping 0xB3 to 0xB2 must not turn the tag into records either.
    assert_every_flip_and_cut_is_detected(&encode_tagged_batch(0, TAG, &records(), 1000));
}

#[test]
fn plain_and_tagged_frames_decode_side_by_side() {
    let mut bytes = encode_batch(0, &records(), 1000);
    bytes.extend(encode_tagged_batch(3, TAG, &records(), 1000));
    bytes.extend(encode_batch(6, &records(), 1000));
    let (batches, stopped) = decode_frames(&bytes);
    assert_eq!(stopped, None);
    let tags: Vec<_> = batches.iter().map(|b| b.info.tag).collect();
    assert_eq!(tags, [None, Some(TAG), None]);
    let offsets: Vec<_> = batches.iter().map(|b| b.info.base_offset).collect();
    assert_eq!(offsets, [0, 3, 6]);
}

fn commit() -> IntentCommit {
    IntentCommit {
        group: "pipe".into(),
        topic: "orders.in".into(),
        partition: 3,
        next_offset: 1234,
    }
}

#[test]
fn a_committed_frame_round_trips_with_its_tag_and_commit() {
    let frame = encode_committed_batch(7, TAG, &commit(), &records(), 1000);
    assert_eq!(frame[0], MAGIC_COMMIT);
    let stamp = Stamp {
        tag: TAG,
        commit: Some(&commit()),
    };
    assert_eq!(frame.len(), frame_len(&records(), Some(stamp)));
    assert_eq!(
        frame.len(),
        encode_tagged_batch(7, TAG, &records(), 1000).len() + 16 + "pipe".len() + "orders.in".len()
    );

    let batch = decode_frame(Bytes::from(frame.clone())).expect("valid frame");
    assert_eq!(batch.info.tag, Some(TAG));
    assert!(batch.info.has_commit);
    assert_eq!((batch.info.base_offset, batch.info.last_offset), (7, 9));
    let plain = decode_frame(Bytes::from(encode_batch(7, &records(), 1000))).expect("valid");
    assert!(!plain.info.has_commit);
    assert_eq!(batch.records, plain.records, "the commit changes no record");

    let header = decode_header(&frame).expect("header");
    let body = &frame[HEADER_LEN..];
    assert_eq!(verified_tag(&header, body), Ok(Some(TAG)));
    assert_eq!(verified_commit(&header, body), Ok(Some(commit())));
    let tagged = encode_tagged_batch(7, TAG, &records(), 1000);
    let tagged_header = decode_header(&tagged).expect("header");
    assert_eq!(
        verified_commit(&tagged_header, &tagged[HEADER_LEN..]),
        Ok(None)
    );
}

#[test]
fn every_flipped_bit_or_truncation_of_a_committed_frame_is_detected() {
    assert_every_flip_and_cut_is_detected(&encode_committed_batch(
        0,
        TAG,
        &commit(),
        &records(),
        1000,
    ));
}

/// Rewrites a frame's checksum after its body was changed.
fn reseal(frame: &mut [u8]) {
    let crc = crc32c::crc32c(&frame[HEADER_LEN..]);
    frame[5..9].copy_from_slice(&crc.to_le_bytes());
}

#[test]
fn a_commit_with_a_bad_name_or_running_past_the_body_is_malformed() {
    let frame = encode_committed_batch(0, TAG, &commit(), &records(), 1000);
    // The group name's first byte, after the body header, the tag and group_len.
    let name_at = HEADER_LEN + BODY_HEADER_LEN + TAG_LEN + 2;
    let mut not_utf8 = frame.clone();
    not_utf8[name_at] = 0xFF;
    reseal(&mut not_utf8);
    assert_eq!(
        decode_frame(Bytes::from(not_utf8)),
        Err(FrameError::Malformed("commit name is not UTF-8"))
    );
    let mut too_long = frame.clone();
    too_long[name_at - 2..name_at].copy_from_slice(&u16::MAX.to_le_bytes());
    reseal(&mut too_long);
    assert_eq!(
        decode_frame(Bytes::from(too_long)),
        Err(FrameError::Malformed(
            "commit runs past the end of the batch"
        ))
    );
}

#[test]
fn plain_tagged_and_committed_frames_decode_side_by_side() {
    let mut bytes = encode_batch(0, &records(), 1000);
    bytes.extend(encode_committed_batch(3, TAG, &commit(), &records(), 1000));
    bytes.extend(encode_tagged_batch(6, TAG, &records(), 1000));
    let (batches, stopped) = decode_frames(&bytes);
    assert_eq!(stopped, None);
    let kinds: Vec<_> = batches
        .iter()
        .map(|b| (b.info.tag, b.info.has_commit))
        .collect();
    assert_eq!(
        kinds,
        [(None, false), (Some(TAG), true), (Some(TAG), false)]
    );
}

#[test]
fn a_frame_whose_offsets_reach_u64_max_is_refused() {
    let one = [Record::new("v")];
    let two = [Record::new("v"), Record::new("w")];
    let last_usable = u64::MAX - 1;
    let batch = decode_frame(Bytes::from(encode_batch(last_usable - 1, &two, 1))).expect("fits");
    assert_eq!(batch.info.last_offset, last_usable);
    let batch = decode_frame(Bytes::from(encode_batch(last_usable, &one, 1))).expect("fits");
    assert_eq!(batch.records[0].offset, last_usable);

    let refused = Err(FrameError::Malformed("offsets reach u64::MAX"));
    // A last offset of u64::MAX leaves no end offset one past it.
    assert_eq!(
        decode_frame(Bytes::from(encode_batch(u64::MAX, &one, 1))),
        refused
    );
    assert_eq!(
        decode_frame(Bytes::from(encode_batch(last_usable, &two, 1))),
        refused
    );
    let tagged = encode_tagged_batch(last_usable, TAG, &two, 1);
    assert_eq!(decode_frame(Bytes::from(tagged)), refused);
    let committed = encode_committed_batch(last_usable, TAG, &commit(), &two, 1);
    assert_eq!(decode_frame(Bytes::from(committed)), refused);

    // A delta that wraps past u64::MAX back to small offsets, as only a hand-built frame has.
    let mut wrapped = Vec::new();
    let records = [0, u32::MAX].map(|offset_delta| RecordRef {
        offset_delta,
        timestamp_ms: 1,
        key: None,
        value: b"v",
    });
    encode_into(&mut wrapped, u64::MAX - 5, None, records);
    assert_eq!(decode_frame(Bytes::from(wrapped.clone())), refused);
    let (batches, stopped) = decode_frames(&wrapped);
    assert_eq!((batches.len(), stopped), (0, refused.err()));
}

/// A record whose version 2 frame, read as a version 3 frame (its header taken for a
/// tag), holds another valid record: the magic bytes 0xB2 and 0xB3 are one bit apart.
fn record_that_also_parses_as_tagged() -> Record {
    let timestamp: i64 = 5;
    let payload = b"not what was written";
    let mut value = timestamp.to_le_bytes().to_vec();
    value.extend(NO_KEY.to_le_bytes());
    value.extend((payload.len() as u32).to_le_bytes());
    value.extend(payload);
    Record::new(value).with_timestamp(timestamp)
}

fn plain_frame_that_also_parses_as_tagged() -> Vec<u8> {
    encode_batch(0, &[record_that_also_parses_as_tagged()], 1)
}

#[test]
fn a_flip_between_version_magic_bytes_is_refused() {
    let frame = plain_frame_that_also_parses_as_tagged();
    assert!(decode_frame(Bytes::from(frame.clone())).is_ok());
    let mut flipped = frame;
    flipped[0] = MAGIC_TAGGED;
    let decoded = decode_frame(Bytes::from(flipped.clone()));
    assert_eq!(decoded, Err(FrameError::BadChecksum));
    assert_eq!(
        decode_frames(&flipped),
        (Vec::new(), Some(FrameError::BadChecksum))
    );
    let header = decode_header(&flipped).expect("header");
    assert_eq!(
        verified_tag(&header, &flipped[HEADER_LEN..]),
        Err(FrameError::BadChecksum)
    );
}

#[test]
fn the_checksum_covers_the_magic_byte_and_the_old_one_is_still_read() {
    let mut frame = encode_batch(3, &records(), 1000);
    let body_crc = crc32c::crc32c(&frame[HEADER_LEN..]);
    let with_magic = crc32c::crc32c_append(crc32c::crc32c(&[MAGIC]), &frame[HEADER_LEN..]);
    assert_eq!(u32_at(&frame, 5), with_magic);
    let new = decode_frame(Bytes::from(frame.clone())).expect("valid frame");

    // As written before the checksum covered the magic byte.
    reseal(&mut frame);
    assert_eq!(u32_at(&frame, 5), body_crc);
    assert_eq!(decode_frame(Bytes::from(frame)), Ok(new));
}

#[test]
fn the_round_trip_check_passes_the_frames_of_every_version() {
    let tags = [None, Some((TAG, None)), Some((TAG, Some(commit())))];
    for (stamp, gaps) in tags.into_iter().zip([None, Some(vec![0, 4]), None]) {
        let spec = round_trip::Spec {
            base_offset: 7,
            stamp,
            now_ms: 1000,
            records: records(),
            gaps,
        };
        round_trip::check(&spec, 0..1000);
    }
    round_trip::check_decoded(&encode_batch(7, &records(), 1000));
    round_trip::check_fuzz_input(&[]);
}

#[test]
fn the_round_trip_check_refuses_the_flip_to_another_version() {
    // Random records almost never parse as another version's body; this one does.
    let spec = round_trip::Spec {
        base_offset: 0,
        stamp: None,
        now_ms: 1,
        records: vec![record_that_also_parses_as_tagged()],
        gaps: None,
    };
    round_trip::check(&spec, []);
}

fn arb_spec() -> impl proptest::strategy::Strategy<Value = round_trip::Spec> {
    use proptest::{collection::vec, option, prelude::*};
    let base_offset = prop_oneof![0..1_000u64, any::<u64>(), (u64::MAX - 300)..=u64::MAX,];
    let tag = (any::<u64>(), any::<u64>()).prop_map(|(producer_id, sequence)| FrameTag {
        producer_id,
        sequence,
    });
    let commit = ("\\PC{0,12}", "\\PC{0,12}", any::<u32>(), any::<u64>()).prop_map(
        |(group, topic, partition, next_offset)| IntentCommit {
            group,
            topic,
            partition,
            next_offset,
        },
    );
    let stamp = option::of((tag, option::of(commit)));
    let record = (
        option::of(vec(any::<u8>(), 0..16)),
        vec(any::<u8>(), 0..48),
        option::of(any::<i64>()),
    )
        .prop_map(|(key, value, timestamp_ms)| Record {
            key: key.map(Bytes::from),
            value: Bytes::from(value),
            timestamp_ms,
        });
    let gap = prop_oneof![4 => 0..3u32, 1 => any::<u32>()];
    (
        base_offset,
        stamp,
        any::<i64>(),
        vec(record, 1..8),
        option::of(vec(gap, 0..8)),
    )
        .prop_map(
            |(base_offset, stamp, now_ms, records, gaps)| round_trip::Spec {
                base_offset,
                stamp,
                now_ms,
                records,
                gaps,
            },
        )
}

proptest::proptest! {
    #![proptest_config(proptest::test_runner::Config::with_cases(512))]

    /// Whatever the records, tag, commit and offsets, every decoder gives back what the
    /// encoder wrote (or refuses offsets that reach u64::MAX), and refuses every copy with
    /// a bit of the header or one of `flips` flipped, and every cut.
    #[test]
    fn frames_decode_to_what_was_encoded_and_damage_is_refused(
        spec in arb_spec(),
        flips in proptest::collection::vec(proptest::prelude::any::<usize>(), 0..64),
    ) {
        round_trip::check(&spec, flips);
    }

    /// The fuzz target's entry point holds for any input.
    #[test]
    fn fuzz_roundtrip_holds_for_random_bytes(
        bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600),
    ) {
        crate::fuzz_roundtrip(&bytes);
    }
}

#[test]
fn the_fuzz_seeds_pass_their_targets() {
    let seeds = |target: &str| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/seeds")
            .join(target);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .expect("the seeds directory")
            .map(|entry| std::fs::read(entry.expect("an entry").path()).expect("a seed"))
            .collect();
        assert!(!files.is_empty(), "no seeds in {}", dir.display());
        files.sort();
        files
    };
    for seed in seeds("decode") {
        crate::fuzz_decode(&seed);
    }
    for seed in seeds("roundtrip") {
        crate::fuzz_roundtrip(&seed);
    }
}
