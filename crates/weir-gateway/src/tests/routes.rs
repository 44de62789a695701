//! `[routes]`: an HTTP handler (`guest-http-items`, a `wasi:http/incoming-handler`
//! component) serving CRUD on the key-value store and publishing change events, behind
//! the front door; and what a broken or hostile handler gets.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use tower::ServiceExt;
use weir_auth::{ApiKeyStore, Authenticator};
use weir_cloudevents::Data;
use weir_engine::{Node, NodeOptions};
use weir_manifest::{AuthSpec, RoleSpec};

use crate::{AuthSlot, AuthSource, GatewayOptions, router};

struct App {
    dir: tempfile::TempDir,
    node: Arc<Node>,
}

fn manifest_text(extra: &str) -> String {
    format!(
        r#"
[topics."items.changes"]
partitions = 1
[topics.secrets]
[keyvalue.items]
[functions.items]
source = "{wasm}"
limits = {{ deadline_ms = 300 }}
[functions.items.capabilities]
keyvalue = ["items"]
publish = ["items.changes"]
[routes.items]
path = "/items/{{id}}"
methods = ["GET", "PUT", "DELETE"]
function = "items"
[routes.misbehave]
path = "/misbehave/{{*what}}"
function = "items"
{extra}"#,
        wasm = weir_test_support::test_guest("guest-http-items").display()
    )
}

async fn app(extra: &str) -> Result<App, weir_engine::Error> {
    let dir = tempfile::tempdir().unwrap();
    let manifest =
        weir_manifest::Manifest::from_toml_str(&manifest_text(extra), dir.path()).unwrap();
    let log = weir_log_embedded::open_shared(&dir.path().join("data"), Default::default())
        .await
        .unwrap();
    let node = Node::start(NodeOptions::new(
        dir.path().join("data"),
        Some(manifest),
        log,
    ))
    .await?;
    Ok(App { dir, node })
}

async fn send(
    app: &axum::Router,
    req: Request<Body>,
) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let res = app.clone().oneshot(req).await.unwrap();
    let (parts, body) = res.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes().to_vec();
    (parts.status, parts.headers, bytes)
}

fn req(method: &str, uri: &str, body: &str) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(uri)
        .header(header::HOST, "api.example.com")
        .body(Body::from(body.to_owned()))
        .unwrap()
}

fn json(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(bytes)))
}

#[tokio::test]
async fn a_wasi_http_handler_serves_crud_on_the_key_value_store_and_publishes_durably() {
    let app = app("").await.unwrap();
    let api = router(app.node.clone(), GatewayOptions::default());

    let (status, _, body) = send(&api, req("GET", "/items/pen", "")).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "{}",
        String::from_utf8_lossy(&body)
    );
    let (status, headers, body) = send(&api, req("PUT", "/items/pen", r#"{"price":3}"#)).await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&body)
    );
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    assert_eq!(json(&body)["offset"], 0);
    let (status, _, body) = send(&api, req("PUT", "/items/pen", r#"{"price":4}"#)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json(&body)["offset"], 1);
    let (status, _, body) = send(&api, req("GET", "/items/pen", "")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json(&body), serde_json::json!({"price": 4}));
    // The store is weir's own: the admin API sees what the handler wrote.
    let (status, _, body) = send(&api, req("GET", "/v1/kv/items/pen", "")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json(&body), serde_json::json!({"price": 4}));
    let (status, _, _) = send(&api, req("DELETE", "/items/pen", "")).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _, _) = send(&api, req("GET", "/items/pen", "")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Every change was published, with an id, the route as source and a time.
    let events = app.node.read("items.changes", 0, 0, 10).await.unwrap();
    let ops: Vec<_> = events
        .iter()
        .map(|e| {
            let Some(Data::Json(data)) = &e.event.data else {
                panic!("JSON data");
            };
            let data: serde_json::Value = serde_json::from_str(data.as_str()).unwrap();
            (
                data["op"].as_str().unwrap().to_owned(),
                e.event.source.clone(),
            )
        })
        .collect();
    assert_eq!(
        ops,
        [
            ("put".to_owned(), "/routes/items".to_owned()),
            ("put".to_owned(), "/routes/items".to_owned()),
            ("delete".to_owned(), "/routes/items".to_owned()),
        ]
    );
    assert!(
        events
            .iter()
            .all(|e| !e.event.id.is_empty() && e.event.time.is_some())
    );

    // The route's methods only, with Allow; paths nobody routes are 404.
    let (status, headers, _) = send(&api, req("POST", "/items/pen", "")).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(headers[header::ALLOW], "GET, PUT, DELETE");
    let (status, headers, _) = send(&api, req("GET", "/nowhere", "")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(headers[header::CONTENT_TYPE], "application/problem+json");
    // weir's own API is untouched by routes.
    let (status, _, _) = send(&api, req("GET", "/healthz", "")).await;
    assert_eq!(status, StatusCode::OK);
    drop(app.dir);
}

#[tokio::test]
async fn a_broken_or_hostile_handler_gets_a_clear_error_and_the_node_keeps_serving() {
    let roomy = format!(
        "[functions.roomy]\nsource = \"{wasm}\"\n\
         limits = {{ deadline_ms = 5000, max_output_bytes = 8388608 }}\n\
         [routes.roomy]\npath = \"/reused/misbehave/huge\"\nfunction = \"roomy\"\n",
        wasm = weir_test_support::test_guest("guest-http-items").display()
    );
    let app = app(&roomy).await.unwrap();
    let api = router(app.node.clone(), GatewayOptions::default());
    let problem = |body: &[u8]| json(body)["type"].as_str().unwrap_or_default().to_owned();

    // Past its deadline: 504, the function named; also when it waits on the host (a body
    // filled before it was handed over) rather than computes.
    for what in ["spin", "stuck"] {
        let sent = send(&api, req("GET", &format!("/misbehave/{what}"), ""));
        let (status, _, body) = tokio::time::timeout(std::time::Duration::from_secs(10), sent)
            .await
            .unwrap_or_else(|_| panic!("{what}: the call outlived its deadline"));
        assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{what}");
        assert_eq!(problem(&body), "urn:weir:problem:function-deadline");
        assert!(String::from_utf8_lossy(&body).contains("items"));
    }
    // A trap, no response, a body over max_output_bytes: 500 with the reason.
    for (what, reason) in [
        ("trap", "trap"),
        ("silent", "without setting a response"),
        ("huge", "max_output_bytes"),
    ] {
        let (status, _, body) = send(&api, req("GET", &format!("/misbehave/{what}"), "")).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{what}");
        assert_eq!(problem(&body), "urn:weir:problem:function-failed", "{what}");
        let text = String::from_utf8_lossy(&body).to_lowercase();
        assert!(text.contains(reason), "{what}: {text}");
    }
    // The same body under a function whose limit allows it: all 4 MiB arrive, written in
    // 4 KiB chunks, far more than the body's buffer holds (the request's task drains it
    // while the guest writes).
    let (status, _, body) = send(&api, req("GET", "/reused/misbehave/huge", "")).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert_eq!(body.len(), 4 << 20);
    assert!(body.iter().all(|b| *b == b'x'));
    // Publishing to a topic not granted: the capability is denied, whatever the handler
    // answers, and nothing reaches the topic.
    let (status, _, body) = send(&api, req("GET", "/misbehave/publish-elsewhere", "")).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(String::from_utf8_lossy(&body).contains("secrets"));
    let secrets = app.node.read("secrets", 0, 0, 10).await.unwrap();
    assert!(secrets.is_empty());
    // A body over the node's limit is refused before the handler runs.
    let options = GatewayOptions {
        max_body_bytes: 1024,
        ..GatewayOptions::default()
    };
    let small = router(app.node.clone(), options);
    let (status, _, _) = send(&small, req("PUT", "/items/big", &"x".repeat(4096))).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    // And the handler still serves.
    let (status, _, body) = send(&api, req("PUT", "/items/ok", "{}")).await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&body)
    );
}

#[tokio::test]
async fn a_route_that_allows_it_reuses_instances_and_never_one_that_failed() {
    let extra = "[routes.count]\npath = \"/count\"\nfunction = \"items\"\n\
                 [routes.reused]\npath = \"/reused/{*what}\"\nfunction = \"items\"\n\
                 instance_reuse = 3\n";
    let app = app(extra).await.unwrap();
    let api = router(app.node.clone(), GatewayOptions::default());
    let count = |path: &'static str| {
        let api = api.clone();
        async move {
            let (status, _, body) = send(&api, req("GET", path, "")).await;
            assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
            String::from_utf8(body).unwrap()
        }
    };
    // By default every request has a fresh instance.
    for _ in 0..3 {
        assert_eq!(count("/count").await, "1");
    }
    // With instance_reuse = 3, an instance serves three requests, then a fresh one comes.
    for expected in ["1", "2", "3", "1"] {
        assert_eq!(count("/reused/count").await, expected);
    }
    // A request that failed drops its instance (it had calls left): the next is fresh.
    let (status, _, _) = send(&api, req("GET", "/reused/misbehave/trap", "")).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(count("/reused/count").await, "1");
    // A handler that returns with its response body open: the client is answered (the
    // instance is dropped, which ends the body) and the instance is not reused.
    let sent = send(&api, req("GET", "/reused/misbehave/open", ""));
    let (status, _, body) = tokio::time::timeout(std::time::Duration::from_secs(10), sent)
        .await
        .expect("a response body left open must not hold the request");
    assert!(
        status == StatusCode::OK || status == StatusCode::INTERNAL_SERVER_ERROR,
        "{status}: {}",
        String::from_utf8_lossy(&body)
    );
    assert_eq!(count("/reused/count").await, "1");
    drop(app.dir);
}

/// A route's requests run about one per core at once, but a request whose handler waits
/// on the network stands aside while it waits: an upstream that answers only once more
/// requests than the node has cores are waiting on it at once gets them all, and every
/// request is answered (with waits counted against the route's threads, only one per
/// core would reach it, and all would end at their deadline).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_waiting_on_the_network_do_not_hold_up_the_route() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let cores = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
    let at_once = 2 * cores + 2;
    // The upstream: holds every request until `at_once` of them wait on it together.
    let waiting = Arc::new(AtomicUsize::new(0));
    let (all_in, released) = tokio::sync::watch::channel(false);
    let upstream = axum::Router::new().route(
        "/slow",
        axum::routing::get(move || {
            let (waiting, all_in, mut released) =
                (waiting.clone(), all_in.clone(), released.clone());
            async move {
                if waiting.fetch_add(1, Ordering::SeqCst) + 1 == at_once {
                    let _ = all_in.send(true);
                }
                let _ = released.wait_for(|all| *all).await;
                "from upstream"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, upstream).await });
    let extra = format!(
        "[functions.facade]\nsource = \"{wasm}\"\nlimits = {{ deadline_ms = 20000 }}\n\
         config = {{ upstream = \"http://127.0.0.1:{port}/slow\" }}\n\
         capabilities = {{ http = [\"127.0.0.1:{port}\"], http_timeout_ms = 20000 }}\n\
         [routes.facade]\npath = \"/fetch\"\nfunction = \"facade\"\n",
        wasm = weir_test_support::test_guest("guest-http-items").display()
    );
    let app = app(&extra).await.unwrap();
    let api = router(app.node.clone(), GatewayOptions::default());
    let requests = (0..at_once).map(|_| {
        let api = api.clone();
        tokio::spawn(async move { send(&api, req("GET", "/fetch", "")).await })
    });
    for answered in futures::future::join_all(requests.collect::<Vec<_>>()).await {
        let (status, _, body) = answered.unwrap();
        let body = String::from_utf8_lossy(&body);
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body, "from upstream");
    }
    drop(app.dir);
}

#[tokio::test]
async fn routes_need_a_role_that_names_them_unless_public() {
    let app =
        app("[routes.hook]\npath = \"/hooks/{*rest}\"\nfunction = \"items\"\npublic = true\n")
            .await
            .unwrap();
    let keys = Arc::new(ApiKeyStore::open(app.dir.path()).unwrap());
    let role = |routes: &[&str]| RoleSpec {
        routes: routes.iter().map(|s| s.to_string()).collect(),
        ..RoleSpec::default()
    };
    let spec = AuthSpec {
        roles: BTreeMap::from([
            ("caller".to_owned(), role(&["items"])),
            ("other".to_owned(), role(&["misbehave"])),
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
    let api = router(app.node.clone(), options);
    let key = |roles: &[&str]| {
        keys.create("p", roles.iter().map(|r| r.to_string()).collect(), None)
            .unwrap()
            .1
    };
    let with = |key: &str| {
        let mut r = req("PUT", "/items/pen", "{}");
        r.headers_mut().insert(
            header::AUTHORIZATION,
            format!("Bearer {key}").parse().unwrap(),
        );
        r
    };
    let (status, _, _) = send(&api, req("PUT", "/items/pen", "{}")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, body) = send(&api, with(&key(&["other"]))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(String::from_utf8_lossy(&body).contains("routes = [\\\"items\\\"]"));
    let (status, _, _) = send(&api, with(&key(&["caller"]))).await;
    assert_eq!(status, StatusCode::CREATED);
    // A public route answers without a credential (its handler checks what it must).
    let (status, _, _) = send(&api, req("GET", "/hooks/anything", "")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "the handler's own 404");
}

#[tokio::test]
async fn a_route_to_a_function_that_is_not_an_http_handler_stops_the_start() {
    let extra = format!(
        "[functions.echo]\nsource = \"{}\"\n[routes.echo]\npath = \"/echo\"\nfunction = \"echo\"\n",
        weir_test_support::test_guest("guest-echo").display()
    );
    let error = app(&extra)
        .await
        .err()
        .expect("the start fails")
        .to_string();
    assert!(
        error.contains("echo") && error.contains("incoming-handler"),
        "{error}"
    );
}

#[tokio::test]
async fn a_deploy_changes_the_routes_without_a_restart() {
    let app = app("").await.unwrap();
    let api = router(app.node.clone(), GatewayOptions::default());
    let (status, _, body) = send(&api, req("GET", "/hello", "")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(String::from_utf8_lossy(&body).contains("[routes]"));
    // The items route goes, a hello route comes.
    let text = manifest_text("[routes.hello]\npath = \"/hello\"\nfunction = \"items\"\n")
        .replace("path = \"/items/{id}\"", "path = \"/gone/{id}\"");
    let wasm = std::fs::read(weir_test_support::test_guest("guest-http-items")).unwrap();
    app.node
        .deploy_app(&text, BTreeMap::from([("items".to_owned(), wasm)]))
        .await
        .unwrap();
    let (status, _, body) = send(&api, req("GET", "/hello", "")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, b"hello\n");
    let (status, _, body) = send(&api, req("GET", "/items/pen", "")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(String::from_utf8_lossy(&body).contains("[routes]"));
}

/// Python, signing as each sender does: `standardwebhooks`' own signer, and the HMACs
/// GitHub and Stripe document. Prints the signature header's value.
fn python_sign(scheme: &str, secret: &str, id: &str, timestamp: i64, body: &str) -> String {
    let python = weir_test_support::script_guests::ensure_standardwebhooks().unwrap();
    let script = r#"
import sys, hmac, hashlib, datetime
scheme, secret, msg_id, ts, body = sys.argv[1:6]
if scheme == "standard-webhooks":
    from standardwebhooks.webhooks import Webhook
    at = datetime.datetime.fromtimestamp(int(ts), tz=datetime.timezone.utc)
    print(Webhook(secret).sign(msg_id, at, body))
elif scheme == "github":
    print("sha256=" + hmac.new(secret.encode(), body.encode(), hashlib.sha256).hexdigest())
else:
    signed = (ts + "." + body).encode()
    print("t=" + ts + ",v1=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest())
"#;
    let out = std::process::Command::new(python)
        .args([
            "-c",
            script,
            scheme,
            secret,
            id,
            &timestamp.to_string(),
            body,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[tokio::test]
async fn inbound_webhooks_verify_each_senders_signature_and_store_each_delivery_durably() {
    const SW_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let dir = tempfile::tempdir().unwrap();
    for (file, secret) in [
        ("sw.secret", SW_SECRET),
        ("gh.secret", "It's a Secret to Everybody"),
        ("stripe.secret", "whsec_stripe_test_secret"),
    ] {
        std::fs::write(dir.path().join(file), secret).unwrap();
    }
    let file = |name: &str| dir.path().join(name).display().to_string();
    let extra = format!(
        r#"
[topics.hooks]
[routes.sw]
path = "/hooks/sw"
topic = "hooks"
verify = "standard-webhooks"
secret = {{ file = "{}" }}
public = true
[routes.github]
path = "/hooks/github"
topic = "hooks"
verify = "github"
secret = [{{ file = "{}" }}]
public = true
[routes.stripe]
path = "/hooks/stripe"
topic = "hooks"
verify = "stripe"
secret = {{ file = "{}" }}
type = "com.example.payment"
public = true
"#,
        file("sw.secret"),
        file("gh.secret"),
        file("stripe.secret")
    );
    let app = app(&extra).await.unwrap();
    let api = router(app.node.clone(), GatewayOptions::default());
    let now = jiff::Timestamp::now().as_second();
    let post = |path: &str, body: &str, headers: &[(&str, String)]| {
        let mut r = req("POST", path, body);
        r.headers_mut()
            .insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
        for (name, value) in headers {
            r.headers_mut().insert(
                axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        r
    };

    // Standard Webhooks, signed by the reference library.
    let body = r#"{"type":"invoice.paid","timestamp":"2026-12-05T08:00:00Z","data":{"n":1}}"#;
    let signature = python_sign("standard-webhooks", SW_SECRET, "msg_1", now, body);
    let headers = [
        ("webhook-id", "msg_1".to_owned()),
        ("webhook-timestamp", now.to_string()),
        ("webhook-signature", signature.clone()),
    ];
    let (status, _, answer) = send(&api, post("/hooks/sw", body, &headers)).await;
    assert_eq!(
        status,
        StatusCode::ACCEPTED,
        "{}",
        String::from_utf8_lossy(&answer)
    );
    assert_eq!(json(&answer)["id"], "msg_1");
    assert_eq!(json(&answer)["offset"], 0);
    // Tampered with, replayed too late, unsigned, or signed with another secret: 401,
    // nothing stored.
    let tampered = body.replace("\"n\":1", "\"n\":2");
    let (status, _, answer) = send(&api, post("/hooks/sw", &tampered, &headers)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(json(&answer)["type"], "urn:weir:problem:signature-invalid");
    let old = now - 3600;
    let late = [
        ("webhook-id", "msg_1".to_owned()),
        ("webhook-timestamp", old.to_string()),
        (
            "webhook-signature",
            python_sign("standard-webhooks", SW_SECRET, "msg_1", old, body),
        ),
    ];
    let (status, _, _) = send(&api, post("/hooks/sw", body, &late)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, _) = send(&api, post("/hooks/sw", body, &[])).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let other = python_sign(
        "standard-webhooks",
        "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "msg_1",
        now,
        body,
    );
    let forged = [
        ("webhook-id", "msg_1".to_owned()),
        ("webhook-timestamp", now.to_string()),
        ("webhook-signature", other),
    ];
    let (status, _, _) = send(&api, post("/hooks/sw", body, &forged)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // A redelivery is stored again with the same id: consumers deduplicate by it.
    let (status, _, answer) = send(&api, post("/hooks/sw", body, &headers)).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(json(&answer)["id"], "msg_1");

    // GitHub.
    let body = r#"{"ref":"refs/heads/main"}"#;
    let github = [
        (
            "x-hub-signature-256",
            python_sign("github", "It's a Secret to Everybody", "", 0, body),
        ),
        ("x-github-delivery", "72d3162e-cc78-11e3".to_owned()),
        ("x-github-event", "push".to_owned()),
    ];
    let (status, _, answer) = send(&api, post("/hooks/github", body, &github)).await;
    assert_eq!(
        status,
        StatusCode::ACCEPTED,
        "{}",
        String::from_utf8_lossy(&answer)
    );
    let (status, _, _) = send(&api, post("/hooks/github", "{}", &github)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Stripe.
    let body = r#"{"id":"evt_1","type":"payment_intent.succeeded"}"#;
    let stripe = [(
        "stripe-signature",
        python_sign("stripe", "whsec_stripe_test_secret", "", now, body),
    )];
    let (status, _, answer) = send(&api, post("/hooks/stripe", body, &stripe)).await;
    assert_eq!(
        status,
        StatusCode::ACCEPTED,
        "{}",
        String::from_utf8_lossy(&answer)
    );
    let (status, _, _) = send(
        &api,
        post("/hooks/stripe", &body.replace('1', "2"), &stripe),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Webhook routes take POST unless they list methods.
    let (status, headers, _) = send(&api, req("GET", "/hooks/stripe", "")).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(headers[header::ALLOW], "POST");

    // Exactly the verified deliveries were stored, as events with the sender's ids and types.
    let stored = app.node.read("hooks", 0, 0, 100).await.unwrap();
    let seen: Vec<(String, String, String)> = stored
        .iter()
        .map(|e| {
            (
                e.event.id.clone(),
                e.event.ty.clone(),
                e.event.source.clone(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("msg_1".into(), "invoice.paid".into(), "/routes/sw".into()),
            ("msg_1".into(), "invoice.paid".into(), "/routes/sw".into()),
            (
                "72d3162e-cc78-11e3".into(),
                "com.github.push".into(),
                "/routes/github".into()
            ),
            (
                "evt_1".into(),
                "com.example.payment".into(),
                "/routes/stripe".into()
            ),
        ]
    );
    let Some(Data::Json(data)) = &stored[2].event.data else {
        panic!("JSON data");
    };
    assert_eq!(data.as_str(), r#"{"ref":"refs/heads/main"}"#);
}

#[tokio::test]
async fn an_inbound_webhook_whose_secret_is_missing_stops_the_start() {
    let extra = "[topics.hooks]\n[routes.sw]\npath = \"/hooks/sw\"\ntopic = \"hooks\"\nverify = \"github\"\nsecret = { env = \"WEIR_TEST_NO_SUCH_SECRET\" }\n";
    let error = app(extra).await.err().expect("the start fails").to_string();
    assert!(
        error.contains("WEIR_TEST_NO_SUCH_SECRET") && error.contains("sw"),
        "{error}"
    );
}
