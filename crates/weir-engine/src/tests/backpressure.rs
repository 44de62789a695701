//! Backpressure, checked on the reads themselves rather than on the node's memory: a
//! pipeline's partition task reads the next batch only after the one before the previous
//! is committed (see the pipeline's module docs), so however slow its commits are, it
//! never holds more than two batches of 256 events, and the backlog stays in the log.
//!
//! The test controls progress instead of the clock: the log under the node holds every
//! commit of the pipeline until the test lets it go, and records, at every read of the
//! source partition, how far the read position is ahead of the committed offset.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::Semaphore;
use weir_cloudevents::CloudEvent;
use weir_log::{
    EventLog, Expect, GroupCommit, Guarantees, Offsets, PartitionReader, ReadBatch, Record,
    RecordPosition, Result, RetentionReport, SharedLog, StoredRecord, TopicCreated, TopicInfo,
    TopicSpec, Transaction,
};
use weir_manifest::Manifest;

use super::total_events;
use crate::{Node, NodeOptions};

/// The pipeline's batch, as its module docs give it.
const BATCH: u64 = 256;
/// Events published: many batches, the last one partial.
const EVENTS: u64 = 2000;

/// What the log under the node saw of the pipeline `p` and its source topic `in`.
#[derive(Default)]
struct Seen {
    /// The group's committed offset in partition 0 of `in`, as of the last commit the log
    /// finished.
    committed: u64,
    /// The largest `read position - committed` of any read of `in`.
    most_ahead: u64,
    /// Reads that went further than two batches ahead: (position, committed).
    too_far: Vec<(u64, u64)>,
}

struct Spy {
    seen: Mutex<Seen>,
    /// Commits of the pipeline that reached the log; each waits for a permit.
    arrived: AtomicU64,
    gate: Semaphore,
}

impl Spy {
    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn read_to(&self, position: u64) {
        let mut seen = self.seen();
        let ahead = position.saturating_sub(seen.committed);
        seen.most_ahead = seen.most_ahead.max(ahead);
        if ahead > 2 * BATCH {
            let committed = seen.committed;
            seen.too_far.push((position, committed));
        }
    }
}

/// The embedded log, with the pipeline's commits held at a gate and its reads watched.
struct GatedLog {
    inner: SharedLog,
    spy: Arc<Spy>,
}

struct WatchedReader {
    inner: Box<dyn PartitionReader>,
    spy: Arc<Spy>,
}

#[async_trait]
impl PartitionReader for WatchedReader {
    fn topic(&self) -> &str {
        self.inner.topic()
    }
    fn partition(&self) -> u32 {
        self.inner.partition()
    }
    fn position(&self) -> u64 {
        self.inner.position()
    }
    fn seek(&mut self, offset: u64) {
        self.inner.seek(offset);
    }
    async fn read(&mut self, max_records: usize) -> Result<ReadBatch> {
        let batch = self.inner.read(max_records).await?;
        if let Some(last) = batch.records.last() {
            self.spy.read_to(last.offset + 1);
        }
        Ok(batch)
    }
    async fn wait(&mut self) -> Result<()> {
        self.inner.wait().await
    }
}

#[async_trait]
impl EventLog for GatedLog {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    fn guarantees(&self, spec: &TopicSpec) -> Guarantees {
        self.inner.guarantees(spec)
    }
    async fn create_topic(&self, name: &str, spec: &TopicSpec) -> Result<TopicCreated> {
        self.inner.create_topic(name, spec).await
    }
    async fn topic(&self, name: &str) -> Result<Option<TopicInfo>> {
        self.inner.topic(name).await
    }
    async fn topics(&self) -> Result<Vec<TopicInfo>> {
        self.inner.topics().await
    }
    async fn append(&self, topic: &str, records: Vec<Record>) -> Result<Vec<RecordPosition>> {
        self.inner.append(topic, records).await
    }
    async fn append_atomic(
        &self,
        topic: &str,
        records: Vec<Record>,
    ) -> Result<Vec<RecordPosition>> {
        self.inner.append_atomic(topic, records).await
    }
    async fn append_to(
        &self,
        topic: &str,
        partition: u32,
        records: Vec<Record>,
        expect: Expect,
    ) -> Result<Vec<RecordPosition>> {
        self.inner
            .append_to(topic, partition, records, expect)
            .await
    }
    async fn read(
        &self,
        topic: &str,
        partition: u32,
        from_offset: u64,
        max_records: usize,
    ) -> Result<Vec<StoredRecord>> {
        let records = self
            .inner
            .read(topic, partition, from_offset, max_records)
            .await?;
        if topic == "in"
            && let Some(last) = records.last()
        {
            self.spy.read_to(last.offset + 1);
        }
        Ok(records)
    }
    async fn reader(
        &self,
        topic: &str,
        partition: u32,
        from_offset: u64,
    ) -> Result<Box<dyn PartitionReader>> {
        let inner = self.inner.reader(topic, partition, from_offset).await?;
        if topic != "in" {
            return Ok(inner);
        }
        Ok(Box::new(WatchedReader {
            inner,
            spy: self.spy.clone(),
        }))
    }
    async fn offsets(&self, topic: &str, partition: u32) -> Result<Offsets> {
        self.inner.offsets(topic, partition).await
    }
    async fn offset_for_time(&self, topic: &str, partition: u32, timestamp_ms: i64) -> Result<u64> {
        self.inner
            .offset_for_time(topic, partition, timestamp_ms)
            .await
    }
    async fn claim(&self, group: &str, topic: &str, partition: u32) -> Result<u64> {
        self.inner.claim(group, topic, partition).await
    }
    async fn generation(&self, group: &str, topic: &str, partition: u32) -> Result<u64> {
        self.inner.generation(group, topic, partition).await
    }
    async fn commit_offset(&self, commit: GroupCommit) -> Result<()> {
        self.inner.commit_offset(commit).await
    }
    async fn committed_offset(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
    ) -> Result<Option<u64>> {
        self.inner.committed_offset(group, topic, partition).await
    }
    async fn enforce_retention(&self) -> Result<RetentionReport> {
        self.inner.enforce_retention().await
    }
    async fn commit_transaction(&self, txn: Transaction) -> Result<()> {
        let next = match &txn.commit {
            Some(commit) if commit.group == "p" && commit.topic == "in" => {
                self.spy.arrived.fetch_add(1, Ordering::SeqCst);
                self.spy
                    .gate
                    .acquire()
                    .await
                    .expect("the gate stays open")
                    .forget();
                Some(commit.next_offset)
            }
            _ => None,
        };
        self.inner.commit_transaction(txn).await?;
        if let Some(next) = next {
            self.spy.seen().committed = next;
        }
        Ok(())
    }
}

fn manifest(dir: &Path) -> Manifest {
    let text = format!(
        r#"
[topics.in]
partitions = 1
[topics.out]
partitions = 1
[functions.echo]
source = "{}"
[pipelines.p]
from = "in"
function = "echo"
to = ["out"]
"#,
        weir_test_support::test_guest("guest-echo").display()
    );
    Manifest::from_toml_str(&text, dir).unwrap()
}

/// With every commit held until the test lets it go, the pipeline reads at most two
/// batches past its committed offset (and does get two ahead, so the bound is what
/// stops it); all 2,000 events come out once the commits go through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_with_slow_commits_reads_at_most_two_batches_ahead() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let spy = Arc::new(Spy {
        seen: Mutex::new(Seen::default()),
        arrived: AtomicU64::new(0),
        gate: Semaphore::new(0),
    });
    let inner = weir_log_embedded::open_shared(&data, Default::default())
        .await
        .unwrap();
    let log: SharedLog = Arc::new(GatedLog {
        inner,
        spy: spy.clone(),
    });
    let node = Node::start(NodeOptions::new(&data, Some(manifest(dir.path())), log))
        .await
        .unwrap();

    // The whole backlog is there before the first commit (where the new group starts)
    // goes through, so every batch but the last is full.
    let events: Vec<_> = (0..EVENTS)
        .map(|n| CloudEvent::new(format!("e{n}"), "test://s", "t"))
        .collect();
    node.publish("in", &events).await.unwrap();

    // Let the commits go one at a time, each only once it reached the log.
    let mut released = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while spy.seen().committed < EVENTS {
        if spy.arrived.load(Ordering::SeqCst) > released {
            released += 1;
            spy.gate.add_permits(1);
        } else {
            assert!(
                Instant::now() < deadline,
                "the pipeline stopped at offset {} after {released} commits",
                spy.seen().committed
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    let (too_far, most_ahead) = {
        let seen = spy.seen();
        (seen.too_far.clone(), seen.most_ahead)
    };
    assert!(
        too_far.is_empty(),
        "reads more than two batches ahead of the committed offset (position, committed): {too_far:?}"
    );
    assert!(
        most_ahead > BATCH,
        "the pipeline never read a batch while the previous one was committing (at most {most_ahead} ahead)"
    );
    assert_eq!(total_events(&node, "out"), EVENTS);
    let mut ids = BTreeSet::new();
    let mut next = 0;
    loop {
        let batch = node.read("out", 0, next, 1000).await.unwrap();
        let Some(last) = batch.last() else { break };
        next = last.offset + 1;
        ids.extend(batch.into_iter().map(|e| e.event.id));
    }
    assert_eq!(ids.len() as u64, EVENTS, "one output per input");
    node.shutdown().await;
}
