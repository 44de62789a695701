//! The fleet's deploys on NATS ([`weir_log::SharedDeploys`]): components in the object
//! store `{prefix}_functions` (chunked, so an 18 MB component fits any `max_payload`),
//! named by their SHA-256; records in the KV bucket `{prefix}_deployments`, one key per
//! record, watched by every node. The object store is opened on first use, so a node that
//! never deploys needs no object store on its server.

use async_nats::jetstream::{self, kv, object_store};
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use tokio::io::AsyncReadExt;
use tokio::sync::OnceCell;
use weir_log::{RecordWatch, Result, SharedDeploys};

use crate::unavailable;

pub(crate) struct NatsDeploys {
    pub(crate) js: jetstream::Context,
    pub(crate) records: kv::Store,
    pub(crate) bucket: String,
    pub(crate) replicas: usize,
    pub(crate) components: OnceCell<object_store::ObjectStore>,
}

impl NatsDeploys {
    async fn components(&self) -> Result<&object_store::ObjectStore> {
        self.components
            .get_or_try_init(|| async {
                self.js
                    .create_object_store(object_store::Config {
                        bucket: self.bucket.clone(),
                        description: Some("weir: deployed components by SHA-256".into()),
                        num_replicas: self.replicas,
                        storage: jetstream::stream::StorageType::File,
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| {
                        unavailable(
                            format!("cannot open the object store \"{}\"", self.bucket),
                            e,
                        )
                    })
            })
            .await
    }
}

#[async_trait]
impl SharedDeploys for NatsDeploys {
    async fn put_component(&self, name: &str, wasm: Bytes) -> Result<()> {
        let store = self.components().await?;
        if store.info(name).await.is_ok() {
            return Ok(());
        }
        store
            .put(name, &mut wasm.as_ref())
            .await
            .map_err(|e| unavailable(format!("cannot store component {name}"), e))?;
        Ok(())
    }

    async fn component(&self, name: &str) -> Result<Option<Bytes>> {
        let store = self.components().await?;
        let mut object = match store.get(name).await {
            Ok(object) => object,
            Err(e) if e.kind() == object_store::GetErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(unavailable(format!("cannot read component {name}"), e)),
        };
        let mut wasm = Vec::new();
        object
            .read_to_end(&mut wasm)
            .await
            .map_err(|e| unavailable(format!("cannot read component {name}"), e))?;
        Ok(Some(wasm.into()))
    }

    async fn put_record(&self, key: &str, value: Bytes) -> Result<()> {
        self.records
            .put(key, value)
            .await
            .map_err(|e| unavailable(format!("cannot store the deploy record {key}"), e))?;
        Ok(())
    }

    async fn record(&self, key: &str) -> Result<Option<Bytes>> {
        self.records
            .get(key)
            .await
            .map_err(|e| unavailable(format!("cannot read the deploy record {key}"), e))
    }

    async fn watch(&self) -> Result<Box<dyn RecordWatch>> {
        let watch = self
            .records
            .watch_with_history(">")
            .await
            .map_err(|e| unavailable("cannot watch the deploy records".into(), e))?;
        Ok(Box::new(NatsRecordWatch(watch)))
    }
}

struct NatsRecordWatch(kv::Watch);

#[async_trait]
impl RecordWatch for NatsRecordWatch {
    async fn next(&mut self) -> Option<Result<(String, Bytes)>> {
        loop {
            return match self.0.next().await? {
                Ok(entry) if entry.operation == kv::Operation::Put => {
                    Some(Ok((entry.key, entry.value)))
                }
                Ok(_) => continue,
                Err(e) => Some(Err(unavailable(
                    "the watch of the deploy records failed".into(),
                    e,
                ))),
            };
        }
    }
}
