//! Committing a batch: its outputs, dead letters and the group's offset in one transaction.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::PoisonError;
use std::sync::atomic::Ordering as AtomicOrdering;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use weir_cloudevents::CloudEvent;
use weir_log::{ErrorKind, Record};

use super::lanes::{Outcome, Steps, fnv1a};
use super::{MAX_STALL_BACKOFF, Pipeline, PipelineState, now_rfc3339};
use crate::codec::encode_event;
use crate::consumer::GroupTransactions;
use crate::routing::{DeadLetterCause, dead_letter_event, undecodable_event};
use crate::{Result, SharedLog};

/// How a commit ended when it did not fail.
pub(super) enum Committed {
    Done,
    /// The log refused the transaction as it is (see [`is_rejection`]): nothing of it was
    /// written, and sending it again would fail the same way.
    Rejected(weir_log::Error),
}

/// Whether the log refused a transaction for what it holds (too large, a record without
/// the key a compacted topic needs, an output topic that does not exist), so that only a
/// different transaction can succeed.
fn is_rejection(e: &weir_log::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::TooLarge | ErrorKind::Invalid | ErrorKind::NotFound
    )
}

/// A handled batch's records, ready to commit.
pub(super) struct BatchOutputs {
    /// Every record, by target topic, in input order.
    appends: Vec<(String, Vec<Record>)>,
    /// Per input offset, its records: what is committed if the log refuses the whole.
    per_event: Vec<(u64, Vec<(String, Record)>)>,
    processed: u64,
    filtered: u64,
    dead: u64,
    /// The trace spans of the batch's steps, which end once it is committed.
    steps: Steps,
}

/// The commit of a partition's previous batch, running while the next one is called.
pub(super) type Committing<'a> = Pin<Box<dyn Future<Output = Result<()>> + Send + 'a>>;

/// Wait for a batch's commit, if one is running.
pub(super) async fn finish(committing: Option<Committing<'_>>) -> Result<()> {
    match committing {
        Some(commit) => commit.await,
        None => Ok(()),
    }
}

impl Pipeline {
    /// The transaction producer of one source partition. Topic names can be long, so a
    /// name over the log's 255-byte limit carries a hash of the topic instead.
    pub(super) fn producer(&self, topic: &str, partition: u32) -> String {
        let name = format!("pipeline/{}/{topic}/{partition}", self.name);
        if name.len() <= 255 {
            return name;
        }
        let hash = fnv1a(topic.as_bytes());
        format!("pipeline/{}/#{hash:016x}/{partition}", self.name)
    }

    /// Commit `appends` and the group's move to `next` as one transaction, trying again
    /// with backoff while the log refuses it. Fails only when the node stops first.
    pub(super) async fn commit(
        &self,
        log: &SharedLog,
        commits: &GroupTransactions,
        appends: Vec<(String, Vec<Record>)>,
        next: u64,
        cancel: &CancellationToken,
    ) -> Result<Committed> {
        let (topic, partition) = (commits.topic.as_str(), commits.partition);
        let txn = commits.transaction(appends, next);
        let mut wait = Duration::from_millis(50);
        loop {
            // Sent again unchanged after a failure: the log never stores it twice (an
            // exactly-once backend completes the first try instead; see weir-log).
            match log.commit_transaction(txn.clone()).await {
                Ok(()) => {
                    self.metrics.appended(&txn.appends);
                    break;
                }
                Err(e) if is_rejection(&e) && !txn.appends.is_empty() => {
                    return Ok(Committed::Rejected(e));
                }
                // Another owner took the partition: this task must not commit again.
                Err(e) if e.kind() == ErrorKind::Fenced => return Err(e.into()),
                Err(e) => {
                    tracing::error!(pipeline = %self.name, topic, partition, error = %e, "pipeline could not commit its batch; trying again");
                    self.set_state(PipelineState::Stalled {
                        topic: topic.to_owned(),
                        partition,
                        error: e.to_string(),
                    });
                    tokio::select! {
                        _ = cancel.cancelled() => return Err(crate::Error::ShuttingDown),
                        _ = tokio::time::sleep(wait) => {}
                    }
                    wait = (wait * 2).min(MAX_STALL_BACKOFF);
                }
            }
        }
        self.recovered(topic, partition);
        self.positions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert((topic.to_owned(), partition), next);
        Ok(Committed::Done)
    }

    /// Commit a batch the log refused as a whole (too large, a record too large, a key a
    /// compacted topic needs): event by event, and an event whose own outputs the log
    /// refuses becomes a dead letter (`output_rejected`), without its data if even that
    /// is refused. Returns how many events were dead-lettered here.
    pub(super) async fn commit_one_by_one(
        &self,
        log: &SharedLog,
        commits: &GroupTransactions,
        version: &str,
        per_event: Vec<(u64, Vec<(String, Record)>)>,
        refused: weir_log::Error,
        cancel: &CancellationToken,
    ) -> Result<u64> {
        let (topic, partition) = (commits.topic.as_str(), commits.partition);
        tracing::warn!(pipeline = %self.name, topic, partition, error = %refused, "the log refused the batch; committing it event by event");
        let mut dead = 0;
        for (offset, records) in per_event {
            let mut appends: BTreeMap<String, Vec<Record>> = BTreeMap::new();
            for (target, record) in records {
                appends.entry(target).or_default().push(record);
            }
            let appends: Vec<_> = appends.into_iter().collect();
            let refusal = match self
                .commit(log, commits, appends, offset + 1, cancel)
                .await?
            {
                Committed::Done => continue,
                Committed::Rejected(e) => e,
            };
            let stored = log.read(topic, partition, offset, 1).await?;
            let pos = self.position(topic, partition, offset);
            let cause = DeadLetterCause {
                function: &self.function,
                version,
                reason: "output_rejected",
                error: &format!("the log refused the event's outputs: {refusal}"),
                attempts: 1,
                time: now_rfc3339(),
            };
            let input = match stored.into_iter().find(|r| r.offset == offset) {
                Some(r) => CloudEvent::from_json_slice(&r.value)
                    .unwrap_or_else(|_| undecodable_event(pos, r.value)),
                None => undecodable_event(pos, bytes::Bytes::new()),
            };
            let mut letter = dead_letter_event(pos, input, &cause);
            for attempt in 0..2 {
                let appends = vec![(self.dead_letter.clone(), vec![encode_event(&letter)])];
                match self
                    .commit(log, commits, appends, offset + 1, cancel)
                    .await?
                {
                    Committed::Done => {
                        dead += 1;
                        break;
                    }
                    Committed::Rejected(e) if attempt == 0 => {
                        tracing::warn!(pipeline = %self.name, topic, partition, offset, error = %e, "the dead letter was refused too; sending it without its data");
                        letter.data = None;
                        letter.datacontenttype = None;
                    }
                    Committed::Rejected(e) => {
                        // Nothing more weir can drop: stall, visibly, rather than lose it.
                        return Err(e.into());
                    }
                }
            }
        }
        Ok(dead)
    }

    /// A batch's outcomes as the records to append, per target topic and per event.
    pub(super) fn batch_outputs(
        &self,
        offsets: Vec<u64>,
        outcomes: Vec<Outcome>,
        steps: Steps,
    ) -> BatchOutputs {
        let mut appends: BTreeMap<String, Vec<Record>> = BTreeMap::new();
        let mut batch = BatchOutputs {
            appends: Vec::new(),
            per_event: Vec::with_capacity(outcomes.len()),
            processed: 0,
            filtered: 0,
            dead: 0,
            steps,
        };
        for (offset, outcome) in offsets.into_iter().zip(outcomes) {
            let records: Vec<(String, Record)> = match outcome {
                Outcome::Outputs(outputs) => {
                    batch.processed += 1;
                    outputs
                        .into_iter()
                        .map(|(target, event)| (target, encode_event(&event)))
                        .collect()
                }
                Outcome::Filtered => {
                    batch.filtered += 1;
                    Vec::new()
                }
                Outcome::DeadLetter(event) => {
                    batch.dead += 1;
                    vec![(self.dead_letter.clone(), encode_event(&event))]
                }
            };
            for (target, record) in &records {
                match appends.get_mut(target) {
                    Some(records) => records.push(record.clone()),
                    None => {
                        appends.insert(target.clone(), vec![record.clone()]);
                    }
                }
            }
            batch.per_event.push((offset, records));
        }
        batch.appends = appends.into_iter().collect();
        batch
    }

    /// Commit a handled batch and the group's move to `next`, event by event if the log
    /// refuses it whole, and count it.
    pub(super) async fn commit_batch(
        &self,
        log: &SharedLog,
        commits: &GroupTransactions,
        version: String,
        batch: BatchOutputs,
        next: u64,
        cancel: &CancellationToken,
    ) -> Result<()> {
        let mut dead = batch.dead;
        let committed = self
            .commit(log, commits, batch.appends, next, cancel)
            .await?;
        if let Committed::Rejected(refused) = committed {
            dead += self
                .commit_one_by_one(log, commits, &version, batch.per_event, refused, cancel)
                .await?;
        }
        // Before the events, so a status that sees a batch's events sees the batch.
        self.batches.fetch_add(1, AtomicOrdering::Relaxed);
        self.processed
            .fetch_add(batch.processed, AtomicOrdering::Relaxed);
        self.filtered
            .fetch_add(batch.filtered, AtomicOrdering::Relaxed);
        self.dead_lettered.fetch_add(dead, AtomicOrdering::Relaxed);
        self.metrics.processed.increment(batch.processed);
        self.metrics.filtered.increment(batch.filtered);
        self.metrics.dead_lettered.increment(dead);
        // The steps end here, with their commit.
        drop(batch.steps);
        Ok(())
    }
}
