//! weir's Kafka backend of the log family ([`weir_log::EventLog`]), on `rdkafka`.
//!
//! **The mapping:**
//! - Topics, partitions, keys, timestamps and offsets are Kafka's own: weir topic T is the
//!   Kafka topic T (`PREFIX.T` when the URL names a prefix), a record's offset is its
//!   Kafka offset (which may skip: compaction, other producers' transaction markers), and
//!   a key picks its partition with [`weir_log::partition_for_key`], Kafka's own murmur2
//!   partitioner, so weir and Kafka clients agree on where a key lives. Any Kafka client
//!   reads and writes weir's topics.
//! - Appends go through one idempotent producer (`enable.idempotence`, `acks=all`): a
//!   retried produce is never stored twice nor reordered within a partition. What an
//!   acknowledgement survives is the brokers' affair (replication factor,
//!   `min.insync.replicas`, flush settings), declared in the URL (`?replicas=N`).
//! - Retention, compaction and durability are the topic's Kafka configs
//!   (`retention.ms`, `retention.bytes`, `cleanup.policy`, `flush.ms`/`flush.messages`)
//!   where the broker takes them; the broker applies retention as it goes, and
//!   [`EventLog::enforce_retention`] also trims what a size limit no longer admits with
//!   `DeleteRecords`, so a broker that does not apply it itself still keeps the limit.
//! - What Kafka has no place for lives in one **control topic** (`__weir_control`, or
//!   `__weir_control.PREFIX`; one partition, compacted): weir's topic specs, owners'
//!   claims and group commits. Its log order is the arbiter: a claim's generation is its
//!   control offset plus one (above every earlier claim), and a commit counts only if no
//!   newer claim for its partition precedes it in the control topic, which every node
//!   replays the same way. A reader of the state first catches up to the control
//!   partition's end, so what it sees is at least as new as any acknowledged write.
//! - No conditional appends (Kafka has none), so an app with entities is refused on this
//!   backend; transactions are the trait's at-least-once default, since the test broker
//!   here (tansu) has no Kafka transactions: see `Guarantees`.
//!
//! Every call is bounded by the URL's `timeout_ms` (10 s): a broker out of reach is an
//! `Unavailable` error, never a wait for ever.

mod control;
mod deploys;
mod reader;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, NewTopic, ResourceSpecifier, TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use weir_log::{
    Acknowledgement, Atomicity, ConditionalAppends, Deduplication, Durability, Error, ErrorKind,
    EventLog, Expect, GroupCommit, Guarantees, Offsets, PartitionReader, Record, RecordPosition,
    Result, RetentionReport, SharedLog, StoredRecord, TopicCreated, TopicInfo, TopicSpec,
    TransactionGuarantee,
};

pub use crate::control::MEMBER_LIFETIME;
use crate::control::{Control, ControlRecord};

/// How weir uses one Kafka cluster, from the backend's URL.
#[derive(Debug, Clone, PartialEq)]
pub struct KafkaOptions {
    /// `host:port` of the bootstrap brokers.
    pub brokers: Vec<String>,
    /// Set when the URL names one: weir topic T is Kafka topic `PREFIX.T`, so several apps
    /// (or tests) share a cluster.
    pub prefix: Option<String>,
    /// Each topic's replication factor (1 on a single broker).
    pub replicas: u16,
    /// How long a call may wait for the brokers before it fails as unavailable.
    pub timeout: Duration,
    /// At most this many records in one produce batch (librdkafka's
    /// `batch.num.messages`, default 10,000). `1` works around brokers that mishandle
    /// offsets inside multi-record batches (tansu 0.6.0: see the README).
    pub batch_records: u32,
    /// The longest a broker may hold a reader's fetch at a partition's end
    /// (`fetch.wait.max.ms`, default 100 ms). Kafka answers as soon as records arrive;
    /// tansu 0.6.0 holds every fetch this long, so its tests use 10.
    pub fetch_wait_ms: u32,
}

impl KafkaOptions {
    /// Reads `kafka://host:port[,host:port…][/PREFIX][?replicas=N&timeout_ms=MS&batch_records=N&fetch_wait_ms=MS]`.
    pub fn from_url(url: &str) -> Result<KafkaOptions> {
        let invalid = |why: String| {
            Error::invalid(format!(
                "invalid Kafka backend URL \"{url}\": {why}; use kafka://HOST:PORT[,HOST:PORT…][/PREFIX][?replicas=N&timeout_ms=MS]"
            ))
        };
        let rest = url
            .strip_prefix("kafka://")
            .ok_or_else(|| invalid("the scheme is not kafka".into()))?;
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (hosts, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if hosts.is_empty() || hosts.split(',').any(|h| !h.contains(':')) {
            return Err(invalid("every broker needs a host and a port".into()));
        }
        let prefix = match prefix.trim_end_matches('/') {
            "" => None,
            p if p.len() <= 64
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_')) =>
            {
                Some(p.to_owned())
            }
            p => {
                return Err(invalid(format!(
                    "the prefix \"{p}\" is not 1 to 64 of a-z, A-Z, 0-9, '-' and '_'"
                )));
            }
        };
        let mut options = KafkaOptions {
            brokers: hosts.split(',').map(str::to_owned).collect(),
            prefix,
            replicas: 1,
            timeout: Duration::from_secs(10),
            batch_records: 10_000,
            fetch_wait_ms: 100,
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            match name {
                "replicas" => {
                    options.replicas = value
                        .parse()
                        .ok()
                        .filter(|r| (1..=16).contains(r))
                        .ok_or_else(|| invalid(format!("replicas is \"{value}\", not 1 to 16")))?
                }
                "timeout_ms" => {
                    options.timeout =
                        Duration::from_millis(value.parse().ok().filter(|ms| *ms > 0).ok_or_else(
                            || invalid(format!("timeout_ms is \"{value}\", not milliseconds")),
                        )?)
                }
                "batch_records" => {
                    options.batch_records = value
                        .parse()
                        .ok()
                        .filter(|n| (1..=1_000_000).contains(n))
                        .ok_or_else(|| {
                            invalid(format!("batch_records is \"{value}\", not 1 to 1000000"))
                        })?
                }
                "fetch_wait_ms" => {
                    options.fetch_wait_ms = value
                        .parse()
                        .ok()
                        .filter(|n| (1..=60_000).contains(n))
                        .ok_or_else(|| {
                            invalid(format!("fetch_wait_ms is \"{value}\", not 1 to 60000"))
                        })?
                }
                other => return Err(invalid(format!("unknown setting \"{other}\""))),
            }
        }
        Ok(options)
    }

    /// The Kafka topic of weir topic `name`.
    pub fn kafka_topic(&self, name: &str) -> String {
        match &self.prefix {
            Some(prefix) => format!("{prefix}.{name}"),
            None => name.to_owned(),
        }
    }

    /// The weir topic of a Kafka topic, if it is in this prefix.
    fn weir_topic<'a>(&self, kafka: &'a str) -> Option<&'a str> {
        match &self.prefix {
            Some(prefix) => kafka
                .strip_prefix(prefix.as_str())
                .and_then(|rest| rest.strip_prefix('.')),
            None => Some(kafka),
        }
    }

    fn control_topic(&self) -> String {
        self.internal_topic("__weir_control")
    }

    /// One of weir's own topics (`NAME`, or `NAME.PREFIX`).
    fn internal_topic(&self, name: &str) -> String {
        match &self.prefix {
            Some(prefix) => format!("{name}.{prefix}"),
            None => name.to_owned(),
        }
    }

    fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", self.brokers.join(","))
            .set("socket.timeout.ms", self.timeout.as_millis().to_string())
            .set("log_level", "4");
        config
    }
}

/// The Kafka log. Cheap to share: one producer, one admin client and one metadata consumer
/// serve every call; each reader has a consumer of its own.
pub struct KafkaLog {
    inner: Arc<Inner>,
    /// Readers kept for one-off reads ([`EventLog::read`]), one per partition at most:
    /// a consumer costs a connection and a first fetch (about 200 ms on tansu).
    idle: Mutex<HashMap<(String, u32), reader::KafkaReader>>,
}

/// How many readers [`KafkaLog`] keeps for one-off reads.
const IDLE_READERS: usize = 32;

pub(crate) struct Inner {
    pub(crate) options: KafkaOptions,
    producer: FutureProducer,
    admin: AdminClient<DefaultClientContext>,
    /// For watermarks and offsets by time (blocking calls, made off the runtime).
    pub(crate) meta: Arc<BaseConsumer>,
    control: Arc<Control>,
    /// Partition counts by weir topic, as last seen (a topic's count never changes).
    partitions: Mutex<HashMap<String, u32>>,
    next_partition: AtomicU32,
    /// Whether the functions topic (see `deploys.rs`) is known to exist.
    functions_ready: tokio::sync::OnceCell<()>,
}

/// Opens the log on the brokers the URL names (see [`KafkaOptions::from_url`]).
pub async fn open_shared(url: &str) -> Result<SharedLog> {
    Ok(Arc::new(
        KafkaLog::open(KafkaOptions::from_url(url)?).await?,
    ))
}

pub(crate) fn unavailable(what: String, e: impl std::fmt::Display) -> Error {
    Error::new(ErrorKind::Unavailable, format!("{what}: {e}")).with_code("kafka-unavailable")
}

/// The kind of a Kafka error.
fn kind_of(e: &KafkaError) -> ErrorKind {
    match e.rdkafka_error_code() {
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
            | RDKafkaErrorCode::InvalidMessageSize
            | RDKafkaErrorCode::MessageBatchTooLarge,
        ) => ErrorKind::TooLarge,
        Some(
            RDKafkaErrorCode::UnknownTopicOrPartition
            | RDKafkaErrorCode::UnknownTopic
            | RDKafkaErrorCode::UnknownPartition,
        ) => ErrorKind::NotFound,
        Some(RDKafkaErrorCode::InvalidConfig | RDKafkaErrorCode::InvalidRequest) => {
            ErrorKind::Invalid
        }
        _ => ErrorKind::Unavailable,
    }
}

fn from_kafka(what: String, e: &KafkaError) -> Error {
    let kind = kind_of(e);
    let message = match kind {
        ErrorKind::TooLarge => format!(
            "{what}: {e}; a record must fit the producer's message.max.bytes and the broker's limit"
        ),
        _ => format!("{what}: {e}"),
    };
    Error::new(kind, message)
}

/// Runs a blocking librdkafka call off the runtime.
pub(crate) async fn blocking<T: Send + 'static>(
    what: String,
    f: impl FnOnce() -> std::result::Result<T, KafkaError> + Send + 'static,
) -> Result<T> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(from_kafka(what, &e)),
        Err(e) => Err(Error::new(ErrorKind::Failed, format!("{what}: {e}"))),
    }
}

impl KafkaLog {
    pub async fn open(options: KafkaOptions) -> Result<KafkaLog> {
        let producer: FutureProducer = options
            .client_config()
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "1")
            .set("batch.num.messages", options.batch_records.to_string())
            .set(
                "message.timeout.ms",
                options.timeout.as_millis().to_string(),
            )
            .create()
            .map_err(|e| unavailable("cannot start the Kafka producer".into(), e))?;
        let admin: AdminClient<DefaultClientContext> = options
            .client_config()
            .create()
            .map_err(|e| unavailable("cannot start the Kafka admin client".into(), e))?;
        let meta: BaseConsumer = options
            .client_config()
            .set("group.id", "weir-metadata")
            .set("enable.auto.commit", "false")
            .create()
            .map_err(|e| unavailable("cannot start the Kafka metadata client".into(), e))?;
        let meta = Arc::new(meta);
        // The brokers must answer before anything else is tried.
        ensure_internal_topic(&options, &admin, &meta, &options.control_topic()).await?;
        let control = Control::open(&options, producer.clone(), meta.clone()).await?;
        Ok(KafkaLog {
            inner: Arc::new(Inner {
                options,
                producer,
                admin,
                meta,
                control,
                partitions: Mutex::new(HashMap::new()),
                next_partition: AtomicU32::new(0),
                functions_ready: tokio::sync::OnceCell::new(),
            }),
            idle: Mutex::new(HashMap::new()),
        })
    }

    /// Deletes a topic (for benches and tests that made their own).
    pub async fn delete_topic(&self, name: &str) -> Result<()> {
        let kafka = self.inner.options.kafka_topic(name);
        let results = self
            .inner
            .admin
            .delete_topics(&[&kafka], &self.inner.admin_options())
            .await
            .map_err(|e| unavailable(format!("cannot delete topic {kafka}"), e))?;
        for result in results {
            if let Err((_, code)) = result {
                return Err(unavailable(format!("cannot delete topic {kafka}"), code));
            }
        }
        self.inner
            .partitions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(name);
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|(topic, _), _| topic != name);
        Ok(())
    }
}

/// Creates one of weir's own topics (one partition, compacted) unless it exists, and
/// returns once its partition is served.
async fn ensure_internal_topic(
    options: &KafkaOptions,
    admin: &AdminClient<DefaultClientContext>,
    meta: &Arc<BaseConsumer>,
    topic: &str,
) -> Result<()> {
    let timeout = options.timeout;
    let probe = meta.clone();
    let wanted = topic.to_owned();
    let exists = blocking(
        format!("cannot reach the Kafka brokers {:?}", options.brokers),
        move || {
            probe.fetch_metadata(Some(&wanted), timeout).map(|m| {
                m.topics()
                    .iter()
                    .any(|t| t.error().is_none() && !t.partitions().is_empty())
            })
        },
    )
    .await?;
    if exists {
        return Ok(());
    }
    let admin_options = AdminOptions::new().operation_timeout(Some(timeout));
    let new = NewTopic::new(
        topic,
        1,
        TopicReplication::Fixed(i32::from(options.replicas)),
    )
    .set("cleanup.policy", "compact");
    let created = admin
        .create_topics([&new], &admin_options)
        .await
        .map_err(|e| unavailable(format!("cannot create {topic}"), e))?;
    for result in created {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((_, code)) => {
                return Err(unavailable(format!("cannot create {topic}"), code));
            }
        }
    }
    // Created is not yet served: wait until its partition has a leader.
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let probe = meta.clone();
        let wanted = topic.to_owned();
        let served = blocking(format!("cannot read {topic}"), move || {
            probe.fetch_watermarks(&wanted, 0, timeout)
        })
        .await;
        match served {
            Ok(_) => return Ok(()),
            Err(e) if tokio::time::Instant::now() > deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

impl Inner {
    /// See [`ensure_internal_topic`].
    async fn ensure_internal_topic(&self, topic: &str) -> Result<()> {
        ensure_internal_topic(&self.options, &self.admin, &self.meta, topic).await
    }

    fn admin_options(&self) -> AdminOptions {
        AdminOptions::new().operation_timeout(Some(self.options.timeout))
    }

    /// Partition counts of Kafka topics, from the brokers' metadata (one topic, or all).
    async fn metadata(&self, kafka_topic: Option<String>) -> Result<Vec<(String, u32)>> {
        let meta = self.meta.clone();
        let timeout = self.options.timeout;
        let what = format!(
            "cannot read the metadata of {}",
            kafka_topic.as_deref().unwrap_or("the cluster")
        );
        blocking(what, move || {
            let metadata = meta.fetch_metadata(kafka_topic.as_deref(), timeout)?;
            Ok(metadata
                .topics()
                .iter()
                .filter(|t| t.error().is_none() && !t.partitions().is_empty())
                .map(|t| (t.name().to_owned(), t.partitions().len() as u32))
                .collect())
        })
        .await
    }

    /// A topic's partition count, or none if it does not exist.
    async fn partition_count(&self, topic: &str) -> Result<Option<u32>> {
        if let Some(n) = self
            .partitions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(topic)
        {
            return Ok(Some(*n));
        }
        let kafka = self.options.kafka_topic(topic);
        let found = self
            .metadata(Some(kafka.clone()))
            .await?
            .into_iter()
            .find(|(name, _)| *name == kafka)
            .map(|(_, n)| n);
        if let Some(n) = found {
            self.partitions
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(topic.to_owned(), n);
        }
        Ok(found)
    }

    async fn existing(&self, topic: &str) -> Result<u32> {
        self.partition_count(topic)
            .await?
            .ok_or_else(|| Error::unknown_topic(topic))
    }

    async fn check_partition(&self, topic: &str, partition: u32) -> Result<()> {
        let partitions = self.existing(topic).await?;
        if partition >= partitions {
            return Err(Error::unknown_partition(topic, partition, partitions));
        }
        Ok(())
    }

    pub(crate) async fn watermarks(&self, topic: &str, partition: u32) -> Result<Offsets> {
        let meta = self.meta.clone();
        let kafka = self.options.kafka_topic(topic);
        let timeout = self.options.timeout;
        let (low, high) = blocking(
            format!("cannot read the offsets of {topic}/{partition}"),
            move || meta.fetch_watermarks(&kafka, partition as i32, timeout),
        )
        .await?;
        let end = high.max(0) as u64;
        let start = (low.max(0) as u64).max(self.control.trim(topic, partition).min(end));
        Ok(Offsets { start, end })
    }

    /// The spec weir declared for a topic, or the defaults for one made by another client.
    fn spec(&self, topic: &str, partitions: u32) -> TopicSpec {
        self.control
            .topic_spec(topic)
            .unwrap_or_else(|| TopicSpec::with_partitions(partitions))
    }

    async fn info(&self, topic: &str, partitions: u32) -> Result<TopicInfo> {
        let mut start_offsets = Vec::with_capacity(partitions as usize);
        let mut end_offsets = Vec::with_capacity(partitions as usize);
        for partition in 0..partitions {
            let offsets = self.watermarks(topic, partition).await?;
            start_offsets.push(offsets.start);
            end_offsets.push(offsets.end);
        }
        let mut config = self.spec(topic, partitions);
        config.partitions = partitions;
        Ok(TopicInfo {
            name: topic.to_owned(),
            partitions,
            end_offsets,
            start_offsets,
            config,
        })
    }

    /// Sends records to their partitions; positions in input order once every one is
    /// acknowledged.
    async fn produce(
        &self,
        topic: &str,
        placed: Vec<(u32, Record)>,
    ) -> Result<Vec<RecordPosition>> {
        let kafka = self.options.kafka_topic(topic);
        let mut pending = Vec::with_capacity(placed.len());
        for (partition, record) in &placed {
            let mut out = FutureRecord::<[u8], [u8]>::to(&kafka)
                .partition(*partition as i32)
                .payload(record.value.as_ref());
            if let Some(key) = &record.key {
                out = out.key(key.as_ref());
            }
            if let Some(ts) = record.timestamp_ms {
                out = out.timestamp(ts);
            }
            let future = self
                .producer
                .send_result(out)
                .map_err(|(e, _)| from_kafka(format!("cannot append to topic \"{topic}\""), &e))?;
            pending.push(future);
        }
        let mut positions = Vec::with_capacity(pending.len());
        for future in pending {
            let delivery = tokio::time::timeout(self.options.timeout * 2, future)
                .await
                .map_err(|_| {
                    unavailable(
                        format!("cannot append to topic \"{topic}\""),
                        "no acknowledgement from the brokers in time",
                    )
                })?
                .map_err(|_| {
                    unavailable(
                        format!("cannot append to topic \"{topic}\""),
                        "the producer was closed",
                    )
                })?
                .map_err(|(e, _)| from_kafka(format!("cannot append to topic \"{topic}\""), &e))?;
            positions.push(RecordPosition {
                partition: delivery.partition as u32,
                offset: delivery.offset as u64,
            });
        }
        Ok(positions)
    }

    fn check_records(&self, topic: &str, spec: &TopicSpec, records: &[Record]) -> Result<()> {
        if spec.compaction && records.iter().any(|r| r.key.is_none()) {
            return Err(Error::invalid(format!(
                "topic \"{topic}\" is compacted, so every record needs a key"
            ))
            .with_code("key-required"));
        }
        Ok(())
    }
}

/// The Kafka topic configs that carry a weir spec.
fn kafka_configs(spec: &TopicSpec) -> Vec<(&'static str, String)> {
    let mut configs = vec![
        (
            "retention.ms",
            spec.retention_ms
                .map_or("-1".to_owned(), |ms| ms.to_string()),
        ),
        (
            "retention.bytes",
            spec.retention_bytes
                .map_or("-1".to_owned(), |b| b.to_string()),
        ),
        (
            "cleanup.policy",
            if spec.compaction { "compact" } else { "delete" }.to_owned(),
        ),
    ];
    match spec.durability {
        Durability::Always => configs.push(("flush.messages", "1".to_owned())),
        Durability::Interval { ms } => configs.push(("flush.ms", ms.to_string())),
        Durability::Never => {}
    }
    configs
}

#[async_trait]
impl EventLog for KafkaLog {
    fn backend(&self) -> &'static str {
        "kafka"
    }

    fn membership(&self) -> Option<Arc<dyn weir_log::Membership>> {
        Some(Arc::new(control::KafkaMembers {
            control: self.inner.control.clone(),
        }))
    }

    fn deploys(&self) -> Option<Arc<dyn weir_log::SharedDeploys>> {
        Some(Arc::new(deploys::KafkaDeploys {
            inner: self.inner.clone(),
        }))
    }

    fn guarantees(&self, _spec: &TopicSpec) -> Guarantees {
        Guarantees {
            // acks=all: held by every in-sync replica; each broker syncs by its own flush
            // settings, so on one broker a power loss may take back acknowledged records.
            acknowledged: Acknowledgement::Replicated,
            atomicity: Atomicity::Record,
            atomic_batches: false,
            // The idempotent producer drops its own retries, not a record sent twice.
            deduplication: Deduplication::None,
            transactions: TransactionGuarantee::AtLeastOnce,
            conditional_appends: ConditionalAppends {
                partition_end: false,
                key_last: false,
            },
            fenced_commits: true,
        }
    }

    async fn create_topic(&self, name: &str, spec: &TopicSpec) -> Result<TopicCreated> {
        let inner = &self.inner;
        weir_log::check_new_topic("Kafka", name, spec)?;
        let kafka = inner.options.kafka_topic(name);
        if kafka.len() > weir_log::MAX_NAME_LEN {
            return Err(Error::invalid(format!(
                "topic name \"{name}\" is too long with the prefix: {kafka} is longer than {} characters",
                weir_log::MAX_NAME_LEN
            )));
        }
        let configs = kafka_configs(spec);
        let created = match inner.partition_count(name).await? {
            Some(n) if n != spec.partitions => {
                return Err(Error::new(
                    ErrorKind::Exists,
                    format!(
                        "topic \"{name}\" exists with {n} partition(s); its partition count cannot change to {}",
                        spec.partitions
                    ),
                )
                .with_code("partitions-differ"));
            }
            Some(_) => {
                let mut alter = AlterConfig::new(ResourceSpecifier::Topic(&kafka));
                for (key, value) in &configs {
                    alter = alter.set(key, value);
                }
                // A broker without AlterConfigs (tansu) still gets weir's own spec (its
                // retention pass applies the limits); say so rather than fail.
                match inner
                    .admin
                    .alter_configs([&alter], &inner.admin_options())
                    .await
                {
                    Ok(results) => {
                        for result in results {
                            if let Err((_, code)) = result {
                                tracing::warn!(topic = %kafka, error = %code, "the brokers did not take the topic's configs");
                            }
                        }
                    }
                    Err(
                        e @ KafkaError::AdminOp(RDKafkaErrorCode::UnsupportedFeature)
                        | e @ KafkaError::AdminOpCreation(_),
                    ) => {
                        tracing::warn!(topic = %kafka, error = %e, "the brokers cannot change topic configs; weir's retention pass applies the new limits");
                    }
                    Err(e) => return Err(unavailable(format!("cannot update topic {kafka}"), e)),
                }
                TopicCreated::Updated
            }
            None => {
                let mut new = NewTopic::new(
                    &kafka,
                    spec.partitions as i32,
                    TopicReplication::Fixed(i32::from(inner.options.replicas)),
                );
                for (key, value) in &configs {
                    new = new.set(key, value);
                }
                let results = inner
                    .admin
                    .create_topics([&new], &inner.admin_options())
                    .await
                    .map_err(|e| unavailable(format!("cannot create topic {kafka}"), e))?;
                for result in results {
                    match result {
                        Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                        Err((_, code)) => {
                            return Err(Error::new(
                                if code == RDKafkaErrorCode::InvalidConfig {
                                    ErrorKind::Invalid
                                } else {
                                    ErrorKind::Unavailable
                                },
                                format!("cannot create topic {kafka}: {code}"),
                            ));
                        }
                    }
                }
                // Created is not yet served: wait until every partition has a leader.
                let deadline = tokio::time::Instant::now() + inner.options.timeout;
                loop {
                    inner
                        .partitions
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .remove(name);
                    if inner.partition_count(name).await? == Some(spec.partitions) {
                        break;
                    }
                    if tokio::time::Instant::now() > deadline {
                        return Err(unavailable(
                            format!("topic {kafka} was created"),
                            "but the brokers did not serve it in time",
                        ));
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                TopicCreated::Created
            }
        };
        inner
            .control
            .write(ControlRecord::Topic {
                name: name.to_owned(),
                spec: spec.clone(),
            })
            .await?;
        Ok(created)
    }

    async fn topic(&self, name: &str) -> Result<Option<TopicInfo>> {
        self.inner.control.sync().await?;
        match self.inner.partition_count(name).await? {
            Some(n) => Ok(Some(self.inner.info(name, n).await?)),
            None => Ok(None),
        }
    }

    async fn topics(&self) -> Result<Vec<TopicInfo>> {
        let inner = &self.inner;
        inner.control.sync().await?;
        let declared = inner.control.topic_names();
        let mut existing: Vec<(String, u32)> = inner
            .metadata(None)
            .await?
            .into_iter()
            .filter_map(|(kafka, n)| {
                let name = inner.options.weir_topic(&kafka)?;
                declared.contains(name).then(|| (name.to_owned(), n))
            })
            .collect();
        existing.sort();
        let mut infos = Vec::with_capacity(existing.len());
        for (name, n) in existing {
            infos.push(inner.info(&name, n).await?);
        }
        Ok(infos)
    }

    async fn append(&self, topic: &str, records: Vec<Record>) -> Result<Vec<RecordPosition>> {
        let inner = &self.inner;
        let partitions = inner.existing(topic).await?;
        inner.check_records(topic, &inner.spec(topic, partitions), &records)?;
        let placed = records
            .into_iter()
            .map(|record| {
                let partition = match &record.key {
                    Some(key) => weir_log::partition_for_key(key, partitions),
                    None => inner.next_partition.fetch_add(1, Ordering::Relaxed) % partitions,
                };
                (partition, record)
            })
            .collect();
        inner.produce(topic, placed).await
    }

    async fn append_to(
        &self,
        topic: &str,
        partition: u32,
        records: Vec<Record>,
        expect: Expect,
    ) -> Result<Vec<RecordPosition>> {
        let inner = &self.inner;
        inner.check_partition(topic, partition).await?;
        if expect != Expect::Any {
            return Err(Error::invalid(
                "the Kafka backend cannot check an append's condition (Kafka has no conditional appends); entities need the embedded or NATS backend",
            )
            .with_code("condition-unsupported"));
        }
        let partitions = inner.existing(topic).await?;
        inner.check_records(topic, &inner.spec(topic, partitions), &records)?;
        inner
            .produce(topic, records.into_iter().map(|r| (partition, r)).collect())
            .await
    }

    async fn read(
        &self,
        topic: &str,
        partition: u32,
        from_offset: u64,
        max_records: usize,
    ) -> Result<Vec<StoredRecord>> {
        self.inner.check_partition(topic, partition).await?;
        if max_records == 0 {
            return Ok(Vec::new());
        }
        let key = (topic.to_owned(), partition);
        let kept = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&key);
        let mut reader = match kept {
            Some(mut reader) => {
                reader.continue_at(from_offset);
                reader
            }
            None => reader::KafkaReader::new(self.inner.clone(), topic, partition, from_offset)?,
        };
        let records = reader.read(max_records).await?.records;
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < IDLE_READERS {
            idle.insert(key, reader);
        }
        Ok(records)
    }

    async fn reader(
        &self,
        topic: &str,
        partition: u32,
        from_offset: u64,
    ) -> Result<Box<dyn PartitionReader>> {
        self.inner.check_partition(topic, partition).await?;
        Ok(Box::new(reader::KafkaReader::new(
            self.inner.clone(),
            topic,
            partition,
            from_offset,
        )?))
    }

    async fn offsets(&self, topic: &str, partition: u32) -> Result<Offsets> {
        self.inner.check_partition(topic, partition).await?;
        self.inner.watermarks(topic, partition).await
    }

    async fn offset_for_time(&self, topic: &str, partition: u32, timestamp_ms: i64) -> Result<u64> {
        let inner = &self.inner;
        inner.check_partition(topic, partition).await?;
        let Offsets { start, end } = inner.watermarks(topic, partition).await?;
        let mut list = TopicPartitionList::new();
        list.add_partition_offset(
            &inner.options.kafka_topic(topic),
            partition as i32,
            Offset::Offset(timestamp_ms),
        )
        .map_err(|e| from_kafka("cannot ask for an offset by time".into(), &e))?;
        let meta = inner.meta.clone();
        let timeout = inner.options.timeout;
        let found = blocking(
            format!("cannot find the offset at {timestamp_ms} ms in {topic}/{partition}"),
            move || meta.offsets_for_times(list, timeout),
        )
        .await?;
        let offset = found
            .elements()
            .first()
            .map(|e| e.offset())
            .unwrap_or(Offset::End);
        let native = match offset {
            Offset::Offset(o) if o >= 0 => (o as u64).min(end),
            _ => end,
        };
        // Checked against the records around it: a broker without a time index (tansu
        // 0.6.0 answers the start for any time) gets a binary search over the records.
        let first_at = async |offset: u64| -> Result<Option<StoredRecord>> {
            if offset >= end {
                return Ok(None);
            }
            Ok(self
                .read(topic, partition, offset, 1)
                .await?
                .into_iter()
                .next())
        };
        let at_or_after = first_at(native)
            .await?
            .is_none_or(|r| r.timestamp_ms >= timestamp_ms);
        let before = native <= start
            || first_at(native - 1)
                .await?
                .is_none_or(|r| r.offset >= native || r.timestamp_ms < timestamp_ms);
        if at_or_after && before {
            return Ok(native);
        }
        let (mut low, mut high) = (start, end);
        while low < high {
            let mid = low + (high - low) / 2;
            match first_at(mid).await? {
                Some(r) if r.timestamp_ms < timestamp_ms => low = r.offset + 1,
                _ => high = mid,
            }
        }
        Ok(first_at(low).await?.map_or(end, |r| r.offset))
    }

    async fn claim(&self, group: &str, topic: &str, partition: u32) -> Result<u64> {
        self.inner.control.claim(group, topic, partition).await
    }

    async fn generation(&self, group: &str, topic: &str, partition: u32) -> Result<u64> {
        self.inner.control.generation(group, topic, partition).await
    }

    async fn commit_offset(&self, commit: GroupCommit) -> Result<()> {
        let inner = &self.inner;
        inner
            .check_partition(&commit.topic, commit.partition)
            .await?;
        let end = inner.watermarks(&commit.topic, commit.partition).await?.end;
        if commit.next_offset > end {
            return Err(Error::invalid(format!(
                "cannot commit offset {} for group \"{}\" in {}/{}: the partition ends at {end}",
                commit.next_offset, commit.group, commit.topic, commit.partition
            ))
            .with_code("offset-past-end"));
        }
        inner.control.commit(commit).await
    }

    async fn committed_offset(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
    ) -> Result<Option<u64>> {
        self.inner.control.committed(group, topic, partition).await
    }

    /// Trims each partition of a topic with a size or age limit to it with `DeleteRecords`
    /// (the broker applies the same limits by whole segments, when it gets to them).
    async fn enforce_retention(&self) -> Result<RetentionReport> {
        let inner = &self.inner;
        inner.control.sync().await?;
        let mut report = RetentionReport::default();
        for name in inner.control.topic_names() {
            let Some(partitions) = inner.partition_count(&name).await? else {
                continue;
            };
            let spec = inner.spec(&name, partitions);
            if spec.compaction || (spec.retention_bytes.is_none() && spec.retention_ms.is_none()) {
                continue;
            }
            for partition in 0..partitions {
                let offsets = inner.watermarks(&name, partition).await?;
                let mut keep_from = offsets.start;
                if let Some(ms) = spec.retention_ms {
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis() as i64);
                    let cut = self
                        .offset_for_time(&name, partition, now - ms as i64)
                        .await?;
                    keep_from = keep_from.max(cut.min(offsets.end.saturating_sub(1)));
                }
                if let Some(limit) = spec.retention_bytes {
                    keep_from = keep_from.max(
                        reader::first_within(inner.clone(), &name, partition, offsets, limit)
                            .await?,
                    );
                }
                if keep_from <= offsets.start {
                    continue;
                }
                let mut list = TopicPartitionList::new();
                list.add_partition_offset(
                    &inner.options.kafka_topic(&name),
                    partition as i32,
                    Offset::Offset(keep_from as i64),
                )
                .map_err(|e| from_kafka("cannot delete records".into(), &e))?;
                inner
                    .admin
                    .delete_records(&list, &inner.admin_options())
                    .await
                    .map_err(|e| {
                        unavailable(
                            format!("cannot delete old records of {name}/{partition}"),
                            e,
                        )
                    })?;
                inner
                    .control
                    .write(ControlRecord::Trim {
                        topic: name.clone(),
                        partition,
                        start: keep_from,
                    })
                    .await?;
                report.records_removed += keep_from - offsets.start;
            }
        }
        Ok(report)
    }
}

/// Flushes the producer when the log is dropped, so nothing queued is left unsent.
impl Drop for Inner {
    fn drop(&mut self) {
        let _ = self.producer.flush(Duration::from_secs(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_brokers_prefix_and_settings() {
        let options =
            KafkaOptions::from_url("kafka://a:9092,b:9092/orders?replicas=3&timeout_ms=500")
                .expect("valid");
        assert_eq!(options.brokers, ["a:9092", "b:9092"]);
        assert_eq!(options.prefix.as_deref(), Some("orders"));
        assert_eq!(options.replicas, 3);
        assert_eq!(options.timeout, Duration::from_millis(500));
        assert_eq!(options.kafka_topic("crm.orders"), "orders.crm.orders");
        assert_eq!(options.weir_topic("orders.crm.orders"), Some("crm.orders"));
        assert_eq!(options.weir_topic("other.crm.orders"), None);
        assert_eq!(options.control_topic(), "__weir_control.orders");

        let plain = KafkaOptions::from_url("kafka://localhost:9092").expect("valid");
        assert_eq!(plain.prefix, None);
        assert_eq!(plain.kafka_topic("t"), "t");
        assert_eq!(plain.control_topic(), "__weir_control");

        for bad in [
            "nats://a:1",
            "kafka://",
            "kafka://host",
            "kafka://a:1/bad.prefix",
            "kafka://a:1?replicas=0",
            "kafka://a:1?linger=5",
        ] {
            let err = KafkaOptions::from_url(bad).expect_err(bad);
            assert_eq!(err.kind(), ErrorKind::Invalid, "{bad}: {err}");
        }
    }

    #[test]
    fn a_spec_becomes_kafka_topic_configs() {
        let spec = TopicSpec {
            retention_ms: Some(60_000),
            compaction: true,
            durability: Durability::Interval { ms: 50 },
            ..TopicSpec::default()
        };
        let configs = kafka_configs(&spec);
        assert!(configs.contains(&("retention.ms", "60000".into())));
        assert!(configs.contains(&("retention.bytes", "-1".into())));
        assert!(configs.contains(&("cleanup.policy", "compact".into())));
        assert!(configs.contains(&("flush.ms", "50".into())));
        assert!(
            kafka_configs(&TopicSpec::default()).contains(&("flush.messages", "1".into())),
            "fsync = always asks the broker to flush every message"
        );
    }
}
