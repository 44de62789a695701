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
