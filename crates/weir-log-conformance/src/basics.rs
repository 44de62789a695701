//! Topics, appends, keys, stateless reads and offsets by time.

use std::collections::BTreeMap;

use weir_log::{Durability, ErrorKind, Expect, GroupCommit, Record, TopicCreated, TopicSpec};

use crate::{Harness, read_all, records, values};

pub async fn topics_are_created_listed_and_updated(harness: &impl Harness) {
    let log = harness.open().await;
    let spec = TopicSpec::with_partitions(3);
    assert_eq!(
        log.create_topic("b", &spec).await.expect("create b"),
        TopicCreated::Created
    );
    log.create_topic("a", &TopicSpec::default())
        .await
        .expect("create a");
    let names: Vec<String> = log
        .topics()
        .await
        .expect("topics")
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, ["a", "b"], "topics are listed by name");

    // The same count updates the other settings; another count is refused.
    let changed = TopicSpec {
        durability: Durability::Interval { ms: 50 },
        retention_ms: Some(3_600_000),
        ..spec.clone()
    };
    assert_eq!(
        log.create_topic("b", &changed).await.expect("update b"),
        TopicCreated::Updated
    );
    let info = log.topic("b").await.expect("topic").expect("b exists");
    assert_eq!(info.partitions, 3);
    assert_eq!(info.config.durability, Durability::Interval { ms: 50 });
    assert_eq!(info.config.retention_ms, Some(3_600_000));
    assert_eq!(info.end_offsets, [0, 0, 0]);
    let err = log
        .create_topic("b", &TopicSpec::with_partitions(4))
        .await
        .expect_err("another partition count");
    assert_eq!(err.kind(), ErrorKind::Exists, "{err}");
    assert!(log.topic("nope").await.expect("topic").is_none());

    // And all of it after a reopen.
    drop(log);
    let log = harness.open().await;
    let info = log.topic("b").await.expect("topic").expect("b survives");
    assert_eq!(info.config.durability, Durability::Interval { ms: 50 });
    assert_eq!(info.partitions, 3);
}

pub async fn appends_are_read_back_in_order_with_keys_together(harness: &impl Harness) {
    let log = harness.open().await;
    log.create_topic("t", &TopicSpec::with_partitions(4))
        .await
        .expect("create");
    let mut key_partition: BTreeMap<String, u32> = BTreeMap::new();
    for round in 0..5 {
        let positions = log
            .append("t", records(&format!("r{round}"), 20, 7))
            .await
            .expect("append");
        assert_eq!(positions.len(), 20, "a position per record, in input order");
        for (i, position) in positions.iter().enumerate() {
            let key = format!("k{}", i % 7);
            let first = *key_partition
                .entry(key.clone())
                .or_insert(position.partition);
            assert_eq!(position.partition, first, "{key} changed partition");
            assert_eq!(
                position.partition,
                weir_log::partition_for_key(key.as_bytes(), 4),
                "keys go where Kafka's default partitioner puts them"
            );
        }
    }
    let mut total = 0;
    for partition in 0..4 {
        let all = read_all(&log, "t", partition).await;
        total += all.len();
        assert!(
            all.windows(2).all(|w| w[0].offset < w[1].offset),
            "offsets increase"
        );
        // Within a partition, each key's records in append order.
        // Values are "r{round}-{i}": append order is (round, i).
        let order = |value: &str| -> (u32, u32) {
            let (round, i) = value[1..].split_once('-').expect("r{round}-{i}");
            (round.parse().expect("round"), i.parse().expect("index"))
        };
        let mut last: BTreeMap<Vec<u8>, String> = BTreeMap::new();
        for record in &all {
            assert_eq!(record.partition, partition);
            let key = record.key.clone().expect("a key").to_vec();
            let value = String::from_utf8_lossy(&record.value).into_owned();
            if let Some(before) = last.insert(key, value.clone()) {
                assert!(order(&before) < order(&value), "{before} then {value}");
            }
        }
        let stateless = log.read("t", partition, 0, usize::MAX).await.expect("read");
        assert_eq!(stateless, all, "a stateless read sees what a reader sees");
    }
    assert_eq!(total, 100);

    // Into one partition, unkeyed, as one call.
    let positions = log
        .append_to("t", 2, records("direct", 3, 0), Expect::Any)
        .await
        .expect("append_to");
    assert!(positions.iter().all(|p| p.partition == 2));
    let tail = log
        .read("t", 2, positions[0].offset, 10)
        .await
        .expect("read");
    assert_eq!(values(&tail), ["direct-0", "direct-1", "direct-2"]);

    // Group offsets are kept across a reopen.
    log.commit_offset(GroupCommit {
        group: "g".into(),
        topic: "t".into(),
        partition: 2,
        next_offset: positions[2].offset + 1,
        generation: 0,
    })
    .await
    .expect("commit");
    drop(log);
    let log = harness.open().await;
    assert_eq!(
        log.committed_offset("g", "t", 2).await.expect("committed"),
        Some(positions[2].offset + 1)
    );
    assert_eq!(
        log.committed_offset("g", "t", 1).await.expect("committed"),
        None
    );
    let all = read_all(&log, "t", 2).await;
    assert_eq!(
        values(&all[all.len() - 3..]),
        ["direct-0", "direct-1", "direct-2"],
        "acknowledged records survive a reopen"
    );
}

pub async fn an_atomic_append_stores_every_record_where_it_says(harness: &impl Harness) {
    let log = harness.open().await;
    log.create_topic("t", &TopicSpec::with_partitions(3))
        .await
        .expect("create");
    // Keyed and unkeyed, spanning every partition; then one record; then one partition.
    let mut batch = records("mixed", 30, 5);
    batch.extend(records("loose", 6, 0));
    for (name, batch) in [
        ("mixed", batch),
        ("one", records("one", 1, 0)),
        ("same-key", records("same-key", 4, 1)),
    ] {
        let sent: Vec<String> = batch
            .iter()
            .map(|r| String::from_utf8_lossy(&r.value).into_owned())
            .collect();
        let positions = log.append_atomic("t", batch.clone()).await.expect(name);
        assert_eq!(positions.len(), sent.len(), "{name}: a position per record");
        for ((position, value), record) in positions.iter().zip(&sent).zip(&batch) {
            let stored = log
                .read("t", position.partition, position.offset, 1)
                .await
                .expect("read");
            assert_eq!(
                values(&stored),
                std::slice::from_ref(value),
                "{name}: {position:?}"
            );
            if let Some(key) = &record.key {
                assert_eq!(
                    position.partition,
                    weir_log::partition_for_key(key, 3),
                    "{name}: keys go where append puts them"
                );
            }
        }
    }
    let mut total = 0;
    for partition in 0..3 {
        total += read_all(&log, "t", partition).await.len();
    }
    assert_eq!(total, 36 + 1 + 4, "each record once");
}

pub async fn invalid_requests_are_refused_with_their_kind(harness: &impl Harness) {
    let log = harness.open().await;
    log.create_topic("t", &TopicSpec::with_partitions(2))
        .await
        .expect("create");
    fn kind<T: std::fmt::Debug>(result: weir_log::Result<T>) -> ErrorKind {
        result.expect_err("refused").kind()
    }
    assert_eq!(
        kind(log.append("missing", records("x", 1, 0)).await),
        ErrorKind::NotFound
    );
    assert_eq!(
        kind(log.append_to("t", 2, records("x", 1, 0), Expect::Any).await),
        ErrorKind::NotFound
    );
    assert_eq!(kind(log.read("t", 9, 0, 1).await), ErrorKind::NotFound);
    assert_eq!(
        kind(log.create_topic("bad name", &TopicSpec::default()).await),
        ErrorKind::Invalid
    );
    assert_eq!(
        kind(
            log.create_topic(
                "x",
                &TopicSpec::default().with_backend_setting("no-such-setting", 1)
            )
            .await
        ),
        ErrorKind::Invalid,
        "a backend refuses settings it does not know"
    );
    assert_eq!(
        kind(
            log.commit_offset(GroupCommit {
                group: "g".into(),
                topic: "t".into(),
                partition: 0,
                next_offset: 5,
                generation: 0,
            })
            .await
        ),
        ErrorKind::Invalid,
        "an offset past the end"
    );
    let compacted = TopicSpec {
        compaction: true,
        ..TopicSpec::default()
    };
    log.create_topic("c", &compacted).await.expect("create c");
    assert_eq!(
        kind(log.append("c", vec![Record::new("no key")]).await),
        ErrorKind::Invalid,
        "a compacted topic needs keys"
    );
    assert_eq!(
        kind(
            log.append("t", vec![Record::new(vec![0u8; 64 << 20])])
                .await
        ),
        ErrorKind::TooLarge
    );
    for partition in 0..2 {
        assert!(
            read_all(&log, "t", partition).await.is_empty(),
            "nothing written"
        );
    }
}

pub async fn offsets_by_time_find_the_first_record_at_or_after(harness: &impl Harness) {
    let log = harness.open().await;
    log.create_topic("t", &TopicSpec::default())
        .await
        .expect("create");
    let stamped: Vec<Record> = [1_000, 2_000, 3_000]
        .into_iter()
        .map(|ms| Record::new(format!("at-{ms}")).with_timestamp(ms))
        .collect();
    log.append("t", stamped).await.expect("append");
    assert_eq!(log.offset_for_time("t", 0, 0).await.expect("time"), 0);
    assert_eq!(log.offset_for_time("t", 0, 1_500).await.expect("time"), 1);
    assert_eq!(log.offset_for_time("t", 0, 3_000).await.expect("time"), 2);
    assert_eq!(
        log.offset_for_time("t", 0, 9_000).await.expect("time"),
        3,
        "none after: the end"
    );
    let all = log.read("t", 0, 0, 10).await.expect("read");
    assert_eq!(
        all.iter().map(|r| r.timestamp_ms).collect::<Vec<_>>(),
        [1_000, 2_000, 3_000]
    );
}
