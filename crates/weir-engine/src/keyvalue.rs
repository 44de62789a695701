//! The node's key-value store as the wasm host sees it: `wasi:keyvalue` calls from guests
//! land in the same [`weir_kv::KeyValue`] that HTTP and `weir kv` use.

use std::sync::Arc;

use weir_kv::KeyValue;

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
