use std::{
    collections::{BTreeMap, BTreeSet},
    fs::{self, OpenOptions},
    path::PathBuf,
    time::Duration,
};

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

/// How many bytes of the segment at `path` are whole frames: a segment being written is
/// longer on disk (see `partition`, the zeros filled ahead).
pub(crate) fn frames_len(path: &Path) -> u64 {
    segment_frames_len(&io::RealIo, path).expect("scan")
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
    assert!(
        log.create_topic("orders", &TopicConfig::with_partitions(1))
            .expect("create")
    );

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
        .map(|k| weir_log::partition_for_key(k.as_bytes(), 8))
        .collect();
    assert!(
        expected.iter().collect::<BTreeSet<_>>().len() > 1,
        "keys spread"
    );

    for _ in 0..2 {
        let log = open(&dir);
        log.create_topic("t", &TopicConfig::with_partitions(8))
            .expect("create");
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
        log.create_topic("t", &TopicConfig::with_partitions(2))
            .expect("create");
        append_values(&log, "t", &["a", "b"]).await;
        append_values(&log, "t", &["c"]).await;
    }
    let log = open(&dir);
    assert!(
        !log.create_topic("t", &TopicConfig::with_partitions(2))
            .expect("exists")
    );
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
        log.create_topic("t", &TopicConfig::with_partitions(1))
            .expect("create");
        append_values(&log, "t", &["a", "b", "c"]).await;
        let good_len = frames_len(&path);
        append_values(&log, "t", &["d", "e", "f", "g", "h"]).await;
        (good_len, frames_len(&path))
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

/// Copies a log's directory as a process killed now would leave it (the page cache).
fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("mkdir");
    for entry in fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

#[tokio::test]
async fn the_active_segment_is_allocated_ahead_and_its_zeros_are_dropped_after_a_crash() {
    let dir = tempfile::tempdir().expect("tempdir");
    let crashed = tempfile::tempdir().expect("tempdir");
    let path = log_file(&dir, "t", 0);
    let log = open(&dir);
    log.create_topic("t", &TopicConfig::with_partitions(1))
        .expect("create");
    append_values(&log, "t", &["a", "b"]).await;
    append_values(&log, "t", &["c"]).await;
    // Zero-filled ahead of the three records, unless the file system is nearly full.
    let free = io::free_bytes(&nix::sys::statvfs::statvfs(dir.path()).expect("statvfs"));
    if free > io::ALLOCATION_RESERVE + (1 << 20) {
        assert_eq!(file_len(&path), partition::ALLOCATE_AHEAD.0);
    }
    copy_tree(dir.path(), crashed.path());
    drop(log);
    // A clean close leaves the segment as long as its frames.
    let frames_len = file_len(&path);
    assert!(frames_len > 0 && frames_len < 1024, "{frames_len}");
    let bytes = fs::read(log_file(&crashed, "t", 0)).expect("read");
    assert!(bytes[frames_len as usize..].iter().all(|&b| b == 0));
    assert_eq!(
        &bytes[..frames_len as usize],
        fs::read(&path).expect("read")
    );

    // After the crash: every record, the zeros dropped, the next offsets where they were.
    let log = open(&crashed);
    assert_eq!(log.end_offset("t", 0).expect("end"), 3);
    assert_eq!(file_len(&log_file(&crashed, "t", 0)), frames_len);
    assert_eq!(append_values(&log, "t", &["d"]).await[0].offset, 3);
    assert_eq!(
        values(&log.read("t", 0, 0, 100).expect("read")),
        [&b"a"[..], b"b", b"c", b"d"]
    );
    drop(log);
    let log = open(&crashed);
    assert_eq!(log.end_offset("t", 0).expect("end"), 4);
}

#[tokio::test]
async fn a_closed_segment_ends_where_its_frames_do() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(&dir);
    let config = TopicConfig {
        segment_bytes: 4096,
        ..TopicConfig::with_partitions(1)
    };
    log.create_topic("t", &config).expect("create");
    let value = "x".repeat(1000);
    for _ in 0..6 {
        append_values(&log, "t", &[&value]).await;
    }
    let records = log.read("t", 0, 0, 100).expect("read");
    assert_eq!(records.len(), 6);
    // Rolled, and the closed segment is whole frames to its last byte.
    let first = io::RealIo
        .open(&log_file(&dir, "t", 0), io::Access::Read)
        .expect("open");
    let scan = segment::scan(&*first, 0, None).expect("scan");
    assert!(scan.stopped_by.is_none(), "{:?}", scan.stopped_by);
    assert!(scan.index.next_offset < 6, "{}", scan.index.next_offset);
    assert_eq!(scan.index.log_len, scan.file_len);
    assert_eq!(scan.file_len, first.size().expect("size"));
    drop(log);
    let log = open(&dir);
    assert_eq!(log.end_offset("t", 0).expect("end"), 6);
}

#[test]
fn only_zeros_count_as_an_allocated_tail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("f");
    let mut bytes = vec![0u8; 200_000];
    bytes[..10].copy_from_slice(b"0123456789");
    fs::write(&path, &bytes).expect("write");
    let file = io::RealIo.open(&path, io::Access::Read).expect("open");
    assert!(partition::is_zeros(&*file, 10, 200_000));
    assert!(!partition::is_zeros(&*file, 9, 200_000));
    bytes[150_000] = 1;
    fs::write(&path, &bytes).expect("write");
    assert!(!partition::is_zeros(&*file, 10, 200_000));
    assert!(partition::is_zeros(&*file, 150_001, 200_000));
}

#[tokio::test]
async fn a_bit_flip_in_the_last_batch_drops_it_on_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = log_file(&dir, "t", 0);
    let good_len = {
        let log = open(&dir);
        log.create_topic("t", &TopicConfig::with_partitions(1))
            .expect("create");
        append_values(&log, "t", &["a"]).await;
        append_values(&log, "t", &["b", "c"]).await;
        let good_len = frames_len(&path);
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
        log.create_topic("t", &TopicConfig::with_partitions(1))
            .expect("create");
        append_values(&log, "t", &["a", "b"]).await;
        frames_len(&path)
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
        log.create_topic("t", &TopicConfig::with_partitions(1))
            .expect("create");
        append_values(&log, "t", &["a"]).await;
        frames_len(&path)
    };
    // The same frame again: checksum fine, but offset 0 where 1 is due.
    let mut bytes = fs::read(&path).expect("read file");
    bytes.extend_from_within(..);
    fs::write(&path, bytes).expect("write file");

    let log = open(&dir);
    assert_eq!(log.end_offset("t", 0).expect("end"), 1);
    assert_eq!(file_len(&path), good_len);
}

/// `wait_for` returns at once for an offset that exists, stays pending for one that does
/// not (checked by polling the very future that must then complete, so no clock decides),
/// and wakes on the append that writes it.
#[tokio::test]
async fn wait_for_wakes_on_append() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(&dir);
    log.create_topic("t", &TopicConfig::with_partitions(1))
        .expect("create");
    append_values(&log, "t", &["a"]).await;

    // Offset 0 exists already.
    log.wait_for("t", 0, 0).await.expect("wait for 0");
    let mut pending = std::pin::pin!(log.wait_for("t", 0, 1));
    assert!(
        futures::poll!(pending.as_mut()).is_pending(),
        "offset 1 does not exist yet"
    );
    append_values(&log, "t", &["b"]).await;
    tokio::time::timeout(Duration::from_secs(10), pending)
        .await
        .expect("the pending wait woke")
        .expect("wait_for");

    let waiter = tokio::spawn({
        let log = log.clone();
        async move { log.wait_for("t", 0, 2).await }
    });
    tokio::task::yield_now().await;
    append_values(&log, "t", &["c"]).await;
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
        log.create_topic("t", &TopicConfig::with_partitions(2))
            .expect("create");
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
async fn a_group_offset_past_the_recovered_end_is_clamped_durably() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = log_file(&dir, "t", 0);
    let group_file = dir.path().join("groups").join("g.json");
    let kept_len = {
        let log = open(&dir);
        let config = TopicConfig {
            fsync: FsyncPolicy::Never,
            ..TopicConfig::with_partitions(1)
        };
        log.create_topic("t", &config).expect("create");
        append_values(&log, "t", &["a", "b", "c"]).await;
        let kept_len = frames_len(&path);
        append_values(&log, "t", &["d", "e"]).await;
        log.commit_offset("g", "t", 0, 5).expect("commit");
        kept_len
    };
    // A power loss took back the unsynced "d" and "e"; the group file, fsynced on its own,
    // kept the commit past them.
    OpenOptions::new()
        .write(true)
        .open(&path)
        .and_then(|file| file.set_len(kept_len))
        .expect("truncate");

    {
        let log = open(&dir);
        assert_eq!(log.end_offset("t", 0).expect("end"), 3);
        assert_eq!(log.committed_offset("g", "t", 0).expect("get"), Some(3));
        // Written by the open itself, not only at close.
        let contents = fs::read_to_string(&group_file).expect("read the group file");
        assert!(contents.contains("\"next_offset\":3"), "{contents}");
        // New records take offsets 3 and 4 again, and the group still has to read them.
        append_values(&log, "t", &["x", "y"]).await;
    }
    let log = open(&dir);
    assert_eq!(log.end_offset("t", 0).expect("end"), 5);
    assert_eq!(log.committed_offset("g", "t", 0).expect("get"), Some(3));
    let unread = log.read("t", 0, 3, 10).expect("read");
    assert_eq!(values(&unread), [&b"x"[..], b"y"]);
}

#[tokio::test]
async fn a_record_too_large_is_rejected_and_nothing_is_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = LogOptions {
        max_record_bytes: 8,
        max_batch_bytes: 1024,
        ..LogOptions::default()
    };
    let log = Log::open(dir.path(), opts).expect("open");
    log.create_topic("t", &TopicConfig::with_partitions(2))
        .expect("create");

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
        let err = log
            .create_topic(name, &TopicConfig::with_partitions(1))
            .expect_err(name);
        assert!(
            matches!(err, Error::InvalidTopicName { .. }),
            "{name}: {err}"
        );
    }
    for name in ["a", "a.b_c-D9", "...", "a".repeat(249).as_str()] {
        assert!(
            log.create_topic(name, &TopicConfig::with_partitions(1))
                .expect(name),
            "{name}"
        );
    }

    let err = log
        .create_topic("zero", &TopicConfig::with_partitions(0))
        .expect_err("no partitions");
    assert!(matches!(err, Error::InvalidPartitionCount { .. }), "{err}");
    let err = log
        .create_topic("a", &TopicConfig::with_partitions(2))
        .expect_err("count differs");
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
    assert!(
        !log.create_topic("a", &TopicConfig::with_partitions(1))
            .expect("same count")
    );
    let names: Vec<_> = log.topics().into_iter().map(|t| t.name).collect();
    assert_eq!(names.len(), 4);
    assert!(names.is_sorted());
}

#[tokio::test]
async fn unknown_topics_and_partitions_say_what_to_do() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(&dir);
    log.create_topic("t", &TopicConfig::with_partitions(2))
        .expect("create");

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
    assert!(
        log.create_topic("half", &TopicConfig::with_partitions(3))
            .expect("create")
    );
    drop(log);
    assert_eq!(open(&dir).topic("half").expect("info").partitions, 3);
}

#[test]
fn a_topic_over_the_partition_limits_is_refused_and_leaves_no_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let topic_dir = |name: &str| dir.path().join("topics").join(name);
    let log = open(&dir);
    let err = log
        .create_topic("big", &TopicConfig::with_partitions(2000))
        .expect_err("over the limit per topic");
    assert!(
        matches!(
            err,
            Error::InvalidPartitionCount {
                partitions: 2000,
                max: 1024,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("use 1 to 1024"), "{err}");
    assert!(!topic_dir("big").exists());
    drop(log);

    let opts = LogOptions {
        max_partitions_per_topic: 8,
        max_partitions: 10,
        ..LogOptions::default()
    };
    let log = Log::open(dir.path(), opts).expect("open");
    log.create_topic("a", &TopicConfig::with_partitions(8))
        .expect("within both limits");
    let err = log
        .create_topic("b", &TopicConfig::with_partitions(3))
        .expect_err("over the log's limit");
    assert!(
        matches!(
            err,
            Error::TooManyPartitions {
                partitions: 3,
                in_use: 8,
                max: 10,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("raise max_partitions"), "{err}");
    assert!(!topic_dir("b").exists());
    assert!(
        !log.create_topic("a", &TopicConfig::with_partitions(8))
            .expect("an existing topic's settings still change")
    );
    log.create_topic("b", &TopicConfig::with_partitions(2))
        .expect("fits");
    drop(log);

    // The limits bound new topics: those made under higher ones still open.
    let opts = LogOptions {
        max_partitions_per_topic: 1,
        max_partitions: 1,
        ..LogOptions::default()
    };
    let log = Log::open(dir.path(), opts).expect("reopen");
    assert_eq!(log.topic("a").expect("a").partitions, 8);
    assert_eq!(log.topic("b").expect("b").partitions, 2);
}

#[test]
fn a_topic_creation_failing_part_way_leaves_nothing_behind() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(&dir);
    let topic_dir = dir.path().join("topics").join("t");
    // A file where partition 2's directory goes: the creation fails after two partitions.
    fs::create_dir_all(&topic_dir).expect("mkdir");
    fs::write(topic_dir.join("2"), b"").expect("write");
    let err = log
        .create_topic("t", &TopicConfig::with_partitions(4))
        .expect_err("partition 2 cannot be made");
    assert!(matches!(err, Error::Io { .. }), "{err}");
    assert!(!topic_dir.exists(), "a failed creation left {topic_dir:?}");
    assert!(log.topic("t").is_none());

    assert!(
        log.create_topic("t", &TopicConfig::with_partitions(4))
            .expect("create again")
    );
    drop(log);
    assert_eq!(open(&dir).topic("t").expect("info").partitions, 4);
}

#[test]
fn open_removes_what_an_unfinished_topic_creation_left_but_never_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    let topics = dir.path().join("topics");
    // What a crash mid-creation leaves: partitions with empty segments, no topic.json.
    let half = topics.join("half");
    fs::create_dir_all(half.join("0")).expect("mkdir");
    fs::create_dir_all(half.join("1")).expect("mkdir");
    fs::write(half.join("0").join(segment::log_file_name(0)), b"").expect("write");
    fs::write(half.join("topic.json.tmp"), b"{").expect("write");
    // A creation never writes records: these are someone's data, not ours to delete.
    let kept = topics.join("kept");
    fs::create_dir_all(kept.join("0")).expect("mkdir");
    let kept_segment = kept.join("0").join(segment::log_file_name(0));
    fs::write(&kept_segment, b"data").expect("write");

    let log = open(&dir);
    assert!(!half.exists(), "open left {half:?}");
    assert!(log.topic("half").is_none());
    assert!(log.topic("kept").is_none());
    let err = log
        .create_topic("kept", &TopicConfig::with_partitions(1))
        .expect_err("records in the way");
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    assert_eq!(fs::read(&kept_segment).expect("read"), b"data");
    assert!(
        log.create_topic("half", &TopicConfig::with_partitions(1))
            .expect("create")
    );
}

/// How many file descriptors this process has open.
fn open_fds() -> usize {
    fs::read_dir("/proc/self/fd")
        .expect("list /proc/self/fd")
        .count()
}

#[test]
fn many_partitions_across_topics_stay_within_the_fd_budget() {
    const MAX: u32 = 200;
    // Tests running beside this one open and close files meanwhile.
    const OTHERS: usize = 100;
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = LogOptions {
        max_partitions_per_topic: 50,
        max_partitions: MAX,
        ..LogOptions::default()
    };
    let before = open_fds();
    let log = Log::open(dir.path(), opts.clone()).expect("open");
    let mut created = 0;
    for i in 0..10 {
        match log.create_topic(&format!("t{i}"), &TopicConfig::with_partitions(50)) {
            Ok(_) => created += 50,
            Err(Error::TooManyPartitions { .. }) => {}
            Err(error) => panic!("{error}"),
        }
    }
    // Two descriptors per partition, as LogOptions::max_partitions says.
    let budget = 2 * MAX as usize + OTHERS;
    let used = open_fds().saturating_sub(before);
    assert!(
        used <= budget,
        "{used} descriptors for {created} partitions"
    );
    assert_eq!(created, MAX);
    drop(log);

    let log = Log::open(dir.path(), opts).expect("reopen");
    assert_eq!(log.topics().len(), 4);
    let used = open_fds().saturating_sub(before);
    assert!(used <= budget, "{used} descriptors after reopening");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_produce_dense_offsets_without_loss() {
    const TASKS: usize = 16;
    const CALLS: usize = 20;
    const PER_CALL: usize = 3;

    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(&dir);
    log.create_topic("t", &TopicConfig::with_partitions(3))
        .expect("create");

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

fn small_segments(partitions: u32) -> TopicConfig {
    TopicConfig {
        segment_bytes: 512,
        ..TopicConfig::with_partitions(partitions)
    }
}

fn partition_dir(dir: &TempDir, topic: &str, partition: u32) -> PathBuf {
    dir.path()
        .join("topics")
        .join(topic)
        .join(partition.to_string())
}

fn files_with(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    files.sort();
    files
}

/// Appends `count` records of about 100 bytes, one call each, stamped `timestamp_ms`.
async fn append_many(log: &Log, topic: &str, count: usize, timestamp_ms: i64) {
    for i in 0..count {
        let record = Record::new(format!("{i:0>100}")).with_timestamp(timestamp_ms);
        log.append_to(topic, 0, vec![record]).await.expect("append");
    }
}

fn offsets(records: &[StoredRecord]) -> Vec<u64> {
    records.iter().map(|r| r.offset).collect()
}

#[tokio::test]
async fn create_topic_updates_the_settings_of_an_existing_topic_durably() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = TopicConfig {
        fsync: FsyncPolicy::Interval { ms: 5 },
        retention_ms: Some(60_000),
        retention_bytes: Some(1 << 20),
        segment_bytes: 4096,
        compaction: true,
        partitions: 2,
    };
    {
        let log = open(&dir);
        assert!(
            log.create_topic("t", &TopicConfig::with_partitions(2))
                .expect("create")
        );
        assert!(!log.create_topic("t", &config).expect("update"));
        assert_eq!(log.topic("t").expect("info").config, config);
    }
    let log = open(&dir);
    let info = log.topic("t").expect("info");
    assert_eq!(info.config, config);
    assert_eq!(info.start_offsets, [0, 0]);
    let bad = TopicConfig {
        segment_bytes: 0,
        ..TopicConfig::default()
    };
    let err = log.create_topic("u", &bad).expect_err("bad config");
    assert!(matches!(err, Error::InvalidTopicConfig { .. }), "{err}");
}

#[tokio::test]
async fn reads_cross_segments_and_survive_a_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let log = open(&dir);
        log.create_topic("t", &small_segments(1)).expect("create");
        append_many(&log, "t", 40, 1).await;
        let all = log.read("t", 0, 0, usize::MAX).expect("read");
        assert_eq!(offsets(&all), (0..40).collect::<Vec<_>>());
        assert_eq!(
            offsets(&log.read("t", 0, 17, 5).expect("read")),
            [17, 18, 19, 20, 21]
        );
    }
    let pdir = partition_dir(&dir, "t", 0);
    assert!(files_with(&pdir, ".log").len() >= 10);
    let log = open(&dir);
    assert_eq!(log.end_offset("t", 0).expect("end"), 40);
    assert_eq!(log.read("t", 0, 0, usize::MAX).expect("read").len(), 40);
}

#[tokio::test]
async fn missing_or_damaged_index_files_are_rebuilt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pdir = partition_dir(&dir, "t", 0);
    let before = {
        let log = open(&dir);
        log.create_topic("t", &small_segments(1)).expect("create");
        append_many(&log, "t", 30, 1).await;
        log.read("t", 0, 0, usize::MAX).expect("read")
    };
    let indexes = files_with(&pdir, ".index");
    assert!(indexes.len() >= 5);
    fs::remove_file(&indexes[0]).expect("remove");
    fs::write(&indexes[1], b"garbage").expect("damage");
    fs::remove_file(&files_with(&pdir, ".timeindex")[2]).expect("remove");

    let log = open(&dir);
    assert_eq!(log.read("t", 0, 0, usize::MAX).expect("read"), before);
    assert_eq!(files_with(&pdir, ".index").len(), indexes.len());
    for (i, offset) in [3u64, 11, 29].into_iter().enumerate() {
        let got = log.read("t", 0, offset, 1).expect("read");
        assert_eq!(got[0].offset, offset, "{i}");
    }
}

#[tokio::test]
async fn offset_for_time_finds_the_first_record_at_or_after() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(&dir);
    log.create_topic("t", &small_segments(1)).expect("create");
    for i in 0..30i64 {
        let record = Record::new(format!("{i:0>100}")).with_timestamp(1_000 + i * 10);
        log.append_to("t", 0, vec![record]).await.expect("append");
    }
    assert_eq!(log.offset_for_time("t", 0, 0).expect("time"), 0);
    assert_eq!(log.offset_for_time("t", 0, 1_000).expect("time"), 0);
    assert_eq!(log.offset_for_time("t", 0, 1_001).expect("time"), 1);
    assert_eq!(log.offset_for_time("t", 0, 1_150).expect("time"), 15);
    assert_eq!(log.offset_for_time("t", 0, 1_290).expect("time"), 29);
    assert_eq!(log.offset_for_time("t", 0, 5_000).expect("time"), 30);
}

#[tokio::test]
async fn retention_by_size_deletes_only_closed_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(&dir);
    log.create_topic("t", &small_segments(1)).expect("create");
    append_many(&log, "t", 40, now_ms()).await;
    let pdir = partition_dir(&dir, "t", 0);
    let segments_before = files_with(&pdir, ".log").len();

    let config = TopicConfig {
        retention_bytes: Some(1),
        ..small_segments(1)
    };
    assert!(!log.create_topic("t", &config).expect("update"));
    let report = log.enforce_retention().expect("retention");
    assert_eq!(report.segments_deleted as usize, segments_before - 1);
    assert!(report.bytes_deleted > 0);
    let logs = files_with(&pdir, ".log");
    assert_eq!(logs.len(), 1, "the active segment stays");
    let start = log.start_offset("t", 0).expect("start");
    assert!(start > 0 && start < 40, "{start}");
    assert_eq!(log.topic("t").expect("info").start_offsets, [start]);
    let records = log
        .read("t", 0, 0, usize::MAX)
        .expect("read from below the start");
    assert_eq!(offsets(&records), (start..40).collect::<Vec<_>>());
    assert_eq!(files_with(&pdir, ".index").len(), 0);

    // An empty active segment is still never deleted.
    append_many(&log, "t", 1, now_ms()).await;
    log.enforce_retention().expect("retention");
    assert_eq!(log.end_offset("t", 0).expect("end"), 41);
}

#[tokio::test]
async fn retention_by_age_uses_the_newest_record_of_each_segment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(&dir);
    let config = TopicConfig {
        retention_ms: Some(60_000),
        ..small_segments(1)
    };
    log.create_topic("t", &config).expect("create");
    let old = now_ms() - 3_600_000;
    append_many(&log, "t", 20, old).await;
    append_many(&log, "t", 20, now_ms()).await;
    let report = log.enforce_retention().expect("retention");
    assert!(report.segments_deleted > 0);
    let start = log.start_offset("t", 0).expect("start");
    assert!(start > 0 && start <= 20, "{start}");
    let records = log.read("t", 0, 0, usize::MAX).expect("read");
    assert!(
        records
            .iter()
            .skip_while(|r| r.timestamp_ms == old)
            .all(|r| r.timestamp_ms > old)
    );
    assert_eq!(records.iter().filter(|r| r.timestamp_ms > old).count(), 20);
    // Idempotent.
    assert_eq!(log.enforce_retention().expect("again").segments_deleted, 0);
    drop(log);
    let log = open(&dir);
    assert_eq!(log.start_offset("t", 0).expect("start"), start);
}

#[tokio::test]
async fn compaction_keeps_the_latest_record_per_key_at_its_offset() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(&dir);
    let config = TopicConfig {
        compaction: true,
        ..small_segments(1)
    };
    log.create_topic("t", &config).expect("create");
    let err = log
        .append("t", vec![Record::new("no key")])
        .await
        .expect_err("key required");
    assert!(matches!(err, Error::KeyRequired { .. }), "{err}");

    // Keys k0..k4, each written 6 times; k3's last write is a tombstone.
    let mut latest = BTreeMap::new();
    for round in 0..6 {
        for k in 0..5 {
            let value = if k == 3 && round == 5 {
                String::new()
            } else {
                format!("{round:0>80}")
            };
            let record = Record::new(value).with_key(format!("k{k}"));
            let position = log.append_to("t", 0, vec![record]).await.expect("append")[0];
            latest.insert(k, position.offset);
        }
    }
    let end = log.end_offset("t", 0).expect("end");
    let report = log.enforce_retention().expect("compact");
    assert!(report.segments_compacted > 0);
    assert!(report.records_removed > 0);

    let records = log.read("t", 0, 0, usize::MAX).expect("read");
    let got: Vec<u64> = offsets(&records);
    assert!(got.is_sorted());
    // Every key's latest record survives at its original offset...
    for (k, offset) in &latest {
        let record = records.iter().find(|r| r.offset == *offset);
        if *k == 3 && records.last().is_none_or(|r| r.offset < *offset) {
            continue;
        }
        let record = record.expect("latest record kept");
        assert_eq!(record.key.as_deref(), Some(format!("k{k}").as_bytes()));
    }
    // ...and in closed segments nothing else but it does.
    let active_base = log.inner_active_base("t", 0);
    for record in records.iter().filter(|r| r.offset < active_base) {
        let key = std::str::from_utf8(record.key.as_deref().expect("key")).expect("utf8");
        let k: u64 = key[1..].parse().expect("number");
        assert_eq!(latest[&k], record.offset, "{key}");
        assert!(!record.value.is_empty(), "tombstones go");
    }
    assert_eq!(log.end_offset("t", 0).expect("end"), end);

    // Survives a reopen, and appends continue at the end.
    drop(log);
    let log = open(&dir);
    assert_eq!(log.read("t", 0, 0, usize::MAX).expect("read"), records);
    let next = log
        .append("t", vec![Record::new("x").with_key("k0")])
        .await
        .expect("append");
    assert_eq!(next[0].offset, end);
}

/// Appends racing from four threads each get their own dense offsets, in the order the
/// writer took them, and no append is acknowledged without an fsync (at least one) while
/// no group is fsynced twice (at most one per append). How many groups the appends
/// form depends on the scheduler; that queued appends share one fsync is
/// `appends_wait_for_the_group_fsync_and_share_it`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_get_dense_offsets_and_at_most_one_fsync_each() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(&dir);
    log.create_topic("t", &TopicConfig::with_partitions(1))
        .expect("create");
    let before = log.fsync_count("t", 0).expect("count");
    let appends: Vec<_> = (0..64)
        .map(|i| {
            let log = log.clone();
            tokio::spawn(async move {
                log.append_to("t", 0, vec![Record::new(format!("v{i}"))])
                    .await
                    .expect("append")[0]
                    .offset
            })
        })
        .collect();
    let mut acked = BTreeSet::new();
    for append in appends {
        acked.insert(append.await.expect("task"));
    }
    assert_eq!(acked, (0..64).collect());
    let fsyncs = log.fsync_count("t", 0).expect("count") - before;
    assert!((1..=64).contains(&fsyncs), "{fsyncs} fsyncs for 64 appends");
    assert_eq!(
        offsets(&log.read("t", 0, 0, 100).expect("read")),
        (0..64).collect::<Vec<_>>()
    );
}

/// Appends queued behind a busy writer (held here as a slow fsync would hold it) are
/// neither acknowledged nor visible until it is free, and then are written as one group
/// with one fsync. Each append is queued by polling it once in this task (queueing is
/// synchronous), so all 64 are queued before the writer is let go, whatever the
/// scheduler does.
// The guard stands in for a slow fsync; the writer thread, not this task, waits on it.
#[allow(clippy::await_holding_lock)]
#[tokio::test]
async fn appends_wait_for_the_group_fsync_and_share_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(&dir);
    log.create_topic("t", &TopicConfig::with_partitions(1))
        .expect("create");
    append_values(&log, "t", &["first"]).await;
    let before = log.fsync_count("t", 0).expect("count");
    let partition = log.get_partition("t", 0).expect("partition");

    let held = partition.hold_writer();
    let mut appends: Vec<_> = (0..64)
        .map(|i| {
            let log = log.clone();
            Box::pin(async move {
                log.append_to("t", 0, vec![Record::new(format!("v{i}"))])
                    .await
            })
        })
        .collect();
    for append in &mut appends {
        assert!(
            futures::poll!(append.as_mut()).is_pending(),
            "an append was acknowledged while the writer was held"
        );
    }
    assert_eq!(
        log.end_offset("t", 0).expect("end"),
        1,
        "nothing is visible while the writer is held"
    );
    drop(held);

    let mut acked = BTreeSet::new();
    for append in appends {
        acked.insert(append.await.expect("append")[0].offset);
    }
    assert_eq!(acked, (1..65).collect());
    let fsyncs = log.fsync_count("t", 0).expect("count") - before;
    assert_eq!(fsyncs, 1, "{fsyncs} fsyncs for 64 queued appends");
}

/// Under `Interval` and `Never` an append is acknowledged and visible once written, with
/// no fsync on the append path: with an interval of an hour (an interval fsync comes at
/// the earliest an interval after the partition was created), ten appends fsync
/// nothing. Closing the log fsyncs them.
#[tokio::test]
async fn interval_and_never_acknowledge_and_show_written_records() {
    for fsync in [FsyncPolicy::Interval { ms: 3_600_000 }, FsyncPolicy::Never] {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let log = open(&dir);
            let config = TopicConfig {
                fsync,
                ..TopicConfig::with_partitions(1)
            };
            log.create_topic("t", &config).expect("create");
            let before = log.fsync_count("t", 0).expect("count");
            for i in 0..10 {
                append_values(&log, "t", &[&format!("v{i}")]).await;
            }
            assert_eq!(
                log.read("t", 0, 0, 100).expect("read").len(),
                10,
                "{fsync:?}"
            );
            assert_eq!(
                log.fsync_count("t", 0).expect("count"),
                before,
                "{fsync:?}: an append fsynced"
            );
        }
        // Closing fsyncs; everything is back after a reopen.
        let log = open(&dir);
        assert_eq!(log.end_offset("t", 0).expect("end"), 10, "{fsync:?}");
    }
}

/// `Interval { ms }` makes written data durable without another append to carry it: the
/// writer fsyncs on its own once the interval is up. Waited for with a deadline far
/// beyond the interval, not counted in a window. And it never fsyncs more than once per
/// interval: each interval fsync comes at least `ms` after the previous one (or the
/// partition's creation), so however slow the machine, `fsyncs <= elapsed / ms`.
#[tokio::test]
async fn interval_fsyncs_unsynced_data_on_its_own_at_most_once_per_interval() {
    const MS: u64 = 200;
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(&dir);
    let started = std::time::Instant::now();
    let config = TopicConfig {
        fsync: FsyncPolicy::Interval { ms: MS },
        ..TopicConfig::with_partitions(1)
    };
    log.create_topic("t", &config).expect("create");
    let before = log.fsync_count("t", 0).expect("count");

    // An append that comes an interval after the last fsync fsyncs at once; one that
    // comes sooner leaves its data unsynced. Append until one did (the second almost
    // always does: it follows the first's fsync by far less than an interval).
    let mut unsynced = None;
    for i in 0..50 {
        let count = log.fsync_count("t", 0).expect("count");
        append_values(&log, "t", &[&format!("v{i}")]).await;
        if log.fsync_count("t", 0).expect("count") == count {
            unsynced = Some(count);
            break;
        }
    }
    let count = unsynced.expect("every append came an interval after the last fsync");

    // No append follows: only the writer's own timer can fsync now.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while log.fsync_count("t", 0).expect("count") == count {
        assert!(
            std::time::Instant::now() < deadline,
            "the unsynced append was not fsynced without another append"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let fsyncs = log.fsync_count("t", 0).expect("count") - before;
    let elapsed_ms = started.elapsed().as_millis() as u64;
    assert!(
        fsyncs <= elapsed_ms / MS,
        "{fsyncs} fsyncs in {elapsed_ms} ms with an interval of {MS} ms"
    );
}

#[tokio::test]
async fn a_torn_closed_segment_after_an_unclean_shutdown_is_cut_and_later_ones_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pdir = partition_dir(&dir, "t", 0);
    {
        let log = open(&dir);
        log.create_topic("t", &small_segments(1)).expect("create");
        append_many(&log, "t", 30, 1).await;
    }
    let logs = files_with(&pdir, ".log");
    assert!(logs.len() >= 4);
    // As if the machine died right after a roll: the recovery point was never moved up,
    // and the closed segment's last frame did not make it to disk whole.
    fs::write(
        pdir.join("recovery-point.json"),
        br#"{"version":1,"offset":0}"#,
    )
    .expect("write");
    let torn = &logs[1];
    let torn_base: u64 =
        segment::parse_log_file_name(torn.file_name().and_then(|n| n.to_str()).expect("name"))
            .expect("base");
    let next_base: u64 =
        segment::parse_log_file_name(logs[2].file_name().and_then(|n| n.to_str()).expect("name"))
            .expect("base");
    let len = file_len(torn);
    OpenOptions::new()
        .write(true)
        .open(torn)
        .expect("open")
        .set_len(len - 10)
        .expect("tear");

    let log = open(&dir);
    let records = log.read("t", 0, 0, usize::MAX).expect("read");
    let got = offsets(&records);
    let missing: Vec<u64> = (0..30).filter(|o| !got.contains(o)).collect();
    assert_eq!(missing, [next_base - 1], "only the torn batch is gone");
    assert!(torn_base < next_base - 1);
    assert_eq!(log.end_offset("t", 0).expect("end"), 30);
    assert_eq!(append_values(&log, "t", &["next"]).await[0].offset, 30);
}

#[test]
fn fuzz_decode_never_panics_on_random_bytes() {
    // A small xorshift generator keeps the test deterministic without a dependency.
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut valid = Vec::new();
    frame::encode_records_into(&mut valid, 5, None, &[Record::new("v").with_key("k")], 9);
    let mut tagged = Vec::new();
    let tag = frame::FrameTag {
        producer_id: 3,
        sequence: 4,
    };
    frame::encode_records_into(
        &mut tagged,
        5,
        Some(frame::Stamp { tag, commit: None }),
        &[Record::new("v")],
        9,
    );
    let commit = journal::IntentCommit {
        group: "g".into(),
        topic: "in".into(),
        partition: 1,
        next_offset: 7,
    };
    let mut committed = Vec::new();
    frame::encode_records_into(
        &mut committed,
        5,
        Some(frame::Stamp {
            tag,
            commit: Some(&commit),
        }),
        &[Record::new("v")],
        9,
    );
    let journal = journal_entries();
    for round in 0..6_000 {
        let len = (next() % 300) as usize;
        let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if round % 3 == 0 {
            // Start from a valid frame or entry so the decoder gets past the header.
            let mut frame = [&valid, &tagged, &committed, &journal][round / 3 % 4].clone();
            if !frame.is_empty() {
                let at = (next() as usize) % frame.len();
                frame[at] = next() as u8;
            }
            frame.extend_from_slice(&bytes);
            bytes = frame;
        }
        fuzz_decode(&bytes);
    }
    fuzz_decode(&valid);
    fuzz_decode(&tagged);
    fuzz_decode(&committed);
    fuzz_decode(&journal);
    fuzz_decode(&[]);
}

/// A start entry, an intent and a done entry, as a journal file holds them.
fn journal_entries() -> Vec<u8> {
    let intent = journal::Intent {
        sequence: 9,
        producer: "p".into(),
        producer_id: journal::producer_id("p"),
        commit: Some(journal::IntentCommit {
            group: "g".into(),
            topic: "t".into(),
            partition: 1,
            next_offset: 2,
        }),
        batches: vec![journal::IntentBatch {
            topic: "out".into(),
            partition: 0,
            end_offset: 7,
            records: vec![
                Record::new("v").with_key("k").with_timestamp(1),
                Record::new("w").with_timestamp(2),
            ],
        }],
    };
    let mut bytes = journal::encode_start(9);
    bytes.extend(journal::encode_intent(&intent));
    bytes.extend(journal::encode_done(9));
    bytes
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
    fn fuzz_decode_survives_damaged_journal_entries(
        cut in proptest::prelude::any::<proptest::sample::Index>(),
        flips in proptest::collection::vec((proptest::prelude::any::<proptest::sample::Index>(), 0..8u8), 0..4),
    ) {
        let mut bytes = journal_entries();
        for (at, bit) in flips {
            let at = at.index(bytes.len());
            bytes[at] ^= 1 << bit;
        }
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

/// Options with the write-ahead file on.
fn wal_opts() -> LogOptions {
    LogOptions {
        write_ahead: true,
        ..LogOptions::default()
    }
}

fn open_wal(dir: &TempDir) -> Log {
    Log::open(dir.path(), wal_opts()).expect("open log")
}

/// Groups of many partitions queued while the write-ahead file's writer is busy (held
/// here as a slow fsync would hold it) become durable together: eight appends to eight
/// partitions take at most two fsyncs of the file (the first appender's own, taken
/// before the others queued, and one for the rest), and each partition counts one.
// The guard stands in for a slow fsync; the partitions' writer threads wait on it.
#[allow(clippy::await_holding_lock)]
#[tokio::test]
async fn groups_of_many_partitions_share_one_fsync_of_the_write_ahead_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open_wal(&dir);
    log.create_topic("t", &TopicConfig::with_partitions(8))
        .expect("create");
    for partition in 0..8 {
        log.append_to("t", partition, vec![Record::new("warm")])
            .await
            .expect("append");
    }
    let wal = log
        .inner
        .wal
        .clone()
        .expect("the write-ahead file is on by default");
    let before = log.write_ahead_sync_count();
    let counts: Vec<u64> = (0..8)
        .map(|p| log.fsync_count("t", p).expect("count"))
        .collect();

    let held = wal.hold_writer();
    let appends: Vec<_> = (0..8)
        .map(|partition| {
            let log = log.clone();
            tokio::spawn(async move {
                log.append_to("t", partition, vec![Record::new(format!("v{partition}"))])
                    .await
            })
        })
        .collect();
    // The first appender leads and waits for the writer with its own entry; the other
    // seven queue behind it.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while wal.queued() < 7 {
        assert!(
            std::time::Instant::now() < deadline,
            "the appends did not queue"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    for partition in 0..8 {
        assert_eq!(
            log.end_offset("t", partition).expect("end"),
            1,
            "nothing is visible before the write-ahead file is fsynced"
        );
    }
    drop(held);
    for append in appends {
        append.await.expect("task").expect("append");
    }
    let syncs = log.write_ahead_sync_count() - before;
    assert!(
        (1..=2).contains(&syncs),
        "{syncs} fsyncs of the write-ahead file for 8 partitions"
    );
    for partition in 0..8 {
        assert_eq!(log.end_offset("t", partition).expect("end"), 2);
        assert_eq!(
            log.fsync_count("t", partition).expect("count"),
            counts[partition as usize] + 1
        );
    }
}

/// Under `fsync always` an acknowledged group is durable through the write-ahead file
/// alone: after a power cut that drops every unsynced write, the segments hold nothing,
/// and open replays the file into them. Open then removes the replayed file.
#[tokio::test]
async fn acknowledged_groups_come_back_from_the_write_ahead_file_after_a_power_cut() {
    use crate::io::{CutMode, SimDisk};
    let disk = SimDisk::new();
    let data = std::path::Path::new("/data");
    let io: Arc<dyn Io> = Arc::new(disk.clone());
    let log = Log::open_with_io(Arc::clone(&io), data, wal_opts()).expect("open");
    log.create_topic("t", &TopicConfig::with_partitions(2))
        .expect("create");
    for i in 0..3 {
        for partition in 0..2 {
            log.append_to(
                "t",
                partition,
                vec![Record::new(format!("{partition}-{i}"))],
            )
            .await
            .expect("append");
        }
    }
    let image = disk.power_cut(CutMode::DropUnsynced, 0);
    drop(log);
    for partition in 0..2 {
        let segment = data
            .join("topics/t")
            .join(partition.to_string())
            .join(crate::segment::log_file_name(0));
        assert_eq!(
            image.read(&segment).expect("segment").len(),
            0,
            "the appends fsynced the segment itself"
        );
    }
    let io: Arc<dyn Io> = Arc::new(image.clone());
    let log = Log::open_with_io(io, data, wal_opts()).expect("reopen");
    for partition in 0..2 {
        let values: Vec<_> = log
            .read("t", partition, 0, 10)
            .expect("read")
            .into_iter()
            .map(|r| String::from_utf8(r.value.to_vec()).expect("utf-8"))
            .collect();
        assert_eq!(
            values,
            (0..3)
                .map(|i| format!("{partition}-{i}"))
                .collect::<Vec<_>>()
        );
    }
    let files = image.read_dir(&data.join(wal::WAL_DIR)).expect("list");
    assert_eq!(
        files.len(),
        1,
        "the replayed file is gone, a new one started: {files:?}"
    );
}

/// A write-ahead file of a version this weir does not know fails the open with a clear
/// error rather than being skipped (it may hold acknowledged records), while a newest
/// file cut short at its creation is no file at all.
#[test]
fn a_write_ahead_file_of_another_version_is_refused_and_a_torn_new_one_ignored() {
    let dir = tempfile::tempdir().expect("tempdir");
    drop(open_wal(&dir));
    let wal_dir = dir.path().join(wal::WAL_DIR);
    fs::write(wal_dir.join(format!("{:020}.wal", 7)), b"weir").expect("write");
    drop(open(&dir));
    let mut newer = b"weir-wal".to_vec();
    newer.extend_from_slice(&2u32.to_le_bytes());
    fs::write(wal_dir.join(format!("{:020}.wal", 70)), &newer).expect("write");
    let error = Log::open(dir.path(), wal_opts()).expect_err("a newer write-ahead file is refused");
    assert!(
        matches!(&error, Error::Corrupt { reason, .. } if reason.contains("version 2")),
        "{error}"
    );
}

/// An open with the write-ahead file rewrites an older `topic.json` as version 3 before
/// anything of the topic goes to the file, so weir before it refuses the log instead of
/// missing it; one without it writes version 2, and rewrites version 3 as 2.
#[test]
fn open_marks_older_topics_as_version_3() {
    let dir = tempfile::tempdir().expect("tempdir");
    open(&dir)
        .create_topic("t", &TopicConfig::with_partitions(1))
        .expect("create");
    let path = dir.path().join("topics/t/topic.json");
    let version = |path: &PathBuf| -> serde_json::Value {
        serde_json::from_slice::<serde_json::Value>(&fs::read(path).expect("read")).expect("json")
            ["version"]
            .clone()
    };
    // Without the write-ahead file, version 2, which weir before version 3 reads.
    assert_eq!(version(&path), 2);
    drop(open_wal(&dir));
    let mut file: serde_json::Value =
        serde_json::from_slice(&fs::read(&path).expect("read")).expect("json");
    assert_eq!(file["version"], 3);
    file["version"] = 2.into();
    fs::write(&path, serde_json::to_vec(&file).expect("json")).expect("write");
    let log = open_wal(&dir);
    assert_eq!(log.topic("t").expect("topic").partitions, 1);
    assert_eq!(version(&path), 3);
    drop(log);
    // Opened without it again (the file replayed and gone), weir before may read it.
    assert_eq!(open(&dir).topic("t").expect("topic").partitions, 1);
    assert_eq!(version(&path), 2);
}

/// Waits until `done`, failing after 30 s with `what`.
async fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// A group of two partitions' entries that the write-ahead file refused for lack of space
/// (half written, then cut back) never comes back after a power cut, however the cut
/// tears what was not fsynced: the cut-back is fsynced. Nor does it come back over what
/// later takes its positions, even when that is made durable without the file (the
/// topic switched to `Interval`, where each append here comes an interval after the
/// last fsync and fsyncs the segment).
#[allow(clippy::await_holding_lock)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_group_the_write_ahead_file_refused_never_comes_back_after_a_cut() {
    use crate::io::{CutMode, Fault, FaultOn, SimDisk};
    let data = std::path::Path::new("/data");
    for (seed, switch) in (0..24u64).flat_map(|seed| [(seed, false), (seed, true)]) {
        let disk = SimDisk::new();
        let io: Arc<dyn Io> = Arc::new(disk.clone());
        let log = Log::open_with_io(io, data, wal_opts()).expect("open");
        log.create_topic("t", &TopicConfig::with_partitions(3))
            .expect("create");
        for partition in 0..3 {
            log.append_to("t", partition, vec![Record::new("warm")])
                .await
                .expect("warm");
        }
        let wal = log.inner.wal.clone().expect("wal");
        let append = |partition: u32, value: String| {
            let log = log.clone();
            tokio::spawn(async move {
                log.append_to("t", partition, vec![Record::new(value)])
                    .await
            })
        };
        // The first group leads with its own entry and waits for the writer; the next two
        // queue behind it, and their write fills the disk.
        let held = wal.hold_writer();
        let lead = append(0, "lead".into());
        wait_until("the first append did not lead", || {
            wal.writing() && wal.queued() == 0
        })
        .await;
        let small = append(1, "small-refused".into());
        wait_until("the second append did not queue", || wal.queued() == 1).await;
        let big = append(2, "x".repeat(4000));
        wait_until("the third append did not queue", || wal.queued() == 2).await;
        disk.inject(Fault {
            skip: 1,
            under: Some(data.join(wal::WAL_DIR)),
            ..Fault::next(FaultOn::Write, std::io::ErrorKind::StorageFull)
        });
        drop(held);
        lead.await.expect("task").expect("the first group");
        for refused in [small.await.expect("task"), big.await.expect("task")] {
            assert!(
                matches!(refused, Err(Error::DiskFull { .. })),
                "{refused:?}"
            );
        }
        if switch {
            let config = TopicConfig {
                fsync: FsyncPolicy::Interval { ms: 1 },
                ..TopicConfig::with_partitions(3)
            };
            log.create_topic("t", &config).expect("switch");
            tokio::time::sleep(Duration::from_millis(5)).await;
            let acked = log
                .append_to("t", 1, vec![Record::new("retried")])
                .await
                .expect("append");
            assert_eq!(acked[0].offset, 1);
        }
        let image = disk.power_cut(CutMode::Torn, seed);
        drop(log);
        let log = Log::open_with_io(Arc::new(image), data, wal_opts()).expect("reopen");
        let values: Vec<_> = log
            .read("t", 1, 0, 10)
            .expect("read")
            .into_iter()
            .map(|r| String::from_utf8(r.value.to_vec()).expect("utf-8"))
            .collect();
        let expected = match switch {
            true => vec!["warm", "retried"],
            false => vec!["warm"],
        };
        assert_eq!(values, expected, "seed {seed}, switched: {switch}");
    }
}

/// Dropping the last handle of the log while a partition outlives it (a reader holds
/// it) and its writer is about to append to the write-ahead file neither hangs nor
/// removes a file the partition still needs: the close takes the file away first, and
/// the partition's append then fails.
#[test]
fn closing_the_log_beside_a_partition_that_outlives_it_does_not_hang() {
    for _ in 0..10 {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = open_wal(&dir);
        log.create_topic("t", &TopicConfig::with_partitions(1))
            .expect("create");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime
            .block_on(log.append_to("t", 0, vec![Record::new("a")]))
            .expect("append");
        let partition = log.get_partition("t", 0).expect("partition");
        let held = partition.hold_writer();
        // An append nobody waits for: the writer takes it once let go.
        let _reply = partition
            .enqueue(vec![Record::new("b")], 0, None, None)
            .expect("enqueue");
        let (closed, close_done) = std::sync::mpsc::channel();
        let closer = std::thread::spawn(move || {
            drop(log);
            let _ = closed.send(());
        });
        std::thread::sleep(Duration::from_millis(100));
        drop(held);
        close_done
            .recv_timeout(Duration::from_secs(30))
            .expect("closing the log hung");
        closer.join().expect("close");
        drop(partition);
    }
}

/// The log caps its commit delay and hands it to every partition, those it creates and
/// those it opens again.
#[tokio::test]
async fn the_commit_delay_reaches_created_and_reopened_partitions_capped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = LogOptions {
        commit_delay: Duration::from_secs(5),
        ..LogOptions::default()
    };
    let delay_of = |log: &Log| log.get_partition("t", 1).expect("partition").commit_delay();
    let log = Log::open(dir.path(), opts.clone()).expect("open log");
    log.create_topic("t", &TopicConfig::with_partitions(2))
        .expect("create");
    assert_eq!(delay_of(&log), MAX_COMMIT_DELAY);
    drop(log);
    let log = Log::open(dir.path(), opts).expect("reopen log");
    assert_eq!(delay_of(&log), MAX_COMMIT_DELAY);
    drop(log);
    let log = open(&dir);
    assert_eq!(delay_of(&log), Duration::ZERO);
}
