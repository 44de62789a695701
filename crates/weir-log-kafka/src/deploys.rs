//! The fleet's deploys on Kafka ([`weir_log::SharedDeploys`]).
//!
//! - **Records** are control records (`deploy/KEY`, compacted to the last value per key),
//!   so every node replays them with the rest of the control state, and a watch is the
//!   current records followed by each one the control tail applies.
//! - **Components** are chunked (Kafka refuses messages over about 1 MB by default) into a
//!   topic of their own, `__weir_functions[.PREFIX]` (one partition; every chunk's key,
//!   `NAME/INDEX`, is unique, so compaction never drops one), created on first use. The
//!   control record `component/NAME` is written after its chunks are acknowledged and says
//!   where they start, so a component named in the control state is always readable whole.
//!
//! **Architecture Invariant:** a component is named in the control topic only after every
//! one of its chunks is stored; a chunk never changes (its name is its content's digest).

use async_trait::async_trait;
use base64::Engine as _;
use bytes::Bytes;
use rdkafka::producer::FutureRecord;
use tokio::sync::broadcast;
use weir_log::{Error, ErrorKind, RecordWatch, Result, SharedDeploys};

use crate::control::{ComponentAt, ControlRecord};
use crate::reader::{Received, assigned_consumer, let_go, receive};
use crate::{Inner, unavailable};

/// The largest chunk of a component: well under the default `message.max.bytes` of
/// producers and brokers (1 MB), with room for the record's overhead.
const CHUNK: usize = 512 * 1024;

pub(crate) struct KafkaDeploys {
    pub(crate) inner: std::sync::Arc<Inner>,
}

impl KafkaDeploys {
    fn topic(&self) -> String {
        self.inner.options.internal_topic("__weir_functions")
    }

    async fn ready(&self) -> Result<String> {
        let topic = self.topic();
        self.inner
            .functions_ready
            .get_or_try_init(|| self.inner.ensure_internal_topic(&topic))
            .await?;
        Ok(topic)
    }

    /// Reads a component's chunks from where its control record says they start.
    async fn read_chunks(&self, name: &str, at: &ComponentAt) -> Result<Bytes> {
        let topic = self.ready().await?;
        let mut consumer = Retiring {
            consumer: Some(assigned_consumer(&self.inner, &topic, 0, at.offset)?),
            started: false,
        };
        let mut chunks: Vec<Option<Bytes>> = vec![None; at.chunks as usize];
        let mut missing = chunks.len();
        // The call's timeout, and as long again per 16 chunks (8 MB).
        let timeout = self.inner.options.timeout * (1 + at.chunks / 16);
        let deadline = tokio::time::Instant::now() + timeout;
        let what = format!("component {name} in {topic}");
        let outcome = loop {
            if missing == 0 {
                break Ok(());
            }
            let received =
                tokio::time::timeout_at(deadline, receive(consumer.get(), &topic, 0, &what));
            match received.await {
                Err(_) => {
                    break Err(unavailable(
                        format!("cannot read {what}"),
                        format!(
                            "{missing} of its {} chunks not read in {timeout:?}",
                            at.chunks
                        ),
                    ));
                }
                Ok(Err(e)) => break Err(e),
                Ok(Ok(Received::End)) => {
                    consumer.started = true;
                    break Err(Error::new(
                        ErrorKind::Failed,
                        format!(
                            "{what}: {missing} of its {} chunks are not in the topic (deleted by hand?)",
                            at.chunks
                        ),
                    ));
                }
                Ok(Ok(Received::Record(record))) => {
                    consumer.started = true;
                    let Some(key) = record.key.as_deref() else {
                        continue;
                    };
                    let Some(index) = std::str::from_utf8(key)
                        .ok()
                        .and_then(|k| k.strip_prefix(name))
                        .and_then(|k| k.strip_prefix('/'))
                        .and_then(|i| i.parse::<usize>().ok())
                    else {
                        continue;
                    };
                    if let Some(slot @ None) = chunks.get_mut(index) {
                        *slot = Some(record.value);
                        missing -= 1;
                    }
                }
            }
        };
        drop(consumer);
        outcome?;
        let mut wasm = Vec::with_capacity(at.len as usize);
        for chunk in chunks.into_iter().flatten() {
            wasm.extend_from_slice(&chunk);
        }
        if wasm.len() as u64 != at.len {
            return Err(Error::new(
                ErrorKind::Failed,
                format!(
                    "{what}: its chunks hold {} bytes, its record says {}",
                    wasm.len(),
                    at.len
                ),
            ));
        }
        Ok(wasm.into())
    }
}

#[async_trait]
impl SharedDeploys for KafkaDeploys {
    async fn put_component(&self, name: &str, wasm: Bytes) -> Result<()> {
        let control = &self.inner.control;
        control.sync().await?;
        if control.component(name).is_some() {
            return Ok(());
        }
        let topic = self.ready().await?;
        let mut pending = Vec::new();
        let pieces: Vec<&[u8]> = if wasm.is_empty() {
            vec![&[]]
        } else {
            wasm.chunks(CHUNK).collect()
        };
        for (index, piece) in pieces.iter().enumerate() {
            let key = format!("{name}/{index}");
            let record = FutureRecord::to(&topic)
                .partition(0)
                .key(&key)
                .payload(*piece);
            let future = self
                .inner
                .producer
                .send_result(record)
                .map_err(|(e, _)| unavailable(format!("cannot store component {name}"), e))?;
            pending.push(future);
        }
        let mut first = u64::MAX;
        for future in pending {
            let delivery = tokio::time::timeout(self.inner.options.timeout * 2, future)
                .await
                .map_err(|_| {
                    unavailable(
                        format!("cannot store component {name}"),
                        "no acknowledgement from the brokers in time",
                    )
                })?
                .map_err(|_| {
                    unavailable(
                        format!("cannot store component {name}"),
                        "the producer was closed",
                    )
                })?
                .map_err(|(e, _)| unavailable(format!("cannot store component {name}"), e))?;
            first = first.min(delivery.offset as u64);
        }
        control
            .write(ControlRecord::Component {
                name: name.to_owned(),
                at: ComponentAt {
                    offset: first,
                    chunks: pieces.len() as u32,
                    len: wasm.len() as u64,
                },
            })
            .await?;
        Ok(())
    }

    async fn component(&self, name: &str) -> Result<Option<Bytes>> {
        let control = &self.inner.control;
        control.sync().await?;
        match control.component(name) {
            Some(at) => self.read_chunks(name, &at).await.map(Some),
            None => Ok(None),
        }
    }

    async fn put_record(&self, key: &str, value: Bytes) -> Result<()> {
        self.inner
            .control
            .write(ControlRecord::Deploy {
                key: key.to_owned(),
                value: base64::engine::general_purpose::STANDARD.encode(&value),
            })
            .await
            .map(|_| ())
    }

    async fn record(&self, key: &str) -> Result<Option<Bytes>> {
        let control = &self.inner.control;
        control.sync().await?;
        Ok(control.deploy_record(key))
    }

    async fn watch(&self) -> Result<Box<dyn RecordWatch>> {
        let control = &self.inner.control;
        control.sync().await?;
        // The snapshot and the subscription are taken together (see `Control::watch_deploys`):
        // each record comes once, in the control topic's order.
        let (current, changes) = control.watch_deploys();
        Ok(Box::new(KafkaRecordWatch {
            current: current.into_iter().collect(),
            changes,
        }))
    }
}

/// A consumer that may be dropped before its fetcher started (the read was cancelled, or
/// timed out): dropped a moment later off the caller's thread, as `KafkaReader` does.
struct Retiring {
    consumer: Option<rdkafka::consumer::StreamConsumer>,
    started: bool,
}

impl Retiring {
    fn get(&self) -> &rdkafka::consumer::StreamConsumer {
        self.consumer
            .as_ref()
            .expect("the consumer is kept until the guard is dropped")
    }
}

impl Drop for Retiring {
    fn drop(&mut self) {
        if let Some(consumer) = self.consumer.take() {
            let_go(consumer, self.started);
        }
    }
}

struct KafkaRecordWatch {
    current: std::collections::VecDeque<(String, Bytes)>,
    changes: broadcast::Receiver<(String, Bytes)>,
}

#[async_trait]
impl RecordWatch for KafkaRecordWatch {
    async fn next(&mut self) -> Option<Result<(String, Bytes)>> {
        if let Some(record) = self.current.pop_front() {
            return Some(Ok(record));
        }
        match self.changes.recv().await {
            Ok(record) => Some(Ok(record)),
            // Fell behind the control tail: the watch ends and the watcher watches again,
            // which gives it every record's current value.
            Err(broadcast::error::RecvError::Lagged(_) | broadcast::error::RecvError::Closed) => {
                None
            }
        }
    }
}

/// How many record changes the control tail keeps for a watcher that has not taken them:
/// one further behind ends its watch.
pub(crate) const WATCH_BACKLOG: usize = 1024;
