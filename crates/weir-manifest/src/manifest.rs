//! The resolved manifest, what the rest of weir reads: defaults filled in, paths resolved
//! against the manifest's directory, names as map keys.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::{AuthSpec, Error, HttpSpec, NodeLimits, Result, document, validate};

/// An app: its topics, the functions it runs and the pipelines that connect them.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    pub app: AppSection,
    /// By topic name.
    pub topics: BTreeMap<String, TopicSpec>,
    /// By function name.
    pub functions: BTreeMap<String, FunctionSpec>,
    /// By pipeline name.
    pub pipelines: BTreeMap<String, PipelineSpec>,
    /// Key-value namespaces, by name.
    pub keyvalue: BTreeMap<String, KeyValueSpec>,
    /// Event-sourced entity types, by type name.
    pub entities: BTreeMap<String, EntitySpec>,
    /// CQRS views, by view name.
    pub views: BTreeMap<String, ViewSpec>,
    /// Sources of events from other brokers, by source name.
    pub sources: BTreeMap<String, SourceSpec>,
    /// Sinks delivering a topic's events elsewhere, by sink name.
    pub sinks: BTreeMap<String, SinkSpec>,
    /// Cron schedules appending a tick event to a topic at each occurrence, by name.
    pub schedules: BTreeMap<String, ScheduleSpec>,
    /// HTTP routes served by functions exporting `wasi:http/incoming-handler`, by name.
    pub routes: BTreeMap<String, RouteSpec>,
    /// Event schemas, by CloudEvents type.
    pub schemas: BTreeMap<String, SchemaSpec>,
    /// `[auth]`: `None` leaves the API open (loopback use).
    pub auth: Option<AuthSpec>,
    /// `[http]`: TLS and CORS.
    pub http: HttpSpec,
    /// `[limits]`: what the node gives out.
    pub limits: NodeLimits,
    /// The directory relative paths were resolved against: the manifest file's own.
    pub base_dir: PathBuf,
    /// The TOML it was parsed from, as given (a fleet tells deploys apart by its digest).
    pub text: String,
}

impl Manifest {
    /// The pipeline doing the work of job route `route` (validated: exactly one reads
    /// its topic), with its name.
    pub fn job_pipeline(&self, route: &RouteSpec) -> Option<(&str, &PipelineSpec)> {
        let topic = route.topic.as_ref().filter(|_| route.job)?;
        self.pipelines
            .iter()
            .find(|(_, p)| p.from.contains(topic))
            .map(|(name, p)| (name.as_str(), p))
    }

    /// Parses `text`, fills in defaults, resolves relative paths against `base_dir` and
    /// validates the result.
    pub fn from_toml_str(text: &str, base_dir: &Path) -> Result<Manifest> {
        let document = document::parse(text).map_err(|error| Error::Parse { error })?;
        let mut problems = document.shape_problems();
        let mut manifest = document.resolve(base_dir);
        manifest.text = text.to_owned();
        match manifest.validate() {
            Ok(()) if problems.is_empty() => Ok(manifest),
            Ok(()) => Err(Error::Invalid(problems)),
            Err(Error::Invalid(more)) => {
                problems.extend(more);
                Err(Error::Invalid(problems))
            }
            Err(e) => Err(e),
        }
    }

    /// Reads and parses the manifest at `path`; relative paths in it are resolved against
    /// the directory it is in.
    pub fn load(path: &Path) -> Result<Manifest> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_owned(),
            source,
        })?;
        let base_dir = path.parent().unwrap_or(Path::new(""));
        Manifest::from_toml_str(&text, base_dir)
    }

    /// Checks every rule and reports every broken one in [`Error::Invalid`]. Manifests
    /// from [`Manifest::from_toml_str`] have passed it already; call it again after
    /// changing one in code.
    pub fn validate(&self) -> Result<()> {
        let problems = validate::problems(self);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::Invalid(problems))
        }
    }
}

/// `[app]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppSection {
    pub name: String,
    /// `backend`: the log the app runs on when `weir serve` names none (`--backend`,
    /// `WEIR_BACKEND`): `embedded`, `nats://…`, `kafka://…`. `None`: embedded.
    pub backend: Option<String>,
}

impl AppSection {
    pub const DEFAULT_NAME: &str = "app";
}

impl Default for AppSection {
    fn default() -> AppSection {
        AppSection {
            name: AppSection::DEFAULT_NAME.to_owned(),
            backend: None,
        }
    }
}

/// `[entities.<type>]`: an event-sourced entity type. Its journal (`entity.<type>`) and
/// snapshot (`entity.<type>.snapshots`) topics are in [`Manifest::topics`] too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntitySpec {
    /// The function implementing the entity world.
    pub function: String,
    /// The journal topic: the entity type's events, keyed by entity id.
    pub journal: String,
    /// The compacted topic of the entities' latest snapshots.
    pub snapshots: String,
    /// Snapshot an entity's state every this many events; 0 never.
    pub snapshot_every: u32,
    /// Entity states kept in memory per journal partition.
    pub cache_entities: u32,
}

impl EntitySpec {
    pub const DEFAULT_PARTITIONS: u32 = 4;
    pub const DEFAULT_SNAPSHOT_EVERY: u32 = 100;
    pub const DEFAULT_CACHE_ENTITIES: u32 = 10_000;

    /// The journal topic of entity type `ty`.
    pub fn journal_topic(ty: &str) -> String {
        format!("entity.{ty}")
    }

    /// The snapshot topic of entity type `ty`.
    pub fn snapshot_topic(ty: &str) -> String {
        format!("entity.{ty}.snapshots")
    }
}

/// `[views.<name>]`: a table a projection function keeps from the events of its sources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewSpec {
    /// The function implementing the projection world.
    pub function: String,
    /// The topics it projects (`sources`, and the journals of `entities`), each once.
    pub sources: Vec<String>,
    /// Column name to type.
    pub columns: BTreeMap<String, ViewColumnType>,
    /// The primary key: one or more columns.
    pub key: Vec<String>,
    /// Columns queries may filter and sort on, besides the key's first.
    pub indexes: Vec<String>,
    pub store: ViewStoreSpec,
}

impl ViewSpec {
    /// The table of view `name` in its store: the name with '-' as '_'.
    pub fn table(name: &str) -> String {
        name.replace('-', "_")
    }
}

/// A view column's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ViewColumnType {
    Text,
    Integer,
    Real,
    Boolean,
    Json,
}

/// Where a view's table is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ViewStoreSpec {
    /// The node's embedded SQLite file, `views.sqlite` in its data directory.
    Sqlite,
    /// A PostgreSQL database (a `postgres://` or `postgresql://` URL).
    Postgres { url: String },
}

/// `[topics.<name>]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    pub partitions: u32,
    /// When an append is acknowledged relative to fsync.
    pub fsync: FsyncSpec,
    /// Delete segments whose events are all older than this.
    pub retention_ms: Option<u64>,
    /// Keep at most about this many bytes per partition (whole segments are deleted).
    pub retention_bytes: Option<u64>,
    /// Roll to a new segment file at this size (the embedded log's own setting; its
    /// default, 64 MiB, when not set).
    pub segment_bytes: Option<u64>,
    /// Keep only the latest event per key in closed segments.
    pub compaction: bool,
    /// Whether every event published to it must have a registered schema.
    pub schema: SchemaPolicy,
}

/// A topic's `schema`: what it asks of the schemas of the events published to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SchemaPolicy {
    /// An event whose type has a registered schema is checked against it; others pass.
    #[default]
    Optional,
    /// Every event's type must have a registered schema, and the event must match it.
    Required,
}

/// `[schemas.<event type>]`: the JSON Schema files of a CloudEvents type's versions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaSpec {
    /// Checked when a new version is registered (at start, deploy, or over HTTP).
    pub compatibility: weir_schema::Compatibility,
    /// Version N is the Nth file, resolved against the manifest's directory.
    pub versions: Vec<PathBuf>,
    /// `[schemas.<type>.upcast.<N>]`, by N as written: how an event of version N becomes
    /// one of version N+1 before a function, a view or a replay sees it.
    pub upcast: BTreeMap<String, UpcastSpec>,
}

/// `[schemas.<type>.upcast.<N>]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpcastSpec {
    Step(weir_schema::Step),
    /// Both a function and a mapping: refused by validation.
    Both,
}

impl SchemaSpec {
    /// The upcasters by the version they start from (those whose key is a number as
    /// written, `1` not `01`).
    pub fn upcasters(&self) -> impl Iterator<Item = (u32, &weir_schema::Step)> {
        self.upcast.iter().filter_map(|(from, spec)| {
            let n: u32 = from.parse().ok()?;
            match spec {
                UpcastSpec::Step(step) if n.to_string() == *from => Some((n, step)),
                _ => None,
            }
        })
    }
}

/// `fsync = "always" | "interval" | "never"` (with `fsync_interval_ms` for interval).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FsyncSpec {
    /// Acknowledge after fsync; concurrent appends share one fsync (group commit).
    #[default]
    Always,
    /// Acknowledge after the write; fsync at most every `ms` milliseconds.
    Interval { ms: u64 },
    /// Acknowledge after the write; the operating system decides when to flush.
    Never,
}

impl TopicSpec {
    pub const DEFAULT_PARTITIONS: u32 = 1;
    /// As many as the embedded log allows; each partition costs a directory and open files.
    /// The embedded log's default `max_partitions_per_topic`.
    pub const MAX_PARTITIONS: u32 = 1024;
    pub const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;
    pub const MIN_SEGMENT_BYTES: u64 = 64 << 10;
    pub const MAX_SEGMENT_BYTES: u64 = 1 << 30;
    pub const DEFAULT_FSYNC_INTERVAL_MS: u64 = 100;
    pub const MAX_FSYNC_INTERVAL_MS: u64 = 60_000;
}

impl TopicSpec {
    /// What is wrong with this spec for topic `name`, by key, as a manifest would report
    /// it: the same bounds whether a topic comes from `weir.toml` or over HTTP.
    pub fn problems(&self, name: &str) -> Vec<crate::Problem> {
        let mut problems = Vec::new();
        crate::validate::check_topic(name, self, &mut problems);
        problems
    }
}

impl Default for TopicSpec {
    fn default() -> TopicSpec {
        TopicSpec {
            partitions: TopicSpec::DEFAULT_PARTITIONS,
            fsync: FsyncSpec::Always,
            retention_ms: None,
            retention_bytes: None,
            segment_bytes: None,
            compaction: false,
            schema: SchemaPolicy::Optional,
        }
    }
}

/// `[functions.<name>]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionSpec {
    /// The component's path, resolved against [`Manifest::base_dir`]; empty only in a
    /// manifest that fails validation.
    pub source: PathBuf,
    pub limits: LimitsSpec,
    /// What the function reads through wasi:config; non-string TOML values in their
    /// string form.
    pub config: BTreeMap<String, String>,
    /// Secrets the function reads through wasi:config like config values, resolved when
    /// the function is loaded and never printed.
    pub secrets: BTreeMap<String, SecretSource>,
    /// What the function may use beyond logging and its config; everything else is denied.
    pub capabilities: CapabilitiesSpec,
    /// Calls one warm instance serves before it is replaced by a fresh one; 1 gives every
    /// event a fresh instance.
    pub instance_reuse: u32,
}

impl FunctionSpec {
    pub const DEFAULT_INSTANCE_REUSE: u32 = 1000;
    pub const MAX_INSTANCE_REUSE: u32 = 1_000_000;
}

/// Where a secret's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// An environment variable of the weir process.
    Env(String),
    /// A file's contents, with one trailing newline removed; resolved against
    /// [`Manifest::base_dir`].
    File(PathBuf),
}

/// `[functions.<name>.capabilities]`: what a function is granted. Empty denies all.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CapabilitiesSpec {
    /// Key-value namespaces (declared under `[keyvalue.<name>]`) it may read and write.
    pub keyvalue: Vec<String>,
    /// Hosts it may send HTTP requests to: `host`, `host:port` or `*.domain`, optionally
    /// with a scheme (`https://host`).
    pub http: Vec<String>,
    /// Longest wait for one outbound HTTP response, in milliseconds; never longer than
    /// what is left of the call's deadline.
    pub http_timeout_ms: u64,
    /// Topics an HTTP route's handler may publish to (`weir:function/events`).
    pub publish: Vec<String>,
}

impl CapabilitiesSpec {
    pub const DEFAULT_HTTP_TIMEOUT_MS: u64 = 5_000;
    pub const MAX_HTTP_TIMEOUT_MS: u64 = 60_000;
}

/// `[keyvalue.<name>]`: a key-value namespace in the node's embedded store.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeyValueSpec {
    /// A JSON file of `{"key": value, ...}` written into the namespace at start for keys
    /// it does not have yet (string values as their text, other values as JSON);
    /// resolved against [`Manifest::base_dir`].
    pub seed: Option<PathBuf>,
}

/// A function's per-call limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitsSpec {
    /// CPU time one call may take before it is interrupted.
    pub deadline_ms: u64,
    /// Linear memory one instance may grow to, in MiB.
    pub memory_mb: u64,
    /// Most bytes of output events (their data and attributes) one call may return.
    pub max_output_bytes: u64,
    /// Most output events one call may return.
    pub max_outputs: u32,
    /// Wasm instructions (fuel units) one call may execute; none means unmetered.
    pub fuel: Option<u64>,
    /// The function's CPU quota, in percent of one core, over all its calls at once
    /// (pipelines, routes, entities); none means no quota.
    pub cpu_percent: Option<u32>,
}

impl LimitsSpec {
    pub const DEFAULT_DEADLINE_MS: u64 = 100;
    pub const MAX_DEADLINE_MS: u64 = 60_000;
    pub const DEFAULT_MEMORY_MB: u64 = 64;
    pub const MAX_MEMORY_MB: u64 = 4096;
    pub const DEFAULT_MAX_OUTPUT_BYTES: u64 = 1 << 20;
    pub const MAX_MAX_OUTPUT_BYTES: u64 = 64 << 20;
    pub const DEFAULT_MAX_OUTPUTS: u32 = 100;
    pub const MAX_MAX_OUTPUTS: u32 = 100_000;
    /// 64 cores.
    pub const MAX_CPU_PERCENT: u32 = 6_400;

    pub fn deadline(&self) -> Duration {
        Duration::from_millis(self.deadline_ms)
    }

    pub fn memory_bytes(&self) -> u64 {
        self.memory_mb * 1024 * 1024
    }
}

impl Default for LimitsSpec {
    fn default() -> LimitsSpec {
        LimitsSpec {
            deadline_ms: LimitsSpec::DEFAULT_DEADLINE_MS,
            memory_mb: LimitsSpec::DEFAULT_MEMORY_MB,
            max_output_bytes: LimitsSpec::DEFAULT_MAX_OUTPUT_BYTES,
            max_outputs: LimitsSpec::DEFAULT_MAX_OUTPUTS,
            fuel: None,
            cpu_percent: None,
        }
    }
}

/// `[pipelines.<name>]`: events from `from` go through `function`, which may publish to
/// `to`; events it cannot handle go to `dead_letter`.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineSpec {
    /// The source topics: `from_patterns` with each pattern replaced by the declared
    /// topics it matches.
    pub from: Vec<String>,
    /// `from` as written: topic names and `*` patterns.
    pub from_patterns: Vec<String>,
    pub function: String,
    pub to: Vec<String>,
    /// Where events go that failed for good: the topic gets the event unchanged plus
    /// `dlq*` extension attributes saying why.
    pub dead_letter: String,
    /// The consumer group the pipeline reads as; the pipeline's name unless set.
    pub group: String,
    pub start: StartPosition,
    pub ordering: Ordering,
    /// Function calls at once across the whole pipeline.
    pub concurrency: u32,
    /// How long a partition waits for more events once it has read fewer than a full
    /// batch, so that they share one commit (0: none). Kafka's `linger.ms`, on the
    /// consumer's side.
    pub linger_ms: u32,
    /// Only events matching it reach the function; `None` lets all through.
    pub filter: Option<PipelineFilter>,
    pub retry: RetrySpec,
}

impl PipelineSpec {
    pub const DEFAULT_CONCURRENCY: u32 = 4;
    pub const MAX_CONCURRENCY: u32 = 1024;
    pub const MAX_LINGER_MS: u32 = 1000;

    /// The dead-letter topic of a pipeline that names none: `<pipeline>.dlq`.
    pub fn default_dead_letter(pipeline: &str) -> String {
        format!("{pipeline}.dlq")
    }
}

/// Which events of a pipeline must be handled one after another.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Ordering {
    /// Events with the same key (`partitionkey`, else `subject`) in order; different keys,
    /// and events without a key, in parallel up to `concurrency`.
    #[default]
    Key,
    /// Each partition in order; partitions in parallel.
    Partition,
    /// No order: any events in parallel up to `concurrency`.
    None,
}

impl Ordering {
    /// The spelling in `weir.toml`.
    pub fn as_str(self) -> &'static str {
        match self {
            Ordering::Key => "key",
            Ordering::Partition => "partition",
            Ordering::None => "none",
        }
    }
}

/// `[pipelines.<name>.filter]`: every listed attribute must match one of its patterns.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct PipelineFilter {
    /// Attribute name (`type`, `source`, `subject` or an extension's) to patterns: exact,
    /// `prefix*`, or `*` (present with any value).
    pub attributes: BTreeMap<String, Vec<String>>,
}

/// How a pipeline retries an event whose call failed with a retryable error.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct RetrySpec {
    /// Calls in all, the first included; 1 means no retry.
    pub max_attempts: u32,
    pub initial_backoff_ms: u64,
    pub max_backoff_ms: u64,
    pub multiplier: f64,
    /// Each wait is varied by a random factor in `[1 - jitter, 1 + jitter]`.
    pub jitter: f64,
}

impl Default for RetrySpec {
    fn default() -> RetrySpec {
        RetrySpec {
            max_attempts: 5,
            initial_backoff_ms: 100,
            max_backoff_ms: 10_000,
            multiplier: 2.0,
            jitter: 0.2,
        }
    }
}

impl RetrySpec {
    /// The wait before attempt `attempt + 1` (after `attempt` failed calls, 1-based),
    /// before jitter: `initial * multiplier^(attempt-1)`, capped at `max_backoff_ms`.
    pub fn backoff_ms(&self, attempt: u32) -> u64 {
        let exp = self
            .multiplier
            .powi(attempt.saturating_sub(1).min(64) as i32);
        let ms = self.initial_backoff_ms as f64 * exp;
        if ms.is_finite() {
            (ms as u64).min(self.max_backoff_ms)
        } else {
            self.max_backoff_ms
        }
    }
}

/// Whether a `from` entry is a pattern rather than a topic name (topic names have no `*`).
pub fn is_pattern(source: &str) -> bool {
    source.contains('*')
}

/// Whether `name` matches `pattern`: `*` stands for any run of characters.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// `from` as written, with each pattern replaced by the `declared` topics it matches (in
/// name order) and duplicates dropped.
pub fn expand_sources<'a>(
    sources: &[String],
    declared: impl IntoIterator<Item = &'a String> + Clone,
) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for source in sources {
        if is_pattern(source) {
            for topic in declared.clone() {
                if glob_match(source, topic) && !out.contains(topic) {
                    out.push(topic.clone());
                }
            }
        } else if !out.contains(source) {
            out.push(source.clone());
        }
    }
    out
}

/// Where a consumer group that has committed nothing yet starts reading.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartPosition {
    /// The oldest retained event.
    #[default]
    Earliest,
    /// Only events published after the group starts.
    Latest,
}

impl StartPosition {
    /// The spelling in `weir.toml`.
    pub fn as_str(self) -> &'static str {
        match self {
            StartPosition::Earliest => "earliest",
            StartPosition::Latest => "latest",
        }
    }
}

/// `[sources.<name>]`: messages of another broker (the URL's scheme picks the kind) become
/// events of `topic`; those that cannot go to `dead_letter`.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceSpec {
    /// The broker: `mqtt://[user[:password]@]host[:port][?client_id=ID]`.
    pub url: String,
    /// What to subscribe to: MQTT topic filters.
    pub subscribe: Vec<String>,
    /// The weir topic the events are appended to.
    pub topic: String,
    /// The events' `type`.
    pub ty: String,
    /// The events' `source`; none takes the URL without credentials or query.
    pub source: Option<String>,
    /// The partition key template (`{subject}`, `{subject.N}`, `{header.NAME}`,
    /// `{data.FIELD}`); none keys by the message's subject.
    pub key: Option<String>,
    pub data: SourceData,
    /// Where messages that cannot become events go, with the reason: `<name>.dlq` unless set.
    pub dead_letter: String,
    /// The largest payload taken; larger ones are dead-lettered without their payload.
    pub max_payload_bytes: u64,
    /// Where a positional source (Redis Streams, JetStream, Kafka) with no stored position in a
    /// stream begins: its oldest message (the default), or what arrives from its first
    /// start on. Only positional kinds take it.
    pub start: Option<StartPosition>,
}

impl SourceSpec {
    /// Under the embedded log's largest record (1 MiB) with room for the event around it
    /// (a binary payload grows by a third in base64).
    pub const DEFAULT_MAX_PAYLOAD_BYTES: u64 = 512 * 1024;
    /// Base64 makes 700 KiB of binary payload 933 KiB, which leaves room for the
    /// event's attributes under 1 MiB.
    pub const MAX_PAYLOAD_BYTES: u64 = 700 * 1024;
    /// The URL schemes of the source kinds weir has.
    pub const KINDS: [&'static str; 7] =
        ["mqtt", "tcp", "amqp", "redis", "nats", "jetstream", "kafka"];
    /// The kinds that keep their position in weir (see `start`).
    pub const POSITIONAL: [&'static str; 3] = ["redis", "jetstream", "kafka"];

    /// The topic a positional source keeps its positions in, committed with its events.
    pub fn positions_topic(name: &str) -> String {
        format!("{name}.positions")
    }

    /// The URL's scheme.
    pub fn kind(&self) -> &str {
        self.url.split("://").next().unwrap_or("")
    }
}

/// `[schedules.<name>]`: at each occurrence of `cron` (in `timezone`), one tick event
/// appended to `topic`, once across restarts and on a fleet.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleSpec {
    /// 5 fields (minute hour day-of-month month day-of-week), 6 with seconds first (and
    /// an optional year last), or a nickname (`@hourly`, `@daily`…).
    pub cron: String,
    /// An IANA time zone name; UTC when none.
    pub timezone: Option<String>,
    pub topic: String,
    /// The ticks' CloudEvents `type`.
    pub ty: String,
    /// Fields added to each tick's data.
    pub data: serde_json::Map<String, serde_json::Value>,
    pub missed: MissedTicks,
}

impl ScheduleSpec {
    pub const DEFAULT_TYPE: &'static str = "dev.weir.schedule.tick";
}

/// `[routes.<name>]`: requests whose path matches `path` (and whose method is one of
/// `methods`) are served by `function`, a component exporting `wasi:http/incoming-handler`,
/// or, with `topic` instead, become events appended to it (an inbound webhook, its
/// sender's signature checked per `verify`); behind the node's auth and limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    /// A path pattern: literal segments, `{name}` for one segment, a last `{*name}` for
    /// the rest of the path. Never `/v1/...`, `/metrics`, `/healthz` or `/readyz`.
    pub path: String,
    /// Upper-case methods the route takes; empty takes every method.
    pub methods: Vec<String>,
    /// The handler; empty when the route appends to `topic`.
    pub function: String,
    /// Where an inbound webhook's requests are appended, one event each.
    pub topic: Option<String>,
    /// Whose signatures an inbound webhook checks: `standard-webhooks`, `github`, `stripe`.
    pub verify: Option<String>,
    /// The signing secrets of `verify` (several during a rotation).
    pub secrets: Vec<SecretSource>,
    /// The events' CloudEvents `type`; default from the sender (see the README).
    pub ty: Option<String>,
    /// With `[auth]`: callable without a credential (a webhook receiver that checks the
    /// sender's signature itself). Rate limits still apply.
    pub public: bool,
    /// A long-running job: the request is answered `202` with a job URL, the work is the
    /// one pipeline that reads `topic`, and the job URL reports its status and result.
    pub job: bool,
    /// Requests one instance of the function serves before it is replaced; 1 (the
    /// default) gives every request a fresh instance. Reuse is the caller's to allow: what
    /// one request leaves in the guest's memory, the next one on that instance sees.
    pub instance_reuse: u32,
}

impl RouteSpec {
    /// The view (weir's own, built from the job routes) that holds jobs' status.
    pub const JOBS_VIEW: &'static str = "weir-jobs";
    /// Paths weir's own API has; a route may not take them.
    pub const RESERVED: [&'static str; 4] = ["/v1", "/metrics", "/healthz", "/readyz"];

    /// Whether `path` is weir's own (the API under `/v1`, the probes and metrics).
    pub fn reserved(path: &str) -> bool {
        Self::RESERVED.iter().any(|r| {
            path == *r
                || path
                    .strip_prefix(r)
                    .is_some_and(|rest| rest.starts_with('/'))
        })
    }
}

/// What a schedule does about occurrences that passed while nothing ran it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MissedTicks {
    /// Nothing: the next tick is the next occurrence from now.
    #[default]
    Skip,
    /// One tick at once, for the latest missed occurrence.
    Once,
}

/// How a source's message payload becomes the event's data.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceData {
    /// JSON; a payload that is not JSON is dead-lettered.
    #[default]
    Json,
    /// UTF-8 text; a payload that is not is dead-lettered.
    Text,
    /// The bytes as they came.
    Binary,
}

impl SourceData {
    /// The spelling in `weir.toml`.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceData::Json => "json",
            SourceData::Text => "text",
            SourceData::Binary => "binary",
        }
    }
}

/// `[sinks.<name>]`: the events of `topic` delivered to `url`, in order per partition,
/// each retried per `retry`, then dead-lettered.
#[derive(Debug, Clone, PartialEq)]
pub struct SinkSpec {
    pub topic: String,
    /// `http://` or `https://`: a webhook; `nats://`, `jetstream://` or `redis://`: a
    /// broker, publishing to `to`.
    pub url: String,
    /// A broker sink's subject or stream key.
    pub to: Option<String>,
    /// Standard Webhooks signing secrets (`whsec_…`), from the node's environment or files;
    /// each signs every request (two during a rotation). None: unsigned.
    pub secrets: Vec<SecretSource>,
    pub mode: SinkMode,
    /// Per attempt.
    pub timeout_ms: u64,
    pub retry: RetrySpec,
    /// Where events go that could not be delivered, with why: `<name>.dlq` unless set.
    pub dead_letter: String,
    /// The consumer group keeping the sink's position: `sink.<name>` unless set.
    pub group: String,
    pub start: StartPosition,
    /// Failed attempts in a row (the receiver down, timing out or answering 5xx) that open
    /// the sink's circuit: deliveries pause and one probe goes after a while, so an outage
    /// does not dead-letter what a later attempt would deliver. 0 turns the breaker off.
    /// Default 5, or `retry.max_attempts` if that is lower; at most `retry.max_attempts`.
    pub circuit_failures: u32,
    /// Deliveries in flight at once per partition: events of different keys go at once,
    /// each key's one after another in offset order. 1: a partition's events one at a
    /// time, in offset order.
    pub max_in_flight: u32,
}

impl SinkSpec {
    pub const DEFAULT_CIRCUIT_FAILURES: u32 = 5;
    pub const DEFAULT_MAX_IN_FLIGHT: u32 = 16;
    pub const MAX_IN_FLIGHT: u64 = 1024;
    pub const DEFAULT_TIMEOUT_MS: u64 = 10_000;
    pub const MAX_TIMEOUT_MS: u64 = 300_000;

    /// The consumer group of a sink that names none.
    pub fn default_group(sink: &str) -> String {
        format!("sink.{sink}")
    }
}

/// How a sink puts an event in its request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SinkMode {
    /// The whole event as JSON (`application/cloudevents+json`).
    #[default]
    Structured,
    /// The data as the body, the attributes as `ce-*` headers.
    Binary,
}
