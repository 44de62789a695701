//! One suite, two stores: the embedded SQLite file and the PostgreSQL on this machine
//! (127.0.0.1:5432, user postgres, database test; `WEIR_TEST_POSTGRES` overrides).

use std::collections::BTreeMap;

use crate::{
    Advance, Column, ColumnType, Condition, Error, Filter, PostgresStore, Progress, Query, Row,
    RowChange, SqliteStore, TableSpec, Value, ViewStore,
};

fn spec() -> TableSpec {
    let column = |name: &str, ty| Column {
        name: name.to_owned(),
        ty,
    };
    TableSpec {
        columns: vec![
            column("order_id", ColumnType::Text),
            column("customer", ColumnType::Text),
            column("amount", ColumnType::Real),
            column("items", ColumnType::Integer),
            column("paid", ColumnType::Boolean),
            column("doc", ColumnType::Json),
        ],
        key: vec!["order_id".to_owned()],
        indexes: vec!["customer".to_owned(), "amount".to_owned()],
    }
}

fn row(id: &str, customer: &str, amount: f64) -> Row {
    let mut row = BTreeMap::new();
    row.insert("order_id".to_owned(), Value::Text(id.to_owned()));
    row.insert("customer".to_owned(), Value::Text(customer.to_owned()));
    row.insert("amount".to_owned(), Value::Real(amount));
    row.insert("items".to_owned(), Value::Integer(2));
    row.insert("paid".to_owned(), Value::Boolean(amount > 50.0));
    row.insert("doc".to_owned(), Value::Json(r#"{"a":[1,2]}"#.to_owned()));
    row
}

fn key(id: &str) -> Row {
    BTreeMap::from([("order_id".to_owned(), Value::Text(id.to_owned()))])
}

fn progress(offset: u64) -> Vec<Progress> {
    vec![Progress {
        topic: "entity.order".to_owned(),
        partition: 0,
        next_offset: offset,
    }]
}

/// Moves the progress to `offset`, whatever it was.
fn advance(offset: u64) -> Vec<Advance> {
    vec![Advance {
        topic: "entity.order".to_owned(),
        partition: 0,
        from: None,
        to: offset,
    }]
}

/// Moves the progress from `from` to `to`, refused if it is not at `from`.
fn advance_from(from: u64, to: u64) -> Vec<Advance> {
    vec![Advance {
        from: Some(from),
        ..advance(to).remove(0)
    }]
}

fn query(filters: Vec<Filter>, order_by: Option<&str>, limit: usize) -> Query {
    Query {
        filters,
        order_by: order_by.map(str::to_owned),
        descending: false,
        limit,
        after: None,
    }
}

fn ids(rows: &[Row]) -> Vec<String> {
    rows.iter()
        .map(|r| match &r["order_id"] {
            Value::Text(s) => s.clone(),
            other => panic!("{other:?}"),
        })
        .collect()
}

/// A table name of its own per run, so runs (and the two stores) never meet.
fn table(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}_{}_{nanos}", std::process::id())
}

/// Every page of `query` (both directions), following `last`.
async fn every_page(store: &dyn ViewStore, t: &str, spec: &TableSpec, mut q: Query) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        let page = store.query(t, spec, &q).await.unwrap();
        seen.extend(ids(&page.rows));
        match page.last {
            Some(last) => q.after = Some(last),
            None => return seen,
        }
    }
}

/// Rows whose sort column is null are paged through after the others, in both
/// directions, none skipped or repeated.
async fn null_sort_values_page(store: &dyn ViewStore) {
    let (t, spec) = (table("nulls"), spec());
    store.create(&t, &spec).await.unwrap();
    let mut changes = Vec::new();
    for (id, customer) in [
        ("a", None),
        ("b", Some("X")),
        ("c", None),
        ("d", Some("Y")),
        ("e", None),
        ("f", Some("X")),
    ] {
        let mut row = key(id);
        if let Some(c) = customer {
            row.insert("customer".into(), Value::Text(c.into()));
        }
        changes.push(RowChange::Upsert(row));
    }
    store.apply(&t, &spec, changes, advance(6)).await.unwrap();
    for limit in [1, 2, 4, 10] {
        let mut q = query(vec![], Some("customer"), limit);
        assert_eq!(
            every_page(store, &t, &spec, q.clone()).await,
            ["b", "f", "d", "a", "c", "e"],
            "ascending, pages of {limit}"
        );
        q.descending = true;
        assert_eq!(
            every_page(store, &t, &spec, q).await,
            ["d", "f", "b", "e", "c", "a"],
            "descending, pages of {limit}"
        );
    }
    store.drop_table(&t).await.unwrap();
}

async fn suite(store: &dyn ViewStore) {
    null_sort_values_page(store).await;
    let (t, spec) = (table("orders"), spec());
    assert_eq!(store.shape(&t).await.unwrap(), None);
    store.create(&t, &spec).await.unwrap();
    store.create(&t, &spec).await.unwrap(); // idempotent
    assert!(store.progress(&t).await.unwrap().is_empty());
    assert_eq!(store.shape(&t).await.unwrap(), Some(spec.shape()));
    let mut reordered = spec.clone();
    reordered.indexes.reverse();
    assert_eq!(reordered.shape(), spec.shape(), "indexes in any order");
    // The shape a table was created with stays what it was.
    let mut other = spec.clone();
    other.indexes.pop();
    assert_ne!(other.shape(), spec.shape());
    store.create(&t, &other).await.unwrap();
    assert_eq!(store.shape(&t).await.unwrap(), Some(spec.shape()));
    // Other indexes only: reindexed in place, and back.
    let mut sorted = spec.indexes.clone();
    sorted.sort();
    assert_eq!(
        other.indexes_if_only_they_differ(&spec.shape()),
        Some(sorted.clone())
    );
    store.reindex(&t, &sorted, &other).await.unwrap();
    assert_eq!(store.shape(&t).await.unwrap(), Some(other.shape()));
    store.reindex(&t, &other.indexes, &spec).await.unwrap();
    assert_eq!(store.shape(&t).await.unwrap(), Some(spec.shape()));
    let mut retyped = spec.clone();
    retyped.columns[2].ty = ColumnType::Text;
    assert_eq!(retyped.indexes_if_only_they_differ(&spec.shape()), None);
    let mut rekeyed = spec.clone();
    rekeyed.key.push("customer".to_owned());
    assert_eq!(rekeyed.indexes_if_only_they_differ(&spec.shape()), None);

    // Rows and progress land together.
    let changes = vec![
        RowChange::Upsert(row("SO-1", "CUST-1", 10.0)),
        RowChange::Upsert(row("SO-2", "CUST-1", 60.0)),
        RowChange::Upsert(row("SO-3", "CUST-2", 30.0)),
        RowChange::Upsert(row("SO-4", "CUST-10", 99.5)),
        RowChange::Upsert(row("SO-1", "CUST-1", 15.0)), // replaces
    ];
    store.apply(&t, &spec, changes, advance(5)).await.unwrap();
    assert_eq!(store.progress(&t).await.unwrap(), progress(5));
    // A writer whose start another writer moved is refused whole: no row, no progress.
    let late = vec![RowChange::Upsert(row("SO-9", "zed", 1.0))];
    let moved = store
        .apply(&t, &spec, late, advance_from(3, 6))
        .await
        .unwrap_err();
    assert!(matches!(moved, Error::Moved(_)), "{moved}");
    assert_eq!(store.progress(&t).await.unwrap(), progress(5));
    store
        .apply(&t, &spec, vec![], advance_from(5, 5))
        .await
        .unwrap();
    assert_eq!(store.progress(&t).await.unwrap(), progress(5));
    // A partition with no progress recorded takes no advance from anywhere until one is
    // begun; beginning keeps a progress already recorded.
    let fresh = table("fresh");
    store.create(&fresh, &spec).await.unwrap();
    let moved = store
        .apply(&fresh, &spec, vec![], advance_from(0, 2))
        .await
        .unwrap_err();
    assert!(matches!(moved, Error::Moved(_)), "{moved}");
    assert!(store.progress(&fresh).await.unwrap().is_empty());
    store.begin_progress(&fresh, progress(0)).await.unwrap();
    store.begin_progress(&fresh, progress(9)).await.unwrap();
    assert_eq!(store.progress(&fresh).await.unwrap(), progress(0));
    store
        .apply(&fresh, &spec, vec![], advance_from(0, 2))
        .await
        .unwrap();
    assert_eq!(store.progress(&fresh).await.unwrap(), progress(2));
    store.drop_table(&fresh).await.unwrap();

    let all = store
        .query(&t, &spec, &query(vec![], None, 100))
        .await
        .unwrap();
    assert_eq!(ids(&all.rows), ["SO-1", "SO-2", "SO-3", "SO-4"]);
    assert_eq!(all.rows[0]["amount"], Value::Real(15.0));
    assert_eq!(all.rows[0]["paid"], Value::Boolean(false));
    assert_eq!(all.rows[1]["paid"], Value::Boolean(true));
    assert_eq!(all.rows[0]["items"], Value::Integer(2));
    assert_eq!(
        all.rows[0]["doc"].to_json(),
        serde_json::json!({"a": [1, 2]})
    );
    assert_eq!(all.last, None);

    // Equality, range, prefix; sorted by an indexed column, the key breaking ties.
    let eq = |c: &str, v: Value| Filter {
        column: c.to_owned(),
        condition: Condition::Eq(v),
    };
    let page = store
        .query(
            &t,
            &spec,
            &query(
                vec![eq("customer", Value::Text("CUST-1".into()))],
                Some("amount"),
                10,
            ),
        )
        .await
        .unwrap();
    assert_eq!(ids(&page.rows), ["SO-1", "SO-2"]);
    let range = Filter {
        column: "amount".to_owned(),
        condition: Condition::Ge(Value::Integer(30)),
    };
    let page = store
        .query(&t, &spec, &query(vec![range], Some("amount"), 10))
        .await
        .unwrap();
    assert_eq!(ids(&page.rows), ["SO-3", "SO-2", "SO-4"]);
    let prefix = Filter {
        column: "customer".to_owned(),
        condition: Condition::Prefix("CUST-1".to_owned()),
    };
    let page = store
        .query(&t, &spec, &query(vec![prefix], None, 10))
        .await
        .unwrap();
    assert_eq!(ids(&page.rows), ["SO-1", "SO-2", "SO-4"]);

    // Keyset pages, both directions, see every row once.
    for descending in [false, true] {
        let mut q = query(vec![], Some("amount"), 3);
        q.descending = descending;
        let mut seen = Vec::new();
        loop {
            let page = store.query(&t, &spec, &q).await.unwrap();
            seen.extend(ids(&page.rows));
            match page.last {
                Some(last) => q.after = Some(last),
                None => break,
            }
        }
        let mut expected = vec!["SO-1", "SO-3", "SO-2", "SO-4"];
        if descending {
            expected.reverse();
        }
        assert_eq!(seen, expected);
    }

    // Bad queries and rows are refused, naming what is wrong; nothing changes.
    let unindexed = store
        .query(
            &t,
            &spec,
            &query(vec![eq("items", Value::Integer(2))], None, 10),
        )
        .await
        .unwrap_err();
    assert!(matches!(unindexed, Error::Invalid(_)), "{unindexed}");
    assert!(
        unindexed.to_string().contains("has no index"),
        "{unindexed}"
    );
    let mut wrong = row("SO-9", "CUST-9", 1.0);
    wrong.insert("items".to_owned(), Value::Text("two".into()));
    let err = store
        .apply(
            &t,
            &spec,
            vec![
                RowChange::Upsert(row("SO-8", "CUST-8", 1.0)),
                RowChange::Upsert(wrong),
            ],
            advance(9),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("\"items\" is integer"), "{err}");
    assert_eq!(
        store.progress(&t).await.unwrap(),
        progress(5),
        "all or nothing"
    );
    let all = store
        .query(&t, &spec, &query(vec![], None, 100))
        .await
        .unwrap();
    assert_eq!(all.rows.len(), 4);

    // Deletes; a failing statement in a batch rolls back its rows and its progress.
    store
        .apply(&t, &spec, vec![RowChange::Delete(key("SO-3"))], advance(6))
        .await
        .unwrap();
    let all = store
        .query(&t, &spec, &query(vec![], None, 100))
        .await
        .unwrap();
    assert_eq!(ids(&all.rows), ["SO-1", "SO-2", "SO-4"]);

    // A rebuild into another table takes the old one's place with its progress.
    let rebuilt = format!("{t}_rebuild");
    store.create(&rebuilt, &spec).await.unwrap();
    store
        .apply(
            &rebuilt,
            &spec,
            vec![RowChange::Upsert(row("SO-7", "CUST-7", 7.0))],
            advance(7),
        )
        .await
        .unwrap();
    store.swap(&rebuilt, &t, &spec).await.unwrap();
    let all = store
        .query(
            &t,
            &spec,
            &query(
                vec![eq("customer", Value::Text("CUST-7".into()))],
                None,
                100,
            ),
        )
        .await
        .unwrap();
    assert_eq!(ids(&all.rows), ["SO-7"]);
    assert_eq!(store.progress(&t).await.unwrap(), progress(7));
    assert!(store.progress(&rebuilt).await.unwrap().is_empty());
    assert_eq!(store.shape(&t).await.unwrap(), Some(spec.shape()));
    assert_eq!(store.shape(&rebuilt).await.unwrap(), None);
    // The name is free again for the next rebuild, indexes included.
    store.create(&rebuilt, &spec).await.unwrap();
    store.drop_table(&rebuilt).await.unwrap();
    store.drop_table(&t).await.unwrap();
    assert!(store.progress(&t).await.unwrap().is_empty());
    assert_eq!(store.shape(&t).await.unwrap(), None);

    // Names are checked before any SQL is made.
    let err = store
        .create("orders; drop table x", &spec)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Invalid(_)), "{err}");
}

#[tokio::test]
async fn sqlite_passes_the_suite() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("views.sqlite")).unwrap();
    suite(&store).await;
    // The rows survive reopening.
    let spec = spec();
    store.create("kept", &spec).await.unwrap();
    store
        .apply(
            "kept",
            &spec,
            vec![RowChange::Upsert(row("SO-1", "C", 1.0))],
            advance(1),
        )
        .await
        .unwrap();
    drop(store);
    let store = SqliteStore::open(&dir.path().join("views.sqlite")).unwrap();
    assert_eq!(store.progress("kept").await.unwrap(), progress(1));
}

/// The writer never checkpoints (its commits stay short); the checkpointer copies the WAL
/// into the database file beside it while the store is open.
#[tokio::test]
async fn sqlite_checkpoints_beside_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("views.sqlite");
    let store = SqliteStore::open(&path).unwrap();
    let spec = spec();
    store.create("orders", &spec).await.unwrap();
    let size = || std::fs::metadata(&path).unwrap().len();
    let empty = size();
    for i in 0..2000u64 {
        let id = format!("SO-{i}");
        store
            .apply(
                "orders",
                &spec,
                vec![RowChange::Upsert(row(&id, "C", i as f64))],
                advance(i + 1),
            )
            .await
            .unwrap();
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while size() < empty + 64 * 1024 {
        assert!(
            std::time::Instant::now() < deadline,
            "the database file is still {} bytes ({empty} empty): nothing was checkpointed",
            size()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(store.progress("orders").await.unwrap(), progress(2000));

    // A table made before shapes were recorded has an unknown one.
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch("CREATE TABLE legacy (order_id TEXT PRIMARY KEY)")
        .unwrap();
    assert_eq!(
        store.shape("legacy").await.unwrap().as_deref(),
        Some(crate::UNKNOWN_SHAPE)
    );
    assert_eq!(store.shape("orders").await.unwrap(), Some(spec.shape()));
    assert_eq!(store.shape("missing").await.unwrap(), None);
}

/// Under writes that never pause, the WAL stays near its bound: past it the checkpointer
/// holds the writer back and empties the WAL (a passive checkpoint alone never catches up).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_keeps_the_wal_bounded_under_steady_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("views.sqlite");
    let limit_frames = 256;
    let store = SqliteStore::open_with(&path, limit_frames).unwrap();
    let spec = spec();
    store.create("orders", &spec).await.unwrap();
    let wal = dir.path().join("views.sqlite-wal");
    let mut largest = 0;
    for i in 0..6000u64 {
        let changes = (0..4)
            .map(|j| RowChange::Upsert(row(&format!("SO-{i}-{j}"), "C", i as f64)))
            .collect();
        store
            .apply("orders", &spec, changes, advance(i + 1))
            .await
            .unwrap();
        largest = largest.max(std::fs::metadata(&wal).map_or(0, |m| m.len()));
    }
    assert!(
        largest < 64 << 20,
        "the WAL grew to {largest} bytes under a bound of {limit_frames} pages"
    );
}

#[tokio::test]
async fn postgres_passes_the_suite() {
    let url = std::env::var("WEIR_TEST_POSTGRES")
        .unwrap_or_else(|_| "host=127.0.0.1 port=5432 user=postgres dbname=test".to_owned());
    let store = PostgresStore::connect(&url).await.unwrap_or_else(|e| {
        panic!("PostgreSQL is needed for this test (start it, or set WEIR_TEST_POSTGRES): {e}")
    });
    suite(&store).await;
}
