use std::{collections::BTreeSet, fs, path::PathBuf, time::Duration};

use tempfile::TempDir;

use super::*;

fn open(dir: &TempDir) -> Log {
    Log::open(dir.path(), LogOptions::default()).expect("open log")
}

fn log_file(dir: &TempDir, topic: &str, partition: u32) -> PathBuf {
    dir.path()
        .join("topics")
        .join(topic)
        .join(partition.to_string())
        .join("00000000000000000000.log")
}

fn file_len(path: &Path) -> u64 {
    fs::metadata(path).expect("metadata").len()
}

fn values(records: &[StoredRecord]) -> Vec<&[u8]> {
    records.iter().map(|r| r.value.as_ref()).collect()
}

async fn append_values(log: &Log, topic: &str, values: &[&str]) -> Vec<RecordPosition> {
    let records = values.iter().map(|v| Record::new(v.to_string())).collect();
    log.append_to(topic, 0, records).await.expect("append")
}

#[tokio::test]
async fn append_read_round_trip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(&dir);
    assert!(log.create_topic("orders", 1).expect("create"));

    let positions = log
        .append(
            "orders",
            vec![
                Record::new("a").with_key("k1").with_timestamp(1_000),
                Record::new("b"),
                Record::new("").with_key(""),
            ],
        )
        .await
        .expect("append");
    let offsets: Vec<_> = positions.iter().map(|p| (p.partition, p.offset)).collect();
    assert_eq!(offsets, [(0, 0), (0, 1), (0, 2)]);

    let records = log.read("orders", 0, 0, 10).expect("read");
    assert_eq!(values(&records), [&b"a"[..], b"b", b""]);
    assert_eq!(records[0].key, Some(Bytes::from("k1")));
    assert_eq!(records[0].timestamp_ms, 1_000);
    assert_eq!(records[1].key, None);
    assert!(records[1].timestamp_ms > 1_600_000_000_000, "stamped now");
    assert_eq!(records[2].key, Some(Bytes::new()));

    assert_eq!(log.read("orders", 0, 1, 1).expect("read").len(), 1);
    assert!(
        log.read("orders", 0, 3, 10)
            .expect("read at end")
            .is_empty()
    );
    assert_eq!(log.end_offset("orders", 0).expect("end"), 3);
    let info = log.topic("orders").expect("topic info");
    assert_eq!((info.partitions, info.end_offsets), (1, vec![3]));
}

#[tokio::test]
async fn keys_hash_to_stable_partitions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys: Vec<String> = (0..50).map(|i| format!("customer-{i}")).collect();
    let expected: Vec<u32> = keys
        .iter()
        .map(|k| partitioner::partition_for_key(k.as_bytes(), 8))
        .collect();
    assert!(
        expected.iter().collect::<BTreeSet<_>>().len() > 1,
        "keys spread"
    );

    for _ in 0..2 {
        let log = open(&dir);
        log.create_topic("t", 8).expect("create");
        for _ in 0..2 {
            let records = keys.iter().map(|k| Record::new("v").with_key(k.clone()));
            let positions = log.append("t", records.collect()).await.expect("append");
            let partitions: Vec<u32> = positions.iter().map(|p| p.partition).collect();
            assert_eq!(partitions, expected);
        }
    }

    // Records without a key go round robin.
    let log = open(&dir);
    let positions = log
        .append("t", (0..8).map(|_| Record::new("v")).collect())
        .await
        .expect("append");
    let partitions: BTreeSet<u32> = positions.iter().map(|p| p.partition).collect();
    assert_eq!(partitions.len(), 8);
}

#[tokio::test]
async fn offsets_stay_dense_across_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let log = open(&dir);
        log.create_topic("t", 2).expect("create");
        append_values(&log, "t", &["a", "b"]).await;
        append_values(&log, "t", &["c"]).await;
    }
    let log = open(&dir);
    assert!(!log.create_topic("t", 2).expect("exists"));
    assert_eq!(log.topic("t").expect("info").end_offsets, [3, 0]);
    let positions = append_values(&log, "t", &["d", "e"]).await;
    assert_eq!(positions[0].offset, 3);
    assert_eq!(positions[1].offset, 4);
    let records = log.read("t", 0, 0, 100).expect("read");
    assert_eq!(
        records.iter().map(|r| r.offset).collect::<Vec<_>>(),
        [0, 1, 2, 3, 4]
    );
    assert_eq!(values(&records), [&b"a"[..], b"b", b"c", b"d", b"e"]);
}

#[tokio::test]
async fn a_torn_batch_disappears_whole_and_earlier_batches_stay() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = log_file(&dir, "t", 0);
    let (good_len, full_len) = {
        let log = open(&dir);
        log.create_topic("t", 1).expect("create");
        append_values(&log, "t", &["a", "b", "c"]).await;
        let good_len = file_len(&path);
        append_values(&log, "t", &["d", "e", "f", "g", "h"]).await;
        (good_len, file_len(&path))
    };
    let file = OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("open file");
    file.set_len(good_len + (full_len - good_len) / 2)
        .expect("cut mid-batch");
    drop(file);

    let log = open(&dir);
    assert_eq!(log.end_offset("t", 0).expect("end"), 3);
    let records = log.read("t", 0, 0, 100).expect("read");
    assert_eq!(values(&records), [&b"a"[..], b"b", b"c"]);
    assert_eq!(file_len(&path), good_len);
    assert_eq!(append_values(&log, "t", &["i"]).await[0].offset, 3);
}

#[tokio::test]
async fn a_bit_flip_in_the_last_batch_drops_it_on_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = log_file(&dir, "t", 0);
    let good_len = {
        let log = open(&dir);
        log.create_topic("t", 1).expect("create");
        append_values(&log, "t", &["a"]).await;
        append_values(&log, "t", &["b", "c"]).await;
        let good_len = file_len(&path);
        append_values(&log, "t", &["flipped", "x"]).await;
        good_len
    };
    let mut bytes = fs::read(&path).expect("read file");
    let flip_at = bytes.len() - 3;
    bytes[flip_at] ^= 0x10;
    fs::write(&path, bytes).expect("write file");

    let log = open(&dir);
    assert_eq!(log.end_offset("t", 0).expect("end"), 3);
    assert_eq!(
        values(&log.read("t", 0, 0, 100).expect("read")),
        [&b"a"[..], b"b", b"c"]
    );
    assert_eq!(file_len(&path), good_len);
}

#[tokio::test]
async fn garbage_after_valid_data_is_truncated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = log_file(&dir, "t", 0);
    let good_len = {
        let log = open(&dir);
        log.create_topic("t", 1).expect("create");
        append_values(&log, "t", &["a", "b"]).await;
        file_len(&path)
    };
    let mut bytes = fs::read(&path).expect("read file");
    bytes.extend((0..100u8).map(|i| i.wrapping_mul(37)));
    fs::write(&path, bytes).expect("write file");

    {
        let log = open(&dir);
        assert_eq!(file_len(&path), good_len);
        assert_eq!(log.end_offset("t", 0).expect("end"), 2);
        append_values(&log, "t", &["c"]).await;
    }
    let log = open(&dir);
    assert_eq!(
        values(&log.read("t", 0, 0, 100).expect("read")),
        [&b"a"[..], b"b", b"c"]
    );
}

#[tokio::test]
async fn a_valid_frame_with_a_repeated_base_offset_is_truncated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = log_file(&dir, "t", 0);
    let good_len = {
        let log = open(&dir);
        log.create_topic("t", 1).expect("create");
        append_values(&log, "t", &["a"]).await;
        file_len(&path)
    };
    // The same frame again: checksum fine, but offset 0 where 1 is due.
    let mut bytes = fs::read(&path).expect("read file");
    bytes.extend_from_within(..);
    fs::write(&path, bytes).expect("write file");

    let log = open(&dir);
    assert_eq!(log.end_offset("t", 0).expect("end"), 1);
    assert_eq!(file_len(&path), good_len);
}

#[tokio::test]
async fn wait_for_wakes_on_append() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(&dir);
    log.create_topic("t", 1).expect("create");
    append_values(&log, "t", &["a"]).await;

    // Offset 0 exists already.
    log.wait_for("t", 0, 0).await.expect("wait for 0");
    let pending = tokio::time::timeout(Duration::from_millis(20), log.wait_for("t", 0, 1)).await;
    assert!(pending.is_err(), "offset 1 does not exist yet");

    let waiter = tokio::spawn({
        let log = log.clone();
        async move { log.wait_for("t", 0, 1).await }
    });
    tokio::task::yield_now().await;
    append_values(&log, "t", &["b"]).await;
    tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("waiter woke")
        .expect("waiter task")
        .expect("wait_for");
}

#[tokio::test]
async fn committed_offsets_survive_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let log = open(&dir);
        log.create_topic("t", 2).expect("create");
        append_values(&log, "t", &["a", "b", "c"]).await;
        assert_eq!(log.committed_offset("billing", "t", 0).expect("get"), None);
        log.commit_offset("billing", "t", 0, 2).expect("commit");
        log.commit_offset("billing", "t", 0, 3).expect("commit");
        log.commit_offset("billing", "t", 1, 0).expect("commit");
        log.commit_offset("audit", "t", 0, 1).expect("commit");

        let err = log
            .commit_offset("billing", "t", 0, 4)
            .expect_err("past the end");
        assert!(matches!(err, Error::OffsetOutOfRange { .. }), "{err}");
        let err = log
            .commit_offset("bad/group", "t", 0, 0)
            .expect_err("bad name");
        assert!(matches!(err, Error::InvalidGroupName { .. }), "{err}");
    }
    let log = open(&dir);
    assert_eq!(
        log.committed_offset("billing", "t", 0).expect("get"),
        Some(3)
    );
    assert_eq!(
        log.committed_offset("billing", "t", 1).expect("get"),
        Some(0)
    );
    assert_eq!(log.committed_offset("audit", "t", 0).expect("get"), Some(1));
    assert_eq!(log.committed_offset("audit", "t", 1).expect("get"), None);
    assert!(matches!(
        log.committed_offset("billing", "nope", 0),
        Err(Error::UnknownTopic { .. })
    ));
}

#[tokio::test]
async fn a_record_too_large_is_rejected_and_nothing_is_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = LogOptions {
        max_record_bytes: 8,
        max_batch_bytes: 1024,
    };
    let log = Log::open(dir.path(), opts).expect("open");
    log.create_topic("t", 2).expect("create");

    let records = vec![
        Record::new("small").with_key("k"),
        Record::new("exactly8"),
        Record::new("far too large").with_key("k"),
    ];
    let err = log.append("t", records).await.expect_err("too large");
    assert!(
        matches!(
            err,
            Error::RecordTooLarge {
                index: 2,
                size: 14,
                max: 8,
                ..
            }
        ),
        "{err}"
    );
    let many = (0..100).map(|_| Record::new("12345678")).collect();
    let err = log
        .append_to("t", 1, many)
        .await
        .expect_err("batch too big");
    assert!(
        matches!(err, Error::BatchTooLarge { partition: 1, .. }),
        "{err}"
    );

    assert_eq!(log.topic("t").expect("info").end_offsets, [0, 0]);
    assert_eq!(file_len(&log_file(&dir, "t", 0)), 0);
    assert_eq!(file_len(&log_file(&dir, "t", 1)), 0);
}

#[test]
fn invalid_topic_names_and_counts_are_rejected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(&dir);
    let too_long = "a".repeat(250);
    for name in ["", ".", "..", "a/b", "a b", "ü", "../x", too_long.as_str()] {
        let err = log.create_topic(name, 1).expect_err(name);
        assert!(
            matches!(err, Error::InvalidTopicName { .. }),
            "{name}: {err}"
        );
    }
    for name in ["a", "a.b_c-D9", "...", "a".repeat(249).as_str()] {
        assert!(log.create_topic(name, 1).expect(name), "{name}");
    }

    let err = log.create_topic("zero", 0).expect_err("no partitions");
    assert!(matches!(err, Error::InvalidPartitionCount { .. }), "{err}");
    let err = log.create_topic("a", 2).expect_err("count differs");
    assert!(
        matches!(
            err,
            Error::TopicExists {
                existing: 1,
                requested: 2,
                ..
            }
        ),
        "{err}"
    );
    assert!(!log.create_topic("a", 1).expect("same count"));
    let names: Vec<_> = log.topics().into_iter().map(|t| t.name).collect();
    assert_eq!(names.len(), 4);
    assert!(names.is_sorted());
}

#[tokio::test]
async fn unknown_topics_and_partitions_say_what_to_do() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(&dir);
    log.create_topic("t", 2).expect("create");

    let err = log
        .append("x", vec![Record::new("v")])
        .await
        .expect_err("unknown topic");
    assert_eq!(
        err.to_string(),
        "topic \"x\" does not exist; create it with PUT /v1/topics/x or declare it in weir.toml"
    );
    let err = log.read("t", 2, 0, 1).expect_err("unknown partition");
    assert!(matches!(
        err,
        Error::UnknownPartition {
            partition: 2,
            partitions: 2,
            ..
        }
    ));
    assert!(log.append_to("t", 5, vec![]).await.is_err());
    assert!(
        log.append_to("t", 1, vec![])
            .await
            .expect("empty")
            .is_empty()
    );
}

#[test]
fn a_data_directory_opens_once_at_a_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(&dir);
    let err = Log::open(dir.path(), LogOptions::default()).expect_err("locked");
    assert!(matches!(err, Error::Locked { .. }), "{err}");
    drop(log);
    open(&dir);
}

#[test]
fn an_unfinished_topic_creation_is_ignored_then_redone() {
    let dir = tempfile::tempdir().expect("tempdir");
    fs::create_dir_all(dir.path().join("topics/half/0")).expect("mkdir");
    let log = open(&dir);
    assert!(log.topic("half").is_none());
    assert!(log.create_topic("half", 3).expect("create"));
    drop(log);
    assert_eq!(open(&dir).topic("half").expect("info").partitions, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_produce_dense_offsets_without_loss() {
    const TASKS: usize = 16;
    const CALLS: usize = 20;
    const PER_CALL: usize = 3;

    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(&dir);
    log.create_topic("t", 3).expect("create");

    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            let mut positions = Vec::new();
            for call in 0..CALLS {
                let records = (0..PER_CALL)
                    .map(|i| {
                        Record::new(format!("{task}/{call}/{i}")).with_key(format!("{task}-{i}"))
                    })
                    .collect();
                positions.extend(log.append("t", records).await.expect("append"));
            }
            positions
        }));
    }
    let mut acknowledged = BTreeSet::new();
    for task in tasks {
        for position in task.await.expect("task") {
            assert!(acknowledged.insert((position.partition, position.offset)));
        }
    }
    assert_eq!(acknowledged.len(), TASKS * CALLS * PER_CALL);

    let mut stored = BTreeSet::new();
    for partition in 0..3 {
        let records = log.read("t", partition, 0, usize::MAX).expect("read");
        let offsets: Vec<u64> = records.iter().map(|r| r.offset).collect();
        let dense: Vec<u64> = (0..records.len() as u64).collect();
        assert_eq!(offsets, dense, "partition {partition}");
        for record in records {
            assert!(acknowledged.contains(&(partition, record.offset)));
            assert!(stored.insert(record.value));
        }
    }
    assert_eq!(stored.len(), TASKS * CALLS * PER_CALL);
}

/// A batch as `(key, value)` pairs.
type RawBatch = Vec<(Option<Vec<u8>>, Vec<u8>)>;

/// Valid frames back to back, as a partition file holds them, for `fuzz_decode` to chew on.
fn encoded_frames(batches: &[RawBatch]) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut base_offset = 0;
    for batch in batches {
        let records: Vec<Record> = batch
            .iter()
            .map(|(key, value)| Record {
                key: key.clone().map(Bytes::from),
                value: Bytes::from(value.clone()),
                timestamp_ms: None,
            })
            .collect();
        bytes.extend(frame::encode_batch(base_offset, &records, 1_000));
        base_offset += records.len() as u64;
    }
    bytes
}

fn arb_batches() -> impl proptest::strategy::Strategy<Value = Vec<RawBatch>> {
    use proptest::{collection::vec, option, prelude::any};
    let record = (option::of(vec(any::<u8>(), 0..8)), vec(any::<u8>(), 0..40));
    vec(vec(record, 1..5), 1..5)
}

proptest::proptest! {
    #![proptest_config(proptest::test_runner::Config::with_cases(512))]

    #[test]
    fn fuzz_decode_survives_random_bytes(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
        fuzz_decode(&bytes);
        // Random bytes behind a valid magic byte get further into the decoder.
        let mut with_magic = vec![frame::MAGIC];
        with_magic.extend(&bytes);
        fuzz_decode(&with_magic);
    }

    #[test]
    fn fuzz_decode_survives_truncated_frames(batches in arb_batches(), cut in proptest::prelude::any::<proptest::sample::Index>()) {
        let bytes = encoded_frames(&batches);
        fuzz_decode(&bytes);
        fuzz_decode(&bytes[..cut.index(bytes.len() + 1)]);
    }

    #[test]
    fn fuzz_decode_survives_bit_flips(
        batches in arb_batches(),
        flips in proptest::collection::vec((proptest::prelude::any::<proptest::sample::Index>(), 0..8u8), 1..4),
    ) {
        let mut bytes = encoded_frames(&batches);
        for (at, bit) in flips {
            let at = at.index(bytes.len());
            bytes[at] ^= 1 << bit;
        }
        fuzz_decode(&bytes);
    }
}
