//! A nats-server killed (SIGKILL) and started again under load: every acknowledged
//! record is there afterwards, once, in order; appends fail as unavailable while it is
//! down and go on once it is back; a reader waiting across the restart reads on.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use weir_log::{ErrorKind, Expect, Record, TopicSpec};
use weir_test_support::nats::NatsServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_records_survive_a_server_crash_under_load() {
    let mut server = NatsServer::start(true);
    let url = format!("{}?sync=always&timeout_ms=2000", server.url());
    let log = weir_log_nats::open_shared(&url).await.expect("open");
    log.create_topic("t", &TopicSpec::with_partitions(2))
        .await
        .expect("create");

    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..4u32 {
        let (log, stop) = (log.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            let mut refused = 0u32;
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let batch: Vec<Record> = (0..5)
                    .map(|i| Record::new(format!("w{w}-{n}-{i}")).with_key(format!("w{w}")))
                    .collect();
                n += 1;
                match log.append("t", batch).await {
                    Ok(_) => acknowledged.extend((0..5).map(|i| format!("w{w}-{}-{i}", n - 1))),
                    Err(e) => {
                        assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
                        refused += 1;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
            (acknowledged, refused)
        }));
    }
    // A reader waiting at the end of partition 0 across the restart.
    let partition = weir_log::partition_for_key(b"late", 2);
    let end = log.offsets("t", partition).await.expect("offsets").end;
    let mut reader = log.reader("t", partition, end).await.expect("reader");

    tokio::time::sleep(Duration::from_millis(700)).await;
    server.restart();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut acknowledged = BTreeSet::new();
    let mut refused = 0;
    for writer in writers {
        let (values, r) = writer.await.expect("writer");
        acknowledged.extend(values);
        refused += r;
    }
    assert!(!acknowledged.is_empty());

    // Every acknowledged record is stored once; each writer's records in its order.
    let mut stored = Vec::new();
    for p in 0..2 {
        stored.extend(weir_log_conformance::values(
            &weir_log_conformance::read_all(&log, "t", p).await,
        ));
    }
    let unique: BTreeSet<&String> = stored.iter().collect();
    assert_eq!(unique.len(), stored.len(), "a record stored twice");
    let missing: Vec<_> = acknowledged
        .iter()
        .filter(|v| !unique.contains(v))
        .collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged records lost: {missing:?}",
        missing.len()
    );
    for w in 0..4 {
        let order: Vec<(u32, u32)> = stored
            .iter()
            .filter_map(|v| v.strip_prefix(&format!("w{w}-")))
            .map(|rest| {
                let (n, i) = rest.split_once('-').expect("n-i");
                (n.parse().expect("n"), i.parse().expect("i"))
            })
            .collect();
        assert!(order.windows(2).all(|p| p[0] < p[1]), "w{w} out of order");
    }
    eprintln!(
        "{} acknowledged, {} stored, {refused} appends refused while the server was down",
        acknowledged.len(),
        stored.len()
    );

    // The reader that waited across the restart reads what comes next.
    log.append_to(
        "t",
        partition,
        vec![Record::new("after").with_key("late")],
        Expect::Any,
    )
    .await
    .expect("append after the restart");
    let mut seen = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            reader.wait().await.expect("wait");
            let batch = reader.read(1000).await.expect("read");
            // The client makes its consumer again after the outage, from the stream's
            // start when it had delivered nothing: the reader hands out nothing below
            // where it stood.
            assert!(
                batch.records.iter().all(|r| r.offset >= end),
                "the reader went back below {end}"
            );
            seen.extend(weir_log_conformance::values(&batch.records));
            if seen.last().map(String::as_str) == Some("after") {
                return;
            }
        }
    })
    .await
    .expect("the reader reads on after the restart");
}
