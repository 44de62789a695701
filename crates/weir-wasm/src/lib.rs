//! weir's WebAssembly function host: compiles components written against the
//! `weir:function` WIT world, grants them only what the manifest allows, and calls them
//! under a deadline and a memory limit.
//!
//! **Architecture Invariant:** every call runs in a fresh store and a fresh instance made
//! from a pre-linked [`wasmtime::component::InstancePre`]; nothing a call leaves in guest
//! memory is seen by the next call. (The warm-pool model of the scale step replaces this
//! behind [`Function::call`].)
//!
//! **API Boundary:** a guest gets `wasi:logging`, `wasi:config` (its own config only) and the
//! WASI p2 interfaces a `wasm32-wasip2` binary always imports, with an empty context: no
//! environment, no preopened directories, no sockets, no stdin; stdout and stderr are
//! discarded.

mod convert;
mod error;
mod host;
#[cfg(test)]
mod tests;

pub use error::{CallError, Error, Result};
pub use host::{Function, FunctionHost, FunctionSettings, Limits, OutputEvent};
