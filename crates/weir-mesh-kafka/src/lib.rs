//! weir's Kafka source: reads every partition of the topics in `subscribe`, assigned by
//! hand (no consumer group rebalancing, no offsets committed to Kafka), from the offsets
//! after those weir stored with the events it appended ([`SourceOptions::resume`], lane
//! `TOPIC/PARTITION`). The source is positional: after a crash it reads again exactly
//! what follows the last position weir committed. Partitions added to a topic later are
//! found within [`METADATA_EVERY`] and read from their start.
//!
//! A record becomes a message: its topic the `subject`, `TOPIC:PARTITION:OFFSET` its `id`,
//! its headers the message's headers, and its key (when UTF-8) the header `kafka-key`.
//!
//! librdkafka's consumer is blocking: it runs on a thread of its own that polls and feeds
//! a channel, which [`Source::next`] takes from (cancel-safe). The thread owns the
//! consumer and drops it itself, a moment after the last poll (librdkafka 2.12 aborts the
//! process when an assignment stops before its fetcher started).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message as _};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio::sync::mpsc;
use weir_mesh::{
    Error, Health, Inbox, Message, Position, SharedHealth, Source, SourceOptions, Start,
};

/// Messages received and not yet taken by the engine.
const READ_AHEAD: usize = 1024;
/// How often the topics' partitions are looked up again.
pub const METADATA_EVERY: Duration = Duration::from_secs(10);
/// How long a metadata or watermark request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest pause between two attempts to set the consumer up.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(5);

/// What the URL says: `kafka://HOST[:PORT][,HOST[:PORT]…][?fetch_wait_ms=N]`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    brokers: String,
    fetch_wait_ms: Option<u64>,
}

fn target(url: &str) -> Result<Target, Error> {
    let shown = weir_mesh::display_url(url);
    let rest = url.strip_prefix("kafka://").ok_or_else(|| {
        Error::config(format!("{shown:?} is not a Kafka URL (kafka://HOST:PORT)"))
    })?;
    let (authority, query) = rest.split_once('?').unwrap_or((rest, ""));
    let brokers = authority.trim_end_matches('/');
    if brokers.is_empty() || brokers.contains(['/', '@']) {
        return Err(Error::config(format!(
            "{shown:?} names no brokers; write kafka://HOST:PORT[,HOST:PORT…]"
        )));
    }
    let brokers = brokers
        .split(',')
        .map(|b| {
            if b.contains(':') {
                b.to_owned()
            } else {
                format!("{b}:9092")
            }
        })
        .collect::<Vec<_>>()
        .join(",");
    let mut fetch_wait_ms = None;
    for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
        match &*key {
            "fetch_wait_ms" => {
                fetch_wait_ms = Some(value.parse().map_err(|_| {
                    Error::config(format!(
                        "fetch_wait_ms={value:?} is not a number of milliseconds"
                    ))
                })?)
            }
            other => {
                return Err(Error::config(format!(
                    "{shown:?}: unknown option {other:?} (the Kafka source takes fetch_wait_ms)"
                )));
            }
        }
    }
    Ok(Target {
        brokers,
        fetch_wait_ms,
    })
}

/// A reader of Kafka topics; see the crate docs.
pub struct KafkaSource {
    inbox: Inbox<Message>,
    health: SharedHealth,
    stop: Arc<AtomicBool>,
}

impl Drop for KafkaSource {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl KafkaSource {
    /// Checks the URL and starts reading the topics `options.subscribe` names.
    pub fn open(options: &SourceOptions) -> Result<KafkaSource, Error> {
        let target = target(&options.url)?;
        if options.subscribe.is_empty() || options.subscribe.iter().any(String::is_empty) {
            return Err(Error::config(
                "name the Kafka topics to read in `subscribe`",
            ));
        }
        let mut cursors = BTreeMap::new();
        for (lane, after) in &options.resume {
            let parsed = lane
                .rsplit_once('/')
                .and_then(|(topic, p)| Some((topic.to_owned(), p.parse::<i32>().ok()?)))
                .zip(after.parse::<i64>().ok());
            match parsed {
                Some((lane, after)) => {
                    cursors.insert(lane, after + 1);
                }
                None => {
                    return Err(Error::config(format!(
                        "the stored position {lane:?}={after:?} is not TOPIC/PARTITION=OFFSET"
                    )));
                }
            }
        }
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &target.brokers)
            .set("group.id", format!("weir-{}-{}", options.app, options.name))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false")
            // A stored offset that retention deleted meanwhile: on from the oldest kept.
            .set("auto.offset.reset", "earliest")
            .set("socket.timeout.ms", "10000")
            .set("log_level", "4");
        if let Some(ms) = target.fetch_wait_ms {
            config.set("fetch.wait.max.ms", ms.to_string());
        }
        let (sender, inbox) = weir_mesh::inbox(READ_AHEAD);
        let health = SharedHealth::default();
        let stop = Arc::new(AtomicBool::new(false));
        let reader = Reader {
            config,
            topics: options.subscribe.clone(),
            cursors,
            start: options.start,
            sender,
            health: health.clone(),
            stop: stop.clone(),
            next_token: 0,
            looked: false,
        };
        std::thread::Builder::new()
            .name(format!("kafka-source-{}", options.name))
            .spawn(move || reader.run())
            .map_err(|e| Error::connection(format!("cannot start the Kafka reader: {e}")))?;
        Ok(KafkaSource {
            inbox,
            health,
            stop,
        })
    }
}

#[async_trait]
impl Source for KafkaSource {
    fn kind(&self) -> &'static str {
        "kafka"
    }

    fn separator(&self) -> char {
        '.'
    }

    fn positional(&self) -> bool {
        true
    }

    async fn next(&mut self, max: usize) -> Result<Vec<Message>, Error> {
        self.inbox
            .next(max)
            .await
            .ok_or_else(|| Error::closed("the Kafka reader stopped"))
    }

    /// Nothing to do: the positions travel with the events.
    async fn ack(&mut self, _tokens: &[u64]) -> Result<(), Error> {
        Ok(())
    }

    async fn close(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    fn health(&self) -> Health {
        self.health.get()
    }
}

/// The reading thread: the next offset to read in each partition it knows.
struct Reader {
    config: ClientConfig,
    topics: Vec<String>,
    cursors: BTreeMap<(String, i32), i64>,
    start: Start,
    sender: mpsc::Sender<Message>,
    health: SharedHealth,
    stop: Arc<AtomicBool>,
    next_token: u64,
    /// Whether the topics were looked up once since the source opened.
    looked: bool,
}

impl Reader {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed) || self.sender.is_closed()
    }

    fn run(mut self) {
        let mut wait = Duration::from_millis(100);
        while !self.stopped() {
            let consumer: BaseConsumer = match self.config.create() {
                Ok(consumer) => consumer,
                Err(e) => {
                    self.health
                        .set(false, Some(format!("cannot make a Kafka consumer: {e}")));
                    return;
                }
            };
            let failure = self.read(&consumer).err();
            // librdkafka aborts when an assignment stops before its fetcher started.
            std::thread::sleep(Duration::from_secs(1));
            drop(consumer);
            let Some(failure) = failure else { return };
            tracing::warn!(error = %failure, "Kafka source failed; reading again");
            self.health.set(false, Some(failure));
            let until = Instant::now() + wait;
            while Instant::now() < until && !self.stopped() {
                std::thread::sleep(Duration::from_millis(50));
            }
            wait = (wait * 2).min(MAX_RETRY_WAIT);
        }
    }

    /// The partitions of every topic, with a cursor for each new one (where `start` says
    /// for those found on this open's first look, the start for those added later).
    fn assignment(&mut self, consumer: &BaseConsumer, first: bool) -> Result<bool, String> {
        let mut changed = false;
        for topic in &self.topics {
            let metadata = consumer
                .fetch_metadata(Some(topic), REQUEST_TIMEOUT)
                .map_err(|e| format!("looking up topic {topic:?}: {e}"))?;
            let Some(found) = metadata.topics().iter().find(|t| t.name() == topic) else {
                return Err(format!("topic {topic:?} does not exist"));
            };
            if let Some(e) = found.error() {
                return Err(format!(
                    "topic {topic:?}: {}",
                    rdkafka::error::RDKafkaErrorCode::from(e)
                ));
            }
            if found.partitions().is_empty() {
                return Err(format!("topic {topic:?} does not exist"));
            }
            for partition in found.partitions() {
                let lane = (topic.clone(), partition.id());
                if self.cursors.contains_key(&lane) {
                    continue;
                }
                let next = match (first, self.start) {
                    (true, Start::Latest) => {
                        consumer
                            .fetch_watermarks(topic, partition.id(), REQUEST_TIMEOUT)
                            .map_err(|e| format!("the end of {topic:?}/{}: {e}", partition.id()))?
                            .1
                    }
                    _ => {
                        consumer
                            .fetch_watermarks(topic, partition.id(), REQUEST_TIMEOUT)
                            .map_err(|e| format!("the start of {topic:?}/{}: {e}", partition.id()))?
                            .0
                    }
                };
                self.cursors.insert(lane, next);
                changed = true;
            }
        }
        Ok(changed)
    }

    fn assign(&self, consumer: &BaseConsumer) -> Result<(), String> {
        let mut list = TopicPartitionList::new();
        for ((topic, partition), next) in &self.cursors {
            if self.topics.contains(topic) {
                list.add_partition_offset(topic, *partition, Offset::Offset(*next))
                    .map_err(|e| format!("assigning {topic:?}/{partition}: {e}"))?;
            }
        }
        consumer
            .assign(&list)
            .map_err(|e| format!("assigning the partitions: {e}"))
    }

    /// Reads until stopped (`Ok`) or the consumer must be made again (`Err`).
    fn read(&mut self, consumer: &BaseConsumer) -> Result<(), String> {
        let first = !self.looked;
        self.assignment(consumer, first)?;
        self.looked = true;
        self.assign(consumer)?;
        self.health.set(true, None);
        let mut looked = Instant::now();
        // Whether the health says connected: set again only when a record follows an error.
        let mut healthy = true;
        while !self.stopped() {
            if looked.elapsed() >= METADATA_EVERY {
                looked = Instant::now();
                if self.assignment(consumer, false)? {
                    self.assign(consumer)?;
                }
            }
            let message = match consumer.poll(Duration::from_millis(200)) {
                None => continue,
                Some(Err(e)) => {
                    // librdkafka reports broker trouble here and goes on by itself.
                    self.health.set(false, Some(e.to_string()));
                    healthy = false;
                    continue;
                }
                Some(Ok(message)) => message,
            };
            let lane = (message.topic().to_owned(), message.partition());
            let offset = message.offset();
            // What an earlier assignment fetched ahead is below the cursor: already taken.
            if self.cursors.get(&lane).is_some_and(|next| offset < *next) {
                continue;
            }
            self.cursors.insert(lane.clone(), offset + 1);
            let mut headers: Vec<(String, String)> = message
                .headers()
                .map(|headers| {
                    headers
                        .iter()
                        .map(|h| {
                            let value = h.value.map(String::from_utf8_lossy).unwrap_or_default();
                            (h.key.to_owned(), value.into_owned())
                        })
                        .collect()
                })
                .unwrap_or_default();
            if let Some(key) = message.key().and_then(|k| std::str::from_utf8(k).ok()) {
                headers.push(("kafka-key".to_owned(), key.to_owned()));
            }
            let token = self.next_token;
            self.next_token += 1;
            let out = Message {
                subject: lane.0.clone(),
                headers,
                payload: Bytes::copy_from_slice(message.payload().unwrap_or_default()),
                id: Some(format!("{}:{}:{offset}", lane.0, lane.1)),
                redelivered: false,
                token,
                position: Some(Position {
                    lane: format!("{}/{}", lane.0, lane.1),
                    after: offset.to_string(),
                }),
            };
            if !healthy {
                self.health.set(true, None);
                healthy = true;
            }
            if self.sender.blocking_send(out).is_err() {
                return Ok(());
            }
        }
        Ok(())
    }
}

mod sink;
pub use sink::KafkaSink;

#[cfg(test)]
mod tests;
