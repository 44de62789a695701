//! Webhook sinks against a receiver that verifies with the Standard Webhooks reference
//! library (`weir_test_support::webhook`).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use futures::StreamExt;
use weir_cloudevents::{CloudEvent, ExtensionValue};
use weir_manifest::Manifest;
use weir_test_support::webhook::{Behaviour, SECRET, WebhookReceiver};

use crate::{Node, StartFrom};

/// An app with topic `alerts` and sink `hook` to `url`, with `settings` (lines of the
/// sink's table).
fn app(dir: &Path, url: &str, settings: &str) -> Manifest {
    std::fs::write(dir.join("hook.secret"), format!("{SECRET}\n")).unwrap();
    let text = format!(
        r#"
[topics.alerts]
partitions = 2
[sinks.hook]
topic = "alerts"
url = "{url}"
secret = {{ file = "hook.secret" }}
{settings}
"#
    );
    let mut m = Manifest::from_toml_str(&text, dir).unwrap();
    m.text = text;
    m
}

fn alert(n: u32, subject: &str) -> CloudEvent {
    let mut e = CloudEvent::new(format!("alert-{n}"), "/test", "com.example.alert");
    e.subject = Some(subject.to_owned());
    e.extensions.insert(
        "partitionkey".into(),
        ExtensionValue::String(format!("dev-{}", n % 3)),
    );
    e.data = Some(weir_cloudevents::Data::Json(
        weir_cloudevents::Json::from_value(&serde_json::json!({ "n": n, "device": n % 3 })),
    ));
    e
}

/// Waits until `check` holds of the node's first sink's status (30 s).
async fn until_sink(node: &Node, check: impl Fn(&crate::SinkStatus) -> bool) -> crate::SinkStatus {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let status = node.status().await.unwrap();
        let sink = status.sinks[0].clone();
        if check(&sink) {
            return sink;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the sink did not get there: {sink:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_sink_delivers_signed_in_order_retries_and_dead_letters_what_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = WebhookReceiver::start(
        SECRET,
        Behaviour {
            fail_first: 3,
            refuse_subject: Some("bad".into()),
            ..Behaviour::default()
        },
    );
    let manifest = app(
        dir.path(),
        &receiver.url,
        "retry = { initial_backoff_ms = 10 }",
    );
    let node = Node::start(super::options(&dir.path().join("data"), Some(manifest)).await)
        .await
        .unwrap();
    let events: Vec<CloudEvent> = (0..30)
        .map(|n| alert(n, if n == 7 { "bad" } else { "ok" }))
        .collect();
    node.publish("alerts", &events).await.unwrap();
    let sink = until_sink(&node, |s| s.delivered + s.dead_lettered == 30 && s.lag == 0).await;
    assert_eq!((sink.delivered, sink.dead_lettered), (29, 1), "{sink:?}");
    assert!(sink.retries >= 3, "{sink:?}");
    assert_eq!(sink.state, "running");

    let requests = receiver.requests();
    // Every request verifies with the reference verifier, and fails it once tampered with.
    for r in &requests {
        assert_eq!(r["verified"], true, "{r}");
        assert_eq!(r["tamper_rejected"], true, "{r}");
        assert_eq!(r["id"], r["event"]["id"], "webhook-id is the event's id");
    }
    // Each device's alerts arrive in order; the 503s were tried again.
    let delivered: Vec<&serde_json::Value> =
        requests.iter().filter(|r| r["status"] == 204).collect();
    assert_eq!(delivered.len(), 29);
    for device in 0..3 {
        let ns: Vec<u64> = delivered
            .iter()
            .filter(|r| r["event"]["data"]["device"] == device)
            .map(|r| r["event"]["data"]["n"].as_u64().unwrap())
            .collect();
        let expected: Vec<u64> = (0..30).filter(|n| n % 3 == device && *n != 7).collect();
        assert_eq!(ns, expected, "device {device}");
    }
    assert_eq!(requests.iter().filter(|r| r["status"] == 503).count(), 3);

    // The refused event is in the dead-letter topic with why.
    let dead: Vec<CloudEvent> = node
        .subscribe("hook.dlq", StartFrom::Earliest)
        .await
        .unwrap()
        .take(1)
        .map(|r| r.unwrap().event)
        .collect()
        .await;
    assert_eq!(dead[0].id, "alert-7");
    let ext = |k: &str| dead[0].extensions.get(k).cloned();
    assert_eq!(ext("dlqsink"), Some(ExtensionValue::String("hook".into())));
    assert_eq!(
        ext("dlqreason"),
        Some(ExtensionValue::String("refused".into()))
    );
    let Some(ExtensionValue::String(error)) = ext("dlqerror") else {
        panic!("no dlqerror")
    };
    assert!(error.contains("400"), "{error}");

    // A restart delivers nothing again: the group committed past everything.
    node.shutdown().await;
    drop(node);
    let before = receiver.requests().len();
    let manifest = app(
        dir.path(),
        &receiver.url,
        "retry = { initial_backoff_ms = 10 }",
    );
    let node = Node::start(super::options(&dir.path().join("data"), Some(manifest)).await)
        .await
        .unwrap();
    node.publish("alerts", &[alert(30, "ok")]).await.unwrap();
    until_sink(&node, |s| s.delivered == 1).await;
    let after = receiver.requests();
    assert_eq!(after.len(), before + 1);
    assert_eq!(after.last().unwrap()["id"], "alert-30");
    node.shutdown().await;
}

/// A partition's events of different keys go at once (up to `max_in_flight`), each key's
/// one after another: the receiver answers nothing (but 503, after 10 s) before six
/// requests are open at once, more than the two partitions would send one at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_delivers_different_keys_at_once_and_each_key_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = WebhookReceiver::start(
        SECRET,
        Behaviour {
            hold_until: 6,
            ..Behaviour::default()
        },
    );
    let manifest = app(dir.path(), &receiver.url, "max_in_flight = 8");
    let node = Node::start(super::options(&dir.path().join("data"), Some(manifest)).await)
        .await
        .unwrap();
    let events: Vec<CloudEvent> = (0..60)
        .map(|n| {
            let mut e = alert(n, "ok");
            e.extensions.insert(
                "partitionkey".into(),
                ExtensionValue::String(format!("dev-{}", n % 10)),
            );
            e
        })
        .collect();
    node.publish("alerts", &events).await.unwrap();
    let sink = until_sink(&node, |s| s.delivered == 60 && s.lag == 0).await;
    assert_eq!((sink.retries, sink.dead_lettered), (0, 0), "{sink:?}");
    let requests = receiver.requests();
    assert_eq!(requests.len(), 60, "each delivered once, none answered 503");
    for key in 0..10 {
        let ns: Vec<u64> = requests
            .iter()
            .map(|r| r["event"]["data"]["n"].as_u64().unwrap())
            .filter(|n| n % 10 == key)
            .collect();
        let expected: Vec<u64> = (0..60).filter(|n| n % 10 == key).collect();
        assert_eq!(ns, expected, "key dev-{key} in order");
    }
    node.shutdown().await;
}

/// With `max_in_flight = 1` a partition's events go one at a time, in offset order,
/// whatever their keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_in_flight_delivers_a_partition_in_offset_order() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = WebhookReceiver::start(SECRET, Behaviour::default());
    let text = app(dir.path(), &receiver.url, "max_in_flight = 1")
        .text
        .replace("partitions = 2", "partitions = 1");
    let node = deliver_thirty(dir.path(), text).await;
    let ns: Vec<u64> = receiver
        .requests()
        .iter()
        .map(|r| r["event"]["data"]["n"].as_u64().unwrap())
        .collect();
    assert_eq!(ns, (0..30).collect::<Vec<u64>>());
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_receiver_exhausts_the_retries_then_the_event_is_dead_lettered() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/hook");
    let manifest = app(
        dir.path(),
        &url,
        "retry = { max_attempts = 3, initial_backoff_ms = 10, max_backoff_ms = 20 }\ncircuit_failures = 0",
    );
    let node = Node::start(super::options(&dir.path().join("data"), Some(manifest)).await)
        .await
        .unwrap();
    node.publish("alerts", &[alert(1, "ok")]).await.unwrap();
    let sink = until_sink(&node, |s| s.dead_lettered == 1).await;
    assert_eq!((sink.delivered, sink.retries), (0, 2), "{sink:?}");
    assert!(
        sink.error.as_deref().is_some_and(|e| e.contains("connect")),
        "{sink:?}"
    );
    let dead = node.read("hook.dlq", 0, 0, 10).await.unwrap();
    assert_eq!(
        dead[0].event.extensions.get("dlqreason"),
        Some(&ExtensionValue::String("retries_exhausted".into()))
    );
    assert_eq!(
        dead[0].event.extensions.get("dlqattempts"),
        Some(&ExtensionValue::Integer(3))
    );
    // A deploy pointing the sink elsewhere restarts it.
    let receiver = WebhookReceiver::start(SECRET, Behaviour::default());
    let text = app(dir.path(), &receiver.url, "").text;
    node.deploy_app(&text, BTreeMap::new()).await.unwrap();
    node.publish("alerts", &[alert(2, "ok")]).await.unwrap();
    until_sink(&node, |s| s.delivered == 1).await;
    assert_eq!(receiver.requests()[0]["id"], "alert-2");
    // Re-driving the dead letter delivers it, signed, with its id and without its dlq
    // attributes; the next re-drive finds nothing new.
    let report = node.redrive_sink("hook", None).await.unwrap();
    assert_eq!(
        (report.delivered, report.refused, report.stopped.clone()),
        (1, 0, None)
    );
    let requests = receiver.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[1]["id"], "alert-1");
    assert!(requests[1].get("dlqreason").is_none(), "{}", requests[1]);
    assert!(requests[1].get("dlqsink").is_none(), "{}", requests[1]);
    let again = node.redrive_sink("hook", None).await.unwrap();
    assert_eq!(again.delivered, 0);
    assert_eq!(receiver.requests().len(), 2);
    let unknown = node.redrive_sink("nope", None).await.unwrap_err();
    assert!(unknown.to_string().contains("\"hook\""), "{unknown}");
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redrive_stops_where_the_destination_is_still_down_and_resumes_there() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/hook");
    let settings = "retry = { max_attempts = 1 }\ncircuit_failures = 0";
    let manifest = app(dir.path(), &url, settings);
    let node = Node::start(super::options(&dir.path().join("data"), Some(manifest)).await)
        .await
        .unwrap();
    node.publish("alerts", &[alert(1, "ok"), alert(2, "ok")])
        .await
        .unwrap();
    until_sink(&node, |s| s.dead_lettered == 2).await;
    // Still down: nothing delivered, nothing committed past the first.
    let report = node.redrive_sink("hook", None).await.unwrap();
    assert_eq!(report.delivered, 0);
    assert!(
        report
            .stopped
            .as_deref()
            .is_some_and(|s| s.contains("alert-")),
        "{report:?}"
    );
    // Up on the same port: both are delivered by the next re-drive.
    let receiver = WebhookReceiver::start(
        SECRET,
        Behaviour {
            port: Some(port),
            ..Behaviour::default()
        },
    );
    let report = node.redrive_sink("hook", None).await.unwrap();
    assert_eq!(
        (report.delivered, report.stopped.clone()),
        (2, None),
        "{report:?}"
    );
    let mut ids: Vec<String> = receiver
        .requests()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    assert_eq!(ids, ["alert-1", "alert-2"]);
    node.shutdown().await;
}

/// The receiver is down while events come, then up: the circuit opens after three
/// failures in a row, probes, and closes; nothing is dead-lettered that the receiver
/// took once it was back, and each device's events arrive in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_opens_the_circuit_and_nothing_is_dead_lettered_that_arrives_after() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let manifest = app(
        dir.path(),
        &format!("http://127.0.0.1:{port}/hook"),
        "retry = { max_attempts = 3, initial_backoff_ms = 10, max_backoff_ms = 50 }\ncircuit_failures = 3",
    );
    let node = Node::start(super::options(&dir.path().join("data"), Some(manifest)).await)
        .await
        .unwrap();
    let events: Vec<CloudEvent> = (0..20).map(|n| alert(n, "ok")).collect();
    node.publish("alerts", &events).await.unwrap();
    until_sink(&node, |s| s.circuit == "open").await;
    // Probes fail for a while (the first after 1 s, the next 2 s later).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let sink = node.status().await.unwrap().sinks[0].clone();
    assert_eq!((sink.delivered, sink.dead_lettered), (0, 0), "{sink:?}");
    assert_eq!(sink.state, "retrying", "{sink:?}");

    let receiver = WebhookReceiver::start(
        SECRET,
        Behaviour {
            port: Some(port),
            ..Behaviour::default()
        },
    );
    let sink = until_sink(&node, |s| s.delivered == 20).await;
    assert_eq!(
        (sink.dead_lettered, sink.circuit, sink.state),
        (0, "closed", "running")
    );
    let requests = receiver.requests();
    for device in 0..3 {
        let ns: Vec<u64> = requests
            .iter()
            .filter(|r| r["event"]["data"]["device"] == device)
            .map(|r| r["event"]["data"]["n"].as_u64().unwrap())
            .collect();
        let expected: Vec<u64> = (0..20).filter(|n| n % 3 == device).collect();
        assert_eq!(ns, expected, "device {device}");
    }
    node.shutdown().await;
}

/// An app with topic `alerts` and a broker sink `out` to `url`, publishing to `to`.
fn broker_app(dir: &Path, url: &str, to: &str, settings: &str) -> String {
    let text = format!(
        r#"
[topics.alerts]
partitions = 2
[sinks.out]
topic = "alerts"
url = "{url}"
to = "{to}"
{settings}
"#
    );
    Manifest::from_toml_str(&text, dir).unwrap();
    text
}

/// Each device's events in order, once: `ids` in delivery order.
fn assert_in_order(ids: &[String]) {
    assert_eq!(ids.len(), 30, "{ids:?}");
    for device in 0..3 {
        let mine: Vec<&String> = ids
            .iter()
            .filter(|id| id[6..].parse::<u32>().unwrap() % 3 == device)
            .collect();
        let expected: Vec<String> = (0..30)
            .filter(|n| n % 3 == device)
            .map(|n| format!("alert-{n}"))
            .collect();
        assert_eq!(mine, expected.iter().collect::<Vec<_>>());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jetstream_sink_publishes_each_event_with_its_id_and_dead_letters_what_no_stream_takes() {
    let server = weir_test_support::nats::NatsServer::start(false);
    let js = async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap());
    let stream = js
        .create_stream(async_nats::jetstream::stream::Config {
            name: "ALERTS".into(),
            subjects: vec!["alerts.>".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = server.url().replace("nats://", "jetstream://");
    let text = broker_app(dir.path(), &url, "alerts.hot", "");
    let manifest = {
        let mut m = Manifest::from_toml_str(&text, dir.path()).unwrap();
        m.text = text;
        m
    };
    let node = Node::start(super::options(&dir.path().join("data"), Some(manifest)).await)
        .await
        .unwrap();
    let events: Vec<CloudEvent> = (0..30).map(|n| alert(n, "ok")).collect();
    node.publish("alerts", &events).await.unwrap();
    let sink = until_sink(&node, |s| s.delivered == 30 && s.lag == 0).await;
    assert_eq!(sink.dead_lettered, 0, "{sink:?}");

    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig::default())
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap();
    let mut ids = Vec::new();
    while ids.len() < 30 {
        let m = tokio::time::timeout(Duration::from_secs(10), messages.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let event = CloudEvent::from_json_slice(&m.payload).unwrap();
        let headers = m.headers.clone().unwrap();
        assert_eq!(headers.get("Nats-Msg-Id").unwrap().as_str(), event.id);
        assert_eq!(m.subject.as_str(), "alerts.hot");
        ids.push(event.id);
    }
    assert_in_order(&ids);

    // A subject no stream takes: retried, then dead-lettered.
    let text = broker_app(
        dir.path(),
        &url,
        "nowhere.x",
        "retry = { max_attempts = 2, initial_backoff_ms = 10 }\ncircuit_failures = 0",
    );
    node.deploy_app(&text, BTreeMap::new()).await.unwrap();
    node.publish("alerts", &[alert(31, "ok")]).await.unwrap();
    let sink = until_sink(&node, |s| s.dead_lettered == 1).await;
    assert_eq!(sink.retries, 1, "{sink:?}");
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_sink_appends_each_event_to_its_stream_in_order() {
    let key = weir_test_support::mqtt::unique("weir:test:sink");
    let url = weir_test_support::redis::redis();
    let dir = tempfile::tempdir().unwrap();
    let text = broker_app(dir.path(), &url, &key, "");
    let manifest = {
        let mut m = Manifest::from_toml_str(&text, dir.path()).unwrap();
        m.text = text;
        m
    };
    let node = Node::start(super::options(&dir.path().join("data"), Some(manifest)).await)
        .await
        .unwrap();
    let events: Vec<CloudEvent> = (0..30).map(|n| alert(n, "ok")).collect();
    node.publish("alerts", &events).await.unwrap();
    until_sink(&node, |s| s.delivered == 30 && s.lag == 0).await;
    node.shutdown().await;

    let client = redis::Client::open(url.as_str()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let entries: redis::streams::StreamRangeReply =
        redis::AsyncCommands::xrange_all(&mut connection, &key)
            .await
            .unwrap();
    let ids: Vec<String> = entries
        .ids
        .iter()
        .map(|entry| {
            let data: Vec<u8> = entry.get("data").unwrap();
            CloudEvent::from_json_slice(&data).unwrap().id
        })
        .collect();
    assert_in_order(&ids);
}

/// Starts a node with `text`, publishes alerts 0..30 and waits until the sink delivered
/// them all.
async fn deliver_thirty(dir: &Path, text: String) -> std::sync::Arc<Node> {
    let mut manifest = Manifest::from_toml_str(&text, dir).unwrap();
    manifest.text = text;
    let node = Node::start(super::options(&dir.join("data"), Some(manifest)).await)
        .await
        .unwrap();
    let events: Vec<CloudEvent> = (0..30).map(|n| alert(n, "ok")).collect();
    node.publish("alerts", &events).await.unwrap();
    until_sink(&node, |s| s.delivered == 30 && s.lag == 0).await;
    node
}

/// What a source of `url` reading `subscribe` takes, as events (their payloads).
async fn read_back(url: String, subscribe: &str, n: usize) -> Vec<weir_mesh::Message> {
    use weir_mesh::Source;
    let options = weir_mesh::SourceOptions {
        name: "read-back".into(),
        app: "sinks".into(),
        url: url.clone(),
        subscribe: vec![subscribe.to_owned()],
        ..Default::default()
    };
    let mut source: Box<dyn Source> = if url.starts_with("kafka") {
        Box::new(weir_mesh_kafka::KafkaSource::open(&options).unwrap())
    } else {
        Box::new(weir_mesh_amqp::AmqpSource::open(&options).unwrap())
    };
    let mut got = Vec::new();
    while got.len() < n {
        let batch = tokio::time::timeout(Duration::from_secs(30), source.next(n - got.len()))
            .await
            .unwrap_or_else(|_| panic!("{} of {n} read back within 30 s", got.len()))
            .unwrap();
        got.extend(batch);
    }
    let tokens: Vec<u64> = got.iter().map(|m| m.token).collect();
    source.ack(&tokens).await.unwrap();
    source.close().await;
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kafka_sink_produces_each_event_keyed_by_its_partition_key() {
    let broker = weir_test_support::kafka::KafkaBroker::start();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("kafka://{}?fetch_wait_ms=10", broker.address());
    // Brokers that do not create topics on first use (tansu does not) need it first.
    let admin: rdkafka::admin::AdminClient<_> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", broker.address())
        .create()
        .unwrap();
    let topic =
        rdkafka::admin::NewTopic::new("alerts-out", 2, rdkafka::admin::TopicReplication::Fixed(1));
    for created in admin
        .create_topics(&[topic], &rdkafka::admin::AdminOptions::new())
        .await
        .unwrap()
    {
        created.unwrap();
    }
    let node = deliver_thirty(dir.path(), broker_app(dir.path(), &url, "alerts-out", "")).await;
    node.shutdown().await;
    let messages = read_back(url, "alerts-out", 30).await;
    let ids: Vec<String> = messages
        .iter()
        .map(|m| {
            let event = CloudEvent::from_json_slice(&m.payload).unwrap();
            let key = m.headers.iter().find(|(k, _)| k == "kafka-key").unwrap();
            assert_eq!(Some(key.1.as_str()), event.partition_key());
            event.id
        })
        .collect();
    // Each key in one partition, so each device's events in order.
    assert_eq!(ids.len(), 30);
    for device in 0..3u32 {
        let mine: Vec<&String> = ids
            .iter()
            .filter(|id| id[6..].parse::<u32>().unwrap() % 3 == device)
            .collect();
        let mut sorted = mine.clone();
        sorted.sort_by_key(|id| id[6..].parse::<u32>().unwrap());
        assert_eq!(mine, sorted, "device {device} out of order");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_amqp_sink_publishes_confirmed_with_message_ids_and_dead_letters_the_unroutable() {
    use weir_test_support::amqp;
    let queue = weir_test_support::mqtt::unique("weir-test-sink-q");
    amqp::publish(&queue, 0, &[], |_| None).await;
    let dir = tempfile::tempdir().unwrap();
    let node = deliver_thirty(dir.path(), broker_app(dir.path(), amqp::URL, &queue, "")).await;
    let messages = read_back(amqp::URL.to_owned(), &queue, 30).await;
    let ids: Vec<String> = messages
        .iter()
        .map(|m| {
            let event = CloudEvent::from_json_slice(&m.payload).unwrap();
            assert_eq!(m.id.as_deref(), Some(event.id.as_str()));
            event.id
        })
        .collect();
    assert_in_order(&ids);

    // A routing key no queue is bound to: the message comes back, retried, dead-lettered.
    let text = broker_app(
        dir.path(),
        amqp::URL,
        &weir_test_support::mqtt::unique("weir-test-nowhere"),
        "retry = { max_attempts = 2, initial_backoff_ms = 10 }\ncircuit_failures = 0",
    );
    node.deploy_app(&text, BTreeMap::new()).await.unwrap();
    node.publish("alerts", &[alert(31, "ok")]).await.unwrap();
    let sink = until_sink(&node, |s| s.dead_lettered == 1).await;
    assert!(
        sink.error
            .as_deref()
            .is_some_and(|e| e.contains("came back")),
        "{sink:?}"
    );
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mqtt_sink_publishes_each_event_with_qos_1_in_order() {
    use weir_mesh::Source;
    use weir_test_support::mqtt;
    let topic = mqtt::unique("weir-test-sink/alerts");
    // A subscriber first (a QoS 1 subscription on a session of its own), proven by a probe.
    let options = weir_mesh::SourceOptions {
        name: mqtt::unique("reader"),
        app: "sinks".into(),
        url: mqtt::mosquitto(),
        subscribe: vec![topic.clone()],
        ..Default::default()
    };
    let mut reader = weir_mesh_mqtt::MqttSource::open(&options).unwrap();
    let mut probed = false;
    for _ in 0..100 {
        mqtt::publish(&mqtt::unique("probe"), &topic, &[b"{}".to_vec()]).await;
        if let Ok(Ok(got)) = tokio::time::timeout(Duration::from_millis(200), reader.next(10)).await
        {
            let tokens: Vec<u64> = got.iter().map(|m| m.token).collect();
            reader.ack(&tokens).await.unwrap();
            probed = true;
            break;
        }
    }
    assert!(probed, "the reader never subscribed");
    // Probes still on their way.
    while let Ok(Ok(got)) = tokio::time::timeout(Duration::from_millis(300), reader.next(10)).await
    {
        let tokens: Vec<u64> = got.iter().map(|m| m.token).collect();
        reader.ack(&tokens).await.unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let node = deliver_thirty(
        dir.path(),
        broker_app(dir.path(), &mqtt::mosquitto(), &topic, ""),
    )
    .await;
    let mut ids = Vec::new();
    while ids.len() < 30 {
        let got = tokio::time::timeout(Duration::from_secs(20), reader.next(30))
            .await
            .expect("the sink's messages within 20 s")
            .unwrap();
        for m in &got {
            ids.push(CloudEvent::from_json_slice(&m.payload).unwrap().id);
        }
        let tokens: Vec<u64> = got.iter().map(|m| m.token).collect();
        reader.ack(&tokens).await.unwrap();
    }
    assert_in_order(&ids);
    reader.close().await;
    node.shutdown().await;
}
