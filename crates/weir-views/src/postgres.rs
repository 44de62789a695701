//! Views in PostgreSQL, through `tokio-postgres`: one connection, its statements in
//! transactions. Several nodes may share the database (each view's table is written by
//! the node that projects it).

use async_trait::async_trait;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls};

use crate::sql::{self, Dialect, PROGRESS_TABLE, Param, last_of, quote};
use crate::{
    Advance, ColumnType, Error, Page, Progress, Query, Result, Row, RowChange, TableSpec, Value,
    ViewStore, check_name,
};

/// Views in a PostgreSQL database.
pub struct PostgresStore {
    client: tokio::sync::Mutex<Client>,
    url: String,
}

fn store_error(e: impl std::fmt::Display) -> Error {
    Error::Store {
        store: "postgres",
        message: e.to_string(),
    }
}

type Boxed = Box<dyn ToSql + Sync + Send>;

fn to_sql(param: &Param) -> Boxed {
    match (&param.value, param.ty) {
        (Value::Null, ColumnType::Text) => Box::new(None::<String>),
        (Value::Null, ColumnType::Integer) => Box::new(None::<i64>),
        (Value::Null, ColumnType::Real) => Box::new(None::<f64>),
        (Value::Null, ColumnType::Boolean) => Box::new(None::<bool>),
        (Value::Null, ColumnType::Json) => Box::new(None::<serde_json::Value>),
        (Value::Text(s), _) => Box::new(s.clone()),
        (Value::Integer(i), _) => Box::new(*i),
        (Value::Real(f), _) => Box::new(*f),
        (Value::Boolean(b), _) => Box::new(*b),
        (Value::Json(s), _) => Box::new(
            serde_json::from_str::<serde_json::Value>(s).unwrap_or(serde_json::Value::Null),
        ),
    }
}

fn refs(params: &[Boxed]) -> Vec<&(dyn ToSql + Sync)> {
    params
        .iter()
        .map(|p| p.as_ref() as &(dyn ToSql + Sync))
        .collect()
}

fn read(row: &tokio_postgres::Row, i: usize, ty: ColumnType) -> Result<Value> {
    Ok(match ty {
        ColumnType::Text => row
            .try_get::<_, Option<String>>(i)
            .map_err(store_error)?
            .map_or(Value::Null, Value::Text),
        ColumnType::Integer => row
            .try_get::<_, Option<i64>>(i)
            .map_err(store_error)?
            .map_or(Value::Null, Value::Integer),
        ColumnType::Real => row
            .try_get::<_, Option<f64>>(i)
            .map_err(store_error)?
            .map_or(Value::Null, Value::Real),
        ColumnType::Boolean => row
            .try_get::<_, Option<bool>>(i)
            .map_err(store_error)?
            .map_or(Value::Null, Value::Boolean),
        ColumnType::Json => row
            .try_get::<_, Option<serde_json::Value>>(i)
            .map_err(store_error)?
            .map_or(Value::Null, |v| Value::Json(v.to_string())),
    })
}

impl PostgresStore {
    /// Connect to `url` (`postgres://user@host/db` or `host=... user=...`), without TLS.
    pub async fn connect(url: &str) -> Result<PostgresStore> {
        let (client, connection) = tokio_postgres::connect(url, NoTls)
            .await
            .map_err(|e| store_error(format!("cannot connect to {}: {e}", redacted(url))))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::error!(error = %e, "the PostgreSQL view store's connection ended");
            }
        });
        Ok(PostgresStore {
            client: tokio::sync::Mutex::new(client),
            url: url.to_owned(),
        })
    }

    /// The connection, made again if it was lost (PostgreSQL restarted, a network cut):
    /// a node must not stop projecting the partitions it owns for good.
    async fn client(&self) -> Result<tokio::sync::MutexGuard<'_, Client>> {
        let mut client = self.client.lock().await;
        if client.is_closed() {
            tracing::warn!("the PostgreSQL view store's connection was lost; connecting again");
            let (fresh, connection) =
                tokio_postgres::connect(&self.url, NoTls)
                    .await
                    .map_err(|e| {
                        store_error(format!("cannot connect to {}: {e}", redacted(&self.url)))
                    })?;
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::error!(error = %e, "the PostgreSQL view store's connection ended");
                }
            });
            *client = fresh;
        }
        Ok(client)
    }

    async fn in_transaction(&self, statements: Vec<(String, Vec<Param>)>) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(store_error)?;
        for (sql, params) in statements {
            let params: Vec<Boxed> = params.iter().map(to_sql).collect();
            tx.execute(sql.as_str(), &refs(&params))
                .await
                .map_err(store_error)?;
        }
        tx.commit().await.map_err(store_error)
    }
}

#[async_trait]
impl ViewStore for PostgresStore {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    async fn create(&self, table: &str, spec: &TableSpec) -> Result<()> {
        let statements = Dialect::Postgres.create(table, spec)?;
        self.in_transaction(statements.into_iter().map(|s| (s, Vec::new())).collect())
            .await
    }

    async fn shape(&self, table: &str) -> Result<Option<String>> {
        check_name(table)?;
        self.in_transaction(
            sql::bookkeeping()
                .into_iter()
                .map(|s| (s, Vec::new()))
                .collect(),
        )
        .await?;
        let client = self.client().await?;
        let row = client
            .query_opt(sql::shape_query(Dialect::Postgres).as_str(), &[&table])
            .await
            .map_err(store_error)?;
        row.map(|row| row.try_get::<_, String>(0))
            .transpose()
            .map_err(store_error)
    }

    async fn reindex(&self, table: &str, was: &[String], spec: &TableSpec) -> Result<()> {
        let statements = Dialect::Postgres.reindex(table, was, spec)?;
        self.in_transaction(statements.into_iter().map(|s| (s, Vec::new())).collect())
            .await
    }

    async fn drop_table(&self, table: &str) -> Result<()> {
        let statements = sql::drop_statements(table)?;
        self.in_transaction(statements.into_iter().map(|s| (s, Vec::new())).collect())
            .await
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
                RowChange::Upsert(row) => Dialect::Postgres.upsert(table, spec, row)?,
                RowChange::Delete(row) => Dialect::Postgres.delete(table, spec, row)?,
            });
        }
        let text = |s: &str| Param {
            ty: ColumnType::Text,
            value: Value::Text(s.to_owned()),
        };
        let int = |i: i64| Param {
            ty: ColumnType::Integer,
            value: Value::Integer(i),
        };
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(store_error)?;
        // The progress first: a writer whose start moved writes nothing, and takes no
        // row's lock before it knows (two writers of a partition, or a writer and a
        // swap, wait for each other instead of deadlocking).
        for a in &advances {
            let mut params = vec![
                text(table),
                text(&a.topic),
                int(i64::from(a.partition)),
                int(a.to as i64),
            ];
            if let Some(from) = a.from {
                params.push(int(from as i64));
            }
            let params: Vec<Boxed> = params.iter().map(to_sql).collect();
            let moved = tx
                .execute(
                    sql::advance(Dialect::Postgres, a.from.is_some()).as_str(),
                    &refs(&params),
                )
                .await
                .map_err(store_error)?;
            // The transaction is rolled back when it is dropped uncommitted.
            if moved != 1 {
                return Err(Error::moved(table, a));
            }
        }
        for (sql, params) in statements {
            let params: Vec<Boxed> = params.iter().map(to_sql).collect();
            tx.execute(sql.as_str(), &refs(&params))
                .await
                .map_err(store_error)?;
        }
        tx.commit().await.map_err(store_error)
    }

    async fn begin_progress(&self, table: &str, progress: Vec<Progress>) -> Result<()> {
        check_name(table)?;
        let text = |s: &str| Param {
            ty: ColumnType::Text,
            value: Value::Text(s.to_owned()),
        };
        let int = |i: i64| Param {
            ty: ColumnType::Integer,
            value: Value::Integer(i),
        };
        let statements = progress
            .iter()
            .map(|p| {
                (
                    sql::begin_progress(),
                    vec![
                        text(table),
                        text(&p.topic),
                        int(i64::from(p.partition)),
                        int(p.next_offset as i64),
                    ],
                )
            })
            .collect();
        self.in_transaction(statements).await
    }

    async fn progress(&self, table: &str) -> Result<Vec<Progress>> {
        check_name(table)?;
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT topic, part, next_offset FROM {} WHERE view = $1 ORDER BY topic, part",
                    quote(PROGRESS_TABLE)
                ),
                &[&table],
            )
            .await
            .map_err(store_error)?;
        rows.iter()
            .map(|row| {
                Ok(Progress {
                    topic: row.try_get(0).map_err(store_error)?,
                    partition: row.try_get::<_, i64>(1).map_err(store_error)? as u32,
                    next_offset: row.try_get::<_, i64>(2).map_err(store_error)? as u64,
                })
            })
            .collect()
    }

    async fn query(&self, table: &str, spec: &TableSpec, query: &Query) -> Result<Page> {
        let (sql, params, columns) = Dialect::Postgres.select(table, spec, query)?;
        let params: Vec<Boxed> = params.iter().map(to_sql).collect();
        let rows = {
            let client = self.client().await?;
            client
                .query(sql.as_str(), &refs(&params))
                .await
                .map_err(store_error)?
        };
        let mut page = Vec::with_capacity(rows.len());
        for row in &rows {
            let mut out = Row::new();
            for (i, (name, column)) in columns.iter().zip(&spec.columns).enumerate() {
                out.insert(name.clone(), read(row, i, column.ty)?);
            }
            page.push(out);
        }
        let more = page.len() > query.limit;
        page.truncate(query.limit);
        let last = if more {
            page.last().map(|row| last_of(spec, query, row))
        } else {
            None
        };
        Ok(Page { rows: page, last })
    }

    async fn swap(&self, from: &str, to: &str, spec: &TableSpec) -> Result<()> {
        let statements = Dialect::Postgres.swap(from, to, spec)?;
        self.in_transaction(statements.into_iter().map(|s| (s, Vec::new())).collect())
            .await
    }
}

/// `url` without its password, for messages.
fn redacted(url: &str) -> String {
    match url.parse::<tokio_postgres::Config>() {
        Ok(config) => format!(
            "PostgreSQL database {:?} on {:?} as {:?}",
            config.get_dbname().unwrap_or(""),
            config.get_hosts(),
            config.get_user().unwrap_or("")
        ),
        Err(_) => "the PostgreSQL URL given".to_owned(),
    }
}
