//! The OpenAPI document against the router: every route the router serves is in the
//! document with exactly the methods it serves. (That the document is valid OpenAPI is
//! checked by weir-cli's `openapi` test, against a running node, with
//! openapi-spec-validator.)

use std::collections::{BTreeMap, BTreeSet};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;

use super::fixture;
use crate::{GatewayOptions, router};

/// The path templates an axum router serves, read from its `Debug` output (axum has no
/// other way to list them). Fails rather than finding none, should that output change.
fn served_paths(router: &axum::Router) -> BTreeSet<String> {
    let debug = format!("{router:?}");
    // The routes, not the fallback router's own (`/` and a catch-all).
    let routes = debug
        .split_once("path_router:")
        .and_then(|(_, rest)| rest.split_once("fallback_router:"))
        .map(|(routes, _)| routes)
        .unwrap_or_else(|| panic!("no path_router in the router's Debug output: {debug}"));
    let debug = routes;
    let mut paths = BTreeSet::new();
    for (at, _) in debug.match_indices("RouteId(") {
        let rest = &debug[at..];
        let Some(close) = rest.find(')') else {
            continue;
        };
        if let Some(path) = rest[close + 1..].strip_prefix(": \"") {
            paths.insert(path[..path.find('"').unwrap()].to_owned());
        }
    }
    assert!(
        paths.len() > 10,
        "cannot read the router's routes from its Debug output (did axum change it?): {debug}"
    );
    paths
}

/// Each documented path and its methods.
fn documented() -> BTreeMap<String, BTreeSet<Method>> {
    let document = serde_json::to_value(crate::openapi()).unwrap();
    document["paths"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(path, item)| {
            let methods = item
                .as_object()
                .unwrap()
                .keys()
                .filter_map(|m| Method::from_bytes(m.to_uppercase().as_bytes()).ok())
                .collect();
            (path.clone(), methods)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_and_method_the_router_serves_is_in_the_openapi_document() {
    let f = fixture().await;
    let app = router(f.node.clone(), GatewayOptions::default());
    let documented = documented();
    assert_eq!(
        served_paths(&app),
        documented.keys().cloned().collect::<BTreeSet<_>>(),
        "the router and the OpenAPI document list different paths"
    );
    assert!(documented.contains_key("/v1/openapi.json"));

    // Methods: a documented one reaches a handler (whatever it answers), any other gets
    // the router's 405.
    for (path, methods) in &documented {
        let uri = path
            .split('/')
            .map(|segment| {
                if segment.starts_with('{') {
                    "probe"
                } else {
                    segment
                }
            })
            .collect::<Vec<_>>()
            .join("/");
        for method in [
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::PATCH,
        ] {
            let request = Request::builder()
                .method(method.clone())
                .uri(&uri)
                .body(Body::empty())
                .unwrap();
            let response = app.clone().oneshot(request).await.unwrap();
            let status = response.status();
            let body = if status == StatusCode::OK {
                // A live stream never ends; its status is enough.
                serde_json::Value::Null
            } else {
                let bytes = response.into_body().collect().await.unwrap().to_bytes();
                serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null)
            };
            let fell_back = body["type"] == "urn:weir:problem:method-not-allowed"
                || (body["type"] == "urn:weir:problem:not-found"
                    && body["detail"]
                        .as_str()
                        .is_some_and(|d| d.starts_with("no such route")));
            if methods.contains(&method) {
                assert!(
                    !fell_back,
                    "{method} {path} is documented but not served: {status} {body}"
                );
            } else {
                assert_eq!(
                    body["type"], "urn:weir:problem:method-not-allowed",
                    "{method} {path} is served but not documented: {status} {body}"
                );
            }
        }
    }
}

#[test]
fn every_operation_has_its_own_id_and_documents_problems_as_problem_json() {
    let document = serde_json::to_value(crate::openapi()).unwrap();
    let mut problems = 0;
    let mut ids = BTreeSet::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let id = operation["operationId"].as_str().unwrap_or_default();
            assert!(
                ids.insert(id.to_owned()),
                "{method} {path}: operationId {id:?} is missing or not unique"
            );
            for (status, response) in operation["responses"].as_object().unwrap() {
                if status.starts_with('4') || status.starts_with('5') {
                    problems += 1;
                    let content = response["content"].as_object().unwrap();
                    assert_eq!(
                        content.keys().collect::<Vec<_>>(),
                        [crate::PROBLEM_CONTENT_TYPE],
                        "{method} {path} {status}"
                    );
                    assert_eq!(
                        content[crate::PROBLEM_CONTENT_TYPE]["schema"]["$ref"],
                        "#/components/schemas/Problem",
                        "{method} {path} {status}"
                    );
                }
            }
        }
    }
    assert!(problems > 20, "{problems}");
}
