//! The example's order entity through `weir entity` and its view through `weir view`,
//! and a node killed with SIGKILL in the middle of commands (and of their projection):
//! every acknowledged command's events are there once, versions have no gaps, nothing
//! unacknowledged is half-written, and the view holds exactly the journal's states.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use weir_test_support::WeirProcess;

use super::{cli, serve};

#[test]
fn weir_entity_sends_commands_and_shows_state_versions_and_events() {
    let dir = tempfile::tempdir().unwrap();
    let node = serve(dir.path());
    let placed = cli(
        &node,
        &[
            "entity",
            "order",
            "SO-1",
            "place",
            "--data",
            r#"{"customer":"CUST-1","amount":99.5,"currency":"EUR"}"#,
        ],
    );
    let placed: serde_json::Value = serde_json::from_str(&placed).unwrap();
    assert_eq!(placed["version"], 1);
    assert_eq!(placed["state"]["status"], "placed");
    let paid = cli(
        &node,
        &[
            "entity",
            "order",
            "SO-1",
            "pay",
            "--data",
            r#"{"amount":99.5}"#,
            "--if-match",
            "1",
        ],
    );
    let paid: serde_json::Value = serde_json::from_str(&paid).unwrap();
    // The view has the command's events once it answers with the command's token.
    let token = paid["consistency_token"].as_str().unwrap();
    let rows = cli(
        &node,
        &[
            "view",
            "orders-by-customer",
            "--where",
            "customer=CUST-1",
            "--consistency",
            token,
        ],
    );
    let row: serde_json::Value = serde_json::from_str(rows.trim()).unwrap();
    assert_eq!(row["order_id"], "SO-1");
    assert_eq!(row["status"], "paid");
    assert_eq!(row["amount"], 99.5);
    assert_eq!(
        cli(
            &node,
            &["view", "orders-by-customer", "--where", "customer=CUST-2"]
        ),
        ""
    );
    let state: serde_json::Value =
        serde_json::from_str(&cli(&node, &["entity", "order", "SO-1"])).unwrap();
    assert_eq!(state["version"], 2);
    assert_eq!(state["state"]["status"], "paid");
    let v1: serde_json::Value =
        serde_json::from_str(&cli(&node, &["entity", "order", "SO-1", "--version", "1"])).unwrap();
    assert_eq!(v1["state"]["status"], "placed");
    let events = cli(&node, &["entity", "order", "SO-1", "--events"]);
    let types: Vec<String> = events
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["type"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(types, ["OrderPlaced", "OrderPaid"]);
    let status = super::node_status(&node);
    assert_eq!(status["entities"][0]["name"], "order");
    assert_eq!(status["entities"][0]["entities"], 1);
    assert_eq!(status["entities"][0]["events"], 2);
    let text = cli(&node, &["status"]);
    assert!(
        text.contains("order  function order-entity  journal entity.order"),
        "{text}"
    );
    assert!(
        text.contains(
            "orders-by-customer  function orders-by-customer  store sqlite  sources crm.orders,entity.order"
        ),
        "{text}"
    );
    // A filter on a column without an index fails with the reason.
    let output = std::process::Command::new(super::weir())
        .args(["view", "orders-by-customer", "--where", "amount.gt=1"])
        .args(["--url", &node.url])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("has no index"), "{stderr}");

    // A rejected command fails the CLI with the entity's reason.
    let output = std::process::Command::new(super::weir())
        .args(["entity", "order", "SO-1", "ship", "--url", &node.url])
        .output()
        .unwrap();
    assert!(output.status.success(), "a paid order ships");
    let output = std::process::Command::new(super::weir())
        .args(["entity", "order", "SO-1", "cancel", "--url", &node.url])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("can no longer be cancelled"), "{stderr}");
    assert!(node.stop());
}

async fn send(client: &reqwest::Client, url: &str, body: &str) -> Option<u64> {
    let res = client
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .ok()?;
    if res.status() != 200 {
        return None;
    }
    let body: serde_json::Value = res.json().await.ok()?;
    body["version"].as_u64()
}

#[test]
fn sigkill_in_the_middle_of_commands_loses_no_acknowledged_event_and_leaves_no_gap() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let node = serve(dir.path());
    let url = node.url.clone();
    // Each client places and pays its own orders until the node dies; what it got 200
    // for is recorded.
    let acked: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let sent: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut clients = Vec::new();
    for c in 0..6 {
        let (url, acked, sent, client) = (url.clone(), acked.clone(), sent.clone(), client.clone());
        clients.push(rt.spawn(async move {
            for n in 0.. {
                let id = format!("C{c}-{n}");
                let base = format!("{url}/v1/entities/order/{id}/commands");
                for (command, body, version) in [
                    (
                        "place",
                        r#"{"customer":"CUST-1","amount":5.0,"currency":"EUR"}"#,
                        1,
                    ),
                    ("pay", r#"{"amount":5.0}"#, 2),
                ] {
                    sent.lock().unwrap().insert(id.clone(), version);
                    match send(&client, &format!("{base}/{command}"), body).await {
                        Some(v) => {
                            assert_eq!(v, version);
                            acked.lock().unwrap().insert(id.clone(), v);
                        }
                        None => return,
                    }
                }
            }
        }));
    }
    let started = Instant::now();
    while acked.lock().unwrap().len() < 100 && started.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(20));
    }
    node.kill();
    for c in clients {
        rt.block_on(c).unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let sent = sent.lock().unwrap().clone();
    assert!(
        acked.len() >= 100,
        "only {} orders were acknowledged",
        acked.len()
    );

    let node = WeirProcess::start(
        super::weir(),
        &[
            "--app",
            dir.path().join("weir.toml").to_str().unwrap(),
            "--data",
            dir.path().join("data").to_str().unwrap(),
        ],
    );
    let get = |path: String| -> (u16, serde_json::Value) {
        rt.block_on(async {
            let res = client
                .get(format!("{}{path}", node.url))
                .send()
                .await
                .unwrap();
            let status = res.status().as_u16();
            (status, res.json().await.unwrap_or(serde_json::Value::Null))
        })
    };
    let mut ids = BTreeSet::new();
    let mut journal_versions = BTreeMap::new();
    for (id, sent_version) in &sent {
        let (status, events) = get(format!("/v1/entities/order/{id}/events"));
        let events: Vec<serde_json::Value> = if status == 404 {
            Vec::new()
        } else {
            events.as_array().unwrap().clone()
        };
        let versions: Vec<u64> = events
            .iter()
            .map(|e| e["entityversion"].as_u64().unwrap())
            .collect();
        // No gap, nothing doubled, nothing beyond what was sent.
        assert_eq!(
            versions,
            (1..=versions.len() as u64).collect::<Vec<_>>(),
            "{id}"
        );
        assert!(versions.len() as u64 <= *sent_version, "{id}: {versions:?}");
        // Every acknowledged command is there.
        let acked_version = acked.get(id).copied().unwrap_or(0);
        assert!(
            versions.len() as u64 >= acked_version,
            "{id} lost an acknowledged event"
        );
        for e in &events {
            assert!(ids.insert(e["id"].as_str().unwrap().to_owned()));
        }
        // The state is rebuilt to the journal's last version.
        if !versions.is_empty() {
            journal_versions.insert(id.clone(), versions.len() as u64);
            let (_, state) = get(format!("/v1/entities/order/{id}"));
            assert_eq!(state["version"].as_u64().unwrap(), versions.len() as u64);
        }
    }
    // The view, once it has caught up, holds each order's state as of its journal: none
    // lost, none ahead, whatever the projection was doing when the node died.
    let started = Instant::now();
    loop {
        let (_, status) = get("/v1/status".to_owned());
        if status["views"][0]["lag"] == 0 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{status}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut rows = BTreeMap::new();
    let mut page: Option<String> = None;
    loop {
        let query = page
            .as_ref()
            .map_or(String::new(), |p| format!("&page={p}"));
        let (status, body) = get(format!("/v1/views/orders-by-customer?limit=1000{query}"));
        assert_eq!(status, 200, "{body}");
        for row in body["rows"].as_array().unwrap() {
            let id = row["order_id"].as_str().unwrap().to_owned();
            rows.insert(id, row["version"].as_u64().unwrap());
        }
        match body["next_page"].as_str() {
            Some(next) => page = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(rows, journal_versions, "the view is the journal's states");

    // The node takes commands again where the journal left off.
    let (id, _) = acked.iter().find(|(_, v)| **v == 2).unwrap();
    let got = rt.block_on(send(
        &client,
        &format!("{}/v1/entities/order/{id}/commands/ship", node.url),
        "",
    ));
    assert_eq!(got, Some(3));
    assert!(node.stop());
}
