//! Against a nats-server of the tests' own (JetStream on).

use std::time::Duration;

use weir_mesh::{ErrorKind, Message, Source, SourceOptions, Start};
use weir_test_support::nats::NatsServer;

use super::{NatsSource, Target, target};

fn options(url: String, subjects: &[&str], start: Start) -> SourceOptions {
    SourceOptions {
        name: "n".into(),
        app: "nats-tests".into(),
        url,
        subscribe: subjects.iter().map(|s| (*s).to_owned()).collect(),
        start,
        ..SourceOptions::default()
    }
}

async fn take(source: &mut NatsSource, n: usize) -> Vec<Message> {
    let mut out = Vec::new();
    while out.len() < n {
        let batch = tokio::time::timeout(Duration::from_secs(20), source.next(n - out.len()))
            .await
            .expect("messages within 20 s")
            .expect("the source reads");
        out.extend(batch);
    }
    out
}

async fn until_connected(source: &NatsSource) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !source.health().connected {
        assert!(
            tokio::time::Instant::now() < deadline,
            "connected within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn jetstream_url(server: &NatsServer, stream: &str) -> String {
    server.url().replace("nats://", "jetstream://") + "/" + stream
}

async fn stream_with(server: &NatsServer, n: usize) -> async_nats::jetstream::Context {
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "TELEMETRY".into(),
        subjects: vec!["telemetry.>".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    publish(&js, 0..n).await;
    js
}

async fn publish(js: &async_nats::jetstream::Context, range: std::ops::Range<usize>) {
    for i in range {
        let subject = if i % 2 == 0 {
            "telemetry.a.temp"
        } else {
            "telemetry.b.hum"
        };
        let mut headers = async_nats::HeaderMap::new();
        if i == 3 {
            headers.insert("Nats-Msg-Id", "reading-3");
        }
        js.publish_with_headers(subject, headers, format!("{{\"n\":{i}}}").into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_stream_is_read_in_order_with_sequences_and_resumed_after_a_position() {
    let server = NatsServer::start(false);
    let js = stream_with(&server, 300).await;
    let url = jetstream_url(&server, "TELEMETRY");
    let mut source = NatsSource::open(&options(url.clone(), &[], Start::Earliest)).unwrap();
    assert!(source.positional());
    let messages = take(&mut source, 300).await;
    for (i, m) in messages.iter().enumerate() {
        assert_eq!(m.payload, format!("{{\"n\":{i}}}").as_bytes());
        let position = m.position.as_ref().unwrap();
        assert_eq!(position.lane, "TELEMETRY");
        assert_eq!(position.after, (i + 1).to_string());
        let id = if i == 3 {
            "reading-3".to_owned()
        } else {
            format!("TELEMETRY:{}", i + 1)
        };
        assert_eq!(m.id.as_deref(), Some(id.as_str()));
    }
    assert_eq!(messages[1].subject, "telemetry.b.hum");
    drop(source);

    // After sequence 200, only subject telemetry.a.*: 202, 204, … 300, then a new one.
    let mut resumed = options(url, &["telemetry.a.*"], Start::Earliest);
    resumed.resume.insert("TELEMETRY".into(), "200".into());
    let mut source = NatsSource::open(&resumed).unwrap();
    let messages = take(&mut source, 50).await;
    let sequences: Vec<u64> = messages
        .iter()
        .map(|m| m.position.as_ref().unwrap().after.parse().unwrap())
        .collect();
    assert_eq!(
        sequences,
        (201..=300).filter(|s| s % 2 == 1).collect::<Vec<u64>>()
    );
    publish(&js, 300..302).await;
    let messages = take(&mut source, 1).await;
    assert_eq!(messages[0].position.as_ref().unwrap().after, "301");
}

#[tokio::test]
async fn latest_begins_at_the_streams_end() {
    let server = NatsServer::start(false);
    let js = stream_with(&server, 10).await;
    let mut source = NatsSource::open(&options(
        jetstream_url(&server, "TELEMETRY"),
        &[],
        Start::Latest,
    ))
    .unwrap();
    until_connected(&source).await;
    publish(&js, 10..11).await;
    let messages = take(&mut source, 1).await;
    assert_eq!(messages[0].position.as_ref().unwrap().after, "11");
}

#[tokio::test]
async fn core_subjects_arrive_in_order_with_their_headers_and_no_position() {
    let server = NatsServer::start(false);
    let mut source =
        NatsSource::open(&options(server.url(), &["plant.*.temp"], Start::Latest)).unwrap();
    assert!(!source.positional());
    until_connected(&source).await;
    let client = async_nats::connect(server.url()).await.unwrap();
    // The subscription is made just after connecting: publish until the first arrives.
    let mut first = None;
    for _ in 0..200 {
        client
            .publish("plant.0.temp", "probe".into())
            .await
            .unwrap();
        client.flush().await.unwrap();
        if let Ok(Ok(m)) = tokio::time::timeout(Duration::from_millis(100), source.next(1)).await {
            first = Some(m);
            break;
        }
    }
    assert!(first.is_some(), "the subscription took a probe");
    take_until_quiet(&mut source).await;
    for i in 0..100 {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("device", format!("d{i}").as_str());
        client
            .publish_with_headers(format!("plant.{i}.temp"), headers, format!("{i}").into())
            .await
            .unwrap();
    }
    client.publish("other.subject", "x".into()).await.unwrap();
    client.flush().await.unwrap();
    let messages = take(&mut source, 100).await;
    for (i, m) in messages.iter().enumerate() {
        assert_eq!(m.payload, format!("{i}").as_bytes());
        assert_eq!(m.subject, format!("plant.{i}.temp"));
        assert_eq!(m.headers, vec![("device".to_owned(), format!("d{i}"))]);
        assert!(m.position.is_none() && m.id.is_none());
    }
}

/// Takes what is still arriving (the probes) until nothing comes for 300 ms.
async fn take_until_quiet(source: &mut NatsSource) {
    while let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(300), source.next(64)).await {}
}

#[test]
fn urls_name_the_server_and_the_stream() {
    assert_eq!(
        target("jetstream://u:p@h:4333/ORDERS").unwrap(),
        Target {
            server: "nats://u:p@h:4333".into(),
            stream: Some("ORDERS".into())
        }
    );
    assert_eq!(
        target("nats://h").unwrap(),
        Target {
            server: "nats://h:4222".into(),
            stream: None
        }
    );
    for bad in [
        "jetstream://h",
        "jetstream://h/a.b",
        "nats://h/ORDERS",
        "http://h",
        "nats://",
    ] {
        assert_eq!(target(bad).unwrap_err().kind, ErrorKind::Config, "{bad}");
    }
}
