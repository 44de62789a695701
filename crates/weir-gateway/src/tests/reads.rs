//! `GET /v1/topics/{topic}/events` is bounded in bytes as well as events, and says where
//! to continue.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;

use super::fixture;
use crate::{GatewayOptions, router};

const EVENT_DATA: usize = 200 * 1024;

/// `GET` a range: the status, `Weir-Next-Offset`, the body's size and the events' ids.
async fn read(f: &super::Fixture, query: &str) -> (StatusCode, u64, usize, Vec<String>) {
    let request = Request::get(format!("/v1/topics/orders/events?{query}"))
        .body(Body::empty())
        .unwrap();
    let response = router(f.node.clone(), GatewayOptions::default())
        .oneshot(request)
        .await
        .unwrap();
    let status = response.status();
    let next = response
        .headers()
        .get("weir-next-offset")
        .map_or(0, |v| v.to_str().unwrap().parse().unwrap());
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let ids = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    (status, next, body.len(), ids)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_stays_within_its_byte_bound_and_says_where_to_continue() {
    let f = fixture().await;
    // 40 events of 200 KiB, 8 MiB in all, in one partition (one subject).
    let data = "x".repeat(EVENT_DATA);
    let events: Vec<_> = (0..40)
        .map(|n| {
            let json = format!(
                r#"{{"specversion":"1.0","id":"e{n}","source":"s","type":"t","subject":"k","data":"{data}"}}"#
            );
            weir_cloudevents::CloudEvent::from_json_slice(json.as_bytes()).unwrap()
        })
        .collect();
    let positions = f.node.publish("orders", &events).await.unwrap();
    let partition = positions[0].partition;

    // The default bound, 4 MiB: every event comes, over several reads that continue
    // where the last one ended.
    let max = GatewayOptions::default().max_read_bytes;
    let (mut offset, mut ids, mut reads) = (0, Vec::new(), 0);
    while ids.len() < 40 {
        let (status, next, size, got) = read(
            &f,
            &format!("partition={partition}&offset={offset}&limit=1000"),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert!(size <= max, "a read of {size} bytes, over {max}");
        assert!(!got.is_empty());
        assert_eq!(next, offset + got.len() as u64);
        offset = next;
        ids.extend(got);
        reads += 1;
    }
    let expected: Vec<_> = (0..40).map(|n| format!("e{n}")).collect();
    assert_eq!(ids, expected);
    assert!(reads >= 2, "8 MiB did not fit in one read");
    let (_, next, _, got) = read(&f, &format!("partition={partition}&offset={offset}")).await;
    assert_eq!((next, got.len()), (offset, 0), "nothing more: stay put");

    // A smaller bound of the client's: as many whole events as fit.
    let (status, next, size, got) =
        read(&f, &format!("partition={partition}&max_bytes=500000")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(size <= 500_000, "{size}");
    assert_eq!((got.len(), next), (2, 2));
    // A bound below one event still gets the first one, so a read always moves on.
    let (_, next, size, got) =
        read(&f, &format!("partition={partition}&offset=7&max_bytes=10")).await;
    assert_eq!((got, next), (vec!["e7".to_owned()], 8));
    assert!(size > EVENT_DATA);
    // A bound over the server's is the server's.
    let (_, _, size, _) = read(
        &f,
        &format!("partition={partition}&limit=1000&max_bytes=100000000"),
    )
    .await;
    assert!(size <= max, "{size}");
}
