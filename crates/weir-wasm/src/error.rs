//! Errors of loading and calling functions; each names the function and its version.

use std::time::Duration;

/// Loading a function failed.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "cannot read function {function:?} from {path}: {source}; check `source` in weir.toml and build the function first"
    )]
    Read {
        function: String,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "function {function:?} is not a valid WebAssembly component: {reason}; build it for wasm32-wasip2 with a weir guest SDK"
    )]
    InvalidComponent { function: String, reason: String },
    #[error(
        "function {function:?} does not fit the weir:function/handler world: {reason}; it may import something weir does not grant or not export `handle`"
    )]
    WrongWorld { function: String, reason: String },
    #[error("cannot set up the wasm engine: {0}")]
    Engine(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One call of a function failed. The host and other functions are unaffected.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The function says the failure is transient.
    #[error("function {function:?} {version} failed (retryable): {message}")]
    Retryable {
        function: String,
        version: String,
        message: String,
    },
    /// The function says the event can never succeed.
    #[error("function {function:?} {version} rejected the event: {message}")]
    Fatal {
        function: String,
        version: String,
        message: String,
    },
    /// The guest trapped (a panic, an unreachable, an out-of-bounds access).
    #[error("function {function:?} {version} trapped: {message}")]
    Trap {
        function: String,
        version: String,
        message: String,
    },
    #[error(
        "function {function:?} {version} ran past its deadline of {deadline:?}; raise `limits.deadline_ms` or make it faster"
    )]
    Deadline {
        function: String,
        version: String,
        deadline: Duration,
    },
    #[error(
        "function {function:?} {version} exceeded its memory limit of {limit_bytes} bytes; raise `limits.memory_mb`"
    )]
    Memory {
        function: String,
        version: String,
        limit_bytes: usize,
    },
    /// The guest returned something that is not a valid event.
    #[error("function {function:?} {version} returned an invalid output: {reason}")]
    InvalidOutput {
        function: String,
        version: String,
        reason: String,
    },
}

impl CallError {
    /// Whether trying the same event again may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, CallError::Retryable { .. })
    }
}
