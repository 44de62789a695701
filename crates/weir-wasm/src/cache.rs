//! The on-disk cache of compiled components, so a node restarting with many functions
//! does not compile them again.
//!
//! # Format
//! One pair of files per component and engine configuration in the cache directory:
//! - `<sha256 of the component, 64 hex>-<engine hash, 16 hex>.cwasm`: the artifact of
//!   [`wasmtime::component::Component::serialize`], an ELF image wasmtime maps and runs.
//! - the same name with `.crc`: the CRC32C of the `.cwasm` as 8 hex digits.
//!
//! The engine hash is [`wasmtime::Engine::precompile_compatibility_hash`], so a weir built
//! with another wasmtime or configured differently never picks up a stale artifact.
//!
//! # Bound
//! The `.cwasm` and `.crc` files together stay within `max_bytes`: after each store the
//! least recently used entries are removed (`.crc` first) until they fit, the one just
//! stored last of all. An entry's `.cwasm` modification time is when it was last used: set
//! when it is written and touched at each load of that component. An artifact larger than
//! the whole bound is not stored. Removing a file that a running component has mapped is
//! safe: the mapping keeps the pages.
//!
//! **Architecture Invariant:** an artifact is mapped only if its `.crc` matches its bytes
//! and wasmtime's own header check accepts it for this engine; anything else is deleted
//! and compiled again. Files are written to a temporary name, fsynced and renamed, the
//! `.crc` last, so a crash leaves either no entry or a complete one.
//!
//! # Why unsafe
//! [`wasmtime::component::Component::deserialize_file`] is `unsafe` because wasmtime
//! trusts the artifact to be one it wrote: a forged file could run arbitrary native code.
//! This cache only maps files that weir wrote itself, in weir's own data directory, and
//! whose checksum matches; whoever can write there can already replace the weir binary's
//! data. Mapping the file (rather than reading it into memory) keeps the code of idle
//! functions out of the process's resident memory.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use wasmtime::Engine;
use wasmtime::component::Component;

/// A directory of compiled components for one engine configuration.
#[derive(Debug, Clone)]
pub(crate) struct ArtifactCache {
    dir: PathBuf,
    engine_hash: String,
    max_bytes: u64,
    /// Entries removed to stay within `max_bytes`, by this host.
    evicted: Arc<AtomicU64>,
}

/// What the cache directory holds now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct DiskUsage {
    pub(crate) bytes: u64,
    pub(crate) artifacts: usize,
}

/// One entry's files as found in the directory.
struct Found {
    base: String,
    bytes: u64,
    used: SystemTime,
}

impl ArtifactCache {
    pub(crate) fn open(
        dir: &Path,
        engine: &Engine,
        max_bytes: u64,
    ) -> std::io::Result<ArtifactCache> {
        std::fs::create_dir_all(dir)?;
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let cache = ArtifactCache {
            dir: dir.to_owned(),
            engine_hash: format!("{:016x}", hasher.finish()),
            max_bytes,
            evicted: Arc::default(),
        };
        // A smaller bound than the last run's applies from the start.
        cache.evict_over_limit(None);
        Ok(cache)
    }

    /// Entries removed to stay within the bound since this cache was opened.
    pub(crate) fn evicted(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }

    /// The bytes and entries the directory holds (every engine's).
    pub(crate) fn usage(&self) -> DiskUsage {
        let found = self.scan();
        DiskUsage {
            bytes: found.iter().map(|f| f.bytes).sum(),
            artifacts: found.len(),
        }
    }

    /// Every entry in the directory, by the base name its `.cwasm` and `.crc` share.
    fn scan(&self) -> Vec<Found> {
        let mut found: HashMap<String, Found> = HashMap::new();
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let (base, artifact) = match (name.strip_suffix(".cwasm"), name.strip_suffix(".crc")) {
                (Some(base), _) => (base, true),
                (_, Some(base)) => (base, false),
                _ => continue,
            };
            let Ok(meta) = entry.metadata() else { continue };
            let slot = found.entry(base.to_owned()).or_insert(Found {
                base: base.to_owned(),
                bytes: 0,
                used: SystemTime::UNIX_EPOCH,
            });
            slot.bytes += meta.len();
            if artifact && let Ok(modified) = meta.modified() {
                slot.used = modified;
            }
        }
        found.into_values().collect()
    }

    /// Remove the least recently used entries until the directory fits `max_bytes`; `keep`
    /// goes last.
    fn evict_over_limit(&self, keep: Option<&str>) {
        let mut found = self.scan();
        let mut total: u64 = found.iter().map(|f| f.bytes).sum();
        if total <= self.max_bytes {
            return;
        }
        found.sort_by_key(|f| (Some(f.base.as_str()) == keep, f.used));
        for entry in found {
            if total <= self.max_bytes {
                break;
            }
            let artifact = self.dir.join(format!("{}.cwasm", entry.base));
            let _ = std::fs::remove_file(self.dir.join(format!("{}.crc", entry.base)));
            match std::fs::remove_file(&artifact) {
                Ok(()) => {
                    total = total.saturating_sub(entry.bytes);
                    self.evicted.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(path = %artifact.display(), bytes = entry.bytes, "compiled artifact evicted from the cache");
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    total = total.saturating_sub(entry.bytes);
                }
                Err(e) => {
                    tracing::warn!(path = %artifact.display(), error = %e, "cannot evict a compiled artifact from the cache");
                }
            }
        }
    }

    /// Mark `digest_hex`'s entry as just used, so it is evicted last.
    pub(crate) fn touch(&self, digest_hex: &str) {
        let (artifact, _) = self.paths(digest_hex);
        if let Ok(file) = std::fs::File::options().write(true).open(&artifact) {
            let _ = file.set_modified(SystemTime::now());
        }
    }

    fn paths(&self, digest_hex: &str) -> (PathBuf, PathBuf) {
        let base = format!("{digest_hex}-{}", self.engine_hash);
        (
            self.dir.join(format!("{base}.cwasm")),
            self.dir.join(format!("{base}.crc")),
        )
    }

    /// The cached component for `digest_hex`, if there is a sound one.
    pub(crate) fn load(&self, engine: &Engine, digest_hex: &str) -> Option<Component> {
        let (artifact, crc_path) = self.paths(digest_hex);
        let expected = std::fs::read_to_string(&crc_path).ok()?;
        let bytes = std::fs::read(&artifact).ok()?;
        if format!("{:08x}", crc32c::crc32c(&bytes)) != expected.trim() {
            tracing::warn!(path = %artifact.display(), "compiled artifact is corrupt; compiling again");
            self.remove(digest_hex);
            return None;
        }
        drop(bytes);
        match map_artifact(engine, &artifact) {
            Ok(component) => {
                self.touch(digest_hex);
                Some(component)
            }
            Err(e) => {
                tracing::warn!(path = %artifact.display(), error = %e, "compiled artifact does not fit this engine; compiling again");
                self.remove(digest_hex);
                None
            }
        }
    }

    /// Store `component`'s artifact. A failure is logged and otherwise ignored: the cache
    /// only saves time.
    pub(crate) fn store(&self, digest_hex: &str, component: &Component) {
        if let Err(e) = self.try_store(digest_hex, component) {
            tracing::warn!(error = %e, "cannot cache a compiled function; it is compiled again at the next start");
        }
    }

    fn try_store(&self, digest_hex: &str, component: &Component) -> std::io::Result<()> {
        let bytes = component
            .serialize()
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        if bytes.len() as u64 + 8 > self.max_bytes {
            tracing::warn!(
                bytes = bytes.len(),
                limit = self.max_bytes,
                "a compiled function is larger than `limits.compiled_on_disk_bytes`; not caching it"
            );
            return Ok(());
        }
        let (artifact, crc_path) = self.paths(digest_hex);
        write_durably(&artifact, &bytes)?;
        write_durably(
            &crc_path,
            format!("{:08x}", crc32c::crc32c(&bytes)).as_bytes(),
        )?;
        if let Ok(dir) = std::fs::File::open(&self.dir) {
            let _ = dir.sync_all();
        }
        let (base, _) = self.paths(digest_hex);
        let base = base.file_stem().and_then(|s| s.to_str()).map(str::to_owned);
        self.evict_over_limit(base.as_deref());
        Ok(())
    }

    fn remove(&self, digest_hex: &str) {
        let (artifact, crc_path) = self.paths(digest_hex);
        let _ = std::fs::remove_file(crc_path);
        let _ = std::fs::remove_file(artifact);
    }
}

fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    // Unique per process and write, so two hosts sharing a cache never write one file.
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp-{}-{n}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)
}

#[allow(unsafe_code)]
fn map_artifact(engine: &Engine, path: &Path) -> wasmtime::Result<Component> {
    // SAFETY: see the module docs: the file was written by `try_store` in weir's own
    // data directory and its checksum was verified just before.
    unsafe { Component::deserialize_file(engine, path) }
}
