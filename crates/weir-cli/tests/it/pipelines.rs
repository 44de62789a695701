//! Pipelines across crashes and under a slow function: `weir serve` killed with SIGKILL
//! at random moments under load must leave exactly one output per input, and a slow
//! function must keep the node's memory flat while the lag grows.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use weir_cloudevents::CloudEvent;
use weir_log_embedded::{Log, LogOptions};
use weir_test_support::WeirProcess;

use super::{serve, wait_caught_up, weir};

/// Every record of every partition of `topic` in the data directory.
fn all_records(log: &Log, topic: &str) -> Vec<(u32, u64, CloudEvent)> {
    let info = log.topic(topic).unwrap();
    let mut out = Vec::new();
    for partition in 0..info.partitions {
        let mut next = 0;
        loop {
            let records = log.read(topic, partition, next, 1000).unwrap();
            let Some(last) = records.last() else { break };
            next = last.offset + 1;
            for r in records {
                let event = CloudEvent::from_json_slice(&r.value).unwrap();
                out.push((partition, r.offset, event));
            }
        }
    }
    out
}

/// Keep posting batches of orders until `stop`; returns the ids acknowledged.
async fn publish_until(url: String, round: u32, stop: Arc<AtomicBool>) -> Vec<String> {
    let sample: serde_json::Value = serde_json::from_slice(
        &std::fs::read(weir_test_support::example_dir().join("sales-order-created.json")).unwrap(),
    )
    .unwrap();
    let client = reqwest::Client::new();
    let mut acked = Vec::new();
    for batch in 0.. {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let ids: Vec<String> = (0..20).map(|i| format!("r{round}-b{batch}-{i}")).collect();
        let events: Vec<_> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                let mut e = sample.clone();
                e["id"] = id.clone().into();
                e["partitionkey"] = format!("CUST-{}", i % 7).into();
                e
            })
            .collect();
        let sent = client
            .post(format!("{url}/v1/topics/erp.sales-orders/events"))
            .header("content-type", "application/cloudevents-batch+json")
            .body(serde_json::to_vec(&events).unwrap())
            .send()
            .await;
        match sent {
            Ok(res) if res.status().as_u16() == 202 => acked.extend(ids),
            _ => break,
        }
    }
    acked
}

#[test]
fn sigkill_under_load_leaves_exactly_one_output_per_input() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut acked = Vec::new();
    for round in 0..6 {
        let node = serve(dir.path());
        let stop = Arc::new(AtomicBool::new(false));
        let publisher = rt.spawn(publish_until(node.url.clone(), round, stop.clone()));
        // Kill at a random moment between 0.3 and 1.5 s into the load.
        let wait = 300 + (std::process::id() as u64 * 7919 + u64::from(round) * 104_729) % 1200;
        std::thread::sleep(Duration::from_millis(wait));
        node.kill();
        stop.store(true, Ordering::Relaxed);
        acked.extend(rt.block_on(publisher).unwrap());
    }
    assert!(!acked.is_empty(), "the publisher got nothing acknowledged");

    // Restart, let the pipeline finish, stop cleanly, and look at the log itself.
    let node = serve(dir.path());
    wait_caught_up(&node);
    assert!(node.stop(), "weir serve did not stop cleanly");
    let log = Log::open(&dir.path().join("data"), LogOptions::default()).unwrap();
    let inputs = all_records(&log, "erp.sales-orders");
    let outputs = all_records(&log, "crm.orders");
    assert!(inputs.len() >= acked.len());

    let mut per_id: BTreeMap<String, usize> = BTreeMap::new();
    for (_, _, event) in &outputs {
        *per_id.entry(event.id.clone()).or_default() += 1;
    }
    let doubled: Vec<_> = per_id.iter().filter(|(_, n)| **n > 1).collect();
    assert!(doubled.is_empty(), "outputs written twice: {doubled:?}");
    let missing: Vec<_> = inputs
        .iter()
        .map(|(p, o, _)| format!("erp-to-crm:erp.sales-orders:{p}:{o}:0"))
        .filter(|id| !per_id.contains_key(id))
        .collect();
    assert!(missing.is_empty(), "inputs without output: {missing:?}");
    assert_eq!(outputs.len(), inputs.len());
    // Every acknowledged event is among the inputs: nothing acknowledged was lost.
    let input_ids: std::collections::BTreeSet<_> =
        inputs.iter().map(|(_, _, e)| e.id.clone()).collect();
    let lost: Vec<_> = acked.iter().filter(|id| !input_ids.contains(*id)).collect();
    assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");
}

/// Resident set size of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[test]
fn a_slow_function_slows_its_pipeline_and_memory_stays_flat() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = weir_test_support::test_guest("guest-order-log");
    let app = dir.path().join("weir.toml");
    std::fs::write(
        &app,
        format!(
            r#"
[topics.in]
partitions = 2
[topics.out]
partitions = 2
[functions.slow]
source = {:?}
config = {{ spin_us = "2000", record = "false" }}
[pipelines.p]
from = "in"
function = "slow"
to = ["out"]
concurrency = 2
"#,
            wasm.display().to_string()
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let node = WeirProcess::start(
        weir(),
        &[
            "--app",
            app.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
        ],
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = reqwest::Client::new();
    let payload = "x".repeat(2000);
    let publish = |from: u32, n: u32| {
        let events: Vec<_> = (from..from + n)
            .map(|i| {
                serde_json::json!({"specversion": "1.0", "id": format!("e{i}"), "source": "test://s",
                    "type": "t", "subject": format!("k{}", i % 50), "data": {"pad": payload}})
            })
            .collect();
        let res = rt.block_on(
            client
                .post(format!("{}/v1/topics/in/events", node.url))
                .header("content-type", "application/cloudevents-batch+json")
                .body(serde_json::to_vec(&events).unwrap())
                .send(),
        );
        assert_eq!(res.unwrap().status().as_u16(), 202);
    };

    // Warm up (the function is compiled, pools filled), then measure memory while 20,000
    // events of 2 kB (40 MB), published 200 at a time, wait for a function that takes 2 ms each.
    publish(0, 200);
    std::thread::sleep(Duration::from_secs(2));
    let before = rss_kib(node.pid());
    let mut peak = before;
    for chunk in 0..100 {
        publish(1000 + chunk * 200, 200);
        peak = peak.max(rss_kib(node.pid()));
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        peak = peak.max(rss_kib(node.pid()));
        std::thread::sleep(Duration::from_millis(100));
    }
    let status: serde_json::Value = rt.block_on(async {
        client
            .get(format!("{}/v1/pipelines/p", node.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    });
    let lag = status["lag"].as_u64().unwrap();
    assert!(
        lag > 5_000,
        "the slow function should be far behind: {status}"
    );
    assert_eq!(status["partitions"].as_array().unwrap().len(), 2);
    // The backlog stays in the log, not in memory: the node grew by far less than the
    // 40 MB waiting.
    let grown_mib = (peak.saturating_sub(before)) / 1024;
    assert!(
        grown_mib < 25,
        "the node grew by {grown_mib} MiB while 40 MB waited (before {before} KiB, peak {peak} KiB)"
    );
}
