//! What the NATS backend refuses, and that a refusal writes nothing.

use weir_log::{ErrorKind, Expect, GroupCommit, Record, TopicSpec, Transaction};
use weir_test_support::nats::NatsServer;

/// The log on `server`, with a topic "t" of one partition.
async fn with_topic_t(server: &NatsServer) -> weir_log::SharedLog {
    let log = weir_log_nats::open_shared(&server.url())
        .await
        .expect("open");
    log.create_topic("t", &TopicSpec::default())
        .await
        .expect("create");
    log
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_over_one_atomic_batch_is_refused_whole() {
    let server = NatsServer::start(false);
    let log = with_topic_t(&server).await;
    let records =
        |n: usize| -> Vec<Record> { (0..n).map(|i| Record::new(format!("r{i}"))).collect() };
    let err = log
        .append_to("t", 0, records(1001), Expect::Any)
        .await
        .expect_err("1,001 records in one call");
    assert_eq!(err.kind(), ErrorKind::TooLarge, "{err}");
    assert_eq!(
        log.offsets("t", 0).await.expect("offsets").end,
        0,
        "nothing written"
    );
    let positions = log
        .append_to("t", 0, records(1000), Expect::End(0))
        .await
        .expect("1,000 records, one batch");
    assert_eq!(positions.last().map(|p| p.offset), Some(999));
    let err = log
        .append_to(
            "t",
            0,
            vec![Record::new("x").with_key(vec![b'k'; 1025])],
            Expect::Any,
        )
        .await
        .expect_err("a key over 1 KiB");
    assert_eq!(err.kind(), ErrorKind::TooLarge, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefixes_keep_apps_apart_and_urls_are_checked() {
    let server = NatsServer::start(false);
    let a = weir_log_nats::open_shared(&format!("{}/app-a", server.url()))
        .await
        .expect("open a");
    let b = weir_log_nats::open_shared(&format!("{}/app-b", server.url()))
        .await
        .expect("open b");
    a.create_topic("orders", &TopicSpec::with_partitions(2))
        .await
        .expect("create in a");
    assert!(b.topic("orders").await.expect("topic").is_none());
    b.create_topic("orders", &TopicSpec::with_partitions(3))
        .await
        .expect("the same name in b, another count");
    a.append("orders", vec![Record::new("in a")])
        .await
        .expect("append");
    let in_b: u64 = b
        .topic("orders")
        .await
        .expect("topic")
        .expect("b's")
        .end_offsets
        .iter()
        .sum();
    assert_eq!(in_b, 0);

    for (url, why) in [
        ("http://127.0.0.1:4222", "scheme"),
        ("nats://127.0.0.1:4222/bad.prefix", "prefix"),
        ("nats://127.0.0.1:4222?sync=sometimes", "sync"),
        ("nats://127.0.0.1:4222?replicas=9", "replicas"),
        ("nats://127.0.0.1:4222?colour=blue", "setting"),
    ] {
        let err = weir_log_nats::open_shared(url)
            .await
            .err()
            .unwrap_or_else(|| panic!("{url} accepted"));
        assert_eq!(err.kind(), ErrorKind::Invalid, "{why}: {err}");
    }
    // Nothing listening: unavailable, within the timeout.
    let err = weir_log_nats::open_shared("nats://127.0.0.1:1?timeout_ms=500")
        .await
        .err()
        .expect("nothing listens on port 1");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_group_names_are_invalid_not_unavailable() {
    let server = NatsServer::start(false);
    let log = with_topic_t(&server).await;
    for group in ["", "a b", "x*", "..", "g>"] {
        let err = log
            .claim(group, "t", 0)
            .await
            .expect_err("a bad group name");
        assert_eq!(err.kind(), ErrorKind::Invalid, "{group:?}: {err}");
        let err = log
            .committed_offset(group, "t", 0)
            .await
            .expect_err("a bad group name");
        assert_eq!(err.kind(), ErrorKind::Invalid, "{group:?}: {err}");
    }
    assert_eq!(
        log.committed_offset("g", "no such topic", 0)
            .await
            .expect("no position"),
        None
    );
}

/// Transactions with far more outputs than one atomic batch, three at once, are each
/// stored whole and in order: runs share the client's 10,000 acknowledgement slots, and
/// a run of 12,000 that took them one by one would wait for ever, holding 10,000. A
/// transaction naming a topic that does not exist writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_transactions_at_once_are_stored_whole_and_in_order() {
    let server = NatsServer::start(false);
    let log = with_topic_t(&server).await;
    log.create_topic("in", &TopicSpec::with_partitions(3))
        .await
        .expect("create");
    let txn = |p: u32, generation: u64, topics: &[&str]| Transaction {
        producer: format!("pipeline/p/in/{p}"),
        appends: topics
            .iter()
            .map(|topic| {
                let records = (0..12_000)
                    .map(|i| Record::new(format!("{p}-{i}")).with_key(format!("{p}-{i}")))
                    .collect();
                (topic.to_string(), records)
            })
            .collect(),
        commit: Some(GroupCommit {
            group: "g".into(),
            topic: "in".into(),
            partition: p,
            next_offset: 1,
            generation,
        }),
    };
    let mut sends = Vec::new();
    for p in 0..3 {
        log.append_to("in", p, vec![Record::new("input")], Expect::Any)
            .await
            .expect("an input");
        let generation = log.claim("g", "in", p).await.expect("claim");
        let log = log.clone();
        sends.push(async move { log.commit_transaction(txn(p, generation, &["t"])).await });
    }
    let sent = tokio::time::timeout(
        std::time::Duration::from_secs(120),
        futures::future::join_all(sends),
    )
    .await
    .expect("three transactions of 12,000 records each within two minutes");
    for result in sent {
        result.expect("commit");
    }
    let mut reader = log.reader("t", 0, 0).await.expect("reader");
    let mut next = [0u32; 3];
    loop {
        let read = reader.read(1000).await.expect("read");
        if read.records.is_empty() {
            break;
        }
        for record in read.records {
            let value = String::from_utf8(record.value.to_vec()).expect("text");
            let (p, i) = value.split_once('-').expect("p-i");
            let (p, i): (usize, u32) = (p.parse().expect("p"), i.parse().expect("i"));
            assert_eq!(i, next[p], "transaction {p}'s records in order");
            next[p] += 1;
        }
    }
    assert_eq!(next, [12_000; 3], "every record stored once");
    for p in 0..3 {
        assert_eq!(
            log.committed_offset("g", "in", p).await.expect("committed"),
            Some(1)
        );
    }
    let end = log.offsets("t", 0).await.expect("offsets").end;
    let generation = log.generation("g", "in", 0).await.expect("generation");
    let err = log
        .commit_transaction(txn(0, generation, &["t", "missing"]))
        .await
        .expect_err("a topic that does not exist");
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert_eq!(
        log.offsets("t", 0).await.expect("offsets").end,
        end,
        "nothing written"
    );
}
