//! Positional sources (Redis Streams against the machine's Redis, JetStream against a
//! nats-server of the test's own): events in order, poison dead-lettered, and a node
//! started again reads on from the position committed with the events, so nothing is
//! stored twice or skipped.

use std::path::Path;
use std::time::Duration;

use futures::StreamExt;
use weir_cloudevents::{CloudEvent, ExtensionValue};
use weir_manifest::Manifest;
use weir_test_support::mqtt::unique;
use weir_test_support::nats::NatsServer;
use weir_test_support::redis::{redis, xadd, xadd_at};

use crate::{Node, StartFrom};

fn manifest(dir: &Path, text: &str) -> Manifest {
    let mut m = Manifest::from_toml_str(text, dir).unwrap();
    m.text = text.to_owned();
    m
}

fn app(url: &str, subscribe: &str) -> String {
    format!(
        r#"
[app]
name = "positional"
[topics.telemetry]
partitions = 2
[sources.readings]
url = "{url}"
subscribe = {subscribe}
topic = "telemetry"
type = "com.example.reading"
key = "{{data.device}}"
"#
    )
}

/// The events of `topic` from the start once `n` are there, and that no more come within
/// a moment.
async fn exactly(node: &Node, topic: &str, n: usize) -> Vec<CloudEvent> {
    let mut stream = node.subscribe(topic, StartFrom::Earliest).await.unwrap();
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while got.len() < n {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(event)) => got.push(event.unwrap().event),
            _ => panic!("{topic}: {} of {n} events within 30 s", got.len()),
        }
    }
    if let Ok(Some(extra)) = tokio::time::timeout(Duration::from_millis(700), stream.next()).await {
        panic!("{topic}: more than {n} events: {:?}", extra.unwrap().event);
    }
    got
}

fn reading(device: &str, n: usize) -> Vec<(&'static str, Vec<u8>)> {
    vec![(
        "data",
        format!(r#"{{"device":"{device}","n":{n}}}"#).into_bytes(),
    )]
}

fn numbers(events: &[CloudEvent], device: &str) -> Vec<u64> {
    events
        .iter()
        .filter_map(|e| serde_json::from_slice::<serde_json::Value>(&e.data_bytes()?).ok())
        .filter(|v| v["device"] == device)
        .filter_map(|v| v["n"].as_u64())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_streams_source_resumes_after_its_committed_position() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (a, b) = (unique("weir:test:a"), unique("weir:test:b"));
    let text = app(&redis(), &format!(r#"["{a}", "{b}"]"#));
    let mut entries: Vec<_> = (0..150).map(|n| reading("dev-1", n)).collect();
    entries.insert(70, vec![("data", b"{not json".to_vec())]);
    let ids = xadd(&a, &entries).await;
    xadd(
        &b,
        &(0..150).map(|n| reading("dev-2", n)).collect::<Vec<_>>(),
    )
    .await;

    let node = Node::start(super::options(&data, Some(manifest(dir.path(), &text))).await)
        .await
        .unwrap();
    let events = exactly(&node, "telemetry", 300).await;
    assert_eq!(numbers(&events, "dev-1"), (0..150).collect::<Vec<u64>>());
    assert_eq!(numbers(&events, "dev-2"), (0..150).collect::<Vec<u64>>());
    let first = events
        .iter()
        .find(|e| numbers(std::slice::from_ref(e), "dev-1") == [0]);
    assert_eq!(first.unwrap().id, format!("{a}:{}", ids[0]));
    assert_eq!(first.unwrap().subject.as_deref(), Some(a.as_str()));
    assert_eq!(first.unwrap().partition_key(), Some("dev-1"));
    let dead = exactly(&node, "readings.dlq", 1).await;
    assert_eq!(dead[0].data_bytes().unwrap(), "{not json");
    assert_eq!(
        dead[0].extensions.get("dlqreason"),
        Some(&ExtensionValue::String("not-json".into()))
    );
    let status = node.status().await.unwrap();
    let s = &status.sources[0];
    assert_eq!((s.kind.as_str(), s.state), ("redis", "running"));
    assert_eq!((s.appended, s.dead_lettered, s.acknowledged), (300, 1, 301));
    let position = s.position.clone().unwrap();
    assert!(
        position.contains(&format!("{a}={}", ids[150])),
        "{position}"
    );
    node.shutdown().await;
    drop(node);

    // Entries added while weir was down arrive; nothing from before comes again.
    xadd(
        &a,
        &(150..200).map(|n| reading("dev-1", n)).collect::<Vec<_>>(),
    )
    .await;
    let node = Node::start(super::options(&data, Some(manifest(dir.path(), &text))).await)
        .await
        .unwrap();
    let events = exactly(&node, "telemetry", 350).await;
    assert_eq!(numbers(&events, "dev-1"), (0..200).collect::<Vec<u64>>());
    assert_eq!(numbers(&events, "dev-2"), (0..150).collect::<Vec<u64>>());
    exactly(&node, "readings.dlq", 1).await;
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jetstream_source_resumes_after_its_committed_sequence() {
    let server = NatsServer::start(false);
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "READINGS".into(),
        subjects: vec!["readings.>".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let publish = |range: std::ops::Range<usize>| {
        let js = js.clone();
        async move {
            for n in range {
                let device = if n % 2 == 0 { "dev-1" } else { "dev-2" };
                let body = format!(r#"{{"device":"{device}","n":{n}}}"#);
                js.publish(format!("readings.{device}"), body.into())
                    .await
                    .unwrap()
                    .await
                    .unwrap();
            }
        }
    };
    publish(0..200).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let url = server.url().replace("nats://", "jetstream://") + "/READINGS";
    let text = app(&url, "[]");
    let node = Node::start(super::options(&data, Some(manifest(dir.path(), &text))).await)
        .await
        .unwrap();
    let events = exactly(&node, "telemetry", 200).await;
    let evens: Vec<u64> = (0..200).filter(|n| n % 2 == 0).collect();
    assert_eq!(numbers(&events, "dev-1"), evens);
    let first = events.iter().find(|e| e.id == "READINGS:1").unwrap();
    assert_eq!(first.subject.as_deref(), Some("readings.dev-1"));
    assert_eq!(first.partition_key(), Some("dev-1"));
    let status = node.status().await.unwrap();
    assert_eq!(status.sources[0].kind, "jetstream");
    assert_eq!(status.sources[0].position.as_deref(), Some("READINGS=200"));
    node.shutdown().await;
    drop(node);

    publish(200..230).await;
    let node = Node::start(super::options(&data, Some(manifest(dir.path(), &text))).await)
        .await
        .unwrap();
    let events = exactly(&node, "telemetry", 230).await;
    let evens: Vec<u64> = (0..230).filter(|n| n % 2 == 0).collect();
    assert_eq!(numbers(&events, "dev-1"), evens);
    node.shutdown().await;
}

/// A schedule firing every second, stopped for 2.5 s and started again: no tick twice,
/// scheduled times increasing, every occurrence between two ticks counted in the later
/// one's `missed` (here: the ticks of the pause, then one fired at once for the latest).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_fires_each_occurrence_once_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let text = r#"
[app]
name = "schedules"
[topics.ticks]
[schedules.every-second]
cron = "* * * * * *"
topic = "ticks"
missed = "once"
data = { job = "report" }
"#;
    let start = || async {
        Node::start(super::options(&data, Some(manifest(dir.path(), text))).await)
            .await
            .unwrap()
    };
    let node = start().await;
    let before = at_least(&node, 2).await;
    node.shutdown().await;
    drop(node);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let node = start().await;
    let ticks = at_least(&node, before.len() + 3).await;
    let status = node.status().await.unwrap();
    let s = &status.sources[0];
    assert_eq!((s.kind.as_str(), s.state), ("cron", "running"), "{s:?}");
    assert!(
        s.position
            .as_deref()
            .is_some_and(|p| p.starts_with("ticks=")),
        "{s:?}"
    );
    node.shutdown().await;

    let schedule = weir_mesh::schedule::Schedule::parse("* * * * * *", None).unwrap();
    let data: Vec<serde_json::Value> = ticks
        .iter()
        .map(|e| serde_json::from_slice(&e.data_bytes().unwrap()).unwrap())
        .collect();
    let scheduled: Vec<jiff::Timestamp> = data
        .iter()
        .map(|d| d["scheduled"].as_str().unwrap().parse().unwrap())
        .collect();
    for (i, tick) in ticks.iter().enumerate() {
        assert_eq!(tick.id, format!("every-second:{}", scheduled[i]));
        assert_eq!(tick.ty, "dev.weir.schedule.tick");
        assert_eq!(tick.source, "/schedules/every-second");
        assert_eq!(data[i]["job"], "report");
    }
    for i in 1..ticks.len() {
        assert!(scheduled[i] > scheduled[i - 1], "{scheduled:?}");
        let between = schedule.count_between(scheduled[i - 1], scheduled[i]);
        assert_eq!(
            data[i]["missed"].as_u64(),
            Some(between),
            "tick {i}: {data:?}"
        );
    }
    // The pause: at least two occurrences passed unfired before the catch-up tick.
    let first_after = &data[before.len()];
    assert!(first_after["missed"].as_u64().unwrap() >= 1, "{data:?}");
}

/// The first `n` events of the ticks topic.
async fn at_least(node: &Node, n: usize) -> Vec<CloudEvent> {
    let mut stream = node.subscribe("ticks", StartFrom::Earliest).await.unwrap();
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while got.len() < n {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(event)) => got.push(event.unwrap().event),
            _ => panic!("ticks: {} of {n} within 30 s", got.len()),
        }
    }
    got
}

/// An event over the log's record limit (text escaped for JSON grows up to sixfold) is
/// dead-lettered as too large instead of stalling the source, and a deploy that points
/// the source at another Redis database does not apply the old database's positions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_large_events_are_dead_lettered_and_positions_stay_with_their_broker() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let key = unique("weir:test:moved");
    let text_app = |url: &str| {
        format!(
            r#"
[app]
name = "positional"
[topics.telemetry]
[sources.readings]
url = "{url}"
subscribe = "{key}"
topic = "telemetry"
type = "com.example.reading"
data = "text"
"#
        )
    };
    // Database 1 gets its entries first: their ids are older than database 0's.
    let db1 = format!("{}/1", redis());
    xadd_at(
        &db1,
        &key,
        &(0..5).map(|n| reading("db1", n)).collect::<Vec<_>>(),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    // 200 KiB of U+0001: under max_payload_bytes, 1.2 MB as a JSON string ("\u0001").
    let controls = vec![("data", vec![1u8; 200 * 1024])];
    xadd(&key, &[reading("db0", 0), controls, reading("db0", 1)]).await;

    let node =
        Node::start(super::options(&data, Some(manifest(dir.path(), &text_app(&redis())))).await)
            .await
            .unwrap();
    let events = exactly(&node, "telemetry", 2).await;
    let texts: Vec<String> = events
        .iter()
        .map(|e| String::from_utf8(e.data_bytes().unwrap().to_vec()).unwrap())
        .collect();
    assert!(texts[1].contains(r#""n":1"#), "{texts:?}");
    let dead = exactly(&node, "readings.dlq", 1).await;
    assert_eq!(
        dead[0].extensions.get("dlqreason"),
        Some(&ExtensionValue::String("too-large".into()))
    );

    node.deploy_app(&text_app(&db1), Default::default())
        .await
        .unwrap();
    let events = exactly(&node, "telemetry", 7).await;
    let from_db1 = events
        .iter()
        .filter(|e| String::from_utf8_lossy(&e.data_bytes().unwrap()).contains("db1"))
        .count();
    assert_eq!(from_db1, 5);
    node.shutdown().await;
}
