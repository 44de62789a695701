//! The embedded store's read cache: what `get` read last, kept until the next write.
//!
//! A function that looks a record up on every event (the example enriches each order with
//! its customer) reads the same keys again and again, and a redb read (a read
//! transaction, the namespace's table, the B-tree walk) cost a pipeline more than a tenth
//! of its host time per event. The cache answers those reads from memory.
//!
//! **Architecture Invariant:** a read that starts after a write returned sees that write,
//! and reads never go back in time (a read that saw a write's value is never followed by
//! one that answers an older value from the cache). A write is counted in flight
//! ([`ReadCache::writing`]) from before its transaction starts until after it ended
//! (committed, failed or unwound), and bumps the count of writes when it ends. The cache
//! holds the count it was filled at and is emptied by the first read that sees a newer
//! one. A value read from redb is kept only if no write was in flight when the read
//! started nor when it is kept, and the count did not move in between: so no write
//! committed during the read, the value is the latest committed, and nothing newer can
//! have been read by anyone before it was kept. Reads concurrent with a write may see
//! either value, as they may from redb.
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
    /// Writes in flight.
    in_flight: AtomicU64,
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

/// A read that missed the cache: the count of writes it started at, to keep what it
/// reads, if no write was in flight then.
pub(crate) struct Miss {
    generation: u64,
    keepable: bool,
}

/// A write in flight; it is counted as done when dropped.
pub(crate) struct Writing<'a>(&'a ReadCache);

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        // The count first: a read that sees no write in flight sees the new count.
        self.0.written.fetch_add(1, Ordering::SeqCst);
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

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
            None => Err(Miss {
                generation,
                keepable: self.in_flight.load(Ordering::SeqCst) == 0,
            }),
        }
    }

    /// Keep what a read that missed found in redb, unless a write was in flight when it
    /// started or is now, or was counted since (its snapshot may be older than that
    /// write, or newer than what others read).
    pub(crate) fn keep(&self, miss: Miss, namespace: &str, key: &str, value: Option<&[u8]>) {
        if !miss.keepable || value.is_some_and(|v| v.len() > MAX_CACHED_VALUE) {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if self.in_flight.load(Ordering::SeqCst) != 0
            || self.written.load(Ordering::SeqCst) != miss.generation
            || entries.generation != miss.generation
        {
            return;
        }
        let size = namespace.len() + key.len() + value.map_or(0, <[u8]>::len);
        if entries.keys >= MAX_CACHED_KEYS || entries.bytes + size > MAX_CACHED_BYTES {
            entries.clear(miss.generation);
        }
        let keys = match entries.values.get_mut(namespace) {
            Some(keys) => keys,
            None => entries.values.entry(namespace.to_owned()).or_default(),
        };
        if keys.contains_key(key) {
            return;
        }
        keys.insert(key.to_owned(), value.map(<[u8]>::to_vec));
        entries.keys += 1;
        entries.bytes += size;
    }

    /// Count a write in flight until the returned guard is dropped, after its
    /// transaction ended (committed, failed or unwound).
    pub(crate) fn writing(&self) -> Writing<'_> {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        Writing(self)
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

#[cfg(test)]
mod tests {
    use super::ReadCache;

    fn read(cache: &ReadCache, redb: &[u8]) -> Vec<u8> {
        match cache.get("n", "k") {
            Ok(value) => value.unwrap(),
            Err(miss) => {
                cache.keep(miss, "n", "k", Some(redb));
                redb.to_vec()
            }
        }
    }

    #[test]
    fn a_value_read_before_a_write_ended_is_not_kept() {
        let cache = ReadCache::default();
        // A read misses, a write runs and ends, another read sees the new count (and
        // empties the cache), then the first read keeps its (older) value.
        let miss = cache.get("n", "k").unwrap_err();
        drop(cache.writing());
        assert!(cache.get("n", "other").is_err());
        cache.keep(miss, "n", "k", Some(b"old"));
        assert_eq!(read(&cache, b"new"), b"new");
        // With no write since, it is kept.
        assert_eq!(read(&cache, b"ignored"), b"new");
    }

    #[test]
    fn reads_do_not_go_back_in_time_while_a_write_is_in_flight() {
        let cache = ReadCache::default();
        // A misses before the write starts and reads the old value from redb.
        let a = cache.get("n", "k").unwrap_err();
        let write = cache.writing();
        // The write committed: B misses and reads the new value. (What B keeps may be
        // gone by the time A keeps: the cache empties itself when full.)
        assert!(cache.get("n", "k").is_err());
        // A keeps its old value late: not while the write is in flight...
        cache.keep(a, "n", "k", Some(b"old"));
        assert_eq!(read(&cache, b"new"), b"new");
        drop(write);
        // ...and after it, the cache is emptied and refilled from redb.
        assert_eq!(read(&cache, b"new"), b"new");
        assert_eq!(read(&cache, b"ignored"), b"new");
    }

    #[test]
    fn the_cache_is_bounded() {
        let cache = ReadCache::default();
        let big = vec![0u8; super::MAX_CACHED_VALUE + 1];
        let miss = cache.get("n", "big").unwrap_err();
        cache.keep(miss, "n", "big", Some(&big));
        assert!(
            cache.get("n", "big").is_err(),
            "a value over the bound is not kept"
        );
        for i in 0..=super::MAX_CACHED_KEYS {
            let key = i.to_string();
            let miss = cache.get("n", &key).unwrap_err();
            cache.keep(miss, "n", &key, None);
        }
        let entries = cache.entries.lock().unwrap();
        assert!(entries.keys <= super::MAX_CACHED_KEYS && entries.keys >= 1);
    }
}
