//! The JSON the API answers, pinned: one request of each kind against a small app, and
//! the answer's status, content type and body, in `wire.snap`. Scripts and the CLI read
//! these documents, so they change only by extension. Re-bless with `UPDATE_EXPECT=1`
//! after a deliberate addition.
//!
//! Values that differ between runs are replaced: function versions (content hashes of
//! guests built on this machine) by `<v1>`/`<v2>`, and `at_ms` timestamps by 0.

use axum::body::Body;
use axum::http::{Request, header};
use base64::Engine as _;

use super::versions_and_kv::{APP, Answer, App, app, guest, ndjson, req, send};

/// The transcript of requests and answers.
struct Transcript {
    text: String,
    /// Replacements of run-dependent strings, applied to the whole transcript.
    versions: Vec<(String, &'static str)>,
}

impl Transcript {
    async fn exchange(&mut self, app: &App, request: Request<Body>) -> Answer {
        let line = format!("{} {}", request.method(), request.uri());
        let answer = send(app, request).await;
        self.record(&line, &answer);
        answer
    }

    fn record(&mut self, line: &str, answer: &Answer) {
        let content_type = answer
            .headers
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        self.text += &format!("{line}\n-> {} {content_type}\n", answer.status.as_u16());
        if let Some(next) = answer.headers.get("weir-next-offset") {
            self.text += &format!("weir-next-offset: {}\n", next.to_str().unwrap());
        }
        if content_type == crate::NDJSON_CONTENT_TYPE {
            // Progress lines come at most ten a second, so how many depends on timing:
            // the first line and the last (the report) are pinned.
            let lines = ndjson(answer);
            for line in [lines.first().unwrap(), lines.last().unwrap()] {
                self.json(line.clone());
            }
        } else if !answer.bytes.is_empty() {
            self.json(answer.json());
        }
        self.text.push('\n');
    }

    fn json(&mut self, mut value: serde_json::Value) {
        redact(&mut value);
        self.text += &serde_json::to_string_pretty(&value).unwrap();
        self.text.push('\n');
    }

    fn finish(mut self) -> String {
        for (version, name) in &self.versions {
            self.text = self.text.replace(version.as_str(), name);
        }
        self.text
    }
}

fn redact(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                if key == "at_ms" {
                    *v = serde_json::json!(0);
                } else {
                    redact(v);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

fn get(uri: &str) -> Request<Body> {
    req("GET", uri, Body::empty())
}

fn json_body(method: &str, uri: &str, body: &str) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(uri)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_owned()))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_answer_keeps_its_json() {
    let app = app().await;
    let v1 = send(&app, get("/v1/functions")).await.json()[0]["version"]
        .as_str()
        .unwrap()
        .to_owned();
    let v2 = send(&app, req("PUT", "/v1/functions/tag", guest("guest-tag-v2")))
        .await
        .json()["version"]
        .as_str()
        .unwrap()
        .to_owned();
    // Back to v1, so the pipeline runs the manifest's version and the history is known.
    let a = send(
        &app,
        req("POST", "/v1/functions/tag/rollback", Body::empty()),
    )
    .await;
    assert_eq!(a.json()["version"], v1.as_str());
    let mut t = Transcript {
        text: String::new(),
        versions: vec![(v1, "<v1>"), (v2, "<v2>")],
    };

    t.exchange(&app, get("/healthz")).await;
    t.exchange(&app, get("/readyz")).await;

    // Topics.
    t.exchange(
        &app,
        json_body(
            "PUT",
            "/v1/topics/extra",
            r#"{"partitions":2,"fsync":{"interval":{"ms":50}},"retention_ms":60000,"segment_bytes":1048576}"#,
        ),
    )
    .await;
    t.exchange(
        &app,
        json_body("PUT", "/v1/topics/extra", r#"{"compaction":false}"#),
    )
    .await;
    t.exchange(
        &app,
        json_body("PUT", "/v1/topics/quiet", r#"{"fsync":"never"}"#),
    )
    .await;

    // Publish, and let the pipeline handle it all.
    let events = r#"[{"specversion":"1.0","id":"a","source":"s","type":"t","subject":"k1","data":{"n":1}},
        {"specversion":"1.0","id":"b","source":"s","type":"t","subject":"k2"},
        {"specversion":"1.0","id":"c","source":"s","type":"t","subject":"k3","datacontenttype":"text/plain","data":"x"}]"#;
    t.exchange(
        &app,
        Request::post("/v1/topics/in/events")
            .header(header::CONTENT_TYPE, "application/cloudevents-batch+json")
            .body(Body::from(events))
            .unwrap(),
    )
    .await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let p = send(&app, get("/v1/pipelines/p")).await.json();
        if p["lag"] == 0 && p["processed"] == 3 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the pipeline did not run: {p}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    t.exchange(&app, get("/v1/topics")).await;
    t.exchange(
        &app,
        get("/v1/topics/in/events?partition=0&offset=0&limit=10"),
    )
    .await;
    t.exchange(&app, get("/v1/status")).await;
    t.exchange(&app, get("/v1/pipelines")).await;
    t.exchange(&app, get("/v1/pipelines/p")).await;
    t.exchange(&app, req("POST", "/v1/pipelines/p/redrive", Body::empty()))
        .await;

    // Consumer groups.
    t.exchange(&app, get("/v1/groups/readers?topic=in")).await;
    t.exchange(
        &app,
        json_body(
            "POST",
            "/v1/groups/readers/reset",
            r#"{"topic":"in","to":"earliest"}"#,
        ),
    )
    .await;
    t.exchange(&app, get("/v1/groups/readers?topic=in")).await;

    // Key-value.
    t.exchange(&app, get("/v1/kv/customers?limit=1")).await;
    t.exchange(
        &app,
        json_body(
            "POST",
            "/v1/kv/customers",
            r#"{"CUST-7": {"name": "Seven"}}"#,
        ),
    )
    .await;
    t.exchange(&app, get("/v1/kv/customers/CUST-7")).await;

    // Replay: the first progress line and the report.
    t.exchange(
        &app,
        Request::post("/v1/pipelines/p/replay?examples=1")
            .header(header::CONTENT_TYPE, "application/wasm")
            .body(Body::from(guest("guest-tag-v2")))
            .unwrap(),
    )
    .await;
    t.exchange(&app, req("POST", "/v1/pipelines/p/replay", Body::empty()))
        .await;

    // Functions and deploys.
    t.exchange(&app, get("/v1/functions")).await;
    t.exchange(&app, req("PUT", "/v1/functions/tag", guest("guest-tag-v2")))
        .await;
    t.exchange(
        &app,
        json_body(
            "POST",
            "/v1/functions/tag/rollback",
            r#"{"version":"<v1>"}"#.replace("<v1>", &t.versions[0].0).as_str(),
        ),
    )
    .await;
    let tag_v1 = base64::engine::general_purpose::STANDARD.encode(guest("guest-tag-v1"));
    let more = format!("{APP}\n[topics.audit]\npartitions = 2\n");
    t.exchange(
        &app,
        json_body(
            "POST",
            "/v1/deploy",
            &serde_json::json!({ "manifest": more, "functions": { "tag": tag_v1 } }).to_string(),
        ),
    )
    .await;

    // Event schemas.
    let v1 = r#"{"type":"object","properties":{"n":{"type":"integer"}},"required":["n"]}"#;
    t.exchange(&app, json_body("PUT", "/v1/schemas/wire.created/1", v1))
        .await;
    t.exchange(&app, json_body("PUT", "/v1/schemas/wire.created/1", v1))
        .await;
    t.exchange(&app, get("/v1/schemas")).await;
    t.exchange(&app, get("/v1/schemas/wire.created")).await;
    t.exchange(&app, get("/v1/schemas/wire.created/latest"))
        .await;
    t.exchange(
        &app,
        json_body(
            "PUT",
            "/v1/schemas/wire.created/2",
            r#"{"type":"object","properties":{"n":{"type":"string"}},"required":["n","m"]}"#,
        ),
    )
    .await;
    t.exchange(
        &app,
        json_body("PUT", "/v1/schemas/wire.created/2", r#"{"type":"strin"}"#),
    )
    .await;
    t.exchange(&app, get("/v1/schemas/wire.created/9")).await;
    t.exchange(
        &app,
        Request::post("/v1/topics/in/events")
            .header(header::CONTENT_TYPE, "application/cloudevents-batch+json")
            .body(Body::from(
                r#"[{"specversion":"1.0","id":"w1","source":"s","type":"wire.created","data":{"n":1}},{"specversion":"1.0","id":"w2","source":"s","type":"wire.created","data":{"n":"one"}}]"#,
            ))
            .unwrap(),
    )
    .await;

    // Problems.
    t.exchange(&app, get("/v2/nothing")).await;
    t.exchange(&app, req("DELETE", "/v1/topics", Body::empty()))
        .await;
    t.exchange(&app, get("/v1/topics/nope/events")).await;
    t.exchange(&app, get("/v1/topics/in/events?partition=7"))
        .await;
    t.exchange(&app, get("/v1/topics/in/events?offset=x")).await;
    t.exchange(
        &app,
        Request::post("/v1/topics/in/events")
            .header(header::CONTENT_TYPE, "application/cloudevents-batch+json")
            .body(Body::from(
                r#"[{"specversion":"1.0","id":"a","source":"s","type":"t"},{"specversion":"1.0","id":"b","type":"t"}]"#,
            ))
            .unwrap(),
    )
    .await;
    t.exchange(
        &app,
        Request::post("/v1/topics/in/events")
            .header(header::CONTENT_TYPE, "text/plain")
            .body(Body::from("hello"))
            .unwrap(),
    )
    .await;
    t.exchange(
        &app,
        json_body("PUT", "/v1/topics/in", r#"{"partitions":3}"#),
    )
    .await;
    t.exchange(
        &app,
        json_body("PUT", "/v1/topics/in", r#"{"fsync":"never"}"#),
    )
    .await;
    t.exchange(
        &app,
        json_body("PUT", "/v1/topics/in", r#"{"retention_ms":0}"#),
    )
    .await;
    t.exchange(
        &app,
        json_body("PUT", "/v1/topics/in", r#"{"colour":"red"}"#),
    )
    .await;
    t.exchange(&app, get("/v1/topics/in/stream?from=yesterday"))
        .await;
    t.exchange(&app, get("/v1/topics/in/stream?group=p")).await;
    t.exchange(&app, get("/v1/groups/readers")).await;
    t.exchange(&app, get("/v1/kv/suppliers")).await;
    t.exchange(&app, get("/v1/kv/customers/nobody")).await;
    t.exchange(
        &app,
        req("PUT", "/v1/kv/customers/big", vec![b'x'; (1 << 20) + 1]),
    )
    .await;
    t.exchange(
        &app,
        req("PUT", "/v1/functions/nope", guest("guest-tag-v2")),
    )
    .await;
    t.exchange(
        &app,
        req("PUT", "/v1/functions/tag", b"\0asm nope".to_vec()),
    )
    .await;
    t.exchange(
        &app,
        json_body("POST", "/v1/functions/tag/rollback", r#"{"version":"abc"}"#),
    )
    .await;
    t.exchange(&app, get("/v1/pipelines/nope")).await;
    t.exchange(
        &app,
        req("POST", "/v1/pipelines/nope/redrive", Body::empty()),
    )
    .await;
    t.exchange(
        &app,
        req(
            "POST",
            "/v1/pipelines/p/replay?from_offset=5&to_offset=1",
            Body::empty(),
        ),
    )
    .await;
    t.exchange(
        &app,
        json_body(
            "POST",
            "/v1/deploy",
            &serde_json::json!({ "manifest": "[topics" }).to_string(),
        ),
    )
    .await;
    let changed = format!("{APP}\n[topics.audit]\npartitions = 2\n")
        .replace("to = [\"out\"]", "to = [\"out\", \"audit\"]");
    t.exchange(
        &app,
        json_body(
            "POST",
            "/v1/deploy",
            &serde_json::json!({ "manifest": changed, "functions": { "tag": tag_v1 } }).to_string(),
        ),
    )
    .await;

    app.node.begin_shutdown();
    t.exchange(&app, get("/readyz")).await;
    t.exchange(
        &app,
        Request::post("/v1/topics/in/events")
            .header(header::CONTENT_TYPE, "application/cloudevents+json")
            .body(Body::from(
                r#"{"specversion":"1.0","id":"z","source":"s","type":"t"}"#,
            ))
            .unwrap(),
    )
    .await;

    expect_test::expect_file!["wire.snap"].assert_eq(&t.finish());
}
