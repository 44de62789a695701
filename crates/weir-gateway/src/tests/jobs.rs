//! Long-running jobs: job routes answer `202` with a job URL, a pipeline does the work
//! (`guest-trap`: echoes, or fails for good on `test.fatal`), and the job URL reports
//! `accepted`, `succeeded` with the function's outputs, or `failed` with the dead letter;
//! across a restart of the node; readable only by the route's callers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use tower::ServiceExt;
use weir_auth::{ApiKeyStore, Authenticator};
use weir_engine::{Node, NodeOptions};
use weir_manifest::{AuthSpec, RoleSpec};

use crate::{AuthSlot, AuthSource, GatewayOptions, router};

fn manifest_text() -> String {
    format!(
        r#"
[topics.work]
partitions = 2
[topics.out]
[functions.worker]
source = "{wasm}"
[pipelines.work]
from = "work"
function = "worker"
to = "out"
retry = {{ max_attempts = 1 }}
[pipelines.work.filter]
type = ["test.echo", "test.fatal"]
[routes.echo]
path = "/jobs/echo"
topic = "work"
type = "test.echo"
job = true
[routes.fatal]
path = "/jobs/fatal/{{*rest}}"
topic = "work"
type = "test.fatal"
job = true
[routes.skipped]
path = "/jobs/skipped"
topic = "work"
type = "test.skipped"
job = true
"#,
        wasm = weir_test_support::test_guest("guest-trap").display()
    )
}

async fn start(dir: &std::path::Path) -> Arc<Node> {
    let manifest = weir_manifest::Manifest::from_toml_str(&manifest_text(), dir).unwrap();
    let log = weir_log_embedded::open_shared(&dir.join("data"), Default::default())
        .await
        .unwrap();
    Node::start(NodeOptions::new(dir.join("data"), Some(manifest), log))
        .await
        .unwrap()
}

async fn send(
    app: &axum::Router,
    req: Request<Body>,
) -> (StatusCode, axum::http::HeaderMap, serde_json::Value) {
    let res = app.clone().oneshot(req).await.unwrap();
    let (parts, body) = res.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes().to_vec();
    let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    (parts.status, parts.headers, json)
}

fn req(method: &str, uri: &str, body: &str, key: Option<&str>) -> Request<Body> {
    let mut r = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(key) = key {
        r = r.header(header::AUTHORIZATION, format!("Bearer {key}"));
    }
    r.body(Body::from(body.to_owned())).unwrap()
}

/// Submit a job; its URL.
async fn submit(app: &axum::Router, path: &str, body: &str, key: Option<&str>) -> String {
    let (status, headers, answer) = send(app, req("POST", path, body, key)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let location = headers[header::LOCATION].to_str().unwrap().to_owned();
    assert_eq!(answer["job"], location.as_str());
    assert_eq!(answer["status"], "accepted");
    assert_eq!(
        location,
        format!("/v1/jobs/{}", answer["id"].as_str().unwrap())
    );
    location
}

/// Poll a job until it leaves `accepted`.
async fn finished(app: &axum::Router, url: &str, key: Option<&str>) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, headers, job) = send(app, req("GET", url, "", key)).await;
        assert_eq!(status, StatusCode::OK, "{job}");
        if job["status"] != "accepted" {
            assert!(!headers.contains_key(header::RETRY_AFTER));
            return job;
        }
        assert_eq!(headers[header::RETRY_AFTER], "1");
        assert!(
            tokio::time::Instant::now() < deadline,
            "job still accepted: {job}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_job_route_accepts_work_that_a_pipeline_does_and_its_url_reports_the_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path()).await;
    let app = router(node.clone(), GatewayOptions::default());

    // Done: the function's output, with the job's id as its correlationid.
    let echo = submit(&app, "/jobs/echo", r#"{"n":1}"#, None).await;
    let job = finished(&app, &echo, None).await;
    let id = echo.trim_start_matches("/v1/jobs/");
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["id"], id);
    assert_eq!(job["route"], "echo");
    assert_eq!(job["requests"][0]["topic"], "work");
    assert!(job["requests"][0]["accepted_at"].is_string(), "{job}");
    let results = job["results"].as_array().unwrap();
    assert_eq!(results.len(), 1, "{job}");
    assert_eq!(results[0]["data"], serde_json::json!({"n": 1}));
    assert_eq!(results[0]["correlationid"], id);
    assert_eq!(results[0]["type"], "test.echo");
    assert!(job["error"].is_null());

    // Failed for good: the dead letter says why; nothing else is reported as its result.
    let fatal = submit(&app, "/jobs/fatal/x", r#"{"n":2}"#, None).await;
    let job = finished(&app, &fatal, None).await;
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["route"], "fatal");
    assert_eq!(job["results"], serde_json::json!([]));
    assert_eq!(job["error"]["reason"], "fatal", "{job}");
    assert!(
        job["error"]["message"]
            .as_str()
            .unwrap()
            .contains("is poison"),
        "{job}"
    );
    assert_eq!(
        job["error"]["dead_letter"]["data"],
        serde_json::json!({"n": 2})
    );

    // Done without outputs (the pipeline's filter passed it over): succeeded, no results.
    let skipped = submit(&app, "/jobs/skipped", r#"{"n":3}"#, None).await;
    let job = finished(&app, &skipped, None).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["results"], serde_json::json!([]));

    // An event published to the job topic without a job id is not a job, although the
    // pipeline processes it (and its output carries its id as correlationid).
    let forged = r#"{"specversion":"1.0","id":"f-1","source":"/routes/echo","type":"test.echo"}"#;
    let mut publish = req("POST", "/v1/topics/work/events", forged, None);
    publish.headers_mut().insert(
        header::CONTENT_TYPE,
        "application/cloudevents+json".parse().unwrap(),
    );
    let (status, _, answer) = send(&app, publish).await;
    assert!(status.is_success(), "{answer}");
    let (status, _, _) = send(&app, req("GET", "/v1/jobs/f-1", "", None)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // No such job.
    let (status, _, problem) = send(&app, req("GET", "/v1/jobs/nope", "", None)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(problem["type"], "urn:weir:problem:unknown-job", "{problem}");

    // The jobs survive a restart: the view is the node's own, kept on disk.
    node.shutdown().await;
    drop(app);
    drop(node);
    let node = start(dir.path()).await;
    let app = router(node.clone(), GatewayOptions::default());
    let job = finished(&app, &echo, None).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["results"].as_array().unwrap().len(), 1, "{job}");
    assert_eq!(finished(&app, &fatal, None).await["status"], "failed");
    node.shutdown().await;
}

#[tokio::test]
async fn only_the_callers_of_a_job_route_read_its_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path()).await;
    let keys = Arc::new(ApiKeyStore::open(dir.path()).unwrap());
    let role = |routes: &[&str]| RoleSpec {
        routes: routes.iter().map(|s| s.to_string()).collect(),
        ..RoleSpec::default()
    };
    let spec = AuthSpec {
        roles: BTreeMap::from([
            ("echoer".to_owned(), role(&["echo"])),
            ("other".to_owned(), role(&["fatal"])),
        ]),
        ..AuthSpec::default()
    };
    let options = GatewayOptions {
        auth: AuthSlot::new(
            Some(Authenticator::new(spec, keys.clone()).await.unwrap()),
            AuthSource::Flags,
        ),
        ..GatewayOptions::default()
    };
    let app = router(node.clone(), options);
    let key = |role: &str| keys.create("p", vec![role.to_owned()], None).unwrap().1;
    let (echoer, other) = (key("echoer"), key("other"));

    let (status, _, _) = send(&app, req("POST", "/jobs/echo", "{}", None)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, _) = send(&app, req("POST", "/jobs/echo", "{}", Some(&other))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let url = submit(&app, "/jobs/echo", "{}", Some(&echoer)).await;
    assert_eq!(
        finished(&app, &url, Some(&echoer)).await["status"],
        "succeeded"
    );
    let (status, _, _) = send(&app, req("GET", &url, "", None)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, problem) = send(&app, req("GET", &url, "", Some(&other))).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{problem}");
    // An unknown id tells an anonymous caller nothing; an authenticated one gets 404.
    let (status, _, _) = send(&app, req("GET", "/v1/jobs/nope", "", None)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, _) = send(&app, req("GET", "/v1/jobs/nope", "", Some(&other))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    node.shutdown().await;
}
