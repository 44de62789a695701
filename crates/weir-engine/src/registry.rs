//! The function registry: per function name the active [`Function`] and its deployment
//! history, kept durable in the data directory so deploys and rollbacks survive restarts.
//!
//! # On disk
//!
//! ```text
//! <data>/functions/<name>/<version>.wasm       a deployed component, byte for byte;
//!                                              <version> is the first 12 hex digits of
//!                                              its SHA-256, as `Function::version`
//! <data>/functions/<name>/deployments.json     {"format": 1, "active": "<version>",
//!                                               "manifest_sha256": "<hex>" | null,
//!                                               "history": [{"version": "<version>",
//!                                                 "at_ms": <unix ms>,
//!                                                 "origin": "manifest" | "deploy" | "rollback"}]}
//! ```
//!
//! `manifest_sha256` is the SHA-256 of the manifest `source` seen at the last start. Both
//! files are written temp file, fsync, rename, fsync directory; the wasm before the record
//! that names it, so a record never names a version whose bytes are not durable. The last
//! [`KEPT_VERSIONS`] distinct versions of the history keep their wasm (for rollback); older
//! files are deleted. The history keeps its last [`KEPT_HISTORY`] entries.
//!
//! **Architecture Invariant:** a version becomes active only after it compiled and linked
//! (through [`crate::functions::load_function`], with the function's current settings) and
//! its wasm and record are durable; every activation bumps the registry's generation, which
//! is how pipelines notice a swap at their next batch.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError, RwLock};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use weir_manifest::FunctionSpec;
use weir_wasm::{Function, FunctionHost, HostOptions};

use crate::functions::{load_candidate, load_function, read_source};
use crate::{Error, Result};

/// Distinct versions per function whose wasm is kept for rollback.
pub const KEPT_VERSIONS: usize = 10;
/// Deployment history entries kept per function.
pub const KEPT_HISTORY: usize = 100;

const RECORD_FILE: &str = "deployments.json";
const RECORD_FORMAT: u32 = 1;

/// How a version became active.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// The manifest's `source` at a start.
    Manifest,
    /// `PUT /v1/functions/{name}` or `weir deploy`.
    Deploy,
    /// `weir rollback`.
    Rollback,
}

/// One activation of a version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployment {
    pub version: String,
    /// When it became active, in milliseconds since the Unix epoch.
    pub at_ms: i64,
    pub origin: Origin,
}

/// A function as `GET /v1/functions` and `weir status` show it.
#[derive(Debug, Clone, Serialize)]
pub struct FunctionInfo {
    pub name: String,
    /// The active version.
    pub version: String,
    /// Versions whose wasm is kept, so they can be rolled back to, newest first.
    pub versions_kept: Vec<String>,
    /// Activations, oldest first.
    pub history: Vec<Deployment>,
}

/// The outcome of a deploy or rollback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Deployed {
    pub name: String,
    pub version: String,
    /// The version active before; none for a function that had none.
    pub previous: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    format: u32,
    active: String,
    manifest_sha256: Option<String>,
    history: Vec<Deployment>,
}

impl Record {
    /// Distinct versions of the history, most recently activated first, at most
    /// [`KEPT_VERSIONS`].
    fn kept_versions(&self) -> Vec<String> {
        let mut kept: Vec<String> = Vec::new();
        for d in self.history.iter().rev() {
            if !kept.contains(&d.version) {
                kept.push(d.version.clone());
                if kept.len() == KEPT_VERSIONS {
                    break;
                }
            }
        }
        kept
    }
}

/// The active version of one function.
struct Slot {
    spec: FunctionSpec,
    active: Function,
    generation: u64,
    record: Record,
}

/// The functions of a node. Every method blocks (compiling, file IO): call it through
/// [`crate::blocking`].
pub(crate) struct Registry {
    dir: PathBuf,
    host_options: HostOptions,
    /// Made on the first load, so a node without functions has no wasm engine.
    host: Mutex<Option<FunctionHost>>,
    slots: RwLock<BTreeMap<String, Slot>>,
    generations: AtomicU64,
    /// Serialises activations: one writer of the files and the slots at a time.
    activating: Mutex<()>,
}

impl Registry {
    /// A registry storing under `dir` (`<data>/functions`).
    pub(crate) fn new(dir: PathBuf, host_options: HostOptions) -> Registry {
        Registry {
            dir,
            host_options,
            host: Mutex::new(None),
            slots: RwLock::new(BTreeMap::new()),
            generations: AtomicU64::new(0),
            activating: Mutex::new(()),
        }
    }

    /// The wasm host, made on first use.
    pub(crate) fn host(&self) -> Result<FunctionHost> {
        let mut host = self.host.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(host) = &*host {
            return Ok(host.clone());
        }
        let made = FunctionHost::new(self.host_options.clone())?;
        *host = Some(made.clone());
        Ok(made)
    }

    /// The active version of `name` and its generation.
    pub(crate) fn active(&self, name: &str) -> Option<(u64, Function)> {
        let slots = self.slots.read().unwrap_or_else(PoisonError::into_inner);
        slots
            .get(name)
            .map(|slot| (slot.generation, slot.active.clone()))
    }

    /// The active version of `name`, which must implement `world`; `what` says whose
    /// function it is, for the error.
    pub(crate) fn active_in(
        &self,
        name: &str,
        world: weir_wasm::World,
        what: &str,
    ) -> Result<Function> {
        let function = self
            .active(name)
            .ok_or_else(|| Error::UnknownFunction {
                function: name.to_owned(),
                declared: Vec::new(),
            })?
            .1;
        if function.world() != world {
            return Err(Error::WrongWorld {
                function: name.to_owned(),
                world: function.world().to_string(),
                wanted: format!("{world} (it is {what}'s function)"),
            });
        }
        Ok(function)
    }

    /// The settings `name` runs with.
    pub(crate) fn spec(&self, name: &str) -> Option<FunctionSpec> {
        let slots = self.slots.read().unwrap_or_else(PoisonError::into_inner);
        slots.get(name).map(|slot| slot.spec.clone())
    }

    /// Every function's active version and history, by name.
    pub(crate) fn list(&self) -> Vec<FunctionInfo> {
        let slots = self.slots.read().unwrap_or_else(PoisonError::into_inner);
        slots
            .iter()
            .map(|(name, slot)| FunctionInfo {
                name: name.clone(),
                version: slot.active.version().to_owned(),
                versions_kept: slot.record.kept_versions(),
                history: slot.record.history.clone(),
            })
            .collect()
    }

    /// Load function `name` at start. If its manifest `source` is what the previous start
    /// saw, the recorded active version (perhaps deployed or rolled back over the API) is
    /// loaded from the stored wasm; otherwise the source is a new deployment.
    pub(crate) fn load_at_start(&self, name: &str, spec: &FunctionSpec) -> Result<Deployed> {
        let dir = self.dir.join(name);
        let record = read_record(&dir)?;
        let source = read_source(name, spec);
        let source_sha = source.as_ref().ok().map(|wasm| sha256_hex(wasm));
        if let Some(record) = &record {
            let unchanged = source_sha.is_some() && source_sha == record.manifest_sha256;
            if unchanged || source.is_err() {
                match self.load_stored(name, spec, &record.active) {
                    Ok(function) => {
                        if let Err(e) = &source {
                            tracing::warn!(function = name, version = %record.active, error = %e, "the manifest's source cannot be read; running the recorded active version");
                        }
                        return self.install(name, spec, function, None, None, source_sha);
                    }
                    Err(e) if source.is_ok() => tracing::warn!(
                        function = name, version = %record.active, error = %e,
                        "the recorded active version cannot be loaded; deploying the manifest's source instead"
                    ),
                    Err(e) => return Err(e),
                }
            }
        }
        let wasm = source?;
        let function = load_function(&self.host()?, name, spec, &wasm)?;
        self.install(
            name,
            spec,
            function,
            Some(&wasm),
            Some(Origin::Manifest),
            source_sha,
        )
    }

    /// Compile `wasm` as `name` with `spec`, without activating it.
    pub(crate) fn compile(&self, name: &str, spec: &FunctionSpec, wasm: &[u8]) -> Result<Function> {
        load_function(&self.host()?, name, spec, wasm)
    }

    /// Compile `wasm` as `name` with `spec` for a replay: never activated, and the first
    /// compiled code the host drops from memory.
    pub(crate) fn compile_candidate(
        &self,
        name: &str,
        spec: &FunctionSpec,
        wasm: &[u8],
    ) -> Result<Function> {
        load_candidate(&self.host()?, name, spec, wasm)
    }

    /// What the function host keeps compiled; none before the first function loads.
    pub(crate) fn compiled_stats(&self) -> Option<weir_wasm::CompiledStats> {
        let host = self.host.lock().unwrap_or_else(PoisonError::into_inner);
        host.as_ref().map(FunctionHost::compiled_stats)
    }

    /// Deploy `wasm` as the new version of the declared function `name`, with its current
    /// settings. A module that does not compile is an error and changes nothing.
    /// Make a compiled `function` (of `wasm`) active as `name` with settings `spec`: a new
    /// function, a new version, or new settings of the active version.
    pub(crate) fn activate(
        &self,
        name: &str,
        spec: &FunctionSpec,
        function: Function,
        wasm: &[u8],
    ) -> Result<Deployed> {
        let manifest_sha = self.recorded_manifest_sha(name)?;
        self.install(
            name,
            spec,
            function,
            Some(wasm),
            Some(Origin::Deploy),
            manifest_sha,
        )
    }

    /// Make a kept version active again: `to`, or by default the version active before
    /// the current one.
    pub(crate) fn rollback(&self, name: &str, to: Option<&str>) -> Result<Deployed> {
        let (spec, record) = {
            let slots = self.slots.read().unwrap_or_else(PoisonError::into_inner);
            let slot = slots.get(name).ok_or_else(|| self.unknown(name))?;
            (slot.spec.clone(), slot.record.clone())
        };
        let target = self.rollback_target(name, to)?;
        let function = self.load_stored(name, &spec, &target)?;
        self.install(
            name,
            &spec,
            function,
            None,
            Some(Origin::Rollback),
            record.manifest_sha256,
        )
    }

    /// The version a rollback of `name` makes active: `to`, if its wasm is kept, or the
    /// last version before the active one that is.
    pub(crate) fn rollback_target(&self, name: &str, to: Option<&str>) -> Result<String> {
        let record = {
            let slots = self.slots.read().unwrap_or_else(PoisonError::into_inner);
            let slot = slots.get(name).ok_or_else(|| self.unknown(name))?;
            slot.record.clone()
        };
        let kept = record.kept_versions();
        Ok(match to {
            Some(version) if kept.iter().any(|k| k == version) => version.to_owned(),
            Some(version) => {
                return Err(Error::UnknownVersion {
                    function: name.to_owned(),
                    version: version.to_owned(),
                    kept,
                });
            }
            None => record
                .history
                .iter()
                .rev()
                .map(|d| &d.version)
                .find(|v| **v != record.active && kept.contains(v))
                .cloned()
                .ok_or_else(|| Error::NoEarlierVersion {
                    function: name.to_owned(),
                })?,
        })
    }

    /// Makes `function` (compiled from `wasm`) the active version of `name` as another node
    /// of the fleet made it: with that node's `origin` and manifest digest.
    pub(crate) fn adopt(
        &self,
        name: &str,
        function: Function,
        wasm: &[u8],
        origin: Origin,
        manifest_sha256: Option<String>,
    ) -> Result<Deployed> {
        let spec = self.spec(name).ok_or_else(|| self.unknown(name))?;
        self.install(
            name,
            &spec,
            function,
            Some(wasm),
            Some(origin),
            manifest_sha256,
        )
    }

    /// The stored wasm of a version of `name`, if this node keeps it.
    pub(crate) fn stored(&self, name: &str, version: &str) -> Option<Vec<u8>> {
        self.read_stored(name, version).ok()
    }

    /// A kept version of `name` (the active one included), compiled with the function's
    /// current settings as a replay candidate, without activating it.
    pub(crate) fn kept_version(&self, name: &str, version: &str) -> Result<Function> {
        let slot = {
            let slots = self.slots.read().unwrap_or_else(PoisonError::into_inner);
            slots.get(name).map(|slot| {
                (
                    slot.spec.clone(),
                    slot.active.clone(),
                    slot.record.kept_versions(),
                )
            })
        };
        let (spec, active, kept) = slot.ok_or_else(|| self.unknown(name))?;
        if active.version() == version {
            return Ok(active);
        }
        if !kept.iter().any(|k| k == version) {
            return Err(Error::UnknownVersion {
                function: name.to_owned(),
                version: version.to_owned(),
                kept,
            });
        }
        let wasm = self.read_stored(name, version)?;
        self.compile_candidate(name, &spec, &wasm)
    }

    pub(crate) fn unknown(&self, name: &str) -> Error {
        let slots = self.slots.read().unwrap_or_else(PoisonError::into_inner);
        Error::UnknownFunction {
            function: name.to_owned(),
            declared: slots.keys().cloned().collect(),
        }
    }

    pub(crate) fn recorded_manifest_sha(&self, name: &str) -> Result<Option<String>> {
        let slots = self.slots.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(slot) = slots.get(name) {
            return Ok(slot.record.manifest_sha256.clone());
        }
        drop(slots);
        Ok(read_record(&self.dir.join(name))?.and_then(|r| r.manifest_sha256))
    }

    /// Load a stored version, checking its bytes are the version they are named as.
    fn load_stored(&self, name: &str, spec: &FunctionSpec, version: &str) -> Result<Function> {
        let wasm = self.read_stored(name, version)?;
        self.compile(name, spec, &wasm)
    }

    /// The bytes of a stored version, checked to be the version they are named as.
    pub(crate) fn read_stored(&self, name: &str, version: &str) -> Result<Vec<u8>> {
        let path = self.dir.join(name).join(format!("{version}.wasm"));
        let wasm = std::fs::read(&path).map_err(|source| Error::FunctionStore {
            path: path.clone(),
            source,
        })?;
        if !sha256_hex(&wasm).starts_with(version) {
            return Err(Error::FunctionStore {
                path,
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "its content does not match its version",
                ),
            });
        }
        Ok(wasm)
    }

    /// Store `wasm` (when given), record the activation (when `origin` is given and the
    /// version changes) and swap the slot.
    fn install(
        &self,
        name: &str,
        spec: &FunctionSpec,
        function: Function,
        wasm: Option<&[u8]>,
        origin: Option<Origin>,
        manifest_sha256: Option<String>,
    ) -> Result<Deployed> {
        let _one_at_a_time = self
            .activating
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let dir = self.dir.join(name);
        let version = function.version().to_owned();
        // A pipeline's function stays a handler and an entity's an entity.
        if let Some(slot) = self
            .slots
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            && slot.active.world() != function.world()
        {
            return Err(Error::WrongWorld {
                function: name.to_owned(),
                world: function.world().to_string(),
                wanted: format!(
                    "the {} world its active version implements",
                    slot.active.world()
                ),
            });
        }
        let mut record = self
            .slots
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .map(|slot| slot.record.clone());
        if record.is_none() {
            record = read_record(&dir)?;
        }
        let previous = record.as_ref().map(|r| r.active.clone());

        create_dir(&self.dir)?;
        create_dir(&dir)?;
        if let Some(wasm) = wasm {
            let path = dir.join(format!("{version}.wasm"));
            if !path.exists() {
                write_atomically(&path, wasm)?;
            }
        }
        let mut record = record.unwrap_or(Record {
            format: RECORD_FORMAT,
            active: version.clone(),
            manifest_sha256: None,
            history: Vec::new(),
        });
        let changed = previous.as_deref() != Some(version.as_str());
        if let Some(origin) = origin
            && (changed || record.history.is_empty())
        {
            record.history.push(Deployment {
                version: version.clone(),
                at_ms: now_ms(),
                origin,
            });
            let excess = record.history.len().saturating_sub(KEPT_HISTORY);
            record.history.drain(..excess);
        }
        record.active = version.clone();
        record.manifest_sha256 = manifest_sha256;
        let json = serde_json::to_vec_pretty(&record).expect("a record serialises");
        write_atomically(&dir.join(RECORD_FILE), &json)?;
        prune(&dir, &record.kept_versions());

        let generation = self.generations.fetch_add(1, Ordering::SeqCst) + 1;
        self.slots
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(
                name.to_owned(),
                Slot {
                    spec: spec.clone(),
                    active: function,
                    generation,
                    record,
                },
            );
        if changed {
            tracing::info!(function = name, %version, previous = ?previous, ?origin, "function version active");
        }
        Ok(Deployed {
            name: name.to_owned(),
            version,
            previous,
        })
    }
}

/// The SHA-256 of `bytes` in hex.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn read_record(dir: &Path) -> Result<Option<Record>> {
    let path = dir.join(RECORD_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(Error::FunctionStore { path, source }),
    };
    match serde_json::from_slice::<Record>(&bytes) {
        Ok(record) if record.format == RECORD_FORMAT => Ok(Some(record)),
        Ok(record) => Err(Error::FunctionStore {
            path,
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("format {} is not one this weir reads", record.format),
            ),
        }),
        Err(e) => Err(Error::FunctionStore {
            path,
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        }),
    }
}

/// Delete stored versions not in `kept`. Best effort: a file left behind costs only space.
fn prune(dir: &Path, kept: &[String]) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(stem) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".wasm"))
        else {
            continue;
        };
        if !kept.iter().any(|k| k == stem)
            && let Err(e) = std::fs::remove_file(&path)
        {
            tracing::warn!(path = %path.display(), error = %e, "cannot delete an old function version");
        }
    }
}

fn create_dir(dir: &Path) -> Result<()> {
    match std::fs::create_dir(dir) {
        Ok(()) => sync_parent(dir),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(Error::FunctionStore {
            path: dir.to_owned(),
            source,
        }),
    }
}

fn sync_parent(path: &Path) -> Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::File::open(parent)
        .and_then(|d| d.sync_all())
        .map_err(|source| Error::FunctionStore {
            path: parent.to_owned(),
            source,
        })
}

/// Replace `path` with `bytes` so a crash leaves the old file or the new one: a temp file
/// beside it, fsync, rename, fsync the directory.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let io = |source| Error::FunctionStore {
        path: path.to_owned(),
        source,
    };
    {
        let mut file = std::fs::File::create(&tmp).map_err(io)?;
        file.write_all(bytes).map_err(io)?;
        file.sync_all().map_err(io)?;
    }
    std::fs::rename(&tmp, path).map_err(io)?;
    sync_parent(path)
}

/// The instance pool of one function's active version for one caller (an entity type, a
/// view), made again when a deploy or rollback changes the version.
pub(crate) struct ActivePool {
    registry: std::sync::Arc<Registry>,
    function: String,
    current: Mutex<Option<(u64, weir_wasm::InstancePool)>>,
}

impl ActivePool {
    pub(crate) fn new(registry: std::sync::Arc<Registry>, function: &str) -> ActivePool {
        ActivePool {
            registry,
            function: function.to_owned(),
            current: Mutex::new(None),
        }
    }

    /// The pool of the function's active version.
    pub(crate) fn get(&self) -> crate::Result<weir_wasm::InstancePool> {
        self.get_noting_switch().map(|(pool, _)| pool)
    }

    /// The pool of the function's active version, and that version when it replaced an
    /// earlier one since the last call (for the caller to log the switch).
    pub(crate) fn get_noting_switch(
        &self,
    ) -> crate::Result<(weir_wasm::InstancePool, Option<String>)> {
        let (generation, function) =
            self.registry
                .active(&self.function)
                .ok_or_else(|| crate::Error::UnknownFunction {
                    function: self.function.clone(),
                    declared: Vec::new(),
                })?;
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        match &*current {
            Some((g, pool)) if *g == generation => Ok((pool.clone(), None)),
            _ => {
                let pool = function.instances();
                let switched = current.is_some().then(|| function.version().to_owned());
                *current = Some((generation, pool.clone()));
                Ok((pool, switched))
            }
        }
    }
}
