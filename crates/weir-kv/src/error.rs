//! The one error type of weir-kv.

use std::path::PathBuf;

/// Everything that can go wrong in the key-value store. Messages are lower case and say
/// what to do next.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "invalid key-value namespace name {namespace:?}: {reason}; use 1 to 249 characters of a-z, A-Z, 0-9, '.', '_' and '-', other than \".\" and \"..\""
    )]
    InvalidNamespace {
        namespace: String,
        reason: &'static str,
    },

    /// `key` is cut to its first 64 characters when it is longer.
    #[error(
        "invalid key {key:?} in namespace {namespace:?}: {reason}; use 1 to {max} bytes of UTF-8",
        max = crate::MAX_KEY_BYTES
    )]
    InvalidKey {
        namespace: String,
        key: String,
        reason: &'static str,
    },

    #[error(
        "the value of key {key:?} in namespace {namespace:?} has {size} bytes, over the limit of {max}; store it in smaller pieces",
        max = crate::MAX_VALUE_BYTES
    )]
    ValueTooLarge {
        namespace: String,
        key: String,
        size: usize,
    },

    #[error("cannot read {path}: {source}; check the path (a seed is relative to weir.toml)")]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// `origin` says where the JSON came from: a file's path or "the request body".
    #[error(
        "{origin} is not a JSON object of keys to values: {reason}; write it as {{\"key\": value, ...}}"
    )]
    InvalidJson { origin: String, reason: String },

    #[error(
        "the key-value store {path} is open in another process; stop the other weir node or use another data directory"
    )]
    Locked { path: PathBuf },

    #[error("key-value store: cannot {action}: {source}")]
    Storage {
        action: String,
        /// Boxed: redb's error is large and this one is rare.
        #[source]
        source: Box<redb::Error>,
    },

    /// A store on another machine (NATS KV) did not answer, or refused for a reason of
    /// its own; the same call may succeed later.
    #[error("key-value store {store}: cannot {action}: {reason}; check that the server is up")]
    Unavailable {
        store: String,
        action: String,
        reason: String,
    },

    #[error("cannot create {path}: {source}; check the data directory's permissions")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Gives a redb error the action that failed.
pub(crate) trait StorageContext<T> {
    fn storage(self, action: impl FnOnce() -> String) -> Result<T>;
}

impl<T, E: Into<redb::Error>> StorageContext<T> for std::result::Result<T, E> {
    fn storage(self, action: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::Storage {
            action: action(),
            source: Box::new(e.into()),
        })
    }
}
