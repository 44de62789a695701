//! weir's key-value store: named namespaces of UTF-8 keys to byte values, which functions
//! read and write through `wasi:keyvalue` (customer master data, lookup tables, counters)
//! and operators fill over HTTP and `weir kv`.
//!
//! [`KeyValue`] is the interface the engine and the wasm host use, shaped after
//! `wasi:keyvalue/store@0.2.0-draft` (get, set, delete, exists, list-keys with a cursor);
//! [`EmbeddedKv`] implements it on one [`redb`] file; `weir-log-nats` implements it on
//! NATS KV, a bucket per namespace.
//!
//! # Limits
//!
//! - Namespace names follow topic names: 1 to 249 of a-z, A-Z, 0-9, '.', '_', '-', other
//!   than "." and "..".
//! - A key is 1 to [`MAX_KEY_BYTES`] bytes of UTF-8.
//! - A value is at most [`MAX_VALUE_BYTES`] bytes.
//!
//! Each is checked before anything is written, and broken ones get a typed [`Error`].
//!
//! # Seeding
//!
//! [`KeyValue::seed_from_json`] and [`KeyValue::load_json`] read a JSON object
//! `{"key": value, ...}`: a string value is stored as its UTF-8 text, any other value as
//! its JSON text (`{"name":"Acme GmbH"}` is stored as those bytes). Seeding writes only
//! keys the namespace does not have yet, so data changed at run time survives a restart;
//! loading overwrites.
//!
//! **API Boundary:** weir-kv stores opaque bytes and does no network IO (a networked
//! store implements [`KeyValue`] in its own crate). It does not know
//! which namespaces an app declares or grants; the engine checks that.

mod cache;
mod embedded;
mod error;

use std::path::Path;

use serde::Serialize;

pub use embedded::EmbeddedKv;
pub use error::{Error, Result};

/// The longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;
/// The largest value, in bytes.
pub const MAX_VALUE_BYTES: usize = 1 << 20;
/// The longest namespace name, in bytes (as for topics).
pub const MAX_NAMESPACE_BYTES: usize = 249;

/// One page of a namespace's keys, in key order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyPage {
    pub keys: Vec<String>,
    /// Pass it to the next [`KeyValue::list_keys`] call to continue; none when this page
    /// is the last. It counts the keys returned so far, as `wasi:keyvalue`'s `list-keys`
    /// cursor does.
    pub cursor: Option<u64>,
}

/// What a bulk write does with a key that already has a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    /// Leave it as it is (seeding).
    Keep,
    /// Replace it (loading).
    Overwrite,
}

/// A key-value store of namespaces. Every method blocks on disk IO; from async code, call
/// it through `tokio::task::spawn_blocking`.
pub trait KeyValue: Send + Sync + std::fmt::Debug {
    /// The value of `key`, or none if it has none (or the namespace is empty).
    fn get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>>;

    /// Set `key` to `value`, durably.
    fn set(&self, namespace: &str, key: &str, value: &[u8]) -> Result<()>;

    /// Remove `key`, durably; removing a key that has no value is not an error.
    fn delete(&self, namespace: &str, key: &str) -> Result<()>;

    /// Whether `key` has a value.
    fn exists(&self, namespace: &str, key: &str) -> Result<bool>;

    /// Up to `limit` keys (at least 1) in key order, starting after the `cursor` keys
    /// already returned.
    fn list_keys(&self, namespace: &str, cursor: Option<u64>, limit: usize) -> Result<KeyPage>;

    /// Write many keys; returns how many were written. Every key and value is checked
    /// before anything is written. The default writes one key at a time; a backend with
    /// transactions writes all or none.
    fn write_entries(
        &self,
        namespace: &str,
        entries: &[(String, Vec<u8>)],
        existing: Existing,
    ) -> Result<usize> {
        check_entries(namespace, entries)?;
        let mut written = 0;
        for (key, value) in entries {
            if existing == Existing::Keep && self.exists(namespace, key)? {
                continue;
            }
            self.set(namespace, key, value)?;
            written += 1;
        }
        Ok(written)
    }

    /// Write the keys of the JSON object in the file at `path` that the namespace does not
    /// have yet; returns how many were written. A file that is not a JSON object of keys to
    /// values is an error naming it, and writes nothing.
    fn seed_from_json(&self, namespace: &str, path: &Path) -> Result<usize> {
        check_namespace(namespace)?;
        let bytes = std::fs::read(path).map_err(|source| Error::ReadFile {
            path: path.to_owned(),
            source,
        })?;
        let entries = parse_json_entries(&format!("seed file {}", path.display()), &bytes)?;
        self.write_entries(namespace, &entries, Existing::Keep)
    }

    /// Write every key of the JSON object `json`, replacing values already there; returns
    /// how many were written. `origin` names where the JSON came from in errors.
    fn load_json(&self, namespace: &str, origin: &str, json: &[u8]) -> Result<usize> {
        check_namespace(namespace)?;
        let entries = parse_json_entries(origin, json)?;
        self.write_entries(namespace, &entries, Existing::Overwrite)
    }
}

/// A shared store is a store (a node passes one it opened itself, such as NATS KV).
impl<K: KeyValue + ?Sized> KeyValue for std::sync::Arc<K> {
    fn get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>> {
        (**self).get(namespace, key)
    }

    fn set(&self, namespace: &str, key: &str, value: &[u8]) -> Result<()> {
        (**self).set(namespace, key, value)
    }

    fn delete(&self, namespace: &str, key: &str) -> Result<()> {
        (**self).delete(namespace, key)
    }

    fn exists(&self, namespace: &str, key: &str) -> Result<bool> {
        (**self).exists(namespace, key)
    }

    fn list_keys(&self, namespace: &str, cursor: Option<u64>, limit: usize) -> Result<KeyPage> {
        (**self).list_keys(namespace, cursor, limit)
    }

    fn write_entries(
        &self,
        namespace: &str,
        entries: &[(String, Vec<u8>)],
        existing: Existing,
    ) -> Result<usize> {
        (**self).write_entries(namespace, entries, existing)
    }
}

/// The entries of a JSON object `{"key": value, ...}`: string values as their UTF-8
/// text, other values as their JSON text. `origin` names where the JSON came from in the
/// error.
pub fn parse_json_entries(origin: &str, json: &[u8]) -> Result<Vec<(String, Vec<u8>)>> {
    let invalid = |reason: String| Error::InvalidJson {
        origin: origin.to_owned(),
        reason,
    };
    let value: serde_json::Value =
        serde_json::from_slice(json).map_err(|e| invalid(e.to_string()))?;
    let serde_json::Value::Object(object) = value else {
        return Err(invalid(format!("it is {}", json_kind(&value))));
    };
    Ok(object
        .into_iter()
        .map(|(key, value)| {
            let bytes = match value {
                serde_json::Value::String(text) => text.into_bytes(),
                other => other.to_string().into_bytes(),
            };
            (key, bytes)
        })
        .collect())
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Checks a namespace name against the topic-name rules.
pub fn check_namespace(namespace: &str) -> Result<()> {
    let reason = if namespace.is_empty() {
        "it is empty"
    } else if namespace.len() > MAX_NAMESPACE_BYTES {
        "it is longer than 249 characters"
    } else if namespace == "." || namespace == ".." {
        "\".\" and \"..\" are reserved"
    } else if !namespace
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        "it has a character other than a-z, A-Z, 0-9, '.', '_' and '-'"
    } else {
        return Ok(());
    };
    Err(Error::InvalidNamespace {
        namespace: namespace.to_owned(),
        reason,
    })
}

/// Checks a key's length.
pub fn check_key(namespace: &str, key: &str) -> Result<()> {
    let reason = if key.is_empty() {
        "it is empty"
    } else if key.len() > MAX_KEY_BYTES {
        "it is too long"
    } else {
        return Ok(());
    };
    Err(Error::InvalidKey {
        namespace: namespace.to_owned(),
        key: key.chars().take(64).collect(),
        reason,
    })
}

/// Checks a value's size.
pub fn check_value(namespace: &str, key: &str, value: &[u8]) -> Result<()> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(Error::ValueTooLarge {
            namespace: namespace.to_owned(),
            key: key.chars().take(64).collect(),
            size: value.len(),
        });
    }
    Ok(())
}

/// Checks the namespace and every key and value of a bulk write.
pub(crate) fn check_entries(namespace: &str, entries: &[(String, Vec<u8>)]) -> Result<()> {
    check_namespace(namespace)?;
    for (key, value) in entries {
        check_key(namespace, key)?;
        check_value(namespace, key, value)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
