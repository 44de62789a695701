//! A view in PostgreSQL on a fleet: two workers on one NATS server keep the example's
//! view in one database, each source partition projected by one member (every event
//! projected once across the fleet), a consistency token answered by either worker
//! whoever projects its partition, a rebuild on one worker swapping the table under the
//! other's partitions, and a killed worker's partitions taken over by the other with
//! nothing lost.

use std::process::Command;
use std::time::Duration;

use weir_test_support::WeirProcess;
use weir_test_support::nats::NatsServer;

use super::fleet::{members, node, publish, wait_for};
use super::{example_app, node_status, topic_events, weir};

/// A PostgreSQL database of its own, dropped at the end.
struct Database {
    name: String,
}

fn psql(sql: &str) -> std::process::Output {
    Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-c",
            sql,
        ])
        .output()
        .expect("psql (PostgreSQL's client) is needed for this test")
}

impl Database {
    fn create() -> Database {
        let name = format!("weir_fleet_views_{}", std::process::id());
        psql(&format!("DROP DATABASE IF EXISTS {name}"));
        let made = psql(&format!("CREATE DATABASE {name}"));
        assert!(
            made.status.success(),
            "PostgreSQL on 127.0.0.1:5432 (trust auth) is needed for this test: {}",
            String::from_utf8_lossy(&made.stderr)
        );
        Database { name }
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:5432/{}", self.name)
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        psql(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ));
    }
}

/// The example app, its view kept in `store`.
fn serve(dir: &std::path::Path, backend: &str, store: &str) -> WeirProcess {
    let app = example_app(dir);
    let manifest = std::fs::read_to_string(&app).unwrap();
    let manifest = manifest.replace(
        "[views.orders-by-customer]\n",
        &format!("[views.orders-by-customer]\nstore = {store:?}\n"),
    );
    assert!(manifest.contains("store = \"postgres://"));
    std::fs::write(&app, manifest).unwrap();
    WeirProcess::start(
        weir(),
        &[
            "--app",
            app.to_str().unwrap(),
            "--data",
            dir.join("data").to_str().unwrap(),
            "--backend",
            backend,
        ],
    )
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Places order `id` through `node`; the answer's consistency token.
fn place(node: &WeirProcess, id: &str) -> String {
    runtime().block_on(async {
        let res = reqwest::Client::new()
            .post(format!(
                "{}/v1/entities/order/{id}/commands/place",
                node.url
            ))
            .header("content-type", "application/json")
            .body(r#"{"customer":"CUST-1","amount":5.0,"currency":"EUR"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{id}");
        let body: serde_json::Value = res.json().await.unwrap();
        body["consistency_token"].as_str().unwrap().to_owned()
    })
}

/// The view's rows through `node`, filtered by `query`, once it has what `token` names.
fn rows(node: &WeirProcess, query: &str, token: Option<&str>) -> (u16, Vec<serde_json::Value>) {
    runtime().block_on(async {
        let mut url = format!(
            "{}/v1/views/orders-by-customer?limit=1000&{query}",
            node.url
        );
        if let Some(token) = token {
            url.push_str(&format!("&consistency={token}&wait_ms=10000"));
        }
        let res = reqwest::get(url).await.unwrap();
        let status = res.status().as_u16();
        let body: serde_json::Value = res.json().await.unwrap();
        let rows = body["rows"].as_array().cloned().unwrap_or_default();
        (status, rows)
    })
}

fn view_field(status: &serde_json::Value, field: &str) -> u64 {
    status["views"][0][field].as_u64().unwrap()
}

#[test]
fn a_postgresql_view_is_projected_once_across_the_fleet() {
    let server = NatsServer::start(false);
    let db = Database::create();
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut nodes: Vec<Option<WeirProcess>> = dirs
        .iter()
        .map(|d| Some(serve(d.path(), &server.url(), &db.url())))
        .collect();
    wait_for("two members", Duration::from_secs(30), || {
        let statuses: Vec<_> = (0..2).map(|i| node_status(node(&nodes, i))).collect();
        (!statuses.iter().all(|s| members(s).len() == 2)).then(|| format!("{statuses:?}"))
    });

    // Orders placed through one worker are read through the other at once: its answer
    // waits for the token, whichever member projects the token's partition.
    for n in 0..12 {
        let id = format!("SO-A{n}");
        let token = place(node(&nodes, n % 2), &id);
        let (status, found) = rows(
            node(&nodes, 1 - n % 2),
            &format!("order_id={id}"),
            Some(&token),
        );
        assert_eq!((status, found.len()), (200, 1), "{id} after {token}");
    }
    // And orders through the pipeline, into crm.orders, a source of the view.
    publish(node(&nodes, 0), 0..50);
    wait_for("the view complete", Duration::from_secs(60), || {
        let statuses: Vec<_> = (0..2).map(|i| node_status(node(&nodes, i))).collect();
        let (_, all) = rows(node(&nodes, 1), "", None);
        let done = all.len() == 62 && statuses.iter().all(|s| view_field(s, "lag") == 0);
        (!done).then(|| format!("{} rows; {statuses:?}", all.len()))
    });

    // Each source event was projected once in all: the two workers' counts add up to the
    // sources' events (every node projecting everything would give twice as many).
    let statuses: Vec<_> = (0..2).map(|i| node_status(node(&nodes, i))).collect();
    let projected: Vec<u64> = statuses.iter().map(|s| view_field(s, "events")).collect();
    let sources =
        topic_events(&statuses[0], "entity.order") + topic_events(&statuses[0], "crm.orders");
    assert_eq!(projected.iter().sum::<u64>(), sources, "{projected:?}");
    assert!(
        projected.iter().all(|p| *p > 0),
        "both workers project: {projected:?}"
    );

    // A rebuild on one worker swaps the table under the other's partitions too: the
    // other finds the progress it projected from moved (at its next batch, or within
    // seconds while idle) and projects on from the new table's; nothing is lost.
    super::cli(
        node(&nodes, 0),
        &["view", "orders-by-customer", "--rebuild"],
    );
    publish(node(&nodes, 1), 50..60);
    wait_for(
        "the view complete after the rebuild",
        Duration::from_secs(60),
        || {
            let statuses: Vec<_> = (0..2).map(|i| node_status(node(&nodes, i))).collect();
            let (_, all) = rows(node(&nodes, 0), "", None);
            let done = all.len() == 72 && statuses.iter().all(|s| view_field(s, "lag") == 0);
            (!done).then(|| format!("{} rows; {statuses:?}", all.len()))
        },
    );

    // One worker killed: the other takes its partitions from where the store says they
    // got to, and answers every token.
    nodes[1].take().unwrap().kill();
    for n in 0..12 {
        let id = format!("SO-B{n}");
        let token = place(node(&nodes, 0), &id);
        let (status, found) = rows(node(&nodes, 0), &format!("order_id={id}"), Some(&token));
        assert_eq!((status, found.len()), (200, 1), "{id} after {token}");
    }
    publish(node(&nodes, 0), 60..100);
    wait_for("the view complete again", Duration::from_secs(60), || {
        let status = node_status(node(&nodes, 0));
        let (_, all) = rows(node(&nodes, 0), "", None);
        let done = all.len() == 124 && view_field(&status, "lag") == 0;
        (!done).then(|| format!("{} rows; {status:?}", all.len()))
    });
    assert!(nodes[0].take().unwrap().stop());
    drop(db);
}
