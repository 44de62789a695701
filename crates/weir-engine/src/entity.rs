//! Event-sourced entities (`[entities.TYPE]`): commands decided by an entity function
//! against the entity's state, the accepted events appended to the type's journal, the
//! state rebuilt from the latest snapshot and the events after it.
//!
//! **Architecture Invariant:** an entity's events are appended only by the writer of its
//! journal partition (`writer.rs`), with `Expect::End` on the end offset the writer knows,
//! so any other writer of the partition turns into a conflict instead of a fork; every
//! event of one command, and every command of one round, is appended in one call or not
//! at all, and a rejected command appends nothing. An entity's `N`th event (the first is
//! number one) has the id `TYPE/ID/N` and the `entityversion` extension `N`. The journal
//! is an ordinary topic: pipelines, replays and readers use it like any other, but only the
//! writer publishes to it.
//!
//! - `journal`: how entity events and snapshots are made and read back, and what an
//!   entity id may be;
//! - `writer`: the per-partition command loop, its index of the partition and its cache
//!   of hot states.

mod journal;
mod writer;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use weir_manifest::EntitySpec;
use weir_wasm::InstancePool;

use crate::codec::LoggedEvent;
use crate::registry::{ActivePool, Registry};
use crate::{Error, Node, Result, SharedLog};

pub(crate) use journal::check_entity_id;
use writer::{Entry, Request, Writer};

/// What a command did.
#[derive(Debug, Clone)]
pub struct CommandOutcome {
    /// The entity's version after the command (its number of events).
    pub version: u64,
    /// The state after the command (JSON by the SDKs' convention); `None` for an entity
    /// whose events deleted it.
    pub state: Option<Vec<u8>>,
    /// The events the command appended, in order (none is fine).
    pub events: Vec<LoggedEvent>,
    /// Where the journal was after the command: a view that has read up to it has the
    /// command's events.
    pub token: ConsistencyToken,
}

/// A position in a journal partition; `Display` is the opaque token clients pass back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConsistencyToken {
    pub topic: String,
    pub partition: u32,
    /// The partition's end offset after the command.
    pub offset: u64,
}

impl std::fmt::Display for ConsistencyToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.topic, self.partition, self.offset)
    }
}

/// Which state of an entity to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateAt {
    /// The latest.
    Latest,
    /// After its event number N (0: before any).
    Version(u64),
    /// After the last of its events the log appended at or before this time (ms since the
    /// Unix epoch).
    Time(i64),
}

/// An entity's state at a version.
#[derive(Debug, Clone)]
pub struct EntityState {
    pub version: u64,
    pub state: Option<Vec<u8>>,
    /// When the log appended the event of `version` (none at version 0).
    pub timestamp_ms: Option<i64>,
}

/// An entity type as `weir status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct EntityTypeStatus {
    pub name: String,
    pub function: String,
    pub journal: String,
    pub partitions: u32,
    /// Entities with at least one event, over all partitions.
    pub entities: u64,
    /// Events in the journal, over all partitions.
    pub events: u64,
    /// States in the writers' caches.
    pub cached: u64,
}

/// A node's entity types, each with a writer per journal partition.
#[derive(Default)]
pub(crate) struct Entities {
    types: BTreeMap<String, Arc<EntityType>>,
}

/// One entity type.
pub(crate) struct EntityType {
    name: String,
    spec: EntitySpec,
    partitions: u32,
    writers: Vec<mpsc::Sender<Request>>,
    shared: Arc<Shared>,
}

/// What the writers and readers of one entity type share.
pub(crate) struct Shared {
    pub(crate) ty: String,
    pub(crate) spec: EntitySpec,
    pub(crate) log: SharedLog,
    /// The pool of the function's active version.
    pool: ActivePool,
    /// An event that breaks its type's schema fails its command.
    pub(crate) schemas: Arc<crate::schemas::Schemas>,
}

impl Shared {
    /// The pool of the entity function's active version (a new one after a deploy).
    pub(crate) fn pool(&self) -> Result<InstancePool> {
        self.pool.get()
    }
}

/// Commands a writer queues before senders wait: the back-pressure on a busy partition.
const QUEUE: usize = 1024;

impl Entities {
    /// Start a writer per journal partition of every entity type (each scans its
    /// partition first, see `writer.rs`).
    pub(crate) async fn start(
        specs: &BTreeMap<String, EntitySpec>,
        log: &SharedLog,
        registry: &Arc<Registry>,
        schemas: &Arc<crate::schemas::Schemas>,
        tasks: &tokio_util::task::TaskTracker,
        cancel: &tokio_util::sync::CancellationToken,
    ) -> Result<Entities> {
        let mut types = BTreeMap::new();
        for (ty, spec) in specs {
            registry.active_in(
                &spec.function,
                weir_wasm::World::Entity,
                &format!("entity type {ty:?}"),
            )?;
            let info = log
                .topic(&spec.journal)
                .await?
                .ok_or_else(|| Error::UnknownEntityType {
                    ty: ty.clone(),
                    declared: Vec::new(),
                })?;
            let snapshots = log.topic(&spec.snapshots).await?;
            if snapshots.as_ref().map(|t| t.partitions) != Some(info.partitions) {
                return Err(Error::InvalidTopic {
                    topic: spec.snapshots.clone(),
                    reason: format!(
                        "entity type {ty:?}'s snapshot topic must have its journal's {} partitions",
                        info.partitions
                    ),
                });
            }
            let guarantees = log.guarantees(&info.config);
            if guarantees.atomicity != weir_log::Atomicity::CallPerPartition {
                return Err(Error::InvalidTopic {
                    topic: spec.journal.clone(),
                    reason: format!(
                        "the {} backend stores one call's records one by one here (on NATS JetStream a server older than 2.12 has no atomic batches; Kafka has none without transactions), and an entity command's events must be stored all or none",
                        log.backend()
                    ),
                });
            }
            if !guarantees.conditional_appends.partition_end {
                return Err(Error::InvalidTopic {
                    topic: spec.journal.clone(),
                    reason: format!(
                        "the {} backend has no conditional appends on a partition's end, which entity journals need",
                        log.backend()
                    ),
                });
            }
            let shared = Arc::new(Shared {
                ty: ty.clone(),
                spec: spec.clone(),
                log: log.clone(),
                pool: ActivePool::new(registry.clone(), &spec.function),
                schemas: schemas.clone(),
            });
            let mut writers = Vec::new();
            for partition in 0..info.partitions {
                let (tx, rx) = mpsc::channel(QUEUE);
                let writer = Writer::open(shared.clone(), partition).await?;
                tasks.spawn(writer.run(rx, cancel.clone()));
                writers.push(tx);
            }
            tracing::info!(entity = %ty, partitions = info.partitions, "entity writers started");
            types.insert(
                ty.clone(),
                Arc::new(EntityType {
                    name: ty.clone(),
                    spec: spec.clone(),
                    partitions: info.partitions,
                    writers,
                    shared,
                }),
            );
        }
        Ok(Entities { types })
    }

    fn get(&self, ty: &str) -> Result<&Arc<EntityType>> {
        self.types.get(ty).ok_or_else(|| Error::UnknownEntityType {
            ty: ty.to_owned(),
            declared: self.types.keys().cloned().collect(),
        })
    }

    /// The journal topics of the node's entity types.
    pub(crate) fn journal(&self, topic: &str) -> Option<&str> {
        self.types
            .values()
            .find(|t| t.spec.journal == topic || t.spec.snapshots == topic)
            .map(|t| t.name.as_str())
    }

    /// The declared entity types.
    pub(crate) fn names(&self) -> Vec<String> {
        self.types.keys().cloned().collect()
    }
}

impl EntityType {
    async fn ask<T>(
        &self,
        id: &str,
        make: impl FnOnce(oneshot::Sender<Result<T>>) -> Request,
    ) -> Result<T> {
        let partition = weir_log::partition_for_key(id.as_bytes(), self.partitions) as usize;
        let (reply, answer) = oneshot::channel();
        self.writers[partition]
            .send(make(reply))
            .await
            .map_err(|_| Error::ShuttingDown)?;
        answer.await.map_err(|_| Error::ShuttingDown)?
    }
}

/// Most events one journal read returns.
pub const MAX_EVENTS_PAGE: usize = 1000;

impl Node {
    /// Send command `name` with `data` to entity `id` of type `ty`; with `if_match`, only
    /// if the entity is at that version (else a version-mismatch conflict). Resolves once
    /// the command's events are durable, or with why nothing was written.
    pub async fn entity_command(
        &self,
        ty: &str,
        id: &str,
        name: &str,
        data: Vec<u8>,
        if_match: Option<u64>,
    ) -> Result<CommandOutcome> {
        if self.cancel.is_cancelled() {
            return Err(Error::ShuttingDown);
        }
        check_entity_id(ty, id)?;
        journal::check_command_name(name)?;
        let entity = self.entities.get(ty)?;
        entity
            .ask(id, |reply| Request::Command {
                id: id.to_owned(),
                name: name.to_owned(),
                data,
                if_match,
                retried: false,
                reply,
            })
            .await
    }

    /// Entity `id`'s state: the latest, or as of a version or a time. An entity without
    /// events (at that point) is not found.
    pub async fn entity_state(&self, ty: &str, id: &str, at: StateAt) -> Result<EntityState> {
        check_entity_id(ty, id)?;
        let entity = self.entities.get(ty)?.clone();
        let not_found = |version: Option<u64>| Error::UnknownEntity {
            ty: ty.to_owned(),
            id: id.to_owned(),
            version,
        };
        if at == StateAt::Latest {
            let state = entity
                .ask(id, |reply| Request::State {
                    id: id.to_owned(),
                    reply,
                })
                .await?;
            if state.version == 0 {
                return Err(not_found(None));
            }
            return Ok(state);
        }
        let history = entity
            .ask(id, |reply| Request::History {
                id: id.to_owned(),
                reply,
            })
            .await?;
        let version = match at {
            StateAt::Latest => unreachable!("answered above"),
            StateAt::Version(v) if v as usize > history.len() || v == 0 => {
                return Err(not_found(Some(v)));
            }
            StateAt::Version(v) => v,
            StateAt::Time(t) => history.iter().take_while(|e| e.timestamp_ms <= t).count() as u64,
        };
        if version == 0 {
            return Err(not_found(Some(0)));
        }
        let partition = weir_log::partition_for_key(id.as_bytes(), entity.partitions);
        let entries = &history[..version as usize];
        let events = journal::read_events(&entity.shared, partition, entries).await?;
        let shared = entity.shared.clone();
        let state = crate::blocking(move || {
            let pool = shared.pool()?;
            let mut state = None;
            for event in &events {
                state = journal::apply(&shared, &pool, state.as_deref(), &event.event)?;
            }
            Ok(state)
        })
        .await?;
        Ok(EntityState {
            version,
            state,
            timestamp_ms: entries.last().map(|e| e.timestamp_ms),
        })
    }

    /// Entity `id`'s events from version `from` (1 is the first), at most `limit`.
    pub async fn entity_events(
        &self,
        ty: &str,
        id: &str,
        from: u64,
        limit: usize,
    ) -> Result<Vec<LoggedEvent>> {
        check_entity_id(ty, id)?;
        let entity = self.entities.get(ty)?.clone();
        let history = entity
            .ask(id, |reply| Request::History {
                id: id.to_owned(),
                reply,
            })
            .await?;
        if history.is_empty() {
            return Err(Error::UnknownEntity {
                ty: ty.to_owned(),
                id: id.to_owned(),
                version: None,
            });
        }
        let start = (from.max(1) - 1) as usize;
        let entries: Vec<Entry> = history
            .into_iter()
            .skip(start)
            .take(limit.clamp(1, MAX_EVENTS_PAGE))
            .collect();
        let partition = weir_log::partition_for_key(id.as_bytes(), entity.partitions);
        journal::read_events(&entity.shared, partition, &entries).await
    }

    /// On a fleet, the member whose view-assigned unit is entity `id`'s journal partition,
    /// when that is another node with an address: its commands and reads go there, so
    /// one writer decides each partition's commands with its index and cache warm. None
    /// when this node owns it, without a fleet, or for a type the app does not declare
    /// (the local call then answers as it would).
    pub fn entity_owner(&self, ty: &str, id: &str) -> Option<weir_log::Member> {
        let fleet = self.units.fleet.as_ref()?;
        let entity = self.entities.get(ty).ok()?;
        let partition = weir_log::partition_for_key(id.as_bytes(), entity.partitions) as usize;
        let units: Vec<String> = (0..entity.partitions)
            .map(|p| format!("entity/{ty}/{p}"))
            .collect();
        let view = fleet.view();
        let owner = view.assign(&units).get(partition).copied()?.clone();
        (owner.id != fleet.me.id && !owner.url.is_empty()).then_some(owner)
    }

    /// This node's id in its fleet; none without one.
    pub fn member_id(&self) -> Option<String> {
        self.units.fleet.as_ref().map(|f| f.me.id.clone())
    }

    /// The app's entity types.
    pub fn entity_types(&self) -> Vec<String> {
        self.entities.names()
    }

    /// Each entity type's counts, for `weir status` (a writer that is not answering is
    /// left out of the counts).
    pub(crate) async fn entity_status(&self) -> Vec<EntityTypeStatus> {
        let mut statuses = Vec::new();
        for entity in self.entities.types.values() {
            let mut status = EntityTypeStatus {
                name: entity.name.clone(),
                function: entity.spec.function.clone(),
                journal: entity.spec.journal.clone(),
                partitions: entity.partitions,
                entities: 0,
                events: 0,
                cached: 0,
            };
            for writer in &entity.writers {
                let (reply, answer) = oneshot::channel();
                if writer.send(Request::Stats { reply }).await.is_ok()
                    && let Ok(Ok(stats)) = answer.await
                {
                    status.entities += stats.entities;
                    status.events += stats.events;
                    status.cached += stats.cached;
                }
            }
            statuses.push(status);
        }
        statuses
    }
}
