//! Entities: commands, rejections, conflicts, snapshots, time travel and restarts, with
//! the example's order entity; the first three on every backend.

use std::path::Path;
use std::sync::Arc;

use weir_manifest::Manifest;

use super::{Backend, options};
use crate::{Error, ErrorClass, Node, StateAt};

fn manifest(dir: &Path, snapshot_every: u32) -> Manifest {
    let text = format!(
        r#"
[functions.order-entity]
source = "{}"
[entities.order]
function = "order-entity"
partitions = 2
snapshot_every = {snapshot_every}
cache_entities = 4
"#,
        weir_test_support::example_entity().display()
    );
    Manifest::from_toml_str(&text, dir).unwrap()
}

async fn start(dir: &Path, snapshot_every: u32) -> Arc<Node> {
    start_on(&Backend::Embedded, dir, snapshot_every).await
}

async fn start_on(backend: &Backend, dir: &Path, snapshot_every: u32) -> Arc<Node> {
    Node::start(
        backend
            .options(&dir.join("data"), Some(manifest(dir, snapshot_every)))
            .await,
    )
    .await
    .unwrap()
}

fn json(state: &Option<Vec<u8>>) -> serde_json::Value {
    serde_json::from_slice(state.as_deref().expect("a state")).unwrap()
}

async fn place(node: &Node, id: &str, amount: f64) -> crate::CommandOutcome {
    let data = serde_json::json!({"customer": "CUST-1", "amount": amount, "currency": "EUR"});
    node.entity_command("order", id, "place", data.to_string().into_bytes(), None)
        .await
        .unwrap()
}

on_backends_with_conditional_appends!(
    commands_append_events_and_rejections_write_nothing => commands_and_rejections,
    concurrent_commands_to_one_entity_are_serialized_and_none_is_lost => concurrent_commands,
    state_survives_restarts_from_snapshots_and_the_journal_and_travels_in_time => restarts_and_time_travel,
);

/// Kafka has neither atomic batches nor conditional appends, so a node refuses an app
/// with entities there, naming the journal and why, instead of running single writers it
/// cannot keep single.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entities_are_refused_on_kafka_naming_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Backend::kafka();
    let Err(err) = Node::start(
        backend
            .options(&dir.path().join("data"), Some(manifest(dir.path(), 100)))
            .await,
    )
    .await
    else {
        panic!("entities need conditional appends");
    };
    let message = err.to_string();
    assert!(message.contains("entity.order"), "{message}");
    assert!(message.contains("the kafka backend"), "{message}");
}

async fn commands_and_rejections(backend: &Backend) {
    let dir = tempfile::tempdir().unwrap();
    let node = start_on(backend, dir.path(), 100).await;

    let placed = place(&node, "o-1", 10.0).await;
    assert_eq!(placed.version, 1);
    assert_eq!(placed.events.len(), 1);
    let event = &placed.events[0].event;
    assert_eq!(event.id, "order/o-1/1");
    assert_eq!(event.ty, "OrderPlaced");
    assert_eq!(event.subject.as_deref(), Some("o-1"));
    assert_eq!(json(&placed.state)["status"], "placed");
    assert_eq!(placed.token.topic, "entity.order");

    // Rejected: nothing is written, the version stays.
    let end_before = node
        .log()
        .offsets("entity.order", placed.events[0].partition)
        .await
        .unwrap()
        .end;
    let rejected = node
        .entity_command("order", "o-1", "ship", Vec::new(), None)
        .await
        .unwrap_err();
    assert_eq!(rejected.class(), ErrorClass::Rejected, "{rejected}");
    assert!(
        rejected.to_string().contains("only a paid order ships"),
        "{rejected}"
    );
    let end_after = node
        .log()
        .offsets("entity.order", placed.events[0].partition)
        .await
        .unwrap()
        .end;
    assert_eq!(end_before, end_after);

    // If-Match on a stale version is a conflict, on the current one it goes through.
    let pay = br#"{"amount": 10.0}"#.to_vec();
    let stale = node
        .entity_command("order", "o-1", "pay", pay.clone(), Some(0))
        .await
        .unwrap_err();
    assert!(
        matches!(
            stale,
            Error::VersionMismatch {
                actual: 1,
                expected: 0,
                ..
            }
        ),
        "{stale}"
    );
    let paid = node
        .entity_command("order", "o-1", "pay", pay, Some(1))
        .await
        .unwrap();
    assert_eq!(paid.version, 2);
    assert_eq!(json(&paid.state)["status"], "paid");

    // The journal is an ordinary topic, but only the writer appends to it.
    let events = node.entity_events("order", "o-1", 1, 100).await.unwrap();
    assert_eq!(
        events
            .iter()
            .map(|e| e.event.ty.as_str())
            .collect::<Vec<_>>(),
        ["OrderPlaced", "OrderPaid"]
    );
    let refused = node
        .publish("entity.order", &[events[0].event.clone()])
        .await
        .unwrap_err();
    assert_eq!(refused.code(), "entity-topic");
    let update = crate::TopicUpdate {
        partitions: None,
        durability: None,
        retention_ms: Some(1000),
        retention_bytes: None,
        segment_bytes: None,
        compaction: None,
        lower_durability: false,
    };
    let refused = node.put_topic("entity.order", update).await.unwrap_err();
    assert_eq!(refused.code(), "entity-topic");

    // Unknown ones.
    let missing = node
        .entity_state("order", "nope", StateAt::Latest)
        .await
        .unwrap_err();
    assert_eq!(missing.class(), ErrorClass::NotFound);
    let unknown_type = node
        .entity_state("cart", "x", StateAt::Latest)
        .await
        .unwrap_err();
    assert_eq!(unknown_type.code(), "unknown-entity-type");
    node.shutdown().await;
}

async fn concurrent_commands(backend: &Backend) {
    let dir = tempfile::tempdir().unwrap();
    let node = start_on(backend, dir.path(), 3).await;
    place(&node, "hot", 1.0).await;
    // 40 clients pay with If-Match 1: exactly one wins, the rest conflict or are
    // rejected; nothing is written twice.
    let mut tasks = Vec::new();
    for _ in 0..40 {
        let node = node.clone();
        tasks.push(tokio::spawn(async move {
            node.entity_command(
                "order",
                "hot",
                "pay",
                br#"{"amount":1.0}"#.to_vec(),
                Some(1),
            )
            .await
        }));
    }
    let mut won = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(outcome) => {
                won += 1;
                assert_eq!(outcome.version, 2);
            }
            Err(e) => assert!(matches!(e, Error::VersionMismatch { .. }), "{e}"),
        }
    }
    assert_eq!(won, 1);
    let state = node
        .entity_state("order", "hot", StateAt::Latest)
        .await
        .unwrap();
    assert_eq!(state.version, 2);

    // Many entities at once: each gets its own events.
    let mut tasks = Vec::new();
    for i in 0..50 {
        let node = node.clone();
        tasks.push(tokio::spawn(async move {
            place(&node, &format!("o-{i}"), 5.0).await
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().version, 1);
    }
    node.shutdown().await;
}

async fn restarts_and_time_travel(backend: &Backend) {
    let dir = tempfile::tempdir().unwrap();
    let node = start_on(backend, dir.path(), 2).await;
    place(&node, "o-1", 7.0).await;
    let t1 = node
        .entity_state("order", "o-1", StateAt::Latest)
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    node.entity_command("order", "o-1", "pay", br#"{"amount":7.0}"#.to_vec(), None)
        .await
        .unwrap();
    node.entity_command("order", "o-1", "ship", Vec::new(), None)
        .await
        .unwrap();
    // Evict it from the cache (4 entries) with other orders.
    for i in 0..10 {
        place(&node, &format!("x-{i}"), 1.0).await;
    }
    let latest = node
        .entity_state("order", "o-1", StateAt::Latest)
        .await
        .unwrap();
    assert_eq!(latest.version, 3);
    assert_eq!(json(&latest.state)["status"], "shipped");
    node.shutdown().await;
    drop(node);

    let node = start_on(backend, dir.path(), 2).await;
    let again = node
        .entity_state("order", "o-1", StateAt::Latest)
        .await
        .unwrap();
    assert_eq!(again.version, 3);
    assert_eq!(again.state, latest.state);
    let v1 = node
        .entity_state("order", "o-1", StateAt::Version(1))
        .await
        .unwrap();
    assert_eq!(json(&v1.state)["status"], "placed");
    let at = node
        .entity_state("order", "o-1", StateAt::Time(t1.timestamp_ms.unwrap()))
        .await
        .unwrap();
    assert_eq!(at.version, 1);
    let before = node
        .entity_state("order", "o-1", StateAt::Time(0))
        .await
        .unwrap_err();
    assert_eq!(before.class(), ErrorClass::NotFound);
    // A snapshot was written at version 2.
    let snapshots = node
        .log()
        .read(
            "entity.order.snapshots",
            again_partition(&node).await,
            0,
            100,
        )
        .await
        .unwrap();
    assert!(!snapshots.is_empty());
    node.entity_command("order", "o-1", "cancel", Vec::new(), None)
        .await
        .expect_err("a shipped order cannot be cancelled");
    node.shutdown().await;
}

async fn again_partition(_node: &Node) -> u32 {
    weir_log::partition_for_key(b"o-1", 2)
}

/// A command of a generated script: which order, which command.
fn script_command(command: usize) -> (&'static str, Vec<u8>) {
    match command {
        0 => (
            "place",
            br#"{"customer":"CUST-9","amount":3.0,"currency":"EUR"}"#.to_vec(),
        ),
        1 => ("pay", br#"{"amount":3.0}"#.to_vec()),
        2 => ("ship", Vec::new()),
        _ => ("cancel", br#"{"reason":"changed my mind"}"#.to_vec()),
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 12, ..Default::default() })]

    /// Whatever the commands and the snapshot interval, the state a restarted node builds
    /// from the latest snapshot and the events after it is the state folded from the
    /// entity's first event, and the state the node had before the restart.
    #[test]
    fn snapshot_plus_tail_equals_full_replay(
        snapshot_every in 1u32..4,
        script in proptest::collection::vec((0usize..4, 0usize..4), 1..40),
    ) {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let node = start(dir.path(), snapshot_every).await;
            for (order, command) in &script {
                let (name, data) = script_command(*command);
                // Rejections are part of the script: they must change nothing.
                let _ = node
                    .entity_command("order", &format!("p-{order}"), name, data, None)
                    .await;
            }
            let mut before = Vec::new();
            for order in 0..4 {
                before.push(node.entity_state("order", &format!("p-{order}"), StateAt::Latest).await.ok());
            }
            // Snapshots were written wherever an order reached snapshot_every events.
            let reached = before.iter().flatten().any(|s| s.version >= u64::from(snapshot_every));
            let mut snapshots = 0;
            for partition in 0..2 {
                snapshots += node.log().read("entity.order.snapshots", partition, 0, 1000).await.unwrap().len();
            }
            assert_eq!(reached, snapshots > 0, "{snapshots} snapshots");
            node.shutdown().await;
            drop(node);

            let node = start(dir.path(), snapshot_every).await;
            for (order, before) in before.into_iter().enumerate() {
                let id = format!("p-{order}");
                let latest = node.entity_state("order", &id, StateAt::Latest).await.ok();
                match (&before, &latest) {
                    (None, None) => {}
                    (Some(b), Some(l)) => {
                        assert_eq!((b.version, &b.state), (l.version, &l.state), "{id}");
                        let replayed = node
                            .entity_state("order", &id, StateAt::Version(l.version))
                            .await
                            .unwrap();
                        assert_eq!(replayed.state, l.state, "{id}");
                    }
                    _ => panic!("{id}: {before:?} before the restart, {latest:?} after"),
                }
            }
            node.shutdown().await;
        });
    }
}

#[tokio::test]
async fn commands_whose_events_outgrow_one_append_are_carried_to_the_next_round() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        r#"
[functions.big]
source = "{}"
limits = {{ deadline_ms = 2000, max_output_bytes = 1048576 }}
[entities.blob]
function = "big"
partitions = 1
"#,
        weir_test_support::test_guest("guest-entity-impure").display()
    );
    let manifest = Manifest::from_toml_str(&text, dir.path()).unwrap();
    let node = Node::start(options(&dir.path().join("data"), Some(manifest)).await)
        .await
        .unwrap();
    // 24 commands of ~700 KB each reach one partition's writer together: 16 MB, twice
    // the embedded log's batch limit; every one is appended, none refused as too large.
    let mut tasks = Vec::new();
    for i in 0..24 {
        let node = node.clone();
        tasks.push(tokio::spawn(async move {
            node.entity_command("blob", &format!("b-{i}"), "big", b"700000".to_vec(), None)
                .await
        }));
    }
    for t in tasks {
        let outcome = t.await.unwrap().unwrap();
        assert_eq!(outcome.version, 1);
    }
    let end = node.log().offsets("entity.blob", 0).await.unwrap().end;
    assert_eq!(end, 24);
    node.shutdown().await;
}

fn state_json(state: Option<&[u8]>) -> Option<serde_json::Value> {
    state.map(|s| weir_test_support::numbers_as_f64(serde_json::from_slice(s).unwrap()))
}

/// What a command did, comparable across languages: the version, the events (type, data,
/// subject) and the state, or the error's class and, for a rejection, its reason.
fn command_result(result: crate::Result<crate::CommandOutcome>) -> serde_json::Value {
    match result {
        Ok(outcome) => serde_json::json!({
            "version": outcome.version,
            "state": state_json(outcome.state.as_deref()),
            "events": outcome.events.iter().map(|e| serde_json::json!({
                "type": e.event.ty,
                "subject": e.event.subject,
                "data": match &e.event.data {
                    Some(weir_cloudevents::Data::Json(data)) => weir_test_support::numbers_as_f64(data.value()),
                    other => panic!("expected JSON data, got {other:?}"),
                },
            })).collect::<Vec<_>>(),
        }),
        Err(Error::CommandRejected { reason, .. }) => serde_json::json!({"rejected": reason}),
        // The message is the language's own (serde's or JSON.parse's).
        Err(Error::EntityFunction {
            export, retryable, ..
        }) => serde_json::json!({"failed": export, "retryable": retryable}),
        Err(e) => serde_json::json!({"class": format!("{:?}", e.class())}),
    }
}

/// The example's order entity in JavaScript (`examples/orders/order-entity-js`) decides
/// and folds exactly as the Rust one: the same commands on both give the same events,
/// states, rejections and errors, and their states rebuilt from snapshots and journals
/// after a restart are the same too.
#[tokio::test]
async fn the_javascript_order_entity_behaves_as_the_rust_one() {
    let dir = tempfile::tempdir().unwrap();
    // A snapshot every 2 events: the states read after the restart below are folded from
    // snapshots and journal tails.
    let manifest = || {
        let snapshot_every = 2;
        let text = format!(
            r#"
[functions.order-rust]
source = "{}"
[functions.order-js]
source = "{}"
# Generous: instantiating the JavaScript runtime on a loaded CI machine is not what this
# test measures.
limits = {{ deadline_ms = 10000 }}
[entities.order]
function = "order-rust"
partitions = 1
snapshot_every = {snapshot_every}
[entities.order-js]
function = "order-js"
partitions = 1
snapshot_every = {snapshot_every}
"#,
            weir_test_support::example_entity().display(),
            weir_test_support::example_entity_js().display(),
        );
        Manifest::from_toml_str(&text, dir.path()).unwrap()
    };
    let data_dir = dir.path().join("data");
    let node = Node::start(options(&data_dir, Some(manifest())).await)
        .await
        .unwrap();

    let place = r#"{"customer": "CUST-1", "amount": 10, "currency": "EUR"}"#;
    let steps: &[(&str, &str, &str)] = &[
        ("o-1", "pay", r#"{"amount": 10}"#),
        (
            "o-1",
            "place",
            r#"{"customer": "", "amount": 10, "currency": "EUR"}"#,
        ),
        (
            "o-1",
            "place",
            r#"{"customer": "CUST-1", "amount": 0, "currency": "EUR"}"#,
        ),
        (
            "o-1",
            "place",
            r#"{"customer": "CUST-1", "currency": "EUR"}"#,
        ),
        ("o-1", "place", "not json"),
        ("o-1", "place", place),
        ("o-1", "place", place),
        ("o-1", "ship", ""),
        ("o-1", "pay", r#"{"amount": 9.5}"#),
        ("o-1", "pay", r#"{"amount": 10}"#),
        ("o-1", "pay", r#"{"amount": 10}"#),
        ("o-1", "refund", "{}"),
        ("o-1", "ship", ""),
        ("o-1", "cancel", r#"{"reason": "too late"}"#),
        (
            "o-2",
            "place",
            r#"{"customer": "CUST-2", "amount": 99.5, "currency": "USD"}"#,
        ),
        ("o-2", "cancel", r#"{"reason": "changed my mind"}"#),
        ("o-2", "pay", r#"{"amount": 99.5}"#),
        ("o-3", "place", place),
        ("o-3", "cancel", ""),
    ];
    let mut outcomes = std::collections::BTreeSet::new();
    for (id, command, body) in steps {
        let rust = node
            .entity_command("order", id, command, body.as_bytes().to_vec(), None)
            .await;
        let js = node
            .entity_command("order-js", id, command, body.as_bytes().to_vec(), None)
            .await;
        let (rust, js) = (command_result(rust), command_result(js));
        assert_eq!(rust, js, "{command} {body} on {id}");
        let outcome = ["version", "rejected", "failed", "class"]
            .into_iter()
            .find(|kind| rust.get(kind).is_some());
        outcomes.insert(outcome.unwrap());
    }
    // The script took both through acceptances, rejections and failures.
    assert_eq!(
        outcomes.into_iter().collect::<Vec<_>>(),
        ["failed", "rejected", "version"]
    );
    node.shutdown().await;
    drop(node);

    // After a restart (no state cached) each function folds its states again, at every
    // version.
    let node = Node::start(options(&data_dir, Some(manifest())).await)
        .await
        .unwrap();
    for (id, versions) in [("o-1", 3), ("o-2", 2), ("o-3", 2)] {
        for version in 1..=versions {
            let at = |ty: &'static str| {
                let node = node.clone();
                async move {
                    let state = node
                        .entity_state(ty, id, StateAt::Version(version))
                        .await
                        .unwrap();
                    (state.version, state_json(state.state.as_deref()))
                }
            };
            assert_eq!(at("order").await, at("order-js").await, "{id} at {version}");
        }
    }
    node.shutdown().await;
}

/// Two nodes of a fleet on one NATS server take commands for the same entities: each
/// decides against every event the other appended (its writer sees the partition moved
/// and reads it again), and a command that loses its append to the other writer in a
/// race is decided again, not failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_of_a_fleet_write_the_same_entities_in_turn_and_in_races() {
    let backend = Backend::nats();
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = start_on(&backend, a_dir.path(), 100).await;
    let b = start_on(&backend, b_dir.path(), 100).await;

    // In turn: each command sees the one the other node took.
    assert_eq!(place(&a, "shared", 10.0).await.version, 1);
    let paid = b
        .entity_command(
            "order",
            "shared",
            "pay",
            br#"{"amount": 10.0}"#.to_vec(),
            None,
        )
        .await
        .unwrap();
    assert_eq!(paid.version, 2);
    let shipped = a
        .entity_command("order", "shared", "ship", Vec::new(), None)
        .await
        .unwrap();
    assert_eq!(shipped.version, 3);
    assert_eq!(json(&shipped.state)["status"], "shipped");
    let seen = b
        .entity_state("order", "shared", StateAt::Latest)
        .await
        .unwrap();
    assert_eq!(seen.version, 3);

    // In races: both nodes at once, to two entities of the same partitions.
    for round in 0..10 {
        let (x, y) = (format!("race-a-{round}"), format!("race-b-{round}"));
        let (left, right) = tokio::join!(place(&a, &x, 1.0), place(&b, &y, 2.0));
        assert_eq!((left.version, right.version), (1, 1));
    }
    for round in 0..10 {
        for (node, id) in [
            (&b, format!("race-a-{round}")),
            (&a, format!("race-b-{round}")),
        ] {
            let state = node
                .entity_state("order", &id, StateAt::Latest)
                .await
                .unwrap();
            assert_eq!(state.version, 1, "{id}");
        }
    }
    a.shutdown().await;
    b.shutdown().await;
}

/// A writer that finds its journal partition moved reads only what another node appended
/// since it last looked: the states it cached of entities with no new events stay
/// cached, and those of entities with new events are forgotten and read again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_catches_up_with_another_nodes_appends_and_keeps_what_did_not_change() {
    let backend = Backend::nats();
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // A snapshot every 2 events: b's snapshots are among what a reads when it catches up.
    let a = start_on(&backend, a_dir.path(), 2).await;
    let b = start_on(&backend, b_dir.path(), 2).await;
    // Ids of journal partition 0 of 2 (the test's manifest), so one writer sees them all.
    let in_partition_0 = |prefix: &'static str| {
        (0..)
            .map(move |i| format!("{prefix}-{i}"))
            .filter(|id| weir_log::partition_for_key(id.as_bytes(), 2) == 0)
    };
    let kept: Vec<String> = in_partition_0("kept").take(2).collect();
    let other = in_partition_0("other").next().unwrap();
    let cached = |node: Arc<Node>| async move {
        node.entity_status()
            .await
            .into_iter()
            .find(|s| s.name == "order")
            .unwrap()
            .cached
    };
    for id in &kept {
        assert_eq!(place(&a, id, 1.0).await.version, 1);
    }
    assert_eq!(cached(a.clone()).await, 2);

    // b appends to the partition; a sees it, and keeps both states it had.
    assert_eq!(place(&b, &other, 2.0).await.version, 1);
    let seen = a
        .entity_state("order", &other, StateAt::Latest)
        .await
        .unwrap();
    assert_eq!(seen.version, 1);
    assert_eq!(
        cached(a.clone()).await,
        3,
        "the states a had are still cached"
    );

    // b pays one of a's cached orders: a forgets its old state and answers the new one.
    let paid = b
        .entity_command(
            "order",
            &kept[0],
            "pay",
            br#"{"amount": 1.0}"#.to_vec(),
            None,
        )
        .await
        .unwrap();
    assert_eq!(paid.version, 2);
    let seen = a
        .entity_state("order", &kept[0], StateAt::Latest)
        .await
        .unwrap();
    assert_eq!(seen.version, 2);
    assert_eq!(json(&seen.state), json(&paid.state));
    // And a decides its next command against it.
    let shipped = a
        .entity_command("order", &kept[0], "ship", Vec::new(), None)
        .await
        .unwrap();
    assert_eq!(shipped.version, 3);
    a.shutdown().await;
    b.shutdown().await;
}
