//! Event contracts: events checked against their type's schema at publish, a pipeline's
//! outputs before they are committed, and the registry kept in the log across restarts.

use std::path::Path;

use serde_json::json;
use weir_cloudevents::{CloudEvent, ExtensionValue};
use weir_manifest::Manifest;

use super::{Backend, collect, order};
use crate::{Error, Node, SchemaRejection};

/// The example's function from `in` to `crm.orders`, `in` requiring schemas, with the
/// example's input schema and an output schema that caps `amount` at 100.
fn contract_app(dir: &Path) -> Manifest {
    let output = json!({
        "type": "object",
        "properties": {"amount": {"type": "number", "maximum": 100}},
        "required": ["orderId", "amount"]
    });
    std::fs::write(dir.join("crm.json"), output.to_string()).unwrap();
    let text = format!(
        r#"
[topics.in]
partitions = 2
schema = "required"
[topics."crm.orders"]
[topics.loose]
[functions.enrich-order]
source = "{}"
config = {{ currency = "EUR", "rate.USD" = "0.5" }}
capabilities = {{ keyvalue = ["customers"] }}
[keyvalue.customers]
[pipelines.p]
from = "in"
function = "enrich-order"
to = ["crm.orders"]
[schemas.SalesOrderCreated]
versions = ["{}"]
[schemas."crm.order.created"]
versions = ["crm.json"]
"#,
        weir_test_support::example_function().display(),
        weir_test_support::example_dir()
            .join("schemas/sales-order-created.v1.json")
            .display()
    );
    Manifest::from_toml_str(&text, dir).unwrap()
}

fn rejection(result: crate::Result<Vec<weir_log::RecordPosition>>) -> (usize, SchemaRejection) {
    match result {
        Err(Error::SchemaRejected { index, reason, .. }) => (index, reason),
        other => panic!("not refused by the schema: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_held_to_their_schema_at_publish_and_outputs_before_their_commit() {
    let dir = tempfile::tempdir().unwrap();
    let node =
        Node::start(super::options(&dir.path().join("data"), Some(contract_app(dir.path()))).await)
            .await
            .unwrap();

    // A small order passes; its output (amount 50 * 0.5) is within the output schema.
    let mut small = order(1);
    small.data = Some(
        json!({"SalesOrderNumber": "SO-1", "SoldToParty": "CUST-1", "NetAmount": 50,
            "TransactionCurrency": "USD", "CreationDate": "2026-11-22"})
        .into(),
    );
    node.publish("in", std::slice::from_ref(&small))
        .await
        .unwrap();

    // Without its required fields, refused with each broken rule, and nothing of the
    // batch is stored.
    let mut broken = order(2);
    broken.data = Some(json!({"SalesOrderNumber": "", "NetAmount": -1}).into());
    let (index, reason) = rejection(node.publish("in", &[small.clone(), broken.clone()]).await);
    assert_eq!(index, 1);
    let SchemaRejection::Violations {
        version,
        violations,
    } = &reason
    else {
        panic!("{reason}")
    };
    assert_eq!(*version, 1);
    let at: Vec<(&str, &str)> = violations
        .iter()
        .map(|v| (v.pointer.as_str(), v.keyword.as_str()))
        .collect();
    for expected in [
        ("", "required"),
        ("/SalesOrderNumber", "minLength"),
        ("/NetAmount", "minimum"),
    ] {
        assert!(at.contains(&expected), "{expected:?} not in {at:?}");
    }
    let err = node.publish("in", &[broken]).await.unwrap_err();
    assert_eq!(err.code(), "schema-violation");
    assert_eq!(err.class(), crate::ErrorClass::Rejected);

    // A type with no schema: refused by a topic that requires one, let through by another.
    let stranger = CloudEvent::new("x-1", "test://s", "com.example.unknown");
    let (_, reason) = rejection(node.publish("in", std::slice::from_ref(&stranger)).await);
    assert!(
        matches!(reason, SchemaRejection::Required { .. }),
        "{reason}"
    );
    assert!(
        reason.to_string().contains("schema = \"required\""),
        "{reason}"
    );
    node.publish("loose", &[stranger]).await.unwrap();

    // A dataschema naming an unregistered version, or another type's schema.
    let mut named = small.clone();
    named.dataschema = Some("http://weir.example/v1/schemas/SalesOrderCreated/2".into());
    let (_, reason) = rejection(node.publish("in", std::slice::from_ref(&named)).await);
    assert!(
        matches!(
            reason,
            SchemaRejection::UnknownVersion {
                version: 2,
                latest: Some(1)
            }
        ),
        "{reason}"
    );
    named.dataschema = Some("http://weir.example/v1/schemas/crm.order.created/1".into());
    let (_, reason) = rejection(node.publish("in", &[named]).await);
    assert!(
        matches!(reason, SchemaRejection::OtherType { .. }),
        "{reason}"
    );

    // A large order's output (1250 * 0.5 = 625) breaks the output schema: the input is
    // dead-lettered with the reason, and the small order's output is committed.
    let large = order(3);
    node.publish("in", &[large]).await.unwrap();
    let out = collect(&node, "crm.orders", 1).await;
    assert_eq!(out[0].subject.as_deref(), small.subject.as_deref());
    let dead = collect(&node, "p.dlq", 1).await;
    assert_eq!(dead[0].id, "so-3");
    let ext = |name: &str| match dead[0].extensions.get(name) {
        Some(ExtensionValue::String(s)) => s.clone(),
        other => panic!("{name}: {other:?}"),
    };
    assert_eq!(ext("dlqreason"), "invalid_output");
    let error = ext("dlqerror");
    assert!(
        error.contains("\"crm.order.created\" to \"crm.orders\"") && error.contains("/amount"),
        "{error}"
    );
    node.shutdown().await;
}

on_every_backend!(
    registered_schemas_outlive_the_node_and_break_no_contract => registered_schemas_outlive_the_node,
);

/// How many versions of `t.created` the node holds.
fn versions(node: &Node) -> usize {
    node.schemas()
        .subject("t.created")
        .map_or(0, |s| s.versions().len())
}

async fn registered_schemas_outlive_the_node(backend: &Backend) {
    let dir = tempfile::tempdir().unwrap();
    let plain = Manifest::from_toml_str("[topics.t]\n", dir.path()).unwrap();
    let start = async |manifest: Manifest| {
        Node::start(
            backend
                .options(&dir.path().join("data"), Some(manifest))
                .await,
        )
        .await
        .unwrap()
    };
    let node = start(plain.clone()).await;
    let v1 =
        json!({"type": "object", "properties": {"id": {"type": "string"}}, "required": ["id"]});
    assert!(
        node.register_schema("t.created", 1, v1.clone())
            .await
            .unwrap()
    );
    assert!(
        !node
            .register_schema("t.created", 1, v1.clone())
            .await
            .unwrap(),
        "the same again is a no-op"
    );
    // Backward (the default): a new required property would refuse version 1's events.
    let mut v2 = v1.clone();
    v2["required"] = json!(["id", "region"]);
    let err = node.register_schema("t.created", 2, v2).await.unwrap_err();
    assert_eq!(err.code(), "incompatible-schema", "{err}");
    assert!(err.to_string().contains("region"), "{err}");
    let err = node
        .register_schema("t.created", 3, v1.clone())
        .await
        .unwrap_err();
    assert_eq!(err.code(), "schema-version-gap", "{err}");
    // The store is weir's own: no one publishes into it or changes its settings.
    let forged = CloudEvent::new("f-1", "test://s", "t.created");
    let err = node
        .publish(weir_schema::STORE_TOPIC, &[forged])
        .await
        .unwrap_err();
    assert_eq!(err.code(), "reserved-topic", "{err}");
    let err = node
        .put_topic(weir_schema::STORE_TOPIC, Default::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), "reserved-topic", "{err}");
    node.shutdown().await;
    drop(node);

    // Read back from the log by the next node: events are held to version 1.
    let node = start(plain).await;
    assert_eq!(versions(&node), 1);
    let event = CloudEvent::new("e-1", "test://s", "t.created");
    let err = node.publish("t", &[event]).await.unwrap_err();
    assert_eq!(err.code(), "schema-violation", "{err}");

    // A deploy whose weir.toml declares a breaking version is refused before anything
    // changes; a compatible one (an optional property, mode none) goes through.
    std::fs::write(dir.path().join("v1.json"), v1.to_string()).unwrap();
    let breaking =
        json!({"type": "object", "properties": {"id": {"type": "integer"}}, "required": ["id"]});
    std::fs::write(dir.path().join("v2.json"), breaking.to_string()).unwrap();
    let app = |mode: &str| {
        format!(
            "[topics.t]\n[topics.u]\n[schemas.\"t.created\"]\nversions = [{:?}, {:?}]\ncompatibility = \"{mode}\"\n",
            dir.path().join("v1.json").display(),
            dir.path().join("v2.json").display()
        )
    };
    let err = node
        .deploy_app(&app("backward"), Default::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), "incompatible-schema", "{err}");
    assert!(
        node.topic_info("u").await.is_err(),
        "nothing of the deploy applied"
    );
    assert_eq!(versions(&node), 1);
    node.deploy_app(&app("none"), Default::default())
        .await
        .unwrap();
    let subject = node.schemas().subject("t.created").cloned().unwrap();
    assert_eq!(subject.versions().len(), 2);
    assert_eq!(subject.compatibility, weir_schema::Compatibility::None);
    let mut event = CloudEvent::new("e-2", "test://s", "t.created");
    event.data = Some(json!({"id": 7}).into());
    node.publish("t", std::slice::from_ref(&event))
        .await
        .unwrap();
    // Version 1 still reads events that name it.
    event.dataschema = Some("https://any.host/v1/schemas/t.created/1".into());
    let err = node.publish("t", &[event]).await.unwrap_err();
    assert_eq!(err.code(), "schema-violation", "{err}");
    node.shutdown().await;
}

/// A source's events and an entity's are held to their type's schema too: a broker
/// message whose event breaks it is dead-lettered with why (the rest flow on), and a
/// command whose event breaks it is refused with the violation and appends nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sources_and_an_entitys_events_are_held_to_their_schemas() {
    use weir_test_support::mqtt;

    let dir = tempfile::tempdir().unwrap();
    let placed = json!({
        "type": "object",
        "properties": {
            "customer": {"type": "string", "minLength": 1},
            "amount": {"type": "number"},
            "currency": {"type": "string", "pattern": "^[A-Z]{3}$"}
        },
        "required": ["customer", "amount", "currency"]
    });
    std::fs::write(dir.path().join("placed.json"), placed.to_string()).unwrap();
    let reading = json!({"type": "object", "properties": {"n": {"type": "integer", "minimum": 0}}});
    std::fs::write(dir.path().join("reading.json"), reading.to_string()).unwrap();
    let base = mqtt::unique("weir-test-contracts");
    let text = format!(
        r#"
[topics.telemetry]
[sources.sensors]
url = "{url}"
subscribe = "{base}/+/temp"
topic = "telemetry"
type = "com.example.temp"
[functions.order-entity]
source = "{entity}"
[entities.order]
function = "order-entity"
partitions = 1
[schemas.OrderPlaced]
versions = ["placed.json"]
[schemas."com.example.temp"]
versions = ["reading.json"]
"#,
        url = mqtt::mosquitto(),
        entity = weir_test_support::example_entity().display(),
    );
    let manifest = Manifest::from_toml_str(&text, dir.path()).unwrap();
    let node = Node::start(super::options(&dir.path().join("data"), Some(manifest)).await)
        .await
        .unwrap();

    // An entity's event that breaks its schema: the command is refused, nothing appended.
    let place = |currency: &str| {
        json!({"customer": "CUST-1", "amount": 10.0, "currency": currency})
            .to_string()
            .into_bytes()
    };
    let refused = node
        .entity_command("order", "o-1", "place", place("euro"), None)
        .await;
    let Err(Error::SchemaRejected {
        topic,
        index,
        ty,
        reason: SchemaRejection::Violations { violations, .. },
    }) = refused
    else {
        panic!("not refused by the schema: {refused:?}");
    };
    assert_eq!(
        (topic.as_str(), index, ty.as_str()),
        ("entity.order", 0, "OrderPlaced")
    );
    assert_eq!(violations[0].pointer, "/currency");
    assert_eq!(violations[0].keyword, "pattern");
    let placed = node
        .entity_command("order", "o-1", "place", place("EUR"), None)
        .await
        .unwrap();
    assert_eq!(placed.version, 1, "the refused command appended nothing");

    // A source: its subscription is in place once a probe ({} passes) is appended.
    let mut subscribed = false;
    for _ in 0..100 {
        mqtt::publish(
            &mqtt::unique("probe"),
            &format!("{base}/ready/temp"),
            &[b"{}".to_vec()],
        )
        .await;
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        if node
            .status()
            .await
            .unwrap()
            .sources
            .iter()
            .any(|s| s.appended > 0)
        {
            subscribed = true;
            break;
        }
    }
    assert!(subscribed, "the source never appended a probe");
    let payloads: Vec<Vec<u8>> = [r#"{"n":1}"#, r#"{"n":-1}"#, r#"{"n":2}"#]
        .iter()
        .map(|p| p.as_bytes().to_vec())
        .collect();
    mqtt::publish(&mqtt::unique("p"), &format!("{base}/dev-1/temp"), &payloads).await;
    let dead = collect(&node, "sensors.dlq", 1).await;
    assert_eq!(dead[0].data_bytes().unwrap(), r#"{"n":-1}"#);
    assert_eq!(
        dead[0].extensions.get("dlqreason"),
        Some(&ExtensionValue::String("schema-violation".into()))
    );
    let Some(ExtensionValue::String(error)) = dead[0].extensions.get("dlqerror") else {
        panic!("no dlqerror: {:?}", dead[0].extensions);
    };
    assert!(error.contains("/n") && error.contains("minimum"), "{error}");
    // The messages around it were appended, in order.
    assert_eq!(loop_until_readings(&node).await, [1, 2]);
    node.shutdown().await;
}

/// The readings (`n`) appended to `telemetry`, once both valid ones are there.
async fn loop_until_readings(node: &Node) -> Vec<i64> {
    for _ in 0..150 {
        let events = node.read("telemetry", 0, 0, 1000).await.unwrap();
        let readings: Vec<i64> = events
            .iter()
            .filter_map(|e| {
                let data: serde_json::Value =
                    serde_json::from_slice(&e.event.data_bytes()?).ok()?;
                data["n"].as_i64()
            })
            .collect();
        if readings.len() >= 2 {
            return readings;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    panic!("the valid readings were not appended");
}

/// `crm.order.created` in two versions: version 1 named the customer `client` and had a
/// `legacy` flag; version 2 names it `customerId` (as the example's projection reads
/// it) and requires a `channel`. The upcaster from 1 renames, removes and defaults.
fn upcast_app(dir: &Path) -> Manifest {
    let v1 = json!({
        "type": "object",
        "properties": {"orderId": {"type": "string"}, "client": {"type": "string"}},
        "required": ["orderId"]
    });
    let v2 = json!({
        "type": "object",
        "properties": {
            "orderId": {"type": "string"}, "customerId": {"type": "string"},
            "channel": {"type": "string"}, "client": false, "legacy": false
        },
        "required": ["orderId", "customerId", "channel"]
    });
    std::fs::write(dir.join("v1.json"), v1.to_string()).unwrap();
    std::fs::write(dir.join("v2.json"), v2.to_string()).unwrap();
    let text = format!(
        r#"
[topics."crm.orders"]
[topics.out]
[functions.echo]
source = "{echo}"
[functions.orders-by-customer]
source = "{projection}"
[pipelines.p]
from = "crm.orders"
function = "echo"
to = ["out"]
[views.orders-by-customer]
function = "orders-by-customer"
sources = ["crm.orders"]
key = "order_id"
[views.orders-by-customer.columns]
order_id = "text"
customer = "text"
amount = "real"
currency = "text"
status = "text"
[schemas."crm.order.created"]
versions = ["v1.json", "v2.json"]
compatibility = "none"
[schemas."crm.order.created".upcast.1]
remove = ["legacy"]
rename = {{ client = "customerId" }}
default = {{ channel = "erp" }}
"#,
        echo = weir_test_support::test_guest("guest-echo").display(),
        projection = weir_test_support::example_projection().display(),
    );
    Manifest::from_toml_str(&text, dir).unwrap()
}

fn crm_order(id: &str, dataschema: Option<&str>, data: serde_json::Value) -> CloudEvent {
    let mut event = CloudEvent::new(id, "crm://test", "crm.order.created");
    event.dataschema = dataschema.map(str::to_owned);
    event.data = Some(data.into());
    event
}

/// An upcaster is seen by a pipeline's function, a view's projection and a replay, while
/// the log keeps the bytes as written; an event it cannot bring to the latest version is
/// dead-lettered as written, not handed on wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upcaster_is_seen_by_a_pipeline_a_view_and_replay() {
    let dir = tempfile::tempdir().unwrap();
    let node =
        Node::start(super::options(&dir.path().join("data"), Some(upcast_app(dir.path()))).await)
            .await
            .unwrap();
    let v1 = "https://old.example.com/v1/schemas/crm.order.created/1";
    node.publish(
        "crm.orders",
        &[
            crm_order(
                "o-1",
                Some(v1),
                json!({"orderId": "o-1", "client": "CUST-7", "amount": 5.0, "currency": "EUR", "legacy": true}),
            ),
            // The latest version, as written: handed on unchanged.
            crm_order(
                "o-2",
                None,
                json!({"orderId": "o-2", "customerId": "CUST-8", "amount": 6.0, "currency": "EUR", "channel": "web"}),
            ),
        ],
    )
    .await
    .unwrap();

    // The pipeline's function (an echo) saw version 2.
    let out = collect(&node, "out", 2).await;
    let data = |e: &CloudEvent| -> serde_json::Value {
        serde_json::from_slice(&e.data_bytes().unwrap()).unwrap()
    };
    let first = out.iter().find(|e| data(e)["orderId"] == "o-1").unwrap();
    assert_eq!(
        data(first),
        json!({"orderId": "o-1", "amount": 5.0, "currency": "EUR", "customerId": "CUST-7", "channel": "erp"})
    );
    assert_eq!(
        first.dataschema.as_deref(),
        Some("https://old.example.com/v1/schemas/crm.order.created/2")
    );
    assert_eq!(
        first.extensions.get(crate::UPCAST_FROM),
        Some(&ExtensionValue::Integer(1))
    );
    let second = out.iter().find(|e| data(e)["orderId"] == "o-2").unwrap();
    assert_eq!(data(second)["channel"], "web");
    assert!(!second.extensions.contains_key(crate::UPCAST_FROM));

    // The log keeps the bytes as written.
    let stored = node.read("crm.orders", 0, 0, 10).await.unwrap();
    assert_eq!(data(&stored[0].event)["client"], "CUST-7");
    assert_eq!(stored[0].event.dataschema.as_deref(), Some(v1));

    // The view's projection read `customerId`, which only the upcast event has.
    let mut rows = Vec::new();
    for _ in 0..150 {
        rows = node
            .view_query("orders-by-customer", crate::ViewRequest::default())
            .await
            .unwrap()
            .rows;
        if rows.len() >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let row = rows
        .iter()
        .find(|r| r["order_id"] == "o-1")
        .expect("o-1 projected");
    assert_eq!(row["customer"], "CUST-7");

    // A version 1 event without a client cannot become a valid version 2: the pipeline
    // dead-letters it as written, saying why.
    node.publish(
        "crm.orders",
        &[crm_order("o-3", Some(v1), json!({"orderId": "o-3"}))],
    )
    .await
    .unwrap();
    let dead = collect(&node, "p.dlq", 1).await;
    assert_eq!(dead[0].id, "o-3");
    assert_eq!(dead[0].dataschema.as_deref(), Some(v1));
    assert_eq!(
        dead[0].extensions.get("dlqreason"),
        Some(&ExtensionValue::String("upcast_failed".into()))
    );

    // Replay: by default as the pipeline sees the events; `compare` runs the function on
    // them as written (A) and upcast (B).
    let report = |schemas| {
        let node = node.clone();
        async move {
            node.replay(crate::ReplayRequest {
                pipeline: "p".into(),
                examples: 10,
                schemas,
                ..crate::ReplayRequest::default()
            })
            .await
            .unwrap()
            .run()
            .await
            .unwrap()
        }
    };
    let upcast = report(crate::ReplaySchemas::Upcast).await;
    assert_eq!(
        (upcast.inputs, upcast.a.outputs, upcast.a.errors),
        (3, 2, 1)
    );
    let written = report(crate::ReplaySchemas::AsWritten).await;
    assert_eq!((written.a.outputs, written.a.errors), (3, 0));
    let compared = report(crate::ReplaySchemas::Compare).await;
    let diff = compared.diff.expect("a diff of as written and upcast");
    assert_eq!(
        (diff.unchanged, diff.changed, diff.errors_only_b),
        (1, 1, 1),
        "{compared:?}"
    );
    assert_eq!(compared.a.version, compared.b.as_ref().unwrap().version);
    node.shutdown().await;
}

/// An app whose `shop.order.placed` goes from version 1 to 2 through a function (a
/// computed field) and from 2 to 3 through a mapping, and whose `shop.spin` goes from 1
/// to 2 through a function that spins to its deadline.
fn function_upcast_app(dir: &Path) -> Manifest {
    let versions = [
        json!({"type": "object", "properties": {"total": {"type": "string"}}}),
        json!({"type": "object", "required": ["total_cents"],
            "properties": {"total_cents": {"type": "integer"}, "total": false}}),
        json!({"type": "object", "required": ["total_cents", "channel"],
            "properties": {"total_cents": {"type": "integer"}, "channel": {"type": "string"}}}),
    ];
    for (n, document) in (1..).zip(&versions) {
        std::fs::write(dir.join(format!("placed.v{n}.json")), document.to_string()).unwrap();
    }
    std::fs::write(dir.join("any.json"), json!({"type": "object"}).to_string()).unwrap();
    let text = format!(
        r#"
[topics.shop]
[topics.out]
[functions.echo]
source = "{echo}"
[functions.cents]
source = "{cents}"
[functions.spin]
source = "{spin}"
limits = {{ deadline_ms = 100 }}
[functions.flaky]
source = "{flaky}"
capabilities = {{ keyvalue = ["attempts"] }}
limits = {{ deadline_ms = 20000 }}
[keyvalue.attempts]
[pipelines.p]
from = "shop"
function = "echo"
to = ["out"]
[pipelines.p.retry]
max_attempts = 3
initial_backoff_ms = 50
jitter = 0.0
[schemas."shop.order.placed"]
versions = ["placed.v1.json", "placed.v2.json", "placed.v3.json"]
compatibility = "none"
[schemas."shop.order.placed".upcast.1]
function = "cents"
[schemas."shop.order.placed".upcast.2]
default = {{ channel = "web" }}
[schemas."shop.spin"]
versions = ["any.json", "any.json"]
[schemas."shop.spin".upcast.1]
function = "spin"
[schemas."shop.flaky"]
versions = ["any.json", "any.json"]
[schemas."shop.flaky".upcast.1]
function = "flaky"
"#,
        echo = weir_test_support::test_guest("guest-echo").display(),
        cents = weir_test_support::test_guest("guest-upcast-cents").display(),
        spin = weir_test_support::test_guest("guest-infinite-loop").display(),
        flaky = weir_test_support::test_guest("guest-flaky").display(),
    );
    Manifest::from_toml_str(&text, dir).unwrap()
}

/// An upcaster step can be a function: it gets the old event, its result goes on through
/// the next (declarative) step and is checked against the version reached. A function
/// that fails, or spins to its deadline, dead-letters the event as written; the events
/// after it flow on. A function of another world is refused at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upcaster_function_computes_a_field_and_a_failing_one_dead_letters() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let node = Node::start(super::options(&data, Some(function_upcast_app(dir.path()))).await)
        .await
        .unwrap();
    let placed = |id: &str, version: u32, data: serde_json::Value| {
        let mut event = CloudEvent::new(id, "shop://test", "shop.order.placed");
        event.dataschema = Some(format!(
            "https://shop.example/v1/schemas/shop.order.placed/{version}"
        ));
        event.data = Some(data.into());
        event
    };
    // An upcaster that fails twice, retryably, then passes: the pipeline retries it.
    let mut flaky = CloudEvent::new("f-1", "shop://test", "shop.flaky");
    flaky.dataschema = Some("https://shop.example/v1/schemas/shop.flaky/1".into());
    flaky.data = Some(json!({"n": 1}).into());
    flaky
        .extensions
        .insert("failtimes".into(), ExtensionValue::Integer(2));
    let mut spin = CloudEvent::new("s-1", "shop://test", "shop.spin");
    spin.dataschema = Some("https://shop.example/v1/schemas/shop.spin/1".into());
    spin.data = Some(json!({}).into());
    node.publish(
        "shop",
        &[
            placed("o-1", 1, json!({"total": "12.50"})),
            placed("o-2", 1, json!({"amount": 3})),
            spin,
            placed("o-3", 2, json!({"total_cents": 700})),
            flaky,
        ],
    )
    .await
    .unwrap();

    let out = collect(&node, "out", 3).await;
    let data_of = |e: &CloudEvent| -> serde_json::Value {
        serde_json::from_slice(&e.data_bytes().unwrap()).unwrap()
    };
    assert_eq!(out[0].id, "o-1");
    assert_eq!(
        data_of(&out[0]),
        json!({"total_cents": 1250, "channel": "web"})
    );
    assert_eq!(
        out[0].dataschema.as_deref(),
        Some("https://shop.example/v1/schemas/shop.order.placed/3")
    );
    assert_eq!(
        out[0].extensions.get(crate::UPCAST_FROM),
        Some(&ExtensionValue::Integer(1))
    );
    // Version 2 takes only the mapping.
    assert_eq!(out[1].id, "o-3");
    assert_eq!(
        data_of(&out[1]),
        json!({"total_cents": 700, "channel": "web"})
    );
    assert_eq!(out[2].id, "f-1");
    assert_eq!(
        out[2].extensions.get(crate::UPCAST_FROM),
        Some(&ExtensionValue::Integer(1))
    );
    let retried = node.status().await.unwrap().pipelines[0].retries;
    assert_eq!(
        retried, 2,
        "the upcaster's two retryable failures were retried"
    );

    let dead = collect(&node, "p.dlq", 2).await;
    let reason = |e: &CloudEvent, name: &str| match e.extensions.get(name) {
        Some(ExtensionValue::String(s)) => s.clone(),
        other => panic!("{name}: {other:?}"),
    };
    assert_eq!(dead[0].id, "o-2");
    assert_eq!(reason(&dead[0], "dlqreason"), "upcast_failed");
    assert!(
        reason(&dead[0], "dlqerror").contains("no decimal total"),
        "{:?}",
        dead[0].extensions
    );
    // As written.
    assert_eq!(data_of(&dead[0]), json!({"amount": 3}));
    assert_eq!(dead[1].id, "s-1");
    assert_eq!(reason(&dead[1], "dlqreason"), "upcast_failed");
    assert!(
        reason(&dead[1], "dlqerror").contains("upcaster function \"spin\" failed"),
        "{:?}",
        dead[1].extensions
    );

    // A read that asks for upcast events runs the function too (off the runtime).
    let upcasting = node.upcasting().expect("the app has upcasters");
    let stored = node.read("shop", 0, 0, 1).await.unwrap();
    let upcast = tokio::task::spawn_blocking(move || upcasting.upcast(&stored[0].event))
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(data_of(&upcast)["total_cents"], 1250);
    node.shutdown().await;

    // An upcaster must be a handler: a projection is refused at start.
    let mut manifest = function_upcast_app(dir.path());
    manifest.functions.get_mut("cents").unwrap().source = weir_test_support::example_projection();
    let Err(error) =
        Node::start(super::options(&dir.path().join("data2"), Some(manifest)).await).await
    else {
        panic!("a projection as upcaster is refused");
    };
    assert!(
        matches!(error, Error::WrongWorld { .. }) && error.to_string().contains("upcaster"),
        "{error}"
    );
}
