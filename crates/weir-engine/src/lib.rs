//! A weir node: runs on the log it is given (any backend of the `weir-log` interface),
//! loads the app's functions and runs its pipelines. The gateway and the CLI talk to a
//! [`Node`]; nothing here speaks HTTP.
//!
//! **Architecture Invariant:** an event is stored in the log as its CloudEvents JSON
//! (structured) encoding, under the key chosen by [`routing::event_key`]; whatever reads
//! the log back gets the same validated event.
//!
//! # Data directory
//!
//! ```text
//! <data>/weir-log.lock, topics/, groups/     the embedded log, when that is the backend
//!                                            (see weir-log-embedded); it reads only these
//! <data>/kv/store.redb                       the key-value store (see weir-kv)
//! <data>/functions/<name>/                   deployed versions and history (`registry`)
//! <data>/wasm-cache/                         compiled components (see weir-wasm)
//! ```

mod deploy;
mod error;
mod functions;
pub mod groups;
mod keyvalue;
mod pipeline;
mod registry;
pub mod replay;
pub mod routing;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use futures::{Stream, StreamExt};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use weir_cloudevents::CloudEvent;
pub use weir_log::SharedLog;
use weir_log::{GroupCommit, Record, StoredRecord};
use weir_manifest::Manifest;
use weir_wasm::HostOptions;

pub use error::{Error, ErrorClass, Result};
pub use pipeline::{PipelinePartitionStatus, PipelineState, PipelineStatus};
pub use registry::{Deployed, Deployment, FunctionInfo, KEPT_VERSIONS, Origin};
pub use replay::{
    Replay, ReplayBound, ReplayProgress, ReplayRange, ReplayReport, ReplayRequest, VersionReport,
    VersionSource,
};
// Types of the log, the key-value store and the manifest that the node's methods hand
// out or take, so the node's callers need no dependency on those crates.
pub use weir_kv::KeyPage;
pub use weir_log::{
    Acknowledgement, Atomicity, ConditionalAppends, Deduplication, Durability, Guarantees,
    RecordPosition, TopicCreated, TopicInfo, TopicSpec, TransactionGuarantee,
};
pub use weir_manifest::Ordering;

/// How to start a node.
#[derive(Clone)]
pub struct NodeOptions {
    /// The node's own files: the key-value store, deployed functions, compiled code.
    pub data_dir: PathBuf,
    /// The app to run, if any.
    pub manifest: Option<Manifest>,
    /// The log to run on, opened by the caller (`weir serve --backend` picks it).
    pub log: SharedLog,
    /// How often retention and compaction run.
    pub retention_interval: std::time::Duration,
}

impl std::fmt::Debug for NodeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeOptions")
            .field("data_dir", &self.data_dir)
            .field("backend", &self.log.backend())
            .field("retention_interval", &self.retention_interval)
            .finish_non_exhaustive()
    }
}

impl NodeOptions {
    /// Options with defaults for everything but the data directory, app and log.
    pub fn new(
        data_dir: impl Into<PathBuf>,
        manifest: Option<Manifest>,
        log: SharedLog,
    ) -> NodeOptions {
        NodeOptions {
            data_dir: data_dir.into(),
            manifest,
            log,
            retention_interval: std::time::Duration::from_secs(30),
        }
    }
}

/// An event read back from the log, with where it is stored.
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedEvent {
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
    /// When the log appended it, in milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    pub event: CloudEvent,
}

/// [`Node::read_bounded`] decodes a read of more bytes than this on the blocking pool.
pub const READ_INLINE_BYTES: usize = 64 * 1024;

/// What [`Node::read_bounded`] read.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadEvents {
    pub events: Vec<LoggedEvent>,
    /// Their size as a JSON array of their stored encoding.
    pub bytes: usize,
}

/// Where a subscription starts in each partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartFrom {
    Earliest,
    Latest,
    /// The same offset in every partition (clamped to each partition's end).
    Offset(u64),
    /// In each partition, the first event appended at or after this time (milliseconds
    /// since the Unix epoch).
    Time(i64),
}

/// A function as `weir status` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct FunctionStatus {
    pub name: String,
    /// The active version.
    pub version: String,
    /// How many versions are kept for rollback (the active one included).
    pub versions_kept: usize,
}

/// What `Node::deploy_app` did, for `weir deploy`.
#[derive(Debug, Clone, Serialize)]
pub struct AppDeployed {
    pub app: String,
    /// Every function of the app; `previous` is none for a new one, and equals `version`
    /// for one that did not change (or changed only its settings, see `reconfigured`).
    pub functions: Vec<FunctionChange>,
    /// Topics created or whose settings were updated.
    pub topics: Vec<String>,
    /// Pipelines started.
    pub pipelines: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FunctionChange {
    pub name: String,
    pub previous: Option<String>,
    pub version: String,
    /// Whether it was reloaded (a new component or new settings).
    pub reloaded: bool,
}

/// A consumer group's position in one topic.
#[derive(Debug, Clone, Serialize)]
pub struct GroupStatus {
    pub group: String,
    pub topic: String,
    /// Live subscribers in the group now.
    pub members: usize,
    pub partitions: Vec<GroupPartitionStatus>,
}

#[derive(Debug, Clone, Serialize)]
pub struct GroupPartitionStatus {
    pub partition: u32,
    /// The next offset the group will read; none if it never committed here.
    pub committed: Option<u64>,
    pub end_offset: u64,
    pub lag: u64,
}

/// What `Node::redrive` did.
#[derive(Debug, Clone, Serialize)]
pub struct RedriveReport {
    pub pipeline: String,
    pub dead_letter: String,
    /// Events sent back to their source topics.
    pub redriven: u64,
    /// Dead letters passed over: another pipeline's, or not re-drivable (their source
    /// topic no longer exists, or the stored record was not a CloudEvent to begin with).
    pub skipped: u64,
    /// Events re-driven per source topic.
    pub topics: BTreeMap<String, u64>,
}

/// What the node runs, for `weir status` and `/readyz`.
#[derive(Debug, Clone, Serialize)]
pub struct NodeStatus {
    pub app: Option<String>,
    /// The log backend (`embedded`, ...).
    pub backend: &'static str,
    pub topics: Vec<TopicStatus>,
    pub functions: Vec<FunctionStatus>,
    pub pipelines: Vec<PipelineStatus>,
}

/// What `PUT /v1/topics/{topic}` asks for: each setting left out keeps the topic's (or
/// the default, for a new topic).
#[derive(Debug, Clone, Default)]
pub struct TopicUpdate {
    pub partitions: Option<u32>,
    pub durability: Option<weir_log::Durability>,
    pub retention_ms: Option<u64>,
    pub retention_bytes: Option<u64>,
    /// The embedded log's own setting.
    pub segment_bytes: Option<u64>,
    pub compaction: Option<bool>,
    /// Allows lowering an existing topic's durability (see [`Node::put_topic`]).
    pub lower_durability: bool,
}

/// How much a durability promises, to compare two: `Always` above any interval, a
/// shorter interval above a longer one, `Never` last.
fn durability_rank(durability: weir_log::Durability) -> (u8, std::cmp::Reverse<u64>) {
    match durability {
        weir_log::Durability::Always => (2, std::cmp::Reverse(0)),
        weir_log::Durability::Interval { ms } => (1, std::cmp::Reverse(ms)),
        weir_log::Durability::Never => (0, std::cmp::Reverse(0)),
    }
}

fn durability_name(durability: weir_log::Durability) -> String {
    match durability {
        weir_log::Durability::Always => "after fsync (\"always\")".to_owned(),
        weir_log::Durability::Interval { ms } => {
            format!("with an fsync at most every {ms} ms (\"interval\")")
        }
        weir_log::Durability::Never => "without fsync (\"never\")".to_owned(),
    }
}

/// A topic as `weir status` shows it: its spec and positions, and what the backend
/// promises for it.
#[derive(Debug, Clone, Serialize)]
pub struct TopicStatus {
    #[serde(flatten)]
    pub info: weir_log::TopicInfo,
    pub guarantees: weir_log::Guarantees,
}

/// A running node. Share it as `Arc<Node>`.
pub struct Node {
    log: SharedLog,
    /// The app as it runs now: the start's manifest, then each deploy's.
    manifest: Mutex<Option<Manifest>>,
    /// Where a deployed manifest's relative paths (secret files, seeds) are resolved: the
    /// start manifest's directory.
    base_dir: PathBuf,
    /// The functions' active versions and history; owns the wasm engine.
    registry: Arc<registry::Registry>,
    /// The embedded key-value store, shared with the functions.
    kv: Arc<dyn weir_kv::KeyValue>,
    pipelines: Mutex<Vec<Arc<pipeline::Pipeline>>>,
    /// One deploy or rollback at a time.
    deploying: tokio::sync::Mutex<()>,
    /// One re-drive at a time (its transactions' producers run one at a time).
    redriving: tokio::sync::Mutex<()>,
    cancel: CancellationToken,
    tasks: TaskTracker,
    groups: Arc<groups::GroupRegistry>,
    stopped: Mutex<bool>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("backend", &self.log.backend())
            .field("app", &self.app_name())
            .finish_non_exhaustive()
    }
}

impl Node {
    /// Open the log and the key-value store, create the app's topics, seed its key-value
    /// namespaces, load its functions (each at its recorded active version unless the
    /// manifest's source changed, see `registry`) and start its pipelines where their
    /// consumer groups left off. A function that does not compile, or a seed file that is
    /// not a JSON object, stops the start with an error naming it.
    #[tracing::instrument(skip_all, err, fields(data_dir = %opts.data_dir.display(), backend = opts.log.backend()))]
    pub async fn start(opts: NodeOptions) -> Result<Arc<Node>> {
        let NodeOptions {
            data_dir,
            manifest,
            log,
            retention_interval,
        } = opts;

        // The key-value store is open before functions load: they read it from the first
        // event on. It lives in <data>/kv, beside the log's own topics/ and groups/.
        let kv: Arc<dyn weir_kv::KeyValue> = {
            let dir = data_dir.join("kv");
            Arc::new(blocking(move || Ok(weir_kv::EmbeddedKv::open(&dir)?)).await?)
        };
        let host_options = HostOptions {
            cache_dir: Some(data_dir.join("wasm-cache")),
            fuel: manifest
                .as_ref()
                .is_some_and(|m| m.functions.values().any(|f| f.limits.fuel.is_some())),
            keyvalue: Some(Arc::new(keyvalue::HostKeyValue(kv.clone()))),
            ..HostOptions::default()
        };
        let registry = Arc::new(registry::Registry::new(
            data_dir.join("functions"),
            host_options,
        ));
        if let Some(manifest) = &manifest {
            for (name, topic) in &manifest.topics {
                log.create_topic(name, &topic_spec(topic)).await?;
            }
            for (namespace, spec) in &manifest.keyvalue {
                if let Some(seed) = &spec.seed {
                    seed_namespace(&kv, namespace, seed).await?;
                }
            }
            for (name, spec) in &manifest.functions {
                let (registry, name, spec) = (registry.clone(), name.clone(), spec.clone());
                blocking(move || registry.load_at_start(&name, &spec)).await?;
            }
        }

        let cancel = CancellationToken::new();
        let tasks = TaskTracker::new();
        let groups = Arc::new(groups::GroupRegistry::default());
        tasks.spawn(enforce_retention(
            log.clone(),
            retention_interval,
            cancel.clone(),
        ));
        let node = Node {
            log,
            base_dir: manifest
                .as_ref()
                .map(|m| m.base_dir.clone())
                .unwrap_or_default(),
            manifest: Mutex::new(manifest.clone()),
            registry,
            kv,
            pipelines: Mutex::new(Vec::new()),
            deploying: tokio::sync::Mutex::new(()),
            redriving: tokio::sync::Mutex::new(()),
            cancel,
            tasks,
            groups,
            stopped: Mutex::new(false),
        };
        if let Some(manifest) = &manifest {
            for (name, spec) in &manifest.pipelines {
                node.start_pipeline(name, spec).await?;
            }
        }
        Ok(Arc::new(node))
    }

    /// Start a pipeline of the app (its function is registered), creating its dead-letter
    /// topic (one partition, default settings) if the app does not declare it.
    async fn start_pipeline(&self, name: &str, spec: &weir_manifest::PipelineSpec) -> Result<()> {
        if self.log.topic(&spec.dead_letter).await?.is_none() {
            self.log
                .create_topic(&spec.dead_letter, &TopicSpec::default())
                .await?;
            tracing::info!(pipeline = name, topic = %spec.dead_letter, "dead-letter topic created");
        }
        self.groups.claim_for_pipeline(&spec.group, name);
        let p = Arc::new(pipeline::Pipeline::new(name, spec, self.registry.clone()));
        p.spawn(&self.log, &self.tasks, &self.cancel).await?;
        self.pipelines
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(p);
        Ok(())
    }

    fn app_name(&self) -> Option<String> {
        self.manifest
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|m| m.app.name.clone())
    }

    /// The node's key-value store (every namespace; the app declares which it uses).
    pub fn kv(&self) -> &Arc<dyn weir_kv::KeyValue> {
        &self.kv
    }

    /// The key-value namespaces the app declares, by name.
    pub fn keyvalue_namespaces(&self) -> Vec<String> {
        self.manifest
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|m| m.keyvalue.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Fails with [`Error::UnknownNamespace`] unless the app declares `namespace`.
    pub fn check_namespace(&self, namespace: &str) -> Result<()> {
        let declared = self.keyvalue_namespaces();
        if declared.iter().any(|ns| ns == namespace) {
            Ok(())
        } else {
            Err(Error::UnknownNamespace {
                namespace: namespace.to_owned(),
                declared,
            })
        }
    }

    /// The value of `key` in a declared namespace.
    pub async fn kv_get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>> {
        self.check_namespace(namespace)?;
        let (kv, ns, key) = (self.kv.clone(), namespace.to_owned(), key.to_owned());
        blocking(move || Ok(kv.get(&ns, &key)?)).await
    }

    /// Set `key` in a declared namespace, durably.
    pub async fn kv_set(&self, namespace: &str, key: &str, value: Vec<u8>) -> Result<()> {
        self.check_namespace(namespace)?;
        let (kv, ns, key) = (self.kv.clone(), namespace.to_owned(), key.to_owned());
        blocking(move || Ok(kv.set(&ns, &key, &value)?)).await
    }

    /// Remove `key` from a declared namespace, durably.
    pub async fn kv_delete(&self, namespace: &str, key: &str) -> Result<()> {
        self.check_namespace(namespace)?;
        let (kv, ns, key) = (self.kv.clone(), namespace.to_owned(), key.to_owned());
        blocking(move || Ok(kv.delete(&ns, &key)?)).await
    }

    /// A page of a declared namespace's keys.
    pub async fn kv_list(
        &self,
        namespace: &str,
        cursor: Option<u64>,
        limit: usize,
    ) -> Result<weir_kv::KeyPage> {
        self.check_namespace(namespace)?;
        let (kv, ns) = (self.kv.clone(), namespace.to_owned());
        blocking(move || Ok(kv.list_keys(&ns, cursor, limit)?)).await
    }

    /// Write every key of a JSON object `{"key": value}` into a declared namespace,
    /// overwriting, in one transaction; returns how many were written.
    pub async fn kv_load(&self, namespace: &str, json: Vec<u8>) -> Result<usize> {
        self.check_namespace(namespace)?;
        let (kv, ns) = (self.kv.clone(), namespace.to_owned());
        blocking(move || Ok(kv.load_json(&ns, "the request body", &json)?)).await
    }

    /// Every function with its active version and deployment history.
    pub fn functions(&self) -> Vec<FunctionInfo> {
        self.registry.list()
    }

    /// Deploy `wasm` as the new version of the app's function `name`, with its current
    /// settings. It is compiled first: a module that does not compile is an error and the
    /// active version keeps serving. Pipelines switch at their next batch.
    #[tracing::instrument(skip(self, wasm), err, fields(bytes = wasm.len()))]
    pub async fn deploy_function(&self, name: &str, wasm: Vec<u8>) -> Result<Deployed> {
        let _one = self.deploying.lock().await;
        let (registry, name) = (self.registry.clone(), name.to_owned());
        blocking(move || registry.deploy(&name, &wasm)).await
    }

    /// Make a kept version of `name` active again: `to`, or the one before the active one.
    #[tracing::instrument(skip(self), err)]
    pub async fn rollback_function(&self, name: &str, to: Option<String>) -> Result<Deployed> {
        let _one = self.deploying.lock().await;
        let (registry, name) = (self.registry.clone(), name.to_owned());
        blocking(move || registry.rollback(&name, to.as_deref())).await
    }

    /// Apply a new version of the app without a restart (`weir deploy`): `manifest_text`
    /// is its `weir.toml` (relative paths resolve against the running app's directory),
    /// `components` each declared function's wasm. Every changed function is compiled
    /// before anything changes; then new topics are created, changed functions swapped
    /// in and new pipelines started. What needs a restart is refused
    /// ([`Error::DeployRefused`]).
    #[tracing::instrument(skip_all, err)]
    pub async fn deploy_app(
        &self,
        manifest_text: &str,
        components: BTreeMap<String, Vec<u8>>,
    ) -> Result<AppDeployed> {
        let _one = self.deploying.lock().await;
        if self.cancel.is_cancelled() {
            return Err(Error::ShuttingDown);
        }
        let next = Manifest::from_toml_str(manifest_text, &self.base_dir)?;
        let current = self
            .manifest
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let active: BTreeMap<String, String> = self
            .registry
            .list()
            .into_iter()
            .map(|f| (f.name, f.version))
            .collect();
        let incoming: BTreeMap<String, String> = components
            .iter()
            .map(|(name, wasm)| (name.clone(), registry::sha256_hex(wasm)[..12].to_owned()))
            .collect();
        let plan = deploy::plan(current.as_ref(), &next, &active, &incoming)?;

        // Compile everything first: all or nothing.
        let components = Arc::new(components);
        let mut compiled = Vec::new();
        for name in &plan.functions {
            let spec = next.functions[name].clone();
            let (registry, name, components) =
                (self.registry.clone(), name.clone(), components.clone());
            let function =
                blocking(move || registry.compile(&name, &spec, &components[&name])).await?;
            compiled.push(function);
        }

        let mut topics = Vec::new();
        for name in &plan.topics {
            self.log
                .create_topic(name, &topic_spec(&next.topics[name]))
                .await?;
            topics.push(name.clone());
        }
        for namespace in &plan.namespaces {
            if let Some(seed) = &next.keyvalue[namespace].seed {
                if seed.exists() {
                    seed_namespace(&self.kv, namespace, seed).await?;
                } else {
                    tracing::warn!(namespace, seed = %seed.display(), "the seed file is not on this node; fill the namespace with `weir kv load`");
                }
            }
        }
        let mut reloaded = BTreeMap::new();
        for (name, function) in plan.functions.iter().zip(compiled) {
            let spec = next.functions[name].clone();
            let (registry, fname, components) =
                (self.registry.clone(), name.clone(), components.clone());
            let deployed =
                blocking(move || registry.activate(&fname, &spec, function, &components[&fname]))
                    .await?;
            reloaded.insert(name.clone(), deployed);
        }
        *self.manifest.lock().unwrap_or_else(PoisonError::into_inner) = Some(next.clone());
        for name in &plan.pipelines {
            self.start_pipeline(name, &next.pipelines[name]).await?;
        }

        let functions = next
            .functions
            .keys()
            .map(|name| match reloaded.remove(name) {
                Some(d) => FunctionChange {
                    name: d.name,
                    previous: d.previous,
                    version: d.version,
                    reloaded: true,
                },
                None => FunctionChange {
                    name: name.clone(),
                    previous: active.get(name).cloned(),
                    version: active.get(name).cloned().unwrap_or_default(),
                    reloaded: false,
                },
            })
            .collect();
        tracing::info!(app = %next.app.name, ?topics, pipelines = ?plan.pipelines, "app deployed");
        Ok(AppDeployed {
            app: next.app.name.clone(),
            functions,
            topics,
            pipelines: plan.pipelines,
        })
    }

    /// Creates a topic or changes an existing one's settings (`PUT /v1/topics/{topic}`),
    /// within the bounds `weir.toml` has for topics. An existing topic's durability is not
    /// lowered (a `202` would silently stop meaning durable) unless
    /// [`TopicUpdate::lower_durability`] says so.
    pub async fn put_topic(
        &self,
        name: &str,
        update: TopicUpdate,
    ) -> Result<(weir_log::TopicCreated, Option<weir_log::TopicInfo>)> {
        let existing = self.log.topic(name).await?;
        let mut spec = existing
            .as_ref()
            .map(|t| t.config.clone())
            .unwrap_or_default();
        if let Some(partitions) = update.partitions {
            spec.partitions = partitions;
        }
        if let Some(durability) = update.durability {
            spec.durability = durability;
        }
        if update.retention_ms.is_some() {
            spec.retention_ms = update.retention_ms;
        }
        if update.retention_bytes.is_some() {
            spec.retention_bytes = update.retention_bytes;
        }
        if let Some(compaction) = update.compaction {
            spec.compaction = compaction;
        }
        if let Some(segment_bytes) = update.segment_bytes {
            // The embedded log's own setting; another backend refuses it by name.
            spec = spec.with_backend_setting("segment_bytes", segment_bytes);
        }
        let bounds = weir_manifest::TopicSpec {
            partitions: spec.partitions,
            fsync: match spec.durability {
                weir_log::Durability::Always => weir_manifest::FsyncSpec::Always,
                weir_log::Durability::Interval { ms } => weir_manifest::FsyncSpec::Interval { ms },
                weir_log::Durability::Never => weir_manifest::FsyncSpec::Never,
            },
            retention_ms: spec.retention_ms,
            retention_bytes: spec.retention_bytes,
            segment_bytes: spec
                .backend
                .get("segment_bytes")
                .and_then(serde_json::Value::as_u64),
            compaction: spec.compaction,
        };
        // The settings' bounds (the log checks the name itself, with its own message).
        const SETTINGS: [&str; 5] = [
            "partitions",
            "fsync_interval_ms",
            "segment_bytes",
            "retention_ms",
            "retention_bytes",
        ];
        let problems: Vec<String> = bounds
            .problems(name)
            .into_iter()
            .filter_map(|p| {
                let setting = p.key.rsplit('.').next()?;
                SETTINGS
                    .contains(&setting)
                    .then(|| format!("{setting} {}", p.message))
            })
            .collect();
        if !problems.is_empty() {
            return Err(Error::InvalidTopic {
                topic: name.to_owned(),
                reason: problems.join("; "),
            });
        }
        if let Some(existing) = &existing
            && durability_rank(spec.durability) < durability_rank(existing.config.durability)
            && !update.lower_durability
        {
            return Err(Error::DurabilityLowered {
                topic: name.to_owned(),
                from: durability_name(existing.config.durability),
                to: durability_name(spec.durability),
            });
        }
        let created = self.log.create_topic(name, &spec).await?;
        if created == weir_log::TopicCreated::Updated {
            tracing::info!(topic = name, ?spec, "topic settings changed");
        }
        Ok((created, self.log.topic(name).await?))
    }

    /// Every topic with its settings and positions, sorted by name.
    pub async fn topics(&self) -> Result<Vec<TopicInfo>> {
        Ok(self.log.topics().await?)
    }

    /// The log the node runs on.
    pub fn log(&self) -> &SharedLog {
        &self.log
    }

    /// Append events to a topic; resolves once they are durable. The events must be
    /// valid (everything `weir_cloudevents` decodes is).
    #[tracing::instrument(skip_all, err, fields(topic, events = events.len()))]
    pub async fn publish(&self, topic: &str, events: &[CloudEvent]) -> Result<Vec<RecordPosition>> {
        if self.cancel.is_cancelled() {
            return Err(Error::ShuttingDown);
        }
        let records = events.iter().map(encode_event).collect();
        // A batch is all or nothing, across partitions too, where the backend can.
        Ok(self.log.append_atomic(topic, records).await?)
    }

    /// Read up to `limit` events of one partition from `offset`.
    pub async fn read(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        limit: usize,
    ) -> Result<Vec<LoggedEvent>> {
        self.log
            .read(topic, partition, offset, limit)
            .await?
            .into_iter()
            .map(|r| decode_event(topic, r))
            .collect()
    }

    /// Read events of one partition from `offset`: at most `limit`, and at most
    /// `max_bytes` as a JSON array of their stored encoding (`[`, each event followed by
    /// `,` or `]`), but always the first event there is, whatever its size. The log is
    /// read in steps sized by the events read so far, so a read holds about `max_bytes`
    /// however large `limit` is; events over [`READ_INLINE_BYTES`] in all are decoded on
    /// the blocking pool, off the async workers.
    pub async fn read_bounded(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<ReadEvents> {
        let mut records: Vec<StoredRecord> = Vec::new();
        let mut bytes: usize = 1; // `[`
        let mut next = offset;
        'read: while records.len() < limit {
            let left = limit - records.len();
            let want = match bytes.checked_div(records.len()) {
                // Ask for as many as the bytes left hold at the average size so far.
                Some(average) if average > 0 => (max_bytes.saturating_sub(bytes) / average).max(1),
                // A first step small enough that a read of the log's largest events
                // holds little more than `max_bytes`.
                _ => 8,
            }
            .min(left);
            let chunk = self.log.read(topic, partition, next, want).await?;
            let got = chunk.len();
            for record in chunk {
                let size = record.value.len() + 1;
                if !records.is_empty() && bytes + size > max_bytes {
                    break 'read;
                }
                next = record.offset + 1;
                bytes += size;
                records.push(record);
            }
            if got < want || bytes >= max_bytes {
                break;
            }
        }
        if records.is_empty() {
            bytes = 2; // `[]`
        }
        let topic = topic.to_owned();
        let decode = move || {
            records
                .into_iter()
                .map(|r| decode_event(&topic, r))
                .collect::<Result<Vec<_>>>()
        };
        let events = if bytes > READ_INLINE_BYTES {
            blocking(decode).await?
        } else {
            decode()?
        };
        Ok(ReadEvents { events, bytes })
    }

    /// Follow every partition of a topic from `from`, live. The stream ends when the
    /// node shuts down; dropping it stops the readers.
    pub async fn subscribe(
        &self,
        topic: &str,
        from: StartFrom,
    ) -> Result<impl Stream<Item = Result<LoggedEvent>> + Send + use<>> {
        let info = self.topic_info(topic).await?;
        let (tx, rx) = mpsc::channel(256);
        for partition in 0..info.partitions {
            let start = self.resolve_start(topic, partition, from).await?;
            let reader = self.log.reader(topic, partition, start).await?;
            let (tx, cancel) = (tx.clone(), self.cancel.clone());
            self.tasks.spawn(async move {
                follow_partition(reader, tx, cancel).await;
            });
        }
        Ok(tokio_stream::wrappers::ReceiverStream::new(rx))
    }

    /// A topic that must exist.
    async fn topic_info(&self, topic: &str) -> Result<weir_log::TopicInfo> {
        topic_info(&self.log, topic).await
    }

    /// The offset `from` means in one partition.
    async fn resolve_start(&self, topic: &str, partition: u32, from: StartFrom) -> Result<u64> {
        resolve_start(&self.log, topic, partition, from).await
    }

    /// Follow a topic as a member of consumer group `group`: the group's members share
    /// the topic's partitions, and the group's position is kept across members and
    /// restarts. `from` applies only to partitions the group has no position in yet.
    /// Fails with [`Error::GroupBusy`] if a pipeline owns the group or it follows
    /// another topic.
    pub async fn subscribe_group(
        &self,
        group: &str,
        topic: &str,
        from: StartFrom,
    ) -> Result<impl Stream<Item = Result<LoggedEvent>> + Send + use<>> {
        let info = self.topic_info(topic).await?;
        // Validates the group name too.
        let mut positions = BTreeMap::new();
        for partition in 0..info.partitions {
            let position = match self.log.committed_offset(group, topic, partition).await? {
                Some(offset) => offset,
                None => self.resolve_start(topic, partition, from).await?,
            };
            positions.insert(partition, position);
        }
        let (member, state, assignment) = self
            .groups
            .join(group, topic, info.partitions, || positions)
            .map_err(|busy| Error::GroupBusy {
                group: group.to_owned(),
                reason: busy.to_string(),
            })?;
        tracing::info!(group, topic, member, "group member joined");

        let (tx, rx) = mpsc::channel(256);
        let driver = GroupMemberDriver {
            log: self.log.clone(),
            registry: self.groups.clone(),
            group: group.to_owned(),
            topic: topic.to_owned(),
            member,
            state: state.clone(),
            cancel: self.cancel.clone(),
        };
        self.tasks.spawn(driver.run(assignment, tx));

        Ok(
            tokio_stream::wrappers::ReceiverStream::new(rx).filter_map(move |item| {
                let item = match item {
                    Ok(event) => {
                        let event: LoggedEvent = event;
                        let mut g = state.lock().unwrap_or_else(PoisonError::into_inner);
                        let position = g.positions.get(&event.partition).copied().unwrap_or(0);
                        // Only the partition's owner hands out events, and only the next one.
                        if g.owns(member, event.partition) && event.offset >= position {
                            g.positions.insert(event.partition, event.offset + 1);
                            g.dirty = true;
                            Some(Ok(event))
                        } else {
                            None
                        }
                    }
                    Err(e) => Some(Err(e)),
                };
                std::future::ready(item)
            }),
        )
    }

    /// Move a consumer group's position in `topic` to `to`, in every partition. Refused
    /// while the group has live members or belongs to a pipeline.
    pub async fn reset_group(
        &self,
        group: &str,
        topic: &str,
        to: StartFrom,
    ) -> Result<Vec<RecordPosition>> {
        if let Some(pipeline) = self.pipeline_of_group(group) {
            if !pipeline.sources().iter().any(|t| t == topic) {
                return Err(Error::GroupBusy {
                    group: group.to_owned(),
                    reason: format!(
                        "it is the group of pipeline {:?}, which does not read topic {topic:?}",
                        pipeline.name()
                    ),
                });
            }
            let positions = pipeline
                .reset(&self.log, topic, None, to, &self.cancel)
                .await?;
            tracing::info!(
                group,
                topic,
                ?to,
                pipeline = pipeline.name(),
                "pipeline group reset"
            );
            return Ok(positions);
        }
        self.groups
            .check_idle(group)
            .map_err(|busy| Error::GroupBusy {
                group: group.to_owned(),
                reason: busy.to_string(),
            })?;
        let info = self.topic_info(topic).await?;
        let mut positions = Vec::new();
        for partition in 0..info.partitions {
            let offset = self.resolve_start(topic, partition, to).await?;
            positions.push(RecordPosition { partition, offset });
        }
        for p in &positions {
            self.log
                .commit_offset(GroupCommit {
                    group: group.to_owned(),
                    topic: topic.to_owned(),
                    partition: p.partition,
                    next_offset: p.offset,
                    generation: 0,
                })
                .await?;
        }
        tracing::info!(group, topic, ?to, "group reset");
        Ok(positions)
    }

    fn pipeline_of_group(&self, group: &str) -> Option<Arc<pipeline::Pipeline>> {
        self.pipelines
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .find(|p| p.group() == group)
            .cloned()
    }

    fn pipeline(&self, name: &str) -> Result<Arc<pipeline::Pipeline>> {
        let pipelines = self
            .pipelines
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        pipelines
            .iter()
            .find(|p| p.name() == name)
            .cloned()
            .ok_or_else(|| Error::UnknownPipeline {
                pipeline: name.to_owned(),
                declared: pipelines.iter().map(|p| p.name().to_owned()).collect(),
            })
    }

    /// Re-drive a pipeline's dead letters (`weir redrive`): each event in its dead-letter
    /// topic that this pipeline dead-lettered, and that no earlier re-drive took, goes back
    /// to the topic it was read from, without its `dlq*` attributes and with its `id`
    /// unchanged. Progress is the consumer group `<pipeline>.redrive` on the dead-letter
    /// topic, committed in the same transaction as the re-driven events, so a crash
    /// neither loses nor doubles one. At most `limit` events if given.
    #[tracing::instrument(skip_all, err, fields(pipeline = name))]
    pub async fn redrive(&self, name: &str, limit: Option<u64>) -> Result<RedriveReport> {
        let pipeline = self.pipeline(name)?;
        let _one = self.redriving.lock().await;
        let dlq = pipeline.dead_letter_topic().to_owned();
        let group = format!("{name}.redrive");
        let info = self.topic_info(&dlq).await?;
        let mut report = RedriveReport {
            pipeline: name.to_owned(),
            dead_letter: dlq.clone(),
            redriven: 0,
            skipped: 0,
            topics: BTreeMap::new(),
        };
        let mut left = limit.unwrap_or(u64::MAX);
        for partition in 0..info.partitions {
            let end = info.end_offsets[partition as usize];
            let producer = format!("redrive/{name}/{dlq}/{partition}");
            // Only this re-drive commits the group (one at a time, `redriving`): a claim
            // fences a re-drive of another node on a shared log.
            let generation = self.log.claim(&group, &dlq, partition).await?;
            let next = match self.log.committed_offset(&group, &dlq, partition).await? {
                Some(o) => o,
                None => self.log.offsets(&dlq, partition).await?.start,
            };
            let mut reader = self.log.reader(&dlq, partition, next).await?;
            while reader.position() < end && left > 0 {
                let next = reader.position();
                let batch = (left.min(256)) as usize;
                let read = reader.read(batch).await?;
                if let Some(skipped) = read.skipped {
                    tracing::warn!(pipeline = name, topic = %dlq, partition, from = skipped.from, to = skipped.to, "dead letters were deleted by retention before they were re-driven");
                }
                let records = read.records;
                if records.is_empty() {
                    break;
                }
                let mut appends: BTreeMap<String, Vec<Record>> = BTreeMap::new();
                let mut through = next;
                for record in records {
                    if record.offset >= end || left == 0 {
                        break;
                    }
                    through = record.offset + 1;
                    let back = CloudEvent::from_json_slice(&record.value)
                        .ok()
                        .filter(|e| e.ty != routing::UNDECODABLE_TYPE)
                        .and_then(|e| routing::redriven_event(name, e));
                    let back = match back {
                        Some((topic, event)) if self.log.topic(&topic).await?.is_some() => {
                            Some((topic, event))
                        }
                        _ => None,
                    };
                    match back {
                        Some((topic, event)) => {
                            left -= 1;
                            report.redriven += 1;
                            *report.topics.entry(topic.clone()).or_default() += 1;
                            appends.entry(topic).or_default().push(encode_event(&event));
                        }
                        None => report.skipped += 1,
                    }
                }
                if through == next {
                    break;
                }
                let txn = weir_log::Transaction {
                    producer: producer.clone(),
                    appends: appends.into_iter().collect(),
                    commit: Some(GroupCommit {
                        group: group.clone(),
                        topic: dlq.clone(),
                        partition,
                        next_offset: through,
                        generation,
                    }),
                };
                commit_until_done(&self.log, txn, &self.cancel).await?;
                reader.seek(through);
            }
        }
        tracing::info!(
            pipeline = name,
            redriven = report.redriven,
            skipped = report.skipped,
            "dead letters re-driven"
        );
        Ok(report)
    }

    /// A group's committed position and lag in each partition of `topic`.
    pub async fn group_status(&self, group: &str, topic: &str) -> Result<GroupStatus> {
        let info = self.topic_info(topic).await?;
        let mut partitions = Vec::new();
        for partition in 0..info.partitions {
            let committed = self.log.committed_offset(group, topic, partition).await?;
            let end = info.end_offsets[partition as usize];
            partitions.push(GroupPartitionStatus {
                partition,
                committed,
                end_offset: end,
                lag: end.saturating_sub(committed.unwrap_or(0)),
            });
        }
        Ok(GroupStatus {
            group: group.to_owned(),
            topic: topic.to_owned(),
            members: self.groups.members(group),
            partitions,
        })
    }

    /// Functions, pipelines and topics, for `weir status`.
    pub async fn status(&self) -> Result<NodeStatus> {
        let topics = self
            .log
            .topics()
            .await?
            .into_iter()
            .map(|info| TopicStatus {
                guarantees: self.log.guarantees(&info.config),
                info,
            })
            .collect();
        let pipelines: Vec<_> = self
            .pipelines
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mut statuses = Vec::with_capacity(pipelines.len());
        for p in pipelines {
            statuses.push(p.status(&self.log).await);
        }
        Ok(NodeStatus {
            app: self.app_name(),
            backend: self.log.backend(),
            topics,
            functions: self
                .registry
                .list()
                .into_iter()
                .map(|f| FunctionStatus {
                    name: f.name,
                    version: f.version,
                    versions_kept: f.versions_kept.len(),
                })
                .collect(),
            pipelines: statuses,
        })
    }

    /// Whether the node takes traffic (it is not shutting down).
    pub fn is_ready(&self) -> bool {
        !self.cancel.is_cancelled()
    }

    /// Stop taking events and end live subscriptions; pipelines finish their batch.
    /// [`Node::shutdown`] waits for them.
    pub fn begin_shutdown(&self) {
        self.cancel.cancel();
    }

    /// Stop taking events, let every pipeline finish the batch it is on (outputs appended
    /// and offset committed), and wait for them.
    pub async fn shutdown(&self) {
        {
            let mut stopped = self.stopped.lock().unwrap_or_else(PoisonError::into_inner);
            if *stopped {
                return;
            }
            *stopped = true;
        }
        self.cancel.cancel();
        self.tasks.close();
        self.tasks.wait().await;
        tracing::info!("node stopped");
    }
}

async fn follow_partition(
    mut reader: Box<dyn weir_log::PartitionReader>,
    tx: mpsc::Sender<Result<LoggedEvent>>,
    cancel: CancellationToken,
) {
    let topic = reader.topic().to_owned();
    loop {
        let read = match reader.read(256).await {
            Ok(read) => read,
            Err(e) => {
                send_unless_cancelled(&tx, Err(e.into()), &cancel).await;
                return;
            }
        };
        if let Some(skipped) = read.skipped {
            tracing::warn!(
                topic,
                partition = reader.partition(),
                from = skipped.from,
                to = skipped.to,
                "a subscriber fell behind retention: these offsets were deleted before it read them"
            );
        }
        if read.records.is_empty() {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tx.closed() => return,
                r = reader.wait() => if let Err(e) = r {
                    send_unless_cancelled(&tx, Err(e.into()), &cancel).await;
                    return;
                }
            }
            continue;
        }
        for record in read.records {
            if !send_unless_cancelled(&tx, decode_event(&topic, record), &cancel).await {
                return;
            }
        }
    }
}

/// Sends `item` unless `cancel` fires first, so a subscriber that stopped reading (its
/// channel full) cannot hold up the node's shutdown. False if the receiver is gone or
/// the node is stopping.
async fn send_unless_cancelled<T>(
    tx: &mpsc::Sender<T>,
    item: T,
    cancel: &CancellationToken,
) -> bool {
    tokio::select! {
        sent = tx.send(item) => sent.is_ok(),
        _ = cancel.cancelled() => false,
    }
}

/// Runs one group member: follows the partitions assigned to it, restarts on every
/// rebalance, commits the group's positions every second and when the member leaves.
struct GroupMemberDriver {
    log: SharedLog,
    registry: Arc<groups::GroupRegistry>,
    group: String,
    topic: String,
    member: u64,
    state: Arc<Mutex<groups::GroupState>>,
    cancel: CancellationToken,
}

impl GroupMemberDriver {
    async fn run(
        self,
        mut assignment: tokio::sync::watch::Receiver<Vec<u32>>,
        tx: mpsc::Sender<Result<LoggedEvent>>,
    ) {
        let mut commit_every = tokio::time::interval(std::time::Duration::from_secs(1));
        'assignments: loop {
            let partitions = assignment.borrow_and_update().clone();
            let followers = self.cancel.child_token();
            for partition in partitions {
                let start = {
                    let g = self.state.lock().unwrap_or_else(PoisonError::into_inner);
                    g.positions.get(&partition).copied().unwrap_or(0)
                };
                let reader = match self.log.reader(&self.topic, partition, start).await {
                    Ok(reader) => reader,
                    Err(e) => {
                        send_unless_cancelled(&tx, Err(e.into()), &self.cancel).await;
                        break 'assignments;
                    }
                };
                tokio::spawn(follow_partition(reader, tx.clone(), followers.clone()));
            }
            loop {
                tokio::select! {
                    changed = assignment.changed() => {
                        followers.cancel();
                        if changed.is_err() {
                            break 'assignments;
                        }
                        continue 'assignments;
                    }
                    _ = tx.closed() => { followers.cancel(); break 'assignments; }
                    _ = self.cancel.cancelled() => break 'assignments,
                    _ = commit_every.tick() => self.commit_if_dirty().await,
                }
            }
        }
        // Commit before leaving, so a group with no members has its position on disk;
        // then again if another member moved it meanwhile.
        let before = self
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .positions
            .clone();
        self.commit(before.clone()).await;
        if let Some(after) = self.registry.leave(&self.group, self.member)
            && after != before
        {
            self.commit(after).await;
        }
        tracing::info!(group = %self.group, topic = %self.topic, member = self.member, "group member left");
    }

    async fn commit_if_dirty(&self) {
        let positions = {
            let mut g = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            if !g.dirty {
                return;
            }
            g.dirty = false;
            g.positions.clone()
        };
        self.commit(positions).await;
    }

    async fn commit(&self, positions: BTreeMap<u32, u64>) {
        use weir_log::CommitTarget;
        // A live group's members are this node's; they share positions under the group's
        // lock (see `groups`) and commit without claiming.
        let target = weir_log::GroupTarget {
            log: self.log.clone(),
            group: self.group.clone(),
            generation: 0,
        };
        let mut result = Ok(());
        for (partition, offset) in positions {
            result = target.commit(&self.topic, partition, offset).await;
            if result.is_err() {
                break;
            }
        }
        if let Err(e) = result {
            tracing::error!(group = %self.group, topic = %self.topic, error = %e, "cannot commit the group's position; it will be retried");
            self.state
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .dirty = true;
        }
    }
}

/// The log's spec for a topic declared in the manifest (the manifest wins over what the
/// topic had). `segment_bytes`, the embedded log's own setting, goes to the backend only
/// when the manifest sets it.
pub fn topic_spec(spec: &weir_manifest::TopicSpec) -> TopicSpec {
    let mut topic = TopicSpec {
        partitions: spec.partitions,
        durability: match spec.fsync {
            weir_manifest::FsyncSpec::Always => weir_log::Durability::Always,
            weir_manifest::FsyncSpec::Interval { ms } => weir_log::Durability::Interval { ms },
            weir_manifest::FsyncSpec::Never => weir_log::Durability::Never,
        },
        retention_ms: spec.retention_ms,
        retention_bytes: spec.retention_bytes,
        compaction: spec.compaction,
        backend: Default::default(),
    };
    if let Some(segment_bytes) = spec.segment_bytes {
        topic = topic.with_backend_setting("segment_bytes", segment_bytes);
    }
    topic
}

/// Write the keys of a seed file the namespace does not have yet.
async fn seed_namespace(
    kv: &Arc<dyn weir_kv::KeyValue>,
    namespace: &str,
    seed: &std::path::Path,
) -> Result<()> {
    let (kv, ns, path) = (kv.clone(), namespace.to_owned(), seed.to_owned());
    let written = blocking(move || Ok(kv.seed_from_json(&ns, &path)?)).await?;
    tracing::info!(namespace, seed = %seed.display(), written, "key-value namespace seeded");
    Ok(())
}

/// Apply retention and compaction every `every` until `cancel`.
async fn enforce_retention(log: SharedLog, every: std::time::Duration, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let log = log.clone();
        match log.enforce_retention().await {
            Ok(report) if report.segments_deleted + report.segments_compacted > 0 => {
                tracing::info!(?report, "retention applied");
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "retention failed; it is tried again later"),
        }
    }
}

/// Commits `txn`, sending it again, unchanged, while the log cannot take it now
/// ([`weir_log::ErrorKind::Unavailable`]: a sent-again transaction is never stored twice,
/// see the `weir-log` crate docs), with backoff. Any other error is returned: nothing of
/// the transaction counts then, or (a disk error) the log refuses writes anyway.
async fn commit_until_done(
    log: &SharedLog,
    txn: weir_log::Transaction,
    cancel: &CancellationToken,
) -> Result<()> {
    let mut wait = std::time::Duration::from_millis(50);
    loop {
        match log.commit_transaction(txn.clone()).await {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == weir_log::ErrorKind::Unavailable => {
                tracing::warn!(producer = %txn.producer, error = %e, "the log cannot take the transaction now; sending it again");
                tokio::select! {
                    _ = cancel.cancelled() => return Err(Error::ShuttingDown),
                    _ = tokio::time::sleep(wait) => {}
                }
                wait = (wait * 2).min(std::time::Duration::from_secs(5));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// A topic that must exist.
pub(crate) async fn topic_info(log: &SharedLog, topic: &str) -> Result<weir_log::TopicInfo> {
    log.topic(topic)
        .await?
        .ok_or_else(|| weir_log::Error::unknown_topic(topic).into())
}

/// The offset `from` means in one partition of `log`: a given offset is kept within the
/// retained range, a time finds the first event at or after it.
pub(crate) async fn resolve_start(
    log: &SharedLog,
    topic: &str,
    partition: u32,
    from: StartFrom,
) -> Result<u64> {
    let weir_log::Offsets { start, end } = log.offsets(topic, partition).await?;
    Ok(match from {
        StartFrom::Earliest => start,
        StartFrom::Latest => end,
        StartFrom::Offset(o) => o.clamp(start, end),
        StartFrom::Time(ms) => log.offset_for_time(topic, partition, ms).await?.min(end),
    })
}

/// The log record for an event.
pub(crate) fn encode_event(event: &CloudEvent) -> Record {
    Record {
        key: routing::event_key(event),
        value: event.to_json_vec().into(),
        timestamp_ms: None,
    }
}

pub(crate) fn decode_event(topic: &str, record: StoredRecord) -> Result<LoggedEvent> {
    let event = CloudEvent::from_json_slice(&record.value).map_err(|e| Error::CorruptEvent {
        topic: topic.to_owned(),
        partition: record.partition,
        offset: record.offset,
        reason: e.to_string(),
    })?;
    Ok(LoggedEvent {
        topic: topic.to_owned(),
        partition: record.partition,
        offset: record.offset,
        timestamp_ms: record.timestamp_ms,
        event,
    })
}

/// Run blocking work (file IO, compilation) off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Task(e.to_string()))?
}

#[cfg(test)]
mod tests;
