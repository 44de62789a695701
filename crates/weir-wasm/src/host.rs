//! The engine, the linker with what a guest is granted, and one call of a function.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store, StoreLimits, StoreLimitsBuilder, Trap};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_config::{WasiConfig, WasiConfigVariables};
use weir_cloudevents::CloudEvent;

use crate::convert;
use crate::error::{CallError, Error, Result};

pub(crate) mod wit {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "weir:function/handler",
    });
}

/// How often the engine's epoch advances; deadlines are counted in these ticks.
const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Per-call limits of a function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Wall-clock deadline of one call.
    pub deadline: Duration,
    /// The most linear memory (all memories together) one instance may have.
    pub memory_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            deadline: Duration::from_millis(100),
            memory_bytes: 64 << 20,
        }
    }
}

/// What the manifest grants a function.
#[derive(Debug, Clone, Default)]
pub struct FunctionSettings {
    /// Values the guest reads through `wasi:config`.
    pub config: BTreeMap<String, String>,
    pub limits: Limits,
}

/// One event the function asked to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputEvent {
    /// The topic, as the guest named it; the caller checks it against the pipeline's outputs.
    pub target: String,
    /// The event; its `id` may be empty (the caller derives one) and it is not validated yet.
    pub event: CloudEvent,
}

/// The state of one call's store.
struct CallState {
    wasi: WasiCtx,
    table: ResourceTable,
    config: Arc<WasiConfigVariables>,
    limits: StoreLimits,
    function: Arc<str>,
    version: Arc<str>,
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl wit::wasi::logging::logging::Host for CallState {
    fn log(&mut self, level: wit::wasi::logging::logging::Level, context: String, message: String) {
        use wit::wasi::logging::logging::Level;
        let (function, version) = (&*self.function, &*self.version);
        match level {
            Level::Trace => tracing::trace!(function, version, context, "{message}"),
            Level::Debug => tracing::debug!(function, version, context, "{message}"),
            Level::Info => tracing::info!(function, version, context, "{message}"),
            Level::Warn => tracing::warn!(function, version, context, "{message}"),
            Level::Error | Level::Critical => {
                tracing::error!(function, version, context, "{message}")
            }
        }
    }
}

/// The wasm engine of a node and the linker every function is instantiated with.
#[derive(Clone)]
pub struct FunctionHost {
    engine: Engine,
    linker: Arc<Linker<CallState>>,
}

impl FunctionHost {
    /// Set up the engine and start the thread that drives deadlines. The thread stops
    /// when the last clone of the host is dropped.
    pub fn new() -> Result<Self> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        let engine = Engine::new(&config).map_err(|e| Error::Engine(e.to_string()))?;

        let mut linker = Linker::<CallState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .map_err(|e| Error::Engine(e.to_string()))?;
        wit::wasi::logging::logging::add_to_linker::<_, HasSelf<CallState>>(&mut linker, |s| s)
            .map_err(|e| Error::Engine(e.to_string()))?;
        wasmtime_wasi_config::add_to_linker(&mut linker, |s: &mut CallState| {
            WasiConfig::from(&*s.config)
        })
        .map_err(|e| Error::Engine(e.to_string()))?;

        let weak = engine.weak();
        std::thread::Builder::new()
            .name("weir-wasm-epoch".into())
            .spawn(move || drive_epochs(weak))
            .map_err(|e| Error::Engine(format!("cannot start the deadline thread: {e}")))?;

        Ok(FunctionHost {
            engine,
            linker: Arc::new(linker),
        })
    }

    /// Compile and link a function. A module that is not a component, or a component
    /// that imports something weir does not grant or lacks the `handle` export, is
    /// rejected here, before any event reaches it.
    #[tracing::instrument(skip_all, fields(function = name), err)]
    pub fn load(&self, name: &str, wasm: &[u8], settings: FunctionSettings) -> Result<Function> {
        let version = content_version(wasm);
        let component =
            Component::new(&self.engine, wasm).map_err(|e| Error::InvalidComponent {
                function: name.to_owned(),
                reason: format!("{e:#}"),
            })?;
        let wrong_world = |e: wasmtime::Error| Error::WrongWorld {
            function: name.to_owned(),
            reason: format!("{e:#}"),
        };
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(wrong_world)?;
        let pre = wit::HandlerPre::new(pre).map_err(wrong_world)?;
        tracing::info!(function = name, %version, bytes = wasm.len(), "function loaded");
        Ok(Function {
            name: name.into(),
            version: version.into(),
            engine: self.engine.clone(),
            pre,
            config: Arc::new(settings.config.into_iter().collect()),
            limits: settings.limits,
        })
    }
}

fn drive_epochs(engine: wasmtime::EngineWeak) {
    loop {
        std::thread::sleep(EPOCH_TICK);
        match engine.upgrade() {
            Some(engine) => engine.increment_epoch(),
            None => return,
        }
    }
}

/// A function's version: the first 12 hex digits of the SHA-256 of its bytes.
fn content_version(wasm: &[u8]) -> String {
    let digest = Sha256::digest(wasm);
    hex::encode(&digest[..6])
}

/// A compiled, linked function, ready to be called from many threads.
#[derive(Clone)]
pub struct Function {
    name: Arc<str>,
    version: Arc<str>,
    engine: Engine,
    pre: wit::HandlerPre<CallState>,
    config: Arc<WasiConfigVariables>,
    limits: Limits,
}

impl std::fmt::Debug for Function {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Function")
            .field("name", &self.name)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl Function {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The content hash that identifies this version.
    pub fn version(&self) -> &str {
        &self.version
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Call the function on one event. Blocking: run it off the async runtime.
    pub fn call(&self, event: &CloudEvent) -> Result<Vec<OutputEvent>, CallError> {
        let state = CallState {
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
            config: self.config.clone(),
            limits: StoreLimitsBuilder::new()
                .memory_size(self.limits.memory_bytes)
                .trap_on_grow_failure(true)
                .build(),
            function: self.name.clone(),
            version: self.version.clone(),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        let ticks = self
            .limits
            .deadline
            .as_nanos()
            .div_ceil(EPOCH_TICK.as_nanos()) as u64
            + 1;
        store.set_epoch_deadline(ticks);
        store.epoch_deadline_trap();

        let input = convert::to_wit(event);
        let result = self
            .pre
            .instantiate(&mut store)
            .and_then(|handler| handler.call_handle(&mut store, &input));
        match result {
            Ok(Ok(outputs)) => outputs
                .into_iter()
                .map(|o| {
                    let event =
                        convert::from_wit(o.event).map_err(|reason| self.invalid(reason))?;
                    Ok(OutputEvent {
                        target: o.target,
                        event,
                    })
                })
                .collect(),
            Ok(Err(wit::weir::function::types::Error::Retryable(message))) => {
                Err(CallError::Retryable {
                    function: self.name.to_string(),
                    version: self.version.to_string(),
                    message,
                })
            }
            Ok(Err(wit::weir::function::types::Error::Fatal(message))) => Err(CallError::Fatal {
                function: self.name.to_string(),
                version: self.version.to_string(),
                message,
            }),
            Err(e) => Err(self.classify_trap(e)),
        }
    }

    /// An output the host refuses; the caller uses this for its own checks too.
    pub fn invalid(&self, reason: impl Into<String>) -> CallError {
        CallError::InvalidOutput {
            function: self.name.to_string(),
            version: self.version.to_string(),
            reason: reason.into(),
        }
    }

    fn classify_trap(&self, e: wasmtime::Error) -> CallError {
        let (function, version) = (self.name.to_string(), self.version.to_string());
        if let Some(Trap::Interrupt) = e.downcast_ref::<Trap>() {
            return CallError::Deadline {
                function,
                version,
                deadline: self.limits.deadline,
            };
        }
        let message = format!("{e:#}");
        if message.contains("forcing a memory growth failure to be a trap") {
            return CallError::Memory {
                function,
                version,
                limit_bytes: self.limits.memory_bytes,
            };
        }
        CallError::Trap {
            function,
            version,
            message,
        }
    }
}
