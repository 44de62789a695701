//! CQRS views (`[views.NAME]`): tables a projection function keeps from the events of
//! the view's source topics, in a view store (`weir-views`: the node's SQLite file or a
//! PostgreSQL database), queried over HTTP.
//!
//! **Architecture Invariant:** a view's progress (per source partition, the next offset
//! to project) lives in its store and moves only in the store transaction that applies
//! the row changes of the events before it (`ViewStore::apply`), so a projection resumed
//! after a crash, from that progress, neither loses nor doubles a change. A partition's
//! projection hands events to the function in offset order and never moves past one it
//! could not project: it stops there, says why in the view's status, and tries the same
//! event again (a deploy of a fixed function lets it go on).
//!
//! **On a fleet**, a view in a store the nodes share (PostgreSQL) is projected as units
//! (`view/NAME/TOPIC/PARTITION`, assigned like a pipeline's partitions): each partition by
//! the one member whose view of the fleet gives it, which reloads the partition's progress
//! from the store when it takes it. **Invariant:** a batch moves the progress from the
//! position its writer projected from, or the store refuses it whole
//! (`weir_views::Error::Moved`), so a stale owner, or a writer racing a rebuild's swap,
//! applies nothing and starts again from the store's progress. A view in the node's own
//! SQLite file is projected whole by every node.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use base64::Engine as _;
use serde::Serialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use weir_manifest::{ViewColumnType, ViewSpec, ViewStoreSpec};
use weir_views::{
    Advance, Column, ColumnType, Condition, Filter, Progress, Query, Row, RowChange, TableSpec,
    Value, ViewStore,
};
use weir_wasm::{CellValue, InstancePool};

use crate::consumer::{PartitionConsumer, StartFrom, resolve_start};
use crate::fleet::Units;
use crate::registry::{ActivePool, Registry};
use crate::{Error, Result, SharedLog};

/// Events a projection takes per store transaction.
const BATCH: usize = 256;
/// The longest pause before a failed event is tried again.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// The most rows one query returns.
pub const MAX_LIMIT: usize = 1000;
/// Rows a query returns when it names no limit.
pub const DEFAULT_LIMIT: usize = 100;

/// The node's views.
#[derive(Default)]
pub(crate) struct Views {
    views: BTreeMap<String, Arc<View>>,
}

struct View {
    name: String,
    table: String,
    spec: ViewSpec,
    table_spec: TableSpec,
    store: Arc<dyn ViewStore>,
    /// Per source partition, the next offset projected into the store (by this node: on
    /// a fleet sharing the store, what the store holds is the truth; see `shared`).
    positions: BTreeMap<(String, u32), watch::Sender<u64>>,
    /// Who projects which partition: on a fleet sharing the view's store, the member its
    /// view gives the unit; otherwise this node, every partition.
    units: Units,
    /// The view's units, one per partition in `positions`' order.
    unit_names: Vec<String>,
    health: Mutex<Health>,
    projector: Projector,
    /// Held around every write to the serving table; counts the swaps that replaced it,
    /// so a projection that read from the table before a swap starts again from its
    /// progress instead of writing on.
    epoch: tokio::sync::Mutex<u64>,
    rebuild: Mutex<Option<RebuildStatus>>,
    /// Each applied batch's changes, for live followers.
    changes: tokio::sync::broadcast::Sender<Arc<ViewChanges>>,
    /// Events written under an older schema version are projected upcast.
    schemas: Arc<crate::schemas::Schemas>,
}

/// The row changes of one applied batch, as live followers of a view get them.
#[derive(Debug, Clone, Serialize)]
pub struct ViewChanges {
    /// Where the view is after them: a consistency token (`TOPIC:PARTITION:OFFSET`).
    pub token: String,
    /// `upsert` or `delete`, and the columns the change names.
    pub changes: Vec<(String, serde_json::Map<String, serde_json::Value>)>,
    /// A rebuild replaced the view's table: a follower's copy no longer tells what it holds.
    #[serde(skip)]
    pub rebuilt: bool,
}

/// Batches a follower may fall behind by before its stream ends.
const FOLLOWER_BACKLOG: usize = 1024;

/// A view's last (or running) rebuild.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RebuildStatus {
    /// `running`, `done` or `failed`.
    pub state: String,
    /// Events projected into the new table.
    pub events: u64,
    pub error: Option<String>,
}

#[derive(Default)]
struct Health {
    events: u64,
    changes: u64,
    /// The event a partition is stopped at, and why.
    stuck: BTreeMap<(String, u32), String>,
}

/// How one view is doing (`weir status`).
#[derive(Debug, Clone, Serialize)]
pub struct ViewStatus {
    pub name: String,
    pub function: String,
    pub store: String,
    pub sources: Vec<String>,
    /// Events projected since the node started.
    pub events: u64,
    /// Row changes applied since the node started.
    pub changes: u64,
    /// Events in the sources not projected yet.
    pub lag: u64,
    /// Partitions stopped at an event the projection failed on, and why.
    pub errors: Vec<String>,
    /// The last rebuild, if one ran since the node started.
    pub rebuild: Option<RebuildStatus>,
}

/// A filter of a query, as sent: the engine types the value by the column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewFilter {
    pub column: String,
    /// `eq`, `lt`, `lte`, `gt`, `gte` or `prefix`.
    pub op: String,
    pub value: String,
}

/// A query of a view, as sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ViewRequest {
    pub filters: Vec<ViewFilter>,
    /// The column to sort on, and whether descending; none sorts by the key.
    pub sort: Option<(String, bool)>,
    pub limit: Option<usize>,
    /// The `next_page` of the page before.
    pub page: Option<String>,
    /// Consistency tokens (`TOPIC:PARTITION:OFFSET`): the view must have projected every
    /// event below OFFSET in that partition before it answers.
    pub consistency: Vec<String>,
    /// How long to wait for `consistency`.
    pub wait: Duration,
}

/// A page of a view.
#[derive(Debug, Clone, Serialize)]
pub struct ViewPage {
    pub view: String,
    pub rows: Vec<serde_json::Map<String, serde_json::Value>>,
    /// Pass it as `page` for the rows after these; none at the end.
    pub next_page: Option<String>,
}

fn column_type(ty: ViewColumnType) -> ColumnType {
    match ty {
        ViewColumnType::Text => ColumnType::Text,
        ViewColumnType::Integer => ColumnType::Integer,
        ViewColumnType::Real => ColumnType::Real,
        ViewColumnType::Boolean => ColumnType::Boolean,
        ViewColumnType::Json => ColumnType::Json,
    }
}

fn table_spec(spec: &ViewSpec) -> TableSpec {
    TableSpec {
        columns: spec
            .columns
            .iter()
            .map(|(name, ty)| Column {
                name: name.clone(),
                ty: column_type(*ty),
            })
            .collect(),
        key: spec.key.clone(),
        indexes: spec.indexes.clone(),
    }
}

fn cells(cells: Vec<(String, CellValue)>) -> Row {
    cells
        .into_iter()
        .map(|(name, value)| {
            let value = match value {
                CellValue::Null => Value::Null,
                CellValue::Text(s) => Value::Text(s),
                CellValue::Integer(i) => Value::Integer(i),
                CellValue::Real(f) => Value::Real(f),
                CellValue::Boolean(b) => Value::Boolean(b),
                CellValue::Json(s) => Value::Json(s),
            };
            (name, value)
        })
        .collect()
}

/// The stores the node's views use: one SQLite file, and one pool per PostgreSQL URL.
struct Stores {
    data_dir: std::path::PathBuf,
    sqlite: Option<Arc<dyn ViewStore>>,
    postgres: BTreeMap<String, Arc<dyn ViewStore>>,
}

impl Stores {
    async fn get(&mut self, spec: &ViewStoreSpec) -> Result<Arc<dyn ViewStore>> {
        Ok(match spec {
            ViewStoreSpec::Sqlite => match &self.sqlite {
                Some(store) => store.clone(),
                None => {
                    let path = self.data_dir.join("views.sqlite");
                    let store: Arc<dyn ViewStore> = Arc::new(
                        tokio::task::spawn_blocking(move || weir_views::SqliteStore::open(&path))
                            .await
                            .map_err(|e| Error::Task(e.to_string()))??,
                    );
                    self.sqlite = Some(store.clone());
                    store
                }
            },
            ViewStoreSpec::Postgres { url } => match self.postgres.get(url) {
                Some(store) => store.clone(),
                None => {
                    let store: Arc<dyn ViewStore> =
                        Arc::new(weir_views::PostgresStore::connect(url).await?);
                    self.postgres.insert(url.clone(), store.clone());
                    store
                }
            },
        })
    }
}

impl Views {
    /// Create every view's table (if new), read its progress and start a projection per
    /// source partition from there.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn start(
        specs: &BTreeMap<String, ViewSpec>,
        jobs: Option<(ViewSpec, crate::jobs::JobsProjection)>,
        data_dir: &std::path::Path,
        log: &SharedLog,
        registry: &Arc<Registry>,
        schemas: &Arc<crate::schemas::Schemas>,
        units: &Units,
        tasks: &TaskTracker,
        cancel: &CancellationToken,
    ) -> Result<Views> {
        let mut stores = Stores {
            data_dir: data_dir.to_owned(),
            sqlite: None,
            postgres: BTreeMap::new(),
        };
        let mut views = BTreeMap::new();
        let jobs = jobs.map(|(spec, projection)| {
            let name = weir_manifest::RouteSpec::JOBS_VIEW.to_owned();
            (name, spec, Some(Arc::new(projection)))
        });
        let declared = specs
            .iter()
            .map(|(name, spec)| (name.clone(), spec.clone(), None));
        for (name, spec, jobs) in declared.chain(jobs) {
            let (name, spec) = (&name, &spec);
            let projector = match jobs {
                Some(jobs) => Projector::Jobs(jobs),
                None => Projector::function(registry, name, spec)?,
            };
            let store = stores.get(&spec.store).await?;
            let table = ViewSpec::table(name);
            let table_spec = table_spec(spec);
            // A view declared with other columns, key or indexes than its table was made
            // with is projected again, from the start of its sources, into a new table.
            let shape = table_spec.shape();
            let mut reprojected = false;
            if let Some(was) = store.shape(&table).await?
                && was != shape
            {
                if let Some(indexes) = table_spec.indexes_if_only_they_differ(&was) {
                    tracing::info!(view = %name, was = ?indexes, now = ?table_spec.indexes, "the view's indexes changed; its table is reindexed in place");
                    store.reindex(&table, &indexes, &table_spec).await?;
                } else {
                    tracing::warn!(view = %name, was = %was, now = %shape, "the view's columns or key changed since its table was made; its table is dropped and the view projected again from the start of its sources");
                    store.drop_table(&table).await?;
                    reprojected = true;
                }
            }
            store.create(&table, &table_spec).await?;
            // A rebuild the node did not finish left its table behind (on a store the
            // fleet shares, another node's rebuild may be running: the next rebuild drops
            // it first).
            if !(units.is_fleet() && store.kind() == "postgres")
                && let Err(e) = store.drop_table(&rebuild_table(&table)).await
            {
                tracing::warn!(view = %name, error = %e, "cannot drop an unfinished rebuild's table");
            }
            let progress: BTreeMap<(String, u32), u64> = store
                .progress(&table)
                .await?
                .into_iter()
                .map(|p| ((p.topic, p.partition), p.next_offset))
                .collect();
            let mut positions = BTreeMap::new();
            for topic in &spec.sources {
                let info = crate::consumer::topic_info(log, topic).await?;
                for partition in 0..info.partitions {
                    let key = (topic.clone(), partition);
                    let start = match progress.get(&key) {
                        Some(next) => *next,
                        None => resolve_start(log, topic, partition, StartFrom::Earliest).await?,
                    };
                    if reprojected && start > 0 {
                        tracing::warn!(view = %name, %topic, partition, first_offset = start, "retention deleted this partition's events before the first one it holds: their rows are not in the view projected again");
                    }
                    positions.insert(key, watch::channel(start).0);
                }
            }
            // Every partition has a recorded progress from here on, which only a batch
            // projected from it moves (`Advance::from`).
            store
                .begin_progress(
                    &table,
                    positions
                        .iter()
                        .map(|((topic, partition), at)| Progress {
                            topic: topic.clone(),
                            partition: *partition,
                            next_offset: *at.borrow(),
                        })
                        .collect(),
                )
                .await?;
            // A store the fleet's nodes share is projected once, partition by partition;
            // a node's own file by every node.
            let units = match store.kind() {
                "postgres" => units.clone(),
                _ => Units::default(),
            };
            let unit_names = positions
                .keys()
                .map(|(topic, partition)| format!("view/{name}/{topic}/{partition}"))
                .collect();
            let view = Arc::new(View {
                name: name.clone(),
                table,
                spec: spec.clone(),
                table_spec,
                store,
                positions,
                units,
                unit_names,
                health: Mutex::default(),
                projector,
                epoch: tokio::sync::Mutex::new(0),
                rebuild: Mutex::new(None),
                changes: tokio::sync::broadcast::channel(FOLLOWER_BACKLOG).0,
                schemas: schemas.clone(),
            });
            for (index, (topic, partition)) in view.positions.keys().enumerate() {
                tasks.spawn(project_partition(
                    view.clone(),
                    log.clone(),
                    topic.clone(),
                    *partition,
                    index,
                    cancel.clone(),
                ));
            }
            tracing::info!(view = %name, store = view.store.kind(), sources = ?spec.sources, "view projections started");
            views.insert(name.clone(), view);
        }
        Ok(Views { views })
    }

    fn get(&self, name: &str) -> Result<&Arc<View>> {
        self.views.get(name).ok_or_else(|| Error::UnknownView {
            view: name.to_owned(),
            declared: self.views.keys().cloned().collect(),
        })
    }

    pub(crate) async fn status(&self, log: &SharedLog) -> Vec<ViewStatus> {
        let mut out = Vec::new();
        for view in self.views.values() {
            // On a fleet sharing the store, other members project some partitions: the
            // store's progress tells where each is.
            let stored = match view.shared() {
                true => tokio::time::timeout(STATUS_TIMEOUT, view.stored_progress())
                    .await
                    .ok()
                    .and_then(Result::ok),
                false => None,
            };
            let mut lag = 0;
            for (key, position) in &view.positions {
                let at = stored
                    .as_ref()
                    .and_then(|s| s.get(key).copied())
                    .unwrap_or(*position.borrow());
                if let Ok(offsets) = log.offsets(&key.0, key.1).await {
                    lag += offsets.end.saturating_sub(at);
                }
            }
            let health = view.health.lock().unwrap_or_else(PoisonError::into_inner);
            out.push(ViewStatus {
                name: view.name.clone(),
                function: match &view.projector {
                    Projector::Function(_) => view.spec.function.clone(),
                    // weir's own projection, not a function of the app.
                    Projector::Jobs(_) => "(weir: jobs)".to_owned(),
                },
                store: view.store.kind().to_owned(),
                sources: view.spec.sources.clone(),
                events: health.events,
                changes: health.changes,
                lag,
                errors: health
                    .stuck
                    .iter()
                    .map(|((topic, partition), why)| format!("{topic}/{partition}: {why}"))
                    .collect(),
                rebuild: view
                    .rebuild
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone(),
            });
        }
        out
    }

    /// A page of view `name`, once it has projected what `request.consistency` names.
    pub(crate) async fn query(&self, name: &str, request: ViewRequest) -> Result<ViewPage> {
        let view = self.get(name)?;
        let invalid = |reason: String| Error::InvalidViewQuery {
            view: name.to_owned(),
            reason,
        };
        let query = view.query(&request).map_err(invalid)?;
        let deadline = tokio::time::Instant::now() + request.wait;
        for token in &request.consistency {
            view.wait_for(token, deadline, request.wait).await?;
        }
        let page = view
            .store
            .query(&view.table, &view.table_spec, &query)
            .await?;
        Ok(ViewPage {
            view: name.to_owned(),
            rows: page
                .rows
                .iter()
                .map(|row| {
                    row.iter()
                        .map(|(name, value)| (name.clone(), value.to_json()))
                        .collect()
                })
                .collect(),
            next_page: page.last.map(|last| page_token(&query, &last)),
        })
    }

    /// The source partitions of view `name`, if it has that view.
    pub(crate) fn sources(&self, name: &str) -> Option<Vec<(String, u32)>> {
        let view = self.views.get(name)?;
        Some(view.positions.keys().cloned().collect())
    }

    pub(crate) fn names(&self) -> Vec<String> {
        self.views.keys().cloned().collect()
    }
}

/// The page token: the sort it was made for and the last row's sort and key columns, as
/// base64url JSON. A client that changes it only moves where its next page starts (values
/// are always bound as parameters), and one made for another sort is refused.
fn page_token(query: &Query, last: &Row) -> String {
    let row: serde_json::Map<String, serde_json::Value> = last
        .iter()
        .map(|(name, value)| (name.clone(), value.to_json()))
        .collect();
    let token = serde_json::json!({
        "sort": query.order_by,
        "desc": query.descending,
        "after": row,
    });
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(token.to_string())
}

/// What turns a view's events into row changes.
enum Projector {
    /// The view's projection function (its active version: a new one after a deploy).
    Function(ActivePool),
    /// weir's own view of long-running jobs (`crate::jobs`).
    Jobs(Arc<crate::jobs::JobsProjection>),
}

impl Projector {
    /// View `name`'s projection function, which must implement the projection world.
    fn function(registry: &Arc<Registry>, name: &str, spec: &ViewSpec) -> Result<Projector> {
        registry.active_in(
            &spec.function,
            weir_wasm::World::Projection,
            &format!("view {name:?}"),
        )?;
        Ok(Projector::Function(ActivePool::new(
            registry.clone(),
            &spec.function,
        )))
    }
}

/// A projector ready to run on the blocking pool.
enum Ready {
    Function(InstancePool),
    Jobs(Arc<crate::jobs::JobsProjection>),
}

impl Ready {
    fn project(&self, event: &crate::codec::LoggedEvent) -> Result<Vec<RowChange>, String> {
        match self {
            Ready::Function(pool) => pool
                .project(&event.event)
                .map(|changes| {
                    changes
                        .into_iter()
                        .map(|c| match c {
                            weir_wasm::RowChange::Upsert(row) => RowChange::Upsert(cells(row)),
                            weir_wasm::RowChange::Delete(row) => RowChange::Delete(cells(row)),
                        })
                        .collect()
                })
                .map_err(|e| e.to_string()),
            Ready::Jobs(jobs) => Ok(jobs.project(event)),
        }
    }
}

impl View {
    /// The projector as it is now.
    fn ready(&self) -> Result<Ready> {
        Ok(match &self.projector {
            Projector::Function(pool) => Ready::Function(pool.get()?),
            Projector::Jobs(jobs) => Ready::Jobs(jobs.clone()),
        })
    }

    /// A value for `column` from its text in a query.
    fn value(&self, column: &str, text: &str) -> Result<Value, String> {
        let bad = |what: &str| format!("{text:?} is not {what} (column {column:?})");
        Ok(match self.queryable(column)?.ty {
            ColumnType::Text => Value::Text(text.to_owned()),
            ColumnType::Integer => Value::Integer(text.parse().map_err(|_| bad("an integer"))?),
            ColumnType::Real => Value::Real(text.parse().map_err(|_| bad("a number"))?),
            ColumnType::Boolean => Value::Boolean(match text {
                "true" => true,
                "false" => false,
                _ => return Err(bad("true or false")),
            }),
            ColumnType::Json => unreachable!("queryable refuses json columns"),
        })
    }

    /// The column a query filters or sorts on: one of the view's, not a json one.
    fn queryable(&self, column: &str) -> Result<&Column, String> {
        match self.table_spec.column(column) {
            Some(c) if c.ty == ColumnType::Json => Err(format!(
                "{column:?} is a json column; queries filter and sort on the others"
            )),
            Some(c) => Ok(c),
            None => Err(format!(
                "{column:?} is not a column; columns: {:?}",
                self.table_spec
                    .columns
                    .iter()
                    .map(|c| &c.name)
                    .collect::<Vec<_>>()
            )),
        }
    }

    fn indexed(&self, column: &str) -> Result<(), String> {
        if self.table_spec.is_indexed(column) {
            Ok(())
        } else {
            let mut indexed: Vec<&String> = self.table_spec.indexes.iter().collect();
            indexed.extend(self.table_spec.key.first());
            Err(format!(
                "{column:?} has no index; filter and sort on {indexed:?} (add it to the view's indexes)"
            ))
        }
    }

    fn query(&self, request: &ViewRequest) -> Result<Query, String> {
        let mut filters = Vec::new();
        for f in &request.filters {
            let value = self.value(&f.column, &f.value)?;
            self.indexed(&f.column)?;
            let condition = match f.op.as_str() {
                "eq" => Condition::Eq(value),
                "lt" => Condition::Lt(value),
                "lte" => Condition::Le(value),
                "gt" => Condition::Gt(value),
                "gte" => Condition::Ge(value),
                "prefix" => match value {
                    Value::Text(text) => Condition::Prefix(text),
                    _ => {
                        return Err(format!(
                            "prefix applies to text columns; {:?} is not one",
                            f.column
                        ));
                    }
                },
                other => {
                    return Err(format!(
                        "{other:?} is not a filter; use eq, lt, lte, gt, gte or prefix"
                    ));
                }
            };
            filters.push(Filter {
                column: f.column.clone(),
                condition,
            });
        }
        let (order_by, descending) = match &request.sort {
            Some((column, descending)) => {
                self.queryable(column)?;
                self.indexed(column)?;
                (Some(column.clone()), *descending)
            }
            None => (None, false),
        };
        let limit = request.limit.unwrap_or(DEFAULT_LIMIT);
        if limit == 0 || limit > MAX_LIMIT {
            return Err(format!("limit must be 1 to {MAX_LIMIT}"));
        }
        let after = match &request.page {
            None => None,
            Some(token) => Some(self.decode_page(token, &order_by, descending)?),
        };
        Ok(Query {
            filters,
            order_by,
            descending,
            limit,
            after,
        })
    }

    fn decode_page(
        &self,
        token: &str,
        order_by: &Option<String>,
        descending: bool,
    ) -> Result<Row, String> {
        let bad = || "the page token is not one this view gave out".to_owned();
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token)
            .map_err(|_| bad())?;
        let token: serde_json::Value = serde_json::from_slice(&bytes).map_err(|_| bad())?;
        let sort = token
            .get("sort")
            .and_then(|s| s.as_str())
            .map(str::to_owned);
        let desc = token.get("desc").and_then(|d| d.as_bool()).unwrap_or(false);
        if &sort != order_by || desc != descending {
            return Err(
                "the page token was made for another sort; send the same sort with it".to_owned(),
            );
        }
        let after = token
            .get("after")
            .and_then(|a| a.as_object())
            .ok_or_else(bad)?;
        let mut row = Row::new();
        for (name, value) in after {
            let column = self.table_spec.column(name).ok_or_else(bad)?;
            let value = match (column.ty, value) {
                (_, serde_json::Value::Null) => Value::Null,
                (ColumnType::Text, serde_json::Value::String(s)) => Value::Text(s.clone()),
                (ColumnType::Integer, v) => Value::Integer(v.as_i64().ok_or_else(bad)?),
                (ColumnType::Real, v) => Value::Real(v.as_f64().ok_or_else(bad)?),
                (ColumnType::Boolean, v) => Value::Boolean(v.as_bool().ok_or_else(bad)?),
                _ => return Err(bad()),
            };
            row.insert(name.clone(), value);
        }
        Ok(row)
    }

    /// Wait until the view has projected what `token` names, at most `wait`.
    async fn wait_for(
        &self,
        token: &str,
        deadline: tokio::time::Instant,
        wait: Duration,
    ) -> Result<()> {
        let invalid = |reason: String| Error::InvalidViewQuery {
            view: self.name.clone(),
            reason,
        };
        let mut parts = token.rsplitn(3, ':');
        let (offset, partition, topic) = (parts.next(), parts.next(), parts.next());
        let (Some(offset), Some(partition), Some(topic)) = (offset, partition, topic) else {
            return Err(invalid(format!(
                "{token:?} is not a consistency token (TOPIC:PARTITION:OFFSET)"
            )));
        };
        let (Ok(offset), Ok(partition)) = (offset.parse::<u64>(), partition.parse::<u32>()) else {
            return Err(invalid(format!(
                "{token:?} is not a consistency token (TOPIC:PARTITION:OFFSET)"
            )));
        };
        let Some(position) = self.positions.get(&(topic.to_owned(), partition)) else {
            return Err(invalid(format!(
                "{token:?} names a partition of none of the view's sources {:?}",
                self.spec.sources
            )));
        };
        let key = (topic.to_owned(), partition);
        let reached = tokio::time::timeout_at(deadline, async {
            if !self.shared() {
                let mut rx = position.subscribe();
                return rx.wait_for(|at| *at >= offset).await.is_ok();
            }
            // On a fleet sharing the store, the store's progress is the truth: another
            // member may project the partition, and a rebuild's swap on another node may
            // have moved it back below this node's own position.
            loop {
                if let Ok(stored) = self.stored_progress().await
                    && stored.get(&key).is_some_and(|at| *at >= offset)
                {
                    return true;
                }
                tokio::time::sleep(STORE_POLL).await;
            }
        })
        .await;
        match reached {
            Ok(true) => Ok(()),
            _ => Err(Error::ViewBehind {
                view: self.name.clone(),
                token: token.to_owned(),
                at: *position.borrow(),
                waited_ms: wait.as_millis() as u64,
            }),
        }
    }

    /// Whether other members project some of this view's partitions into its store.
    fn shared(&self) -> bool {
        self.units.is_fleet()
    }

    /// The progress the store holds, per source partition.
    async fn stored_progress(&self) -> weir_views::Result<BTreeMap<(String, u32), u64>> {
        Ok(self
            .store
            .progress(&self.table)
            .await?
            .into_iter()
            .map(|p| ((p.topic, p.partition), p.next_offset))
            .collect())
    }

    /// Moves this node's position in a partition to the store's progress. A store that
    /// records none (its table made again by another node) starts the partition from its
    /// earliest event.
    async fn reload(&self, log: &SharedLog, topic: &str, partition: u32) -> Result<(), String> {
        let key = (topic.to_owned(), partition);
        let read = |e: weir_views::Error| format!("cannot read the view's progress: {e}");
        let at = match self.stored_progress().await.map_err(read)?.get(&key) {
            Some(at) => *at,
            None => {
                let earliest = resolve_start(log, topic, partition, StartFrom::Earliest)
                    .await
                    .map_err(|e| e.to_string())?;
                let first = Progress {
                    topic: topic.to_owned(),
                    partition,
                    next_offset: earliest,
                };
                self.store
                    .begin_progress(&self.table, vec![first])
                    .await
                    .map_err(read)?;
                self.stored_progress()
                    .await
                    .map_err(read)?
                    .get(&key)
                    .copied()
                    .unwrap_or(earliest)
            }
        };
        self.positions[&key].send_replace(at);
        Ok(())
    }

    fn stuck(&self, topic: &str, partition: u32, why: Option<String>) {
        let mut health = self.health.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (topic.to_owned(), partition);
        match why {
            Some(why) => {
                health.stuck.insert(key, why);
            }
            None => {
                health.stuck.remove(&key);
            }
        }
    }
}

/// What projecting a batch came to: the changes of the events before `upto`, and why the
/// event at `upto` failed, if one did.
struct Projected {
    changes: Vec<RowChange>,
    upto: u64,
    events: u64,
    failed: Option<String>,
}

/// Project `records` in order (upcast where `upcasting` says), stopping at the first that
/// fails.
fn project(
    projector: &Ready,
    upcasting: Option<&crate::schemas::Upcasting>,
    topic: &str,
    records: Vec<weir_log::StoredRecord>,
) -> Projected {
    let mut out = Projected {
        changes: Vec::new(),
        upto: records.first().map_or(0, |r| r.offset),
        events: 0,
        failed: None,
    };
    for record in records {
        let offset = record.offset;
        let mut event = match crate::codec::decode_event(topic, record) {
            Ok(event) => event,
            // Not an event: no job's (weir's own view must not stop for it).
            Err(_) if matches!(projector, Ready::Jobs(_)) => {
                out.upto = offset + 1;
                out.events += 1;
                continue;
            }
            Err(e) => {
                out.failed = Some(format!("offset {offset}: {e}"));
                return out;
            }
        };
        if let Some(upcasting) = upcasting {
            match upcasting.upcast(&event.event) {
                Ok(Some(upcast)) => event.event = upcast,
                Ok(None) => {}
                Err(e) => {
                    out.failed = Some(format!("offset {offset} (event {:?}): {e}", event.event.id));
                    return out;
                }
            }
        }
        match projector.project(&event) {
            Ok(changes) => {
                out.changes.extend(changes);
                out.upto = offset + 1;
                out.events += 1;
            }
            Err(e) => {
                out.failed = Some(format!("offset {offset} (event {:?}): {e}", event.event.id));
                return out;
            }
        }
    }
    out
}

/// How a projection's run ended without an error.
enum Flow {
    Cancelled,
    /// A rebuild replaced the table: start again from the new table's progress.
    Restart,
    /// The fleet gave the partition to another member.
    Released,
    /// Another writer moved the store's progress: start again from it.
    Moved,
}

/// How often a node polls a shared store's progress for a consistency token.
const STORE_POLL: Duration = Duration::from_millis(50);
/// How often an idle projection on a shared store checks that the store's progress is
/// still its own (a rebuild on another node may have moved it).
const IDLE_CHECK: Duration = Duration::from_secs(2);
/// The pause after a batch the store refused because another writer moved the progress.
const MOVED_PAUSE: Duration = Duration::from_millis(100);
/// How long `weir status` waits for a shared store's progress.
const STATUS_TIMEOUT: Duration = Duration::from_secs(2);

/// Keep one source partition (unit `index` of the view) of `view` projected until
/// `cancel` fires: while this node owns the unit, on a fleet sharing the view's store.
async fn project_partition(
    view: Arc<View>,
    log: SharedLog,
    topic: String,
    partition: u32,
    index: usize,
    cancel: CancellationToken,
) {
    let position = view.positions[&(topic.clone(), partition)].clone();
    loop {
        let Some(lease) = view.units.acquire(&view.unit_names, index, &cancel).await else {
            return;
        };
        let released = lease.released();
        // The previous owner moved the progress: go on from where it got to.
        let mut reload = view.shared();
        let mut backoff = Duration::from_millis(100);
        loop {
            let ran = match reload {
                true => view.reload(&log, &topic, partition).await,
                false => Ok(()),
            };
            let ran = match ran {
                Ok(()) => {
                    project_from(&view, &log, &topic, partition, &position, &cancel, released).await
                }
                Err(why) => Err(why),
            };
            reload = false;
            match ran {
                Ok(Flow::Cancelled) => return,
                Ok(Flow::Released) => break,
                Ok(Flow::Restart) => {
                    view.stuck(&topic, partition, None);
                    backoff = Duration::from_millis(100);
                }
                Ok(Flow::Moved) => {
                    tracing::info!(view = %view.name, %topic, partition, "another writer moved the view's progress; projecting on from the store's");
                    reload = true;
                    // Two nodes whose views of the fleet differ for a moment both project
                    // the partition: each refused batch costs a pause, not a spin.
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = released.cancelled() => break,
                        _ = tokio::time::sleep(MOVED_PAUSE) => {}
                    }
                }
                Err(why) => {
                    tracing::warn!(view = %view.name, %topic, partition, error = %why, "the view's projection stopped at an event; trying it again");
                    view.stuck(&topic, partition, Some(why));
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = released.cancelled() => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    reload = view.shared();
                }
            }
        }
        view.stuck(&topic, partition, None);
    }
}

/// Project from the partition's position until cancelled, restarted by a rebuild, or an
/// event fails (its reason).
async fn project_from(
    view: &Arc<View>,
    log: &SharedLog,
    topic: &str,
    partition: u32,
    position: &watch::Sender<u64>,
    cancel: &CancellationToken,
    released: &CancellationToken,
) -> Result<Flow, String> {
    // The epoch first, then the position: a swap changes the position before the epoch.
    let epoch = *view.epoch.lock().await;
    let start = *position.borrow();
    let name = format!("view {}", view.name);
    let mut consumer = PartitionConsumer::open_at(log, topic, partition, name, start)
        .await
        .map_err(|e| e.to_string())?;
    loop {
        if cancel.is_cancelled() {
            return Ok(Flow::Cancelled);
        }
        if released.is_cancelled() {
            return Ok(Flow::Released);
        }
        let records = consumer.poll(BATCH).await.map_err(|e| e.to_string())?;
        let records = if records.is_empty() {
            // Caught up: what stopped the partition before (a read that failed) is behind
            // it, though no event came since.
            view.stuck(topic, partition, None);
            let interrupt = async {
                match view.shared() {
                    true => {
                        tokio::select! {
                            _ = released.cancelled() => {}
                            _ = tokio::time::sleep(IDLE_CHECK) => {}
                        }
                    }
                    false => released.cancelled().await,
                }
            };
            match consumer
                .next_batch(BATCH, cancel, interrupt)
                .await
                .map_err(|e| e.to_string())?
            {
                Some(records) => records,
                None if cancel.is_cancelled() => return Ok(Flow::Cancelled),
                None if released.is_cancelled() => return Ok(Flow::Released),
                None => {
                    // Idle on a shared store: a rebuild on another node may have moved
                    // the progress below this node's position.
                    let stored = view.stored_progress().await.map_err(|e| e.to_string())?;
                    let key = (topic.to_owned(), partition);
                    if stored.get(&key) != Some(&*position.borrow()) {
                        return Ok(Flow::Moved);
                    }
                    continue;
                }
            }
        } else {
            records
        };
        let projected = project_batch(view, topic, records).await?;
        let guard = view.epoch.lock().await;
        if *guard != epoch {
            return Ok(Flow::Restart);
        }
        let failed = projected.failed.clone();
        let (from, upto) = (*position.borrow(), projected.upto);
        match commit(view, topic, partition, projected, position).await {
            Ok(()) => {}
            // A row the store refuses: the batch's events one at a time, to apply those
            // before the one that made it and stop there.
            Err(weir_views::Error::Invalid(_)) => {
                match apply_one_by_one(view, log, topic, partition, from, upto, position).await {
                    Err(OneByOne::Moved) => return Ok(Flow::Moved),
                    Err(OneByOne::Failed(why)) => return Err(why),
                    Ok(()) => {}
                }
            }
            Err(weir_views::Error::Moved(_)) => return Ok(Flow::Moved),
            Err(e) => return Err(e.to_string()),
        }
        drop(guard);
        if let Some(why) = failed {
            return Err(why);
        }
        view.stuck(topic, partition, None);
    }
}

/// Apply a projected batch to the serving table (the caller holds the epoch), then move
/// the partition's position, count its events and hand its changes to the followers.
async fn commit(
    view: &View,
    topic: &str,
    partition: u32,
    projected: Projected,
    position: &watch::Sender<u64>,
) -> weir_views::Result<()> {
    let followed = (view.changes.receiver_count() > 0 && !projected.changes.is_empty())
        .then(|| projected.changes.clone());
    let upto = projected.upto;
    let from = *position.borrow();
    apply(
        view,
        &view.table,
        topic,
        partition,
        projected.changes,
        Some(from),
        upto,
    )
    .await?;
    position.send_replace(upto);
    view.health
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .events += projected.events;
    if let Some(changes) = followed {
        let json = |row: Row| {
            row.into_iter()
                .map(|(name, value)| (name, value.to_json()))
                .collect()
        };
        let _ = view.changes.send(Arc::new(ViewChanges {
            token: format!("{topic}:{partition}:{upto}"),
            changes: changes
                .into_iter()
                .map(|change| match change {
                    RowChange::Upsert(row) => ("upsert".to_owned(), json(row)),
                    RowChange::Delete(row) => ("delete".to_owned(), json(row)),
                })
                .collect(),
            rebuilt: false,
        }));
    }
    Ok(())
}

/// Project `records` on the blocking pool.
async fn project_batch(
    view: &View,
    topic: &str,
    records: Vec<weir_log::StoredRecord>,
) -> Result<Projected, String> {
    let projector = view.ready().map_err(|e| e.to_string())?;
    let upcasting = view.schemas.upcasting();
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || project(&projector, upcasting.as_ref(), &topic, records))
        .await
        .map_err(|e| e.to_string())
}

/// Apply `changes` to `table` and move its progress in `topic`/`partition` from `from`
/// (any, if none) to `upto`.
async fn apply(
    view: &View,
    table: &str,
    topic: &str,
    partition: u32,
    changes: Vec<RowChange>,
    from: Option<u64>,
    upto: u64,
) -> weir_views::Result<()> {
    let count = changes.len() as u64;
    view.store
        .apply(
            table,
            &view.table_spec,
            changes,
            vec![Advance {
                topic: topic.to_owned(),
                partition,
                from,
                to: upto,
            }],
        )
        .await?;
    view.health
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .changes += count;
    Ok(())
}

/// After a batch the store refused (the caller holds the epoch): project and apply the
/// events of `from..until` one at a time, so the events before the bad one land; the bad
/// one's offset and reason, or nothing if every one landed this time.
async fn apply_one_by_one(
    view: &View,
    log: &SharedLog,
    topic: &str,
    partition: u32,
    from: u64,
    until: u64,
    position: &watch::Sender<u64>,
) -> Result<(), OneByOne> {
    let name = format!("view {}", view.name);
    let mut consumer = PartitionConsumer::open_at(log, topic, partition, name, from)
        .await
        .map_err(|e| OneByOne::Failed(e.to_string()))?
        .until(until);
    loop {
        let records = consumer
            .poll(1)
            .await
            .map_err(|e| OneByOne::Failed(e.to_string()))?;
        let Some(offset) = records.first().map(|r| r.offset) else {
            return Ok(());
        };
        let projected = project_batch(view, topic, records)
            .await
            .map_err(OneByOne::Failed)?;
        if let Some(why) = projected.failed {
            return Err(OneByOne::Failed(why));
        }
        match commit(view, topic, partition, projected, position).await {
            Ok(()) => {}
            Err(weir_views::Error::Moved(_)) => return Err(OneByOne::Moved),
            Err(e) => return Err(OneByOne::Failed(format!("offset {offset}: {e}"))),
        }
    }
}

/// How [`apply_one_by_one`] stopped short.
enum OneByOne {
    /// At an event, for this reason.
    Failed(String),
    /// Another writer moved the progress.
    Moved,
}

/// Project `topic`/`partition` from `from` into `table` up to the partition's end now;
/// the offset after the last event projected.
async fn project_to_end(
    view: &View,
    log: &SharedLog,
    table: &str,
    topic: &str,
    partition: u32,
    from: u64,
    events: &mut u64,
) -> Result<u64, String> {
    let name = format!("rebuild of view {}", view.name);
    let mut consumer = PartitionConsumer::open_at(log, topic, partition, name, from)
        .await
        .map_err(|e| e.to_string())?;
    let mut next = from;
    loop {
        let records = consumer.poll(BATCH).await.map_err(|e| e.to_string())?;
        if records.is_empty() {
            return Ok(next.max(consumer.position()));
        }
        let projected = project_batch(view, topic, records).await?;
        if let Some(why) = projected.failed {
            return Err(why);
        }
        // The rebuild's table has one writer, this task.
        apply(
            view,
            table,
            topic,
            partition,
            projected.changes,
            None,
            projected.upto,
        )
        .await
        .map_err(|e| e.to_string())?;
        *events += projected.events;
        next = projected.upto;
        if let Some(status) = view
            .rebuild
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_mut()
        {
            status.events = *events;
        }
    }
}

/// The table a rebuild of the view whose table is `table` projects into.
fn rebuild_table(table: &str) -> String {
    format!("{table}__rebuild")
}

/// Project every source from its earliest offset into a new table while the view serves
/// from its own, then, with the view's writes held, catch up to the end and swap the new
/// table in (rows, indexes and progress in one store transaction). Cancelling stops it
/// only before the writes are held: the swap and what follows it always run to the end.
async fn rebuild(
    view: Arc<View>,
    log: SharedLog,
    cancel: CancellationToken,
) -> Result<u64, String> {
    let table = rebuild_table(&view.table);
    let stopped = || "the node stopped; rebuild the view again".to_owned();
    view.store
        .drop_table(&table)
        .await
        .map_err(|e| e.to_string())?;
    view.store
        .create(&table, &view.table_spec)
        .await
        .map_err(|e| e.to_string())?;
    let mut events = 0;
    let mut next = BTreeMap::new();
    for (topic, partition) in view.positions.keys() {
        next.insert(
            (topic.clone(), *partition),
            resolve_start(&log, topic, *partition, StartFrom::Earliest)
                .await
                .map_err(|e| e.to_string())?,
        );
    }
    // Every partition gets a progress in the new table, so the swap gives each one (an
    // owner on another node then finds its start moved, even for a partition with no
    // events, and projects on from the swapped table's).
    view.store
        .begin_progress(
            &table,
            next.iter()
                .map(|((topic, partition), at)| Progress {
                    topic: topic.clone(),
                    partition: *partition,
                    next_offset: *at,
                })
                .collect(),
        )
        .await
        .map_err(|e| e.to_string())?;
    // Twice while the view serves (the second pass takes what came during the first),
    // then once more with its writes held.
    for _ in 0..2 {
        for ((topic, partition), from) in next.iter_mut() {
            *from = tokio::select! {
                r = project_to_end(&view, &log, &table, topic, *partition, *from, &mut events) => r?,
                _ = cancel.cancelled() => return Err(stopped()),
            };
        }
    }
    let mut epoch = view.epoch.lock().await;
    let mut result = Ok(());
    for ((topic, partition), from) in next.iter_mut() {
        match project_to_end(&view, &log, &table, topic, *partition, *from, &mut events).await {
            Ok(end) => *from = end,
            Err(why) => {
                result = Err(why);
                break;
            }
        }
    }
    if result.is_ok() {
        result = view
            .store
            .swap(&table, &view.table, &view.table_spec)
            .await
            .map_err(|e| e.to_string());
    }
    match &result {
        Ok(()) => {
            for (key, at) in &next {
                view.positions[key].send_replace(*at);
            }
        }
        Err(_) => {
            // The swap may have happened (a commit whose answer was lost): the live tasks
            // start again from whatever progress the serving table holds now.
            if let Ok(progress) = view.store.progress(&view.table).await {
                for p in progress {
                    if let Some(position) = view.positions.get(&(p.topic, p.partition)) {
                        position.send_replace(p.next_offset);
                    }
                }
            }
        }
    }
    *epoch += 1;
    drop(epoch);
    let _ = view.changes.send(Arc::new(ViewChanges {
        token: String::new(),
        changes: Vec::new(),
        rebuilt: true,
    }));
    result.map(|()| events)
}

impl crate::Node {
    /// A page of view `name`; see [`ViewRequest`].
    pub async fn view_query(&self, name: &str, request: ViewRequest) -> Result<ViewPage> {
        self.views.query(name, request).await
    }

    /// The declared views.
    pub fn view_names(&self) -> Vec<String> {
        self.views.names()
    }

    /// Follow view `name`'s changes as they are applied, from now on. The stream ends with
    /// an error if its reader falls more than 1,024 batches behind (query the view again,
    /// then follow it again).
    pub fn follow_view(
        &self,
        name: &str,
    ) -> Result<impl futures::Stream<Item = Result<Arc<ViewChanges>>> + Send + use<>> {
        use futures::StreamExt as _;
        let view = self.views.get(name)?;
        let name = name.to_owned();
        let stream = tokio_stream::wrappers::BroadcastStream::new(view.changes.subscribe()).scan(
            false,
            move |ended, item| {
                let out = match item {
                    _ if *ended => None,
                    Ok(changes) if changes.rebuilt => {
                        *ended = true;
                        Some(Err(Error::ViewRebuilt { view: name.clone() }))
                    }
                    Ok(changes) => Some(Ok(changes)),
                    Err(tokio_stream::wrappers::errors::BroadcastStreamRecvError::Lagged(n)) => {
                        *ended = true;
                        Some(Err(Error::ViewBehind {
                            view: name.clone(),
                            token: format!("the live stream ({n} batches of changes missed)"),
                            at: 0,
                            waited_ms: 0,
                        }))
                    }
                };
                std::future::ready(out)
            },
        );
        Ok(stream)
    }

    /// Start rebuilding view `name` from its sources' earliest events into a new table
    /// that replaces the serving one when it has caught up; `weir status` follows it.
    pub fn rebuild_view(&self, name: &str) -> Result<()> {
        let view = self.views.get(name)?.clone();
        {
            let mut status = view.rebuild.lock().unwrap_or_else(PoisonError::into_inner);
            if status.as_ref().is_some_and(|s| s.state == "running") {
                return Err(Error::RebuildRunning {
                    view: name.to_owned(),
                });
            }
            *status = Some(RebuildStatus {
                state: "running".into(),
                events: 0,
                error: None,
            });
        }
        let log = self.log.clone();
        let cancel = self.cancel.clone();
        self.tasks.spawn(async move {
            let result = rebuild(view.clone(), log, cancel).await;
            if result.is_err() {
                // What the failed rebuild projected is of no use: drop it (best effort).
                let _ = view.store.drop_table(&rebuild_table(&view.table)).await;
            }
            let mut status = view.rebuild.lock().unwrap_or_else(PoisonError::into_inner);
            *status = Some(match result {
                Ok(events) => {
                    tracing::info!(view = %view.name, events, "view rebuilt and swapped in");
                    RebuildStatus {
                        state: "done".into(),
                        events,
                        error: None,
                    }
                }
                Err(why) => {
                    tracing::warn!(view = %view.name, error = %why, "view rebuild failed; the view serves its old table");
                    RebuildStatus {
                        state: "failed".into(),
                        events: status.as_ref().map_or(0, |s| s.events),
                        error: Some(why),
                    }
                }
            });
        });
        Ok(())
    }
}
