//! Acknowledged appends survive SIGKILL: the test runs its own binary again as a child
//! that appends under load and prints each acknowledged record, kills it at a random
//! moment, reopens the log and checks every acknowledged record, then lets a new child
//! append to the recovered log, fifteen times over.
//!
//! Payloads verify themselves (a CRC32C at their end) and name the partition they were
//! written to, so every record read back is checked, acknowledged or not.
//!
//! Transactions are all or nothing across SIGKILL: in the second test the child runs
//! producers that each consume a source partition in transactions (offset `N` to `N + k`,
//! `k` records spread over two topics and five partitions, or for odd producers all in
//! one partition, which makes the transaction one frame carrying its commit; each record
//! names its transaction),
//! and after every kill and reopening each transaction is there whole and exactly once
//! and covered by the committed offset, or not there at all and past it.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    io::{BufRead, BufReader, Write as _},
    os::unix::process::ExitStatusExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use weir_log_embedded::{GroupCommit, Log, LogOptions, Record, TopicConfig, Transaction};

use crate::{Rng, create_topic, open_log};

/// Set for the child: the data directory to append to.
const CHILD_DIR_ENV: &str = "WEIR_CRASH_CHILD_DIR";
/// Set for the child: which kill cycle it is, part of every payload id.
const CHILD_RUN_ENV: &str = "WEIR_CRASH_CHILD_RUN";
/// Set for the transaction child: how many producers to run.
const CHILD_PRODUCERS_ENV: &str = "WEIR_CRASH_CHILD_PRODUCERS";
const TOPIC: &str = "load";
const PARTITIONS: u32 = 3;
const TASKS: u32 = 4;
const CYCLES: u32 = 15;
/// In a payload: the log chose the partition from the key.
const ANY_PARTITION: u32 = u32::MAX;

/// Which child, task and count wrote a payload; unique within a test run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct PayloadId {
    run: u32,
    task: u32,
    counter: u64,
}

impl std::fmt::Display for PayloadId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.run, self.task, self.counter)
    }
}

impl std::str::FromStr for PayloadId {
    type Err = String;

    fn from_str(s: &str) -> Result<PayloadId, String> {
        let mut parts = s
            .split(':')
            .map(|p| p.parse::<u64>().map_err(|e| e.to_string()));
        let mut next = || parts.next().unwrap_or_else(|| Err(format!("bad id {s:?}")));
        Ok(PayloadId {
            run: next()? as u32,
            task: next()? as u32,
            counter: next()?,
        })
    }
}

/// `partition:u32 run:u32 task:u32 counter:u64 filler_len:u16 filler crc32c:u32`, little
/// endian; the filler's length and bytes are derived from the rest.
fn payload(partition: u32, id: PayloadId) -> Vec<u8> {
    let mut rng = Rng::new(u64::from(id.run) << 48 ^ u64::from(id.task) << 40 ^ id.counter);
    let filler_len = rng.range(0, 200) as u16;
    let mut bytes = Vec::with_capacity(22 + usize::from(filler_len) + 4);
    bytes.extend(partition.to_le_bytes());
    bytes.extend(id.run.to_le_bytes());
    bytes.extend(id.task.to_le_bytes());
    bytes.extend(id.counter.to_le_bytes());
    bytes.extend(filler_len.to_le_bytes());
    bytes.extend((0..filler_len).map(|_| rng.next_u64() as u8));
    let crc = crc32c::crc32c(&bytes);
    bytes.extend(crc.to_le_bytes());
    bytes
}

/// The partition and id a payload names, if it is intact.
fn verify_payload(bytes: &[u8]) -> Result<(u32, PayloadId), String> {
    let (body, crc) = bytes
        .split_last_chunk::<4>()
        .ok_or("payload shorter than its checksum")?;
    if crc32c::crc32c(body) != u32::from_le_bytes(*crc) {
        return Err("payload checksum mismatch".into());
    }
    let u32_at = |at: usize| u32::from_le_bytes(body[at..at + 4].try_into().expect("4 bytes"));
    if body.len() < 22 {
        return Err("payload shorter than its header".into());
    }
    let partition = u32_at(0);
    let id = PayloadId {
        run: u32_at(4),
        task: u32_at(8),
        counter: u64::from_le_bytes(body[12..20].try_into().expect("8 bytes")),
    };
    if payload(partition, id) != bytes {
        return Err(format!("payload {id} differs from the one it names"));
    }
    Ok((partition, id))
}

#[test]
#[ignore = "the child process of crash::acknowledged_appends_survive_sigkill, which runs it"]
fn child_appender() {
    let Some(dir) = std::env::var_os(CHILD_DIR_ENV) else {
        eprintln!("{CHILD_DIR_ENV} is not set: nothing to do outside the crash test");
        return;
    };
    let run: u32 = std::env::var(CHILD_RUN_ENV)
        .expect("the run number")
        .parse()
        .expect("a number");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        let log = Log::open(Path::new(&dir), LogOptions::default()).expect("open the log");
        create_topic(&log, TOPIC, PARTITIONS).expect("create the topic");
        let tasks: Vec<_> = (0..TASKS)
            .map(|task| tokio::spawn(append_until_killed(log.clone(), run, task)))
            .collect();
        for task in tasks {
            task.await.expect("appender task");
        }
    });
}

/// Appends single records, batches to one partition and keyed batches spread over
/// partitions, and prints `ACK <partition> <offset> <id>` for each record once its append
/// returned.
async fn append_until_killed(log: Log, run: u32, task: u32) {
    let mut rng = Rng::new(u64::from(run) << 32 | u64::from(task));
    let mut counter = 0;
    loop {
        let kind = rng.range(0, 2);
        let count = if kind == 0 { 1 } else { rng.range(2, 10) };
        let ids: Vec<PayloadId> = (counter..counter + count)
            .map(|counter| PayloadId { run, task, counter })
            .collect();
        counter += count;
        let positions = if kind == 2 {
            let records = ids
                .iter()
                .map(|&id| Record::new(payload(ANY_PARTITION, id)).with_key(id.to_string()))
                .collect();
            log.append(TOPIC, records).await
        } else {
            let partition = rng.range(0, u64::from(PARTITIONS) - 1) as u32;
            let records = ids
                .iter()
                .map(|&id| Record::new(payload(partition, id)))
                .collect();
            log.append_to(TOPIC, partition, records).await
        }
        .expect("append");
        let mut lines = String::new();
        for (position, id) in positions.iter().zip(&ids) {
            writeln!(lines, "ACK {} {} {id}", position.partition, position.offset).expect("format");
        }
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(lines.as_bytes()).expect("print acks");
        stdout.flush().expect("flush acks");
    }
}

/// Parses the child's complete `ACK` lines; a line cut short by the kill is ignored.
fn read_acks(stdout: impl std::io::Read) -> Vec<((u32, u64), PayloadId)> {
    let mut reader = BufReader::new(stdout);
    let mut acks = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return acks,
            Ok(_) if !line.ends_with('\n') => return acks,
            Ok(_) => {}
        }
        let Some(ack) = line.trim_end().strip_prefix("ACK ") else {
            continue;
        };
        let fields: Vec<&str> = ack.split(' ').collect();
        let [partition, offset, id] = fields[..] else {
            panic!("bad ack line {line:?}");
        };
        acks.push((
            (
                partition.parse().expect("partition"),
                offset.parse().expect("offset"),
            ),
            id.parse().expect("payload id"),
        ));
    }
}

/// Opens the log as recovery leaves it and checks every record and every ack.
fn check_recovered(dir: &Path, acked: &BTreeMap<(u32, u64), PayloadId>) -> u64 {
    let log = open_log(dir);
    let Some(info) = log.topic(TOPIC) else {
        assert!(acked.is_empty(), "topic gone after acks");
        return 0;
    };
    assert_eq!(info.partitions, PARTITIONS);
    let mut seen = BTreeSet::new();
    let mut total = 0;
    for partition in 0..PARTITIONS {
        let records = log.read(TOPIC, partition, 0, usize::MAX).expect("read");
        let end = log.end_offset(TOPIC, partition).expect("end offset");
        assert_eq!(
            records.len() as u64,
            end,
            "partition {partition} reads whole"
        );
        let mut ids = Vec::with_capacity(records.len());
        for (i, record) in records.iter().enumerate() {
            assert_eq!(record.offset, i as u64, "offsets of {partition} are dense");
            let (named, id) = verify_payload(&record.value).unwrap_or_else(|e| {
                panic!("record {partition}/{}: {e}", record.offset);
            });
            assert!(
                named == partition || named == ANY_PARTITION,
                "payload {id} for partition {named} found in {partition}"
            );
            assert!(seen.insert(id), "payload {id} stored twice");
            ids.push(id);
        }
        for (&(_, offset), &id) in acked.range((partition, 0)..=(partition, u64::MAX)) {
            let found = ids.get(offset as usize);
            assert_eq!(
                found,
                Some(&id),
                "acknowledged {id} at {partition}/{offset} lost or replaced (end {end})"
            );
        }
        total += end;
    }
    total
}

#[test]
fn acknowledged_appends_survive_sigkill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("this test binary");
    let mut rng = Rng::from_env_or_clock("acknowledged_appends_survive_sigkill");
    let mut acked = BTreeMap::new();
    let started = Instant::now();
    for run in 0..CYCLES {
        let acks = run_child_until_killed(&exe, dir.path(), run, rng.range(50, 400));
        let new = acks.len();
        for (position, id) in acks {
            if let Some(earlier) = acked.insert(position, id) {
                panic!("{position:?} acknowledged twice, for {earlier} and {id}");
            }
        }
        let stored = check_recovered(dir.path(), &acked);
        eprintln!(
            "run {run}: {new} acks, {} in all, {stored} records stored",
            acked.len()
        );
    }
    assert!(!acked.is_empty(), "the children acknowledged nothing");
    eprintln!("{CYCLES} kills in {:?}", started.elapsed());
}

fn run_child_until_killed(
    exe: &PathBuf,
    dir: &Path,
    run: u32,
    kill_after_ms: u64,
) -> Vec<((u32, u64), PayloadId)> {
    kill_child(
        exe,
        "crash::child_appender",
        &[
            (CHILD_DIR_ENV, dir.as_os_str()),
            (CHILD_RUN_ENV, run.to_string().as_ref()),
        ],
        kill_after_ms,
        read_acks,
    )
}

/// Runs the ignored test `name` of this binary as a child with `envs`, SIGKILLs it after
/// `kill_after_ms` and returns what `read` made of its stdout.
fn kill_child<T: Send + 'static>(
    exe: &PathBuf,
    name: &str,
    envs: &[(&str, &std::ffi::OsStr)],
    kill_after_ms: u64,
    read: fn(std::process::ChildStdout) -> T,
) -> T {
    let mut child = Command::new(exe)
        .args(["--exact", name, "--ignored", "--nocapture"])
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the child");
    let stdout = child.stdout.take().expect("child stdout");
    let reader = std::thread::spawn(move || read(stdout));
    std::thread::sleep(Duration::from_millis(kill_after_ms));
    child.kill().expect("SIGKILL the child");
    let status = child.wait().expect("reap the child");
    assert_eq!(
        status.signal(),
        Some(9),
        "the child ended before the kill: {status}"
    );
    reader.join().expect("ack reader")
}

const SOURCE: &str = "txn-source";
const OUTPUTS: [(&str, u32); 3] = [("txn-keyed", 3), ("txn-round-robin", 2), (SINGLE, 1)];
/// The output of the odd producers, one partition: each of their transactions is one frame
/// that carries its commit, with no journal.
const SINGLE: &str = "txn-single";
/// Small, so the single frames' segments roll (and the groups are checkpointed) under
/// the kills.
const SINGLE_SEGMENT_BYTES: u64 = 8 << 10;
const PIPELINE_GROUP: &str = "txn-pipeline";
/// Records in each source partition, more than the producers consume in the test.
const SOURCE_RECORDS: u64 = 200_000;
const TXN_CYCLES: u32 = 10;
const TXN_PRODUCERS: u32 = 4;
/// Small, so the children start new journal files (and delete old ones) under the kills.
const TXN_JOURNAL_FILE_BYTES: u64 = 16 << 10;

/// One output record of transaction `start..start + count` of source partition `producer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct TxnRecord {
    producer: u32,
    start: u64,
    count: u64,
    index: u64,
}

impl TxnRecord {
    fn value(&self) -> String {
        format!(
            "{}:{}:{}:{}",
            self.producer, self.start, self.count, self.index
        )
    }

    fn parse(value: &[u8]) -> TxnRecord {
        let text = std::str::from_utf8(value).expect("a UTF-8 value");
        let fields: Vec<u64> = text
            .split(':')
            .map(|f| f.parse().unwrap_or_else(|_| panic!("bad value {text:?}")))
            .collect();
        let [producer, start, count, index] = fields[..] else {
            panic!("bad value {text:?}");
        };
        TxnRecord {
            producer: producer as u32,
            start,
            count,
            index,
        }
    }
}

fn producer_name(producer: u32) -> String {
    format!("pipeline/{PIPELINE_GROUP}/{SOURCE}/{producer}")
}

#[test]
#[ignore = "the child process of crash::transactions_survive_sigkill, which runs it"]
fn child_transactions() {
    let Some(dir) = std::env::var_os(CHILD_DIR_ENV) else {
        eprintln!("{CHILD_DIR_ENV} is not set: nothing to do outside the crash test");
        return;
    };
    let run: u64 = std::env::var(CHILD_RUN_ENV)
        .expect("the run number")
        .parse()
        .expect("a number");
    let producers: u32 = std::env::var(CHILD_PRODUCERS_ENV)
        .expect("the producer count")
        .parse()
        .expect("a number");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        let opts = LogOptions {
            journal_file_bytes: TXN_JOURNAL_FILE_BYTES,
            ..LogOptions::default()
        };
        let log = Log::open(Path::new(&dir), opts).expect("open the log");
        let tasks: Vec<_> = (0..producers)
            .map(|producer| tokio::spawn(commit_until_killed(log.clone(), run, producer)))
            .collect();
        for task in tasks {
            task.await.expect("producer task");
        }
    });
}

/// Consumes source partition `producer` in transactions of 1 to 8 records from the
/// committed offset on, and prints `TXN <producer> <start> <count>` once one returned.
/// Even producers spread each transaction over two topics, odd ones write it to one
/// partition.
async fn commit_until_killed(log: Log, run: u64, producer: u32) {
    let mut rng = Rng::new(run << 32 | u64::from(producer) | 1 << 20);
    let mut start = log
        .committed_offset(PIPELINE_GROUP, SOURCE, producer)
        .expect("committed offset")
        .unwrap_or(0);
    loop {
        let count = rng.range(1, 8);
        let mut appends: Vec<(String, Vec<Record>)> = OUTPUTS
            .iter()
            .map(|(topic, _)| ((*topic).to_owned(), Vec::new()))
            .collect();
        for index in 0..count {
            let record = TxnRecord {
                producer,
                start,
                count,
                index,
            };
            let value = record.value();
            if producer % 2 == 1 {
                appends[2].1.push(Record::new(value));
            } else if index % 2 == 0 {
                appends[0]
                    .1
                    .push(Record::new(value.clone()).with_key(value));
            } else {
                appends[1].1.push(Record::new(value));
            }
        }
        log.commit_transaction(Transaction {
            producer: producer_name(producer),
            appends,
            commit: Some(GroupCommit {
                group: PIPELINE_GROUP.into(),
                topic: SOURCE.into(),
                partition: producer,
                next_offset: start + count,
                generation: 0,
            }),
        })
        .await
        .expect("commit a transaction");
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "TXN {producer} {start} {count}").expect("print");
        stdout.flush().expect("flush");
        start += count;
    }
}

/// Parses the child's complete `TXN` lines into `(producer, start, count)`.
fn read_committed(stdout: std::process::ChildStdout) -> Vec<(u32, u64, u64)> {
    let mut reader = BufReader::new(stdout);
    let mut committed = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return committed,
            Ok(_) if !line.ends_with('\n') => return committed,
            Ok(_) => {}
        }
        let Some(fields) = line.trim_end().strip_prefix("TXN ") else {
            continue;
        };
        let fields: Vec<u64> = fields
            .split(' ')
            .map(|f| f.parse().expect("a number"))
            .collect();
        let [producer, start, count] = fields[..] else {
            panic!("bad line {line:?}");
        };
        committed.push((producer as u32, start, count));
    }
}

/// Opens the log as recovery leaves it and checks every transaction; returns how many
/// complete ones it found.
fn check_transactions(dir: &Path, acknowledged: &[(u32, u64, u64)]) -> usize {
    let log = open_log(dir);
    let mut stored: BTreeMap<TxnRecord, u32> = BTreeMap::new();
    for (topic, partitions) in OUTPUTS {
        for partition in 0..partitions {
            for record in log.read(topic, partition, 0, usize::MAX).expect("read") {
                *stored.entry(TxnRecord::parse(&record.value)).or_default() += 1;
            }
        }
    }
    let mut complete = 0;
    for producer in 0..TXN_PRODUCERS {
        let committed = log
            .committed_offset(PIPELINE_GROUP, SOURCE, producer)
            .expect("committed offset")
            .unwrap_or(0);
        // The transactions found must tile 0..committed: whole, once, without gaps.
        let mut next = 0;
        let mut records = stored
            .iter()
            .filter(|(r, _)| r.producer == producer)
            .peekable();
        while let Some(&(&first, _)) = records.peek() {
            assert_eq!(
                first.start, next,
                "producer {producer}: a transaction at {} where {next} was due (committed {committed})",
                first.start
            );
            for index in 0..first.count {
                let (&record, &times) = records.next().unwrap_or_else(|| {
                    panic!("producer {producer}: transaction {first:?} cut short")
                });
                let expected = TxnRecord { index, ..first };
                assert_eq!(
                    record, expected,
                    "producer {producer}: part of a transaction"
                );
                assert_eq!(times, 1, "{record:?} stored {times} times");
            }
            next = first.start + first.count;
            complete += 1;
        }
        assert_eq!(
            next, committed,
            "producer {producer}: the committed offset differs from the transactions stored"
        );
        for &(_, start, count) in acknowledged.iter().filter(|a| a.0 == producer) {
            assert!(
                start + count <= committed,
                "producer {producer}: acknowledged transaction {start}+{count} lost (committed {committed})"
            );
        }
    }
    complete
}

#[test]
fn transactions_survive_sigkill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("this test binary");
    let mut rng = Rng::from_env_or_clock("transactions_survive_sigkill");
    let started = Instant::now();
    {
        let log = open_log(dir.path());
        create_topic(&log, SOURCE, TXN_PRODUCERS).expect("create the source");
        for (topic, partitions) in OUTPUTS {
            let config = TopicConfig {
                segment_bytes: if topic == SINGLE {
                    SINGLE_SEGMENT_BYTES
                } else {
                    TopicConfig::default().segment_bytes
                },
                ..TopicConfig::with_partitions(partitions)
            };
            log.create_topic(topic, &config).expect("create an output");
        }
        for partition in 0..TXN_PRODUCERS {
            let records = (0..SOURCE_RECORDS).map(|_| Record::new("in")).collect();
            futures::executor::block_on(log.append_to(SOURCE, partition, records))
                .expect("fill the source");
        }
    }
    let mut acknowledged = Vec::new();
    let mut complete = 0;
    for run in 0..TXN_CYCLES {
        let acks = kill_child(
            &exe,
            "crash::child_transactions",
            &[
                (CHILD_DIR_ENV, dir.path().as_os_str()),
                (CHILD_RUN_ENV, run.to_string().as_ref()),
                (CHILD_PRODUCERS_ENV, TXN_PRODUCERS.to_string().as_ref()),
            ],
            rng.range(100, 600),
            read_committed,
        );
        let new = acks.len();
        acknowledged.extend(acks);
        complete = check_transactions(dir.path(), &acknowledged);
        eprintln!(
            "run {run}: {new} acknowledged, {} in all, {complete} transactions stored",
            acknowledged.len()
        );
    }
    assert!(
        complete > acknowledged.len() / 2 && !acknowledged.is_empty(),
        "the children committed too little: {complete} stored, {} acknowledged",
        acknowledged.len()
    );
    eprintln!("{TXN_CYCLES} kills in {:?}", started.elapsed());
}
