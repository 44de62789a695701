//! A weir node: runs on the log it is given (any backend of the `weir-log` interface),
//! loads the app's functions and runs its pipelines. The gateway and the CLI talk to a
//! [`Node`]; nothing here speaks HTTP.
//!
//! Each room holds one concept (ARCHITECTURE.md has the map):
//! - `node`: what a node is made of, how it starts and stops;
//! - `codec`: how an event is stored in the log and read back;
//! - `consumer`: the partition consumer every reader of the log uses (pipelines,
//!   subscriptions, re-drives, replays);
//! - `topics`: publish, read, topic settings;
//! - `subscribe` and `groups`: live subscriptions and consumer groups of subscribers;
//! - `deploy` (and its pure `deploy::plan`), `registry`, `functions`: functions and
//!   their versions;
//! - `pipeline/`: pipelines (calls and lanes, retries, commits, resets, status);
//! - `redrive`, `replay`, `status`, `keyvalue`; `routing`: the pure decisions;
//! - `trace`: the trace spans of publishes, pipeline steps and function calls;
//! - `entity/`: event-sourced entities (their journals' writers, states, time travel);
//! - `schemas`: event contracts (the schema registry in the log, the check at publish).
//!
//! **Architecture Invariant:** an event is stored in the log as its CloudEvents JSON
//! (structured) encoding, under the key chosen by [`routing::event_key`]; whatever reads
//! the log back gets the same validated event.
//!
//! # Data directory
//!
//! ```text
//! <data>/weir-log.lock, topics/, groups/     the embedded log, when that is the backend
//!                                            (see weir-log-embedded); it reads only these
//! <data>/kv/store.redb                       the key-value store (see weir-kv)
//! <data>/functions/<name>/                   deployed versions and history (`registry`)
//! <data>/wasm-cache/                         compiled components (see weir-wasm)
//! ```

mod asyncapi;
mod codec;
mod consumer;
mod deploy;
mod entity;
mod error;
mod fleet;
mod functions;
pub mod groups;
mod jobs;
mod keyvalue;
mod node;
mod pipeline;
mod redrive;
mod registry;
pub mod replay;
mod routes;
pub mod routing;
mod schemas;
mod sinks;
mod sources;
mod status;
mod subscribe;
mod telemetry;
mod topics;
pub mod trace;
mod views;

pub use codec::LoggedEvent;
pub use consumer::StartFrom;
pub use deploy::{AppDeployed, FunctionChange};
pub use entity::{
    CommandOutcome, ConsistencyToken, EntityState, EntityTypeStatus, MAX_EVENTS_PAGE, StateAt,
};
pub use error::{Error, ErrorClass, Result};
pub use fleet::View as FleetView;
pub use groups::{GroupPartitionStatus, GroupStatus};
pub use jobs::{JobError, JobRequest, JobState, JobStatus};
pub use node::{Node, NodeOptions};
pub use pipeline::{PipelinePartitionStatus, PipelineState, PipelineStatus};
pub use redrive::{RedriveReport, SinkRedriveReport};
pub use registry::{Deployed, Deployment, FunctionInfo, KEPT_VERSIONS, Origin};
pub use replay::{
    Replay, ReplayBound, ReplayProgress, ReplayRange, ReplayReport, ReplayRequest, ReplaySchemas,
    VersionReport, VersionSource,
};
pub use routes::{RouteFailure, RouteMatch, WebhookAccepted, WebhookError};
pub use schemas::{
    SchemaDocuments, SchemaRejection, check_event as check_schema,
    read_documents as read_schema_documents,
};
pub use schemas::{UPCAST_FROM, UpcastFailure, Upcasting};
pub use sinks::SinkStatus;
pub use sources::SourceStatus;
pub use status::{FleetStatus, FunctionStatus, NodeStatus, TopicStatus};
pub use topics::{READ_INLINE_BYTES, ReadEvents, TopicUpdate, topic_spec};
pub use views::{
    DEFAULT_LIMIT as VIEW_DEFAULT_LIMIT, MAX_LIMIT as VIEW_MAX_LIMIT, ViewFilter, ViewPage,
    ViewRequest, ViewStatus,
};
pub use weir_asyncapi::{Security as AsyncApiSecurity, Server as AsyncApiServer};
pub use weir_log::SharedLog;
pub use weir_schema::{
    Compatibility, Incompatibility, Registry as SchemaRegistry, Schema, Subject as SchemaSubject,
    Violation, route as schema_route,
};
pub use weir_schema::{Direction as SchemaDirection, Error as SchemaError};
// Types of the log, the key-value store and the manifest that the node's methods hand
// out or take, so the node's callers need no dependency on those crates.
pub use weir_kv::KeyPage;
pub use weir_log::{
    Acknowledgement, Atomicity, ConditionalAppends, Deduplication, Durability, Guarantees,
    RecordPosition, TopicCreated, TopicInfo, TopicSpec, TransactionGuarantee,
};
pub use weir_manifest::Ordering;
pub use weir_wasm::CompiledStats;

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
