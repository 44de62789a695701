//! `GET /metrics` and the request layer, in process. (weir-cli's `metrics` test scrapes a
//! real `weir serve` and runs `promtool check metrics` on what it gets.)

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use tower::ServiceExt;

use crate::tests::fixture;
use crate::{GatewayOptions, is_problem, router};

async fn get(
    options: GatewayOptions,
    f: &crate::tests::Fixture,
    uri: &str,
) -> (StatusCode, axum::http::HeaderMap, String) {
    let res = router(f.node.clone(), options)
        .oneshot(Request::get(uri).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let (parts, body) = res.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (
        parts.status,
        parts.headers,
        String::from_utf8(body.to_vec()).unwrap(),
    )
}

#[test]
fn install_is_idempotent() {
    let first = super::install().unwrap();
    let second = super::install().unwrap();
    metrics::counter!("weir_test_idempotent_total").increment(1);
    assert!(first.render().contains("weir_test_idempotent_total 1"));
    assert!(second.render().contains("weir_test_idempotent_total 1"));
}

#[tokio::test]
async fn without_a_recorder_metrics_answer_404_as_a_problem() {
    let f = fixture().await;
    let (status, headers, body) = get(GatewayOptions::default(), &f, "/metrics").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(is_problem(&headers));
    assert!(body.contains("urn:weir:problem:metrics-off"), "{body}");
}

#[tokio::test]
async fn requests_are_counted_by_route_template_not_raw_path() {
    let handle = super::install().unwrap();
    let f = fixture().await;
    let options = GatewayOptions {
        metrics: Some(handle),
        ..Default::default()
    };
    let (status, _, _) = get(
        options.clone(),
        &f,
        "/v1/topics/orders/events?partition=0&offset=0",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = get(
        options.clone(),
        &f,
        "/v1/topics/no-such-topic/events?partition=0",
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _) = get(options.clone(), &f, "/no/such/route/42").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, headers, body) = get(options, &f, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4"),
        "{headers:?}"
    );
    assert!(
        body.contains("# TYPE weir_http_requests_total counter"),
        "{body}"
    );
    assert!(
        body.contains("# TYPE weir_http_request_duration_seconds histogram"),
        "{body}"
    );
    assert!(
        body.contains(r#"weir_http_requests_total{route="/v1/topics/{topic}/events",method="GET",status="200"}"#),
        "{body}"
    );
    assert!(
        body.contains(r#"weir_http_requests_total{route="/v1/topics/{topic}/events",method="GET",status="404"}"#),
        "{body}"
    );
    assert!(
        body.contains(r#"weir_http_requests_total{route="unmatched",method="GET",status="404"}"#),
        "{body}"
    );
    assert!(
        !body.contains("no-such-topic") && !body.contains("/no/such/route"),
        "{body}"
    );
    assert!(
        body.contains(r#"weir_http_request_duration_seconds_bucket{route="/v1/topics/{topic}/events",method="GET",status="200",le="0.001"}"#),
        "{body}"
    );
}
