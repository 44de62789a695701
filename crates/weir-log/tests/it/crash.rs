//! Acknowledged appends survive SIGKILL: the test runs its own binary again as a child
//! that appends under load and prints each acknowledged record, kills it at a random
//! moment, reopens the log and checks every acknowledged record, then lets a new child
//! append to the recovered log, fifteen times over.
//!
//! Payloads verify themselves (a CRC32C at their end) and name the partition they were
//! written to, so every record read back is checked, acknowledged or not.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    io::{BufRead, BufReader, Write as _},
    os::unix::process::ExitStatusExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use weir_log::{Log, LogOptions, Record};

use crate::{Rng, create_topic, open_log};

/// Set for the child: the data directory to append to.
const CHILD_DIR_ENV: &str = "WEIR_CRASH_CHILD_DIR";
/// Set for the child: which kill cycle it is, part of every payload id.
const CHILD_RUN_ENV: &str = "WEIR_CRASH_CHILD_RUN";
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
    let mut child = Command::new(exe)
        .args([
            "--exact",
            "crash::child_appender",
            "--ignored",
            "--nocapture",
        ])
        .env(CHILD_DIR_ENV, dir)
        .env(CHILD_RUN_ENV, run.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the child");
    let stdout = child.stdout.take().expect("child stdout");
    let reader = std::thread::spawn(move || read_acks(stdout));
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
