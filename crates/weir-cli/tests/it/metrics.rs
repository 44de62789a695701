//! `GET /metrics` of a running node with the example app, after events went through its
//! pipeline: the families are there with the values the traffic implies, and
//! `promtool check metrics` (Prometheus's own checker) accepts the exposition.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::{cli, post_sample, serve_on, wait_caught_up};

/// The sum of the samples of `name` whose labels include every one of `labels`
/// (`key="value"`), and how many samples there were.
fn sum(body: &str, name: &str, labels: &[&str]) -> (f64, usize) {
    let mut total = 0.0;
    let mut count = 0;
    for line in body.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (metric, series_labels) = match series.split_once('{') {
            Some((metric, rest)) => (metric, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        if metric != name {
            continue;
        }
        let series_labels: Vec<&str> = series_labels.split(',').collect();
        if labels.iter().all(|l| series_labels.contains(l)) {
            total += value.parse::<f64>().unwrap();
            count += 1;
        }
    }
    (total, count)
}

fn value(body: &str, name: &str, labels: &[&str]) -> f64 {
    let (total, count) = sum(body, name, labels);
    assert!(count > 0, "no sample of {name} with {labels:?} in:\n{body}");
    total
}

#[test]
fn metrics_after_traffic_are_complete_and_pass_promtool() {
    let promtool = weir_test_support::script_guests::ensure_promtool().unwrap_or_else(|e| {
        panic!("promtool, which checks /metrics, is missing and could not be fetched: {e:#}")
    });
    let dir = tempfile::tempdir().unwrap();
    // With the embedded log's write-ahead file, reached as a user turns it on.
    let node = serve_on(dir.path(), "embedded?write_ahead=true");

    // Four orders through the pipeline (one POST, three by `weir publish --file`), and an
    // event its filter keeps from the function.
    let (status, body) = post_sample(&node);
    assert_eq!(status, 202, "{body}");
    let events = weir_test_support::example_dir().join("events.jsonl");
    cli(
        &node,
        &[
            "publish",
            "erp.sales-orders",
            "--file",
            events.to_str().unwrap(),
        ],
    );
    cli(
        &node,
        &[
            "publish",
            "erp.sales-orders",
            "--type",
            "SalesOrderChanged",
            "--id",
            "not-for-the-function",
            "--key",
            "CUST-42",
            "--data",
            "{}",
        ],
    );
    wait_caught_up(&node);

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (status, content_type, body) = rt.block_on(async {
        let res = reqwest::get(format!("{}/metrics", node.url)).await.unwrap();
        let content_type = res.headers()["content-type"].to_str().unwrap().to_owned();
        (
            res.status().as_u16(),
            content_type,
            res.text().await.unwrap(),
        )
    });
    assert_eq!(status, 200, "{body}");
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );

    // HTTP, by route template.
    let publish = [
        r#"route="/v1/topics/{topic}/events""#,
        r#"method="POST""#,
        r#"status="202""#,
    ];
    assert!(value(&body, "weir_http_requests_total", &publish) >= 3.0);
    assert!(value(&body, "weir_http_request_duration_seconds_count", &publish) >= 3.0);
    assert!(body.contains("# TYPE weir_http_request_duration_seconds histogram"));
    assert!(value(&body, "weir_http_request_duration_seconds_sum", &publish) > 0.0);
    assert!(
        !body.contains("erp.sales-orders/events"),
        "a raw path became a label:\n{body}"
    );

    // Events in and out per topic.
    let sales = r#"topic="erp.sales-orders""#;
    let crm = r#"topic="crm.orders""#;
    assert_eq!(value(&body, "weir_topic_events_in_total", &[sales]), 5.0);
    assert_eq!(value(&body, "weir_topic_events_in_total", &[crm]), 4.0);
    assert!(value(&body, "weir_topic_events_out_total", &[sales]) >= 5.0);

    // The pipeline's outcomes and its group's lag (caught up: zero in every partition).
    let pipeline = r#"pipeline="erp-to-crm""#;
    let outcome = |o: &str| {
        value(
            &body,
            "weir_pipeline_events_total",
            &[pipeline, &format!(r#"outcome="{o}""#)],
        )
    };
    assert_eq!(outcome("processed"), 4.0);
    assert_eq!(outcome("filtered"), 1.0);
    assert_eq!(outcome("dead_lettered"), 0.0);
    assert_eq!(
        value(&body, "weir_pipeline_retries_total", &[pipeline]),
        0.0
    );
    let (lag, partitions) = sum(&body, "weir_consumer_lag_events", &[sales]);
    assert_eq!((lag, partitions), (0.0, 4), "{body}");

    // The function.
    let function = r#"function="enrich-order""#;
    assert_eq!(value(&body, "weir_function_calls_total", &[function]), 4.0);
    assert_eq!(
        value(
            &body,
            "weir_function_call_duration_seconds_count",
            &[function]
        ),
        4.0
    );
    assert!(
        value(
            &body,
            "weir_function_call_duration_seconds_sum",
            &[function]
        ) > 0.0
    );
    assert_eq!(
        value(&body, "weir_function_memory_bytes_count", &[function]),
        4.0
    );
    assert!(value(&body, "weir_function_memory_bytes_sum", &[function]) > 0.0);
    assert_eq!(sum(&body, "weir_function_errors_total", &[function]).1, 0);

    // The embedded log.
    assert!(value(&body, "weir_log_append_duration_seconds_count", &[sales]) >= 3.0);
    assert!(value(&body, "weir_log_fsync_duration_seconds_count", &[sales]) >= 3.0);
    assert!(value(&body, "weir_log_fsync_duration_seconds_count", &[crm]) >= 1.0);
    assert!(value(&body, "weir_log_wal_fsync_duration_seconds_count", &[]) >= 1.0);

    // The key-value store: the seed, then the function's reads of customers.
    let customers = r#"namespace="customers""#;
    assert_eq!(
        value(
            &body,
            "weir_kv_operations_total",
            &[customers, r#"op="write_entries""#]
        ),
        1.0
    );
    assert!(
        value(
            &body,
            "weir_kv_operations_total",
            &[customers, r#"op="get""#]
        ) >= 1.0
    );

    // Every family has its help text and type, and the whole passes Prometheus's checks.
    for family in [
        "weir_http_requests_total",
        "weir_topic_events_in_total",
        "weir_consumer_lag_events",
        "weir_function_call_duration_seconds",
        "weir_log_fsync_duration_seconds",
        "weir_log_wal_fsync_duration_seconds",
        "weir_kv_operations_total",
    ] {
        assert!(
            body.contains(&format!("# HELP {family} ")),
            "{family} has no HELP"
        );
    }
    // Every family the Grafana dashboard queries is one the node serves (errors only
    // show once a call failed).
    let dashboard = std::fs::read_to_string(
        weir_test_support::repo_root().join("deploy/grafana/weir-dashboard.json"),
    )
    .unwrap();
    let _: serde_json::Value = serde_json::from_str(&dashboard).unwrap();
    let mut queried = std::collections::BTreeSet::new();
    for (at, _) in dashboard.match_indices("weir_") {
        let name: String = dashboard[at..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || *c == '_')
            .collect();
        if name.ends_with('_') {
            continue; // `weir_*` in a description
        }
        let family = ["_bucket", "_count", "_sum"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(&name)
            .to_owned();
        queried.insert(family);
    }
    assert!(queried.len() >= 12, "{queried:?}");
    for family in queried {
        if family != "weir_function_errors_total" {
            assert!(
                body.contains(&format!("# TYPE {family} ")),
                "the dashboard queries {family}, which /metrics does not serve"
            );
        }
    }

    let mut check = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    check
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics refuses /metrics:\n{}{}\n{body}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(node.stop());
}
