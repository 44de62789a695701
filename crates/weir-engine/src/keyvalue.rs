//! The node's key-value store as the wasm host sees it: `wasi:keyvalue` calls from guests
//! land in the same [`weir_kv::KeyValue`] that HTTP and `weir kv` use. A replay's
//! functions see it through an [`OverlayKeyValue`], which keeps their writes to itself.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};

use weir_kv::KeyValue;

use crate::telemetry::{KvOp, kv_metrics};
use crate::{Error, Node, Result, blocking};

/// Keys per `list-keys` page a guest gets.
const GUEST_LIST_PAGE: usize = 1000;

/// Adapts the node's store to the host's [`weir_wasm::KeyValueStore`]; errors become the
/// message the guest sees.
pub(crate) struct HostKeyValue(pub(crate) Arc<dyn KeyValue>);

impl weir_wasm::KeyValueStore for HostKeyValue {
    fn get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, String> {
        self.0.get(namespace, key).map_err(|e| e.to_string())
    }

    fn set(&self, namespace: &str, key: &str, value: &[u8]) -> Result<(), String> {
        self.0.set(namespace, key, value).map_err(|e| e.to_string())
    }

    fn delete(&self, namespace: &str, key: &str) -> Result<(), String> {
        self.0.delete(namespace, key).map_err(|e| e.to_string())
    }

    fn exists(&self, namespace: &str, key: &str) -> Result<bool, String> {
        self.0.exists(namespace, key).map_err(|e| e.to_string())
    }

    fn list_keys(
        &self,
        namespace: &str,
        cursor: Option<u64>,
    ) -> Result<(Vec<String>, Option<u64>), String> {
        let page = self
            .0
            .list_keys(namespace, cursor, GUEST_LIST_PAGE)
            .map_err(|e| e.to_string())?;
        Ok((page.keys, page.cursor))
    }
}

/// The node's store, counting each operation that succeeds by namespace and op
/// (`weir_kv_operations_total`): what functions, HTTP and seeds do all goes through it.
#[derive(Debug)]
pub(crate) struct MeteredKeyValue<K>(pub(crate) K);

impl<K: KeyValue> MeteredKeyValue<K> {
    fn counted<T>(
        &self,
        namespace: &str,
        op: KvOp,
        result: weir_kv::Result<T>,
    ) -> weir_kv::Result<T> {
        if result.is_ok() {
            kv_metrics().count(namespace, op);
        }
        result
    }
}

impl<K: KeyValue> KeyValue for MeteredKeyValue<K> {
    fn get(&self, namespace: &str, key: &str) -> weir_kv::Result<Option<Vec<u8>>> {
        self.counted(namespace, KvOp::Get, self.0.get(namespace, key))
    }

    fn set(&self, namespace: &str, key: &str, value: &[u8]) -> weir_kv::Result<()> {
        self.counted(namespace, KvOp::Set, self.0.set(namespace, key, value))
    }

    fn delete(&self, namespace: &str, key: &str) -> weir_kv::Result<()> {
        self.counted(namespace, KvOp::Delete, self.0.delete(namespace, key))
    }

    fn exists(&self, namespace: &str, key: &str) -> weir_kv::Result<bool> {
        self.counted(namespace, KvOp::Exists, self.0.exists(namespace, key))
    }

    fn list_keys(
        &self,
        namespace: &str,
        cursor: Option<u64>,
        limit: usize,
    ) -> weir_kv::Result<weir_kv::KeyPage> {
        let page = self.0.list_keys(namespace, cursor, limit);
        self.counted(namespace, KvOp::ListKeys, page)
    }

    fn write_entries(
        &self,
        namespace: &str,
        entries: &[(String, Vec<u8>)],
        existing: weir_kv::Existing,
    ) -> weir_kv::Result<usize> {
        let written = self.0.write_entries(namespace, entries, existing);
        self.counted(namespace, KvOp::WriteEntries, written)
    }

    fn seed_from_json(&self, namespace: &str, path: &std::path::Path) -> weir_kv::Result<usize> {
        let written = self.0.seed_from_json(namespace, path);
        self.counted(namespace, KvOp::WriteEntries, written)
    }

    fn load_json(&self, namespace: &str, origin: &str, json: &[u8]) -> weir_kv::Result<usize> {
        let written = self.0.load_json(namespace, origin, json);
        self.counted(namespace, KvOp::WriteEntries, written)
    }
}

/// Per namespace and key: the value written, or none for a delete.
type Changes = BTreeMap<(String, String), Option<Vec<u8>>>;

/// A store that reads through to `base` but keeps every write and delete in memory, so
/// functions run by `weir replay` see the node's data and their own changes, and the
/// node's store never sees theirs. Dropped with the replay.
pub(crate) struct OverlayKeyValue {
    base: Arc<dyn weir_wasm::KeyValueStore>,
    changes: Mutex<Changes>,
}

impl OverlayKeyValue {
    pub(crate) fn new(base: Arc<dyn weir_wasm::KeyValueStore>) -> OverlayKeyValue {
        OverlayKeyValue {
            base,
            changes: Mutex::default(),
        }
    }

    fn change(&self, namespace: &str, key: &str) -> Option<Option<Vec<u8>>> {
        self.changes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&(namespace.to_owned(), key.to_owned()))
            .cloned()
    }

    /// Every key of `namespace` in the base store, page by page.
    fn base_keys(&self, namespace: &str) -> Result<BTreeSet<String>, String> {
        let mut keys = BTreeSet::new();
        let mut cursor = None;
        loop {
            let (page, next) = self.base.list_keys(namespace, cursor)?;
            keys.extend(page);
            match next {
                Some(next) if Some(next) != cursor => cursor = Some(next),
                _ => return Ok(keys),
            }
        }
    }
}

impl weir_wasm::KeyValueStore for OverlayKeyValue {
    fn get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, String> {
        match self.change(namespace, key) {
            Some(changed) => Ok(changed),
            None => self.base.get(namespace, key),
        }
    }

    fn set(&self, namespace: &str, key: &str, value: &[u8]) -> Result<(), String> {
        self.changes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert((namespace.to_owned(), key.to_owned()), Some(value.to_vec()));
        Ok(())
    }

    fn delete(&self, namespace: &str, key: &str) -> Result<(), String> {
        self.changes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert((namespace.to_owned(), key.to_owned()), None);
        Ok(())
    }

    fn exists(&self, namespace: &str, key: &str) -> Result<bool, String> {
        match self.change(namespace, key) {
            Some(changed) => Ok(changed.is_some()),
            None => self.base.exists(namespace, key),
        }
    }

    fn list_keys(
        &self,
        namespace: &str,
        cursor: Option<u64>,
    ) -> Result<(Vec<String>, Option<u64>), String> {
        let changes: Vec<(String, bool)> = self
            .changes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|((ns, _), _)| ns == namespace)
            .map(|((_, key), value)| (key.clone(), value.is_some()))
            .collect();
        if changes.is_empty() {
            return self.base.list_keys(namespace, cursor);
        }
        // The cursor counts keys already returned, so the merged listing is rebuilt in
        // key order at each page; replays write little, so this stays small.
        let mut keys = self.base_keys(namespace)?;
        for (key, present) in changes {
            if present {
                keys.insert(key);
            } else {
                keys.remove(&key);
            }
        }
        let skip = cursor.unwrap_or(0) as usize;
        let mut page: Vec<String> = keys
            .into_iter()
            .skip(skip)
            .take(GUEST_LIST_PAGE + 1)
            .collect();
        let next = (page.len() > GUEST_LIST_PAGE).then(|| {
            page.truncate(GUEST_LIST_PAGE);
            (skip + GUEST_LIST_PAGE) as u64
        });
        Ok((page, next))
    }
}

impl Node {
    /// The node's key-value store (every namespace; the app declares which it uses).
    pub fn kv(&self) -> &Arc<dyn weir_kv::KeyValue> {
        &self.kv
    }

    /// The key-value namespaces the app declares, by name.
    pub fn keyvalue_namespaces(&self) -> Vec<String> {
        self.manifest
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|m| m.keyvalue.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Fails with [`Error::UnknownNamespace`] unless the app declares `namespace`.
    pub fn check_namespace(&self, namespace: &str) -> Result<()> {
        let declared = self.keyvalue_namespaces();
        if declared.iter().any(|ns| ns == namespace) {
            Ok(())
        } else {
            Err(Error::UnknownNamespace {
                namespace: namespace.to_owned(),
                declared,
            })
        }
    }

    /// The value of `key` in a declared namespace.
    pub async fn kv_get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>> {
        self.check_namespace(namespace)?;
        let (kv, ns, key) = (self.kv.clone(), namespace.to_owned(), key.to_owned());
        blocking(move || Ok(kv.get(&ns, &key)?)).await
    }

    /// Set `key` in a declared namespace, durably.
    pub async fn kv_set(&self, namespace: &str, key: &str, value: Vec<u8>) -> Result<()> {
        self.check_namespace(namespace)?;
        let (kv, ns, key) = (self.kv.clone(), namespace.to_owned(), key.to_owned());
        blocking(move || Ok(kv.set(&ns, &key, &value)?)).await
    }

    /// Remove `key` from a declared namespace, durably.
    pub async fn kv_delete(&self, namespace: &str, key: &str) -> Result<()> {
        self.check_namespace(namespace)?;
        let (kv, ns, key) = (self.kv.clone(), namespace.to_owned(), key.to_owned());
        blocking(move || Ok(kv.delete(&ns, &key)?)).await
    }

    /// A page of a declared namespace's keys.
    pub async fn kv_list(
        &self,
        namespace: &str,
        cursor: Option<u64>,
        limit: usize,
    ) -> Result<weir_kv::KeyPage> {
        self.check_namespace(namespace)?;
        let (kv, ns) = (self.kv.clone(), namespace.to_owned());
        blocking(move || Ok(kv.list_keys(&ns, cursor, limit)?)).await
    }

    /// Write every key of a JSON object `{"key": value}` into a declared namespace,
    /// overwriting, in one transaction; returns how many were written.
    pub async fn kv_load(&self, namespace: &str, json: Vec<u8>) -> Result<usize> {
        self.check_namespace(namespace)?;
        let (kv, ns) = (self.kv.clone(), namespace.to_owned());
        blocking(move || Ok(kv.load_json(&ns, "the request body", &json)?)).await
    }
}

/// Write the keys of a seed file the namespace does not have yet.
pub(crate) async fn seed_namespace(
    kv: &Arc<dyn weir_kv::KeyValue>,
    namespace: &str,
    seed: &std::path::Path,
) -> Result<()> {
    let (kv, ns, path) = (kv.clone(), namespace.to_owned(), seed.to_owned());
    let written = blocking(move || Ok(kv.seed_from_json(&ns, &path)?)).await?;
    tracing::info!(namespace, seed = %seed.display(), written, "key-value namespace seeded");
    Ok(())
}

#[cfg(test)]
mod tests;
