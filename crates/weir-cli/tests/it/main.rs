//! End-to-end tests of the `weir` binary against the example app: a real `weir serve`
//! process on a free port, driven over HTTP and by the `weir` CLI itself.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use weir_test_support::WeirProcess;

mod asyncapi;
mod auth;
mod deploy;
mod entities;
mod fleet;
mod fleet_deploys;
mod fleet_views;
mod jobs;
mod kafka;
mod metrics;
mod new;
mod openapi;
mod pipelines;
mod replay;
mod schemas;
mod shutdown;
mod sources;
mod traces;

fn weir() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_weir"))
}

/// A copy of the example app in a temp dir whose function source points at the built
/// example, so tests do not share the example's data directory.
fn example_app(dir: &Path) -> PathBuf {
    let wasm = weir_test_support::example_function();
    let manifest =
        std::fs::read_to_string(weir_test_support::example_dir().join("weir.toml")).unwrap();
    let manifest = manifest.replace(
        "\"enrich-order/target/wasm32-wasip2/release/enrich_order.wasm\"",
        &format!("{:?}", wasm.display().to_string()),
    );
    let entity = weir_test_support::example_entity();
    let manifest = manifest.replace(
        "\"order-entity/target/wasm32-wasip2/release/order_entity.wasm\"",
        &format!("{:?}", entity.display().to_string()),
    );
    let projection = weir_test_support::example_projection();
    let manifest = manifest.replace(
        "\"orders-by-customer/target/wasm32-wasip2/release/orders_by_customer.wasm\"",
        &format!("{:?}", projection.display().to_string()),
    );
    let schemas = weir_test_support::example_dir().join("schemas");
    let manifest = manifest.replace("\"schemas/", &format!("\"{}/", schemas.display()));
    let seed = weir_test_support::example_dir().join("customers.json");
    let manifest = manifest.replace(
        "\"customers.json\"",
        &format!("{:?}", seed.display().to_string()),
    );
    let path = dir.join("weir.toml");
    std::fs::write(&path, manifest).unwrap();
    path
}

fn serve(dir: &Path) -> WeirProcess {
    serve_on(dir, "embedded")
}

/// The example app on `backend` (`embedded`, or a NATS server's URL).
fn serve_on(dir: &Path, backend: &str) -> WeirProcess {
    let app = example_app(dir);
    let data = dir.join("data");
    WeirProcess::start(
        weir(),
        &[
            "--app",
            app.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--backend",
            backend,
        ],
    )
}

/// Run the `weir` CLI against the node and return stdout.
fn cli(node: &WeirProcess, args: &[&str]) -> String {
    let output = Command::new(weir())
        .args(args)
        .args(["--url", &node.url])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "weir {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn post_sample(node: &WeirProcess) -> (u16, serde_json::Value) {
    let body =
        std::fs::read(weir_test_support::example_dir().join("sales-order-created.json")).unwrap();
    http_post(
        &format!("{}/v1/topics/erp.sales-orders/events", node.url),
        "application/cloudevents+json",
        body,
    )
}

fn http_post(url: &str, content_type: &str, body: Vec<u8>) -> (u16, serde_json::Value) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let res = reqwest::Client::new()
            .post(url)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(serde_json::Value::Null))
    })
}

/// `GET url`, which must succeed, as JSON.
fn http_get(url: &str) -> serde_json::Value {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let res = reqwest::get(url).await.unwrap();
        assert!(res.status().is_success(), "GET {url}: {}", res.status());
        res.json().await.unwrap()
    })
}

fn node_status(node: &WeirProcess) -> serde_json::Value {
    serde_json::from_str(&cli(node, &["status", "--json"])).unwrap()
}

fn topic_events(status: &serde_json::Value, topic: &str) -> u64 {
    status["topics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == topic)
        .unwrap()["end_offsets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .sum()
}

/// Wait until the example pipeline has no lag.
fn wait_caught_up(node: &WeirProcess) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = node_status(node);
        let p = &s["pipelines"][0];
        assert_eq!(p["state"], "running", "{s}");
        if p["lag"] == 0 {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "the pipeline did not catch up: {s}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn sample_order_is_enriched_and_tailed() {
    sample_order_flows("embedded");
}

/// The example app, unchanged, on NATS JetStream (a private nats-server 2.15).
#[test]
fn sample_order_is_enriched_and_tailed_on_nats() {
    let server = weir_test_support::nats::NatsServer::start(true);
    sample_order_flows(&format!("{}?sync=always", server.url()));
}

fn sample_order_flows(backend: &str) {
    let dir = tempfile::tempdir().unwrap();
    let node = serve_on(dir.path(), backend);

    let (status, body) = post_sample(&node);
    assert_eq!(status, 202, "{body}");
    assert!(body["offsets"][0]["offset"].is_u64(), "{body}");

    let out = cli(
        &node,
        &["tail", "crm.orders", "--from", "earliest", "--limit", "1"],
    );
    let event: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(event["type"], "crm.order.created");
    assert_eq!(event["subject"], "SO-1001");
    assert_eq!(event["partitionkey"], "CUST-42");
    assert_eq!(event["data"]["orderId"], "SO-1001");
    assert_eq!(event["data"]["customerId"], "CUST-42");
    assert_eq!(event["data"]["amount"], 1150.0);
    assert_eq!(event["data"]["currency"], "EUR");
    assert_eq!(event["data"]["originalCurrency"], "USD");
    // The customer record, from the key-value namespace seeded by customers.json.
    assert_eq!(event["data"]["customer"]["name"], "Acme GmbH");
    assert_eq!(event["data"]["customer"]["segment"], "enterprise");

    // The orders view projects the CRM's order too (as the README's quickstart shows).
    let deadline = Instant::now() + Duration::from_secs(30);
    let row = loop {
        let out = cli(
            &node,
            &["view", "orders-by-customer", "--where", "customer=CUST-42"],
        );
        if !out.trim().is_empty() {
            break serde_json::from_str::<serde_json::Value>(out.trim()).unwrap();
        }
        assert!(Instant::now() < deadline, "SO-1001 is not in the view");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        row,
        serde_json::json!({"order_id": "SO-1001", "customer": "CUST-42", "amount": 1150.0,
            "currency": "EUR", "status": "placed", "version": null})
    );

    // `weir publish --file` and the status listing.
    let events = weir_test_support::example_dir().join("events.jsonl");
    let out = cli(
        &node,
        &[
            "publish",
            "erp.sales-orders",
            "--file",
            events.to_str().unwrap(),
            "--json",
        ],
    );
    let published: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(published["offsets"].as_array().unwrap().len(), 3);
    wait_caught_up(&node);
    // A status is not a snapshot: its topics may be read before its pipelines. One taken
    // once the pipeline has committed everything sees every output (outputs are stored
    // before their commit, on every backend).
    let s = node_status(&node);
    assert_eq!(topic_events(&s, "crm.orders"), 4);
    let expected_backend = if backend == "embedded" {
        "embedded"
    } else {
        "nats"
    };
    assert_eq!(s["backend"], expected_backend, "{s}");
    assert_eq!(s["functions"][0]["name"], "enrich-order");
    assert_eq!(s["functions"][0]["version"].as_str().unwrap().len(), 12);
    assert!(node.stop(), "weir serve exits cleanly on SIGTERM");
}

/// On a NATS server without atomic batch publish (the machine's Debian 2.9.10 on
/// 127.0.0.1:4222), an app with entities does not start: an entity command's events
/// could be stored in part. `weir serve` says why and exits.
#[test]
fn entities_refuse_a_nats_server_without_atomic_batches() {
    if std::net::TcpStream::connect("127.0.0.1:4222").is_err() {
        panic!(
            "no NATS server on 127.0.0.1:4222; start it: start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let app = example_app(dir.path());
    let prefix = format!("entities{}", std::process::id());
    let backend = format!("nats://127.0.0.1:4222/{prefix}");
    let output = Command::new(weir())
        .args(["serve", "--listen", "127.0.0.1:0", "--app"])
        .arg(&app)
        .arg("--data")
        .arg(dir.path().join("data"))
        .args(["--backend", &backend])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(weir_log_nats::remove_prefix(&backend, &prefix))
        .unwrap();
    assert!(!output.status.success(), "weir serve started: {stderr}");
    assert!(
        stderr.contains("older than 2.12 has no atomic batches") && stderr.contains("entity.order"),
        "{stderr}"
    );
}

#[test]
fn restart_loses_nothing_and_processes_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let mut published = Vec::new();
    let publish = |node: &WeirProcess, range: std::ops::Range<u32>, published: &mut Vec<String>| {
        for n in range {
            let id = format!("order-{n}");
            cli(
                node,
                &[
                    "publish",
                    "erp.sales-orders",
                    "--type",
                    "SalesOrderCreated",
                    "--id",
                    &id,
                    "--key",
                    &format!("CUST-{}", n % 7),
                    "--data",
                    &format!(
                        r#"{{"SalesOrderNumber":"SO-{n}","SoldToParty":"CUST-{}","NetAmount":{n},"TransactionCurrency":"USD","CreationDate":"2026-11-22"}}"#,
                        n % 7
                    ),
                ],
            );
            published.push(format!("SO-{n}"));
        }
    };

    let node = serve(dir.path());
    publish(&node, 0..15, &mut published);
    wait_caught_up(&node);
    // Events published right before the stop are either processed before it or after
    // the restart, never lost and never twice.
    publish(&node, 15..25, &mut published);
    assert!(node.stop());

    let node = serve(dir.path());
    publish(&node, 25..40, &mut published);
    let s = wait_caught_up(&node);
    assert_eq!(topic_events(&s, "erp.sales-orders"), 40);
    assert_eq!(
        topic_events(&s, "crm.orders"),
        40,
        "exactly one output per input: {s}"
    );

    let out = cli(
        &node,
        &["tail", "crm.orders", "--from", "earliest", "--limit", "40"],
    );
    let mut orders: Vec<String> = out
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["data"]["orderId"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    orders.sort();
    published.sort();
    assert_eq!(orders, published);
    assert!(node.stop());
}

#[test]
fn bad_input_is_rejected_with_problem_json_and_the_node_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let node = serve(dir.path());
    let url = format!("{}/v1/topics/erp.sales-orders/events", node.url);
    let (status, body) = http_post(
        &url,
        "application/cloudevents+json",
        b"{\"specversion\":\"1.0\"".to_vec(),
    );
    assert_eq!(status, 400);
    assert_eq!(body["status"], 400);
    let (status, body) = http_post(
        &url,
        "application/cloudevents+json",
        br#"{"specversion":"1.0","id":"x","source":"s"}"#.to_vec(),
    );
    assert_eq!(status, 400);
    assert_eq!(body["attribute"], "type");
    let (status, _) = http_post(
        &format!("{}/v1/topics/nope/events", node.url),
        "application/cloudevents+json",
        std::fs::read(weir_test_support::example_dir().join("sales-order-created.json")).unwrap(),
    );
    assert_eq!(status, 404);
    let (status, _) = http_post(&url, "application/cloudevents+json", vec![b' '; 2 << 20]);
    assert_eq!(status, 413);
    assert_eq!(topic_events(&node_status(&node), "erp.sales-orders"), 0);
    let (status, _) = post_sample(&node);
    assert_eq!(status, 202);
}
