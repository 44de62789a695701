//! The log against an in-memory model: proptest drives random appends, transactions,
//! reads, group commits, claims of a group's partition, clean reopenings and crashes that
//! tear or corrupt the tail of a partition file, and checks every answer of the log
//! against a `Vec` of records per partition, and every commit and owner generation
//! against the model's.
//!
//! What a damaged tail may cost: only the last batches of the damaged partition, those
//! whose bytes reach the damage; never an earlier batch, never a part of a batch, never
//! a record that differs from what was appended at its offset. A group's commit past the
//! damaged partition's new end is lowered to that end.
//!
//! `log_matches_model` runs on the real disk. `log_matches_model_through_power_cuts` runs
//! the same harness on the simulated disk ([`SimDisk`]) with a third, lossy topic
//! (`FsyncPolicy::Never` or `Interval`) and two more operations: a power cut between
//! operations, and one during an operation (the power fails after its first N disk
//! operations). After each cut the model is reconciled with what came back: every batch
//! acknowledged under `Always` and every acknowledged transaction is there, in order,
//! once; the batch or transaction in flight is there whole (every partition's part of it
//! and its commit) or not at all; a lossy partition keeps a prefix of whole batches, at
//! least up to what a transaction's fsync or a clean close made durable; a commit in
//! flight is the old or the new one; so is the generation of a claim in flight, and an
//! acknowledged claim's generation is there; a commit past what came back of its partition is
//! lowered to the partition's end (open does that); a transaction whose commit would not
//! move its group forward writes nothing; retention's deletions stay deleted once it
//! returned.

use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    path::{Path, PathBuf},
    sync::Arc,
};

use bytes::Bytes;
use proptest::{collection::vec, option, prelude::*, sample::Index};
use weir_log_embedded::{
    Error, FsyncPolicy, GroupCommit, Log, Record, StoredRecord, TopicConfig, Transaction,
    io::{Access, CutMode, Io, RealIo, SimDisk},
};

use crate::{create_topic, last_log_file, open_log, power};

/// The first two are `FsyncPolicy::Always`; the third, only in the power-cut test, is lossy.
const TOPICS: [&str; 3] = ["alpha", "beta", "gamma"];
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
    /// `Log::claim`: the group's partition gets a new owner generation, which every later
    /// commit of the harness carries.
    Claim {
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
    /// Cut the power between operations (simulated disk only).
    PowerCut { mode: CutMode, seed: u64 },
    /// Run `op` with the power failing after its first `after` mutating disk operations,
    /// then cut it (simulated disk only).
    CutDuring {
        after: u64,
        mode: CutMode,
        seed: u64,
        op: Box<Op>,
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

fn arb_op(topics: usize) -> impl Strategy<Value = Op> {
    let topic = 0..topics;
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
        1 => (group.clone(), topic.clone(), any::<Index>())
            .prop_map(|(group, topic, partition)| Op::Claim { group, topic, partition }),
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

fn arb_cut_mode() -> impl Strategy<Value = CutMode> {
    prop_oneof![
        2 => Just(CutMode::DropUnsynced),
        3 => Just(CutMode::Torn),
        1 => Just(CutMode::KeepAll),
    ]
}

/// The operations of the power-cut test: those of [`arb_op`] but the file damage, and
/// power cuts between and during them. Appends cut short name their partition, so the
/// batch whose fate is unknown is known.
fn arb_cut_op(topics: usize) -> impl Strategy<Value = Op> {
    let in_doubt = prop_oneof![
        4 => (0..topics, any::<Index>(), vec(arb_record(), 1..=20)).prop_map(
            |(topic, partition, records)| Op::Append { topic, partition: Some(partition), records }
        ),
        3 => arb_op(topics).prop_filter("an operation that writes", |op| matches!(
            op,
            Op::Transaction { .. } | Op::Commit { .. } | Op::Claim { .. } | Op::Retention | Op::Reopen
        )),
    ];
    prop_oneof![
        12 => arb_op(topics).prop_filter("no file damage", |op| !matches!(
            op,
            Op::Tear { .. } | Op::FlipBit { .. }
        )),
        1 => (arb_cut_mode(), any::<u64>()).prop_map(|(mode, seed)| Op::PowerCut { mode, seed }),
        // Mostly early: an append takes two disk operations, a transaction a handful.
        3 => (prop_oneof![3 => 0..4u64, 2 => 0..16u64, 1 => 0..64u64], arb_cut_mode(), any::<u64>(), in_doubt).prop_map(
            |(after, mode, seed, op)| Op::CutDuring { after, mode, seed, op: Box::new(op) }
        ),
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
    /// The start offset as of the last retention pass that returned: a power cut may bring
    /// back what a pass cut short deleted, never what a finished one did.
    durable_start: u64,
    /// Of a lossy partition: the end offset a power cut cannot take back (made durable by
    /// a transaction's fsync, a clean close or an open).
    durable_end: u64,
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

    /// Offsets at which a batch ends, and 0.
    fn batch_ends(&self) -> BTreeSet<u64> {
        std::iter::once(0)
            .chain(self.batches.iter().map(|b| b.end_offset))
            .collect()
    }
}

struct Model {
    /// Per topic, per partition.
    topics: Vec<Vec<ModelPartition>>,
    /// Per topic: acknowledges appends before they are durable.
    lossy: Vec<bool>,
    committed: BTreeMap<(usize, usize, u32), u64>,
    /// The newest owner generation claimed per group, topic and partition (0: none).
    owners: BTreeMap<(usize, usize, u32), u64>,
    /// Keys hash to stable partitions: the first partition a key went to, per topic.
    key_partitions: BTreeMap<(usize, u8), u32>,
}

impl Model {
    /// `offset`, lowered to the end of the partition of `key` (group, topic, partition), as
    /// open lowers a commit past the end a power cut took back.
    fn clamp(&self, (_, topic, partition): (usize, usize, u32), offset: u64) -> u64 {
        offset.min(self.topics[topic][partition as usize].end())
    }

    /// The generation the harness's commits carry: the last one claimed.
    fn generation(&self, group: usize, topic: usize, partition: u32) -> u64 {
        self.owners
            .get(&(group, topic, partition))
            .copied()
            .unwrap_or(0)
    }
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

/// Where the harness keeps the log.
enum Disk {
    Real(tempfile::TempDir),
    Sim(SimDisk),
}

struct Harness {
    disk: Disk,
    log: Option<Log>,
    model: Model,
    /// Numbers every record value on the simulated disk (see [`Harness::make_unique`]).
    serial: u64,
}

/// The operation the power failed during, for [`Harness::reconcile`].
enum InDoubt {
    /// A batch for one partition; `acked` if its append returned `Ok`.
    Append {
        topic: usize,
        partition: u32,
        records: Vec<ModelRecord>,
        acked: bool,
    },
    /// Every record by topic, in input order, and the commit.
    Transaction {
        records: Vec<(usize, ModelRecord)>,
        commit: Option<(usize, usize, u32, u64)>,
        acked: bool,
    },
    Commit {
        key: (usize, usize, u32),
        next_offset: u64,
        acked: bool,
    },
    /// A claim: the generation after it is the old one or the next, the next if `acked`.
    Claim {
        key: (usize, usize, u32),
        acked: bool,
    },
    /// Retention or a reopening: nothing to add, but start offsets and lossy partitions
    /// may have moved.
    Other,
}

impl Harness {
    /// On the real disk: topics alpha and beta with `partitions[0]` and `[1]` partitions.
    fn new(partitions: [u32; 2]) -> Harness {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = open_log(dir.path());
        Harness::with_topics(Disk::Real(dir), log, &partitions, None)
    }

    /// On the simulated disk: alpha and beta, and gamma with the `lossy` policy.
    fn on_sim(partitions: [u32; 3], lossy: FsyncPolicy) -> Harness {
        let disk = SimDisk::new();
        let log = power::open_on(&disk, Default::default()).expect("open");
        Harness::with_topics(Disk::Sim(disk), log, &partitions, Some(lossy))
    }

    fn with_topics(
        disk: Disk,
        log: Log,
        partitions: &[u32],
        lossy: Option<FsyncPolicy>,
    ) -> Harness {
        for (i, (name, &count)) in TOPICS.iter().zip(partitions).enumerate() {
            assert!(create_topic(&log, name, count).expect("create topic"));
            // Small segments and size retention, so retention runs delete some.
            let config = TopicConfig {
                segment_bytes: 1024,
                retention_bytes: Some(4096),
                fsync: lossy.filter(|_| i == 2).unwrap_or_default(),
                ..TopicConfig::with_partitions(count)
            };
            assert!(!log.create_topic(name, &config).expect("update the topic"));
        }
        Harness {
            disk,
            log: Some(log),
            serial: 0,
            model: Model {
                topics: partitions
                    .iter()
                    .map(|&n| (0..n).map(|_| ModelPartition::default()).collect())
                    .collect(),
                lossy: (0..partitions.len()).map(|i| i == 2).collect(),
                committed: BTreeMap::new(),
                owners: BTreeMap::new(),
                key_partitions: BTreeMap::new(),
            },
        }
    }

    fn log(&self) -> &Log {
        self.log.as_ref().expect("log is open")
    }

    fn io(&self) -> Arc<dyn Io> {
        match &self.disk {
            Disk::Real(_) => Arc::new(RealIo),
            Disk::Sim(disk) => Arc::new(disk.clone()),
        }
    }

    fn dir(&self) -> &Path {
        match &self.disk {
            Disk::Real(dir) => dir.path(),
            Disk::Sim(_) => Path::new(power::DIR),
        }
    }

    fn open(&self) -> Log {
        match &self.disk {
            Disk::Real(dir) => open_log(dir.path()),
            Disk::Sim(disk) => power::open_on(disk, Default::default()).expect("open the log"),
        }
    }

    /// The last `.log` file of a partition and its length.
    fn last_file(&self, topic: usize, partition: u32) -> (PathBuf, u64) {
        let io = self.io();
        let file = last_log_file(&*io, self.dir(), TOPICS[topic], partition);
        // Where the frames end: the active segment is longer, by the zeros filled ahead.
        let len = weir_log_embedded::segment_frames_len(&*io, &file).expect("scan the log file");
        (file, len)
    }

    fn partition_count(&self, topic: usize) -> u32 {
        self.model.topics[topic].len() as u32
    }

    /// On the simulated disk, ends every record value of `op` with a serial number, so
    /// that a record whose append the power cut short is never taken for another.
    fn make_unique(&mut self, op: &mut Op) {
        if matches!(self.disk, Disk::Real(_)) {
            return;
        }
        let inputs: Vec<&mut InputRecord> = match op {
            Op::Append { records, .. } => records.iter_mut().collect(),
            Op::Transaction { appends, .. } => appends
                .iter_mut()
                .flat_map(|(_, records)| records)
                .collect(),
            Op::CutDuring { op, .. } => return self.make_unique(op),
            _ => return,
        };
        for input in inputs {
            self.serial += 1;
            input.value.extend(format!("#{}", self.serial).bytes());
        }
    }

    async fn run(&mut self, mut op: Op) {
        self.make_unique(&mut op);
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
                let result = self.log().commit_group(
                    GROUPS[group],
                    TOPICS[topic],
                    partition,
                    next_offset,
                    self.model.generation(group, topic, partition),
                );
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
            Op::Claim {
                group,
                topic,
                partition,
            } => {
                let partition = partition.index(self.model.topics[topic].len()) as u32;
                let generation = self
                    .log()
                    .claim(GROUPS[group], TOPICS[topic], partition)
                    .expect("claim");
                let key = (group, topic, partition);
                assert_eq!(
                    generation,
                    self.model.generation(group, topic, partition) + 1,
                    "a claim's generation is one above the last"
                );
                self.model.owners.insert(key, generation);
                self.check_generation(group, topic, partition);
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
                        model.durable_start = start;
                    }
                }
                self.check_everything();
            }
            Op::Reopen => {
                self.log = None;
                self.log = Some(self.open());
                // A clean close makes everything durable.
                for partition in self.model.topics.iter_mut().flatten() {
                    partition.durable_end = partition.end();
                }
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
                    let at = len - reach.min(len);
                    let mut byte = [0];
                    file.read_exact_at(&mut byte, at).expect("read the byte");
                    byte[0] ^= 1 << bit;
                    file.write_all_at(&byte, at).expect("flip the bit");
                    at
                });
            }
            Op::PowerCut { mode, seed } => self.cut_and_reconcile(mode, seed, InDoubt::Other),
            Op::CutDuring {
                after,
                mode,
                seed,
                op,
            } => self.cut_during(after, mode, seed, *op).await,
        }
    }

    fn sim(&self) -> &SimDisk {
        match &self.disk {
            Disk::Sim(disk) => disk,
            Disk::Real(_) => panic!("power cuts need the simulated disk"),
        }
    }

    /// Runs `op` with the power failing after its first `after` disk operations, then cuts
    /// the power and reconciles.
    async fn cut_during(&mut self, after: u64, mode: CutMode, seed: u64, op: Op) {
        self.sim().fail_power_after(after);
        let in_doubt = match op {
            Op::Append {
                topic,
                partition: Some(partition),
                records: inputs,
            } => {
                let partition = partition.index(self.model.topics[topic].len()) as u32;
                let before = now_ms();
                let result = self
                    .log()
                    .append_to(
                        TOPICS[topic],
                        partition,
                        inputs.iter().map(to_record).collect(),
                    )
                    .await;
                let after = now_ms();
                InDoubt::Append {
                    topic,
                    partition,
                    records: inputs
                        .iter()
                        .map(|input| to_model(input, before, after))
                        .collect(),
                    acked: result.is_ok(),
                }
            }
            Op::Transaction {
                producer,
                appends,
                commit,
            } => {
                let commit = commit
                    .map(|(group, topic, partition, next_offset)| {
                        let partition = partition.index(self.model.topics[topic].len()) as u32;
                        let end = self.model.topics[topic][partition as usize].end();
                        (
                            group,
                            topic,
                            partition,
                            next_offset.index(end as usize + 2) as u64,
                        )
                    })
                    // One past the end is refused before anything is written.
                    .filter(|&(_, topic, partition, next_offset)| {
                        next_offset <= self.model.topics[topic][partition as usize].end()
                    });
                // Outputs whose commit would not move the group forward are acknowledged
                // and not written.
                let skipped = appends.iter().any(|(_, inputs)| !inputs.is_empty())
                    && commit.is_some_and(|(group, topic, partition, next_offset)| {
                        self.model
                            .committed
                            .get(&(group, topic, partition))
                            .is_some_and(|&done| done >= next_offset)
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
                        generation: self.model.generation(group, topic, partition),
                    }),
                };
                let before = now_ms();
                let result = self.log().commit_transaction(transaction).await;
                let after = now_ms();
                if skipped {
                    return self.cut_and_reconcile(mode, seed, InDoubt::Other);
                }
                InDoubt::Transaction {
                    records: appends
                        .iter()
                        .flat_map(|(topic, inputs)| {
                            inputs
                                .iter()
                                .map(move |i| (*topic, to_model(i, before, after)))
                        })
                        .collect(),
                    commit,
                    acked: result.is_ok(),
                }
            }
            Op::Commit {
                group,
                topic,
                partition,
                next_offset,
            } => {
                let partition = partition.index(self.model.topics[topic].len()) as u32;
                let end = self.model.topics[topic][partition as usize].end();
                let next_offset = next_offset.index(end as usize + 1) as u64;
                let result = self.log().commit_group(
                    GROUPS[group],
                    TOPICS[topic],
                    partition,
                    next_offset,
                    self.model.generation(group, topic, partition),
                );
                InDoubt::Commit {
                    key: (group, topic, partition),
                    next_offset,
                    acked: result.is_ok(),
                }
            }
            Op::Claim {
                group,
                topic,
                partition,
            } => {
                let partition = partition.index(self.model.topics[topic].len()) as u32;
                let result = self.log().claim(GROUPS[group], TOPICS[topic], partition);
                InDoubt::Claim {
                    key: (group, topic, partition),
                    acked: result.is_ok(),
                }
            }
            Op::Retention => {
                let _ = self.log().enforce_retention();
                InDoubt::Other
            }
            Op::Reopen => {
                self.log = None;
                if self.sim().is_powered() {
                    // The clean close finished.
                    for partition in self.model.topics.iter_mut().flatten() {
                        partition.durable_end = partition.end();
                    }
                }
                self.log = power::open_on(self.sim(), Default::default()).ok();
                InDoubt::Other
            }
            other => panic!("not generated for a cut: {other:?}"),
        };
        self.cut_and_reconcile(mode, seed, in_doubt);
    }

    /// Cuts the power (if it has not failed already), opens the log on what comes back and
    /// reconciles the model with it.
    fn cut_and_reconcile(&mut self, mode: CutMode, seed: u64, in_doubt: InDoubt) {
        let after = self.sim().power_cut(mode, seed);
        // Its writers find the disk gone; nothing it does now reaches the new one.
        self.log = None;
        self.disk = Disk::Sim(after);
        self.log = Some(self.open());
        self.reconcile(in_doubt, mode);
        self.check_everything();
    }

    /// Checks what survived a power cut against the model and brings the model up to
    /// date with it; see the module docs for the rules.
    fn reconcile(&mut self, in_doubt: InDoubt, mode: CutMode) {
        let log = self.log.as_ref().expect("log is open");
        // Per partition, the records past what the model accounts for.
        let mut rests: BTreeMap<(usize, u32), VecDeque<StoredRecord>> = BTreeMap::new();
        for (topic, partitions) in self.model.topics.iter_mut().enumerate() {
            let lossy = self.model.lossy[topic];
            for (partition, model) in partitions.iter_mut().enumerate() {
                let what = format!("{mode:?}: {}/{partition}", TOPICS[topic]);
                let partition = partition as u32;
                let start = log.start_offset(TOPICS[topic], partition).expect("start");
                assert!(
                    start >= model.durable_start,
                    "{what}: retention's deletions came back: start {start}, was {}",
                    model.durable_start
                );
                let stored = log
                    .read(TOPICS[topic], partition, 0, usize::MAX)
                    .expect("read");
                let mut stored: VecDeque<StoredRecord> = stored.into();
                let mut kept = start;
                while kept < model.end()
                    && stored.front().is_some_and(|r| {
                        r.offset == kept && matches(r, &model.records[kept as usize])
                    })
                {
                    stored.pop_front();
                    kept += 1;
                }
                let must_keep = if lossy {
                    model.durable_end
                } else {
                    model.end()
                };
                assert!(
                    kept >= must_keep.max(start),
                    "{what}: records up to {kept} came back, {must_keep} were durable \
                     (start {start}, end {}): {:?}",
                    model.end(),
                    stored.front()
                );
                assert!(
                    kept == start || model.batch_ends().contains(&kept),
                    "{what}: a batch came back in part: up to {kept}, batches end at {:?}",
                    model.batch_ends()
                );
                model.truncate(kept);
                model.start = start;
                model.durable_start = start;
                rests.insert((topic, partition), stored);
            }
        }

        let before = self.model.committed.clone();
        match in_doubt {
            InDoubt::Other => {}
            InDoubt::Append {
                topic,
                partition,
                records,
                acked,
            } => {
                let rest = rests.get_mut(&(topic, partition)).expect("partition");
                let model = &self.model.topics[topic][partition as usize];
                if !rest.is_empty() {
                    let end = model.end();
                    assert!(
                        rest.len() == records.len()
                            && rest.iter().zip(&records).enumerate().all(|(i, (r, want))| {
                                r.offset == end + i as u64 && matches(r, want)
                            }),
                        "{mode:?}: {}/{partition} holds part of a batch the cut interrupted, \
                         or other records: {rest:?}",
                        TOPICS[topic]
                    );
                    rest.clear();
                    self.push_batch(topic, partition, records);
                } else {
                    assert!(
                        !acked || self.model.lossy[topic],
                        "{mode:?}: an acknowledged batch of {}/{partition} is gone",
                        TOPICS[topic]
                    );
                }
            }
            InDoubt::Transaction {
                records,
                commit,
                acked,
            } => {
                let found = rests.values().any(|rest| !rest.is_empty());
                assert!(
                    found || !acked || records.is_empty(),
                    "{mode:?}: an acknowledged transaction is gone"
                );
                if records.is_empty() {
                    // A commit alone: the old one or the new one.
                    if let Some((group, topic, partition, next_offset)) = commit {
                        let key = (group, topic, partition);
                        let committed = log
                            .committed_offset(GROUPS[group], TOPICS[topic], partition)
                            .expect("committed");
                        let old = before.get(&key).map(|&old| self.model.clamp(key, old));
                        assert!(
                            committed == Some(self.model.clamp(key, next_offset))
                                || (!acked && committed == old),
                            "{mode:?}: a transaction's commit of {next_offset} left {committed:?}"
                        );
                        match committed {
                            Some(offset) => self.model.committed.insert(key, offset),
                            None => self.model.committed.remove(&key),
                        };
                    }
                } else if found {
                    // Whole: each record once, in input order within its partition.
                    let mut landed: BTreeMap<(usize, u32), Vec<ModelRecord>> = BTreeMap::new();
                    for (topic, want) in records {
                        let partition = (0..self.model.topics[topic].len() as u32)
                            .find(|&p| {
                                rests[&(topic, p)].front().is_some_and(|r| matches(r, &want))
                            })
                            .unwrap_or_else(|| {
                                panic!(
                                    "{mode:?}: a transaction came back in part: a record of {} is missing",
                                    TOPICS[topic]
                                )
                            });
                        rests
                            .get_mut(&(topic, partition))
                            .expect("rest")
                            .pop_front();
                        landed.entry((topic, partition)).or_default().push(want);
                    }
                    for ((topic, partition), records) in landed {
                        self.push_batch(topic, partition, records);
                    }
                    if let Some((group, topic, partition, next_offset)) = commit {
                        self.model
                            .committed
                            .insert((group, topic, partition), next_offset);
                    }
                }
            }
            InDoubt::Commit {
                key,
                next_offset,
                acked,
            } => {
                let (group, topic, partition) = key;
                let committed = log
                    .committed_offset(GROUPS[group], TOPICS[topic], partition)
                    .expect("committed");
                let old = before.get(&key).map(|&old| self.model.clamp(key, old));
                assert!(
                    committed == Some(self.model.clamp(key, next_offset))
                        || (!acked && committed == old),
                    "{mode:?}: a commit of {next_offset} (acknowledged: {acked}) left {committed:?}, was {old:?}"
                );
                match committed {
                    Some(offset) => self.model.committed.insert(key, offset),
                    None => self.model.committed.remove(&key),
                };
            }
            InDoubt::Claim { key, acked } => {
                let (group, topic, partition) = key;
                let generation = log
                    .generation(GROUPS[group], TOPICS[topic], partition)
                    .expect("generation");
                let old = self.model.generation(group, topic, partition);
                assert!(
                    generation == old + 1 || (!acked && generation == old),
                    "{mode:?}: a claim (acknowledged: {acked}) left generation {generation}, was {old}"
                );
                self.model.owners.insert(key, generation);
            }
        }
        // Open lowers a commit past its partition's recovered end to that end.
        let clamped: Vec<_> = self
            .model
            .committed
            .iter()
            .map(|(&key, &offset)| (key, self.model.clamp(key, offset)))
            .collect();
        self.model.committed.extend(clamped);
        for ((topic, partition), rest) in rests {
            assert!(
                rest.is_empty(),
                "{mode:?}: {}/{partition} holds records nobody sent: {rest:?}",
                TOPICS[topic]
            );
        }
        // The open made what it found durable.
        for partition in self.model.topics.iter_mut().flatten() {
            partition.durable_end = partition.end();
        }
    }

    /// Adds records that came back after a cut to the model, as one batch.
    fn push_batch(&mut self, topic: usize, partition: u32, records: Vec<ModelRecord>) {
        let (file, file_len) = self.last_file(topic, partition);
        let model = &mut self.model.topics[topic][partition as usize];
        model.records.extend(records);
        model.batches.push(BatchEnd {
            end_offset: model.end(),
            file,
            file_len,
        });
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
            let (file, file_len) = self.last_file(topic, partition);
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
                generation: self.model.generation(group, topic, partition),
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

        for (topic, topic_name) in TOPICS.iter().enumerate().take(self.model.topics.len()) {
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
                let (file, file_len) = self.last_file(topic, partition);
                let model = &mut self.model.topics[topic][partition as usize];
                let end_offset = model.end();
                // A transaction's batch is fsynced whatever the policy, and so is everything
                // before it in the file.
                model.durable_end = end_offset;
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
    fn damage(
        &mut self,
        topic: usize,
        partition: u32,
        hurt: impl FnOnce(&dyn weir_log_embedded::io::IoFile, u64) -> u64,
    ) {
        self.log = None;
        let (file_path, len) = self.last_file(topic, partition);
        let file = self
            .io()
            .open(&file_path, Access::ReadWrite)
            .expect("open the log file");
        let intact_len = if len == 0 { 0 } else { hurt(&*file, len) };
        drop(file);

        let log = self.open();
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
        // The log was closed cleanly before the damage.
        for partition in self.model.topics.iter_mut().flatten() {
            partition.durable_end = partition.end();
        }
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

    fn check_generation(&self, group: usize, topic: usize, partition: u32) {
        let generation = self
            .log()
            .generation(GROUPS[group], TOPICS[topic], partition)
            .expect("generation");
        assert_eq!(
            generation,
            self.model.generation(group, topic, partition),
            "owner generation of {} for {}/{partition}",
            GROUPS[group],
            TOPICS[topic]
        );
    }

    /// After a reopening: topics, end offsets, every record, every commit and owner.
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
                    self.check_generation(group, topic, partition);
                }
            }
        }
    }
}

fn to_record(input: &InputRecord) -> Record {
    Record {
        key: input.key.map(key_bytes),
        value: Bytes::from(input.value.clone()),
        timestamp_ms: input.timestamp_ms,
    }
}

/// The model of a record appended between `before` and `after`.
fn to_model(input: &InputRecord, before: i64, after: i64) -> ModelRecord {
    ModelRecord {
        key: input.key.map(key_bytes),
        value: Bytes::from(input.value.clone()),
        stamp: match input.timestamp_ms {
            Some(ts) => Stamp::Exact(ts),
            None => Stamp::Between(before, after),
        },
    }
}

/// Whether a stored record is the one the model holds (its position aside).
fn matches(got: &StoredRecord, want: &ModelRecord) -> bool {
    got.key == want.key
        && got.value == want.value
        && match want.stamp {
            Stamp::Exact(ts) => got.timestamp_ms == ts,
            Stamp::Between(lo, hi) => (lo..=hi).contains(&got.timestamp_ms),
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
        ops in vec(arb_op(2), 1..60),
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

fn arb_lossy_policy() -> impl Strategy<Value = FsyncPolicy> {
    prop_oneof![
        Just(FsyncPolicy::Never),
        (1..=5u64).prop_map(|ms| FsyncPolicy::Interval { ms }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        ..ProptestConfig::default()
    })]

    #[test]
    fn log_matches_model_through_power_cuts(
        partitions in [1..=3u32, 1..=3u32, 1..=2u32],
        lossy in arb_lossy_policy(),
        ops in vec(arb_cut_op(3), 1..60),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let mut harness = Harness::on_sim(partitions, lossy);
        runtime.block_on(async {
            for op in ops {
                harness.run(op).await;
            }
            // Whatever happened, a last cut finds every acknowledged record.
            harness.run(Op::PowerCut { mode: CutMode::DropUnsynced, seed: 0 }).await;
        });
    }
}
