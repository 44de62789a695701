//! A weir node: opens the embedded log, loads the app's functions and runs its pipelines.
//! The gateway and the CLI talk to a [`Node`]; nothing here speaks HTTP.
//!
//! **Architecture Invariant:** an event is stored in the log as its CloudEvents JSON
//! (structured) encoding, under the key chosen by [`routing::event_key`]; whatever reads
//! the log back gets the same validated event.

mod error;
mod pipeline;
pub mod routing;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use futures::Stream;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use weir_cloudevents::CloudEvent;
use weir_log::{Log, LogOptions, Record, RecordPosition, StoredRecord};
use weir_manifest::Manifest;
use weir_wasm::{Function, FunctionHost, FunctionSettings, Limits};

pub use error::{Error, Result};
pub use pipeline::{PipelineState, PipelineStatus};

/// How to start a node.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// The embedded log's directory.
    pub data_dir: PathBuf,
    /// The app to run, if any.
    pub manifest: Option<Manifest>,
    pub log: LogOptions,
}

/// An event read back from the log, with where it is stored.
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedEvent {
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
    /// When the log appended it, in milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    pub event: CloudEvent,
}

/// Where a subscription starts in each partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartFrom {
    Earliest,
    Latest,
    /// The same offset in every partition (clamped to each partition's end).
    Offset(u64),
    /// In each partition, the first event appended at or after this time (milliseconds
    /// since the Unix epoch).
    Time(i64),
}

/// A function as `weir status` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct FunctionStatus {
    pub name: String,
    pub version: String,
}

/// What the node runs, for `weir status` and `/readyz`.
#[derive(Debug, Clone, Serialize)]
pub struct NodeStatus {
    pub app: Option<String>,
    pub topics: Vec<weir_log::TopicInfo>,
    pub functions: Vec<FunctionStatus>,
    pub pipelines: Vec<PipelineStatus>,
}

/// A running node. Share it as `Arc<Node>`.
pub struct Node {
    log: Log,
    app: Option<String>,
    functions: BTreeMap<String, Function>,
    pipelines: Vec<Arc<pipeline::Pipeline>>,
    cancel: CancellationToken,
    tasks: TaskTracker,
    /// Keeps the wasm engine (and its deadline thread) alive as long as the node.
    _host: Option<FunctionHost>,
    stopped: Mutex<bool>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("log", &self.log)
            .field("app", &self.app)
            .finish_non_exhaustive()
    }
}

impl Node {
    /// Open the log, create the app's topics, compile its functions and start its
    /// pipelines where their consumer groups left off. A function that does not compile
    /// stops the start with an error naming it.
    #[tracing::instrument(skip_all, err, fields(data_dir = %opts.data_dir.display()))]
    pub async fn start(opts: NodeOptions) -> Result<Arc<Node>> {
        let NodeOptions {
            data_dir,
            manifest,
            log: log_options,
        } = opts;
        let log = blocking(move || Log::open(&data_dir, log_options).map_err(Error::from)).await?;

        let mut functions = BTreeMap::new();
        let mut host = None;
        if let Some(manifest) = &manifest {
            for (name, topic) in &manifest.topics {
                let (log, name, partitions) = (log.clone(), name.clone(), topic.partitions);
                blocking(move || {
                    log.create_topic(&name, &weir_log::TopicConfig::with_partitions(partitions))
                        .map_err(Error::from)
                })
                .await?;
            }
            if !manifest.functions.is_empty() {
                let function_host = FunctionHost::new()?;
                for (name, spec) in &manifest.functions {
                    let (function_host, name, spec) =
                        (function_host.clone(), name.clone(), spec.clone());
                    let function = blocking(move || {
                        let wasm =
                            std::fs::read(&spec.source).map_err(|source| Error::ReadFunction {
                                function: name.clone(),
                                path: spec.source.display().to_string(),
                                source,
                            })?;
                        let settings = FunctionSettings {
                            config: spec.config.clone(),
                            limits: Limits {
                                deadline: std::time::Duration::from_millis(spec.limits.deadline_ms),
                                memory_bytes: (spec.limits.memory_mb as usize) << 20,
                            },
                        };
                        Ok(function_host.load(&name, &wasm, settings)?)
                    })
                    .await?;
                    functions.insert(function.name().to_owned(), function);
                }
                host = Some(function_host);
            }
        }

        let cancel = CancellationToken::new();
        let tasks = TaskTracker::new();
        let mut pipelines = Vec::new();
        if let Some(manifest) = &manifest {
            for (name, spec) in &manifest.pipelines {
                let function = functions
                    .get(&spec.function)
                    .cloned()
                    .expect("manifest validation guarantees the function exists");
                let p = Arc::new(pipeline::Pipeline::new(name, spec, function));
                p.spawn(&log, &tasks, &cancel)?;
                pipelines.push(p);
            }
        }

        Ok(Arc::new(Node {
            log,
            app: manifest.map(|m| m.app.name),
            functions,
            pipelines,
            cancel,
            tasks,
            _host: host,
            stopped: Mutex::new(false),
        }))
    }

    /// The embedded log.
    pub fn log(&self) -> &Log {
        &self.log
    }

    /// Append events to a topic; resolves once they are durable. The events must be
    /// valid (everything `weir_cloudevents` decodes is).
    #[tracing::instrument(skip_all, err, fields(topic, events = events.len()))]
    pub async fn publish(&self, topic: &str, events: &[CloudEvent]) -> Result<Vec<RecordPosition>> {
        if self.cancel.is_cancelled() {
            return Err(Error::ShuttingDown);
        }
        let records = events.iter().map(encode_event).collect();
        Ok(self.log.append(topic, records).await?)
    }

    /// Read up to `limit` events of one partition from `offset`.
    pub fn read(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        limit: usize,
    ) -> Result<Vec<LoggedEvent>> {
        self.log
            .read(topic, partition, offset, limit)?
            .into_iter()
            .map(|r| decode_event(topic, r))
            .collect()
    }

    /// Follow every partition of a topic from `from`, live. The stream ends when the
    /// node shuts down; dropping it stops the readers.
    pub fn subscribe(
        &self,
        topic: &str,
        from: StartFrom,
    ) -> Result<impl Stream<Item = Result<LoggedEvent>> + Send + use<>> {
        let info = self
            .log
            .topic(topic)
            .ok_or_else(|| weir_log::Error::UnknownTopic {
                topic: topic.to_owned(),
            })?;
        let (tx, rx) = mpsc::channel(256);
        for partition in 0..info.partitions {
            let end = info.end_offsets[partition as usize];
            let start = match from {
                StartFrom::Earliest => 0,
                StartFrom::Latest => end,
                StartFrom::Offset(o) => o.min(end),
                StartFrom::Time(ms) => offset_for_time(&self.log, topic, partition, end, ms)?,
            };
            let (log, topic, tx, cancel) = (
                self.log.clone(),
                topic.to_owned(),
                tx.clone(),
                self.cancel.clone(),
            );
            self.tasks.spawn(async move {
                follow_partition(log, topic, partition, start, tx, cancel).await;
            });
        }
        Ok(tokio_stream::wrappers::ReceiverStream::new(rx))
    }

    /// Functions, pipelines and topics, for `weir status`.
    pub fn status(&self) -> NodeStatus {
        NodeStatus {
            app: self.app.clone(),
            topics: self.log.topics(),
            functions: self
                .functions
                .values()
                .map(|f| FunctionStatus {
                    name: f.name().to_owned(),
                    version: f.version().to_owned(),
                })
                .collect(),
            pipelines: self.pipelines.iter().map(|p| p.status(&self.log)).collect(),
        }
    }

    /// Whether the node takes traffic (it is not shutting down).
    pub fn is_ready(&self) -> bool {
        !self.cancel.is_cancelled()
    }

    /// Stop taking events and end live subscriptions; pipelines finish their batch.
    /// [`Node::shutdown`] waits for them.
    pub fn begin_shutdown(&self) {
        self.cancel.cancel();
    }

    /// Stop taking events, let every pipeline finish the batch it is on (outputs appended
    /// and offset committed), and wait for them.
    pub async fn shutdown(&self) {
        {
            let mut stopped = self.stopped.lock().unwrap_or_else(PoisonError::into_inner);
            if *stopped {
                return;
            }
            *stopped = true;
        }
        self.cancel.cancel();
        self.tasks.close();
        self.tasks.wait().await;
        tracing::info!("node stopped");
    }
}

async fn follow_partition(
    log: Log,
    topic: String,
    partition: u32,
    mut next: u64,
    tx: mpsc::Sender<Result<LoggedEvent>>,
    cancel: CancellationToken,
) {
    loop {
        let records = match log.read(&topic, partition, next, 256) {
            Ok(records) => records,
            Err(e) => {
                let _ = tx.send(Err(e.into())).await;
                return;
            }
        };
        if records.is_empty() {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tx.closed() => return,
                r = log.wait_for(&topic, partition, next) => if let Err(e) = r {
                    let _ = tx.send(Err(e.into())).await;
                    return;
                }
            }
            continue;
        }
        for record in records {
            next = record.offset + 1;
            if tx.send(decode_event(&topic, record)).await.is_err() {
                return;
            }
        }
    }
}

/// The first offset below `end` whose record has a timestamp at or after `ms`, or `end`,
/// found through the log's time index.
fn offset_for_time(log: &Log, topic: &str, partition: u32, end: u64, ms: i64) -> Result<u64> {
    Ok(log.offset_for_time(topic, partition, ms)?.min(end))
}

/// The log record for an event.
pub(crate) fn encode_event(event: &CloudEvent) -> Record {
    Record {
        key: routing::event_key(event),
        value: event.to_json_vec().into(),
        timestamp_ms: None,
    }
}

pub(crate) fn decode_event(topic: &str, record: StoredRecord) -> Result<LoggedEvent> {
    let event = CloudEvent::from_json_slice(&record.value).map_err(|e| Error::CorruptEvent {
        topic: topic.to_owned(),
        partition: record.partition,
        offset: record.offset,
        reason: e.to_string(),
    })?;
    Ok(LoggedEvent {
        topic: topic.to_owned(),
        partition: record.partition,
        offset: record.offset,
        timestamp_ms: record.timestamp_ms,
        event,
    })
}

/// Run blocking work (file IO, compilation) off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Task(e.to_string()))?
}

#[cfg(test)]
mod tests;
