//! The AsyncAPI document end to end: `weir asyncapi` asks the running example app for
//! it (and follows what changes there), `--app` generates it offline from weir.toml, and
//! both pass the AsyncAPI project's own parser; behind `[auth]` the document needs a
//! credential and names the front door's security schemes.

use std::process::Command;

use weir_test_support::WeirProcess;

use super::{cli, example_app, serve, weir};

fn parse(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Runs `command`, which must succeed, and parses its stdout.
fn json_of(command: &mut Command) -> serde_json::Value {
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    parse(&String::from_utf8(output.stdout).unwrap())
}

fn checked(doc: &serde_json::Value) {
    if let Err(report) = weir_test_support::asyncapi_check(doc) {
        panic!("the AsyncAPI parser refused the document: {report}\n{doc:#}");
    }
}

fn message_keys<'a>(doc: &'a serde_json::Value, channel: &str) -> Vec<&'a str> {
    doc["channels"][channel]["messages"]
        .as_object()
        .unwrap_or_else(|| panic!("no channel {channel}: {doc:#}"))
        .keys()
        .map(String::as_str)
        .collect()
}

#[test]
fn the_example_app_document_comes_from_what_runs_and_parses() {
    let dir = tempfile::tempdir().unwrap();
    let node = serve(dir.path());
    let doc = parse(&cli(&node, &["asyncapi"]));
    checked(&doc);
    assert_eq!(doc["asyncapi"], "3.0.0");
    assert_eq!(doc["info"]["title"], "orders");
    let host = node.url.trim_start_matches("http://");
    assert_eq!(doc["servers"]["weir"]["host"], host);
    // The ERP's topic carries the type its pipeline's filter names, with its schema.
    assert_eq!(
        message_keys(&doc, "erp.sales-orders"),
        ["SalesOrderCreated.v1", "erp.sales-orders.other"]
    );
    let order = &doc["components"]["messages"]["SalesOrderCreated.v1"];
    assert_eq!(order["payload"]["schema"]["title"], "SalesOrderCreated");
    assert_eq!(
        order["x-weir-dataschema"],
        "/v1/schemas/SalesOrderCreated/1"
    );
    for channel in ["crm.orders", "erp-to-crm.dlq", "entity.order"] {
        assert!(doc["channels"].get(channel).is_some(), "{channel}: {doc:#}");
    }
    assert!(
        doc["channels"].get("entity.order.snapshots").is_none()
            && doc["channels"].get("weir.schemas").is_none()
    );
    for operation in [
        "publish:erp.sales-orders",
        "pipeline:erp-to-crm:from:erp.sales-orders",
        "pipeline:erp-to-crm:to:crm.orders",
        "entity:order",
        "view:orders-by-customer:from:crm.orders",
    ] {
        assert!(
            doc["operations"].get(operation).is_some(),
            "{operation}: {doc:#}"
        );
    }
    // The example's output type has its schema in the document too.
    assert!(doc["components"]["messages"]["crm.order.created.v1"].is_object());
    assert!(doc["components"].get("securitySchemes").is_none());

    // A version registered on the running node is in the next document.
    // Version 2 asks for less (no required fields): backward compatible, since it reads
    // every event version 1 accepted.
    let v1 = std::fs::read_to_string(
        weir_test_support::example_dir().join("schemas/sales-order-created.v1.json"),
    )
    .unwrap();
    let mut v2 = parse(&v1);
    v2.as_object_mut().unwrap().remove("required");
    let file = dir.path().join("v2.json");
    std::fs::write(&file, v2.to_string()).unwrap();
    let registered = Command::new(weir())
        .args(["schema", "put", "SalesOrderCreated", "2"])
        .arg(&file)
        .args(["--url", &node.url])
        .output()
        .unwrap();
    assert!(
        registered.status.success(),
        "{}",
        String::from_utf8_lossy(&registered.stderr)
    );
    let doc = parse(&cli(&node, &["asyncapi"]));
    checked(&doc);
    assert_eq!(
        message_keys(&doc, "erp.sales-orders"),
        [
            "SalesOrderCreated.v1",
            "SalesOrderCreated.v2",
            "erp.sales-orders.other"
        ]
    );

    // Offline from weir.toml: the same channels, the host as given.
    let app = example_app(dir.path());
    let offline = json_of(
        Command::new(weir())
            .args(["asyncapi", "--app"])
            .arg(&app)
            .args(["--host", "orders.example.com:7700"]),
    );
    checked(&offline);
    assert_eq!(
        offline["servers"]["weir"]["host"],
        "orders.example.com:7700"
    );
    let keys = |doc: &serde_json::Value| -> Vec<String> {
        doc["channels"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect()
    };
    assert_eq!(keys(&offline), keys(&doc));
}

#[test]
fn behind_auth_the_document_needs_a_credential_and_names_the_schemes() {
    let dir = tempfile::tempdir().unwrap();
    let app = example_app(dir.path());
    let mut manifest = std::fs::read_to_string(&app).unwrap();
    manifest.push_str("\n[auth]\n");
    std::fs::write(&app, manifest).unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let created = json_of(
        Command::new(weir())
            .args(["auth", "key", "create", "--data", data])
            .args(["--principal", "ops", "--role", "admin", "--json"])
            .env_remove("WEIR_TOKEN"),
    );
    let key = created["key"].as_str().unwrap().to_owned();
    let node = WeirProcess::start(weir(), &["--app", app.to_str().unwrap(), "--data", data]);

    let refused = Command::new(weir())
        .args(["asyncapi", "--url", &node.url])
        .env_remove("WEIR_TOKEN")
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("401"), "{stderr}");

    let doc = json_of(Command::new(weir()).args(["asyncapi", "--url", &node.url, "--token", &key]));
    checked(&doc);
    assert_eq!(
        doc["servers"]["weir"]["security"],
        serde_json::json!([{ "$ref": "#/components/securitySchemes/apiKey" }])
    );
    assert_eq!(
        doc["components"]["securitySchemes"]["apiKey"]["scheme"],
        "bearer"
    );
}
