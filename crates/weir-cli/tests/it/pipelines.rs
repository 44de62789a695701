//! Pipelines across crashes and under a slow function: `weir serve` killed with SIGKILL
//! at random moments under load must leave exactly one output per input, and a slow
//! function must hold its pipeline back while the backlog waits in the log.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
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

/// Keep posting batches of orders until `stop`, setting `acked_one` at the first
/// acknowledged batch; returns the ids acknowledged.
async fn publish_until(
    url: String,
    round: u32,
    stop: Arc<AtomicBool>,
    acked_one: Arc<AtomicBool>,
) -> Vec<String> {
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
            Ok(res) if res.status().as_u16() == 202 => {
                acked.extend(ids);
                acked_one.store(true, Ordering::Relaxed);
            }
            _ => break,
        }
    }
    acked
}

/// `weir serve` killed with SIGKILL at six random moments while a publisher keeps
/// posting: after a restart every input has exactly one output, and every acknowledged
/// event is among the inputs.
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
        let acked_one = Arc::new(AtomicBool::new(false));
        let publisher = rt.spawn(publish_until(
            node.url.clone(),
            round,
            stop.clone(),
            acked_one.clone(),
        ));
        // Kill under load, whatever the machine's speed: once a batch was acknowledged
        // (so every round has acknowledged events to lose), at a random moment up to
        // 1.2 s after it.
        let deadline = Instant::now() + Duration::from_secs(60);
        while !acked_one.load(Ordering::Relaxed) {
            assert!(
                Instant::now() < deadline && !publisher.is_finished(),
                "round {round}: no batch was acknowledged"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        let wait = (std::process::id() as u64 * 7919 + u64::from(round) * 104_729) % 1200;
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

/// An HTTP server on loopback that holds every request until the test opens it. The
/// function under test calls it once per event, so the test, not the clock, decides how
/// far a pipeline gets.
struct Gate {
    port: u16,
    state: Arc<(Mutex<GateState>, Condvar)>,
}

#[derive(Default)]
struct GateState {
    /// Requests received so far.
    arrived: u64,
    open: bool,
}

impl Gate {
    fn start() -> Gate {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new((Mutex::new(GateState::default()), Condvar::new()));
        let shared = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let state = shared.clone();
                std::thread::spawn(move || hold_requests(stream, &state));
            }
        });
        Gate { port, state }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/gate", self.port)
    }

    fn arrived(&self) -> u64 {
        self.state.0.lock().unwrap().arrived
    }

    /// Waits (60 s at most) until `n` requests have arrived.
    fn wait_for(&self, n: u64) {
        let (lock, arrivals) = &*self.state;
        let (state, timeout) = arrivals
            .wait_timeout_while(lock.lock().unwrap(), Duration::from_secs(60), |s| {
                s.arrived < n
            })
            .unwrap();
        assert!(
            !timeout.timed_out(),
            "{} of {n} calls reached the gate",
            state.arrived
        );
    }

    /// Answers every request held and every one to come.
    fn open(&self) {
        let (lock, changed) = &*self.state;
        lock.lock().unwrap().open = true;
        changed.notify_all();
    }
}

/// Serves one connection: each request (a GET, no body) is counted, then answered
/// `200 ok` once the gate is open.
fn hold_requests(stream: TcpStream, state: &(Mutex<GateState>, Condvar)) {
    let Ok(mut reply) = stream.try_clone() else {
        return;
    };
    let mut requests = BufReader::new(stream);
    loop {
        let mut line = String::new();
        loop {
            line.clear();
            match requests.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) if line == "\r\n" => break,
                Ok(_) => {}
            }
        }
        let (lock, changed) = state;
        let mut gate = lock.lock().unwrap();
        gate.arrived += 1;
        changed.notify_all();
        while !gate.open {
            gate = changed.wait(gate).unwrap();
        }
        drop(gate);
        if reply
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            .is_err()
        {
            return;
        }
    }
}

/// A slow function slows its pipeline, and the backlog waits in the log. The function
/// here is as slow as the test makes it: each call waits on an HTTP request the test
/// holds, so what is asserted are counts the test controls, not what the machine
/// managed in a time window. With both source partitions' first calls held and 2,000
/// events published, the function has been called exactly twice (one call per
/// partition at a time), nothing is committed, and the lag is every event published;
/// once the calls are let go, each event comes out exactly once.
///
/// The node's memory is not measured: its resident size depends on the allocator and on
/// the number of threads (cores) that allocate, so no threshold fits every machine. What
/// keeps it flat, a pipeline reading at most two batches past its committed offset, is
/// checked on the reads themselves in weir-engine's `tests/backpressure.rs`.
#[test]
fn a_slow_function_slows_its_pipeline_and_its_backlog_waits_in_the_log() {
    const EVENTS: u64 = 2_000;
    let dir = tempfile::tempdir().unwrap();
    let gate = Gate::start();
    let wasm = weir_test_support::test_guest("guest-capabilities");
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
config = {{ url = {:?} }}
limits = {{ deadline_ms = 60000 }}
capabilities = {{ http = ["127.0.0.1:{}"], http_timeout_ms = 60000 }}
[pipelines.p]
from = "in"
function = "slow"
to = ["out"]
ordering = "partition"
concurrency = 2
"#,
            wasm.display().to_string(),
            gate.url(),
            gate.port,
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
    let publish = |from: u64, to: u64| {
        let events: Vec<_> = (from..to)
            .map(|i| {
                serde_json::json!({"specversion": "1.0", "id": format!("e{i}"), "source": "test://s",
                    "type": "test.http", "subject": format!("k{}", i % 50)})
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
    let get = |path: &str| -> serde_json::Value {
        rt.block_on(async {
            client
                .get(format!("{}{path}", node.url))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap()
        })
    };

    // The first events reach both partitions; each partition's first call is held.
    publish(0, 100);
    gate.wait_for(2);
    for chunk in 1..EVENTS / 100 {
        publish(chunk * 100, (chunk + 1) * 100);
    }
    let status = get("/v1/pipelines/p");
    assert_eq!(status["state"], "running", "{status}");
    let partitions = status["partitions"].as_array().unwrap();
    assert_eq!(partitions.len(), 2, "{status}");
    assert!(
        partitions.iter().all(|p| p["committed"] == 0),
        "nothing is committed while the calls are held: {status}"
    );
    assert_eq!(status["lag"], EVENTS, "{status}");
    assert_eq!(status["processed"], 0, "{status}");
    assert_eq!(
        gate.arrived(),
        2,
        "one call at a time per partition, and each is held"
    );

    gate.open();
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        let status = get("/v1/pipelines/p");
        if status["lag"] == 0 {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the pipeline did not catch up: {status}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        status["dead_lettered"], 0,
        "a held call ran into the function's 60 s deadline: {status}"
    );
    assert_eq!(gate.arrived(), EVENTS, "one call per event");
    let node_status = get("/v1/status");
    assert_eq!(
        super::topic_events(&node_status, "out"),
        EVENTS,
        "{node_status}"
    );
    assert!(node.stop(), "weir serve did not stop cleanly");
}
