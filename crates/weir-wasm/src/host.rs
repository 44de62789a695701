//! The engine and the linker with what a guest may be granted, compiling and caching
//! functions, and one call of a function on an instance.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker, Resource};
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store,
    StoreContextMut, Trap, UpdateDeadline,
};
use wasmtime_wasi::clocks::WasiClocksView;
use wasmtime_wasi_config::{WasiConfig, WasiConfigVariables};
use weir_cloudevents::CloudEvent;

use crate::cache::ArtifactCache;
use crate::compiled::{ActivePin, CompiledSet};
use crate::convert;
use crate::egress::{Pool, Resolver, SystemResolver};
use crate::error::{CallError, Error, Result};
use crate::keyvalue::KeyValueStore;
use crate::pool::InstancePool;
use crate::quota::{CpuMark, CpuQuota};
use crate::state::{Breach, CallState, Grants};

pub(crate) mod wit {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "weir:function/handler",
        imports: {
            "wasi:keyvalue/store": trappable,
        },
        with: {
            "wasi:io": wasmtime_wasi::p2::bindings::io,
            "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
            "wasi:http": wasmtime_wasi_http::p2::bindings::http,
            "wasi:keyvalue/store.bucket": crate::state::Bucket,
        },
        require_store_data_send: true,
        // The event goes to the guest straight from the host's `CloudEvent`, borrowed:
        // `EventParam` holds `&str`s and the data's bytes, `EventResult` owns the outputs.
        ownership: Borrowing {
            duplicate_if_necessary: true
        },
    });
}

/// The entity world: the same imports (mapped onto the handler world's, so one linker
/// serves both) and the same `types`.
pub(crate) mod entity_wit {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "weir:function/entity",
        with: {
            "wasi:io": wasmtime_wasi::p2::bindings::io,
            "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
            "wasi:http": wasmtime_wasi_http::p2::bindings::http,
            "wasi:keyvalue": super::wit::wasi::keyvalue,
            "wasi:logging": super::wit::wasi::logging,
            "wasi:config": super::wit::wasi::config,
        },
        require_store_data_send: true,
    });
}

/// The projection world: fewer imports (logging and config), the entity world's `types`,
/// so the owned event record and error are one type for both.
pub(crate) mod projection_wit {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "weir:function/projection",
        with: {
            "wasi:logging": super::wit::wasi::logging,
            "wasi:config": super::wit::wasi::config,
            "weir:function/types": super::entity_wit::weir::function::types,
        },
        require_store_data_send: true,
    });
}

/// The HTTP route world: the standard `wasi:http/incoming-handler` export, the handler
/// world's imports (mapped onto its, so one linker serves all) and `weir:function/events`.
pub(crate) mod http_wit {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "weir:function/http-handler",
        with: {
            "wasi:io": wasmtime_wasi::p2::bindings::io,
            "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
            "wasi:http": wasmtime_wasi_http::p2::bindings::http,
            "wasi:keyvalue": super::wit::wasi::keyvalue,
            "wasi:logging": super::wit::wasi::logging,
            "wasi:config": super::wit::wasi::config,
            "weir:function/types": super::entity_wit::weir::function::types,
        },
        require_store_data_send: true,
    });
}

/// Which WIT world a function's component implements, found when it is loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum World {
    /// `weir:function/handler`: one event in, events out (pipelines).
    Handler,
    /// `weir:function/entity`: an event-sourced entity (`[entities]`).
    Entity,
    /// `weir:function/projection`: a view's projection (`[views]`).
    Projection,
    /// `weir:function/http-handler`: `wasi:http/incoming-handler`, an HTTP route's handler
    /// (`[routes]`).
    Http,
}

impl std::fmt::Display for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            World::Handler => "handler",
            World::Entity => "entity",
            World::Projection => "projection",
            World::Http => "http-handler",
        })
    }
}

/// A function's linked component, pre-instantiated for its world.
#[derive(Clone)]
enum Pre {
    Handler(wit::HandlerPre<CallState>),
    Entity(entity_wit::EntityPre<CallState>),
    Projection(projection_wit::ProjectionPre<CallState>),
    Http(http_wit::HttpHandlerPre<CallState>),
}

/// The exports of one instance, for its world.
pub(crate) enum Exports {
    Handler(wit::Handler),
    Entity(entity_wit::Entity),
    Projection(projection_wit::Projection),
    Http(http_wit::HttpHandler),
}

/// How often the engine's epoch advances; deadlines are counted in these ticks.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Per-call limits of a function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Wall-clock deadline of one call, host calls (HTTP, key-value) included.
    pub deadline: Duration,
    /// The most linear memory (all memories together) one instance may have.
    pub memory_bytes: usize,
    /// The most bytes of output events one call may return.
    pub max_output_bytes: usize,
    /// The most output events one call may return.
    pub max_outputs: usize,
    /// Fuel (roughly, wasm instructions) one call may use; none is unmetered.
    pub fuel: Option<u64>,
    /// The function's CPU quota in percent of one core, shared by all its calls at once;
    /// none is no quota. See [`crate::quota`].
    pub cpu_percent: Option<u32>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            deadline: Duration::from_millis(100),
            memory_bytes: 64 << 20,
            max_output_bytes: 1 << 20,
            max_outputs: 100,
            fuel: None,
            cpu_percent: None,
        }
    }
}

/// A secret value: handed to the guest through `wasi:config`, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// What the manifest grants a function and how it is run.
#[derive(Debug, Clone)]
pub struct FunctionSettings {
    /// Values the guest reads through `wasi:config`.
    pub config: BTreeMap<String, String>,
    /// Secret values the guest reads through `wasi:config` like config values.
    pub secrets: BTreeMap<String, Secret>,
    pub limits: Limits,
    pub grants: Grants,
    /// Calls one warm instance serves before it is replaced; 1 means a fresh instance per
    /// event.
    pub instance_reuse: u32,
}

impl Default for FunctionSettings {
    fn default() -> Self {
        FunctionSettings {
            config: BTreeMap::new(),
            secrets: BTreeMap::new(),
            limits: Limits::default(),
            grants: Grants {
                http_timeout: Duration::from_secs(5),
                ..Grants::default()
            },
            instance_reuse: 1000,
        }
    }
}

/// One event the function asked to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputEvent {
    /// The topic, as the guest named it; the caller checks it against the pipeline's outputs.
    pub target: String,
    /// The event; its `id` may be empty (the caller derives one) and it is not validated yet.
    pub event: CloudEvent,
}

/// A command for an entity's `handle`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntityCommand {
    pub name: String,
    pub entity_id: String,
    /// The request body as sent.
    pub data: Vec<u8>,
    /// The entity's version before the command (its number of events).
    pub version: u64,
}

/// An event an entity accepted; the engine makes the CloudEvent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    pub ty: String,
    /// JSON data, as the guest wrote it.
    pub data: Option<Vec<u8>>,
    pub subject: Option<String>,
}

/// What an entity decided on a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Accept(Vec<NewEvent>),
    Reject(String),
}

/// A column's value in a projection's row change.
#[derive(Debug, Clone, PartialEq)]
pub enum CellValue {
    Null,
    Text(String),
    Integer(i64),
    Real(f64),
    Boolean(bool),
    /// JSON text.
    Json(String),
}

/// A change a projection makes to its view's table.
#[derive(Debug, Clone, PartialEq)]
pub enum RowChange {
    /// Insert the row, or update the given columns of the row with its key.
    Upsert(Vec<(String, CellValue)>),
    /// Delete the row with this key.
    Delete(Vec<(String, CellValue)>),
}

/// How a node's function host is set up.
#[derive(Clone)]
pub struct HostOptions {
    /// Where compiled components are cached; none compiles at every start.
    pub cache_dir: Option<PathBuf>,
    /// The store behind `wasi:keyvalue`; none makes every key-value call fail.
    pub keyvalue: Option<Arc<dyn KeyValueStore>>,
    /// Instances that may exist at once, across all functions (pooling allocator slots).
    pub max_instances: u32,
    /// The largest memory limit any function may have (the size of a pooled memory slot).
    pub max_memory_bytes: usize,
    /// Meter fuel, so functions can have `limits.fuel`; costs some speed for every call.
    pub fuel: bool,
    /// Compiled functions kept in memory (see [`FunctionHost::load_candidate`] for which
    /// go first); active ones stay even past it.
    pub max_compiled_in_memory: usize,
    /// Bytes of compiled code kept in `cache_dir`; the least recently used go first.
    pub max_compiled_on_disk_bytes: u64,
    /// How outbound HTTP resolves host names; every address it returns is checked before
    /// one is connected to.
    pub resolver: Arc<dyn Resolver>,
    /// Failed HTTP requests in a row to one destination that open its circuit
    /// (`circuits.rs`); `0` never opens one.
    pub circuit_failures: u32,
    /// Name functions' compiled code for Linux `perf` in `/tmp/perf-PID.map`, as
    /// wasmtime's `--profile=perfmap` does. Default: on when `WEIR_WASM_PROFILE=perfmap`.
    pub perfmap: bool,
}

impl Default for HostOptions {
    fn default() -> Self {
        HostOptions {
            cache_dir: None,
            keyvalue: None,
            max_instances: 1000,
            max_memory_bytes: 4 << 30,
            fuel: false,
            max_compiled_in_memory: 64,
            max_compiled_on_disk_bytes: 1 << 30,
            resolver: Arc::new(SystemResolver),
            circuit_failures: crate::circuits::DEFAULT_CIRCUIT_FAILURES,
            perfmap: std::env::var_os("WEIR_WASM_PROFILE").is_some_and(|v| v == "perfmap"),
        }
    }
}

impl std::fmt::Debug for HostOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostOptions")
            .field("cache_dir", &self.cache_dir)
            .field("keyvalue", &self.keyvalue.is_some())
            .field("max_instances", &self.max_instances)
            .field("max_memory_bytes", &self.max_memory_bytes)
            .field("fuel", &self.fuel)
            .field("max_compiled_in_memory", &self.max_compiled_in_memory)
            .field(
                "max_compiled_on_disk_bytes",
                &self.max_compiled_on_disk_bytes,
            )
            .field("perfmap", &self.perfmap)
            .finish_non_exhaustive()
    }
}

/// The wasm engine of a node and the linker every function is instantiated with.
#[derive(Clone)]
pub struct FunctionHost {
    engine: Engine,
    linker: Arc<Linker<CallState>>,
    cache: Option<ArtifactCache>,
    /// Compiled components by SHA-256, so the same bytes are compiled and mapped once
    /// while they are kept (`compiled.rs`).
    compiled: Arc<Mutex<CompiledSet<Component>>>,
    counts: Arc<LoadCounts>,
    keyvalue: Option<Arc<dyn KeyValueStore>>,
    resolver: Arc<dyn Resolver>,
    /// Idle outbound HTTP connections, shared by this host's functions (`egress.rs`).
    http_pool: Arc<Pool>,
    fuel: bool,
}

/// Where loads found their compiled code.
#[derive(Debug, Default)]
struct LoadCounts {
    memory: AtomicU64,
    disk: AtomicU64,
    compiled: AtomicU64,
}

/// What a host keeps compiled, and where its loads found it: see
/// [`FunctionHost::compiled_stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CompiledStats {
    /// Compiled components kept in memory.
    pub in_memory: usize,
    /// Of those, the ones an active function holds (never evicted).
    pub in_memory_active: usize,
    /// Components dropped from memory to stay within `max_compiled_in_memory`.
    pub evicted_from_memory: u64,
    /// Bytes of the on-disk cache (0 without one).
    pub on_disk_bytes: u64,
    /// Artifacts in the on-disk cache.
    pub on_disk_artifacts: usize,
    /// Artifacts removed to stay within `max_compiled_on_disk_bytes`.
    pub evicted_from_disk: u64,
    /// Loads that found the component in memory.
    pub loads_from_memory: u64,
    /// Loads that mapped it from the on-disk cache.
    pub loads_from_disk: u64,
    /// Loads that compiled it.
    pub compilations: u64,
}

impl std::fmt::Debug for FunctionHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FunctionHost")
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

fn engine_error(e: impl std::fmt::Display) -> Error {
    Error::Engine(e.to_string())
}

impl FunctionHost {
    /// Set up the engine and start the thread that drives deadlines. The thread stops
    /// when the last clone of the host is dropped.
    pub fn new(options: HostOptions) -> Result<Self> {
        let mut pool = PoolingAllocationConfig::new();
        let instances = options.max_instances.max(1);
        // A component is a few core instances (the guest, WASI adapters, shims); the
        // JavaScript and Python runtimes have several memories and large tables.
        pool.total_component_instances(instances)
            .total_core_instances(instances.saturating_mul(8))
            .total_memories(instances.saturating_mul(2))
            .total_tables(instances.saturating_mul(8))
            .total_stacks(instances)
            .max_core_instances_per_component(64)
            .max_memories_per_component(8)
            .max_tables_per_component(16)
            .max_memories_per_module(2)
            .max_tables_per_module(8)
            .table_elements(200_000)
            .max_core_instance_size(8 << 20)
            .max_component_instance_size(2 << 20)
            .max_memory_size(options.max_memory_bytes)
            // A recycled memory keeps the pages its last instance wrote (up to 1 MiB of
            // them), restored with memcpy, and gives the rest back: Linux's PAGEMAP_SCAN
            // finds which pages were written. A fresh instance of a small guest then
            // starts with no page faults, and the slot's reset makes no madvise call (no
            // TLB shootdowns across the node's threads). Without the ioctl (kernels before
            // 6.7) the first 1 MiB would be memset on every reset instead, so fall back to
            // a smaller prefix there.
            .table_keep_resident(64 << 10);
        if PoolingAllocationConfig::is_pagemap_scan_available() {
            pool.pagemap_scan(Enabled::Yes)
                .linear_memory_keep_resident(1 << 20);
        } else {
            pool.linear_memory_keep_resident(256 << 10);
        }

        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        config.consume_fuel(options.fuel);
        config.max_wasm_stack(1 << 20);
        config.memory_reservation(options.max_memory_bytes as u64);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        if options.perfmap {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&config).map_err(engine_error)?;

        let mut linker = Linker::<CallState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(engine_error)?;
        io_on_the_table(&mut linker).map_err(engine_error)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_sync(&mut linker).map_err(engine_error)?;
        wit::wasi::logging::logging::add_to_linker::<_, HasSelf<CallState>>(&mut linker, |s| s)
            .map_err(engine_error)?;
        wit::wasi::keyvalue::store::add_to_linker::<_, HasSelf<CallState>>(&mut linker, |s| s)
            .map_err(engine_error)?;
        http_wit::weir::function::events::add_to_linker::<_, HasSelf<CallState>>(
            &mut linker,
            |s| s,
        )
        .map_err(engine_error)?;
        wasmtime_wasi_config::add_to_linker(&mut linker, |s: &mut CallState| {
            WasiConfig::from(&*s.config)
        })
        .map_err(engine_error)?;
        deny_sleeps(&mut linker).map_err(engine_error)?;
        bound_host_waits(&mut linker).map_err(engine_error)?;

        let cache = match &options.cache_dir {
            Some(dir) => Some(
                ArtifactCache::open(dir, &engine, options.max_compiled_on_disk_bytes).map_err(
                    |e| {
                        Error::Engine(format!(
                            "cannot use {} as the compiled-function cache: {e}",
                            dir.display()
                        ))
                    },
                )?,
            ),
            None => None,
        };

        let weak = engine.weak();
        std::thread::Builder::new()
            .name("weir-wasm-epoch".into())
            .spawn(move || drive_epochs(weak))
            .map_err(|e| Error::Engine(format!("cannot start the deadline thread: {e}")))?;

        Ok(FunctionHost {
            engine,
            linker: Arc::new(linker),
            cache,
            compiled: Arc::new(Mutex::new(CompiledSet::new(options.max_compiled_in_memory))),
            counts: Arc::default(),
            keyvalue: options.keyvalue,
            resolver: options.resolver,
            http_pool: Arc::new(Pool::new(options.circuit_failures)),
            fuel: options.fuel,
        })
    }

    /// The circuits of the destinations the host's functions had failures with (and of
    /// those whose circuit ever opened).
    pub fn circuits(&self) -> Vec<crate::CircuitStatus> {
        self.http_pool.circuits.status()
    }

    /// What is kept compiled in memory and on disk, and where loads found their code.
    pub fn compiled_stats(&self) -> CompiledStats {
        let (in_memory, in_memory_active, evicted_from_memory) = {
            let compiled = self.compiled.lock().unwrap_or_else(|e| e.into_inner());
            (compiled.len(), compiled.active(), compiled.evicted())
        };
        let disk = self.cache.as_ref().map(|c| (c.usage(), c.evicted()));
        CompiledStats {
            in_memory,
            in_memory_active,
            evicted_from_memory,
            on_disk_bytes: disk.map_or(0, |(u, _)| u.bytes),
            on_disk_artifacts: disk.map_or(0, |(u, _)| u.artifacts),
            evicted_from_disk: disk.map_or(0, |(_, e)| e),
            loads_from_memory: self.counts.memory.load(Ordering::Relaxed),
            loads_from_disk: self.counts.disk.load(Ordering::Relaxed),
            compilations: self.counts.compiled.load(Ordering::Relaxed),
        }
    }

    /// Compile (or take from the cache) and link a function. A module that is not a
    /// component, or a component that imports something weir does not provide or lacks
    /// the `handle` export, is rejected here, before any event reaches it.
    ///
    /// The function is *active*: its compiled code stays in memory while it (or a clone,
    /// or a pool of it) is alive, whatever `max_compiled_in_memory` says. Load versions
    /// that only a replay runs with [`FunctionHost::load_candidate`].
    #[tracing::instrument(skip_all, fields(function = name), err)]
    pub fn load(&self, name: &str, wasm: &[u8], settings: FunctionSettings) -> Result<Function> {
        self.load_as(name, wasm, settings, true)
    }

    /// Like [`FunctionHost::load`], for a version a replay runs with (a candidate, or a
    /// kept version that is not active): its compiled code is the first to be dropped from
    /// memory when more than `max_compiled_in_memory` are kept, least recently loaded
    /// first. The returned function keeps working after that; loading the same bytes again
    /// maps them from the disk cache or compiles them again.
    #[tracing::instrument(skip_all, fields(function = name), err)]
    pub fn load_candidate(
        &self,
        name: &str,
        wasm: &[u8],
        settings: FunctionSettings,
    ) -> Result<Function> {
        self.load_as(name, wasm, settings, false)
    }

    fn load_as(
        &self,
        name: &str,
        wasm: &[u8],
        settings: FunctionSettings,
        active: bool,
    ) -> Result<Function> {
        if settings.limits.fuel.is_some() && !self.fuel {
            return Err(Error::FuelDisabled {
                function: name.to_owned(),
            });
        }
        let digest: [u8; 32] = Sha256::digest(wasm).into();
        let version = hex::encode(&digest[..6]);
        let (component, pin) = self.component(name, wasm, &digest, active)?;
        let wrong_world = |e: wasmtime::Error| Error::WrongWorld {
            function: name.to_owned(),
            reason: format!("{e:#}"),
        };
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(wrong_world)?;
        // The world is the one whose exports the component has: `apply` makes an entity,
        // `project` a projection.
        let exports = |name: &str| {
            component
                .component_type()
                .get_export(&self.engine, name)
                .is_some()
        };
        // A route's handler exports `wasi:http/incoming-handler` of some 0.2 release.
        let http = component
            .component_type()
            .exports(&self.engine)
            .any(|(name, _)| name.starts_with("wasi:http/incoming-handler@0.2."));
        let pre = if http {
            Pre::Http(http_wit::HttpHandlerPre::new(pre).map_err(wrong_world)?)
        } else if exports("apply") {
            Pre::Entity(entity_wit::EntityPre::new(pre).map_err(wrong_world)?)
        } else if exports("project") {
            Pre::Projection(projection_wit::ProjectionPre::new(pre).map_err(wrong_world)?)
        } else {
            Pre::Handler(wit::HandlerPre::new(pre).map_err(wrong_world)?)
        };
        tracing::debug!(function = name, %version, bytes = wasm.len(), "function loaded");

        let mut variables: Vec<(String, String)> = settings.config.into_iter().collect();
        variables.extend(settings.secrets.into_iter().map(|(k, v)| (k, v.0)));
        Ok(Function {
            inner: Arc::new(FunctionInner {
                name: name.into(),
                version: version.into(),
                engine: self.engine.clone(),
                pre,
                config: Arc::new(variables.into_iter().collect()),
                grants: Arc::new(settings.grants),
                keyvalue: self.keyvalue.clone(),
                resolver: self.resolver.clone(),
                http_pool: self.http_pool.clone(),
                quota: CpuQuota::of(name, &settings.limits),
                limits: settings.limits,
                instance_reuse: settings.instance_reuse.max(1),
                fuel_metered: self.fuel,
                _active: pin,
            }),
        })
    }

    /// The compiled component of `wasm`, and its pin when `active`.
    fn component(
        &self,
        name: &str,
        wasm: &[u8],
        digest: &[u8; 32],
        active: bool,
    ) -> Result<(Component, Option<Arc<ActivePin>>)> {
        let mut compiled = self.compiled.lock().unwrap_or_else(|e| e.into_inner());
        let digest_hex = hex::encode(digest);
        if let Some(found) = compiled.get(digest, active) {
            self.counts.memory.fetch_add(1, Ordering::Relaxed);
            if let Some(cache) = &self.cache {
                cache.touch(&digest_hex);
            }
            return Ok(found);
        }
        let cached = self
            .cache
            .as_ref()
            .and_then(|c| c.load(&self.engine, &digest_hex));
        let component = match cached {
            Some(component) => {
                self.counts.disk.fetch_add(1, Ordering::Relaxed);
                component
            }
            None => {
                self.counts.compiled.fetch_add(1, Ordering::Relaxed);
                let component =
                    Component::new(&self.engine, wasm).map_err(|e| Error::InvalidComponent {
                        function: name.to_owned(),
                        reason: format!("{e:#}"),
                    })?;
                if let Some(cache) = &self.cache {
                    cache.store(&digest_hex, &component);
                }
                component
            }
        };
        let pin = compiled.insert(*digest, component.clone(), active);
        Ok((component, pin))
    }
}

/// Link `wasi:io` (errors, pollables, streams) to the instance's resource table alone.
/// wasmtime-wasi reaches the table through the WASI context, which [`CallState`] builds
/// on first use (two random generators seeded, a few allocations): an HTTP handler's
/// body streams are `wasi:io`, so every request on a fresh instance built one it never
/// used. (`bound_host_waits`, linked after this, replaces the calls that wait.)
fn io_on_the_table(linker: &mut Linker<CallState>) -> wasmtime::Result<()> {
    use wasmtime_wasi::p2::bindings::{io, sync};
    struct Table;
    impl wasmtime::component::HasData for Table {
        type Data<'a> = &'a mut wasmtime::component::ResourceTable;
    }
    linker.allow_shadowing(true);
    io::error::add_to_linker::<CallState, Table>(linker, CallState::table_mut)?;
    sync::io::poll::add_to_linker::<CallState, Table>(linker, CallState::table_mut)?;
    sync::io::streams::add_to_linker::<CallState, Table>(linker, CallState::table_mut)?;
    linker.allow_shadowing(false);
    Ok(())
}

/// Replace the monotonic clock's subscriptions with ones that are ready at once: a guest
/// gets no sleeps, which would hold a worker thread past its deadline (the deadline
/// interrupts wasm code, not a host wait).
fn deny_sleeps(linker: &mut Linker<CallState>) -> wasmtime::Result<()> {
    use wasmtime_wasi::p2::DynPollable;
    use wasmtime_wasi::p2::bindings::clocks::monotonic_clock::Host;
    linker.allow_shadowing(true);
    let mut clock = linker.instance("wasi:clocks/monotonic-clock@0.2.12")?;
    for subscribe in ["subscribe-duration", "subscribe-instant"] {
        clock.func_wrap(
            subscribe,
            |mut store: StoreContextMut<'_, CallState>, (_,): (u64,)| {
                let pollable: Resource<DynPollable> =
                    store.data_mut().clocks().subscribe_duration(0)?;
                Ok((pollable,))
            },
        )?;
    }
    linker.allow_shadowing(false);
    Ok(())
}

/// Replace the WASI calls that wait on the host (a stream's blocking write, flush, splice,
/// read and skip; `poll`; `pollable.block`) with the same calls bounded by the current
/// call's deadline: the epoch interrupts wasm code, not a host wait, and some waits never
/// end (a guest that fills an HTTP body's buffer before handing the body over waits for
/// a reader that does not exist yet). Past the deadline the call ends as
/// `CallError::Deadline`, and the instance is dropped.
fn bound_host_waits(linker: &mut Linker<CallState>) -> wasmtime::Result<()> {
    use wasmtime_wasi::p2::bindings::io::poll::{Host as _, HostPollable as _};
    use wasmtime_wasi::p2::bindings::io::streams::{
        Host as _, HostInputStream as _, HostOutputStream as _, StreamError as WitStreamError,
    };
    use wasmtime_wasi::p2::{DynInputStream, DynOutputStream, DynPollable};

    /// Runs `wait` on the table with what is left of the deadline; `None` past it.
    fn bounded<T>(
        store: &mut StoreContextMut<'_, CallState>,
        wait: impl AsyncFnOnce(&mut wasmtime::component::ResourceTable) -> T,
    ) -> Option<T> {
        let left = store
            .data()
            .deadline()
            .saturating_duration_since(Instant::now());
        let table = store.data_mut().table_mut();
        // A wait that does not end at once lets the call's thread stand aside (see
        // `threads`): a route's other requests run meanwhile.
        wasmtime_wasi::runtime::in_tokio(async {
            crate::threads::waited(tokio::time::timeout(left, wait(table)))
                .await
                .ok()
        })
    }
    fn past() -> wasmtime::Error {
        wasmtime::Error::from(Trap::Interrupt)
    }
    /// The guest's answer: the value, or the stream error as WIT has it.
    fn answer<T>(
        store: &mut StoreContextMut<'_, CallState>,
        result: Option<Result<T, wasmtime_wasi::p2::StreamError>>,
    ) -> wasmtime::Result<(Result<T, WitStreamError>,)> {
        match result {
            None => Err(past()),
            Some(Ok(value)) => Ok((Ok(value),)),
            Some(Err(e)) => Ok((Err(store.data_mut().table_mut().convert_stream_error(e)?),)),
        }
    }

    linker.allow_shadowing(true);
    let mut streams = linker.instance("wasi:io/streams@0.2.12")?;
    streams.func_wrap(
        "[method]output-stream.blocking-write-and-flush",
        |mut store: StoreContextMut<'_, CallState>,
         (stream, bytes): (Resource<DynOutputStream>, Vec<u8>)| {
            let result = bounded(&mut store, async |t| {
                t.blocking_write_and_flush(stream, bytes).await
            });
            answer(&mut store, result)
        },
    )?;
    streams.func_wrap(
        "[method]output-stream.blocking-write-zeroes-and-flush",
        |mut store: StoreContextMut<'_, CallState>,
         (stream, len): (Resource<DynOutputStream>, u64)| {
            let result = bounded(&mut store, async |t| {
                t.blocking_write_zeroes_and_flush(stream, len).await
            });
            answer(&mut store, result)
        },
    )?;
    streams.func_wrap(
        "[method]output-stream.blocking-flush",
        |mut store: StoreContextMut<'_, CallState>, (stream,): (Resource<DynOutputStream>,)| {
            let result = bounded(&mut store, async |t| t.blocking_flush(stream).await);
            answer(&mut store, result)
        },
    )?;
    streams.func_wrap(
        "[method]output-stream.blocking-splice",
        |mut store: StoreContextMut<'_, CallState>,
         (dest, src, len): (Resource<DynOutputStream>, Resource<DynInputStream>, u64)| {
            let result = bounded(&mut store, async |t| {
                t.blocking_splice(dest, src, len).await
            });
            answer(&mut store, result)
        },
    )?;
    streams.func_wrap(
        "[method]input-stream.blocking-read",
        |mut store: StoreContextMut<'_, CallState>,
         (stream, len): (Resource<DynInputStream>, u64)| {
            let result = bounded(&mut store, async |t| t.blocking_read(stream, len).await);
            answer(&mut store, result)
        },
    )?;
    streams.func_wrap(
        "[method]input-stream.blocking-skip",
        |mut store: StoreContextMut<'_, CallState>,
         (stream, len): (Resource<DynInputStream>, u64)| {
            let result = bounded(&mut store, async |t| t.blocking_skip(stream, len).await);
            answer(&mut store, result)
        },
    )?;
    let mut poll = linker.instance("wasi:io/poll@0.2.12")?;
    poll.func_wrap(
        "poll",
        |mut store: StoreContextMut<'_, CallState>, (list,): (Vec<Resource<DynPollable>>,)| {
            match bounded(&mut store, async |t| t.poll(list).await) {
                None => Err(past()),
                Some(ready) => Ok((ready?,)),
            }
        },
    )?;
    poll.func_wrap(
        "[method]pollable.block",
        |mut store: StoreContextMut<'_, CallState>, (pollable,): (Resource<DynPollable>,)| {
            match bounded(&mut store, async |t| t.block(pollable).await) {
                None => Err(past()),
                Some(done) => done,
            }
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// At each epoch tick while a call of a function with a CPU quota runs wasm code: end
/// the call past its deadline, charge the quota what the call used since the last tick,
/// and sleep while the quota is in debt (never past the deadline).
fn quota_tick(quota: &CpuQuota, state: &mut CallState) -> wasmtime::Result<UpdateDeadline> {
    let deadline = state.deadline();
    if Instant::now() >= deadline {
        return Err(Trap::Interrupt.into());
    }
    let used = state.cpu_mark.map_or(Duration::ZERO, |mark| mark.used());
    let pause = quota.charge(used);
    quota.wait(pause, deadline.saturating_duration_since(Instant::now()));
    state.cpu_mark = Some(CpuMark::now());
    if Instant::now() >= deadline {
        // Held back only if it slept here; otherwise the call simply ran out of time.
        if !pause.is_zero() {
            state.note_late(format!(
                "the function's CPU quota (limits.cpu_percent = {}) held the call back",
                quota.percent()
            ));
        }
        return Err(Trap::Interrupt.into());
    }
    Ok(UpdateDeadline::Continue(1))
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

/// A compiled, linked version of a function. Cheap to clone; calls go through an
/// [`InstancePool`] (see [`Function::instances`]) or, one fresh instance each, through
/// [`Function::call`].
#[derive(Clone)]
pub struct Function {
    inner: Arc<FunctionInner>,
}

struct FunctionInner {
    name: Arc<str>,
    version: Arc<str>,
    engine: Engine,
    pre: Pre,
    config: Arc<WasiConfigVariables>,
    grants: Arc<Grants>,
    keyvalue: Option<Arc<dyn KeyValueStore>>,
    resolver: Arc<dyn Resolver>,
    http_pool: Arc<Pool>,
    limits: Limits,
    /// The function's CPU quota, shared by every instance of this activation.
    quota: Option<Arc<CpuQuota>>,
    instance_reuse: u32,
    fuel_metered: bool,
    /// Keeps the compiled code in the host's memory while this version is active.
    _active: Option<Arc<ActivePin>>,
}

impl std::fmt::Debug for Function {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Function")
            .field("name", &self.inner.name)
            .field("version", &self.inner.version)
            .finish_non_exhaustive()
    }
}

/// One live instance of a function with its own store.
pub(crate) struct Instance {
    pub(crate) store: Store<CallState>,
    pub(crate) exports: Exports,
    /// Calls served so far.
    pub(crate) calls: u32,
}

impl Instance {
    /// Bytes of the instance's linear memory.
    pub(crate) fn memory_bytes(&self) -> usize {
        self.store.data().memory_bytes()
    }
}

impl Function {
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The content hash that identifies this version: the first 12 hex digits of the
    /// SHA-256 of the component.
    pub fn version(&self) -> &str {
        &self.inner.version
    }

    pub fn limits(&self) -> Limits {
        self.inner.limits
    }

    /// The WIT world the component implements.
    pub fn world(&self) -> World {
        match self.inner.pre {
            Pre::Handler(_) => World::Handler,
            Pre::Entity(_) => World::Entity,
            Pre::Projection(_) => World::Projection,
            Pre::Http(_) => World::Http,
        }
    }

    /// Whether `other` is this very activation (the same version with the same
    /// settings); a redeploy with new grants or limits makes a new one.
    pub fn is(&self, other: &Function) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// Calls one warm instance serves before it is replaced.
    pub fn instance_reuse(&self) -> u32 {
        self.inner.instance_reuse
    }

    /// The same compiled version, with `store` behind `wasi:keyvalue` instead of the
    /// host's store (none makes every key-value call fail). Instances made from the copy
    /// use that store; this function and its pools are unchanged. `weir replay` runs
    /// versions on a copy whose store keeps the guest's writes to itself.
    pub fn with_keyvalue(&self, store: Option<Arc<dyn KeyValueStore>>) -> Function {
        let f = &self.inner;
        Function {
            inner: Arc::new(FunctionInner {
                name: f.name.clone(),
                version: f.version.clone(),
                engine: f.engine.clone(),
                pre: f.pre.clone(),
                config: f.config.clone(),
                grants: f.grants.clone(),
                keyvalue: store,
                resolver: f.resolver.clone(),
                http_pool: f.http_pool.clone(),
                limits: f.limits,
                // A copy (a replay) spends a quota of its own, not the live function's.
                quota: CpuQuota::of(&f.name, &f.limits),
                instance_reuse: f.instance_reuse,
                fuel_metered: f.fuel_metered,
                _active: f._active.clone(),
            }),
        }
    }

    /// A pool of warm instances of this version for one caller (one pipeline). Instances
    /// are never shared between pools, so state never leaks between pipelines.
    pub fn instances(&self) -> InstancePool {
        InstancePool::new(self.clone(), self.instance_reuse())
    }

    /// A pool of instances of this HTTP handler for one route, each serving up to
    /// `reuse` requests (the route's `instance_reuse`); see
    /// [`InstancePool::serve_http`].
    pub fn route_instances(&self, reuse: u32) -> InstancePool {
        InstancePool::new(self.clone(), reuse)
    }

    /// Call the function on one event in a fresh instance. Blocking: run it off the
    /// async runtime.
    pub fn call(&self, event: &CloudEvent) -> Result<Vec<OutputEvent>, CallError> {
        let mut instance = self.instantiate()?;
        self.call_on(&mut instance, event)
    }

    /// A fresh instance.
    pub(crate) fn instantiate(&self) -> Result<Instance, CallError> {
        let f = &self.inner;
        let state = CallState::new(
            f.name.clone(),
            f.version.clone(),
            f.config.clone(),
            f.grants.clone(),
            f.keyvalue.clone(),
            (f.resolver.clone(), f.http_pool.clone()),
            f.limits.memory_bytes,
        );
        let mut store = Store::new(&f.engine, state);
        store.limiter(|s| s);
        if let Some(quota) = &f.quota {
            let quota = quota.clone();
            store.epoch_deadline_callback(move |mut store| quota_tick(&quota, store.data_mut()));
        }
        // The quota's wait comes before the call this instance is made for, not here too.
        self.arm_with(&mut store, true, false);
        let exports = match &f.pre {
            Pre::Handler(pre) => pre.instantiate(&mut store).map(Exports::Handler),
            Pre::Entity(pre) => pre.instantiate(&mut store).map(Exports::Entity),
            Pre::Projection(pre) => pre.instantiate(&mut store).map(Exports::Projection),
            Pre::Http(pre) => pre.instantiate(&mut store).map(Exports::Http),
        };
        self.settle(&mut store);
        match exports {
            Ok(exports) => Ok(Instance {
                store,
                exports,
                calls: 0,
            }),
            Err(e) => {
                let breach = store.data_mut().take_breach();
                let late = store.data_mut().take_late();
                Err(self.classify(e, breach, late, true))
            }
        }
    }

    /// Set the deadline (and fuel) for what runs next in `store`, with every capability
    /// granted.
    pub(crate) fn arm(&self, store: &mut Store<CallState>) {
        self.arm_as(store, true);
    }

    /// [`Function::arm`]; without `granted`, key-value and HTTP are denied for the call.
    fn arm_as(&self, store: &mut Store<CallState>, granted: bool) {
        self.arm_with(store, granted, true);
    }

    /// [`Function::arm_as`]; with `wait`, a function with a CPU quota in debt waits here
    /// until the quota has been paid back.
    fn arm_with(&self, store: &mut Store<CallState>, granted: bool, wait: bool) {
        let limits = &self.inner.limits;
        match &self.inner.quota {
            None => {
                let ticks = limits.deadline.as_nanos().div_ceil(EPOCH_TICK.as_nanos()) as u64 + 1;
                store.set_epoch_deadline(ticks);
                store.epoch_deadline_trap();
            }
            Some(quota) => {
                // What earlier calls left owed is paid before this one starts (its
                // deadline has not started yet: this is back-pressure, and it keeps any
                // number of concurrent calls to the share), then the call is charged at
                // every tick by `quota_tick`, which also ends it at its deadline.
                self.settle(store);
                if wait {
                    quota.wait_until_paid();
                }
                store.data_mut().cpu_mark = Some(CpuMark::now());
                store.set_epoch_deadline(1);
            }
        }
        if self.inner.fuel_metered {
            let _ = store.set_fuel(limits.fuel.unwrap_or(u64::MAX));
        }
        store
            .data_mut()
            .begin_call(Instant::now() + limits.deadline, granted);
    }

    /// CPU time charged to the function's quota so far; none without a quota.
    #[cfg(test)]
    pub(crate) fn quota_charged(&self) -> Option<Duration> {
        self.inner.quota.as_ref().map(|q| q.charged())
    }

    /// Charge the function's CPU quota what the call that just ran in `store` used.
    pub(crate) fn settle(&self, store: &mut Store<CallState>) {
        if let (Some(quota), Some(mark)) = (&self.inner.quota, store.data_mut().cpu_mark.take()) {
            // A debt is paid before the next call, not now: the caller has the result.
            let _ = quota.charge(mark.used());
        }
    }

    /// Call the function on `instance`. On an error the instance must not be used again.
    pub(crate) fn call_on(
        &self,
        instance: &mut Instance,
        event: &CloudEvent,
    ) -> Result<Vec<OutputEvent>, CallError> {
        self.arm(&mut instance.store);
        let extensions = convert::wit_extensions(event);
        let input = convert::to_wit(event, &extensions);
        let Exports::Handler(handler) = &instance.exports else {
            return Err(self.not_world(World::Handler));
        };
        let result = handler.call_handle(&mut instance.store, input);
        let outputs = self.finish(instance, result)?;
        self.check_output_limits(&outputs)?;
        outputs
            .into_iter()
            .map(|o| {
                let event = convert::from_wit(o.event).map_err(|reason| self.invalid(reason))?;
                Ok(OutputEvent {
                    target: o.target,
                    event,
                })
            })
            .collect()
    }

    /// The guest's answer to a call that just ran on `instance`, or why the call failed.
    fn finish<T>(
        &self,
        instance: &mut Instance,
        result: wasmtime::Result<Result<T, wit::weir::function::types::Error>>,
    ) -> Result<T, CallError> {
        instance.calls += 1;
        self.settle(&mut instance.store);
        let breach = instance.store.data_mut().take_breach();
        let late = instance.store.data_mut().take_late();
        let outage = instance.store.data_mut().take_outage();
        self.outage_or(
            outage,
            match (result, breach) {
                (Err(e), breach) => Err(self.classify(e, breach, late, false)),
                (Ok(_), Some(breach)) => Err(self.breach_error(breach)),
                (Ok(Ok(value)), None) => Ok(value),
                (Ok(Err(wit::weir::function::types::Error::Retryable(message))), None) => {
                    Err(CallError::Retryable {
                        function: self.name().to_owned(),
                        version: self.version().to_owned(),
                        message,
                    })
                }
                (Ok(Err(wit::weir::function::types::Error::Fatal(message))), None) => {
                    Err(CallError::Fatal {
                        function: self.name().to_owned(),
                        version: self.version().to_owned(),
                        message,
                    })
                }
            },
        )
    }

    /// A failed call's error, or [`CallError::Outage`] when a request of the call met an
    /// open circuit (a denied capability stays what it is).
    pub(crate) fn outage_or<T>(
        &self,
        outage: Option<crate::circuits::Outage>,
        result: Result<T, CallError>,
    ) -> Result<T, CallError> {
        match (result, outage) {
            // What a failed request to a down destination ends a call as; a fatal error,
            // a trap or a limit stays what it is (the event's or the function's doing).
            (
                Err(
                    e @ (CallError::Retryable { .. }
                    | CallError::Unavailable { .. }
                    | CallError::Deadline { .. }),
                ),
                Some(outage),
            ) => Err(CallError::Outage {
                function: self.name().to_owned(),
                version: self.version().to_owned(),
                destination: outage.destination,
                wait: outage.wait,
                cause: e.to_string(),
            }),
            (result, _) => result,
        }
    }

    /// [`Function::finish`] for the entity world's copy of the `error` type.
    fn finish_entity<T>(
        &self,
        instance: &mut Instance,
        result: wasmtime::Result<Result<T, entity_wit::weir::function::types::Error>>,
    ) -> Result<T, CallError> {
        use entity_wit::weir::function::types::Error as E;
        use wit::weir::function::types::Error as H;
        let result = result.map(|r| {
            r.map_err(|e| match e {
                E::Retryable(m) => H::Retryable(m),
                E::Fatal(m) => H::Fatal(m),
            })
        });
        self.finish(instance, result)
    }

    /// A call of the wrong world's export (the engine checks worlds before it calls).
    pub(crate) fn not_world(&self, wanted: World) -> CallError {
        self.invalid(format!(
            "the function implements the {} world, not the {wanted} world",
            self.world()
        ))
    }

    /// Call an entity's `handle` on `instance`. On an error the instance must not be used
    /// again.
    pub(crate) fn handle_command_on(
        &self,
        instance: &mut Instance,
        state: Option<&[u8]>,
        command: &EntityCommand,
    ) -> Result<Decision, CallError> {
        self.arm_as(&mut instance.store, true);
        let Exports::Entity(entity) = &instance.exports else {
            return Err(self.not_world(World::Entity));
        };
        let input = entity_wit::weir::function::entity_types::Command {
            name: command.name.clone(),
            entity_id: command.entity_id.clone(),
            data: command.data.clone(),
            version: command.version,
        };
        let result = entity.call_handle(&mut instance.store, state, &input);
        let decision = self.finish_entity(instance, result)?;
        use entity_wit::weir::function::entity_types::Decision as Wit;
        Ok(match decision {
            Wit::Reject(reason) => Decision::Reject(reason),
            Wit::Accept(events) => {
                let limits = &self.inner.limits;
                let bytes: usize = events
                    .iter()
                    .map(|e| {
                        e.type_.len()
                            + e.data.as_ref().map_or(0, Vec::len)
                            + e.subject.as_ref().map_or(0, String::len)
                    })
                    .sum();
                if events.len() > limits.max_outputs {
                    return Err(self.output_limit(
                        "max_outputs",
                        "events",
                        limits.max_outputs,
                        events.len(),
                    ));
                }
                if bytes > limits.max_output_bytes {
                    return Err(self.output_limit(
                        "max_output_bytes",
                        "bytes of events",
                        limits.max_output_bytes,
                        bytes,
                    ));
                }
                Decision::Accept(
                    events
                        .into_iter()
                        .map(|e| NewEvent {
                            ty: e.type_,
                            data: e.data,
                            subject: e.subject,
                        })
                        .collect(),
                )
            }
        })
    }

    /// Call an entity's `apply` on `instance`, with key-value and HTTP denied. On an error
    /// the instance must not be used again.
    pub(crate) fn apply_on(
        &self,
        instance: &mut Instance,
        state: Option<&[u8]>,
        event: &CloudEvent,
    ) -> Result<Option<Vec<u8>>, CallError> {
        self.arm_as(&mut instance.store, false);
        let Exports::Entity(entity) = &instance.exports else {
            return Err(self.not_world(World::Entity));
        };
        let input = convert::to_entity_wit(event);
        let result = entity.call_apply(&mut instance.store, state, &input);
        self.finish_entity(instance, result)
    }

    /// Call a projection's `project` on `instance`, with key-value and HTTP denied. On an
    /// error the instance must not be used again.
    pub(crate) fn project_on(
        &self,
        instance: &mut Instance,
        event: &CloudEvent,
    ) -> Result<Vec<RowChange>, CallError> {
        self.arm_as(&mut instance.store, false);
        let Exports::Projection(projection) = &instance.exports else {
            return Err(self.not_world(World::Projection));
        };
        let input = convert::to_entity_wit(event);
        let result = projection.call_project(&mut instance.store, &input);
        let changes = self.finish_entity(instance, result)?;
        if changes.len() > self.inner.limits.max_outputs {
            return Err(self.output_limit(
                "max_outputs",
                "row changes",
                self.inner.limits.max_outputs,
                changes.len(),
            ));
        }
        use projection_wit::weir::function::projection_types::{RowChange as W, Value as V};
        let cells = |cells: Vec<(String, V)>| {
            cells
                .into_iter()
                .map(|(name, value)| {
                    let value = match value {
                        V::Null => CellValue::Null,
                        V::Text(s) => CellValue::Text(s),
                        V::Integer(i) => CellValue::Integer(i),
                        V::Real(f) => CellValue::Real(f),
                        V::Boolean(b) => CellValue::Boolean(b),
                        V::Json(s) => CellValue::Json(s),
                    };
                    (name, value)
                })
                .collect()
        };
        Ok(changes
            .into_iter()
            .map(|change| match change {
                W::Upsert(row) => RowChange::Upsert(cells(row)),
                W::Delete(row) => RowChange::Delete(cells(row)),
            })
            .collect())
    }

    fn output_limit(
        &self,
        limit: &'static str,
        what: &'static str,
        allowed: usize,
        actual: usize,
    ) -> CallError {
        CallError::OutputLimit {
            function: self.name().to_owned(),
            version: self.version().to_owned(),
            limit,
            what,
            allowed: allowed as u64,
            actual: actual as u64,
        }
    }

    fn check_output_limits(
        &self,
        outputs: &[wit::weir::function::types::Output],
    ) -> Result<(), CallError> {
        let limits = &self.inner.limits;
        if outputs.len() > limits.max_outputs {
            return Err(self.output_limit(
                "max_outputs",
                "outputs",
                limits.max_outputs,
                outputs.len(),
            ));
        }
        let bytes: usize = outputs.iter().map(convert::output_size).sum();
        if bytes > limits.max_output_bytes {
            return Err(self.output_limit(
                "max_output_bytes",
                "bytes of outputs",
                limits.max_output_bytes,
                bytes,
            ));
        }
        Ok(())
    }

    pub(crate) fn breach_error(&self, breach: Breach) -> CallError {
        let (function, version) = (self.name().to_owned(), self.version().to_owned());
        match breach {
            Breach::Memory => CallError::Memory {
                function,
                version,
                limit_bytes: self.inner.limits.memory_bytes,
            },
            Breach::Denied(capability) => CallError::CapabilityDenied {
                function,
                version,
                capability,
            },
        }
    }

    /// An output the host refuses; the caller uses this for its own checks too.
    pub fn invalid(&self, reason: impl Into<String>) -> CallError {
        CallError::InvalidOutput {
            function: self.name().to_owned(),
            version: self.version().to_owned(),
            reason: reason.into(),
        }
    }

    /// Why a call failed. `late`: what of the host held the call past its deadline (a
    /// slow key-value store or publish, the function's CPU quota); a deadline then is the
    /// host's doing, retryable.
    pub(crate) fn classify(
        &self,
        e: wasmtime::Error,
        breach: Option<Breach>,
        late: Option<String>,
        instantiating: bool,
    ) -> CallError {
        let (function, version) = (self.name().to_owned(), self.version().to_owned());
        if let Some(breach) = breach {
            return self.breach_error(breach);
        }
        match e.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => {
                if let Some(what) = late {
                    return CallError::Unavailable {
                        function,
                        version,
                        reason: format!(
                            "{what}, past the call's deadline of {:?}",
                            self.inner.limits.deadline
                        ),
                    };
                }
                return CallError::Deadline {
                    function,
                    version,
                    deadline: self.inner.limits.deadline,
                };
            }
            Some(Trap::OutOfFuel) => {
                return CallError::Fuel {
                    function,
                    version,
                    fuel: self.inner.limits.fuel.unwrap_or(u64::MAX),
                };
            }
            Some(Trap::StackOverflow) => return CallError::StackOverflow { function, version },
            _ => {}
        }
        let message = format!("{e:#}");
        if instantiating && e.downcast_ref::<Trap>().is_none() {
            // Not the guest's doing: the pooling allocator is out of slots or the like.
            return CallError::Unavailable {
                function,
                version,
                reason: message,
            };
        }
        CallError::Trap {
            function,
            version,
            message,
        }
    }
}
