//! `weir bench fleet --backend nats://…`: how a fleet's throughput grows with its
//! workers. One, two, then three nodes (in this process, each with its own data
//! directory, joined to one fleet on the server) run a pipeline whose function waits on a
//! slow HTTP dependency (`--delay-ms`, a server the bench starts) for every event, each
//! node with the same `--concurrency`: on two cores CPU-bound work cannot grow with
//! workers, waiting can. Each run has its own prefix on the server, removed afterwards.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weir_cloudevents::{CloudEvent, ExtensionValue};
use weir_engine::{Node, NodeOptions};
use weir_log::EventLog;
use weir_log_nats::{NatsKv, NatsLog, NatsOptions};
use weir_manifest::Manifest;

use super::pipeline::{cpu_secs_of, process_cpu_secs};
use super::{print_result, repo_path, round2};

#[derive(Debug, clap::Args)]
pub struct FleetBenchArgs {
    /// The shared backend: `nats://HOST:PORT` (the bench adds its own prefixes).
    #[arg(long)]
    backend: String,
    /// Workers of the largest fleet; the bench runs 1, 2, … of them.
    #[arg(long, default_value_t = 3)]
    workers: usize,
    /// Events each run drains.
    #[arg(long, default_value_t = 12_000)]
    events: usize,
    /// Partitions of the source topic (the units the fleet shares).
    #[arg(long, default_value_t = 12)]
    partitions: u32,
    /// The pipeline's `concurrency`, on each worker.
    #[arg(long, default_value_t = 8)]
    concurrency: u32,
    /// How long the slow HTTP dependency takes to answer each call.
    #[arg(long, default_value_t = 5)]
    delay_ms: u64,
    /// The server's process id, when it runs on this machine: its CPU per event is
    /// reported beside the workers' (`server_cpu_us_per_event_N`).
    #[arg(long)]
    server_pid: Option<u32>,
    /// Where to put the workers' data directories (removed afterwards).
    #[arg(long, default_value = ".")]
    dir: std::path::PathBuf,
    /// Print one JSON object as the last line.
    #[arg(long)]
    json: bool,
}

const IN: &str = "bench-in";
/// The topic the test guest's `test.http` answers to.
const OUT: &str = "out";

/// An HTTP/1.1 server answering every request `200 ok` after `delay`; its address.
async fn slow_dependency(delay: Duration) -> anyhow::Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut have = 0;
                loop {
                    let Ok(n) = socket.read(&mut buf[have..]).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    have += n;
                    // A GET without a body: a request ends at its blank line.
                    while let Some(end) = buf[..have].windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.copy_within(end + 4..have, 0);
                        have -= end + 4;
                        tokio::time::sleep(delay).await;
                        let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n\r\nok";
                        if socket.write_all(reply).await.is_err() {
                            return;
                        }
                    }
                    if have == buf.len() {
                        return;
                    }
                }
            });
        }
    });
    Ok(addr)
}

fn manifest(
    args: &FleetBenchArgs,
    function: &Path,
    dependency: std::net::SocketAddr,
    with_pipeline: bool,
) -> anyhow::Result<Manifest> {
    let mut text = format!(
        r#"
[topics.{IN:?}]
partitions = {p}
[topics.{OUT:?}]
partitions = {p}
[functions.slow]
source = {function:?}
config = {{ url = "http://{dependency}/slow" }}
capabilities = {{ http = ["{dependency}"] }}
"#,
        p = args.partitions,
        function = function.display().to_string(),
    );
    if with_pipeline {
        text.push_str(&format!(
            "[pipelines.bench]\nfrom = {IN:?}\nfunction = \"slow\"\nto = [{OUT:?}]\nordering = \"none\"\nconcurrency = {}\n",
            args.concurrency
        ));
    }
    Ok(Manifest::from_toml_str(&text, Path::new("."))?)
}

/// The backend's URL with `prefix` as its path.
fn with_prefix(backend: &str, prefix: &str) -> anyhow::Result<String> {
    let (base, query) = backend.split_once('?').unwrap_or((backend, ""));
    let (scheme, hosts) = base
        .split_once("://")
        .context("--backend is not a nats:// URL")?;
    anyhow::ensure!(
        !hosts.trim_end_matches('/').contains('/'),
        "--backend names a prefix; the bench makes its own"
    );
    let query = if query.is_empty() {
        String::new()
    } else {
        format!("?{query}")
    };
    Ok(format!(
        "{scheme}://{}/{prefix}{query}",
        hosts.trim_end_matches('/')
    ))
}

async fn node(
    url: &str,
    data: &Path,
    manifest: Manifest,
) -> anyhow::Result<(Arc<Node>, Arc<NatsLog>)> {
    let options = NatsOptions::from_url(url)?;
    let log = Arc::new(NatsLog::open(options.clone()).await?);
    let mut node_options = NodeOptions::new(data, Some(manifest), log.clone());
    node_options.kv = Some(Arc::new(NatsKv::on(&log)));
    Ok((Node::start(node_options).await?, log))
}

async fn total(log: &NatsLog, topic: &str) -> u64 {
    match log.topic(topic).await {
        Ok(Some(t)) => t.end_offsets.iter().sum(),
        _ => 0,
    }
}

/// Events/s of a fleet of `workers` on its own prefix: the workers join, the assignment
/// settles, then the backlog is published and drained.
async fn run_fleet(
    args: &FleetBenchArgs,
    workers: usize,
    function: &Path,
    dependency: std::net::SocketAddr,
    dir: &Path,
) -> anyhow::Result<Run> {
    let prefix = format!("benchfleet{}w{workers}", std::process::id());
    let url = with_prefix(&args.backend, &prefix)?;
    let mut nodes = Vec::new();
    for w in 0..workers {
        let data = dir.join(format!("w{workers}-{w}"));
        nodes.push(node(&url, &data, manifest(args, function, dependency, true)?).await?);
    }
    // Every worker sees the whole fleet and owns its share (the last to join waits out
    // the grace period before it claims).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (mut members, mut running) = (Vec::new(), 0);
        for (node, _) in &nodes {
            let status = node.status().await?;
            members.push(status.fleet.as_ref().map_or(0, |f| f.members.len()));
            running += status.pipelines[0]
                .partitions
                .iter()
                .filter(|p| p.running_here)
                .count();
        }
        if members.iter().all(|m| *m == workers) && running == args.partitions as usize {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the fleet of {workers} did not settle in 60 s (members seen {members:?}, partitions running {running})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let log = nodes[0].1.clone();
    let server = args.server_pid.map(|pid| pid.to_string());
    let cpu_at_start = (
        process_cpu_secs()?,
        server.as_deref().map(cpu_secs_of).transpose()?,
    );
    let started = Instant::now();
    let mut n = 0;
    while n < args.events {
        let batch: Vec<_> = (n..(n + 500).min(args.events))
            .map(|i| {
                let mut event = CloudEvent::new(format!("bench-{i}"), "/bench", "test.http");
                event.extensions.insert(
                    "partitionkey".into(),
                    ExtensionValue::String(format!("k-{i}")),
                );
                event
            })
            .collect();
        n += batch.len();
        nodes[0].0.publish(IN, &batch).await?;
    }
    let target = args.events as u64;
    // The workers' committed-event counters are polled every 5 ms (in this process, no
    // request to the server), the status (every partition's offsets) once a second:
    // the bench's own requests must not load the server it measures. A batch is
    // counted once its outputs and its group offset are stored.
    for round in 0u64.. {
        let mut done = 0;
        for (node, _) in &nodes {
            done += node.pipeline_committed("bench")?;
        }
        if done >= target {
            break;
        }
        if round % 200 == 199 {
            let status = nodes[0].0.status().await?;
            anyhow::ensure!(
                status.pipelines[0].dead_lettered == 0,
                "the function dead-lettered events of the bench (is the dependency reachable?)"
            );
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(600),
            "{workers} worker(s) did not drain the backlog in 10 minutes: {done} of {target}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let rate = args.events as f64 / started.elapsed().as_secs_f64();
    let stored = total(&log, OUT).await;
    anyhow::ensure!(
        stored >= target,
        "the workers committed {target} events but the output topic holds {stored}"
    );
    let per_event = |secs: f64| secs * 1e6 / args.events as f64;
    let run = Run {
        rate,
        cpu_us_per_event: per_event(process_cpu_secs()? - cpu_at_start.0),
        server_cpu_us_per_event: match (&server, cpu_at_start.1) {
            (Some(pid), Some(at_start)) => Some(per_event(cpu_secs_of(pid)? - at_start)),
            _ => None,
        },
    };
    for (node, _) in &nodes {
        node.shutdown().await;
    }
    drop(nodes);
    weir_log_nats::remove_prefix(&url, &prefix).await?;
    Ok(run)
}

/// What one fleet's run measured.
struct Run {
    rate: f64,
    /// CPU of this process (every worker, and the bench's publisher) per event drained.
    cpu_us_per_event: f64,
    /// CPU of the server (`--server-pid`) per event drained.
    server_cpu_us_per_event: Option<f64>,
}

pub async fn run(args: FleetBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.workers > 0 && args.events > 0 && args.partitions > 0 && args.concurrency > 0,
        "--workers, --events, --partitions and --concurrency must be positive"
    );
    anyhow::ensure!(
        args.backend.starts_with("nats://") || args.backend.starts_with("tls://"),
        "--backend must be a shared backend (nats://…): a fleet needs one"
    );
    let function = repo_path("guests/target/wasm32-wasip2/release/guest_capabilities.wasm");
    anyhow::ensure!(
        function.exists(),
        "{} does not exist; build it with `cargo xtask build-guests`",
        function.display()
    );
    let dependency = slow_dependency(Duration::from_millis(args.delay_ms)).await?;
    let dir = super::temp_dir(&args.dir, "weir-bench-fleet-")?;
    let mut result = json!({
        "backend": "nats",
        "events": args.events,
        "partitions": args.partitions,
        "concurrency_per_worker": args.concurrency,
        "delay_ms": args.delay_ms,
        "cores": std::thread::available_parallelism().map_or(1, |n| n.get()),
    });
    let mut rates = Vec::new();
    for workers in 1..=args.workers {
        let run = run_fleet(&args, workers, &function, dependency, dir.path()).await?;
        eprintln!(
            "{workers} worker(s): {:.0} events/s, {:.0} µs of the workers' CPU per event",
            run.rate, run.cpu_us_per_event
        );
        result[format!("events_per_sec_{workers}")] = json!(round2(run.rate));
        result[format!("cpu_us_per_event_{workers}")] = json!(round2(run.cpu_us_per_event));
        if let Some(server) = run.server_cpu_us_per_event {
            result[format!("server_cpu_us_per_event_{workers}")] = json!(round2(server));
        }
        rates.push(run.rate);
    }
    result["fleet_scaling"] = json!(round2(rates[rates.len() - 1] / rates[0]));
    print_result(&result, args.json)
}
