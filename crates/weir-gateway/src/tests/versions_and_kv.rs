//! The key-value routes and the function version routes over a node running a small app.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use base64::Engine as _;
use http_body_util::BodyExt;
use tower::ServiceExt;
use weir_engine::{Node, NodeOptions};

use crate::{GatewayOptions, is_problem, router};

pub(super) struct App {
    pub(super) dir: tempfile::TempDir,
    pub(super) node: Arc<Node>,
}

pub(super) const APP: &str = r#"
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

pub(super) fn guest(name: &str) -> Vec<u8> {
    std::fs::read(weir_test_support::test_guest(name)).unwrap()
}

pub(super) async fn app() -> App {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tag.wasm"), guest("guest-tag-v1")).unwrap();
    std::fs::write(
        dir.path().join("customers.json"),
        r#"{"CUST-42": {"name": "Acme GmbH"}, "CUST-1": "plain text"}"#,
    )
    .unwrap();
    let manifest = weir_manifest::Manifest::from_toml_str(APP, dir.path()).unwrap();
    let data = dir.path().join("data");
    let log = weir_log_embedded::open_shared(&data, Default::default())
        .await
        .unwrap();
    let node = Node::start(NodeOptions::new(data, Some(manifest), log))
        .await
        .unwrap();
    App { dir, node }
}

pub(super) struct Answer {
    pub(super) status: StatusCode,
    pub(super) headers: axum::http::HeaderMap,
    pub(super) bytes: Vec<u8>,
}

impl Answer {
    pub(super) fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.bytes).unwrap_or(serde_json::Value::Null)
    }
}

pub(super) async fn send(app: &App, req: Request<Body>) -> Answer {
    let res = router(app.node.clone(), GatewayOptions::default())
        .oneshot(req)
        .await
        .unwrap();
    let (parts, body) = res.into_parts();
    Answer {
        status: parts.status,
        headers: parts.headers,
        bytes: body.collect().await.unwrap().to_bytes().to_vec(),
    }
}

pub(super) fn req(method: &str, uri: &str, body: impl Into<Body>) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(uri)
        .body(body.into())
        .unwrap()
}

fn assert_problem(a: &Answer, status: StatusCode, needle: &str) {
    assert_eq!(a.status, status, "{}", a.json());
    assert!(is_problem(&a.headers), "{:?}", a.headers);
    let detail = a.json()["detail"].as_str().unwrap().to_owned();
    assert!(detail.contains(needle), "{detail}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_value_routes_read_write_list_and_delete() {
    let app = app().await;
    let a = send(&app, req("GET", "/v1/kv/customers/CUST-42", Body::empty())).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.headers[header::CONTENT_TYPE], "application/json");
    assert_eq!(a.json()["name"], "Acme GmbH");
    let a = send(&app, req("GET", "/v1/kv/customers/CUST-1", Body::empty())).await;
    assert_eq!(a.headers[header::CONTENT_TYPE], "application/octet-stream");
    assert_eq!(a.bytes, b"plain text");

    // A key with a slash and a space, percent-encoded.
    let a = send(&app, req("PUT", "/v1/kv/customers/a%2Fb%20c", "v")).await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    let a = send(
        &app,
        req("GET", "/v1/kv/customers/a%2Fb%20c", Body::empty()),
    )
    .await;
    assert_eq!(a.bytes, b"v");

    let a = send(&app, req("GET", "/v1/kv/customers?limit=2", Body::empty())).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json()["keys"], serde_json::json!(["CUST-1", "CUST-42"]));
    assert_eq!(a.json()["cursor"], 2);
    let a = send(&app, req("GET", "/v1/kv/customers?cursor=2", Body::empty())).await;
    assert_eq!(a.json()["keys"], serde_json::json!(["a/b c"]));
    assert_eq!(a.json()["cursor"], serde_json::Value::Null);

    let a = send(
        &app,
        req("DELETE", "/v1/kv/customers/a%2Fb%20c", Body::empty()),
    )
    .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    let a = send(
        &app,
        req("GET", "/v1/kv/customers/a%2Fb%20c", Body::empty()),
    )
    .await;
    assert_problem(&a, StatusCode::NOT_FOUND, "has no key");

    // Bulk load overwrites, all or nothing.
    let a = send(
        &app,
        req(
            "POST",
            "/v1/kv/customers",
            r#"{"CUST-1": "new", "CUST-9": 9}"#,
        ),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.json());
    assert_eq!(a.json()["written"], 2);
    let a = send(&app, req("POST", "/v1/kv/customers", "[1, 2]")).await;
    assert_problem(&a, StatusCode::BAD_REQUEST, "not a JSON object");
    let a = send(&app, req("GET", "/v1/kv/customers/CUST-1", Body::empty())).await;
    assert_eq!(a.bytes, b"new");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_value_problems() {
    let app = app().await;
    let a = send(&app, req("GET", "/v1/kv/suppliers/x", Body::empty())).await;
    assert_problem(&a, StatusCode::NOT_FOUND, "declared: [\"customers\"]");
    assert_eq!(a.json()["type"], "urn:weir:problem:unknown-namespace");
    let a = send(&app, req("PUT", "/v1/kv/suppliers/x", "v")).await;
    assert_problem(&a, StatusCode::NOT_FOUND, "[keyvalue.suppliers]");

    let long = "k".repeat(1025);
    let a = send(&app, req("PUT", &format!("/v1/kv/customers/{long}"), "v")).await;
    assert_problem(&a, StatusCode::BAD_REQUEST, "use 1 to 1024 bytes");
    let a = send(
        &app,
        req("PUT", "/v1/kv/customers/big", vec![b'x'; (1 << 20) + 1]),
    )
    .await;
    assert_problem(&a, StatusCode::PAYLOAD_TOO_LARGE, "over the limit");
    // Exactly the limit is fine, though it is over the publish body limit.
    let a = send(
        &app,
        req("PUT", "/v1/kv/customers/big", vec![b'x'; 1 << 20]),
    )
    .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    let a = send(&app, req("GET", "/v1/kv/customers?limit=x", Body::empty())).await;
    assert_problem(&a, StatusCode::BAD_REQUEST, "cursor");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn functions_deploy_roll_back_and_list() {
    let app = app().await;
    let a = send(&app, req("GET", "/v1/functions", Body::empty())).await;
    let v1 = a.json()[0]["version"].as_str().unwrap().to_owned();
    assert_eq!(a.json()[0]["history"][0]["origin"], "manifest");

    let a = send(
        &app,
        req("PUT", "/v1/functions/tag", b"\0asm nope".to_vec()),
    )
    .await;
    assert_problem(
        &a,
        StatusCode::UNPROCESSABLE_ENTITY,
        "not a valid WebAssembly component",
    );
    assert_eq!(a.json()["type"], "urn:weir:problem:invalid-function");
    let a = send(
        &app,
        req("PUT", "/v1/functions/nope", guest("guest-tag-v2")),
    )
    .await;
    assert_problem(&a, StatusCode::NOT_FOUND, "declared: [\"tag\"]");
    let a = send(
        &app,
        req("POST", "/v1/functions/tag/rollback", Body::empty()),
    )
    .await;
    assert_problem(&a, StatusCode::CONFLICT, "no earlier version");

    let a = send(&app, req("PUT", "/v1/functions/tag", guest("guest-tag-v2"))).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.json());
    assert_eq!(a.json()["previous"], v1.as_str());
    let v2 = a.json()["version"].as_str().unwrap().to_owned();

    let a = send(
        &app,
        req("POST", "/v1/functions/tag/rollback", Body::empty()),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.json());
    assert_eq!(a.json()["version"], v1.as_str());
    let a = send(
        &app,
        req(
            "POST",
            "/v1/functions/tag/rollback",
            format!(r#"{{"version": "{v2}"}}"#),
        ),
    )
    .await;
    assert_eq!(a.json()["version"], v2.as_str());
    let a = send(
        &app,
        req(
            "POST",
            "/v1/functions/tag/rollback",
            r#"{"version": "abc"}"#,
        ),
    )
    .await;
    assert_problem(&a, StatusCode::NOT_FOUND, "no kept version");

    let a = send(&app, req("GET", "/v1/functions", Body::empty())).await;
    let origins: Vec<_> = a.json()[0]["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["origin"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(origins, ["manifest", "deploy", "rollback", "rollback"]);
    assert_eq!(a.json()[0]["versions_kept"], serde_json::json!([v2, v1]));
    let a = send(&app, req("GET", "/v1/status", Body::empty())).await;
    assert_eq!(a.json()["functions"][0]["versions_kept"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploying_an_app() {
    let app = app().await;
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let body = |manifest: &str, wasm: &[u8]| {
        serde_json::json!({ "manifest": manifest, "functions": { "tag": b64(wasm) } }).to_string()
    };
    let more = format!("{APP}\n[topics.audit]\npartitions = 2\n");
    let a = send(
        &app,
        req("POST", "/v1/deploy", body(&more, &guest("guest-tag-v2"))),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.json());
    assert_eq!(a.json()["topics"], serde_json::json!(["audit"]));
    assert_eq!(a.json()["functions"][0]["reloaded"], true);
    assert!(app.node.log().topic("audit").await.unwrap().is_some());

    let changed = more.replace("to = [\"out\"]", "to = [\"out\", \"audit\"]");
    let a = send(
        &app,
        req("POST", "/v1/deploy", body(&changed, &guest("guest-tag-v2"))),
    )
    .await;
    assert_problem(&a, StatusCode::CONFLICT, "pipeline \"p\" changes");
    assert_eq!(a.json()["type"], "urn:weir:problem:restart-required");

    let a = send(&app, req("POST", "/v1/deploy", body("[topics", b""))).await;
    assert_problem(&a, StatusCode::BAD_REQUEST, "");
    assert_eq!(a.json()["type"], "urn:weir:problem:invalid-manifest");
    let a = send(&app, req("POST", "/v1/deploy", body(&more, b"junk"))).await;
    assert_problem(&a, StatusCode::UNPROCESSABLE_ENTITY, "function \"tag\"");
    let a = send(
        &app,
        req(
            "POST",
            "/v1/deploy",
            r#"{"manifest": "", "functions": {"tag": "%%%"}}"#,
        ),
    )
    .await;
    assert_problem(&a, StatusCode::BAD_REQUEST, "not base64");
    let _ = &app.dir;
}

/// The lines of an NDJSON answer.
pub(super) fn ndjson(a: &Answer) -> Vec<serde_json::Value> {
    a.bytes
        .split(|b| *b == b'\n')
        .filter(|line| !line.is_empty())
        .map(|line| serde_json::from_slice(line).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_streams_progress_then_the_report_and_refuses_bad_requests_as_problems() {
    let app = app().await;
    let events = r#"[{"specversion":"1.0","id":"a","source":"s","type":"t","subject":"k1"},
        {"specversion":"1.0","id":"b","source":"s","type":"t","subject":"k2"},
        {"specversion":"1.0","id":"c","source":"s","type":"t","subject":"k3"}]"#;
    let a = send(
        &app,
        Request::post("/v1/topics/in/events")
            .header(header::CONTENT_TYPE, "application/cloudevents-batch+json")
            .body(Body::from(events))
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, StatusCode::ACCEPTED);
    // Let the pipeline handle them first, so the output topic stands still.
    let out_total = async || -> u64 {
        app.node
            .log()
            .topic("out")
            .await
            .unwrap()
            .unwrap()
            .end_offsets
            .iter()
            .sum()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while out_total().await < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "the pipeline did not run"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    let a = send(
        &app,
        Request::post("/v1/pipelines/p/replay?examples=2")
            .header(header::CONTENT_TYPE, "application/wasm")
            .body(Body::from(guest("guest-tag-v2")))
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.headers[header::CONTENT_TYPE], crate::NDJSON_CONTENT_TYPE);
    let lines = ndjson(&a);
    assert_eq!(
        lines[0],
        serde_json::json!({"progress": {"done": 0, "total": 3}})
    );
    assert_eq!(
        lines[lines.len() - 2],
        serde_json::json!({"progress": {"done": 3, "total": 3}})
    );
    let report = &lines[lines.len() - 1]["report"];
    assert_eq!(report["inputs"], 3, "{report}");
    assert_eq!(report["diff"]["changed"], 3, "{report}");
    assert_eq!(report["diff"]["unchanged"], 0, "{report}");
    assert_eq!(report["examples"].as_array().unwrap().len(), 2);
    assert_eq!(
        report["examples"][0]["fields"],
        serde_json::json!([{"path": "tagversion", "a": "1", "b": "2"}])
    );
    assert_eq!(out_total().await, 3, "the replay published nothing");

    // Problems before the stream starts.
    let post = |uri: &str, body: Body| Request::post(uri).body(body).unwrap();
    let a = send(&app, post("/v1/pipelines/nope/replay", Body::empty())).await;
    assert_problem(
        &a,
        StatusCode::NOT_FOUND,
        "pipeline \"nope\" is not declared",
    );
    let a = send(
        &app,
        post("/v1/pipelines/p/replay?version=123456789abc", Body::empty()),
    )
    .await;
    assert_problem(&a, StatusCode::NOT_FOUND, "no kept version");
    let a = send(
        &app,
        post("/v1/pipelines/p/replay", Body::from("\0asm broken")),
    )
    .await;
    assert_problem(
        &a,
        StatusCode::UNPROCESSABLE_ENTITY,
        "not a valid WebAssembly component",
    );
    let a = send(
        &app,
        post(
            "/v1/pipelines/p/replay?from_offset=5&to_offset=1",
            Body::empty(),
        ),
    )
    .await;
    assert_problem(&a, StatusCode::BAD_REQUEST, "after its end");
    let a = send(
        &app,
        post(
            "/v1/pipelines/p/replay?from_offset=1&from_time=2026-01-01T00:00:00Z",
            Body::empty(),
        ),
    )
    .await;
    assert_problem(&a, StatusCode::BAD_REQUEST, "not both");
    let a = send(
        &app,
        post("/v1/pipelines/p/replay?to_time=yesterday", Body::empty()),
    )
    .await;
    assert_problem(&a, StatusCode::BAD_REQUEST, "RFC 3339");
    let a = send(
        &app,
        Request::post("/v1/pipelines/p/replay")
            .header(header::CONTENT_TYPE, "text/plain")
            .body(Body::from("x"))
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let a = send(
        &app,
        post("/v1/pipelines/p/replay?partition=3", Body::empty()),
    )
    .await;
    assert_problem(&a, StatusCode::NOT_FOUND, "partition");
}
