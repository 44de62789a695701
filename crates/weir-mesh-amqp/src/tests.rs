//! Against the machine's RabbitMQ (127.0.0.1:5672, guest/guest).

use std::time::Duration;

use lapin::options::QueueDeleteOptions;
use lapin::{Connection, ConnectionProperties};
use weir_mesh::{ErrorKind, Message, Source, SourceOptions};
use weir_test_support::mqtt::unique;

use super::AmqpSource;

use weir_test_support::amqp::{URL, publish};

fn options(queue: &str) -> SourceOptions {
    SourceOptions {
        name: "a".into(),
        app: "amqp-tests".into(),
        url: URL.into(),
        subscribe: vec![queue.to_owned()],
        ..SourceOptions::default()
    }
}

async fn connect() -> Connection {
    Connection::connect(URL, ConnectionProperties::default())
        .await
        .expect("the AMQP tests need RabbitMQ on 127.0.0.1:5672 (guest/guest)")
}

/// Declares `queue` and publishes readings `range` to it, the i-th with message-id `m-i`
/// and a header `device`.
async fn queue_with(queue: &str, range: std::ops::Range<usize>) {
    let payloads: Vec<Vec<u8>> = range
        .clone()
        .map(|i| format!(r#"{{"n":{i}}}"#).into_bytes())
        .collect();
    publish(queue, range.start, &payloads, |i| {
        Some(format!("d{}", i % 2))
    })
    .await;
}

async fn take(source: &mut AmqpSource, n: usize) -> Vec<Message> {
    let mut out = Vec::new();
    while out.len() < n {
        let batch = tokio::time::timeout(Duration::from_secs(20), source.next(n - out.len()))
            .await
            .unwrap_or_else(|_| panic!("{} of {n} messages within 20 s", out.len()))
            .expect("the source reads");
        out.extend(batch);
    }
    out
}

fn number(m: &Message) -> usize {
    let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
    v["n"].as_u64().unwrap() as usize
}

async fn delete(queue: &str) {
    let connection = connect().await;
    let channel = connection.create_channel().await.unwrap();
    let _ = channel
        .queue_delete(queue.into(), QueueDeleteOptions::default())
        .await;
}

#[tokio::test]
async fn deliveries_arrive_in_order_and_only_unacknowledged_ones_come_again() {
    let queue = unique("weir-test-q");
    queue_with(&queue, 0..100).await;
    let mut source = AmqpSource::open(&options(&queue)).unwrap();
    let messages = take(&mut source, 100).await;
    for (i, m) in messages.iter().enumerate() {
        assert_eq!(number(m), i);
        assert_eq!(m.id.as_deref(), Some(format!("m-{i}").as_str()));
        assert_eq!(m.subject, queue);
        assert_eq!(
            m.headers,
            vec![("device".to_owned(), format!("d{}", i % 2))]
        );
        assert!(!m.redelivered);
    }
    // The first 60 acknowledged; the source then crashes (dropped without close).
    let tokens: Vec<u64> = messages[..60].iter().map(|m| m.token).collect();
    source.ack(&tokens).await.unwrap();
    // The acknowledgements are on the wire before the crash.
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(source);

    let mut source = AmqpSource::open(&options(&queue)).unwrap();
    let again = take(&mut source, 40).await;
    let numbers: Vec<usize> = again.iter().map(number).collect();
    assert_eq!(numbers, (60..100).collect::<Vec<_>>());
    assert!(again.iter().all(|m| m.redelivered));
    let tokens: Vec<u64> = again.iter().map(|m| m.token).collect();
    source.ack(&tokens).await.unwrap();
    source.close().await;
    // Nothing left: a new consumer gets nothing within a moment.
    let mut source = AmqpSource::open(&options(&queue)).unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(1500), source.next(10))
            .await
            .is_err()
    );
    source.close().await;
    delete(&queue).await;
}

#[tokio::test]
async fn a_missing_queue_is_reported_and_a_bad_url_is_a_config_error() {
    let source = AmqpSource::open(&options(&unique("weir-test-missing"))).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(error) = source.health().error {
            assert!(
                error.contains("NOT_FOUND") || error.contains("no queue"),
                "{error}"
            );
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no error reported");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut bad = options("q");
    bad.url = "amqps://h".into();
    assert_eq!(
        AmqpSource::open(&bad).err().unwrap().kind,
        ErrorKind::Config
    );
    bad.url = "http://h".into();
    assert_eq!(
        AmqpSource::open(&bad).err().unwrap().kind,
        ErrorKind::Config
    );
}
