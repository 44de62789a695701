use super::*;

fn sample() -> SegmentIndex {
    let mut index = SegmentIndex::new(100);
    let mut position = 0;
    for i in 0..50u64 {
        // Batches of 10 records, 1000 bytes, timestamps rising by batch but not in order
        // within the segment.
        let ts = if i == 7 { 10 } else { 1_000 + i as i64 * 10 };
        index.add_batch(position, 100 + i * 10, 100 + i * 10 + 9, ts, 1000);
        position += 1000;
    }
    index
}

#[test]
fn entries_are_sparse_and_lookups_land_at_or_before_the_offset() {
    let index = sample();
    assert_eq!(index.next_offset, 600);
    assert_eq!(index.log_len, 50_000);
    // 1000-byte batches: an entry every fifth batch (4096 bytes apart at least).
    assert_eq!(index.offsets.len(), 10);
    assert_eq!(index.position_for(0), 0);
    assert_eq!(index.position_for(100), 0);
    assert_eq!(index.position_for(149), 0);
    assert_eq!(index.position_for(150), 5000);
    assert_eq!(index.position_for(599), 45_000);
}

#[test]
fn time_lookups_start_where_every_earlier_record_is_older() {
    let index = sample();
    assert_eq!(index.scan_start_for_time(i64::MIN), 100);
    assert_eq!(index.scan_start_for_time(1_000), 100);
    // Batch 20 (offset 300) has timestamp 1200; every batch before it is older.
    let start = index.scan_start_for_time(1_200);
    assert!(start <= 300, "{start}");
    assert!(start >= 250, "{start}");
}

#[test]
fn files_round_trip_and_damage_is_detected() {
    let index = sample();
    let (offsets, times) = (index.encode_index(), index.encode_time_index());
    assert_eq!(
        SegmentIndex::decode(100, &offsets, &times, 50_000),
        Ok(index.clone())
    );
    assert!(matches!(
        SegmentIndex::decode(100, &offsets, &times, 49_000),
        Err(IndexError::Stale { .. })
    ));
    for at in 0..offsets.len() {
        let mut bad = offsets.clone();
        bad[at] ^= 0x04;
        assert!(
            SegmentIndex::decode(100, &bad, &times, 50_000).is_err(),
            "{at}"
        );
    }
    for at in 0..times.len() {
        let mut bad = times.clone();
        bad[at] ^= 0x04;
        assert!(
            SegmentIndex::decode(100, &offsets, &bad, 50_000).is_err(),
            "{at}"
        );
    }
    for len in 0..offsets.len() {
        assert!(SegmentIndex::decode(100, &offsets[..len], &times, 50_000).is_err());
    }
    let empty = SegmentIndex::new(7);
    assert_eq!(
        SegmentIndex::decode(7, &empty.encode_index(), &empty.encode_time_index(), 0),
        Ok(empty)
    );
}
