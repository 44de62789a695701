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
    assert_eq!(Ok(frame.len()), check_limits(&records(), 1 << 20, 1 << 20));

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
        check_limits(&records, 8, 1 << 20),
        Err(LimitError::Record { index: 1, size: 9 })
    );
    let size = check_limits(&records, 9, 1 << 20).expect("fits");
    assert_eq!(
        check_limits(&records, 9, size - 1),
        Err(LimitError::Batch { size })
    );
}
