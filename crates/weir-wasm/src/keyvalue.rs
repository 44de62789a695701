//! The key-value store functions reach through `wasi:keyvalue/store`, as the host sees
//! it. The node plugs in its embedded store; anything else (a NATS KV bucket, Redis)
//! implements the same trait.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// A store of namespaces of keys and byte values. Errors are messages for the guest.
pub trait KeyValueStore: Send + Sync {
    fn get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, String>;
    fn set(&self, namespace: &str, key: &str, value: &[u8]) -> Result<(), String>;
    fn delete(&self, namespace: &str, key: &str) -> Result<(), String>;
    fn exists(&self, namespace: &str, key: &str) -> Result<bool, String>;
    /// A page of keys from `cursor` (the number of keys already returned), and the cursor
    /// of the next page if there is one.
    fn list_keys(
        &self,
        namespace: &str,
        cursor: Option<u64>,
    ) -> Result<(Vec<String>, Option<u64>), String>;
}

/// Keys per `list-keys` page.
pub const LIST_PAGE: usize = 1000;

/// A store in memory, for tests, benchmarks and `weir replay` runs that must not touch
/// the node's data.
#[derive(Debug, Default)]
pub struct MemoryKeyValue {
    data: Mutex<BTreeMap<(String, String), Vec<u8>>>,
}

impl MemoryKeyValue {
    pub fn new() -> MemoryKeyValue {
        MemoryKeyValue::default()
    }

    fn data(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, String), Vec<u8>>> {
        self.data.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl KeyValueStore for MemoryKeyValue {
    fn get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, String> {
        Ok(self
            .data()
            .get(&(namespace.to_owned(), key.to_owned()))
            .cloned())
    }

    fn set(&self, namespace: &str, key: &str, value: &[u8]) -> Result<(), String> {
        self.data()
            .insert((namespace.to_owned(), key.to_owned()), value.to_vec());
        Ok(())
    }

    fn delete(&self, namespace: &str, key: &str) -> Result<(), String> {
        self.data().remove(&(namespace.to_owned(), key.to_owned()));
        Ok(())
    }

    fn exists(&self, namespace: &str, key: &str) -> Result<bool, String> {
        Ok(self
            .data()
            .contains_key(&(namespace.to_owned(), key.to_owned())))
    }

    fn list_keys(
        &self,
        namespace: &str,
        cursor: Option<u64>,
    ) -> Result<(Vec<String>, Option<u64>), String> {
        let skip = cursor.unwrap_or(0) as usize;
        let data = self.data();
        let mut keys: Vec<String> = data
            .keys()
            .filter(|(ns, _)| ns == namespace)
            .skip(skip)
            .take(LIST_PAGE + 1)
            .map(|(_, k)| k.clone())
            .collect();
        let next = (keys.len() > LIST_PAGE).then(|| {
            keys.truncate(LIST_PAGE);
            (skip + LIST_PAGE) as u64
        });
        Ok((keys, next))
    }
}
