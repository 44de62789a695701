//! Sinks: the app's `[sinks.NAME]`, each delivering the events of a topic to a receiver
//! (a `weir_mesh::Sink`: a webhook, `weir_mesh_webhook`; a NATS subject or JetStream
//! stream, `weir_mesh_nats`; a Redis stream, `weir_mesh_redis`; a Kafka topic,
//! `weir_mesh_kafka`; an AMQP exchange, `weir_mesh_amqp`; an MQTT topic,
//! `weir_mesh_mqtt`), each key's events in offset order (different keys' at once, up to
//! `max_in_flight` per partition), as a consumer group
//! (`sink.NAME` unless set) on the partition consumer. An event is retried per the sink's
//! policy, then dead-lettered with why; the group's offset moves past a batch, with its
//! dead letters, in one transaction after every event of it was delivered or
//! dead-lettered (on a stop, past those up to the first event not done).
//!
//! **Architecture Invariant:** a sink commits an offset only past events that were
//! delivered (a 2xx) or whose dead letter is in the same transaction. A crash before the
//! commit delivers the batch again: at-least-once, with the CloudEvents `id` as the
//! receiver's idempotency key (`webhook-id`, `Nats-Msg-Id`, the `id` in the JSON).
//!
//! On a fleet each partition is a unit (`group/GROUP/TOPIC/PARTITION`, as pipelines').

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt as _;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use weir_cloudevents::{CloudEvent, ExtensionValue};
use weir_log::{Record, TopicSpec};
use weir_manifest::{SinkMode, SinkSpec};
use weir_mesh::{Delivery, Sink};
use weir_mesh_webhook::{Mode, Secret, WebhookSink};

use crate::codec::{decode_event, encode_event};
use crate::consumer::{PartitionConsumer, Progress, commit_until_done};
use crate::fleet::Units;
use crate::routing::{InputPosition, attribute_text, dead_letter, log_number, undecodable_event};
use crate::{Error, Result, SharedLog, StartFrom, telemetry};

use weir_breaker::{Breaker, Permit};

/// Events read per batch; the offset is committed after each.
const BATCH: usize = 64;
/// The longest pause before a failed partition starts again.
const MAX_STALL_BACKOFF: Duration = Duration::from_secs(10);
/// Bytes of dead letters committed in one transaction, at most (and one more letter).
const MAX_DEAD_LETTER_BYTES: usize = 1 << 20;
/// How long a commit waits for an unavailable log before the partition fails (and starts
/// again from its committed offset).
const COMMIT_PATIENCE: Duration = Duration::from_secs(30);
/// The dead letter's attribute naming the sink.
pub(crate) const DLQ_SINK: &str = "dlqsink";

/// A sink as `weir status` shows it.
#[derive(Debug, Clone)]
pub struct SinkStatus {
    pub name: String,
    pub topic: String,
    /// The receiver's URL without credentials or query.
    pub url: String,
    pub group: String,
    pub dead_letter: String,
    /// `running`, `retrying` (an event is waiting for its next attempt) or `stalled` (a
    /// partition failed and starts again after a pause).
    pub state: &'static str,
    /// The last failure, until an event is delivered again.
    pub error: Option<String>,
    /// Events of the topic not yet committed by the sink's group, in all partitions.
    pub lag: u64,
    pub delivered: u64,
    /// Failed attempts that were tried again.
    pub retries: u64,
    /// Events in the dead-letter topic, counted once they are committed there (a re-drive
    /// that follows the count finds them).
    pub dead_lettered: u64,
    /// The circuit breaker: `closed`, `open` (deliveries pause), `half_open` (a probe is
    /// out), or `off`.
    pub circuit: &'static str,
}

struct Running {
    name: String,
    spec: SinkSpec,
    stop: CancellationToken,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    delivered: AtomicU64,
    retries: AtomicU64,
    dead_lettered: AtomicU64,
    /// Events waiting to be tried again (or for the circuit), and partitions stalled.
    retrying: AtomicU64,
    stalled: AtomicU64,
    error: Mutex<Option<String>>,
    /// None when `circuit_failures = 0`.
    breaker: Option<Breaker>,
}

impl Running {
    fn set_error(&self, error: Option<String>) {
        *self.error.lock().unwrap_or_else(PoisonError::into_inner) = error;
    }

    /// The circuit moved to `to` (`open`, `half_open`, `closed`).
    fn transition(&self, to: &'static str) {
        telemetry::sink_circuit_transitions(&self.name, to).increment(1);
        if to == "closed" {
            tracing::info!(sink = %self.name, "circuit closed: the receiver answers again");
        }
    }
}

/// The node's running sinks.
#[derive(Default)]
pub(crate) struct Sinks {
    running: Mutex<BTreeMap<String, Arc<Running>>>,
}

/// Reads the sink's signing secrets from the node's environment and files.
fn secrets(name: &str, spec: &SinkSpec) -> Result<Vec<Secret>> {
    spec.secrets
        .iter()
        .map(|source| {
            crate::functions::secret_text(source)
                .and_then(|t| Secret::parse(&t))
                .map_err(|reason| Error::Task(format!("sink {name:?}'s secret: {reason}")))
        })
        .collect()
}

/// The sink's receiver with its secrets read: what a start needs from outside the
/// manifest (a deploy checks it before it changes anything).
pub(crate) fn open(name: &str, spec: &SinkSpec) -> Result<Arc<dyn Sink>> {
    let timeout = Duration::from_millis(spec.timeout_ms);
    let to = spec.to.as_deref().unwrap_or_default();
    let broker = |e: weir_mesh::Error| Error::Task(format!("sink {name:?}: {e}"));
    match spec.url.split("://").next() {
        Some("nats" | "jetstream") => {
            return Ok(Arc::new(
                weir_mesh_nats::NatsSink::new(&spec.url, to, timeout).map_err(broker)?,
            ));
        }
        Some("redis") => {
            return Ok(Arc::new(
                weir_mesh_redis::RedisSink::new(&spec.url, to, timeout).map_err(broker)?,
            ));
        }
        Some("kafka") => {
            return Ok(Arc::new(
                weir_mesh_kafka::KafkaSink::new(&spec.url, to, timeout).map_err(broker)?,
            ));
        }
        Some("amqp") => {
            return Ok(Arc::new(
                weir_mesh_amqp::AmqpSink::new(&spec.url, to, timeout).map_err(broker)?,
            ));
        }
        Some("mqtt" | "tcp") => {
            return Ok(Arc::new(
                weir_mesh_mqtt::MqttSink::new("sink", name, &spec.url, to, timeout)
                    .map_err(broker)?,
            ));
        }
        _ => {}
    }
    Ok(Arc::new(webhook(name, spec)?))
}

fn webhook(name: &str, spec: &SinkSpec) -> Result<WebhookSink> {
    WebhookSink::new(
        &spec.url,
        secrets(name, spec)?,
        match spec.mode {
            SinkMode::Structured => Mode::Structured,
            SinkMode::Binary => Mode::Binary,
        },
        Duration::from_millis(spec.timeout_ms),
    )
    .map_err(|e| Error::Task(format!("sink {name:?}: {e}")))
}

impl Sinks {
    /// Starts sink `name`: one task per partition of its topic. Its secrets are read now;
    /// one that is missing or malformed stops the start with an error naming it.
    pub(crate) async fn start(
        &self,
        name: &str,
        spec: &SinkSpec,
        log: &SharedLog,
        units: &Units,
        tasks: &TaskTracker,
        cancel: &CancellationToken,
    ) -> Result<()> {
        let webhook = open(name, spec)?;
        if log.topic(&spec.dead_letter).await?.is_none() {
            log.create_topic(&spec.dead_letter, &TopicSpec::default())
                .await?;
            tracing::info!(sink = name, topic = %spec.dead_letter, "dead-letter topic created");
        }
        let info = crate::consumer::topic_info(log, &spec.topic).await?;
        let running = Arc::new(Running {
            name: name.to_owned(),
            spec: spec.clone(),
            stop: cancel.child_token(),
            tasks: Mutex::new(Vec::new()),
            delivered: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            dead_lettered: AtomicU64::new(0),
            retrying: AtomicU64::new(0),
            stalled: AtomicU64::new(0),
            error: Mutex::new(None),
            breaker: (spec.circuit_failures > 0).then(|| {
                let probe_timeout = Duration::from_millis(spec.timeout_ms) + Duration::from_secs(1);
                Breaker::new(spec.circuit_failures, probe_timeout)
            }),
        });
        let names: Arc<[String]> = (0..info.partitions)
            .map(|p| format!("group/{}/{}/{p}", spec.group, spec.topic))
            .collect();
        for partition in 0..info.partitions {
            let (running2, log, units, names, webhook) = (
                running.clone(),
                log.clone(),
                units.clone(),
                names.clone(),
                webhook.clone(),
            );
            let task = tasks.spawn(async move {
                drive_partition(&running2, &*webhook, &log, &units, &names, partition).await
            });
            running
                .tasks
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(task);
        }
        tracing::info!(sink = name, topic = %spec.topic, url = %weir_mesh::display_url(&spec.url), "sink started");
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.to_owned(), running);
        Ok(())
    }

    /// Stops sink `name` and waits for its partitions: each commits up to its first event
    /// not yet delivered or dead-lettered.
    pub(crate) async fn stop(&self, name: &str) {
        let running = self
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(name);
        let Some(running) = running else { return };
        running.stop.cancel();
        let tasks =
            std::mem::take(&mut *running.tasks.lock().unwrap_or_else(PoisonError::into_inner));
        for task in tasks {
            let _ = task.await;
        }
        tracing::info!(sink = name, "sink stopped");
    }

    pub(crate) async fn status(&self, log: &SharedLog) -> Vec<SinkStatus> {
        let running: Vec<Arc<Running>> = self
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        let mut statuses = Vec::with_capacity(running.len());
        for r in running {
            let spec = &r.spec;
            let mut lag = 0;
            if let Ok(info) = crate::consumer::topic_info(log, &spec.topic).await {
                for p in 0..info.partitions {
                    let (Ok(offsets), Ok(committed)) = (
                        log.offsets(&spec.topic, p).await,
                        log.committed_offset(&spec.group, &spec.topic, p).await,
                    ) else {
                        continue;
                    };
                    let from = committed.unwrap_or(offsets.start).max(offsets.start);
                    lag += offsets.end.saturating_sub(from);
                }
            }
            statuses.push(SinkStatus {
                name: r.name.clone(),
                topic: spec.topic.clone(),
                url: weir_mesh::display_url(&spec.url),
                group: spec.group.clone(),
                dead_letter: spec.dead_letter.clone(),
                state: if r.stalled.load(Relaxed) > 0 {
                    "stalled"
                } else if r.retrying.load(Relaxed) > 0 {
                    "retrying"
                } else {
                    "running"
                },
                error: r
                    .error
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone(),
                lag,
                delivered: r.delivered.load(Relaxed),
                retries: r.retries.load(Relaxed),
                dead_lettered: r.dead_lettered.load(Relaxed),
                circuit: r.breaker.as_ref().map_or("off", Breaker::state),
            });
        }
        statuses
    }
}

/// Runs one partition while this node owns it, until the sink stops; a failure (of the
/// log) starts it again from the committed offset after a pause.
async fn drive_partition(
    running: &Running,
    webhook: &dyn Sink,
    log: &SharedLog,
    units: &Units,
    names: &[String],
    partition: u32,
) {
    let mut wait = Duration::from_millis(100);
    loop {
        let Some(lease) = units
            .acquire(names, partition as usize, &running.stop)
            .await
        else {
            return;
        };
        let (done, _watch) = lease.until_released(&running.stop);
        match run_partition(running, webhook, log, partition, &done).await {
            Ok(()) if running.stop.is_cancelled() => return,
            Ok(()) => wait = Duration::from_millis(100),
            Err(e) if units.is_fleet() && e.class() == crate::ErrorClass::Fenced => {
                tracing::info!(sink = %running.name, partition, "partition taken by another node of the fleet; this one stopped");
                units.after_fenced(&running.stop).await;
            }
            Err(e) => {
                tracing::error!(sink = %running.name, partition, error = %e, "sink partition failed; starting it again from its committed offset");
                running.stalled.fetch_add(1, Relaxed);
                running.set_error(Some(e.to_string()));
                tokio::select! {
                    _ = running.stop.cancelled() => {}
                    _ = tokio::time::sleep(wait) => {}
                }
                running.stalled.fetch_sub(1, Relaxed);
                if running.stop.is_cancelled() {
                    return;
                }
                wait = (wait * 2).min(MAX_STALL_BACKOFF);
            }
        }
    }
}

/// What became of one event.
enum Outcome {
    Delivered,
    /// Dead-lettered: the reason word, the last error, attempts made.
    Dead(&'static str, String, u32),
    /// The sink stopped before the event was delivered.
    Stopped,
}

async fn run_partition(
    running: &Running,
    webhook: &dyn Sink,
    log: &SharedLog,
    partition: u32,
    done: &CancellationToken,
) -> Result<()> {
    let spec = &running.spec;
    let from = match spec.start {
        weir_manifest::StartPosition::Earliest => StartFrom::Earliest,
        weir_manifest::StartPosition::Latest => StartFrom::Latest,
    };
    let mut consumer = PartitionConsumer::open(
        log,
        &spec.topic,
        partition,
        format!("sink {:?}", running.name),
        Progress::Transactions {
            group: spec.group.clone(),
            producer: format!("sink.{}.{}.{partition}", running.name, spec.topic),
        },
        from,
        done,
    )
    .await?;
    let txns = consumer.transactions()?;
    let delivered = telemetry::sink_events(&running.name, "delivered");
    let dead_lettered = telemetry::sink_events(&running.name, "dead_lettered");
    let in_flight = spec.max_in_flight.max(1) as usize;
    loop {
        let Some(records) = consumer
            .next_batch(BATCH, done, std::future::pending())
            .await?
        else {
            return Ok(());
        };
        let Some(last) = records.last().map(|r| r.offset) else {
            continue;
        };
        // Each record's outcome by its place in the batch: undecodable ones now, the
        // others from their lane. A lane holds one key's events in offset order (a
        // record without a key is a lane of its own); with one in flight, one lane holds
        // them all, in offset order whatever their keys.
        let mut outcomes: Vec<Option<(Outcome, CloudEvent)>> = Vec::new();
        let mut offsets = Vec::with_capacity(records.len());
        let mut lanes: Vec<Vec<(usize, CloudEvent)>> = Vec::new();
        let mut lane_of: HashMap<Bytes, usize> = HashMap::new();
        for (i, record) in records.into_iter().enumerate() {
            let offset = record.offset;
            offsets.push(offset);
            outcomes.push(None);
            let key = record.key.clone();
            match decode_event(&spec.topic, record.clone()) {
                Ok(logged) => {
                    let lane = match key {
                        _ if in_flight == 1 => {
                            if lanes.is_empty() {
                                lanes.push(Vec::new());
                            }
                            0
                        }
                        Some(key) => *lane_of.entry(key).or_insert_with(|| {
                            lanes.push(Vec::new());
                            lanes.len() - 1
                        }),
                        None => {
                            lanes.push(Vec::new());
                            lanes.len() - 1
                        }
                    };
                    lanes[lane].push((i, logged.event));
                }
                Err(e) => {
                    let pos = InputPosition {
                        pipeline: &running.name,
                        topic: &spec.topic,
                        partition,
                        offset,
                    };
                    let event = undecodable_event(pos, record.value);
                    outcomes[i] = Some((Outcome::Dead("undecodable", e.to_string(), 0), event));
                }
            }
        }
        let delivering = lanes
            .into_iter()
            .map(|lane| deliver_lane(running, webhook, lane, &delivered, done));
        let mut lanes = futures::stream::iter(delivering).buffer_unordered(in_flight);
        while let Some(lane) = lanes.next().await {
            for (i, outcome, event) in lane {
                outcomes[i] = Some((outcome, event));
            }
        }
        drop(lanes);
        // What is committed: the events up to the first one not done (stopped, or never
        // tried because the sink stopped), each delivered or dead-lettered. Events after
        // it that were delivered go again after the restart (at-least-once).
        let mut dead: Vec<Record> = Vec::new();
        let mut dead_bytes = 0;
        // Dead letters not yet committed: counted once they are.
        let mut uncounted = 0;
        let count = |n: u64| {
            dead_lettered.increment(n);
            running.dead_lettered.fetch_add(n, Relaxed);
        };
        let mut next = None;
        let mut stopped = false;
        for (outcome, offset) in outcomes.into_iter().zip(offsets) {
            let pos = InputPosition {
                pipeline: &running.name,
                topic: &spec.topic,
                partition,
                offset,
            };
            match outcome {
                None | Some((Outcome::Stopped, _)) => {
                    stopped = true;
                    break;
                }
                // Counted as it was delivered.
                Some((Outcome::Delivered, _)) => {}
                Some((Outcome::Dead(reason, error, attempts), mut event)) => {
                    if reason != "undecodable" {
                        tracing::warn!(sink = %running.name, id = %event.id, reason, %error, "event dead-lettered");
                        uncounted += 1;
                    }
                    mark_dead(&mut event, running, pos, reason, &error, attempts);
                    let record = encode_event(&event);
                    dead_bytes += record.value.len();
                    dead.push(record);
                }
            }
            next = Some(offset + 1);
            // Dead letters go in transactions the log takes (it limits a call's bytes).
            if dead_bytes >= MAX_DEAD_LETTER_BYTES && offset < last {
                commit(
                    log,
                    &txns,
                    &spec.dead_letter,
                    std::mem::take(&mut dead),
                    offset + 1,
                )
                .await?;
                count(std::mem::take(&mut uncounted));
                dead_bytes = 0;
                next = None;
            }
        }
        if let Some(next) = next {
            // Committed even when stopping: what was delivered is not sent again.
            commit(log, &txns, &spec.dead_letter, dead, next).await?;
            count(uncounted);
        }
        if stopped {
            return Ok(());
        }
    }
}

/// Delivers one lane's events (one key's, in offset order) one after another, counting
/// each delivered as it is (one delivered again after a stop counts again); what became
/// of each, with its place in the batch, up to the first that the sink's stop left
/// undelivered.
async fn deliver_lane(
    running: &Running,
    webhook: &dyn Sink,
    lane: Vec<(usize, CloudEvent)>,
    delivered: &metrics::Counter,
    done: &CancellationToken,
) -> Vec<(usize, Outcome, CloudEvent)> {
    let mut outcomes = Vec::with_capacity(lane.len());
    for (i, event) in lane {
        let outcome = if done.is_cancelled() {
            Outcome::Stopped
        } else {
            deliver(running, webhook, &event, done).await
        };
        if matches!(outcome, Outcome::Delivered) {
            delivered.increment(1);
            running.delivered.fetch_add(1, Relaxed);
        }
        let stopped = matches!(outcome, Outcome::Stopped);
        outcomes.push((i, outcome, event));
        if stopped {
            break;
        }
    }
    outcomes
}

/// Commits the group's offset `next` with `dead` letters, trying again while the log is
/// unavailable, for at most [`COMMIT_PATIENCE`] (a stop waits for it).
async fn commit(
    log: &SharedLog,
    txns: &crate::consumer::GroupTransactions,
    dead_letter: &str,
    dead: Vec<Record>,
    next: u64,
) -> Result<()> {
    let appends = if dead.is_empty() {
        Vec::new()
    } else {
        vec![(dead_letter.to_owned(), dead)]
    };
    let txn = txns.transaction(appends, next);
    let never = CancellationToken::new();
    tokio::time::timeout(COMMIT_PATIENCE, commit_until_done(log, txn, &never))
        .await
        .map_err(|_| {
            Error::Task(format!(
                "the log did not take the sink's commit within {COMMIT_PATIENCE:?}"
            ))
        })?
}

/// Delivers one event, trying again per the retry policy and waiting while the circuit
/// is open; `Stopped` if the sink stops while it waits.
async fn deliver(
    running: &Running,
    webhook: &dyn Sink,
    event: &CloudEvent,
    done: &CancellationToken,
) -> Outcome {
    let mut waiting = Waiting::new(running);
    let retry = &running.spec.retry;
    // Attempts made, and failed ones charged to the event (made while the circuit was
    // closed, and not the one that opened it).
    let (mut made, mut charged) = (0, 0);
    loop {
        let probe = loop {
            match running
                .breaker
                .as_ref()
                .map_or(Permit::Attempt, Breaker::permit)
            {
                Permit::Attempt => break false,
                Permit::Probe => {
                    running.transition("half_open");
                    break true;
                }
                Permit::Wait(wait) => {
                    waiting.start();
                    tokio::select! {
                        _ = done.cancelled() => return Outcome::Stopped,
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            }
        };
        made += 1;
        let answer = tokio::select! {
            _ = done.cancelled() => return Outcome::Stopped,
            answer = webhook.deliver(event) => answer,
        };
        let (error, after) = match answer {
            // A refusal is an answer too: the receiver is up.
            Delivery::Delivered | Delivery::Refused { .. } => {
                if running.breaker.as_ref().is_some_and(Breaker::succeeded) {
                    running.transition("closed");
                }
                return match answer {
                    Delivery::Refused { error } => {
                        running.set_error(Some(error.clone()));
                        Outcome::Dead("refused", error, made)
                    }
                    _ => {
                        running.set_error(None);
                        Outcome::Delivered
                    }
                };
            }
            Delivery::Retry { error, after } => (error, after),
        };
        running.set_error(Some(error.clone()));
        let (charge, opened) = match &running.breaker {
            Some(b) => b.failed(probe),
            None => (true, false),
        };
        // A failed probe opens the circuit again (unless another attempt closed it
        // meanwhile).
        let reopened = probe
            && running
                .breaker
                .as_ref()
                .is_some_and(|b| b.state() == "open");
        if opened || reopened {
            running.transition("open");
        }
        if opened {
            tracing::warn!(sink = %running.name, %error, "circuit opened: deliveries pause, then one probe goes");
        }
        waiting.start();
        if !charge {
            // The receiver is down: the open circuit paces the next attempt.
            continue;
        }
        charged += 1;
        if charged >= retry.max_attempts {
            return Outcome::Dead("retries_exhausted", error, made);
        }
        running.retries.fetch_add(1, Relaxed);
        telemetry::sink_retries(&running.name).increment(1);
        // A receiver's Retry-After is honoured up to the policy's longest wait.
        let wait = match after {
            Some(after) => after.min(Duration::from_millis(retry.max_backoff_ms)),
            None => crate::pipeline::jittered_backoff(retry, charged),
        };
        tokio::select! {
            _ = done.cancelled() => return Outcome::Stopped,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Counts an event in the sink's `retrying` while it waits to go again.
struct Waiting<'a> {
    running: &'a Running,
    counted: bool,
}

impl<'a> Waiting<'a> {
    fn new(running: &'a Running) -> Waiting<'a> {
        Waiting {
            running,
            counted: false,
        }
    }

    fn start(&mut self) {
        if !self.counted {
            self.counted = true;
            self.running.retrying.fetch_add(1, Relaxed);
        }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.counted {
            self.running.retrying.fetch_sub(1, Relaxed);
        }
    }
}

/// The `dlq*` attributes of a sink's dead letter.
fn mark_dead(
    event: &mut CloudEvent,
    running: &Running,
    pos: InputPosition<'_>,
    reason: &str,
    error: &str,
    attempts: u32,
) {
    use dead_letter::*;
    let ext = &mut event.extensions;
    let string = |s: &str| ExtensionValue::String(s.to_owned());
    ext.insert(DLQ_SINK.into(), string(&running.name));
    ext.insert(REASON.into(), string(reason));
    ext.insert(ERROR.into(), string(&attribute_text(error, 2000)));
    ext.insert(ATTEMPTS.into(), log_number(attempts.into()));
    ext.insert(TOPIC.into(), string(pos.topic));
    ext.insert(PARTITION.into(), log_number(pos.partition.into()));
    ext.insert(OFFSET.into(), log_number(pos.offset));
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    ext.insert(TIME.into(), string(&now));
}
