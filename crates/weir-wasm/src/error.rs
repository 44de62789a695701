//! Errors of loading and calling functions; each names the function and its version.

use std::time::Duration;

/// Loading a function failed. Nothing changed: a running version keeps serving.
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
        "function {function:?} fits none of the weir:function worlds (handler, entity, projection): {reason}; it may import something weir does not grant, or not export `handle`, `apply` or `project` as its world says"
    )]
    WrongWorld { function: String, reason: String },
    #[error(
        "function {function:?} sets a fuel limit but fuel metering is off in this node (it is on when the weir.toml a node starts with gives any function `limits.fuel`); remove `limits.fuel` or restart weir with this weir.toml"
    )]
    FuelDisabled { function: String },
    #[error("cannot set up the wasm engine: {0}")]
    Engine(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One call of a function failed. The host and other functions are unaffected, and the
/// instance that failed is never used again.
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
    /// The guest recursed past the wasm stack limit.
    #[error("function {function:?} {version} overflowed its stack; look for unbounded recursion")]
    StackOverflow { function: String, version: String },
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
    #[error(
        "function {function:?} {version} used up its fuel of {fuel} units; raise `limits.fuel` or make it cheaper"
    )]
    Fuel {
        function: String,
        version: String,
        fuel: u64,
    },
    /// The outputs of one call exceed `limits.max_outputs` or `limits.max_output_bytes`.
    #[error(
        "function {function:?} {version} returned {actual} {what}, over its limit `limits.{limit}` of {allowed}; raise the limit or return less"
    )]
    OutputLimit {
        function: String,
        version: String,
        /// `max_outputs` or `max_output_bytes`.
        limit: &'static str,
        what: &'static str,
        allowed: u64,
        actual: u64,
    },
    /// The guest used a capability `weir.toml` does not grant it.
    #[error(
        "function {function:?} {version} used {capability}, which it is not granted; grant it under [functions.{function}.capabilities] in weir.toml"
    )]
    CapabilityDenied {
        function: String,
        version: String,
        /// What was refused, e.g. `key-value namespace "customers"` or `HTTP to evil.example:443`.
        capability: String,
    },
    /// The host could not make an instance (the pool of instance slots is exhausted), or
    /// a store the call used answered only after its deadline.
    #[error("function {function:?} {version} could not run: {reason}; try again later")]
    Unavailable {
        function: String,
        version: String,
        reason: String,
    },
    /// The call failed after a request of it met the open circuit of its destination (or
    /// opened it): the destination is down, not the event at fault. Wait `wait`, then
    /// try again without charging the event an attempt.
    #[error(
        "function {function:?} {version} failed ({cause}) while the circuit to {destination} is open; calls wait for it, then one probes"
    )]
    Outage {
        function: String,
        version: String,
        destination: String,
        wait: Duration,
        cause: String,
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
    /// A short name of the kind of failure, for dead-letter attributes and metrics:
    /// `retryable`, `fatal`, `trap`, `stack_overflow`, `deadline`, `memory`, `fuel`,
    /// `output_limit`, `capability_denied`, `unavailable`, `outage` or `invalid_output`.
    pub fn kind(&self) -> &'static str {
        match self {
            CallError::Retryable { .. } => "retryable",
            CallError::Fatal { .. } => "fatal",
            CallError::Trap { .. } => "trap",
            CallError::StackOverflow { .. } => "stack_overflow",
            CallError::Deadline { .. } => "deadline",
            CallError::Memory { .. } => "memory",
            CallError::Fuel { .. } => "fuel",
            CallError::OutputLimit { .. } => "output_limit",
            CallError::CapabilityDenied { .. } => "capability_denied",
            CallError::Unavailable { .. } => "unavailable",
            CallError::Outage { .. } => "outage",
            CallError::InvalidOutput { .. } => "invalid_output",
        }
    }

    /// Whether trying the same event again may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            CallError::Retryable { .. } | CallError::Unavailable { .. } | CallError::Outage { .. }
        )
    }

    /// Whether a limit of the function (deadline, memory, fuel, stack, output) ended the
    /// call.
    pub fn is_limit(&self) -> bool {
        matches!(
            self,
            CallError::Deadline { .. }
                | CallError::Memory { .. }
                | CallError::Fuel { .. }
                | CallError::StackOverflow { .. }
                | CallError::OutputLimit { .. }
        )
    }
}
