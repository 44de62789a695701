use super::*;

fn intent() -> Intent {
    Intent {
        sequence: 17,
        producer: "pipeline/erp-to-crm/erp.sales-orders/3".into(),
        producer_id: producer_id("pipeline/erp-to-crm/erp.sales-orders/3"),
        commit: Some(IntentCommit {
            group: "erp-to-crm".into(),
            topic: "erp.sales-orders".into(),
            partition: 3,
            next_offset: 1234,
        }),
        batches: vec![
            IntentBatch {
                topic: "crm.orders".into(),
                partition: 0,
                end_offset: 99,
                records: vec![
                    Record::new("v1").with_key("k").with_timestamp(5),
                    Record::new("").with_key("").with_timestamp(-1),
                ],
            },
            IntentBatch {
                topic: "crm.audit".into(),
                partition: 2,
                end_offset: 0,
                records: vec![Record::new("no key").with_timestamp(i64::MAX)],
            },
        ],
    }
}

#[test]
fn entries_round_trip() {
    let intent = intent();
    let mut bytes = encode_start(11);
    let encoded = encode_intent(&intent);
    assert_eq!(
        encoded.len(),
        intent_len(
            &intent.producer,
            Some(("erp-to-crm", "erp.sales-orders")),
            intent
                .batches
                .iter()
                .map(|b| (b.topic.len(), records_len(&b.records)))
        ),
        "intent_len predicts the encoded length"
    );
    bytes.extend(&encoded);
    bytes.extend(encode_done(17));
    let without_commit = Intent {
        commit: None,
        sequence: 18,
        ..intent.clone()
    };
    bytes.extend(encode_intent(&without_commit));

    let (entries, good_len, stopped) = decode_entries(&Bytes::from(bytes.clone()));
    assert_eq!(stopped, None);
    assert_eq!(good_len, bytes.len());
    assert_eq!(
        entries,
        vec![
            Entry::Start { next_sequence: 11 },
            Entry::Intent(intent),
            Entry::Done { sequence: 17 },
            Entry::Intent(without_commit),
        ]
    );
}

#[test]
fn every_truncation_or_flipped_bit_of_an_entry_is_detected() {
    let entry = encode_intent(&intent());
    for len in 0..entry.len() {
        let (entries, good_len, stopped) = decode_entries(&Bytes::copy_from_slice(&entry[..len]));
        assert!(entries.is_empty() && good_len == 0);
        assert_eq!(stopped.is_some(), len > 0);
    }
    for byte in 0..entry.len() {
        for bit in 0..8 {
            let mut corrupt = entry.clone();
            corrupt[byte] ^= 1 << bit;
            assert!(
                decode_entry(&Bytes::from(corrupt)).is_err(),
                "flip of bit {bit} in byte {byte} went unnoticed"
            );
        }
    }
}

#[test]
fn a_bad_entry_stops_decoding_and_keeps_those_before() {
    let mut bytes = encode_start(1);
    let start_len = bytes.len();
    bytes.extend(encode_intent(&intent()));
    bytes.truncate(bytes.len() - 3);
    let (entries, good_len, stopped) = decode_entries(&Bytes::from(bytes));
    assert_eq!(entries, vec![Entry::Start { next_sequence: 1 }]);
    assert_eq!(good_len, start_len);
    assert_eq!(stopped, Some(EntryError::Short));
}

#[test]
fn producer_ids_are_stable() {
    // Part of the on-disk format: a change here strands the tags of existing frames.
    assert_eq!(producer_id(""), 0xf52a_15e9_a9b5_e89b);
    assert_eq!(
        producer_id("pipeline/erp-to-crm/erp.sales-orders/3"),
        0xa5de_c6c5_2a56_62a7
    );
    assert_ne!(producer_id("a"), producer_id("b"));
}

#[test]
fn only_each_producers_last_intent_without_done_is_unfinished() {
    let mut recovered = Recovered::default();
    let make = |sequence: u64, producer: &str| Intent {
        sequence,
        producer: producer.into(),
        ..intent()
    };
    for (sequence, producer) in [(1, "a"), (2, "b"), (3, "a"), (4, "c"), (5, "b")] {
        recovered.intents.insert(sequence, make(sequence, producer));
    }
    // "a" finished 3; "b"'s 2 has no done but 5 came after it; "c" finished nothing.
    recovered.done.extend([1, 3]);
    let unfinished: Vec<u64> = recovered.unfinished().iter().map(|i| i.sequence).collect();
    assert_eq!(unfinished, [4, 5]);
}
