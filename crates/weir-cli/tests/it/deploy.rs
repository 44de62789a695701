//! `weir deploy`, `weir rollback`, `weir status` and `weir kv` against a real `weir serve`.

use std::path::Path;
use std::process::{Command, Output};

use weir_test_support::WeirProcess;

use crate::{cli, weir};

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
[keyvalue.customers]
seed = "customers.json"
"#;

fn use_guest(dir: &Path, guest: &str) {
    std::fs::copy(weir_test_support::test_guest(guest), dir.join("tag.wasm")).unwrap();
}

fn serve(dir: &Path) -> WeirProcess {
    let (app, data) = (dir.join("weir.toml"), dir.join("data"));
    WeirProcess::start(
        weir(),
        &[
            "--app",
            app.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
        ],
    )
}

fn run(node: &WeirProcess, args: &[&str]) -> Output {
    Command::new(weir())
        .args(args)
        .args(["--url", &node.url])
        .output()
        .unwrap()
}

fn active_version(node: &WeirProcess) -> (String, u64) {
    let status: serde_json::Value =
        serde_json::from_str(&cli(node, &["status", "--json"])).unwrap();
    let f = &status["functions"][0];
    (
        f["version"].as_str().unwrap().to_owned(),
        f["versions_kept"].as_u64().unwrap(),
    )
}

/// Publish one event and return the `tagversion` of its output.
fn tag_of_next(node: &WeirProcess, id: &str, nth: usize) -> String {
    cli(
        node,
        &["publish", "in", "--type", "t", "--id", id, "--subject", "k"],
    );
    let out = cli(
        node,
        &[
            "tail",
            "out",
            "--from",
            "earliest",
            "--limit",
            &nth.to_string(),
        ],
    );
    let last: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(last["id"], id);
    last["tagversion"].as_str().unwrap().to_owned()
}

#[test]
fn deploy_rollback_and_status_over_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("weir.toml");
    std::fs::write(&app, APP).unwrap();
    std::fs::write(
        dir.path().join("customers.json"),
        r#"{"CUST-42": {"name": "Acme GmbH"}}"#,
    )
    .unwrap();
    use_guest(dir.path(), "guest-tag-v1");
    let node = serve(dir.path());
    let (v1, kept) = active_version(&node);
    assert_eq!(kept, 1);
    assert_eq!(tag_of_next(&node, "a", 1), "1");

    // A broken build is refused and v1 keeps serving.
    std::fs::write(dir.path().join("tag.wasm"), b"\0asm broken").unwrap();
    let out = run(&node, &["deploy", "--app", app.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("422"), "{stderr}");
    assert!(
        stderr.contains("not a valid WebAssembly component"),
        "{stderr}"
    );
    assert_eq!(active_version(&node).0, v1);

    use_guest(dir.path(), "guest-tag-v2");
    let out = cli(&node, &["deploy", "--app", app.to_str().unwrap()]);
    let (v2, kept) = active_version(&node);
    assert_eq!(kept, 2);
    assert!(
        out.contains(&format!("function tag: {v1} -> {v2}")),
        "{out}"
    );
    assert_eq!(tag_of_next(&node, "b", 2), "2");
    let json: serde_json::Value = serde_json::from_str(&cli(
        &node,
        &["deploy", "--app", app.to_str().unwrap(), "--json"],
    ))
    .unwrap();
    assert_eq!(json["functions"][0]["reloaded"], false, "{json}");

    let out = cli(&node, &["rollback", "tag"]);
    assert_eq!(out.trim(), format!("function tag: {v2} -> {v1}"));
    assert_eq!(tag_of_next(&node, "c", 3), "1");
    let out = run(&node, &["rollback", "tag", "--to", "123456789abc"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no kept version"),
        "{out:?}"
    );
    cli(&node, &["rollback", "tag", "--to", &v2]);
    let status = cli(&node, &["status"]);
    assert!(
        status.contains(&format!("tag  version {v2}  (2 version(s) kept)")),
        "{status}"
    );
    assert!(node.stop());

    // The manifest's source is what the first start saw: the version deployed over the
    // API stays active across the restart.
    use_guest(dir.path(), "guest-tag-v1");
    let node = serve(dir.path());
    assert_eq!(active_version(&node), (v2, 2));
    assert!(node.stop());
}

#[test]
fn kv_commands_read_and_write_the_nodes_store() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("weir.toml"), APP).unwrap();
    std::fs::write(
        dir.path().join("customers.json"),
        r#"{"CUST-42": {"name": "Acme GmbH"}}"#,
    )
    .unwrap();
    use_guest(dir.path(), "guest-tag-v1");
    let node = serve(dir.path());

    assert_eq!(
        cli(&node, &["kv", "get", "customers", "CUST-42"]),
        r#"{"name":"Acme GmbH"}"#
    );
    cli(&node, &["kv", "put", "customers", "a/b", "hello"]);
    assert_eq!(cli(&node, &["kv", "get", "customers", "a/b"]), "hello");
    let file = dir.path().join("more.json");
    std::fs::write(
        &file,
        r#"{"CUST-1": "one", "CUST-42": {"name": "Acme AG"}}"#,
    )
    .unwrap();
    let out = cli(&node, &["kv", "load", "customers", file.to_str().unwrap()]);
    assert!(out.starts_with("loaded 2 key(s) into customers"), "{out}");
    assert_eq!(
        cli(&node, &["kv", "get", "customers", "CUST-42"]),
        r#"{"name":"Acme AG"}"#
    );
    assert_eq!(
        cli(&node, &["kv", "list", "customers"]),
        "CUST-1\nCUST-42\na/b\n"
    );
    cli(&node, &["kv", "delete", "customers", "a/b"]);
    let listed: serde_json::Value =
        serde_json::from_str(&cli(&node, &["kv", "list", "customers", "--json"])).unwrap();
    assert_eq!(listed["keys"], serde_json::json!(["CUST-1", "CUST-42"]));

    let out = run(&node, &["kv", "get", "suppliers", "x"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("404"), "{stderr}");
    assert!(stderr.contains("declared: [\"customers\"]"), "{stderr}");
    assert!(node.stop());
}
