//! The log against an in-memory model: proptest drives random appends, transactions,
//! reads, group commits, clean reopenings and crashes that tear or corrupt the tail of a
//! partition file, and checks every answer of the log against a `Vec` of records per
//! partition.
//!
//! What a damaged tail may cost: only the last batches of the damaged partition, those
//! whose bytes reach the damage; never an earlier batch, never a part of a batch, never
//! a record that differs from what was appended at its offset. A group's commit past the
//! damaged partition's new end is lowered to that end.

use std::{
    collections::BTreeMap,
    fs::{self, OpenOptions},
    path::{Path, PathBuf},
};

use bytes::Bytes;
use proptest::{collection::vec, option, prelude::*, sample::Index};
use weir_log_embedded::{Error, GroupCommit, Log, Record, StoredRecord, TopicConfig, Transaction};

use crate::{create_topic, last_log_file, open_log};

const TOPICS: [&str; 2] = ["alpha", "beta"];
const GROUPS: [&str; 2] = ["readers", "writers"];
const PRODUCERS: [&str; 2] = ["pipeline/a/alpha/0", "pipeline/b/beta/1"];
/// A damage op hits at most this many bytes from the end of the file, so it mostly lands
/// in the last batch or two.
const MAX_DAMAGE_REACH: u64 = 600;

#[derive(Debug, Clone)]
struct InputRecord {
    /// `key-<n>`, from a small set so that keys repeat.
    key: Option<u8>,
    value: Vec<u8>,
    timestamp_ms: Option<i64>,
}

#[derive(Debug, Clone)]
enum Op {
    /// `Log::append` if `partition` is `None`, else `Log::append_to`.
    Append {
        topic: usize,
        partition: Option<Index>,
        records: Vec<InputRecord>,
    },
    Read {
        topic: usize,
        partition: Index,
        from: Index,
        max: usize,
    },
    Commit {
        group: usize,
        topic: usize,
        partition: Index,
        next_offset: Index,
    },
    Committed {
        group: usize,
        topic: usize,
        partition: Index,
    },
    /// `Log::commit_transaction`: records for topics (a topic may repeat) and maybe a
    /// group commit, whose offset may be past the end (then nothing is written).
    Transaction {
        producer: usize,
        appends: Vec<(usize, Vec<InputRecord>)>,
        commit: Option<(usize, usize, Index, Index)>,
    },
    /// Run retention (the topics keep about 4 KiB per partition in 1 KiB segments).
    Retention,
    /// Drop the log and open it again.
    Reopen,
    /// Drop the log, cut bytes off the end of a partition's last file, open it again.
    Tear {
        topic: usize,
        partition: Index,
        reach: u64,
    },
    /// Drop the log, flip a bit near the end of a partition's last file, open it again.
    FlipBit {
        topic: usize,
        partition: Index,
        reach: u64,
        bit: u8,
    },
}

fn arb_record() -> impl Strategy<Value = InputRecord> {
    (
        option::of(0..6u8),
        vec(any::<u8>(), 0..=300),
        option::of(any::<i64>()),
    )
        .prop_map(|(key, value, timestamp_ms)| InputRecord {
            key,
            value,
            timestamp_ms,
        })
}

fn arb_op() -> impl Strategy<Value = Op> {
    let topic = 0..TOPICS.len();
    let group = 0..GROUPS.len();
    prop_oneof![
        8 => (topic.clone(), option::of(any::<Index>()), vec(arb_record(), 1..=20))
            .prop_map(|(topic, partition, records)| Op::Append { topic, partition, records }),
        4 => (topic.clone(), any::<Index>(), any::<Index>(), 0..30usize)
            .prop_map(|(topic, partition, from, max)| Op::Read { topic, partition, from, max }),
        2 => (group.clone(), topic.clone(), any::<Index>(), any::<Index>())
            .prop_map(|(group, topic, partition, next_offset)| Op::Commit { group, topic, partition, next_offset }),
        1 => (group.clone(), topic.clone(), any::<Index>())
            .prop_map(|(group, topic, partition)| Op::Committed { group, topic, partition }),
        2 => (
            0..PRODUCERS.len(),
            vec((topic.clone(), vec(arb_record(), 0..=8)), 0..=3),
            option::of((group, topic.clone(), any::<Index>(), any::<Index>())),
        )
            .prop_map(|(producer, appends, commit)| Op::Transaction { producer, appends, commit }),
        1 => Just(Op::Reopen),
        1 => Just(Op::Retention),
        1 => (topic.clone(), any::<Index>(), 1..=MAX_DAMAGE_REACH)
            .prop_map(|(topic, partition, reach)| Op::Tear { topic, partition, reach }),
        1 => (topic, any::<Index>(), 1..=MAX_DAMAGE_REACH, 0..8u8)
            .prop_map(|(topic, partition, reach, bit)| Op::FlipBit { topic, partition, reach, bit }),
    ]
}

/// The timestamp a record must come back with.
#[derive(Debug, Clone, Copy)]
enum Stamp {
    Exact(i64),
    /// Stamped by the log at append time, somewhere in this window.
    Between(i64, i64),
}

#[derive(Debug, Clone)]
struct ModelRecord {
    key: Option<Bytes>,
    value: Bytes,
    stamp: Stamp,
}

/// Where the bytes of an acknowledged batch end, as seen right after its append.
#[derive(Debug, Clone)]
struct BatchEnd {
    end_offset: u64,
    file: PathBuf,
    file_len: u64,
}

#[derive(Debug, Default)]
struct ModelPartition {
    records: Vec<ModelRecord>,
    batches: Vec<BatchEnd>,
    /// The first offset retention kept.
    start: u64,
}

impl ModelPartition {
    fn end(&self) -> u64 {
        self.records.len() as u64
    }

    /// The end offset below which no batch may vanish when `file` is damaged from byte
    /// `intact_len` on: every batch before the first one whose bytes reach the damage.
    fn must_survive(&self, file: &Path, intact_len: u64) -> u64 {
        self.batches
            .iter()
            .take_while(|b| b.file != file || b.file_len <= intact_len)
            .last()
            .map_or(0, |b| b.end_offset)
    }

    fn truncate(&mut self, end: u64) {
        self.records.truncate(end as usize);
        self.batches.retain(|b| b.end_offset <= end);
    }
}

struct Model {
    /// Per topic, per partition.
    topics: Vec<Vec<ModelPartition>>,
    committed: BTreeMap<(usize, usize, u32), u64>,
    /// Keys hash to stable partitions: the first partition a key went to, per topic.
    key_partitions: BTreeMap<(usize, u8), u32>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}

fn key_bytes(key: u8) -> Bytes {
    Bytes::from(format!("key-{key}"))
}

struct Harness {
    dir: tempfile::TempDir,
    log: Option<Log>,
    model: Model,
}

impl Harness {
    fn new(partitions: [u32; 2]) -> Harness {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = open_log(dir.path());
        for (name, count) in TOPICS.iter().zip(partitions) {
            assert!(create_topic(&log, name, count).expect("create topic"));
            // Small segments and size retention, so retention runs delete some.
            let config = TopicConfig {
                segment_bytes: 1024,
                retention_bytes: Some(4096),
                ..TopicConfig::with_partitions(count)
            };
            assert!(!log.create_topic(name, &config).expect("update the topic"));
        }
        Harness {
            dir,
            log: Some(log),
            model: Model {
                topics: partitions
                    .iter()
                    .map(|&n| (0..n).map(|_| ModelPartition::default()).collect())
                    .collect(),
                committed: BTreeMap::new(),
                key_partitions: BTreeMap::new(),
            },
        }
    }

    fn log(&self) -> &Log {
        self.log.as_ref().expect("log is open")
    }

    fn partition_count(&self, topic: usize) -> u32 {
        self.model.topics[topic].len() as u32
    }

    async fn run(&mut self, op: Op) {
        match op {
            Op::Append {
                topic,
                partition,
                records,
            } => self.append(topic, partition, records).await,
            Op::Read {
                topic,
                partition,
                from,
                max,
            } => {
                let partition = partition.index(self.model.topics[topic].len());
                let end = self.model.topics[topic][partition].end() as usize;
                // Past the end now and then: that reads nothing.
                let from = from.index(end + 3) as u64;
                self.check_read(topic, partition as u32, from, max);
            }
            Op::Commit {
                group,
                topic,
                partition,
                next_offset,
            } => {
                let partition = partition.index(self.model.topics[topic].len()) as u32;
                let end = self.model.topics[topic][partition as usize].end();
                let next_offset = next_offset.index(end as usize + 2) as u64;
                let result =
                    self.log()
                        .commit_offset(GROUPS[group], TOPICS[topic], partition, next_offset);
                if next_offset <= end {
                    result.expect("commit an offset within the partition");
                    self.model
                        .committed
                        .insert((group, topic, partition), next_offset);
                } else {
                    assert!(
                        matches!(result, Err(Error::OffsetOutOfRange { .. })),
                        "commit past the end: {result:?}"
                    );
                }
            }
            Op::Committed {
                group,
                topic,
                partition,
            } => {
                let partition = partition.index(self.model.topics[topic].len()) as u32;
                self.check_committed(group, topic, partition);
            }
            Op::Transaction {
                producer,
                appends,
                commit,
            } => self.transaction(producer, appends, commit).await,
            Op::Retention => {
                self.log().enforce_retention().expect("retention");
                for (topic, partitions) in self.model.topics.iter_mut().enumerate() {
                    for (partition, model) in partitions.iter_mut().enumerate() {
                        let start = self
                            .log
                            .as_ref()
                            .expect("log is open")
                            .start_offset(TOPICS[topic], partition as u32)
                            .expect("start offset");
                        assert!(
                            start >= model.start && start <= model.end(),
                            "start offset {start} of {}/{partition} moved back or past the end {}",
                            TOPICS[topic],
                            model.end()
                        );
                        model.start = start;
                    }
                }
                self.check_everything();
            }
            Op::Reopen => {
                self.log = None;
                self.log = Some(open_log(self.dir.path()));
                self.check_everything();
            }
            Op::Tear {
                topic,
                partition,
                reach,
            } => {
                let partition = partition.index(self.model.topics[topic].len()) as u32;
                self.damage(topic, partition, |file, len| {
                    let cut = reach.min(len);
                    file.set_len(len - cut).expect("tear the tail");
                    len - cut
                });
            }
            Op::FlipBit {
                topic,
                partition,
                reach,
                bit,
            } => {
                let partition = partition.index(self.model.topics[topic].len()) as u32;
                self.damage(topic, partition, |file, len| {
                    use std::os::unix::fs::FileExt;
                    let at = len - reach.min(len);
                    let mut byte = [0];
                    file.read_exact_at(&mut byte, at).expect("read the byte");
                    byte[0] ^= 1 << bit;
                    file.write_all_at(&byte, at).expect("flip the bit");
                    at
                });
            }
        }
    }

    async fn append(&mut self, topic: usize, partition: Option<Index>, inputs: Vec<InputRecord>) {
        let records: Vec<Record> = inputs
            .iter()
            .map(|input| Record {
                key: input.key.map(key_bytes),
                value: Bytes::from(input.value.clone()),
                timestamp_ms: input.timestamp_ms,
            })
            .collect();
        let before = now_ms();
        let positions = match partition {
            Some(partition) => {
                let partition = partition.index(self.model.topics[topic].len()) as u32;
                self.log()
                    .append_to(TOPICS[topic], partition, records.clone())
                    .await
            }
            None => self.log().append(TOPICS[topic], records.clone()).await,
        }
        .expect("append");
        let after = now_ms();
        assert_eq!(positions.len(), records.len(), "a position per record");

        // Each partition's records of this call are one batch at its end, in input order.
        let mut next: BTreeMap<u32, u64> = BTreeMap::new();
        for (position, (input, record)) in positions.iter().zip(inputs.iter().zip(records)) {
            assert!(position.partition < self.partition_count(topic));
            // Keys choose the partition in `append` only; `append_to` is told it.
            if let (Some(key), None) = (input.key, partition) {
                let first = *self
                    .model
                    .key_partitions
                    .entry((topic, key))
                    .or_insert(position.partition);
                assert_eq!(position.partition, first, "key-{key} changed partition");
            }
            let model = &mut self.model.topics[topic][position.partition as usize];
            let expected = next.entry(position.partition).or_insert(model.end());
            assert_eq!(position.offset, *expected, "offsets are dense");
            *expected += 1;
            model.records.push(ModelRecord {
                key: record.key,
                value: record.value,
                stamp: match record.timestamp_ms {
                    Some(ts) => Stamp::Exact(ts),
                    None => Stamp::Between(before, after),
                },
            });
        }
        for (partition, end_offset) in next {
            let file = last_log_file(self.dir.path(), TOPICS[topic], partition);
            let file_len = fs::metadata(&file).expect("stat the log file").len();
            self.model.topics[topic][partition as usize]
                .batches
                .push(BatchEnd {
                    end_offset,
                    file,
                    file_len,
                });
        }
    }

    async fn transaction(
        &mut self,
        producer: usize,
        appends: Vec<(usize, Vec<InputRecord>)>,
        commit: Option<(usize, usize, Index, Index)>,
    ) {
        let to_record = |input: &InputRecord| Record {
            key: input.key.map(key_bytes),
            value: Bytes::from(input.value.clone()),
            timestamp_ms: input.timestamp_ms,
        };
        let commit = commit.map(|(group, topic, partition, next_offset)| {
            let partition = partition.index(self.model.topics[topic].len()) as u32;
            let end = self.model.topics[topic][partition as usize].end();
            (
                group,
                topic,
                partition,
                next_offset.index(end as usize + 2) as u64,
            )
        });
        let transaction = Transaction {
            producer: PRODUCERS[producer].to_owned(),
            appends: appends
                .iter()
                .map(|(topic, inputs)| {
                    (
                        TOPICS[*topic].to_owned(),
                        inputs.iter().map(to_record).collect(),
                    )
                })
                .collect(),
            commit: commit.map(|(group, topic, partition, next_offset)| GroupCommit {
                group: GROUPS[group].to_owned(),
                topic: TOPICS[topic].to_owned(),
                partition,
                next_offset,
                generation: 0,
            }),
        };
        let before = now_ms();
        let result = self.log().commit_transaction(transaction).await;
        let after = now_ms();
        if let Some((_, topic, partition, next_offset)) = commit
            && next_offset > self.model.topics[topic][partition as usize].end()
        {
            assert!(
                matches!(result, Err(Error::OffsetOutOfRange { .. })),
                "commit past the end: {result:?}"
            );
            // Checked before anything is written.
            self.check_everything();
            return;
        }
        if let Some((group, topic, partition, next_offset)) = commit
            && appends.iter().any(|(_, inputs)| !inputs.is_empty())
            && self
                .model
                .committed
                .get(&(group, topic, partition))
                .is_some_and(|&done| done >= next_offset)
        {
            // Its commit would not move the group forward: it was committed already (a
            // caller sending it again), so it is acknowledged and nothing is written.
            result.expect("a transaction committed already is acknowledged");
            self.check_everything();
            return;
        }
        result.expect("commit a transaction");

        for (topic, topic_name) in TOPICS.iter().enumerate() {
            // This topic's records of the transaction, in input order.
            let inputs: Vec<&InputRecord> = appends
                .iter()
                .filter(|(t, _)| *t == topic)
                .flat_map(|(_, inputs)| inputs)
                .collect();
            // What each partition got: its new records, which must be those inputs, each
            // once, in input order within a partition, as one batch.
            let mut new: Vec<std::collections::VecDeque<StoredRecord>> = Vec::new();
            for partition in 0..self.partition_count(topic) {
                let model = &self.model.topics[topic][partition as usize];
                let read = self
                    .log()
                    .read(topic_name, partition, model.end(), usize::MAX)
                    .expect("read the new records");
                new.push(read.into());
            }
            for input in &inputs {
                let wanted = to_record(input);
                let partition = new
                    .iter()
                    .position(|records| {
                        records
                            .front()
                            .is_some_and(|r| r.key == wanted.key && r.value == wanted.value)
                    })
                    .unwrap_or_else(|| {
                        panic!("a record of the transaction is missing from {}", topic_name)
                    });
                let got = new[partition].pop_front().expect("front");
                if let Some(key) = input.key {
                    let first = *self
                        .model
                        .key_partitions
                        .entry((topic, key))
                        .or_insert(partition as u32);
                    assert_eq!(partition as u32, first, "key-{key} changed partition");
                }
                let model = &mut self.model.topics[topic][partition];
                let want = ModelRecord {
                    key: wanted.key,
                    value: wanted.value,
                    stamp: match input.timestamp_ms {
                        Some(ts) => Stamp::Exact(ts),
                        None => Stamp::Between(before, after),
                    },
                };
                check_record(&got, &want, partition as u32, model.end());
                model.records.push(want);
            }
            for (partition, rest) in new.iter().enumerate() {
                assert!(
                    rest.is_empty(),
                    "{}/{partition} holds records the transaction did not have: {rest:?}",
                    topic_name
                );
            }
            let touched: std::collections::BTreeSet<u32> = (0..self.partition_count(topic))
                .filter(|&p| {
                    let model = &self.model.topics[topic][p as usize];
                    model.batches.last().map_or(0, |b| b.end_offset) < model.end()
                })
                .collect();
            for partition in touched {
                let file = last_log_file(self.dir.path(), topic_name, partition);
                let file_len = fs::metadata(&file).expect("stat the log file").len();
                let model = &mut self.model.topics[topic][partition as usize];
                let end_offset = model.end();
                model.batches.push(BatchEnd {
                    end_offset,
                    file,
                    file_len,
                });
            }
        }
        if let Some((group, topic, partition, next_offset)) = commit {
            self.model
                .committed
                .insert((group, topic, partition), next_offset);
            self.check_committed(group, topic, partition);
        }
    }

    /// Crashes with the log closed, damages the partition's last file with `hurt`, which
    /// gets the file and its length and returns how many bytes from the start it left
    /// intact, then reopens and checks what survived.
    fn damage(&mut self, topic: usize, partition: u32, hurt: impl FnOnce(&fs::File, u64) -> u64) {
        self.log = None;
        let file_path = last_log_file(self.dir.path(), TOPICS[topic], partition);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&file_path)
            .expect("open the log file");
        let len = file.metadata().expect("stat the log file").len();
        let intact_len = if len == 0 { 0 } else { hurt(&file, len) };
        drop(file);

        let log = open_log(self.dir.path());
        let model = &mut self.model.topics[topic][partition as usize];
        let must_survive = model.must_survive(&file_path, intact_len);
        let end = log
            .end_offset(TOPICS[topic], partition)
            .expect("end offset");
        assert!(
            end >= must_survive,
            "damage from byte {intact_len} of {} cost batches before it: end {end}, expected at least {must_survive}",
            file_path.display()
        );
        assert!(
            end <= model.end(),
            "end {end} past the {} records appended",
            model.end()
        );
        assert!(
            end == 0 || model.batches.iter().any(|b| b.end_offset == end),
            "a batch vanished in part: end {end}, batches end at {:?}",
            model
                .batches
                .iter()
                .map(|b| b.end_offset)
                .collect::<Vec<_>>()
        );
        model.truncate(end);
        // Open lowers a commit past what the damage took back to the partition's new end.
        for ((_, committed_topic, committed_partition), offset) in &mut self.model.committed {
            if (*committed_topic, *committed_partition) == (topic, partition) {
                *offset = (*offset).min(end);
            }
        }
        self.log = Some(log);
        self.check_everything();
    }

    fn check_read(&self, topic: usize, partition: u32, from: u64, max: usize) {
        let read = self
            .log()
            .read(TOPICS[topic], partition, from, max)
            .expect("read");
        let partition_model = &self.model.topics[topic][partition as usize];
        let model = &partition_model.records;
        // Reads below the retained start begin at the start.
        let from = from.max(partition_model.start);
        let start = (from as usize).min(model.len());
        let expected = &model[start..start.saturating_add(max).min(model.len())];
        assert_eq!(
            read.len(),
            expected.len(),
            "read {max} from {from} of {}/{partition}",
            TOPICS[topic]
        );
        for (i, (got, want)) in read.iter().zip(expected).enumerate() {
            check_record(got, want, partition, from + i as u64);
        }
    }

    fn check_committed(&self, group: usize, topic: usize, partition: u32) {
        let committed = self
            .log()
            .committed_offset(GROUPS[group], TOPICS[topic], partition)
            .expect("committed offset");
        assert_eq!(
            committed,
            self.model
                .committed
                .get(&(group, topic, partition))
                .copied(),
            "committed offset of {} for {}/{partition}",
            GROUPS[group],
            TOPICS[topic]
        );
    }

    /// After a reopening: topics, end offsets, every record and every commit.
    fn check_everything(&self) {
        let log = self.log();
        for (topic, partitions) in self.model.topics.iter().enumerate() {
            let info = log.topic(TOPICS[topic]).expect("topic survives");
            assert_eq!(info.partitions, partitions.len() as u32);
            let ends: Vec<u64> = partitions.iter().map(ModelPartition::end).collect();
            assert_eq!(info.end_offsets, ends, "end offsets of {}", TOPICS[topic]);
            for (partition, model) in partitions.iter().enumerate() {
                let partition = partition as u32;
                assert_eq!(
                    log.end_offset(TOPICS[topic], partition).expect("end"),
                    model.end()
                );
                assert_eq!(
                    log.start_offset(TOPICS[topic], partition).expect("start"),
                    model.start,
                    "start offset of {}/{partition}",
                    TOPICS[topic]
                );
                self.check_read(topic, partition, 0, usize::MAX);
                for group in 0..GROUPS.len() {
                    self.check_committed(group, topic, partition);
                }
            }
        }
    }
}

fn check_record(got: &StoredRecord, want: &ModelRecord, partition: u32, offset: u64) {
    assert_eq!(
        (got.partition, got.offset),
        (partition, offset),
        "position of a record read"
    );
    assert_eq!(got.key, want.key, "key at offset {offset}");
    assert_eq!(got.value, want.value, "value at offset {offset}");
    match want.stamp {
        Stamp::Exact(ts) => assert_eq!(got.timestamp_ms, ts, "timestamp at offset {offset}"),
        Stamp::Between(lo, hi) => assert!(
            (lo..=hi).contains(&got.timestamp_ms),
            "timestamp {} at offset {offset} outside the append's window {lo}..={hi}",
            got.timestamp_ms
        ),
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        ..ProptestConfig::default()
    })]

    #[test]
    fn log_matches_model(
        partitions in [1..=3u32, 1..=3u32],
        ops in vec(arb_op(), 1..60),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let mut harness = Harness::new(partitions);
        runtime.block_on(async {
            for op in ops {
                harness.run(op).await;
            }
            // Whatever happened, a last clean reopening finds the same log.
            harness.run(Op::Reopen).await;
        });
    }
}
