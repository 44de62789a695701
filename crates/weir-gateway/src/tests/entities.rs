//! The entity routes over HTTP with the example's order entity.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use tower::ServiceExt;
use weir_engine::{Node, NodeOptions};

use crate::{GatewayOptions, router};

struct App {
    _dir: tempfile::TempDir,
    node: Arc<Node>,
}

async fn app() -> App {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[functions.order-entity]\nsource = \"{}\"\n[entities.order]\nfunction = \"order-entity\"\n",
        weir_test_support::example_entity().display()
    );
    let manifest = weir_manifest::Manifest::from_toml_str(&text, dir.path()).unwrap();
    let log = weir_log_embedded::open_shared(&dir.path().join("data"), Default::default())
        .await
        .unwrap();
    let node = Node::start(NodeOptions::new(
        dir.path().join("data"),
        Some(manifest),
        log,
    ))
    .await
    .unwrap();
    App { _dir: dir, node }
}

async fn send(
    app: &App,
    req: Request<Body>,
) -> (StatusCode, axum::http::HeaderMap, serde_json::Value) {
    let res = router(app.node.clone(), GatewayOptions::default())
        .oneshot(req)
        .await
        .unwrap();
    let (parts, body) = res.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    (parts.status, parts.headers, json)
}

fn command(id: &str, name: &str, body: &str, if_match: Option<&str>) -> Request<Body> {
    let mut req = Request::post(format!("/v1/entities/order/{id}/commands/{name}"))
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(v) = if_match {
        req = req.header(header::IF_MATCH, v);
    }
    req.body(Body::from(body.to_owned())).unwrap()
}

fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).unwrap()
}

#[tokio::test]
async fn commands_state_journal_and_time_travel_over_http() {
    let app = app().await;
    let place = r#"{"customer":"CUST-7","amount":12.5,"currency":"EUR"}"#;
    let (status, headers, body) = send(&app, command("SO-1", "place", place, None)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(headers[header::ETAG], "\"1\"");
    assert_eq!(body["version"], 1);
    assert_eq!(body["state"]["status"], "placed");
    assert_eq!(body["events"][0]["type"], "OrderPlaced");
    assert_eq!(body["events"][0]["id"], "order/SO-1/1");
    assert_eq!(body["events"][0]["entityversion"], 1);
    assert_eq!(body["events"][0]["data"]["customer"], "CUST-7");
    assert!(
        body["consistency_token"]
            .as_str()
            .unwrap()
            .starts_with("entity.order:")
    );

    // Rejected: 422, nothing written.
    let (status, headers, body) = send(&app, command("SO-1", "ship", "", None)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(headers[header::CONTENT_TYPE], "application/problem+json");
    assert_eq!(body["type"], "urn:weir:problem:command-rejected");
    // A stale If-Match: 409; a malformed one: 400.
    let pay = r#"{"amount":12.5}"#;
    let (status, _, body) = send(&app, command("SO-1", "pay", pay, Some("\"0\""))).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, _, _) = send(&app, command("SO-1", "pay", pay, Some("soon"))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // Malformed command data: the function's fatal error, 422.
    let (status, _, body) = send(&app, command("SO-1", "pay", "{not json", None)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (status, _, body) = send(&app, command("SO-1", "pay", pay, Some("\"1\""))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["version"], 2);

    let (status, headers, body) = send(&app, get("/v1/entities/order/SO-1")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(headers[header::ETAG], "\"2\"");
    assert_eq!(body["state"]["status"], "paid");
    let (_, _, v1) = send(&app, get("/v1/entities/order/SO-1?version=1")).await;
    assert_eq!(v1["state"]["status"], "placed");
    let at = v1["timestamp"].as_str().unwrap().to_owned();
    let (status, _, at_body) = send(&app, get(&format!("/v1/entities/order/SO-1?at={at}"))).await;
    assert_eq!(status, StatusCode::OK, "{at_body}");
    assert!(at_body["version"].as_u64().unwrap() >= 1);
    let (status, _, _) = send(&app, get("/v1/entities/order/SO-1?at=1000")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _) = send(&app, get("/v1/entities/order/SO-1?at=yesterday")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let (status, headers, body) = send(&app, get("/v1/entities/order/SO-1/events?from=2")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["weir-next-version"], "3");
    assert_eq!(body.as_array().unwrap().len(), 1);
    assert_eq!(body[0]["type"], "OrderPaid");

    // Unknown type, unknown entity, bad id, bad command name.
    let (status, _, _) = send(&app, get("/v1/entities/cart/x")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _) = send(&app, get("/v1/entities/order/none")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _) = send(&app, command("a%20b", "place", place, None)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _, _) = send(&app, command("SO-2", "Place!", place, None)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // The journal is readable as a topic, and refuses publishes.
    let ev = r#"{"specversion":"1.0","id":"x","source":"s","type":"OrderPaid"}"#;
    let req = Request::post("/v1/topics/entity.order/events")
        .header(header::CONTENT_TYPE, "application/cloudevents+json")
        .body(Body::from(ev))
        .unwrap();
    let (status, _, body) = send(&app, req).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    app.node.shutdown().await;
}
