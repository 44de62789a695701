//! Versioned functions: deploy, rollback, restart, a hot swap under load, and the
//! key-value store a node opens and seeds.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use weir_cloudevents::{CloudEvent, ExtensionValue};
use weir_manifest::Manifest;

use super::{publish_markers, start, total_events, wait_for_ids};
use crate::{Error, Node, Origin, PipelineState, StartFrom};

/// The app of these tests: `in` (4 partitions) → function `tag` → `out` (4 partitions, so
/// an event's key lands in the same partition number in both).
fn tag_app(dir: &Path, source: &Path) -> Manifest {
    let text = format!(
        r#"
[topics.in]
partitions = 4
[topics.out]
partitions = 4
[functions.tag]
source = "{}"
[pipelines.p]
from = "in"
function = "tag"
to = ["out"]
[keyvalue.customers]
seed = "customers.json"
"#,
        source.display()
    );
    std::fs::write(
        dir.join("customers.json"),
        r#"{"CUST-42": {"name": "Acme GmbH"}, "CUST-7": "plain"}"#,
    )
    .unwrap();
    Manifest::from_toml_str(&text, dir).unwrap()
}

/// The function's source in the app directory, as a copy of a built guest.
fn install_source(dir: &Path, guest: &str) -> PathBuf {
    let path = dir.join("tag.wasm");
    std::fs::copy(weir_test_support::test_guest(guest), &path).unwrap();
    path
}

fn guest_bytes(guest: &str) -> Vec<u8> {
    std::fs::read(weir_test_support::test_guest(guest)).unwrap()
}

fn event(n: u64) -> CloudEvent {
    let mut ev = CloudEvent::new(format!("e{n}"), "test://s", "t");
    ev.subject = Some(format!("k{}", n % 16));
    ev
}

fn tag_of(ev: &CloudEvent) -> &str {
    match ev.extensions.get("tagversion") {
        Some(ExtensionValue::String(v)) => v,
        other => panic!("output {} has tagversion {other:?}", ev.id),
    }
}

/// Publish events `from..to` and wait for their outputs; returns the outputs' tags.
async fn round_trip(node: &Node, from: u64, to: u64) -> Vec<String> {
    let events: Vec<_> = (from..to).map(event).collect();
    node.publish("in", &events).await.unwrap();
    let wanted: BTreeSet<String> = events.iter().map(|e| e.id.clone()).collect();
    let stream = node.subscribe("out", StartFrom::Earliest).await.unwrap();
    tokio::time::timeout(
        Duration::from_secs(30),
        stream
            .map(|r| r.unwrap().event)
            .filter(|e| std::future::ready(wanted.contains(&e.id)))
            .take(wanted.len())
            .map(|e| tag_of(&e).to_owned())
            .collect(),
    )
    .await
    .expect("every event produced an output")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_deploy_changes_nothing_and_rollback_and_restart_keep_versions() {
    let dir = tempfile::tempdir().unwrap();
    let source = install_source(dir.path(), "guest-tag-v1");
    let node = start(dir.path(), tag_app(dir.path(), &source)).await;
    let v1 = node.functions()[0].version.clone();
    assert_eq!(round_trip(&node, 0, 8).await, vec!["1"; 8]);

    // Not a component, and a component of the wrong world: typed errors, v1 keeps serving.
    let err = node
        .deploy_function("tag", b"\0asm not really".to_vec())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Function(weir_wasm::Error::InvalidComponent { .. })
        ),
        "{err}"
    );
    let err = node
        .deploy_function("tag", guest_bytes("guest-wrong-world"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Function(weir_wasm::Error::WrongWorld { .. })),
        "{err}"
    );
    let err = node
        .deploy_function("nope", guest_bytes("guest-tag-v2"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::UnknownFunction { .. }), "{err}");
    assert_eq!(node.functions()[0].version, v1);
    assert_eq!(node.functions()[0].history.len(), 1);
    assert_eq!(round_trip(&node, 8, 16).await, vec!["1"; 8]);

    // v2 goes live for the next batch.
    let deployed = node
        .deploy_function("tag", guest_bytes("guest-tag-v2"))
        .await
        .unwrap();
    let v2 = deployed.version.clone();
    assert_eq!(deployed.previous.as_deref(), Some(v1.as_str()));
    assert_ne!(v1, v2);
    assert_eq!(round_trip(&node, 16, 24).await, vec!["2"; 8]);
    assert_eq!(node.status().await.unwrap().pipelines[0].version, v2);
    let stored = dir.path().join("data/functions/tag");
    assert!(stored.join(format!("{v1}.wasm")).exists());
    assert!(stored.join(format!("{v2}.wasm")).exists());
    assert!(stored.join("deployments.json").exists());

    // Rollback goes to the version before; an unknown version is refused.
    let back = node.rollback_function("tag", None).await.unwrap();
    assert_eq!(
        (back.previous.as_deref(), back.version.as_str()),
        (Some(v2.as_str()), v1.as_str())
    );
    assert_eq!(round_trip(&node, 24, 32).await, vec!["1"; 8]);
    let err = node
        .rollback_function("tag", Some("000000000000".into()))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::UnknownVersion { .. }), "{err}");
    let forward = node
        .rollback_function("tag", Some(v2.clone()))
        .await
        .unwrap();
    assert_eq!(forward.version, v2);
    let origins: Vec<_> = node.functions()[0]
        .history
        .iter()
        .map(|d| d.origin)
        .collect();
    assert_eq!(
        origins,
        [
            Origin::Manifest,
            Origin::Deploy,
            Origin::Rollback,
            Origin::Rollback
        ]
    );
    assert_eq!(node.status().await.unwrap().functions[0].versions_kept, 2);
    node.shutdown().await;
    drop(node);

    // A restart with the same manifest source keeps the version deployed over the API.
    let node = start(dir.path(), tag_app(dir.path(), &source)).await;
    assert_eq!(node.functions()[0].version, v2);
    assert_eq!(node.functions()[0].history.len(), 4);
    assert_eq!(round_trip(&node, 32, 40).await, vec!["2"; 8]);
    node.shutdown().await;
    drop(node);

    // A changed source is a new deployment.
    let source = install_source(dir.path(), "guest-echo");
    let node = start(dir.path(), tag_app(dir.path(), &source)).await;
    let info = &node.functions()[0];
    assert_ne!(info.version, v2);
    assert_eq!(info.history.last().unwrap().origin, Origin::Manifest);
    assert_eq!(info.versions_kept, [info.version.clone(), v2, v1]);
    node.shutdown().await;
}

/// Events are published without pause while v2 replaces v1: every input yields exactly
/// one output, and in each partition the outputs switch from v1 to v2 once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_swap_under_load_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let source = install_source(dir.path(), "guest-tag-v1");
    let node = start(dir.path(), tag_app(dir.path(), &source)).await;
    let v2_bytes = guest_bytes("guest-tag-v2");

    let published = Arc::new(AtomicU64::new(0));
    // Events whose publish has begun: one past the last of the batch in flight.
    let begun = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = tokio::spawn({
        let (node, published, begun, stop) =
            (node.clone(), published.clone(), begun.clone(), stop.clone());
        async move {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                let events: Vec<_> = (n..n + 10).map(event).collect();
                begun.store(n + 10, Ordering::SeqCst);
                node.publish("in", &events).await.unwrap();
                n += 10;
                published.store(n, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            n
        }
    });

    let wait_until = |what: &'static str, cond: Box<dyn Fn() -> bool + Send>| async move {
        tokio::time::timeout(Duration::from_secs(60), async {
            while !cond() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
    };
    let n = node.clone();
    wait_until(
        "v1 outputs",
        Box::new(move || total_events(&n, "out") >= 300),
    )
    .await;
    let deployed = node.deploy_function("tag", v2_bytes).await.unwrap();
    // A batch whose publish began before the deploy returned may have been read (and run
    // on v1) before it; anything begun after must run on v2.
    let at_deploy = begun.load(Ordering::SeqCst);
    let p = published.clone();
    wait_until(
        "events after the deploy",
        Box::new(move || p.load(Ordering::SeqCst) >= at_deploy + 400),
    )
    .await;
    stop.store(true, Ordering::SeqCst);
    let total = publisher.await.unwrap();

    // Once a marker published behind them is through in every partition, so is every
    // output the swap could have written twice.
    let markers = publish_markers(&node, "in", |key, partition| {
        let mut ev = CloudEvent::new(format!("marker-{partition}"), "test://s", "t");
        ev.subject = Some(key.to_owned());
        ev
    })
    .await;
    let marker_ids: BTreeSet<String> = (0..markers.len())
        .map(|partition| format!("marker-{partition}"))
        .collect();
    wait_for_ids(&node, "out", marker_ids.clone()).await;
    assert_eq!(
        total_events(&node, "out"),
        total + markers.len() as u64,
        "one output per input, none twice"
    );
    assert_eq!(
        node.status().await.unwrap().pipelines[0].state,
        PipelineState::Running
    );
    assert_eq!(
        node.status().await.unwrap().pipelines[0].version,
        deployed.version
    );

    let mut seen = BTreeMap::new();
    for partition in 0..4 {
        let mut tags = Vec::new();
        let mut offset = 0;
        loop {
            let batch = node.read("out", partition, offset, 1000).await.unwrap();
            let Some(last) = batch.last() else { break };
            offset = last.offset + 1;
            for logged in batch {
                let tag = tag_of(&logged.event).to_owned();
                assert!(
                    seen.insert(logged.event.id.clone(), tag.clone()).is_none(),
                    "{} was handled twice",
                    logged.event.id
                );
                tags.push(tag);
            }
        }
        let switches = tags.windows(2).filter(|w| w[0] != w[1]).count();
        let first_v2 = tags.iter().position(|t| t == "2").unwrap_or(tags.len());
        assert!(
            tags[..first_v2].iter().all(|t| t == "1") && tags[first_v2..].iter().all(|t| t == "2"),
            "partition {partition} went back to v1: switches {switches}"
        );
    }
    let expected: BTreeSet<String> = (0..total).map(|n| format!("e{n}")).collect();
    let mut got: BTreeSet<String> = seen.keys().cloned().collect();
    got.retain(|id| !marker_ids.contains(id));
    assert_eq!(got, expected, "every input produced an output");
    for marker in &marker_ids {
        seen.remove(marker);
    }
    let v1 = seen.values().filter(|t| *t == "1").count();
    let v2 = seen.values().filter(|t| *t == "2").count();
    assert!(v1 >= 300 && v2 >= 400, "v1 handled {v1}, v2 {v2}");
    // What was published (begun) after the deploy returned runs on v2 only.
    for n in at_deploy..total {
        assert_eq!(
            seen[&format!("e{n}")],
            "2",
            "e{n} ran on v1 after the deploy"
        );
    }
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_seeds_declared_namespaces_without_overwriting() {
    let dir = tempfile::tempdir().unwrap();
    let source = install_source(dir.path(), "guest-tag-v1");
    let node = start(dir.path(), tag_app(dir.path(), &source)).await;
    assert_eq!(node.keyvalue_namespaces(), ["customers"]);
    assert_eq!(
        node.kv_get("customers", "CUST-42").await.unwrap().unwrap(),
        br#"{"name":"Acme GmbH"}"#
    );
    node.kv_set("customers", "CUST-7", b"changed".to_vec())
        .await
        .unwrap();
    let err = node.kv_get("suppliers", "x").await.unwrap_err();
    assert!(matches!(err, Error::UnknownNamespace { .. }), "{err}");
    assert!(err.to_string().contains("[\"customers\"]"), "{err}");
    node.shutdown().await;
    drop(node);

    let node = start(dir.path(), tag_app(dir.path(), &source)).await;
    assert_eq!(
        node.kv_get("customers", "CUST-7").await.unwrap().unwrap(),
        b"changed"
    );
    assert!(dir.path().join("data/kv/store.redb").exists());
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploying_an_app_adds_and_swaps_all_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let source = install_source(dir.path(), "guest-tag-v1");
    let node = start(dir.path(), tag_app(dir.path(), &source)).await;
    let v1 = node.functions()[0].version.clone();
    let app = String::from(
        r#"
[topics.in]
partitions = 4
[topics.out]
partitions = 4
[topics.in2]
[functions.tag]
source = "tag.wasm"
[pipelines.p]
from = "in"
function = "tag"
to = ["out"]
[pipelines.q]
from = "in2"
function = "tag"
to = ["out"]
[keyvalue.customers]
seed = "customers.json"
"#,
    );
    let components = |guest: &str| BTreeMap::from([("tag".to_owned(), guest_bytes(guest))]);

    // A broken component: nothing changes, not even the new topic.
    let err = node
        .deploy_app(&app, BTreeMap::from([("tag".to_owned(), b"junk".to_vec())]))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Function(_)), "{err}");
    assert!(node.log().topic("in2").await.unwrap().is_none());
    assert_eq!(node.functions()[0].version, v1);

    // Changing an existing pipeline needs a restart.
    let err = node
        .deploy_app(
            &app.replace(
                "to = [\"out\"]\n[pipelines.q]",
                "to = [\"out\"]\nstart = \"latest\"\n[pipelines.q]",
            ),
            components("guest-tag-v2"),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::DeployRefused { .. }), "{err}");
    assert!(err.to_string().contains("pipeline \"p\" changes"), "{err}");

    let done = node
        .deploy_app(&app, components("guest-tag-v2"))
        .await
        .unwrap();
    assert_eq!(done.topics, ["in2"]);
    assert_eq!(done.pipelines, ["q"]);
    assert_eq!(done.functions[0].previous.as_deref(), Some(v1.as_str()));
    assert!(done.functions[0].reloaded);
    assert_eq!(node.status().await.unwrap().pipelines.len(), 2);
    let mut ev = event(1000);
    ev.id = "via-q".into();
    node.publish("in2", &[ev]).await.unwrap();
    let stream = node.subscribe("out", StartFrom::Earliest).await.unwrap();
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        stream
            .map(|r| r.unwrap().event)
            .filter(|e| std::future::ready(e.id == "via-q"))
            .next(),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(tag_of(&out), "2");

    // The same app again changes nothing.
    let again = node
        .deploy_app(&app, components("guest-tag-v2"))
        .await
        .unwrap();
    assert!(again.functions.iter().all(|f| !f.reloaded));
    assert!(again.topics.is_empty() && again.pipelines.is_empty());
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_redriven_after_a_fix_runs_on_the_fixed_version() {
    let dir = tempfile::tempdir().unwrap();
    let source = install_source(dir.path(), "guest-trap");
    let node = start(dir.path(), tag_app(dir.path(), &source)).await;
    let events: Vec<_> = ["ok-1", "boom", "ok-2"]
        .iter()
        .map(|id| {
            let ty = if *id == "boom" { "test.trap" } else { "t" };
            let mut ev = CloudEvent::new(*id, "test://s", ty);
            ev.subject = Some("same-key".into());
            ev
        })
        .collect();
    node.publish("in", &events).await.unwrap();
    tokio::time::timeout(Duration::from_secs(30), async {
        while node.status().await.unwrap().pipelines[0].dead_lettered < 1
            || total_events(&node, "out") < 2
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the trap is dead-lettered and the event behind it runs");

    node.deploy_function("tag", guest_bytes("guest-tag-v1"))
        .await
        .unwrap();
    let report = node.redrive("p", None).await.unwrap();
    assert_eq!((report.redriven, report.skipped), (1, 0), "{report:?}");
    let stream = node.subscribe("out", StartFrom::Earliest).await.unwrap();
    let ids: Vec<String> = tokio::time::timeout(
        Duration::from_secs(30),
        stream.take(3).map(|r| r.unwrap().event.id).collect(),
    )
    .await
    .expect("the re-driven event runs on the fix");
    assert_eq!(ids, ["ok-1", "ok-2", "boom"]);
    // A second re-drive finds nothing new.
    let again = node.redrive("p", None).await.unwrap();
    assert_eq!(again.redriven, 0);
    assert_eq!(
        node.status().await.unwrap().pipelines[0].state,
        PipelineState::Running
    );
    node.shutdown().await;
}
