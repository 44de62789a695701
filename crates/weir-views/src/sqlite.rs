//! Views in an embedded SQLite database (one file), through `rusqlite` on the blocking
//! pool. WAL mode with `synchronous = NORMAL`: a power loss may lose the last
//! transactions, rows and progress together, which the projection then does again.
//!
//! Three connections: the writer; a query-only reader, so queries do not wait for
//! commits; and a checkpointer. Checkpoints (copying the WAL into the database file, with
//! its fsyncs) run on a thread of their own, not in the commit that crosses SQLite's
//! automatic threshold: that commit would otherwise take milliseconds, and every
//! projection waiting behind it, which was most of the view lag's tail
//! (`weir bench entity`).

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use rusqlite::types::Value as Sql;
use rusqlite::{Connection, OptionalExtension, params_from_iter};

use crate::sql::{self, Dialect, PROGRESS_TABLE, Param, last_of, quote};
use crate::{
    Advance, ColumnType, Error, Page, Progress, Query, Result, Row, RowChange, TableSpec, Value,
    ViewStore, check_name,
};

/// Views in one SQLite file.
#[derive(Clone)]
pub struct SqliteStore {
    /// The writer (and the reads that must see its own writes, such as progress).
    connection: Arc<Mutex<Connection>>,
    /// Queries.
    reader: Arc<Mutex<Connection>>,
    /// Dropped with the last clone, which stops the checkpointer.
    _checkpointer: Arc<std::sync::mpsc::Sender<()>>,
}

/// How often the checkpointer copies what the WAL holds into the database file.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// The WAL's bound, in pages (of 4 KiB: 64 MiB).
const WAL_LIMIT_FRAMES: i64 = 16_384;

/// The thread that keeps the WAL short. A passive checkpoint copies committed frames into
/// the database file without blocking the writer or readers; SQLite starts the WAL over
/// when a write begins after all of it was copied. Under steady writes one always lands
/// while a checkpoint runs, so the WAL would grow for as long as they last: past the
/// limit, the checkpointer holds the writer back (its mutex) for a second passive
/// checkpoint, which copies only what was committed during the first, so the writer's
/// next transaction starts the WAL over. (A TRUNCATE checkpoint under the mutex, which
/// also shrinks the file, held the writer for ~30 ms and made the view lag's p99 that.)
struct Checkpointer {
    connection: Connection,
    writer: Arc<Mutex<Connection>>,
    path: std::path::PathBuf,
    wal_limit_frames: i64,
    /// Whether the last checkpoint failed (warned once per failing stretch).
    failing: bool,
}

impl Checkpointer {
    fn run(mut self, stopped: &std::sync::mpsc::Receiver<()>) {
        while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
            stopped.recv_timeout(CHECKPOINT_EVERY)
        {
            let result = self.checkpoint();
            match (&result, self.failing) {
                (Err(e), false) => {
                    tracing::warn!(path = %self.path.display(), error = %e, "cannot checkpoint the views' SQLite WAL; trying again every 100 ms");
                }
                (Ok(()), true) => {
                    tracing::info!(path = %self.path.display(), "the views' SQLite WAL is checkpointed again");
                }
                _ => {}
            }
            self.failing = result.is_err();
        }
    }

    fn checkpoint(&self) -> rusqlite::Result<()> {
        // (busy, frames in the WAL, frames copied)
        let (_, frames, _) = self.pragma_checkpoint("PASSIVE")?;
        if frames > self.wal_limit_frames {
            let _writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
            self.pragma_checkpoint("PASSIVE")?;
        }
        Ok(())
    }

    fn pragma_checkpoint(&self, mode: &str) -> rusqlite::Result<(i64, i64, i64)> {
        self.connection
            .query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?))
            })
    }
}

fn store_error(e: impl std::fmt::Display) -> Error {
    Error::Store {
        store: "sqlite",
        message: e.to_string(),
    }
}

fn to_sql(param: &Param) -> Sql {
    match &param.value {
        Value::Null => Sql::Null,
        Value::Text(s) | Value::Json(s) => Sql::Text(s.clone()),
        Value::Integer(i) => Sql::Integer(*i),
        Value::Real(f) => Sql::Real(*f),
        Value::Boolean(b) => Sql::Integer(i64::from(*b)),
    }
}

fn from_sql(ty: ColumnType, value: Sql) -> Value {
    match (ty, value) {
        (_, Sql::Null) => Value::Null,
        (ColumnType::Boolean, Sql::Integer(i)) => Value::Boolean(i != 0),
        (ColumnType::Json, Sql::Text(s)) => Value::Json(s),
        (_, Sql::Text(s)) => Value::Text(s),
        (ColumnType::Real, Sql::Integer(i)) => Value::Real(i as f64),
        (_, Sql::Integer(i)) => Value::Integer(i),
        (_, Sql::Real(f)) => Value::Real(f),
        (_, Sql::Blob(b)) => Value::Text(String::from_utf8_lossy(&b).into_owned()),
    }
}

/// A connection to `path` on which a double-quoted name that matches no column is an
/// error, not a string.
fn connect(path: &Path) -> Result<Connection> {
    let connection = Connection::open(path).map_err(store_error)?;
    for config in [
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_DQS_DML,
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_DQS_DDL,
    ] {
        connection
            .set_db_config(config, false)
            .map_err(store_error)?;
    }
    Ok(connection)
}

impl SqliteStore {
    /// Open (or create) the database at `path`.
    pub fn open(path: &Path) -> Result<SqliteStore> {
        Self::open_with(path, WAL_LIMIT_FRAMES)
    }

    /// [`SqliteStore::open`] with the WAL bounded to about `wal_limit_frames` pages.
    pub(crate) fn open_with(path: &Path, wal_limit_frames: i64) -> Result<SqliteStore> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(store_error)?;
        }
        let connection = connect(path)?;
        // The writer never checkpoints; the checkpointer does, beside it.
        connection
            .execute_batch(
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA wal_autocheckpoint = 0;",
            )
            .map_err(store_error)?;
        // Every view's upserts and the progress statement stay prepared.
        connection.set_prepared_statement_cache_capacity(256);
        // Queries read beside the writer (WAL): a query never waits for a commit, and sees
        // every transaction committed before it started.
        let reader = connect(path)?;
        reader
            .execute_batch("PRAGMA query_only = 1;")
            .map_err(store_error)?;
        reader.set_prepared_statement_cache_capacity(256);
        let connection = Arc::new(Mutex::new(connection));
        let checkpointer = Checkpointer {
            connection: connect(path)?,
            writer: connection.clone(),
            path: path.to_owned(),
            wal_limit_frames,
            failing: false,
        };
        checkpointer
            .connection
            .busy_timeout(std::time::Duration::from_secs(1))
            .map_err(store_error)?;
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        std::thread::Builder::new()
            .name("weir-views-checkpoint".into())
            .spawn(move || checkpointer.run(&stopped))
            .map_err(store_error)?;
        Ok(SqliteStore {
            connection,
            reader: Arc::new(Mutex::new(reader)),
            _checkpointer: Arc::new(stop),
        })
    }

    /// Run `statements` (no parameters) in one transaction.
    async fn in_transaction(&self, statements: Vec<String>) -> Result<()> {
        self.run(move |c| {
            let tx = c.transaction().map_err(store_error)?;
            for statement in statements {
                tx.execute(&statement, []).map_err(store_error)?;
            }
            tx.commit().map_err(store_error)
        })
        .await
    }

    /// `f` on the writer's connection, on the blocking pool.
    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        Self::on(&self.connection, f).await
    }

    async fn on<T: Send + 'static>(
        connection: &Arc<Mutex<Connection>>,
        f: impl FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let connection = connection.clone();
        tokio::task::spawn_blocking(move || {
            let mut connection = connection.lock().unwrap_or_else(PoisonError::into_inner);
            f(&mut connection)
        })
        .await
        .map_err(store_error)?
    }
}

#[async_trait]
impl ViewStore for SqliteStore {
    fn kind(&self) -> &'static str {
        "sqlite"
    }

    async fn create(&self, table: &str, spec: &TableSpec) -> Result<()> {
        self.in_transaction(Dialect::Sqlite.create(table, spec)?)
            .await
    }

    async fn shape(&self, table: &str) -> Result<Option<String>> {
        check_name(table)?;
        let table = table.to_owned();
        self.run(move |c| {
            for statement in sql::bookkeeping() {
                c.execute(&statement, []).map_err(store_error)?;
            }
            c.query_row(&sql::shape_query(Dialect::Sqlite), [&table], |row| {
                row.get(0)
            })
            .optional()
            .map_err(store_error)
        })
        .await
    }

    async fn reindex(&self, table: &str, was: &[String], spec: &TableSpec) -> Result<()> {
        self.in_transaction(Dialect::Sqlite.reindex(table, was, spec)?)
            .await
    }

    async fn drop_table(&self, table: &str) -> Result<()> {
        self.in_transaction(sql::drop_statements(table)?).await
    }

    async fn apply(
        &self,
        table: &str,
        spec: &TableSpec,
        changes: Vec<RowChange>,
        advances: Vec<Advance>,
    ) -> Result<()> {
        check_name(table)?;
        let mut statements = Vec::with_capacity(changes.len());
        for change in &changes {
            statements.push(match change {
                RowChange::Upsert(row) => Dialect::Sqlite.upsert(table, spec, row)?,
                RowChange::Delete(row) => Dialect::Sqlite.delete(table, spec, row)?,
            });
        }
        let table = table.to_owned();
        self.run(move |c| {
            let tx = c.transaction().map_err(store_error)?;
            // The progress first: a writer whose start moved writes nothing.
            for a in &advances {
                let moved = match a.from {
                    Some(from) => tx
                        .prepare_cached(&sql::advance(Dialect::Sqlite, true))
                        .and_then(|mut s| {
                            s.execute(rusqlite::params![
                                table,
                                a.topic,
                                a.partition,
                                a.to as i64,
                                from as i64
                            ])
                        }),
                    None => tx
                        .prepare_cached(&sql::advance(Dialect::Sqlite, false))
                        .and_then(|mut s| {
                            s.execute(rusqlite::params![table, a.topic, a.partition, a.to as i64])
                        }),
                }
                .map_err(store_error)?;
                // The transaction is rolled back when it is dropped uncommitted.
                if moved != 1 {
                    return Err(Error::moved(&table, a));
                }
            }
            for (sql, params) in statements {
                let mut statement = tx.prepare_cached(&sql).map_err(store_error)?;
                statement
                    .execute(params_from_iter(params.iter().map(to_sql)))
                    .map_err(store_error)?;
            }
            tx.commit().map_err(store_error)
        })
        .await
    }

    async fn begin_progress(&self, table: &str, progress: Vec<Progress>) -> Result<()> {
        check_name(table)?;
        let table = table.to_owned();
        self.run(move |c| {
            let tx = c.transaction().map_err(store_error)?;
            for p in &progress {
                tx.prepare_cached(&sql::begin_progress())
                    .and_then(|mut s| {
                        s.execute(rusqlite::params![
                            table,
                            p.topic,
                            p.partition,
                            p.next_offset as i64
                        ])
                    })
                    .map_err(store_error)?;
            }
            tx.commit().map_err(store_error)
        })
        .await
    }

    async fn progress(&self, table: &str) -> Result<Vec<Progress>> {
        check_name(table)?;
        let table = table.to_owned();
        self.run(move |c| {
            let mut statement = c
                .prepare(&format!(
                    "SELECT topic, part, next_offset FROM {} WHERE view = ?1 ORDER BY topic, part",
                    quote(PROGRESS_TABLE)
                ))
                .map_err(store_error)?;
            let rows = statement
                .query_map([&table], |row| {
                    Ok(Progress {
                        topic: row.get(0)?,
                        partition: row.get(1)?,
                        next_offset: row.get::<_, i64>(2)? as u64,
                    })
                })
                .map_err(store_error)?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
                .map_err(store_error)
        })
        .await
    }

    async fn query(&self, table: &str, spec: &TableSpec, query: &Query) -> Result<Page> {
        let (sql, params, columns) = Dialect::Sqlite.select(table, spec, query)?;
        let types: Vec<ColumnType> = spec.columns.iter().map(|c| c.ty).collect();
        let (spec, query) = (spec.clone(), query.clone());
        Self::on(&self.reader, move |c| {
            let mut statement = c.prepare_cached(&sql).map_err(store_error)?;
            let mut rows = statement
                .query(params_from_iter(params.iter().map(to_sql)))
                .map_err(store_error)?;
            let mut page = Vec::new();
            while let Some(row) = rows.next().map_err(store_error)? {
                let mut out = Row::new();
                for (i, (name, ty)) in columns.iter().zip(&types).enumerate() {
                    let value: Sql = row.get(i).map_err(store_error)?;
                    out.insert(name.clone(), from_sql(*ty, value));
                }
                page.push(out);
            }
            let more = page.len() > query.limit;
            page.truncate(query.limit);
            let last = if more {
                page.last().map(|row| last_of(&spec, &query, row))
            } else {
                None
            };
            Ok(Page { rows: page, last })
        })
        .await
    }

    async fn swap(&self, from: &str, to: &str, spec: &TableSpec) -> Result<()> {
        // Names are checked (a-z, 0-9, '_'), so the progress statements may quote them.
        self.in_transaction(Dialect::Sqlite.swap(from, to, spec)?)
            .await
    }
}
