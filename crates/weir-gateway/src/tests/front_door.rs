//! The front door: the auth matrix, route rules, API keys over HTTP, auth changed by a
//! deploy, every limit, connections, TLS, CORS, request ids and a flood of bad requests.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tower::ServiceExt;
use weir_auth::{ApiKeyStore, Authenticator};
use weir_manifest::{AuthSpec, JwtSpec, NodeLimits, RoleSpec, SecretSource};

use super::{Fixture, STRUCTURED, fixture, post};
use crate::{AuthSlot, AuthSource, GatewayOptions, router};

const SECRET: &str = "front-door-test-secret-of-32-bytes-or-more";
const EVENT: &str = r#"{"specversion":"1.0","id":"1","source":"s","type":"t","subject":"k"}"#;

fn auth_spec(secret: std::path::PathBuf) -> AuthSpec {
    let role = |publish: &[&str], subscribe: &[&str], admin: &[&str]| RoleSpec {
        publish: publish.iter().map(|s| s.to_string()).collect(),
        subscribe: subscribe.iter().map(|s| s.to_string()).collect(),
        admin: admin.iter().map(|s| s.to_string()).collect(),
        views: Vec::new(),
        routes: vec!["items".to_owned()],
    };
    AuthSpec {
        jwt: Some(JwtSpec {
            algorithms: vec![],
            secret: Some(SecretSource::File(secret)),
            public_key: None,
            jwks: None,
            jwks_refresh_secs: 300,
            issuer: None,
            audience: Some("weir".to_owned()),
            leeway_secs: 0,
            principal_claim: "sub".to_owned(),
            roles_claim: "roles".to_owned(),
        }),
        roles: BTreeMap::from([
            ("writer".to_owned(), role(&["orders"], &["orders"], &[])),
            ("reader".to_owned(), role(&[], &["orders"], &[])),
            ("operator".to_owned(), role(&[], &[], &["deploy", "kv"])),
        ]),
        ..AuthSpec::default()
    }
}

struct Door {
    f: Fixture,
    options: GatewayOptions,
    keys: Arc<ApiKeyStore>,
}

/// A node whose `[auth]` came from `weir serve` flags (a deploy without `[auth]` keeps
/// it); see [`door_from`].
async fn door(limits: NodeLimits) -> Door {
    door_from(limits, AuthSource::Flags).await
}

async fn door_from(limits: NodeLimits, source: AuthSource) -> Door {
    let f = fixture().await;
    let secret = f._dir.path().join("jwt.secret");
    std::fs::write(&secret, SECRET).unwrap();
    let keys = Arc::new(ApiKeyStore::open(f._dir.path()).unwrap());
    let auth = Authenticator::new(auth_spec(secret), keys.clone())
        .await
        .unwrap();
    let mut options = GatewayOptions::with_limits(limits);
    options.auth = AuthSlot::new(Some(auth), source);
    options.keys = Some(keys.clone());
    Door { f, options, keys }
}

/// Sends `req` to `app` (one router, so its limits' state is shared).
async fn send_to(
    app: &axum::Router,
    req: Request<Body>,
) -> (StatusCode, axum::http::HeaderMap, serde_json::Value) {
    let res = app.clone().oneshot(req).await.unwrap();
    let (parts, body) = res.into_parts();
    // Streams never end: read only what is there within a moment.
    let bytes = match tokio::time::timeout(Duration::from_millis(300), body.collect()).await {
        Ok(collected) => collected.unwrap().to_bytes(),
        Err(_) => Default::default(),
    };
    let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    (parts.status, parts.headers, json)
}

impl Door {
    fn key(&self, principal: &str, roles: &[&str]) -> String {
        self.keys
            .create(
                principal,
                roles.iter().map(|r| r.to_string()).collect(),
                None,
            )
            .unwrap()
            .1
    }

    async fn send(
        &self,
        req: Request<Body>,
    ) -> (StatusCode, axum::http::HeaderMap, serde_json::Value) {
        send_to(&router(self.f.node.clone(), self.options.clone()), req).await
    }
}

fn jwt(claims: serde_json::Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()).unwrap(),
    )
    .unwrap()
}

fn claims(roles: &[&str], exp_in: i64, aud: &str) -> serde_json::Value {
    json!({
        "sub": "jwt-user",
        "roles": roles,
        "aud": aud,
        "exp": jsonwebtoken::get_current_timestamp() as i64 + exp_in,
    })
}

fn with_token(mut req: Request<Body>, token: Option<&str>) -> Request<Body> {
    if let Some(token) = token {
        req.headers_mut().insert(
            header::AUTHORIZATION,
            format!("Bearer {token}").parse().unwrap(),
        );
    }
    req
}

/// Makes one request of the matrix.
type MakeRequest = fn() -> Request<Body>;

/// The five kinds of request of the matrix.
fn requests() -> Vec<(&'static str, MakeRequest)> {
    vec![
        ("publish", || post("orders", STRUCTURED, EVENT)),
        ("read", || {
            Request::get("/v1/topics/orders/events?partition=0&offset=0")
                .body(Body::empty())
                .unwrap()
        }),
        ("sse", || {
            Request::get("/v1/topics/orders/stream")
                .body(Body::empty())
                .unwrap()
        }),
        ("deploy", || {
            Request::post("/v1/deploy")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(
                    json!({"manifest": "[topics.orders]\npartitions = 2\n", "functions": {}})
                        .to_string(),
                ))
                .unwrap()
        }),
        ("kv", || {
            Request::put("/v1/kv/customers/c1")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from("{}"))
                .unwrap()
        }),
    ]
}

#[tokio::test]
async fn the_auth_matrix_answers_401_403_or_serves_with_the_reason_named() {
    let d = door(NodeLimits::default()).await;
    let writer = d.key("alice", &["writer"]);
    let operator = d.key("olga", &["operator"]);
    let (revoked_info, revoked) = d.keys.create("rex", vec!["writer".into()], None).unwrap();
    d.keys.revoke(&revoked_info.id).unwrap();
    let unknown = format!("weir_{}_{}", "a".repeat(16), "b".repeat(64));
    let good_jwt = jwt(claims(&["writer"], 60, "weir"), SECRET);
    let bad_signature = jwt(
        claims(&["writer"], 60, "weir"),
        "another-secret-of-at-least-32-bytes!!",
    );
    let expired = jwt(claims(&["writer"], -60, "weir"), SECRET);
    let wrong_audience = jwt(claims(&["writer"], 60, "billing"), SECRET);

    let refused: [(&str, Option<&str>, StatusCode, &str); 6] = [
        (
            "no token",
            None,
            StatusCode::UNAUTHORIZED,
            "missing-credentials",
        ),
        (
            "bad signature",
            Some(&bad_signature),
            StatusCode::UNAUTHORIZED,
            "bad-signature",
        ),
        (
            "expired",
            Some(&expired),
            StatusCode::UNAUTHORIZED,
            "token-expired",
        ),
        (
            "wrong audience",
            Some(&wrong_audience),
            StatusCode::UNAUTHORIZED,
            "wrong-audience",
        ),
        (
            "unknown key",
            Some(&unknown),
            StatusCode::UNAUTHORIZED,
            "unknown-key",
        ),
        (
            "revoked key",
            Some(&revoked),
            StatusCode::UNAUTHORIZED,
            "revoked-key",
        ),
    ];
    for (what, make) in requests() {
        for (case, token, status, code) in &refused {
            let (got, headers, body) = d.send(with_token(make(), *token)).await;
            assert_eq!(got, *status, "{what} with {case}: {body}");
            assert_eq!(
                body["type"],
                format!("urn:weir:problem:{code}"),
                "{what} with {case}"
            );
            assert!(
                headers.contains_key(header::WWW_AUTHENTICATE),
                "{what} with {case}"
            );
            assert!(crate::is_problem(&headers));
        }
        // Who may and who may not.
        let (allowed, denied) = match what {
            "publish" | "read" | "sse" => (vec![&writer, &good_jwt], vec![&operator]),
            _ => (vec![&operator], vec![&writer, &good_jwt]),
        };
        for token in denied {
            let (got, _, body) = d.send(with_token(make(), Some(token))).await;
            assert_eq!(got, StatusCode::FORBIDDEN, "{what} denied: {body}");
            assert_eq!(body["type"], "urn:weir:problem:forbidden");
            assert!(
                body["detail"]
                    .as_str()
                    .unwrap()
                    .contains("it needs a role with"),
                "{body}"
            );
        }
        for token in allowed {
            let (got, _, body) = d.send(with_token(make(), Some(token))).await;
            assert!(
                got != StatusCode::UNAUTHORIZED && got != StatusCode::FORBIDDEN,
                "{what} allowed, got {got}: {body}"
            );
            if what != "kv" {
                assert!(got.is_success(), "{what} allowed, got {got}: {body}");
            }
        }
    }
    // A topic the writer has no rule for.
    let (got, _, body) = d
        .send(with_token(post("other", STRUCTURED, EVENT), Some(&writer)))
        .await;
    assert_eq!(got, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("\"other\""),
        "{body}"
    );
    // Health stays open; status does not.
    for path in ["/healthz", "/readyz"] {
        let (got, _, _) = d
            .send(Request::get(path).body(Body::empty()).unwrap())
            .await;
        assert_eq!(got, StatusCode::OK, "{path}");
    }
    let (got, _, _) = d
        .send(Request::get("/v1/status").body(Body::empty()).unwrap())
        .await;
    assert_eq!(got, StatusCode::UNAUTHORIZED);
}

#[test]
fn every_route_has_an_explicit_rule() {
    let doc = crate::openapi();
    for (path, item) in &doc.paths.paths {
        let methods = [
            (Method::GET, item.get.is_some()),
            (Method::POST, item.post.is_some()),
            (Method::PUT, item.put.is_some()),
            (Method::DELETE, item.delete.is_some()),
        ];
        for (method, present) in methods {
            if !present {
                continue;
            }
            let action = crate::auth::action(&method, path, |_| Some("t"), false);
            match path.as_str() {
                "/healthz" | "/readyz" => assert_eq!(action, None, "{path}"),
                // Decided by its handler once it knows the job's route (tests::jobs).
                "/v1/jobs/{id}" => assert_eq!(action, None, "{path}"),
                _ => assert!(
                    action.is_some() && action != Some(weir_auth::Action::FullAdmin),
                    "{method} {path} has no rule of its own: {action:?}"
                ),
            }
        }
    }
}

#[tokio::test]
async fn keys_are_made_used_and_revoked_over_http_by_the_keys_admin() {
    let d = door(NodeLimits::default()).await;
    let admin = d.key("root", &["admin"]);
    let writer = d.key("alice", &["writer"]);
    let create = |token: &str, roles: serde_json::Value| {
        with_token(
            Request::post("/v1/auth/keys")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(
                    json!({"principal": "svc", "roles": roles}).to_string(),
                ))
                .unwrap(),
            Some(token),
        )
    };
    let (got, _, _) = d.send(create(&writer, json!(["writer"]))).await;
    assert_eq!(got, StatusCode::FORBIDDEN);
    let (got, _, body) = d.send(create(&admin, json!(["nobody"]))).await;
    assert_eq!(got, StatusCode::BAD_REQUEST, "{body}");
    let (got, _, body) = d.send(create(&admin, json!(["writer"]))).await;
    assert_eq!(got, StatusCode::CREATED, "{body}");
    let key = body["key"].as_str().unwrap().to_owned();
    let id = body["id"].as_str().unwrap().to_owned();
    let (got, _, body) = d
        .send(with_token(post("orders", STRUCTURED, EVENT), Some(&key)))
        .await;
    assert_eq!(got, StatusCode::ACCEPTED, "{body}");
    let (_, _, list) = d
        .send(with_token(
            Request::get("/v1/auth/keys").body(Body::empty()).unwrap(),
            Some(&admin),
        ))
        .await;
    assert!(list.to_string().contains(&id));
    assert!(
        !list.to_string().contains(&key),
        "a listing never shows a secret"
    );
    let (got, _, _) = d
        .send(with_token(
            Request::delete(format!("/v1/auth/keys/{id}"))
                .body(Body::empty())
                .unwrap(),
            Some(&admin),
        ))
        .await;
    assert_eq!(got, StatusCode::OK);
    let (got, _, body) = d
        .send(with_token(post("orders", STRUCTURED, EVENT), Some(&key)))
        .await;
    assert_eq!(got, StatusCode::UNAUTHORIZED);
    assert_eq!(body["type"], "urn:weir:problem:revoked-key");
}

#[tokio::test]
async fn only_the_admin_role_changes_auth_by_deploy_and_the_change_takes_effect() {
    let d = door_from(NodeLimits::default(), AuthSource::Manifest).await;
    let operator = d.key("olga", &["operator"]);
    let admin = d.key("root", &["admin"]);
    let reader = d.key("rita", &["reader"]);
    // The new [auth] lets readers publish to orders too.
    let manifest = r#"
[topics.orders]
partitions = 2
[auth.roles.writer]
publish = ["orders"]
subscribe = ["orders"]
[auth.roles.reader]
publish = ["orders"]
subscribe = ["orders"]
[auth.roles.operator]
admin = ["deploy", "kv"]
"#;
    let deploy = |token: &str| {
        with_token(
            Request::post("/v1/deploy")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(
                    json!({"manifest": manifest, "functions": {}}).to_string(),
                ))
                .unwrap(),
            Some(token),
        )
    };
    let (got, _, body) = d.send(deploy(&operator)).await;
    assert_eq!(got, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("\"admin\""),
        "{body}"
    );
    let (got, _, _) = d
        .send(with_token(post("orders", STRUCTURED, EVENT), Some(&reader)))
        .await;
    assert_eq!(got, StatusCode::FORBIDDEN);

    let (got, _, body) = d.send(deploy(&admin)).await;
    assert_eq!(got, StatusCode::OK, "{body}");
    let (got, _, body) = d
        .send(with_token(post("orders", STRUCTURED, EVENT), Some(&reader)))
        .await;
    assert_eq!(got, StatusCode::ACCEPTED, "{body}");
    // The same [auth] again is no change: the operator may deploy it.
    let (got, _, body) = d.send(deploy(&operator)).await;
    assert_eq!(got, StatusCode::OK, "{body}");
    // Without [auth] it would open the API: refused.
    let open = with_token(
        Request::post("/v1/deploy")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(
                json!({"manifest": "[topics.orders]\npartitions = 2\n", "functions": {}})
                    .to_string(),
            ))
            .unwrap(),
        Some(&admin),
    );
    let (got, _, body) = d.send(open).await;
    assert_eq!(got, StatusCode::CONFLICT, "{body}");
}

fn sse(token: &str, query: &str) -> Request<Body> {
    with_token(
        Request::get(format!("/v1/topics/orders/stream{query}"))
            .body(Body::empty())
            .unwrap(),
        Some(token),
    )
}

#[tokio::test]
async fn subscription_group_rate_and_time_limits_answer_and_the_node_keeps_serving() {
    let limits = NodeLimits {
        max_subscriptions: 2,
        max_subscriptions_per_principal: 1,
        request_timeout_ms: 300,
        ..NodeLimits::default()
    };
    let d = door(limits).await;
    let alice = d.key("alice", &["writer"]);
    let carol = d.key("carol", &["reader"]);
    let dave = d.key("dave", &["reader"]);
    let app = router(d.f.node.clone(), d.options.clone());

    // Per principal: alice's second stream waits for her first to end.
    let first = app.clone().oneshot(sse(&alice, "")).await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    let (got, headers, body) = send_to(&app, sse(&alice, "")).await;
    assert_eq!(got, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["type"], "urn:weir:problem:too-many-subscriptions");
    assert!(headers.contains_key(header::RETRY_AFTER));
    drop(first);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let again = app.clone().oneshot(sse(&alice, "")).await.unwrap();
    assert_eq!(again.status(), StatusCode::OK);

    // In all: two streams; a third principal's is refused with 503.
    let third = app.clone().oneshot(sse(&carol, "")).await.unwrap();
    assert_eq!(third.status(), StatusCode::OK);
    let (got, _, body) = send_to(&app, sse(&dave, "")).await;
    assert_eq!(got, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["type"], "urn:weir:problem:too-many-subscriptions");

    // A body that never finishes: 503 after the request timeout.
    let stalled = Body::from_stream(futures::StreamExt::chain(
        futures::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from_static(
            b"{\"specversion\"",
        ))]),
        futures::stream::pending(),
    ));
    let req = with_token(
        Request::post("/v1/topics/orders/events")
            .header(header::CONTENT_TYPE, STRUCTURED)
            .body(stalled)
            .unwrap(),
        Some(&alice),
    );
    let (got, _, body) = send_to(&app, req).await;
    assert_eq!(got, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["type"], "urn:weir:problem:request-timeout");

    // Still serving.
    let (got, _, body) = send_to(
        &app,
        with_token(post("orders", STRUCTURED, EVENT), Some(&alice)),
    )
    .await;
    assert_eq!(got, StatusCode::ACCEPTED, "{body}");
    drop((again, third));
}

#[tokio::test]
async fn client_groups_over_the_limit_get_429_and_a_freed_one_is_reusable() {
    let dir = tempfile::tempdir().unwrap();
    let log = weir_log_embedded::open_shared(dir.path(), Default::default())
        .await
        .unwrap();
    let mut options = weir_engine::NodeOptions::new(dir.path().to_path_buf(), None, log);
    options.max_client_groups = 1;
    let node = weir_engine::Node::start(options).await.unwrap();
    node.log()
        .create_topic("orders", &weir_log::TopicSpec::with_partitions(2))
        .await
        .unwrap();
    let app = router(node, GatewayOptions::default());
    let get = |query: &str| {
        Request::get(format!("/v1/topics/orders/stream{query}"))
            .body(Body::empty())
            .unwrap()
    };
    let grouped = app.clone().oneshot(get("?group=g1")).await.unwrap();
    assert_eq!(grouped.status(), StatusCode::OK);
    let (got, headers, body) = send_to(&app, get("?group=g2")).await;
    assert_eq!(got, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["type"], "urn:weir:problem:too-many-groups");
    assert!(headers.contains_key(header::RETRY_AFTER));
    // A second member of the same group is not a new group.
    let member = app.clone().oneshot(get("?group=g1")).await.unwrap();
    assert_eq!(member.status(), StatusCode::OK);
    drop((grouped, member));
    let mut freed = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let res = app.clone().oneshot(get("?group=g2")).await.unwrap();
        if res.status() == StatusCode::OK {
            freed = true;
            break;
        }
    }
    assert!(freed, "g1 was never let go");
}

#[tokio::test]
async fn a_principal_over_its_rate_gets_429_with_retry_after_and_others_do_not() {
    let d = door(NodeLimits {
        rate_limit_per_sec: 1,
        rate_limit_burst: 3,
        ..NodeLimits::default()
    })
    .await;
    let alice = d.key("alice", &["writer"]);
    let bob = d.key("bob", &["writer"]);
    let app = router(d.f.node.clone(), d.options.clone());
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let res = app
            .clone()
            .oneshot(with_token(post("orders", STRUCTURED, EVENT), Some(&alice)))
            .await
            .unwrap();
        statuses.push((
            res.status(),
            res.headers().get(header::RETRY_AFTER).cloned(),
        ));
    }
    assert!(
        statuses[..3]
            .iter()
            .all(|(s, _)| *s == StatusCode::ACCEPTED),
        "{statuses:?}"
    );
    for (status, retry_after) in &statuses[3..] {
        assert_eq!(*status, StatusCode::TOO_MANY_REQUESTS);
        assert!(retry_after.is_some());
    }
    let (got, _, _) = send_to(
        &app,
        with_token(post("orders", STRUCTURED, EVENT), Some(&bob)),
    )
    .await;
    assert_eq!(got, StatusCode::ACCEPTED, "bob has his own budget");
}

/// A node served on a real socket with `options`; returns its address.
async fn serve(f: &Fixture, options: GatewayOptions) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let node = f.node.clone();
    tokio::spawn(crate::serve(
        listener,
        node,
        options,
        std::future::pending(),
    ));
    addr
}

async fn raw_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn connections_over_the_limit_get_503_and_the_node_recovers() {
    let f = fixture().await;
    let options = GatewayOptions::with_limits(NodeLimits {
        max_connections: 2,
        ..NodeLimits::default()
    });
    let addr = serve(&f, options).await;
    let idle1 = tokio::net::TcpStream::connect(addr).await.unwrap();
    let idle2 = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let answer = raw_get(addr, "/healthz").await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("too-many-connections"), "{answer}");
    drop((idle1, idle2));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let answer = raw_get(addr, "/healthz").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn tls_cors_and_request_ids() {
    let f = fixture().await;
    let options = GatewayOptions {
        tls: Some(crate::TlsFiles {
            cert: weir_test_support::auth_fixture("tls-cert.pem"),
            key: weir_test_support::auth_fixture("tls-key.pem"),
        }),
        cors: Some(weir_manifest::CorsSpec {
            origins: vec!["https://app.example.com".to_owned()],
            max_age_secs: 60,
        }),
        ..GatewayOptions::default()
    };
    let addr = serve(&f, options).await;
    // A client that connects and never handshakes holds up nobody.
    let _silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    let cert = reqwest::Certificate::from_pem(
        &std::fs::read(weir_test_support::auth_fixture("tls-cert.pem")).unwrap(),
    )
    .unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(cert)
        .build()
        .unwrap();
    let url = format!("https://localhost:{}/healthz", addr.port());
    let res = client.get(&url).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let id = res.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(id.len(), 36, "a UUID: {id}");
    let res = client
        .get(&url)
        .header("x-request-id", "my-request-7")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-request-id"], "my-request-7");
    // Plain HTTP to the TLS port gets nothing usable.
    let plain = raw_get(addr, "/healthz").await;
    assert!(!plain.contains("200 OK"), "{plain}");

    let preflight = |origin: &'static str| {
        client
            .request(
                reqwest::Method::OPTIONS,
                format!("https://localhost:{}/v1/topics/orders/events", addr.port()),
            )
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "authorization,ce-id")
            .send()
    };
    let res = preflight("https://app.example.com").await.unwrap();
    assert_eq!(
        res.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    let res = preflight("https://evil.example.com").await.unwrap();
    assert!(!res.headers().contains_key("access-control-allow-origin"));
}

#[tokio::test]
async fn a_thousand_malformed_requests_leave_the_node_healthy() {
    let d = door(NodeLimits::default()).await;
    let writer = d.key("alice", &["writer"]);
    let addr = serve(&d.f, d.options.clone()).await;
    let client = reqwest::Client::new();
    let url = format!("http://{addr}/v1/topics/orders/events");
    let mut rng = fastrand::Rng::with_seed(14);
    let mut statuses = BTreeMap::new();
    for i in 0..1000 {
        let garbage: String = (0..rng.usize(0..80)).map(|_| rng.alphanumeric()).collect();
        let authorization = match i % 8 {
            0 => format!("Bearer {garbage}"),
            1 => format!("Bearer weir_{garbage}_{garbage}"),
            2 => format!("Basic {garbage}"),
            3 => format!("Bearer {garbage}.{garbage}.{garbage}"),
            4 => format!("Bearer eyJhbGciOiJub25lIn0.{garbage}."),
            5 => "Bearer ".to_owned() + &"A".repeat(20_000),
            _ => format!("Bearer {writer}"),
        };
        let body: Vec<u8> = match i % 3 {
            0 => (0..rng.usize(0..512)).map(|_| rng.u8(..)).collect(),
            1 => format!("{{\"specversion\":\"1.0\",\"id\":{garbage:?}}}").into_bytes(),
            _ => b"[{\"specversion\":\"1.0\"}, 7]".to_vec(),
        };
        let content_type = [
            "application/cloudevents+json",
            "text/plain",
            "application/json",
            "\u{1}",
        ][i % 4];
        let res = client
            .post(&url)
            .header("authorization", authorization)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await;
        let status = match res {
            Ok(res) => {
                assert!(
                    res.status().is_client_error(),
                    "request {i}: {}",
                    res.status()
                );
                res.status().as_u16()
            }
            // A header the client itself refuses to send.
            Err(_) => 0,
        };
        *statuses.entry(status).or_insert(0) += 1;
    }
    assert!(
        statuses.get(&401).copied().unwrap_or(0) > 100,
        "{statuses:?}"
    );
    let res = client
        .post(&url)
        .header("authorization", format!("Bearer {writer}"))
        .header("content-type", STRUCTURED)
        .body(EVENT)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    let res = client
        .get(format!("http://{addr}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

/// A body over the limit is answered `413` before it is all read; the client, still
/// sending it, must be able to finish and read that answer, not meet a reset connection
/// (which a client library reports as "broken pipe" and loses the `413`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_still_sending_a_refused_body_reads_the_answer_and_is_not_reset() {
    let f = fixture().await;
    let addr = serve(&f, GatewayOptions::default()).await;
    let total = 8 << 20;
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            format!(
                "POST /v1/topics/orders/events HTTP/1.1\r\nhost: x\r\n\
                 content-type: application/cloudevents+json\r\ncontent-length: {total}\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    // The whole body goes through while the answer is read, and the connection ends
    // cleanly: not reset under the writer or the reader.
    let (mut reader, mut writer) = stream.into_split();
    let sending = tokio::spawn(async move {
        let chunk = vec![b' '; 64 << 10];
        let mut sent = 0;
        while sent < total {
            if let Err(e) = writer.write_all(&chunk).await {
                return Err(format!("writing the body after {sent} bytes: {e}"));
            }
            sent += chunk.len();
        }
        writer.shutdown().await.map_err(|e| e.to_string())
    });
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), reader.read_to_end(&mut answer))
        .await
        .expect("the connection ends");
    let answer = String::from_utf8_lossy(&answer).into_owned();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("too-large"), "{answer}");
    read.expect("the connection ends cleanly, not reset");
    sending.await.unwrap().unwrap();
    // And the node serves on.
    assert!(raw_get(addr, "/healthz").await.starts_with("HTTP/1.1 200"));
}
