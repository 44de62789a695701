//! The compiled components a host keeps in memory, by content hash, bounded in number.
//!
//! An entry is *active* while a [`Function`](crate::Function) loaded for running
//! ([`FunctionHost::load`](crate::FunctionHost::load)) is alive and holds its
//! [`ActivePin`]; an entry loaded only as a replay candidate
//! ([`FunctionHost::load_candidate`](crate::FunctionHost::load_candidate)), or whose
//! active functions were all dropped (a version replaced by a deploy), is evictable. Over
//! the limit, evictable entries go first, least recently loaded first; active ones are
//! never evicted, so when only they remain the set grows past the limit (and says so in
//! a warning). Evicting an entry drops the set's reference only: a `Function` still
//! holding the component keeps running it, and the next load of the same bytes maps it
//! from the disk cache or compiles it again.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

/// Held by every active `Function` of an entry; the entry is evictable once none is.
#[derive(Debug)]
pub(crate) struct ActivePin;

struct Entry<V> {
    value: V,
    /// The load count at this entry's last load (a logical clock: higher is more recent).
    last_used: u64,
    pin: Weak<ActivePin>,
}

/// Compiled values (components; anything in the unit tests) by content hash.
pub(crate) struct CompiledSet<V> {
    entries: HashMap<[u8; 32], Entry<V>>,
    limit: usize,
    clock: u64,
    evicted: u64,
}

impl<V: Clone> CompiledSet<V> {
    pub(crate) fn new(limit: usize) -> CompiledSet<V> {
        CompiledSet {
            entries: HashMap::new(),
            limit,
            clock: 0,
            evicted: 0,
        }
    }

    /// The value for `key`, marked most recently used, with the entry's pin when `active`.
    pub(crate) fn get(
        &mut self,
        key: &[u8; 32],
        active: bool,
    ) -> Option<(V, Option<Arc<ActivePin>>)> {
        self.clock += 1;
        let entry = self.entries.get_mut(key)?;
        entry.last_used = self.clock;
        let pin = active.then(|| pin_of(entry));
        Some((entry.value.clone(), pin))
    }

    /// Keep `value` for `key`, evicting what is over the limit (never this entry, never an
    /// active one), and the entry's pin when `active`.
    pub(crate) fn insert(
        &mut self,
        key: [u8; 32],
        value: V,
        active: bool,
    ) -> Option<Arc<ActivePin>> {
        self.clock += 1;
        let entry = self.entries.entry(key).or_insert(Entry {
            value,
            last_used: self.clock,
            pin: Weak::new(),
        });
        let pin = active.then(|| pin_of(entry));
        self.evict_over_limit(&key);
        pin
    }

    fn evict_over_limit(&mut self, keep: &[u8; 32]) {
        while self.entries.len() > self.limit {
            let oldest = self
                .entries
                .iter()
                .filter(|(key, entry)| *key != keep && entry.pin.strong_count() == 0)
                .min_by_key(|(_, entry)| entry.last_used)
                .map(|(key, _)| *key);
            match oldest {
                Some(key) => {
                    self.entries.remove(&key);
                    self.evicted += 1;
                    tracing::debug!(digest = %hex::encode(&key[..6]), "compiled function evicted from memory");
                }
                None => {
                    tracing::warn!(
                        in_memory = self.entries.len(),
                        limit = self.limit,
                        "more compiled functions are active than `limits.compiled_in_memory` allows; keeping them all (raise the limit)"
                    );
                    return;
                }
            }
        }
    }

    /// Entries kept now.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Entries some active function holds.
    pub(crate) fn active(&self) -> usize {
        self.entries
            .values()
            .filter(|e| e.pin.strong_count() > 0)
            .count()
    }

    /// Entries evicted since the set was made.
    pub(crate) fn evicted(&self) -> u64 {
        self.evicted
    }

    #[cfg(test)]
    pub(crate) fn contains(&self, key: &[u8; 32]) -> bool {
        self.entries.contains_key(key)
    }
}

fn pin_of<V>(entry: &mut Entry<V>) -> Arc<ActivePin> {
    match entry.pin.upgrade() {
        Some(pin) => pin,
        None => {
            let pin = Arc::new(ActivePin);
            entry.pin = Arc::downgrade(&pin);
            pin
        }
    }
}

#[cfg(test)]
mod tests;
