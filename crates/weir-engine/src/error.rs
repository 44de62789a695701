//! The one error type of weir-engine.

/// What can go wrong running a node.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Log(#[from] weir_log::Error),
    #[error(transparent)]
    Function(#[from] weir_wasm::Error),
    #[error(transparent)]
    Manifest(#[from] weir_manifest::Error),
    #[error(
        "cannot read function {function:?} from {path}: {source}; build it first (see the README) or fix `source` in weir.toml"
    )]
    ReadFunction {
        function: String,
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// A secret named in weir.toml could not be read. The message never holds its value.
    #[error("secret {key:?} of function {function:?}: {reason}")]
    Secret {
        function: String,
        key: String,
        reason: String,
    },
    #[error(
        "record {offset} of partition {partition} of topic {topic:?} is not a CloudEvent: {reason}"
    )]
    CorruptEvent {
        topic: String,
        partition: u32,
        offset: u64,
        reason: String,
    },
    #[error(transparent)]
    KeyValue(#[from] weir_kv::Error),
    #[error(
        "key-value namespace {namespace:?} is not declared by the app; declared: {declared:?}; declare it as [keyvalue.{namespace}] in weir.toml"
    )]
    UnknownNamespace {
        namespace: String,
        declared: Vec<String>,
    },
    #[error(
        "function {function:?} is not declared by the app; declared: {declared:?}; declare it in weir.toml and deploy the app with `weir deploy`"
    )]
    UnknownFunction {
        function: String,
        declared: Vec<String>,
    },
    #[error("sink {sink:?} is not declared by the app; declared: {declared:?}")]
    UnknownSink { sink: String, declared: Vec<String> },
    #[error(
        "no job {id:?}: job routes answer `202` with the URL of each job they accept ([routes.NAME] job = true)"
    )]
    UnknownJob { id: String },
    #[error(
        "pipeline {pipeline:?} is not declared by the app; declared: {declared:?}; `weir status` lists the running pipelines"
    )]
    UnknownPipeline {
        pipeline: String,
        declared: Vec<String>,
    },
    #[error("invalid replay request: {reason}")]
    InvalidReplay { reason: String },
    #[error("the replay was cancelled; run it again to get a report")]
    ReplayCancelled,
    #[error(
        "function {function:?} has no kept version {version:?}; kept: {kept:?}; pick one of them (`weir status` lists them)"
    )]
    UnknownVersion {
        function: String,
        version: String,
        kept: Vec<String>,
    },
    #[error(
        "function {function:?} has no earlier version to roll back to; deploy one with `weir deploy`"
    )]
    NoEarlierVersion { function: String },
    #[error("cannot store function versions at {path}: {source}; check the data directory")]
    FunctionStore {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The deploy asks for a change a running node cannot make; each reason says which.
    #[error("the deploy changes what only a restart applies: {}; restart the node with the new weir.toml", reasons.join("; "))]
    DeployRefused { reasons: Vec<String> },
    #[error("invalid deploy request: {reason}")]
    InvalidDeploy { reason: String },
    #[error("consumer group {group:?} is busy: {reason}")]
    GroupBusy { group: String, reason: String },
    #[error(
        "{active} consumer groups made by clients are active, the most this node allows ([limits] max_client_groups); end some subscriptions or reuse a group"
    )]
    TooManyGroups { active: usize },
    #[error(transparent)]
    Schema(#[from] weir_schema::Error),
    #[error("event {index} ({ty:?}) cannot be published to {topic:?}: {reason}")]
    SchemaRejected {
        topic: String,
        index: usize,
        ty: String,
        reason: crate::SchemaRejection,
    },
    #[error(
        "another node registered a schema of {ty:?} meanwhile; send the registration again to check it against that one"
    )]
    SchemaStoreMoved { ty: String },
    #[error(
        "this node cannot read the newest schemas of {ty:?} in weir.schemas ({reason}); register its versions on a node that can, or upgrade this one"
    )]
    SchemaUnreadable { ty: String, reason: String },
    #[error(
        "{topic:?} is weir's own topic (the schema registry); register schemas with PUT /v1/schemas/{{type}}/{{version}}"
    )]
    ReservedTopic { topic: String },
    #[error(
        "cannot read version file {path} of schema {ty:?}: {reason}; fix [schemas.{ty}] in weir.toml"
    )]
    SchemaFile {
        ty: String,
        path: String,
        reason: String,
    },
    #[error("invalid settings for topic {topic:?}: {reason}")]
    InvalidTopic { topic: String, reason: String },
    #[error(
        "topic {topic:?} acknowledges {from}; this would make it acknowledge {to}, so a 202 would no longer mean what it did; send \"lower_durability\": true to lower it anyway"
    )]
    DurabilityLowered {
        topic: String,
        from: String,
        to: String,
    },
    #[error(
        "no entity type {ty:?}; declared entity types: {}",
        list_or_none(declared)
    )]
    UnknownEntityType { ty: String, declared: Vec<String> },
    #[error("{ty} {id:?} has no events{}", version.map(|v| format!(" at version {v}")).unwrap_or_default())]
    UnknownEntity {
        ty: String,
        id: String,
        version: Option<u64>,
    },
    #[error("entity id {id:?} of type {ty} {reason}; use 1 to 256 bytes without '/' or whitespace")]
    InvalidEntityId {
        ty: String,
        id: String,
        reason: String,
    },
    #[error("command name {name:?} is invalid: {reason}")]
    InvalidCommand { name: String, reason: String },
    #[error(
        "{ty} {id:?} is at version {actual}, not {expected} (If-Match); read it again and decide anew"
    )]
    VersionMismatch {
        ty: String,
        id: String,
        expected: u64,
        actual: u64,
    },
    #[error("{ty} {id:?} rejected command {command:?}: {reason}")]
    CommandRejected {
        ty: String,
        id: String,
        command: String,
        reason: String,
    },
    #[error("entity type {ty}'s function failed in {export} on {on}: {reason}")]
    EntityFunction {
        ty: String,
        export: String,
        on: String,
        retryable: bool,
        reason: String,
    },
    #[error("cannot load {ty} {id:?}: {reason}")]
    EntityLoad {
        ty: String,
        id: String,
        reason: String,
    },
    #[error(
        "topic {topic:?} belongs to entity type {ty:?}: only its writer appends to it; send a command to POST /v1/entities/{ty}/{{id}}/commands/{{name}}"
    )]
    EntityTopic { topic: String, ty: String },
    #[error(
        "entity type {ty}'s journal partition was written by someone else; its writer reloaded it, send the command again"
    )]
    JournalMoved { ty: String },
    #[error("function {function:?} implements the {world} world; it is used as {wanted}")]
    WrongWorld {
        function: String,
        world: String,
        wanted: String,
    },
    #[error(
        "view {view:?} is not declared by the app; declared: {declared:?}; declare it as [views.{view}] in weir.toml"
    )]
    UnknownView { view: String, declared: Vec<String> },
    #[error("view {view:?}: {reason}")]
    InvalidViewQuery { view: String, reason: String },
    #[error(
        "view {view:?} has not projected {token} after {waited_ms} ms (it is at offset {at}); try again, or wait longer with wait_ms"
    )]
    ViewBehind {
        view: String,
        token: String,
        at: u64,
        waited_ms: u64,
    },
    #[error("view {view:?} was rebuilt and swapped in; query it again, then follow it again")]
    ViewRebuilt { view: String },
    #[error("view {view:?} is being rebuilt already; `weir status` follows it")]
    RebuildRunning { view: String },
    #[error(transparent)]
    ViewStore(#[from] weir_views::Error),
    #[error("the node is shutting down; try again on the restarted node")]
    ShuttingDown,
    #[error("background task failed: {0}")]
    Task(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a caller can do about an [`Error`], whichever crate below the engine it came
/// from; the gateway picks an HTTP status from it, and [`Error::code`] names the problem.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// A topic, partition, function, version, pipeline, namespace or key that does not
    /// exist.
    NotFound,
    /// The request is wrong: sending it again fails again.
    Invalid,
    /// The topic exists with settings that cannot change.
    Exists,
    /// A record, batch, transaction or value over a limit.
    TooLarge,
    /// The request conflicts with the state it would change (a consumer group in use, a
    /// deploy that needs a restart, durability that would be lowered, no earlier version,
    /// an append's condition that did not hold).
    Conflict,
    /// A newer owner of a consumer group's partition exists.
    Fenced,
    /// A function component that cannot be loaded (not a component, the wrong world, a
    /// limit the node cannot enforce, a secret that cannot be read).
    Unloadable,
    /// Out of disk space; nothing was written.
    DiskFull,
    /// The log cannot take the call now; the same call may succeed later.
    Unavailable,
    /// The node is shutting down, or the work was cancelled by it.
    ShuttingDown,
    /// The storage failed (a disk error, corruption): an operator has to look.
    Failed,
    /// A limit of the node is reached; the same call may succeed when it is not.
    TooMany,
    /// An entity refused a command, or its function failed on it: nothing was written.
    Rejected,
    /// Anything else: a bug, or a failure of the node's own files.
    Internal,
}

impl Error {
    /// What a caller can do about the error.
    pub fn class(&self) -> ErrorClass {
        use weir_kv::Error as K;
        use weir_log::ErrorKind as L;
        use weir_wasm::Error as W;
        match self {
            Error::Log(log) => match log.kind() {
                L::NotFound => ErrorClass::NotFound,
                L::Invalid => ErrorClass::Invalid,
                L::Exists => ErrorClass::Exists,
                L::TooLarge => ErrorClass::TooLarge,
                L::DiskFull => ErrorClass::DiskFull,
                L::Unavailable => ErrorClass::Unavailable,
                L::Fenced => ErrorClass::Fenced,
                L::Conflict => ErrorClass::Conflict,
                _ => ErrorClass::Failed,
            },
            Error::KeyValue(
                K::InvalidKey { .. } | K::InvalidNamespace { .. } | K::InvalidJson { .. },
            ) => ErrorClass::Invalid,
            Error::KeyValue(K::ValueTooLarge { .. }) => ErrorClass::TooLarge,
            Error::KeyValue(K::Unavailable { .. }) => ErrorClass::Unavailable,
            Error::UnknownNamespace { .. }
            | Error::UnknownFunction { .. }
            | Error::UnknownPipeline { .. }
            | Error::UnknownSink { .. }
            | Error::UnknownJob { .. }
            | Error::UnknownVersion { .. }
            | Error::UnknownEntityType { .. }
            | Error::UnknownEntity { .. } => ErrorClass::NotFound,
            Error::InvalidEntityId { .. } | Error::InvalidCommand { .. } => ErrorClass::Invalid,
            Error::VersionMismatch { .. } | Error::EntityTopic { .. } => ErrorClass::Conflict,
            Error::JournalMoved { .. } => ErrorClass::Unavailable,
            Error::CommandRejected { .. } => ErrorClass::Rejected,
            Error::EntityFunction {
                retryable: false, ..
            } => ErrorClass::Rejected,
            Error::EntityFunction {
                retryable: true, ..
            } => ErrorClass::Unavailable,
            Error::WrongWorld { .. } => ErrorClass::Unloadable,
            Error::UnknownView { .. } => ErrorClass::NotFound,
            Error::InvalidViewQuery { .. } | Error::ViewStore(weir_views::Error::Invalid(_)) => {
                ErrorClass::Invalid
            }
            Error::ViewBehind { .. } | Error::ViewStore(_) => ErrorClass::Unavailable,
            Error::RebuildRunning { .. } | Error::ViewRebuilt { .. } => ErrorClass::Conflict,
            Error::Schema(
                weir_schema::Error::VersionTaken { .. }
                | weir_schema::Error::VersionGap { .. }
                | weir_schema::Error::Incompatible { .. },
            )
            | Error::SchemaStoreMoved { .. }
            | Error::SchemaUnreadable { .. }
            | Error::ReservedTopic { .. } => ErrorClass::Conflict,
            Error::Schema(_) | Error::SchemaRejected { .. } => ErrorClass::Rejected,
            Error::SchemaFile { .. } => ErrorClass::Invalid,
            Error::InvalidReplay { .. }
            | Error::InvalidDeploy { .. }
            | Error::Manifest(_)
            | Error::InvalidTopic { .. } => ErrorClass::Invalid,
            Error::ReplayCancelled | Error::ShuttingDown => ErrorClass::ShuttingDown,
            Error::NoEarlierVersion { .. }
            | Error::DeployRefused { .. }
            | Error::GroupBusy { .. }
            | Error::DurabilityLowered { .. } => ErrorClass::Conflict,
            Error::TooManyGroups { .. } => ErrorClass::TooMany,
            Error::Function(
                W::InvalidComponent { .. } | W::WrongWorld { .. } | W::FuelDisabled { .. },
            )
            | Error::Secret { .. } => ErrorClass::Unloadable,
            _ => ErrorClass::Internal,
        }
    }

    /// The specific problem, stable for scripts and problem documents: the log's own
    /// code for a log error (`unknown-topic`, `too-many-partitions`, ...), else one per
    /// kind of error (`unknown-function`, `invalid-key`, `restart-required`, ...).
    pub fn code(&self) -> &'static str {
        use weir_kv::Error as K;
        match self {
            Error::Log(log) => log.code(),
            Error::Function(_) | Error::Secret { .. } => match self.class() {
                ErrorClass::Unloadable => "invalid-function",
                _ => "function-host",
            },
            Error::Manifest(_) => "invalid-manifest",
            Error::ReadFunction { .. } => "read-function",
            Error::CorruptEvent { .. } => "corrupt-event",
            Error::KeyValue(K::InvalidKey { .. }) => "invalid-key",
            Error::KeyValue(K::InvalidNamespace { .. }) => "invalid-namespace",
            Error::KeyValue(K::InvalidJson { .. }) => "invalid-json",
            Error::KeyValue(K::ValueTooLarge { .. }) => "too-large",
            Error::KeyValue(K::Unavailable { .. }) => "kv-unavailable",
            Error::KeyValue(_) => "key-value-store",
            Error::UnknownNamespace { .. } => "unknown-namespace",
            Error::UnknownFunction { .. } => "unknown-function",
            Error::UnknownPipeline { .. } => "unknown-pipeline",
            Error::UnknownSink { .. } => "unknown-sink",
            Error::UnknownJob { .. } => "unknown-job",
            Error::InvalidReplay { .. } => "invalid-replay",
            Error::ReplayCancelled => "cancelled",
            Error::UnknownVersion { .. } => "unknown-version",
            Error::NoEarlierVersion { .. } => "no-earlier-version",
            Error::FunctionStore { .. } => "function-store",
            Error::DeployRefused { .. } => "restart-required",
            Error::InvalidDeploy { .. } => "invalid-deploy",
            Error::GroupBusy { .. } => "group-busy",
            Error::TooManyGroups { .. } => "too-many-groups",
            Error::InvalidTopic { .. } => "invalid-topic",
            Error::Schema(weir_schema::Error::VersionTaken { .. }) => "schema-version-taken",
            Error::Schema(weir_schema::Error::VersionGap { .. }) => "schema-version-gap",
            Error::Schema(weir_schema::Error::Incompatible { .. }) => "incompatible-schema",
            Error::Schema(_) => "invalid-schema",
            Error::SchemaRejected {
                reason: crate::SchemaRejection::Violations { .. },
                ..
            } => "schema-violation",
            Error::SchemaRejected {
                reason: crate::SchemaRejection::Required { .. },
                ..
            } => "schema-required",
            Error::SchemaRejected {
                reason: crate::SchemaRejection::NotJson { .. },
                ..
            } => "schema-violation",
            Error::SchemaRejected { .. } => "unknown-schema",
            Error::SchemaStoreMoved { .. } => "schema-store-moved",
            Error::SchemaUnreadable { .. } => "schema-unreadable",
            Error::ReservedTopic { .. } => "reserved-topic",
            Error::SchemaFile { .. } => "schema-file",
            Error::DurabilityLowered { .. } => "durability-lowered",
            Error::UnknownEntityType { .. } => "unknown-entity-type",
            Error::UnknownEntity { .. } => "unknown-entity",
            Error::InvalidEntityId { .. } => "invalid-entity-id",
            Error::InvalidCommand { .. } => "invalid-command",
            Error::VersionMismatch { .. } => "version-mismatch",
            Error::CommandRejected { .. } => "command-rejected",
            Error::EntityFunction { .. } => "command-failed",
            Error::EntityLoad { .. } => "entity-load",
            Error::JournalMoved { .. } => "journal-moved",
            Error::EntityTopic { .. } => "entity-topic",
            Error::WrongWorld { .. } => "invalid-function",
            Error::UnknownView { .. } => "unknown-view",
            Error::InvalidViewQuery { .. } | Error::ViewStore(weir_views::Error::Invalid(_)) => {
                "invalid-view-query"
            }
            Error::ViewBehind { .. } => "view-behind",
            Error::RebuildRunning { .. } => "rebuild-running",
            Error::ViewRebuilt { .. } => "view-rebuilt",
            Error::ViewStore(_) => "view-store",
            Error::ShuttingDown => "unavailable",
            Error::Task(_) => "internal",
        }
    }
}

fn list_or_none(names: &[String]) -> String {
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    }
}
