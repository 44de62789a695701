//! `weir replay` against the example app on a real `weir serve`: the active version
//! alone, then against a second build of the example function with another rounding, and
//! the errors of a broken candidate or an unknown version. The replays must leave the log,
//! the pipeline's consumer group and the pipeline itself as they were.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use weir_test_support::WeirProcess;

use crate::{cli, node_status, post_sample, serve, topic_events, wait_caught_up, weir};

/// Write `contents` to `path` unless it already holds them, so the guest build below
/// stays a no-op between test runs.
fn write_if_changed(path: &Path, contents: &str) {
    if std::fs::read_to_string(path).ok().as_deref() != Some(contents) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, contents).unwrap();
    }
}

/// A second version of `examples/orders/enrich-order` that rounds amounts to whole
/// units instead of cents, built for wasm32-wasip2. The project is copied under the
/// repository's `target/` (where its own target dir lives too, shared between runs), with
/// the path to the guest SDK made absolute.
fn enrich_order_rounding_to_units() -> PathBuf {
    let example = weir_test_support::example_dir().join("enrich-order");
    let root = weir_test_support::repo_root();
    let project = root.join("target/replay-test/enrich-order-units");
    let read = |file: &str| std::fs::read_to_string(example.join(file)).unwrap();

    let sdk = root.join("crates/weir-guest");
    let manifest = read("Cargo.toml");
    assert!(manifest.contains("\"../../../crates/weir-guest\""));
    let manifest = manifest.replace(
        "\"../../../crates/weir-guest\"",
        &format!("{:?}", sdk.display().to_string()),
    );
    let source = read("src/transform.rs");
    let cents = "(amount * rate * 100.0).round() / 100.0";
    assert!(source.contains(cents), "the example's rounding changed");
    let source = source.replace(cents, "(amount * rate).round()");

    write_if_changed(&project.join("Cargo.toml"), &manifest);
    write_if_changed(&project.join("Cargo.lock"), &read("Cargo.lock"));
    write_if_changed(&project.join("src/lib.rs"), &read("src/lib.rs"));
    write_if_changed(&project.join("src/transform.rs"), &source);
    weir_test_support::build_guest(&project, "enrich_order")
}

fn run(node: &WeirProcess, args: &[&str]) -> Output {
    Command::new(weir())
        .args(args)
        .args(["--url", &node.url])
        .output()
        .unwrap()
}

/// `weir replay ... --json` and its report (the last line of stdout).
fn replay_json(node: &WeirProcess, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["replay", "erp-to-crm", "--json"];
    all.extend_from_slice(args);
    let out = cli(node, &all);
    serde_json::from_str(out.lines().last().expect("a report line")).unwrap()
}

/// What a replay must not change: the output topic's end offsets, the pipeline group's
/// committed offsets, and the key-value namespace the function reads.
fn untouched_state(node: &WeirProcess) -> (serde_json::Value, serde_json::Value, String) {
    let status = node_status(node);
    let topic = status["topics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "crm.orders")
        .unwrap()["end_offsets"]
        .clone();
    let group = status["pipelines"][0]["group"].as_str().unwrap().to_owned();
    let committed: serde_json::Value = serde_json::from_str(&cli(
        node,
        &[
            "group",
            "show",
            &group,
            "--topic",
            "erp.sales-orders",
            "--json",
        ],
    ))
    .unwrap();
    let kv = cli(node, &["kv", "list", "customers"]);
    (topic, committed["partitions"].clone(), kv)
}

#[test]
fn replay_reports_one_version_and_diffs_two_without_side_effects() {
    let candidate = enrich_order_rounding_to_units();
    let dir = tempfile::tempdir().unwrap();
    let node = serve(dir.path());
    let events = weir_test_support::example_dir().join("events.jsonl");
    cli(
        &node,
        &[
            "publish",
            "erp.sales-orders",
            "--file",
            events.to_str().unwrap(),
        ],
    );
    assert_eq!(post_sample(&node).0, 202);
    let status = wait_caught_up(&node);
    assert_eq!(topic_events(&status, "crm.orders"), 4);
    let active = status["functions"][0]["version"]
        .as_str()
        .unwrap()
        .to_owned();
    let before = untouched_state(&node);

    // Version A alone: its outputs and errors, no diff.
    let report = replay_json(&node, &[]);
    assert_eq!(report["pipeline"], "erp-to-crm");
    assert_eq!(report["function"], "enrich-order");
    assert_eq!(report["inputs"], 4, "{report}");
    assert_eq!(report["a"]["version"], active.as_str());
    assert_eq!(report["a"]["source"], "active");
    assert_eq!(report["a"]["outputs"], 4, "{report}");
    assert_eq!(report["a"]["errors"], 0, "{report}");
    assert!(
        report["b"].is_null() && report["diff"].is_null(),
        "{report}"
    );
    assert_eq!(report["examples"], serde_json::json!([]));
    assert_eq!(report["ranges"].as_array().unwrap().len(), 4);

    // A against B: only SO-1002 (99.50 USD = 91.54 EUR) rounds differently.
    let path = candidate.to_str().unwrap();
    let report = replay_json(&node, &["--wasm", path]);
    assert_eq!(report["inputs"], 4, "{report}");
    assert_eq!(report["b"]["source"], "candidate");
    assert_ne!(report["b"]["version"], report["a"]["version"]);
    assert_eq!(
        (&report["a"]["outputs"], &report["b"]["outputs"]),
        (&4.into(), &4.into())
    );
    let diff = &report["diff"];
    assert_eq!(
        *diff,
        serde_json::json!({"unchanged": 3, "changed": 1, "added": 0, "removed": 0,
            "errors_only_a": 0, "errors_only_b": 0, "errors_both": 0}),
        "{report}"
    );
    let examples = report["examples"].as_array().unwrap();
    assert_eq!(examples.len(), 1, "{report}");
    let example = &examples[0];
    assert_eq!(example["kind"], "changed");
    assert_eq!(example["input_id"], "erp-so-1002");
    assert_eq!(example["output_index"], 0);
    assert_eq!(example["target_a"], "crm.orders");
    assert_eq!(
        example["fields"][0],
        serde_json::json!({"path": "data.amount", "a": 91.54, "b": 92.0}),
        "{report}"
    );
    assert_eq!(example["fields"][1]["path"], "data.lines[0].amount");

    // A kept version named explicitly, a range cut to nothing, and the summary for people.
    let report = replay_json(&node, &["--version", &active, "--to-offset", "0"]);
    assert_eq!(report["a"]["source"], "kept");
    assert_eq!(report["inputs"], 0, "{report}");
    let partition = example["partition"].to_string();
    let out = cli(
        &node,
        &[
            "replay",
            "erp-to-crm",
            "--wasm",
            path,
            "--partition",
            &partition,
        ],
    );
    assert!(
        out.contains(&format!(
            "erp.sales-orders partition {partition}: offsets 0.."
        )),
        "{out}"
    );
    assert_eq!(
        out.matches(" partition ").count(),
        2,
        "one range and one example: {out}"
    );
    assert!(
        out.contains(" unchanged, 1 changed, 0 added, 0 removed"),
        "{out}"
    );
    assert!(out.contains("data.amount: 91.54 -> 92.0"), "{out}");

    // A candidate that is not a component, an unknown version or pipeline: clear errors.
    let broken = dir.path().join("broken.wasm");
    std::fs::write(&broken, b"\0asm not a component").unwrap();
    let out = run(
        &node,
        &["replay", "erp-to-crm", "--wasm", broken.to_str().unwrap()],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("422"), "{stderr}");
    assert!(
        stderr.contains("not a valid WebAssembly component"),
        "{stderr}"
    );
    let out = run(
        &node,
        &["replay", "erp-to-crm", "--version", "123456789abc"],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("404") && stderr.contains("no kept version"),
        "{stderr}"
    );
    let out = run(&node, &["replay", "nope"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("pipeline \"nope\" is not declared"),
        "{out:?}"
    );

    // Nothing was published, committed or written, the candidate was not deployed, and
    // the pipeline still runs.
    assert_eq!(untouched_state(&node), before);
    let status = node_status(&node);
    assert_eq!(status["functions"][0]["version"], active.as_str());
    assert_eq!(status["functions"][0]["versions_kept"], 1);
    assert_eq!(post_sample(&node).0, 202);
    assert_eq!(topic_events(&wait_caught_up(&node), "crm.orders"), 5);
    assert!(node.stop());
}
