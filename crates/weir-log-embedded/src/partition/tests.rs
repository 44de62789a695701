use std::fs;

use super::*;

const SETTINGS: Settings = Settings {
    fsync: FsyncPolicy::Always,
    segment_bytes: 64 << 20,
};

/// Consumer groups for a partition opened alone, in `<dir>/groups` (a directory, which the
/// partition's segment listing passes over).
fn groups(dir: &Path) -> Arc<Groups> {
    let groups_dir = dir.join("groups");
    fs::create_dir_all(&groups_dir).expect("create the groups directory");
    Arc::new(Groups::load(&real_io(), &groups_dir).expect("load groups"))
}

fn real_io() -> Arc<dyn Io> {
    Arc::new(crate::io::RealIo)
}

/// A read-only handle on `path`, which makes writes fail like a broken disk would.
fn read_only(path: &Path) -> Box<dyn IoFile> {
    real_io().open(path, Access::Read).expect("reopen")
}

/// Opens partition 0 of topic "t" in `dir`, with its groups beside it and no write-ahead
/// file: these tests are of the partition's own fsyncs (the log's tests cover the file).
fn open_with(dir: &Path, mode: OpenMode, settings: Settings) -> Result<Partition> {
    Partition::open(&real_io(), "t", 0, dir, mode, settings, &groups(dir), None)
}

fn open(dir: &Path) -> Partition {
    open_with(dir, OpenMode::Create, SETTINGS).expect("open partition")
}

fn values(n: usize) -> Vec<Record> {
    (0..n).map(|i| Record::new(format!("v{i}"))).collect()
}

#[test]
fn recover_mode_insists_on_an_existing_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let err = Partition::open(
        &real_io(),
        "t",
        0,
        &dir.path().join("missing"),
        OpenMode::Recover,
        SETTINGS,
        &groups(dir.path()),
        None,
    )
    .err()
    .expect("missing directory is an error");
    assert!(matches!(err, Error::Io { .. }), "{err}");
    let err = open_with(dir.path(), OpenMode::Recover, SETTINGS)
        .err()
        .expect("missing file is an error");
    assert!(matches!(err, Error::Io { .. }), "{err}");
}

#[tokio::test]
async fn read_skips_into_the_middle_of_a_batch_and_stops_at_max() {
    let dir = tempfile::tempdir().expect("tempdir");
    let partition = open(dir.path());
    partition.append(values(5), 1).await.expect("append");
    partition.append(values(5), 1).await.expect("append");

    let got = partition.read(3, 4).expect("read");
    let offsets: Vec<_> = got.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, [3, 4, 5, 6]);
    assert_eq!(got[0].value, Bytes::from("v3"));
    assert_eq!(got[2].value, Bytes::from("v0"));
    assert!(partition.read(10, 4).expect("read at end").is_empty());
    assert!(partition.read(0, 0).expect("read nothing").is_empty());
    assert_eq!(partition.read(0, usize::MAX).expect("read all").len(), 10);
}

#[tokio::test]
async fn failed_write_poisons_and_leaves_earlier_batches_readable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let partition = open(dir.path());
    partition
        .append(vec![Record::new("kept")], 1)
        .await
        .expect("append");
    let path = partition.active_path();
    let len = fs::metadata(&path).expect("metadata").len();
    let frames = partition.lock_state().len;

    // A read-only handle makes the next write fail like a broken disk would.
    partition.lock_state().file = read_only(&path);
    let err = partition
        .append(vec![Record::new("lost")], 1)
        .await
        .expect_err("write must fail");
    assert!(matches!(err, Error::Io { .. }), "{err}");
    assert!(err.to_string().contains("refuses writes"), "{err}");

    let err = partition
        .append(vec![Record::new("refused")], 1)
        .await
        .expect_err("partition is poisoned");
    assert!(
        matches!(&err, Error::Poisoned { topic, partition: 0 } if topic == "t"),
        "{err}"
    );
    assert!(err.to_string().contains("restart the node"), "{err}");

    assert_eq!(partition.end_offset(), 1);
    assert_eq!(partition.read(0, 10).expect("read").len(), 1);
    assert_eq!(fs::metadata(&path).expect("metadata").len(), len);
    // Nothing of the failed write is in the file either.
    assert!(is_zeros(&*read_only(&path), frames, len));
}

#[tokio::test]
async fn a_full_disk_refuses_the_group_without_poisoning() {
    let dir = tempfile::tempdir().expect("tempdir");
    let partition = open(dir.path());
    partition.append(values(2), 1).await.expect("append");
    let path = partition.active_path();
    let len = partition.lock_state().len;

    partition.lock_state().fail_next_write = Some(io::ErrorKind::StorageFull);
    let err = partition.append(values(3), 1).await.expect_err("disk full");
    assert!(
        matches!(&err, Error::DiskFull { topic, partition: 0 } if topic == "t"),
        "{err}"
    );
    // The half-written group was cut back and nothing became visible.
    assert_eq!(fs::metadata(&path).expect("metadata").len(), len);
    assert_eq!(partition.end_offset(), 2);

    // Not poisoned: the next append goes through, with the next dense offset.
    assert_eq!(partition.append(values(1), 1).await.expect("append"), 2);
    drop(partition);
    let partition = open(dir.path());
    assert_eq!(partition.read(0, 10).expect("read").len(), 3);
}

#[tokio::test]
async fn a_full_disk_that_cannot_be_cut_back_poisons() {
    let dir = tempfile::tempdir().expect("tempdir");
    let partition = open(dir.path());
    partition.append(values(1), 1).await.expect("append");
    {
        let mut state = partition.lock_state();
        // A read-only handle cannot be truncated either.
        state.file = read_only(&partition.active_path_locked(&state));
        state.fail_next_write = Some(io::ErrorKind::StorageFull);
    }
    let err = partition.append(values(1), 1).await.expect_err("fails");
    assert!(matches!(err, Error::Io { .. }), "{err}");
    let err = partition.append(values(1), 1).await.expect_err("poisoned");
    assert!(matches!(err, Error::Poisoned { .. }), "{err}");
}

#[tokio::test]
async fn corruption_found_by_a_read_is_an_error_not_a_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    let partition = open(dir.path());
    partition
        .append(vec![Record::new("value")], 1)
        .await
        .expect("append");
    let path = partition.active_path();

    let mut bytes = fs::read(&path).expect("read file");
    // The frame's last byte, not the zeros filled after it.
    let last = partition.lock_state().len as usize - 1;
    bytes[last] ^= 0x01;
    fs::write(&path, bytes).expect("write file");

    let err = partition.read(0, 1).expect_err("checksum must fail");
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
}

#[tokio::test]
async fn segments_roll_and_reads_cross_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = Settings {
        fsync: FsyncPolicy::Always,
        segment_bytes: 300,
    };
    let partition = open_with(dir.path(), OpenMode::Create, settings).expect("open");
    for _ in 0..20 {
        partition.append(values(3), 1).await.expect("append");
    }
    let bases: Vec<u64> = partition
        .shared
        .segments
        .read()
        .expect("lock")
        .keys()
        .copied()
        .collect();
    assert!(bases.len() > 5, "{bases:?}");
    for base in &bases[..bases.len() - 1] {
        assert!(dir.path().join(segment::index_file_name(*base)).exists());
        assert!(
            dir.path()
                .join(segment::time_index_file_name(*base))
                .exists()
        );
    }
    let all = partition.read(0, usize::MAX).expect("read");
    assert_eq!(
        all.iter().map(|r| r.offset).collect::<Vec<_>>(),
        (0..60).collect::<Vec<_>>()
    );
    let middle = partition.read(bases[2] + 1, 7).expect("read");
    assert_eq!(
        middle.iter().map(|r| r.offset).collect::<Vec<_>>(),
        (bases[2] + 1..bases[2] + 8).collect::<Vec<_>>()
    );
    drop(partition);

    let partition = open_with(dir.path(), OpenMode::Recover, settings).expect("reopen");
    assert_eq!(partition.end_offset(), 60);
    assert_eq!(partition.read(0, usize::MAX).expect("read").len(), 60);
    assert_eq!(partition.append(values(1), 1).await.expect("append"), 60);
}

#[tokio::test]
async fn a_full_disk_at_a_roll_refuses_the_append_and_keeps_the_active_segment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = Settings {
        fsync: FsyncPolicy::Always,
        segment_bytes: 300,
    };
    let partition = open_with(dir.path(), OpenMode::Create, settings).expect("open");
    partition.lock_state().fail_next_roll = Some(io::ErrorKind::StorageFull);
    let mut acknowledged = Vec::new();
    let err = loop {
        assert!(acknowledged.len() < 100, "no roll");
        match partition.append(values(3), 1).await {
            Ok(base) => acknowledged.extend(base..base + 3),
            Err(err) => break err,
        }
    };
    assert!(
        matches!(&err, Error::DiskFull { topic, partition: 0 } if topic == "t"),
        "{err}"
    );
    let end = partition.end_offset();
    assert_eq!(end, acknowledged.len() as u64);
    assert_eq!(
        partition.active_base_offset(),
        0,
        "the active segment stays"
    );
    assert!(
        !dir.path().join(segment::log_file_name(end)).exists(),
        "the next segment's file is removed"
    );

    // Space is back: the same append rolls, and later ones roll again.
    for _ in 0..10 {
        let base = partition.append(values(3), 1).await.expect("append");
        acknowledged.extend(base..base + 3);
    }
    assert!(partition.active_base_offset() > 0, "rolled");
    let all = partition.read(0, usize::MAX).expect("read");
    assert_eq!(
        all.iter().map(|r| r.offset).collect::<Vec<_>>(),
        acknowledged
    );
    drop(partition);

    let partition = open_with(dir.path(), OpenMode::Recover, settings).expect("reopen");
    assert_eq!(partition.read(0, usize::MAX).expect("read"), all);
    let base = partition.append(values(1), 1).await.expect("append");
    assert_eq!(base, acknowledged.len() as u64);
}

/// Opens a partition whose only segment, still empty, starts at `base`, as if `base`
/// offsets had been appended and deleted by retention.
fn open_empty_at(dir: &Path, base: u64) -> Partition {
    fs::File::create(dir.join(segment::log_file_name(base))).expect("create the segment");
    open_with(dir, OpenMode::Recover, SETTINGS).expect("open partition")
}

#[tokio::test]
async fn an_append_past_the_last_offset_is_refused_not_wrapped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = u64::MAX - 3;
    let partition = open_empty_at(dir.path(), base);
    assert_eq!(partition.end_offset(), base);
    assert_eq!(partition.append(values(2), 1).await.expect("fits"), base);

    // Offsets u64::MAX - 1 and u64::MAX: the second would leave no end offset.
    let err = partition
        .append(values(2), 1)
        .await
        .expect_err("u64::MAX is no offset");
    assert!(
        matches!(
            &err,
            Error::OffsetsExhausted { topic, partition: 0, next_offset, records: 2 }
                if topic == "t" && *next_offset == u64::MAX - 1
        ),
        "{err}"
    );
    assert!(err.to_string().contains("append to another"), "{err}");
    assert_eq!(partition.end_offset(), u64::MAX - 1, "nothing was written");

    // Not poisoned: the last offset still goes to a batch that fits, then none is left.
    assert_eq!(
        partition.append(values(1), 1).await.expect("fits"),
        u64::MAX - 1
    );
    assert_eq!(partition.end_offset(), u64::MAX);
    let err = partition.append(values(1), 1).await.expect_err("full");
    assert!(matches!(err, Error::OffsetsExhausted { .. }), "{err}");
    drop(partition);

    let partition = open_with(dir.path(), OpenMode::Recover, SETTINGS).expect("reopen");
    assert_eq!(partition.end_offset(), u64::MAX);
    let offsets: Vec<u64> = partition
        .read(0, usize::MAX)
        .expect("read")
        .iter()
        .map(|r| r.offset)
        .collect();
    assert_eq!(offsets, [u64::MAX - 3, u64::MAX - 2, u64::MAX - 1]);
}

#[tokio::test]
async fn a_frame_whose_last_offset_is_u64_max_is_cut_off_at_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = u64::MAX - 2;
    let path = dir.path().join(segment::log_file_name(base));
    let mut bytes = frame::encode_batch(base, &values(1), 1);
    let good_len = bytes.len() as u64;
    // Offsets u64::MAX - 1 and u64::MAX, as a writer that wrapped would leave them.
    bytes.extend(frame::encode_batch(base + 1, &values(2), 1));
    fs::write(&path, &bytes).expect("write the segment");

    let partition = open_with(dir.path(), OpenMode::Recover, SETTINGS).expect("open");
    assert_eq!(partition.end_offset(), u64::MAX - 1);
    assert_eq!(fs::metadata(&path).expect("metadata").len(), good_len);
    assert_eq!(partition.read(0, usize::MAX).expect("read").len(), 1);
}

/// With a commit delay, a busy partition's appends that come close together share one
/// write and one fdatasync, while neither an idle partition's lone append nor an appender
/// that waits for each acknowledgement is held. Counts and lower bounds only, with a
/// delay of a second, so only a stall of about that long could fail it; without the delay
/// (or without the rule that spares a lone appender) it fails on `delayed_groups`.
// The guard stands in for a slow fsync; the writer thread waits on it, not this task.
#[allow(clippy::await_holding_lock)]
#[tokio::test]
async fn a_commit_delay_gathers_a_busy_partitions_appends_and_spares_a_lone_appender() {
    let dir = tempfile::tempdir().expect("tempdir");
    let partition = Arc::new(open(dir.path()));
    let delay = Duration::from_secs(1);
    partition.set_commit_delay(delay);
    let append = |value: String| {
        let partition = Arc::clone(&partition);
        tokio::spawn(async move { partition.append(vec![Record::new(value)], 0).await })
    };

    // One appender waiting for each acknowledgement: groups of one, never held.
    for i in 0..5 {
        partition
            .append(vec![Record::new(format!("serial-{i}"))], 0)
            .await
            .expect("append");
    }
    assert_eq!(partition.delayed_groups(), 0);

    // Many at once, queued while the writer is held: one group of ten, not held either
    // (the last group before it took one append).
    let held = partition.hold_writer();
    let first: Vec<_> = (0..10).map(|i| append(format!("first-{i}"))).collect();
    // This runtime has one thread: the ten queue before the timer fires.
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(held);
    for task in first {
        task.await.expect("task").expect("append");
    }
    assert_eq!(partition.delayed_groups(), 0);

    // Right behind a group of several: the next burst's first append waits out the delay
    // and the rest join it.
    let fsyncs = partition.fsync_count();
    let started = Instant::now();
    let burst: Vec<_> = (0..10).map(|i| append(format!("burst-{i}"))).collect();
    for task in burst {
        task.await.expect("task").expect("append");
    }
    assert_eq!(partition.delayed_groups(), 1);
    assert_eq!(
        partition.fsync_count() - fsyncs,
        1,
        "the burst shares one fdatasync"
    );
    assert!(started.elapsed() >= delay, "acknowledged before the delay");

    // Quiet for longer than the delay: the next append is not held.
    tokio::time::sleep(delay + delay / 2).await;
    partition
        .append(vec![Record::new("after")], 0)
        .await
        .expect("append");
    assert_eq!(partition.delayed_groups(), 1);
    let values: Vec<String> = partition
        .read(0, 100)
        .expect("read")
        .iter()
        .map(|r| String::from_utf8_lossy(&r.value).into_owned())
        .collect();
    assert_eq!(values.len(), 26, "every append is there, once: {values:?}");
    assert_eq!(
        &values[..5],
        ["serial-0", "serial-1", "serial-2", "serial-3", "serial-4"]
    );
    assert_eq!(values[25], "after");
}
