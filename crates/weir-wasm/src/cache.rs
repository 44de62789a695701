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

use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

use wasmtime::Engine;
use wasmtime::component::Component;

/// A directory of compiled components for one engine configuration.
#[derive(Debug, Clone)]
pub(crate) struct ArtifactCache {
    dir: PathBuf,
    engine_hash: String,
}

impl ArtifactCache {
    pub(crate) fn open(dir: &Path, engine: &Engine) -> std::io::Result<ArtifactCache> {
        std::fs::create_dir_all(dir)?;
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Ok(ArtifactCache {
            dir: dir.to_owned(),
            engine_hash: format!("{:016x}", hasher.finish()),
        })
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
            Ok(component) => Some(component),
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
        let (artifact, crc_path) = self.paths(digest_hex);
        write_durably(&artifact, &bytes)?;
        write_durably(
            &crc_path,
            format!("{:08x}", crc32c::crc32c(&bytes)).as_bytes(),
        )?;
        if let Ok(dir) = std::fs::File::open(&self.dir) {
            let _ = dir.sync_all();
        }
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
