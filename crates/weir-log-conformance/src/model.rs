//! The model test: random appends (keyed, unkeyed, into a partition, conditional), reads
//! (stateless and through readers), claims, commits (by the owner and by fenced ones),
//! transactions and reopenings, checked after every step against an in-memory model of
//! what the interface promises.
//!
//! Offsets are compared by order, not value (a backend may skip offsets), and each case
//! has topics and groups of its own, so cases share the harness's storage.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use weir_log::{
    ErrorKind, Expect, GroupCommit, Record, SharedLog, TopicSpec, Transaction, TransactionGuarantee,
};

use crate::{Harness, read_all, values};

const PARTITIONS: u32 = 3;

#[derive(Debug, Clone)]
enum Op {
    Append {
        keys: Vec<Option<u8>>,
    },
    AppendTo {
        partition: u32,
        n: u8,
        condition: Condition,
    },
    Read {
        partition: u32,
        from: u8,
    },
    Claim {
        partition: u32,
    },
    Commit {
        partition: u32,
        to: u8,
        stale: bool,
    },
    Transaction {
        partition: u32,
        outputs: u8,
        to: u8,
    },
    Reopen,
}

#[derive(Debug, Clone, Copy)]
enum Condition {
    None,
    CurrentEnd,
    StaleEnd,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => prop::collection::vec(prop::option::of(0u8..6), 1..8)
            .prop_map(|keys| Op::Append { keys }),
        3 => (0..PARTITIONS, 1u8..4, prop_oneof![
                Just(Condition::None),
                Just(Condition::CurrentEnd),
                Just(Condition::StaleEnd)
            ])
            .prop_map(|(partition, n, condition)| Op::AppendTo { partition, n, condition }),
        2 => (0..PARTITIONS, any::<u8>()).prop_map(|(partition, from)| Op::Read { partition, from }),
        1 => (0..PARTITIONS).prop_map(|partition| Op::Claim { partition }),
        2 => (0..PARTITIONS, any::<u8>(), any::<bool>())
            .prop_map(|(partition, to, stale)| Op::Commit { partition, to, stale }),
        3 => (0..PARTITIONS, 0u8..4, any::<u8>())
            .prop_map(|(partition, outputs, to)| Op::Transaction { partition, outputs, to }),
        1 => Just(Op::Reopen),
    ]
}

/// What the log must hold for one case.
#[derive(Default)]
struct Model {
    /// Per partition of the source topic, its values in order.
    partitions: Vec<Vec<String>>,
    /// Where each key went first.
    key_partition: BTreeMap<u8, u32>,
    /// The group's committed offset per partition.
    committed: BTreeMap<u32, u64>,
    /// The newest generation claimed per partition, and an older one if any.
    generation: BTreeMap<u32, u64>,
    older: BTreeMap<u32, u64>,
    /// Output values, each stored once (exactly-once transactions).
    outputs: BTreeMap<String, usize>,
    next_value: usize,
}

struct Case<'a, H: Harness> {
    harness: &'a H,
    /// `None` only while it is reopened.
    log: Option<SharedLog>,
    source: String,
    output: String,
    group: String,
    exactly_once: bool,
    partition_end: bool,
    model: Model,
}

impl<H: Harness> Case<'_, H> {
    fn log(&self) -> &SharedLog {
        self.log.as_ref().expect("an open log")
    }

    fn value(&mut self) -> String {
        self.model.next_value += 1;
        format!("{}-v{}", self.source, self.model.next_value)
    }

    async fn end(&self, partition: u32) -> u64 {
        self.log()
            .offsets(&self.source, partition)
            .await
            .expect("offsets")
            .end
    }

    /// The offset of the `frac`-th 255ths through a partition's records, or its end.
    async fn offset_at(&self, partition: u32, frac: u8) -> u64 {
        let all = read_all(self.log(), &self.source, partition).await;
        let index = all.len() * usize::from(frac) / 255;
        match all.get(index) {
            Some(record) => record.offset,
            None => self.end(partition).await,
        }
    }

    async fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match op {
            Op::Append { keys } => {
                let mut batch = Vec::new();
                for key in keys {
                    let value = self.value();
                    let record = Record::new(value.clone());
                    batch.push(match key {
                        Some(k) => record.with_key(format!("key-{k}")),
                        None => record,
                    });
                }
                let positions = self
                    .log()
                    .append(&self.source, batch.clone())
                    .await
                    .expect("append");
                prop_assert_eq!(positions.len(), batch.len());
                for ((position, record), key) in positions.iter().zip(&batch).zip(keys) {
                    if let Some(k) = key {
                        let first = *self
                            .model
                            .key_partition
                            .entry(*k)
                            .or_insert(position.partition);
                        prop_assert_eq!(position.partition, first, "key {} moved", k);
                    }
                    self.model.partitions[position.partition as usize]
                        .push(String::from_utf8_lossy(&record.value).into_owned());
                }
            }
            Op::AppendTo {
                partition,
                n,
                condition,
            } => {
                let expect = match condition {
                    Condition::None => Expect::Any,
                    Condition::CurrentEnd => Expect::End(self.end(*partition).await),
                    Condition::StaleEnd => match self.end(*partition).await {
                        0 => Expect::End(1),
                        end => Expect::End(end - 1),
                    },
                };
                let batch: Vec<String> = (0..*n).map(|_| self.value()).collect();
                let result = self
                    .log()
                    .append_to(
                        &self.source,
                        *partition,
                        batch.iter().cloned().map(Record::new).collect(),
                        expect.clone(),
                    )
                    .await;
                match (condition, self.partition_end) {
                    (Condition::None, _) | (Condition::CurrentEnd, true) => {
                        result.expect("append_to");
                        self.model.partitions[*partition as usize].extend(batch);
                    }
                    (Condition::StaleEnd, true) => {
                        let err = result.expect_err("a stale end");
                        prop_assert_eq!(err.kind(), ErrorKind::Conflict);
                    }
                    (_, false) => {
                        let err = result.expect_err("not declared");
                        prop_assert_eq!(err.kind(), ErrorKind::Invalid);
                    }
                }
            }
            Op::Read { partition, from } => {
                let start = self.offset_at(*partition, *from).await;
                let stateless = self
                    .log()
                    .read(&self.source, *partition, start, usize::MAX)
                    .await
                    .expect("read");
                let mut reader = self
                    .log()
                    .reader(&self.source, *partition, start)
                    .await
                    .expect("reader");
                let mut through_reader = Vec::new();
                loop {
                    let read = reader.read(2).await.expect("read");
                    prop_assert_eq!(read.skipped, None, "no retention here");
                    if read.records.is_empty() {
                        break;
                    }
                    through_reader.extend(read.records);
                }
                prop_assert_eq!(&stateless, &through_reader);
                let model = &self.model.partitions[*partition as usize];
                let tail = &model[model.len() - stateless.len()..];
                prop_assert_eq!(values(&stateless), tail.to_vec());
            }
            Op::Claim { partition } => {
                let generation = self
                    .log()
                    .claim(&self.group, &self.source, *partition)
                    .await
                    .expect("claim");
                let before = self.model.generation.insert(*partition, generation);
                if let Some(before) = before {
                    prop_assert!(generation > before);
                    self.model.older.insert(*partition, before);
                }
            }
            Op::Commit {
                partition,
                to,
                stale,
            } => {
                let next_offset = self.offset_at(*partition, *to).await;
                let current = self.model.generation.get(partition).copied().unwrap_or(0);
                let generation = match (stale, self.model.older.get(partition)) {
                    (true, Some(older)) => *older,
                    _ => current,
                };
                let result = self
                    .log()
                    .commit_offset(GroupCommit {
                        group: self.group.clone(),
                        topic: self.source.clone(),
                        partition: *partition,
                        next_offset,
                        generation,
                    })
                    .await;
                if generation < current {
                    prop_assert_eq!(result.expect_err("fenced").kind(), ErrorKind::Fenced);
                } else {
                    result.expect("commit");
                    self.model.committed.insert(*partition, next_offset);
                }
            }
            Op::Transaction {
                partition,
                outputs,
                to,
            } => {
                let next_offset = self.offset_at(*partition, *to).await;
                let values: Vec<String> = (0..*outputs).map(|_| self.value()).collect();
                let generation = self.model.generation.get(partition).copied().unwrap_or(0);
                let txn = Transaction {
                    producer: format!("{}/{partition}", self.group),
                    appends: vec![(
                        self.output.clone(),
                        values
                            .iter()
                            .map(|v| Record::new(v.clone()).with_key(v.clone()))
                            .collect(),
                    )],
                    commit: Some(GroupCommit {
                        group: self.group.clone(),
                        topic: self.source.clone(),
                        partition: *partition,
                        next_offset,
                        generation,
                    }),
                };
                let moves_forward = self
                    .model
                    .committed
                    .get(partition)
                    .is_none_or(|&done| done < next_offset);
                self.log()
                    .commit_transaction(txn)
                    .await
                    .expect("transaction");
                // A transaction with outputs whose commit does not move the group forward
                // is one sent again: an exactly-once backend acknowledges it and writes
                // nothing, its commit included.
                if !moves_forward && !values.is_empty() && self.exactly_once {
                    return self.check().await;
                }
                for value in values {
                    *self.model.outputs.entry(value).or_default() += 1;
                }
                self.model.committed.insert(*partition, next_offset);
            }
            Op::Reopen => {
                // The old log is closed before the new one opens.
                self.log = None;
                self.log = Some(self.harness.open().await);
            }
        }
        self.check().await
    }

    async fn check(&self) -> Result<(), TestCaseError> {
        for partition in 0..PARTITIONS {
            let all = read_all(self.log(), &self.source, partition).await;
            prop_assert!(all.windows(2).all(|w| w[0].offset < w[1].offset));
            prop_assert_eq!(
                values(&all),
                self.model.partitions[partition as usize].clone(),
                "partition {}",
                partition
            );
            if let Some(last) = all.last() {
                prop_assert!(self.end(partition).await > last.offset);
            }
            let committed = self
                .log()
                .committed_offset(&self.group, &self.source, partition)
                .await
                .expect("committed");
            prop_assert_eq!(committed, self.model.committed.get(&partition).copied());
        }
        let mut outputs: BTreeMap<String, usize> = BTreeMap::new();
        for partition in 0..2 {
            for value in values(&read_all(self.log(), &self.output, partition).await) {
                *outputs.entry(value).or_default() += 1;
            }
        }
        if self.exactly_once {
            prop_assert_eq!(&outputs, &self.model.outputs);
        } else {
            prop_assert_eq!(
                outputs.keys().collect::<Vec<_>>(),
                self.model.outputs.keys().collect::<Vec<_>>()
            );
        }
        Ok(())
    }
}

pub async fn the_log_matches_a_model_across_reopenings(harness: &impl Harness) {
    let cases = AtomicUsize::new(0);
    let handle = tokio::runtime::Handle::current();
    let mut runner = TestRunner::new(Config {
        cases: 24,
        failure_persistence: None,
        ..Config::default()
    });
    let result = tokio::task::block_in_place(|| {
        runner.run(&prop::collection::vec(op(), 1..40), |ops| {
            handle.block_on(async {
                let case = cases.fetch_add(1, Ordering::SeqCst);
                // The log was reopened by the case before: a fresh handle.
                let log = harness.open().await;
                let guarantees = log.guarantees(&TopicSpec::default());
                let (source, output, group) =
                    (format!("m{case}"), format!("o{case}"), format!("g{case}"));
                log.create_topic(&source, &TopicSpec::with_partitions(PARTITIONS))
                    .await
                    .expect("create the source");
                log.create_topic(&output, &TopicSpec::with_partitions(2))
                    .await
                    .expect("create the output");
                let mut case = Case {
                    harness,
                    log: Some(log),
                    source,
                    output,
                    group,
                    exactly_once: guarantees.transactions == TransactionGuarantee::ExactlyOnce,
                    partition_end: guarantees.conditional_appends.partition_end,
                    model: Model {
                        partitions: vec![Vec::new(); PARTITIONS as usize],
                        ..Model::default()
                    },
                };
                for op in &ops {
                    case.step(op).await?;
                }
                Ok(())
            })
        })
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}
