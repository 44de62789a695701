use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use tower::ServiceExt;
use weir_engine::{Node, NodeOptions};

use crate::{GatewayOptions, is_problem, router};

pub(crate) struct Fixture {
    _dir: tempfile::TempDir,
    pub(crate) node: Arc<Node>,
}

pub(crate) async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let log = weir_log_embedded::open_shared(dir.path(), Default::default())
        .await
        .unwrap();
    let node = Node::start(NodeOptions::new(dir.path().to_path_buf(), None, log))
        .await
        .unwrap();
    node.log()
        .create_topic("orders", &weir_log::TopicSpec::with_partitions(2))
        .await
        .unwrap();
    Fixture { _dir: dir, node }
}

async fn send(
    f: &Fixture,
    req: Request<Body>,
) -> (StatusCode, axum::http::HeaderMap, serde_json::Value) {
    let opts = GatewayOptions {
        max_body_bytes: 64 * 1024,
        ..Default::default()
    };
    let res = router(f.node.clone(), opts).oneshot(req).await.unwrap();
    let (parts, body) = res.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    (parts.status, parts.headers, json)
}

fn post(topic: &str, content_type: &str, body: impl Into<Body>) -> Request<Body> {
    Request::post(format!("/v1/topics/{topic}/events"))
        .header(header::CONTENT_TYPE, content_type)
        .body(body.into())
        .unwrap()
}

const STRUCTURED: &str = "application/cloudevents+json";

async fn total(f: &Fixture) -> u64 {
    f.node
        .log()
        .topic("orders")
        .await
        .unwrap()
        .unwrap()
        .end_offsets
        .iter()
        .sum()
}

#[tokio::test]
async fn structured_binary_and_batch_are_accepted_and_read_back() {
    let f = fixture().await;
    let ev =
        r#"{"specversion":"1.0","id":"1","source":"s","type":"t","subject":"k","data":{"a":1}}"#;
    let (status, _, body) = send(&f, post("orders", STRUCTURED, ev)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let partition = body["offsets"][0]["partition"].as_u64().unwrap();
    assert_eq!(body["offsets"][0]["offset"], 0);

    let req = Request::post("/v1/topics/orders/events")
        .header("ce-specversion", "1.0")
        .header("ce-id", "2")
        .header("ce-source", "s")
        .header("ce-type", "t")
        .header("ce-subject", "k")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(r#"{"a":2}"#))
        .unwrap();
    let (status, _, body) = send(&f, req).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");

    let batch = format!("[{ev},{}]", ev.replace(r#""id":"1""#, r#""id":"3""#));
    let (status, _, body) = send(
        &f,
        post("orders", "application/cloudevents-batch+json", batch),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["offsets"].as_array().unwrap().len(), 2);

    let req = Request::get(format!(
        "/v1/topics/orders/events?partition={partition}&offset=0&limit=10"
    ))
    .body(Body::empty())
    .unwrap();
    let (status, headers, body) = send(&f, req).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        headers[header::CONTENT_TYPE],
        "application/cloudevents-batch+json"
    );
    assert_eq!(headers["weir-next-offset"], "4");
    let ids: Vec<_> = body
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["1", "2", "1", "3"]);
    assert_eq!(body[1]["data"]["a"], 2);
}

#[tokio::test]
async fn an_empty_batch_is_accepted_and_stores_nothing() {
    let f = fixture().await;
    let (status, _, body) = send(
        &f,
        post("orders", "application/cloudevents-batch+json", "[]"),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["offsets"], serde_json::json!([]));
    assert_eq!(total(&f).await, 0);
    let (status, headers, _) =
        send(&f, post("nope", "application/cloudevents-batch+json", "[]")).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "an unknown topic is still one"
    );
    assert!(is_problem(&headers));
}

#[tokio::test]
async fn a_requests_w3c_trace_headers_become_the_events_trace_context() {
    let f = fixture().await;
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let ev = r#"{"specversion":"1.0","id":"t1","source":"s","type":"t","subject":"k"}"#;
    let mut req = post("orders", STRUCTURED, ev);
    req.headers_mut().insert("traceparent", tp.parse().unwrap());
    req.headers_mut()
        .insert("tracestate", "congo=t61rcWkgMzE".parse().unwrap());
    let (status, _, body) = send(&f, req).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let partition = body["offsets"][0]["partition"].as_u64().unwrap();
    let req = Request::get(format!("/v1/topics/orders/events?partition={partition}"))
        .body(Body::empty())
        .unwrap();
    let (_, _, body) = send(&f, req).await;
    assert_eq!(body[0]["traceparent"], tp);
    assert_eq!(body[0]["tracestate"], "congo=t61rcWkgMzE");
}

async fn assert_rejected(
    f: &Fixture,
    req: Request<Body>,
    status: StatusCode,
    needle: &str,
) -> serde_json::Value {
    let before = total(f).await;
    let (got, headers, body) = send(f, req).await;
    assert_eq!(got, status, "{body}");
    assert!(is_problem(&headers), "{headers:?}");
    assert_eq!(body["status"], status.as_u16());
    assert!(body["detail"].as_str().unwrap().contains(needle), "{body}");
    assert_eq!(total(f).await, before, "a rejected request writes nothing");
    body
}

#[tokio::test]
async fn bad_input_gets_problem_json_and_writes_nothing() {
    let f = fixture().await;
    assert_rejected(
        &f,
        post("orders", STRUCTURED, "{not json"),
        StatusCode::BAD_REQUEST,
        "line 1",
    )
    .await;

    let body = assert_rejected(
        &f,
        post(
            "orders",
            STRUCTURED,
            r#"{"specversion":"1.0","id":"1","type":"t"}"#,
        ),
        StatusCode::BAD_REQUEST,
        "source",
    )
    .await;
    assert_eq!(body["attribute"], "source");

    let body = assert_rejected(
        &f,
        post(
            "orders",
            STRUCTURED,
            r#"{"specversion":"0.3","id":"1","source":"s","type":"t"}"#,
        ),
        StatusCode::BAD_REQUEST,
        "0.3",
    )
    .await;
    assert_eq!(body["attribute"], "specversion");

    // One bad event spoils the whole batch, and the problem says which.
    let batch = r#"[{"specversion":"1.0","id":"1","source":"s","type":"t"},{"specversion":"1.0","id":"2","source":"s"}]"#;
    let body = assert_rejected(
        &f,
        post("orders", "application/cloudevents-batch+json", batch),
        StatusCode::BAD_REQUEST,
        "type",
    )
    .await;
    assert_eq!(body["index"], 1);

    let ok = r#"{"specversion":"1.0","id":"1","source":"s","type":"t"}"#;
    let body = assert_rejected(
        &f,
        post("nope", STRUCTURED, ok),
        StatusCode::NOT_FOUND,
        "\"nope\"",
    )
    .await;
    assert_eq!(body["type"], "urn:weir:problem:unknown-topic");

    let big = format!(
        r#"{{"specversion":"1.0","id":"1","source":"s","type":"t","data":"{}"}}"#,
        "x".repeat(100 * 1024)
    );
    assert_rejected(
        &f,
        post("orders", STRUCTURED, big),
        StatusCode::PAYLOAD_TOO_LARGE,
        "size limit",
    )
    .await;

    assert_rejected(
        &f,
        post("orders", "text/plain", "hello"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "",
    )
    .await;
}

#[tokio::test]
async fn unknown_routes_and_methods_are_problems() {
    let f = fixture().await;
    let (status, headers, _) =
        send(&f, Request::get("/v2/nothing").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(is_problem(&headers));
    let (status, headers, _) = send(
        &f,
        Request::delete("/v1/topics/orders/events")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(is_problem(&headers));
}

#[tokio::test]
async fn topics_can_be_created_and_listed() {
    let f = fixture().await;
    let req = Request::put("/v1/topics/new.topic")
        .body(Body::from(r#"{"partitions":3}"#))
        .unwrap();
    let (status, _, body) = send(&f, req).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["partitions"], 3);
    let req = Request::put("/v1/topics/bad%20name")
        .body(Body::empty())
        .unwrap();
    let (status, headers, _) = send(&f, req).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(is_problem(&headers));
    let (_, _, body) = send(&f, Request::get("/v1/topics").body(Body::empty()).unwrap()).await;
    let names: Vec<_> = body
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["new.topic", "orders"]);
}

#[tokio::test]
async fn a_huge_topic_is_refused_with_a_4xx_and_leaves_nothing_behind() {
    let f = fixture().await;
    let req = Request::put("/v1/topics/huge")
        .body(Body::from(r#"{"partitions":10000}"#))
        .unwrap();
    let (status, headers, body) = send(&f, req).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(is_problem(&headers));
    assert_eq!(body["type"], "urn:weir:problem:invalid-topic", "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("1024"),
        "the limit is named: {body}"
    );
    assert!(
        !f._dir.path().join("topics/huge").exists(),
        "no directory is left behind"
    );
    // Topics up to the limit per topic are fine; the log-wide limit is a 4xx too.
    let req = Request::put("/v1/topics/wide")
        .body(Body::from(r#"{"partitions":1024}"#))
        .unwrap();
    let (status, _, body) = send(&f, req).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    for n in 0..3 {
        let req = Request::put(format!("/v1/topics/wide{n}"))
            .body(Body::from(r#"{"partitions":1024}"#))
            .unwrap();
        let (status, _, body) = send(&f, req).await;
        if n < 2 {
            assert_eq!(status, StatusCode::CREATED, "{body}");
        } else {
            assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
            assert_eq!(
                body["type"], "urn:weir:problem:too-many-partitions",
                "{body}"
            );
        }
    }
    // A setting the backend does not know is refused by name.
    let req = Request::put("/v1/topics/orders")
        .body(Body::from(r#"{"partitions":2,"segment_bytes":0}"#))
        .unwrap();
    let (status, _, body) = send(&f, req).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}

#[tokio::test]
async fn a_plain_put_keeps_a_topics_durability_and_its_settings_within_bounds() {
    let f = fixture().await;
    let put = |topic: &str, body: &'static str| {
        Request::put(format!("/v1/topics/{topic}"))
            .body(Body::from(body))
            .unwrap()
    };
    // What a new user tried: every append would roll a segment, and 202 would no longer
    // mean durable.
    let (status, headers, body) =
        send(&f, put("orders", r#"{"fsync":"never","segment_bytes":1}"#)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(is_problem(&headers));
    assert!(
        body["detail"].as_str().unwrap().contains("segment_bytes"),
        "{body}"
    );
    let (status, _, body) = send(&f, put("orders", r#"{"fsync":"never"}"#)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(
        body["type"], "urn:weir:problem:durability-lowered",
        "{body}"
    );
    let (status, _, body) = send(&f, put("orders", r#"{"fsync":{"interval":{"ms":100}}}"#)).await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "an interval is lower too: {body}"
    );
    for bad in [
        r#"{"fsync":{"interval":{"ms":600000}}}"#,
        r#"{"retention_ms":0}"#,
        r#"{"partitions":2,"segment_bytes":2147483648}"#,
    ] {
        let (status, _, body) = send(&f, put("orders", bad)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
    }
    let (_, _, body) = send(&f, Request::get("/v1/topics").body(Body::empty()).unwrap()).await;
    assert_eq!(
        body[0]["config"]["fsync"], "always",
        "nothing changed: {body}"
    );

    // Asked for by name, it is lowered; raising it again needs nothing.
    let (status, _, body) = send(
        &f,
        put(
            "orders",
            r#"{"fsync":{"interval":{"ms":100}},"lower_durability":true}"#,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["config"]["fsync"],
        serde_json::json!({"interval": {"ms": 100}})
    );
    let (status, _, body) = send(&f, put("orders", r#"{"fsync":"always"}"#)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // A new topic may start with any durability.
    let (status, _, body) = send(&f, put("scratch", r#"{"fsync":"never"}"#)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

mod entities;
mod exact_events;
mod front_door;
mod jobs;
mod openapi;
mod reads;
mod routes;
mod versions_and_kv;
mod views;
mod wire;
