//! Event contracts end to end: the example app's schemas, as `weir serve` loads them,
//! refuse a sales order without its required fields over HTTP; `weir schema` lists, reads
//! and registers versions; an incompatible version is refused with its breaking change;
//! `weir schema check` checks the example's files offline.

use std::process::Command;

use super::{cli, http_post, post_sample, serve, weir};

#[test]
fn the_example_app_refuses_an_order_without_its_required_fields() {
    let dir = tempfile::tempdir().unwrap();
    let node = serve(dir.path());

    // The example's own order passes.
    let (status, body) = post_sample(&node);
    assert_eq!(status, 202, "{body}");

    // Without its required fields: 422 naming each broken rule by JSON pointer, and the
    // values (the customer here) are not echoed.
    let order = serde_json::json!({
        "specversion": "1.0", "id": "so-bad", "source": "erp://acme/sales",
        "type": "SalesOrderCreated", "data": {"SoldToParty": "CUST-SECRET-9", "NetAmount": "12"}
    });
    let (status, problem) = http_post(
        &format!("{}/v1/topics/erp.sales-orders/events", node.url),
        "application/cloudevents+json",
        serde_json::to_vec(&order).unwrap(),
    );
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["type"], "urn:weir:problem:schema-violation");
    assert_eq!(problem["title"], "Event does not match its schema");
    assert_eq!(problem["index"], 0);
    let errors = problem["errors"].as_array().unwrap();
    let has = |pointer: &str, code: &str| {
        errors
            .iter()
            .any(|e| e["pointer"] == pointer && e["code"] == code)
    };
    assert!(has("", "required"), "{problem}");
    assert!(has("/NetAmount", "type"), "{problem}");
    assert!(
        errors
            .iter()
            .any(|e| e["rule"] == "/properties/NetAmount/type"),
        "{problem}"
    );
    assert!(
        !problem.to_string().contains("CUST-SECRET-9"),
        "the event's values stay out of the problem: {problem}"
    );

    // The registry as the CLI shows it, and a schema as `dataschema` names it.
    let list: serde_json::Value =
        serde_json::from_str(&cli(&node, &["schema", "list", "--json"])).unwrap();
    let types: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["SalesOrderCreated", "crm.order.created"], "{list}");
    assert_eq!(list[1]["compatibility"], "full");
    let v1: serde_json::Value =
        serde_json::from_str(&cli(&node, &["schema", "get", "SalesOrderCreated", "1"])).unwrap();
    assert_eq!(v1["title"], "SalesOrderCreated");

    // A second version that makes a field required breaks backward compatibility.
    let mut v2 = v1.clone();
    v2["required"].as_array_mut().unwrap().push("Items".into());
    let file = dir.path().join("v2.json");
    std::fs::write(&file, v2.to_string()).unwrap();
    let output = Command::new(weir())
        .args(["schema", "put", "SalesOrderCreated", "2"])
        .arg(&file)
        .args(["--url", &node.url])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("breaks its compatibility mode backward") && stderr.contains("Items"),
        "{stderr}"
    );
    // Made optional, it is compatible (the example's model is open, but Items is declared).
    v2["required"].as_array_mut().unwrap().pop();
    v2["description"] = "the same orders, described again".into();
    std::fs::write(&file, v2.to_string()).unwrap();
    let out = cli(
        &node,
        &[
            "schema",
            "put",
            "SalesOrderCreated",
            "2",
            file.to_str().unwrap(),
        ],
    );
    assert!(
        out.contains("registered SalesOrderCreated version 2"),
        "{out}"
    );
    let v: serde_json::Value =
        serde_json::from_str(&cli(&node, &["schema", "get", "SalesOrderCreated"])).unwrap();
    assert_eq!(v["description"], "the same orders, described again");
    assert!(node.stop());
}

#[test]
fn schema_check_reads_the_example_apps_files_offline() {
    let app = weir_test_support::example_dir().join("weir.toml");
    let output = Command::new(weir())
        .args(["schema", "check", "--app"])
        .arg(&app)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("SalesOrderCreated: 1 version ok (backward)")
            && stdout.contains("crm.order.created: 1 version ok (full)"),
        "{stdout}"
    );
}

/// Upcasting end to end: the example app with a second version of SalesOrderCreated and
/// an upcaster from the first; reads return events as written unless they ask
/// (`?upcast=true`), and `weir replay --schemas compare` runs the function on both.
#[test]
fn reads_and_replays_see_old_versions_upcast_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let app = super::example_app(dir.path());
    let v1_path = weir_test_support::example_dir().join("schemas/sales-order-created.v1.json");
    let mut v2: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&v1_path).unwrap()).unwrap();
    v2["properties"]["Channel"] = serde_json::json!({"type": "string"});
    let v2_path = dir.path().join("sales-order-created.v2.json");
    std::fs::write(&v2_path, v2.to_string()).unwrap();
    let manifest = std::fs::read_to_string(&app).unwrap();
    let declared = format!("versions = [{:?}]", v1_path.display().to_string());
    assert!(manifest.contains(&declared), "{manifest}");
    let manifest = manifest.replace(
        &declared,
        &format!(
            "versions = [{:?}, {:?}]\ncompatibility = \"none\"\n[schemas.SalesOrderCreated.upcast.1]\ndefault = {{ Channel = \"erp\" }}",
            v1_path.display().to_string(),
            v2_path.display().to_string()
        ),
    );
    std::fs::write(&app, manifest).unwrap();
    let data = dir.path().join("data");
    let node = weir_test_support::WeirProcess::start(
        weir(),
        &[
            "--app",
            app.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
        ],
    );

    // An order that names version 1.
    let mut order: serde_json::Value = serde_json::from_slice(
        &std::fs::read(weir_test_support::example_dir().join("sales-order-created.json")).unwrap(),
    )
    .unwrap();
    order["dataschema"] = "https://erp.example.com/v1/schemas/SalesOrderCreated/1".into();
    let (status, body) = http_post(
        &format!("{}/v1/topics/erp.sales-orders/events", node.url),
        "application/cloudevents+json",
        serde_json::to_vec(&order).unwrap(),
    );
    assert_eq!(status, 202, "{body}");
    super::wait_caught_up(&node);

    let read = |query: &str| {
        let mut events = Vec::new();
        for partition in 0..4 {
            let page = super::http_get(&format!(
                "{}/v1/topics/erp.sales-orders/events?partition={partition}{query}",
                node.url
            ));
            events.extend(page.as_array().unwrap().iter().cloned());
        }
        assert_eq!(events.len(), 1, "{events:?}");
        events.remove(0)
    };
    let written = read("");
    assert!(written["data"].get("Channel").is_none(), "{written}");
    assert!(written["dataschema"].as_str().unwrap().ends_with("/1"));
    let upcast = read("&upcast=true");
    assert_eq!(upcast["data"]["Channel"], "erp", "{upcast}");
    assert_eq!(
        upcast["dataschema"],
        "https://erp.example.com/v1/schemas/SalesOrderCreated/2"
    );
    assert_eq!(upcast["upcastfrom"], 1);

    // The replay ran the active version twice: on the order as written and upcast.
    let report: serde_json::Value = serde_json::from_str(
        cli(
            &node,
            &["replay", "erp-to-crm", "--schemas", "compare", "--json"],
        )
        .lines()
        .last()
        .unwrap(),
    )
    .unwrap();
    assert_eq!(report["schemas"], "compare", "{report}");
    assert_eq!(report["inputs"], 1, "{report}");
    assert_eq!(report["a"]["version"], report["b"]["version"], "{report}");
    assert_eq!(report["a"]["errors"], 0, "{report}");
    assert_eq!(report["b"]["errors"], 0, "{report}");
    assert!(node.stop());
}
