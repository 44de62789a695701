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
//! On a fleet each source is one unit (`source/NAME`): one member runs it at a time.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use weir_log::{Record, TopicSpec};
use weir_manifest::{SourceData, SourceSpec};
use weir_mesh::{DataMode, EventTemplate, KeyTemplate, Source, SourceOptions};

use crate::codec::encode_event;
use crate::fleet::Units;
use crate::{Error, Result, SharedLog, telemetry};

/// Messages taken from a broker in one batch: one append, then one acknowledgement.
const BATCH: usize = 256;
/// The most bytes of events in one append: the embedded log takes 8 MiB per partition
/// in one call, NATS and Kafka less by default.
const MAX_APPEND_BYTES: usize = 1 << 20;
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
    /// Messages acknowledged to the broker.
    pub acknowledged: u64,
}

/// One running source: its spec, its task and what it counted.
struct Running {
    name: String,
    spec: SourceSpec,
    stop: CancellationToken,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    counts: Counts,
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
}

impl Counts {
    fn set_error(&self, error: Option<String>) {
        *self.error.lock().unwrap_or_else(PoisonError::into_inner) = error;
    }
}

/// The node's running sources.
#[derive(Default)]
pub(crate) struct Sources {
    running: Mutex<BTreeMap<String, Arc<Running>>>,
}

/// The unit of the fleet a source is.
fn unit(name: &str) -> String {
    format!("source/{name}")
}

impl Sources {
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
        let running = Arc::new(Running {
            name: name.to_owned(),
            spec: spec.clone(),
            stop: cancel.child_token(),
            task: Mutex::new(None),
            counts: Counts::default(),
        });
        let options = SourceOptions {
            name: name.to_owned(),
            app: app.to_owned(),
            url: spec.url.clone(),
            subscribe: spec.subscribe.clone(),
            unsubscribe,
        };
        let task = tasks.spawn(drive(running.clone(), options, log.clone(), units.clone()));
        *running.task.lock().unwrap_or_else(PoisonError::into_inner) = Some(task);
        tracing::info!(source = name, url = %weir_mesh::display_url(&spec.url), topic = %spec.topic, "source started");
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.to_owned(), running);
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
                let owner = units.owners(&[unit(&r.name)]).into_values().next();
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
                    kind: r.spec.url.split("://").next().unwrap_or("").to_owned(),
                    url: weir_mesh::display_url(&r.spec.url),
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
                }
            })
            .collect()
    }
}

/// Opens the source of the URL's kind.
fn open(options: &SourceOptions) -> std::result::Result<Box<dyn Source>, weir_mesh::Error> {
    match options.url.split("://").next() {
        Some("mqtt" | "tcp") => Ok(Box::new(weir_mesh_mqtt::MqttSource::open(options)?)),
        _ => Err(weir_mesh::Error::config(format!(
            "{:?}: no source kind serves this URL; weir takes mqtt:// sources",
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
    let names = [unit(&running.name)];
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
        match open(&options) {
            Ok(mut source) => {
                let ran = run(&running, &template, &mut *source, &log, &done).await;
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
        let batch = tokio::select! {
            biased;
            _ = done.cancelled() => return Ok(()),
            batch = source.next(BATCH) => batch,
            // The health is read while waiting, so status shows a broken connection.
            _ = tokio::time::sleep(health_wait) => {
                let health = source.health();
                counts.connected.store(health.connected, Relaxed);
                if health.connected || health.error.is_some() {
                    counts.set_error(health.error);
                }
                health_wait = (health_wait * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let batch = match batch {
            Ok(batch) => batch,
            Err(e) if e.kind == weir_mesh::ErrorKind::Connection => {
                counts.set_error(Some(e.message));
                tokio::select! {
                    _ = done.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(Duration::from_millis(500)) => continue,
                }
            }
            Err(e) => return Err(e.message),
        };
        counts.connected.store(true, Relaxed);
        counts.received.fetch_add(batch.len() as u64, Relaxed);
        let separator = source.separator();
        let mut events = Vec::with_capacity(batch.len());
        let mut dead = Vec::new();
        for message in &batch {
            match template.event(message, separator) {
                Ok(event) => events.push(encode_event(&event)),
                Err(poison) => {
                    tracing::warn!(source = name, reason = poison.reason, error = %poison.error, subject = %message.subject, "message dead-lettered");
                    dead.push(encode_event(&template.dead_letter(name, message, &poison)));
                }
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
