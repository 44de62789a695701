//! Sources: the app's `[sources.NAME]`, each a task that takes messages from another
//! broker (`weir_mesh::Source`), appends them to its topic as CloudEvents and only then
//! acknowledges them to the broker. Messages that cannot become events go to the source's
//! dead-letter topic with the reason, and are acknowledged once that is durable.
//!
//! **Architecture Invariant:** no broker acknowledgement precedes the log's
//! acknowledgement of what the message became (its event or its dead letter). A source
//! stopped mid-batch (shutdown, a deploy, the fleet moving it) appends and acknowledges the
//! batch it holds, unless the log refuses it, in which case it acknowledges nothing and the
//! broker delivers the batch again.
//!
//! **Positional sources** (Redis Streams, JetStream, Kafka, and schedules, whose messages
//! are ticks) are not acknowledged: each batch's events, dead letters and the source's
//! positions after it (a record of the topic `NAME.positions`) are one log transaction,
//! committed with the generation the source claimed for group `source.NAME` when it took
//! over, and a source opens again from the positions of the last committed record. On an
//! exactly-once log (the embedded one) nothing is stored twice or skipped across a crash;
//! on an at-least-once log the positions go in a second call after the events, so a crash
//! between repeats, never loses. A node that lost the source to another (a newer claim)
//! has its commit refused and stores nothing.
//!
//! On a fleet each source is one unit (`source/NAME`): one member runs it at a time.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use weir_log::{GroupCommit, Record, TopicSpec, Transaction};
use weir_manifest::{
    MissedTicks, PipelineSpec, ScheduleSpec, SourceData, SourceSpec, StartPosition,
};
use weir_mesh::{DataMode, EventTemplate, KeyTemplate, Message, Source, SourceOptions, Start};

use crate::codec::encode_event;
use crate::fleet::Units;
use crate::schemas::Schemas;
use crate::{Error, Result, SharedLog, telemetry};

/// Messages taken from a broker in one batch: one append, then one acknowledgement.
const BATCH: usize = 256;
/// The most bytes of events in one append: the embedded log takes 8 MiB per partition
/// in one call, NATS and Kafka less by default.
const MAX_APPEND_BYTES: usize = 1 << 20;
/// The largest record the embedded log takes by default (`max_record_bytes`): an event
/// over it is dead-lettered (without its payload), not retried forever.
const MAX_RECORD_BYTES: usize = 1 << 20;
/// The longest pause after a failure (the broker or the log) before trying again.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// A source as `weir status` shows it.
#[derive(Debug, Clone)]
pub struct SourceStatus {
    pub name: String,
    /// The kind, by the URL's scheme (`mqtt`).
    pub kind: String,
    /// The broker's URL without credentials or query.
    pub url: String,
    pub subscribe: Vec<String>,
    pub topic: String,
    pub dead_letter: String,
    /// `running` (connected), `connecting`, `stalled` (the log refuses appends: nothing is
    /// acknowledged meanwhile), or `elsewhere` (another member of the fleet runs it).
    pub state: &'static str,
    /// The last failure, until the source runs again.
    pub error: Option<String>,
    /// On a fleet, the member that runs it.
    pub owner: Option<String>,
    /// Messages received from the broker by this node (redeliveries included).
    pub received: u64,
    /// Events appended to the topic.
    pub appended: u64,
    /// Messages appended to the dead-letter topic.
    pub dead_lettered: u64,
    /// Messages acknowledged to the broker (positional sources: whose position is
    /// committed).
    pub acknowledged: u64,
    /// A positional source's last committed position in each lane (`lane=after`, by
    /// lane), as this node committed or resumed it.
    pub position: Option<String>,
}

/// One running source: its spec, its task and what it counted.
struct Running {
    name: String,
    /// Its unit on the fleet: `source/NAME`, `schedule/NAME`.
    unit: String,
    /// A schedule's ticks, or (none) a broker's messages as `spec.url` says.
    schedule: Option<(weir_mesh::schedule::ScheduleOptions, String)>,
    spec: SourceSpec,
    stop: CancellationToken,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    counts: Counts,
    /// The node's schemas: an event that breaks its type's is dead-lettered.
    schemas: Arc<Schemas>,
}

#[derive(Default)]
struct Counts {
    received: AtomicU64,
    appended: AtomicU64,
    dead_lettered: AtomicU64,
    acknowledged: AtomicU64,
    /// Whether this node runs the source now (it holds the fleet's unit).
    holding: AtomicBool,
    connected: AtomicBool,
    stalled: AtomicBool,
    error: Mutex<Option<String>>,
    position: Mutex<Option<String>>,
}

impl Counts {
    fn set_error(&self, error: Option<String>) {
        *self.error.lock().unwrap_or_else(PoisonError::into_inner) = error;
    }

    fn set_position(&self, positions: &BTreeMap<String, String>) {
        let shown = positions
            .iter()
            .map(|(lane, after)| format!("{lane}={after}"))
            .collect::<Vec<_>>()
            .join(", ");
        *self.position.lock().unwrap_or_else(PoisonError::into_inner) = Some(shown);
    }
}

/// The node's running sources.
pub(crate) struct Sources {
    running: Mutex<BTreeMap<String, Arc<Running>>>,
    /// What each source's events are checked against before they are appended.
    schemas: Arc<Schemas>,
}

/// The unit of the fleet a source is.
fn unit(name: &str) -> String {
    format!("source/{name}")
}

/// Whether the URL's kind is positional (see the module docs).
fn positional(url: &str) -> bool {
    matches!(
        url.split("://").next(),
        Some("redis" | "jetstream" | "kafka")
    )
}

/// The consumer group whose generation fences a positional source's commits.
fn group(name: &str) -> String {
    format!("source.{name}")
}

/// The key of the positions records.
const POSITION_KEY: &[u8] = b"position";

impl Sources {
    pub(crate) fn new(schemas: Arc<Schemas>) -> Sources {
        Sources {
            running: Mutex::default(),
            schemas,
        }
    }

    /// Starts source `name`, creating its dead-letter topic (one partition) if the app does
    /// not declare it.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn start(
        &self,
        app: &str,
        name: &str,
        spec: &SourceSpec,
        unsubscribe: Vec<String>,
        log: &SharedLog,
        units: &Units,
        tasks: &TaskTracker,
        cancel: &CancellationToken,
    ) -> Result<()> {
        if log.topic(&spec.dead_letter).await?.is_none() {
            log.create_topic(&spec.dead_letter, &TopicSpec::default())
                .await?;
            tracing::info!(source = name, topic = %spec.dead_letter, "dead-letter topic created");
        }
        if positional(&spec.url) {
            create_positions(name, log).await?;
        }
        let running = Arc::new(Running {
            name: name.to_owned(),
            unit: unit(name),
            schedule: None,
            spec: spec.clone(),
            stop: cancel.child_token(),
            task: Mutex::new(None),
            counts: Counts::default(),
            schemas: self.schemas.clone(),
        });
        let options = SourceOptions {
            name: name.to_owned(),
            app: app.to_owned(),
            url: spec.url.clone(),
            subscribe: spec.subscribe.clone(),
            unsubscribe,
            resume: BTreeMap::new(),
            start: match spec.start.unwrap_or_default() {
                StartPosition::Earliest => Start::Earliest,
                StartPosition::Latest => Start::Latest,
            },
        };
        self.launch(running, options, log, units, tasks);
        tracing::info!(source = name, url = %weir_mesh::display_url(&spec.url), topic = %spec.topic, "source started");
        Ok(())
    }

    /// Runs `running` in a task of `tasks` and keeps it by name.
    fn launch(
        &self,
        running: Arc<Running>,
        options: SourceOptions,
        log: &SharedLog,
        units: &Units,
        tasks: &TaskTracker,
    ) {
        let task = tasks.spawn(drive(running.clone(), options, log.clone(), units.clone()));
        *running.task.lock().unwrap_or_else(PoisonError::into_inner) = Some(task);
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(running.name.clone(), running);
    }

    /// Starts schedule `name`: a positional source of ticks, one per occurrence, committed
    /// with the tick's position, so each fires once.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn start_schedule(
        &self,
        app: &str,
        name: &str,
        schedule: &ScheduleSpec,
        log: &SharedLog,
        units: &Units,
        tasks: &TaskTracker,
        cancel: &CancellationToken,
    ) -> Result<()> {
        // The manifest's validation parsed both.
        let parsed =
            weir_mesh::schedule::Schedule::parse(&schedule.cron, schedule.timezone.as_deref())
                .map_err(|e| {
                    Error::from(weir_log::Error::invalid(format!("schedule {name:?}: {e}")))
                })?;
        create_positions(name, log).await?;
        let options = weir_mesh::schedule::ScheduleOptions {
            name: name.to_owned(),
            schedule: parsed,
            missed: match schedule.missed {
                MissedTicks::Skip => weir_mesh::schedule::Missed::Skip,
                MissedTicks::Once => weir_mesh::schedule::Missed::Once,
            },
            data: schedule.data.clone(),
        };
        let zone = schedule.timezone.as_deref().unwrap_or("UTC");
        let shown = format!("{} ({zone})", schedule.cron);
        // Ticks are events like a source's: `source` /schedules/NAME, keyed by the name.
        let spec = SourceSpec {
            url: format!("cron:{}", schedule.cron),
            subscribe: Vec::new(),
            topic: schedule.topic.clone(),
            ty: schedule.ty.clone(),
            source: Some(format!("/schedules/{name}")),
            key: None,
            data: SourceData::Json,
            dead_letter: PipelineSpec::default_dead_letter(name),
            max_payload_bytes: SourceSpec::DEFAULT_MAX_PAYLOAD_BYTES,
            start: None,
        };
        let running = Arc::new(Running {
            name: name.to_owned(),
            unit: format!("schedule/{name}"),
            schedule: Some((options, shown)),
            spec,
            stop: cancel.child_token(),
            task: Mutex::new(None),
            counts: Counts::default(),
            schemas: self.schemas.clone(),
        });
        let options = SourceOptions {
            name: name.to_owned(),
            app: app.to_owned(),
            ..SourceOptions::default()
        };
        self.launch(running, options, log, units, tasks);
        tracing::info!(schedule = name, cron = %schedule.cron, topic = %schedule.topic, "schedule started");
        Ok(())
    }

    /// Stops source `name` and waits until it has appended and acknowledged the batch it
    /// held (or given it back to its broker).
    pub(crate) async fn stop(&self, name: &str) {
        let running = self
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(name);
        let Some(running) = running else { return };
        running.stop.cancel();
        let task = running
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(task) = task {
            let _ = task.await;
        }
        tracing::info!(source = name, "source stopped");
    }

    pub(crate) fn status(&self, units: &Units) -> Vec<SourceStatus> {
        let running: Vec<Arc<Running>> = self
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        running
            .iter()
            .map(|r| {
                let c = &r.counts;
                let owner = units
                    .owners(std::slice::from_ref(&r.unit))
                    .into_values()
                    .next();
                let state = if units.is_fleet() && !c.holding.load(Relaxed) {
                    "elsewhere"
                } else if c.stalled.load(Relaxed) {
                    "stalled"
                } else if c.connected.load(Relaxed) {
                    "running"
                } else {
                    "connecting"
                };
                SourceStatus {
                    name: r.name.clone(),
                    kind: match r.schedule {
                        Some(_) => "cron".to_owned(),
                        None => r.spec.url.split("://").next().unwrap_or("").to_owned(),
                    },
                    url: match &r.schedule {
                        Some((_, shown)) => shown.clone(),
                        None => weir_mesh::display_url(&r.spec.url),
                    },
                    subscribe: r.spec.subscribe.clone(),
                    topic: r.spec.topic.clone(),
                    dead_letter: r.spec.dead_letter.clone(),
                    state,
                    error: c
                        .error
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .clone(),
                    owner,
                    received: c.received.load(Relaxed),
                    appended: c.appended.load(Relaxed),
                    dead_lettered: c.dead_lettered.load(Relaxed),
                    acknowledged: c.acknowledged.load(Relaxed),
                    position: c
                        .position
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .clone(),
                }
            })
            .collect()
    }
}

/// Creates the topic a positional source or a schedule keeps its positions in: one
/// partition keeping the last record (compaction leaves the newest).
async fn create_positions(name: &str, log: &SharedLog) -> Result<()> {
    let positions = SourceSpec::positions_topic(name);
    if log.topic(&positions).await?.is_none() {
        let topic = TopicSpec {
            compaction: true,
            ..TopicSpec::default()
        };
        log.create_topic(&positions, &topic).await?;
        tracing::info!(source = name, topic = %positions, "positions topic created");
    }
    Ok(())
}

/// Opens the source of the URL's kind.
fn open(options: &SourceOptions) -> std::result::Result<Box<dyn Source>, weir_mesh::Error> {
    match options.url.split("://").next() {
        Some("mqtt" | "tcp") => Ok(Box::new(weir_mesh_mqtt::MqttSource::open(options)?)),
        Some("redis" | "rediss") => Ok(Box::new(weir_mesh_redis::RedisSource::open(options)?)),
        Some("nats" | "jetstream") => Ok(Box::new(weir_mesh_nats::NatsSource::open(options)?)),
        Some("kafka") => Ok(Box::new(weir_mesh_kafka::KafkaSource::open(options)?)),
        Some("amqp" | "amqps") => Ok(Box::new(weir_mesh_amqp::AmqpSource::open(options)?)),
        _ => Err(weir_mesh::Error::config(format!(
            "{:?}: no source kind serves this URL; weir takes mqtt://, amqp://, redis://, \
             nats://, jetstream:// and kafka:// sources",
            weir_mesh::display_url(&options.url)
        ))),
    }
}

fn template(spec: &SourceSpec) -> EventTemplate {
    EventTemplate {
        ty: spec.ty.clone(),
        source: spec
            .source
            .clone()
            .unwrap_or_else(|| weir_mesh::display_url(&spec.url)),
        // The manifest's validation parsed it.
        key: spec
            .key
            .as_deref()
            .and_then(|k| KeyTemplate::parse(k).ok())
            .unwrap_or_else(KeyTemplate::subject),
        data: match spec.data {
            SourceData::Json => DataMode::Json,
            SourceData::Text => DataMode::Text,
            SourceData::Binary => DataMode::Binary,
        },
        max_payload_bytes: spec.max_payload_bytes as usize,
    }
}

/// Runs a source while this node holds its unit, until it is stopped.
async fn drive(running: Arc<Running>, options: SourceOptions, log: SharedLog, units: Units) {
    let names = [running.unit.clone()];
    let template = template(&running.spec);
    let counts = &running.counts;
    let mut wait = Duration::from_millis(100);
    loop {
        let Some(lease) = units.acquire(&names, 0, &running.stop).await else {
            return;
        };
        counts.holding.store(true, Relaxed);
        // Stops taking messages when the source is stopped or the fleet moves it.
        let (done, _watch) = lease.until_released(&running.stop);
        let mut options = options.clone();
        let mut positions = None;
        if running.schedule.is_some() || positional(&options.url) {
            match resume(&running, &log).await {
                Ok(resumed) => {
                    options.resume = resumed.current.clone();
                    if !resumed.current.is_empty() {
                        counts.set_position(&resumed.current);
                    }
                    positions = Some(resumed);
                }
                Err(e) => {
                    tracing::error!(source = %running.name, error = %e, "source's positions cannot be read; trying again");
                    counts.set_error(Some(format!("reading the stored positions: {e}")));
                    counts.holding.store(false, Relaxed);
                    drop(lease);
                    tokio::select! {
                        _ = running.stop.cancelled() => return,
                        _ = tokio::time::sleep(wait) => {}
                    }
                    wait = (wait * 2).min(MAX_BACKOFF);
                    continue;
                }
            }
        }
        let opened = match &running.schedule {
            Some((schedule, _)) => {
                let clock: weir_mesh::schedule::Clock = Arc::new(jiff::Timestamp::now);
                weir_mesh::schedule::ScheduleSource::open(schedule.clone(), &options.resume, clock)
                    .map(|s| Box::new(s) as Box<dyn Source>)
            }
            None => open(&options),
        };
        match opened {
            Ok(mut source) => {
                let ran = match positions.as_mut() {
                    Some(positions) => {
                        run_positional(&running, &template, &mut *source, &log, &done, positions)
                            .await
                    }
                    None => run(&running, &template, &mut *source, &log, &done).await,
                };
                source.close().await;
                counts.connected.store(false, Relaxed);
                match ran {
                    Ok(()) => wait = Duration::from_millis(100),
                    Err(e) => {
                        tracing::warn!(source = %running.name, error = %e, "source stopped; opening it again");
                        counts.set_error(Some(e));
                    }
                }
            }
            Err(e) => {
                tracing::error!(source = %running.name, error = %e, "source cannot open");
                counts.set_error(Some(e.to_string()));
            }
        }
        counts.holding.store(false, Relaxed);
        drop(lease);
        tokio::select! {
            _ = running.stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        wait = (wait * 2).min(MAX_BACKOFF);
    }
}

/// A positional source's place: the generation it claimed and its positions.
struct Positions {
    topic: String,
    generation: u64,
    /// The offset the next commit carries: the positions topic's end when the source
    /// took over, one more after each commit. It fences and it grows, as the log asks
    /// (a commit that would not move the group forward is taken for a retry of one
    /// already done), and stays at or below the partition's end (each commit appends
    /// one positions record).
    next_offset: u64,
    current: BTreeMap<String, String>,
    /// [`origin`], stored with the positions.
    from: String,
    /// Whether the log's transactions are all or nothing; else the events are appended
    /// before the transaction of the positions, so a crash repeats and never skips.
    exactly_once: bool,
}

/// Claims the source's group (fencing commits of any earlier owner) and reads the
/// positions of the last committed record.
async fn resume(running: &Running, log: &SharedLog) -> Result<Positions> {
    let name = running.name.as_str();
    let topic = SourceSpec::positions_topic(name);
    // A transaction of an earlier run that the log could not finish is finished (or
    // fails this) before the positions are read: else it would land after, and a commit
    // of this run with the same offset would be taken for it.
    log.commit_transaction(Transaction {
        producer: running.unit.clone(),
        appends: Vec::new(),
        commit: None,
    })
    .await?;
    let generation = log.claim(&group(name), &topic, 0).await?;
    let offsets = log.offsets(&topic, 0).await?;
    let mut last = None;
    // The last record is at most a few offsets before the end (other backends leave
    // markers); look further back until one is found or the partition's start.
    let mut window = 16u64;
    loop {
        let from = offsets.end.saturating_sub(window).max(offsets.start);
        let mut at = from;
        while at < offsets.end {
            let records = log.read(&topic, 0, at, 256).await?;
            let Some(end) = records.last().map(|r| r.offset + 1) else {
                break;
            };
            last = records.into_iter().next_back().or(last);
            at = end;
        }
        if last.is_some() || from == offsets.start {
            break;
        }
        window = window.saturating_mul(16);
    }
    let stored: Option<Stored> = match last {
        None => None,
        Some(record) => Some(serde_json::from_slice(&record.value).map_err(|e| {
            Error::from(weir_log::Error::invalid(format!(
                "record {} of {topic:?} is not a source's positions: {e}",
                record.offset
            )))
        })?),
    };
    let from = origin(running);
    let current = match stored {
        None => BTreeMap::new(),
        Some(stored) if stored.from == from => stored.positions,
        Some(stored) => {
            // Positions in another broker (or another cron expression) mean nothing here.
            tracing::warn!(source = name, was = %stored.from, now = %from, "the source reads elsewhere now; it begins where `start` says, not at the stored positions");
            BTreeMap::new()
        }
    };
    let exactly_once = log.guarantees(&TopicSpec::default()).transactions
        == weir_log::TransactionGuarantee::ExactlyOnce;
    Ok(Positions {
        topic,
        generation,
        next_offset: offsets.end,
        current,
        from,
        exactly_once,
    })
}

/// A positions record: where the positions are (the kind and the URL without
/// credentials, or the cron expression) and the positions by lane.
#[derive(serde::Serialize, serde::Deserialize)]
struct Stored {
    from: String,
    positions: BTreeMap<String, String>,
}

/// What the positions of a source are positions in.
fn origin(running: &Running) -> String {
    match &running.schedule {
        Some((_, shown)) => format!("cron {shown}"),
        None => weir_mesh::display_url(&running.spec.url),
    }
}

/// A positional source's batches until `done`: each in transactions of at most
/// [`MAX_APPEND_BYTES`] of events, with the positions after their last message.
async fn run_positional(
    running: &Running,
    template: &EventTemplate,
    source: &mut dyn Source,
    log: &SharedLog,
    done: &CancellationToken,
    positions: &mut Positions,
) -> std::result::Result<(), String> {
    let (counts, name) = (&running.counts, running.name.as_str());
    let metrics = Metrics {
        events_in: telemetry::events_in(&running.spec.topic),
        appended: telemetry::source_messages(name, "appended"),
        dead_lettered: telemetry::source_messages(name, "dead_lettered"),
    };
    let mut health_wait = Duration::from_millis(100);
    loop {
        let batch = match next_batch(running, source, done, &mut health_wait).await {
            Some(batch) => batch?,
            None => return Ok(()),
        };
        let separator = source.separator();
        let mut chunk = Chunk::default();
        for message in &batch {
            let (record, event) = convert(running, template, message, separator);
            let full = !chunk.is_empty() && chunk.bytes + record.value.len() > MAX_APPEND_BYTES;
            if full {
                let chunk = std::mem::take(&mut chunk);
                match commit_chunk(running, log, positions, chunk, done, &metrics).await {
                    Committed::Yes => {}
                    Committed::Stopped => return Ok(()),
                    Committed::Fenced => return Err("another node took the source over".into()),
                }
            }
            chunk.bytes += record.value.len();
            if event {
                chunk.events.push(record);
            } else {
                chunk.dead.push(record);
            }
            chunk.messages += 1;
            if let Some(position) = &message.position {
                positions
                    .current
                    .insert(position.lane.clone(), position.after.clone());
            }
        }
        if !chunk.is_empty() {
            match commit_chunk(running, log, positions, chunk, done, &metrics).await {
                Committed::Yes => {}
                Committed::Stopped => return Ok(()),
                Committed::Fenced => return Err("another node took the source over".into()),
            }
        }
        counts.set_position(&positions.current);
        health_wait = Duration::from_millis(100);
    }
}

/// A positional source's counters, made once per run (not per commit).
struct Metrics {
    events_in: metrics::Counter,
    appended: metrics::Counter,
    dead_lettered: metrics::Counter,
}

/// Messages of one transaction of a positional source.
#[derive(Default)]
struct Chunk {
    events: Vec<Record>,
    dead: Vec<Record>,
    messages: u64,
    bytes: usize,
}

impl Chunk {
    fn is_empty(&self) -> bool {
        self.messages == 0
    }
}

/// How committing a chunk ended.
enum Committed {
    Yes,
    /// The source was stopped first: nothing of the chunk is known to be stored, and the
    /// next owner reads it again.
    Stopped,
    /// Another owner claimed the source: this node stored nothing of the chunk.
    Fenced,
}

/// Commits a chunk with the positions after it, again while the log refuses it.
async fn commit_chunk(
    running: &Running,
    log: &SharedLog,
    positions: &mut Positions,
    chunk: Chunk,
    done: &CancellationToken,
    metrics: &Metrics,
) -> Committed {
    let (spec, counts, name) = (&running.spec, &running.counts, running.name.as_str());
    let stored = Stored {
        from: positions.from.clone(),
        positions: positions.current.clone(),
    };
    let value = serde_json::to_vec(&stored).unwrap_or_default();
    let (n_events, n_dead) = (chunk.events.len() as u64, chunk.dead.len() as u64);
    let outputs: Vec<(String, Vec<Record>)> = [
        (spec.topic.clone(), chunk.events),
        (spec.dead_letter.clone(), chunk.dead),
    ]
    .into_iter()
    .filter(|(_, records)| !records.is_empty())
    .collect();
    let position = (
        positions.topic.clone(),
        vec![Record::new(value).with_key(POSITION_KEY)],
    );
    let commit = Some(GroupCommit {
        group: group(name),
        topic: positions.topic.clone(),
        partition: 0,
        next_offset: positions.next_offset,
        generation: positions.generation,
    });
    let producer = running.unit.clone();
    // One transaction where the log makes it all or nothing; else the events first, so
    // the positions never land without them.
    let txns = if positions.exactly_once {
        let mut appends = outputs;
        appends.push(position);
        vec![Transaction {
            producer,
            appends,
            commit,
        }]
    } else {
        vec![
            Transaction {
                producer: producer.clone(),
                appends: outputs,
                commit: None,
            },
            Transaction {
                producer,
                appends: vec![position],
                commit,
            },
        ]
    };
    let mut wait = Duration::from_millis(100);
    let mut txns = txns.into_iter().peekable();
    while let Some(txn) = txns.peek() {
        match log.commit_transaction(txn.clone()).await {
            Ok(()) => {
                txns.next();
                continue;
            }
            Err(e) if e.kind() == weir_log::ErrorKind::Fenced => {
                tracing::warn!(
                    source = name,
                    "another node took the source over; this one stops it"
                );
                counts.set_error(Some("another node took the source over".to_owned()));
                return Committed::Fenced;
            }
            Err(e) => {
                let error = Error::from(e);
                tracing::error!(source = name, error = %error, "source's events not committed; trying again");
                counts.stalled.store(true, Relaxed);
                counts.set_error(Some(format!("committing to {:?}: {error}", spec.topic)));
            }
        }
        tokio::select! {
            _ = done.cancelled() => return Committed::Stopped,
            _ = tokio::time::sleep(wait) => {}
        }
        wait = (wait * 2).min(MAX_BACKOFF);
    }
    positions.next_offset += 1;
    if counts.stalled.swap(false, Relaxed) {
        counts.set_error(None);
        tracing::info!(source = name, "the log takes the source's events again");
    }
    metrics.events_in.increment(n_events);
    counts.appended.fetch_add(n_events, Relaxed);
    counts.dead_lettered.fetch_add(n_dead, Relaxed);
    counts.acknowledged.fetch_add(chunk.messages, Relaxed);
    metrics.appended.increment(n_events);
    metrics.dead_lettered.increment(n_dead);
    Committed::Yes
}

/// A message as the record of its event (`true`) or of its dead letter (`false`): an
/// event that breaks its topic's contract (its type's schema, or the topic's need of
/// one) is dead-lettered as `schema-violation`.
fn convert(
    running: &Running,
    template: &EventTemplate,
    message: &Message,
    separator: char,
) -> (Record, bool) {
    let name = running.name.as_str();
    let event = template.event(message, separator).and_then(|event| {
        running
            .schemas
            .check_one(&running.spec.topic, &event)
            .map_err(|error| weir_mesh::Poison {
                reason: "schema-violation",
                error,
            })?;
        let record = encode_event(&event);
        let bytes = record.value.len() + record.key.as_ref().map_or(0, |k| k.len());
        if bytes > MAX_RECORD_BYTES {
            // (Text escaped for JSON, a key repeated): over what the log takes in a record,
            // which no retry would change.
            return Err(weir_mesh::Poison {
                reason: "too-large",
                error: format!(
                    "the event is {bytes} bytes, over the log's record limit of {MAX_RECORD_BYTES}"
                ),
            });
        }
        Ok(record)
    });
    match event {
        Ok(record) => (record, true),
        Err(poison) => {
            tracing::warn!(source = name, reason = poison.reason, error = %poison.error, subject = %message.subject, "message dead-lettered");
            (
                encode_event(&template.dead_letter(name, message, &poison)),
                false,
            )
        }
    }
}

/// The next batch of messages, with the connection's health read while waiting; `None`
/// once `done`, `Err` when the source failed for good and must be opened again.
async fn next_batch(
    running: &Running,
    source: &mut dyn Source,
    done: &CancellationToken,
    health_wait: &mut Duration,
) -> Option<std::result::Result<Vec<Message>, String>> {
    let counts = &running.counts;
    loop {
        let batch = tokio::select! {
            biased;
            _ = done.cancelled() => return None,
            batch = source.next(BATCH) => batch,
            // The health is read while waiting, so status shows a broken connection.
            _ = tokio::time::sleep(*health_wait) => {
                let health = source.health();
                counts.connected.store(health.connected, Relaxed);
                if health.connected || health.error.is_some() {
                    counts.set_error(health.error);
                }
                *health_wait = (*health_wait * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        match batch {
            Ok(batch) => {
                counts.connected.store(true, Relaxed);
                counts.received.fetch_add(batch.len() as u64, Relaxed);
                return Some(Ok(batch));
            }
            Err(e) if e.kind == weir_mesh::ErrorKind::Connection => {
                counts.set_error(Some(e.message));
                tokio::select! {
                    _ = done.cancelled() => return None,
                    _ = tokio::time::sleep(Duration::from_millis(500)) => continue,
                }
            }
            Err(e) => return Some(Err(e.message)),
        }
    }
}

/// Takes batches until `done`: each appended (events, then dead letters), then
/// acknowledged. `Err` when the source failed for good and must be opened again.
async fn run(
    running: &Running,
    template: &EventTemplate,
    source: &mut dyn Source,
    log: &SharedLog,
    done: &CancellationToken,
) -> std::result::Result<(), String> {
    let (spec, counts, name) = (&running.spec, &running.counts, running.name.as_str());
    let appended = telemetry::source_messages(name, "appended");
    let dead_lettered = telemetry::source_messages(name, "dead_lettered");
    let mut health_wait = Duration::from_millis(100);
    loop {
        let batch = match next_batch(running, source, done, &mut health_wait).await {
            Some(batch) => batch?,
            None => return Ok(()),
        };
        let separator = source.separator();
        let mut events = Vec::with_capacity(batch.len());
        let mut dead = Vec::new();
        for message in &batch {
            match convert(running, template, message, separator) {
                (record, true) => events.push(record),
                (record, false) => dead.push(record),
            }
        }
        let (n_events, n_dead) = (events.len() as u64, dead.len() as u64);
        if !append(running, log, &spec.topic, events, done).await
            || !append(running, log, &spec.dead_letter, dead, done).await
        {
            // Stopped while the log refused: nothing acknowledged, the broker keeps them.
            return Ok(());
        }
        counts.appended.fetch_add(n_events, Relaxed);
        counts.dead_lettered.fetch_add(n_dead, Relaxed);
        appended.increment(n_events);
        dead_lettered.increment(n_dead);
        let tokens: Vec<u64> = batch.iter().map(|m| m.token).collect();
        source.ack(&tokens).await.map_err(|e| e.message)?;
        counts.acknowledged.fetch_add(tokens.len() as u64, Relaxed);
        health_wait = Duration::from_millis(100);
    }
}

/// Appends `records` to `topic` in calls of at most [`MAX_APPEND_BYTES`], each tried
/// again while the log refuses it; `false` if the source was stopped before the log took
/// them all.
async fn append(
    running: &Running,
    log: &SharedLog,
    topic: &str,
    records: Vec<Record>,
    done: &CancellationToken,
) -> bool {
    let mut chunk = Vec::new();
    let mut bytes = 0;
    for record in records {
        if !chunk.is_empty() && bytes + record.value.len() > MAX_APPEND_BYTES {
            if !append_chunk(running, log, topic, std::mem::take(&mut chunk), done).await {
                return false;
            }
            bytes = 0;
        }
        bytes += record.value.len();
        chunk.push(record);
    }
    chunk.is_empty() || append_chunk(running, log, topic, chunk, done).await
}

async fn append_chunk(
    running: &Running,
    log: &SharedLog,
    topic: &str,
    records: Vec<Record>,
    done: &CancellationToken,
) -> bool {
    let counts = &running.counts;
    let mut wait = Duration::from_millis(100);
    loop {
        match log.append(topic, records.clone()).await {
            Ok(positions) => {
                telemetry::events_in(topic).increment(positions.len() as u64);
                if counts.stalled.swap(false, Relaxed) {
                    counts.set_error(None);
                    tracing::info!(source = %running.name, topic, "the log takes the source's events again");
                }
                return true;
            }
            Err(e) => {
                let error = Error::from(e);
                tracing::error!(source = %running.name, topic, error = %error, "source's events not appended; nothing acknowledged, trying again");
                counts.stalled.store(true, Relaxed);
                counts.set_error(Some(format!("appending to {topic:?}: {error}")));
            }
        }
        tokio::select! {
            _ = done.cancelled() => return false,
            _ = tokio::time::sleep(wait) => {}
        }
        wait = (wait * 2).min(MAX_BACKOFF);
    }
}
