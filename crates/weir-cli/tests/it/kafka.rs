//! The example app's pipeline on Kafka (a private tansu broker): two `weir serve`
//! workers share its partitions through the Kafka backend's control topic; one is killed
//! mid-stream and the other takes its share over: nothing lost, each key's order held,
//! repeats counted. The example's entity and view are left out: Kafka has no conditional
//! appends, and a node refuses entities there (tested too).

use std::time::Duration;

use weir_test_support::WeirProcess;
use weir_test_support::kafka::KafkaBroker;

use super::example_app;
use super::fleet::{members, node, outputs_in_order, owners, publish, wait_for};
use super::{node_status, weir};

/// The example app without its entity and view (everything from the entity's function
/// on), on `backend`.
fn pipeline_app(dir: &std::path::Path) -> std::path::PathBuf {
    let app = example_app(dir);
    let manifest = std::fs::read_to_string(&app).unwrap();
    let cut = manifest
        .find("[functions.order-entity]")
        .expect("the example declares its entity's function after the pipeline");
    std::fs::write(&app, &manifest[..cut]).unwrap();
    app
}

fn serve(dir: &std::path::Path, app: &std::path::Path, backend: &str) -> WeirProcess {
    WeirProcess::start(
        weir(),
        &[
            "--app",
            app.to_str().unwrap(),
            "--data",
            dir.join("data").to_str().unwrap(),
            "--backend",
            backend,
        ],
    )
}

#[test]
fn two_workers_share_the_pipeline_on_kafka_and_one_killed_loses_nothing() {
    const EVENTS: u32 = 1_500;
    let broker = KafkaBroker::start();
    let backend = broker.url();
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let apps: Vec<_> = dirs.iter().map(|d| pipeline_app(d.path())).collect();
    let mut nodes: Vec<Option<WeirProcess>> = (0..2)
        .map(|i| Some(serve(dirs[i].path(), &apps[i], &backend)))
        .collect();

    let mut ids = Vec::new();
    wait_for(
        "two members sharing the pipeline",
        Duration::from_secs(60),
        || {
            let statuses: Vec<_> = (0..2).map(|i| node_status(node(&nodes, i))).collect();
            ids = statuses
                .iter()
                .map(|s| s["fleet"]["me"].as_str().unwrap_or_default().to_owned())
                .collect();
            let first = owners(&statuses[0]);
            let ok = statuses.iter().all(|s| members(s).len() == 2)
                && statuses.iter().all(|s| owners(s) == first)
                && ids.iter().all(|id| first.contains(id));
            (!ok).then(|| format!("{statuses:?}"))
        },
    );
    let status = node_status(node(&nodes, 0));
    assert_eq!(status["backend"], "kafka", "{status}");

    for start in (0..EVENTS).step_by(50) {
        publish(node(&nodes, 0), start..start + 50);
    }
    nodes[1].take().unwrap().kill();
    let survivor = ids[0].clone();
    wait_for(
        "the survivor takes over and catches up",
        Duration::from_secs(90),
        || {
            let status = node_status(node(&nodes, 0));
            let done = members(&status).len() == 1
                && owners(&status).iter().all(|o| *o == survivor)
                && status["pipelines"][0]["lag"] == 0;
            (!done).then(|| format!("{status}"))
        },
    );
    let repeated = outputs_in_order(node(&nodes, 0), EVENTS);
    eprintln!("{EVENTS} events on Kafka: {repeated} outputs repeated (at-least-once)");
    // At most a pipeline batch per partition the victim held.
    assert!(repeated <= 2 * 256 * 4, "{repeated} outputs repeated");
    assert!(nodes.remove(0).unwrap().stop(), "weir serve exits cleanly");
}

#[test]
fn the_example_app_with_its_entity_is_refused_on_kafka() {
    let broker = KafkaBroker::start();
    let dir = tempfile::tempdir().unwrap();
    let app = example_app(dir.path());
    let output = std::process::Command::new(weir())
        .args(["serve", "--app", app.to_str().unwrap(), "--data"])
        .arg(dir.path().join("data"))
        .args(["--backend", &broker.url(), "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("entity.order") && stderr.contains("kafka"),
        "{stderr}"
    );
}
