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
            Error::UnknownNamespace { .. }
            | Error::UnknownFunction { .. }
            | Error::UnknownPipeline { .. }
            | Error::UnknownVersion { .. } => ErrorClass::NotFound,
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
            Error::KeyValue(_) => "key-value-store",
            Error::UnknownNamespace { .. } => "unknown-namespace",
            Error::UnknownFunction { .. } => "unknown-function",
            Error::UnknownPipeline { .. } => "unknown-pipeline",
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
            Error::DurabilityLowered { .. } => "durability-lowered",
            Error::ShuttingDown => "unavailable",
            Error::Task(_) => "internal",
        }
    }
}
