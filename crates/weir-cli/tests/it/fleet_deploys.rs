//! Deploys on a fleet: `weir deploy` and `weir rollback` sent to one worker reach every
//! worker on the NATS server (or the Kafka broker), a worker that starts later runs what
//! the fleet runs, and a new release started on one worker reaches the others.

use std::path::Path;
use std::time::{Duration, Instant};

use weir_test_support::WeirProcess;
use weir_test_support::kafka::KafkaBroker;
use weir_test_support::nats::NatsServer;

use crate::{cli, http_get, weir};

const APP: &str = r#"
[app]
name = "tags"
[topics.in]
[topics.out]
[functions.tag]
source = "tag.wasm"
[pipelines.p]
from = "in"
function = "tag"
to = ["out"]
"#;

/// The app in `dir` with `guest` as its function's component.
fn app_in(dir: &Path, guest: &str) {
    std::fs::write(dir.join("weir.toml"), APP).unwrap();
    std::fs::copy(weir_test_support::test_guest(guest), dir.join("tag.wasm")).unwrap();
}

fn serve(dir: &Path, backend: &str) -> WeirProcess {
    let (app, data) = (dir.join("weir.toml"), dir.join("data"));
    WeirProcess::start(
        weir(),
        &[
            "--app",
            app.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--backend",
            backend,
        ],
    )
}

fn status(node: &WeirProcess) -> serde_json::Value {
    serde_json::from_str(&cli(node, &["status", "--json"])).unwrap()
}

fn version(node: &WeirProcess) -> String {
    status(node)["functions"][0]["version"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Waits until every node runs `version` of the function.
fn until_all_run(nodes: &[&WeirProcess], version: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let running: Vec<String> = nodes.iter().map(|n| self::version(n)).collect();
        if running.iter().all(|v| v == version) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the fleet runs {running:?}, not {version} everywhere"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn pipelines(node: &WeirProcess) -> Vec<String> {
    status(node)["pipelines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn deploys_and_rollbacks_sent_to_one_worker_reach_the_fleet() {
    let server = NatsServer::start(false);
    deploys_and_rollbacks_reach_the_fleet(&server.url());
}

#[test]
fn deploys_and_rollbacks_sent_to_one_worker_reach_the_fleet_on_kafka() {
    let broker = KafkaBroker::start();
    deploys_and_rollbacks_reach_the_fleet(&broker.url());
}

fn deploys_and_rollbacks_reach_the_fleet(backend: &str) {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    for dir in &dirs {
        app_in(dir.path(), "guest-tag-v1");
    }
    let a = serve(dirs[0].path(), backend);
    let b = serve(dirs[1].path(), backend);
    let v1 = version(&a);
    assert_eq!(version(&b), v1);

    // A new component deployed to A runs on B too; B had never seen it.
    app_in(dirs[0].path(), "guest-tag-v2");
    let app_a = dirs[0].path().join("weir.toml");
    cli(&a, &["deploy", "--app", app_a.to_str().unwrap()]);
    let v2 = version(&a);
    assert_ne!(v2, v1);
    until_all_run(&[&a, &b], &v2);
    let functions = http_get(&format!("{}/v1/functions", b.url))[0].clone();
    let origins: Vec<&str> = functions["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["origin"].as_str().unwrap())
        .collect();
    assert_eq!(origins, ["manifest", "deploy"], "{functions}");

    // A rollback sent to B reaches A.
    cli(&b, &["rollback", "tag"]);
    until_all_run(&[&a, &b], &v1);

    // A deploy that adds a topic and a pipeline starts the pipeline on every worker.
    let grown = format!(
        "{APP}[topics.more]\n[pipelines.p2]\nfrom = \"more\"\nfunction = \"tag\"\nto = [\"out\"]\n"
    );
    std::fs::write(&app_a, &grown).unwrap();
    cli(&a, &["deploy", "--app", app_a.to_str().unwrap()]);
    until_all_run(&[&a, &b], &v2);
    let deadline = Instant::now() + Duration::from_secs(30);
    while pipelines(&b) != ["p", "p2"] {
        assert!(Instant::now() < deadline, "B runs {:?}", pipelines(&b));
        std::thread::sleep(Duration::from_millis(200));
    }

    // A worker started later from the same weir.toml runs what the fleet runs: v2 (which
    // its own directory does not hold) and the deployed pipeline.
    let c = serve(dirs[2].path(), backend);
    until_all_run(&[&a, &b, &c], &v2);
    let deadline = Instant::now() + Duration::from_secs(30);
    while pipelines(&c) != ["p", "p2"] {
        assert!(Instant::now() < deadline, "C runs {:?}", pipelines(&c));
        std::thread::sleep(Duration::from_millis(200));
    }

    // An event through the new pipeline comes out tagged by v2, whichever worker ran it.
    cli(
        &c,
        &[
            "publish",
            "more",
            "--type",
            "t",
            "--id",
            "e1",
            "--subject",
            "k",
        ],
    );
    let out = cli(&c, &["tail", "out", "--from", "earliest", "--limit", "1"]);
    let event: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(event["id"], "e1");
    assert_eq!(event["tagversion"], "2", "{event}");
    // A worker started from a new component (a new release of the app, as a rolling
    // upgrade starts it) brings it to the fleet; one restarted from the older release
    // follows the newer one instead of turning the fleet back.
    assert!(b.stop());
    app_in(dirs[1].path(), "guest-echo");
    let b = serve(dirs[1].path(), backend);
    let v3 = version(&b);
    assert!(v3 != v1 && v3 != v2, "{v3}");
    until_all_run(&[&a, &b, &c], &v3);
    assert!(c.stop());
    let c = serve(dirs[2].path(), backend);
    until_all_run(&[&a, &b, &c], &v3);
    assert_eq!(pipelines(&c), ["p", "p2"]);

    for node in [a, b, c] {
        assert!(node.stop(), "weir serve exits cleanly on SIGTERM");
    }
}
