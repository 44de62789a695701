use std::{
    collections::BTreeMap,
    io,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use tempfile::TempDir;

use super::*;
use crate::{
    LogOptions, TopicConfig,
    io::{CutMode, Fault, FaultOn, SimDisk},
};

const SOURCE: &str = "source";
const OUT_A: &str = "out-a";
const OUT_B: &str = "out-b";
const GROUP: &str = "pipe";
const PRODUCER: &str = "pipeline/pipe/source/0";

fn open_with(dir: &TempDir, opts: LogOptions) -> Log {
    Log::open(dir.path(), opts).expect("open log")
}

fn open(dir: &TempDir) -> Log {
    open_with(dir, LogOptions::default())
}

/// A source topic with 100 records and two output topics of 3 and 2 partitions.
async fn setup(dir: &TempDir) -> Log {
    let log = open(dir);
    log.create_topic(SOURCE, &TopicConfig::with_partitions(1))
        .expect("create source");
    log.create_topic(OUT_A, &TopicConfig::with_partitions(3))
        .expect("create out-a");
    log.create_topic(OUT_B, &TopicConfig::with_partitions(2))
        .expect("create out-b");
    let records = (0..100).map(|i| Record::new(format!("in-{i}"))).collect();
    log.append(SOURCE, records).await.expect("fill the source");
    log
}

/// Transaction `n`'s commit: the source offset `(n + 1) * 10`.
fn source_commit(n: u32) -> GroupCommit {
    GroupCommit {
        group: GROUP.to_owned(),
        topic: SOURCE.to_owned(),
        partition: 0,
        next_offset: u64::from(n + 1) * 10,
        generation: 0,
    }
}

/// Transaction `n`: `per_topic` keyed records to out-a (spread by key over its three
/// partitions) and as many unkeyed ones to out-b (round robin over two), committing the
/// source offset `(n + 1) * 10`.
fn txn(producer: &str, n: u32, per_topic: u32) -> Transaction {
    Transaction {
        producer: producer.to_owned(),
        appends: vec![
            (
                OUT_A.to_owned(),
                (0..per_topic)
                    .map(|i| {
                        Record::new(format!("{producer}:{n}:a{i}")).with_key(format!("{n}-{i}"))
                    })
                    .collect(),
            ),
            (
                OUT_B.to_owned(),
                (0..per_topic)
                    .map(|i| Record::new(format!("{producer}:{n}:b{i}")))
                    .collect(),
            ),
        ],
        commit: Some(source_commit(n)),
    }
}

/// Every record of every output partition, as value → how many times it is stored.
fn stored_values(log: &Log) -> BTreeMap<String, usize> {
    let mut values = BTreeMap::new();
    for topic in [OUT_A, OUT_B] {
        let partitions = log.topic(topic).expect("topic").partitions;
        for partition in 0..partitions {
            for record in log.read(topic, partition, 0, usize::MAX).expect("read") {
                let value = String::from_utf8(record.value.to_vec()).expect("utf-8");
                *values.entry(value).or_default() += 1;
            }
        }
    }
    values
}

/// Asserts that the outputs are exactly the records of `txns`, each once.
fn assert_exactly(log: &Log, txns: &[(&str, u32, u32)]) {
    let mut expected = BTreeMap::new();
    for &(producer, n, per_topic) in txns {
        for i in 0..per_topic {
            expected.insert(format!("{producer}:{n}:a{i}"), 1);
            expected.insert(format!("{producer}:{n}:b{i}"), 1);
        }
    }
    assert_eq!(stored_values(log), expected);
}

fn committed(log: &Log) -> Option<u64> {
    log.committed_offset(GROUP, SOURCE, 0).expect("committed")
}

fn journal_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join(journal::JOURNAL_DIR))
        .expect("list the journal")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "journal"))
        .collect();
    files.sort();
    files
}

#[tokio::test]
async fn a_transaction_over_topics_and_partitions_is_all_there_after_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = setup(&dir).await;
    log.commit_transaction(txn(PRODUCER, 0, 12))
        .await
        .expect("commit");
    assert_exactly(&log, &[(PRODUCER, 0, 12)]);
    assert_eq!(committed(&log), Some(10));
    for partition in 0..3 {
        assert!(
            log.end_offset(OUT_A, partition).expect("end") > 0,
            "keys spread"
        );
    }
    log.commit_transaction(txn(PRODUCER, 1, 5))
        .await
        .expect("commit");
    drop(log);

    let log = open(&dir);
    assert_exactly(&log, &[(PRODUCER, 0, 12), (PRODUCER, 1, 5)]);
    assert_eq!(committed(&log), Some(20));
    // Timestamps were fixed when the intent was written, and reads see tagged frames.
    let read = log.read(OUT_B, 0, 0, 1).expect("read");
    assert!(read[0].timestamp_ms > 1_600_000_000_000);
    drop(log);
    let log = open(&dir);
    assert_exactly(&log, &[(PRODUCER, 0, 12), (PRODUCER, 1, 5)]);
    assert_eq!(committed(&log), Some(20));
}

#[tokio::test]
async fn an_intent_whose_appends_never_happened_is_completed_once_on_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = setup(&dir).await;
    log.commit_transaction(txn(PRODUCER, 0, 4))
        .await
        .expect("commit");
    log.inject_transaction_fault(TransactionFault::StopAfterBatches(0));
    let err = log
        .commit_transaction(txn(PRODUCER, 1, 6))
        .await
        .expect_err("stopped");
    assert!(matches!(err, Error::TransactionIncomplete { .. }), "{err}");
    // The crash: nothing of transaction 1 was appended, its offset is not committed.
    assert_exactly(&log, &[(PRODUCER, 0, 4)]);
    assert_eq!(committed(&log), Some(10));
    drop(log);

    let log = open(&dir);
    assert_exactly(&log, &[(PRODUCER, 0, 4), (PRODUCER, 1, 6)]);
    assert_eq!(committed(&log), Some(20));
    drop(log);
    let log = open(&dir);
    assert_exactly(&log, &[(PRODUCER, 0, 4), (PRODUCER, 1, 6)]);
    assert_eq!(committed(&log), Some(20));
    // The producer carries on.
    log.commit_transaction(txn(PRODUCER, 2, 3))
        .await
        .expect("commit");
    assert_exactly(
        &log,
        &[(PRODUCER, 0, 4), (PRODUCER, 1, 6), (PRODUCER, 2, 3)],
    );
    assert_eq!(committed(&log), Some(30));
}

#[tokio::test]
async fn a_transaction_cut_after_some_partitions_is_completed_without_duplicates() {
    for landed in 1..5 {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = setup(&dir).await;
        log.inject_transaction_fault(TransactionFault::StopAfterBatches(landed));
        log.commit_transaction(txn(PRODUCER, 0, 8))
            .await
            .expect_err("stopped");
        let partly = stored_values(&log).len();
        assert!(
            partly > 0 && partly < 16,
            "{landed} batches landed: {partly}"
        );
        assert_eq!(committed(&log), None);
        drop(log);

        let log = open(&dir);
        assert_exactly(&log, &[(PRODUCER, 0, 8)]);
        assert_eq!(committed(&log), Some(10));
    }
}

#[tokio::test]
async fn a_torn_journal_tail_is_ignored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = setup(&dir).await;
    log.commit_transaction(txn(PRODUCER, 0, 4))
        .await
        .expect("commit");
    log.inject_transaction_fault(TransactionFault::StopAfterBatches(0));
    log.commit_transaction(txn(PRODUCER, 1, 4))
        .await
        .expect_err("stopped");
    drop(log);

    // The crash tore the last intent: cut its last bytes off.
    let journal = journal_files(dir.path()).pop().expect("a journal file");
    let len = std::fs::metadata(&journal).expect("stat").len();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&journal)
        .expect("open the journal");
    file.set_len(len - 5).expect("tear");
    drop(file);

    let log = open(&dir);
    assert_exactly(&log, &[(PRODUCER, 0, 4)]);
    assert_eq!(committed(&log), Some(10));
    log.commit_transaction(txn(PRODUCER, 1, 4))
        .await
        .expect("commit again");
    assert_exactly(&log, &[(PRODUCER, 0, 4), (PRODUCER, 1, 4)]);
    drop(log);

    // Garbage after the last whole entry is dropped too.
    let journal = journal_files(dir.path()).pop().expect("a journal file");
    let mut bytes = std::fs::read(&journal).expect("read");
    bytes.extend([0xD7, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    std::fs::write(&journal, bytes).expect("write");
    let log = open(&dir);
    assert_exactly(&log, &[(PRODUCER, 0, 4), (PRODUCER, 1, 4)]);
    assert_eq!(committed(&log), Some(20));
}

#[tokio::test]
async fn a_failed_append_leaves_the_transaction_pending_until_the_next_call() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = setup(&dir).await;
    let out_b_0 = log.get_partition(OUT_B, 0).expect("partition");

    out_b_0.fail_next_write(io::ErrorKind::StorageFull);
    let err = log
        .commit_transaction(txn(PRODUCER, 0, 6))
        .await
        .expect_err("disk full");
    match &err {
        Error::TransactionIncomplete { source, .. } => {
            assert!(matches!(**source, Error::DiskFull { .. }), "{source}");
        }
        other => panic!("unexpected {other}"),
    }
    assert!(
        err.to_string().contains("send the same transaction again"),
        "{err}"
    );
    assert_eq!(
        committed(&log),
        None,
        "no offset before every output is durable"
    );

    // The same transaction sent again completes it, appending only what is missing:
    // every record once.
    log.commit_transaction(txn(PRODUCER, 0, 6))
        .await
        .expect("complete");
    assert_exactly(&log, &[(PRODUCER, 0, 6)]);
    assert_eq!(committed(&log), Some(10));
    // Once more (a caller that did not see the first answer): nothing is written again.
    log.commit_transaction(txn(PRODUCER, 0, 6))
        .await
        .expect("again");
    assert_exactly(&log, &[(PRODUCER, 0, 6)]);

    // While the earlier one cannot complete, a new transaction writes nothing.
    out_b_0.fail_next_write(io::ErrorKind::StorageFull);
    log.commit_transaction(txn(PRODUCER, 1, 6))
        .await
        .expect_err("disk full");
    out_b_0.fail_next_write(io::ErrorKind::StorageFull);
    let err = log
        .commit_transaction(txn(PRODUCER, 2, 6))
        .await
        .expect_err("the earlier one is stuck");
    assert!(
        matches!(err, Error::EarlierTransactionIncomplete { .. }),
        "{err}"
    );
    assert!(
        !stored_values(&log).keys().any(|v| v.contains(":2:")),
        "nothing of the new transaction"
    );
    // Another producer is not held up.
    log.commit_transaction(Transaction {
        commit: None,
        ..txn("other", 0, 2)
    })
    .await
    .expect("another producer commits");

    log.commit_transaction(txn(PRODUCER, 2, 6))
        .await
        .expect("retry");
    assert_exactly(
        &log,
        &[
            (PRODUCER, 0, 6),
            (PRODUCER, 1, 6),
            (PRODUCER, 2, 6),
            ("other", 0, 2),
        ],
    );
    assert_eq!(committed(&log), Some(30));
    drop(log);
    let log = open(&dir);
    assert_eq!(committed(&log), Some(30));
    assert_eq!(stored_values(&log).len(), 3 * 12 + 4);
}

#[tokio::test]
async fn validation_errors_write_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = LogOptions {
        max_record_bytes: 64,
        max_batch_bytes: 1024,
        max_transaction_bytes: 2048,
        ..LogOptions::default()
    };
    let log = open_with(&dir, opts.clone());
    for (name, partitions) in [(SOURCE, 1), (OUT_A, 3), (OUT_B, 2)] {
        log.create_topic(name, &TopicConfig::with_partitions(partitions))
            .expect("create");
    }
    let compacted = TopicConfig {
        compaction: true,
        ..TopicConfig::with_partitions(1)
    };
    log.create_topic("compacted", &compacted).expect("create");
    log.append(SOURCE, vec![Record::new("in"); 10])
        .await
        .expect("fill the source");
    log.commit_transaction(txn(PRODUCER, 0, 1))
        .await
        .expect("commit");

    let with = |f: &dyn Fn(&mut Transaction)| {
        let mut t = txn(PRODUCER, 0, 2);
        f(&mut t);
        t
    };
    type Expected = fn(&Error) -> bool;
    let cases: Vec<(Transaction, Expected)> = vec![
        (
            with(&|t| t.appends.push(("missing".into(), vec![Record::new("x")]))),
            |e| matches!(e, Error::UnknownTopic { .. }),
        ),
        (
            with(&|t| t.appends[1].1.push(Record::new(vec![b'x'; 65]))),
            |e| matches!(e, Error::RecordTooLarge { index: 2, .. }),
        ),
        (
            with(&|t| t.appends[1].1 = vec![Record::new(vec![b'x'; 60]); 40]),
            |e| matches!(e, Error::BatchTooLarge { .. }),
        ),
        (
            with(&|t| {
                t.appends = vec![
                    (OUT_A.to_owned(), vec![Record::new(vec![b'x'; 60]); 12]),
                    (OUT_B.to_owned(), vec![Record::new(vec![b'x'; 60]); 20]),
                ]
            }),
            |e| matches!(e, Error::TransactionTooLarge { .. }),
        ),
        (
            with(&|t| t.appends.push(("compacted".into(), vec![Record::new("x")]))),
            |e| matches!(e, Error::KeyRequired { .. }),
        ),
        (
            with(&|t| t.commit.as_mut().expect("commit").group = "bad group".into()),
            |e| matches!(e, Error::InvalidGroupName { .. }),
        ),
        (
            with(&|t| t.commit.as_mut().expect("commit").next_offset = 11),
            |e| matches!(e, Error::OffsetOutOfRange { .. }),
        ),
        (
            with(&|t| t.commit.as_mut().expect("commit").partition = 1),
            |e| matches!(e, Error::UnknownPartition { .. }),
        ),
        (with(&|t| t.producer = String::new()), |e| {
            matches!(e, Error::InvalidProducerName { .. })
        }),
        (with(&|t| t.producer = "p".repeat(256)), |e| {
            matches!(e, Error::InvalidProducerName { .. })
        }),
    ];
    let journal_len = || -> u64 {
        journal_files(dir.path())
            .iter()
            .map(|f| std::fs::metadata(f).expect("stat").len())
            .sum()
    };
    log.inner.journal.sync().expect("sync");
    let before = journal_len();
    for (transaction, expected) in cases {
        let err = log
            .commit_transaction(transaction)
            .await
            .expect_err("invalid");
        assert!(expected(&err), "unexpected error: {err}");
        assert_exactly(&log, &[(PRODUCER, 0, 1)]);
        assert_eq!(committed(&log), Some(10));
    }
    log.inner.journal.sync().expect("sync");
    assert_eq!(journal_len(), before, "no intent was written");
    drop(log);
    let log = open_with(&dir, opts);
    assert_exactly(&log, &[(PRODUCER, 0, 1)]);
    assert_eq!(committed(&log), Some(10));
}

#[tokio::test]
async fn a_full_journal_disk_writes_nothing_and_a_failed_journal_write_poisons() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = setup(&dir).await;
    log.commit_transaction(txn(PRODUCER, 0, 2))
        .await
        .expect("commit");

    log.inner
        .journal
        .fail_next_write(io::ErrorKind::StorageFull);
    let err = log
        .commit_transaction(txn(PRODUCER, 1, 2))
        .await
        .expect_err("disk full");
    assert!(matches!(err, Error::JournalDiskFull), "{err}");
    assert_exactly(&log, &[(PRODUCER, 0, 2)]);
    log.commit_transaction(txn(PRODUCER, 1, 2))
        .await
        .expect("space again");
    assert_exactly(&log, &[(PRODUCER, 0, 2), (PRODUCER, 1, 2)]);

    log.inner.journal.fail_next_write(io::ErrorKind::Other);
    let err = log
        .commit_transaction(txn(PRODUCER, 2, 2))
        .await
        .expect_err("write error");
    assert!(matches!(err, Error::Io { .. }), "{err}");
    for producer in [PRODUCER, "other"] {
        let err = log
            .commit_transaction(txn(producer, 3, 2))
            .await
            .expect_err("poisoned");
        assert!(matches!(err, Error::JournalPoisoned), "{err}");
    }
    log.append(OUT_A, vec![Record::new("plain")])
        .await
        .expect("plain appends go on");
    assert_eq!(committed(&log), Some(20));
    drop(log);

    let log = open(&dir);
    let mut values = stored_values(&log);
    assert_eq!(values.remove("plain"), Some(1));
    assert_eq!(values.len(), 8, "transactions 0 and 1 only: {values:?}");
    assert_eq!(committed(&log), Some(20));
    log.commit_transaction(txn(PRODUCER, 2, 2))
        .await
        .expect("a restart clears the poison");
}

#[tokio::test]
async fn recovery_never_undoes_a_later_commit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = setup(&dir).await;
    log.commit_transaction(txn(PRODUCER, 4, 1))
        .await
        .expect("commit");
    assert_eq!(committed(&log), Some(50));
    // A plain commit after it (a reset) wins over the journal's at recovery.
    log.commit_offset(GROUP, SOURCE, 0, 20).expect("reset");
    drop(log);
    let log = open(&dir);
    assert_eq!(committed(&log), Some(20));

    log.commit_offset(GROUP, SOURCE, 0, 5)
        .expect("plain commit");
    log.commit_transaction(txn(PRODUCER, 6, 1))
        .await
        .expect("commit");
    drop(log);
    let log = open(&dir);
    assert_eq!(committed(&log), Some(70));
}

#[tokio::test]
async fn transaction_offsets_are_durable_through_the_journal_until_a_checkpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = setup(&dir).await;
    let group_file = dir.path().join("groups").join(format!("{GROUP}.json"));
    for n in 0..5 {
        log.commit_transaction(txn(PRODUCER, n, 1))
            .await
            .expect("commit");
    }
    assert!(!group_file.exists(), "no group file write per transaction");
    assert_eq!(committed(&log), Some(50));
    drop(log);
    let log = open(&dir);
    assert!(group_file.exists(), "open checkpoints the groups");
    assert_eq!(committed(&log), Some(50));
    assert_eq!(
        journal_files(dir.path()).len(),
        1,
        "open replaced the journal"
    );
}

#[tokio::test]
async fn a_new_journal_file_carries_pending_intents_and_old_files_go() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = LogOptions {
        journal_file_bytes: 2048,
        ..LogOptions::default()
    };
    let log = setup(&dir).await;
    drop(log);
    let log = open_with(&dir, opts.clone());
    let out_b_1 = log.get_partition(OUT_B, 1).expect("partition");
    out_b_1.fail_next_write(io::ErrorKind::StorageFull);
    log.commit_transaction(txn(PRODUCER, 0, 4))
        .await
        .expect_err("left pending");
    let mut done = vec![];
    for n in 0..30 {
        let producer = "busy";
        let t = Transaction {
            commit: Some(GroupCommit {
                group: "busy".into(),
                topic: SOURCE.into(),
                partition: 0,
                next_offset: u64::from(n),
                generation: 0,
            }),
            ..txn(producer, n, 3)
        };
        log.commit_transaction(t).await.expect("commit");
        done.push((producer, n, 3));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while journal_files(dir.path()).len() > 2 {
        assert!(Instant::now() < deadline, "old journal files stay");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        dir.path().join("groups").join("busy.json").exists(),
        "the old files went only after a checkpoint of the groups"
    );
    drop(log);

    // The pending intent survived every rotation, as a copy in the newest file.
    let log = open_with(&dir, opts);
    done.push((PRODUCER, 0, 4));
    assert_exactly(&log, &done);
    assert_eq!(committed(&log), Some(10));
    assert_eq!(
        log.committed_offset("busy", SOURCE, 0).expect("committed"),
        Some(29)
    );
}

#[tokio::test]
async fn retention_leaves_segments_of_unfinished_transactions_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = setup(&dir).await;
    let small = TopicConfig {
        segment_bytes: 512,
        retention_bytes: Some(1),
        ..TopicConfig::with_partitions(1)
    };
    log.create_topic("kept", &small).expect("create");
    log.create_topic("zzz", &TopicConfig::with_partitions(1))
        .expect("create");
    let transaction = Transaction {
        producer: PRODUCER.into(),
        appends: vec![
            ("kept".into(), vec![Record::new("tagged")]),
            ("zzz".into(), vec![Record::new("late")]),
        ],
        commit: None,
    };
    // "kept" comes first: its batch lands, "zzz"'s does not.
    log.inject_transaction_fault(TransactionFault::StopAfterBatches(1));
    log.commit_transaction(transaction.clone())
        .await
        .expect_err("stopped");
    assert_eq!(log.end_offset("kept", 0).expect("end"), 1);
    for _ in 0..20 {
        log.append("kept", vec![Record::new(vec![b'f'; 200])])
            .await
            .expect("append");
    }
    let report = log.enforce_retention().expect("retention");
    assert_eq!(report.segments_deleted, 0, "{report:?}");
    assert_eq!(log.start_offset("kept", 0).expect("start"), 0);

    // Completing it finds the batch by its tag instead of appending it again.
    log.commit_transaction(Transaction {
        producer: PRODUCER.into(),
        ..Transaction::default()
    })
    .await
    .expect("complete");
    assert_eq!(log.end_offset("kept", 0).expect("end"), 21);
    assert_eq!(log.read("zzz", 0, 0, 10).expect("read").len(), 1);
    let report = log.enforce_retention().expect("retention");
    assert!(report.segments_deleted > 0, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_producers_commit_independently() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = setup(&dir).await;
    let tasks: Vec<_> = (0..4)
        .map(|p| {
            let log = log.clone();
            tokio::spawn(async move {
                let producer = format!("producer-{p}");
                for n in 0..10 {
                    let t = Transaction {
                        commit: Some(GroupCommit {
                            group: producer.clone(),
                            topic: SOURCE.into(),
                            partition: 0,
                            next_offset: u64::from(n + 1),
                            generation: 0,
                        }),
                        ..txn(&producer, n, 3)
                    };
                    log.commit_transaction(t).await.expect("commit");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task");
    }
    let names: Vec<String> = (0..4).map(|p| format!("producer-{p}")).collect();
    let expected: Vec<(&str, u32, u32)> = names
        .iter()
        .flat_map(|p| (0..10).map(move |n| (p.as_str(), n, 3)))
        .collect();
    assert_exactly(&log, &expected);
    drop(log);
    let log = open(&dir);
    assert_exactly(&log, &expected);
    for name in &names {
        assert_eq!(log.committed_offset(name, SOURCE, 0).expect("c"), Some(10));
    }
}

const SINGLE: &str = "out-single";

/// `setup` plus a one-partition output topic with segments of `segment_bytes`.
async fn setup_single(dir: &TempDir, segment_bytes: u64) -> Log {
    let log = setup(dir).await;
    let config = TopicConfig {
        segment_bytes,
        ..TopicConfig::with_partitions(1)
    };
    log.create_topic(SINGLE, &config)
        .expect("create out-single");
    log
}

/// Transaction `n` of a co-partitioned pipeline: `count` records, all to out-single's one
/// partition, committing the source offset `(n + 1) * 10`.
fn single(n: u32, count: u32) -> Transaction {
    Transaction {
        producer: PRODUCER.to_owned(),
        appends: vec![(
            SINGLE.to_owned(),
            (0..count)
                .map(|i| Record::new(format!("{n}:{i}")).with_key(format!("{n}")))
                .collect(),
        )],
        commit: Some(source_commit(n)),
    }
}

/// out-single's values, in offset order.
fn single_values(log: &Log) -> Vec<String> {
    log.read(SINGLE, 0, 0, usize::MAX)
        .expect("read out-single")
        .into_iter()
        .map(|r| String::from_utf8(r.value.to_vec()).expect("utf-8"))
        .collect()
}

/// What transactions `ns` of `count` records each wrote, in order.
fn single_expected(ns: impl IntoIterator<Item = u32>, count: u32) -> Vec<String> {
    ns.into_iter()
        .flat_map(|n| (0..count).map(move |i| format!("{n}:{i}")))
        .collect()
}

/// The directory as a crash would leave it: every file as it is now, without the close
/// (which checkpoints the groups).
fn crash_image(dir: &TempDir) -> TempDir {
    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).expect("mkdir");
        for entry in std::fs::read_dir(from).expect("list") {
            let entry = entry.expect("entry");
            let target = to.join(entry.file_name());
            if entry.file_type().expect("type").is_dir() {
                copy(&entry.path(), &target);
            } else {
                std::fs::copy(entry.path(), target).expect("copy");
            }
        }
    }
    let image = tempfile::tempdir().expect("tempdir");
    copy(dir.path(), image.path());
    image
}

#[tokio::test]
async fn a_single_partition_transaction_is_one_frame_carrying_its_commit_and_survives_a_crash() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = setup_single(&dir, 64 << 20).await;
    let fsyncs = || {
        log.get_partition(SINGLE, 0)
            .expect("partition")
            .fsync_count()
    };
    let before = fsyncs();
    for n in 0..3 {
        log.commit_transaction(single(n, 4)).await.expect("commit");
    }
    assert_eq!(fsyncs() - before, 3, "one fsync per transaction");
    assert_eq!(committed(&log), Some(30));
    let group_file = dir.path().join("groups").join(format!("{GROUP}.json"));
    assert!(!group_file.exists(), "no group file write per transaction");

    let image = crash_image(&dir);
    let journal = journal::recover(&crate::io::RealIo, &image.path().join(journal::JOURNAL_DIR))
        .expect("journal");
    assert!(journal.intents.is_empty(), "no journal intent: {journal:?}");
    let recovered = open(&image);
    assert_eq!(
        committed(&recovered),
        Some(30),
        "the frames carried the commit"
    );
    assert_eq!(single_values(&recovered), single_expected(0..3, 4));

    // Later commits of the producer win over the frames' at recovery, and the other way
    // round, whichever path wrote them.
    recovered
        .commit_transaction(txn(PRODUCER, 5, 1))
        .await
        .expect("journal path");
    assert_eq!(committed(&recovered), Some(60));
    recovered
        .commit_transaction(single(7, 1))
        .await
        .expect("frame path");
    assert_eq!(committed(&recovered), Some(80));
    let again = crash_image(&image);
    assert_eq!(committed(&open(&again)), Some(80));
}

#[tokio::test]
async fn frame_commits_reach_the_group_files_before_their_segment_is_left_behind() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Each transaction's frame fills a segment of its own.
    let log = setup_single(&dir, 256).await;
    for n in 0..6 {
        log.commit_transaction(single(n, 3)).await.expect("commit");
    }
    // A plain append rolls past the last transaction's segment: open will not scan it.
    log.append(SINGLE, vec![Record::new("x".repeat(200))])
        .await
        .expect("append");
    let image = crash_image(&dir);
    let recovered = open(&image);
    assert_eq!(committed(&recovered), Some(60), "checkpointed at the roll");
    let mut expected = single_expected(0..6, 3);
    expected.push("x".repeat(200));
    assert_eq!(single_values(&recovered), expected);

    // Retention deleting the segments loses no commit either.
    let config = TopicConfig {
        segment_bytes: 256,
        retention_bytes: Some(1),
        ..TopicConfig::with_partitions(1)
    };
    log.create_topic(SINGLE, &config).expect("set retention");
    log.enforce_retention().expect("retention");
    let image = crash_image(&dir);
    assert_eq!(committed(&open(&image)), Some(60));
}

#[tokio::test]
async fn a_torn_single_frame_takes_its_commit_with_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = setup_single(&dir, 64 << 20).await;
    log.commit_transaction(single(0, 3)).await.expect("commit");
    log.commit_transaction(single(1, 3)).await.expect("commit");
    let image = crash_image(&dir);
    drop(log);
    let segment = image
        .path()
        .join("topics")
        .join(SINGLE)
        .join("0")
        .join(crate::segment::log_file_name(0));
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .expect("open the segment");
    let len = crate::tests::frames_len(&segment);
    file.set_len(len - 1).expect("tear the last frame");
    drop(file);
    let recovered = open(&image);
    assert_eq!(
        committed(&recovered),
        Some(10),
        "only the whole frame's commit"
    );
    assert_eq!(single_values(&recovered), single_expected(0..1, 3));
}

#[tokio::test]
async fn a_single_frame_refused_by_a_full_disk_counts_for_nothing_and_may_be_sent_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = setup_single(&dir, 64 << 20).await;
    log.commit_transaction(single(0, 3)).await.expect("commit");
    let partition = log.get_partition(SINGLE, 0).expect("partition");
    partition.fail_next_write(io::ErrorKind::StorageFull);
    let err = log
        .commit_transaction(single(1, 3))
        .await
        .expect_err("disk full");
    assert!(matches!(err, Error::DiskFull { .. }), "{err}");
    assert_eq!(committed(&log), Some(10));
    assert_eq!(single_values(&log), single_expected(0..1, 3));

    log.commit_transaction(single(1, 3))
        .await
        .expect("sent again");
    assert_eq!(committed(&log), Some(20));
    assert_eq!(single_values(&log), single_expected(0..2, 3));
    drop(log);
    let log = open(&dir);
    assert_eq!(committed(&log), Some(20));
    assert_eq!(single_values(&log), single_expected(0..2, 3));
}

#[tokio::test]
async fn the_call_after_a_cancelled_single_frame_waits_for_that_frame() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = setup_single(&dir, 64 << 20).await;
    let partition = log.get_partition(SINGLE, 0).expect("partition");
    // Another thread holds the partition's writer until told to let go.
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        let _held = partition.hold_writer();
        held_tx.send(()).expect("report");
        let _ = release_rx.recv();
    });
    held_rx.recv().expect("the writer is held");
    // Polled once, the call queues its frame and waits for the held writer; then it is
    // dropped (cancelled) with the frame in flight.
    let mut cancelled = Box::pin(log.commit_transaction(single(0, 3)));
    assert!(
        futures::poll!(cancelled.as_mut()).is_pending(),
        "the writer is held"
    );
    drop(cancelled);
    // Polled once here, the next call runs until it waits: for the frame in flight,
    // which the held writer cannot acknowledge. One that did not wait would be done.
    let mut next = std::pin::pin!(log.commit_transaction(Transaction {
        producer: PRODUCER.into(),
        ..Transaction::default()
    }));
    assert!(
        futures::poll!(next.as_mut()).is_pending(),
        "the next call waits for the frame in flight"
    );
    drop(release_tx);
    holder.join().expect("holder");
    tokio::time::timeout(Duration::from_secs(30), next)
        .await
        .expect("the next call ends once the frame is written")
        .expect("the next call");
    assert_eq!(committed(&log), Some(10), "the cancelled frame landed");
    assert_eq!(single_values(&log), single_expected(0..1, 3));
}

/// The log on a simulated disk, at `/data`.
fn open_sim(disk: &SimDisk) -> Result<Log> {
    Log::open_with_io(
        Arc::new(disk.clone()),
        Path::new("/data"),
        LogOptions::default(),
    )
}

const JOURNALED: &str = "pipeline/journaled";
const FRAMED: &str = "pipeline/framed";

/// Transaction `n` of `producer`: for `JOURNALED`, two records to out-a (by key) and two
/// to out-b (round robin), which go through the journal; for `FRAMED`, two records to
/// out-single's one partition, one frame carrying the commit. Either commits the source
/// offset `(n + 1) * 10` for a group named after the producer.
fn sim_txn(producer: &str, n: u32) -> Transaction {
    let record = |suffix: String| Record::new(format!("{producer}:{n}:{suffix}"));
    let appends = if producer == JOURNALED {
        vec![
            (
                OUT_A.to_owned(),
                (0..2)
                    .map(|i| record(format!("a{i}")).with_key(format!("{n}-{i}")))
                    .collect(),
            ),
            (
                OUT_B.to_owned(),
                (0..2).map(|i| record(format!("b{i}"))).collect(),
            ),
        ]
    } else {
        vec![(
            SINGLE.to_owned(),
            (0..2).map(|i| record(format!("s{i}"))).collect(),
        )]
    };
    Transaction {
        producer: producer.to_owned(),
        appends,
        commit: Some(GroupCommit {
            group: sim_group(producer),
            ..source_commit(n)
        }),
    }
}

fn sim_group(producer: &str) -> String {
    producer.replace('/', "-")
}

/// Every output value of every transaction, with how often it is stored, and each
/// producer's committed offset: what a reader sees of the transactions.
fn sim_state(log: &Log) -> (BTreeMap<String, usize>, Vec<Option<u64>>) {
    let mut values = stored_values(log);
    for value in single_values(log) {
        *values.entry(value).or_default() += 1;
    }
    let committed = [JOURNALED, FRAMED]
        .iter()
        .map(|p| {
            log.committed_offset(&sim_group(p), SOURCE, 0)
                .expect("committed")
        })
        .collect();
    (values, committed)
}

/// Checks that each of `producer`'s transactions `0..sent` is stored whole and once or
/// not at all, in order, the first `acked` at least, and that its offset covers exactly
/// the stored ones.
fn check_sim_transactions(log: &Log, producer: &str, sent: u32, acked: u32, label: &str) {
    let (values, _) = sim_state(log);
    let mut stored = 0;
    for n in 0..sent {
        let expected: Vec<String> = sim_txn(producer, n)
            .appends
            .iter()
            .flat_map(|(_, records)| records)
            .map(|r| String::from_utf8(r.value.to_vec()).expect("utf-8"))
            .collect();
        let counts: Vec<usize> = expected
            .iter()
            .map(|v| values.get(v).copied().unwrap_or(0))
            .collect();
        if counts.iter().all(|&c| c == 1) {
            assert_eq!(
                stored, n,
                "{label}: {producer}'s transaction {n} after a gap"
            );
            stored = n + 1;
        } else {
            assert!(
                counts.iter().all(|&c| c == 0),
                "{label}: {producer}'s transaction {n} is stored in part or twice: {counts:?}"
            );
        }
    }
    assert!(
        stored >= acked,
        "{label}: {producer}: {stored} transactions stored, {acked} acknowledged"
    );
    let committed = log
        .committed_offset(&sim_group(producer), SOURCE, 0)
        .expect("committed");
    let expected = (stored > 0).then(|| u64::from(stored) * 10);
    assert_eq!(
        committed, expected,
        "{label}: {producer}'s offset does not match its stored transactions"
    );
}

#[derive(Default)]
struct Sent {
    sent: [u32; 2],
    acked: [u32; 2],
}

/// The power fails at every step of a run of transactions of both kinds (the
/// one-partition ones rolling a segment every few frames); after each, the disk comes
/// back with unsynced writes dropped, kept and torn, and every transaction acknowledged
/// is there once with its offset, the one in flight whole or not at all. A process crash
/// at that step instead, then a power cut after the next open: the second open shows what
/// the first did.
#[test]
fn transactions_survive_a_power_cut_at_every_step() {
    let base = SimDisk::new();
    {
        let log = open_sim(&base).expect("open");
        for (name, partitions) in [(SOURCE, 1), (OUT_A, 3), (OUT_B, 2)] {
            log.create_topic(name, &TopicConfig::with_partitions(partitions))
                .expect("create");
        }
        let single = TopicConfig {
            segment_bytes: 256,
            ..TopicConfig::with_partitions(1)
        };
        log.create_topic(SINGLE, &single).expect("create");
        let source = (0..100).map(|i| Record::new(format!("in-{i}"))).collect();
        futures::executor::block_on(log.append(SOURCE, source)).expect("fill the source");
    }
    let cuts = [
        (CutMode::DropUnsynced, 0),
        (CutMode::KeepAll, 0),
        (CutMode::Torn, 1),
        (CutMode::Torn, 2),
    ];
    for step in 0.. {
        let disk = base.fork();
        disk.fail_power_after(step);
        let mut sent = Sent::default();
        let mut run = || -> Result<()> {
            let log = open_sim(&disk)?;
            for n in 0..4 {
                for (i, producer) in [JOURNALED, FRAMED].into_iter().enumerate() {
                    sent.sent[i] = n + 1;
                    futures::executor::block_on(log.commit_transaction(sim_txn(producer, n)))?;
                    sent.acked[i] = n + 1;
                }
            }
            Ok(())
        };
        let result = run();
        let finished = disk.is_powered();
        if let Err(error) = result {
            assert!(!finished, "step {step}: failed with the power on: {error}");
        }
        for (mode, seed) in cuts {
            let label = format!("power lost at operation {step}, cut {mode:?} (seed {seed})");
            let log = open_sim(&disk.crash_image(mode, seed))
                .unwrap_or_else(|e| panic!("{label}: the log does not open: {e}"));
            for (i, producer) in [JOURNALED, FRAMED].into_iter().enumerate() {
                check_sim_transactions(&log, producer, sent.sent[i], sent.acked[i], &label);
            }
        }
        let label = format!("process crash at operation {step}, then a power cut");
        let restarted = disk.fork();
        let log = open_sim(&restarted).expect("open after the crash");
        let shown = sim_state(&log);
        let image = restarted.power_cut(CutMode::DropUnsynced, 0);
        drop(log);
        let log = open_sim(&image).expect("open after the power cut");
        assert_eq!(
            sim_state(&log),
            shown,
            "{label}: what the open showed is gone"
        );
        if finished {
            assert!(step > 50, "{step} steps");
            break;
        }
    }
}

/// A disk that fails a transaction's batch with ENOSPC or EIO, and the power cut after it:
/// a failed batch is refused without a trace (ENOSPC) or poisons its partition (EIO),
/// the transaction stays pending, and the log completes it exactly once, at the producer's
/// next call or at the open after the cut.
#[test]
fn a_transaction_whose_batch_fails_on_the_simulated_disk_completes_once_after_a_power_cut() {
    for error in [io::ErrorKind::StorageFull, io::ErrorKind::Other] {
        for (mode, seed) in [(CutMode::DropUnsynced, 0), (CutMode::Torn, 5)] {
            let disk = SimDisk::new();
            let log = open_sim(&disk).expect("open");
            for (name, partitions) in [(SOURCE, 1), (OUT_A, 3), (OUT_B, 2), (SINGLE, 1)] {
                log.create_topic(name, &TopicConfig::with_partitions(partitions))
                    .expect("create");
            }
            let source = (0..100).map(|i| Record::new(format!("in-{i}"))).collect();
            futures::executor::block_on(log.append(SOURCE, source)).expect("fill");
            disk.inject(Fault {
                on: FaultOn::Write,
                skip: 0,
                error,
                under: Some(Path::new("/data/topics").join(OUT_B)),
            });
            let err = futures::executor::block_on(log.commit_transaction(sim_txn(JOURNALED, 0)))
                .expect_err("the batch fails");
            assert!(
                matches!(err, Error::TransactionIncomplete { .. }),
                "{error:?}: {err}"
            );
            assert!(disk.faults_fired());
            if error == io::ErrorKind::StorageFull {
                // Space again: the producer's next call completes it.
                futures::executor::block_on(log.commit_transaction(sim_txn(JOURNALED, 1)))
                    .expect("the next call completes the pending one first");
            }
            let after = disk.power_cut(mode, seed);
            drop(log);
            let log = open_sim(&after).expect("open after the cut");
            let (sent, acked) = match error {
                io::ErrorKind::StorageFull => (2, 2),
                _ => (1, 1),
            };
            let label = format!("{error:?}, then {mode:?}");
            check_sim_transactions(&log, JOURNALED, sent, acked, &label);
        }
    }
}

/// Recovery looks for a batch's tag from the end offset its intent recorded: a batch with
/// the same tag before that offset (in the same segment, before the indexed position) is
/// not the one it looks for.
#[tokio::test]
async fn a_tag_is_looked_for_only_in_batches_at_or_after_the_recorded_end_offset() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = setup(&dir).await;
    let partition = log.get_partition(OUT_B, 0).expect("partition");
    let tag = FrameTag {
        producer_id: journal::producer_id(PRODUCER),
        sequence: 7,
    };
    let end = partition.end_offset();
    let reply = partition
        .enqueue(vec![Record::new("tagged")], 1, Some(tag), None)
        .expect("enqueue");
    reply.await.expect("reply").expect("append");
    assert!(partition.contains_tag(end, tag).expect("scan"));
    let after = partition.end_offset();
    assert!(
        !partition.contains_tag(after, tag).expect("scan"),
        "a batch before the end offset was taken for the one looked for"
    );
    partition
        .append(vec![Record::new("plain")], 1)
        .await
        .expect("append");
    assert!(!partition.contains_tag(after, tag).expect("scan"));
}

#[tokio::test]
async fn an_atomic_append_across_partitions_is_whole_after_a_crash_part_way() {
    for landed in 0..3 {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = setup(&dir).await;
        // Keyed so that all three partitions of out-a get records.
        let records: Vec<Record> = (0..30)
            .map(|i| Record::new(format!("atomic-{i}")).with_key(format!("k{i}")))
            .collect();
        let positions = log
            .append_atomic(OUT_A, records.clone())
            .await
            .expect("append");
        let partitions: std::collections::BTreeSet<u32> =
            positions.iter().map(|p| p.partition).collect();
        assert_eq!(partitions.len(), 3, "the batch spans the partitions");
        for (position, record) in positions.iter().zip(&records) {
            let stored = log
                .read(OUT_A, position.partition, position.offset, 1)
                .expect("read");
            assert_eq!(stored[0].value, record.value, "{position:?}");
        }

        // The crash: the call stops after `landed` of its three batches.
        log.inject_transaction_fault(TransactionFault::StopAfterBatches(landed));
        let second: Vec<Record> = (0..30)
            .map(|i| Record::new(format!("second-{i}")).with_key(format!("k{i}")))
            .collect();
        log.append_atomic(OUT_A, second)
            .await
            .expect_err("stopped part-way");
        drop(log);

        // Whatever landed, after the reopen all of the call is there, each record once.
        let log = open(&dir);
        let values = stored_values(&log);
        for i in 0..30 {
            assert_eq!(values.get(&format!("atomic-{i}")), Some(&1), "{landed}");
            assert_eq!(values.get(&format!("second-{i}")), Some(&1), "{landed}");
        }
        assert_eq!(values.len(), 60);
    }
}

#[tokio::test]
async fn a_failing_partition_splits_a_plain_append_but_not_an_atomic_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = setup(&dir).await;
    let batch = |prefix: &str| -> Vec<Record> {
        (0..30)
            .map(|i| Record::new(format!("{prefix}-{i}")).with_key(format!("k{i}")))
            .collect()
    };
    let count = |log: &Log, prefix: &str| {
        stored_values(log)
            .keys()
            .filter(|v| v.starts_with(prefix))
            .count()
    };
    let out_a_1 = log.get_partition(OUT_A, 1).expect("partition");

    // A plain append is atomic per partition only: the others keep their share.
    out_a_1.fail_next_write(io::ErrorKind::StorageFull);
    log.append(OUT_A, batch("plain"))
        .await
        .expect_err("disk full");
    let plain = count(&log, "plain-");
    assert!(plain > 0 && plain < 30, "split: {plain} of 30");

    // An atomic one is completed, not split: its intent is durable before any batch.
    out_a_1.fail_next_write(io::ErrorKind::StorageFull);
    log.append_atomic(OUT_A, batch("atomic"))
        .await
        .expect_err("disk full");
    drop(log);
    let log = open(&dir);
    assert_eq!(count(&log, "atomic-"), 30, "all of it after the reopen");
}
