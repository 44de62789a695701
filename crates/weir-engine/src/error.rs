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
    #[error(
        "record {offset} of partition {partition} of topic {topic:?} is not a CloudEvent: {reason}"
    )]
    CorruptEvent {
        topic: String,
        partition: u32,
        offset: u64,
        reason: String,
    },
    #[error("consumer group {group:?} is busy: {reason}")]
    GroupBusy { group: String, reason: String },
    #[error("the node is shutting down; try again on the restarted node")]
    ShuttingDown,
    #[error("background task failed: {0}")]
    Task(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
