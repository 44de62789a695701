//! The shape of `weir.toml` as written, for serde: optional keys are `Option`s, "one or a
//! list" values are accepted in both forms. [`Document::resolve`] turns it into a
//! [`Manifest`] without judging it: the rules live in `validate`, so a manifest changed in
//! code is checked by the same code as one read from a file.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::front_door::{AuthTable, HttpTable, LimitsTable as NodeLimitsTable};
use crate::{
    AppSection, CapabilitiesSpec, EntitySpec, FsyncSpec, FunctionSpec, KeyValueSpec, LimitsSpec,
    Manifest, MissedTicks, Ordering, PipelineFilter, PipelineSpec, RetrySpec, RouteSpec,
    ScheduleSpec, SchemaPolicy, SchemaSpec, SecretSource, SinkMode, SinkSpec, SourceData,
    SourceSpec, StartPosition, TopicSpec, UpcastSpec, ViewColumnType, ViewSpec, ViewStoreSpec,
};

pub(crate) fn parse(text: &str) -> Result<Document, toml::de::Error> {
    toml::from_str(text)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Document {
    #[serde(default)]
    app: AppTable,
    #[serde(default)]
    topics: BTreeMap<String, TopicTable>,
    #[serde(default)]
    functions: BTreeMap<String, FunctionTable>,
    #[serde(default)]
    pipelines: BTreeMap<String, PipelineTable>,
    #[serde(default)]
    keyvalue: BTreeMap<String, KeyValueTable>,
    #[serde(default)]
    entities: BTreeMap<String, EntityTable>,
    #[serde(default)]
    views: BTreeMap<String, ViewTable>,
    #[serde(default)]
    sources: BTreeMap<String, SourceTable>,
    #[serde(default)]
    sinks: BTreeMap<String, SinkTable>,
    #[serde(default)]
    schedules: BTreeMap<String, ScheduleTable>,
    #[serde(default)]
    routes: BTreeMap<String, RouteTable>,
    #[serde(default)]
    schemas: BTreeMap<String, SchemaTable>,
    auth: Option<AuthTable>,
    #[serde(default)]
    http: HttpTable,
    #[serde(default)]
    limits: NodeLimitsTable,
}

/// `[entities.<type>]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EntityTable {
    function: String,
    partitions: Option<u32>,
    snapshot_every: Option<u32>,
    cache_entities: Option<u32>,
}

/// `[views.<name>]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ViewTable {
    function: String,
    #[serde(default)]
    sources: Vec<String>,
    #[serde(default)]
    entities: Vec<String>,
    columns: BTreeMap<String, ViewColumnType>,
    key: KeyColumns,
    #[serde(default)]
    indexes: Vec<String>,
    store: Option<String>,
}

/// A key of one column (`key = "id"`) or several (`key = ["a", "b"]`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum KeyColumns {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyValueTable {
    seed: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AppTable {
    name: Option<String>,
    backend: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TopicTable {
    partitions: Option<u32>,
    fsync: Option<FsyncName>,
    fsync_interval_ms: Option<u64>,
    retention_ms: Option<u64>,
    retention_bytes: Option<u64>,
    segment_bytes: Option<u64>,
    compaction: Option<bool>,
    schema: Option<SchemaPolicy>,
}

/// `[schemas.<event type>]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SchemaTable {
    /// Version N is the Nth file.
    versions: Vec<PathBuf>,
    compatibility: Option<weir_schema::Compatibility>,
    /// `[schemas.<type>.upcast.<N>]`: how version N becomes N+1.
    #[serde(default)]
    upcast: BTreeMap<String, UpcastTable>,
}

/// `[schemas.<type>.upcast.<N>]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpcastTable {
    /// A function instead of a mapping: `[functions.<name>]`.
    function: Option<String>,
    #[serde(default)]
    remove: Vec<String>,
    #[serde(default)]
    rename: BTreeMap<String, String>,
    #[serde(default)]
    default: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum FsyncName {
    Always,
    Interval,
    Never,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FunctionTable {
    source: PathBuf,
    #[serde(default)]
    limits: LimitsTable,
    #[serde(default)]
    config: BTreeMap<String, ConfigValue>,
    #[serde(default)]
    secrets: BTreeMap<String, SecretTable>,
    #[serde(default)]
    capabilities: CapabilitiesTable,
    instance_reuse: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsTable {
    deadline_ms: Option<u64>,
    memory_mb: Option<u64>,
    max_output_bytes: Option<u64>,
    max_outputs: Option<u32>,
    fuel: Option<u64>,
    cpu_percent: Option<u32>,
}

/// `{ env = "VAR" }` or `{ file = "path" }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "lowercase")]
pub(crate) enum SecretTable {
    Env(String),
    File(PathBuf),
}

impl SecretTable {
    pub(crate) fn resolve(self, base_dir: &Path) -> SecretSource {
        match self {
            SecretTable::Env(var) => SecretSource::Env(var),
            SecretTable::File(path) => SecretSource::File(base_dir.join(path)),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CapabilitiesTable {
    #[serde(default)]
    keyvalue: Vec<String>,
    #[serde(default)]
    http: Vec<String>,
    http_timeout_ms: Option<u64>,
    #[serde(default)]
    publish: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PipelineTable {
    from: TopicList,
    function: String,
    #[serde(default)]
    to: TopicList,
    group: Option<String>,
    #[serde(default)]
    start: StartPosition,
    #[serde(default)]
    ordering: Ordering,
    concurrency: Option<u32>,
    #[serde(default)]
    linger_ms: u32,
    filter: Option<FilterTable>,
    #[serde(default)]
    retry: RetryTable,
    dead_letter: Option<String>,
}

/// `[sources.<name>]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceTable {
    url: String,
    #[serde(default)]
    subscribe: TopicList,
    topic: String,
    #[serde(rename = "type")]
    ty: String,
    source: Option<String>,
    key: Option<String>,
    #[serde(default)]
    data: SourceData,
    dead_letter: Option<String>,
    max_payload_bytes: Option<u64>,
    start: Option<StartPosition>,
}

/// `[routes.<name>]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteTable {
    path: String,
    #[serde(default)]
    methods: Vec<String>,
    #[serde(default)]
    function: String,
    topic: Option<String>,
    verify: Option<String>,
    #[serde(default)]
    secret: SecretList,
    #[serde(rename = "type")]
    ty: Option<String>,
    #[serde(default)]
    public: bool,
    #[serde(default)]
    job: bool,
    instance_reuse: Option<u32>,
}

/// `[schedules.<name>]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScheduleTable {
    cron: String,
    timezone: Option<String>,
    topic: String,
    #[serde(rename = "type")]
    ty: Option<String>,
    #[serde(default)]
    data: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    missed: MissedTicks,
}

/// `[sinks.<name>]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SinkTable {
    topic: String,
    url: String,
    to: Option<String>,
    /// One secret, or a list of them (a rotation).
    #[serde(default)]
    secret: SecretList,
    #[serde(default)]
    mode: SinkMode,
    timeout_ms: Option<u64>,
    #[serde(default)]
    retry: RetryTable,
    dead_letter: Option<String>,
    group: Option<String>,
    #[serde(default)]
    start: StartPosition,
    circuit_failures: Option<u32>,
    max_in_flight: Option<u32>,
}

/// A secret, or a list of them.
#[derive(Debug, Default, Deserialize)]
#[serde(untagged)]
enum SecretList {
    #[default]
    None,
    One(SecretTable),
    Many(Vec<SecretTable>),
}

impl SecretList {
    fn resolve(self, base_dir: &Path) -> Vec<SecretSource> {
        match self {
            SecretList::None => Vec::new(),
            SecretList::One(secret) => vec![secret.resolve(base_dir)],
            SecretList::Many(secrets) => secrets.into_iter().map(|s| s.resolve(base_dir)).collect(),
        }
    }
}

/// `[pipelines.<name>.filter]`: attribute name to one pattern or a list of them;
/// extension attributes under `extensions`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FilterTable {
    #[serde(rename = "type")]
    ty: Option<TopicList>,
    source: Option<TopicList>,
    subject: Option<TopicList>,
    #[serde(default)]
    extensions: BTreeMap<String, TopicList>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RetryTable {
    max_attempts: Option<u32>,
    initial_backoff_ms: Option<u64>,
    max_backoff_ms: Option<u64>,
    multiplier: Option<f64>,
    jitter: Option<f64>,
}

impl Document {
    /// Problems only the document shows: keys that make no sense together.
    pub(crate) fn shape_problems(&self) -> Vec<crate::Problem> {
        let mut problems = Vec::new();
        for (ty, entity) in &self.entities {
            let journal = EntitySpec::journal_topic(ty);
            if entity.partitions.is_some() && self.topics.contains_key(&journal) {
                problems.push(crate::Problem::new(
                    crate::validate::key(&["entities", ty, "partitions"]),
                    format!("the app declares the journal topic [topics.\"{journal}\"] too; set partitions there only"),
                ));
            }
        }
        for (name, view) in &self.views {
            if let Some(store) = &view.store
                && store != "sqlite"
                && !store.starts_with("postgres://")
                && !store.starts_with("postgresql://")
            {
                problems.push(crate::Problem::new(
                    crate::validate::key(&["views", name, "store"]),
                    format!("{store:?} is not a view store; use \"sqlite\" (the default: views.sqlite in the data directory) or a postgres:// URL"),
                ));
            }
            if view.sources.is_empty() && view.entities.is_empty() {
                problems.push(crate::Problem::new(
                    crate::validate::key(&["views", name]),
                    "projects nothing; list the topics it reads in sources, or entity types in entities".to_owned(),
                ));
            }
        }
        for (name, topic) in &self.topics {
            if topic.fsync_interval_ms.is_some() && topic.fsync != Some(FsyncName::Interval) {
                problems.push(crate::Problem::new(
                    crate::validate::key(&["topics", name, "fsync_interval_ms"]),
                    "applies only with fsync = \"interval\"; set that or remove it".to_owned(),
                ));
            }
        }
        for (name, pipeline) in &self.pipelines {
            let Some(filter) = &pipeline.filter else {
                continue;
            };
            for core in ["type", "source", "subject"] {
                if filter.extensions.contains_key(core) {
                    problems.push(crate::Problem::new(
                        crate::validate::key(&["pipelines", name, "filter", "extensions", core]),
                        format!("{core:?} is not an extension; set it as filter.{core}"),
                    ));
                }
            }
        }
        problems
    }

    pub(crate) fn resolve(mut self, base_dir: &Path) -> Manifest {
        // An entity type's journal and snapshot topics are the app's topics like any
        // other (pipelines read them), declared here unless the app declares them.
        let mut entities = BTreeMap::new();
        for (ty, table) in std::mem::take(&mut self.entities) {
            let spec = EntitySpec {
                function: table.function,
                journal: EntitySpec::journal_topic(&ty),
                snapshots: EntitySpec::snapshot_topic(&ty),
                snapshot_every: table
                    .snapshot_every
                    .unwrap_or(EntitySpec::DEFAULT_SNAPSHOT_EVERY),
                cache_entities: table
                    .cache_entities
                    .unwrap_or(EntitySpec::DEFAULT_CACHE_ENTITIES),
            };
            let partitions = table.partitions.unwrap_or(EntitySpec::DEFAULT_PARTITIONS);
            self.topics
                .entry(spec.journal.clone())
                .or_insert_with(|| TopicTable {
                    partitions: Some(partitions),
                    ..TopicTable::default()
                });
            let journal_partitions = self.topics[&spec.journal].partitions;
            self.topics
                .entry(spec.snapshots.clone())
                .or_insert_with(|| TopicTable {
                    partitions: journal_partitions,
                    // A lost snapshot costs only replay time: it is written without
                    // waiting for a flush, and only each entity's latest is kept.
                    fsync: Some(FsyncName::Never),
                    compaction: Some(true),
                    ..TopicTable::default()
                });
            entities.insert(ty, spec);
        }
        let app = AppSection {
            name: self
                .app
                .name
                .unwrap_or_else(|| AppSection::DEFAULT_NAME.to_owned()),
            backend: self.app.backend.clone(),
        };
        let declared: Vec<String> = self.topics.keys().cloned().collect();
        let topics = self
            .topics
            .into_iter()
            .map(|(name, topic)| {
                let fsync = match (topic.fsync, topic.fsync_interval_ms) {
                    (Some(FsyncName::Interval), ms) => FsyncSpec::Interval {
                        ms: ms.unwrap_or(TopicSpec::DEFAULT_FSYNC_INTERVAL_MS),
                    },
                    (Some(FsyncName::Never), _) => FsyncSpec::Never,
                    // `fsync_interval_ms` without `fsync = "interval"`: see `shape_problems`.
                    (Some(FsyncName::Always) | None, _) => FsyncSpec::Always,
                };
                let spec = TopicSpec {
                    partitions: topic.partitions.unwrap_or(TopicSpec::DEFAULT_PARTITIONS),
                    fsync,
                    retention_ms: topic.retention_ms,
                    retention_bytes: topic.retention_bytes,
                    segment_bytes: topic.segment_bytes,
                    compaction: topic.compaction.unwrap_or(false),
                    schema: topic.schema.unwrap_or_default(),
                };
                (name, spec)
            })
            .collect();
        let functions = self
            .functions
            .into_iter()
            .map(|(name, function)| (name, function.resolve(base_dir)))
            .collect();
        let pipelines = self
            .pipelines
            .into_iter()
            .map(|(name, pipeline)| {
                let from = crate::expand_sources(&pipeline.from.0, declared.iter());
                let spec = PipelineSpec {
                    from,
                    from_patterns: pipeline.from.0,
                    function: pipeline.function,
                    to: pipeline.to.0,
                    dead_letter: pipeline
                        .dead_letter
                        .unwrap_or_else(|| PipelineSpec::default_dead_letter(&name)),
                    group: pipeline.group.unwrap_or_else(|| name.clone()),
                    start: pipeline.start,
                    ordering: pipeline.ordering,
                    concurrency: pipeline
                        .concurrency
                        .unwrap_or(PipelineSpec::DEFAULT_CONCURRENCY),
                    linger_ms: pipeline.linger_ms,
                    filter: pipeline.filter.map(FilterTable::resolve),
                    retry: pipeline.retry.resolve(),
                };
                (name, spec)
            })
            .collect();
        let keyvalue = self
            .keyvalue
            .into_iter()
            .map(|(name, table)| {
                let seed = table.seed.map(|seed| base_dir.join(seed));
                (name, KeyValueSpec { seed })
            })
            .collect();
        let views = self
            .views
            .into_iter()
            .map(|(name, table)| {
                let mut sources = table.sources;
                sources.extend(
                    table
                        .entities
                        .iter()
                        .map(|ty| EntitySpec::journal_topic(ty)),
                );
                let mut seen = std::collections::BTreeSet::new();
                sources.retain(|s| seen.insert(s.clone()));
                let store = match table.store {
                    Some(url) if url != "sqlite" => ViewStoreSpec::Postgres { url },
                    _ => ViewStoreSpec::Sqlite,
                };
                let spec = ViewSpec {
                    function: table.function,
                    sources,
                    columns: table.columns,
                    key: match table.key {
                        KeyColumns::One(k) => vec![k],
                        KeyColumns::Many(k) => k,
                    },
                    indexes: table.indexes,
                    store,
                };
                (name, spec)
            })
            .collect();
        let sinks = self
            .sinks
            .into_iter()
            .map(|(name, table)| {
                let secrets = table.secret.resolve(base_dir);
                let retry = table.retry.resolve();
                let spec = SinkSpec {
                    topic: table.topic,
                    url: table.url,
                    to: table.to,
                    secrets,
                    mode: table.mode,
                    timeout_ms: table.timeout_ms.unwrap_or(SinkSpec::DEFAULT_TIMEOUT_MS),
                    dead_letter: table
                        .dead_letter
                        .unwrap_or_else(|| PipelineSpec::default_dead_letter(&name)),
                    group: table
                        .group
                        .unwrap_or_else(|| SinkSpec::default_group(&name)),
                    start: table.start,
                    circuit_failures: table
                        .circuit_failures
                        .unwrap_or(SinkSpec::DEFAULT_CIRCUIT_FAILURES.min(retry.max_attempts)),
                    max_in_flight: table
                        .max_in_flight
                        .unwrap_or(SinkSpec::DEFAULT_MAX_IN_FLIGHT),
                    retry,
                };
                (name, spec)
            })
            .collect();
        let sources = self
            .sources
            .into_iter()
            .map(|(name, table)| {
                let spec = SourceSpec {
                    url: table.url,
                    subscribe: table.subscribe.0,
                    topic: table.topic,
                    ty: table.ty,
                    source: table.source,
                    key: table.key,
                    data: table.data,
                    dead_letter: table
                        .dead_letter
                        .unwrap_or_else(|| PipelineSpec::default_dead_letter(&name)),
                    max_payload_bytes: table
                        .max_payload_bytes
                        .unwrap_or(SourceSpec::DEFAULT_MAX_PAYLOAD_BYTES),
                    start: table.start,
                };
                (name, spec)
            })
            .collect();
        let schedules = self
            .schedules
            .into_iter()
            .map(|(name, table)| {
                let spec = ScheduleSpec {
                    cron: table.cron,
                    timezone: table.timezone,
                    topic: table.topic,
                    ty: table
                        .ty
                        .unwrap_or_else(|| ScheduleSpec::DEFAULT_TYPE.to_owned()),
                    data: table.data,
                    missed: table.missed,
                };
                (name, spec)
            })
            .collect();
        let routes = self
            .routes
            .into_iter()
            .map(|(name, table)| {
                let spec = RouteSpec {
                    path: table.path,
                    methods: table
                        .methods
                        .into_iter()
                        .map(|m| m.to_ascii_uppercase())
                        .collect(),
                    function: table.function,
                    topic: table.topic,
                    verify: table.verify,
                    secrets: table.secret.resolve(base_dir),
                    ty: table.ty,
                    public: table.public,
                    job: table.job,
                    instance_reuse: table.instance_reuse.unwrap_or(1),
                };
                (name, spec)
            })
            .collect();
        let schemas = self
            .schemas
            .into_iter()
            .map(|(ty, table)| {
                let spec = SchemaSpec {
                    compatibility: table.compatibility.unwrap_or_default(),
                    versions: table.versions.iter().map(|v| base_dir.join(v)).collect(),
                    upcast: table
                        .upcast
                        .into_iter()
                        .map(|(from, t)| {
                            let mapping = weir_schema::Mapping {
                                remove: t.remove,
                                rename: t.rename.into_iter().collect(),
                                default: t.default.into_iter().collect(),
                            };
                            let step = match t.function {
                                // Both given: validation refuses it, naming the step.
                                Some(_) if mapping != weir_schema::Mapping::default() => {
                                    UpcastSpec::Both
                                }
                                Some(name) => UpcastSpec::Step(weir_schema::Step::Function(name)),
                                None => UpcastSpec::Step(weir_schema::Step::Mapping(mapping)),
                            };
                            (from, step)
                        })
                        .collect(),
                };
                (ty, spec)
            })
            .collect();
        Manifest {
            app,
            topics,
            schemas,
            functions,
            pipelines,
            keyvalue,
            entities,
            views,
            sources,
            sinks,
            schedules,
            routes,
            auth: self.auth.map(|auth| auth.resolve(base_dir)),
            http: self.http.resolve(base_dir),
            limits: self.limits.resolve(),
            base_dir: base_dir.to_owned(),
            text: String::new(),
        }
    }
}

impl RetryTable {
    fn resolve(self) -> RetrySpec {
        let d = RetrySpec::default();
        RetrySpec {
            max_attempts: self.max_attempts.unwrap_or(d.max_attempts),
            initial_backoff_ms: self.initial_backoff_ms.unwrap_or(d.initial_backoff_ms),
            max_backoff_ms: self.max_backoff_ms.unwrap_or(d.max_backoff_ms),
            multiplier: self.multiplier.unwrap_or(d.multiplier),
            jitter: self.jitter.unwrap_or(d.jitter),
        }
    }
}

impl FilterTable {
    fn resolve(self) -> PipelineFilter {
        let mut attributes = BTreeMap::new();
        for (name, patterns) in [
            ("type", self.ty),
            ("source", self.source),
            ("subject", self.subject),
        ] {
            if let Some(patterns) = patterns {
                attributes.insert(name.to_owned(), patterns.0);
            }
        }
        for (name, patterns) in self.extensions {
            // `extensions = { type = ... }` is refused by `shape_problems`; were it not, its
            // patterns would join the `type` filter's.
            attributes.entry(name).or_default().extend(patterns.0);
        }
        PipelineFilter { attributes }
    }
}

impl FunctionTable {
    fn resolve(self, base_dir: &Path) -> FunctionSpec {
        // An empty source stays empty rather than becoming `base_dir` itself, so that
        // validation can still tell it was missing.
        let source = if self.source.as_os_str().is_empty() {
            PathBuf::new()
        } else {
            base_dir.join(self.source)
        };
        let limits = LimitsSpec {
            deadline_ms: self
                .limits
                .deadline_ms
                .unwrap_or(LimitsSpec::DEFAULT_DEADLINE_MS),
            memory_mb: self
                .limits
                .memory_mb
                .unwrap_or(LimitsSpec::DEFAULT_MEMORY_MB),
            max_output_bytes: self
                .limits
                .max_output_bytes
                .unwrap_or(LimitsSpec::DEFAULT_MAX_OUTPUT_BYTES),
            max_outputs: self
                .limits
                .max_outputs
                .unwrap_or(LimitsSpec::DEFAULT_MAX_OUTPUTS),
            fuel: self.limits.fuel,
            cpu_percent: self.limits.cpu_percent,
        };
        let config = self
            .config
            .into_iter()
            .map(|(key, value)| (key, value.0))
            .collect();
        let secrets = self
            .secrets
            .into_iter()
            .map(|(key, source)| (key, source.resolve(base_dir)))
            .collect();
        let capabilities = CapabilitiesSpec {
            keyvalue: self.capabilities.keyvalue,
            http: self.capabilities.http,
            http_timeout_ms: self
                .capabilities
                .http_timeout_ms
                .unwrap_or(CapabilitiesSpec::DEFAULT_HTTP_TIMEOUT_MS),
            publish: self.capabilities.publish,
        };
        FunctionSpec {
            source,
            limits,
            config,
            secrets,
            capabilities,
            instance_reuse: self
                .instance_reuse
                .unwrap_or(FunctionSpec::DEFAULT_INSTANCE_REUSE),
        }
    }
}

/// A topic name or a list of them.
#[derive(Debug, Default)]
struct TopicList(Vec<String>);

impl<'de> Deserialize<'de> for TopicList {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<TopicList, D::Error> {
        struct TopicListVisitor;

        impl<'de> Visitor<'de> for TopicListVisitor {
            type Value = TopicList;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a topic name or a list of topic names")
            }

            fn visit_str<E: de::Error>(self, topic: &str) -> Result<TopicList, E> {
                Ok(TopicList(vec![topic.to_owned()]))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<TopicList, A::Error> {
                let mut topics = Vec::with_capacity(seq.size_hint().unwrap_or(0));
                while let Some(topic) = seq.next_element::<String>()? {
                    topics.push(topic);
                }
                Ok(TopicList(topics))
            }
        }

        deserializer.deserialize_any(TopicListVisitor)
    }
}

/// A config value: a TOML string, integer, float or boolean, kept in its string form
/// because wasi:config hands functions strings.
#[derive(Debug)]
struct ConfigValue(String);

impl<'de> Deserialize<'de> for ConfigValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<ConfigValue, D::Error> {
        struct ConfigValueVisitor;

        impl<'de> Visitor<'de> for ConfigValueVisitor {
            type Value = ConfigValue;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, number or boolean")
            }

            fn visit_str<E: de::Error>(self, value: &str) -> Result<ConfigValue, E> {
                Ok(ConfigValue(value.to_owned()))
            }

            fn visit_string<E: de::Error>(self, value: String) -> Result<ConfigValue, E> {
                Ok(ConfigValue(value))
            }

            fn visit_bool<E: de::Error>(self, value: bool) -> Result<ConfigValue, E> {
                Ok(ConfigValue(value.to_string()))
            }

            fn visit_i64<E: de::Error>(self, value: i64) -> Result<ConfigValue, E> {
                Ok(ConfigValue(value.to_string()))
            }

            fn visit_u64<E: de::Error>(self, value: u64) -> Result<ConfigValue, E> {
                Ok(ConfigValue(value.to_string()))
            }

            fn visit_f64<E: de::Error>(self, value: f64) -> Result<ConfigValue, E> {
                Ok(ConfigValue(float_to_string(value)))
            }

            // toml hands dates and times over as maps, so serde's "invalid type: map"
            // would be misleading for them.
            fn visit_map<A: MapAccess<'de>>(self, _map: A) -> Result<ConfigValue, A::Error> {
                Err(de::Error::custom(
                    "a config value must be a string, number or boolean, not a table or a \
                     date; quote a date to pass it as a string",
                ))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, _seq: A) -> Result<ConfigValue, A::Error> {
                Err(de::Error::custom(
                    "a config value must be a string, number or boolean, not a list; join \
                     the items into one string",
                ))
            }
        }

        deserializer.deserialize_any(ConfigValueVisitor)
    }
}

/// The shortest text that reads back as `value`, spelled as TOML would: `0.92`, `1.0`,
/// `1e100`, `inf`, `nan`.
fn float_to_string(value: f64) -> String {
    if value.is_nan() {
        "nan".to_owned()
    } else {
        // Debug, unlike Display, keeps the ".0" of whole numbers and uses an exponent for
        // very large and small ones; it spells infinities "inf" and "-inf" like TOML.
        format!("{value:?}")
    }
}
