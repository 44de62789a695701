//! Events kept exactly as sent, end to end: JSON data published over HTTP comes back byte
//! for byte (every number and string escape) from reads and streams of the topic it was
//! published to and of the topic a forwarding pipeline (`guest-echo`) wrote it to; JSON
//! that repeats a key, and integers beyond the CloudEvents range, are refused with 400.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::value::RawValue;
use tower::ServiceExt;
use weir_engine::{Node, NodeOptions};

use crate::{GatewayOptions, is_problem, router};

const APP: &str = r#"
[topics.in]
[topics.out]
[functions.echo]
source = "echo.wasm"
[pipelines.forward]
from = "in"
function = "echo"
to = ["out"]
"#;

struct App {
    _dir: tempfile::TempDir,
    node: Arc<Node>,
}

async fn app() -> App {
    let dir = tempfile::tempdir().unwrap();
    let echo = weir_test_support::test_guest("guest-echo");
    std::fs::copy(echo, dir.path().join("echo.wasm")).unwrap();
    let manifest = weir_manifest::Manifest::from_toml_str(APP, dir.path()).unwrap();
    let data = dir.path().join("data");
    let log = weir_log_embedded::open_shared(&data, Default::default())
        .await
        .unwrap();
    let node = Node::start(NodeOptions::new(data, Some(manifest), log))
        .await
        .unwrap();
    App { _dir: dir, node }
}

async fn send(app: &App, req: Request<Body>) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let res = router(app.node.clone(), GatewayOptions::default())
        .oneshot(req)
        .await
        .unwrap();
    let (parts, body) = res.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes().to_vec();
    (parts.status, parts.headers, bytes)
}

fn post(content_type: &str, body: impl Into<Body>) -> Request<Body> {
    Request::post("/v1/topics/in/events")
        .header(header::CONTENT_TYPE, content_type)
        .body(body.into())
        .unwrap()
}

/// Numbers in every form JSON allows, each of which a trip through an `f64` or a
/// `serde_json::Value` would have rewritten, and string escapes beside the characters
/// they stand for.
const NUMBERS: &[&str] = &[
    "123456789012345678901234567890",
    "-123456789012345678901234567890",
    "1E+2",
    "1e2",
    "1E-2",
    "-0",
    "-0.0",
    "1.0",
    "1.50",
    "100",
    "0.1e-7",
    "0.30000000000000004",
    "18446744073709551616",
    "-9223372036854775809",
    "1.7976931348623157e308",
    "5e-324",
    "2.2250738585072014E-308",
    "12345678901234567890.12345678901234567890",
];

const STRINGS: &[&str] = &[
    r#""\u00e9""#,
    r#""é""#,
    r#""\/""#,
    r#""\ud83d\ude00""#,
    r#""\u001F\t\"\\""#,
    r#""\u0041""#,
];

/// The data as stored and read: every number and string above, as sent.
fn data() -> String {
    let numbers: Vec<String> = NUMBERS
        .iter()
        .enumerate()
        .map(|(i, n)| format!("\"n{i}\":{n}"))
        .collect();
    format!(
        "{{{},\"strings\":[{}],\"nested\":{{\"list\":[{}]}}}}",
        numbers.join(","),
        STRINGS.join(","),
        NUMBERS.join(",")
    )
}

/// The same data as a person might send it: spaced out over lines.
fn data_as_sent() -> String {
    data()
        .replace(",\"", ",\n  \"")
        .replace(":[", ": [ ")
        .replace('{', "{ ")
        .replace('}', "\r\n}")
}

/// Each event's `data` exactly as it appears in a batch response.
fn raw_data_of_batch(body: &[u8]) -> BTreeMap<String, String> {
    let events: Vec<BTreeMap<String, Box<RawValue>>> = serde_json::from_slice(body).unwrap();
    events.iter().map(raw_id_and_data).collect()
}

fn raw_id_and_data(event: &BTreeMap<String, Box<RawValue>>) -> (String, String) {
    let id: String = serde_json::from_str(event["id"].get()).unwrap();
    let data = event
        .get("data")
        .unwrap_or_else(|| panic!("no data: {event:?}"));
    (id, data.get().to_owned())
}

async fn read_all(app: &App, topic: &str) -> BTreeMap<String, String> {
    let (status, headers, body) = send(
        app,
        Request::get(format!(
            "/v1/topics/{topic}/events?partition=0&offset=0&limit=100"
        ))
        .body(Body::empty())
        .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        headers[header::CONTENT_TYPE],
        "application/cloudevents-batch+json"
    );
    raw_data_of_batch(&body)
}

/// The first `n` events of a topic's SSE stream, each message's `data` read as sent.
async fn stream(app: &App, topic: &str, n: usize) -> BTreeMap<String, String> {
    let res = router(app.node.clone(), GatewayOptions::default())
        .oneshot(
            Request::get(format!("/v1/topics/{topic}/stream?from=earliest"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let mut body = res.into_body();
    let mut text = String::new();
    let mut events = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while events.len() < n {
        let frame = tokio::time::timeout_at(tokio::time::Instant::from_std(deadline), body.frame())
            .await
            .expect("the stream sent the events in time")
            .expect("the stream goes on")
            .unwrap();
        if let Ok(chunk) = frame.into_data() {
            text.push_str(std::str::from_utf8(&chunk).unwrap());
        }
        // Messages end with a blank line; each event is one `data:` line.
        while let Some(end) = text.find("\n\n") {
            let message: String = text.drain(..end + 2).collect();
            let lines: Vec<&str> = message
                .lines()
                .filter_map(|line| line.strip_prefix("data:"))
                .collect();
            if let [line] = lines[..] {
                let event: BTreeMap<String, Box<RawValue>> =
                    serde_json::from_str(line.trim_start()).unwrap();
                let (id, data) = raw_id_and_data(&event);
                events.insert(id, data);
            }
        }
    }
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_payload_number_round_trips_byte_for_byte_through_publish_a_pipeline_and_read() {
    let app = app().await;
    let data = data();
    let event = |id: &str, data: &str| {
        format!(r#"{{"specversion":"1.0","id":"{id}","source":"/s","type":"t","data":{data}}}"#)
    };
    // Structured (compact and spaced), batch, and binary mode.
    let (status, _, body) = send(
        &app,
        post("application/cloudevents+json", event("structured", &data)),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::ACCEPTED,
        "{}",
        String::from_utf8_lossy(&body)
    );
    let (status, _, _) = send(
        &app,
        post(
            "application/cloudevents+json",
            event("spaced", &data_as_sent()),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let batch = format!("[{},{}]", event("batch-0", &data), event("batch-1", &data));
    let (status, _, _) = send(&app, post("application/cloudevents-batch+json", batch)).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let binary = Request::post("/v1/topics/in/events")
        .header("ce-specversion", "1.0")
        .header("ce-id", "binary")
        .header("ce-source", "/s")
        .header("ce-type", "t")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(data_as_sent()))
        .unwrap();
    let (status, _, _) = send(&app, binary).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let ids = ["batch-0", "batch-1", "binary", "spaced", "structured"];

    // The pipeline copies each event to `out`.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = app.node.log().topic("out").await.unwrap().unwrap();
        if out.end_offsets.iter().sum::<u64>() >= ids.len() as u64 {
            break;
        }
        assert!(Instant::now() < deadline, "the pipeline did not run");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    for topic in ["in", "out"] {
        for (how, events) in [
            ("read", read_all(&app, topic).await),
            ("stream", stream(&app, topic, ids.len()).await),
        ] {
            assert_eq!(events.keys().collect::<Vec<_>>(), ids, "{how} {topic}");
            for (id, found) in &events {
                // Whitespace between tokens is left out; nothing else changes.
                assert_eq!(found, &data, "{how} of {topic}: {id}");
            }
        }
    }
    for number in NUMBERS {
        assert!(data.contains(&format!(":{number},")), "{number}");
    }
    for escape in STRINGS {
        assert!(data.contains(escape), "{escape}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_keys_and_integers_beyond_32_bits_are_refused_with_400() {
    let app = app().await;
    let cases = [
        (
            "application/cloudevents+json",
            r#"{"specversion":"1.0","id":"1","id":"2","source":"/s","type":"t"}"#,
            "id",
            "appears more than once",
            None,
        ),
        (
            "application/cloudevents+json",
            r#"{"specversion":"1.0","id":"1","source":"/s","type":"t","data":{"a":{"b":1,"b":2}}}"#,
            "data",
            "repeats the key \"b\" in the object at \"/a\"",
            None,
        ),
        (
            "application/cloudevents-batch+json",
            r#"[{"specversion":"1.0","id":"1","source":"/s","type":"t"},{"specversion":"1.0","id":"2","source":"/s","type":"t","data":[{"k":1,"\u006b":2}]}]"#,
            "data",
            "repeats the key \"k\" in the object at \"/0\"",
            Some(1u64),
        ),
        (
            "application/json",
            r#"{"x": 1, "x": 1}"#,
            "data",
            "repeats the key \"x\" in its top-level object",
            None,
        ),
        (
            "application/cloudevents+json",
            r#"{"specversion":"1.0","id":"1","source":"/s","type":"t","count":2147483648}"#,
            "count",
            "outside the CloudEvents integer range -2147483648 to 2147483647",
            None,
        ),
    ];
    for (content_type, body, attribute, needle, index) in cases {
        let mut req = post(content_type, body);
        if content_type == "application/json" {
            for (name, value) in [
                ("ce-specversion", "1.0"),
                ("ce-id", "1"),
                ("ce-source", "/s"),
                ("ce-type", "t"),
            ] {
                req.headers_mut().insert(name, value.parse().unwrap());
            }
        }
        let (status, headers, answer) = send(&app, req).await;
        let problem: serde_json::Value = serde_json::from_slice(&answer).unwrap();
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {problem}");
        assert!(is_problem(&headers));
        assert_eq!(problem["attribute"], attribute, "{problem}");
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.contains(needle), "{detail}");
        assert_eq!(problem["index"].as_u64(), index, "{problem}");
    }
    let end = app
        .node
        .log()
        .topic("in")
        .await
        .unwrap()
        .unwrap()
        .end_offsets;
    assert_eq!(
        end.iter().sum::<u64>(),
        0,
        "a refused request writes nothing"
    );
}
