//! One-off reads (`EventLog::read`) against a real Kafka-protocol broker (tansu): the log
//! keeps a reader per partition between reads, which pages forward without a seek, sees
//! what was appended since it reached the end, and seeks when a read starts elsewhere.

use weir_log::{Expect, Record, TopicSpec};
use weir_log_conformance::values;
use weir_test_support::kafka::KafkaBroker;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_page_forward_see_appends_at_the_end_and_seek_back() {
    let broker = KafkaBroker::start();
    let log = weir_log_kafka::open_shared(&broker.url())
        .await
        .expect("open the Kafka log");
    log.create_topic("t", &TopicSpec::with_partitions(1))
        .await
        .expect("create");
    let append = |values: Vec<String>| {
        let records = values.into_iter().map(Record::new).collect();
        log.append_to("t", 0, records, Expect::Any)
    };
    let all: Vec<String> = (0..10).map(|i| format!("v{i}")).collect();
    append(all.clone()).await.expect("append");

    // Pages of three, each from where the last ended.
    let (mut next, mut seen, mut offsets) = (0, Vec::new(), Vec::new());
    loop {
        let page = log.read("t", 0, next, 3).await.expect("read");
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 3, "{} records for a page of 3", page.len());
        next = page.last().expect("a record").offset + 1;
        seen.extend(values(&page));
        offsets.extend(page.iter().map(|r| r.offset));
    }
    assert_eq!(seen, all);

    // At the end, records appended since are read from the same position.
    assert!(log.read("t", 0, next, 10).await.expect("read").is_empty());
    append(vec!["v10".into(), "v11".into()])
        .await
        .expect("append");
    let page = log.read("t", 0, next, 10).await.expect("read");
    assert_eq!(values(&page), ["v10", "v11"]);
    let next = page.last().expect("a record").offset + 1;

    // A page that ends at the end without seeing it (the consumer's end report still
    // queued), then records appended: the next page has them.
    append(vec!["v12".into(), "v13".into()])
        .await
        .expect("append");
    let page = log.read("t", 0, next, 2).await.expect("read");
    assert_eq!(values(&page), ["v12", "v13"]);
    let next = page.last().expect("a record").offset + 1;
    // A moment for the consumer to queue its end report.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    append(vec!["v14".into()]).await.expect("append");
    let page = log.read("t", 0, next, 10).await.expect("read");
    assert_eq!(values(&page), ["v14"]);
    let next = page.last().expect("a record").offset + 1;

    // Back to an earlier record (a seek), then on from there, then past the end.
    let page = log.read("t", 0, offsets[2], 2).await.expect("read");
    assert_eq!(values(&page), ["v2", "v3"]);
    let page = log.read("t", 0, offsets[4], 1).await.expect("read");
    assert_eq!(values(&page), ["v4"]);
    let page = log.read("t", 0, offsets[5], 100).await.expect("read");
    let rest: Vec<String> = (5..15).map(|i| format!("v{i}")).collect();
    assert_eq!(values(&page), rest);
    assert!(log.read("t", 0, next, 10).await.expect("read").is_empty());
}
