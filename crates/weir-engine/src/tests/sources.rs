//! Sources against the machine's Mosquitto.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use futures::StreamExt;
use weir_cloudevents::{CloudEvent, ExtensionValue};
use weir_manifest::Manifest;
use weir_test_support::mqtt::{self, unique};

use crate::{Node, NodeOptions, StartFrom};

fn app(base: &str, name: &str, ty: &str) -> String {
    app_on(base, name, ty, "temp")
}

/// The app with a source `name` of `BASE/+/MEASURE`.
fn app_on(base: &str, name: &str, ty: &str, measure: &str) -> String {
    format!(
        r#"
[app]
name = "sources"
[topics.telemetry]
partitions = 2
[sources.{name}]
url = "{url}"
subscribe = "{base}/+/{measure}"
topic = "telemetry"
type = "{ty}"
key = "{{subject.1}}"
"#,
        url = mqtt::mosquitto()
    )
}

fn manifest(dir: &Path, text: &str) -> Manifest {
    let mut m = Manifest::from_toml_str(text, dir).unwrap();
    m.text = text.to_owned();
    m
}

/// Every event of `topic` from the start, until `done` says the list is complete.
async fn events_until(
    node: &Node,
    topic: &str,
    done: impl Fn(&[CloudEvent]) -> bool,
) -> Vec<CloudEvent> {
    let mut stream = node.subscribe(topic, StartFrom::Earliest).await.unwrap();
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !done(&got) {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(event)) => got.push(event.unwrap().event),
            _ => panic!(
                "{topic}: the events did not come within 30 s; got {:?}",
                got.iter().map(|e| e.data_bytes()).collect::<Vec<_>>()
            ),
        }
    }
    got
}

/// Publishes probes to `BASE/ready/MEASURE` until the source appended one: its
/// subscription is in place.
async fn until_subscribed(node: &Node, base: &str, measure: &str) {
    for _ in 0..100 {
        let topic = format!("{base}/ready/{measure}");
        mqtt::publish(&unique("probe"), &topic, &[b"{}".to_vec()]).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let status = node.status().await.unwrap();
        if status.sources.iter().any(|s| s.appended > 0) {
            return;
        }
    }
    panic!("the source never appended a probe");
}

fn sequence(event: &CloudEvent) -> Option<(String, u64)> {
    let data = event.data_bytes()?;
    let v: serde_json::Value = serde_json::from_slice(&data).ok()?;
    Some((v["device"].as_str()?.to_owned(), v["n"].as_u64()?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mqtt_source_appends_in_order_dead_letters_poison_and_restarts_on_deploy() {
    let dir = tempfile::tempdir().unwrap();
    let base = unique("weir-test-engine");
    let text = app(&base, "sensors", "com.example.temp");
    let node = Node::start(
        super::options(&dir.path().join("data"), Some(manifest(dir.path(), &text))).await,
    )
    .await
    .unwrap();
    until_subscribed(&node, &base, "temp").await;

    for device in ["dev-1", "dev-2"] {
        let mut payloads: Vec<Vec<u8>> = (0..50)
            .map(|n| format!(r#"{{"device":"{device}","n":{n}}}"#).into_bytes())
            .collect();
        if device == "dev-1" {
            payloads.insert(25, b"{not json".to_vec());
        }
        mqtt::publish(&unique("p"), &format!("{base}/{device}/temp"), &payloads).await;
    }
    let events = events_until(&node, "telemetry", |got| {
        got.iter().filter(|e| sequence(e).is_some()).count() >= 100
    })
    .await;
    // Each device's messages in order, each once, keyed by the device's topic level.
    for device in ["dev-1", "dev-2"] {
        let mine: Vec<&CloudEvent> = events
            .iter()
            .filter(|e| sequence(e).is_some_and(|(d, _)| d == device))
            .collect();
        let ns: Vec<u64> = mine.iter().map(|e| sequence(e).unwrap().1).collect();
        assert_eq!(ns, (0..50).collect::<Vec<_>>(), "{device}");
        for e in mine {
            assert_eq!(e.partition_key(), Some(device));
            assert_eq!(e.ty, "com.example.temp");
            assert_eq!(
                e.subject.as_deref(),
                Some(format!("{base}/{device}/temp").as_str())
            );
            assert_eq!(e.source, "mqtt://127.0.0.1:1883");
        }
    }
    // The poison message is in the dead-letter topic with why, and did not stop the rest.
    let dead = events_until(&node, "sensors.dlq", |got| !got.is_empty()).await;
    assert_eq!(dead[0].data_bytes().unwrap(), "{not json");
    assert_eq!(
        dead[0].extensions.get("dlqreason"),
        Some(&ExtensionValue::String("not-json".into()))
    );
    assert_eq!(
        dead[0].extensions.get("dlqsource"),
        Some(&ExtensionValue::String("sensors".into()))
    );
    let status = node.status().await.unwrap();
    let s = &status.sources[0];
    assert_eq!(
        (s.name.as_str(), s.kind.as_str(), s.state),
        ("sensors", "mqtt", "running")
    );
    assert_eq!(s.dead_lettered, 1);
    assert_eq!(s.acknowledged, s.received);
    assert!(s.appended >= 101, "{s:?}");

    // A deploy that changes the source restarts it with the new settings, and drops the
    // subscription it no longer has from the broker's session.
    let next = app_on(&base, "sensors", "com.example.temp.v2", "humidity");
    node.deploy_app(&next, BTreeMap::new()).await.unwrap();
    // (What is published to a dropped filter before the restarted source connects is
    // still the session's to deliver.)
    until_subscribed(&node, &base, "humidity").await;
    let message = |n: u32| format!(r#"{{"device":"dev-1","n":{n}}}"#).into_bytes();
    mqtt::publish(&unique("p"), &format!("{base}/dev-1/temp"), &[message(999)]).await;
    let payloads: Vec<Vec<u8>> = (50..55).map(message).collect();
    mqtt::publish(&unique("p"), &format!("{base}/dev-1/humidity"), &payloads).await;
    let events = events_until(&node, "telemetry", |got| {
        got.iter()
            .filter(|e| sequence(e).is_some_and(|(_, n)| n >= 50))
            .count()
            >= 5
    })
    .await;
    assert!(
        events
            .iter()
            .filter(|e| sequence(e).is_some_and(|(_, n)| n >= 50))
            .all(|e| e.ty == "com.example.temp.v2")
    );
    assert!(
        !events
            .iter()
            .any(|e| sequence(e).is_some_and(|(_, n)| n == 999)),
        "a topic the source no longer subscribes to still came"
    );
    node.shutdown().await;
}

/// The log refuses the source's events (here: a record over the log's size limit), so
/// nothing is acknowledged, however long it lasts; the node stops; the next node gets
/// the messages again from the broker and stores them. Nothing lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_log_did_not_take_is_not_acknowledged_and_comes_again() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let base = unique("weir-test-refused");
    let text = app(&base, "refused", "com.example.temp");
    let small = weir_log_embedded::open_shared(
        &data,
        weir_log_embedded::LogOptions {
            max_record_bytes: 700,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let node = Node::start(NodeOptions::new(
        &data,
        Some(manifest(dir.path(), &text)),
        small,
    ))
    .await
    .unwrap();
    until_subscribed(&node, &base, "temp").await;
    let big = format!(r#"{{"device":"dev-1","n":0,"pad":"{}"}}"#, "x".repeat(800));
    let small_one = br#"{"device":"dev-1","n":1}"#.to_vec();
    mqtt::publish(
        &unique("p"),
        &format!("{base}/dev-1/temp"),
        &[big.into_bytes(), small_one],
    )
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let status = node.status().await.unwrap();
        let s = &status.sources[0];
        if s.state == "stalled" {
            assert!(
                s.error.as_deref().is_some_and(|e| e.contains("telemetry")),
                "{s:?}"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never stalled: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let acknowledged = node.status().await.unwrap().sources[0].acknowledged;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        node.status().await.unwrap().sources[0].acknowledged,
        acknowledged
    );
    node.shutdown().await;
    drop(node);

    // The same app on a log that takes them.
    let node = Node::start(super::options(&data, Some(manifest(dir.path(), &text))).await)
        .await
        .unwrap();
    let events = events_until(&node, "telemetry", |got| {
        got.iter().filter(|e| sequence(e).is_some()).count() >= 2
    })
    .await;
    let ns: Vec<u64> = events.iter().filter_map(sequence).map(|(_, n)| n).collect();
    assert_eq!(ns, vec![0, 1]);
    node.shutdown().await;
}

/// An AMQP source: each device's messages in order with the broker's message ids as
/// event ids and a header as the key; a message that is not JSON dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_amqp_source_appends_in_order_with_message_ids() {
    use weir_test_support::amqp;
    let dir = tempfile::tempdir().unwrap();
    let queue = unique("weir-test-engine-q");
    let mut payloads: Vec<Vec<u8>> = (0..100)
        .map(|n| format!(r#"{{"device":"dev-{}","n":{n}}}"#, n % 2).into_bytes())
        .collect();
    payloads.push(b"{not json".to_vec());
    amqp::publish(&queue, 0, &payloads, |i| Some(format!("dev-{}", i % 2))).await;
    let text = format!(
        r#"
[app]
name = "sources"
[topics.telemetry]
partitions = 2
[sources.plant]
url = "{url}"
subscribe = "{queue}"
topic = "telemetry"
type = "com.example.reading"
key = "{{header.device}}"
"#,
        url = amqp::URL
    );
    let node = Node::start(
        super::options(&dir.path().join("data"), Some(manifest(dir.path(), &text))).await,
    )
    .await
    .unwrap();
    let events = events_until(&node, "telemetry", |got| got.len() >= 100).await;
    for device in ["dev-0", "dev-1"] {
        let mine: Vec<&CloudEvent> = events
            .iter()
            .filter(|e| sequence(e).is_some_and(|(d, _)| d == device))
            .collect();
        let ns: Vec<u64> = mine.iter().map(|e| sequence(e).unwrap().1).collect();
        let expected: Vec<u64> = (0..100)
            .filter(|n| format!("dev-{}", n % 2) == device)
            .collect();
        assert_eq!(ns, expected, "{device}");
        for e in mine {
            assert_eq!(e.partition_key(), Some(device));
            assert_eq!(e.id, format!("m-{}", sequence(e).unwrap().1));
            assert_eq!(e.subject.as_deref(), Some(queue.as_str()));
        }
    }
    let dead = events_until(&node, "plant.dlq", |got| !got.is_empty()).await;
    assert_eq!(dead[0].id, "m-100");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let status = node.status().await.unwrap();
        let s = &status.sources[0];
        if s.acknowledged == 101 {
            assert_eq!((s.kind.as_str(), s.state), ("amqp", "running"));
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{s:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    node.shutdown().await;
}
