use std::path::Path;
use std::time::Duration;

use futures::StreamExt;
use weir_cloudevents::{CloudEvent, Data};
use weir_manifest::Manifest;

use crate::{Node, NodeOptions, PipelineState, StartFrom};

fn manifest(dir: &Path, function: &Path, function_name: &str, to: &str) -> Manifest {
    let text = format!(
        r#"
[topics.in]
partitions = 2
[topics."{to}"]
partitions = 1
[functions.{function_name}]
source = "{}"
config = {{ currency = "EUR", "rate.USD" = "0.5" }}
capabilities = {{ keyvalue = ["customers"] }}
[keyvalue.customers]
[pipelines.p]
from = "in"
function = "{function_name}"
to = ["{to}"]
"#,
        function.display()
    );
    Manifest::from_toml_str(&text, dir).unwrap()
}

fn order(n: u32) -> CloudEvent {
    let path = weir_test_support::example_dir().join("sales-order-created.json");
    let mut ev = CloudEvent::from_json_slice(&std::fs::read(path).unwrap()).unwrap();
    ev.id = format!("so-{n}");
    ev.extensions.insert(
        "partitionkey".into(),
        weir_cloudevents::ExtensionValue::String(format!("CUST-{}", n % 5)),
    );
    ev
}

/// Options for a node on the embedded log in `data`.
pub(crate) async fn options(data: &Path, manifest: Option<Manifest>) -> NodeOptions {
    Backend::Embedded.options(data, manifest).await
}

/// Makes each `$test` three times: on the embedded log (`$test`), on NATS JetStream
/// (`$test::on_nats`) and on Kafka (`$test::on_kafka`), from
/// `async fn $body(backend: &Backend)`.
macro_rules! on_every_backend {
    ($($test:ident => $body:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() {
                $body(&crate::tests::Backend::Embedded).await;
            }

            mod $test {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn on_nats() {
                    super::$body(&crate::tests::Backend::nats()).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn on_kafka() {
                    super::$body(&crate::tests::Backend::kafka()).await;
                }
            }
        )*
    };
}

/// As [`on_every_backend`], on the backends with conditional appends (entities need
/// them; Kafka has none, and a node refuses entities there).
macro_rules! on_backends_with_conditional_appends {
    ($($test:ident => $body:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() {
                $body(&crate::tests::Backend::Embedded).await;
            }

            mod $test {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn on_nats() {
                    super::$body(&crate::tests::Backend::nats()).await;
                }
            }
        )*
    };
}

/// The log a test's node runs on, for the tests that run on every backend: the embedded
/// log in the node's data directory, or a private nats-server started for the test
/// (its streams outlive a node, as the embedded log's files do).
pub(crate) enum Backend {
    Embedded,
    Nats(weir_test_support::nats::NatsServer),
    Kafka(weir_test_support::kafka::KafkaBroker),
}

impl Backend {
    pub(crate) fn nats() -> Backend {
        Backend::Nats(weir_test_support::nats::NatsServer::start(false))
    }

    pub(crate) fn kafka() -> Backend {
        Backend::Kafka(weir_test_support::kafka::KafkaBroker::start())
    }

    pub(crate) async fn log(&self, data: &Path) -> weir_log::SharedLog {
        match self {
            Backend::Embedded => weir_log_embedded::open_shared(data, Default::default())
                .await
                .unwrap(),
            Backend::Nats(server) => weir_log_nats::open_shared(&server.url()).await.unwrap(),
            Backend::Kafka(broker) => weir_log_kafka::open_shared(&broker.url()).await.unwrap(),
        }
    }

    /// Options for a node on this backend; on NATS, with the key-value store on NATS KV.
    pub(crate) async fn options(&self, data: &Path, manifest: Option<Manifest>) -> NodeOptions {
        let mut options = NodeOptions::new(data, manifest, self.log(data).await);
        if let Backend::Nats(server) = self {
            let nats = weir_log_nats::NatsOptions::from_url(&server.url()).unwrap();
            options.kv = Some(std::sync::Arc::new(
                weir_log_nats::NatsKv::open(&nats).await.unwrap(),
            ));
        }
        options
    }
}

#[tokio::test]
async fn node_options_bound_compiled_code_as_the_manifest_limits_default() {
    let dir = tempfile::tempdir().unwrap();
    let opts = options(dir.path(), None).await;
    let limits = weir_manifest::NodeLimits::default();
    assert_eq!(opts.compiled_in_memory, limits.compiled_in_memory);
    assert_eq!(opts.compiled_on_disk_bytes, limits.compiled_on_disk_bytes);
}

async fn start(dir: &Path, manifest: Manifest) -> std::sync::Arc<Node> {
    Node::start(options(&dir.join("data"), Some(manifest)).await)
        .await
        .unwrap()
}

async fn collect(node: &Node, topic: &str, n: usize) -> Vec<CloudEvent> {
    let stream = node.subscribe(topic, StartFrom::Earliest).await.unwrap();
    tokio::time::timeout(
        Duration::from_secs(30),
        stream.take(n).map(|r| r.unwrap().event).collect(),
    )
    .await
    .unwrap_or_else(|_| panic!("fewer than {n} events arrived on {topic}"))
}

/// Publishes one event into each partition of `topic`, made by `make` from a key that
/// lands there (and the partition's number), and returns where each went.
///
/// A pipeline handles a partition's events in log order and commits batch after batch,
/// so once a marker's output is there, every output of what was published to its
/// partition before it is there too: a count taken then is final, where one taken after
/// a sleep only guesses that the pipeline has caught up.
pub(crate) async fn publish_markers(
    node: &Node,
    topic: &str,
    make: impl Fn(&str, u32) -> CloudEvent,
) -> Vec<weir_log::RecordPosition> {
    let partitions = node.log().topic(topic).await.unwrap().unwrap().partitions;
    let events: Vec<_> = (0..partitions)
        .map(|partition| {
            let key = (0..)
                .map(|i| format!("marker-{i}"))
                .find(|k| weir_log::partition_for_key(k.as_bytes(), partitions) == partition)
                .unwrap();
            make(&key, partition)
        })
        .collect();
    let positions = node.publish(topic, &events).await.unwrap();
    let landed: Vec<u32> = positions.iter().map(|p| p.partition).collect();
    assert_eq!(
        landed,
        (0..partitions).collect::<Vec<_>>(),
        "one marker per partition"
    );
    positions
}

/// Waits until every event of `ids` is in `topic` (within 30 s).
pub(crate) async fn wait_for_ids(
    node: &Node,
    topic: &str,
    ids: std::collections::BTreeSet<String>,
) {
    let stream = node.subscribe(topic, StartFrom::Earliest).await.unwrap();
    let n = ids.len();
    tokio::time::timeout(
        Duration::from_secs(30),
        stream
            .map(|r| r.unwrap().event.id)
            .filter(|id| std::future::ready(ids.contains(id)))
            .take(n)
            .collect::<Vec<_>>(),
    )
    .await
    .unwrap_or_else(|_| panic!("not all of {ids:?} arrived on {topic}"));
}

/// Events in a topic (its offsets: no retention or compaction here).
async fn events_in(node: &Node, topic: &str) -> u64 {
    let info = node.log().topic(topic).await.unwrap().unwrap();
    info.end_offsets
        .iter()
        .zip(&info.start_offsets)
        .map(|(end, start)| end - start)
        .sum()
}

/// Events in a topic. The embedded log answers without waiting, so this can poll it in
/// place (tests call it from plain closures).
fn total_events(node: &Node, topic: &str) -> u64 {
    futures::executor::block_on(events_in(node, topic))
}

on_every_backend!(
    pipeline_transforms_and_survives_a_restart_without_duplicates => transforms_and_survives_a_restart,
);

async fn transforms_and_survives_a_restart(backend: &Backend) {
    let dir = tempfile::tempdir().unwrap();
    let start = async |dir: &Path, manifest: Manifest| {
        Node::start(backend.options(&dir.join("data"), Some(manifest)).await)
            .await
            .unwrap()
    };
    let wasm = weir_test_support::example_function();
    let node = start(
        dir.path(),
        manifest(dir.path(), &wasm, "enrich-order", "crm.orders"),
    )
    .await;

    let first: Vec<_> = (0..20).map(order).collect();
    node.publish("in", &first).await.unwrap();
    let outputs = collect(&node, "crm.orders", 20).await;
    let Some(Data::Json(data)) = &outputs[0].data else {
        panic!()
    };
    assert_eq!(data.value()["amount"], 625.0);
    assert!(outputs.iter().all(|e| e.id.starts_with("p:in:")));
    node.shutdown().await;
    drop(node);

    let node = start(
        dir.path(),
        manifest(dir.path(), &wasm, "enrich-order", "crm.orders"),
    )
    .await;
    let second: Vec<_> = (20..30).map(order).collect();
    node.publish("in", &second).await.unwrap();
    let outputs = collect(&node, "crm.orders", 30).await;
    let mut ids: Vec<_> = outputs.iter().map(|e| e.id.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 30, "every input produced exactly one output");
    // Nothing beyond the 30 arrived: once a marker behind them in each partition is
    // through, so is anything the restart could have handled twice.
    let markers = publish_markers(&node, "in", |key, n| {
        let mut ev = order(1000 + n);
        ev.extensions.insert(
            "partitionkey".into(),
            weir_cloudevents::ExtensionValue::String(key.to_owned()),
        );
        ev
    })
    .await;
    let marker_outputs = markers
        .iter()
        .map(|at| format!("p:in:{}:{}:0", at.partition, at.offset))
        .collect();
    wait_for_ids(&node, "crm.orders", marker_outputs).await;
    assert_eq!(events_in(&node, "crm.orders").await, 30 + 2);
    // The status shows the commit once its transaction returned, a moment after its
    // outputs show.
    let status = settled(&node, |p| p.lag == 0).await;
    assert_eq!(status.state, PipelineState::Running);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_event_is_dead_lettered_with_its_cause_and_later_events_flow() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = weir_test_support::test_guest("guest-trap");
    let node = start(dir.path(), manifest(dir.path(), &wasm, "trapper", "out")).await;

    let mut events = vec![CloudEvent::new("ok-1", "test://s", "test.ok")];
    events.push(CloudEvent::new("boom", "test://s", "test.trap"));
    events.push(CloudEvent::new("ok-2", "test://s", "test.ok"));
    events.push(CloudEvent::new("bad", "test://s", "test.fatal"));
    events.push(CloudEvent::new("ok-3", "test://s", "test.ok"));
    // One partition and one key, so the order is fixed.
    for ev in &mut events {
        ev.subject = Some("same-key".into());
    }
    node.publish("in", &events).await.unwrap();

    let out = collect(&node, "out", 3).await;
    let ids: Vec<_> = out.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["ok-1", "ok-2", "ok-3"]);
    let dead = collect(&node, "p.dlq", 2).await;
    let ext = |e: &CloudEvent, name: &str| e.extensions.get(name).cloned();
    use weir_cloudevents::ExtensionValue::{Integer, String as S};
    assert_eq!(dead[0].id, "boom");
    assert_eq!(dead[0].ty, "test.trap", "the event is kept as it was");
    assert_eq!(ext(&dead[0], "dlqpipeline"), Some(S("p".into())));
    assert_eq!(ext(&dead[0], "dlqfunction"), Some(S("trapper".into())));
    let version = node.functions()[0].version.clone();
    assert_eq!(ext(&dead[0], "dlqversion"), Some(S(version)));
    assert_eq!(ext(&dead[0], "dlqreason"), Some(S("trap".into())));
    assert_eq!(ext(&dead[0], "dlqattempts"), Some(Integer(1)));
    assert_eq!(ext(&dead[0], "dlqtopic"), Some(S("in".into())));
    let Some(S(error)) = ext(&dead[0], "dlqerror") else {
        panic!("no dlqerror")
    };
    assert!(error.contains("trapped"), "{error}");
    assert_eq!(dead[1].id, "bad");
    assert_eq!(ext(&dead[1], "dlqreason"), Some(S("fatal".into())));

    // Counters move once the batch's transaction returned, a moment after its outputs show.
    let status = settled(&node, |p| p.dead_lettered == 2).await;
    assert_eq!(status.processed, 3);
    assert_eq!(status.lag, 0);
    assert_eq!(status.state, PipelineState::Running);
    node.shutdown().await;
}

/// `linger_ms`: events published one at a time into a partition that is not busy share
/// a batch (one commit) instead of each taking its own, a lone event waits out the
/// linger, and an event read just before a stop is neither lost nor handled twice: it
/// is handled after the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lingering_pipeline_batches_single_publishes_and_loses_nothing_on_a_stop() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = weir_test_support::test_guest("guest-trap");
    let lingering = || {
        let mut manifest = manifest(dir.path(), &wasm, "passer", "out");
        manifest.pipelines.get_mut("p").unwrap().linger_ms = 1000;
        manifest
    };
    let event = |n: u32| {
        let mut ev = CloudEvent::new(format!("ok-{n}"), "test://s", "test.ok");
        ev.subject = Some("same-key".into());
        ev
    };
    let node = start(dir.path(), lingering()).await;
    assert_eq!(node.status().await.unwrap().pipelines[0].linger_ms, 1000);
    // Each publish is acknowledged (durable) before the next is sent: without the linger
    // the partition reads and commits them nearly one at a time.
    for n in 0..10 {
        node.publish("in", &[event(n)]).await.unwrap();
    }
    let out = collect(&node, "out", 10).await;
    let ids: Vec<_> = out.iter().map(|e| e.id.clone()).collect();
    let expected: Vec<_> = (0..10).map(|n| format!("ok-{n}")).collect();
    assert_eq!(ids, expected);
    let status = settled(&node, |p| p.processed == 10).await;
    assert!(
        status.batches < 10,
        "ten events published within the linger took {} batches",
        status.batches
    );
    // A lone event waits out the linger (a slow machine only waits longer), then is
    // handled in a batch of its own.
    node.publish("in", &[event(10)]).await.unwrap();
    let published = std::time::Instant::now();
    assert_eq!(collect(&node, "out", 11).await[10].id, "ok-10");
    let waited = published.elapsed();
    assert!(
        waited >= Duration::from_millis(800),
        "a lone event was handled {waited:?} after its publish, within a linger of 1 s"
    );
    let before = status.batches;
    let status = settled(&node, |p| p.processed == 11).await;
    assert_eq!(status.batches, before + 1);

    // Stopped while it lingers over a read event: the event is handled once, after the
    // restart.
    node.publish("in", &[event(11)]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    node.shutdown().await;
    drop(node);
    let node = start(dir.path(), lingering()).await;
    // A marker with the same key comes out after anything handled twice.
    node.publish("in", &[event(12)]).await.unwrap();
    let out = collect(&node, "out", 13).await;
    let ids: Vec<_> = out.iter().map(|e| e.id.clone()).collect();
    let expected: Vec<_> = (0..13).map(|n| format!("ok-{n}")).collect();
    assert_eq!(ids, expected, "each event once, in order");
    assert_eq!(events_in(&node, "out").await, 13, "nothing handled twice");
    node.shutdown().await;
}

/// A function's `limits.cpu_percent` holds a pipeline whose function spins to its
/// deadline on every event to its share of the CPU: the calls still end at their
/// deadline and are dead-lettered as such, but use a fraction of the CPU they would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cpu_quota_in_the_manifest_holds_a_spinning_pipeline_to_its_share() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = weir_test_support::test_guest("guest-infinite-loop");
    let text = format!(
        r#"
[topics.in]
partitions = 4
[functions.spin]
source = "{}"
limits = {{ deadline_ms = 200, cpu_percent = 5 }}
[pipelines.p]
from = "in"
function = "spin"
concurrency = 4
ordering = "none"
retry = {{ max_attempts = 1 }}
"#,
        wasm.display()
    );
    let node = start(
        dir.path(),
        Manifest::from_toml_str(&text, dir.path()).unwrap(),
    )
    .await;
    let events: Vec<_> = (0..8)
        .map(|n| CloudEvent::new(format!("spin-{n}"), "test://s", "test.spin"))
        .collect();
    // This test runs in a process of its own (nextest): the process's CPU is the node's.
    let cpu = || {
        let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
        t.tv_sec as f64 + t.tv_nsec as f64 / 1e9
    };
    let (started, cpu_started) = (std::time::Instant::now(), cpu());
    node.publish("in", &events).await.unwrap();
    let dead = collect(&node, "p.dlq", 8).await;
    let (wall, used) = (started.elapsed().as_secs_f64(), cpu() - cpu_started);
    // A deadline breach, or the quota holding the call back at its deadline (which is
    // retryable, and this pipeline tries once).
    use weir_cloudevents::ExtensionValue::String as S;
    for event in &dead {
        let reason = event.extensions.get("dlqreason");
        assert!(
            [
                Some(&S("deadline".into())),
                Some(&S("retries_exhausted".into()))
            ]
            .contains(&reason),
            "{event:?}"
        );
        let Some(S(error)) = event.extensions.get("dlqerror") else {
            panic!("{event:?}")
        };
        assert!(error.contains("deadline of 200ms"), "{error}");
    }
    // Unthrottled, eight calls spinning 200 ms each take 1.6 s of CPU.
    assert!(
        used < 0.6,
        "eight spinning calls under a 5% quota used {used:.2} s of CPU in {wall:.2} s"
    );
    node.shutdown().await;
}

/// The first pipeline's status once `done` holds for it (within 10 s).
async fn settled(
    node: &Node,
    done: impl Fn(&crate::PipelineStatus) -> bool,
) -> crate::PipelineStatus {
    let last = std::sync::Mutex::new(None);
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let status = node.status().await.unwrap().pipelines[0].clone();
            if done(&status) {
                return status;
            }
            *last.lock().unwrap() = Some(status);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the pipeline did not settle: {:?}", last.lock().unwrap()))
}

async fn plain_node(dir: &Path) -> std::sync::Arc<Node> {
    let node = Node::start(options(&dir.join("data"), None).await)
        .await
        .unwrap();
    node.log()
        .create_topic("t", &weir_log::TopicSpec::with_partitions(4))
        .await
        .unwrap();
    node
}

fn keyed(n: u32) -> CloudEvent {
    let mut ev = CloudEvent::new(format!("e{n}"), "test://s", "t");
    ev.subject = Some(format!("k{n}"));
    ev
}

async fn next_ids(
    stream: &mut (impl futures::Stream<Item = crate::Result<crate::LoggedEvent>> + Unpin),
    n: usize,
) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..n {
        let ev = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("an event arrives")
            .unwrap()
            .unwrap();
        ids.push(ev.event.id);
    }
    ids
}

async fn wait_until_no_members(node: &Node, group: &str, topic: &str) {
    tokio::time::timeout(Duration::from_secs(10), async {
        while node.group_status(group, topic).await.unwrap().members > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the members leave");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_members_share_partitions_and_keep_the_position() {
    let dir = tempfile::tempdir().unwrap();
    let node = plain_node(dir.path()).await;
    let events: Vec<_> = (0..40).map(keyed).collect();
    node.publish("t", &events).await.unwrap();

    let mut a = Box::pin(
        node.subscribe_group("g", "t", StartFrom::Earliest)
            .await
            .unwrap(),
    );
    let mut b = Box::pin(
        node.subscribe_group("g", "t", StartFrom::Latest)
            .await
            .unwrap(),
    );
    // Nothing to wait for: joining rebalances before `subscribe_group` returns, so each
    // member owns two partitions now, and a stream hands out only its member's
    // partitions, checked as it is polled.
    let status = node.group_status("g", "t").await.unwrap();
    assert_eq!(status.members, 2);

    // Together they see each event once; each sees only its own partitions.
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while seen.len() < 40 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "saw only {} of 40",
            seen.len()
        );
        tokio::select! {
            Some(ev) = a.next() => seen.push(("a", ev.unwrap())),
            Some(ev) = b.next() => seen.push(("b", ev.unwrap())),
        }
    }
    let mut ids: Vec<_> = seen.iter().map(|(_, e)| e.event.id.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 40);
    for (who, ev) in &seen {
        let other = if *who == "a" { "b" } else { "a" };
        assert!(
            !seen
                .iter()
                .any(|(w, e)| w == &other && e.partition == ev.partition),
            "partition {} was read by both members",
            ev.partition
        );
    }

    // A live group cannot be reset.
    let err = node
        .reset_group("g", "t", StartFrom::Earliest)
        .await
        .unwrap_err();
    assert!(matches!(err, crate::Error::GroupBusy { .. }), "{err}");

    // Members leave; the position is committed; a new member continues from it.
    drop(a);
    drop(b);
    wait_until_no_members(&node, "g", "t").await;
    let status = node.group_status("g", "t").await.unwrap();
    assert!(status.partitions.iter().all(|p| p.lag == 0), "{status:?}");
    node.publish("t", &[keyed(100)]).await.unwrap();
    let mut c = Box::pin(
        node.subscribe_group("g", "t", StartFrom::Earliest)
            .await
            .unwrap(),
    );
    assert_eq!(next_ids(&mut c, 1).await, ["e100"]);
    drop(c);
    wait_until_no_members(&node, "g", "t").await;

    // Reset to the start: everything again.
    let offsets = node
        .reset_group("g", "t", StartFrom::Earliest)
        .await
        .unwrap();
    assert!(offsets.iter().all(|p| p.offset == 0));
    let mut d = Box::pin(
        node.subscribe_group("g", "t", StartFrom::Latest)
            .await
            .unwrap(),
    );
    let mut again = next_ids(&mut d, 41).await;
    again.sort();
    again.dedup();
    assert_eq!(again.len(), 41);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipelines_group_cannot_be_joined_but_can_be_reset_while_it_runs() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = weir_test_support::test_guest("guest-trap");
    let node = start(dir.path(), manifest(dir.path(), &wasm, "trapper", "out")).await;
    let err = node
        .subscribe_group("p", "in", StartFrom::Earliest)
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("pipeline \"p\""), "{err}");

    let events: Vec<_> = (0..10).map(keyed).collect();
    node.publish("in", &events).await.unwrap();
    collect(&node, "out", 10).await;
    // Reprocess for real: back to the start of every partition, and it all runs again.
    let offsets = node
        .reset_group("p", "in", StartFrom::Earliest)
        .await
        .unwrap();
    assert!(offsets.iter().all(|p| p.offset == 0), "{offsets:?}");
    collect(&node, "out", 20).await;
    // To the end: nothing more runs, and the lag is zero.
    node.reset_group("p", "in", StartFrom::Latest)
        .await
        .unwrap();
    assert_eq!(node.status().await.unwrap().pipelines[0].lag, 0);
    let err = node
        .reset_group("p", "elsewhere", StartFrom::Earliest)
        .await
        .unwrap_err();
    assert!(matches!(err, crate::Error::GroupBusy { .. }), "{err}");
    node.shutdown().await;
}

mod backpressure;
mod delivery;
mod entities;
mod hot_swap;
mod outbound;
mod positional;
mod replay;
mod schemas;
mod sinks;
mod sources;
mod views;

/// A pipeline on NATS JetStream while its server is killed and started again under load:
/// every input has its output (none lost), outputs in each source partition's order, and
/// the outputs stored more than once (the backend is at-least-once) are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_on_nats_loses_nothing_when_the_server_restarts_under_load() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = weir_test_support::nats::NatsServer::start(true);
    let url = format!("{}?sync=always&timeout_ms=2000", server.url());
    let log = weir_log_nats::open_shared(&url).await.unwrap();
    let wasm = weir_test_support::example_function();
    let node = Node::start(NodeOptions::new(
        dir.path().join("data"),
        Some(manifest(dir.path(), &wasm, "enrich-order", "crm.orders")),
        log,
    ))
    .await
    .unwrap();

    // Batches of ten orders, each sent again until the node takes it (a batch the
    // server stored without answering is stored twice: a client's at-least-once), until
    // told to stop; the server is killed and started again in the middle.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let publisher = {
        let (node, stop, sent) = (node.clone(), stop.clone(), sent.clone());
        tokio::spawn(async move {
            let mut refused = 0;
            let mut batch = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let events: Vec<_> = (batch * 10..batch * 10 + 10).map(order).collect();
                while node.publish("in", &events).await.is_err() {
                    refused += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                batch += 1;
                sent.store(batch, std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            refused
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = sent.load(std::sync::atomic::Ordering::Relaxed);
    server.restart();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let refused = publisher.await.unwrap();
    let after = sent.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        before > 0 && after > before,
        "the restart came mid-stream ({before} batches before it, {after} in all)"
    );

    // Every stored input's output is there: ids name the input's partition and offset.
    let inputs = node.log().topic("in").await.unwrap().unwrap();
    let expected: std::collections::BTreeSet<(u32, u64)> = (0..inputs.partitions)
        .flat_map(|p| (0..inputs.end_offsets[p as usize]).map(move |o| (p, o)))
        .collect();
    let outputs = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let outputs = source_positions(&node, "crm.orders").await;
            let seen: std::collections::BTreeSet<(u32, u64)> = outputs.iter().copied().collect();
            if expected.is_subset(&seen) {
                return outputs;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("every input's output arrives after the restart");
    let doubled = outputs.len() - expected.len();
    // In each source partition, outputs in input order (an output stored again after a
    // retry repeats a run of earlier ones; its first copies are in order).
    for p in 0..inputs.partitions {
        let mut first_seen = std::collections::BTreeSet::new();
        let firsts: Vec<u64> = outputs
            .iter()
            .filter(|(partition, _)| *partition == p)
            .filter(|at| first_seen.insert(**at))
            .map(|(_, offset)| *offset)
            .collect();
        assert!(
            firsts.windows(2).all(|w| w[0] < w[1]),
            "partition {p} out of order"
        );
    }
    eprintln!(
        "{} inputs, {} outputs ({doubled} stored again), {refused} publishes refused while the server was down",
        expected.len(),
        outputs.len()
    );
    node.shutdown().await;
}

/// The (source partition, source offset) of every output in `topic`, from their ids
/// (`p:in:{partition}:{offset}:{index}`), in the order stored.
async fn source_positions(node: &Node, topic: &str) -> Vec<(u32, u64)> {
    let info = node.log().topic(topic).await.unwrap().unwrap();
    let mut outputs = Vec::new();
    for partition in 0..info.partitions {
        let records = node
            .log()
            .read(topic, partition, 0, usize::MAX)
            .await
            .unwrap();
        for record in records {
            let event = crate::codec::decode_event(topic, record).unwrap().event;
            let mut parts = event.id.split(':').skip(2);
            let p = parts.next().unwrap().parse().unwrap();
            let o = parts.next().unwrap().parse().unwrap();
            outputs.push((p, o));
        }
    }
    outputs
}

/// Two nodes on one NATS server split a pipeline's two partitions, one each, both handle
/// their share; a node resets the partition it runs, names the member running the other
/// (where the gateway forwards that one), and refuses to reset a partition it does not run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_of_a_fleet_split_a_pipeline_and_a_reset_names_the_owner() {
    let backend = Backend::nats();
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let wasm = weir_test_support::example_function();
    let mut nodes = Vec::new();
    for dir in [&a_dir, &b_dir] {
        let manifest = manifest(dir.path(), &wasm, "enrich-order", "crm.orders");
        let options = backend
            .options(&dir.path().join("data"), Some(manifest))
            .await;
        nodes.push(Node::start(options).await.unwrap());
    }
    // Each runs one partition once both see the fleet (the second waits out the grace
    // period before it claims the partition it takes from the first).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut running = Vec::new();
        for node in &nodes {
            let status = node.status().await.unwrap();
            assert_eq!(status.backend, "nats");
            let members = status.fleet.as_ref().unwrap().members.len();
            let here: Vec<u32> = status.pipelines[0]
                .partitions
                .iter()
                .filter(|p| p.running_here)
                .map(|p| p.partition)
                .collect();
            running.push((members, here));
        }
        if running.iter().all(|(m, here)| *m == 2 && here.len() == 1) {
            assert_ne!(running[0].1, running[1].1, "{running:?}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the fleet did not settle: {running:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let events: Vec<_> = (0..40).map(order).collect();
    nodes[0].publish("in", &events).await.unwrap();
    // One more event in each partition, so both nodes have work.
    publish_markers(&nodes[0], "in", |key, n| {
        let mut ev = order(1000 + n);
        ev.extensions.insert(
            "partitionkey".into(),
            weir_cloudevents::ExtensionValue::String(key.to_owned()),
        );
        ev
    })
    .await;
    let outputs = collect(&nodes[1], "crm.orders", 42).await;
    let mut ids: Vec<_> = outputs.iter().map(|e| e.id.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 42);
    let mut processed = 0;
    for node in &nodes {
        let status = settled(node, |p| p.lag == 0).await;
        assert!(
            status.processed > 0,
            "each node handles its share: {status:?}"
        );
        processed += status.processed;
    }
    assert_eq!(processed, 42);

    let group = nodes[0].status().await.unwrap().pipelines[0].group.clone();
    let elsewhere = nodes[0].reset_elsewhere(&group, "in", None).await.unwrap();
    assert_eq!(elsewhere.len(), 1, "{elsewhere:?}");
    let (theirs, their_partitions) = &elsewhere[0];
    assert_eq!(
        Some(theirs.id.clone()),
        nodes[1].status().await.unwrap().fleet.map(|f| f.me.id)
    );
    assert_eq!(their_partitions.len(), 1);
    let mine = 1 - their_partitions[0];
    let moved = nodes[0]
        .reset_group_partitions(&group, "in", StartFrom::Earliest, Some(&[mine]))
        .await
        .unwrap();
    assert_eq!(
        moved,
        [weir_log::RecordPosition {
            partition: mine,
            offset: 0
        }]
    );
    let refused = nodes[0]
        .reset_group(&group, "in", StartFrom::Earliest)
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("is run by member"),
        "{refused}"
    );
    for node in nodes {
        node.shutdown().await;
    }
}
