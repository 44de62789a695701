//! View stores: the tables CQRS views are projected into, and the projection's progress.
//!
//! A [`ViewStore`] keeps each view in a table of its own, and each view's progress (per
//! source topic and partition, the next offset to project) in the store's
//! `weir_view_progress` table. **Architecture Invariant:** [`ViewStore::apply`] writes a
//! batch's row changes and the progress that covers them in one transaction of the store,
//! so after a crash a view has every row change up to its recorded progress and none
//! after: a projection resumed from the progress neither loses nor doubles a row.
//!
//! Two implementations pass one suite (`tests.rs`): [`SqliteStore`] (embedded, one file,
//! the default) and [`PostgresStore`] (a PostgreSQL database several nodes can share).
//!
//! Names of tables and columns are checked ([`check_name`]: `[a-z_][a-z0-9_]{0,62}`) and
//! always double-quoted; values are always bound as parameters, never spliced into SQL.

mod postgres;
mod sql;
mod sqlite;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use async_trait::async_trait;

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

/// The type of a view's column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    Text,
    Integer,
    Real,
    Boolean,
    /// JSON text (`jsonb` in PostgreSQL).
    Json,
}

impl ColumnType {
    pub fn name(self) -> &'static str {
        match self {
            ColumnType::Text => "text",
            ColumnType::Integer => "integer",
            ColumnType::Real => "real",
            ColumnType::Boolean => "boolean",
            ColumnType::Json => "json",
        }
    }
}

/// A column of a view's table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub ty: ColumnType,
}

/// A view's table: its columns, its primary key (one or more columns, never null) and
/// the columns with an index of their own (the ones queries may filter and sort on,
/// besides the key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSpec {
    pub columns: Vec<Column>,
    pub key: Vec<String>,
    pub indexes: Vec<String>,
}

impl TableSpec {
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// The table's shape as one line (columns with types, key, indexes), recorded with the
    /// table: a view whose declaration no longer matches the table it left is projected
    /// again into a new one.
    pub fn shape(&self) -> String {
        let columns: Vec<String> = self
            .columns
            .iter()
            .map(|c| format!("{}:{}", c.name, c.ty.name()))
            .collect();
        // Indexes in any order are the same indexes.
        let mut indexes = self.indexes.clone();
        indexes.sort();
        format!(
            "columns={};key={};indexes={}",
            columns.join(","),
            self.key.join(","),
            indexes.join(",")
        )
    }

    /// The indexes of a table whose recorded shape is `was`, if it differs from this spec
    /// in its indexes at most (same columns, types and key): such a table is reindexed in
    /// place, not projected again.
    pub fn indexes_if_only_they_differ(&self, was: &str) -> Option<Vec<String>> {
        const INDEXES: &str = ";indexes=";
        let shape = self.shape();
        let core = &shape[..shape.find(INDEXES)?];
        let (was_core, was_indexes) = was.split_once(INDEXES)?;
        (was_core == core).then(|| {
            was_indexes
                .split(',')
                .filter(|i| !i.is_empty())
                .map(str::to_owned)
                .collect()
        })
    }

    /// Whether queries may filter or sort on `name`.
    pub fn is_indexed(&self, name: &str) -> bool {
        self.key.first().is_some_and(|k| k == name) || self.indexes.iter().any(|i| i == name)
    }

    /// Problems with the spec itself: names, duplicates, a key or index that is not a
    /// column.
    pub fn check(&self) -> Result<()> {
        let mut seen = std::collections::BTreeSet::new();
        for c in &self.columns {
            check_name(&c.name)?;
            if !seen.insert(&c.name) {
                return Err(Error::Invalid(format!(
                    "column {:?} is declared twice",
                    c.name
                )));
            }
        }
        if self.key.is_empty() {
            return Err(Error::Invalid(
                "a view needs a key: one or more columns".into(),
            ));
        }
        for name in self.key.iter().chain(&self.indexes) {
            if self.column(name).is_none() {
                return Err(Error::Invalid(format!(
                    "{name:?} is a key or index column but not a column of the view"
                )));
            }
        }
        Ok(())
    }
}

/// A column's value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Text(String),
    Integer(i64),
    Real(f64),
    Boolean(bool),
    /// JSON text.
    Json(String),
}

impl Value {
    /// The value as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Null => serde_json::Value::Null,
            Value::Text(s) => serde_json::Value::String(s.clone()),
            Value::Integer(i) => serde_json::Value::from(*i),
            Value::Real(f) => serde_json::Number::from_f64(*f)
                .map_or(serde_json::Value::Null, serde_json::Value::Number),
            Value::Boolean(b) => serde_json::Value::Bool(*b),
            Value::Json(text) => serde_json::from_str(text).unwrap_or(serde_json::Value::Null),
        }
    }
}

/// A row: column name to value (columns left out are null on insert).
pub type Row = BTreeMap<String, Value>;

/// What a projection does to a view for one event.
#[derive(Debug, Clone, PartialEq)]
pub enum RowChange {
    /// Insert the row, or replace the one with the same key.
    Upsert(Row),
    /// Delete the row with this key (its key columns; others are ignored).
    Delete(Row),
}

/// A move of a view's progress in one partition, made by [`ViewStore::apply`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advance {
    pub topic: String,
    pub partition: u32,
    /// The progress the writer projected from: when the store holds another (a writer
    /// on another node moved it), or none ([`ViewStore::begin_progress`] records a
    /// partition's first), the whole transaction is refused with [`Error::Moved`]. None
    /// records `to` whatever the progress was (a table with one writer).
    pub from: Option<u64>,
    /// The next offset to project.
    pub to: u64,
}

/// How far a view has projected one partition of a source topic.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Progress {
    pub topic: String,
    pub partition: u32,
    /// The next offset to project.
    pub next_offset: u64,
}

/// A condition on one column.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    Eq(Value),
    Lt(Value),
    Le(Value),
    Gt(Value),
    Ge(Value),
    /// Text starting with this.
    Prefix(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    pub column: String,
    pub condition: Condition,
}

/// A query of a view: filters on indexed columns (all must hold), one sort column (an
/// indexed one; ties broken by the key), a page size, and where the page starts (the
/// `last` row of the page before).
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub filters: Vec<Filter>,
    pub order_by: Option<String>,
    pub descending: bool,
    pub limit: usize,
    pub after: Option<Row>,
}

/// A page of rows; `last` (the sort and key columns of the last row) when more may follow.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub rows: Vec<Row>,
    pub last: Option<Row>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A bad spec, row or query: sending it again fails again.
    #[error("{0}")]
    Invalid(String),
    /// The store failed (a connection, a disk, a constraint the spec did not foresee).
    #[error("view store ({store}): {message}")]
    Store {
        store: &'static str,
        message: String,
    },
    /// Another writer moved the progress an [`Advance`] started from: nothing was applied.
    #[error("{0}")]
    Moved(String),
}

impl Error {
    /// The error of an [`Advance`] whose `from` the store does not hold.
    pub fn moved(table: &str, advance: &Advance) -> Error {
        Error::Moved(format!(
            "the progress of view table {table:?} in {}/{} is no longer {} (another writer moved it); nothing was applied",
            advance.topic,
            advance.partition,
            advance.from.unwrap_or_default()
        ))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A table or column name: 1 to 63 of a-z, 0-9 and `_`, not starting with a digit (the
/// same in SQLite and PostgreSQL, always quoted).
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !name.as_bytes()[0].is_ascii_digit();
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "{name:?} is not a valid table or column name; use 1 to 63 of a-z, 0-9 and '_', not starting with a digit"
        )))
    }
}

/// The shape of a table made before shapes were recorded: it matches no declaration.
pub const UNKNOWN_SHAPE: &str = "unknown (made before weir recorded table shapes)";

/// Where views are kept.
#[async_trait]
pub trait ViewStore: Send + Sync + 'static {
    /// `sqlite` or `postgres`.
    fn kind(&self) -> &'static str;
    /// Create `table` with `spec` (its indexes too) if it does not exist, and record its
    /// shape ([`TableSpec::shape`]) if none is recorded.
    async fn create(&self, table: &str, spec: &TableSpec) -> Result<()>;
    /// The shape recorded for `table` when it was created; none for a table that does not
    /// exist, [`UNKNOWN_SHAPE`] for one made before shapes were recorded.
    async fn shape(&self, table: &str) -> Result<Option<String>>;
    /// Give `table`, whose indexes are `was` (from its recorded shape), the indexes of
    /// `spec` (same columns and key), and record `spec`'s shape, in one transaction.
    async fn reindex(&self, table: &str, was: &[String], spec: &TableSpec) -> Result<()>;
    /// Drop `table`, its progress and its shape, if they exist.
    async fn drop_table(&self, table: &str) -> Result<()>;
    /// Apply `changes` in order and move the progress as `advances` say, in one
    /// transaction: all of it, or nothing when an advance's `from` is not the store's
    /// ([`Error::Moved`]).
    async fn apply(
        &self,
        table: &str,
        spec: &TableSpec,
        changes: Vec<RowChange>,
        advances: Vec<Advance>,
    ) -> Result<()>;
    /// `table`'s recorded progress, sorted.
    async fn progress(&self, table: &str) -> Result<Vec<Progress>>;
    /// Records `progress` for each of its partitions that has none yet (one transaction);
    /// an [`Advance`] with a `from` moves only a recorded progress.
    async fn begin_progress(&self, table: &str, progress: Vec<Progress>) -> Result<()>;
    /// A page of `table`'s rows.
    async fn query(&self, table: &str, spec: &TableSpec, query: &Query) -> Result<Page>;
    /// Replace `to` by `from` (rows, indexes, progress and shape; both have `spec`) in one
    /// transaction: a rebuilt view takes the place of the one that served meanwhile.
    async fn swap(&self, from: &str, to: &str, spec: &TableSpec) -> Result<()>;
}
