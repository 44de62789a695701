//! Sources in a real `weir serve`, killed with SIGKILL while messages stream in: after the
//! restart every MQTT message is in the topic (at-least-once: the broker delivers again
//! what weir had not acknowledged), and every Redis Streams and JetStream message is there
//! exactly once (positional: the positions are committed with the events); `weir status`
//! shows the sources.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use weir_test_support::{WeirProcess, mqtt};

use super::{cli, node_status, topic_events, weir};

fn serve(dir: &Path, app: &Path) -> WeirProcess {
    let data = dir.join("data");
    WeirProcess::start(
        weir(),
        &[
            "--app",
            app.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
        ],
    )
}

fn appended(node: &WeirProcess) -> u64 {
    node_status(node)["sources"][0]["appended"]
        .as_u64()
        .unwrap()
}

#[test]
fn a_killed_node_loses_no_mqtt_message() {
    let dir = tempfile::tempdir().unwrap();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let base = format!("weir-test-kill-{}-{nanos}", std::process::id());
    let app = dir.path().join("weir.toml");
    std::fs::write(
        &app,
        format!(
            r#"
[app]
name = "kill-{nanos}"
[topics.telemetry]
partitions = 2
[sources.sensors]
url = "{url}"
subscribe = "{base}/+/temp"
topic = "telemetry"
type = "com.example.temp"
key = "{{subject.1}}"
"#,
            url = mqtt::mosquitto()
        ),
    )
    .unwrap();
    let node = serve(dir.path(), &app);
    let rt = tokio::runtime::Runtime::new().unwrap();
    // The subscription is in place once a probe is appended.
    let deadline = Instant::now() + Duration::from_secs(30);
    while appended(&node) == 0 {
        assert!(Instant::now() < deadline, "the source never took a probe");
        rt.block_on(mqtt::publish(
            "kill-probe",
            &format!("{base}/probe/temp"),
            &[b"{}".to_vec()],
        ));
        std::thread::sleep(Duration::from_millis(200));
    }
    let human = cli(&node, &["status"]);
    assert!(
        human.contains("sources:") && human.contains("sensors"),
        "{human}"
    );

    // 2,000 messages in batches of 100 over about 4 s; weir is killed after the first
    // few hundred are in and started again at once.
    const TOTAL: u32 = 2000;
    let publisher = {
        let base = base.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            for batch in 0..TOTAL / 100 {
                let payloads: Vec<Vec<u8>> = (batch * 100..(batch + 1) * 100)
                    .map(|n| format!(r#"{{"device":"d{}","n":{n}}}"#, n % 4).into_bytes())
                    .collect();
                rt.block_on(mqtt::publish(
                    "kill-publisher",
                    &format!("{base}/d/temp"),
                    &payloads,
                ));
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while appended(&node) < 300 {
        assert!(Instant::now() < deadline, "the source took too little");
        std::thread::sleep(Duration::from_millis(20));
    }
    node.kill();
    let node = serve(dir.path(), &app);
    publisher.join().unwrap();

    let deadline = Instant::now() + Duration::from_secs(60);
    let numbers = loop {
        // `tail` follows the topic: ask for what is there.
        let stored = topic_events(&node_status(&node), "telemetry").to_string();
        let out = cli(
            &node,
            &[
                "tail",
                "telemetry",
                "--from",
                "earliest",
                "--limit",
                &stored,
            ],
        );
        let numbers: Vec<u64> = out
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|e| e["data"]["n"].as_u64())
            .collect();
        let distinct: BTreeSet<u64> = numbers.iter().copied().collect();
        if distinct.len() == TOTAL as usize {
            break numbers;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {TOTAL} messages are in the topic after the kill",
            distinct.len()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    // At-least-once: what weir had stored but not yet acknowledged comes twice, no more
    // than a few batches.
    let doubled = numbers.len() - TOTAL as usize;
    assert!(doubled <= 600, "{doubled} messages came twice");
    let status = node_status(&node);
    assert_eq!(status["sources"][0]["state"], "running", "{status}");
    let metrics = rt.block_on(async {
        reqwest::get(format!("{}/metrics", node.url))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    for line in [
        r#"weir_source_connected{source="sensors"} 1"#,
        r#"weir_source_messages_total{source="sensors",outcome="appended"}"#,
    ] {
        assert!(metrics.contains(line), "/metrics lacks {line}:\n{metrics}");
    }
    assert!(node.stop());
}

/// The README's telemetry example as it is in `examples/telemetry`: MQTT readings through
/// `telemetry-alert` to a webhook whose signatures the Standard Webhooks reference
/// verifier accepts.
#[test]
fn the_telemetry_example_bridges_mqtt_through_a_function_to_a_signed_webhook() {
    use weir_test_support::webhook::{Behaviour, SECRET, WebhookReceiver};
    let dir = tempfile::tempdir().unwrap();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let base = format!("weir-test-telemetry-{}-{nanos}", std::process::id());
    let receiver = WebhookReceiver::start(SECRET, Behaviour::default());
    std::fs::write(dir.path().join("secret"), SECRET).unwrap();
    let example = weir_test_support::telemetry_example_dir().join("weir.toml");
    let text = std::fs::read_to_string(example).unwrap();
    let mut app = text.clone();
    for (from, to) in [
        (
            "\"telemetry-alert/target/wasm32-wasip2/release/telemetry_alert.wasm\"".to_owned(),
            format!(
                "{:?}",
                weir_test_support::telemetry_alert_function()
                    .display()
                    .to_string()
            ),
        ),
        (
            "\"sensors/+/temp\"".to_owned(),
            format!("\"{base}/+/temp\""),
        ),
        (
            "name = \"telemetry\"".to_owned(),
            format!("name = \"telemetry-{nanos}\""),
        ),
        (
            "\"http://127.0.0.1:8787/alerts\"".to_owned(),
            format!("{:?}", receiver.url),
        ),
        (
            "{ env = \"TELEMETRY_WEBHOOK_SECRET\" }".to_owned(),
            format!(
                "{{ file = {:?} }}",
                dir.path().join("secret").display().to_string()
            ),
        ),
    ] {
        assert!(
            app.contains(&from),
            "the example's weir.toml no longer has {from}"
        );
        app = app.replace(&from, &to);
    }
    let path = dir.path().join("weir.toml");
    std::fs::write(&path, app).unwrap();
    let node = serve(dir.path(), &path);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let publish = |device: &str, celsius: f64| {
        let body = format!(r#"{{"celsius": {celsius}}}"#).into_bytes();
        rt.block_on(mqtt::publish(
            "telemetry-sensor",
            &format!("{base}/{device}/temp"),
            &[body],
        ));
    };
    // A reading under the threshold makes no alert; once one is in, the source subscribes.
    let deadline = Instant::now() + Duration::from_secs(30);
    while appended(&node) == 0 {
        assert!(Instant::now() < deadline, "the source never took a reading");
        publish("probe", 10.0);
        std::thread::sleep(Duration::from_millis(200));
    }
    for (device, celsius) in [("s-1", 85.0), ("s-1", 70.0), ("s-2", 81.5), ("s-1", 90.0)] {
        publish(device, celsius);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let requests = loop {
        let requests = receiver.requests();
        if requests.len() >= 3 {
            break requests;
        }
        assert!(Instant::now() < deadline, "alerts delivered: {requests:?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let alerts: Vec<(String, f64)> = requests
        .iter()
        .map(|r| {
            assert_eq!(r["verified"], true, "{r}");
            assert_eq!(r["tamper_rejected"], true, "{r}");
            assert_eq!(r["event"]["type"], "com.example.telemetry.alert");
            let data = &r["event"]["data"];
            (
                data["device"].as_str().unwrap().to_owned(),
                data["celsius"].as_f64().unwrap(),
            )
        })
        .collect();
    let s1: Vec<f64> = alerts
        .iter()
        .filter(|(d, _)| d == "s-1")
        .map(|(_, c)| *c)
        .collect();
    assert_eq!(s1, vec![85.0, 90.0], "{alerts:?}");
    assert!(alerts.contains(&("s-2".to_owned(), 81.5)), "{alerts:?}");
    assert_eq!(alerts.len(), 3, "{alerts:?}");
    let human = cli(&node, &["status"]);
    assert!(
        human.contains("sinks:") && human.contains("alert-hook"),
        "{human}"
    );
    assert!(node.stop());
}

/// What a positional source reads in the kill test, and how the test writes to it.
enum Positional {
    Redis {
        key: String,
    },
    JetStream {
        server: weir_test_support::nats::NatsServer,
    },
    Kafka {
        broker: weir_test_support::kafka::KafkaBroker,
    },
}

impl Positional {
    fn url(&self) -> String {
        match self {
            Positional::Redis { .. } => weir_test_support::redis::redis(),
            Positional::JetStream { server } => {
                server.url().replace("nats://", "jetstream://") + "/READINGS"
            }
            Positional::Kafka { broker } => {
                format!("kafka://{}?fetch_wait_ms=10", broker.address())
            }
        }
    }

    fn subscribe(&self) -> String {
        match self {
            Positional::Redis { key } => format!("{key:?}"),
            Positional::JetStream { .. } => "[]".to_owned(),
            Positional::Kafka { .. } => "\"readings\"".to_owned(),
        }
    }

    /// Writes readings `range` of four devices, in order.
    async fn write(&self, range: std::ops::Range<u32>) {
        let body = |n: u32| format!(r#"{{"device":"d{}","n":{n}}}"#, n % 4);
        match self {
            Positional::Redis { key } => {
                let entries: Vec<Vec<(&str, Vec<u8>)>> = range
                    .map(|n| vec![("data", body(n).into_bytes())])
                    .collect();
                weir_test_support::redis::xadd(key, &entries).await;
            }
            Positional::JetStream { server } => {
                let client = async_nats::connect(server.url()).await.unwrap();
                let js = async_nats::jetstream::new(client);
                if range.start == 0 {
                    js.create_stream(async_nats::jetstream::stream::Config {
                        name: "READINGS".into(),
                        subjects: vec!["readings.>".into()],
                        ..Default::default()
                    })
                    .await
                    .unwrap();
                }
                let mut acks = Vec::new();
                for n in range {
                    acks.push(
                        js.publish(format!("readings.d{}", n % 4), body(n).into())
                            .await
                            .unwrap(),
                    );
                }
                for ack in acks {
                    ack.await.unwrap();
                }
            }
            Positional::Kafka { broker } => {
                use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
                use rdkafka::producer::{FutureProducer, FutureRecord};
                let config = |extra: &[(&str, &str)]| {
                    let mut config = rdkafka::ClientConfig::new();
                    config.set("bootstrap.servers", broker.address());
                    for (k, v) in extra {
                        config.set(*k, *v);
                    }
                    config
                };
                if range.start == 0 {
                    let admin: AdminClient<_> = config(&[]).create().unwrap();
                    let topic = NewTopic::new("readings", 2, TopicReplication::Fixed(1));
                    for result in admin
                        .create_topics(&[topic], &AdminOptions::new())
                        .await
                        .unwrap()
                    {
                        result.unwrap();
                    }
                }
                // One record per batch: tansu answers no fetch inside a batch.
                let producer: FutureProducer =
                    config(&[("batch.num.messages", "1")]).create().unwrap();
                for n in range {
                    let key = format!("d{}", n % 4);
                    let payload = body(n);
                    let record = FutureRecord::to("readings").key(&key).payload(&payload);
                    producer
                        .send(record, Duration::from_secs(10))
                        .await
                        .unwrap();
                }
            }
        }
    }
}

/// SIGKILL while 2,000 messages stream in: after the restart each is in the topic once,
/// each device's in order.
fn a_killed_node_stores_each_message_of_a_positional_source_once(positional: Positional) {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("weir.toml");
    std::fs::write(
        &app,
        format!(
            r#"
[app]
name = "positional-kill"
[topics.telemetry]
partitions = 2
[sources.readings]
url = "{url}"
subscribe = {subscribe}
topic = "telemetry"
type = "com.example.reading"
key = "{{data.device}}"
"#,
            url = positional.url(),
            subscribe = positional.subscribe(),
        ),
    )
    .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(positional.write(0..100));
    let node = serve(dir.path(), &app);
    let deadline = Instant::now() + Duration::from_secs(30);
    while appended(&node) < 100 {
        assert!(Instant::now() < deadline, "the source took too little");
        std::thread::sleep(Duration::from_millis(20));
    }
    let human = cli(&node, &["status"]);
    assert!(human.contains("position: "), "{human}");

    const TOTAL: u32 = 2000;
    let positional = std::sync::Arc::new(positional);
    let writer = {
        let positional = positional.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            for batch in 1..TOTAL / 100 {
                rt.block_on(positional.write(batch * 100..(batch + 1) * 100));
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while appended(&node) < 400 {
        assert!(Instant::now() < deadline, "the source took too little");
        std::thread::sleep(Duration::from_millis(20));
    }
    node.kill();
    let node = serve(dir.path(), &app);
    writer.join().unwrap();

    let deadline = Instant::now() + Duration::from_secs(60);
    while topic_events(&node_status(&node), "telemetry") < u64::from(TOTAL) {
        assert!(
            Instant::now() < deadline,
            "{} of {TOTAL} in the topic after the kill",
            topic_events(&node_status(&node), "telemetry")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // A moment for any duplicate to arrive.
    std::thread::sleep(Duration::from_millis(1500));
    let stored = topic_events(&node_status(&node), "telemetry");
    let out = cli(
        &node,
        &[
            "tail",
            "telemetry",
            "--from",
            "earliest",
            "--limit",
            &stored.to_string(),
        ],
    );
    let readings: Vec<(String, u64)> = out
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|e| {
            Some((
                e["data"]["device"].as_str()?.to_owned(),
                e["data"]["n"].as_u64()?,
            ))
        })
        .collect();
    assert_eq!(readings.len(), TOTAL as usize, "stored twice or lost");
    for device in 0..4u64 {
        let mine: Vec<u64> = readings
            .iter()
            .filter(|(d, _)| *d == format!("d{device}"))
            .map(|(_, n)| *n)
            .collect();
        let expected: Vec<u64> = (0..u64::from(TOTAL)).filter(|n| n % 4 == device).collect();
        assert_eq!(mine, expected, "device d{device}");
    }
    let status = node_status(&node);
    assert_eq!(status["sources"][0]["state"], "running", "{status}");
    assert!(node.stop());
}

#[test]
fn a_killed_node_stores_each_redis_stream_entry_once() {
    let key = format!("weir:test:kill:{}", weir_test_support::mqtt::unique("s"));
    a_killed_node_stores_each_message_of_a_positional_source_once(Positional::Redis { key });
}

#[test]
fn a_killed_node_stores_each_kafka_record_once() {
    let broker = weir_test_support::kafka::KafkaBroker::start();
    a_killed_node_stores_each_message_of_a_positional_source_once(Positional::Kafka { broker });
}

#[test]
fn a_killed_node_stores_each_jetstream_message_once() {
    let server = weir_test_support::nats::NatsServer::start(false);
    a_killed_node_stores_each_message_of_a_positional_source_once(Positional::JetStream { server });
}

/// An AMQP source killed with SIGKILL while 2,000 messages stream in: after the restart
/// every message is in the topic (the broker requeued what weir had not acknowledged),
/// with the broker's message ids, so the repeats are recognisable.
#[test]
fn a_killed_node_loses_no_amqp_message() {
    use weir_test_support::amqp;
    let dir = tempfile::tempdir().unwrap();
    let queue = weir_test_support::mqtt::unique("weir-test-kill-q");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(amqp::publish(&queue, 0, &[], |_| None));
    let app = dir.path().join("weir.toml");
    std::fs::write(
        &app,
        format!(
            r#"
[app]
name = "amqp-kill"
[topics.telemetry]
partitions = 2
[sources.plant]
url = "{url}"
subscribe = "{queue}"
topic = "telemetry"
type = "com.example.reading"
key = "{{data.device}}"
"#,
            url = amqp::URL
        ),
    )
    .unwrap();
    let node = serve(dir.path(), &app);
    const TOTAL: usize = 2000;
    let writer = {
        let queue = queue.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            for batch in 0..TOTAL / 100 {
                let payloads: Vec<Vec<u8>> = (batch * 100..(batch + 1) * 100)
                    .map(|n| format!(r#"{{"device":"d{}","n":{n}}}"#, n % 4).into_bytes())
                    .collect();
                rt.block_on(amqp::publish(&queue, batch * 100, &payloads, |_| None));
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while appended(&node) < 300 {
        assert!(Instant::now() < deadline, "the source took too little");
        std::thread::sleep(Duration::from_millis(20));
    }
    node.kill();
    let node = serve(dir.path(), &app);
    writer.join().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let stored = topic_events(&node_status(&node), "telemetry").to_string();
        let out = cli(
            &node,
            &[
                "tail",
                "telemetry",
                "--from",
                "earliest",
                "--limit",
                &stored,
            ],
        );
        let events: Vec<serde_json::Value> = out
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        let distinct: BTreeSet<u64> = events
            .iter()
            .filter_map(|e| e["data"]["n"].as_u64())
            .collect();
        if distinct.len() == TOTAL {
            // Repeats carry the id of the first copy.
            for e in &events {
                assert_eq!(e["id"], format!("m-{}", e["data"]["n"]), "{e}");
            }
            assert!(
                events.len() - TOTAL <= 1100,
                "{} repeats",
                events.len() - TOTAL
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {TOTAL} messages are in the topic after the kill",
            distinct.len()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(node.stop());
}
