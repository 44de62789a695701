//! The node's status, `GET /v1/status`: topics with what their backend guarantees,
//! functions and pipelines.

use serde::Serialize;
use utoipa::ToSchema;

use super::pipelines::Pipeline;
use super::topics::Topic;

/// What the node runs, for `weir status`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct NodeStatus {
    /// The app's name; null when the node runs no app.
    pub app: Option<String>,
    /// The log backend (`embedded`, ...).
    pub backend: String,
    pub topics: Vec<TopicStatus>,
    pub functions: Vec<FunctionStatus>,
    pub pipelines: Vec<Pipeline>,
    /// The app's entity types.
    pub entities: Vec<EntityTypeStatus>,
    /// The app's views.
    pub views: Vec<super::views::ViewStatus>,
    /// The app's sources of events from other brokers.
    pub sources: Vec<SourceStatus>,
    /// The app's sinks.
    pub sinks: Vec<SinkStatus>,
    /// The circuit breaker of each destination (`scheme://host:port`) functions sent HTTP
    /// to since the node started.
    pub circuits: Vec<Circuit>,
    /// The fleet this node is a member of, on a backend several nodes share (NATS); null
    /// on the embedded log.
    pub fleet: Option<Fleet>,
}

/// The circuit breaker of a destination functions send HTTP to.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Circuit {
    /// `scheme://host:port`.
    pub destination: String,
    /// `closed`, `open` (calls to it fail at once; events wait) or `half_open` (a probe
    /// is out).
    pub state: String,
    /// Times it opened since the node started.
    pub opened: u64,
}

/// A fleet as the node answering sees it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Fleet {
    /// The id of the node answering.
    pub me: String,
    /// The live members, sorted by id.
    pub members: Vec<FleetMember>,
}

/// A live member of a fleet.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FleetMember {
    pub id: String,
    /// Where the other members reach its HTTP API.
    pub url: String,
    /// When it started (RFC 3339).
    pub started: String,
}

impl From<weir_engine::FleetStatus> for Fleet {
    fn from(s: weir_engine::FleetStatus) -> Fleet {
        Fleet {
            me: s.me.id,
            members: s
                .members
                .into_iter()
                .map(|m| FleetMember {
                    id: m.id,
                    url: m.url,
                    started: time::OffsetDateTime::from_unix_timestamp_nanos(
                        i128::from(m.started_ms) * 1_000_000,
                    )
                    .ok()
                    .and_then(|t| {
                        t.format(&time::format_description::well_known::Rfc3339)
                            .ok()
                    })
                    .unwrap_or_default(),
                })
                .collect(),
        }
    }
}

/// An entity type: its function, journal and counts.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EntityTypeStatus {
    pub name: String,
    pub function: String,
    /// The journal topic.
    pub journal: String,
    pub partitions: u32,
    /// Entities with at least one event.
    pub entities: u64,
    /// Events in the journal.
    pub events: u64,
    /// States held in the writers' caches.
    pub cached: u64,
}

impl From<weir_engine::EntityTypeStatus> for EntityTypeStatus {
    fn from(s: weir_engine::EntityTypeStatus) -> EntityTypeStatus {
        EntityTypeStatus {
            name: s.name,
            function: s.function,
            journal: s.journal,
            partitions: s.partitions,
            entities: s.entities,
            events: s.events,
            cached: s.cached,
        }
    }
}

/// A source (`[sources.NAME]`): messages of another broker appended to a topic, each
/// acknowledged to its broker only once durable.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SourceStatus {
    pub name: String,
    /// The kind, by the URL's scheme (`mqtt`).
    pub kind: String,
    /// The broker, without credentials or query.
    pub url: String,
    pub subscribe: Vec<String>,
    pub topic: String,
    pub dead_letter: String,
    /// `running` (connected), `connecting`, `stalled` (the log refuses appends; nothing is
    /// acknowledged meanwhile) or `elsewhere` (another member of the fleet runs it).
    pub state: String,
    /// The last failure, until the source runs again.
    pub error: Option<String>,
    /// On a fleet, the member that runs it.
    pub owner: Option<String>,
    /// Messages this node received (redeliveries included).
    pub received: u64,
    /// Events appended to the topic.
    pub appended: u64,
    /// Messages appended to the dead-letter topic.
    pub dead_lettered: u64,
    /// Messages acknowledged to the broker (positional sources: whose position is
    /// committed with their events).
    pub acknowledged: u64,
    /// A positional source's (`redis`, `jetstream`) last committed position in each of
    /// its streams, `STREAM=POSITION` joined with `, `.
    pub position: Option<String>,
}

impl From<weir_engine::SourceStatus> for SourceStatus {
    fn from(s: weir_engine::SourceStatus) -> SourceStatus {
        SourceStatus {
            name: s.name,
            kind: s.kind,
            url: s.url,
            subscribe: s.subscribe,
            topic: s.topic,
            dead_letter: s.dead_letter,
            state: s.state.to_owned(),
            error: s.error,
            owner: s.owner,
            received: s.received,
            appended: s.appended,
            dead_lettered: s.dead_lettered,
            acknowledged: s.acknowledged,
            position: s.position,
        }
    }
}

/// A sink (`[sinks.NAME]`): a topic's events delivered to a receiver, in order per
/// partition, retried, then dead-lettered.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SinkStatus {
    pub name: String,
    pub topic: String,
    /// The receiver, without credentials or query.
    pub url: String,
    /// The consumer group keeping its position.
    pub group: String,
    pub dead_letter: String,
    /// `running`, `retrying` (an event waits for its next attempt) or `stalled` (a
    /// partition failed and starts again after a pause).
    pub state: String,
    /// The last failure, until an event is delivered again.
    pub error: Option<String>,
    /// Events not yet committed by the sink's group.
    pub lag: u64,
    pub delivered: u64,
    /// Failed attempts tried again.
    pub retries: u64,
    pub dead_lettered: u64,
    /// The circuit breaker: `closed`, `open` (deliveries pause), `half_open` (one probe is
    /// out), or `off`.
    pub circuit: String,
}

impl From<weir_engine::SinkStatus> for SinkStatus {
    fn from(s: weir_engine::SinkStatus) -> SinkStatus {
        SinkStatus {
            name: s.name,
            topic: s.topic,
            url: s.url,
            group: s.group,
            dead_letter: s.dead_letter,
            state: s.state.to_owned(),
            error: s.error,
            lag: s.lag,
            delivered: s.delivered,
            retries: s.retries,
            dead_lettered: s.dead_lettered,
            circuit: s.circuit.to_owned(),
        }
    }
}

impl From<weir_engine::NodeStatus> for NodeStatus {
    fn from(s: weir_engine::NodeStatus) -> NodeStatus {
        NodeStatus {
            app: s.app,
            backend: s.backend.to_owned(),
            topics: s.topics.into_iter().map(Into::into).collect(),
            functions: s.functions.into_iter().map(Into::into).collect(),
            pipelines: s.pipelines.into_iter().map(Into::into).collect(),
            entities: s.entities.into_iter().map(Into::into).collect(),
            views: s.views.into_iter().map(Into::into).collect(),
            sources: s.sources.into_iter().map(Into::into).collect(),
            sinks: s.sinks.into_iter().map(Into::into).collect(),
            circuits: s
                .circuits
                .into_iter()
                .map(|c| Circuit {
                    destination: c.destination,
                    state: c.state.to_owned(),
                    opened: c.opened,
                })
                .collect(),
            fleet: s.fleet.map(Into::into),
        }
    }
}

/// A topic, and what its backend promises for its settings.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TopicStatus {
    #[serde(flatten)]
    pub topic: Topic,
    pub guarantees: Guarantees,
}

impl From<weir_engine::TopicStatus> for TopicStatus {
    fn from(s: weir_engine::TopicStatus) -> TopicStatus {
        TopicStatus {
            topic: s.info.into(),
            guarantees: s.guarantees.into(),
        }
    }
}

/// A function's active version.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FunctionStatus {
    pub name: String,
    /// The active version.
    pub version: String,
    /// How many versions are kept for rollback (the active one included).
    pub versions_kept: usize,
}

impl From<weir_engine::FunctionStatus> for FunctionStatus {
    fn from(f: weir_engine::FunctionStatus) -> FunctionStatus {
        FunctionStatus {
            name: f.name,
            version: f.version,
            versions_kept: f.versions_kept,
        }
    }
}

/// What the log backend promises for a topic's settings.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Guarantees {
    /// What an acknowledged append (a `202`) means.
    pub acknowledged: Acknowledgement,
    /// What one append's events are atomic as.
    pub atomicity: Atomicity,
    /// Whether a batch is all or nothing across partitions too.
    pub atomic_batches: bool,
    pub deduplication: Deduplication,
    /// What a pipeline's transaction gives across a crash.
    pub transactions: Transactions,
    /// Which append conditions the storage checks atomically with the write.
    pub conditional_appends: ConditionalAppends,
    /// Whether a consumer group commit of an older owner is refused.
    pub fenced_commits: bool,
}

impl From<weir_engine::Guarantees> for Guarantees {
    fn from(g: weir_engine::Guarantees) -> Guarantees {
        Guarantees {
            acknowledged: g.acknowledged.into(),
            atomicity: g.atomicity.into(),
            atomic_batches: g.atomic_batches,
            deduplication: g.deduplication.into(),
            transactions: g.transactions.into(),
            conditional_appends: ConditionalAppends {
                partition_end: g.conditional_appends.partition_end,
                key_last: g.conditional_appends.key_last,
            },
            fenced_commits: g.fenced_commits,
        }
    }
}

/// What an acknowledged append means: `{"kind": "fsynced"}`, `"replicated"`,
/// `"periodic_sync"` (with `ms`) or `"written"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Acknowledgement {
    /// fdatasynced on this machine.
    Fsynced,
    /// Held by a quorum of replicas.
    Replicated,
    /// Written; synced at least every `ms` milliseconds.
    PeriodicSync { ms: u64 },
    /// Written; synced when the system likes.
    Written,
}

impl From<weir_engine::Acknowledgement> for Acknowledgement {
    fn from(a: weir_engine::Acknowledgement) -> Acknowledgement {
        use weir_engine::Acknowledgement as A;
        match a {
            A::Fsynced => Acknowledgement::Fsynced,
            A::Replicated => Acknowledgement::Replicated,
            A::PeriodicSync { ms } => Acknowledgement::PeriodicSync { ms },
            A::Written => Acknowledgement::Written,
        }
    }
}

/// The scope within which one append's events are all there or none after a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Atomicity {
    /// One call's events bound for one partition.
    CallPerPartition,
    /// Each event alone.
    Record,
}

impl From<weir_engine::Atomicity> for Atomicity {
    fn from(a: weir_engine::Atomicity) -> Atomicity {
        match a {
            weir_engine::Atomicity::CallPerPartition => Atomicity::CallPerPartition,
            weir_engine::Atomicity::Record => Atomicity::Record,
        }
    }
}

/// Whether appends are deduplicated by id: `{"kind": "none"}` or `{"kind": "by_id",
/// "window_ms": N}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Deduplication {
    None,
    ById { window_ms: u64 },
}

impl From<weir_engine::Deduplication> for Deduplication {
    fn from(d: weir_engine::Deduplication) -> Deduplication {
        match d {
            weir_engine::Deduplication::None => Deduplication::None,
            weir_engine::Deduplication::ById { window_ms } => Deduplication::ById { window_ms },
        }
    }
}

/// What a transaction gives across a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Transactions {
    ExactlyOnce,
    AtLeastOnce,
}

impl From<weir_engine::TransactionGuarantee> for Transactions {
    fn from(t: weir_engine::TransactionGuarantee) -> Transactions {
        match t {
            weir_engine::TransactionGuarantee::ExactlyOnce => Transactions::ExactlyOnce,
            weir_engine::TransactionGuarantee::AtLeastOnce => Transactions::AtLeastOnce,
        }
    }
}

/// Which append conditions the storage checks atomically with the write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub struct ConditionalAppends {
    /// A partition's end.
    pub partition_end: bool,
    /// A key's last offset.
    pub key_last: bool,
}
