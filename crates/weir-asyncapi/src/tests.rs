use std::path::Path;
use std::sync::Arc;

use serde_json::{Value, json};
use weir_manifest::Manifest;
use weir_schema::{Registry, Schema};

use super::*;

/// An app with one of everything the document describes.
const RICH: &str = r#"
[app]
name = "shop"

[auth]
[auth.jwt]
secret = { env = "SHOP_JWT_SECRET" }

[topics.orders]
partitions = 2
schema = "required"
[topics."crm.orders"]
[topics.telemetry]
[topics."github.events"]
[topics.reports-due]

[schemas."com.example.order.created"]
versions = ["order.v1.json", "order.v2.json"]
[schemas."com.example.telemetry"]
versions = ["telemetry.v1.json"]

[functions.enrich]
source = "enrich.wasm"
[functions.order-entity]
source = "entity.wasm"
[functions.by-customer]
source = "view.wasm"

[pipelines.orders-to-crm]
from = "orders"
function = "enrich"
to = ["crm.orders"]
[pipelines.orders-to-crm.filter]
type = ["com.example.order.created", "com.example.order.*"]

[sources.telemetry]
url = "mqtt://user:secret@broker.example.com:1883?client_id=weir"
subscribe = ["sensors/+/temp", "sensors/+/humidity"]
topic = "telemetry"
type = "com.example.telemetry"

[sinks.crm-hook]
topic = "crm.orders"
url = "https://crm.example.com/hooks/orders?token=x"

[routes.github]
path = "/hooks/{org}/{*rest}"
topic = "github.events"
verify = "github"
secret = { env = "GITHUB_WEBHOOK_SECRET" }
public = true

[schedules.nightly]
cron = "0 2 * * *"
topic = "reports-due"

[entities.order]
function = "order-entity"

[views.by-customer]
function = "by-customer"
entities = ["order"]
sources = ["crm.orders"]
key = "id"
[views.by-customer.columns]
id = "text"
"#;

fn order_v1() -> Value {
    json!({
        "title": "Order created",
        "description": "An order was placed.",
        "type": "object",
        "required": ["id", "lines"],
        "properties": {
            "id": { "type": "string" },
            "lines": { "type": "array", "items": { "$ref": "#/$defs/line" } },
            "note": { "$ref": "#/$defs/text", "maxLength": 200 },
        },
        "$defs": {
            "line": {
                "type": "object",
                "properties": { "sku": { "$ref": "#/$defs/text" }, "qty": { "type": "integer" } },
            },
            "text": { "type": "string" },
        },
    })
}

fn registry() -> Registry {
    let mut registry = Registry::default();
    let mut v2 = order_v1();
    v2["properties"]["channel"] = json!({ "type": "string" });
    let docs = [
        ("com.example.order.created", 1, order_v1()),
        ("com.example.order.created", 2, v2),
        (
            "com.example.telemetry",
            1,
            json!({ "type": "object", "properties": { "celsius": { "type": "number" } } }),
        ),
    ];
    for (ty, version, doc) in docs {
        registry.insert(Arc::new(Schema::compile(ty, version, doc).unwrap()));
    }
    registry
}

fn rich() -> Value {
    let manifest = Manifest::from_toml_str(RICH, Path::new("/app")).unwrap();
    let topics = vec!["made-over-http".to_owned(), "weir.schemas".to_owned()];
    let registry = registry();
    document(&App {
        manifest: Some(&manifest),
        topics: &topics,
        registry: &registry,
        server: &Server {
            host: "weir.example.com:7700".into(),
            tls: true,
        },
        security: Security::of(&manifest),
    })
}

#[test]
fn channels_are_the_topics_sources_sinks_and_webhook_routes() {
    let doc = rich();
    let channels: Vec<&str> = doc["channels"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    // Sorted topics first (no weir.schemas, no snapshots), then what the manifest adds.
    assert_eq!(
        channels,
        [
            "crm-hook.dlq",
            "crm.orders",
            "entity.order",
            "github.events",
            "made-over-http",
            "orders",
            "orders-to-crm.dlq",
            "reports-due",
            "telemetry",
            "telemetry.dlq",
            "source:telemetry:0",
            "source:telemetry:1",
            "sink:crm-hook",
            "route:github",
        ]
    );
    assert_eq!(
        doc["channels"]["source:telemetry:1"]["address"],
        "sensors/+/humidity"
    );
    assert_eq!(doc["channels"]["sink:crm-hook"]["address"], "/hooks/orders");
    let route = &doc["channels"]["route:github"];
    assert_eq!(route["address"], "/hooks/{org}/{rest}");
    assert_eq!(
        route["parameters"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["org", "rest"]
    );
    assert!(
        doc["channels"]["orders"]["description"]
            .as_str()
            .unwrap()
            .contains("must have a registered schema")
    );
}

#[test]
fn servers_carry_no_credentials_and_the_node_carries_the_front_door() {
    let doc = rich();
    let servers = &doc["servers"];
    assert_eq!(servers["weir"]["host"], "weir.example.com:7700");
    assert_eq!(servers["weir"]["protocol"], "https");
    assert_eq!(
        servers["weir"]["security"],
        json!([
            { "$ref": "#/components/securitySchemes/apiKey" },
            { "$ref": "#/components/securitySchemes/jwt" },
        ])
    );
    assert_eq!(
        servers["source:telemetry"]["host"],
        "broker.example.com:1883"
    );
    assert_eq!(servers["source:telemetry"]["protocol"], "mqtt");
    assert_eq!(servers["sink:crm-hook"]["host"], "crm.example.com");
    assert_eq!(servers["sink:crm-hook"]["protocol"], "https");
    let text = doc.to_string();
    assert!(
        !text.contains("secret@") && !text.contains("token=x"),
        "{text}"
    );
    assert_eq!(
        doc["components"]["securitySchemes"]["jwt"]["bearerFormat"],
        "JWT"
    );
}

#[test]
fn messages_are_the_schema_versions_with_their_refs_inlined() {
    let doc = rich();
    let messages = doc["components"]["messages"].as_object().unwrap();
    let v1 = &messages["com.example.order.created.v1"];
    assert_eq!(v1["name"], "com.example.order.created");
    assert_eq!(v1["title"], "Order created");
    assert_eq!(v1["description"], "An order was placed.");
    assert_eq!(
        v1["x-weir-dataschema"],
        "/v1/schemas/com.example.order.created/1"
    );
    assert_eq!(v1["payload"]["schemaFormat"], SCHEMA_FORMAT);
    let schema = &v1["payload"]["schema"];
    assert!(schema.get("$defs").is_none());
    assert_eq!(
        schema["properties"]["lines"]["items"]["properties"]["sku"],
        json!({ "type": "string" })
    );
    assert_eq!(
        schema["properties"]["note"],
        json!({ "allOf": [{ "type": "string" }, { "maxLength": 200 }] })
    );
    assert!(!doc.to_string().contains("#/$defs"));
    assert_eq!(
        v1["headers"]["allOf"][1]["properties"]["ce-type"]["const"],
        "com.example.order.created"
    );
    assert!(messages.contains_key("com.example.order.created.v2"));
    // The orders topic carries both versions (the pipeline's filter names the type) and
    // any other type, which the generic message takes without the known one.
    let orders = doc["channels"]["orders"]["messages"].as_object().unwrap();
    assert_eq!(
        orders.keys().collect::<Vec<_>>(),
        [
            "com.example.order.created.v1",
            "com.example.order.created.v2",
            "orders.other"
        ]
    );
    assert_eq!(
        messages["orders.other"]["headers"]["allOf"][1]["properties"]["ce-type"]["not"]["enum"],
        json!(["com.example.order.created"])
    );
    // A type nothing registered a schema for: a message without a payload schema.
    let ticks = doc["channels"]["reports-due"]["messages"]
        .as_object()
        .unwrap();
    assert!(ticks.contains_key("dev.weir.schedule.tick"), "{ticks:?}");
    // A topic nothing declares types for: the generic message only.
    assert_eq!(
        doc["channels"]["crm.orders"]["messages"],
        json!({ "CloudEvent": { "$ref": "#/components/messages/CloudEvent" } })
    );
    // The source's channels carry what its topic carries.
    assert_eq!(
        doc["channels"]["source:telemetry:0"]["messages"],
        doc["channels"]["telemetry"]["messages"]
    );
}

#[test]
fn operations_say_what_the_app_sends_and_receives() {
    let doc = rich();
    let operations = doc["operations"].as_object().unwrap();
    let action = |key: &str| {
        let op = operations
            .get(key)
            .unwrap_or_else(|| panic!("no operation {key}"));
        (
            op["action"].as_str().unwrap().to_owned(),
            op["channel"]["$ref"].as_str().unwrap().to_owned(),
        )
    };
    for (key, expected, channel) in [
        ("publish:orders", "receive", "#/channels/orders"),
        ("subscribe:orders", "send", "#/channels/orders"),
        (
            "pipeline:orders-to-crm:from:orders",
            "receive",
            "#/channels/orders",
        ),
        (
            "pipeline:orders-to-crm:to:crm.orders",
            "send",
            "#/channels/crm.orders",
        ),
        (
            "pipeline:orders-to-crm:dead-letter",
            "send",
            "#/channels/orders-to-crm.dlq",
        ),
        (
            "source:telemetry:1",
            "receive",
            "#/channels/source:telemetry:1",
        ),
        ("source:telemetry:to", "send", "#/channels/telemetry"),
        ("sink:crm-hook:from", "receive", "#/channels/crm.orders"),
        ("sink:crm-hook", "send", "#/channels/sink:crm-hook"),
        ("route:github", "receive", "#/channels/route:github"),
        ("route:github:to", "send", "#/channels/github.events"),
        ("schedule:nightly", "send", "#/channels/reports-due"),
        ("entity:order", "send", "#/channels/entity.order"),
        (
            "view:by-customer:from:crm.orders",
            "receive",
            "#/channels/crm.orders",
        ),
        (
            "view:by-customer:from:entity.order",
            "receive",
            "#/channels/entity.order",
        ),
    ] {
        assert_eq!(
            action(key),
            (expected.to_owned(), channel.to_owned()),
            "{key}"
        );
    }
    // Every operation's channel is in the document.
    for op in operations.values() {
        let target = op["channel"]["$ref"].as_str().unwrap();
        let key = target.strip_prefix("#/channels/").unwrap();
        assert!(doc["channels"].get(key).is_some(), "{target}");
    }
}

#[test]
fn an_open_node_without_a_manifest_lists_its_topics() {
    let topics = vec!["a".to_owned(), "weir.schemas".to_owned()];
    let doc = document(&App {
        manifest: None,
        topics: &topics,
        registry: &Registry::default(),
        server: &Server {
            host: "127.0.0.1:7700".into(),
            tls: false,
        },
        security: None,
    });
    assert_eq!(doc["asyncapi"], "3.0.0");
    assert_eq!(doc["info"]["title"], "app");
    assert_eq!(doc["servers"]["weir"]["protocol"], "http");
    assert!(doc["servers"]["weir"].get("security").is_none());
    assert!(doc["components"].get("securitySchemes").is_none());
    assert_eq!(
        doc["channels"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["a"]
    );
}

#[test]
fn recursive_and_dangling_refs_become_open_schemas() {
    let tree = json!({
        "type": "object",
        "properties": {
            "children": { "type": "array", "items": { "$ref": "#" } },
            "other": { "$ref": "#/$defs/missing" },
        },
    });
    let inlined = inline_refs(&tree);
    assert_eq!(
        inlined["properties"]["children"]["items"]["properties"]["children"]["items"],
        json!({})
    );
    assert_eq!(inlined["properties"]["other"], json!({}));
    // Definitions that refer to each other many times over stop at the budget instead of
    // growing exponentially.
    let mut defs = serde_json::Map::new();
    for i in 0..40 {
        defs.insert(
            format!("d{i}"),
            json!({ "anyOf": [{ "$ref": format!("#/$defs/d{}", i + 1) }, { "$ref": format!("#/$defs/d{}", i + 1) }] }),
        );
    }
    defs.insert("d40".into(), json!({ "type": "string" }));
    let bomb = json!({ "$ref": "#/$defs/d0", "$defs": defs });
    let inlined = inline_refs(&bomb);
    assert!(inlined.to_string().len() < 20 * INLINE_BUDGET);
}

#[test]
fn the_asyncapi_parser_finds_no_error_or_warning() {
    match weir_test_support::asyncapi_check(&rich()) {
        Ok(report) => eprintln!("{report}"),
        Err(report) => panic!("{report}"),
    }
}

#[test]
fn the_parser_refuses_a_broken_document() {
    // The check can fail: an operation on a channel the document does not have, and a
    // payload reaching outside the document.
    let mut doc = rich();
    doc["operations"]["publish:orders"]["channel"] = json!({ "$ref": "#/channels/nowhere" });
    let report = weir_test_support::asyncapi_check(&doc).unwrap_err();
    assert!(report.contains("\"severity\":0"), "{report}");
    let mut doc = rich();
    doc["components"]["messages"]["CloudEvent"]["payload"] =
        json!({ "$ref": "https://example.com/schema.json" });
    let report = weir_test_support::asyncapi_check(&doc).unwrap_err();
    assert!(report.contains("example.com"), "{report}");
}
