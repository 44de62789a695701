//! The embedded store's read cache: what `get` read last, kept until the next write.
//!
//! A function that looks a record up on every event (the example enriches each order with
//! its customer) reads the same keys again and again, and a redb read (a read
//! transaction, the namespace's table, the B-tree walk) cost a pipeline more than a tenth
//! of its host time per event. The cache answers those reads from memory.
//!
//! **Architecture Invariant:** a read that starts after a write returned sees that write.
//! Every write bumps [`ReadCache::written`] after its transaction committed (and after
//! one that failed, whose outcome is unknown). The cache holds the generation it was
//! filled at and is emptied by the first read that sees a newer one, and a value read from
//! redb is kept only if no write was counted between the read's start and its end. So a
//! value in the cache was read from a snapshot no older than the last write counted when
//! it was kept, and a read that starts after a write returned sees that write's count and
//! finds the cache emptied. Reads concurrent with a write may see either value, as they
//! may from redb.
//!
//! The cache is bounded: values over [`MAX_CACHED_VALUE`] are not kept, and it is emptied
//! when it reaches [`MAX_CACHED_BYTES`] or [`MAX_CACHED_KEYS`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

/// The largest value kept.
pub(crate) const MAX_CACHED_VALUE: usize = 64 * 1024;
/// The most bytes of keys and values kept before the cache is emptied.
pub(crate) const MAX_CACHED_BYTES: usize = 32 * 1024 * 1024;
/// The most keys kept before the cache is emptied.
pub(crate) const MAX_CACHED_KEYS: usize = 65_536;

#[derive(Default)]
pub(crate) struct ReadCache {
    /// Writes counted so far.
    written: AtomicU64,
    entries: Mutex<Entries>,
}

#[derive(Default)]
struct Entries {
    /// The count of writes these entries were read after.
    generation: u64,
    /// Per namespace, per key: the value, or none where the key is absent.
    values: HashMap<String, HashMap<String, Option<Vec<u8>>>>,
    keys: usize,
    bytes: usize,
}

/// A read that missed the cache: the generation it started at, to keep what it reads.
pub(crate) struct Miss(u64);

impl ReadCache {
    /// The value cached for the key (`Ok(None)`: the key is known to be absent), or the
    /// miss to hand to [`ReadCache::keep`] with what redb read.
    pub(crate) fn get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, Miss> {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let generation = self.written.load(Ordering::SeqCst);
        if entries.generation != generation {
            entries.clear(generation);
        }
        match entries.values.get(namespace).and_then(|keys| keys.get(key)) {
            Some(value) => Ok(value.clone()),
            None => Err(Miss(generation)),
        }
    }

    /// Keep what a read that missed found in redb, unless a write was counted since it
    /// started (its snapshot may be older than that write).
    pub(crate) fn keep(&self, miss: Miss, namespace: &str, key: &str, value: Option<&[u8]>) {
        if value.is_some_and(|v| v.len() > MAX_CACHED_VALUE) {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if self.written.load(Ordering::SeqCst) != miss.0 || entries.generation != miss.0 {
            return;
        }
        let size = namespace.len() + key.len() + value.map_or(0, <[u8]>::len);
        if entries.keys >= MAX_CACHED_KEYS || entries.bytes + size > MAX_CACHED_BYTES {
            entries.clear(miss.0);
        }
        let keys = match entries.values.get_mut(namespace) {
            Some(keys) => keys,
            None => entries.values.entry(namespace.to_owned()).or_default(),
        };
        if keys
            .insert(key.to_owned(), value.map(<[u8]>::to_vec))
            .is_none()
        {
            entries.keys += 1;
            entries.bytes += size;
        }
    }

    /// Count a write: called after its transaction ended, committed or not.
    pub(crate) fn written(&self) {
        self.written.fetch_add(1, Ordering::SeqCst);
    }
}

impl Entries {
    fn clear(&mut self, generation: u64) {
        self.values.clear();
        self.keys = 0;
        self.bytes = 0;
        self.generation = generation;
    }
}
