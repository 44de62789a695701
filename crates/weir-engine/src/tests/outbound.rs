//! Circuit breakers per destination functions send HTTP to: the destination is down
//! while events come, then up. The circuit opens after five failures in a row, calls to
//! it fail at once and their events wait (not charged an attempt), a probe closes it once
//! the destination answers; nothing is dead-lettered that the destination took after.

use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weir_cloudevents::{CloudEvent, ExtensionValue};
use weir_manifest::Manifest;

use crate::Node;

fn app(dir: &Path, port: u16) -> Manifest {
    let text = format!(
        r#"
[topics.orders]
partitions = 2
[topics.out]
[functions.caller]
source = {wasm:?}
config = {{ url = "http://127.0.0.1:{port}/stock" }}
capabilities = {{ http = ["127.0.0.1:{port}"], http_timeout_ms = 2000 }}
[pipelines.check-stock]
from = "orders"
function = "caller"
to = "out"
retry = {{ max_attempts = 6, initial_backoff_ms = 10, max_backoff_ms = 50 }}
"#,
        wasm = weir_test_support::test_guest("guest-capabilities")
            .display()
            .to_string()
    );
    Manifest::from_toml_str(&text, dir).unwrap()
}

/// An HTTP server on `port` answering `200 ok` to every request, until the task is
/// dropped.
async fn destination(port: u16) -> tokio::task::JoinHandle<()> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut read = Vec::new();
                while !read.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => read.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = stream
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    )
                    .await;
            });
        }
    })
}

async fn until(
    node: &Node,
    what: &str,
    check: impl Fn(&crate::NodeStatus) -> bool,
) -> crate::NodeStatus {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let status = node.status().await.unwrap();
        if check(&status) {
            return status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: {:?} {:?}",
            status.pipelines,
            status.circuits
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_of_a_destination_opens_its_circuit_and_events_wait_instead_of_dead_lettering() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let node =
        Node::start(super::options(&dir.path().join("data"), Some(app(dir.path(), port))).await)
            .await
            .unwrap();
    let events: Vec<CloudEvent> = (0..20)
        .map(|n| {
            let mut e = CloudEvent::new(format!("order-{n}"), "/test", "test.http");
            e.extensions.insert(
                "partitionkey".into(),
                ExtensionValue::String(format!("customer-{}", n % 4)),
            );
            e
        })
        .collect();
    node.publish("orders", &events).await.unwrap();
    let destination_url = format!("http://127.0.0.1:{port}");
    until(&node, "the circuit never opened", |s| {
        s.circuits
            .iter()
            .any(|c| c.destination == destination_url && c.state != "closed")
    })
    .await;
    // Six attempts an event (more than the 5 failures that open the circuit, so the
    // first event's alone open it) would have dead-lettered them all by now without it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let status = node.status().await.unwrap();
    let pipeline = &status.pipelines[0];
    assert_eq!(
        (pipeline.processed, pipeline.dead_lettered),
        (0, 0),
        "{pipeline:?}"
    );

    let server = destination(port).await;
    let status = until(&node, "the events were not all processed", |s| {
        s.pipelines[0].processed + s.pipelines[0].dead_lettered == 20
    })
    .await;
    assert_eq!(
        status.pipelines[0].dead_lettered, 0,
        "{:?}",
        status.pipelines[0]
    );
    let circuit = status
        .circuits
        .iter()
        .find(|c| c.destination == destination_url)
        .unwrap();
    assert_eq!(circuit.state, "closed", "{circuit:?}");
    assert!(circuit.opened >= 1, "{circuit:?}");
    let outputs = node.read("out", 0, 0, 100).await.unwrap();
    assert_eq!(outputs.len(), 20);
    for output in &outputs {
        let event = output.event.to_json_value();
        assert_eq!(event["data"]["status"], 200, "{event}");
    }
    server.abort();
    node.shutdown().await;
}
