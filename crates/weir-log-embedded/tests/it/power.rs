//! Power cuts at every step: each test runs a workload on the simulated disk
//! ([`SimDisk`]) once per mutating disk operation it makes, with the power failing at
//! that operation (0, 1, 2, … until a run finishes), then brings the disk back every way
//! of [`CUTS`] (unsynced writes dropped, kept, and torn at random sectors), reopens the
//! log, and checks it against what the workload had acknowledged when the power went:
//!
//! - the log opens, whatever the image;
//! - under `FsyncPolicy::Always`, every acknowledged batch is there, in order, exactly
//!   once; a batch in flight is there whole or not at all; nothing else is;
//! - under `Never`, a partition holds a prefix of the batches sent, whole ones, and all
//!   of the acknowledged ones after a clean close;
//! - a topic whose creation returned is there, one whose creation did not is there with
//!   every partition or not at all; an acknowledged commit is there, one in flight is
//!   there or the old one is;
//! - compaction and retention lose no record they must keep, and retention's deletions
//!   stay deleted once it returned;
//! - a transaction the log promised to complete (`TransactionIncomplete`) is there
//!   whole and once, also after the journal moved to a new file and after the open that
//!   completed it was followed by retention; a finished one is never appended again,
//!   also when retention deleted its batches;
//! - a batch a full disk refused (half written, then cut back) never comes back, and nor
//!   does the next segment's file of a roll a full disk refused (a batch acknowledged
//!   after it lies at that file's offsets);
//! - an acknowledged claim's generation is there, one in flight is the old or the new
//!   one, and a commit a newer claim fenced never shows;
//! - a group offset that open lowered to what a cut left of a lossy partition stays
//!   lowered after the next cut, once records take those offsets again;
//! - an atomic append across partitions is there whole and once or not at all, every
//!   acknowledged one is there, and they land in order;
//! - a topic creation that failed leaves nothing a later open or creation trips on.
//!
//! Each run also crashes the process at that operation instead ([`SimDisk::fork`]: the
//! page cache survives, unsynced), opens the log again and cuts the power right after:
//! what that open showed must survive (deleted segments may come back; nothing else may
//! change). Workloads that must wait for the log's threads, or need a fault at one exact
//! point, run once per kind of cut instead of at every step.

use std::{collections::BTreeMap, io, path::Path, sync::Arc};

use bytes::Bytes;
use futures::executor::block_on;
use weir_log_embedded::{
    Error, FsyncPolicy, GroupCommit, Log, LogOptions, Record, Result, TopicConfig, Transaction,
    io::{CutMode, Fault, FaultOn, Io, SimDisk},
};

/// Where the tests keep the log on the simulated disk.
pub const DIR: &str = "/data";

/// The ways the power-cut tests bring a disk back: every unsynced write dropped, every one
/// kept, and three torn images.
pub const CUTS: [(CutMode, u64); 5] = [
    (CutMode::DropUnsynced, 0),
    (CutMode::KeepAll, 0),
    (CutMode::Torn, 1),
    (CutMode::Torn, 2),
    (CutMode::Torn, 3),
];

pub fn open_on(disk: &SimDisk, opts: LogOptions) -> Result<Log> {
    Log::open_with_io(Arc::new(disk.clone()), Path::new(DIR), opts)
}

/// Runs `workload` on copies of `base`, the power failing at its first mutating
/// operation, then at its second, and so on until a run finishes with the power on. After
/// each run, brings the disk back every way of [`CUTS`], reopens the log and hands it to
/// `check` with what the workload recorded as acknowledged and a label of the cut for
/// failure messages. A workload error while the power is on fails the test. Returns how
/// many runs it took.
pub fn at_every_step<T: Default>(
    base: &SimDisk,
    opts: &LogOptions,
    workload: impl Fn(&SimDisk, &mut T) -> Result<()>,
    check: impl Fn(&Log, &T, &str),
) -> u64 {
    for step in 0.. {
        let disk = base.fork();
        disk.fail_power_after(step);
        let mut acked = T::default();
        let result = workload(&disk, &mut acked);
        let finished = disk.is_powered();
        if let Err(error) = &result {
            assert!(!finished, "step {step}: failed with the power on: {error}");
        }
        for (mode, seed) in CUTS {
            let label = format!("power lost at operation {step}, cut {mode:?} (seed {seed})");
            let image = disk.crash_image(mode, seed);
            let log = open_on(&image, opts.clone())
                .unwrap_or_else(|e| panic!("{label}: the log does not open: {e}"));
            check(&log, &acked, &label);
        }
        // A process crash there instead: the next open finds the page cache, unsynced
        // writes and all. What it shows must survive a power cut right after.
        let label = format!("process crash at operation {step}, then a power cut");
        let restarted = disk.fork();
        let log = open_on(&restarted, opts.clone())
            .unwrap_or_else(|e| panic!("{label}: the log does not open after the crash: {e}"));
        let shown = snapshot(&log);
        let image = restarted.power_cut(CutMode::DropUnsynced, 0);
        drop(log);
        let log = open_on(&image, opts.clone())
            .unwrap_or_else(|e| panic!("{label}: the log does not open: {e}"));
        assert_eq!(
            without_resurrected(snapshot(&log), &shown),
            shown,
            "{label}: what the open showed did not survive"
        );
        check(&log, &acked, &label);
        if finished {
            return step;
        }
    }
    unreachable!("a workload makes finitely many operations")
}

/// Every topic's partitions with their start offsets and records, and every commit and
/// owner generation of the groups these tests use: what a reader of the log can see.
pub type Snapshot = (
    Vec<(String, Vec<(u64, Vec<(u64, Bytes)>)>)>,
    Vec<(String, String, u32, Option<u64>, u64)>,
);

pub fn snapshot(log: &Log) -> Snapshot {
    let groups = ["g", &group_of(STUCK), &group_of(BUSY)].map(str::to_owned);
    let mut topics = Vec::new();
    let mut commits = Vec::new();
    for info in log.topics() {
        let mut partitions = Vec::new();
        for partition in 0..info.partitions {
            let records = log
                .read(&info.name, partition, 0, usize::MAX)
                .expect("read")
                .into_iter()
                .map(|r| (r.offset, r.value))
                .collect();
            partitions.push((info.start_offsets[partition as usize], records));
            for group in &groups {
                let committed = log
                    .committed_offset(group, &info.name, partition)
                    .expect("committed");
                let generation = log
                    .generation(group, &info.name, partition)
                    .expect("generation");
                commits.push((
                    group.clone(),
                    info.name.clone(),
                    partition,
                    committed,
                    generation,
                ));
            }
        }
        topics.push((info.name, partitions));
    }
    (topics, commits)
}

/// `after` without the records below the start offsets `before` shows: segments that
/// retention deleted may come back when the process crashed before its directory fsync,
/// which loses nothing.
fn without_resurrected(mut after: Snapshot, before: &Snapshot) -> Snapshot {
    for ((_, partitions), (_, shown)) in after.0.iter_mut().zip(&before.0) {
        for ((start, records), (shown_start, _)) in partitions.iter_mut().zip(shown) {
            if *start < *shown_start {
                *start = *shown_start;
                records.retain(|(offset, _)| offset >= shown_start);
            }
        }
    }
    after
}

/// A disk on which `prepare` ran on a log that was then closed cleanly.
fn prepared(opts: &LogOptions, prepare: impl FnOnce(&Log)) -> SimDisk {
    let disk = SimDisk::new();
    let log = open_on(&disk, opts.clone()).expect("open");
    prepare(&log);
    drop(log);
    disk
}

fn values(records: &[weir_log_embedded::StoredRecord]) -> Vec<String> {
    records
        .iter()
        .map(|r| String::from_utf8(r.value.to_vec()).expect("utf-8"))
        .collect()
}

fn records(values: &[String]) -> Vec<Record> {
    values.iter().map(|v| Record::new(v.clone())).collect()
}

/// The batches sent to one partition, in order, and how many were acknowledged.
#[derive(Debug, Default, Clone)]
pub struct Sent {
    pub batches: Vec<Vec<String>>,
    pub acked: usize,
}

impl Sent {
    /// Appends `batch` to `topic`'s `partition`, counting it as sent before and as
    /// acknowledged after.
    fn append(&mut self, log: &Log, topic: &str, partition: u32, batch: Vec<String>) -> Result<()> {
        let records = records(&batch);
        self.batches.push(batch);
        block_on(log.append_to(topic, partition, records))?;
        self.acked += 1;
        Ok(())
    }
}

/// Checks that the partition holds the first `k` batches of `sent`, whole, for some `k`
/// of at least `durable`, and that reads from every offset find the same records.
pub fn check_batches(
    log: &Log,
    topic: &str,
    partition: u32,
    sent: &Sent,
    durable: usize,
    label: &str,
) {
    let stored = values(&log.read(topic, partition, 0, usize::MAX).expect("read"));
    let mut expected = Vec::new();
    let mut whole = vec![0];
    for batch in &sent.batches {
        expected.extend(batch.iter().cloned());
        whole.push(expected.len());
    }
    let at_least = whole[durable];
    assert!(
        stored.len() >= at_least && whole.contains(&stored.len()),
        "{label}: {topic}/{partition} holds {} records, must be a whole number of batches \
         (ends at {whole:?}) and at least {at_least}: {stored:?}",
        stored.len()
    );
    assert_eq!(
        stored,
        expected[..stored.len()],
        "{label}: {topic}/{partition} is not the batches sent, in order"
    );
    assert_eq!(
        log.end_offset(topic, partition).expect("end"),
        stored.len() as u64,
        "{label}"
    );
    for (offset, value) in stored.iter().enumerate() {
        let one = values(
            &log.read(topic, partition, offset as u64, 1)
                .expect("read one"),
        );
        assert_eq!(
            one,
            std::slice::from_ref(value),
            "{label}: read from {offset}"
        );
    }
}

#[derive(Debug, Default)]
struct NewLog {
    topic: bool,
    sent: [Sent; 2],
    commit_sent: bool,
    commit: bool,
    lossy_topic: bool,
    lossy: Sent,
    closed: bool,
}

/// With and without the write-ahead file.
#[test]
fn a_new_log_its_topics_appends_and_commits_survive_a_cut_at_every_step() {
    for write_ahead in [false, true] {
        a_new_log_survives_a_cut_at_every_step(LogOptions {
            write_ahead,
            ..LogOptions::default()
        });
    }
}

fn a_new_log_survives_a_cut_at_every_step(opts: LogOptions) {
    let runs = at_every_step(
        &SimDisk::new(),
        &opts,
        |disk, acked: &mut NewLog| {
            let log = open_on(disk, opts.clone())?;
            log.create_topic("t", &TopicConfig::with_partitions(2))?;
            acked.topic = true;
            for (partition, batch) in [
                (0, vec!["a0"]),
                (1, vec!["b0", "b1"]),
                (0, vec!["a1", "a2"]),
            ] {
                let batch = batch.into_iter().map(String::from).collect();
                acked.sent[partition].append(&log, "t", partition as u32, batch)?;
            }
            acked.commit_sent = true;
            log.commit_offset("g", "t", 0, 1)?;
            acked.commit = true;
            let lossy = TopicConfig {
                fsync: FsyncPolicy::Never,
                ..TopicConfig::with_partitions(1)
            };
            log.create_topic("lossy", &lossy)?;
            acked.lossy_topic = true;
            acked
                .lossy
                .append(&log, "lossy", 0, vec!["x0".into(), "x1".into()])?;
            acked.lossy.append(&log, "lossy", 0, vec!["x2".into()])?;
            drop(log);
            acked.closed = disk.is_powered();
            Ok(())
        },
        |log, acked, label| {
            match log.topic("t") {
                None => assert!(!acked.topic, "{label}: topic t is gone"),
                Some(info) => {
                    assert_eq!(info.partitions, 2, "{label}: topic t is half there");
                    for (partition, sent) in acked.sent.iter().enumerate() {
                        check_batches(log, "t", partition as u32, sent, sent.acked, label);
                    }
                    let committed = log.committed_offset("g", "t", 0).expect("committed");
                    match (acked.commit, acked.commit_sent) {
                        (true, _) => assert_eq!(committed, Some(1), "{label}"),
                        (false, true) => assert!(committed.is_none() || committed == Some(1)),
                        (false, false) => assert_eq!(committed, None, "{label}"),
                    }
                }
            }
            match log.topic("lossy") {
                None => assert!(!acked.lossy_topic, "{label}: topic lossy is gone"),
                Some(_) => {
                    let durable = if acked.closed { acked.lossy.acked } else { 0 };
                    check_batches(log, "lossy", 0, &acked.lossy, durable, label);
                }
            }
        },
    );
    assert!(runs > 20, "{runs} runs");
}

#[test]
fn a_topic_created_again_after_a_process_crash_survives_a_power_cut() {
    for step in 0.. {
        let disk = SimDisk::new();
        disk.fail_power_after(step);
        let created = open_sim_checked(&disk)
            .and_then(|log| log.create_topic("t", &TopicConfig::with_partitions(2)));
        let finished = disk.is_powered();
        if let Err(error) = created {
            assert!(!finished, "failed with the power on: {error}");
        }
        // The process died there: the next one finds the page cache as it was, unsynced
        // writes and all, and makes the topic again.
        let restarted = disk.fork();
        let log = open_sim_checked(&restarted).expect("open after the crash");
        log.create_topic("t", &TopicConfig::with_partitions(2))
            .expect("create the topic again");
        let mut sent = [Sent::default(), Sent::default()];
        for (partition, sent) in sent.iter_mut().enumerate() {
            let batch = vec![format!("p{partition}")];
            sent.append(&log, "t", partition as u32, batch)
                .expect("append");
        }
        log.commit_offset("g", "t", 1, 1).expect("commit");
        let label = format!("process crash at operation {step}, then a power cut");
        let after = restarted.power_cut(CutMode::DropUnsynced, 0);
        drop(log);
        let log = open_sim_checked(&after).expect("open after the power cut");
        let info = log
            .topic("t")
            .unwrap_or_else(|| panic!("{label}: topic t is gone"));
        assert_eq!(info.partitions, 2, "{label}");
        for (partition, sent) in sent.iter().enumerate() {
            check_batches(&log, "t", partition as u32, sent, 1, &label);
        }
        assert_eq!(
            log.committed_offset("g", "t", 1).expect("committed"),
            Some(1),
            "{label}"
        );
        if finished {
            break;
        }
    }
}

#[derive(Debug, Default)]
struct Rolled {
    rolled: Sent,
    lossy: Sent,
    closed: bool,
}

#[test]
fn appends_across_segment_rolls_survive_a_cut_at_every_step() {
    let opts = LogOptions::default();
    let small = |fsync| TopicConfig {
        fsync,
        segment_bytes: 300,
        ..TopicConfig::with_partitions(1)
    };
    let base = prepared(&opts, |log| {
        log.create_topic("rolled", &small(FsyncPolicy::Always))
            .expect("create");
        log.create_topic("lossy", &small(FsyncPolicy::Never))
            .expect("create");
    });
    at_every_step(
        &base,
        &opts,
        |disk, acked: &mut Rolled| {
            let log = open_sim_checked(disk)?;
            for i in 0..8 {
                let batch = |topic: &str| {
                    (0..=i % 3)
                        .map(|j| format!("{topic}-{i}-{j}-{}", "v".repeat(40)))
                        .collect::<Vec<_>>()
                };
                acked.rolled.append(&log, "rolled", 0, batch("rolled"))?;
                acked.lossy.append(&log, "lossy", 0, batch("lossy"))?;
            }
            drop(log);
            acked.closed = disk.is_powered();
            Ok(())
        },
        |log, acked, label| {
            check_batches(log, "rolled", 0, &acked.rolled, acked.rolled.acked, label);
            let durable = if acked.closed { acked.lossy.acked } else { 0 };
            check_batches(log, "lossy", 0, &acked.lossy, durable, label);
        },
    );
}

/// Opens the log on `disk`, failing like any other operation when the power is gone.
fn open_sim_checked(disk: &SimDisk) -> Result<Log> {
    open_on(disk, LogOptions::default())
}

const KEYS: u32 = 4;
const COMPACTED_APPENDS: u32 = 24;
const RETAINED_APPENDS: u32 = 24;

fn compacted_value(i: u32) -> String {
    format!("c{i}-{}", "v".repeat(30))
}

fn retained_value(i: u32) -> String {
    format!("r{i}-{}", "v".repeat(30))
}

#[derive(Debug, Default)]
struct Retention {
    /// The start offset of `retained` once retention returned.
    start: Option<u64>,
}

#[test]
fn compaction_and_retention_survive_a_cut_at_every_step() {
    let opts = LogOptions::default();
    let base = prepared(&opts, |log| {
        let compacted = TopicConfig {
            compaction: true,
            segment_bytes: 300,
            ..TopicConfig::with_partitions(1)
        };
        let retained = TopicConfig {
            retention_bytes: Some(600),
            segment_bytes: 300,
            ..TopicConfig::with_partitions(1)
        };
        log.create_topic("compacted", &compacted).expect("create");
        log.create_topic("retained", &retained).expect("create");
        for i in 0..COMPACTED_APPENDS {
            let record = Record::new(compacted_value(i)).with_key(format!("k{}", i % KEYS));
            block_on(log.append("compacted", vec![record])).expect("append");
        }
        for i in 0..RETAINED_APPENDS {
            block_on(log.append("retained", vec![Record::new(retained_value(i))])).expect("append");
        }
    });
    at_every_step(
        &base,
        &opts,
        |disk, acked: &mut Retention| {
            let log = open_sim_checked(disk)?;
            let report = log.enforce_retention()?;
            assert!(report.segments_compacted > 0 && report.segments_deleted > 0);
            acked.start = Some(log.start_offset("retained", 0)?);
            drop(log);
            Ok(())
        },
        |log, acked, label| {
            let stored = log.read("compacted", 0, 0, usize::MAX).expect("read");
            assert_eq!(
                log.end_offset("compacted", 0).expect("end"),
                u64::from(COMPACTED_APPENDS),
                "{label}"
            );
            for record in &stored {
                let value = String::from_utf8(record.value.to_vec()).expect("utf-8");
                assert_eq!(value, compacted_value(record.offset as u32), "{label}");
            }
            for key in 0..KEYS {
                let latest = (0..COMPACTED_APPENDS).rev().find(|i| i % KEYS == key);
                let latest = u64::from(latest.expect("every key is written"));
                assert!(
                    stored.iter().any(|r| r.offset == latest),
                    "{label}: compaction lost the latest record of key k{key} (offset {latest})"
                );
            }

            let start = log.start_offset("retained", 0).expect("start");
            if let Some(acked_start) = acked.start {
                assert!(
                    start >= acked_start,
                    "{label}: retention's deletions came back: start {start}, was {acked_start}"
                );
            }
            let stored = log.read("retained", 0, 0, usize::MAX).expect("read");
            let offsets: Vec<u64> = stored.iter().map(|r| r.offset).collect();
            let expected: Vec<u64> = (start..u64::from(RETAINED_APPENDS)).collect();
            assert_eq!(offsets, expected, "{label}: retained records lost");
            for record in &stored {
                assert_eq!(
                    record.value,
                    Bytes::from(retained_value(record.offset as u32)),
                    "{label}"
                );
            }
        },
    );
}

const SOURCE: &str = "src";
const OUT: &str = "out";
const STUCK: &str = "pipeline/stuck";
const BUSY: &str = "pipeline/busy";

/// A transaction of `producer`: `n`'s records, one to each of `out`'s two partitions,
/// committing the source offset `n + 1` for the producer's group.
fn transaction(producer: &str, n: u32) -> Transaction {
    Transaction {
        producer: producer.to_owned(),
        appends: vec![(
            OUT.to_owned(),
            // Round robin: one to each partition.
            vec![
                Record::new(format!("{producer}:{n}:a")),
                Record::new(format!("{producer}:{n}:b")),
            ],
        )],
        commit: Some(GroupCommit {
            group: group_of(producer),
            topic: SOURCE.to_owned(),
            partition: 0,
            next_offset: u64::from(n) + 1,
            generation: 0,
        }),
    }
}

fn group_of(producer: &str) -> String {
    producer.replace('/', "-")
}

/// How many times each output value is stored.
fn output_counts(log: &Log) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for partition in 0..2 {
        for value in values(&log.read(OUT, partition, 0, usize::MAX).expect("read")) {
            *counts.entry(value).or_default() += 1;
        }
    }
    counts
}

/// Checks that each transaction `0..sent` of `producer` is stored whole and once or not at
/// all, that the first `durable` are stored, and that the group's offset covers exactly
/// the ones stored (they land in order).
fn check_transactions(log: &Log, producer: &str, sent: u32, durable: u32, label: &str) {
    let counts = output_counts(log);
    let mut stored = 0;
    for n in 0..sent {
        let a = counts
            .get(&format!("{producer}:{n}:a"))
            .copied()
            .unwrap_or(0);
        let b = counts
            .get(&format!("{producer}:{n}:b"))
            .copied()
            .unwrap_or(0);
        assert!(
            (a, b) == (1, 1) || (a, b) == (0, 0),
            "{label}: transaction {n} of {producer} is stored {a} and {b} times"
        );
        if a == 1 {
            assert_eq!(stored, n, "{label}: transaction {n} stored after a gap");
            stored = n + 1;
        }
    }
    assert!(
        stored >= durable,
        "{label}: {producer}: {stored} transactions stored, {durable} were acknowledged"
    );
    let committed = log
        .committed_offset(&group_of(producer), SOURCE, 0)
        .expect("committed");
    assert_eq!(
        committed.unwrap_or(0),
        u64::from(stored),
        "{label}: {producer}'s offset does not match its stored transactions"
    );
}

fn transaction_base(opts: &LogOptions) -> SimDisk {
    prepared(opts, |log| {
        crate::create_topic(log, SOURCE, 1).expect("create");
        crate::create_topic(log, OUT, 2).expect("create");
        let source = (0..40).map(|i| Record::new(format!("in-{i}"))).collect();
        block_on(log.append(SOURCE, source)).expect("fill the source");
    })
}

#[derive(Debug, Default)]
struct Rotation {
    /// The stuck transaction was refused with `TransactionIncomplete`: its intent is
    /// durable and the log must complete it.
    stuck: bool,
    busy_sent: u32,
    busy_acked: u32,
}

#[test]
fn a_transaction_left_pending_survives_new_journal_files_and_a_cut_at_every_step() {
    let opts = LogOptions {
        journal_file_bytes: 512,
        ..LogOptions::default()
    };
    let base = transaction_base(&opts);
    at_every_step(
        &base,
        &opts,
        |disk, acked: &mut Rotation| {
            let log = open_on(disk, opts.clone())?;
            // One of its batches meets a full disk: the intent is durable, the transaction
            // pending until the producer's next call or the next open.
            disk.inject(Fault {
                on: FaultOn::Write,
                skip: 0,
                error: io::ErrorKind::StorageFull,
                under: Some(Path::new(DIR).join("topics").join(OUT).join("1")),
            });
            match block_on(log.commit_transaction(transaction(STUCK, 0))) {
                Err(Error::TransactionIncomplete { .. }) => acked.stuck = true,
                Err(error) => return Err(error),
                Ok(()) => panic!("the injected full disk did not stop the transaction"),
            }
            for n in 0..12 {
                acked.busy_sent = n + 1;
                block_on(log.commit_transaction(transaction(BUSY, n)))?;
                acked.busy_acked = n + 1;
            }
            drop(log);
            Ok(())
        },
        |log, acked, label| {
            check_transactions(log, STUCK, 1, u32::from(acked.stuck), label);
            check_transactions(log, BUSY, acked.busy_sent, acked.busy_acked, label);
        },
    );
}

#[derive(Debug, Default)]
struct Completed {
    /// The open that completed the pending transaction returned.
    opened: bool,
    retention_done: bool,
}

#[test]
fn a_transaction_completed_at_open_is_not_repeated_after_retention_and_a_cut() {
    let opts = LogOptions::default();
    let base = transaction_base(&opts);
    {
        // A transaction left pending by a full disk, and the log closed.
        let log = open_on(&base, opts.clone()).expect("open");
        let small = TopicConfig {
            segment_bytes: 200,
            retention_bytes: Some(1),
            ..TopicConfig::with_partitions(2)
        };
        log.create_topic(OUT, &small).expect("small segments");
        base.inject(Fault {
            on: FaultOn::Write,
            skip: 0,
            error: io::ErrorKind::StorageFull,
            under: Some(Path::new(DIR).join("topics").join(OUT).join("1")),
        });
        let result = block_on(log.commit_transaction(transaction(STUCK, 0)));
        assert!(
            matches!(result, Err(Error::TransactionIncomplete { .. })),
            "{result:?}"
        );
    }
    at_every_step(
        &base,
        &opts,
        |disk, acked: &mut Completed| {
            // The open completes the transaction; then segments roll past its batches and
            // retention deletes them, so only the journal could say it is done.
            let log = open_on(disk, opts.clone())?;
            acked.opened = true;
            for partition in 0..2 {
                for i in 0..6 {
                    let filler = Record::new(format!("filler-{i}-{}", "f".repeat(60)));
                    block_on(log.append_to(OUT, partition, vec![filler]))?;
                }
            }
            log.enforce_retention()?;
            acked.retention_done = true;
            drop(log);
            Ok(())
        },
        |log, _acked, label| {
            // Retention may have deleted the transaction's batches: appended again, they
            // would come after the fillers.
            for partition in 0..2 {
                let stored = values(&log.read(OUT, partition, 0, usize::MAX).expect("read"));
                let first_filler = stored.iter().position(|v| v.starts_with("filler"));
                if let Some(first_filler) = first_filler {
                    assert!(
                        !stored[first_filler..].iter().any(|v| v.starts_with(STUCK)),
                        "{label}: the transaction was appended again: {stored:?}"
                    );
                }
                let once = stored.iter().filter(|v| v.starts_with(STUCK)).count();
                assert!(once <= 1, "{label}: the transaction is stored twice");
            }
            let committed = log
                .committed_offset(&group_of(STUCK), SOURCE, 0)
                .expect("committed");
            assert_eq!(committed, Some(1), "{label}: the transaction's offset");
        },
    );
}

/// The kind of the last whole entry of the journal's newest file, as the disk holds it
/// now, synced or not (the format is in the `journal` module's docs: `magic:u8
/// body_len:u32 crc:u32`, then the body, whose first byte is the kind; 2 is `done`).
fn last_journal_entry_kind(disk: &SimDisk) -> Option<u8> {
    let dir = Path::new(DIR).join("transactions");
    let newest = disk.read_dir(&dir).ok()?.into_iter().max()?;
    let bytes = disk.read(&dir.join(newest)).ok()?;
    let (mut at, mut kind) = (0, None);
    while at + 10 <= bytes.len() && bytes[at] == 0xD7 {
        let body_len = u32::from_le_bytes(bytes[at + 1..at + 5].try_into().ok()?) as usize;
        if body_len == 0 || at + 9 + body_len > bytes.len() {
            break;
        }
        kind = Some(bytes[at + 9]);
        at += 9 + body_len;
    }
    kind
}

/// Waits (with a deadline far beyond any scheduling delay) until `done` holds: for
/// something a background thread of the log does, instead of for a quiet moment.
fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// A transaction's `done` entry goes to the journal without an fsync of its own; when the
/// journal then moves to a new file, the old one must hold it durably: retention (which
/// syncs only the current file) may delete the transaction's segments, and if the old file
/// outlives that (here a failed checkpoint keeps it) and a power cut took the `done`, the
/// next open would find the transaction unfinished, miss its tags and append it again.
#[test]
fn a_done_entry_in_a_superseded_journal_file_is_durable_before_retention() {
    for (mode, seed) in CUTS {
        // The first transaction's intent takes the first file past this, the second's
        // leaves the second file below it: the journal moves on once, at the second.
        let opts = LogOptions {
            journal_file_bytes: 250,
            ..LogOptions::default()
        };
        let disk = transaction_base(&opts);
        let log = open_on(&disk, opts.clone()).expect("open");
        let out = TopicConfig {
            segment_bytes: 300,
            retention_bytes: Some(1),
            ..TopicConfig::with_partitions(2)
        };
        log.create_topic(OUT, &out).expect("small segments");
        let mut large = transaction(STUCK, 0);
        for record in &mut large.appends[0].1 {
            record.value = Bytes::from(format!("{STUCK}:{}", "x".repeat(100)));
        }
        block_on(log.commit_transaction(large)).expect("commit");
        // Its `done` is written alone, unsynced, to the first journal file: waited for,
        // or the next intent could come in the same group and make it durable.
        wait_until("the first transaction's done is written", || {
            last_journal_entry_kind(&disk) == Some(2)
        });
        // The checkpoint that would let the first file go fails, so it stays.
        disk.inject(Fault {
            on: FaultOn::Sync,
            skip: 0,
            error: io::ErrorKind::Other,
            under: Some(Path::new(DIR).join("groups")),
        });
        block_on(log.commit_transaction(transaction(BUSY, 0))).expect("commit");
        // The journal moved to a new file, and its checkpointer thread failed as told.
        wait_until("the journal moves to a new file", || disk.faults_fired());
        for partition in 0..2 {
            for i in 0..4 {
                let filler = Record::new(format!("filler-{i}-{}", "f".repeat(100)));
                block_on(log.append_to(OUT, partition, vec![filler])).expect("append");
            }
        }
        let report = log.enforce_retention().expect("retention");
        assert!(report.segments_deleted >= 2, "{report:?}");

        let after = disk.power_cut(mode, seed);
        drop(log);
        let log = open_on(&after, opts).expect("open after the cut");
        let label = format!("{mode:?} (seed {seed})");
        // Retention deleted both transactions' records: nothing may bring them back.
        for partition in 0..2 {
            let stored = values(&log.read(OUT, partition, 0, usize::MAX).expect("read"));
            assert!(
                stored.iter().all(|v| v.starts_with("filler")),
                "{label}: a transaction was appended again: {stored:?}"
            );
        }
        for producer in [STUCK, BUSY] {
            let committed = log
                .committed_offset(&group_of(producer), SOURCE, 0)
                .expect("committed");
            assert_eq!(committed, Some(1), "{label}: {producer}'s offset");
        }
    }
}

#[derive(Debug, Default)]
struct HalfWritten {
    kept: Sent,
    lossy: Sent,
    closed: bool,
}

/// A batch refused by a full disk (half its bytes written, then cut back) never comes back,
/// whatever the power or the process does around it; the batches before and after it do,
/// as their policies promise. Crashing the process before the cut-back leaves a torn tail
/// after the lossy topic's unsynced batch; the next open cuts the tail and shows that
/// batch, which must then survive a power cut.
#[test]
fn a_batch_refused_by_a_full_disk_never_comes_back_after_a_cut_at_every_step() {
    let opts = LogOptions::default();
    let base = prepared(&opts, |log| {
        crate::create_topic(log, "kept", 1).expect("create");
        let lossy = TopicConfig {
            fsync: FsyncPolicy::Never,
            ..TopicConfig::with_partitions(1)
        };
        log.create_topic("lossy", &lossy).expect("create");
    });
    at_every_step(
        &base,
        &opts,
        |disk, acked: &mut HalfWritten| {
            let log = open_sim_checked(disk)?;
            acked
                .lossy
                .append(&log, "lossy", 0, vec!["l0".into(), "l1".into()])?;
            acked.kept.append(&log, "kept", 0, vec!["k0".into()])?;
            disk.inject(Fault::next(FaultOn::Write, io::ErrorKind::StorageFull));
            let refused = vec![Record::new("refused-0"), Record::new("refused-1")];
            match block_on(log.append_to("lossy", 0, refused)) {
                Err(Error::DiskFull { .. }) => {}
                Err(error) => return Err(error),
                Ok(_) => panic!("the full disk did not refuse the batch"),
            }
            acked.lossy.append(&log, "lossy", 0, vec!["l2".into()])?;
            acked.kept.append(&log, "kept", 0, vec!["k1".into()])?;
            drop(log);
            acked.closed = disk.is_powered();
            Ok(())
        },
        |log, acked, label| {
            check_batches(log, "kept", 0, &acked.kept, acked.kept.acked, label);
            let durable = if acked.closed { acked.lossy.acked } else { 0 };
            check_batches(log, "lossy", 0, &acked.lossy, durable, label);
        },
    );
}

#[derive(Debug, Default)]
struct Claims {
    /// Per partition of `t`: claims sent and claims acknowledged.
    sent: [u64; 2],
    acked: [u64; 2],
    /// The offsets of the commits to `t`/0 acknowledged, and the one in flight.
    committed: Vec<u64>,
    in_flight: Option<u64>,
}

/// A claim is acknowledged once its generation is durable in the group's file: after a
/// cut, each partition's generation is at least the last one acknowledged and at most the
/// last one sent, and a commit that a claim fenced never shows, whatever the cut took.
#[test]
fn claims_and_fenced_commits_survive_a_cut_at_every_step() {
    let opts = LogOptions::default();
    let base = prepared(&opts, |log| {
        crate::create_topic(log, "t", 2).expect("create");
        let records = (0..10).map(|i| Record::new(format!("r{i}"))).collect();
        block_on(log.append_to("t", 0, records)).expect("fill");
    });
    let runs = at_every_step(
        &base,
        &opts,
        |disk, acked: &mut Claims| {
            let log = open_sim_checked(disk)?;
            let claim = |acked: &mut Claims, partition: usize| -> Result<u64> {
                acked.sent[partition] += 1;
                let generation = log.claim("g", "t", partition as u32)?;
                assert_eq!(generation, acked.sent[partition], "a claim's generation");
                acked.acked[partition] = generation;
                Ok(generation)
            };
            let commit = |acked: &mut Claims, next_offset: u64, generation: u64| {
                acked.in_flight = Some(next_offset);
                log.commit_group("g", "t", 0, next_offset, generation)?;
                acked.committed.push(next_offset);
                Ok::<_, Error>(())
            };
            let first = claim(acked, 0)?;
            commit(acked, 2, first)?;
            claim(acked, 1)?;
            let second = claim(acked, 0)?;
            // The first owner, fenced: nothing of its commit may ever show.
            match log.commit_group("g", "t", 0, 9, first) {
                Err(Error::Fenced { .. }) => {}
                Err(error) if !disk.is_powered() => return Err(error),
                other => panic!("a commit of a fenced generation: {other:?}"),
            }
            commit(acked, 4, second)?;
            claim(acked, 1)?;
            drop(log);
            Ok(())
        },
        |log, acked, label| {
            for partition in 0..2 {
                let generation = log.generation("g", "t", partition).expect("generation");
                let (at_least, at_most) = (
                    acked.acked[partition as usize],
                    acked.sent[partition as usize],
                );
                assert!(
                    (at_least..=at_most).contains(&generation),
                    "{label}: generation {generation} of t/{partition}, {at_least} acknowledged, {at_most} sent"
                );
            }
            let committed = log.committed_offset("g", "t", 0).expect("committed");
            let last_acked = acked.committed.last().copied();
            assert!(
                committed == last_acked || (committed.is_some() && committed == acked.in_flight),
                "{label}: committed {committed:?}, acknowledged {:?}, in flight {:?}",
                acked.committed,
                acked.in_flight
            );
        },
    );
    assert!(runs > 10, "{runs} runs");
}

#[derive(Debug, Default)]
struct Clamped {
    /// The open that lowers the group's offset returned.
    opened: bool,
    sent: Sent,
}

/// A power cut took back records of a lossy topic that a group had committed (its file is
/// fsynced on its own): the open lowers the commit to the partition's end and writes it
/// before it returns, so once records take those offsets again, a later cut cannot bring
/// the old commit back over records the group never read.
#[test]
fn a_group_offset_lowered_at_open_stays_lowered_after_a_cut_at_every_step() {
    let opts = LogOptions::default();
    let lossy = TopicConfig {
        fsync: FsyncPolicy::Never,
        ..TopicConfig::with_partitions(1)
    };
    let before_cut = prepared(&opts, |log| {
        log.create_topic("t", &lossy).expect("create");
    });
    {
        let log = open_sim_checked(&before_cut).expect("open");
        let records = (0..3).map(|i| Record::new(format!("lost-{i}"))).collect();
        block_on(log.append_to("t", 0, records)).expect("append");
        log.commit_offset("g", "t", 0, 3).expect("commit");
        // The records were never fsynced; the commit was.
        let base = before_cut.power_cut(CutMode::DropUnsynced, 0);
        drop(log);
        let probe = open_sim_checked(&base.fork()).expect("open");
        assert_eq!(
            probe.end_offset("t", 0).expect("end"),
            0,
            "the records are gone"
        );
        assert_eq!(
            probe.committed_offset("g", "t", 0).expect("committed"),
            Some(0)
        );
        drop(probe);
        let always = TopicConfig {
            fsync: FsyncPolicy::Always,
            ..lossy.clone()
        };
        at_every_step(
            &base,
            &opts,
            |disk, acked: &mut Clamped| {
                let log = open_sim_checked(disk)?;
                acked.opened = true;
                log.create_topic("t", &always)?;
                for i in 0..4 {
                    acked.sent.append(&log, "t", 0, vec![format!("new-{i}")])?;
                }
                drop(log);
                Ok(())
            },
            |log, acked, label| {
                let end = log.end_offset("t", 0).expect("end");
                let committed = log.committed_offset("g", "t", 0).expect("committed");
                // Before the open that lowered it returned, the old commit may still be in
                // the group's file; this open lowers it again to what it finds.
                let allowed = if acked.opened {
                    vec![Some(0)]
                } else {
                    vec![Some(0), Some(end.min(3))]
                };
                assert!(
                    allowed.contains(&committed),
                    "{label}: committed {committed:?} over {end} records, allowed {allowed:?}"
                );
                // Under `Always` once the topic's new configuration is there; before, the
                // batches were lossy, so only a whole prefix is promised.
                let durable = if log.topic("t").expect("t").config.fsync == FsyncPolicy::Always {
                    acked.sent.acked
                } else {
                    0
                };
                check_batches(log, "t", 0, &acked.sent, durable, label);
            },
        );
    }
}

/// The calls of [`Log::append_atomic`] sent and acknowledged, to the 3-partition topic and
/// to the 1-partition one (which is a plain append).
#[derive(Debug, Default)]
struct Atomic {
    sent: u32,
    acked: u32,
    single: Sent,
}

const ATOMIC_CALLS: u32 = 4;
const ATOMIC_RECORDS: u32 = 6;

fn atomic_value(call: u32, i: u32) -> String {
    format!("call-{call}-{i}")
}

/// An atomic append across partitions runs as a transaction: after a cut at any step,
/// each call is stored whole and once or not at all, every acknowledged call is there,
/// calls land in order, and each partition holds its share of them in input order.
#[test]
fn an_atomic_append_across_partitions_survives_a_cut_at_every_step() {
    let opts = LogOptions::default();
    let base = prepared(&opts, |log| {
        crate::create_topic(log, "wide", 3).expect("create");
        crate::create_topic(log, "narrow", 1).expect("create");
    });
    let runs = at_every_step(
        &base,
        &opts,
        |disk, acked: &mut Atomic| {
            let log = open_sim_checked(disk)?;
            for call in 0..ATOMIC_CALLS {
                // Keyed so that every call spans the partitions.
                let spanning: Vec<Record> = (0..ATOMIC_RECORDS)
                    .map(|i| Record::new(atomic_value(call, i)).with_key(format!("k{i}")))
                    .collect();
                acked.sent = call + 1;
                let positions = block_on(log.append_atomic("wide", spanning))?;
                acked.acked = call + 1;
                let partitions: std::collections::BTreeSet<u32> =
                    positions.iter().map(|p| p.partition).collect();
                assert!(partitions.len() > 1, "the call spans partitions");
                for (i, position) in positions.iter().enumerate() {
                    let stored = log.read("wide", position.partition, position.offset, 1)?;
                    assert_eq!(
                        stored[0].value,
                        Bytes::from(atomic_value(call, i as u32)),
                        "where the call says record {i} is"
                    );
                }
                let batch = vec![format!("narrow-{call}-a"), format!("narrow-{call}-b")];
                acked.single.batches.push(batch.clone());
                block_on(log.append_atomic("narrow", records(&batch)))?;
                acked.single.acked += 1;
            }
            drop(log);
            Ok(())
        },
        |log, acked, label| {
            let mut counts: BTreeMap<String, usize> = BTreeMap::new();
            for partition in 0..3 {
                let stored = values(&log.read("wide", partition, 0, usize::MAX).expect("read"));
                let order: Vec<(u32, u32)> = stored
                    .iter()
                    .map(|v| {
                        let mut parts = v.split('-').skip(1).map(|n| n.parse().expect("number"));
                        (parts.next().expect("call"), parts.next().expect("index"))
                    })
                    .collect();
                let mut sorted = order.clone();
                sorted.sort_unstable();
                assert_eq!(order, sorted, "{label}: wide/{partition} out of order");
                for value in stored {
                    *counts.entry(value).or_default() += 1;
                }
            }
            let mut stored_calls = 0;
            for call in 0..acked.sent {
                let found: Vec<usize> = (0..ATOMIC_RECORDS)
                    .map(|i| counts.remove(&atomic_value(call, i)).unwrap_or(0))
                    .collect();
                if found.iter().all(|&n| n == 1) {
                    assert_eq!(stored_calls, call, "{label}: call {call} after a gap");
                    stored_calls = call + 1;
                } else {
                    assert!(
                        found.iter().all(|&n| n == 0),
                        "{label}: call {call} stored in part or twice: {found:?}"
                    );
                }
            }
            assert!(
                stored_calls >= acked.acked,
                "{label}: {stored_calls} calls stored, {} acknowledged",
                acked.acked
            );
            assert!(
                counts.is_empty(),
                "{label}: records nobody sent: {counts:?}"
            );
            check_batches(log, "narrow", 0, &acked.single, acked.single.acked, label);
        },
    );
    assert!(runs > 20, "{runs} runs");
}

/// A roll that fails for lack of space once the next segment's file is durable removes
/// that file again, durably: a batch acknowledged after it goes to the active segment at
/// offsets from the next segment's base on, and an empty file there that came back after
/// a cut would be taken for the next segment and cut those offsets off.
#[test]
fn a_roll_refused_by_a_full_disk_leaves_no_segment_after_a_cut_at_every_step() {
    let opts = LogOptions::default();
    let small = TopicConfig {
        segment_bytes: 300,
        ..TopicConfig::with_partitions(1)
    };
    let base = prepared(&opts, |log| {
        log.create_topic("rolled", &small).expect("create");
    });
    let large = |name: &str| vec![format!("{name}-{}", "v".repeat(180))];
    at_every_step(
        &base,
        &opts,
        |disk, acked: &mut Sent| {
            let log = open_sim_checked(disk)?;
            acked.append(&log, "rolled", 0, large("a"))?;
            // The roll's last step, the recovery point, meets a full disk: the next
            // segment's file is there and durable by then.
            disk.inject(Fault {
                on: FaultOn::Write,
                skip: 0,
                error: io::ErrorKind::StorageFull,
                under: Some(
                    Path::new(DIR)
                        .join("topics/rolled/0")
                        .join("recovery-point.json.tmp"),
                ),
            });
            match block_on(log.append_to("rolled", 0, records(&large("refused")))) {
                Err(Error::DiskFull { .. }) => {}
                Err(error) => return Err(error),
                Ok(_) => panic!("the full disk did not refuse the roll"),
            }
            // Fits in the active segment, at the offset the removed file was named after.
            acked.append(&log, "rolled", 0, vec!["c".into()])?;
            acked.append(&log, "rolled", 0, large("d"))?;
            acked.append(&log, "rolled", 0, vec!["e".into()])?;
            drop(log);
            Ok(())
        },
        |log, acked, label| {
            check_batches(log, "rolled", 0, acked, acked.acked, label);
        },
    );
}

#[derive(Debug, Default)]
struct Created {
    /// The creation after the failed one returned.
    created: bool,
}

/// A topic creation that fails removes its directory, and open removes one a crash left
/// without `topic.json`: after a cut at any step the topic is not there or is there as the
/// second creation made it, never with the failed creation's partitions.
#[test]
fn a_failed_topic_creation_leaves_nothing_after_a_cut_at_every_step() {
    let opts = LogOptions::default();
    at_every_step(
        &SimDisk::new(),
        &opts,
        |disk, acked: &mut Created| {
            let log = open_sim_checked(disk)?;
            disk.inject(Fault {
                on: FaultOn::Write,
                skip: 0,
                error: io::ErrorKind::StorageFull,
                under: Some(Path::new(DIR).join("topics/t/topic.json.tmp")),
            });
            match log.create_topic("t", &TopicConfig::with_partitions(3)) {
                Err(_) if disk.faults_fired() || !disk.is_powered() => {}
                other => panic!("the full disk did not refuse the creation: {other:?}"),
            }
            assert!(log.topic("t").is_none() || !disk.is_powered());
            log.create_topic("t", &TopicConfig::with_partitions(2))?;
            acked.created = true;
            Sent::default().append(&log, "t", 1, vec!["x".into()])?;
            drop(log);
            Ok(())
        },
        |log, acked, label| match log.topic("t") {
            None => assert!(!acked.created, "{label}: topic t is gone"),
            Some(info) => assert_eq!(info.partitions, 2, "{label}: topic t"),
        },
    );
}

#[derive(Debug, Default)]
struct WriteAhead {
    sent: [Sent; 2],
    switched: Sent,
    /// Whether a batch of `switched` was acknowledged under `Always`.
    switched_always: bool,
    closed: bool,
}

/// Groups made durable only by the write-ahead file survive while it rolls every few
/// appends and its checkpoints (the segments' fsyncs, then the old file's removal) run
/// beside them, and while segments roll too; a partition switched from `Interval` to
/// `Always` fsyncs its own segment for its first group, so what it wrote before is
/// durable from then on as well.
#[test]
fn appends_across_write_ahead_files_and_their_checkpoints_survive_a_cut_at_every_step() {
    let opts = LogOptions {
        write_ahead: true,
        write_ahead_file_bytes: 200,
        ..LogOptions::default()
    };
    let config = |fsync| TopicConfig {
        fsync,
        segment_bytes: 400,
        ..TopicConfig::with_partitions(2)
    };
    let interval = FsyncPolicy::Interval { ms: 3_600_000 };
    let base = prepared(&opts, |log| {
        log.create_topic("t", &config(FsyncPolicy::Always))
            .expect("create");
        log.create_topic(
            "switched",
            &TopicConfig {
                partitions: 1,
                ..config(interval)
            },
        )
        .expect("create");
    });
    let runs = at_every_step(
        &base,
        &opts,
        |disk, acked: &mut WriteAhead| {
            let log = open_on(disk, opts.clone())?;
            for i in 0..6 {
                for partition in 0..2 {
                    let batch = (0..=i % 2)
                        .map(|j| format!("t-{partition}-{i}-{j}-{}", "v".repeat(20)))
                        .collect();
                    acked.sent[partition].append(&log, "t", partition as u32, batch)?;
                }
                if i == 2 {
                    log.create_topic(
                        "switched",
                        &TopicConfig {
                            partitions: 1,
                            ..config(FsyncPolicy::Always)
                        },
                    )?;
                }
                acked
                    .switched
                    .append(&log, "switched", 0, vec![format!("s-{i}")])?;
                acked.switched_always |= i >= 2;
            }
            drop(log);
            acked.closed = disk.is_powered();
            Ok(())
        },
        |log, acked, label| {
            for (partition, sent) in acked.sent.iter().enumerate() {
                check_batches(log, "t", partition as u32, sent, sent.acked, label);
            }
            let durable = match acked.switched_always || acked.closed {
                true => acked.switched.acked,
                false => 0,
            };
            check_batches(log, "switched", 0, &acked.switched, durable, label);
        },
    );
    assert!(runs > 20, "{runs} runs");
}

/// A group the write-ahead file refused for lack of space (half its entry written, then
/// cut back, and the partition's segment cut back too) never comes back, and the
/// partition goes on: the groups before and after it are there.
#[test]
fn a_group_the_write_ahead_file_refused_for_lack_of_space_never_comes_back() {
    let opts = LogOptions {
        write_ahead: true,
        ..LogOptions::default()
    };
    let base = prepared(&opts, |log| {
        crate::create_topic(log, "kept", 1).expect("create");
    });
    at_every_step(
        &base,
        &opts,
        |disk, acked: &mut HalfWritten| {
            let log = open_on(disk, opts.clone())?;
            acked.kept.append(&log, "kept", 0, vec!["k0".into()])?;
            disk.inject(Fault {
                under: Some(Path::new(DIR).join("wal")),
                ..Fault::next(FaultOn::Write, io::ErrorKind::StorageFull)
            });
            // In flight until refused: the power may go before the refusal, and then the
            // batch (whole in the segment's page cache) may be there or not.
            let refused = vec!["refused-0".to_owned(), "refused-1".to_owned()];
            acked.kept.batches.push(refused.clone());
            match block_on(log.append_to("kept", 0, records(&refused))) {
                Err(Error::DiskFull { .. }) => {
                    acked.kept.batches.pop();
                }
                Err(error) => return Err(error),
                Ok(_) => panic!("the full disk did not refuse the batch"),
            }
            acked.kept.append(&log, "kept", 0, vec!["k1".into()])?;
            drop(log);
            acked.closed = disk.is_powered();
            Ok(())
        },
        |log, acked, label| {
            check_batches(log, "kept", 0, &acked.kept, acked.kept.acked, label);
        },
    );
}

/// The open after a process crash that left groups durable only in the write-ahead file
/// (their segments' bytes in the page cache) survives a power cut at every step of its
/// replay: the replayed segments are fsynced before the files are removed.
#[test]
fn an_open_that_replays_the_write_ahead_file_survives_a_cut_at_every_step() {
    let opts = LogOptions {
        write_ahead: true,
        ..LogOptions::default()
    };
    let disk = SimDisk::new();
    let log = open_on(&disk, opts.clone()).expect("open");
    crate::create_topic(&log, "t", 2).expect("create");
    let mut sent = [Sent::default(), Sent::default()];
    for i in 0..3 {
        for (partition, sent) in sent.iter_mut().enumerate() {
            let batch = vec![format!("{partition}-{i}")];
            sent.append(&log, "t", partition as u32, batch)
                .expect("append");
        }
    }
    // The process crashes here: the next one finds the page cache as it is.
    let crashed = disk.fork();
    drop(log);
    let runs = at_every_step(
        &crashed,
        &opts,
        |disk, _: &mut ()| {
            drop(open_on(disk, opts.clone())?);
            Ok(())
        },
        |log, (), label| {
            for (partition, sent) in sent.iter().enumerate() {
                check_batches(log, "t", partition as u32, sent, sent.acked, label);
            }
        },
    );
    assert!(runs > 5, "{runs} runs");
}
