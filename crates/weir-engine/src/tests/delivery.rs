//! Pipelines' delivery rules: retries with backoff, dead letters after exhausted retries,
//! per-key order under concurrency, filters and wildcard sources, a full disk.

use std::path::Path;
use std::time::{Duration, Instant};

use weir_cloudevents::{CloudEvent, ExtensionValue};
use weir_manifest::Manifest;

use super::{collect, settled, start, total_events};
use crate::PipelineState;

/// An app with topics `in` (4 partitions), `other.in` and `out`, and pipeline `p` from
/// `from` through the guest `guest` with extra pipeline keys `pipeline_extra`.
fn app(dir: &Path, guest: &str, from: &str, pipeline_extra: &str, config: &str) -> Manifest {
    let wasm = weir_test_support::test_guest(guest);
    let text = format!(
        r#"
[topics.in]
partitions = 4
[topics."other.in"]
partitions = 1
[topics.out]
partitions = 4
[functions.f]
source = "{}"
capabilities = {{ keyvalue = ["attempts", "calls"] }}
# Every call writes (and fsyncs) the key-value store: on a loaded CI machine that can
# take longer than the default 100 ms, and a deadline would dead-letter the event.
limits = {{ deadline_ms = 20000 }}
config = {{ {config} }}
[keyvalue.attempts]
[keyvalue.calls]
[pipelines.p]
from = {from}
function = "f"
to = ["out"]
{pipeline_extra}
"#,
        wasm.display()
    );
    Manifest::from_toml_str(&text, dir).unwrap()
}

fn flaky(id: &str, fail_times: i64) -> CloudEvent {
    let mut ev = CloudEvent::new(id, "test://s", "t");
    ev.subject = Some(id.to_owned());
    ev.extensions
        .insert("failtimes".into(), ExtensionValue::Integer(fail_times));
    ev
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retryable_failures_are_retried_with_backoff_then_dead_lettered() {
    let dir = tempfile::tempdir().unwrap();
    let retry = "[pipelines.p.retry]\nmax_attempts = 3\ninitial_backoff_ms = 100\nmultiplier = 2.0\njitter = 0.0";
    let node = start(
        dir.path(),
        app(dir.path(), "guest-flaky", "\"in\"", retry, ""),
    )
    .await;

    let started = Instant::now();
    node.publish("in", &[flaky("twice", 2), flaky("never", 0)])
        .await
        .unwrap();
    let out = collect(&node, "out", 2).await;
    let twice = out.iter().find(|e| e.id == "twice").expect("twice is out");
    assert_eq!(
        twice.extensions.get("attempts"),
        Some(&ExtensionValue::Integer(3)),
        "two failures, then success on the third call"
    );
    // The waits were 100 ms then 200 ms (no jitter): it cannot have been faster.
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );

    // Three calls allowed; an event that fails five times is dead-lettered after three.
    node.publish("in", &[flaky("stubborn", 5)]).await.unwrap();
    let dead = collect(&node, "p.dlq", 1).await;
    assert_eq!(dead[0].id, "stubborn");
    let ext = |name: &str| dead[0].extensions.get(name).cloned();
    assert_eq!(
        ext("dlqreason"),
        Some(ExtensionValue::String("retries_exhausted".into()))
    );
    assert_eq!(ext("dlqattempts"), Some(ExtensionValue::Integer(3)));
    let Some(ExtensionValue::String(error)) = ext("dlqerror") else {
        panic!("no dlqerror")
    };
    assert!(error.contains("fails on purpose"), "{error}");
    let status = settled(&node, |p| p.dead_lettered == 1).await;
    assert_eq!(status.retries, 2 + 2);
    assert_eq!(status.state, PipelineState::Running);
    node.shutdown().await;
}

/// A lane waiting out a retry's backoff holds no blocking-pool thread: with a pool of two
/// threads and three lanes backing off for a minute, work that needs the pool (here a
/// key-value read) still runs at once. It would wait out the backoff if a lane slept on
/// its thread.
#[test]
fn a_backoff_holds_no_blocking_thread() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let retry = "ordering = \"none\"\nconcurrency = 3\n[pipelines.p.retry]\nmax_attempts = 3\ninitial_backoff_ms = 60000\nmax_backoff_ms = 60000\njitter = 0.0";
        let node = start(
            dir.path(),
            app(dir.path(), "guest-flaky", "\"in\"", retry, ""),
        )
        .await;
        node.publish("in", &[flaky("a", 9), flaky("b", 9), flaky("c", 9)])
            .await
            .unwrap();
        // Every lane failed once and is backing off.
        settled(&node, |p| p.retries == 3).await;
        let read = tokio::time::timeout(Duration::from_secs(30), node.kv_get("attempts", "a"))
            .await
            .expect("a key-value read waited for the lanes' backoff: they hold the blocking pool");
        assert_eq!(read.unwrap(), Some(b"1".to_vec()));
        node.shutdown().await;
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_of_one_key_run_in_order_while_keys_run_in_parallel() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(
        dir.path(),
        app(
            dir.path(),
            "guest-order-log",
            "\"in\"",
            "ordering = \"key\"\nconcurrency = 8",
            "spin_us = \"200\"",
        ),
    )
    .await;
    // 10 keys, 30 events each, interleaved, in several publishes so batches split them.
    let keys = 10;
    let per_key = 30;
    for round in 0..per_key {
        let events: Vec<_> = (0..keys)
            .map(|k| {
                let mut ev = CloudEvent::new(format!("k{k}-{round}"), "test://s", "t");
                ev.subject = Some(format!("k{k}"));
                ev
            })
            .collect();
        node.publish("in", &events).await.unwrap();
    }
    collect(&node, "out", keys * per_key).await;
    for k in 0..keys {
        let calls = node
            .kv_get("calls", &format!("k{k}"))
            .await
            .unwrap()
            .unwrap();
        let calls = String::from_utf8(calls).unwrap();
        let expected: Vec<String> = (0..per_key).map(|r| format!("k{k}-{r}")).collect();
        assert_eq!(
            calls,
            expected.join(","),
            "key k{k} was called out of order"
        );
    }
    // And the outputs of each key are in the output topic in input order.
    let out = collect(&node, "out", keys * per_key).await;
    for k in 0..keys {
        let ids: Vec<_> = out
            .iter()
            .filter(|e| e.subject.as_deref() == Some(&format!("k{k}")))
            .map(|e| e.id.clone())
            .collect();
        let expected: Vec<String> = (0..per_key).map(|r| format!("k{k}-{r}")).collect();
        assert_eq!(ids, expected);
    }
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filter_keeps_events_from_the_function_and_a_pattern_picks_sources() {
    let dir = tempfile::tempdir().unwrap();
    let filter = "ordering = \"none\"\n[pipelines.p.filter]\ntype = [\"order.*\"]\nextensions = { region = \"eu\" }";
    let node = start(
        dir.path(),
        app(
            dir.path(),
            "guest-order-log",
            "\"*in\"",
            filter,
            "record = \"false\"",
        ),
    )
    .await;
    let event = |id: &str, ty: &str, region: Option<&str>| {
        let mut ev = CloudEvent::new(id, "test://s", ty);
        if let Some(r) = region {
            ev.extensions
                .insert("region".into(), ExtensionValue::String(r.into()));
        }
        ev
    };
    node.publish(
        "in",
        &[
            event("pass", "order.created", Some("eu")),
            event("wrong-type", "invoice.created", Some("eu")),
            event("wrong-region", "order.created", Some("us")),
            event("no-region", "order.created", None),
        ],
    )
    .await
    .unwrap();
    // The pattern "*in" takes both "in" and "other.in".
    node.publish("other.in", &[event("other", "order.updated", Some("eu"))])
        .await
        .unwrap();
    let out = collect(&node, "out", 2).await;
    let mut ids: Vec<_> = out.iter().map(|e| e.id.as_str()).collect();
    ids.sort();
    assert_eq!(ids, ["other", "pass"]);
    // The filtered events are committed too.
    let status = settled(&node, |p| p.lag == 0 && p.filtered == 3).await;
    assert_eq!(status.processed, 2);
    assert_eq!(status.from, ["in", "other.in"]);
    assert_eq!(total_events(&node, "out"), 2);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_the_log_refuses_dead_letter_their_event_and_the_rest_flows() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = weir_test_support::test_guest("guest-trap");
    // `out` is compacted, so it refuses events without a key: the function's output of
    // a keyless event can never be written.
    let text = format!(
        r#"
[topics.in]
[topics.out]
compaction = true
[functions.f]
source = "{}"
[pipelines.p]
from = "in"
function = "f"
to = ["out"]
"#,
        wasm.display()
    );
    let node = start(
        dir.path(),
        Manifest::from_toml_str(&text, dir.path()).unwrap(),
    )
    .await;
    let keyed = |id: &str| {
        let mut ev = CloudEvent::new(id, "test://s", "t");
        ev.subject = Some(format!("key-{id}"));
        ev
    };
    node.publish(
        "in",
        &[
            keyed("a"),
            CloudEvent::new("keyless", "test://s", "t"),
            keyed("b"),
        ],
    )
    .await
    .unwrap();
    let out = collect(&node, "out", 2).await;
    let ids: Vec<_> = out.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["a", "b"]);
    let dead = collect(&node, "p.dlq", 1).await;
    assert_eq!(dead[0].id, "keyless");
    assert_eq!(
        dead[0].extensions.get("dlqreason"),
        Some(&ExtensionValue::String("output_rejected".into()))
    );
    let status = settled(&node, |p| p.lag == 0).await;
    assert_eq!(status.state, PipelineState::Running);
    node.shutdown().await;
}

/// Topics `in` and `out` (two partitions each), `guest-tag-v1` (copies each event to
/// `out`), and the pipeline `p` only if `with_pipeline`.
fn copy_app(dir: &Path, with_pipeline: bool) -> Manifest {
    let wasm = weir_test_support::test_guest("guest-tag-v1");
    let mut text = format!(
        "[topics.in]\npartitions = 2\n[topics.out]\npartitions = 2\n[functions.f]\nsource = \"{}\"\n",
        wasm.display()
    );
    if with_pipeline {
        text.push_str("[pipelines.p]\nfrom = \"in\"\nfunction = \"f\"\nto = [\"out\"]\n");
    }
    Manifest::from_toml_str(&text, dir).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_stalls_the_pipeline_and_once_space_is_back_nothing_is_lost_or_repeated() {
    let dir = tempfile::tempdir().unwrap();
    let disk = weir_test_support::SmallDisk::mount(&dir.path().join("disk"), 48);
    let data = disk.path().join("data");

    // 1200 events of ~1 KiB while there is room, with no pipeline yet: 600 or more in one
    // partition, which calls its second full batch while the first one's commit is refused.
    let node =
        crate::Node::start(crate::tests::options(&data, Some(copy_app(dir.path(), false))).await)
            .await
            .unwrap();
    let events: Vec<CloudEvent> = (0..1200)
        .map(|i| {
            let mut event = CloudEvent::new(format!("e{i}"), "test://s", "t");
            event.subject = Some(format!("k{}", i % 7));
            event.data = Some(serde_json::json!({ "pad": "x".repeat(1000) }).into());
            event
        })
        .collect();
    node.publish("in", &events).await.unwrap();
    node.shutdown().await;
    drop(node);

    // Leave too little room for a batch's transaction (~256 KiB of outputs, written as one
    // frame with the offset, since each input partition's outputs go to one partition),
    // then start the pipeline: its commits are refused and it shows as stalled.
    let ballast = disk.path().join("ballast");
    disk.fill(&ballast, 96 << 10);
    let node =
        crate::Node::start(crate::tests::options(&data, Some(copy_app(dir.path(), true))).await)
            .await
            .unwrap();
    let stalled = settled(&node, |p| matches!(p.state, PipelineState::Stalled { .. })).await;
    let PipelineState::Stalled { error, .. } = &stalled.state else {
        unreachable!()
    };
    assert!(error.contains("disk") || error.contains("space"), "{error}");
    assert!(
        total_events(&node, "out") < 1200,
        "the disk was not full enough"
    );

    // Room again: the pipeline goes on by itself, and every event has its output once.
    std::fs::remove_file(&ballast).unwrap();
    settled(&node, |p| {
        p.lag == 0 && p.processed == 1200 && p.state == PipelineState::Running
    })
    .await;
    let out = collect(&node, "out", 1200).await;
    let mut ids: Vec<&str> = out.iter().map(|e| e.id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(
        ids.len(),
        1200,
        "an event's output is missing or written twice"
    );
    assert_eq!(total_events(&node, "out"), 1200);
    node.shutdown().await;
}
