//! weir's NATS JetStream backend of the log family ([`weir_log::EventLog`]).
//!
//! **The mapping** (see `names` for the exact names):
//! - Topic T's partition P is a stream of its own, `{prefix}_{T}_{P}`; a record's offset
//!   is its stream sequence minus one. Offsets are dense except where retention or
//!   compaction deleted records. Retention (`retention_ms`, `retention_bytes`) is the
//!   stream's `max_age` and `max_bytes`, applied by the server as it goes.
//! - A record's key is the last token of its subject, so `Expect::KeyLast` is the
//!   server's `Nats-Expected-Last-Subject-Sequence` and compaction is
//!   `max_msgs_per_subject = 1`. `Expect::End` is `Nats-Expected-Last-Sequence`. Both are
//!   checked by the server atomically with the write.
//! - A call's records for one partition go as one **atomic batch** (nats-server 2.12+,
//!   stream setting `allow_atomic`): all are stored or none. On an older server each record
//!   is its own publish, and [`weir_log::Guarantees::atomicity`] says so.
//! - Topic declarations live in the KV bucket `{prefix}_topics`; group offsets and owner
//!   generations in `{prefix}_groups` (`claim` and `commit_offset` are compare-and-set on
//!   the entry's revision, so a fenced owner changes nothing).
//! - A fleet's members heartbeat into `{prefix}_members`; its deploys are records in
//!   `{prefix}_deployments` and components in the object store `{prefix}_functions`.
//! - Every call is bounded in time by the URL's `timeout_ms` (a listing, which streams
//!   from a consumer no request timeout covers, included), so a server lost mid-call is
//!   an `Unavailable` error, never a wait for ever.
//! - An acknowledgement is the server's PubAck: what it means for durability is the
//!   server's `sync_interval` and the streams' replicas, which a client cannot see, so the
//!   URL declares them (`?sync=always`, `?replicas=3`).
//!
//! Transactions are at-least-once, as the trait's default: outputs, then the group commit;
//! the outputs go as plain publishes in runs by key (not as atomic batches, which the
//! server stages on disk batch by batch), so a transaction that fails part-way may have
//! stored some of a partition's records before it is sent again whole; each key's
//! records are first stored in their order (see `publish.rs`).

mod deploys;
mod groups;
mod keyvalue;
mod members;
mod names;
mod publish;
mod reader;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};
use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use weir_log::{
    Acknowledgement, Atomicity, ConditionalAppends, Deduplication, Error, ErrorKind, EventLog,
    Expect, GroupCommit, Guarantees, Offsets, PartitionReader, Record, RecordPosition, Result,
    RetentionReport, SharedLog, StoredRecord, TopicCreated, TopicInfo, TopicSpec, Transaction,
    TransactionGuarantee,
};

pub use crate::keyvalue::NatsKv;
pub use crate::members::MEMBER_LIFETIME;
use crate::names::Names;

/// How weir uses one NATS server or cluster, from the backend's URL.
#[derive(Debug, Clone, PartialEq)]
pub struct NatsOptions {
    /// The servers to connect to, `host:port` (with `nats://` or `tls://`).
    pub servers: Vec<String>,
    /// The start of every stream, subject and bucket weir makes, so several apps share a
    /// server: `weir` unless the URL's path names another.
    pub prefix: String,
    /// Each stream's replicas (1 on a single server).
    pub replicas: usize,
    /// What the server's `jetstream { sync_interval }` is, as declared in the URL: what an
    /// acknowledged append survives.
    pub sync: ServerSync,
    /// How long a call may wait for the server before it fails as unavailable.
    pub timeout: Duration,
}

/// The server's `sync_interval`, as the operator declares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerSync {
    /// `sync_interval: always` (nats-server 2.10+): every message fsynced before its ack.
    Always,
    /// Synced every `ms` milliseconds (the server's default is two minutes).
    Interval { ms: u64 },
}

/// The server's default `sync_interval`.
const DEFAULT_SYNC_MS: u64 = 120_000;

impl NatsOptions {
    /// Reads `nats://host:port[,host:port…][/prefix][?sync=always|MS&replicas=N&timeout_ms=MS]`.
    pub fn from_url(url: &str) -> Result<NatsOptions> {
        let invalid = |why: String| {
            Error::invalid(format!(
                "invalid NATS backend URL \"{url}\": {why}; use nats://HOST:PORT[/PREFIX][?sync=always|MS&replicas=N]"
            ))
        };
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| invalid("no scheme".into()))?;
        if !matches!(scheme, "nats" | "tls") {
            return Err(invalid(format!(
                "the scheme is \"{scheme}\", not nats or tls"
            )));
        }
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (hosts, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if hosts.is_empty() {
            return Err(invalid("no host".into()));
        }
        let prefix = match prefix.trim_end_matches('/') {
            "" => "weir",
            p => p,
        };
        if !prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            || prefix.len() > 32
        {
            return Err(invalid(format!(
                "the prefix \"{prefix}\" is not 1 to 32 of a-z, A-Z, 0-9 and '-'"
            )));
        }
        let mut options = NatsOptions {
            servers: hosts
                .split(',')
                .map(|host| format!("{scheme}://{host}"))
                .collect(),
            prefix: prefix.to_owned(),
            replicas: 1,
            sync: ServerSync::Interval {
                ms: DEFAULT_SYNC_MS,
            },
            timeout: Duration::from_secs(10),
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            match name {
                "sync" if value == "always" => options.sync = ServerSync::Always,
                "sync" => {
                    options.sync = ServerSync::Interval {
                        ms: value.parse().map_err(|_| {
                            invalid(format!("sync is \"{value}\", not always or milliseconds"))
                        })?,
                    }
                }
                "replicas" => {
                    options.replicas = value
                        .parse()
                        .ok()
                        .filter(|r| (1..=5).contains(r))
                        .ok_or_else(|| invalid(format!("replicas is \"{value}\", not 1 to 5")))?
                }
                "timeout_ms" => {
                    options.timeout = Duration::from_millis(value.parse().map_err(|_| {
                        invalid(format!("timeout_ms is \"{value}\", not milliseconds"))
                    })?)
                }
                other => return Err(invalid(format!("unknown setting \"{other}\""))),
            }
        }
        Ok(options)
    }

    fn acknowledged(&self) -> Acknowledgement {
        match self.sync {
            _ if self.replicas > 1 => Acknowledgement::Replicated,
            ServerSync::Always => Acknowledgement::Fsynced,
            ServerSync::Interval { ms } => Acknowledgement::PeriodicSync { ms },
        }
    }
}

/// A topic as declared in the topics bucket.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TopicMeta {
    version: u32,
    config: TopicSpec,
}

const TOPIC_META_VERSION: u32 = 1;

/// The NATS JetStream log. Cheap to share: every method works through one connection.
pub struct NatsLog {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) client: async_nats::Client,
    pub(crate) js: jetstream::Context,
    pub(crate) names: Names,
    pub(crate) options: NatsOptions,
    topics: kv::Store,
    groups: kv::Store,
    /// The fleet's live members (`{prefix}_members`).
    members: Arc<members::NatsMembers>,
    /// The fleet's deploys (`{prefix}_deployments`, `{prefix}_functions`).
    deploys: Arc<deploys::NatsDeploys>,
    /// Topics by name, as last read or written (a topic's partition count never changes).
    known: Mutex<HashMap<String, Arc<TopicMeta>>>,
    /// The highest end seen per partition (from appends, reads and stream states).
    ends: Mutex<HashMap<(String, u32), u64>>,
    next_partition: AtomicU32,
    /// Whether the server takes atomic batches (nats-server 2.12+).
    pub(crate) atomic_batches: bool,
    /// Publishes that runs (`publish.rs`) may have awaiting acknowledgement, well below
    /// the context's `max_ack_inflight`: a run takes its slots all at once before it
    /// sends (the client waits for a free slot with no timeout, and a run frees its own
    /// only once it has sent them all, so runs that took slots one by one could hold
    /// them all and wait on each other for ever).
    pub(crate) run_slots: tokio::sync::Semaphore,
}

/// The JetStream context's limit on publishes awaiting acknowledgement.
const MAX_ACK_INFLIGHT: usize = 10_000;

/// Opens the log on the server the URL names (see [`NatsOptions::from_url`]).
pub async fn open_shared(url: &str) -> Result<SharedLog> {
    Ok(Arc::new(NatsLog::open(NatsOptions::from_url(url)?).await?))
}

/// Deletes everything weir keeps under `prefix` on the server of `url` (every topic's
/// partition streams, and the buckets' streams); how many streams it deleted. For
/// benches and tests that made a prefix of their own.
pub async fn remove_prefix(url: &str, prefix: &str) -> Result<usize> {
    use futures::TryStreamExt;
    let options = NatsOptions::from_url(url)?;
    let client = async_nats::connect(options.servers.clone())
        .await
        .map_err(|e| unavailable(format!("cannot connect to {:?}", options.servers), e))?;
    let js = jetstream::new(client);
    let names: Vec<String> = js
        .stream_names()
        .try_collect()
        .await
        .map_err(|e| unavailable("cannot list the streams".to_owned(), e))?;
    let mut deleted = 0;
    for name in names {
        if name.starts_with(&format!("{prefix}_"))
            || name.starts_with(&format!("KV_{prefix}_"))
            || name.starts_with(&format!("OBJ_{prefix}_"))
        {
            js.delete_stream(&name)
                .await
                .map_err(|e| unavailable(format!("cannot delete stream {name}"), e))?;
            deleted += 1;
        }
    }
    Ok(deleted)
}

impl NatsLog {
    pub async fn open(options: NatsOptions) -> Result<NatsLog> {
        let client = async_nats::ConnectOptions::new()
            .name("weir")
            .connection_timeout(options.timeout)
            .request_timeout(Some(options.timeout))
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connect(options.servers.clone())
            .await
            .map_err(|e| unavailable(format!("cannot connect to {:?}", options.servers), e))?;
        // `retry_on_initial_connect` returns at once; wait for the first connection so a
        // wrong address fails here, with its reason, not at the first call.
        let deadline = tokio::time::Instant::now() + options.timeout;
        while client.connection_state() != async_nats::connection::State::Connected {
            if tokio::time::Instant::now() > deadline {
                return Err(Error::new(
                    ErrorKind::Unavailable,
                    format!(
                        "cannot connect to the NATS server at {:?} within {:?}",
                        options.servers, options.timeout
                    ),
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let js = jetstream::ContextBuilder::new()
            .timeout(options.timeout)
            .max_ack_inflight(MAX_ACK_INFLIGHT)
            .build(client.clone());
        let names = Names::new(&options.prefix);
        let topics = open_bucket(&js, &names.topics_bucket(), options.replicas).await?;
        let groups = open_bucket(&js, &names.groups_bucket(), options.replicas).await?;
        let members = open_bucket_aged(
            &js,
            &names.members_bucket(),
            options.replicas,
            members::MEMBER_LIFETIME,
        )
        .await?;
        let deploys = deploys::NatsDeploys {
            js: js.clone(),
            records: open_bucket(&js, &names.deployments_bucket(), options.replicas).await?,
            bucket: names.functions_bucket(),
            replicas: options.replicas,
            components: tokio::sync::OnceCell::new(),
        };
        let version = client.server_info().version;
        let atomic_batches = version_at_least(&version, (2, 12));
        tracing::info!(servers = ?options.servers, prefix = %options.prefix, server_version = %version, atomic_batches, "NATS JetStream log opened");
        Ok(NatsLog {
            inner: Arc::new(Inner {
                client,
                js,
                names,
                options,
                topics,
                groups,
                members: Arc::new(members::NatsMembers { bucket: members }),
                deploys: Arc::new(deploys),
                known: Mutex::new(HashMap::new()),
                ends: Mutex::new(HashMap::new()),
                next_partition: AtomicU32::new(0),
                atomic_batches,
                run_slots: tokio::sync::Semaphore::new(publish::RUN_SLOTS),
            }),
        })
    }
}

impl NatsLog {
    /// Deletes a topic: its declaration, then its streams. weir itself never deletes a
    /// topic; benchmarks and tests clean up with it.
    pub async fn delete_topic(&self, name: &str) -> Result<()> {
        let inner = &self.inner;
        let meta = inner.existing(name).await?;
        inner
            .topics
            .purge(names::token(name))
            .await
            .map_err(|e| unavailable(format!("cannot remove topic \"{name}\""), e))?;
        inner.lock_known().remove(name);
        for partition in 0..meta.config.partitions {
            let stream = inner.names.stream(name, partition);
            inner
                .js
                .delete_stream(&stream)
                .await
                .map_err(|e| unavailable(format!("cannot delete stream {stream}"), e))?;
        }
        Ok(())
    }
}

/// Whether a server version string (`2.12.1`, `2.15.1-beta`) is at least `min`.
fn version_at_least(version: &str, min: (u64, u64)) -> bool {
    let mut parts = version
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse::<u64>().ok());
    let major = parts.next().unwrap_or(0);
    let minor = parts.next().unwrap_or(0);
    (major, minor) >= min
}

/// Opens a KV bucket, making its stream first when it is missing. The stream is made by
/// hand (as a KV bucket's stream is defined) because async-nats' `create_key_value`
/// cannot read nats-server 2.9's account info. Without direct gets: those may be answered
/// by a replica that is behind, and a claim or a commit must see the latest entry.
pub(crate) async fn open_bucket(
    js: &jetstream::Context,
    bucket: &str,
    replicas: usize,
) -> Result<kv::Store> {
    open_bucket_aged(js, bucket, replicas, Duration::ZERO).await
}

/// [`open_bucket`] whose entries the server drops `max_age` after their last put (zero:
/// never).
pub(crate) async fn open_bucket_aged(
    js: &jetstream::Context,
    bucket: &str,
    replicas: usize,
    max_age: Duration,
) -> Result<kv::Store> {
    let config = stream::Config {
        max_age,
        name: format!("KV_{bucket}"),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: 1,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: false,
        discard: stream::DiscardPolicy::New,
        num_replicas: replicas,
        storage: stream::StorageType::File,
        ..Default::default()
    };
    js.create_or_update_stream(config)
        .await
        .map_err(|e| unavailable(format!("cannot make the KV bucket \"{bucket}\""), e))?;
    js.get_key_value(bucket)
        .await
        .map_err(|e| unavailable(format!("cannot open the KV bucket \"{bucket}\""), e))
}

pub(crate) fn unavailable(what: String, e: impl std::fmt::Display) -> Error {
    Error::new(ErrorKind::Unavailable, format!("{what}: {e}"))
}

pub(crate) fn failed(what: String, e: impl std::fmt::Display) -> Error {
    Error::new(ErrorKind::Failed, format!("{what}: {e}"))
}

/// A record's time header, when its producer gave one.
pub(crate) const TIME_HEADER: &str = "Weir-Time";

impl Inner {
    fn stream_config(&self, topic: &str, partition: u32, spec: &TopicSpec) -> stream::Config {
        stream::Config {
            name: self.names.stream(topic, partition),
            subjects: vec![self.names.stream_subjects(topic, partition)],
            max_age: spec
                .retention_ms
                .map(Duration::from_millis)
                .unwrap_or_default(),
            max_bytes: spec
                .retention_bytes
                .map_or(-1, |b| i64::try_from(b).unwrap_or(i64::MAX)),
            max_messages_per_subject: if spec.compaction { 1 } else { -1 },
            discard: stream::DiscardPolicy::Old,
            storage: stream::StorageType::File,
            num_replicas: self.options.replicas,
            allow_direct: true,
            allow_atomic_publish: self.atomic_batches,
            description: Some(format!(
                "weir topic \"{topic}\" partition {partition} of {}",
                spec.partitions
            )),
            ..Default::default()
        }
    }

    /// The topic's declaration: from the cache, or the topics bucket.
    async fn meta(&self, topic: &str) -> Result<Option<Arc<TopicMeta>>> {
        if let Some(meta) = self.lock_known().get(topic) {
            return Ok(Some(meta.clone()));
        }
        if weir_log::check_name(topic).is_err() {
            return Ok(None);
        }
        let entry = self
            .topics
            .get(names::token(topic))
            .await
            .map_err(|e| unavailable(format!("cannot read topic \"{topic}\""), e))?;
        let Some(bytes) = entry else {
            return Ok(None);
        };
        let meta: TopicMeta = serde_json::from_slice(&bytes).map_err(|e| {
            failed(
                format!("the declaration of topic \"{topic}\" in the topics bucket is unreadable"),
                e,
            )
        })?;
        let meta = Arc::new(meta);
        self.lock_known().insert(topic.to_owned(), meta.clone());
        Ok(Some(meta))
    }

    async fn existing(&self, topic: &str) -> Result<Arc<TopicMeta>> {
        self.meta(topic)
            .await?
            .ok_or_else(|| Error::unknown_topic(topic))
    }

    async fn partition(&self, topic: &str, partition: u32) -> Result<Arc<TopicMeta>> {
        let meta = self.existing(topic).await?;
        if partition >= meta.config.partitions {
            return Err(Error::unknown_partition(
                topic,
                partition,
                meta.config.partitions,
            ));
        }
        Ok(meta)
    }

    fn lock_known(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<TopicMeta>>> {
        self.known.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The partition's stream, with its info as of now.
    pub(crate) async fn stream(&self, topic: &str, partition: u32) -> Result<stream::Stream> {
        let name = self.names.stream(topic, partition);
        self.js.get_stream(&name).await.map_err(|e| match e.kind() {
            // Gone (deleted by another node): not worth retrying.
            jetstream::context::GetStreamErrorKind::JetStream(js)
                if js.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND =>
            {
                self.lock_known().remove(topic);
                Error::new(
                    ErrorKind::NotFound,
                    format!("partition {partition} of topic \"{topic}\" has no stream ({name}) on the server"),
                )
            }
            _ => unavailable(format!("cannot read stream {name}"), e),
        })
    }

    /// The partition's stream state.
    pub(crate) async fn state(&self, topic: &str, partition: u32) -> Result<stream::State> {
        let state = self
            .stream(topic, partition)
            .await?
            .cached_info()
            .state
            .clone();
        self.note_end(topic, partition, offsets_of(&state).end);
        Ok(state)
    }

    /// Remembers that a partition's end is at least `end` (ends only grow), so a commit
    /// below it needs no round trip to check it.
    pub(crate) fn note_end(&self, topic: &str, partition: u32, end: u64) {
        let mut ends = self.ends.lock().unwrap_or_else(PoisonError::into_inner);
        match ends.get_mut(&(topic.to_owned(), partition)) {
            Some(known) => *known = (*known).max(end),
            None => {
                ends.insert((topic.to_owned(), partition), end);
            }
        }
    }

    fn known_end(&self, topic: &str, partition: u32) -> u64 {
        self.ends
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&(topic.to_owned(), partition))
            .copied()
            .unwrap_or(0)
    }

    async fn offsets(&self, topic: &str, partition: u32) -> Result<Offsets> {
        self.partition(topic, partition).await?;
        Ok(offsets_of(&self.state(topic, partition).await?))
    }

    fn check_records(&self, topic: &str, meta: &TopicMeta, records: &[Record]) -> Result<()> {
        let max = self.client.server_info().max_payload;
        for record in records {
            if meta.config.compaction && record.key.is_none() {
                return Err(Error::invalid(format!(
                    "topic \"{topic}\" is compacted: every record needs a key"
                )));
            }
            if record
                .key
                .as_ref()
                .is_some_and(|k| k.len() > names::MAX_KEY_LEN)
            {
                return Err(Error::new(
                    ErrorKind::TooLarge,
                    format!(
                        "a record's key is longer than {} bytes, the most the NATS backend carries",
                        names::MAX_KEY_LEN
                    ),
                ));
            }
            // Headers and subject take a little more; the server refuses the rest.
            if record.value.len() + 512 > max {
                return Err(Error::new(
                    ErrorKind::TooLarge,
                    format!(
                        "a record of {} bytes is larger than the NATS server's max_payload ({max} bytes, less 512 for headers)",
                        record.value.len()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Refuses a commit past the partition's end (or of a partition that does not exist).
    async fn check_commit(&self, commit: &GroupCommit) -> Result<()> {
        self.partition(&commit.topic, commit.partition).await?;
        // The end only grows: a commit below one seen before needs no round trip.
        let end = match self.known_end(&commit.topic, commit.partition) {
            end if end >= commit.next_offset => end,
            _ => self.offsets(&commit.topic, commit.partition).await?.end,
        };
        if commit.next_offset > end {
            return Err(Error::invalid(format!(
                "cannot commit offset {} for group \"{}\" in partition {} of topic \"{}\": its end is {end}",
                commit.next_offset, commit.group, commit.partition, commit.topic
            )));
        }
        Ok(())
    }

    /// Appends `records` partitioned by key; each partition's share of them all or none
    /// when `atomic` (and the server has atomic batches), else record by record.
    async fn append_partitioned(
        &self,
        topic: &str,
        records: Vec<Record>,
        atomic: bool,
    ) -> Result<Vec<RecordPosition>> {
        let meta = self.existing(topic).await?;
        self.check_records(topic, &meta, &records)?;
        let partitions = meta.config.partitions;
        // Unkeyed records of one call share a partition (as Kafka's sticky partitioner),
        // so a call's records stay one batch.
        let sticky = self.next_partition.fetch_add(1, Ordering::Relaxed) % partitions;
        let mut by_partition: Vec<Vec<(usize, Record)>> = vec![Vec::new(); partitions as usize];
        for (i, record) in records.into_iter().enumerate() {
            let partition = match &record.key {
                Some(key) => weir_log::partition_for_key(key, partitions),
                None => sticky,
            };
            by_partition[partition as usize].push((i, record));
        }
        let total = by_partition.iter().map(Vec::len).sum();
        let sends = by_partition
            .into_iter()
            .enumerate()
            .filter(|(_, group)| !group.is_empty())
            .map(|(partition, group)| async move {
                let (indexes, records): (Vec<usize>, Vec<Record>) = group.into_iter().unzip();
                let offsets = self
                    .publish(topic, partition as u32, records, Expect::Any, atomic)
                    .await?;
                Ok::<_, Error>((partition as u32, indexes, offsets))
            });
        let mut positions = vec![
            RecordPosition {
                partition: 0,
                offset: 0
            };
            total
        ];
        for result in futures::future::join_all(sends).await {
            let (partition, indexes, offsets) = result?;
            for (i, offset) in indexes.into_iter().zip(offsets) {
                positions[i] = RecordPosition { partition, offset };
            }
        }
        Ok(positions)
    }
}

/// A partition's offsets from its stream's state.
pub(crate) fn offsets_of(state: &stream::State) -> Offsets {
    let end = state.last_sequence;
    let start = if state.messages == 0 {
        end
    } else {
        state.first_sequence.saturating_sub(1)
    };
    Offsets { start, end }
}

/// A record as stored, from a message of the partition's stream.
pub(crate) fn stored_record(
    partition: u32,
    sequence: u64,
    subject: &str,
    headers: Option<&async_nats::HeaderMap>,
    published: time::OffsetDateTime,
    value: Bytes,
) -> Result<StoredRecord> {
    let key = names::key_of(subject).map_err(|why| Error::new(ErrorKind::Failed, why))?;
    let timestamp_ms = headers
        .and_then(|h| h.get(TIME_HEADER))
        .and_then(|v| v.as_str().parse::<i64>().ok())
        .unwrap_or_else(|| (published.unix_timestamp_nanos() / 1_000_000) as i64);
    Ok(StoredRecord {
        partition,
        offset: sequence - 1,
        timestamp_ms,
        key,
        value,
    })
}

#[async_trait]
impl EventLog for NatsLog {
    fn backend(&self) -> &'static str {
        "nats"
    }

    fn membership(&self) -> Option<Arc<dyn weir_log::Membership>> {
        Some(self.inner.members.clone())
    }

    fn deploys(&self) -> Option<Arc<dyn weir_log::SharedDeploys>> {
        Some(self.inner.deploys.clone())
    }

    fn guarantees(&self, _spec: &TopicSpec) -> Guarantees {
        Guarantees {
            acknowledged: self.inner.options.acknowledged(),
            atomicity: if self.inner.atomic_batches {
                Atomicity::CallPerPartition
            } else {
                Atomicity::Record
            },
            atomic_batches: false,
            deduplication: Deduplication::None,
            transactions: TransactionGuarantee::AtLeastOnce,
            conditional_appends: ConditionalAppends {
                partition_end: true,
                key_last: true,
            },
            fenced_commits: true,
        }
    }

    async fn create_topic(&self, name: &str, spec: &TopicSpec) -> Result<TopicCreated> {
        let inner = &self.inner;
        weir_log::check_new_topic("NATS", name, spec)?;
        let longest = inner.names.stream(name, spec.partitions - 1);
        if longest.len() > names::MAX_STREAM_NAME {
            return Err(Error::invalid(format!(
                "topic name \"{name}\" is too long for the NATS backend: its stream name {longest} is longer than {} characters",
                names::MAX_STREAM_NAME
            )));
        }
        let key = names::token(name);
        // Declared with a compare-and-set on the entry's revision, so two nodes declaring
        // one topic at once agree on its partition count.
        for _ in 0..100 {
            inner.lock_known().remove(name);
            let entry = inner
                .topics
                .entry(key.as_str())
                .await
                .map_err(|e| unavailable(format!("cannot read topic \"{name}\""), e))?
                .filter(|e| e.operation == kv::Operation::Put);
            if let Some(entry) = &entry {
                let existing: TopicMeta = serde_json::from_slice(&entry.value).map_err(|e| {
                    failed(
                        format!("the declaration of topic \"{name}\" is unreadable"),
                        e,
                    )
                })?;
                if existing.config.partitions != spec.partitions {
                    return Err(Error::new(
                        ErrorKind::Exists,
                        format!(
                            "topic \"{name}\" already exists with {} partition(s), not {}; use {} or pick another topic name",
                            existing.config.partitions, spec.partitions, existing.config.partitions
                        ),
                    ));
                }
            }
            // The streams first, then the declaration: a topic is there once it is
            // declared, and a creation that stopped part-way is completed by the next.
            for partition in 0..spec.partitions {
                let config = inner.stream_config(name, partition, spec);
                inner
                    .js
                    .create_or_update_stream(config)
                    .await
                    .map_err(|e| {
                        let what = format!(
                            "cannot make the stream of partition {partition} of topic \"{name}\""
                        );
                        match e.kind() {
                            jetstream::context::CreateStreamErrorKind::TimedOut
                            | jetstream::context::CreateStreamErrorKind::JetStreamUnavailable
                            | jetstream::context::CreateStreamErrorKind::Response => {
                                unavailable(what, e)
                            }
                            _ => failed(what, e),
                        }
                    })?;
            }
            let meta = TopicMeta {
                version: TOPIC_META_VERSION,
                config: spec.clone(),
            };
            let bytes: Bytes = serde_json::to_vec(&meta)
                .map_err(|e| failed("encode".into(), e))?
                .into();
            let written = match &entry {
                None => inner
                    .topics
                    .create(key.as_str(), bytes)
                    .await
                    .map(|_| true)
                    .or_else(|e| match e.kind() {
                        kv::CreateErrorKind::AlreadyExists => Ok(false),
                        _ => Err(unavailable(format!("cannot declare topic \"{name}\""), e)),
                    })?,
                Some(entry) => inner
                    .topics
                    .update(key.as_str(), bytes, entry.revision)
                    .await
                    .map(|_| true)
                    .or_else(|e| match e.kind() {
                        kv::UpdateErrorKind::WrongLastRevision => Ok(false),
                        _ => Err(unavailable(format!("cannot declare topic \"{name}\""), e)),
                    })?,
            };
            if written {
                inner.lock_known().insert(name.to_owned(), Arc::new(meta));
                return Ok(if entry.is_some() {
                    TopicCreated::Updated
                } else {
                    TopicCreated::Created
                });
            }
        }
        Err(Error::new(
            ErrorKind::Unavailable,
            format!("topic \"{name}\" kept changing while it was declared"),
        ))
    }

    async fn topic(&self, name: &str) -> Result<Option<TopicInfo>> {
        let Some(meta) = self.inner.meta(name).await? else {
            return Ok(None);
        };
        let mut info = TopicInfo {
            name: name.to_owned(),
            partitions: meta.config.partitions,
            end_offsets: Vec::new(),
            start_offsets: Vec::new(),
            config: meta.config.clone(),
        };
        for partition in 0..meta.config.partitions {
            let offsets = offsets_of(&self.inner.state(name, partition).await?);
            info.start_offsets.push(offsets.start);
            info.end_offsets.push(offsets.end);
        }
        Ok(Some(info))
    }

    async fn topics(&self) -> Result<Vec<TopicInfo>> {
        use futures::TryStreamExt;
        // A listing streams from a consumer, which the request timeout does not bound.
        let listing = async {
            self.inner
                .topics
                .keys()
                .await
                .map_err(|e| unavailable("cannot list topics".into(), e))?
                .try_collect::<Vec<String>>()
                .await
                .map_err(|e| unavailable("cannot list topics".into(), e))
        };
        let timeout = self.inner.options.timeout;
        let keys = tokio::time::timeout(timeout, listing).await.map_err(|_| {
            unavailable(
                "cannot list topics".into(),
                format!("no answer within {timeout:?}"),
            )
        })??;
        let mut names: Vec<String> = keys.iter().filter_map(|k| names::untoken(k)).collect();
        names.sort();
        let mut topics = Vec::with_capacity(names.len());
        for name in names {
            if let Some(info) = self.topic(&name).await? {
                topics.push(info);
            }
        }
        Ok(topics)
    }

    async fn append(&self, topic: &str, records: Vec<Record>) -> Result<Vec<RecordPosition>> {
        self.inner.append_partitioned(topic, records, true).await
    }

    async fn append_to(
        &self,
        topic: &str,
        partition: u32,
        records: Vec<Record>,
        expect: Expect,
    ) -> Result<Vec<RecordPosition>> {
        let meta = self.inner.partition(topic, partition).await?;
        self.inner.check_records(topic, &meta, &records)?;
        let offsets = self
            .inner
            .publish(topic, partition, records, expect, true)
            .await?;
        Ok(offsets
            .into_iter()
            .map(|offset| RecordPosition { partition, offset })
            .collect())
    }

    async fn read(
        &self,
        topic: &str,
        partition: u32,
        from_offset: u64,
        max_records: usize,
    ) -> Result<Vec<StoredRecord>> {
        let mut reader = self.reader(topic, partition, from_offset).await?;
        Ok(reader.read(max_records).await?.records)
    }

    async fn reader(
        &self,
        topic: &str,
        partition: u32,
        from_offset: u64,
    ) -> Result<Box<dyn PartitionReader>> {
        let meta = self.inner.partition(topic, partition).await?;
        Ok(Box::new(reader::NatsReader::new(
            self.inner.clone(),
            topic,
            partition,
            meta.config.compaction,
            from_offset,
        )))
    }

    async fn offsets(&self, topic: &str, partition: u32) -> Result<Offsets> {
        self.inner.offsets(topic, partition).await
    }

    async fn offset_for_time(&self, topic: &str, partition: u32, timestamp_ms: i64) -> Result<u64> {
        self.inner.partition(topic, partition).await?;
        reader::offset_for_time(&self.inner, topic, partition, timestamp_ms).await
    }

    async fn claim(&self, group: &str, topic: &str, partition: u32) -> Result<u64> {
        self.inner.partition(topic, partition).await?;
        groups::claim(&self.inner, group, topic, partition).await
    }

    async fn generation(&self, group: &str, topic: &str, partition: u32) -> Result<u64> {
        Ok(groups::read(&self.inner, group, topic, partition)
            .await?
            .map_or(0, |(entry, _)| entry.generation))
    }

    async fn commit_offset(&self, commit: GroupCommit) -> Result<()> {
        self.inner.check_commit(&commit).await?;
        groups::commit(&self.inner, &commit, None).await
    }

    /// At-least-once, as the trait's default, but with the outputs sent as plain
    /// publishes in runs by key (`Inner::publish_in_runs`; every topic and partition at
    /// once) rather than as atomic batches, which nats-server stages on disk batch by
    /// batch; a transaction that fails part-way is sent again whole under this guarantee
    /// anyway. The group entry is read once, for the fence check before anything is
    /// written and as the revision the commit writes at.
    async fn commit_transaction(&self, txn: Transaction) -> Result<()> {
        let inner = &self.inner;
        let entry = match &txn.commit {
            Some(commit) => {
                inner.check_commit(commit).await?;
                let entry =
                    groups::read(inner, &commit.group, &commit.topic, commit.partition).await?;
                commit.check_owner(entry.map_or(0, |(entry, _)| entry.generation))?;
                Some(entry)
            }
            None => None,
        };
        // One entry per topic (two would send one key's records at once), each checked
        // before anything is sent, so a refused transaction writes nothing.
        let mut appends: Vec<(String, Vec<Record>)> = Vec::new();
        for (topic, records) in txn.appends {
            match appends.iter_mut().find(|(t, _)| *t == topic) {
                Some((_, all)) => all.extend(records),
                None if records.is_empty() => {}
                None => appends.push((topic, records)),
            }
        }
        for (topic, records) in &appends {
            let meta = inner.existing(topic).await?;
            inner.check_records(topic, &meta, records)?;
        }
        let sends = appends.into_iter().map(|(topic, records)| async move {
            inner.append_partitioned(&topic, records, false).await
        });
        for sent in futures::future::join_all(sends).await {
            sent?;
        }
        if let Some(commit) = txn.commit {
            groups::commit(inner, &commit, entry).await?;
        }
        Ok(())
    }

    async fn committed_offset(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
    ) -> Result<Option<u64>> {
        Ok(groups::read(&self.inner, group, topic, partition)
            .await?
            .and_then(|(entry, _)| entry.offset))
    }

    async fn enforce_retention(&self) -> Result<RetentionReport> {
        // The server applies each stream's limits as it goes.
        Ok(RetentionReport::default())
    }
}
