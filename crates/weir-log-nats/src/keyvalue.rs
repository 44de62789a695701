//! weir's key-value store on NATS KV ([`weir_kv::KeyValue`]): a bucket per namespace,
//! `{prefix}_kv_{namespace}`, shared by every node on the server (a fleet reads and writes
//! one store). A key is stored under its unpadded URL-safe base64 (NATS KV keys take only
//! `a-z A-Z 0-9 - _ = . /`; weir's are any UTF-8). A write is acknowledged once the server
//! stored it, as durable as the server's sync policy and the bucket's replicas make it
//! (what the backend URL declares as `acknowledged`).
//!
//! The trait is blocking (the engine calls it from blocking threads); each call runs on
//! the runtime the store was opened on and waits for it.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use async_nats::jetstream::{self, kv};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures::TryStreamExt;
use weir_kv::{Error, KeyPage, KeyValue, Result};

use crate::NatsOptions;
use crate::names::token;

/// Namespaces of a key-value store on a NATS server.
pub struct NatsKv {
    js: jetstream::Context,
    runtime: tokio::runtime::Handle,
    prefix: String,
    replicas: usize,
    servers: String,
    /// How long one operation may take before it fails as unavailable (the backend URL's
    /// `timeout_ms`): a listing streams from a consumer, which no request timeout bounds.
    timeout: std::time::Duration,
    buckets: Mutex<HashMap<String, kv::Store>>,
}

impl std::fmt::Debug for NatsKv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NatsKv({} on {})", self.prefix, self.servers)
    }
}

impl NatsKv {
    /// Opens the store on the server of a NATS log's URL (its prefix and replicas). Call
    /// it from within the tokio runtime the store's calls are to run on.
    pub async fn open(options: &NatsOptions) -> weir_log::Result<NatsKv> {
        let log = crate::NatsLog::open(options.clone()).await?;
        Ok(NatsKv::on(&log))
    }

    /// The store on `log`'s server, prefix and replicas, over the log's own connection.
    /// Call it from within the tokio runtime the store's calls are to run on.
    pub fn on(log: &crate::NatsLog) -> NatsKv {
        let options = &log.inner.options;
        NatsKv {
            js: log.inner.js.clone(),
            runtime: tokio::runtime::Handle::current(),
            prefix: options.prefix.clone(),
            replicas: options.replicas,
            servers: options.servers.join(","),
            timeout: options.timeout,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Runs `work` on the store's runtime and waits for it, at most the backend's timeout;
    /// its error, a reason, becomes the store's error for `action`.
    fn run<T: Send + 'static>(
        &self,
        action: impl FnOnce() -> String,
        work: impl Future<Output = std::result::Result<T, String>> + Send + 'static,
    ) -> Result<T> {
        let timeout = self.timeout;
        let task = self.runtime.spawn(async move {
            tokio::time::timeout(timeout, work)
                .await
                .unwrap_or_else(|_| Err(format!("no answer within {timeout:?}")))
        });
        futures::executor::block_on(task)
            .map_err(|e| e.to_string())
            .and_then(|result| result)
            .map_err(|reason| Error::Unavailable {
                store: format!("NATS KV at {}", self.servers),
                action: action(),
                reason,
            })
    }

    /// The namespace's bucket, made the first time it is used.
    fn bucket(&self, namespace: &str) -> Result<kv::Store> {
        weir_kv::check_namespace(namespace)?;
        if let Some(store) = self
            .buckets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(namespace)
        {
            return Ok(store.clone());
        }
        let bucket = format!("{}_kv_{}", self.prefix, token(namespace));
        let (js, replicas, name) = (self.js.clone(), self.replicas, bucket.clone());
        let store = self.run(
            || format!("open bucket {bucket} of namespace {namespace:?}"),
            async move {
                crate::open_bucket(&js, &name, replicas)
                    .await
                    .map_err(|e| e.to_string())
            },
        )?;
        self.buckets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(namespace.to_owned(), store.clone());
        Ok(store)
    }
}

fn encode(key: &str) -> String {
    URL_SAFE_NO_PAD.encode(key)
}

fn decode(key: &str) -> Option<String> {
    String::from_utf8(URL_SAFE_NO_PAD.decode(key).ok()?).ok()
}

impl KeyValue for NatsKv {
    fn get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>> {
        weir_kv::check_key(namespace, key)?;
        let store = self.bucket(namespace)?;
        let encoded = encode(key);
        self.run(
            || format!("read key {key:?} of {namespace:?}"),
            async move {
                let value = store.get(encoded).await.map_err(|e| e.to_string())?;
                Ok(value.map(|b| b.to_vec()))
            },
        )
    }

    fn set(&self, namespace: &str, key: &str, value: &[u8]) -> Result<()> {
        weir_kv::check_key(namespace, key)?;
        weir_kv::check_value(namespace, key, value)?;
        let store = self.bucket(namespace)?;
        let (encoded, value) = (encode(key), bytes::Bytes::copy_from_slice(value));
        self.run(
            || format!("write key {key:?} of {namespace:?}"),
            async move {
                store.put(encoded, value).await.map_err(|e| e.to_string())?;
                Ok(())
            },
        )
    }

    fn delete(&self, namespace: &str, key: &str) -> Result<()> {
        weir_kv::check_key(namespace, key)?;
        let store = self.bucket(namespace)?;
        let encoded = encode(key);
        // A purge leaves one marker and no history, so a deleted key takes no room.
        self.run(
            || format!("delete key {key:?} of {namespace:?}"),
            async move { store.purge(encoded).await.map_err(|e| e.to_string()) },
        )
    }

    fn exists(&self, namespace: &str, key: &str) -> Result<bool> {
        Ok(self.get(namespace, key)?.is_some())
    }

    fn list_keys(&self, namespace: &str, cursor: Option<u64>, limit: usize) -> Result<KeyPage> {
        let store = self.bucket(namespace)?;
        let encoded: Vec<String> =
            self.run(|| format!("list the keys of {namespace:?}"), async move {
                let keys = store.keys().await.map_err(|e| e.to_string())?;
                keys.try_collect().await.map_err(|e| e.to_string())
            })?;
        let mut keys: Vec<String> = encoded.iter().filter_map(|k| decode(k)).collect();
        keys.sort();
        let skip = usize::try_from(cursor.unwrap_or(0)).unwrap_or(usize::MAX);
        let page: Vec<String> = keys.iter().skip(skip).take(limit.max(1)).cloned().collect();
        let next = skip.saturating_add(page.len());
        Ok(KeyPage {
            cursor: (next < keys.len()).then_some(next as u64),
            keys: page,
        })
    }
}
