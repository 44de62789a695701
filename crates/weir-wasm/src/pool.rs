//! Warm instances of one function version for one caller.
//!
//! **Architecture Invariant:** an instance serves at most `instance_reuse` calls, all
//! from the pool that made it (one pool per pipeline and version, or per HTTP route and
//! version), and is dropped after any call that failed in any way — a trap, a limit, a
//! denied capability, even an error the guest returned — so no state survives a failure
//! and none crosses pipelines, routes or apps. A trap, memory breach or stack overflow on
//! an instance that served earlier calls is tried once more on a fresh instance before it
//! is reported, so an event is blamed only for what it does itself, not for what earlier
//! events left behind (garbage that fills a memory limit, say). An HTTP request is never
//! tried again (its response may be half sent); see `route.rs`.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use weir_cloudevents::CloudEvent;

use crate::error::CallError;
use crate::host::{Decision, EntityCommand, Function, Instance, OutputEvent, RowChange};
use crate::telemetry::CallMetrics;

/// Idle instances a pool keeps; more are dropped when they come back. Each holds a slot
/// of the node's pooling allocator and its memory.
const MAX_IDLE: usize = 4;

/// A pool of warm instances of one function version. Cheap to clone (clones share the
/// pool); calls may come from many threads.
#[derive(Clone)]
pub struct InstancePool {
    function: Function,
    /// Calls an instance serves before it is replaced.
    reuse: u32,
    idle: Arc<Mutex<Vec<Instance>>>,
    metrics: Arc<CallMetrics>,
}

impl std::fmt::Debug for InstancePool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstancePool")
            .field("function", &self.function)
            .finish_non_exhaustive()
    }
}

impl InstancePool {
    pub(crate) fn new(function: Function, reuse: u32) -> InstancePool {
        InstancePool {
            metrics: Arc::new(CallMetrics::new(function.name())),
            function,
            reuse: reuse.max(1),
            idle: Arc::default(),
        }
    }

    /// The version this pool runs.
    pub fn function(&self) -> &Function {
        &self.function
    }

    /// Call the function on one event on a warm instance (a fresh one if none is idle).
    /// Blocking: run it off the async runtime.
    pub fn call(&self, event: &CloudEvent) -> Result<Vec<OutputEvent>, CallError> {
        self.run(|f, instance| f.call_on(instance, event))
    }

    /// Call an entity's `handle` on a warm instance. Blocking.
    pub fn handle_command(
        &self,
        state: Option<&[u8]>,
        command: &EntityCommand,
    ) -> Result<Decision, CallError> {
        self.run(|f, instance| f.handle_command_on(instance, state, command))
    }

    /// Call an entity's `apply` on a warm instance, with key-value and HTTP denied.
    /// Blocking.
    pub fn apply(
        &self,
        state: Option<&[u8]>,
        event: &CloudEvent,
    ) -> Result<Option<Vec<u8>>, CallError> {
        self.run(|f, instance| f.apply_on(instance, state, event))
    }

    /// Call a projection's `project` on a warm instance, with key-value and HTTP denied.
    /// Blocking.
    pub fn project(&self, event: &CloudEvent) -> Result<Vec<RowChange>, CallError> {
        self.run(|f, instance| f.project_on(instance, event))
    }

    /// Run `call` on a warm instance, measured.
    fn run<T>(
        &self,
        call: impl Fn(&Function, &mut Instance) -> Result<T, CallError>,
    ) -> Result<T, CallError> {
        let started = Instant::now();
        let mut memory = None;
        let result = self.run_measured(&call, &mut memory);
        self.metrics.called(started.elapsed(), memory, &result);
        result
    }

    /// [`InstancePool::run`], telling the memory of the instance that ran it.
    fn run_measured<T>(
        &self,
        call: &impl Fn(&Function, &mut Instance) -> Result<T, CallError>,
        memory: &mut Option<usize>,
    ) -> Result<T, CallError> {
        let (mut instance, reused) = match self.take_idle() {
            Some(instance) => (instance, true),
            None => (self.function.instantiate()?, false),
        };
        let result = call(&self.function, &mut instance);
        *memory = Some(instance.memory_bytes());
        match result {
            Ok(value) => {
                self.give_back(instance);
                Ok(value)
            }
            Err(
                CallError::Trap { .. } | CallError::Memory { .. } | CallError::StackOverflow { .. },
            ) if reused => {
                drop(instance);
                let mut fresh = self.function.instantiate()?;
                let result = call(&self.function, &mut fresh);
                *memory = Some(fresh.memory_bytes());
                if result.is_ok() {
                    self.give_back(fresh);
                }
                result
            }
            Err(e) => Err(e),
        }
    }

    /// An idle warm instance, if there is one.
    pub(crate) fn take_idle(&self) -> Option<Instance> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop()
    }

    /// Whether `instance` has calls left of its share.
    pub(crate) fn may_serve_again(&self, instance: &Instance) -> bool {
        instance.calls < self.reuse
    }

    /// Keep `instance` (whose last call succeeded) for a later call, unless it served
    /// its share of calls or enough instances are idle.
    pub(crate) fn give_back(&self, instance: Instance) {
        if !self.may_serve_again(&instance) {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(instance);
        }
    }

    /// Drop every idle instance (to free memory, or before a version is retired).
    pub fn clear(&self) {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}
