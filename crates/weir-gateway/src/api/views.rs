//! CQRS views: `GET /v1/views/{view}`.

use serde::Serialize;
use utoipa::ToSchema;

/// A page of a view's rows.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ViewPage {
    pub view: String,
    /// The rows, each an object of column name to value.
    #[schema(value_type = Vec<Object>)]
    pub rows: Vec<serde_json::Map<String, serde_json::Value>>,
    /// Pass it as `page` (with the same filters and sort) for the rows after these; null
    /// at the end.
    pub next_page: Option<String>,
}

impl From<weir_engine::ViewPage> for ViewPage {
    fn from(p: weir_engine::ViewPage) -> ViewPage {
        ViewPage {
            view: p.view,
            rows: p.rows,
            next_page: p.next_page,
        }
    }
}

/// A view in `weir status`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ViewStatus {
    pub name: String,
    pub function: String,
    /// `sqlite` or `postgres`.
    pub store: String,
    pub sources: Vec<String>,
    /// Events projected since the node started.
    pub events: u64,
    /// Row changes applied since the node started.
    pub changes: u64,
    /// Events in the sources not projected yet.
    pub lag: u64,
    /// Source partitions stopped at an event the projection failed on, and why.
    pub errors: Vec<String>,
    /// The last rebuild since the node started, if any.
    pub rebuild: Option<Rebuild>,
}

/// A view's rebuild.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Rebuild {
    /// `running`, `done` or `failed`.
    pub state: String,
    /// Events projected into the new table.
    pub events: u64,
    pub error: Option<String>,
}

/// `POST /v1/views/{view}/rebuild`'s answer.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RebuildStarted {
    pub view: String,
    /// `running`.
    pub rebuild: String,
}

impl From<weir_engine::ViewStatus> for ViewStatus {
    fn from(s: weir_engine::ViewStatus) -> ViewStatus {
        ViewStatus {
            name: s.name,
            function: s.function,
            store: s.store,
            sources: s.sources,
            events: s.events,
            changes: s.changes,
            lag: s.lag,
            errors: s.errors,
            rebuild: s.rebuild.map(|r| Rebuild {
                state: r.state,
                events: r.events,
                error: r.error,
            }),
        }
    }
}
