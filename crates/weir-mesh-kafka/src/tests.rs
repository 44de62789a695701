//! Against a tansu broker of the test's own (a Kafka-protocol broker from crates.io).

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::producer::{FutureProducer, FutureRecord};
use weir_mesh::{ErrorKind, Message, Source, SourceOptions, Start};
use weir_test_support::kafka::KafkaBroker;

use super::{KafkaSource, Target, target};

fn options(broker: &KafkaBroker, topic: &str, start: Start) -> SourceOptions {
    SourceOptions {
        name: "k".into(),
        app: "kafka-tests".into(),
        url: format!("kafka://{}?fetch_wait_ms=10", broker.address()),
        subscribe: vec![topic.to_owned()],
        start,
        ..SourceOptions::default()
    }
}

async fn topic_with(broker: &KafkaBroker, topic: &str, partitions: i32) {
    let admin: AdminClient<_> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", broker.address())
        .create()
        .unwrap();
    let results = admin
        .create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await
        .unwrap();
    for result in results {
        result.unwrap();
    }
}

/// Produces readings `range` of four devices keyed by device (so each device keeps one
/// partition), one record per batch (tansu answers no fetch inside a batch).
async fn produce(broker: &KafkaBroker, topic: &str, range: std::ops::Range<u32>) {
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", broker.address())
        .set("batch.num.messages", "1")
        .set("linger.ms", "0")
        .create()
        .unwrap();
    for n in range {
        let key = format!("d{}", n % 4);
        let body = format!(r#"{{"device":"{key}","n":{n}}}"#);
        producer
            .send(
                FutureRecord::to(topic).key(&key).payload(&body),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    }
}

async fn take(source: &mut KafkaSource, n: usize) -> Vec<Message> {
    let mut out = Vec::new();
    while out.len() < n {
        let batch = tokio::time::timeout(Duration::from_secs(30), source.next(n - out.len()))
            .await
            .unwrap_or_else(|_| panic!("{} of {n} messages within 30 s", out.len()))
            .expect("the source reads");
        out.extend(batch);
    }
    out
}

fn device_numbers(messages: &[Message], device: &str) -> Vec<u32> {
    messages
        .iter()
        .filter(|m| {
            m.headers
                .contains(&("kafka-key".to_owned(), device.to_owned()))
        })
        .map(|m| {
            let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
            v["n"].as_u64().unwrap() as u32
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_partition_is_read_in_order_and_resumed_after_its_positions() {
    let broker = KafkaBroker::start();
    topic_with(&broker, "readings", 2).await;
    produce(&broker, "readings", 0..100).await;
    let mut source = KafkaSource::open(&options(&broker, "readings", Start::Earliest)).unwrap();
    let messages = take(&mut source, 100).await;
    for device in ["d0", "d1", "d2", "d3"] {
        let i: u32 = device[1..].parse().unwrap();
        let expected: Vec<u32> = (0..100).filter(|n| n % 4 == i).collect();
        assert_eq!(device_numbers(&messages, device), expected, "{device}");
    }
    let mut resume = std::collections::BTreeMap::new();
    for m in &messages {
        let p = m.position.as_ref().unwrap();
        assert!(p.lane == "readings/0" || p.lane == "readings/1", "{p:?}");
        assert_eq!(
            m.id.as_deref(),
            Some(format!("readings:{}:{}", &p.lane[9..], p.after).as_str())
        );
        assert_eq!(m.subject, "readings");
        resume.insert(p.lane.clone(), p.after.clone());
    }
    drop(source);

    // Resumed after what was taken: only what is produced later comes.
    produce(&broker, "readings", 100..120).await;
    let mut resumed = options(&broker, "readings", Start::Earliest);
    resumed.resume = resume;
    let mut source = KafkaSource::open(&resumed).unwrap();
    let messages = take(&mut source, 20).await;
    let mut all: Vec<u32> = ["d0", "d1", "d2", "d3"]
        .iter()
        .flat_map(|d| device_numbers(&messages, d))
        .collect();
    all.sort();
    assert_eq!(all, (100..120).collect::<Vec<u32>>());
    assert!(
        tokio::time::timeout(Duration::from_millis(1500), source.next(10))
            .await
            .is_err(),
        "nothing more"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latest_begins_at_the_end_and_a_missing_topic_is_reported() {
    let broker = KafkaBroker::start();
    topic_with(&broker, "late", 1).await;
    produce(&broker, "late", 0..5).await;
    let mut source = KafkaSource::open(&options(&broker, "late", Start::Latest)).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !source.health().connected {
        assert!(
            tokio::time::Instant::now() < deadline,
            "connected within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    produce(&broker, "late", 5..6).await;
    let messages = take(&mut source, 1).await;
    assert_eq!(messages[0].position.as_ref().unwrap().after, "5");

    let missing = KafkaSource::open(&options(&broker, "nowhere", Start::Earliest)).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(error) = missing.health().error {
            assert!(error.contains("nowhere"), "{error}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no error reported");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn urls_name_the_brokers() {
    assert_eq!(
        target("kafka://a:9093,b?fetch_wait_ms=10").unwrap(),
        Target {
            brokers: "a:9093,b:9092".into(),
            fetch_wait_ms: Some(10)
        }
    );
    for bad in [
        "kafka://",
        "kafka://u@h",
        "kafka://h?x=1",
        "kafka://h/t",
        "mqtt://h",
    ] {
        assert_eq!(target(bad).unwrap_err().kind, ErrorKind::Config, "{bad}");
    }
}
