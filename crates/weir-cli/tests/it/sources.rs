//! An MQTT source in a real `weir serve`, killed with SIGKILL while messages stream in:
//! after the restart every message is in the topic (at-least-once: the broker delivers
//! again what weir had not acknowledged), and `weir status` shows the source.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use weir_test_support::{WeirProcess, mqtt};

use super::{cli, node_status, topic_events, weir};

fn serve(dir: &Path, app: &Path) -> WeirProcess {
    let data = dir.join("data");
    WeirProcess::start(
        weir(),
        &[
            "--app",
            app.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
        ],
    )
}

fn appended(node: &WeirProcess) -> u64 {
    node_status(node)["sources"][0]["appended"]
        .as_u64()
        .unwrap()
}

#[test]
fn a_killed_node_loses_no_mqtt_message() {
    let dir = tempfile::tempdir().unwrap();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let base = format!("weir-test-kill-{}-{nanos}", std::process::id());
    let app = dir.path().join("weir.toml");
    std::fs::write(
        &app,
        format!(
            r#"
[app]
name = "kill-{nanos}"
[topics.telemetry]
partitions = 2
[sources.sensors]
url = "{url}"
subscribe = "{base}/+/temp"
topic = "telemetry"
type = "com.example.temp"
key = "{{subject.1}}"
"#,
            url = mqtt::mosquitto()
        ),
    )
    .unwrap();
    let node = serve(dir.path(), &app);
    let rt = tokio::runtime::Runtime::new().unwrap();
    // The subscription is in place once a probe is appended.
    let deadline = Instant::now() + Duration::from_secs(30);
    while appended(&node) == 0 {
        assert!(Instant::now() < deadline, "the source never took a probe");
        rt.block_on(mqtt::publish(
            "kill-probe",
            &format!("{base}/probe/temp"),
            &[b"{}".to_vec()],
        ));
        std::thread::sleep(Duration::from_millis(200));
    }
    let human = cli(&node, &["status"]);
    assert!(
        human.contains("sources:") && human.contains("sensors"),
        "{human}"
    );

    // 2,000 messages in batches of 100 over about 4 s; weir is killed after the first
    // few hundred are in and started again at once.
    const TOTAL: u32 = 2000;
    let publisher = {
        let base = base.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            for batch in 0..TOTAL / 100 {
                let payloads: Vec<Vec<u8>> = (batch * 100..(batch + 1) * 100)
                    .map(|n| format!(r#"{{"device":"d{}","n":{n}}}"#, n % 4).into_bytes())
                    .collect();
                rt.block_on(mqtt::publish(
                    "kill-publisher",
                    &format!("{base}/d/temp"),
                    &payloads,
                ));
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while appended(&node) < 300 {
        assert!(Instant::now() < deadline, "the source took too little");
        std::thread::sleep(Duration::from_millis(20));
    }
    node.kill();
    let node = serve(dir.path(), &app);
    publisher.join().unwrap();

    let deadline = Instant::now() + Duration::from_secs(60);
    let numbers = loop {
        // `tail` follows the topic: ask for what is there.
        let stored = topic_events(&node_status(&node), "telemetry").to_string();
        let out = cli(
            &node,
            &[
                "tail",
                "telemetry",
                "--from",
                "earliest",
                "--limit",
                &stored,
            ],
        );
        let numbers: Vec<u64> = out
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|e| e["data"]["n"].as_u64())
            .collect();
        let distinct: BTreeSet<u64> = numbers.iter().copied().collect();
        if distinct.len() == TOTAL as usize {
            break numbers;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {TOTAL} messages are in the topic after the kill",
            distinct.len()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    // At-least-once: what weir had stored but not yet acknowledged comes twice, no more
    // than a few batches.
    let doubled = numbers.len() - TOTAL as usize;
    assert!(doubled <= 600, "{doubled} messages came twice");
    let status = node_status(&node);
    assert_eq!(status["sources"][0]["state"], "running", "{status}");
    let metrics = rt.block_on(async {
        reqwest::get(format!("{}/metrics", node.url))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    for line in [
        r#"weir_source_connected{source="sensors"} 1"#,
        r#"weir_source_messages_total{source="sensors",outcome="appended"}"#,
    ] {
        assert!(metrics.contains(line), "/metrics lacks {line}:\n{metrics}");
    }
    assert!(node.stop());
}

/// The README's telemetry example as it is in `examples/telemetry`: MQTT readings through
/// `telemetry-alert` to a webhook whose signatures the Standard Webhooks reference
/// verifier accepts.
#[test]
fn the_telemetry_example_bridges_mqtt_through_a_function_to_a_signed_webhook() {
    use weir_test_support::webhook::{Behaviour, SECRET, WebhookReceiver};
    let dir = tempfile::tempdir().unwrap();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let base = format!("weir-test-telemetry-{}-{nanos}", std::process::id());
    let receiver = WebhookReceiver::start(SECRET, Behaviour::default());
    std::fs::write(dir.path().join("secret"), SECRET).unwrap();
    let example = weir_test_support::telemetry_example_dir().join("weir.toml");
    let text = std::fs::read_to_string(example).unwrap();
    let mut app = text.clone();
    for (from, to) in [
        (
            "\"telemetry-alert/target/wasm32-wasip2/release/telemetry_alert.wasm\"".to_owned(),
            format!(
                "{:?}",
                weir_test_support::telemetry_alert_function()
                    .display()
                    .to_string()
            ),
        ),
        (
            "\"sensors/+/temp\"".to_owned(),
            format!("\"{base}/+/temp\""),
        ),
        (
            "name = \"telemetry\"".to_owned(),
            format!("name = \"telemetry-{nanos}\""),
        ),
        (
            "\"http://127.0.0.1:8787/alerts\"".to_owned(),
            format!("{:?}", receiver.url),
        ),
        (
            "{ env = \"TELEMETRY_WEBHOOK_SECRET\" }".to_owned(),
            format!(
                "{{ file = {:?} }}",
                dir.path().join("secret").display().to_string()
            ),
        ),
    ] {
        assert!(
            app.contains(&from),
            "the example's weir.toml no longer has {from}"
        );
        app = app.replace(&from, &to);
    }
    let path = dir.path().join("weir.toml");
    std::fs::write(&path, app).unwrap();
    let node = serve(dir.path(), &path);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let publish = |device: &str, celsius: f64| {
        let body = format!(r#"{{"celsius": {celsius}}}"#).into_bytes();
        rt.block_on(mqtt::publish(
            "telemetry-sensor",
            &format!("{base}/{device}/temp"),
            &[body],
        ));
    };
    // A reading under the threshold makes no alert; once one is in, the source subscribes.
    let deadline = Instant::now() + Duration::from_secs(30);
    while appended(&node) == 0 {
        assert!(Instant::now() < deadline, "the source never took a reading");
        publish("probe", 10.0);
        std::thread::sleep(Duration::from_millis(200));
    }
    for (device, celsius) in [("s-1", 85.0), ("s-1", 70.0), ("s-2", 81.5), ("s-1", 90.0)] {
        publish(device, celsius);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let requests = loop {
        let requests = receiver.requests();
        if requests.len() >= 3 {
            break requests;
        }
        assert!(Instant::now() < deadline, "alerts delivered: {requests:?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let alerts: Vec<(String, f64)> = requests
        .iter()
        .map(|r| {
            assert_eq!(r["verified"], true, "{r}");
            assert_eq!(r["tamper_rejected"], true, "{r}");
            assert_eq!(r["event"]["type"], "com.example.telemetry.alert");
            let data = &r["event"]["data"];
            (
                data["device"].as_str().unwrap().to_owned(),
                data["celsius"].as_f64().unwrap(),
            )
        })
        .collect();
    let s1: Vec<f64> = alerts
        .iter()
        .filter(|(d, _)| d == "s-1")
        .map(|(_, c)| *c)
        .collect();
    assert_eq!(s1, vec![85.0, 90.0], "{alerts:?}");
    assert!(alerts.contains(&("s-2".to_owned(), 81.5)), "{alerts:?}");
    assert_eq!(alerts.len(), 3, "{alerts:?}");
    let human = cli(&node, &["status"]);
    assert!(
        human.contains("sinks:") && human.contains("alert-hook"),
        "{human}"
    );
    assert!(node.stop());
}
