//! Cursor readers: read, wait, seek, and never skip silently.

use std::time::Duration;

use weir_log::{Skipped, TopicSpec};

use crate::{Harness, records, values};

pub async fn a_reader_reads_waits_and_seeks(harness: &impl Harness) {
    let log = harness.open().await;
    log.create_topic("t", &TopicSpec::default())
        .await
        .expect("create");
    log.append("t", records("a", 5, 0)).await.expect("append");

    let mut reader = log.reader("t", 0, 0).await.expect("reader");
    assert_eq!((reader.topic(), reader.partition()), ("t", 0));
    let read = reader.read(3).await.expect("read");
    assert_eq!(values(&read.records), ["a-0", "a-1", "a-2"]);
    assert_eq!(read.skipped, None);
    assert_eq!(reader.position(), 3, "just past the last record handed out");
    let read = reader.read(10).await.expect("read");
    assert_eq!(values(&read.records), ["a-3", "a-4"]);
    assert!(
        reader.read(10).await.expect("read").records.is_empty(),
        "the end"
    );

    // A wait at the end resolves once a record is appended, not before.
    let waiting = tokio::time::timeout(Duration::from_millis(100), reader.wait()).await;
    assert!(waiting.is_err(), "nothing to read yet");
    let appender = {
        let log = log.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            log.append("t", records("b", 1, 0)).await.expect("append")
        })
    };
    tokio::time::timeout(Duration::from_secs(10), reader.wait())
        .await
        .expect("woken by the append")
        .expect("wait");
    appender.await.expect("appender");
    assert_eq!(
        values(&reader.read(10).await.expect("read").records),
        ["b-0"]
    );

    // Seeking moves the position both ways; a wait with a record there is immediate.
    reader.seek(1);
    reader.wait().await.expect("a record is there");
    assert_eq!(
        values(&reader.read(1).await.expect("read").records),
        ["a-1"]
    );
    reader.seek(100);
    assert!(reader.read(10).await.expect("read").records.is_empty());
}

pub async fn a_reader_below_the_start_reports_what_retention_skipped(harness: &impl Harness) {
    let log = harness.open().await;
    log.create_topic("t", &harness.retention_spec(1))
        .await
        .expect("create");
    let mut reader = log.reader("t", 0, 0).await.expect("a reader at the start");
    // Enough appends of 1 KiB records, one call each, that retention has whole units
    // (segments, on the embedded log) to delete.
    for i in 0..64 {
        let value = format!("{i:04}-{}", "x".repeat(1024));
        log.append("t", vec![weir_log::Record::new(value)])
            .await
            .expect("append");
    }
    log.enforce_retention().await.expect("retention");
    let start = log.offsets("t", 0).await.expect("offsets").start;
    assert!(start > 0, "retention deleted the oldest records");

    let read = reader.read(1).await.expect("read");
    assert_eq!(
        read.skipped,
        Some(Skipped { from: 0, to: start }),
        "the reader says what it jumped over"
    );
    assert_eq!(read.records[0].offset, start);
    assert_eq!(reader.position(), start + 1);
    let read = reader.read(1).await.expect("read");
    assert_eq!(read.skipped, None, "reported once");

    // A new reader placed below the start reports it too, even when it finds nothing.
    let mut late = log.reader("t", 0, 1).await.expect("reader");
    let read = late.read(0).await.expect("read nothing");
    assert!(read.records.is_empty());
    assert_eq!(read.skipped, Some(Skipped { from: 1, to: start }));
    assert_eq!(late.position(), start);
}
