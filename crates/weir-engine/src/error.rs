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
