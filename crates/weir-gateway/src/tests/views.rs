//! The view routes over HTTP with the example's order entity and orders-by-customer view:
//! the query string, read-your-writes with a command's token, a rebuild, the live stream.

use std::sync::Arc;
use std::time::Duration;

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
        r#"
[functions.order-entity]
source = "{}"
[functions.orders-by-customer]
source = "{}"
[entities.order]
function = "order-entity"
[views.orders-by-customer]
function = "orders-by-customer"
entities = ["order"]
key = "order_id"
indexes = ["customer", "status"]
[views.orders-by-customer.columns]
order_id = "text"
customer = "text"
amount = "real"
currency = "text"
status = "text"
version = "integer"
"#,
        weir_test_support::example_entity().display(),
        weir_test_support::example_projection().display()
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

async fn send(app: &App, req: Request<Body>) -> (StatusCode, serde_json::Value) {
    let res = router(app.node.clone(), GatewayOptions::default())
        .oneshot(req)
        .await
        .unwrap();
    let (parts, body) = res.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    (parts.status, json)
}

fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).unwrap()
}

/// Place `id` for `customer`; the command's consistency token.
async fn place(app: &App, id: &str, customer: &str) -> String {
    let body = format!(r#"{{"customer":"{customer}","amount":5.0,"currency":"EUR"}}"#);
    let req = Request::post(format!("/v1/entities/order/{id}/commands/place"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .unwrap();
    let (status, answer) = send(app, req).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    answer["consistency_token"].as_str().unwrap().to_owned()
}

fn ids(body: &serde_json::Value) -> Vec<&str> {
    body["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["order_id"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn views_answer_filters_sorts_pages_and_tokens_over_http() {
    let app = app().await;
    let mut token = String::new();
    for (id, customer) in [
        ("A-1", "ACME"),
        ("A-2", "ACME"),
        ("B-1", "BOLT"),
        ("C-1", "CO/OP"),
    ] {
        token = place(&app, id, customer).await;
    }
    let (status, body) = send(
        &app,
        get(&format!(
            "/v1/views/orders-by-customer?consistency={token}&wait_ms=10000"
        )),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Wait until all four are in, then check the query string's forms.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, body) = send(&app, get("/v1/views/orders-by-customer")).await;
        if ids(&body).len() == 4 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, body) = send(&app, get("/v1/views/orders-by-customer?customer=CO%2FOP")).await;
    assert_eq!(ids(&body), ["C-1"]);
    assert_eq!(body["rows"][0]["customer"], "CO/OP");
    let (_, body) = send(&app, get("/v1/views/orders-by-customer?customer=ACME")).await;
    assert_eq!(ids(&body), ["A-1", "A-2"]);
    let (_, body) = send(
        &app,
        get("/v1/views/orders-by-customer?order_id.prefix=A-&sort=-order_id"),
    )
    .await;
    assert_eq!(ids(&body), ["A-2", "A-1"]);
    let (_, body) = send(
        &app,
        get("/v1/views/orders-by-customer?customer.gte=BOLT&limit=1"),
    )
    .await;
    assert_eq!(ids(&body), ["B-1"]);
    let next = body["next_page"].as_str().unwrap().to_owned();
    let (_, body) = send(
        &app,
        get(&format!(
            "/v1/views/orders-by-customer?customer.gte=BOLT&limit=1&page={next}"
        )),
    )
    .await;
    assert_eq!(ids(&body), ["C-1"]);
    assert!(body["next_page"].is_null());

    for (uri, status, kind) in [
        (
            "/v1/views/orders-by-customer?amount=5",
            400,
            "invalid-view-query",
        ),
        (
            "/v1/views/orders-by-customer?limit=0",
            400,
            "invalid-view-query",
        ),
        (
            "/v1/views/orders-by-customer?limit=many",
            400,
            "invalid-view-query",
        ),
        (
            "/v1/views/orders-by-customer?page=%25%25",
            400,
            "invalid-view-query",
        ),
        (
            "/v1/views/orders-by-customer?consistency=nope",
            400,
            "invalid-view-query",
        ),
        (
            "/v1/views/orders-by-customer?consistency=entity.order:0:999999&wait_ms=10",
            503,
            "view-behind",
        ),
        ("/v1/views/nope", 404, "unknown-view"),
    ] {
        let (got, body) = send(&app, get(uri)).await;
        assert_eq!(got.as_u16(), status, "{uri}: {body}");
        assert_eq!(
            body["type"],
            format!("urn:weir:problem:{kind}"),
            "{uri}: {body}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_view_streams_its_changes_and_rebuilds_over_http() {
    let app = app().await;
    let res = router(app.node.clone(), GatewayOptions::default())
        .oneshot(get("/v1/views/orders-by-customer/stream"))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let token = place(&app, "S-1", "STREAM").await;
    let mut stream = res.into_body();
    let mut text = String::new();
    while !text.contains("\n\n") {
        let frame = tokio::time::timeout(Duration::from_secs(10), stream.frame())
            .await
            .expect("a change in time")
            .expect("the stream goes on")
            .unwrap();
        if let Ok(chunk) = frame.into_data() {
            text.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }
    assert!(text.contains("event: upsert"), "{text}");
    assert!(text.contains(&format!("id: {token}")), "{text}");
    assert!(text.contains(r#""customer":"STREAM""#), "{text}");

    let rebuild = Request::post("/v1/views/orders-by-customer/rebuild")
        .body(Body::empty())
        .unwrap();
    let (status, body) = send(&app, rebuild).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, status) = send(&app, get("/v1/status")).await;
        if status["views"][0]["rebuild"]["state"] == "done" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{status}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The follower is told its copy no longer holds: its stream ends with an error.
    while !text.contains("was rebuilt") {
        let frame = tokio::time::timeout(Duration::from_secs(10), stream.frame())
            .await
            .expect("the rebuild's message in time")
            .expect("the stream goes on until it")
            .unwrap();
        if let Ok(chunk) = frame.into_data() {
            text.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }
    assert!(text.contains("event: error"), "{text}");
    let (_, body) = send(&app, get("/v1/views/orders-by-customer?customer=STREAM")).await;
    assert_eq!(ids(&body), ["S-1"]);
    let (status, _) = send(
        &app,
        Request::post("/v1/views/nope/rebuild")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
