//! weir's WebAssembly function host: compiles components written against the
//! `weir:function` WIT world (caching the compiled code on disk), grants them only what
//! the manifest allows, and calls them on pooled warm instances under a deadline, a
//! memory limit, optional fuel and output limits.
//!
//! # The instance model
//! wasmtime's pooling allocator pre-reserves instance slots, so a fresh instance costs
//! microseconds; a warm instance costs nothing to start. [`Function::instances`] gives a
//! caller (a pipeline) its own [`InstancePool`]: calls take an idle instance or make a
//! fresh one, and return it after a successful call until it has served
//! `instance_reuse` calls (default 1000; 1 gives every event a fresh instance). Any
//! failure drops the instance. See `pool.rs` for the invariant.
//!
//! **API Boundary:** a guest gets `wasi:logging`, `wasi:config` (its own config and
//! secrets only), `wasi:keyvalue/store` (the namespaces granted, in the node's store),
//! `wasi:http/outgoing-handler` (the hosts granted, with a timeout capped by the deadline,
//! never to loopback, private or other special-purpose addresses unless a grant names the
//! address: see `egress.rs`)
//! and the WASI p2 interfaces a `wasm32-wasip2` binary always imports, with an empty
//! context: no environment, no preopened directories, no sockets, no stdin, stdout and
//! stderr discarded, and clock subscriptions that are ready at once (no sleeps). Using an
//! interface that is linked but not granted ends the call with
//! [`CallError::CapabilityDenied`].

mod address;
mod cache;
mod circuits;
mod compiled;
mod convert;
mod egress;
mod error;
mod host;
mod keyvalue;
mod pool;
mod quota;
mod route;
mod state;
mod telemetry;
#[cfg(test)]
mod tests;
mod threads;

pub use circuits::{CircuitStatus, DEFAULT_CIRCUIT_FAILURES};
pub use egress::{Resolver, SystemResolver};
pub use error::{CallError, Error, Result};
pub use host::{
    CellValue, CompiledStats, Decision, EntityCommand, Function, FunctionHost, FunctionSettings,
    HostOptions, Limits, NewEvent, OutputEvent, RowChange, Secret, World,
};
pub use keyvalue::{KeyValueStore, MemoryKeyValue};
pub use pool::InstancePool;
pub use route::{Publisher, Receipt, RouteRequest};
pub use state::{Grants, HttpGrant};
pub use telemetry::describe_metrics;
pub use threads::{CallThreads, Job};
