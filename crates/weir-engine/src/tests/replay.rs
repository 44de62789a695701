//! `Node::replay` on a running node with a function that writes to the key-value store:
//! the replay sees its own writes, the node's store, log, consumer group and pipeline do
//! not (on every backend).

use std::path::Path;
use std::time::Duration;

use weir_cloudevents::CloudEvent;
use weir_manifest::Manifest;

use super::{Backend, collect, events_in, start};
use crate::{Error, ReplayBound, ReplayRequest, VersionSource};

/// `in` → `guest-capabilities` (writes key `k` of `customers` = the event id and reads it
/// back) → `out`.
fn kv_app(dir: &Path) -> Manifest {
    let text = format!(
        r#"
[topics.in]
partitions = 2
[topics.out]
[functions.cap]
source = "{}"
config = {{ namespace = "customers" }}
capabilities = {{ keyvalue = ["customers"] }}
[keyvalue.customers]
[pipelines.p]
from = "in"
function = "cap"
to = ["out"]
"#,
        weir_test_support::test_guest("guest-capabilities").display()
    );
    Manifest::from_toml_str(&text, dir).unwrap()
}

fn kv_event(n: u32) -> CloudEvent {
    let mut ev = CloudEvent::new(format!("e{n}"), "test://replay", "test.kv");
    ev.subject = Some(format!("k{n}"));
    ev
}

fn request(examples: usize) -> ReplayRequest {
    ReplayRequest {
        pipeline: "p".into(),
        examples,
        ..ReplayRequest::default()
    }
}

on_every_backend!(
    a_replay_keeps_key_value_writes_to_itself_and_appends_and_commits_nothing => replay_keeps_to_itself,
);

async fn replay_keeps_to_itself(backend: &Backend) {
    let dir = tempfile::tempdir().unwrap();
    let node = crate::Node::start(
        backend
            .options(&dir.path().join("data"), Some(kv_app(dir.path())))
            .await,
    )
    .await
    .unwrap();
    let events: Vec<_> = (0..6).map(kv_event).collect();
    node.publish("in", &events).await.unwrap();
    collect(&node, "out", 6).await;
    node.kv_set("customers", "k", b"before the replay".to_vec())
        .await
        .unwrap();
    let committed = async |node: &crate::Node| -> Vec<Option<u64>> {
        let mut offsets = Vec::new();
        for p in 0..2 {
            offsets.push(node.log().committed_offset("p", "in", p).await.unwrap());
        }
        offsets
    };
    // An at-least-once backend commits a batch's offset after its outputs show.
    let group_before = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let offsets = committed(&node).await;
            if offsets.iter().flatten().sum::<u64>() == 6 {
                return offsets;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the pipeline commits all six events");

    let replay = node.replay(request(5)).await.unwrap();
    assert_eq!(replay.total(), 6);
    let progress = replay.progress();
    let report = replay.run().await.unwrap();
    assert_eq!(
        *progress.borrow(),
        crate::ReplayProgress { done: 6, total: 6 }
    );
    assert_eq!(report.inputs, 6);
    assert_eq!(report.a.source, VersionSource::Active);
    assert_eq!((report.a.outputs, report.a.errors), (6, 0));
    assert!(report.b.is_none() && report.diff.is_none());

    // Against a candidate that only echoes its input: every output changed, and A's
    // outputs show that the function read back its own write (the event's id) from the
    // overlay, not the node's value.
    let echo = std::fs::read(weir_test_support::test_guest("guest-echo")).unwrap();
    let replay = node
        .replay(ReplayRequest {
            candidate: Some(echo),
            ..request(10)
        })
        .await
        .unwrap();
    let report = replay.run().await.unwrap();
    let diff = report.diff.unwrap();
    assert_eq!((diff.unchanged, diff.changed), (0, 6), "{report:?}");
    assert_eq!(report.b.as_ref().unwrap().source, VersionSource::Candidate);
    assert_eq!(report.examples.len(), 6);
    // The candidate stays compiled but not active: the host evicts it first.
    let stats = node.compiled_stats().unwrap();
    assert_eq!(
        (stats.in_memory, stats.in_memory_active),
        (2, 1),
        "{stats:?}"
    );
    for example in &report.examples {
        let value = example
            .fields
            .iter()
            .find(|f| f.path == "data")
            .unwrap_or_else(|| panic!("{example:?}"));
        assert_eq!(
            value.a,
            Some(serde_json::json!({ "value": example.input_id }))
        );
        assert_eq!(value.b, None, "the echoed input has no data");
    }

    // Nothing reached the node: its store, the output topic, the pipeline's group.
    assert_eq!(
        node.kv_get("customers", "k").await.unwrap().unwrap(),
        b"before the replay"
    );
    assert_eq!(events_in(&node, "out").await, 6);
    assert_eq!(committed(&node).await, group_before);

    // The pipeline still runs.
    node.publish("in", &[kv_event(6)]).await.unwrap();
    collect(&node, "out", 7).await;
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_requests_are_checked_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), kv_app(dir.path())).await;
    let events: Vec<_> = (0..4).map(kv_event).collect();
    node.publish("in", &events).await.unwrap();

    let err = node
        .replay(ReplayRequest {
            pipeline: "nope".into(),
            ..request(5)
        })
        .await
        .unwrap_err();
    assert!(matches!(err, Error::UnknownPipeline { .. }), "{err}");
    let err = node
        .replay(ReplayRequest {
            version: Some("123456789abc".into()),
            ..request(5)
        })
        .await
        .unwrap_err();
    assert!(matches!(err, Error::UnknownVersion { .. }), "{err}");
    let err = node
        .replay(ReplayRequest {
            candidate: Some(b"\0asm nope".to_vec()),
            ..request(5)
        })
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Function(_)), "{err}");
    let err = node
        .replay(ReplayRequest {
            from: Some(ReplayBound::Offset(3)),
            to: Some(ReplayBound::Offset(1)),
            ..request(5)
        })
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidReplay { .. }), "{err}");
    let err = node
        .replay(ReplayRequest {
            partition: Some(7),
            ..request(5)
        })
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Log(e) if e.code() == "unknown-partition"),
        "{err}"
    );

    // One partition, a range from a time in the future: nothing to run.
    let future = ReplayBound::Time(i64::MAX / 2);
    let replay = node
        .replay(ReplayRequest {
            partition: Some(1),
            from: Some(future),
            ..request(5)
        })
        .await
        .unwrap();
    assert_eq!(replay.total(), 0);
    let report = replay.run().await.unwrap();
    assert_eq!(report.ranges.len(), 1);
    assert_eq!(report.inputs, 0);

    // A cancelled replay stops with an error rather than a partial report.
    let replay = node.replay(request(5)).await.unwrap();
    replay.cancel_token().cancel();
    let err = tokio::time::timeout(Duration::from_secs(30), replay.run())
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, Error::ReplayCancelled), "{err}");
    node.shutdown().await;
}
