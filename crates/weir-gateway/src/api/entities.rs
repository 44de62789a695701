//! Event-sourced entities: `/v1/entities/{type}/{id}`.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// What a command did (`POST /v1/entities/{type}/{id}/commands/{name}`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CommandResult {
    pub entity_type: String,
    pub id: String,
    /// The entity's version after the command: its number of events. Also the `ETag`.
    pub version: u64,
    /// The state after the command, as the entity keeps it (JSON); null for an entity its
    /// events deleted.
    #[schema(value_type = Object)]
    pub state: Option<Box<serde_json::value::RawValue>>,
    /// The events the command appended, as CloudEvents (none is fine).
    #[schema(value_type = Vec<Object>)]
    pub events: Vec<Box<serde_json::value::RawValue>>,
    /// Pass it as `consistency` to a view query to wait until the view has these events.
    pub consistency_token: String,
}

/// An entity's state (`GET /v1/entities/{type}/{id}`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EntityState {
    pub entity_type: String,
    pub id: String,
    /// The state's version: the number of events folded into it. Also the `ETag`.
    pub version: u64,
    #[schema(value_type = Object)]
    pub state: Option<Box<serde_json::value::RawValue>>,
    /// When the log appended the event of this version (RFC 3339).
    pub timestamp: Option<String>,
}

/// `GET /v1/entities/{type}/{id}`: the latest state, or one as of a version or a time.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StateQuery {
    /// The state after this many events.
    pub version: Option<u64>,
    /// The state after the last event the log appended at or before this time: RFC 3339
    /// or milliseconds since the Unix epoch.
    pub at: Option<String>,
}

/// `GET /v1/entities/{type}/{id}/events`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// The first version to return (1, the first event, by default).
    pub from: Option<u64>,
    /// Most events (default 100, at most 1000).
    pub limit: Option<usize>,
}
