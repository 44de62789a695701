//! SQL text for both stores: names quoted, values as numbered parameters (`?N` in SQLite,
//! `$N` in PostgreSQL, which both read), so the two dialects differ only in types and in
//! how a text prefix is matched.

use crate::{
    Column, ColumnType, Condition, Error, Query, Result, Row, TableSpec, Value, check_name,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

/// A value bound to a parameter, with the column type it is for.
#[derive(Debug, Clone)]
pub(crate) struct Param {
    pub(crate) ty: ColumnType,
    pub(crate) value: Value,
}

pub(crate) const PROGRESS_TABLE: &str = "weir_view_progress";
/// Each view table's shape ([`TableSpec::shape`]) as it was created.
pub(crate) const SHAPES_TABLE: &str = "weir_view_tables";

/// The statements that create the progress and shapes tables if they do not exist.
pub(crate) fn bookkeeping() -> [String; 2] {
    [
        format!(
            "CREATE TABLE IF NOT EXISTS {} (view TEXT NOT NULL, topic TEXT NOT NULL, part BIGINT NOT NULL, next_offset BIGINT NOT NULL, PRIMARY KEY (view, topic, part))",
            quote(PROGRESS_TABLE)
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {} (view TEXT NOT NULL PRIMARY KEY, shape TEXT NOT NULL)",
            quote(SHAPES_TABLE)
        ),
    ]
}

/// The statement that moves a view's progress in one partition (parameters: view, topic,
/// partition, next offset, and with `from` the offset it must move from). With `from` it
/// changes no row when the recorded progress is another, or when none is recorded (see
/// `ViewStore::begin_progress`), which the caller turns into `Error::Moved`; without, it
/// records the progress whatever it was.
pub(crate) fn advance(dialect: Dialect, from: bool) -> String {
    let progress = quote(PROGRESS_TABLE);
    if from {
        // SQLite numbers `$N` parameters in the order they first appear; `?N` is the
        // number itself.
        let p = match dialect {
            Dialect::Sqlite => '?',
            Dialect::Postgres => '$',
        };
        format!(
            "UPDATE {progress} SET next_offset = {p}4 WHERE view = {p}1 AND topic = {p}2 AND part = {p}3 AND next_offset = {p}5"
        )
    } else {
        format!(
            "INSERT INTO {progress} (view, topic, part, next_offset) VALUES ($1, $2, $3, $4) ON CONFLICT (view, topic, part) DO UPDATE SET next_offset = excluded.next_offset"
        )
    }
}

/// The statement that records a partition's progress if it has none (parameters: view,
/// topic, partition, next offset).
pub(crate) fn begin_progress() -> String {
    format!(
        "INSERT INTO {} (view, topic, part, next_offset) VALUES ($1, $2, $3, $4) ON CONFLICT (view, topic, part) DO NOTHING",
        quote(PROGRESS_TABLE)
    )
}

/// The statements that drop `table` (a checked name) with its progress and shape.
pub(crate) fn drop_statements(table: &str) -> Result<Vec<String>> {
    check_name(table)?;
    let mut statements = vec![format!("DROP TABLE IF EXISTS {}", quote(table))];
    statements.extend(bookkeeping());
    for bookkeeping in [PROGRESS_TABLE, SHAPES_TABLE] {
        statements.push(format!(
            "DELETE FROM {} WHERE view = '{table}'",
            quote(bookkeeping)
        ));
    }
    Ok(statements)
}

/// The statement that creates `table`'s index on `column` (both checked names).
fn create_index(table: &str, column: &str) -> String {
    format!(
        "CREATE INDEX IF NOT EXISTS {} ON {} ({})",
        quote(&format!("{table}__{column}")),
        quote(table),
        quote(column)
    )
}

/// The query of `table`'s recorded shape (after [`bookkeeping`]), its name as parameter
/// 1: the shape, [`crate::UNKNOWN_SHAPE`] for a table without one, no row for no table.
pub(crate) fn shape_query(dialect: Dialect) -> String {
    let exists = match dialect {
        Dialect::Sqlite => "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1",
        Dialect::Postgres => {
            "SELECT 1 FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = $1"
        }
    };
    format!(
        "SELECT shape FROM {shapes} WHERE view = {p} UNION ALL SELECT '{unknown}' WHERE EXISTS ({exists}) AND NOT EXISTS (SELECT 1 FROM {shapes} WHERE view = {p})",
        shapes = quote(SHAPES_TABLE),
        p = dialect.placeholder(1),
        unknown = crate::UNKNOWN_SHAPE,
    )
}

pub(crate) fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

impl Dialect {
    fn placeholder(self, n: usize) -> String {
        match self {
            Dialect::Sqlite => format!("?{n}"),
            Dialect::Postgres => format!("${n}"),
        }
    }

    fn column_type(self, ty: ColumnType) -> &'static str {
        match (self, ty) {
            (_, ColumnType::Text) => "TEXT",
            (Dialect::Sqlite, ColumnType::Integer) => "INTEGER",
            (Dialect::Postgres, ColumnType::Integer) => "BIGINT",
            (Dialect::Sqlite, ColumnType::Real) => "REAL",
            (Dialect::Postgres, ColumnType::Real) => "DOUBLE PRECISION",
            (Dialect::Sqlite, ColumnType::Boolean) => "INTEGER",
            (Dialect::Postgres, ColumnType::Boolean) => "BOOLEAN",
            (Dialect::Sqlite, ColumnType::Json) => "TEXT",
            (Dialect::Postgres, ColumnType::Json) => "JSONB",
        }
    }

    /// The statements that take `table` from the indexes `was` to `spec`'s, and record
    /// `spec`'s shape.
    pub(crate) fn reindex(
        self,
        table: &str,
        was: &[String],
        spec: &TableSpec,
    ) -> Result<Vec<String>> {
        check_name(table)?;
        spec.check()?;
        let mut statements = Vec::new();
        for index in was.iter().filter(|i| !spec.indexes.contains(i)) {
            // From the store's own shape row: checked like every name before it is quoted.
            check_name(index)?;
            statements.push(format!(
                "DROP INDEX IF EXISTS {}",
                quote(&format!("{table}__{index}"))
            ));
        }
        for index in &spec.indexes {
            statements.push(create_index(table, index));
        }
        statements.push(format!(
            "UPDATE {} SET shape = '{}' WHERE view = '{table}'",
            quote(SHAPES_TABLE),
            spec.shape()
        ));
        Ok(statements)
    }

    /// The statements that create `table` and its indexes, and the progress table.
    pub(crate) fn create(self, table: &str, spec: &TableSpec) -> Result<Vec<String>> {
        check_name(table)?;
        spec.check()?;
        let columns: Vec<String> = spec
            .columns
            .iter()
            .map(|c| {
                let not_null = if spec.key.contains(&c.name) {
                    " NOT NULL"
                } else {
                    ""
                };
                format!("{} {}{not_null}", quote(&c.name), self.column_type(c.ty))
            })
            .collect();
        let key: Vec<String> = spec.key.iter().map(|k| quote(k)).collect();
        let mut statements = bookkeeping().to_vec();
        statements.push(format!(
            "CREATE TABLE IF NOT EXISTS {} ({}, PRIMARY KEY ({}))",
            quote(table),
            columns.join(", "),
            key.join(", ")
        ));
        // The shape is names checked like the table's and fixed words: no quote in it.
        statements.push(format!(
            "INSERT INTO {} (view, shape) VALUES ('{table}', '{}') ON CONFLICT (view) DO NOTHING",
            quote(SHAPES_TABLE),
            spec.shape()
        ));
        for index in &spec.indexes {
            statements.push(create_index(table, index));
        }
        Ok(statements)
    }

    /// The statements that make `from` (with `spec`) into `to`, `to` dropped first: the
    /// table renamed, its indexes named after it, its progress moved.
    pub(crate) fn swap(self, from: &str, to: &str, spec: &TableSpec) -> Result<Vec<String>> {
        check_name(from)?;
        check_name(to)?;
        let progress = quote(PROGRESS_TABLE);
        let mut statements = Vec::new();
        if self == Dialect::Postgres {
            // The progress rows first, as every writer's transaction takes them first
            // (`ViewStore::apply`), so a writer and a swap wait for each other instead of
            // deadlocking.
            statements.push(format!(
                "SELECT 1 FROM {progress} WHERE view IN ('{from}', '{to}') ORDER BY view, topic, part FOR UPDATE"
            ));
        }
        statements.extend([
            format!("DROP TABLE IF EXISTS {}", quote(to)),
            format!("ALTER TABLE {} RENAME TO {}", quote(from), quote(to)),
        ]);
        for index in &spec.indexes {
            statements.push(format!(
                "DROP INDEX IF EXISTS {}",
                quote(&format!("{from}__{index}"))
            ));
            statements.push(create_index(to, index));
        }
        for bookkeeping in [progress, quote(SHAPES_TABLE)] {
            statements.push(format!("DELETE FROM {bookkeeping} WHERE view = '{to}'"));
            statements.push(format!(
                "UPDATE {bookkeeping} SET view = '{to}' WHERE view = '{from}'"
            ));
        }
        Ok(statements)
    }

    /// `INSERT ... ON CONFLICT (key) DO UPDATE` for `row`.
    pub(crate) fn upsert(
        self,
        table: &str,
        spec: &TableSpec,
        row: &Row,
    ) -> Result<(String, Vec<Param>)> {
        let mut names = Vec::new();
        let mut params = Vec::new();
        for (name, value) in row {
            let column = column(spec, name)?;
            params.push(param(column, value.clone())?);
            names.push(quote(name));
        }
        for key in &spec.key {
            if matches!(row.get(key), None | Some(Value::Null)) {
                return Err(Error::Invalid(format!(
                    "the row has no value for key column {key:?}"
                )));
            }
        }
        let placeholders: Vec<String> = (1..=params.len()).map(|n| self.placeholder(n)).collect();
        let updates: Vec<String> = row
            .keys()
            .filter(|name| !spec.key.contains(name))
            .map(|name| format!("{0} = excluded.{0}", quote(name)))
            .collect();
        let key: Vec<String> = spec.key.iter().map(|k| quote(k)).collect();
        let conflict = if updates.is_empty() {
            "DO NOTHING".to_owned()
        } else {
            format!("DO UPDATE SET {}", updates.join(", "))
        };
        Ok((
            format!(
                "INSERT INTO {} ({}) VALUES ({}) ON CONFLICT ({}) {conflict}",
                quote(table),
                names.join(", "),
                placeholders.join(", "),
                key.join(", ")
            ),
            params,
        ))
    }

    /// `DELETE` of the row with `row`'s key.
    pub(crate) fn delete(
        self,
        table: &str,
        spec: &TableSpec,
        row: &Row,
    ) -> Result<(String, Vec<Param>)> {
        let mut conditions = Vec::new();
        let mut params = Vec::new();
        for key in &spec.key {
            let value = row
                .get(key)
                .filter(|v| **v != Value::Null)
                .ok_or_else(|| Error::Invalid(format!("a delete needs key column {key:?}")))?;
            params.push(param(column(spec, key)?, value.clone())?);
            conditions.push(format!(
                "{} = {}",
                quote(key),
                self.placeholder(params.len())
            ));
        }
        Ok((
            format!(
                "DELETE FROM {} WHERE {}",
                quote(table),
                conditions.join(" AND ")
            ),
            params,
        ))
    }

    /// The `SELECT` of a page: its SQL, parameters and the columns to read, in order.
    pub(crate) fn select(
        self,
        table: &str,
        spec: &TableSpec,
        query: &Query,
    ) -> Result<(String, Vec<Param>, Vec<String>)> {
        let mut conditions = Vec::new();
        let mut params = Vec::new();
        for filter in &query.filters {
            let column = column(spec, &filter.column)?;
            if !spec.is_indexed(&column.name) {
                return Err(Error::Invalid(format!(
                    "column {:?} has no index; filter on the key's first column or an indexed one: {}",
                    column.name,
                    indexed(spec)
                )));
            }
            let name = quote(&column.name);
            let (op, value) = match &filter.condition {
                Condition::Eq(v) => ("=", v),
                Condition::Lt(v) => ("<", v),
                Condition::Le(v) => ("<=", v),
                Condition::Gt(v) => (">", v),
                Condition::Ge(v) => (">=", v),
                Condition::Prefix(prefix) => {
                    if column.ty != ColumnType::Text {
                        return Err(Error::Invalid(format!(
                            "a prefix filter needs a text column; {:?} is {}",
                            column.name,
                            column.ty.name()
                        )));
                    }
                    params.push(Param {
                        ty: ColumnType::Text,
                        value: Value::Text(prefix.clone()),
                    });
                    let p = self.placeholder(params.len());
                    conditions.push(match self {
                        Dialect::Sqlite => format!("substr({name}, 1, length({p})) = {p}"),
                        Dialect::Postgres => format!("starts_with({name}, {p})"),
                    });
                    continue;
                }
            };
            if *value == Value::Null {
                return Err(Error::Invalid(format!(
                    "a filter on {:?} compares with null; leave it out",
                    column.name
                )));
            }
            params.push(param(column, value.clone())?);
            conditions.push(format!("{name} {op} {}", self.placeholder(params.len())));
        }
        // The sort: the chosen column, then the key, so every row has one place.
        let mut order: Vec<String> = Vec::new();
        if let Some(by) = &query.order_by {
            let column = column(spec, by)?;
            if !spec.is_indexed(by) {
                return Err(Error::Invalid(format!(
                    "column {by:?} has no index; sort on the key's first column or an indexed one: {}",
                    indexed(spec)
                )));
            }
            order.push(column.name.clone());
        }
        for key in &spec.key {
            if !order.contains(key) {
                order.push(key.clone());
            }
        }
        let direction = if query.descending { "DESC" } else { "ASC" };
        // A sort column outside the key may hold nulls, which compare as unknown: they are
        // ordered after every value, in both directions, and paged through on their own.
        let nullable = query
            .order_by
            .as_ref()
            .filter(|by| !spec.key.contains(by))
            .map(|by| quote(by));
        if let Some(after) = &query.after {
            let op = if query.descending { "<" } else { ">" };
            let tuple = |names: &[String], params: &mut Vec<Param>| -> Result<String> {
                let mut values = Vec::new();
                for name in names {
                    let value = after.get(name).cloned().unwrap_or(Value::Null);
                    params.push(param(column(spec, name)?, value)?);
                    values.push(self.placeholder(params.len()));
                }
                let columns: Vec<String> = names.iter().map(|n| quote(n)).collect();
                Ok(format!(
                    "({}) {op} ({})",
                    columns.join(", "),
                    values.join(", ")
                ))
            };
            match &nullable {
                None => conditions.push(tuple(&order, &mut params)?),
                Some(by) => {
                    let last_is_null = matches!(after.get(&order[0]), None | Some(Value::Null));
                    if last_is_null {
                        let keys = tuple(&order[1..], &mut params)?;
                        conditions.push(format!("{by} IS NULL AND {keys}"));
                    } else {
                        let all = tuple(&order, &mut params)?;
                        conditions.push(format!("(({by} IS NOT NULL AND {all}) OR {by} IS NULL)"));
                    }
                }
            }
        }
        let selected: Vec<String> = spec.columns.iter().map(|c| c.name.clone()).collect();
        let mut sql = format!(
            "SELECT {} FROM {}",
            selected
                .iter()
                .map(|n| quote(n))
                .collect::<Vec<_>>()
                .join(", "),
            quote(table)
        );
        if !conditions.is_empty() {
            sql += &format!(" WHERE {}", conditions.join(" AND "));
        }
        let mut order_sql: Vec<String> = order
            .iter()
            .map(|n| format!("{} {direction}", quote(n)))
            .collect();
        if let Some(by) = &nullable {
            order_sql.insert(0, format!("({by} IS NULL) ASC"));
        }
        sql += &format!(
            " ORDER BY {} LIMIT {}",
            order_sql.join(", "),
            query.limit + 1
        );
        Ok((sql, params, selected))
    }
}

fn indexed(spec: &TableSpec) -> String {
    let mut names: Vec<&str> = spec.key.first().map(String::as_str).into_iter().collect();
    names.extend(spec.indexes.iter().map(String::as_str));
    names.join(", ")
}

fn column<'a>(spec: &'a TableSpec, name: &str) -> Result<&'a Column> {
    spec.column(name).ok_or_else(|| {
        Error::Invalid(format!(
            "the view has no column {name:?}; its columns: {}",
            spec.columns
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })
}

/// `value` for `column`, or why it does not fit (an integer fits a real column).
pub(crate) fn param(column: &Column, value: Value) -> Result<Param> {
    let value = match (column.ty, value) {
        (_, Value::Null) => Value::Null,
        (ColumnType::Text, v @ Value::Text(_))
        | (ColumnType::Integer, v @ Value::Integer(_))
        | (ColumnType::Real, v @ Value::Real(_))
        | (ColumnType::Boolean, v @ Value::Boolean(_)) => v,
        (ColumnType::Real, Value::Integer(i)) => Value::Real(i as f64),
        (ColumnType::Json, Value::Json(text)) => {
            serde_json::from_str::<serde_json::Value>(&text)
                .map_err(|e| Error::Invalid(format!("column {:?} takes JSON: {e}", column.name)))?;
            Value::Json(text)
        }
        (ty, other) => {
            return Err(Error::Invalid(format!(
                "column {:?} is {}, not {other:?}",
                column.name,
                ty.name()
            )));
        }
    };
    Ok(Param {
        ty: column.ty,
        value,
    })
}

/// The sort and key columns of `row`: where the next page starts.
pub(crate) fn last_of(spec: &TableSpec, query: &Query, row: &Row) -> Row {
    let mut last = Row::new();
    for name in query.order_by.iter().chain(&spec.key) {
        if let Some(v) = row.get(name) {
            last.insert(name.clone(), v.clone());
        }
    }
    last
}
