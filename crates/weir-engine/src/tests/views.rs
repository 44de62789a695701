//! Views on the embedded log: the example's orders-by-customer projection of the order
//! entity, queried with filters, pages and consistency tokens, resumed after a restart,
//! stopped at an event its table refuses; in SQLite and in PostgreSQL.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use weir_manifest::Manifest;

use super::options;
use crate::{ErrorClass, Node, ViewFilter, ViewRequest};

const VIEW: &str = "orders-by-customer";

fn manifest(dir: &Path, store: &str, amount_type: &str) -> Manifest {
    Manifest::from_toml_str(&manifest_text(store, amount_type), dir).unwrap()
}

fn manifest_text(store: &str, amount_type: &str) -> String {
    format!(
        r#"
[functions.order-entity]
source = "{}"
[functions.orders-by-customer]
source = "{}"
[entities.order]
function = "order-entity"
partitions = 2
[views.orders-by-customer]
function = "orders-by-customer"
entities = ["order"]
key = "order_id"
indexes = ["customer", "status"]
store = "{store}"
[views.orders-by-customer.columns]
order_id = "text"
customer = "text"
amount = "{amount_type}"
currency = "text"
status = "text"
version = "integer"
"#,
        weir_test_support::example_entity().display(),
        weir_test_support::example_projection().display(),
    )
}

async fn start(dir: &Path, store: &str, amount_type: &str) -> Arc<Node> {
    Node::start(options(&dir.join("data"), Some(manifest(dir, store, amount_type))).await)
        .await
        .unwrap()
}

/// A node in `dir` with the app `text`.
async fn start_text(dir: &Path, text: &str) -> Arc<Node> {
    let manifest = Manifest::from_toml_str(text, dir).unwrap();
    Node::start(options(&dir.join("data"), Some(manifest)).await)
        .await
        .unwrap()
}

/// Place order `id` for `customer`; its consistency token.
async fn place(node: &Node, id: &str, customer: &str, amount: f64) -> String {
    let data = serde_json::json!({"customer": customer, "amount": amount, "currency": "EUR"});
    node.entity_command("order", id, "place", data.to_string().into_bytes(), None)
        .await
        .unwrap()
        .token
        .to_string()
}

fn request(filters: &[(&str, &str, &str)], consistency: &[String]) -> ViewRequest {
    ViewRequest {
        filters: filters
            .iter()
            .map(|(column, op, value)| ViewFilter {
                column: (*column).to_owned(),
                op: (*op).to_owned(),
                value: (*value).to_owned(),
            })
            .collect(),
        consistency: consistency.to_vec(),
        wait: Duration::from_secs(10),
        ..ViewRequest::default()
    }
}

fn ids(page: &crate::ViewPage) -> Vec<String> {
    page.rows
        .iter()
        .map(|r| r["order_id"].as_str().unwrap().to_owned())
        .collect()
}

/// Commands, then queries that wait for them with their tokens: read-your-writes.
async fn project_and_query(node: &Node) {
    let mut tokens = Vec::new();
    for i in 0..12 {
        let customer = if i % 3 == 0 { "CUST-A" } else { "CUST-B" };
        tokens.push(place(node, &format!("SO-{i:02}"), customer, f64::from(i) + 1.0).await);
    }
    let paid = node
        .entity_command(
            "order",
            "SO-03",
            "pay",
            br#"{"amount": 4.0}"#.to_vec(),
            None,
        )
        .await
        .unwrap();
    tokens.push(paid.token.to_string());

    let all = node.view_query(VIEW, request(&[], &tokens)).await.unwrap();
    assert_eq!(all.rows.len(), 12, "{:?}", all.rows);
    assert!(all.next_page.is_none());
    let so3 = &all.rows[3];
    assert_eq!(so3["order_id"], "SO-03");
    assert_eq!(so3["status"], "paid");
    assert_eq!(
        so3["customer"], "CUST-A",
        "a later event keeps the columns it leaves out"
    );
    assert_eq!(so3["version"], 2);
    assert_eq!(so3["amount"], 4.0);

    let a = node
        .view_query(VIEW, request(&[("customer", "eq", "CUST-A")], &[]))
        .await
        .unwrap();
    assert_eq!(ids(&a), ["SO-00", "SO-03", "SO-06", "SO-09"]);
    let paid_a = node
        .view_query(
            VIEW,
            request(
                &[("customer", "eq", "CUST-A"), ("status", "eq", "paid")],
                &[],
            ),
        )
        .await
        .unwrap();
    assert_eq!(ids(&paid_a), ["SO-03"]);
    let range = node
        .view_query(
            VIEW,
            request(
                &[("order_id", "gte", "SO-05"), ("order_id", "lt", "SO-08")],
                &[],
            ),
        )
        .await
        .unwrap();
    assert_eq!(ids(&range), ["SO-05", "SO-06", "SO-07"]);
    let prefix = node
        .view_query(VIEW, request(&[("order_id", "prefix", "SO-1")], &[]))
        .await
        .unwrap();
    assert_eq!(ids(&prefix), ["SO-10", "SO-11"]);

    // Pages of 5, sorted by customer descending (ties by the key, descending too), add up
    // to the whole view.
    let mut seen = Vec::new();
    let mut page_token = None;
    loop {
        let mut r = request(&[], &[]);
        r.sort = Some(("customer".into(), true));
        r.limit = Some(5);
        r.page = page_token.clone();
        let page = node.view_query(VIEW, r).await.unwrap();
        assert!(page.rows.len() <= 5);
        seen.extend(ids(&page));
        match page.next_page {
            Some(next) => page_token = Some(next),
            None => break,
        }
    }
    let mut expected: Vec<String> = (0..12)
        .filter(|i| i % 3 != 0)
        .chain((0..12).filter(|i| i % 3 == 0))
        .map(|i| format!("SO-{i:02}"))
        .collect();
    expected[..8].sort_by(|a, b| b.cmp(a));
    expected[8..].sort_by(|a, b| b.cmp(a));
    assert_eq!(seen, expected);

    // What the view cannot answer is a clear error.
    let bad = |r: ViewRequest| async { node.view_query(VIEW, r).await.unwrap_err() };
    let e = bad(request(&[("amount", "eq", "3")], &[])).await;
    assert_eq!(e.class(), ErrorClass::Invalid, "{e}");
    assert!(e.to_string().contains("has no index"), "{e}");
    let e = bad(request(&[("nope", "eq", "3")], &[])).await;
    assert!(e.to_string().contains("not a column"), "{e}");
    let e = bad(request(&[("customer", "like", "x")], &[])).await;
    assert!(e.to_string().contains("not a filter"), "{e}");
    let mut r = request(&[], &[]);
    r.page = Some("bm90IGEgdG9rZW4".into());
    let e = bad(r).await;
    assert!(e.to_string().contains("page token"), "{e}");
    let e = bad(request(&[], &["crm.orders:0:1".into()])).await;
    assert_eq!(e.class(), ErrorClass::Invalid, "{e}");
    let mut r = request(&[], &["entity.order:0:1000000".into()]);
    r.wait = Duration::from_millis(50);
    let e = bad(r).await;
    assert_eq!(e.code(), "view-behind", "{e}");
    let e = node
        .view_query("nope", request(&[], &[]))
        .await
        .unwrap_err();
    assert_eq!(e.class(), ErrorClass::NotFound, "{e}");
}

#[tokio::test]
async fn a_view_projects_entity_events_and_answers_filtered_paged_queries() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), "sqlite", "real").await;
    project_and_query(&node).await;
    let status = node.status().await.unwrap();
    let view = &status.views[0];
    assert_eq!(
        (view.events, view.lag, view.store.as_str()),
        (13, 0, "sqlite")
    );
    assert!(view.errors.is_empty(), "{:?}", view.errors);
    node.shutdown().await;
}

#[tokio::test]
async fn a_view_in_postgresql_projects_and_answers_the_same() {
    let url = std::env::var("WEIR_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let store = weir_views::PostgresStore::connect(&url)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "PostgreSQL is needed for this test (start it, or set WEIR_TEST_POSTGRES_URL): {e}"
            )
        });
    // A table another run left behind would hold its rows and progress.
    weir_views::ViewStore::drop_table(&store, "orders_by_customer")
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), &url, "real").await;
    project_and_query(&node).await;
    assert_eq!(node.status().await.unwrap().views[0].store, "postgres");
    node.shutdown().await;
}

#[tokio::test]
async fn a_restarted_view_resumes_from_the_progress_in_its_store() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), "sqlite", "real").await;
    let mut tokens = Vec::new();
    for i in 0..6 {
        tokens.push(place(&node, &format!("o-{i}"), "C", 1.0).await);
    }
    let page = node.view_query(VIEW, request(&[], &tokens)).await.unwrap();
    assert_eq!(page.rows.len(), 6);
    node.shutdown().await;
    drop(node);

    let node = start(dir.path(), "sqlite", "real").await;
    let token = place(&node, "o-new", "C", 2.0).await;
    let page = node.view_query(VIEW, request(&[], &[token])).await.unwrap();
    assert_eq!(page.rows.len(), 7);
    // Only the new event was projected again: the rest was in the store's progress.
    let status = node.status().await.unwrap();
    assert_eq!(status.views[0].events, 1, "{:?}", status.views[0]);
    node.shutdown().await;
}

/// A view restarted with another key than its table was made with is projected again
/// into a table of the new shape (its old table would refuse every upsert).
#[tokio::test]
async fn a_view_whose_declaration_changed_is_projected_again_into_a_new_table() {
    let dir = tempfile::tempdir().unwrap();
    let text = manifest_text("sqlite", "real");
    let composite = text.replace(r#"key = "order_id""#, r#"key = ["customer", "order_id"]"#);
    assert_ne!(composite, text);
    let node = start_text(dir.path(), &composite).await;
    let mut tokens = Vec::new();
    for i in 0..4 {
        tokens.push(place(&node, &format!("o-{i}"), "C", 1.0).await);
    }
    let page = node.view_query(VIEW, request(&[], &tokens)).await.unwrap();
    assert_eq!(page.rows.len(), 4);
    node.shutdown().await;
    drop(node);

    // Back to `key = "order_id"`: every event is projected again, and the new ones land.
    let node = start(dir.path(), "sqlite", "real").await;
    let token = place(&node, "o-new", "C", 2.0).await;
    let page = node.view_query(VIEW, request(&[], &[token])).await.unwrap();
    assert_eq!(page.rows.len(), 5, "{:?}", page.rows);
    let status = node.status().await.unwrap();
    assert_eq!(status.views[0].events, 5, "{:?}", status.views[0]);
    assert!(status.views[0].errors.is_empty(), "{:?}", status.views[0]);
    node.shutdown().await;
}

/// A view restarted with another index is reindexed in place: queries filter on the new
/// index at once, and nothing is projected again.
#[tokio::test]
async fn a_view_whose_indexes_changed_is_reindexed_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let text = manifest_text("sqlite", "real");
    let fewer = text.replace(
        r#"indexes = ["customer", "status"]"#,
        r#"indexes = ["customer"]"#,
    );
    assert_ne!(fewer, text);
    let node = start_text(dir.path(), &fewer).await;
    let mut tokens = Vec::new();
    for i in 0..4 {
        tokens.push(place(&node, &format!("o-{i}"), "C", 1.0).await);
    }
    let err = node
        .view_query(VIEW, request(&[("status", "eq", "placed")], &tokens))
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Invalid, "{err}");
    node.shutdown().await;
    drop(node);

    let node = start(dir.path(), "sqlite", "real").await;
    let token = place(&node, "o-new", "C", 2.0).await;
    let page = node
        .view_query(VIEW, request(&[("status", "eq", "placed")], &[token]))
        .await
        .unwrap();
    assert_eq!(page.rows.len(), 5, "{:?}", page.rows);
    let status = node.status().await.unwrap();
    assert_eq!(
        status.views[0].events, 1,
        "only the new event: {:?}",
        status.views[0]
    );
    node.shutdown().await;
}

/// A node whose view store cannot be reached does not start, and leaves nothing of
/// itself running (its entity writers and retention task held the log).
#[tokio::test]
async fn a_node_that_cannot_reach_its_view_store_does_not_start_and_leaves_nothing_running() {
    let dir = tempfile::tempdir().unwrap();
    let text = manifest_text("postgres://postgres@127.0.0.1:1/test", "real");
    let manifest = Manifest::from_toml_str(&text, dir.path()).unwrap();
    let opts = options(&dir.path().join("data"), Some(manifest)).await;
    let log = opts.log.clone();
    let err = match Node::start(opts).await {
        Ok(_) => panic!("a node started without its view store"),
        Err(e) => e,
    };
    assert!(
        err.to_string().contains("cannot connect to PostgreSQL"),
        "{err}"
    );
    assert_eq!(
        Arc::strong_count(&log),
        1,
        "a task of the failed start holds the log"
    );
}

/// One event of the example's projection, published to a plain topic.
fn order_event(n: u32, ty: &str, id: &str, data: &str) -> weir_cloudevents::CloudEvent {
    let text = format!(
        r#"{{"specversion":"1.0","id":"e{n}","source":"test://views","type":"{ty}","entityid":"{id}","entityversion":1,"data":{data}}}"#
    );
    weir_cloudevents::CloudEvent::from_json_slice(text.as_bytes()).unwrap()
}

/// Waits until the view's status shows a stopped partition; that view's status.
async fn stopped(node: &Node) -> crate::ViewStatus {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let status = node.status().await.unwrap();
        let view = status.views[0].clone();
        if !view.errors.is_empty() {
            return view;
        }
        assert!(std::time::Instant::now() < deadline, "no error in {view:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn an_event_the_view_cannot_take_stops_its_partition_there_after_the_ones_before_it() {
    for (case, bad) in [
        // The store refuses the row: customer is declared an integer.
        (
            "row refused",
            r#"{"customer":"CUST-1","amount":1.0,"currency":"EUR"}"#,
        ),
        // The projection fails: OrderPlaced without its fields.
        ("projection failed", r#"{"nothing":true}"#),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            r#"
[topics.orders-in]
partitions = 1
[functions.orders-by-customer]
source = "{}"
[views.orders-by-customer]
function = "orders-by-customer"
sources = ["orders-in"]
key = "order_id"
[views.orders-by-customer.columns]
order_id = "text"
customer = "integer"
amount = "real"
currency = "text"
status = "text"
version = "integer"
"#,
            weir_test_support::example_projection().display(),
        );
        let manifest = Manifest::from_toml_str(&text, dir.path()).unwrap();
        let node = Node::start(options(&dir.path().join("data"), Some(manifest)).await)
            .await
            .unwrap();
        // One publish, so the four events are one batch of the projection.
        let paid = r#"{"amount":1.0}"#;
        node.publish(
            "orders-in",
            &[
                order_event(0, "OrderPaid", "o-1", paid),
                order_event(1, "OrderPaid", "o-2", paid),
                order_event(2, "OrderPlaced", "o-3", bad),
                order_event(3, "OrderPaid", "o-4", paid),
            ],
        )
        .await
        .unwrap();
        let view = stopped(&node).await;
        assert!(
            view.errors[0].contains("offset 2"),
            "{case}: {:?}",
            view.errors
        );
        assert_eq!(view.lag, 2, "{case}: {view:?}");
        // The events before it landed, nothing after it did.
        let page = node
            .view_query(VIEW, request(&[], &["orders-in:0:2".to_owned()]))
            .await
            .unwrap();
        assert_eq!(ids(&page), ["o-1", "o-2"], "{case}");
        node.shutdown().await;
    }
}

/// Every row of the view, by order id, as JSON text.
async fn rows(node: &Node, consistency: &[String]) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    let mut page_token = None;
    loop {
        let mut r = request(&[], consistency);
        r.limit = Some(7);
        r.page = page_token;
        let page = node.view_query(VIEW, r).await.unwrap();
        for row in &page.rows {
            out.insert(
                row["order_id"].as_str().unwrap().to_owned(),
                serde_json::Value::Object(row.clone()).to_string(),
            );
        }
        match page.next_page {
            Some(next) => page_token = Some(next),
            None => return out,
        }
    }
}

#[tokio::test]
async fn a_rebuilt_view_equals_the_incrementally_kept_one_and_commands_go_on_meanwhile() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), "sqlite", "real").await;
    let mut tokens = Vec::new();
    for i in 0..40 {
        tokens.push(place(&node, &format!("o-{i:02}"), "C", 1.0).await);
        if i % 4 == 0 {
            let paid = node
                .entity_command(
                    "order",
                    &format!("o-{i:02}"),
                    "pay",
                    br#"{"amount": 1.0}"#.to_vec(),
                    None,
                )
                .await
                .unwrap();
            tokens.push(paid.token.to_string());
        }
    }
    let incremental = rows(&node, &tokens).await;
    assert_eq!(incremental.len(), 40);

    node.rebuild_view(VIEW).unwrap();
    let again = node.rebuild_view(VIEW).unwrap_err();
    assert_eq!(again.code(), "rebuild-running", "{again}");
    // Commands during the rebuild land in the view that comes out of it.
    for i in 40..50 {
        tokens.push(place(&node, &format!("o-{i:02}"), "C", 2.0).await);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let rebuild = loop {
        let status = node.status().await.unwrap();
        let rebuild = status.views[0].rebuild.clone().unwrap();
        if rebuild.state != "running" {
            break rebuild;
        }
        assert!(std::time::Instant::now() < deadline, "{rebuild:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(rebuild.state, "done", "{rebuild:?}");
    assert!(rebuild.events >= 50, "{rebuild:?}");
    let rebuilt = rows(&node, &tokens).await;
    assert_eq!(rebuilt.len(), 50);
    for (id, row) in &incremental {
        assert_eq!(&rebuilt[id], row, "{id}");
    }
    // The view goes on after the swap, from the rebuilt table's progress.
    let token = place(&node, "o-after", "C", 3.0).await;
    assert_eq!(rows(&node, &[token]).await.len(), 51);
    node.shutdown().await;
    drop(node);

    // And a restart resumes from it.
    let node = start(dir.path(), "sqlite", "real").await;
    let token = place(&node, "o-restarted", "C", 3.0).await;
    assert_eq!(rows(&node, &[token]).await.len(), 52);
    assert_eq!(node.status().await.unwrap().views[0].events, 1);
    node.shutdown().await;
}
