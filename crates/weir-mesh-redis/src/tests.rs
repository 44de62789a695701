//! Against the machine's Redis.

use std::time::Duration;

use weir_mesh::{Message, Source, SourceOptions, Start};
use weir_test_support::mqtt::unique;
use weir_test_support::redis::{redis, xadd};

use super::RedisSource;

fn options(keys: &[&str], start: Start) -> SourceOptions {
    SourceOptions {
        name: "r".into(),
        app: "redis-tests".into(),
        url: redis(),
        subscribe: keys.iter().map(|k| (*k).to_owned()).collect(),
        start,
        ..SourceOptions::default()
    }
}

async fn take(source: &mut RedisSource, n: usize) -> Vec<Message> {
    let mut out = Vec::new();
    while out.len() < n {
        let batch = tokio::time::timeout(Duration::from_secs(20), source.next(n - out.len()))
            .await
            .expect("entries within 20 s")
            .expect("the source reads");
        out.extend(batch);
    }
    out
}

fn numbered(n: usize) -> Vec<Vec<(&'static str, Vec<u8>)>> {
    (0..n)
        .map(|i| {
            vec![
                ("data", format!("{{\"n\":{i}}}").into_bytes()),
                ("device", b"d7".to_vec()),
            ]
        })
        .collect()
}

#[tokio::test]
async fn entries_arrive_in_order_with_their_positions_and_a_resume_reads_what_follows() {
    let key = unique("weir:test:stream");
    let ids = xadd(&key, &numbered(600)).await;
    let mut source = RedisSource::open(&options(&[&key], Start::Earliest)).unwrap();
    let messages = take(&mut source, 600).await;
    for (i, m) in messages.iter().enumerate() {
        assert_eq!(m.payload, format!("{{\"n\":{i}}}").as_bytes());
        assert_eq!(m.subject, key);
        assert_eq!(m.id.as_deref(), Some(format!("{key}:{}", ids[i]).as_str()));
        assert_eq!(m.headers, vec![("device".to_owned(), "d7".to_owned())]);
        let position = m.position.as_ref().unwrap();
        assert_eq!(
            (position.lane.as_str(), position.after.as_str()),
            (key.as_str(), ids[i].as_str())
        );
    }
    assert!(source.health().connected);
    drop(source);

    // Opened again after entry 399: entries 400.. and a new one, nothing before.
    let mut resumed = options(&[&key], Start::Earliest);
    resumed.resume.insert(key.clone(), ids[399].clone());
    let mut source = RedisSource::open(&resumed).unwrap();
    let later = xadd(&key, &numbered(1)).await;
    let messages = take(&mut source, 201).await;
    assert_eq!(messages[0].position.as_ref().unwrap().after, ids[400]);
    assert_eq!(messages[199].position.as_ref().unwrap().after, ids[599]);
    assert_eq!(messages[200].position.as_ref().unwrap().after, later[0]);
}

#[tokio::test]
async fn latest_skips_what_was_there_and_an_entry_without_data_is_a_json_object() {
    let key = unique("weir:test:stream");
    xadd(&key, &numbered(5)).await;
    let mut source = RedisSource::open(&options(&[&key], Start::Latest)).unwrap();
    // Healthy once it has settled where it begins: the end of the stream now.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !source.health().connected {
        assert!(
            tokio::time::Instant::now() < deadline,
            "connects within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    xadd(
        &key,
        &[vec![("device", b"d9".to_vec()), ("t", b"21.5".to_vec())]],
    )
    .await;
    let messages = take(&mut source, 1).await;
    let value: serde_json::Value = serde_json::from_slice(&messages[0].payload).unwrap();
    assert_eq!(value, serde_json::json!({"device": "d9", "t": "21.5"}));
    assert_eq!(messages[0].headers.len(), 2);
}

#[tokio::test]
async fn a_url_that_cannot_work_is_a_config_error() {
    let mut bad = options(&["k"], Start::Earliest);
    bad.url = "rediss://127.0.0.1".into();
    let e = RedisSource::open(&bad).err().unwrap();
    assert_eq!(e.kind, weir_mesh::ErrorKind::Config);
    assert!(e.message.contains("rediss://"), "{e}");
    let mut none = options(&[], Start::Earliest);
    none.subscribe.clear();
    assert_eq!(
        RedisSource::open(&none).err().unwrap().kind,
        weir_mesh::ErrorKind::Config
    );
}
