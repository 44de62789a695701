//! The node's wiring: what it is made of, how it starts and stops.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use weir_log::TopicSpec;
use weir_manifest::Manifest;
use weir_wasm::HostOptions;

use crate::keyvalue::seed_namespace;
use crate::topics::topic_spec;
use crate::{Error, Result, SharedLog, blocking, fleet, groups, keyvalue, pipeline, registry};

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
    /// Most consumer groups made by clients (reads and subscriptions with a group)
    /// active at once; `[limits] max_client_groups`.
    pub max_client_groups: usize,
    /// Compiled functions the function host keeps in memory; replay candidates are dropped
    /// first, active functions never (`[limits] compiled_in_memory`).
    pub compiled_in_memory: u32,
    /// Bytes of compiled code kept in `<data>/wasm-cache`, least recently used removed
    /// first (`[limits] compiled_on_disk_bytes`).
    pub compiled_on_disk_bytes: u64,
    /// The key-value store; none opens the embedded one in `<data>/kv` (`weir serve` on
    /// NATS passes NATS KV, which every node on the server shares).
    pub kv: Option<Arc<dyn weir_kv::KeyValue>>,
    /// Where the other nodes of a fleet reach this one's HTTP API (`http://HOST:PORT`),
    /// announced with its heartbeats on a shared backend.
    pub advertise_url: Option<String>,
}

impl std::fmt::Debug for NodeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeOptions")
            .field("data_dir", &self.data_dir)
            .field("backend", &self.log.backend())
            .field("retention_interval", &self.retention_interval)
            .field("compiled_in_memory", &self.compiled_in_memory)
            .field("compiled_on_disk_bytes", &self.compiled_on_disk_bytes)
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
        let limits = weir_manifest::NodeLimits::default();
        NodeOptions {
            data_dir: data_dir.into(),
            manifest,
            log,
            retention_interval: std::time::Duration::from_secs(30),
            max_client_groups: limits.max_client_groups as usize,
            compiled_in_memory: limits.compiled_in_memory,
            compiled_on_disk_bytes: limits.compiled_on_disk_bytes,
            kv: None,
            advertise_url: None,
        }
    }
}

/// A running node. Share it as `Arc<Node>`.
pub struct Node {
    pub(crate) log: SharedLog,
    /// The app as it runs now: the start's manifest, then each deploy's.
    pub(crate) manifest: Mutex<Option<Manifest>>,
    /// Where a deployed manifest's relative paths (secret files, seeds) are resolved: the
    /// start manifest's directory.
    pub(crate) base_dir: PathBuf,
    /// The functions' active versions and history; owns the wasm engine.
    pub(crate) registry: Arc<registry::Registry>,
    /// The embedded key-value store, shared with the functions.
    pub(crate) kv: Arc<dyn weir_kv::KeyValue>,
    pub(crate) pipelines: Mutex<Vec<Arc<pipeline::Pipeline>>>,
    /// One deploy or rollback at a time.
    pub(crate) deploying: tokio::sync::Mutex<()>,
    /// One re-drive at a time (its transactions' producers run one at a time).
    pub(crate) redriving: tokio::sync::Mutex<()>,
    pub(crate) cancel: CancellationToken,
    pub(crate) tasks: TaskTracker,
    pub(crate) groups: Arc<groups::GroupRegistry>,
    /// Which units of work this node runs: all of them, or on a fleet those its view of
    /// the members gives it.
    pub(crate) units: fleet::Units,
    /// The app's entity types and their journals' writers.
    pub(crate) entities: crate::entity::Entities,
    /// The app's views and their projections.
    pub(crate) views: crate::views::Views,
    /// The app's sources of events from other brokers.
    pub(crate) sources: crate::sources::Sources,
    /// The app's sinks delivering topics' events to other systems.
    pub(crate) sinks: crate::sinks::Sinks,
    /// The app's HTTP routes, rebuilt at start and on each deploy.
    pub(crate) routes: std::sync::RwLock<Arc<crate::routes::RouteTable>>,
    /// On a fleet, where its deploys are shared (`deploy::shared`).
    pub(crate) shared: Option<Arc<dyn weir_log::SharedDeploys>>,
    /// The SHA-256 of the `weir.toml` this node started from.
    pub(crate) started_from: Option<String>,
    /// The event schemas and the topics that require them.
    pub(crate) schemas: Arc<crate::schemas::Schemas>,
    pub(crate) stopped: Mutex<bool>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("backend", &self.log.backend())
            .field("app", &self.app_name())
            .finish_non_exhaustive()
    }
}

/// A start that failed part-way: stop the tasks it spawned (retention, entity writers,
/// projections, pipelines) before returning `error`, so nothing of it keeps running.
async fn abandon(cancel: &CancellationToken, tasks: &TaskTracker, error: Error) -> Error {
    cancel.cancel();
    tasks.close();
    tasks.wait().await;
    error
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
            max_client_groups,
            compiled_in_memory,
            compiled_on_disk_bytes,
            kv,
            advertise_url,
        } = opts;

        crate::telemetry::describe_metrics();
        // The key-value store is open before functions load: they read it from the first
        // event on. It lives in <data>/kv, beside the log's own topics/ and groups/.
        let kv: Arc<dyn weir_kv::KeyValue> = match kv {
            Some(store) => Arc::new(keyvalue::MeteredKeyValue(store)),
            None => {
                let dir = data_dir.join("kv");
                let store = blocking(move || Ok(weir_kv::EmbeddedKv::open(&dir)?)).await?;
                Arc::new(keyvalue::MeteredKeyValue(store))
            }
        };
        let host_options = HostOptions {
            cache_dir: Some(data_dir.join("wasm-cache")),
            fuel: manifest
                .as_ref()
                .is_some_and(|m| m.functions.values().any(|f| f.limits.fuel.is_some())),
            keyvalue: Some(Arc::new(keyvalue::HostKeyValue(kv.clone()))),
            max_compiled_in_memory: compiled_in_memory as usize,
            max_compiled_on_disk_bytes: compiled_on_disk_bytes,
            ..HostOptions::default()
        };
        let registry = Arc::new(registry::Registry::new(
            data_dir.join("functions"),
            host_options,
        ));
        let mut jobs = manifest.as_ref().and_then(crate::jobs::jobs_view);
        // Schemas before anything publishes: the app's are checked against what the log's
        // store holds, and a version that breaks its type's contract stops the start.
        let schemas = Arc::new(crate::schemas::Schemas::default());
        schemas.catch_up(&log).await?;
        if let Some(manifest) = &manifest {
            let m = manifest.clone();
            let documents = blocking(move || crate::schemas::read_documents(&m)).await?;
            schemas.check_app(manifest, &documents)?;
            schemas.register_app(&log, manifest, &documents).await?;
            schemas.set_policies(manifest, &registry);
            for (name, topic) in &manifest.topics {
                log.create_topic(name, &topic_spec(topic)).await?;
            }
            // The jobs view reads the dead-letter topics of job pipelines from the start,
            // before the pipelines (which create undeclared ones) run.
            if let Some((jobs, _)) = &jobs {
                for topic in &jobs.sources {
                    if log.topic(topic).await?.is_none() {
                        log.create_topic(topic, &TopicSpec::default()).await?;
                    }
                }
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
            crate::schemas::check_upcaster_functions(manifest, |name| {
                registry.active(name).map(|(_, f)| f.world())
            })?;
        }

        let cancel = CancellationToken::new();
        let tasks = TaskTracker::new();
        let groups = Arc::new(groups::GroupRegistry::with_limit(max_client_groups));
        // On a log several nodes share, join its fleet before any unit starts, so the
        // first units this node takes are already shared with the members it found.
        let units = match log.membership() {
            Some(membership) => {
                let me = weir_log::Member {
                    id: fleet::member_id(),
                    url: advertise_url.unwrap_or_default(),
                    started_ms: (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000)
                        as i64,
                };
                let fleet = fleet::Fleet::join(membership, me).await?;
                tasks.spawn(fleet.clone().run(cancel.clone()));
                fleet::Units { fleet: Some(fleet) }
            }
            None => fleet::Units::default(),
        };
        tasks.spawn(schemas.clone().follow(log.clone(), cancel.clone()));
        tasks.spawn(enforce_retention(
            log.clone(),
            retention_interval,
            cancel.clone(),
        ));
        let entities = match &manifest {
            Some(m) => {
                match crate::entity::Entities::start(
                    &m.entities,
                    &log,
                    &registry,
                    &schemas,
                    &tasks,
                    &cancel,
                )
                .await
                {
                    Ok(entities) => entities,
                    Err(e) => return Err(abandon(&cancel, &tasks, e).await),
                }
            }
            None => crate::entity::Entities::default(),
        };
        let views = match &manifest {
            Some(m) => {
                match crate::views::Views::start(
                    &m.views,
                    jobs.take(),
                    &data_dir,
                    &log,
                    &registry,
                    &schemas,
                    &units,
                    &tasks,
                    &cancel,
                )
                .await
                {
                    Ok(views) => views,
                    Err(e) => return Err(abandon(&cancel, &tasks, e).await),
                }
            }
            None => crate::views::Views::default(),
        };
        // A fleet shares its deploys (the backend keeps them); a lone node keeps its own.
        let shared = units.fleet.as_ref().and_then(|_| log.deploys());
        let node = Node {
            schemas: schemas.clone(),
            entities,
            views,
            shared,
            started_from: manifest
                .as_ref()
                .map(|m| registry::sha256_hex(m.text.as_bytes())),
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
            units,
            sources: crate::sources::Sources::new(schemas.clone()),
            sinks: crate::sinks::Sinks::default(),
            routes: std::sync::RwLock::default(),
            stopped: Mutex::new(false),
        };
        if let Err(e) = node.set_routes() {
            return Err(abandon(&node.cancel, &node.tasks, e).await);
        }
        if let Some(manifest) = &manifest {
            for (name, spec) in &manifest.pipelines {
                if let Err(e) = node.start_pipeline(name, spec).await {
                    return Err(abandon(&node.cancel, &node.tasks, e).await);
                }
            }
            for (name, spec) in &manifest.sinks {
                if let Err(e) = node.start_sink(name, spec).await {
                    return Err(abandon(&node.cancel, &node.tasks, e).await);
                }
            }
            // Sources last: what they append, the pipelines above read.
            for (name, spec) in &manifest.sources {
                if let Err(e) = node
                    .start_source(&manifest.app.name, name, spec, Vec::new())
                    .await
                {
                    return Err(abandon(&node.cancel, &node.tasks, e).await);
                }
            }
            for (name, spec) in &manifest.schedules {
                if let Err(e) = node.start_schedule(&manifest.app.name, name, spec).await {
                    return Err(abandon(&node.cancel, &node.tasks, e).await);
                }
            }
        }
        let node = Arc::new(node);
        if let Some(shared) = node.shared.clone() {
            if let Err(e) = node.share_at_start().await {
                return Err(abandon(&node.cancel, &node.tasks, e).await);
            }
            node.tasks.spawn(crate::deploy::shared::follow(
                Arc::downgrade(&node),
                shared,
                node.cancel.clone(),
            ));
        }
        Ok(node)
    }

    /// Start a pipeline of the app (its function is registered), creating its dead-letter
    /// topic (one partition, default settings) if the app does not declare it.
    pub(crate) async fn start_pipeline(
        &self,
        name: &str,
        spec: &weir_manifest::PipelineSpec,
    ) -> Result<()> {
        if self.log.topic(&spec.dead_letter).await?.is_none() {
            self.log
                .create_topic(&spec.dead_letter, &TopicSpec::default())
                .await?;
            tracing::info!(pipeline = name, topic = %spec.dead_letter, "dead-letter topic created");
        }
        if let Some((_, function)) = self.registry.active(&spec.function)
            && function.world() != weir_wasm::World::Handler
        {
            return Err(Error::WrongWorld {
                function: spec.function.clone(),
                world: function.world().to_string(),
                wanted: format!("pipeline {name:?}'s function (the handler world)"),
            });
        }
        self.groups.claim_for_pipeline(&spec.group, name);
        let p = Arc::new(pipeline::Pipeline::new(
            name,
            spec,
            self.registry.clone(),
            self.schemas.clone(),
        ));
        p.spawn(&self.log, &self.units, &self.tasks, &self.cancel)
            .await?;
        self.pipelines
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(p);
        Ok(())
    }

    /// Start a sink of the app.
    pub(crate) async fn start_sink(
        &self,
        name: &str,
        spec: &weir_manifest::SinkSpec,
    ) -> Result<()> {
        self.sinks
            .start(
                name,
                spec,
                &self.log,
                &self.units,
                &self.tasks,
                &self.cancel,
            )
            .await
    }

    /// Start a source of the app; `unsubscribe`: what the source subscribed to before a
    /// deploy changed it.
    pub(crate) async fn start_source(
        &self,
        app: &str,
        name: &str,
        spec: &weir_manifest::SourceSpec,
        unsubscribe: Vec<String>,
    ) -> Result<()> {
        self.sources
            .start(
                app,
                name,
                spec,
                unsubscribe,
                &self.log,
                &self.units,
                &self.tasks,
                &self.cancel,
            )
            .await
    }

    pub(crate) async fn start_schedule(
        &self,
        app: &str,
        name: &str,
        spec: &weir_manifest::ScheduleSpec,
    ) -> Result<()> {
        self.sources
            .start_schedule(
                app,
                name,
                spec,
                &self.log,
                &self.units,
                &self.tasks,
                &self.cancel,
            )
            .await
    }

    pub(crate) fn app_name(&self) -> Option<String> {
        self.manifest
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|m| m.app.name.clone())
    }

    /// What the function host keeps compiled in memory and on disk, and how much it
    /// evicted; none until the first function loads. Blocking (it lists the cache
    /// directory): call it off the async runtime.
    pub fn compiled_stats(&self) -> Option<weir_wasm::CompiledStats> {
        self.registry.compiled_stats()
    }

    /// The log the node runs on.
    pub fn log(&self) -> &SharedLog {
        &self.log
    }

    pub(crate) fn pipeline_of_group(&self, group: &str) -> Option<Arc<pipeline::Pipeline>> {
        self.pipelines
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .find(|p| p.group() == group)
            .cloned()
    }

    pub(crate) fn pipeline(&self, name: &str) -> Result<Arc<pipeline::Pipeline>> {
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

    /// Events pipeline `name` has committed on this node since it started (handled,
    /// filtered or dead-lettered): its counters, without a call to the log.
    pub fn pipeline_committed(&self, name: &str) -> Result<u64> {
        Ok(self.pipeline(name)?.committed_events())
    }

    /// Bring the consumer-lag gauges (`weir_consumer_lag_events`) up to date: each
    /// pipeline's group and each group of live subscribers, in every partition; and the
    /// sources' `weir_source_connected`. The
    /// gateway runs this before it renders `GET /metrics`.
    pub async fn record_lag(&self) {
        let pipelines: Vec<_> = self
            .pipelines
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        for p in pipelines {
            p.status(&self.log).await;
        }
        for source in self.sources.status(&self.units) {
            crate::telemetry::source_connected(&source.name, source.state == "running");
        }
        for (group, topic) in self.groups.member_groups() {
            // A topic deleted meanwhile has no lag to show.
            let _ = self.group_status(&group, &topic).await;
        }
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
        // Every batch is committed: the others may take this node's units at once.
        if let Some(fleet) = &self.units.fleet {
            fleet.leave().await;
        }
        tracing::info!("node stopped");
    }
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
