//! Appends into one partition's stream: a call's records as an atomic batch where the
//! server has them (nats-server 2.12+), one publish per record otherwise; with the call's
//! [`Expect`] as the server's own expectation headers, checked atomically with the write.
//! A transaction's outputs, which need not be all or none, go in runs by key instead
//! ([`Inner::publish_in_runs`]).

use std::collections::HashSet;

use async_nats::HeaderMap;
use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use async_nats::jetstream::message::PublishMessage;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use weir_log::{Error, ErrorKind, Expect, Record, Result};

use crate::{Inner, TIME_HEADER, unavailable};

/// The most messages nats-server takes in one atomic batch (its default
/// `max_batch_size`), and so the most records of one call to one partition.
pub(crate) const MAX_BATCH: usize = 1000;

/// The most runs [`Inner::publish_in_runs`] sends; more take an atomic batch.
const MAX_RUNS: usize = 4;

/// Publishes that runs may have awaiting acknowledgement at once, across the log (see
/// `Inner::run_slots`); a run longer than [`MAX_BATCH`] goes in parts of that size.
pub(crate) const RUN_SLOTS: usize = 4 * MAX_BATCH;

const BATCH_ID: &str = "Nats-Batch-Id";
const BATCH_SEQUENCE: &str = "Nats-Batch-Sequence";
const BATCH_COMMIT: &str = "Nats-Batch-Commit";
const EXPECTED_LAST_SEQUENCE: &str = "Nats-Expected-Last-Sequence";
const EXPECTED_LAST_SUBJECT_SEQUENCE: &str = "Nats-Expected-Last-Subject-Sequence";

/// The server's answer to a batch's commit: a PubAck, or an error.
#[derive(Deserialize)]
struct BatchReply {
    #[serde(default)]
    seq: u64,
    #[serde(default)]
    count: u64,
    error: Option<ApiError>,
}

#[derive(Deserialize)]
struct ApiError {
    #[serde(default)]
    err_code: u64,
    #[serde(default)]
    description: String,
}

/// JetStream's error code for a failed `Nats-Expected-Last-*` check.
const JS_WRONG_LAST_SEQUENCE: u64 = 10071;
/// JetStream's error code for too many open batches (50 a stream by default).
const JS_TOO_MANY_BATCHES: u64 = 10210;
/// JetStream's error code for a batch the server dropped part-way (a reconnect lost some
/// of its messages, it sat idle 10 s, the leader changed): nothing of it is stored.
const JS_BATCH_INCOMPLETE: u64 = 10176;
/// JetStream's error code for a batch over `max_batch_size`.
const JS_BATCH_TOO_LARGE: u64 = 10199;
/// JetStream's error code for a batch sent to a stream without `allow_atomic`.
const JS_ATOMIC_DISABLED: u64 = 10174;
/// The [`Error::code`] of that error, to set it right.
const ATOMIC_DISABLED_CODE: &str = "atomic-batches-disabled";

impl Inner {
    /// Appends `records` to one partition, if `expect` holds; their offsets, in order. All
    /// or none when `atomic` and the server has atomic batches; else in runs by key (see
    /// [`Inner::publish_in_runs`]).
    pub(crate) async fn publish(
        &self,
        topic: &str,
        partition: u32,
        records: Vec<Record>,
        expect: Expect,
        atomic: bool,
    ) -> Result<Vec<u64>> {
        if let (Expect::KeyLast { key, .. }, Some(first)) = (&expect, records.first())
            && first.key.as_ref() != Some(key)
        {
            return Err(Error::invalid(
                "the NATS backend checks Expect::KeyLast on the call's first record, so that record must have the expected key",
            ));
        }
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let subjects: Vec<String> = records
            .iter()
            .map(|r| self.names.subject(topic, partition, r.key.as_deref()))
            .collect();
        if !atomic && matches!(expect, Expect::Any) && records.len() > 1 {
            let runs = runs_by_key(&subjects);
            let last_run = runs.last().copied().unwrap_or(0);
            // Many runs cost more round trips than one atomic batch costs the server.
            if last_run < MAX_RUNS || !self.atomic_batches || records.len() > MAX_BATCH {
                let offsets = self
                    .publish_in_runs(topic, partition, records, subjects, runs)
                    .await?;
                if let Some(last) = offsets.iter().max() {
                    self.note_end(topic, partition, last + 1);
                }
                return Ok(offsets);
            }
        }
        if records.len() > MAX_BATCH {
            return Err(Error::new(
                ErrorKind::TooLarge,
                format!(
                    "{} records for partition {partition} of topic \"{topic}\" in one call; the NATS backend stores at most {MAX_BATCH} a call all or none (nats-server's atomic batch)",
                    records.len()
                ),
            ));
        }
        let offsets = if records.len() == 1 || !self.atomic_batches {
            self.publish_each(topic, partition, records, subjects, expect)
                .await?
        } else {
            match self
                .publish_batch(topic, partition, &records, &subjects, &expect)
                .await
            {
                // A stream made before the server took atomic batches: allow them on it
                // (the topic's settings are unchanged) and send the batch again.
                Err(e) if e.code() == ATOMIC_DISABLED_CODE => {
                    let meta = self.existing(topic).await?;
                    let config = self.stream_config(topic, partition, &meta.config);
                    self.js.create_or_update_stream(config).await.map_err(|e| {
                        unavailable(
                            format!("cannot allow atomic batches on partition {partition} of topic \"{topic}\""),
                            e,
                        )
                    })?;
                    self.publish_batch(topic, partition, &records, &subjects, &expect)
                        .await?
                }
                result => result?,
            }
        };
        if let Some(last) = offsets.last() {
            self.note_end(topic, partition, last + 1);
        }
        Ok(offsets)
    }

    /// One atomic batch: every message but the last without a reply subject, the last
    /// with `Nats-Batch-Commit`; the server answers that one for all.
    async fn publish_batch(
        &self,
        topic: &str,
        partition: u32,
        records: &[Record],
        subjects: &[String],
        expect: &Expect,
    ) -> Result<Vec<u64>> {
        // 64 random bits in 11 characters: unique among the batches open on a stream
        // (50 at most), and short, since every message of the batch stores it.
        let id = URL_SAFE_NO_PAD.encode(uuid::Uuid::new_v4().as_u64_pair().0.to_le_bytes());
        let n = records.len();
        let mut reply = None;
        for (i, (record, subject)) in records.iter().zip(subjects).enumerate() {
            let (subject, value) = (subject.clone(), record.value.clone());
            let mut headers = HeaderMap::new();
            headers.insert(BATCH_ID, id.as_str());
            headers.insert(BATCH_SEQUENCE, (i + 1).to_string().as_str());
            if let Some(ts) = record.timestamp_ms {
                headers.insert(TIME_HEADER, ts.to_string().as_str());
            }
            if i == 0 {
                expectation_headers(&mut headers, expect);
            }
            if i + 1 < n {
                self.client
                    .publish_with_headers(subject, headers, value)
                    .await
                    .map_err(|e| unavailable(format!("cannot publish to topic \"{topic}\""), e))?;
            } else {
                headers.insert(BATCH_COMMIT, "1");
                reply = Some(
                    self.client
                        .request_with_headers(subject, headers, value)
                        .await
                        .map_err(|e| {
                            unavailable(
                                format!(
                                    "no answer to a batch of {n} records for partition {partition} of topic \"{topic}\" (it may or may not be stored)"
                                ),
                                e,
                            )
                        })?,
                );
            }
        }
        let reply = reply.expect("a batch has a last record");
        let answer: BatchReply = serde_json::from_slice(&reply.payload).map_err(|e| {
            Error::new(
                ErrorKind::Failed,
                format!(
                    "the server's answer to a batch is unreadable ({e}): {}",
                    String::from_utf8_lossy(&reply.payload)
                ),
            )
        })?;
        if let Some(error) = answer.error {
            return Err(api_error(topic, partition, &error));
        }
        if answer.count != n as u64 || answer.seq < n as u64 {
            return Err(Error::new(
                ErrorKind::Failed,
                format!(
                    "the server acknowledged {} of a batch of {n} records (last sequence {})",
                    answer.count, answer.seq
                ),
            ));
        }
        // A batch is stored as one run of sequences ending at the acknowledged one.
        let first = answer.seq - n as u64;
        Ok((first..answer.seq).collect())
    }

    /// Records whose call need not be all or none (a transaction's outputs, at least once),
    /// without an atomic batch where that is cheaper: nats-server stages an atomic batch
    /// of a file-backed stream with one replica in a file store of its own, a directory
    /// and files made and removed per batch, which cost more than half of its CPU in the
    /// fleet benchmark. The records go in runs, in call order, a new run begun at a
    /// record whose key is already in the current one (unkeyed records share one key);
    /// each run is pipelined and the next is sent only once every acknowledgement of the
    /// last arrived. A reconnect can drop a message in the middle of a pipelined run and
    /// deliver the ones after it (the client drops its unsent buffer, then sends what was
    /// still queued), so within a run no two records share a key, and no record is sent
    /// after a lost one of its key: a failure ends the call, which is then sent again
    /// whole, and each key's records are first stored in their order. Without a failure
    /// they are stored in call order. Over [`MAX_RUNS`] runs (a key repeated often, or
    /// several unkeyed records), [`Inner::publish`] sends one atomic batch instead where
    /// the server has them: it costs less than the round trips. A run goes in parts of
    /// at most [`MAX_BATCH`] records, each taking its slots of `Inner::run_slots` before
    /// it sends anything.
    async fn publish_in_runs(
        &self,
        topic: &str,
        partition: u32,
        records: Vec<Record>,
        subjects: Vec<String>,
        runs: Vec<usize>,
    ) -> Result<Vec<u64>> {
        let mut offsets = Vec::with_capacity(records.len());
        let mut pending = records.into_iter().zip(subjects).zip(runs).peekable();
        while let Some(((record, subject), run)) = pending.next() {
            // A part of a run: its records have distinct keys, so any cut keeps the order.
            let (mut records, mut subjects) = (vec![record], vec![subject]);
            while records.len() < MAX_BATCH
                && let Some(((record, subject), _)) = pending.next_if(|(_, next)| *next == run)
            {
                records.push(record);
                subjects.push(subject);
            }
            let _slots = self
                .run_slots
                .acquire_many(records.len() as u32)
                .await
                .expect("the run slots are never closed");
            offsets.extend(
                self.publish_each(topic, partition, records, subjects, Expect::Any)
                    .await?,
            );
        }
        Ok(offsets)
    }

    /// Each record as its own publish: the first alone when the call has a condition (it
    /// carries it), then the rest pipelined, each expecting the sequence before it when
    /// the condition is on the partition's end.
    async fn publish_each(
        &self,
        topic: &str,
        partition: u32,
        records: Vec<Record>,
        subjects: Vec<String>,
        expect: Expect,
    ) -> Result<Vec<u64>> {
        let mut offsets = Vec::with_capacity(records.len());
        let mut pending = Vec::with_capacity(records.len());
        // A condition is checked on the first record: the rest go only once it held.
        let chained = !matches!(expect, Expect::Any);
        for (i, (record, subject)) in records.into_iter().zip(subjects).enumerate() {
            let mut headers = HeaderMap::new();
            if let Some(ts) = record.timestamp_ms {
                headers.insert(TIME_HEADER, ts.to_string().as_str());
            }
            match (&expect, i) {
                (_, 0) => expectation_headers(&mut headers, &expect),
                (Expect::End(end), i) => headers.insert(
                    EXPECTED_LAST_SEQUENCE,
                    (end + i as u64).to_string().as_str(),
                ),
                _ => {}
            }
            let message = PublishMessage::build()
                .payload(record.value)
                .headers(headers);
            let ack = self
                .js
                .send_publish(subject, message)
                .await
                .map_err(|e| publish_error(topic, partition, e))?;
            if i == 0 && chained {
                let ack = ack.await.map_err(|e| publish_error(topic, partition, e))?;
                offsets.push(ack.sequence - 1);
            } else {
                pending.push(ack);
            }
        }
        for ack in pending {
            let ack = ack.await.map_err(|e| publish_error(topic, partition, e))?;
            offsets.push(ack.sequence - 1);
        }
        Ok(offsets)
    }
}

/// Each record's run: the records in call order, a new run begun at a record whose
/// subject (its key) is already in the current one.
fn runs_by_key(subjects: &[String]) -> Vec<usize> {
    let mut run = 0;
    let mut current: HashSet<&str> = HashSet::new();
    subjects
        .iter()
        .map(|subject| {
            if !current.insert(subject.as_str()) {
                run += 1;
                current.clear();
                current.insert(subject.as_str());
            }
            run
        })
        .collect()
}

/// The server-side form of a call's condition, on its first message.
fn expectation_headers(headers: &mut HeaderMap, expect: &Expect) {
    match expect {
        Expect::Any => {}
        // The stream's last sequence is the partition's end offset.
        Expect::End(end) => headers.insert(EXPECTED_LAST_SEQUENCE, end.to_string().as_str()),
        // The key's subject's last sequence: 0 for none.
        Expect::KeyLast { offset, .. } => headers.insert(
            EXPECTED_LAST_SUBJECT_SEQUENCE,
            offset.map_or(0, |o| o + 1).to_string().as_str(),
        ),
    }
}

fn conflict(topic: &str, partition: u32, detail: &str) -> Error {
    Error::new(
        ErrorKind::Conflict,
        format!(
            "partition {partition} of topic \"{topic}\" is not where the append expected it ({detail}); nothing of the call was written"
        ),
    )
    .with_code("conflict")
}

fn api_error(topic: &str, partition: u32, error: &ApiError) -> Error {
    if error.err_code == JS_WRONG_LAST_SEQUENCE || error.description.contains("wrong last") {
        return conflict(topic, partition, &error.description);
    }
    let kind = match error.err_code {
        JS_TOO_MANY_BATCHES | JS_BATCH_INCOMPLETE => ErrorKind::Unavailable,
        JS_BATCH_TOO_LARGE => ErrorKind::TooLarge,
        _ if error.description.contains("maximum") && error.description.contains("size") => {
            ErrorKind::TooLarge
        }
        _ => ErrorKind::Failed,
    };
    let refused = Error::new(
        kind,
        format!(
            "the NATS server refused an append to partition {partition} of topic \"{topic}\": {} (error {})",
            error.description, error.err_code
        ),
    );
    if error.err_code == JS_ATOMIC_DISABLED {
        refused.with_code(ATOMIC_DISABLED_CODE)
    } else {
        refused
    }
}

fn publish_error(topic: &str, partition: u32, e: PublishError) -> Error {
    match e.kind() {
        PublishErrorKind::WrongLastSequence => conflict(topic, partition, &e.to_string()),
        PublishErrorKind::MaxPayloadExceeded => Error::new(
            ErrorKind::TooLarge,
            format!("a record for topic \"{topic}\" is too large: {e}"),
        ),
        // StreamNotFound is also how the client reports a 503 (no responders): a server
        // restarting, a leader being elected. The topic was declared, so its stream is
        // there or coming back.
        PublishErrorKind::TimedOut
        | PublishErrorKind::BrokenPipe
        | PublishErrorKind::StreamNotFound
        | PublishErrorKind::MaxAckPending => unavailable(
            format!(
                "no acknowledgement from the NATS server for partition {partition} of topic \"{topic}\" (the record may or may not be stored)"
            ),
            e,
        ),
        _ => Error::new(
            ErrorKind::Failed,
            format!("cannot append to partition {partition} of topic \"{topic}\": {e}"),
        ),
    }
}
