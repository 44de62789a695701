//! Transactions: a producer's outputs to several topics and a consumer-group commit that
//! become durable together, exactly once across crashes.
//!
//! [`crate::Log::commit_transaction`] checks everything first (topics, limits, keys, the
//! group and its offset), so a bad transaction writes nothing.
//!
//! A transaction whose records all go to one partition and that commits a group offset
//! (a co-partitioned pipeline's batch) is written as one frame that carries the commit
//! (version 4, see `frame`): one write and one fsync, no journal. The frame is atomic (a
//! torn one fails its checksum and is cut off at open), so after a crash the outputs and
//! the commit are both there or both not. The partition's writer applies the commit once
//! the frame is durable, and the partition keeps it recoverable: open re-applies the
//! commits of every segment it scans, and the groups are checkpointed before the recovery
//! point moves past a segment (see `partition`). If that frame's write fails, nothing of
//! the transaction counts in this process (on a full disk nothing was written; any other
//! failure poisons the partition, and the next open finds the frame whole or not at all),
//! so the caller may send it again.
//!
//! Every other transaction writes the intent
//! to the journal and waits for its fsync (see `journal` for the format and recovery),
//! appends each partition's batch tagged with `(producer id, sequence)`, waits for every
//! batch's fsync, and applies the group commit. From the intent's fsync on, the
//! transaction cannot abort: a failure leaves it pending, and the producer's next call or
//! the next open finishes it, appending only the batches whose tag it cannot find.
//!
//! # Invariants
//!
//! - A producer runs one transaction at a time: its calls queue on its own lock, which no
//!   other producer waits for, and nothing shared by producers is held across an fsync
//!   (the journal's writer and the partitions' writers group-commit for everyone).
//! - A call first finishes its producer's pending transaction, if any, and writes nothing
//!   new until that succeeded.
//! - A batch is queued at most once per outcome: a batch is appended again only after its
//!   previous append failed (which leaves nothing visible in this process) or, at open,
//!   when no frame with its tag is stored at or after the end offset its intent recorded.
//!   Every state a call can be cancelled in (a dropped future) is kept with the producer,
//!   so the next call waits for appends still in flight instead of repeating them.
//! - The group commit is applied (in memory; the journal or the frame holds it durably) only
//!   once every batch is acknowledged, so `committed_offset` never shows an offset whose outputs are
//!   not all durable. Until then readers may see some partitions' outputs and not others:
//!   there is no abort, so no read isolation is needed.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex, PoisonError, atomic::Ordering},
};

use tokio::sync::oneshot;
use tracing::instrument;

use crate::{
    Error, GroupCommit, Log, Record, RecordPosition, Result, Transaction,
    frame::{self, FrameTag, LimitError},
    groups::validate_group_name,
    journal::{self, Intent, IntentBatch, IntentCommit, MAX_ENTRY_BYTES, MAX_PRODUCER_LEN},
    now_ms,
    partition::Partition,
    telemetry,
};

/// Every producer that has called since the log was opened, with its pending transaction.
#[derive(Default)]
pub(crate) struct Producers {
    by_name: Mutex<HashMap<String, Arc<tokio::sync::Mutex<ProducerState>>>>,
}

impl Producers {
    fn get(&self, name: &str) -> Arc<tokio::sync::Mutex<ProducerState>> {
        let mut producers = self.by_name.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(producers.entry(name.to_owned()).or_default())
    }
}

#[derive(Default)]
struct ProducerState {
    pending: Option<Pending>,
    /// A single-frame transaction (version 4) whose call was cancelled before the frame's
    /// write was acknowledged: the next call waits for it first, so it never runs ahead of
    /// an earlier commit.
    in_flight: Option<(oneshot::Receiver<Result<u64>>, IntentCommit)>,
}

/// Whether `sent` (a transaction's commit) is `commit`: the same transaction sent again.
fn is_same_commit(commit: &IntentCommit, sent: Option<&GroupCommit>) -> bool {
    sent.is_some_and(|sent| {
        sent.group == commit.group
            && sent.topic == commit.topic
            && sent.partition == commit.partition
            && sent.next_offset == commit.next_offset
    })
}

/// A transaction whose intent was queued to the journal and that is not done yet.
struct Pending {
    intent: Arc<Intent>,
    /// `Some` until the journal confirms the intent is durable.
    journal_reply: Option<oneshot::Receiver<Result<()>>>,
    /// Per batch of the intent.
    batches: Vec<BatchState>,
    /// Per batch of the intent, pinned at the batch's end offset while this exists.
    partitions: Vec<Arc<Partition>>,
    /// Found at open rather than written by this process.
    at_open: bool,
    /// Per batch: where its records came from in the call (empty when found at open),
    /// and the base offset its append got, once this process appended it.
    inputs: Vec<Vec<(usize, usize)>>,
    bases: Vec<Option<u64>>,
    /// A call before the one finishing it returned an error.
    resumed: bool,
}

enum BatchState {
    /// Never queued: certainly not stored.
    NotSent,
    InFlight(oneshot::Receiver<Result<u64>>),
    Landed,
    /// Its append failed or its fate is unknown: look for its tag before appending it.
    Unknown,
}

impl Drop for Pending {
    fn drop(&mut self) {
        for (partition, batch) in self.partitions.iter().zip(&self.intent.batches) {
            partition.unpin(batch.end_offset);
        }
    }
}

/// One partition's share of a transaction, checked.
struct PlannedBatch {
    topic: String,
    partition_id: u32,
    partition: Arc<Partition>,
    records: Vec<Record>,
    /// Per record: its entry in `Transaction::appends` and its index there.
    inputs: Vec<(usize, usize)>,
}

/// Where the records of a transaction were stored: per record, its entry in
/// `Transaction::appends`, its index there, and its position. Only for batches this
/// call appended itself.
type Stored = Vec<(usize, usize, RecordPosition)>;

fn validate_producer(name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        "it is empty"
    } else if name.len() > MAX_PRODUCER_LEN {
        "it is longer than 255 bytes"
    } else {
        return Ok(());
    };
    Err(Error::InvalidProducerName {
        name: name.to_owned(),
        reason,
    })
}

impl Log {
    /// Appends a transaction's records and commits its group offset atomically: once it
    /// returns `Ok`, every record is durable (fsynced, whatever the topic's fsync policy)
    /// and `committed_offset` returns the offset, also after a restart. After a crash at
    /// any point the transaction is either entirely there (every record exactly once and
    /// the offset) or, if its intent was not yet durable, not at all.
    ///
    /// Everything is checked before anything is written ([`Error::UnknownTopic`],
    /// [`Error::RecordTooLarge`], [`Error::BatchTooLarge`], [`Error::KeyRequired`],
    /// [`Error::InvalidGroupName`], [`Error::OffsetOutOfRange`],
    /// [`Error::TransactionTooLarge`], [`Error::InvalidProducerName`]). Once the intent is
    /// durable the transaction never aborts: if an append fails, this returns
    /// [`Error::TransactionIncomplete`] and the producer's next call (an empty transaction
    /// will do) or the next open completes it; do not redo it. If the producer's earlier
    /// transaction still cannot be completed, this returns
    /// [`Error::EarlierTransactionIncomplete`] and writes nothing of this one.
    ///
    /// A transaction whose records all go to one partition and that has a commit is one
    /// frame, written and fsynced once (no journal): if that write fails, the error is the
    /// partition's ([`Error::DiskFull`], [`Error::Poisoned`], [`Error::Io`]) and nothing of
    /// the transaction counts, so it may be sent again.
    ///
    /// While a transaction is being written, readers may see the outputs of some of its
    /// partitions before others; the group offset moves only once all are durable.
    #[instrument(skip_all, err, fields(producer = %txn.producer))]
    pub async fn commit_transaction(&self, txn: Transaction) -> Result<()> {
        self.transact(txn).await.map(drop)
    }

    /// [`Log::commit_transaction`], returning where this call stored the records.
    pub(crate) async fn transact(&self, txn: Transaction) -> Result<Stored> {
        validate_producer(&txn.producer)?;
        let producer = self.inner.producers.get(&txn.producer);
        let mut state = producer.lock().await;
        if let Some((reply, commit)) = state.in_flight.as_mut() {
            // Its outcome is in the groups already (the writer applies a durable frame's
            // commit), and a failed one counts as not sent: its caller is gone, so say so.
            let error = match reply.await {
                Ok(Ok(_)) => None,
                Ok(Err(error)) => Some(error.to_string()),
                Err(_) => Some("the partition's writer stopped".to_owned()),
            };
            let resent = error.is_none() && is_same_commit(commit, txn.commit.as_ref());
            state.in_flight = None;
            if let Some(error) = error {
                telemetry::CancelledTransactionFailed {
                    producer: &txn.producer,
                    error: &error,
                }
                .emit();
            }
            if resent {
                // This call is the cancelled one sent again, and that one is durable.
                return Ok(Stored::new());
            }
        }
        if let Some(pending) = &state.pending {
            // A transaction sent again after a failure carries the same commit: finishing
            // the pending one is all it asks for (writing it again would store it twice).
            let resent = pending
                .intent
                .commit
                .as_ref()
                .is_some_and(|c| is_same_commit(c, txn.commit.as_ref()));
            if resent {
                return self.finish(&mut state).await;
            }
            self.finish(&mut state).await.map_err(|error| match error {
                Error::TransactionIncomplete {
                    producer,
                    sequence,
                    source,
                } => Error::EarlierTransactionIncomplete {
                    producer,
                    sequence,
                    source,
                },
                other => other,
            })?;
        }
        let (mut planned, mut commit) = self.plan(&txn)?;
        if let Some(c) = &commit
            && !planned.is_empty()
            && self
                .inner
                .groups
                .committed(&c.group, &c.topic, c.partition)
                .is_some_and(|done| done >= c.next_offset)
        {
            // Outputs whose commit would not move the group forward were committed
            // already (a caller that did not see the answer sends them again): they are
            // acknowledged and not written twice.
            return Ok(Stored::new());
        }
        if planned.is_empty() && commit.is_none() {
            return Ok(Stored::new());
        }
        if let [batch] = planned.as_slice()
            && let Some(commit) = commit.take_if(|c| self.fits_one_frame(batch, c))
        {
            let batch = planned.pop().expect("one batch");
            return self
                .commit_in_frame(&mut state, txn.producer, batch, commit)
                .await
                .map(|()| Stored::new());
        }

        let sequence = self.inner.next_sequence.fetch_add(1, Ordering::SeqCst);
        let mut batches = Vec::with_capacity(planned.len());
        let mut partitions = Vec::with_capacity(planned.len());
        let mut inputs = Vec::with_capacity(planned.len());
        for planned in planned {
            inputs.push(planned.inputs);
            batches.push(IntentBatch {
                topic: planned.topic,
                partition: planned.partition_id,
                end_offset: planned.partition.pin_end(),
                records: planned.records,
            });
            partitions.push(planned.partition);
        }
        let intent = Arc::new(Intent {
            sequence,
            producer_id: journal::producer_id(&txn.producer),
            producer: txn.producer,
            commit,
            batches,
        });
        // Built before anything can fail, so that dropping it undoes the pins.
        let mut pending = Pending {
            batches: intent.batches.iter().map(|_| BatchState::NotSent).collect(),
            intent: Arc::clone(&intent),
            journal_reply: None,
            partitions,
            at_open: false,
            resumed: false,
            bases: vec![None; inputs.len()],
            inputs,
        };
        let bytes = Arc::new(journal::encode_intent(&intent));
        pending.journal_reply = Some(self.inner.journal.write_intent(sequence, bytes)?);
        state.pending = Some(pending);
        self.finish(&mut state).await
    }

    /// Whether a transaction of `batch` and `commit` can be written as one version 4 frame.
    fn fits_one_frame(&self, batch: &PlannedBatch, commit: &IntentCommit) -> bool {
        let stamp = frame::Stamp {
            tag: FrameTag {
                producer_id: 0,
                sequence: 0,
            },
            commit: Some(commit),
        };
        let len = frame::frame_len(&batch.records, Some(stamp));
        commit.group.len() <= frame::MAX_COMMIT_NAME_LEN
            && commit.topic.len() <= frame::MAX_COMMIT_NAME_LEN
            && len <= self.inner.opts.max_batch_bytes
            && len - frame::HEADER_LEN <= frame::MAX_FIELD_LEN
    }

    /// Writes a transaction as one frame that carries its commit; see the module docs.
    async fn commit_in_frame(
        &self,
        state: &mut ProducerState,
        producer: String,
        batch: PlannedBatch,
        commit: IntentCommit,
    ) -> Result<()> {
        let sequence = self.inner.next_sequence.fetch_add(1, Ordering::SeqCst);
        let tag = FrameTag {
            producer_id: journal::producer_id(&producer),
            sequence,
        };
        let records = batch.records.len();
        let reply = batch
            .partition
            .enqueue(batch.records, 0, Some(tag), Some(commit.clone()))?;
        let (reply, _) = state.in_flight.insert((reply, commit));
        let written = reply.await;
        state.in_flight = None;
        match written {
            Ok(Ok(_)) => {
                telemetry::TransactionCommitted {
                    producer: &producer,
                    sequence,
                    batches: 1,
                    records,
                }
                .emit();
                Ok(())
            }
            Ok(Err(error)) => Err(error),
            Err(_) => Err(Error::Poisoned {
                topic: batch.topic,
                partition: batch.partition_id,
            }),
        }
    }

    /// Checks a transaction and splits its records into one batch per partition, with
    /// timestamps filled in.
    fn plan(&self, txn: &Transaction) -> Result<(Vec<PlannedBatch>, Option<IntentCommit>)> {
        let opts = &self.inner.opts;
        let now_ms = now_ms();
        // Per topic and partition: the batch and each record's index in its input `Vec`.
        type Targets = BTreeMap<u32, (PlannedBatch, Vec<usize>)>;
        let mut targets: BTreeMap<&str, Targets> = BTreeMap::new();
        for (entry, (topic_name, records)) in txn.appends.iter().enumerate() {
            let topic = self.get_topic(topic_name)?;
            if topic.config().compaction && records.iter().any(|r| r.key.is_none()) {
                return Err(Error::KeyRequired {
                    topic: topic_name.clone(),
                });
            }
            let partitions = targets.entry(topic_name).or_default();
            for (index, record) in records.iter().enumerate() {
                let partition_id = topic.choose_partition(record.key.as_deref());
                let (batch, indexes) = match partitions.entry(partition_id) {
                    std::collections::btree_map::Entry::Occupied(entry) => entry.into_mut(),
                    std::collections::btree_map::Entry::Vacant(entry) => entry.insert((
                        PlannedBatch {
                            topic: topic_name.clone(),
                            partition_id,
                            partition: Arc::clone(topic.partition(partition_id)?),
                            records: Vec::new(),
                            inputs: Vec::new(),
                        },
                        Vec::new(),
                    )),
                };
                batch.records.push(Record {
                    key: record.key.clone(),
                    value: record.value.clone(),
                    timestamp_ms: Some(record.timestamp_ms.unwrap_or(now_ms)),
                });
                batch.inputs.push((entry, index));
                indexes.push(index);
            }
        }
        let mut batches = Vec::new();
        for (batch, indexes) in targets.into_values().flat_map(BTreeMap::into_values) {
            frame::check_limits(
                &batch.records,
                opts.max_record_bytes,
                opts.max_batch_bytes,
                true,
            )
            .map_err(|limit| match limit {
                LimitError::Record { index, size } => Error::RecordTooLarge {
                    topic: batch.topic.clone(),
                    index: indexes[index],
                    size,
                    max: opts.max_record_bytes,
                },
                LimitError::Batch { size } => Error::BatchTooLarge {
                    topic: batch.topic.clone(),
                    partition: batch.partition_id,
                    records: batch.records.len(),
                    size,
                    max: opts.max_batch_bytes,
                },
            })?;
            batches.push(batch);
        }

        let commit = match &txn.commit {
            None => None,
            Some(commit) => {
                validate_group_name(&commit.group)?;
                self.inner.groups.check_generation(
                    &commit.group,
                    &commit.topic,
                    commit.partition,
                    commit.generation,
                )?;
                let end_offset = self
                    .get_partition(&commit.topic, commit.partition)?
                    .end_offset();
                if commit.next_offset > end_offset {
                    return Err(Error::OffsetOutOfRange {
                        topic: commit.topic.clone(),
                        partition: commit.partition,
                        offset: commit.next_offset,
                        end_offset,
                    });
                }
                Some(IntentCommit {
                    group: commit.group.clone(),
                    topic: commit.topic.clone(),
                    partition: commit.partition,
                    next_offset: commit.next_offset,
                })
            }
        };

        let size = journal::intent_len(
            &txn.producer,
            commit
                .as_ref()
                .map(|c| (c.group.as_str(), c.topic.as_str())),
            batches
                .iter()
                .map(|b| (b.topic.len(), journal::records_len(&b.records))),
        );
        let max = opts.max_transaction_bytes.min(MAX_ENTRY_BYTES);
        if size > max {
            return Err(Error::TransactionTooLarge {
                producer: txn.producer.clone(),
                size,
                max,
            });
        }
        Ok((batches, commit))
    }

    /// Finishes the producer's pending transaction: waits for its intent to be durable,
    /// appends every batch not known to be stored, then applies its commit.
    async fn finish(&self, state: &mut ProducerState) -> Result<Stored> {
        let Some(pending) = state.pending.as_mut() else {
            return Ok(Stored::new());
        };
        if let Some(reply) = pending.journal_reply.as_mut() {
            let written = reply.await.unwrap_or(Err(Error::JournalPoisoned));
            match written {
                Ok(()) => pending.journal_reply = None,
                Err(error) => {
                    // Not durable, so nothing of it was appended: with a full disk nothing
                    // was written; after any other failure the journal refuses every
                    // transaction, and the next open finishes the intent if it did reach
                    // the disk.
                    state.pending = None;
                    return Err(error);
                }
            }
        }

        let intent = Arc::clone(&pending.intent);
        let tag = FrameTag {
            producer_id: intent.producer_id,
            sequence: intent.sequence,
        };
        let mut first_error = None;
        let mut found = 0usize;
        let mut appended = 0usize;
        #[cfg(test)]
        let stop_after = self
            .inner
            .transaction_fault
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        for (index, ((batch, partition), batch_state)) in intent
            .batches
            .iter()
            .zip(&pending.partitions)
            .zip(&mut pending.batches)
            .enumerate()
        {
            #[cfg(test)]
            if stop_after.is_some_and(|TransactionFault::StopAfterBatches(n)| index >= n) {
                continue;
            }
            #[cfg(not(test))]
            let _ = index;
            match batch_state {
                BatchState::NotSent => {}
                BatchState::Unknown => match partition.contains_tag(batch.end_offset, tag) {
                    Ok(true) => {
                        *batch_state = BatchState::Landed;
                        found += 1;
                        continue;
                    }
                    Ok(false) => {}
                    Err(error) => {
                        first_error.get_or_insert(error);
                        continue;
                    }
                },
                BatchState::InFlight(_) | BatchState::Landed => continue,
            }
            // Every record has its timestamp, so `now_ms` is unused.
            match partition.enqueue(batch.records.clone(), 0, Some(tag), None) {
                Ok(reply) => {
                    *batch_state = BatchState::InFlight(reply);
                    appended += 1;
                }
                Err(error) => {
                    *batch_state = BatchState::Unknown;
                    first_error.get_or_insert(error);
                }
            }
        }
        for ((batch, batch_state), base) in intent
            .batches
            .iter()
            .zip(&mut pending.batches)
            .zip(&mut pending.bases)
        {
            let BatchState::InFlight(reply) = batch_state else {
                continue;
            };
            match reply.await {
                Ok(Ok(offset)) => {
                    *batch_state = BatchState::Landed;
                    *base = Some(offset);
                }
                Ok(Err(error)) => {
                    *batch_state = BatchState::Unknown;
                    first_error.get_or_insert(error);
                }
                Err(_) => {
                    *batch_state = BatchState::Unknown;
                    first_error.get_or_insert(Error::Poisoned {
                        topic: batch.topic.clone(),
                        partition: batch.partition,
                    });
                }
            }
        }
        #[cfg(test)]
        if stop_after.is_some() {
            first_error.get_or_insert(Error::Io {
                context: "a test stopped the transaction".into(),
                source: std::io::Error::other("injected"),
            });
        }
        if let Some(error) = first_error {
            pending.resumed = true;
            return Err(Error::TransactionIncomplete {
                producer: intent.producer.clone(),
                sequence: intent.sequence,
                source: Box::new(error),
            });
        }

        if let Some(commit) = &intent.commit {
            self.inner.groups.apply(commit, intent.sequence);
        }
        if pending.at_open || pending.resumed {
            telemetry::TransactionRecovered {
                producer: &intent.producer,
                sequence: intent.sequence,
                batches_found: found,
                batches_appended: appended,
                at_open: pending.at_open,
            }
            .emit();
        } else {
            telemetry::TransactionCommitted {
                producer: &intent.producer,
                sequence: intent.sequence,
                batches: intent.batches.len(),
                records: intent.batches.iter().map(|b| b.records.len()).sum(),
            }
            .emit();
        }
        if !pending.at_open {
            // At open the journal files are replaced once recovery is done.
            self.inner.journal.write_done(intent.sequence);
        }
        let mut stored = Stored::new();
        for ((batch, inputs), base) in intent
            .batches
            .iter()
            .zip(&pending.inputs)
            .zip(&pending.bases)
        {
            if let Some(base) = base {
                stored.extend(inputs.iter().enumerate().map(|(i, &(entry, index))| {
                    let position = RecordPosition {
                        partition: batch.partition,
                        offset: base + i as u64,
                    };
                    (entry, index, position)
                }));
            }
        }
        state.pending = None;
        Ok(stored)
    }

    /// At open: finishes every unfinished intent the journal holds and applies the commit
    /// of every intent whose sequence is above the stored one.
    pub(crate) fn recover_transactions(&self, recovered: &journal::Recovered) -> Result<()> {
        for intent in recovered.unfinished() {
            let mut partitions = Vec::with_capacity(intent.batches.len());
            for batch in &intent.batches {
                let partition =
                    self.get_partition(&batch.topic, batch.partition)
                        .map_err(|error| Error::Corrupt {
                            what: format!(
                                "transaction {} of producer \"{}\" in the journal",
                                intent.sequence, intent.producer
                            ),
                            reason: format!("it cannot be completed: {error}"),
                        })?;
                partition.pin(batch.end_offset);
                partitions.push(partition);
            }
            let mut state = ProducerState {
                in_flight: None,
                pending: Some(Pending {
                    batches: intent.batches.iter().map(|_| BatchState::Unknown).collect(),
                    intent: Arc::new(intent.clone()),
                    journal_reply: None,
                    partitions,
                    at_open: true,
                    resumed: false,
                    inputs: vec![Vec::new(); intent.batches.len()],
                    bases: vec![None; intent.batches.len()],
                }),
            };
            futures::executor::block_on(self.finish(&mut state))?;
        }
        for intent in recovered.intents.values() {
            if let Some(commit) = &intent.commit {
                self.inner.groups.apply(commit, intent.sequence);
            }
        }
        Ok(())
    }
}

/// Stops the next transaction part-way, as a crash would, for tests.
#[cfg(test)]
#[derive(Debug, Clone, Copy)]
pub(crate) enum TransactionFault {
    /// Append only the first `n` batches (0: none), then return an error.
    StopAfterBatches(usize),
}

#[cfg(test)]
mod tests;
